//! The skips of this test run, in one place. Tests run in parallel in one
//! process, so this test does not wait for the others: it asks every
//! requirement's probe again and names the tests that skip (or, under
//! `CI=true`, fail) without it, plus the skips recorded so far.

use crate::harness::{on_ci, skips, Requirement, CADDY, DOCKER, REGISTRY, ROOT, SMTP};
use std::io::Write;

/// Every requirement some test has beyond the repository.
const REQUIREMENTS: &[&Requirement] = &[
    &DOCKER,
    &REGISTRY,
    &SMTP,
    &ROOT,
    &CADDY,
    &crate::pve::PVE_SCHEMA,
    &crate::packaging::GROFF,
    &crate::packaging::SYSTEMD_ANALYZE,
    &crate::packaging::DPKG,
    &crate::web::CHROMIUM,
];

#[test]
fn no_requirement_is_missing() {
    let mut report = Vec::new();
    let mut failing = Vec::new();
    for r in REQUIREMENTS {
        if let Err(why) = (r.probe)() {
            let line = format!(
                "MISSING: {}: {why} ({}){}; these tests do not run: {}",
                r.name,
                r.install,
                if r.optional { " [optional]" } else { "" },
                r.tests.join(", ")
            );
            if !r.optional {
                failing.push(line.clone());
            }
            report.push(line);
        }
    }
    for (test, reason) in skips() {
        report.push(format!("SKIPPED so far: {test}: {reason}"));
    }
    if !report.is_empty() {
        // Past libtest's capture: shown although this test passes.
        let _ = std::io::stderr()
            .lock()
            .write_all(format!("{}\n", report.join("\n")).as_bytes());
    }
    assert!(
        !on_ci() || failing.is_empty(),
        "CI=true and requirements are missing:\n{}",
        failing.join("\n")
    );
}

/// Every test a requirement names exists (a renamed test would leave the
/// report naming nothing).
#[test]
fn requirements_name_existing_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/integration");
    for r in REQUIREMENTS {
        for t in r.tests {
            let (module, name) = t.rsplit_once("::").unwrap();
            let file = format!("{dir}/{}.rs", module.replace("::", "/"));
            let file = if std::path::Path::new(&file).exists() {
                file
            } else {
                format!("{dir}/{}/mod.rs", module.replace("::", "/"))
            };
            let text =
                std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{t}: {file}: {e}"));
            assert!(
                text.contains(&format!("fn {name}()")),
                "{}: no test {t} in {file}",
                r.name
            );
        }
    }
}
