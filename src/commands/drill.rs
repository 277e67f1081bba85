//! `dr-drill PLAN.yaml [--yes]`: the disaster-recovery drill
//! ([`crate::restoretest::drill`]); this reads the plan, asks the manual
//! steps on the terminal and prints the report's summary.

use super::Report;
use crate::app::Setup;
use crate::cli::DrillArgs;
use crate::error::{Error, Result};
use crate::restoretest::drill::{self, Answer};
use crate::state::RunStatus;
use std::io::{BufRead, IsTerminal, Write};

pub fn run(setup: &Setup, a: &DrillArgs) -> Result<Report> {
    let cfg = setup.load_config()?;
    let plan = crate::config::drill::load_plan(&a.plan, &cfg)?;
    let manual =
        plan.final_steps.len() + plan.services.iter().map(|s| s.verify.len()).sum::<usize>();
    if manual > 0 && !a.yes && !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "{}: the plan has {manual} manual verification step(s) and there is no terminal to \
             ask them on; run it on a terminal, or pass --yes to continue unattended",
            plan.source.display()
        )));
    }
    let paths = setup.paths(&cfg);
    paths.ensure_dirs()?;
    let store = setup.open_store(&paths)?;
    // The restore tests' lock: a restore-test run's sweep must not remove
    // this drill's copies while it runs, nor the other way round.
    let _lock = crate::lock::acquire(&paths.lock_dir, "restore-test")?;
    let stale = store.abort_stale_runs("dr-drill")?;
    if stale > 0 {
        tracing::warn!("{stale} earlier drill(s) ended without finishing; marked aborted");
    }
    let names: Vec<String> = plan.services.iter().map(|s| s.service.clone()).collect();
    let run_id = store.begin_run("dr-drill", &names, false)?;
    let yes = a.yes;
    let mut ask = |service: Option<&str>, text: &str| -> Result<Answer> {
        if yes {
            return Ok(Answer::Unattended);
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\nManual step{}: {text}\nDone, and was it right? [y/n] ",
            service.map(|s| format!(" ({s})")).unwrap_or_default()
        );
        let _ = err.flush();
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Error::io("<stdin>", e))?;
        Ok(match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Answer::Confirmed,
            _ => Answer::Failed,
        })
    };
    // SIGINT/SIGTERM: no further service, then the cleanup and the report
    // (a second signal ends the process; the next run cleans up).
    crate::signals::install();
    let stop = || crate::signals::received().is_some();
    let report = drill::run(
        &store,
        &cfg,
        &paths.state_dir,
        Some(run_id),
        &plan,
        &mut ask,
        &stop,
    );
    let signal = crate::signals::received();
    let (status, summary) = match &report {
        Ok(r) if r.ok => (
            RunStatus::Success,
            format!(
                "drill {}: {} service(s) restored and checked",
                r.name,
                r.services.len()
            ),
        ),
        Ok(r) => (
            RunStatus::Failed,
            format!(
                "drill {}: failed: {}",
                r.name,
                r.services
                    .iter()
                    .filter(|s| !s.ok)
                    .map(|s| format!("{} ({})", s.service, s.error.as_deref().unwrap_or("failed")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        ),
        Err(e) => (RunStatus::Failed, format!("drill {}: {e}", plan.name)),
    };
    let status = if signal.is_some() {
        RunStatus::Aborted
    } else {
        status
    };
    store.finish_run(run_id, status, &summary)?;
    let r = report?;
    let mut text = String::new();
    for s in &r.services {
        text.push_str(&format!(
            "{:<20} {:<7} restore {:>8} checks {:>8} RTO {:>8}{}\n",
            s.service,
            if s.ok { "ok" } else { "FAILED" },
            fmt(s.restore_seconds),
            fmt(s.checks_seconds),
            fmt(s.rto_seconds),
            s.error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        ));
    }
    text.push_str(&format!("{summary}\n"));
    for p in [&r.markdown, &r.html].into_iter().flatten() {
        text.push_str(&format!("report: {}\n", p.display()));
    }
    let mut json = serde_json::to_value(&r).map_err(|e| Error::Other(e.to_string()))?;
    json["run_id"] = run_id.into();
    json["summary"] = summary.into();
    let exit = match signal {
        Some(sig) => crate::signals::exit_code(sig),
        None if r.ok => 0,
        None => 1,
    };
    Ok(Report { json, text, exit })
}

fn fmt(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "-".into())
}
