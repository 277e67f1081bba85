//! The backup workflow end to end: quickstart, verify, import, restore,
//! retention, dry-run, overlap, SIGKILL.

use crate::harness::*;
use std::path::Path;
use std::time::{Duration, Instant};

#[test]
fn quickstart_example_backs_up_and_restores() {
    let t = Test::new();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Copy examples/ so the test never writes into the source tree.
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(repo.join("examples"))
        .arg(t.path("ex"))
        .status()
        .unwrap();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(t.path("ex/quickstart-out"));
    let cfg = t.path("ex/quickstart.yaml");
    let run = |args: &[&str]| {
        let mut c = std::process::Command::new(BIN);
        c.arg("--config")
            .arg(&cfg)
            .args(args)
            .env("HOME", t.path("home"))
            .env_remove("HOMELAB_AUTOPILOT_CONFIG");
        Run::from_output(c.output().unwrap())
    };
    let r = run(&["run", "backup"]);
    r.code(0)
        .stdout_has("webapp")
        .stdout_has("webapp_")
        .stderr_has("pre_backup: ");
    let archives = t.archives("ex/quickstart-out/backups/webapp");
    assert_eq!(archives.len(), 1, "{:?}", archives);
    let name = archives[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("webapp_") && name.ends_with(".tar.zst"),
        "{name}"
    );
    // The sidecar is in sha256sum's own format.
    let ok = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(archives[0].parent().unwrap())
        .status()
        .unwrap();
    assert!(ok.success());
    // The copy at the destination.
    assert_eq!(t.archives("ex/quickstart-out/offsite/webapp").len(), 1);
    // The host service archived what exists and warned about /etc/pve.
    r.stderr_has("/etc/pve");
    assert_eq!(
        t.archives("ex/quickstart-out/backups/proxmox-host-config")
            .len(),
        1
    );

    let list = run(&["--json", "backups", "list"]);
    list.code(0);
    let doc = list.json();
    assert_eq!(doc["schema_version"], 1);
    let backups = doc["backups"].as_array().unwrap();
    assert!(backups
        .iter()
        .any(|b| b["service"] == "webapp" && b["kind"] == "archive" && b["verified_at"].is_i64()));

    run(&["backups", "verify"]).code(0).stdout_has("ok");
    let target = t.path("restored");
    run(&[
        "restore",
        archives[0].to_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ])
    .code(0);
    let restored_root = target.join(t.path("ex/data/webapp").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(restored_root.join("conf/app.ini")).unwrap(),
        std::fs::read_to_string(t.path("ex/data/webapp/conf/app.ini")).unwrap()
    );
    assert!(
        !restored_root.join("cache.tmp").exists(),
        "exclude pattern ignored"
    );
    run(&["status"]).code(0).stdout_has("webapp");
}

#[test]
fn corrupted_archive_fails_verify_with_65() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("", ""));
    t.run(&["run", "backup"]).code(0);
    let a = t.archives("backups/web").pop().unwrap();
    let mut bytes = std::fs::read(&a).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&a, bytes).unwrap();
    t.run(&["backups", "verify"]).code(65).stdout_has("FAILED");
    t.run(&["backups", "verify", a.to_str().unwrap()]).code(65);
    let doc = t.run(&["--json", "backups", "list"]).json();
    assert_eq!(doc["backups"][0]["status"], "failed_verify");
}

#[test]
fn import_rebuilds_a_lost_catalog() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("", ""));
    t.run(&["run", "backup"]).code(0);
    std::fs::remove_dir_all(t.path("state")).unwrap();
    t.run(&["--json", "backups", "list"]).code(0);
    let r = t.run(&["backups", "import", t.path("backups").to_str().unwrap()]);
    r.code(0).stdout_has("imported");
    let doc = t.run(&["--json", "backups", "list"]).json();
    assert_eq!(doc["backups"].as_array().unwrap().len(), 1);
    assert_eq!(doc["backups"][0]["service"], "web");
}

#[test]
fn retention_keeps_newest_and_dry_run_lists_what_it_would_delete() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config(
        "    keep_last: 2\n    retention_days: 0\n",
        "",
    ));
    for _ in 0..3 {
        t.run(&["run", "backup"]).code(0);
        std::thread::sleep(Duration::from_millis(1100)); // distinct second stamps
    }
    assert_eq!(t.archives("backups/web").len(), 2);
    // A policy that would drop one more: the dry run names it, deletes nothing.
    t.config(&basic_config(
        "    keep_last: 1\n    retention_days: 0\n",
        "",
    ));
    let before = snapshot(t.root.path());
    let existing = t.archives("backups/web");
    let oldest = existing[0].clone();
    let r = t.run(&["run", "backup", "--dry-run"]);
    r.code(0)
        .stderr_has("would create archive")
        .stderr_has(&format!("retention would delete {}", oldest.display()))
        .stderr_has(&format!(
            "retention would delete {}.sha256",
            oldest.display()
        ))
        .stderr_has(&format!(
            "retention would delete {}.manifest.json",
            oldest.display()
        ))
        // keep_last 1 counts the backup the run would make: both go.
        .stderr_has(&format!("retention would delete {}", existing[1].display()));
    assert_eq!(before, snapshot(t.root.path()), "a dry run changed files");
    // The real run deletes exactly what the dry run named.
    std::thread::sleep(Duration::from_millis(1100));
    t.run(&["run", "backup"]).code(0);
    let left = t.archives("backups/web");
    assert_eq!(left.len(), 1);
    assert!(!existing.contains(&left[0]));
}

