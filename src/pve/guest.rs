//! Commands inside a guest, and what the update of a guest needs from them.
//!
//! A VM runs commands through the QEMU guest agent over the API
//! (`POST .../agent/exec` with `command` as an array, then
//! `GET .../agent/exec-status?pid=` until `exited`). A container has no
//! exec endpoint in the API: only `pct exec` on the node itself
//! (`proxmox.local: true`) runs a command in it. Every command is an argv
//! array; nothing is interpolated into a shell string.
//!
//! The package manager is read from the guest's `/etc/os-release`
//! (`ID`, `ID_LIKE`), or else probed (`apt-get`, `apk`, `dnf`).
//! Snapshots taken before an update are named
//! `autopilot-pre-update-<YYYYMMDDhhmmss>` (UTC); only names of exactly
//! that shape are ever deleted by the cleanup.

use super::error::{PveError, PveResult};
use super::types::{GuestKind, GuestRef, SnapshotInfo};
use super::Pve;
use std::time::{Duration, Instant};

/// What a command in a guest ended with.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExecOutput {
    /// The exit code (-1 when the agent reports a signal instead).
    pub code: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Whether commands can run inside a guest of this kind, or why not.
pub fn exec_support(kind: GuestKind, local: bool) -> Result<(), String> {
    match kind {
        GuestKind::Qemu => Ok(()),
        GuestKind::Lxc if local => Ok(()),
        GuestKind::Lxc => Err(
            "the Proxmox API cannot run commands inside a container (there is no exec endpoint for lxc); \
             updating a container needs proxmox.local: true on the node, where pct exec runs them"
                .into(),
        ),
    }
}

