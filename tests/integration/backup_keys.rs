//! Backup keys that do what they say: a missing source fails its service, a
//! backup with nothing in it is never `ok` and never counts toward retention,
//! unreadable files are left out with a warning and exit 3, two backups with
//! the same name stamp both keep their archives, `compression: false` writes
//! plain tar, `enabled: false` takes no backup.

use crate::harness::*;
use std::path::{Path, PathBuf};

/// Our archives (`.tar.zst` and `.tar`) under a directory, sorted.
fn all_archives(t: &Test, rel: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&t.path(rel), &mut |p| {
        let n = p.file_name().unwrap().to_string_lossy();
        if !n.starts_with('.') && (n.ends_with(".tar.zst") || n.ends_with(".tar")) {
            out.push(p.to_path_buf());
        }
    });
    out.sort();
    out
}

fn listed(t: &Test) -> Vec<serde_json::Value> {
    let doc = t.run(&["--json", "backups", "list"]).json();
    doc["backups"].as_array().unwrap().clone()
}

#[test]
fn a_missing_source_fails_the_service_and_never_costs_the_last_real_backup() {
    let t = Test::new();
    t.data("data/web");
    let cfg = |paths: &str| {
        format!(
            "global:\n  backup:\n    root: {{root}}/backups\n    keep_last: 1\n    retention_days: 0\nservices:\n  - name: web\n    type: generic\n    backup_paths: {paths}\n"
        )
    };
    t.config(&cfg("[{root}/data/web]"));
    t.run(&["run", "backup"]).code(0);
    let first = all_archives(&t, "backups/web");
    assert_eq!(first.len(), 1);

    // A typo in backup_paths: the service fails (exit 1), nothing is
    // written, no backup_success, and retention does not run.
    t.config(&cfg("[{root}/data/wbe]"));
    let r = t.run(&["run", "backup"]);
    r.code(1)
        .stdout_has("FAILED")
        .stderr_has("data/wbe does not exist")
        .stderr_has("backup_failed");
    assert!(!r.stderr.contains("backup_success"), "{}", r.stderr);
    assert_eq!(all_archives(&t, "backups/web"), first);

    // Marked optional, the missing path is skipped; with nothing else to
    // archive the backup is empty, which is never ok either.
    t.config(&cfg("[{path: \"{root}/data/wbe\", optional: true}]"));
    let r = t.run(&["run", "backup"]);
    r.code(1).stderr_has("nothing to back up");
    assert!(!r.stderr.contains("backup_success"), "{}", r.stderr);
    assert_eq!(all_archives(&t, "backups/web"), first);
    let rows = listed(&t);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["location"], first[0].display().to_string());
    t.run(&["backups", "verify"]).code(0);

    // Optional and missing next to a path that exists: a warning, not a
    // failure; the new backup replaces the old one under keep_last: 1.
    t.config(&cfg(
        "[{root}/data/web, {path: \"{root}/data/wbe\", optional: true}]",
    ));
    let r = t.run(&["run", "backup"]);
    r.code(0)
        .stderr_has("data/wbe: source does not exist, skipped");
    let now = all_archives(&t, "backups/web");
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
}

#[test]
fn two_backups_with_the_same_stamp_keep_both_archives_through_retention_and_import() {
    let t = Test::new();
    t.data("data/web");
    let cfg = |keep: u32| {
        basic_config(
            &format!("    keep_last: {keep}\n    retention_days: 0\n"),
            "",
        )
    };
    t.config(&cfg(5));
    // Every backup of `web` gets the same second stamp, as two backups
    // started within one second do (time::stamp has one-second resolution).
    t.script(
        "lib/sources.rhai",
        &std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("stdlib/sources.rhai"))
            .unwrap()
            .replace(
                "`${svc.name}_${time::stamp()}.tar.zst`",
                "`${svc.name}_20261130_120000.tar.zst`",
            ),
    );
    t.run(&["run", "backup"]).code(0);
    let r = t.run(&["run", "backup"]);
    r.code(0);
    assert!(!r.stderr.contains("already exists"), "{}", r.stderr);
    let names: Vec<String> = all_archives(&t, "backups/web")
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "web_20261130_120000-2.tar.zst",
            "web_20261130_120000.tar.zst"
        ]
    );
    assert_eq!(listed(&t).len(), 2);
    t.run(&["backups", "verify"]).code(0);

    // The catalog rebuilt from the files alone has both.
    std::fs::remove_dir_all(t.path("state")).unwrap();
    t.run(&["backups", "import", t.path("backups").to_str().unwrap()])
        .code(0);
    let rows = listed(&t);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|b| b["service"] == "web" && b["verified_at"].is_i64()));

    // Retention parses both: keep_last 1 keeps only the newest (the third).
    t.config(&cfg(1));
    t.run(&["run", "backup"]).code(0);
    let left = all_archives(&t, "backups/web");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with("web_20261130_120000-3.tar.zst"),
        "{left:?}"
    );
}

