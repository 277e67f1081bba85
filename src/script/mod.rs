//! The Rhai host: engine factory, module resolution, workflow loading with
//! user overrides, and the per-run host that primitives reach through.

pub mod engine;
pub mod host;
pub mod resolver;
pub mod sources;
pub mod workflow;

pub use host::{Host, RunOutcome, ServiceOutcome};
/// The script layer's engine; other layers hold it without naming Rhai.
pub type Engine = rhai::Engine;
pub use sources::Scripts;
pub use workflow::Program;
