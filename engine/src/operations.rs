//! What the operator sets per listener beyond the port plan: trusted
//! sources, connection limits and timeouts, and where the handshake log goes.
//!
//! [`Operations`] is handed to `EngineHandle::start_with`;
//! [`Operations::admission`] resolves it against a plan into one
//! [`AdmissionConfig`] per listener, refusing a non-loopback listener that
//! has no allowlist.

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use thiserror::Error;

use crate::alerts::DenialAlertConfig;
use crate::log::LogSink;
use crate::plan::Plan;
use crate::policy::{AdmissionConfig, Allowlist, AllowlistError, RateLimit};
use crate::tls::ListenerTls;

/// Limits, timeouts and the source-denial alert of one listener. The
/// defaults are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections on the listener over all shards (0: no limit).
    pub max_conns: u32,
    /// Open connections per source address on one shard (0: no limit).
    pub max_conns_per_source: u32,
    /// New connections per source address on one shard (None: no limit).
    pub conn_rate: Option<RateLimit>,
    /// A connection that sends nothing for this long after it opens is closed.
    pub first_bytes_timeout: Option<Duration>,
    /// A connection with no bytes in either direction for this long is closed.
    pub idle_timeout: Option<Duration>,
    /// A connection whose peer has shut its sending side and that has not
    /// finished this long after is closed.
    pub half_closed_timeout: Option<Duration>,
    /// A source denied more than `limit` times in a window raises an
    /// `alert` (None: never). Counted per shard, like the per-source limits.
    pub source_denial_alert: Option<DenialAlertConfig>,
    /// UDP: datagrams longer than this are dropped before any plugin code
    /// and counted (None: as long as the engine receives whole,
    /// `EngineConfig::udp_max_datagram`).
    pub max_datagram: Option<u32>,
}

/// Default cap of open connections per listener.
pub const DEFAULT_MAX_CONNS: u32 = 65536;
/// Default cap of open connections per source and shard.
pub const DEFAULT_MAX_CONNS_PER_SOURCE: u32 = 4096;
/// Default new connections per second per source and shard.
pub const DEFAULT_CONN_RATE: u32 = 1000;
/// Default burst of new connections per source and shard.
pub const DEFAULT_CONN_BURST: u32 = 2000;
/// Default first-bytes deadline.
pub const DEFAULT_FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default half-closed timeout.
pub const DEFAULT_HALF_CLOSED_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_conns: DEFAULT_MAX_CONNS,
            max_conns_per_source: DEFAULT_MAX_CONNS_PER_SOURCE,
            conn_rate: Some(RateLimit {
                per_sec: DEFAULT_CONN_RATE,
                burst: DEFAULT_CONN_BURST,
            }),
            first_bytes_timeout: Some(DEFAULT_FIRST_BYTES_TIMEOUT),
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            half_closed_timeout: Some(DEFAULT_HALF_CLOSED_TIMEOUT),
            source_denial_alert: Some(DenialAlertConfig::default()),
            max_datagram: None,
        }
    }
}

/// One listener's settings.
#[derive(Debug, Clone, Default)]
pub struct ListenerOps {
    /// Trusted sources; `None`: the default of [`Allowlist::for_listener`].
    pub allow: Option<Vec<IpNet>>,
    /// Limits and timeouts.
    pub limits: Limits,
    /// A `tls` listener's certificates and client identities (required for
    /// one, refused for any other).
    pub tls: Option<Arc<ListenerTls>>,
}

/// Operator settings for every listener of a plan.
#[derive(Debug, Clone, Default)]
pub struct Operations {
    /// Per listener, in plan order; listeners past the end get the defaults.
    pub listeners: Vec<ListenerOps>,
    /// Audit mode: sources outside an allowlist are served, counted and
    /// logged as `would_deny`.
    pub dry_run: bool,
    /// One handshake-log queue per shard (None: no handshake log).
    pub log: Option<Vec<LogSink>>,
    /// How long a UDP source stays known before a datagram from it is
    /// logged as a new source again.
    pub udp_source_window: Duration,
    /// How IPv6 sources are grouped for every per-source limit and count.
    pub ipv6_source_prefix: crate::policy::Ipv6SourcePrefix,
    /// Client TLS profiles by name, for outbound streams a plugin opens
    /// with TLS (`ConnectRequest::with_tls`).
    pub tls_clients: Vec<(String, Arc<crate::tls::client::ClientTls>)>,
}

