//! Plugins registered by name.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::PluginFactory;

/// The plugins an engine can instantiate, by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<String, Arc<dyn PluginFactory>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.factories.keys()).finish()
    }
}

/// A registration that could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// Another factory already uses this name.
    Duplicate(String),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Duplicate(n) => write!(f, "a plugin named `{n}` is already registered"),
        }
    }
}

impl std::error::Error for RegistryError {}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a factory under its [`PluginFactory::name`].
    pub fn register(&mut self, factory: Arc<dyn PluginFactory>) -> Result<(), RegistryError> {
        let name = factory.name().to_owned();
        if self.factories.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.factories.insert(name, factory);
        Ok(())
    }

    /// The factory registered under `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn PluginFactory>> {
        self.factories.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }
}
