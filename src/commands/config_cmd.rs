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
            let text = format!(
                "configuration OK: {} service(s) from {}\n",
                cfg.services.len(),
                files.join(", ")
            );
            Ok(Report::ok(
                json!({"valid": true, "files": files, "services": cfg.services.len()}),
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
