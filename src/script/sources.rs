//! Where script code comes from: the shipped `scripts/` and `stdlib/`
//! (embedded at build time) and the user scripts directory, which overrides
//! them: a whole workflow by file name (`backup.rhai`, merged over the shipped
//! one), a library module (`lib/<module>.rhai`), or steps for one service
//! (`services/<name>.rhai`).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// One script file, shipped or user-written.
#[derive(Debug, Clone)]
pub struct ScriptSource {
    /// The name errors use: `shipped:scripts/backup.rhai` or the user file's path.
    pub label: String,
    pub code: String,
    pub shipped: bool,
}

impl ScriptSource {
    fn shipped(dir: &str, rel: &str, code: &str) -> Self {
        ScriptSource {
            label: format!("shipped:{dir}/{rel}"),
            code: code.to_string(),
            shipped: true,
        }
    }

    fn user(path: &Path) -> Result<Option<Self>> {
        match std::fs::read_to_string(path) {
            Ok(code) => Ok(Some(ScriptSource {
                label: path.display().to_string(),
                code,
                shipped: false,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

/// The shipped workflow scripts: `(file name, code)`.
pub fn shipped_scripts() -> &'static [(&'static str, &'static str)] {
    embedded::SCRIPTS
}

/// The names of the shipped workflows (`backup`, `monitor`, ...).
pub fn shipped_workflow_names() -> Vec<&'static str> {
    shipped_scripts()
        .iter()
        .filter(|(n, _)| !n.contains('/'))
        .filter_map(|(n, _)| n.strip_suffix(".rhai"))
        .collect()
}

/// The shipped library modules: `(file name, code)`.
pub fn shipped_stdlib() -> &'static [(&'static str, &'static str)] {
    embedded::STDLIB
}

/// Script lookup for one process.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub user_dir: PathBuf,
}

fn rhai_stems(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".rhai"))
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl Scripts {
    pub fn new(user_dir: impl Into<PathBuf>) -> Self {
        Scripts {
            user_dir: user_dir.into(),
        }
    }

    /// Workflow names, shipped and user-written, sorted.
    pub fn workflow_names(&self) -> Vec<String> {
        let mut names: Vec<String> = shipped_workflow_names()
            .into_iter()
            .map(String::from)
            .collect();
        names.extend(rhai_stems(&self.user_dir));
        names.sort();
        names.dedup();
        names
    }

    /// The layers of a workflow: shipped first, then the user's file.
    /// Empty when the workflow exists nowhere.
    pub fn workflow_layers(&self, name: &str) -> Result<Vec<ScriptSource>> {
        if !is_valid_name(name) {
            return Err(Error::Usage(format!("invalid workflow name '{name}'")));
        }
        let file = format!("{name}.rhai");
        let mut layers = Vec::new();
        if let Some((_, code)) = shipped_scripts().iter().find(|(n, _)| *n == file) {
            layers.push(ScriptSource::shipped("scripts", &file, code));
        }
        if let Some(user) = ScriptSource::user(&self.user_dir.join(&file))? {
            layers.push(user);
        }
        Ok(layers)
    }

    /// `services/<name>.rhai` from the user dir, if any.
    pub fn service_override(&self, service: &str) -> Result<Option<ScriptSource>> {
        ScriptSource::user(
            &self
                .user_dir
                .join("services")
                .join(format!("{service}.rhai")),
        )
    }

    /// Service names that have an override file.
    pub fn service_overrides(&self) -> Vec<String> {
        rhai_stems(&self.user_dir.join("services"))
    }

    /// A library module: the user's `lib/<name>.rhai`, else the shipped one.
    pub fn lib_module(&self, name: &str) -> Result<Option<ScriptSource>> {
        if !is_valid_name(name) {
            return Ok(None);
        }
        let file = format!("{name}.rhai");
        if let Some(user) = ScriptSource::user(&self.user_dir.join("lib").join(&file))? {
            return Ok(Some(user));
        }
        Ok(shipped_stdlib()
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(_, code)| ScriptSource::shipped("stdlib", &file, code)))
    }

    /// Library module names, shipped and user-written.
    pub fn lib_names(&self) -> Vec<String> {
        let mut names: Vec<String> = shipped_stdlib()
            .iter()
            .map(|(n, _)| n.trim_end_matches(".rhai").to_string())
            .collect();
        names.extend(rhai_stems(&self.user_dir.join("lib")));
        names.sort();
        names.dedup();
        names
    }
}

/// Workflow, module and service-override names become file names.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.')
}
