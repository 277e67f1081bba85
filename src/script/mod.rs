//! The Rhai host: engine factory, module resolution, workflow loading with
//! user overrides, and the per-run host that primitives reach through.

pub mod engine;
pub mod host;
pub mod resolver;
pub mod sources;
pub mod workflow;

pub use host::{Host, RunOutcome, ServiceOutcome};
pub use sources::Scripts;
pub use workflow::Program;
