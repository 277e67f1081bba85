//! `log::` for scripts: lines go to the log files and to the run's event tail,
//! tagged with the service the step runs for. Secrets are masked.

use super::service_of;
use crate::script::Host;
use rhai::{FuncRegistration, Module, NativeCallContext};
use std::sync::Arc;
use tracing::Level;

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    for (name, level) in [
        ("debug", Level::DEBUG),
        ("info", Level::INFO),
        ("warn", Level::WARN),
        ("error", Level::ERROR),
    ] {
        let h = host.clone();
        FuncRegistration::new(name)
            .with_volatility(true)
            .set_into_module(&mut m, move |ctx: NativeCallContext, msg: &str| {
                h.event(level, service_of(&ctx).as_deref(), msg)
            });
    }
    m
}
