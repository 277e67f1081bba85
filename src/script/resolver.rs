//! `import "name" as name;` resolves to the user's `lib/<name>.rhai` first,
//! then the shipped `stdlib/<name>.rhai`. It falls through only when the user
//! file is missing: a broken override fails loudly instead of silently using
//! the default. Compiled modules are cached per engine.

use super::sources::Scripts;
use rhai::{Engine, EvalAltResult, Module, Position, Scope};

type SharedModule = rhai::Shared<Module>;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct ModuleResolver {
    scripts: Scripts,
    cache: Mutex<HashMap<String, SharedModule>>,
}

impl ModuleResolver {
    pub fn new(scripts: Scripts) -> Self {
        ModuleResolver {
            scripts,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

impl rhai::ModuleResolver for ModuleResolver {
    fn resolve(
        &self,
        engine: &Engine,
        _source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<SharedModule, Box<EvalAltResult>> {
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
        {
            return Ok(m.clone());
        }
        let src = match self.scripts.lib_module(path) {
            Ok(Some(src)) => src,
            Ok(None) => {
                return Err(EvalAltResult::ErrorModuleNotFound(path.to_string(), pos).into())
            }
            Err(e) => {
                return Err(EvalAltResult::ErrorInModule(
                    path.to_string(),
                    e.to_string().into(),
                    pos,
                )
                .into())
            }
        };
        let mut ast = engine.compile(&src.code).map_err(|e| {
            Box::new(EvalAltResult::ErrorInModule(
                path.to_string(),
                format!(
                    "{}:{}: {}",
                    src.label,
                    e.position().line().unwrap_or(0),
                    e.0
                )
                .into(),
                pos,
            ))
        })?;
        ast.set_source(src.label.as_str());
        let module = Module::eval_ast_as_new(Scope::new(), &ast, engine)
            .map_err(|e| Box::new(EvalAltResult::ErrorInModule(path.to_string(), e, pos)))?;
        let shared: SharedModule = Arc::new(module);
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_string(), shared.clone());
        Ok(shared)
    }
}