/// The addresses a running guest reports: a VM's through its guest agent
/// (`GET .../agent/network-get-interfaces`), a container's from
/// `GET .../interfaces`; loopback, link-local and unspecified ones left
/// out.
pub fn addresses(pve: &Pve, g: &GuestRef) -> PveResult<Vec<std::net::IpAddr>> {
    use super::Method;
    let list = match g.kind {
        GuestKind::Qemu => {
            let path = format!("{}/agent/network-get-interfaces", g.path());
            pve.t.call(Method::Get, &path, &Vec::new())?["result"].take()
        }
        GuestKind::Lxc => {
            let path = format!("{}/interfaces", g.path());
            pve.t.call(Method::Get, &path, &Vec::new())?
        }
    };
    let mut out = Vec::new();
    for i in list.as_array().into_iter().flatten() {
        for a in i["ip-addresses"].as_array().into_iter().flatten() {
            let Some(ip) = a["ip-address"]
                .as_str()
                .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            else {
                continue;
            };
            let link_local = match ip {
                std::net::IpAddr::V4(v4) => v4.is_link_local(),
                std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
            if !ip.is_loopback() && !ip.is_unspecified() && !link_local {
                out.push(ip);
            }
        }
    }
    Ok(out)
}

/// Run `argv` inside the guest and wait for it (at most `timeout`).
pub fn exec(
    pve: &Pve,
    g: &GuestRef,
    local: bool,
    argv: &[String],
    timeout: Duration,
) -> PveResult<ExecOutput> {
    exec_support(g.kind, local).map_err(PveError::Invalid)?;
    if g.kind == GuestKind::Lxc {
        let r = super::local::pct_exec(g.vmid, argv, timeout)?;
        if r.timed_out {
            return Err(PveError::Command {
                program: "pct".into(),
                message: format!("{} timed out after {} s", argv[0], timeout.as_secs()),
            });
        }
        return Ok(ExecOutput {
            code: r.code as i64,
            stdout: r.stdout,
            stderr: r.stderr,
        });
    }
    let pid = pve.agent_exec(g, argv, None)?;
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        let v = pve.agent_exec_status(g, pid)?;
        // `exited` is a boolean in the schema; older agents send 0/1.
        let exited = v["exited"].as_bool().unwrap_or(false) || v["exited"].as_i64() == Some(1);
        if exited {
            let code = v["exitcode"]
                .as_i64()
                .or_else(|| v["exitcode"].as_str().and_then(|s| s.parse().ok()))
                .unwrap_or(-1);
            return Ok(ExecOutput {
                code,
                stdout: v["out-data"].as_str().unwrap_or("").to_string(),
                stderr: v["err-data"].as_str().unwrap_or("").to_string(),
            });
        }
        if started.elapsed() >= crate::proc::bounded(timeout) {
            return Err(PveError::Command {
                program: "guest agent".into(),
                message: format!(
                    "{} (pid {pid} in VM {}) still running after {} s",
                    argv[0],
                    g.vmid,
                    timeout.as_secs()
                ),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The package managers an update knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackageManager {
    Apt,
    Apk,
    Dnf,
}

impl PackageManager {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageManager::Apt => "apt",
            PackageManager::Apk => "apk",
            PackageManager::Dnf => "dnf",
        }
    }

    pub fn parse(s: &str) -> Option<PackageManager> {
        [
            PackageManager::Apt,
            PackageManager::Apk,
            PackageManager::Dnf,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }

    /// The commands of an upgrade, in order; each must exit 0.
    pub fn upgrade(self) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            PackageManager::Apt => vec![
                v(&["apt-get", "update"]),
                v(&[
                    "env",
                    "DEBIAN_FRONTEND=noninteractive",
                    "apt-get",
                    "-y",
                    "-o",
                    "Dpkg::Options::=--force-confdef",
                    "-o",
                    "Dpkg::Options::=--force-confold",
                    "dist-upgrade",
                ]),
            ],
            PackageManager::Apk => vec![v(&["apk", "update"]), v(&["apk", "upgrade"])],
            PackageManager::Dnf => vec![v(&["dnf", "-y", "upgrade", "--refresh"])],
        }
    }

    /// The commands that list pending upgrades without installing any:
    /// refresh the package lists, then simulate.
    pub fn pending(self) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match self {
            PackageManager::Apt => vec![
                v(&["apt-get", "update"]),
                v(&["apt-get", "-s", "dist-upgrade"]),
            ],
            PackageManager::Apk => vec![v(&["apk", "update"]), v(&["apk", "upgrade", "-s"])],
            // Exit 100 means "updates available".
            PackageManager::Dnf => vec![v(&["dnf", "-q", "check-update"])],
        }
    }

    /// The packages a simulation's output names.
    pub fn parse_pending(self, out: &str) -> Vec<String> {
        self.parse_changes(out)
            .into_iter()
            .map(|c| c.name)
            .collect()
    }

    /// The packages a simulation's output names, with the versions it
    /// gives: apt and apk say both, dnf only the new one.
    pub fn parse_changes(self, out: &str) -> Vec<PackageChange> {
        out.lines()
            .filter_map(|l| {
                let l = l.trim();
                match self {
                    // "Inst libssl3 [3.0.1] (3.0.2 Debian:12/stable [amd64])";
                    // a new package has no "[old]".
                    PackageManager::Apt => l.strip_prefix("Inst ").map(|r| {
                        let (name, rest) = r.split_once(' ').unwrap_or((r, ""));
                        let from = rest
                            .strip_prefix('[')
                            .and_then(|x| x.split_once(']'))
                            .map(|(v, _)| v.to_string());
                        let to = rest
                            .split_once('(')
                            .map(|(_, x)| word(x))
                            .filter(|v| !v.is_empty());
                        PackageChange::new(name, from, to)
                    }),
                    // "(1/2) Upgrading musl (1.2.4-r1 -> 1.2.4-r2)"
                    PackageManager::Apk => l
                        .split_once(") Upgrading ")
                        .filter(|(n, _)| n.starts_with('('))
                        .map(|(_, r)| {
                            let (name, rest) = r.split_once(' ').unwrap_or((r, ""));
                            let versions = rest
                                .trim()
                                .strip_prefix('(')
                                .and_then(|x| x.strip_suffix(')'))
                                .and_then(|x| x.split_once(" -> "));
                            PackageChange::new(
                                name,
                                versions.map(|(a, _)| a.to_string()),
                                versions.map(|(_, b)| b.to_string()),
                            )
                        }),
                    // "openssl-libs.x86_64   1:3.0.7-27.el9   baseos"
                    PackageManager::Dnf => {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() == 3 && f[0].contains('.') && !l.starts_with("Obsoleting"))
                            .then(|| PackageChange::new(f[0], None, Some(f[1].to_string())))
                    }
                }
            })
            // What the guest printed is its own: a "name" that would be
            // an option of the next command is not one.
            .filter(|c| !c.name.is_empty() && !c.name.starts_with('-'))
            .collect()
    }

    /// The command that prints the installed version of each of `names`
    /// (names a simulation gave), one `name version` line each; a name
    /// not installed is left out of its output (and may make it exit
    /// non-zero).
    pub fn installed(self, names: &[String]) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            PackageManager::Apt => ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "--"]
                .map(String::from)
                .to_vec(),
            // apk prints "musl-1.2.4-r2 x86_64 {musl} (MIT) [installed]".
            PackageManager::Apk => ["apk", "list", "--installed"].map(String::from).to_vec(),
            PackageManager::Dnf => [
                "rpm",
                "-q",
                "--qf",
                "%{NAME}.%{ARCH} %{EPOCH}:%{VERSION}-%{RELEASE}\\n",
                "--",
            ]
            .map(String::from)
            .to_vec(),
        };
        argv.extend(names.iter().cloned());
        argv
    }

    /// The versions an [`installed`](Self::installed) command printed, by
    /// package name (only of `names`).
    pub fn parse_installed(
        self,
        out: &str,
        names: &[String],
    ) -> std::collections::BTreeMap<String, String> {
        let mut found = std::collections::BTreeMap::new();
        for l in out.lines() {
            let first = l.split_whitespace().next().unwrap_or("");
            match self {
                PackageManager::Apt | PackageManager::Dnf => {
                    let mut f = l.split_whitespace();
                    if let (Some(n), Some(v), None) = (f.next(), f.next(), f.next()) {
                        if names.iter().any(|x| x == n) {
                            let v = v.strip_prefix("(none):").unwrap_or(v);
                            let v = v.strip_prefix("0:").unwrap_or(v);
                            found.insert(n.to_string(), v.to_string());
                        }
                    }
                }
                // "<name>-<version>": the version starts with a digit, so
                // "musl-utils-1.2" is not a version of "musl".
                PackageManager::Apk => {
                    for n in names {
                        if let Some(v) = first
                            .strip_prefix(n.as_str())
                            .and_then(|r| r.strip_prefix('-'))
                            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
                        {
                            found.insert(n.clone(), v.to_string());
                        }
                    }
                }
            }
        }
        found
    }

    /// Whether a pending-list command's exit code is a success.
    pub fn pending_ok(self, code: i64) -> bool {
        code == 0 || (self == PackageManager::Dnf && code == 100)
    }
}

