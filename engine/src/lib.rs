//! ringport engine.
pub mod cpus;
pub mod limits;
pub mod plan;
pub mod spec;
