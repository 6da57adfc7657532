//! ringport engine.
pub mod cpus;
pub mod plan;
pub mod spec;