/// One package an upgrade changes, with its version before and after
/// where known.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackageChange {
    pub name: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
}

impl PackageChange {
    fn new(name: &str, from: Option<String>, to: Option<String>) -> PackageChange {
        PackageChange {
            name: name.to_string(),
            from,
            to,
        }
    }
}

fn word(s: &str) -> String {
    s.split_whitespace().next().unwrap_or("").to_string()
}

/// The package manager an `/etc/os-release` names (`ID`, then `ID_LIKE`).
pub fn from_os_release(text: &str) -> Option<PackageManager> {
    let mut ids = Vec::new();
    for key in ["ID", "ID_LIKE"] {
        for l in text.lines() {
            if let Some(v) = l.trim().strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
                ids.extend(v.split_whitespace().map(str::to_ascii_lowercase));
            }
        }
    }
    ids.iter().find_map(|id| match id.as_str() {
        "debian" | "ubuntu" | "devuan" | "raspbian" | "linuxmint" | "pop" | "kali" => {
            Some(PackageManager::Apt)
        }
        "alpine" | "postmarketos" => Some(PackageManager::Apk),
        "fedora" | "rhel" | "centos" | "rocky" | "almalinux" | "ol" | "amzn" => {
            Some(PackageManager::Dnf)
        }
        _ => None,
    })
}

