//! The client ids a shard knows, in one map: as their home shard (the
//! directory entry naming the shard that holds each id's session, see
//! [`super::handover`]) and as the holder of their sessions (the local
//! session key).
//!
//! An id whose home is the shard that holds its session (every id, with
//! one shard) takes one entry and one copy of the id for both, which the
//! session shares: 40 bytes of table instead of a directory entry (40) and
//! a session index entry (24) in two tables, each kept at most seven-eighths
//! full. Used on CONNECT, hand-over and session end only, never per message.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use ringport_plugin::ShardId;

/// A claim number: which CONNECT of a client id its home shard saw last.
///
/// 32 bits, counted with wrapping by each home shard, to keep sessions and
/// directory entries small. A number names a claim only while its session
/// or hand-over is alive, and is only compared for equality with the
/// latest claim of the same client id: a stale number can match only if
/// its session outlived exactly a multiple of 2^32 later claims on its home
/// shard *and* its end crossed the newest claim in the mesh.
pub(crate) type Epoch = u32;

/// The home shard's record of a client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// The shard holding the session.
    pub shard: ShardId,
    /// The connection (raw id on that shard) that claimed it last.
    pub conn: u64,
    /// Claim number; a session's end is accepted only from the latest claim.
    pub epoch: Epoch,
}

/// `IdEntry::shard` of an id this shard is not the home of (or whose home
/// record ended).
const NOT_HOME: u32 = u32::MAX;

/// `IdEntry::key` of an id whose session is not held here. Session keys
/// never are 0 (they count from 1).
const NO_SESSION: u64 = 0;

/// One client id's entry: its directory record, its session key, or both.
#[derive(Debug, Clone, Copy)]
struct IdEntry {
    /// The directory record's connection.
    conn: u64,
    /// The session held here.
    key: u64,
    /// The directory record's claim number.
    epoch: Epoch,
    /// The shard holding the session ([`NOT_HOME`]: no directory record).
    shard: u32,
}

impl IdEntry {
    const EMPTY: IdEntry = IdEntry {
        conn: 0,
        epoch: 0,
        key: NO_SESSION,
        shard: NOT_HOME,
    };

    fn home(&self) -> Option<DirEntry> {
        (self.shard != NOT_HOME).then_some(DirEntry {
            shard: self.shard as ShardId,
            conn: self.conn,
            epoch: self.epoch,
        })
    }

    fn is_empty(&self) -> bool {
        self.shard == NOT_HOME && self.key == NO_SESSION
    }
}

/// The directory of the ids whose home is this shard, and the index of the
/// sessions this shard holds, by client id.
#[derive(Debug, Default)]
pub(crate) struct ClientIds {
    map: HashMap<Arc<str>, IdEntry>,
}

impl ClientIds {
    /// The directory record of `cid`, when this shard is its home.
    pub fn home(&self, cid: &str) -> Option<DirEntry> {
        self.map.get(cid).and_then(IdEntry::home)
    }

    /// Records where `cid`'s session is (this shard being its home);
    /// returns the record it replaces. `e.shard` is one of the engine's
    /// shards (the caller checked it), so below 2^32 - 1.
    pub fn set_home(&mut self, cid: Arc<str>, e: DirEntry) -> Option<DirEntry> {
        debug_assert!(e.shard < NOT_HOME as usize);
        let entry = self.map.entry(cid).or_insert(IdEntry::EMPTY);
        let prev = entry.home();
        entry.shard = e.shard as u32;
        entry.conn = e.conn;
        entry.epoch = e.epoch;
        prev
    }

    /// Forgets the directory record of `cid`.
    pub fn clear_home(&mut self, cid: &str) {
        if let Some(e) = self.map.get_mut(cid) {
            e.shard = NOT_HOME;
            if e.is_empty() {
                self.map.remove(cid);
            }
        }
    }

    /// The key of the session of `cid` held here.
    pub fn session(&self, cid: &str) -> Option<u64> {
        self.map
            .get(cid)
            .map(|e| e.key)
            .filter(|k| *k != NO_SESSION)
    }

    /// Whether this shard holds a session of `cid`.
    pub fn has_session(&self, cid: &str) -> bool {
        self.session(cid).is_some()
    }

    /// Records that the session `key` of `cid` is held here; returns the
    /// copy of the id the map keeps (an existing one, when this shard is
    /// also the id's home), for the session to share.
    pub fn set_session(&mut self, cid: &Arc<str>, key: u64) -> Arc<str> {
        debug_assert_ne!(key, NO_SESSION);
        match self.map.entry(Arc::clone(cid)) {
            Entry::Occupied(mut e) => {
                e.get_mut().key = key;
                Arc::clone(e.key())
            }
            Entry::Vacant(e) => {
                e.insert(IdEntry {
                    key,
                    ..IdEntry::EMPTY
                });
                Arc::clone(cid)
            }
        }
    }

    /// Forgets the session of `cid` held here.
    pub fn clear_session(&mut self, cid: &str) {
        if let Some(e) = self.map.get_mut(cid) {
            e.key = NO_SESSION;
            if e.is_empty() {
                self.map.remove(cid);
            }
        }
    }

    /// How many ids have a directory record here.
    #[cfg(test)]
    pub fn home_count(&self) -> usize {
        self.map.values().filter(|e| e.shard != NOT_HOME).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entry_serves_the_directory_and_the_session_index() {
        let mut ids = ClientIds::default();
        let cid: Arc<str> = "dev-1".into();
        let rec = DirEntry {
            shard: 0,
            conn: 7,
            epoch: 3,
        };
        assert_eq!(ids.set_home(Arc::clone(&cid), rec), None);
        // The session shares the directory's copy of the id.
        let other: Arc<str> = "dev-1".into();
        let shared = ids.set_session(&other, 5);
        assert!(Arc::ptr_eq(&shared, &cid));
        assert_eq!(ids.map.len(), 1);
        assert_eq!(
            (ids.home("dev-1"), ids.session("dev-1")),
            (Some(rec), Some(5))
        );
        let next = DirEntry {
            shard: 2,
            conn: 9,
            epoch: 4,
        };
        assert_eq!(ids.set_home(Arc::clone(&cid), next), Some(rec));
        ids.clear_home("dev-1");
        assert_eq!((ids.home("dev-1"), ids.session("dev-1")), (None, Some(5)));
        assert_eq!(ids.home_count(), 0);
        ids.clear_session("dev-1");
        assert!(!ids.has_session("dev-1"));
        assert!(ids.map.is_empty());
    }

    #[test]
    fn an_entry_stays_while_either_part_does() {
        let mut ids = ClientIds::default();
        let cid: Arc<str> = "dev-2".into();
        assert!(Arc::ptr_eq(&ids.set_session(&cid, 8), &cid));
        assert_eq!(ids.home("dev-2"), None);
        let rec = DirEntry {
            shard: 1,
            conn: 2,
            epoch: 1,
        };
        ids.set_home(Arc::clone(&cid), rec);
        ids.clear_session("dev-2");
        assert_eq!((ids.home("dev-2"), ids.session("dev-2")), (Some(rec), None));
        assert_eq!(ids.home_count(), 1);
        ids.clear_home("dev-2");
        assert!(ids.map.is_empty());
        // Clearing what is not there is nothing.
        ids.clear_home("dev-2");
        ids.clear_session("dev-2");
        assert!(ids.map.is_empty());
    }
}
