//! ringport: a thread-per-core io_uring packet engine for machine-to-machine
//! traffic on internal ports. This crate re-exports the public API.
pub use ringport_engine as engine;
pub use ringport_plugin as plugin;
pub use ringport_protocols as protocols;
