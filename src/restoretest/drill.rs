//! The disaster-recovery drill (`dr-drill PLAN.yaml`,
//! docs/restore-testing.md#disaster-recovery-drill): every service of a
//! plan restored in dependency order into the copies a restore test builds
//! ([`super::begin`], [`super::restore`], [`super::run_checks`]), the
//! Docker copies on one shared `internal` network so that the checks
//! between them work by service name, the vm / lxc copies restored as
//! their restore tests restore them ([`super::guest`]) and so all isolated
//! alike (`test_environment`: on the isolated VLAN they reach each other
//! and nothing else), the checks between guests run inside the dependent
//! guest; the plan's manual verification
//! steps; the checks that each service reaches what it depends on;
//! cleanup, always; a report in Markdown and in one self-contained HTML
//! file.
//!
//! Crash safety is the restore tests': every copy has its `restore_tests`
//! row before it exists, and so does the drill's shared network (a row of
//! kind [`super::KIND_DRILL`]); [`super::sweep`], at the start of every
//! drill and restore-test run, removes what a killed drill left.

use super::{Environment, KIND_DOCKER, KIND_DRILL, KIND_GUEST};
use crate::config::drill::{DrillPlan, DrillService};
use crate::config::{Config, ServiceConfig};
use crate::docker::isolate;
use crate::error::{Error, Result};
use crate::state::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The answer to a manual verification step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Checked by the operator and found good.
    Confirmed,
    /// Checked by the operator and found wrong: the service fails.
    Failed,
    /// Not asked (`--yes`): the drill continued unattended.
    Unattended,
}

/// One line of the runbook as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Seconds since the drill started.
    pub at_seconds: f64,
    pub service: Option<String>,
    /// `restore`, `check`, `dependency`, `verify`, `cleanup`, `skip`.
    pub kind: String,
    pub text: String,
    pub ok: bool,
}

/// One service's part of the drill.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ServiceRun {
    pub service: String,
    pub depends_on: Vec<String>,
    pub restore_test_id: Option<i64>,
    pub backup_id: Option<i64>,
    pub ok: bool,
    /// Restore (extract, compare, build and start the copy).
    pub restore_seconds: Option<f64>,
    /// The service's own checks and the dependency checks.
    pub checks_seconds: Option<f64>,
    /// Restore start to every check passing, as a restore test records it.
    pub rto_seconds: Option<f64>,
    pub checks: Vec<super::CheckOutcome>,
    pub dependency_checks: Vec<super::CheckOutcome>,
    pub error: Option<String>,
}

/// What a drill did.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub name: String,
    /// The drill's own `restore_tests` row (its reports carry the number).
    pub id: i64,
    pub plan: PathBuf,
    pub started_at: i64,
    pub duration_seconds: f64,
    pub ok: bool,
    pub network: Option<String>,
    /// Where the vm / lxc copies are (every one alike): the test
    /// environment and what was done to their NICs.
    pub guest_network: Option<String>,
    pub services: Vec<ServiceRun>,
    pub steps: Vec<Step>,
    pub cleaned_up: bool,
    pub markdown: Option<PathBuf>,
    pub html: Option<PathBuf>,
}

struct Runbook {
    started: Instant,
    steps: Vec<Step>,
}

impl Runbook {
    fn add(&mut self, service: Option<&str>, kind: &str, text: impl Into<String>, ok: bool) {
        let text = text.into();
        if ok {
            tracing::info!(
                "{}{text}",
                service.map(|s| format!("{s}: ")).unwrap_or_default()
            );
        } else {
            tracing::warn!(
                "{}{text}",
                service.map(|s| format!("{s}: ")).unwrap_or_default()
            );
        }
        self.steps.push(Step {
            at_seconds: self.started.elapsed().as_secs_f64(),
            service: service.map(str::to_string),
            kind: kind.into(),
            text,
            ok,
        });
    }
}