/// Why operator settings do not fit a plan.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OperationsError {
    /// A listener's allowlist is missing or wrong.
    #[error("listener `{listener}`: {reason}")]
    Allowlist {
        /// The listener spec.
        listener: String,
        /// What is wrong.
        reason: AllowlistError,
    },
    /// The log has a queue count other than the shard count.
    #[error("the handshake log has {queues} queues for {shards} shards")]
    LogQueues {
        /// Queues given.
        queues: usize,
        /// Shards in the plan.
        shards: usize,
    },
    /// A `tls` listener without certificates.
    #[error(
        "listener `{listener}` is a `tls` listener but has no certificate: give --tls-cert \
         and --tls-key (or `tls_cert` and `tls_key` in its [[listener]] table)"
    )]
    TlsWithoutCertificate {
        /// The listener spec.
        listener: String,
    },
    /// TLS settings on a listener that is not `tls`.
    #[error(
        "listener `{listener}` has TLS settings but is not a `tls` listener: write its \
         transport as `tls` (e.g. `echo@tls:127.0.0.1:9000`)"
    )]
    TlsOnPlainListener {
        /// The listener spec.
        listener: String,
    },
}

impl Operations {
    /// The settings of listener `i`.
    pub fn listener(&self, i: usize) -> ListenerOps {
        self.listeners.get(i).cloned().unwrap_or_default()
    }

    /// One admission configuration per listener of `plan`.
    pub fn admission(&self, plan: &Plan) -> Result<Vec<AdmissionConfig>, OperationsError> {
        if let Some(log) = &self.log {
            if log.len() != plan.shards.len() {
                return Err(OperationsError::LogQueues {
                    queues: log.len(),
                    shards: plan.shards.len(),
                });
            }
        }
        plan.listeners
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let l = self.listener(i);
                match (spec.tls, l.tls.is_some()) {
                    (true, false) => {
                        return Err(OperationsError::TlsWithoutCertificate {
                            listener: spec.to_string(),
                        })
                    }
                    (false, true) => {
                        return Err(OperationsError::TlsOnPlainListener {
                            listener: spec.to_string(),
                        })
                    }
                    _ => {}
                }
                let allow =
                    Allowlist::for_listener(spec.addr, l.allow.as_deref()).map_err(|reason| {
                        OperationsError::Allowlist {
                            listener: spec.to_string(),
                            reason,
                        }
                    })?;
                Ok(AdmissionConfig {
                    allow,
                    dry_run: self.dry_run,
                    max_conns: l.limits.max_conns,
                    max_conns_per_source: l.limits.max_conns_per_source,
                    conn_rate: l.limits.conn_rate,
                    ipv6_prefix: self.ipv6_source_prefix,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Mode, PlanRequest};

    #[test]
    fn non_loopback_listeners_need_an_allowlist_and_errors_name_them() {
        let plan = Plan::build(PlanRequest {
            listeners: vec![
                "echo@tcp:127.0.0.1:9000".parse().unwrap(),
                "echo@udp:10.1.2.3:9000".parse().unwrap(),
            ],
            shards: 1,
            cpus: vec![0],
            mode: Mode::Range,
            allow_idle_shards: false,
        })
        .unwrap();
        let e = Operations::default().admission(&plan).unwrap_err();
        assert_eq!(
            e.to_string(),
            "listener `echo@udp:10.1.2.3:9000`: listener on 10.1.2.3 is not bound to loopback \
             and has no allowlist: name the trusted sources (e.g. `--allow 10.0.0.0/8`), or \
             allow everyone explicitly with `--allow 0.0.0.0/0 --allow ::/0`"
        );
        let ops = Operations {
            listeners: vec![
                ListenerOps::default(),
                ListenerOps {
                    allow: Some(vec!["10.0.0.0/8".parse().unwrap()]),
                    limits: Limits {
                        max_conns: 7,
                        ..Limits::default()
                    },
                    tls: None,
                },
            ],
            dry_run: true,
            ..Operations::default()
        };
        let a = ops.admission(&plan).unwrap();
        assert_eq!(a[0].allow, Allowlist::loopback());
        assert_eq!(a[0].max_conns, DEFAULT_MAX_CONNS);
        assert_eq!(a[1].allow.nets(), &["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        assert_eq!((a[1].max_conns, a[1].dry_run), (7, true));
    }
}