/// Find the guest's package manager: its os-release, else the first of
/// `apt-get`, `apk`, `dnf` that runs.
pub fn detect(pve: &Pve, g: &GuestRef, local: bool) -> PveResult<PackageManager> {
    let t = Duration::from_secs(60);
    let argv = ["cat".to_string(), "/etc/os-release".to_string()];
    if let Ok(o) = exec(pve, g, local, &argv, t) {
        if o.code == 0 {
            if let Some(pm) = from_os_release(&o.stdout) {
                return Ok(pm);
            }
        }
    }
    for (pm, probe) in [
        (PackageManager::Apt, ["apt-get", "--version"]),
        (PackageManager::Apk, ["apk", "--version"]),
        (PackageManager::Dnf, ["dnf", "--version"]),
    ] {
        let argv: Vec<String> = probe.iter().map(|s| s.to_string()).collect();
        if exec(pve, g, local, &argv, t).is_ok_and(|o| o.code == 0) {
            return Ok(pm);
        }
    }
    Err(PveError::Invalid(format!(
        "{} {}: no package manager found (neither /etc/os-release nor apt-get, apk or dnf)",
        g.kind.label(),
        g.vmid
    )))
}

/// The prefix of the snapshots an update takes.
pub const SNAPSHOT_PREFIX: &str = "autopilot-pre-update-";

/// The snapshot name for an update starting at `unix` seconds.
pub fn snapshot_name(unix: i64) -> String {
    let t = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
    format!("{SNAPSHOT_PREFIX}{}", t.format("%Y%m%d%H%M%S"))
}