/// Run the drill. `ask` answers the manual steps; `stop` says that the
/// drill was asked to stop (SIGINT/SIGTERM): no further service is
/// restored, a copy's checks stop waiting, and the cleanup and the report
/// still happen. `run_id`: this drill's run (its copies are left alone by
/// the sweep).
pub fn run(
    store: &Store,
    cfg: &Config,
    state_dir: &Path,
    run_id: Option<i64>,
    plan: &DrillPlan,
    ask: &mut dyn FnMut(Option<&str>, &str) -> Result<Answer>,
    stop: &dyn Fn() -> bool,
) -> Result<DrillReport> {
    let mut book = Runbook {
        started: Instant::now(),
        steps: Vec::new(),
    };
    let started_at = chrono::Utc::now().timestamp();
    for line in super::sweep(store, cfg, run_id)? {
        book.add(None, "cleanup", line, true);
    }
    let order = plan.ordered();
    let services: Vec<(&DrillService, &ServiceConfig)> = order
        .iter()
        .filter_map(|d| {
            cfg.services
                .iter()
                .find(|s| s.name == d.service)
                .map(|s| (*d, s))
        })
        .collect();
    // The shared network, recorded before it exists.
    let any_docker = services
        .iter()
        .any(|(_, s)| super::kind_for(s.service_type) == Some(KIND_DOCKER));
    let guest_network = services
        .iter()
        .any(|(_, s)| super::kind_for(s.service_type) == Some(KIND_GUEST))
        .then(|| {
            let (name, iso) = super::guest::isolation(cfg);
            format!("{name}: {}", iso.describe())
        });
    let drill_row =
        store.begin_restore_test(run_id, &format!("dr-drill:{}", plan.name), KIND_DRILL, None)?;
    let drill_dir = state_dir.join("restore-tests").join(drill_row.to_string());
    let key = isolate::project_name(&format!("drill-{}", plan.name), drill_row);
    let drill_env = Environment {
        id: drill_row,
        service: format!("dr-drill:{}", plan.name),
        kind: KIND_DRILL.into(),
        dir: drill_dir.clone(),
        restored: drill_dir.join("data"),
        started_ms: super::now_ms(),
        project: Some(key.clone()),
        network: any_docker.then(|| key.clone()),
        ..Default::default()
    };
    super::record(store, &drill_env)?;

    let mut envs: Vec<Environment> = Vec::new();
    let mut runs: Vec<ServiceRun> = Vec::new();
    let outcome = (|| -> Result<()> {
        if any_docker {
            isolate::create_network(&key, &key)?;
            book.add(
                None,
                "restore",
                format!("shared internal network {key} created"),
                true,
            );
        }
        if let Some(n) = &guest_network {
            book.add(None, "restore", format!("guest copies: {n}"), true);
        }
        for (d, svc) in &services {
            if stop() {
                return Err(Error::Other("stopped by a signal".into()));
            }
            let r = one_service(
                store, cfg, state_dir, run_id, d, svc, &key, any_docker, &mut envs, &runs,
                &mut book, ask, stop,
            )?;
            runs.push(r);
        }
        if !plan.final_steps.is_empty() {
            for text in &plan.final_steps {
                let a = ask(None, text)?;
                book.add(None, "verify", describe(text, a), a != Answer::Failed);
            }
        }
        Ok(())
    })();
    if let Err(e) = &outcome {
        book.add(None, "restore", format!("drill stopped: {e}"), false);
    }
    // Cleanup, always: the copies newest first, then the network.
    let mut cleaned = true;
    for env in envs.iter().rev() {
        match super::remove(store, cfg, env.id, Some(&env.dir)) {
            Ok(_) if env.kind == KIND_GUEST => book.add(
                Some(&env.service),
                "cleanup",
                format!(
                    "copy destroyed: {}, temp dir",
                    super::guest::describe(&serde_json::to_value(env).unwrap_or_default())
                ),
                true,
            ),
            Ok(rm) => book.add(
                Some(&env.service),
                "cleanup",
                format!(
                    "copy removed: {} container(s), {} volume(s), temp dir",
                    rm.containers.len(),
                    rm.volumes.len()
                ),
                true,
            ),
            Err(e) => {
                cleaned = false;
                book.add(
                    Some(&env.service),
                    "cleanup",
                    format!("could not remove the copy: {e}"),
                    false,
                );
            }
        }
    }
    match super::remove(store, cfg, drill_row, Some(&drill_dir)) {
        Ok(rm) if !rm.networks.is_empty() => book.add(
            None,
            "cleanup",
            format!("network {} removed", rm.networks.join(", ")),
            true,
        ),
        Ok(_) => {}
        Err(e) => {
            cleaned = false;
            book.add(
                None,
                "cleanup",
                format!("could not remove the drill's network: {e}"),
                false,
            );
        }
    }
    let ok = outcome.is_ok()
        && cleaned
        && runs.len() == services.len()
        && runs.iter().all(|r| r.ok)
        && book
            .steps
            .iter()
            .filter(|s| s.kind == "verify")
            .all(|s| s.ok);
    let mut report = DrillReport {
        name: plan.name.clone(),
        id: drill_row,
        plan: plan.source.clone(),
        started_at,
        duration_seconds: book.started.elapsed().as_secs_f64(),
        ok,
        network: any_docker.then_some(key),
        guest_network,
        services: runs,
        steps: book.steps,
        cleaned_up: cleaned,
        markdown: None,
        html: None,
    };
    let dir = plan
        .report_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("drills"));
    write_reports(&mut report, &dir)?;
    Ok(report)
}

