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

/// systemd-analyze, to check the shipped units as systemd reads them.
pub const SYSTEMD_ANALYZE: Requirement = Requirement {
    name: "systemd-analyze",
    install: "apt-get install systemd",
    probe: || tool_answers("systemd-analyze", "--version"),
    tests: &["packaging::the_shipped_units_load_and_are_hardened"],
    optional: false,
};

/// dpkg-deb, to build and read the package.
pub const DPKG: Requirement = Requirement {
    name: "dpkg-deb",
    install: "a Debian system (package dpkg)",
    probe: || tool_answers("dpkg-deb", "--version"),
    tests: &["packaging::the_deb_holds_the_binary_units_pages_and_completions"],
    optional: false,
};

fn tool_answers(tool: &str, arg: &str) -> Result<(), String> {
    match std::process::Command::new(tool).arg(arg).output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err(format!("no {tool} on PATH")),
    }
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A shipped unit as systemd would load it: templates instantiated as
/// `@backup`, the bare `homelab-autopilot` of ExecStart resolved to the
/// binary under test (systemd finds it on its own search path once
/// installed).
fn stage_unit(dir: &std::path::Path, file: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo().join("examples/systemd").join(file)).unwrap();
    let text = text
        .replace("ExecStart=homelab-autopilot ", &format!("ExecStart={BIN} "))
        .replace("%i", "backup");
    let name = file.replace("@.", "@backup.");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn exposure(unit: &std::path::Path, unit_path: &std::path::Path) -> f64 {
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(unit)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_path.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no score for {}: {text}", unit.display()));
    let score = line.split(": ").nth(1).unwrap().split(' ').next().unwrap();
    score.parse().unwrap()
}

#[test]
fn the_shipped_units_load_and_are_hardened() {
    if !require(&SYSTEMD_ANALYZE) {
        return;
    }
    let t = Test::new();
    let dir = t.path("units");
    std::fs::create_dir_all(&dir).unwrap();
    let mut services = Vec::new();
    for e in std::fs::read_dir(repo().join("examples/systemd")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".service") || name.ends_with(".timer") {
            let staged = stage_unit(&dir, &name);
            if name.ends_with(".service") {
                services.push(staged);
            }
        }
    }
    assert!(services.len() >= 2, "{services:?}");
    for unit in &services {
        verify_unit(unit, &dir);
        // borgmatic's sample unit scores 2.7; ours must not be worse.
        let score = exposure(unit, &dir);
        assert!(score <= 2.7, "{}: exposure {score}", unit.display());
    }

    // The Proxmox/local drop-in is read and lifts the sandbox (pvesh and
    // vzdump need it), and only for the instance it is installed for.
    let dropin = dir.join("homelab-autopilot@backup.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::copy(
        repo().join("examples/systemd/proxmox-local.conf"),
        dropin.join("proxmox-local.conf"),
    )
    .unwrap();
    let unit = dir.join("homelab-autopilot@backup.service");
    let relaxed = exposure(&unit, &dir);
    assert!(relaxed > 5.0, "the drop-in was not applied: {relaxed}");
    verify_unit(&unit, &dir);
}

/// `systemd-analyze verify` loads the unit (with drop-ins from
/// `unit_path`) without an error or a warning about it.
fn verify_unit(unit: &std::path::Path, unit_path: &std::path::Path) {
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", unit_path.display()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    assert!(
        out.status.success() && !err.contains(name.as_ref()),
        "{}: {err}",
        unit.display()
    );
}

#[test]
fn the_deb_holds_the_binary_units_pages_and_completions() {
    if !require(&DPKG) {
        return;
    }
    let t = Test::new();
    let out_dir = t.path("out");
    let out = std::process::Command::new(repo().join(".ci/build-deb"))
        .args(["--binary", BIN, "--compress", "zstd", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        deb.starts_with(&out_dir) && deb.exists(),
        "{}",
        deb.display()
    );

    let field = |f: &str| {
        let o = std::process::Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg(f)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(field("Package"), "homelab-autopilot");
    assert_eq!(field("Version"), env!("CARGO_PKG_VERSION"));
    assert!(
        field("Depends").starts_with("libc6"),
        "{}",
        field("Depends")
    );

    let root = t.path("root");
    let o = std::process::Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "usr/bin/homelab-autopilot",
        "usr/lib/systemd/system/homelab-autopilot@.service",
        "usr/lib/systemd/system/homelab-autopilot@.timer",
        "usr/lib/systemd/system/homelab-autopilot-verify.service",
        "usr/lib/systemd/system/homelab-autopilot-verify.timer",
        "usr/share/man/man1/homelab-autopilot.1.gz",
        "usr/share/man/man1/homelab-autopilot-run.1.gz",
        "usr/share/bash-completion/completions/homelab-autopilot",
        "usr/share/zsh/vendor-completions/_homelab-autopilot",
        "usr/share/fish/vendor_completions.d/homelab-autopilot.fish",
        "usr/share/doc/homelab-autopilot/install.md",
        "usr/share/doc/homelab-autopilot/examples/quickstart.yaml",
        "usr/share/doc/homelab-autopilot/examples/systemd/proxmox-local.conf",
    ] {
        assert!(root.join(f).exists(), "{f} is not in the package");
    }
    assert!(
        !root.join("etc").exists(),
        "the package must not install configuration"
    );
    // The packaged binary runs and is the one built.
    let v = std::process::Command::new(root.join("usr/bin/homelab-autopilot"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).contains(env!("CARGO_PKG_VERSION")));
    // md5sums agree with the files, as `dpkg --verify` would check.
    let sums = std::fs::read_to_string(t.path("control/md5sums")).or_else(|_| {
        let o = std::process::Command::new("dpkg-deb")
            .arg("-e")
            .arg(&deb)
            .arg(t.path("control"))
            .output()
            .unwrap();
        assert!(o.status.success());
        std::fs::read_to_string(t.path("control/md5sums"))
    });
    let sums = sums.unwrap();
    assert!(sums.contains("usr/bin/homelab-autopilot"));
    let check = std::process::Command::new("md5sum")
        .args(["-c", "--quiet"])
        .arg(t.path("control/md5sums"))
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}
