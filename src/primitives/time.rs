//! `time::` for scripts: unix seconds, archive name stamps, formatting, and
//! `time::sleep`, which ends at the run's deadline (the run then stops).

use super::{throw, RhaiResult};
use crate::script::Host;
use chrono::{Local, TimeZone, Utc};
use rhai::{FuncRegistration, Module};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `YYYYMMDD_HHMMSS` in local time, as in archive names.
pub fn stamp(ts: i64) -> String {
    Local
        .timestamp_opt(ts, 0)
        .single()
        .map(|t| t.format("%Y%m%d_%H%M%S").to_string())
        .unwrap_or_default()
}

/// Sleep `secs` seconds, or until the run's deadline or cancellation, which
/// stop the run (checked every quarter second).
fn sleep(host: &Host, secs: i64) -> RhaiResult<()> {
    if !(0..=3600).contains(&secs) {
        return Err(throw(
            "invalid_argument",
            "time::sleep takes 0..=3600 seconds",
            None,
        ));
    }
    let until = Instant::now() + Duration::from_secs(secs as u64);
    loop {
        let left = host.remaining()?;
        let want = until.saturating_duration_since(Instant::now());
        if want.is_zero() {
            return Ok(());
        }
        std::thread::sleep(want.min(left).min(Duration::from_millis(250)));
    }
}

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    FuncRegistration::new("now")
        .with_volatility(true)
        .set_into_module(&mut m, || Utc::now().timestamp());
    FuncRegistration::new("now_ms")
        .with_volatility(true)
        .set_into_module(&mut m, || Utc::now().timestamp_millis());
    FuncRegistration::new("stamp")
        .with_volatility(true)
        .set_into_module(&mut m, || stamp(Utc::now().timestamp()));
    FuncRegistration::new("stamp").set_into_module(&mut m, stamp);
    FuncRegistration::new("iso").set_into_module(&mut m, |ts: i64| {
        Utc.timestamp_opt(ts, 0)
            .single()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default()
    });
    FuncRegistration::new("format").set_into_module(
        &mut m,
        |ts: i64, fmt: &str| -> RhaiResult<String> {
            use std::fmt::Write;
            let t = Local
                .timestamp_opt(ts, 0)
                .single()
                .ok_or_else(|| throw("invalid_argument", "bad timestamp", None))?;
            let mut s = String::new();
            write!(s, "{}", t.format(fmt))
                .map_err(|_| throw("invalid_argument", format!("bad time format '{fmt}'"), None))?;
            Ok(s)
        },
    );
    let h = host.clone();
    FuncRegistration::new("sleep")
        .with_volatility(true)
        .set_into_module(&mut m, move |secs: i64| sleep(&h, secs));
    m
}
