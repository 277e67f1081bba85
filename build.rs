//! Embeds the shipped `scripts/` and `stdlib/` into the binary, so a single
//! binary works without the source tree. Generates `$OUT_DIR/embedded.rs`
//! holding `(relative path, contents)` pairs.
use std::{env, fs, path::Path};

fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, String)>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_dir() {
            collect(&p, &format!("{prefix}{name}/"), out);
        } else if name.ends_with(".rhai") {
            out.push((
                format!("{prefix}{name}"),
                p.canonicalize().unwrap().display().to_string(),
            ));
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    for (konst, sub) in [("SCRIPTS", "scripts"), ("STDLIB", "stdlib")] {
        let mut files = Vec::new();
        collect(&root.join(sub), "", &mut files);
        println!("cargo:rerun-if-changed={sub}");
        code.push_str(&format!("pub static {konst}: &[(&str, &str)] = &[\n"));
        for (rel, abs) in files {
            println!("cargo:rerun-if-changed={abs}");
            code.push_str(&format!("    ({rel:?}, include_str!({abs:?})),\n"));
        }
        code.push_str("];\n");
    }
    let out = Path::new(&env::var("OUT_DIR").unwrap()).join("embedded.rs");
    fs::write(out, code).unwrap();
}
