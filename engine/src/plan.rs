//! The port plan: which shard binds which ports, and on which CPU it runs.
//!
//! [`Plan::build`] turns the listeners, the shard count and the CPU list into
//! one [`ShardPlan`] per shard. Shard `i` runs on `cpus[i % cpus.len()]`, so
//! more shards than CPUs is allowed (4 shards on 2 CPUs run on CPUs 0, 1, 0, 1).
//!
//! * In [`Mode::Range`] every listener's port range is cut into contiguous
//!   slices, one per shard, as evenly as possible, the first shards taking
//!   one port more when the count does not divide: 10 ports over 4 shards
//!   give 3, 3, 2, 2. A client that picks a port picks a shard, and
//!   [`Plan::owner`] answers which one in O(1).
//! * In [`Mode::Reuseport`] every shard binds every port (with
//!   `SO_REUSEPORT`) and the kernel spreads flows.
//!
//! The plan is pure data: building it opens no socket, so it can be printed
//! ([`Plan::table`]) and checked against the file-descriptor limit
//! ([`crate::limits::check_fd_budget`]) before anything is bound.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ringport_plugin::{ListenerId, Transport};
use thiserror::Error;

use crate::spec::{ListenerSpec, PortRange, PortRangeError};

/// How shards share the listeners' ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Each shard owns a contiguous slice of every listener's ports.
    #[default]
    Range,
    /// Every shard binds every port with `SO_REUSEPORT`.
    Reuseport,
}

impl Mode {
    /// The name used on the command line and in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Range => "range",
            Mode::Reuseport => "reuseport",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown mode name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "unknown mode `{0}`: use `range` (each shard owns a slice of every listener's ports) \
     or `reuseport` (every shard binds every port)"
)]
pub struct ModeError(pub String);

impl FromStr for Mode {
    type Err = ModeError;

    /// Parses `range` or `reuseport`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "range" => Ok(Mode::Range),
            "reuseport" => Ok(Mode::Reuseport),
            other => Err(ModeError(other.to_owned())),
        }
    }
}

/// What [`Plan::build`] plans for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRequest {
    /// The listeners, in order; listener `i` gets [`ListenerId`] `i`.
    pub listeners: Vec<ListenerSpec>,
    /// How many shards (worker threads) to run.
    pub shards: usize,
    /// The CPUs to pin shards to, in order; shard `i` runs on `cpus[i % cpus.len()]`.
    pub cpus: Vec<usize>,
    /// How shards share the ports.
    pub mode: Mode,
    /// In range mode, allow a listener with fewer ports than shards: the
    /// shards past its last port get no binding for it.
    pub allow_idle_shards: bool,
}

/// The whole plan: what every shard binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How shards share the ports.
    pub mode: Mode,
    /// The listeners, indexed by [`ListenerId`].
    pub listeners: Vec<ListenerSpec>,
    /// One entry per shard, indexed by shard number.
    pub shards: Vec<ShardPlan>,
}

/// What one shard binds, and where it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    /// The shard's number, its index in [`Plan::shards`].
    pub shard: usize,
    /// The CPU the shard's thread is pinned to.
    pub cpu: usize,
    /// The ports it binds, at most one entry per listener, in listener order.
    pub bindings: Vec<Binding>,
}

/// Ports of one listener bound by one shard: one socket per port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The listener the ports belong to.
    pub listener: ListenerId,
    /// The ports this shard binds.
    pub ports: PortRange,
}

