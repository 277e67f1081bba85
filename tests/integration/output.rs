//! Output for unattended runs: `-q` silent on success (cron mails only when
//! something needs a human), syslog priorities when stderr is the journal,
//! and log files that rotate by size.

use crate::harness::*;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

#[test]
fn quiet_prints_nothing_on_success_and_the_report_on_failure() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.data("data/web");
    let r = t.run(&["-q", "run", "backup"]);
    r.code(0);
    assert_eq!(r.stdout, "", "stdout on a quiet success");
    assert_eq!(r.stderr, "", "stderr on a quiet success");
    // Lists are the answer itself: -q does not hide them.
    t.run(&["-q", "backups", "list"]).code(0).stdout_has("web");

    // A failing service fails the run: its report goes to stderr,
    // nothing to stdout.
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) { throw \"disk on fire\"; }\n",
    );
    let r = t.run(&["-q", "run", "backup"]);
    r.code(1).stderr_has("FAILED").stderr_has("disk on fire");
    assert_eq!(r.stdout, "", "stdout on a quiet failure");
}

/// Run the binary with stderr going to a file, and `$JOURNAL_STREAM`
/// naming that file's device and inode as systemd names the journal stream.
fn run_under_journal(t: &Test, args: &[&str], name_stream: bool) -> (i32, String) {
    let err_path = t.path("stderr.txt");
    let err = std::fs::File::create(&err_path).unwrap();
    let meta = err.metadata().unwrap();
    let mut c = t.command(args);
    if name_stream {
        c.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    } else {
        // Inherited from a parent whose stderr was the journal: not ours.
        c.env(
            "JOURNAL_STREAM",
            format!("{}:{}", meta.dev(), meta.ino() + 1),
        );
    }
    let status = c
        .stdout(Stdio::null())
        .stderr(Stdio::from(err))
        .status()
        .unwrap();
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&err_path).unwrap(),
    )
}

#[test]
fn under_the_journal_lines_carry_syslog_priorities_and_no_files_are_written() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.data("data/web");
    t.script(
        "services/web.rhai",
        "fn pre_backup(svc, ctx) { log::warn(\"a warning line\"); log::error(\"an error line\"); }\n",
    );
    let (code, err) = run_under_journal(&t, &["run", "backup"], true);
    assert!(code == 0 || code == 3, "exit {code}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(
            l.starts_with("<3>")
                || l.starts_with("<4>")
                || l.starts_with("<6>")
                || l.starts_with("<7>"),
            "a line without a priority: {l:?}\n{err}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>") && l.contains("a warning line")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>") && l.contains("an error line")),
        "{err}"
    );
    assert!(lines.iter().any(|l| l.starts_with("<6>")), "{err}");
    // No level words repeated after the prefix, no ANSI.
    assert!(!err.contains(" WARN ") && !err.contains('\u{1b}'), "{err}");
    // The journal keeps the logs: `files: auto` writes no log files.
    assert!(!t.path("state/logs/main.log").exists());
    assert!(!t.path("state/logs/backup.log").exists());

    // A JOURNAL_STREAM that is not our stderr is ignored: plain lines,
    // and the files are written.
    let (_, err) = run_under_journal(&t, &["run", "backup"], false);
    assert!(!err.starts_with('<'), "{err}");
    assert!(err.contains("WARN"), "{err}");
    assert!(t.path("state/logs/main.log").exists());
}

#[test]
fn log_files_rotate_by_size_and_keep_the_configured_count() {
    let t = Test::new();
    t.config(&basic_config(
        "  logging:\n    files: on\n    max_size_mb: 1\n    keep: 2\n",
        "",
    ));
    t.data("data/web");
    let logs = t.path("state/logs");
    std::fs::create_dir_all(&logs).unwrap();
    let big = "x".repeat(1024 * 1024 + 10);
    std::fs::write(logs.join("main.log"), format!("{big}\nOLDEST\n")).unwrap();
    std::fs::write(logs.join("main.log.1"), "ONE\n").unwrap();
    std::fs::write(logs.join("main.log.2"), "TWO\n").unwrap();

    t.run(&["run", "backup"]).code(0);
    let read = |n: &str| std::fs::read_to_string(logs.join(n)).unwrap_or_default();
    assert!(
        read("main.log.1").contains("OLDEST"),
        "the full file moved to .1"
    );
    assert_eq!(read("main.log.2"), "ONE\n", ".1 moved to .2");
    assert!(!logs.join("main.log.3").exists(), "more than keep: 2 files");
    let current = read("main.log");
    assert!(current.len() < 1024 * 1024, "main.log was not started anew");
    assert!(current.contains("backup"), "{current}");
    // The workflow's own log is bounded the same way.
    assert!(logs.join("backup.log").exists());

    // `files: off`: nothing more is written to the files.
    t.config(&basic_config("  logging:\n    files: off\n", ""));
    let before = read("main.log");
    t.run(&["run", "backup"]).code(0);
    assert_eq!(read("main.log"), before);
}

#[test]
fn a_bad_logging_value_is_a_config_error_naming_the_field() {
    let t = Test::new();
    t.config(&basic_config("  logging:\n    files: sometimes\n", ""));
    t.run(&["config", "validate"])
        .code(78)
        .stderr_has("homelab-autopilot.yaml:")
        .stderr_has("files");
}

#[test]
fn a_backup_on_a_terminal_shows_its_progress_and_elsewhere_does_not() {
    let t = Test::new();
    t.config(&basic_config("", ""));
    t.data("data/web");
    // Enough bytes that the archive takes a moment to write.
    let big: Vec<u8> = (0..24 * 1024 * 1024u64)
        .map(|i| (i * 7919 % 251) as u8)
        .collect();
    std::fs::write(t.path("data/web/big.bin"), big).unwrap();

    let screen = t.on_a_terminal(&["run", "backup"], &[]).1;
    assert!(screen.contains("archiving web_"), "{screen}");
    assert!(screen.contains("files"), "{screen}");
    assert!(screen.contains("MiB") || screen.contains("KiB"), "{screen}");
    assert!(
        screen.contains("backup:"),
        "the report still prints: {screen}"
    );

    // Not a terminal (cron, systemd, a pipe): no progress at all.
    let r = t.run(&["run", "backup"]);
    r.code(0);
    assert!(!r.stderr.contains("archiving"), "{}", r.stderr);
    // --json on a terminal: the document alone, no bars.
    let screen = t.on_a_terminal(&["--json", "backups", "verify"], &[]).1;
    assert!(!screen.contains("verifying"), "{screen}");
    let screen = t.on_a_terminal(&["backups", "verify"], &[]).1;
    assert!(screen.contains("verifying web_"), "{screen}");
}
