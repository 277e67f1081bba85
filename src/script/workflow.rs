//! Workflow programs. A workflow file defines `fn run(ctx)` and one function
//! per step; its top level holds only `import` and `const`. Layers are merged
//! with `AST::merge` (same name and arity wins): the shipped file, then the
//! user's file of the same name, then, for one service only, the user's
//! `services/<name>.rhai`. Each function remembers the file it came from, so
//! errors and `scripts list` name the right file.

use super::sources::{ScriptSource, Scripts};
use crate::error::{Error, Result};
use rhai::{Engine, AST};
use std::collections::{BTreeMap, HashMap};

/// A compiled workflow with its per-service variants.
pub struct Program {
    pub name: String,
    pub base: AST,
    /// `fn name/arity` -> file label, for the merged base.
    pub base_origins: BTreeMap<String, String>,
    pub per_service: HashMap<String, AST>,
    /// service -> (`fn name/arity` -> file label) for functions the override defines.
    pub service_origins: BTreeMap<String, BTreeMap<String, String>>,
}

/// Compile one file; a syntax error is reported as a configuration error
/// (`file:line:column: message`, exit 78).
pub fn compile(engine: &Engine, src: &ScriptSource) -> Result<AST> {
    let mut ast = engine.compile(&src.code).map_err(|e| {
        let pos = e.position();
        Error::Config(vec![format!(
            "{}:{}:{}: script: {}",
            src.label,
            pos.line().unwrap_or(0),
            pos.position().unwrap_or(0),
            e.0
        )])
    })?;
    ast.set_source(src.label.as_str());
    Ok(ast)
}

fn origins(ast: &AST, label: &str) -> BTreeMap<String, String> {
    ast.iter_functions()
        .map(|f| (format!("{}/{}", f.name, f.params.len()), label.to_string()))
        .collect()
}

impl Program {
    /// Load workflow `name` and the overrides of `services`.
    pub fn load(
        engine: &Engine,
        scripts: &Scripts,
        name: &str,
        services: &[String],
    ) -> Result<Program> {
        let layers = scripts.workflow_layers(name)?;
        if layers.is_empty() {
            return Err(Error::Usage(format!(
                "no workflow named '{name}' (shipped workflows and {}/*.rhai; see `workflows list`)",
                scripts.user_dir.display()
            )));
        }
        let mut base = AST::empty();
        let mut base_origins = BTreeMap::new();
        for layer in &layers {
            let ast = compile(engine, layer)?;
            base_origins.extend(origins(&ast, &layer.label));
            base = base.merge(&ast);
        }
        let mut per_service = HashMap::new();
        let mut service_origins = BTreeMap::new();
        for svc in services {
            if let Some(src) = scripts.service_override(svc)? {
                let ast = compile(engine, &src)?;
                service_origins.insert(svc.clone(), origins(&ast, &src.label));
                per_service.insert(svc.clone(), base.merge(&ast));
            }
        }
        Ok(Program {
            name: name.to_string(),
            base,
            base_origins,
            per_service,
            service_origins,
        })
    }

    /// The AST to run for one service (its override merged in, if any).
    pub fn ast_for(&self, service: &str) -> &AST {
        self.per_service.get(service).unwrap_or(&self.base)
    }

    /// The file a step function of `service`'s program comes from (any
    /// arity).
    pub fn origin_of(&self, service: &str, name: &str) -> Option<String> {
        let find = |origins: &BTreeMap<String, String>| {
            origins
                .iter()
                .find(|(k, _)| k.rsplit_once('/').is_some_and(|(n, _)| n == name))
                .map(|(_, v)| v.clone())
        };
        self.service_origins
            .get(service)
            .and_then(find)
            .or_else(|| find(&self.base_origins))
    }

    pub fn has_fn(&self, name: &str, arity: usize) -> bool {
        self.base_origins.contains_key(&format!("{name}/{arity}"))
    }
}