/// Why a plan cannot be built. Every message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlanError {
    /// Zero shards requested.
    #[error("0 shards requested: run at least one shard (`--shards 1`)")]
    NoShards,
    /// An empty CPU list.
    #[error("no CPUs to pin shards to: name at least one CPU, e.g. `--cpus 0-3`")]
    NoCpus,
    /// A CPU named twice in the CPU list.
    #[error(
        "CPU {cpu} is listed twice: name each CPU once \
         (more shards than CPUs wrap around the list on their own)"
    )]
    DuplicateCpu {
        /// The CPU named twice.
        cpu: usize,
    },
    /// No listeners.
    #[error("no listeners: give at least one, e.g. `--listen echo@tcp:127.0.0.1:9000-9063`")]
    NoListeners,
    /// More listeners than [`ListenerId`] can number.
    #[error("{count} listeners are more than a plan can number (65535); merge port ranges")]
    TooManyListeners {
        /// How many listeners were given.
        count: usize,
    },
    /// A listener whose port range is empty or includes port 0.
    #[error("listener `{listener}`: {reason}")]
    BadPorts {
        /// The listener's spec text.
        listener: String,
        /// What is wrong with its ports.
        reason: PortRangeError,
    },
    /// Two listeners bind the same port on the same transport and address.
    #[error(
        "listeners `{first}` and `{second}` overlap: both bind {transport} port {port} \
         on {addrs}; give them disjoint port ranges"
    )]
    Overlap {
        /// The spec text of the earlier listener.
        first: String,
        /// The spec text of the later listener.
        second: String,
        /// Their transport.
        transport: Transport,
        /// The lowest port both bind.
        port: u16,
        /// The address they share, explained when one is the unspecified address.
        addrs: String,
    },
    /// In range mode, a listener with fewer ports than shards.
    #[error(
        "listener `{listener}` has {ports} port{s} for {shards} shards: range mode gives \
         every shard its own ports; give it at least {shards} ports (e.g. `{suggested}`), \
         run at most {ports} shard{s}, use `--mode reuseport`, or let shards go without \
         ports of it with `--allow-idle-shards`",
        s = if *.ports == 1 { "" } else { "s" }
    )]
    TooFewPorts {
        /// The listener's spec text.
        listener: String,
        /// How many ports it has.
        ports: usize,
        /// How many shards were requested.
        shards: usize,
        /// A port range with one port per shard, starting where the listener's
        /// starts (or ending at 65535 when it would not fit).
        suggested: PortRange,
    },
}

impl Plan {
    /// Plans `req`; see the module docs for how ports are split.
    pub fn build(req: PlanRequest) -> Result<Plan, PlanError> {
        let PlanRequest {
            listeners,
            shards,
            cpus,
            mode,
            allow_idle_shards,
        } = req;

        if shards == 0 {
            return Err(PlanError::NoShards);
        }
        if cpus.is_empty() {
            return Err(PlanError::NoCpus);
        }
        let mut sorted_cpus = cpus.clone();
        sorted_cpus.sort_unstable();
        if let Some(pair) = sorted_cpus.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(PlanError::DuplicateCpu { cpu: pair[0] });
        }
        if listeners.is_empty() {
            return Err(PlanError::NoListeners);
        }
        // Ids 0..=65534: 65535 is `ListenerId::OUTBOUND`, the streams a
        // plugin opened itself.
        if listeners.len() > usize::from(u16::MAX) {
            return Err(PlanError::TooManyListeners {
                count: listeners.len(),
            });
        }
        for spec in &listeners {
            PortRange::new(spec.ports.first, spec.ports.last).map_err(|reason| {
                PlanError::BadPorts {
                    listener: spec.to_string(),
                    reason,
                }
            })?;
        }
        check_overlaps(&listeners)?;
        if mode == Mode::Range && !allow_idle_shards {
            if let Some(spec) = listeners.iter().find(|spec| spec.ports.len() < shards) {
                return Err(too_few_ports(spec, shards));
            }
        }

        let shards = (0..shards)
            .map(|shard| {
                let bindings = listeners
                    .iter()
                    .enumerate()
                    .filter_map(|(index, spec)| {
                        let ports = match mode {
                            Mode::Range => slice_of(spec.ports, shards, shard)?,
                            Mode::Reuseport => spec.ports,
                        };
                        let listener = ListenerId(u16::try_from(index).ok()?);
                        Some(Binding { listener, ports })
                    })
                    .collect();
                ShardPlan {
                    shard,
                    cpu: cpus[shard % cpus.len()],
                    bindings,
                }
            })
            .collect();