fn describe(text: &str, a: Answer) -> String {
    match a {
        Answer::Confirmed => format!("{text}: confirmed"),
        Answer::Failed => format!("{text}: FAILED (answered no)"),
        Answer::Unattended => format!("{text}: not checked, continued unattended (--yes)"),
    }
}

#[allow(clippy::too_many_arguments)]
fn one_service(
    store: &Store,
    cfg: &Config,
    state_dir: &Path,
    run_id: Option<i64>,
    d: &DrillService,
    svc: &ServiceConfig,
    network: &str,
    any_docker: bool,
    envs: &mut Vec<Environment>,
    done: &[ServiceRun],
    book: &mut Runbook,
    ask: &mut dyn FnMut(Option<&str>, &str) -> Result<Answer>,
    stop: &dyn Fn() -> bool,
) -> Result<ServiceRun> {
    let name = svc.name.as_str();
    let mut r = ServiceRun {
        service: name.into(),
        depends_on: d.depends_on.clone(),
        ..Default::default()
    };
    let failed_deps: Vec<&str> = d
        .depends_on
        .iter()
        .filter(|dep| !done.iter().any(|x| &x.service == *dep && x.ok))
        .map(String::as_str)
        .collect();
    if !failed_deps.is_empty() {
        let msg = format!("not restored: {} failed", failed_deps.join(", "));
        book.add(Some(name), "skip", &msg, false);
        r.error = Some(msg);
        return Ok(r);
    }
    let Some(backup) = super::latest_backup(store, name)? else {
        let msg = "no verified backup to restore".to_string();
        book.add(Some(name), "restore", &msg, false);
        r.error = Some(msg);
        return Ok(r);
    };
    r.backup_id = Some(backup.id);
    let mut env = super::begin(store, run_id, state_dir, svc, &backup)?;
    if env.kind == KIND_DOCKER && any_docker {
        env.network = Some(network.to_string());
        env.shared_network = true;
        super::record(store, &env)?;
    }
    r.restore_test_id = Some(env.id);
    envs.push(env.clone());
    let t0 = Instant::now();
    let restored = if env.kind == KIND_GUEST {
        super::guest::restore(store, cfg, svc, &mut env)
    } else {
        super::restore(store, &mut env)
    };
    if let Some(e) = envs.last_mut() {
        *e = env.clone();
    }
    r.restore_seconds = Some(t0.elapsed().as_secs_f64());
    let allowed = Duration::from_secs(super::rto_target(cfg).max(1));
    let t1 = Instant::now();
    let (checked, error) = match restored {
        Ok(()) => {
            book.add(
                Some(name),
                "restore",
                format!(
                    "backup {} restored in {:.1} s{}",
                    backup.id,
                    r.restore_seconds.unwrap_or_default(),
                    match (&env.project, &env.guest) {
                        (Some(p), _) => format!(" as {p}"),
                        (None, Some(g)) => format!(
                            " as {} {} ({}) on node {}",
                            g.kind,
                            g.vmid.unwrap_or_default(),
                            g.name,
                            g.node
                        ),
                        (None, None) => String::new(),
                    }
                ),
                true,
            );
            let checked = if env.kind == KIND_GUEST {
                super::guest::run_checks(cfg, svc, &env, allowed, stop)
            } else {
                super::run_checks(cfg, svc, &env, allowed, stop)
            };
            (checked, None)
        }
        Err(e) => {
            book.add(Some(name), "restore", format!("restore failed: {e}"), false);
            (super::Checked::default(), Some(e.to_string()))
        }
    };
    for c in &checked.checks {
        book.add(
            Some(name),
            "check",
            format!("{}: {}", c.name, c.detail),
            c.ok,
        );
    }
    let now = chrono::Utc::now().timestamp();
    let result = super::finish_until(store, cfg, &env, &checked, error.clone(), now)?;
    r.rto_seconds = result.rto_seconds;
    r.checks = result.checks.clone();
    r.ok = result.ok;
    if !result.ok {
        r.error = Some(result.summary.clone());
    }
    if error.is_none() && !d.dependency_checks.is_empty() {
        let deps: Vec<&Environment> = envs
            .iter()
            .filter(|e| d.depends_on.contains(&e.service))
            .collect();
        let dc =
            super::run_dependency_checks(cfg, &d.dependency_checks, &env, &deps, allowed, stop);
        for c in &dc {
            book.add(
                Some(name),
                "dependency",
                format!("{}: {}", c.name, c.detail),
                c.ok,
            );
        }
        if dc.iter().any(|c| !c.ok) {
            r.ok = false;
            r.error.get_or_insert_with(|| {
                format!("{name} does not reach {}", d.depends_on.join(", "))
            });
        }
        r.dependency_checks = dc;
    }
    r.checks_seconds = Some(t1.elapsed().as_secs_f64());
    if error.is_none() {
        for text in &d.verify {
            let a = ask(Some(name), text)?;
            book.add(Some(name), "verify", describe(text, a), a != Answer::Failed);
            if a == Answer::Failed {
                r.ok = false;
                r.error
                    .get_or_insert_with(|| format!("manual step failed: {text}"));
            }
        }
    }
    Ok(r)
}

