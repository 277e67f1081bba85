//! `docker::container(name)`: read-only; is the container running (and not
//! `unhealthy` when its image has a HEALTHCHECK), asked on the engine's
//! socket, or via `docker inspect --format '{{json .State}}' -- NAME` (argv,
//! no shell) when there is no local socket. `docker::compose(project)`: the
//! same for every container of a Compose project.

use super::http::run_one;
use crate::config::{HealthCheckConfig, HealthCheckType};
use crate::script::Host;
use rhai::{FuncRegistration, Module};
use std::sync::Arc;

pub(super) fn module(host: &Arc<Host>) -> Module {
    let mut m = Module::new();
    let h = host.clone();
    FuncRegistration::new("container")
        .with_volatility(true)
        .set_into_module(&mut m, move |name: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Container,
                    container: Some(name.to_string()),
                    ..Default::default()
                },
            )
        });
    let h = host.clone();
    FuncRegistration::new("compose")
        .with_volatility(true)
        .set_into_module(&mut m, move |project: &str| {
            run_one(
                &h,
                HealthCheckConfig {
                    check_type: HealthCheckType::Compose,
                    compose_project: Some(project.to_string()),
                    ..Default::default()
                },
            )
        });
    m
}
