//! `serve`: the status page alone, in the foreground, for admins who run
//! the workflows from cron or timers. Stops cleanly on SIGINT / SIGTERM.

use super::Report;
use crate::app::Setup;
use crate::error::{Error, Result};
use crate::web::{self, WebOptions};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Start the page for `cfg` (at `listen`, or `http.listen`), with the
/// workflows that exist for `/metrics`; `serve` and `daemon` both call
/// this.
pub(super) fn start(
    cfg: crate::config::Config,
    paths: &crate::config::Paths,
    listen: Option<std::net::SocketAddr>,
) -> Result<web::WebHandle> {
    let workflows = crate::script::Scripts::new(paths.scripts_dir.clone()).workflow_names();
    web::start(Arc::new(cfg), paths, WebOptions { listen, workflows })
}

pub fn run(env: &Setup, listen: Option<&str>) -> Result<Report> {
    let cfg = env.load_config()?;
    let paths = env.paths(&cfg);
    let listen = listen
        .map(|l| crate::config::parse_listen(l).map_err(|e| Error::Usage(format!("--listen: {e}"))))
        .transpose()?;
    crate::signals::install();
    let handle = start(cfg, &paths, listen)?;
    let addr = handle.local_addr();
    // The one line an admin (or a test) needs: where to point the browser.
    eprintln!("serving the status page on http://{addr}/");
    let sig = loop {
        if let Some(sig) = crate::signals::received() {
            break sig;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(handle);
    let name = crate::signals::name(sig);
    Ok(Report::ok(
        json!({"listen": addr.to_string(), "stopped_by": name}),
        format!("stopped by {name}\n"),
    ))
}