#[test]
fn compression_false_writes_plain_tar_that_verifies_restores_and_imports() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "    compression: false\n    verify: full\n",
        "",
    ));
    let r = t.run(&["--json", "run", "backup"]);
    r.code(0);
    let a = all_archives(&t, "backups/web");
    assert_eq!(a.len(), 1);
    let name = a[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.ends_with(".tar") && !name.ends_with(".tar.zst"),
        "{name}"
    );
    // GNU tar reads it as it is, without any decompressor.
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&a[0])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("sub/b.txt"));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(format!("{}.manifest.json", a[0].display())).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["compression"], "none");

    t.run(&["backups", "verify"]).code(0).stdout_has("ok");
    t.run(&["backups", "verify", a[0].to_str().unwrap()])
        .code(0);
    let id = listed(&t)[0]["id"].as_i64().unwrap().to_string();
    let target = t.path("restored");
    t.run(&["restore", &id, "--to", target.to_str().unwrap()])
        .code(0);
    let data = t.path("data/web");
    let back = target.join(data.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(back.join("sub/b.txt")).unwrap(),
        "bravo\n"
    );

    std::fs::remove_dir_all(t.path("state")).unwrap();
    t.run(&["backups", "import", t.path("backups").to_str().unwrap()])
        .code(0)
        .stdout_has("imported");
    let rows = listed(&t);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["location"], a[0].display().to_string());

    // A flipped byte is caught in a plain tar as in a compressed one.
    let mut bytes = std::fs::read(&a[0]).unwrap();
    bytes[700] ^= 0x55;
    std::fs::write(&a[0], bytes).unwrap();
    t.run(&["backups", "verify"]).code(65);
}

#[test]
fn backup_enabled_false_takes_no_backup_and_says_so_once() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("    enabled: false\n", ""));
    let r = t.run(&["run", "backup"]);
    r.code(0);
    assert_eq!(
        r.stderr
            .matches("global.backup.enabled is false: no backups taken")
            .count(),
        1,
        "{}",
        r.stderr
    );
    assert!(all_archives(&t, "backups").is_empty());
    assert!(listed(&t).is_empty());
}

/// Root reads every file whatever its mode, so the unreadable file is made
/// unreadable for an unprivileged uid: when the tests run as root (as in CI)
/// the binary runs as `nobody` through `setpriv`, over a test root chowned
/// to it; otherwise it runs as the current user.
#[test]
fn an_unreadable_file_is_left_out_with_a_warning_and_the_run_exits_3() {
    use std::os::unix::fs::PermissionsExt;
    let t = Test::new();
    t.data("data/web");
    t.write("data/web/locked/inner.txt", "hidden\n");
    t.write("data/web/secret.key", "hidden\n");
    t.config(&basic_config("", ""));
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let ok = std::process::Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(t.root.path())
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let set = |rel: &str, mode: u32| {
        std::fs::set_permissions(t.path(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    set("data/web/locked", 0o000);
    set("data/web/secret.key", 0o000);
    let run = |args: &[&str]| {
        let c = t.command(args);
        let mut cmd = if root {
            let mut s = std::process::Command::new("setpriv");
            s.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(c.get_program())
                .args(c.get_args());
            for (k, v) in c.get_envs() {
                match v {
                    Some(v) => s.env(k, v),
                    None => s.env_remove(k),
                };
            }
            s
        } else {
            c
        };
        Run::from_output(cmd.stdin(std::process::Stdio::null()).output().unwrap())
    };
    let r = run(&["--json", "run", "backup"]);
    set("data/web/locked", 0o755);
    set("data/web/secret.key", 0o644);
    r.code(3);
    assert!(
        r.stderr.contains("secret.key: cannot read") && r.stderr.contains("locked: cannot read"),
        "{}",
        r.stderr
    );
    let doc = r.json();
    assert_eq!(doc["status"], "warning", "{doc}");
    let a = all_archives(&t, "backups/web");
    assert_eq!(a.len(), 1);
    let out = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&a[0])
        .output()
        .unwrap();
    let names = String::from_utf8_lossy(&out.stdout);
    assert!(names.contains("sub/b.txt"), "{names}");
    assert!(
        !names.contains("secret.key") && !names.contains("inner.txt"),
        "{names}"
    );
    run(&["backups", "verify"]).code(0);
}
