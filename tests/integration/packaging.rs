//! What a package installs besides the binary: shell completions and
//! manual pages generated from the command line itself, so they never
//! disagree with it.

use crate::harness::*;

/// Ask the bash completion function what it offers for `words` (the last
/// one being completed), as bash does on TAB.
fn bash_complete(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let cword = words.len() - 1;
    let cur = words[cword];
    let prev = if cword > 0 { words[cword - 1] } else { "" };
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let code = format!(
        "source \"$1\"; COMP_WORDS=({}); COMP_CWORD={cword}; _homelab__autopilot homelab-autopilot '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        quoted.join(" ")
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(code)
        .arg("bash")
        .arg(script)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_completes_commands_subcommands_and_their_options() {
    let t = Test::new();
    let r = t.run(&["completions", "bash"]);
    r.code(0);
    let script = t.path("homelab-autopilot.bash");
    std::fs::write(&script, &r.stdout).unwrap();

    let top = bash_complete(&script, &["homelab-autopilot", "ba"]);
    assert_eq!(top, vec!["backups"]);
    let sub = bash_complete(&script, &["homelab-autopilot", "backups", "ve"]);
    assert_eq!(sub, vec!["verify"]);
    // Past a subcommand: its own options (the part that breaks first).
    let opts = bash_complete(&script, &["homelab-autopilot", "restore", "7", "--allow"]);
    assert_eq!(opts, vec!["--allow-absolute-symlinks"]);
    let run = bash_complete(&script, &["homelab-autopilot", "run", "backup", "--dr"]);
    assert_eq!(run, vec!["--dry-run"]);
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    let t = Test::new();
    for shell in ["zsh", "fish"] {
        let r = t.run(&["completions", shell]);
        r.code(0);
        for cmd in [
            "run",
            "backups",
            "restore",
            "status",
            "notify",
            "completions",
            "man",
        ] {
            assert!(r.stdout.contains(cmd), "{shell}: {cmd} missing");
        }
    }
    if cfg!(target_os = "linux") {
        t.run(&["completions", "tcsh"]).code(2).stderr_has("tcsh");
    }
}

#[test]
fn man_pages_are_generated_for_every_command_and_render() {
    let t = Test::new();
    let r = t.run(&["man"]);
    r.code(0).stdout_has(".TH homelab-autopilot 1");
    for cmd in ["run", "backups", "restore", "status"] {
        assert!(r.stdout.contains(cmd), "{cmd} missing from the main page");
    }

    let dir = t.path("man");
    let r = t.run(&["man", "--dir", dir.to_str().unwrap()]);
    r.code(0);
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "homelab-autopilot.1",
        "homelab-autopilot-run.1",
        "homelab-autopilot-backups-verify.1",
        "homelab-autopilot-restore.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} not in {pages:?}");
    }
    let verify = std::fs::read_to_string(dir.join("homelab-autopilot-backups-verify.1")).unwrap();
    assert!(
        verify.contains(".TH homelab-autopilot-backups-verify 1"),
        "{verify}"
    );
    assert!(verify.contains("\\-\\-service"), "{verify}");
}

/// groff, to render the pages as `man` does.
pub const GROFF: Requirement = Requirement {
    name: "groff",
    install: "apt-get install groff-base",
    probe: groff_available,
    tests: &["packaging::man_pages_render_without_warnings"],
    optional: false,
};

fn groff_available() -> Result<(), String> {
    match std::process::Command::new("groff")
        .arg("--version")
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("no groff on PATH".into()),
    }
}

#[test]
fn man_pages_render_without_warnings() {
    if !require(&GROFF) {
        return;
    }
    let t = Test::new();
    let dir = t.path("man");
    t.run(&["man", "--dir", dir.to_str().unwrap()]).code(0);
    for page in std::fs::read_dir(&dir).unwrap() {
        let page = page.unwrap().path();
        let out = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-P-cbou"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", page.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            "",
            "groff warnings for {}",
            page.display()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    }
}