#[test]
fn dry_run_on_a_fresh_root_creates_nothing() {
    let t = Test::new();
    t.data("data/web");
    t.config(&basic_config("", ""));
    let before = snapshot(t.root.path());
    t.run(&["run", "backup", "--dry-run"])
        .code(0)
        .stderr_has("[dry-run] would create archive");
    assert_eq!(before, snapshot(t.root.path()));
}

#[test]
fn overlapping_runs_exit_75_naming_the_holder() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.script("slow.rhai", "fn run(ctx) { time::sleep(4); }\n");
    let mut first = t.command(&["run", "slow"]).spawn().unwrap();
    let lock = t.path("state/locks/slow.lock");
    let start = Instant::now();
    while std::fs::read_to_string(&lock)
        .map(|s| s.is_empty())
        .unwrap_or(true)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "lock never taken"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = t.run(&["run", "slow"]);
    r.code(75).stderr_has(&format!("pid {}", first.id()));
    assert!(first.wait().unwrap().success());
    t.run(&["run", "slow"]).code(0);
}

#[test]
fn sigkill_during_a_large_archive_leaves_no_visible_partial_backup() {
    let t = Test::new();
    // ~256 MiB of incompressible data at the slowest level: takes seconds.
    let data = t.path("data/web");
    std::fs::create_dir_all(&data).unwrap();
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for i in 0..8 {
        let mut buf = vec![0u8; 32 << 20];
        for chunk in buf.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(data.join(format!("blob{i}")), buf).unwrap();
    }
    t.config(&basic_config(
        "    compression_level: 19\n    threads: 1\n",
        "",
    ));
    let mut child = t.command(&["run", "backup"]).spawn().unwrap();
    let start = Instant::now();
    let tmp_seen = || {
        let mut seen = false;
        walk(&t.path("backups"), &mut |p| {
            seen |= p.file_name().unwrap().to_string_lossy().contains(".tmp-")
        });
        seen
    };
    while !tmp_seen() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temp archive appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    assert!(
        t.archives("backups").is_empty(),
        "a final-named archive is visible after SIGKILL"
    );
    let doc = t.run(&["--json", "backups", "list"]).json();
    assert!(
        doc["backups"].as_array().unwrap().is_empty(),
        "catalog row for an incomplete artifact"
    );
    // The next run succeeds and clears the debris.
    t.config(&basic_config("    compression_level: 1\n", ""));
    t.run(&["run", "backup"]).code(0);
    assert_eq!(t.archives("backups").len(), 1);
    assert!(!tmp_seen(), "temp debris left behind");
    let runs = t.run(&["--json", "status"]).json();
    assert!(runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["status"] == "success"));
}

#[test]
fn excludes_are_globs_with_alternatives_classes_and_anchors() {
    let t = Test::new();
    t.config(
        "global:\n  backup:\n    root: {root}/backups\nservices:\n  - name: web\n    type: generic\n    backup_paths: [{root}/data/web]\n    exclude: [\"*.{tmp,log}\", \"**/cache/**\", \"x[0-9].dat\", \"sub/only-here.txt\"]\n",
    );
    for f in [
        "keep.txt",
        "a.tmp",
        "d/b.log",
        "d/c.logx",
        "cache/x",
        "d/e/cache/y",
        "cachex/z",
        "x7.dat",
        "d/x7.dat",
        "xa.dat",
        "sub/only-here.txt",
        "d/sub/only-here.txt",
    ] {
        t.write(&format!("data/web/{f}"), "x\n");
    }
    t.run(&["run", "backup"]).code(0);
    let archives = t.archives("backups/web");
    assert_eq!(archives.len(), 1);
    let out = std::process::Command::new("tar")
        .arg("--zstd")
        .arg("-tf")
        .arg(&archives[0])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let listed = String::from_utf8_lossy(&out.stdout);
    let has = |name: &str| {
        listed
            .lines()
            .any(|l| l.trim_end_matches('/').ends_with(name))
    };
    for kept in [
        "keep.txt",
        "d/c.logx",
        "cachex/z",
        "xa.dat",
        "d/sub/only-here.txt",
    ] {
        assert!(has(kept), "{kept} missing from:\n{listed}");
    }
    for gone in [
        "a.tmp",
        "d/b.log",
        "cache/x",
        "cache/y",
        "x7.dat",
        "web/sub/only-here.txt",
    ] {
        assert!(!has(gone), "{gone} not excluded:\n{listed}");
    }
}

#[test]
fn verify_as_configured_follows_global_backup_verify() {
    // A file whose sha256 is right but which is no archive: the checksum
    // mode accepts it, the full mode decodes it and refuses it.
    for (mode, code, want) in [("checksum", 0, "verified"), ("full", 1, "unsafe_archive")] {
        let t = Test::new();
        t.config(&basic_config(&format!("    verify: {mode}\n"), ""));
        let junk = t.path("junk.tar.zst");
        std::fs::write(&junk, b"not an archive").unwrap();
        let sha = {
            use sha2::Digest;
            format!("{:x}", sha2::Sha256::digest(b"not an archive"))
        };
        t.script(
            "check.rhai",
            &format!(
                "fn run(ctx) {{\n    try {{\n        archive::verify_as_configured(\"{}\", \"{sha}\");\n        log::info(\"verified\");\n    }} catch (e) {{\n        log::error(e.kind);\n        throw e;\n    }}\n}}\n",
                junk.display()
            ),
        );
        t.run(&["run", "check"]).code(code).stderr_has(want);
    }
}
