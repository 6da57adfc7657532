//! The in-process engine serving the `mqtt` plugin for [`crate::harness`].

use crate::common::Server;
use crate::harness::Options;

/// Starts two shards with `mqtt` on two ports configured as `options` say.
///
/// # Panics
///
/// Always, until the broker branch is merged.
pub fn start(options: &Options) -> Server {
    panic!(
        "the mqtt plugin is not merged yet ({options:?}); run with {}=mosquitto",
        crate::harness::BROKER_ENV
    )
}