        Ok(Plan {
            mode,
            listeners,
            shards,
        })
    }

    /// The shard that binds `port` of `listener`.
    ///
    /// `None` in reuseport mode (any shard may get the flow), and when the
    /// listener does not exist or the port is not one of its ports. O(1).
    pub fn owner(&self, listener: ListenerId, port: u16) -> Option<usize> {
        if self.mode != Mode::Range || self.shards.is_empty() {
            return None;
        }
        let ports = self.listeners.get(usize::from(listener.0))?.ports;
        if !ports.contains(port) {
            return None;
        }
        Some(owner_of(
            ports.len(),
            self.shards.len(),
            usize::from(port - ports.first),
        ))
    }

    /// The shards that bind no port at all (only with `allow_idle_shards`).
    pub fn idle_shards(&self) -> Vec<usize> {
        self.shards
            .iter()
            .filter(|shard| shard.bindings.is_empty())
            .map(|shard| shard.shard)
            .collect()
    }

    /// How many sockets each shard opens: one per bound port.
    pub fn sockets_per_shard(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|shard| shard.bindings.iter().map(|b| b.ports.len()).sum())
            .collect()
    }

    /// How many sockets the whole plan opens.
    pub fn total_sockets(&self) -> usize {
        self.sockets_per_shard().iter().sum()
    }

    /// The plan as a table for the operator: columns `shard`, `cpu`,
    /// `listener` (its spec text) and `ports`, one row per shard and binding,
    /// in shard order. A shard without any binding gets one row reading
    /// `(idle)`, so that every shard shows. Columns are left-aligned and
    /// separated by two spaces; every line ends in `\n`.
    pub fn table(&self) -> String {
        let mut rows: Vec<[String; 4]> =
            vec![["shard", "cpu", "listener", "ports"].map(String::from)];
        for shard in &self.shards {
            let (id, cpu) = (shard.shard.to_string(), shard.cpu.to_string());
            if shard.bindings.is_empty() {
                rows.push([id, cpu, "(idle)".to_owned(), "-".to_owned()]);
                continue;
            }
            for binding in &shard.bindings {
                let listener = self
                    .listeners
                    .get(usize::from(binding.listener.0))
                    .map_or_else(|| format!("#{}", binding.listener.0), ToString::to_string);
                rows.push([id.clone(), cpu.clone(), listener, binding.ports.to_string()]);
            }
        }

        let mut widths = [0; 4];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.len());
            }
        }
        let mut out = String::new();
        for row in &rows {
            for (column, cell) in row.iter().enumerate() {
                if column + 1 == row.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(&format!("{cell:<width$}  ", width = widths[column]));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// The ports shard `shard` of `shards` gets from `ports` in range mode, or
/// `None` when there are fewer ports than shards and this shard gets none.
/// The first `len % shards` shards get one port more than the others.
fn slice_of(ports: PortRange, shards: usize, shard: usize) -> Option<PortRange> {
    let (base, extra) = (ports.len() / shards, ports.len() % shards);
    let size = base + usize::from(shard < extra);
    if size == 0 {
        return None;
    }
    let start = shard * base + shard.min(extra);
    // Both offsets are below `ports.len()`, so they fit the range's u16 ports.
    let first = ports.first + u16::try_from(start).ok()?;
    let last = ports.first + u16::try_from(start + size - 1).ok()?;
    Some(PortRange { first, last })
}

/// The shard that [`slice_of`] gives the port at `offset` in a range of `len`
/// ports split over `shards` shards. Needs `offset < len` and `shards > 0`.
fn owner_of(len: usize, shards: usize, offset: usize) -> usize {
    let (base, extra) = (len / shards, len % shards);
    // The first `extra` shards hold `base + 1` ports each, the rest `base`.
    let wide = extra * (base + 1);
    if offset < wide {
        offset / (base + 1)
    } else {
        // Reached only when `base > 0`: with `base == 0`, `len == extra == wide`.
        extra + (offset - wide) / base
    }
}

fn too_few_ports(spec: &ListenerSpec, shards: usize) -> PlanError {
    // `shards > ports.len()` here, and a range holds at most 65535 ports.
    let span = u16::try_from(shards - 1).unwrap_or(u16::MAX);
    let suggested = match spec.ports.first.checked_add(span) {
        Some(last) => PortRange {
            first: spec.ports.first,
            last,
        },
        None => PortRange {
            first: (u16::MAX - span).max(1),
            last: u16::MAX,
        },
    };
    PlanError::TooFewPorts {
        listener: spec.to_string(),
        ports: spec.ports.len(),
        shards,
        suggested,
    }
}

/// Refuses two listeners that would bind the same transport, address and port.
/// An unspecified address (`0.0.0.0`, `::`) clashes with every address of its
/// family. IPv4 and IPv6 listeners are not compared: that holds only if the
/// engine binds IPv6 sockets with `IPV6_V6ONLY`, without which `[::]` would
/// take the IPv4 ports too.
fn check_overlaps(listeners: &[ListenerSpec]) -> Result<(), PlanError> {
    let group = |spec: &ListenerSpec| (spec.transport == Transport::Udp, spec.addr.is_ipv6());
    let mut order: Vec<usize> = (0..listeners.len()).collect();
    order.sort_by_key(|&i| (group(&listeners[i]), listeners[i].ports.first, i));

    for (pos, &a) in order.iter().enumerate() {
        let spec_a = &listeners[a];
        // Sorted by first port: once a later listener starts past `a`'s last
        // port, every one after it does too.
        for &b in &order[pos + 1..] {
            let spec_b = &listeners[b];
            if group(spec_b) != group(spec_a) || spec_b.ports.first > spec_a.ports.last {
                break;
            }
            if let Some(addrs) = shared_addrs(spec_a.addr, spec_b.addr) {
                let (first, second) = if a < b { (a, b) } else { (b, a) };
                return Err(PlanError::Overlap {
                    first: listeners[first].to_string(),
                    second: listeners[second].to_string(),
                    transport: spec_a.transport,
                    port: spec_b.ports.first,
                    addrs,
                });
            }
        }
    }
    Ok(())
}

/// How to name the address two same-family listeners share, if they share one.
fn shared_addrs(a: IpAddr, b: IpAddr) -> Option<String> {
    if a == b {
        Some(a.to_string())
    } else if a.is_unspecified() {
        Some(format!("{a}, which includes {b}"))
    } else if b.is_unspecified() {
        Some(format!("{b}, which includes {a}"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> ListenerSpec {
        s.parse().unwrap()
    }

    fn request(listeners: &[&str], shards: usize, cpus: &[usize]) -> PlanRequest {
        PlanRequest {
            listeners: listeners.iter().map(|s| spec(s)).collect(),
            shards,
            cpus: cpus.to_vec(),
            mode: Mode::Range,
            allow_idle_shards: false,
        }
    }

    fn build(listeners: &[&str], shards: usize, cpus: &[usize]) -> Result<Plan, PlanError> {
        Plan::build(request(listeners, shards, cpus))
    }

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    /// The ports of `listener` each shard binds (`None` for no binding).
    fn slices(plan: &Plan, listener: u16) -> Vec<Option<PortRange>> {
        plan.shards
            .iter()
            .map(|shard| {
                let mut found = shard.bindings.iter().filter(|b| b.listener.0 == listener);
                let ports = found.next().map(|b| b.ports);
                assert!(found.next().is_none(), "two bindings of one listener");
                ports
            })
            .collect()
    }

    #[test]
    fn mode_parses_and_prints() {
        assert_eq!("range".parse(), Ok(Mode::Range));
        assert_eq!("reuseport".parse(), Ok(Mode::Reuseport));
        assert_eq!(Mode::default(), Mode::Range);
        assert_eq!(Mode::Range.to_string(), "range");
        assert_eq!(Mode::Reuseport.to_string(), "reuseport");
        assert_eq!(
            "Range".parse::<Mode>().unwrap_err().to_string(),
            "unknown mode `Range`: use `range` (each shard owns a slice of every listener's \
             ports) or `reuseport` (every shard binds every port)"
        );
    }

    #[test]
    fn splits_64_ports_over_4_shards() {
        let plan = build(&["echo@tcp:127.0.0.1:9000-9063"], 4, &[0, 1, 2, 3]).unwrap();
        assert_eq!(plan.mode, Mode::Range);
        assert_eq!(
            slices(&plan, 0),
            vec![
                Some(range(9000, 9015)),
                Some(range(9016, 9031)),
                Some(range(9032, 9047)),
                Some(range(9048, 9063)),
            ]
        );
        assert_eq!(
            plan.shards.iter().map(|s| s.shard).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(plan.sockets_per_shard(), [16, 16, 16, 16]);
        assert_eq!(plan.total_sockets(), 64);
        assert_eq!(plan.idle_shards(), Vec::<usize>::new());
    }

    #[test]
    fn first_shards_take_the_extra_ports() {
        let plan = build(&["echo@tcp:127.0.0.1:9000-9009"], 4, &[0]).unwrap();
        assert_eq!(
            slices(&plan, 0),
            vec![
                Some(range(9000, 9002)),
                Some(range(9003, 9005)),
                Some(range(9006, 9007)),
                Some(range(9008, 9009)),
            ]
        );
        assert_eq!(plan.sockets_per_shard(), [3, 3, 2, 2]);

        let plan = build(&["echo@udp:127.0.0.1:1-65535"], 3, &[0]).unwrap();
        assert_eq!(
            slices(&plan, 0),
            vec![
                Some(range(1, 21845)),
                Some(range(21846, 43690)),
                Some(range(43691, 65535)),
            ]
        );
        let plan = build(&["echo@udp:127.0.0.1:9000"], 1, &[0]).unwrap();
        assert_eq!(slices(&plan, 0), vec![Some(range(9000, 9000))]);
    }

    #[test]
    fn shards_wrap_around_the_cpus() {
        let plan = build(&["echo@tcp:127.0.0.1:9000-9063"], 4, &[0, 1]).unwrap();
        assert_eq!(
            plan.shards.iter().map(|s| s.cpu).collect::<Vec<_>>(),
            [0, 1, 0, 1]
        );
        let plan = build(&["echo@tcp:127.0.0.1:9000-9063"], 5, &[6, 2, 4]).unwrap();
        assert_eq!(
            plan.shards.iter().map(|s| s.cpu).collect::<Vec<_>>(),
            [6, 2, 4, 6, 2]
        );
        let plan = build(&["echo@tcp:127.0.0.1:9000-9063"], 2, &[3, 4, 5]).unwrap();
        assert_eq!(
            plan.shards.iter().map(|s| s.cpu).collect::<Vec<_>>(),
            [3, 4]
        );
    }

    #[test]
    fn bindings_follow_listener_order() {
        let plan = build(
            &[
                "sockperf@udp:127.0.0.1:11111-11114",
                "echo@tcp:127.0.0.1:9000-9063",
            ],
            2,
            &[0, 1],
        )
        .unwrap();
        assert_eq!(
            plan.shards[1].bindings,
            vec![
                Binding {
                    listener: ListenerId(0),
                    ports: range(11113, 11114)
                },
                Binding {
                    listener: ListenerId(1),
                    ports: range(9032, 9063)
                },
            ]
        );
        assert_eq!(plan.sockets_per_shard(), [34, 34]);
        assert_eq!(plan.total_sockets(), 68);
    }

    #[test]
    fn reuseport_binds_every_port_on_every_shard() {
        let mut req = request(
            &[
                "echo@tcp:127.0.0.1:9000-9001",
                "sockperf@udp:127.0.0.1:11111",
            ],
            3,
            &[0, 1],
        );
        req.mode = Mode::Reuseport;
        let plan = Plan::build(req).unwrap();
        assert_eq!(plan.mode, Mode::Reuseport);
        assert_eq!(slices(&plan, 0), vec![Some(range(9000, 9001)); 3]);
        assert_eq!(slices(&plan, 1), vec![Some(range(11111, 11111)); 3]);
        assert_eq!(plan.sockets_per_shard(), [3, 3, 3]);
        assert_eq!(plan.total_sockets(), 9);
        assert_eq!(plan.owner(ListenerId(0), 9000), None);
        assert_eq!(plan.owner(ListenerId(1), 11111), None);
        assert_eq!(plan.idle_shards(), Vec::<usize>::new());
    }

    #[test]
    fn too_few_ports_is_an_error() {
        let e = build(
            &[
                "echo@tcp:127.0.0.1:9000-9063",
                "sockperf@udp:127.0.0.1:11111-11113",
            ],
            4,
            &[0, 1],
        )
        .unwrap_err();
        assert_eq!(
            e,
            PlanError::TooFewPorts {
                listener: "sockperf@udp:127.0.0.1:11111-11113".into(),
                ports: 3,
                shards: 4,
                suggested: range(11111, 11114),
            }
        );
        assert_eq!(
            e.to_string(),
            "listener `sockperf@udp:127.0.0.1:11111-11113` has 3 ports for 4 shards: range \
             mode gives every shard its own ports; give it at least 4 ports (e.g. \
             `11111-11114`), run at most 3 shards, use `--mode reuseport`, or let shards go \
             without ports of it with `--allow-idle-shards`"
        );
        assert_eq!(
            build(&["echo@tcp:127.0.0.1:65535"], 2, &[0])
                .unwrap_err()
                .to_string(),
            "listener `echo@tcp:127.0.0.1:65535` has 1 port for 2 shards: range mode gives \
             every shard its own ports; give it at least 2 ports (e.g. `65534-65535`), run \
             at most 1 shard, use `--mode reuseport`, or let shards go without ports of it \
             with `--allow-idle-shards`"
        );
        // Reuseport mode needs no split.
        let mut req = request(&["echo@tcp:127.0.0.1:9000"], 4, &[0]);
        req.mode = Mode::Reuseport;
        assert!(Plan::build(req).is_ok());
    }

    #[test]
    fn idle_shards_when_allowed() {
        let mut req = request(
            &[
                "sockperf@udp:127.0.0.1:11111-11112",
                "echo@tcp:127.0.0.1:9000-9002",
            ],
            4,
            &[0, 1],
        );
        req.allow_idle_shards = true;
        let plan = Plan::build(req).unwrap();
        assert_eq!(
            slices(&plan, 0),
            vec![
                Some(range(11111, 11111)),
                Some(range(11112, 11112)),
                None,
                None
            ]
        );
        assert_eq!(
            slices(&plan, 1),
            vec![
                Some(range(9000, 9000)),
                Some(range(9001, 9001)),
                Some(range(9002, 9002)),
                None
            ]
        );
        assert_eq!(plan.idle_shards(), [3]);
        assert_eq!(plan.sockets_per_shard(), [2, 2, 1, 0]);
        assert_eq!(plan.total_sockets(), 5);
        assert_eq!(plan.owner(ListenerId(0), 11112), Some(1));
        assert_eq!(plan.owner(ListenerId(1), 9002), Some(2));
    }

    #[test]
    fn owner_matches_the_bindings_at_every_port() {
        for (ports, shards) in [
            ("9000-9063", 4),
            ("9000-9009", 4),
            ("9000-9009", 3),
            ("9000", 1),
            ("9000-9002", 7),
            ("1-65535", 7),
            ("60000-60100", 1),
            ("100-199", 100),
        ] {
            let mut req = request(&[&format!("echo@tcp:127.0.0.1:{ports}")], shards, &[0]);
            req.allow_idle_shards = true;
            let plan = Plan::build(req).unwrap();
            let spec_ports = plan.listeners[0].ports;
            let mut seen = 0;
            for shard in &plan.shards {
                for binding in &shard.bindings {
                    for port in binding.ports.iter() {
                        assert_eq!(
                            plan.owner(binding.listener, port),
                            Some(shard.shard),
                            "{ports} over {shards}: port {port}"
                        );
                        seen += 1;
                    }
                }
            }
            assert_eq!(seen, spec_ports.len(), "{ports} over {shards}");
            if spec_ports.first > 1 {
                assert_eq!(plan.owner(ListenerId(0), spec_ports.first - 1), None);
            }
            if spec_ports.last < u16::MAX {
                assert_eq!(plan.owner(ListenerId(0), spec_ports.last + 1), None);
            }
            assert_eq!(plan.owner(ListenerId(1), spec_ports.first), None);
        }
    }

    #[test]
    fn owner_exact_values() {
        let plan = build(&["echo@tcp:127.0.0.1:9000-9009"], 4, &[0, 1]).unwrap();
        let owners: Vec<_> = (8999..=9010)
            .map(|p| plan.owner(ListenerId(0), p))
            .collect();
        assert_eq!(
            owners,
            [
                None,
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                Some(2),
                Some(2),
                Some(3),
                Some(3),
                None
            ]
        );
    }

    #[test]
    fn table_text() {
        let mut req = request(
            &[
                "echo@tcp:127.0.0.1:9000-9009",
                "sockperf@udp:127.0.0.1:11111-11112",
            ],
            4,
            &[0, 1],
        );
        req.allow_idle_shards = true;
        let plan = Plan::build(req).unwrap();
        assert_eq!(
            plan.table(),
            "\
shard  cpu  listener                            ports
0      0    echo@tcp:127.0.0.1:9000-9009        9000-9002
0      0    sockperf@udp:127.0.0.1:11111-11112  11111
1      1    echo@tcp:127.0.0.1:9000-9009        9003-9005
1      1    sockperf@udp:127.0.0.1:11111-11112  11112
2      0    echo@tcp:127.0.0.1:9000-9009        9006-9007
3      1    echo@tcp:127.0.0.1:9000-9009        9008-9009
"
        );

        let mut req = request(&["echo@tcp:[::1]:9000-9001"], 3, &[12]);
        req.allow_idle_shards = true;
        assert_eq!(
            Plan::build(req).unwrap().table(),
            "\
shard  cpu  listener                  ports
0      12   echo@tcp:[::1]:9000-9001  9000
1      12   echo@tcp:[::1]:9000-9001  9001
2      12   (idle)                    -
"
        );
    }

    #[test]
    fn rejects_overlaps_naming_both_listeners() {
        let e = build(
            &[
                "echo@tcp:127.0.0.1:9000-9063",
                "sockperf@udp:127.0.0.1:9000-9063",
                "relay@tcp:127.0.0.1:9060-9070",
            ],
            1,
            &[0],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "listeners `echo@tcp:127.0.0.1:9000-9063` and `relay@tcp:127.0.0.1:9060-9070` \
             overlap: both bind tcp port 9060 on 127.0.0.1; give them disjoint port ranges"
        );
        // Earlier listener named first even when its range starts later.
        assert_eq!(
            build(
                &["echo@udp:[::1]:9005", "echo@udp:[::1]:9000-9010"],
                1,
                &[0]
            )
            .unwrap_err(),
            PlanError::Overlap {
                first: "echo@udp:[::1]:9005".into(),
                second: "echo@udp:[::1]:9000-9010".into(),
                transport: Transport::Udp,
                port: 9005,
                addrs: "::1".into(),
            }
        );
        assert_eq!(
            build(
                &["echo@tcp:10.0.0.1:9000-9009", "echo@tcp:0.0.0.0:9009"],
                1,
                &[0]
            )
            .unwrap_err()
            .to_string(),
            "listeners `echo@tcp:10.0.0.1:9000-9009` and `echo@tcp:0.0.0.0:9009` overlap: \
             both bind tcp port 9009 on 0.0.0.0, which includes 10.0.0.1; give them \
             disjoint port ranges"
        );
        assert!(matches!(
            build(&["a@tcp:127.0.0.1:1", "a@tcp:127.0.0.1:1"], 1, &[0]),
            Err(PlanError::Overlap { port: 1, .. })
        ));
    }

    #[test]
    fn allows_same_ports_on_other_transport_address_or_family() {
        let plan = build(
            &[
                "echo@tcp:127.0.0.1:9000-9063",
                "echo@udp:127.0.0.1:9000-9063",
                "echo@tcp:127.0.0.2:9000-9063",
                "echo@tcp:[::]:9000-9063",
                "echo@tcp:127.0.0.1:9064",
            ],
            1,
            &[0],
        )
        .unwrap();
        assert_eq!(plan.total_sockets(), 64 * 4 + 1);
    }

    #[test]
    fn rejects_bad_requests() {
        assert_eq!(
            build(&["echo@tcp:127.0.0.1:9000"], 0, &[0])
                .unwrap_err()
                .to_string(),
            "0 shards requested: run at least one shard (`--shards 1`)"
        );
        assert_eq!(
            build(&["echo@tcp:127.0.0.1:9000"], 1, &[])
                .unwrap_err()
                .to_string(),
            "no CPUs to pin shards to: name at least one CPU, e.g. `--cpus 0-3`"
        );
        assert_eq!(
            build(&["echo@tcp:127.0.0.1:9000"], 1, &[2, 0, 2])
                .unwrap_err()
                .to_string(),
            "CPU 2 is listed twice: name each CPU once (more shards than CPUs wrap around \
             the list on their own)"
        );
        assert_eq!(
            build(&[], 1, &[0]).unwrap_err().to_string(),
            "no listeners: give at least one, e.g. `--listen echo@tcp:127.0.0.1:9000-9063`"
        );

        let mut req = request(&["echo@tcp:127.0.0.1:9000"], 1, &[0]);
        req.listeners[0].ports = range(0, 10);
        assert_eq!(
            Plan::build(req.clone()).unwrap_err().to_string(),
            "listener `echo@tcp:127.0.0.1:0-10`: port 0 is not allowed (it means \"any free \
             port\"): use 1 to 65535"
        );
        req.listeners[0].ports = range(10, 9);
        assert_eq!(
            Plan::build(req).unwrap_err(),
            PlanError::BadPorts {
                listener: "echo@tcp:127.0.0.1:10-9".into(),
                reason: PortRangeError::Reversed { first: 10, last: 9 }
            }
        );
    }

    #[test]
    fn too_many_listeners() {
        let one = spec("echo@tcp:127.0.0.1:9000");
        let req = PlanRequest {
            listeners: vec![one; 65537],
            shards: 1,
            cpus: vec![0],
            mode: Mode::Range,
            allow_idle_shards: false,
        };
        assert_eq!(
            Plan::build(req).unwrap_err().to_string(),
            "65537 listeners are more than a plan can number (65535); merge port ranges"
        );
    }
}