fn write_reports(report: &mut DrillReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let stamp = chrono::DateTime::from_timestamp(report.started_at, 0)
        .map(|t| t.format("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_default();
    let base: String = report
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let md = dir.join(format!("dr-drill-{base}-{stamp}-{}.md", report.id));
    let html = dir.join(format!("dr-drill-{base}-{stamp}-{}.html", report.id));
    report.markdown = Some(md.clone());
    report.html = Some(html.clone());
    crate::files::write_atomic(&md, markdown(report).as_bytes(), 0o644)?;
    crate::files::write_atomic(&html, render_html(report).as_bytes(), 0o644)?;
    Ok(())
}

fn secs(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "-".into())
}

fn when(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Table cells: no line breaks, `|` escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

/// The Markdown report.
pub fn markdown(r: &DrillReport) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "# Disaster-recovery drill: {}\n\n- Plan: `{}`\n- Started: {}\n- Duration: {:.1} s\n- Result: **{}**\n- Cleaned up: {}\n",
        r.name,
        r.plan.display(),
        when(r.started_at),
        r.duration_seconds,
        if r.ok { "PASSED" } else { "FAILED" },
        if r.cleaned_up { "yes" } else { "NO (see the steps)" }
    ));
    if let Some(n) = &r.network {
        o.push_str(&format!("- Shared network: `{n}`\n"));
    }
    if let Some(n) = &r.guest_network {
        o.push_str(&format!("- Guest copies: {}\n", cell(n)));
    }
    o.push_str("\n## Services\n\n| # | service | depends on | backup | restore | checks | RTO | result |\n|---|---|---|---|---|---|---|---|\n");
    for (i, s) in r.services.iter().enumerate() {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            i + 1,
            cell(&s.service),
            cell(&s.depends_on.join(", ")),
            s.backup_id
                .map(|b| b.to_string())
                .unwrap_or_else(|| "-".into()),
            secs(s.restore_seconds),
            secs(s.checks_seconds),
            secs(s.rto_seconds),
            if s.ok {
                "ok".to_string()
            } else {
                format!("FAILED: {}", cell(s.error.as_deref().unwrap_or("")))
            }
        ));
    }
    let failures: Vec<&ServiceRun> = r.services.iter().filter(|s| !s.ok).collect();
    if !failures.is_empty() {
        o.push_str("\n## Failures\n\n");
        for s in failures {
            o.push_str(&format!(
                "- **{}**: {}\n",
                s.service,
                s.error.as_deref().unwrap_or("failed")
            ));
            for c in s
                .checks
                .iter()
                .chain(&s.dependency_checks)
                .filter(|c| !c.ok)
            {
                o.push_str(&format!("  - {}: {}\n", c.name, c.detail));
            }
        }
    }
    o.push_str(
        "\n## Runbook as it ran\n\n| time | service | step | what | ok |\n|---|---|---|---|---|\n",
    );
    for s in &r.steps {
        o.push_str(&format!(
            "| +{:.1} s | {} | {} | {} | {} |\n",
            s.at_seconds,
            cell(s.service.as_deref().unwrap_or("")),
            s.kind,
            cell(&s.text),
            if s.ok { "ok" } else { "FAILED" }
        ));
    }
    o
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The HTML report: one file, its style inline, no scripts, no external
/// assets.
pub fn render_html(r: &DrillReport) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    o.push_str(&format!(
        "<title>Disaster-recovery drill: {}</title>\n",
        esc(&r.name)
    ));
    o.push_str("<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}.ok{color:#060}.bad{color:#a00;font-weight:bold}</style>\n</head><body>\n");
    o.push_str(&format!(
        "<h1>Disaster-recovery drill: {}</h1>\n<ul>\n",
        esc(&r.name)
    ));
    o.push_str(&format!(
        "<li>Plan: <code>{}</code></li>\n",
        esc(&r.plan.display().to_string())
    ));
    o.push_str(&format!(
        "<li>Started: {}</li>\n<li>Duration: {:.1} s</li>\n",
        when(r.started_at),
        r.duration_seconds
    ));
    o.push_str(&format!(
        "<li>Result: <span class=\"{}\">{}</span></li>\n<li>Cleaned up: {}</li>\n",
        if r.ok { "ok" } else { "bad" },
        if r.ok { "PASSED" } else { "FAILED" },
        if r.cleaned_up {
            "yes"
        } else {
            "NO (see the steps)"
        }
    ));
    if let Some(n) = &r.network {
        o.push_str(&format!(
            "<li>Shared network: <code>{}</code></li>\n",
            esc(n)
        ));
    }
    if let Some(n) = &r.guest_network {
        o.push_str(&format!("<li>Guest copies: {}</li>\n", esc(n)));
    }
    o.push_str("</ul>\n<h2>Services</h2>\n<table><tr><th>#</th><th>service</th><th>depends on</th><th>backup</th><th>restore</th><th>checks</th><th>RTO</th><th>result</th></tr>\n");
    for (i, s) in r.services.iter().enumerate() {
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>\n",
            i + 1,
            esc(&s.service),
            esc(&s.depends_on.join(", ")),
            s.backup_id.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            secs(s.restore_seconds),
            secs(s.checks_seconds),
            secs(s.rto_seconds),
            if s.ok { "ok" } else { "bad" },
            if s.ok { "ok".to_string() } else { format!("FAILED: {}", esc(s.error.as_deref().unwrap_or(""))) }
        ));
    }
    o.push_str("</table>\n<h2>Checks</h2>\n<table><tr><th>service</th><th>check</th><th>ok</th><th>detail</th></tr>\n");
    for s in &r.services {
        for c in s.checks.iter().chain(&s.dependency_checks) {
            o.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>\n",
                esc(&s.service),
                esc(&c.name),
                if c.ok { "ok" } else { "bad" },
                if c.ok { "ok" } else { "FAILED" },
                esc(&c.detail)
            ));
        }
    }
    o.push_str("</table>\n<h2>Runbook as it ran</h2>\n<table><tr><th>time</th><th>service</th><th>step</th><th>what</th><th>ok</th></tr>\n");
    for s in &r.steps {
        o.push_str(&format!(
            "<tr><td>+{:.1} s</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>\n",
            s.at_seconds,
            esc(s.service.as_deref().unwrap_or("")),
            esc(&s.kind),
            esc(&s.text),
            if s.ok { "ok" } else { "bad" },
            if s.ok { "ok" } else { "FAILED" }
        ));
    }
    o.push_str("</table>\n</body></html>\n");
    o
}
