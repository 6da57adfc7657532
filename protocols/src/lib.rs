//! Built-in protocols.