/// When a snapshot of ours was taken (from its name); `None` for any
/// snapshot not named by [`snapshot_name`].
pub fn snapshot_time(name: &str) -> Option<i64> {
    let ts = name.strip_prefix(SNAPSHOT_PREFIX)?;
    if ts.len() != 14 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    chrono::NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Our snapshots older than `keep_hours` at `now`, oldest first. A
/// snapshot something else created is never in the list.
pub fn expired(snaps: &[SnapshotInfo], now: i64, keep_hours: u32) -> Vec<String> {
    let mut old: Vec<(i64, String)> = snaps
        .iter()
        .filter_map(|s| snapshot_time(&s.name).map(|t| (t, s.name.clone())))
        .filter(|(t, _)| now - t > i64::from(keep_hours) * 3600)
        .collect();
    old.sort();
    old.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_names_the_package_manager() {
        let deb = "PRETTY_NAME=\"Debian GNU/Linux 12\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(from_os_release(deb), Some(PackageManager::Apt));
        let mint = "NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n";
        assert_eq!(from_os_release(mint), Some(PackageManager::Apt));
        assert_eq!(
            from_os_release("ID=alpine\nVERSION_ID=3.20.0\n"),
            Some(PackageManager::Apk)
        );
        assert_eq!(
            from_os_release("ID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n"),
            Some(PackageManager::Dnf)
        );
        assert_eq!(from_os_release("ID=arch\n"), None);
        // ID_LIKE alone is not taken for ID.
        assert_eq!(
            from_os_release("ID=opensuse-tumbleweed\nID_LIKE=\"opensuse suse\"\n"),
            None
        );
    }

    #[test]
    fn pending_upgrades_are_read_from_each_simulation() {
        let apt = "Reading package lists...\nInst libssl3 [3.0.1] (3.0.2 Debian:12/stable [amd64])\nInst openssl [3.0.1] (3.0.2 Debian:12/stable [amd64])\nConf libssl3 (3.0.2 Debian:12/stable [amd64])\n";
        assert_eq!(
            PackageManager::Apt.parse_pending(apt),
            ["libssl3", "openssl"]
        );
        let apk = "(1/2) Upgrading musl (1.2.4-r1 -> 1.2.4-r2)\n(2/2) Upgrading busybox (1.36.1-r5 -> 1.36.1-r6)\nOK: 8 MiB in 15 packages\n";
        assert_eq!(PackageManager::Apk.parse_pending(apk), ["musl", "busybox"]);
        let dnf =
            "\nopenssl-libs.x86_64   1:3.0.7-27.el9   baseos\ncurl.x86_64  7.76.1-29.el9  baseos\n";
        assert_eq!(
            PackageManager::Dnf.parse_pending(dnf),
            ["openssl-libs.x86_64", "curl.x86_64"]
        );
        assert!(PackageManager::Dnf.pending_ok(100));
        assert!(!PackageManager::Apt.pending_ok(100));
    }

    #[test]
    fn versions_are_read_from_simulations_and_installed_lists() {
        let c = |n: &str, f: Option<&str>, t: Option<&str>| {
            PackageChange::new(n, f.map(String::from), t.map(String::from))
        };
        let apt = "Inst libssl3 [3.0.1] (3.0.2 Debian:12/stable [amd64])\nInst linux-image-6.1 (6.1.9 Debian:12/stable [amd64])\n";
        assert_eq!(
            PackageManager::Apt.parse_changes(apt),
            [
                c("libssl3", Some("3.0.1"), Some("3.0.2")),
                c("linux-image-6.1", None, Some("6.1.9"))
            ]
        );
        assert!(PackageManager::Apt
            .parse_changes("Inst --force-yes [1] (2 x)\n")
            .is_empty());
        let apk = "(1/1) Upgrading musl (1.2.4-r1 -> 1.2.4-r2)\n";
        assert_eq!(
            PackageManager::Apk.parse_changes(apk),
            [c("musl", Some("1.2.4-r1"), Some("1.2.4-r2"))]
        );
        let dnf = "curl.x86_64  7.76.1-29.el9  baseos\n";
        assert_eq!(
            PackageManager::Dnf.parse_changes(dnf),
            [c("curl.x86_64", None, Some("7.76.1-29.el9"))]
        );
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let apt_argv = PackageManager::Apt.installed(&names(&["libssl3"]));
        assert_eq!(
            apt_argv,
            [
                "dpkg-query",
                "-W",
                "-f",
                "${Package} ${Version}\\n",
                "--",
                "libssl3"
            ]
        );
        let got =
            PackageManager::Apt.parse_installed("libssl3 3.0.2\nother 1\n", &names(&["libssl3"]));
        assert_eq!(got.get("libssl3").map(String::as_str), Some("3.0.2"));
        assert_eq!(got.len(), 1);
        let got = PackageManager::Apk.parse_installed(
            "musl-utils-1.2.4-r2 x86_64 {musl} (MIT) [installed]\nmusl-1.2.4-r2 x86_64 {musl} (MIT) [installed]\n",
            &names(&["musl"]),
        );
        assert_eq!(got.get("musl").map(String::as_str), Some("1.2.4-r2"));
        let got = PackageManager::Dnf.parse_installed(
            "curl.x86_64 (none):7.76.1-29.el9\nopenssl-libs.x86_64 1:3.0.7-27.el9\n",
            &names(&["curl.x86_64", "openssl-libs.x86_64"]),
        );
        assert_eq!(
            got.get("curl.x86_64").map(String::as_str),
            Some("7.76.1-29.el9")
        );
        assert_eq!(
            got.get("openssl-libs.x86_64").map(String::as_str),
            Some("1:3.0.7-27.el9")
        );
    }

    #[test]
    fn only_our_snapshots_expire() {
        let name = snapshot_name(1_700_000_000);
        assert_eq!(name, "autopilot-pre-update-20231114221320");
        assert!(name.len() <= 40);
        assert_eq!(snapshot_time(&name), Some(1_700_000_000));
        let snap = |n: &str| -> SnapshotInfo {
            serde_json::from_value(serde_json::json!({"name": n})).unwrap()
        };
        let snaps = vec![
            snap(&name),
            snap(&snapshot_name(1_700_000_000 + 20 * 3600)),
            snap("autopilot-pre-update-mine"),
            snap("autopilot-pre-update-2023111422132"),
            snap("before-upgrade"),
        ];
        let now = 1_700_000_000 + 25 * 3600;
        assert_eq!(expired(&snaps, now, 24), vec![name.clone()]);
        assert_eq!(expired(&snaps, now, 1).len(), 2);
        assert!(expired(&snaps, now, 48).is_empty());
    }
}
