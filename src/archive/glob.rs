//! Exclude patterns: a small glob dialect, gitignore-like.
//!
//! - `*` matches any run of bytes except `/`; `?` one byte except `/`;
//!   `[abc]`, `[a-z]`, `[!a-z]` (or `[^a-z]`) one byte from a class;
//!   `\x` the literal `x`.
//! - `**` matches anything including `/`; `**/` zero or more whole
//!   directories (`**/cache` matches `cache` and `a/b/cache`).
//! - A pattern is matched against an entry's path relative to its source root
//!   (`cache/*.tmp`) and against its file name (`*.log`). A pattern starting
//!   with `/` is matched against the entry's absolute path instead
//!   (`/srv/app/cache`), as borgmatic users write them.
//! - A leading `./` and a trailing `/` are ignored. An excluded directory is
//!   not descended into. The source roots themselves are never excluded.

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(u8),
    One,
    Star,
    DStar,
    DStarSlash,
    Class { neg: bool, ranges: Vec<(u8, u8)> },
}

#[derive(Debug, Clone)]
struct Pat {
    toks: Vec<Tok>,
    absolute: bool,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Excludes {
    pats: Vec<Pat>,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut pats = Vec::with_capacity(patterns.len());
        for p in patterns {
            pats.push(compile(p).map_err(|m| format!("invalid exclude pattern {p:?}: {m}"))?);
        }
        Ok(Excludes { pats })
    }

    pub fn is_empty(&self) -> bool {
        self.pats.is_empty()
    }

    /// `rel`: path relative to the source root; `name`: file name; `abs`:
    /// absolute path.
    pub fn is_excluded(&self, rel: &[u8], name: &[u8], abs: &[u8]) -> bool {
        self.pats.iter().any(|p| {
            if p.absolute {
                matches(&p.toks, abs)
            } else {
                matches(&p.toks, rel) || matches(&p.toks, name)
            }
        })
    }
}

fn compile(pat: &str) -> Result<Pat, String> {
    let mut b = pat.as_bytes();
    if b.is_empty() {
        return Err("empty pattern".into());
    }
    while let Some(r) = b.strip_prefix(b"./") {
        b = r;
    }
    let absolute = b.first() == Some(&b'/');
    while b.len() > 1 && b.ends_with(b"/") {
        b = &b[..b.len() - 1];
    }
    let mut toks = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'*' => {
                if b.get(i + 1) == Some(&b'*') {
                    i += 2;
                    while b.get(i) == Some(&b'*') {
                        i += 1;
                    }
                    if b.get(i) == Some(&b'/') {
                        i += 1;
                        toks.push(Tok::DStarSlash);
                    } else {
                        toks.push(Tok::DStar);
                    }
                    continue;
                }
                toks.push(Tok::Star);
            }
            b'?' => toks.push(Tok::One),
            b'\\' => {
                i += 1;
                let c = *b.get(i).ok_or("trailing backslash")?;
                toks.push(Tok::Lit(c));
            }
            b'[' => {
                let mut j = i + 1;
                let neg = matches!(b.get(j), Some(b'!') | Some(b'^'));
                if neg {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *b.get(j).ok_or("unclosed '['")?;
                    if c == b']' && !first {
                        break;
                    }
                    first = false;
                    let c = if c == b'\\' {
                        j += 1;
                        *b.get(j).ok_or("trailing backslash")?
                    } else {
                        c
                    };
                    if b.get(j + 1) == Some(&b'-') && b.get(j + 2).is_some_and(|&d| d != b']') {
                        let d = b[j + 2];
                        if d < c {
                            return Err("reversed range in class".into());
                        }
                        ranges.push((c, d));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                toks.push(Tok::Class { neg, ranges });
                i = j;
            }
            c => toks.push(Tok::Lit(c)),
        }
        i += 1;
    }
    Ok(Pat { toks, absolute })
}

fn matches(p: &[Tok], s: &[u8]) -> bool {
    let Some((tok, rest)) = p.split_first() else {
        return s.is_empty();
    };
    match tok {
        Tok::Lit(c) => s.first() == Some(c) && matches(rest, &s[1..]),
        Tok::One => s.first().is_some_and(|&c| c != b'/') && matches(rest, &s[1..]),
        Tok::Class { neg, ranges } => {
            s.first().is_some_and(|&c| {
                c != b'/' && (ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *neg)
            }) && matches(rest, &s[1..])
        }
        Tok::Star => {
            for i in 0..=s.len() {
                if matches(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == b'/' {
                    break;
                }
            }
            false
        }
        Tok::DStar => (0..=s.len()).any(|i| matches(rest, &s[i..])),
        Tok::DStarSlash => {
            matches(rest, s) || (1..=s.len()).any(|i| s[i - 1] == b'/' && matches(rest, &s[i..]))
        }
    }
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
