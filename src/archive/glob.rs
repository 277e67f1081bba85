//! Exclude patterns, gitignore-like, compiled with `globset`.
//!
//! - `*` matches any run of characters except `/`; `?` one character
//!   except `/`; `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one character from
//!   a class; `{tmp,log}` one of the alternatives; `\x` the literal `x`.
//! - `**` matches anything including `/`; `**/` zero or more whole
//!   directories (`**/cache` matches `cache` and `a/b/cache`).
//! - A pattern without a `/` matches an entry's name at any depth (`*.log`,
//!   `node_modules`); one with a `/` is anchored at the source root
//!   (`cache/*.tmp`, `**/cache/**`); one starting with `/` is matched
//!   against the entry's absolute path (`/srv/app/cache`), as borgmatic
//!   users write them.
//! - A leading `./` and a trailing `/` are ignored. An excluded directory is
//!   not descended into. The source roots themselves are never excluded.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Which path of an entry a pattern is matched against.
#[derive(Clone, Copy)]
enum Anchor {
    Name,
    Relative,
    Absolute,
}

#[derive(Debug, Clone)]
pub(super) struct Excludes {
    by_name: GlobSet,
    by_rel: GlobSet,
    by_abs: GlobSet,
    count: usize,
}

impl Default for Excludes {
    fn default() -> Self {
        Excludes {
            by_name: GlobSet::empty(),
            by_rel: GlobSet::empty(),
            by_abs: GlobSet::empty(),
            count: 0,
        }
    }
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut sets = [
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
            GlobSetBuilder::new(),
        ];
        for p in patterns {
            let (glob, anchor) =
                compile(p).map_err(|m| format!("invalid exclude pattern {p:?}: {m}"))?;
            sets[anchor as usize].add(glob);
        }
        let [name, rel, abs] = sets.map(|b| b.build().map_err(|e| e.to_string()));
        Ok(Excludes {
            by_name: name?,
            by_rel: rel?,
            by_abs: abs?,
            count: patterns.len(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `rel`: path relative to the source root; `name`: file name; `abs`:
    /// absolute path.
    pub fn is_excluded(&self, rel: &[u8], name: &[u8], abs: &[u8]) -> bool {
        (!self.by_name.is_empty() && self.by_name.is_match(path(name)))
            || (!self.by_rel.is_empty() && self.by_rel.is_match(path(rel)))
            || (!self.by_abs.is_empty() && self.by_abs.is_match(path(abs)))
    }
}

fn path(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

fn compile(pat: &str) -> Result<(globset::Glob, Anchor), String> {
    let mut p = pat;
    while let Some(r) = p.strip_prefix("./") {
        p = r;
    }
    while p.len() > 1 && p.ends_with('/') {
        p = &p[..p.len() - 1];
    }
    if p.is_empty() {
        return Err("empty pattern".into());
    }
    let anchor = if p.starts_with('/') {
        Anchor::Absolute
    } else if p.contains('/') {
        Anchor::Relative
    } else {
        Anchor::Name
    };
    let glob = GlobBuilder::new(p)
        .literal_separator(true)
        .backslash_escape(true)
        .empty_alternates(true)
        .build()
        .map_err(|e| e.kind().to_string())?;
    Ok((glob, anchor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        // (pattern, rel, name, abs, excluded)
        let cases: &[(&str, &str, &str, &str, bool)] = &[
            ("*.log", "a.log", "a.log", "/s/a.log", true),
            ("*.log", "sub/a.log", "a.log", "/s/sub/a.log", true),
            ("*.log", "a.logx", "a.logx", "/s/a.logx", false),
            ("cache", "cache", "cache", "/s/cache", true),
            ("cache", "sub/cache", "cache", "/s/sub/cache", true),
            ("cache/", "cache", "cache", "/s/cache", true),
            ("./cache", "cache", "cache", "/s/cache", true),
            ("sub/*.tmp", "sub/x.tmp", "x.tmp", "/s/sub/x.tmp", true),
            ("sub/*.tmp", "sub/d/x.tmp", "x.tmp", "/s/sub/d/x.tmp", false),
            ("sub/**", "sub/d/x.tmp", "x.tmp", "/s/sub/d/x.tmp", true),
            (
                "**/node_modules",
                "node_modules",
                "node_modules",
                "/s/node_modules",
                true,
            ),
            (
                "**/node_modules",
                "a/b/node_modules",
                "node_modules",
                "/s/a/b/node_modules",
                true,
            ),
            ("a/**/z", "a/z", "z", "/s/a/z", true),
            ("a/**/z", "a/b/c/z", "z", "/s/a/b/c/z", true),
            ("a/**/z", "b/z", "z", "/s/b/z", false),
            ("file?.txt", "file1.txt", "file1.txt", "/s/file1.txt", true),
            (
                "file?.txt",
                "file10.txt",
                "file10.txt",
                "/s/file10.txt",
                false,
            ),
            ("[ab]*", "bx", "bx", "/s/bx", true),
            ("[!ab]*", "bx", "bx", "/s/bx", false),
            ("[a-c].txt", "b.txt", "b.txt", "/s/b.txt", true),
            ("[^a-c].txt", "d.txt", "d.txt", "/s/d.txt", true),
            ("\\*", "*", "*", "/s/*", true),
            ("\\*", "x", "x", "/s/x", false),
            ("/s/cache", "cache", "cache", "/s/cache", true),
            ("/s/cache", "x/cache", "cache", "/s/x/cache", false),
            ("/s/*/tmp", "x/tmp", "tmp", "/s/x/tmp", true),
            ("*", "a/b", "b", "/s/a/b", true),
            ("*.{tmp,log}", "a.tmp", "a.tmp", "/s/a.tmp", true),
            ("*.{tmp,log}", "d/a.log", "a.log", "/s/d/a.log", true),
            ("*.{tmp,log}", "a.txt", "a.txt", "/s/a.txt", false),
            (
                "*.{tmp,log}",
                "a.{tmp,log}",
                "a.{tmp,log}",
                "/s/a.{tmp,log}",
                false,
            ),
            ("**/cache/**", "cache/x", "x", "/s/cache/x", true),
            (
                "**/cache/**",
                "a/b/cache/x/y",
                "y",
                "/s/a/b/cache/x/y",
                true,
            ),
            ("**/cache/**", "a/cachex/y", "y", "/s/a/cachex/y", false),
            (
                "cache/*.tmp",
                "d/cache/x.tmp",
                "x.tmp",
                "/s/d/cache/x.tmp",
                false,
            ),
            ("x[0-9].dat", "d/x7.dat", "x7.dat", "/s/d/x7.dat", true),
        ];
        for &(pat, rel, name, abs, want) in cases {
            let ex = Excludes::new(&[pat.to_string()]).unwrap();
            assert_eq!(
                ex.is_excluded(rel.as_bytes(), name.as_bytes(), abs.as_bytes()),
                want,
                "pattern {pat:?} rel {rel:?}"
            );
        }
    }

    #[test]
    fn glob_invalid() {
        for p in ["", "[abc", "x\\", "[z-a]"] {
            assert!(
                Excludes::new(&[p.to_string()]).is_err(),
                "{p:?} should be invalid"
            );
        }
    }
}
