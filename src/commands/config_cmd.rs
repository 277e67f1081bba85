//! `config validate` and `config show`.

use super::Report;
use crate::app::Setup;
use crate::cli::ConfigCommand;
use crate::error::Result;
use serde_json::json;

pub fn run(env: &Setup, cmd: &ConfigCommand) -> Result<Report> {
    let cfg = env.load_config()?;
    match cmd {
        ConfigCommand::Validate => {
            let files: Vec<String> = cfg.files.iter().map(|f| f.display().to_string()).collect();
            let warnings = check_pbs_storage(&cfg)?;
            let mut text = format!(
                "configuration OK: {} service(s) from {}\n",
                cfg.services.len(),
                files.join(", ")
            );
            for w in &warnings {
                text.push_str(&format!("warning: {w}\n"));
            }
            Ok(Report::ok(
                json!({"valid": true, "files": files, "services": cfg.services.len(),
                       "warnings": warnings}),
                text,
            ))
        }
        ConfigCommand::Show => {
            let paths = env.paths(&cfg);
            let mut doc = cfg.to_redacted_json();
            if let serde_json::Value::Object(m) = &mut doc {
                m.insert(
                    "effective_paths".into(),
                    json!({
                        "state_db": paths.state_db, "log_dir": paths.log_dir, "scripts_dir": paths.scripts_dir,
                        "lock_dir": paths.lock_dir, "backup_root": paths.backup_root,
                    }),
                );
            }
            let text = format!(
                "# effective configuration from {} (secrets redacted)\n{}# effective paths: state {}, logs {}, scripts {}, locks {}, backups {}\n",
                cfg.source.display(),
                cfg.to_redacted_yaml(),
                paths.state_db.display(),
                paths.log_dir.display(),
                paths.scripts_dir.display(),
                paths.lock_dir.display(),
                paths.backup_root.display()
            );
            Ok(Report::ok(doc, text))
        }
    }
}

/// A PBS block with `server` + `datastore` and no `storage` names its PVE
/// storage by what it points at: ask PVE (`GET /storage?type=pbs`) which
/// storage that is. None or several is a configuration error at the block
/// (exit 78); PVE not answering is a warning (the run looks again).
fn check_pbs_storage(cfg: &crate::config::Config) -> Result<Vec<String>> {
    const KEY: &str = "global.backup.proxmox_backup_server";
    let (Some(p), Some(px)) = (
        &cfg.global.backup.proxmox_backup_server,
        &cfg.global.proxmox,
    ) else {
        return Ok(Vec::new());
    };
    let (None, Some(server), Some(datastore)) = (&p.storage, &p.server, &p.datastore) else {
        return Ok(Vec::new());
    };
    let found = crate::pve::connect::pve_from_config(px)
        .and_then(|(pve, _)| pve.find_pbs_storage(server, datastore, p.namespace.as_deref()));
    let at = crate::config::place(&cfg.source, KEY);
    let ns = p
        .namespace
        .as_deref()
        .map(|n| format!(", namespace {n}"))
        .unwrap_or_default();
    match found {
        Ok(ids) if ids.len() == 1 => Ok(Vec::new()),
        Ok(ids) if ids.is_empty() => Err(crate::error::Error::Config(vec![format!(
            "{at}: no PVE storage of type pbs points at server {server}, datastore {datastore}{ns}: \
             add one (Datacenter > Storage > Add > Proxmox Backup Server) or set storage: to its id"
        )])),
        Ok(ids) => Err(crate::error::Error::Config(vec![format!(
            "{at}: several PVE storages of type pbs point at server {server}, datastore {datastore}{ns} \
             ({}): set storage: to the one to use",
            ids.join(", ")
        )])),
        Err(e) => Ok(vec![format!(
            "{at}: could not ask Proxmox VE which storage points at server {server}, datastore \
             {datastore} ({e}); the run looks again"
        )]),
    }
}
