//! Every key the schema accepts is read by some code path, or refused by
//! validation as not available in this version: a key that is accepted and
//! then ignored is a promise the tool does not keep.
//!
//! The keys come from the config types ([`super::keys::all_keys`]). A key is
//! read when its name appears as a field access (`.name`, `"name"`) in the
//! code that acts on the configuration (src/ without config validation,
//! loading and tests; scripts/; stdlib/), and so does its parent's name,
//! so that `restore_testing.enabled` is not taken as read because some
//! other `enabled` is.

use std::path::{Path, PathBuf};

/// Keys (with everything under them) read by work that is not in this
/// tree yet, with the reason. Empty: every key is read or refused.
const EXEMPT: &[(&str, &str)] = &[];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "rhai") {
            out.push(p);
        }
    }
}

/// The text of the code that acts on the configuration.
fn corpus() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for d in ["src", "scripts", "stdlib"] {
        sources(&root.join(d), &mut files);
    }
    let config = root.join("src/config");
    let mut text = String::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let name = f.file_name().unwrap().to_string_lossy();
        // Validation, loading and the deserializer check or move keys
        // without acting on them; tests read what they set up.
        let skipped = f.starts_with(config.join("validate"))
            || (f.parent() == Some(config.as_path())
                && ["mod.rs", "spanned.rs", "keys.rs", "unread_keys.rs"].contains(&name.as_ref()))
            || name == "tests.rs"
            || name == "bench.rs";
        if skipped {
            continue;
        }
        let mut s = std::fs::read_to_string(&f).unwrap();
        if let Some(i) = s.find("#[cfg(test)]\nmod tests") {
            s.truncate(i);
        }
        if rel == "src/config/schema.rs" {
            // The conversions between the YAML shape and the typed one
            // name every field of global.backup.
            s = strip_blocks(&s, "impl From<");
        }
        text.push_str(&s);
        text.push('\n');
    }
    text
}

/// `s` without the brace-balanced blocks that start at a line beginning
/// with `start`.
fn strip_blocks(s: &str, start: &str) -> String {
    let mut out = String::new();
    let mut depth = 0i32;
    let mut skipping = false;
    for line in s.lines() {
        if !skipping && line.starts_with(start) {
            skipping = true;
            depth = 0;
        }
        if skipping {
            depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
            if depth <= 0 && line.contains('}') {
                skipping = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Whether `name` is read in `code`: `.name` (a Rust or Rhai field), or
/// `"name"` / `.name"` (a map key, a `config::get` path).
fn read_in(code: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let field = format!(".{name}");
    let found = code
        .match_indices(&field)
        .any(|(i, _)| !code[i + field.len()..].starts_with(word));
    found || code.contains(&format!("\"{name}\"")) || (name == "type" && code.contains("_type"))
}

/// `key` is `prefix` or a key below it.
fn under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// The keys the schema accepts that no code path reads (and that are
/// neither exempt nor refused by validation).
fn unread() -> Vec<String> {
    let code = corpus();
    let keys = super::keys::all_keys();
    let has_children = |k: &str| {
        keys.iter().any(|o| {
            o.len() > k.len() && o.starts_with(k) && matches!(o.as_bytes()[k.len()], b'.' | b'[')
        })
    };
    let refused = super::pending_keys();
    keys.iter()
        .filter(|k| !has_children(k))
        .filter(|k| !EXEMPT.iter().any(|(e, _)| under(k, e)))
        .filter(|k| !refused.iter().any(|(p, _)| under(k, p)))
        .filter(|k| !super::refused_keys().iter().any(|p| under(k, p)))
        .filter(|k| {
            let segs: Vec<&str> = k.split('.').map(|s| s.trim_end_matches("[]")).collect();
            let leaf = segs[segs.len() - 1];
            // The parent must be read too, unless it is a top section or
            // a list item directly under one (global.backup, services[]).
            let parent_ok = segs.len() < 3 || read_in(&code, segs[segs.len() - 2]);
            !(read_in(&code, leaf) && parent_ok)
        })
        .cloned()
        .collect()
}

#[test]
fn every_accepted_key_is_read_by_some_code_path() {
    let keys = super::keys::all_keys();
    assert!(
        keys.len() > 100 && keys.contains(&"services[].backup_paths".to_string()),
        "the key listing found too little: {keys:?}"
    );
    for (e, _) in EXEMPT {
        assert!(
            keys.contains(&e.to_string()),
            "exempt key {e} is not in the schema"
        );
    }
    let unread = unread();
    assert!(
        unread.is_empty(),
        "keys the schema accepts but no code path reads (wire them up, remove them, \
         or refuse them in validation):\n  {}",
        unread.join("\n  ")
    );
}

#[test]
fn the_check_tells_a_read_key_from_an_unread_one() {
    let code = "let x = cfg.global.backup.threads;\nlet y = m[\"total\"];\n";
    assert!(read_in(code, "threads"));
    assert!(read_in(code, "total"));
    assert!(
        !read_in(code, "thread"),
        "a prefix of a read name is not read"
    );
    assert!(!read_in(code, "threads_max"));
    assert!(under("services[].update.command", "services[].update"));
    assert!(!under("services[].updates", "services[].update"));
}
