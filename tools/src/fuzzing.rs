//! The fuzzing entry point: the config file and its merge with the flags,
//! for the `config` target in `fuzz/`. Hidden from the docs and not stable:
//! nothing outside `fuzz/` should use it.

pub use crate::cli::ServeArgs;
pub use crate::config::{Cidr, FileConfig, ListenerTable, LogTarget, Parsed, Settings};
