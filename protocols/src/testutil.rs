//! Test helpers: feeding a stream the way the engine does.

use ringport_plugin::testing::RecordingContext;
use ringport_plugin::{ConnId, DropReason, Plugin};

/// Drives one stream of a plugin like the engine: bytes a call did not consume
/// are presented again, followed by the newer bytes.
pub(crate) struct StreamFeeder<P> {
    pub(crate) plugin: P,
    pub(crate) ctx: RecordingContext,
    conn: ConnId,
    pending: Vec<u8>,
}

impl<P: Plugin> StreamFeeder<P> {
    pub(crate) fn new(plugin: P, conn: ConnId) -> Self {
        StreamFeeder {
            plugin,
            ctx: RecordingContext::new(),
            conn,
            pending: Vec::new(),
        }
    }

    /// Appends `chunk` to the unconsumed bytes and hands them to the plugin
    /// (an empty chunk with nothing pending is not delivered, as on a socket).
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Result<(), DropReason> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending.extend_from_slice(chunk);
        let consumed = self
            .plugin
            .handle_data(&mut self.ctx, self.conn, &self.pending)?;
        assert!(consumed <= self.pending.len(), "consumed more than given");
        self.pending.drain(..consumed);
        Ok(())
    }

    /// Bytes kept for the next call.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}
