//! A bridge narrowed per listener: each listener of the bridged plugin has
//! its own export and import filters ([`ListenerRoute`]) and its own
//! counters ([`ListenerBridgeStats`]), over the plugin's one NATS connection.
//!
//! # Semantics
//!
//! * Export: a message a client of listener `L` publishes goes to NATS only
//!   if `L`'s export filters take it. The bridge shard learns `L` with the
//!   publish (the plugin carries the listener id in its mesh message), so
//!   the filters are matched once, on the shard that counts them.
//! * Import: the bridge subscribes in NATS to the union of every listener's
//!   import filters (a filter another one covers is left out, so NATS sends
//!   each message once). A message from NATS reaches a local subscriber only
//!   if the listener that subscriber came through imports its subject
//!   ([`ImportScope`]).
//! * A listener without a route of its own uses the plugin-wide filters
//!   ([`BridgeSettings::export`], [`BridgeSettings::import`]).
//! * Login and buffer may differ per listener: listeners with equal
//!   connection settings share one bridge, each distinct set has its own
//!   ([`BridgeSet`](super::set::BridgeSet)). A bridge of a plugin with
//!   several is [`exclusive`](BridgeSettings::exclusive): it serves only
//!   the listeners it has a route for.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use ringport_plugin::ListenerId;

use super::bridge::{covers, BridgeError, BridgeSettings};

/// One listener's part of a bridge.
#[derive(Debug, Clone)]
pub struct ListenerRoute {
    /// The listener's spec, the `listener` label of its series.
    pub name: String,
    /// Subjects (with `*`/`>`) whose publishes from this listener go to NATS.
    pub export: Vec<String>,
    /// Subjects (with `*`/`>`) this listener's subscribers receive from NATS.
    pub import: Vec<String>,
    /// The topic filter each subject of `import` came from (same length).
    pub import_filters: Vec<String>,
    /// Its counters, shared with `/metrics`.
    pub stats: Arc<ListenerBridgeStats>,
}

/// One listener's bridge counters; written by the bridge shard only.
#[derive(Debug, Default)]
pub struct ListenerBridgeStats {
    /// Publishes from this listener taken for NATS (sent or buffered).
    pub exported: AtomicU64,
    /// Messages from NATS this listener's import filters let through.
    pub imported: AtomicU64,
    /// Exports dropped: the buffer was full.
    pub dropped_buffer_full: AtomicU64,
    /// Exports dropped: larger than the server's `max_payload`.
    pub dropped_too_large: AtomicU64,
    /// Exports whose topic does not map to a subject.
    pub dropped_unmappable: AtomicU64,
}

/// Which listeners' subscribers a message from NATS may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportScope {
    /// By listener id: whether its import filters take the subject.
    by_listener: Vec<bool>,
    /// For a listener without a route: the plugin-wide filters' answer.
    default: bool,
}

impl ImportScope {
    /// Whether subscribers that came through `listener` get the message.
    pub fn admits(&self, listener: ListenerId) -> bool {
        self.by_listener
            .get(usize::from(listener.0))
            .copied()
            .unwrap_or(self.default)
    }

    /// A scope from its parts (as [`by_listener`](Self::by_listener) and
    /// [`default_admits`](Self::default_admits) give them), for a plugin
    /// that carries a scope between shards.
    pub fn from_parts(by_listener: Vec<bool>, default: bool) -> Self {
        ImportScope {
            by_listener,
            default,
        }
    }

    /// By listener id: whether its import filters take the subject.
    pub fn by_listener(&self) -> &[bool] {
        &self.by_listener
    }

    /// The answer for a listener past [`by_listener`](Self::by_listener).
    pub fn default_admits(&self) -> bool {
        self.default
    }
}

