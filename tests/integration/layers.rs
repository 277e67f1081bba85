//! The layering rule of docs/architecture.md, checked on the source tree:
//! no import runs upwards, and Rhai types stay in `script/` and
//! `primitives/`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `crate::<module>` paths named in a file's code (comments left out).
fn crate_paths(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            found.push(name);
        }
        // `use crate::{a, b}` groups.
        if let Some(i) = code.find("crate::{") {
            let group = &code[i + "crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        }
    }
    found
}

/// Which top-level module a file belongs to (`src/pve/ops.rs` -> `pve`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The layers above each kind of module: what it must never import.
fn forbidden_for(module: &str) -> &'static [&'static str] {
    const FACE: &[&str] = &["commands", "cli"];
    const ABOVE_SCRIPT: &[&str] = &["commands", "cli", "app"];
    const ABOVE_DOMAIN: &[&str] = &["commands", "cli", "app", "script", "primitives"];
    // config and state sit under the domains: they import none of them.
    const ABOVE_STORE: &[&str] = &[
        "commands",
        "cli",
        "app",
        "script",
        "primitives",
        "archive",
        "catalog",
        "pve",
        "notify",
        "monitor",
        "metrics",
        "proc",
        "files",
        "lock",
        "retention",
    ];
    match module {
        "main" | "lib" | "commands" | "cli" => &[],
        "app" => FACE,
        "script" => &["commands", "cli", "app", "primitives"],
        "primitives" => ABOVE_SCRIPT,
        "config" | "state" => ABOVE_STORE,
        _ => ABOVE_DOMAIN,
    }
}

#[test]
fn imports_follow_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(
        files.len() > 50,
        "source tree not found at {}",
        src.display()
    );
    let mut wrong = Vec::new();
    for f in &files {
        let module = module_of(&src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for used in crate_paths(&text) {
            if forbidden_for(&module).contains(&used.as_str()) {
                wrong.push(format!(
                    "{} ({module}) imports crate::{used}",
                    f.strip_prefix(&src).unwrap().display()
                ));
            }
        }
        let names_rhai = text
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .any(|code| code.contains("rhai::"));
        if names_rhai && !matches!(module.as_str(), "script" | "primitives") {
            wrong.push(format!(
                "{} ({module}) names a rhai type",
                f.strip_prefix(&src).unwrap().display()
            ));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let text =
        "use crate::{config, primitives::glue};\nfn f() { crate::commands::x(); } // crate::cli\n";
    let used = crate_paths(text);
    assert!(used.contains(&"primitives".to_string()), "{used:?}");
    assert!(used.contains(&"commands".to_string()), "{used:?}");
    assert!(!used.contains(&"cli".to_string()), "{used:?}");
    assert!(forbidden_for("pve").contains(&"primitives"));
    assert!(!forbidden_for("primitives").contains(&"script"));
    assert!(forbidden_for("state").contains(&"notify"));
}