/// Whether some subject matches both patterns (`*` one token, `>` the rest).
pub fn intersects(a: &str, b: &str) -> bool {
    let mut a = a.split('.');
    let mut b = b.split('.');
    loop {
        match (a.next(), b.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

impl BridgeSettings {
    /// Gives `listener` (named `name`, its spec) filters of its own: `None`
    /// keeps the plugin-wide ones, `Some(&[])` turns that direction off.
    /// Recomputes the NATS subscriptions; refuses import filters that
    /// overlap without one covering the other (NATS would deliver their
    /// common messages twice), naming both listeners.
    pub fn add_listener(
        &mut self,
        listener: ListenerId,
        name: &str,
        export: Option<&[String]>,
        import: Option<&[String]>,
    ) -> Result<(), BridgeError> {
        let export_filters = export.unwrap_or(&self.export_filters).to_vec();
        let import_filters = import.unwrap_or(&self.import_filters).to_vec();
        let export = self.map_filters("export", &export_filters)?;
        let import = self.map_filters("import", &import_filters)?;
        check_overlap(&import)?;
        let route = ListenerRoute {
            name: name.to_owned(),
            export: export.into_iter().map(|(_, s)| s).collect(),
            import_filters: import.iter().map(|(f, _)| f.clone()).collect(),
            import: import.into_iter().map(|(_, s)| s).collect(),
            stats: Arc::new(ListenerBridgeStats::default()),
        };
        let at = usize::from(listener.0);
        if self.routes.len() <= at {
            self.routes.resize(at + 1, None);
        }
        self.routes[at] = Some(route);
        self.subscriptions = subscriptions(&self.routes)?;
        Ok(())
    }

    /// Whether listeners have routes of their own (or the bridge is
    /// [`exclusive`](BridgeSettings::exclusive): imports are scoped).
    pub fn has_routes(&self) -> bool {
        !self.routes.is_empty() || self.exclusive
    }

    /// `listener`'s route, if it has one.
    pub fn route(&self, listener: ListenerId) -> Option<&ListenerRoute> {
        self.routes.get(usize::from(listener.0))?.as_ref()
    }

    /// Every route with its listener id.
    pub fn routes(&self) -> impl Iterator<Item = (ListenerId, &ListenerRoute)> {
        self.routes
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((ListenerId(i as u16), r.as_ref()?)))
    }

    /// Whether a publish on `subject` from `listener` is exported.
    pub fn exports_from(&self, listener: ListenerId, subject: &str) -> bool {
        match self.route(listener) {
            Some(r) => r.export.iter().any(|p| covers(p, subject)),
            None => !self.exclusive && self.exports(subject),
        }
    }

    /// Which listeners' subscribers a message on `subject` reaches; None
    /// when there are no routes (every subscriber). An
    /// [`exclusive`](BridgeSettings::exclusive) bridge admits only the
    /// listeners it has a route for.
    pub fn import_scope(&self, subject: &str) -> Option<ImportScope> {
        if !self.has_routes() {
            return None;
        }
        let takes = |patterns: &[String]| patterns.iter().any(|p| covers(p, subject));
        let default = !self.exclusive && takes(&self.import);
        Some(ImportScope {
            by_listener: self
                .routes
                .iter()
                .map(|r| r.as_ref().map_or(default, |r| takes(&r.import)))
                .collect(),
            default,
        })
    }
}

/// Refuses two subjects of one filter list that overlap.
pub(super) fn check_overlap(import: &[(String, String)]) -> Result<(), BridgeError> {
    for (i, (fa, a)) in import.iter().enumerate() {
        for (fb, b) in &import[i + 1..] {
            if covers(a, b) || covers(b, a) {
                return Err(BridgeError::Overlap(fa.clone(), fb.clone()));
            }
        }
    }
    Ok(())
}

/// The subjects to subscribe to for `routes`: each listener's import
/// subjects, less those another one covers (equal ones once).
fn subscriptions(routes: &[Option<ListenerRoute>]) -> Result<Vec<String>, BridgeError> {
    let all: Vec<(&str, &str, &str)> = routes
        .iter()
        .flatten()
        .flat_map(|r| {
            r.import
                .iter()
                .zip(&r.import_filters)
                .map(|(s, f)| (r.name.as_str(), f.as_str(), s.as_str()))
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (i, &(la, fa, a)) in all.iter().enumerate() {
        let mut needed = true;
        for (j, &(lb, fb, b)) in all.iter().enumerate() {
            if i == j {
                continue;
            }
            // A wider pattern elsewhere (or an equal one listed first).
            if (covers(b, a) && !covers(a, b)) || (a == b && j < i) {
                needed = false;
                break;
            }
            if !covers(a, b) && !covers(b, a) && intersects(a, b) {
                return Err(BridgeError::ListenerOverlap {
                    a: (la.to_owned(), fa.to_owned()),
                    b: (lb.to_owned(), fb.to_owned()),
                });
            }
        }
        if needed {
            out.push(a.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nats::NatsConfig;

    fn settings(export: &[&str], import: &[&str]) -> BridgeSettings {
        let nats = NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".into()],
            ..NatsConfig::default()
        };
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        BridgeSettings::new("relay", nats, "", &v(export), &v(import), "me").unwrap()
    }

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn routes_narrow_exports_and_subscribe_to_the_union_of_imports() {
        let mut s = settings(&["#"], &["#"]);
        assert_eq!(s.subscriptions, [">"]);
        s.add_listener(
            ListenerId(0),
            "relay@tcp:127.0.0.1:1",
            Some(&strings(&["a/#"])),
            Some(&strings(&["x/+"])),
        )
        .unwrap();
        s.add_listener(
            ListenerId(2),
            "relay@tcp:127.0.0.1:2",
            Some(&[]),
            Some(&strings(&["x/y", "z"])),
        )
        .unwrap();
        assert!(s.has_routes());
        // `x/y` is covered by listener 0's `x/+`: subscribed once.
        assert_eq!(s.subscriptions, ["x.*", "z"]);
        assert!(s.exports_from(ListenerId(0), "a.b"));
        assert!(s.exports_from(ListenerId(0), "a"));
        assert!(!s.exports_from(ListenerId(0), "b"));
        assert!(!s.exports_from(ListenerId(2), "a.b"));
        // Listener 1 has no route: the plugin-wide `#`.
        assert!(s.exports_from(ListenerId(1), "b"));
        let scope = s.import_scope("x.y").unwrap();
        assert!(scope.admits(ListenerId(0)) && scope.admits(ListenerId(2)));
        assert!(scope.admits(ListenerId(1)) && scope.admits(ListenerId(9)));
        let scope = s.import_scope("x.q").unwrap();
        assert!(scope.admits(ListenerId(0)) && !scope.admits(ListenerId(2)));
        let scope = s.import_scope("z").unwrap();
        assert!(!scope.admits(ListenerId(0)) && scope.admits(ListenerId(2)));
        assert_eq!(s.route(ListenerId(2)).unwrap().import_filters, ["x/y", "z"]);
        assert!(s.route(ListenerId(1)).is_none());
        assert_eq!(s.routes().count(), 2);
    }

    #[test]
    fn a_listener_without_keys_takes_the_plugin_filters_and_off_is_empty() {
        let mut s = settings(&["a/#"], &["b"]);
        s.add_listener(ListenerId(0), "l0", None, None).unwrap();
        s.add_listener(ListenerId(1), "l1", Some(&[]), Some(&[]))
            .unwrap();
        let r0 = s.route(ListenerId(0)).unwrap();
        assert_eq!(r0.export, ["a.>", "a"]);
        assert_eq!(r0.import, ["b"]);
        assert!(s.route(ListenerId(1)).unwrap().export.is_empty());
        assert_eq!(s.subscriptions, ["b"]);
        let scope = s.import_scope("b").unwrap();
        assert!(scope.admits(ListenerId(0)) && !scope.admits(ListenerId(1)));
    }

    #[test]
    fn overlapping_imports_of_two_listeners_are_refused_naming_both() {
        let mut s = settings(&["#"], &["#"]);
        s.add_listener(
            ListenerId(0),
            "relay@tcp:127.0.0.1:1",
            None,
            Some(&strings(&["a/+/c"])),
        )
        .unwrap();
        let e = s
            .add_listener(
                ListenerId(1),
                "relay@udp:127.0.0.1:2",
                None,
                Some(&strings(&["a/b/+"])),
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "nats_import: `a/+/c` of listener `relay@tcp:127.0.0.1:1` and `a/b/+` of listener \
             `relay@udp:127.0.0.1:2` overlap without one covering the other, so NATS would \
             deliver their common messages twice; make one filter cover the other, or split \
             them so they do not overlap"
        );
        let e = s
            .add_listener(ListenerId(1), "l1", None, Some(&strings(&["q", "q/#"])))
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("nats_import: `q` and `q/#` overlap"),
            "{e}"
        );
        let e = s
            .add_listener(ListenerId(1), "l1", Some(&strings(&["a/#/b"])), None)
            .unwrap_err();
        assert!(e.to_string().starts_with("nats_export: `a/#/b`"), "{e}");
    }

    #[test]
    fn intersects_is_symmetric_and_token_wise() {
        assert!(intersects("a.*.c", "a.b.*"));
        assert!(intersects("a.b.*", "a.*.c"));
        assert!(intersects(">", "a"));
        assert!(intersects("a.>", "*.b"));
        assert!(!intersects("a.*", "b.*"));
        assert!(!intersects("a.*", "a.b.c"));
        assert!(!intersects("a", "a.b"));
        assert!(intersects("a.b", "a.b"));
    }
}
