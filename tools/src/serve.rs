//! `ringport serve` and `ringport check-config`: settings to plan, engine,
//! handshake log, admin endpoint, alerts, stats lines and the graceful drain.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use ringport_engine::alerts::{ListenerAlerts, Metric, RateTotals};
use ringport_engine::cpus::{self, CpuList};
use ringport_engine::log::{
    EventLine, LogOptions, LogTotals, LogWriter, Value, DEFAULT_FINISH_WAIT, DEFAULT_QUEUE_LEN,
};
use ringport_engine::plan::{Plan, PlanRequest};
use ringport_engine::spec::ListenerSpec;
use ringport_engine::stats::ShardStats;
use ringport_engine::tls::{HandshakeResult, ListenerTls};
use ringport_engine::{Counters, EngineHandle};
use ringport_plugin::Transport;

use crate::admin::{AdminServer, AdminStats, Handler};
use crate::cli::ServeArgs;
use crate::config::{FileConfig, LogTarget, Settings};
use crate::metrics::{self, ListenerView, Snapshot};
use crate::notices::{NoticeWriter, Notices};
use crate::signals;

/// How often alert baselines are sampled and the drain checks for open streams.
const TICK: Duration = Duration::from_secs(1);
/// How often a draining server looks whether every stream has finished.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Builds the plan: shards default to one per CPU in `cpus` (itself
/// defaulting to every CPU this process may run on).
fn build_plan(s: &Settings) -> Result<Plan> {
    let allowed = cpus::allowed_cpus().context("reading this process's CPU affinity")?;
    let cpu_list = match &s.cpus {
        Some(list) => {
            cpus::check_available(list, &allowed)?;
            list.clone()
        }
        None => CpuList::new(allowed.clone())?,
    };
    let shards = s.shards.unwrap_or(cpu_list.len());
    Ok(Plan::build(PlanRequest {
        listeners: s.listeners.clone(),
        shards,
        cpus: cpu_list.into_vec(),
        mode: s.mode,
        allow_idle_shards: s.allow_idle_shards,
    })?)
}

/// Settings from the flags and the `--config` file.
pub(crate) fn settings(args: &ServeArgs) -> Result<Settings> {
    let file = args.config.as_deref().map(FileConfig::load).transpose()?;
    Settings::resolve(args, file)
}

/// Lines describing each listener's policy, for check-config and start-up.
fn policy_lines(plan: &Plan, s: &Settings) -> Result<Vec<String>> {
    let adm = s.operations.admission(plan)?;
    let mut lines = Vec::new();
    for (i, (spec, a)) in plan.listeners.iter().zip(&adm).enumerate() {
        let l = s.operations.listener(i).limits;
        let nets: Vec<String> = a.allow.nets().iter().map(ToString::to_string).collect();
        let secs =
            |d: Option<Duration>| d.map_or("off".to_owned(), |d| format!("{}s", d.as_secs_f64()));
        let rate = l.conn_rate.map_or("off".to_owned(), |r| {
            format!("{}/s burst {}", r.per_sec, r.burst)
        });
        let source_alert = l.source_denial_alert.map_or("off".to_owned(), |a| {
            format!("over {} denials in {}s", a.limit, a.window.as_secs_f64())
        });
        let max_datagram = match (spec.transport, l.max_datagram) {
            (Transport::Udp, Some(max)) => format!("; max_datagram {max}"),
            (Transport::Udp, None) => format!("; max_datagram {}", s.engine.udp_max_datagram),
            (Transport::Tcp, _) => String::new(),
        };
        lines.push(format!(
            "{spec}: allow {}{}; max_conns {} per_source {} rate {rate}; first_bytes {} idle {} half_closed {}; source alert {source_alert}{max_datagram}",
            nets.join(","),
            if s.operations.dry_run { " (dry run)" } else { "" },
            l.max_conns,
            l.max_conns_per_source,
            secs(l.first_bytes_timeout),
            secs(l.idle_timeout),
            secs(l.half_closed_timeout),
        ));
        if a.allow.is_open() {
            lines.push(format!("warning: {spec} accepts every source address"));
        }
        if let Some(tls) = &s.operations.listener(i).tls {
            lines.extend(tls_lines(spec, tls, SystemTime::now()));
        }
    }
    Ok(lines)
}

/// Warn this long before a certificate expires.
const EXPIRY_WARNING_SECS: i64 = 30 * 86400;

/// What a `tls` listener serves: versions, certificate, client checks; and
/// a warning when the certificate expires within 30 days.
fn tls_lines(spec: &ListenerSpec, tls: &ListenerTls, now: SystemTime) -> Vec<String> {
    let loaded = tls.current();
    let st = tls.settings();
    let left = loaded.expires_in(now);
    let mut expiry = String::new();
    ringport_engine::log::rfc3339(
        &mut expiry,
        UNIX_EPOCH + Duration::from_secs(loaded.cert.not_after.max(0) as u64),
    );
    let clients = match &st.client_ca {
        None => "no client certificates".to_owned(),
        Some(ca) => format!(
            "client certificates required ({} CA(s) in {}), identities {}",
            loaded.client_cas,
            ca.display(),
            if st.allow_identities.is_empty() {
                "any".to_owned()
            } else {
                st.allow_identities
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ),
    };
    let mut lines = vec![format!(
        "{spec}: TLS {}+; certificate {} ({}; {} in chain; SHA-256 {}) expires {expiry}; {clients}",
        st.min_version,
        loaded.cert.subject,
        loaded.cert.sans().join(", "),
        loaded.chain_len,
        loaded.cert.fingerprint_hex(),
    )];
    if left < 0 {
        lines.push(format!(
            "warning: {spec}: the certificate {} expired {} day(s) ago ({expiry})",
            st.cert_chain.display(),
            -left / 86400
        ));
    } else if left < EXPIRY_WARNING_SECS {
        lines.push(format!(
            "warning: {spec}: the certificate {} expires in {} day(s) ({expiry}): renew it and send SIGHUP",
            st.cert_chain.display(),
            left / 86400
        ));
    }
    lines
}

/// `ringport check-config FILE`.
pub fn check_config(path: &Path) -> Result<()> {
    let file = FileConfig::load(path)?;
    let s = Settings::resolve(&ServeArgs::default(), Some(file))?;
    let plan = build_plan(&s)?;
    let policy = policy_lines(&plan, &s)?;
    println!(
        "{}: OK, mode {}, {} shard(s)",
        path.display(),
        plan.mode,
        plan.shards.len()
    );
    print!("{}", plan.table());
    for l in policy {
        println!("{l}");
    }
    if plan.listeners.iter().any(|l| l.protocol == "mqtt") {
        println!(
            "mqtt: lets in {}; persistence {}",
            s.mqtt.login,
            s.mqtt
                .persistence
                .as_ref()
                .map_or("off".to_owned(), |p| format!(
                    "{} (every {}s)",
                    p.display(),
                    s.mqtt.autosave.as_secs_f64()
                ))
        );
    }
    let log = match &s.log {
        None => "off".to_owned(),
        Some(LogTarget::Stderr) => "stderr".to_owned(),
        Some(LogTarget::File(f)) => f.clone(),
    };
    println!(
        "log {log} ({:?}), admin {}, drain timeout {}s",
        s.log_format,
        s.admin.map_or("off".to_owned(), |a| {
            let scheme = if s.admin_tls.is_some() {
                "https"
            } else {
                "http"
            };
            format!(
                "{scheme}://{a} (timeout {}s, at most {} connections)",
                s.admin_options.timeout.as_secs_f64(),
                s.admin_options.max_conns
            )
        }),
        s.drain_timeout.as_secs_f64()
    );
    Ok(())
}

/// What the admin endpoint reads.
struct Shared {
    engine: Arc<EngineHandle>,
    plan: Plan,
    names: Vec<String>,
    alerts: Mutex<Vec<[bool; Metric::COUNT]>>,
    log: Option<Arc<LogWriter>>,
    started: Instant,
    /// Per listener: its TLS, for `tls` listeners.
    tls: Vec<Option<Arc<ListenerTls>>>,
    admin: Arc<AdminStats>,
    /// The MQTT broker's counters, when an `mqtt` listener serves.
    mqtt: Option<Arc<ringport_protocols::mqtt::broker::MqttStats>>,
    /// The NATS bridges' settings (with their counters), every bridge of
    /// each bridged plugin.
    nats: Vec<(&'static str, Arc<ringport_protocols::nats::BridgeSettings>)>,
    /// The `mqtt` listeners: plan index and spec.
    mqtt_listeners: Vec<(u16, String)>,
}

impl Shared {
    fn snapshot(&self) -> Snapshot {
        let alerts = self.alerts.lock().map(|a| a.clone()).unwrap_or_default();
        let shards = self.engine.stats();
        Snapshot {
            mesh_depth: (0..shards.len())
                .map(|i| self.engine.mesh_depth(i))
                .collect(),
            shards,
            listeners: self
                .engine
                .listener_stats()
                .into_iter()
                .zip(&self.names)
                .enumerate()
                .map(|(i, (counters, name))| ListenerView {
                    name: name.clone(),
                    counters,
                    alerts: alerts.get(i).copied().unwrap_or_default(),
                    tls_expires_in: self
                        .tls
                        .get(i)
                        .and_then(Option::as_ref)
                        .map(|t| t.current().expires_in(SystemTime::now())),
                })
                .collect(),
            log_dropped: self.log.as_ref().map_or(0, |l| l.dropped()),
            log_lines_lost: self.log.as_ref().map_or(0, |l| l.lines_lost()),
            log_write_errors: self.log.as_ref().map_or(0, |l| l.write_errors()),
            admin: self.admin.snapshot(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            backend: self.engine.backend().as_str(),
            draining: self.engine.draining(),
            latencies: self.engine.latencies(),
        }
    }

    fn status(&self) -> String {
        let snap = self.snapshot();
        let shards: Vec<serde_json::Value> = self
            .plan
            .shards
            .iter()
            .zip(&snap.shards)
            .map(|(p, st)| {
                serde_json::json!({
                    "shard": p.shard,
                    "cpu": p.cpu,
                    "ports": p.bindings.iter().map(|b| serde_json::json!({
                        "listener": self.names[b.listener.0 as usize],
                        "ports": b.ports.to_string(),
                    })).collect::<Vec<_>>(),
                    "conns_open": st.counters.conns_open(),
                    "msgs": st.counters.msgs,
                    "conns_connected": st.counters.conns_connected,
                    "connect_failures": ringport_plugin::ConnectFailure::NAMES
                        .iter()
                        .zip(st.counters.connect_failures)
                        .map(|(name, n)| (name.to_string(), serde_json::Value::from(n)))
                        .collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        let listeners: Vec<serde_json::Value> = snap
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let tls = self.tls.get(i).and_then(Option::as_ref).map(|t| {
                    let loaded = t.current();
                    let ok = l.counters.tls_handshakes[HandshakeResult::Full as usize]
                        + l.counters.tls_handshakes[HandshakeResult::Resumed as usize];
                    serde_json::json!({
                        "certificate": loaded.cert.subject,
                        "sha256": loaded.cert.fingerprint_hex(),
                        "expires_in_s": loaded.expires_in(SystemTime::now()),
                        "mutual": t.mutual(),
                        "handshakes_ok": ok,
                        "handshakes_failed": l.counters.tls_handshakes_failed(),
                    })
                });
                serde_json::json!({
                    "listener": l.name,
                    "tls": tls,
                    "conns_open": l.counters.conns_open(),
                    "conns_accepted": l.counters.conns_accepted,
                    "denied": l.counters.denied_total(),
                    "alerts": Metric::ALL
                        .iter()
                        .filter(|m| l.alerts[**m as usize])
                        .map(|m| m.as_str())
                        .chain((l.counters.sources_alerting > 0).then_some(metrics::SOURCE_DENIALS))
                        .collect::<Vec<_>>(),
                })
            })
            .collect();
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "backend": self.engine.backend().as_str(),
            "mode": self.plan.mode.as_str(),
            "uptime_s": snap.uptime_secs,
            "draining": snap.draining,
            "shards": shards,
            "listeners": listeners,
            "mqtt": self
                .mqtt
                .as_deref()
                .map(|m| crate::mqtt::status_json(m, &self.mqtt_listeners)),
        })
        .to_string()
    }
}

fn log_event(
    log: &Option<Arc<LogWriter>>,
    event: &'static str,
    fields: Vec<(&'static str, Value)>,
) {
    if let Some(l) = log {
        l.event(EventLine { event, fields });
    }
}

/// `ringport serve`.
pub fn run(args: ServeArgs) -> Result<()> {
    let s = settings(&args)?;
    let plan = build_plan(&s)?;
    let policy = policy_lines(&plan, &s)?;
    let names: Vec<String> = plan.listeners.iter().map(ToString::to_string).collect();

    // Block SIGINT/SIGTERM before any thread exists, so that they all
    // inherit the mask and only the signal thread ever sees the signals.
    let signals = signals::Signals::block()?;
    let stderr =
        NoticeWriter::start(Box::new(std::io::stderr())).context("starting the stderr writer")?;
    let notices = stderr.notices();
    let log = match &s.log {
        None => None,
        Some(target) => {
            let out: Box<dyn Write + Send> = match target {
                LogTarget::Stderr => Box::new(std::io::stderr()),
                LogTarget::File(f) => Box::new(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(f)
                        .with_context(|| format!("opening the log file {f}"))?,
                ),
            };
            let told = notices.clone();
            let w = LogWriter::spawn_with(
                plan.shards.len(),
                DEFAULT_QUEUE_LEN,
                names.clone(),
                s.log_format,
                out,
                LogOptions {
                    notify: Box::new(move |m| told.say(m)),
                    ..LogOptions::default()
                },
            )
            .context("starting the log writer")?;
            Some(Arc::new(w))
        }
    };
    let serves_mqtt = plan.listeners.iter().any(|l| l.protocol == "mqtt");
    let mut mqtt = s.mqtt.factory(log.clone())?;
    let serves_relay = plan.listeners.iter().any(|l| l.protocol == "relay");
    let nats = {
        let told = notices.clone();
        crate::nats::with_notifier(&s.nats, Arc::new(move |m: String| told.say(m)))
    };
    if let Some(bridge) = &nats.mqtt {
        mqtt = Arc::new((*mqtt).clone().with_bridges(bridge.clone()));
    }
    let mut registry = ringport_plugin::Registry::new();
    ringport_protocols::register_builtins_bridged(
        &mut registry,
        &ringport_protocols::BuiltinSettings {
            max_frame: s.max_frame,
        },
        mqtt.clone(),
        nats.relay.clone(),
    )
    .context("registering the built-in plugins")?;
    let mut operations = s.operations.clone();
    operations.log = log
        .as_ref()
        .map(|w| (0..plan.shards.len()).map(|i| w.sink(i)).collect());
    let engine = Arc::new(EngineHandle::start_with(
        &plan,
        s.engine.clone(),
        &registry,
        operations,
    )?);
    for n in engine.notices() {
        notices.say(format!("note: {n}"));
    }
    for l in policy.iter().filter(|l| l.starts_with("warning:")) {
        notices.say(l.as_str());
    }
    println!(
        "ringport {} serving {} shard(s), mode {}, backend {}, kernel {}",
        env!("CARGO_PKG_VERSION"),
        engine.shard_count(),
        plan.mode,
        engine.backend().as_str(),
        engine.kernel()
    );
    print!("{}", plan.table());
    let idle = plan.idle_shards();
    if !idle.is_empty() {
        println!("idle shards (no ports): {idle:?}");
    }
    let persistence = match (&s.mqtt.persistence, serves_mqtt) {
        (Some(path), true) => {
            let told = notices.clone();
            Some(crate::mqtt::Persistence::start(
                mqtt.clone(),
                path.clone(),
                s.mqtt.autosave,
                move |m| told.say(m),
            ))
        }
        _ => None,
    };
    let bridged = match (serves_relay, serves_mqtt) {
        (true, true) => "relay and mqtt",
        (true, false) => "relay",
        (false, true) => "mqtt",
        (false, false) => "",
    };
    if let (false, Some(line)) = (bridged.is_empty(), nats.describe(bridged)) {
        println!("{line}");
    }
    if serves_mqtt {
        println!("mqtt: lets in {}", s.mqtt.login);
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        engine: engine.clone(),
        plan: plan.clone(),
        names: names.clone(),
        alerts: Mutex::new(vec![[false; Metric::COUNT]; names.len()]),
        log: log.clone(),
        started,
        tls: (0..plan.listeners.len())
            .map(|i| s.operations.listener(i).tls)
            .collect(),
        admin: Arc::default(),
        mqtt: serves_mqtt.then(|| mqtt.stats()),
        nats: nats
            .relay
            .iter()
            .filter(|_| serves_relay)
            .flat_map(|r| r.bridges().iter().map(|b| ("relay", b.clone())))
            .chain(
                nats.mqtt
                    .iter()
                    .filter(|_| serves_mqtt)
                    .flat_map(|r| r.bridges().iter().map(|b| ("mqtt", b.clone()))),
            )
            .collect(),
        mqtt_listeners: plan
            .listeners
            .iter()
            .enumerate()
            .filter(|(_, l)| l.protocol == "mqtt")
            .map(|(i, _)| (i as u16, names[i].clone()))
            .collect(),
    });
    let admin = match s.admin {
        Some(addr) => {
            let sh = shared.clone();
            let handler: Arc<Handler> = Arc::new(move |path: &str| match path {
                "/metrics" => Some(("text/plain; version=0.0.4; charset=utf-8", {
                    let mut text = metrics::render(&sh.snapshot());
                    if let Some(m) = &sh.mqtt {
                        crate::mqtt::render_metrics(m, &sh.mqtt_listeners, &mut text);
                    }
                    if !sh.nats.is_empty() {
                        let bridges: Vec<_> =
                            sh.nats.iter().map(|(p, s)| (*p, s.as_ref())).collect();
                        crate::nats::render_metrics(&bridges, &mut text);
                    }
                    text
                })),
                "/status" => Some(("application/json", sh.status())),
                _ => None,
            });
            let a = AdminServer::start(
                addr,
                s.admin_allow.clone(),
                handler,
                s.admin_tls.clone(),
                s.admin_options,
                shared.admin.clone(),
            )?;
            println!(
                "admin endpoint on {}://{}/metrics and /status",
                a.scheme(),
                a.addr()
            );
            Some(a)
        }
        None => None,
    };
    let _ = std::io::stdout().flush();

    let stopper = engine.stopper();
    let sig = signals.spawn_waiter(|_| {});
    let mut alerts: Vec<ListenerAlerts> = match s.alerts {
        Some(cfg) => names.iter().map(|_| ListenerAlerts::new(cfg)).collect(),
        None => Vec::new(),
    };
    let mut next_stats = s.stats_interval.map(|i| started + i);
    let mut last = engine.stats();
    let mut events = Vec::new();
    let mut sources_alerting = vec![0u64; names.len()];
    // A test failpoint (docs/SECURITY.md): a shard dies outside any plugin call.
    if let Some(n) = std::env::var("RINGPORT_FAILPOINT")
        .ok()
        .and_then(|f| f.strip_prefix("shard-panic:")?.parse().ok())
    {
        engine.poison_shard(n);
    }
    let mut died = None;
    // Serve until the first signal that stops, or a shard's death.
    let first = loop {
        match sig.recv_timeout(TICK) {
            Ok(signals::RELOAD) => {
                reload_tls(&plan.listeners, &s, &log, &notices);
                reload_admin_tls(admin.as_ref(), &log, &notices);
                continue;
            }
            Ok(signal) => break Some(signal),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break None,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(why) = engine.failure() {
            // Every shard has been stopped: never a half-alive server.
            notices.say(format!("{why}; every shard stopped, exiting"));
            log_event(
                &log,
                "shard_failed",
                vec![("reason", Value::Str(why.clone()))],
            );
            died = Some(why);
            break None;
        }
        let now = Instant::now();
        for (i, c) in engine.listener_stats().iter().enumerate() {
            let (was, is) = (sources_alerting[i], c.sources_alerting);
            if (was == 0) != (is == 0) {
                // The shards log each source; this is the listener's summary.
                let what = if is > 0 { "fired" } else { "cleared" };
                notices.say(format!(
                    "alert {what}: {} {}: {is} source(s) over the denial limit",
                    names[i],
                    metrics::SOURCE_DENIALS
                ));
            }
            sources_alerting[i] = is;
        }
        if !alerts.is_empty() {
            let stats = engine.listener_stats();
            let mut firing = Vec::with_capacity(alerts.len());
            for (i, (a, c)) in alerts.iter_mut().zip(&stats).enumerate() {
                let totals = RateTotals {
                    conns: c.conns_accepted + c.denied_total(),
                    datagrams: c.datagrams_in,
                    denials: c.denied_total(),
                    bytes: c.bytes_in + c.bytes_out,
                    handshake_failures: c.tls_handshakes_failed(),
                };
                events.clear();
                a.handle_sample(now, totals, &mut events);
                for e in &events {
                    let what = if e.firing { "fired" } else { "cleared" };
                    notices.say(format!(
                        "alert {what}: {} {} {:.1}/s (baseline {:.1}/s)",
                        names[i], e.metric, e.rate, e.baseline
                    ));
                    log_event(
                        &log,
                        "alert",
                        vec![
                            ("listener", Value::Str(names[i].clone())),
                            ("metric", Value::Str(e.metric.as_str().into())),
                            ("firing", Value::Bool(e.firing)),
                            ("rate", Value::Float(e.rate)),
                            ("baseline", Value::Float(e.baseline)),
                        ],
                    );
                }
                firing.push(Metric::ALL.map(|m| a.firing(m)));
            }
            if let Ok(mut g) = shared.alerts.lock() {
                *g = firing;
            }
        }
        if let (Some(at), Some(every)) = (next_stats, s.stats_interval) {
            if now >= at {
                let cur = engine.stats();
                print_interval(&last, &cur, every);
                last = cur;
                next_stats = Some(at + every);
            }
        }
    };

    // Drain: stop accepting, close UDP sockets, let streams finish.
    if let Some(signal) = first {
        let open = open_streams(&engine.stats());
        notices.say(format!(
            "{signal} received, draining {open} open connection(s) for up to {:.0}s (SIGINT again stops at once)",
            s.drain_timeout.as_secs_f64()
        ));
        log_event(
            &log,
            "drain_start",
            vec![
                ("signal", Value::Str(signal.into())),
                ("conns_open", Value::Uint(open)),
                (
                    "drain_timeout_s",
                    Value::Float(s.drain_timeout.as_secs_f64()),
                ),
            ],
        );
        stopper.drain();
        let deadline = Instant::now() + s.drain_timeout;
        loop {
            let open = open_streams(&engine.stats());
            if open == 0 {
                notices.say("every connection finished, stopping");
                break;
            }
            if Instant::now() >= deadline {
                notices.say(format!("drain timeout, closing {open} connection(s)"));
                break;
            }
            match sig.recv_timeout(DRAIN_POLL) {
                Ok(signals::RELOAD) => {
                    reload_tls(&plan.listeners, &s, &log, &notices);
                    reload_admin_tls(admin.as_ref(), &log, &notices);
                }
                Ok(again) => {
                    notices.say(format!("{again} received again, stopping now"));
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
    stopper.stop();
    drop(admin);
    drop(shared);
    let engine =
        Arc::try_unwrap(engine).map_err(|_| anyhow::anyhow!("the engine is still in use"))?;
    let listener_totals = engine.listener_stats();
    let finals = engine.join();
    let total = print_totals(&finals, started.elapsed());
    // The shards are gone: their last images are in the broker's snapshot.
    if let Some(p) = persistence {
        if let Err(e) = p.finish() {
            notices.say(format!("{e:#}"));
        }
    }
    // The broker holds the log writer (its events): let go of it first.
    drop(registry);
    drop(mqtt);
    let denied: u64 = listener_totals.iter().map(|c| c.denied_total()).sum();
    log_event(
        &log,
        "summary",
        vec![
            ("uptime_s", Value::Float(started.elapsed().as_secs_f64())),
            ("msgs", Value::Uint(total.msgs)),
            ("bytes_in", Value::Uint(total.bytes_in)),
            ("bytes_out", Value::Uint(total.bytes_out)),
            ("conns_accepted", Value::Uint(total.conns_accepted)),
            ("conns_closed", Value::Uint(total.conns_closed)),
            ("denied", Value::Uint(denied)),
            ("drops", Value::Uint(total.drops_total())),
        ],
    );
    if let Some(log) = log {
        match Arc::try_unwrap(log) {
            Ok(w) => {
                if let Some(l) = log_totals_line(&w.finish_within(DEFAULT_FINISH_WAIT)) {
                    println!("{l}");
                }
            }
            Err(w) => w.flush(),
        }
    }
    let unwritten = stderr.finish_within(Duration::from_secs(1));
    if unwritten > 0 {
        println!("stderr: {unwritten} line(s) not written (stderr blocked)");
    }
    match died {
        Some(why) => Err(anyhow::anyhow!("{why}")),
        None => Ok(()),
    }
}

/// What the exit says about the handshake log when not all of it was
/// written: on stdout, with the totals, because stderr may be the very
/// output that blocked.
fn log_totals_line(t: &LogTotals) -> Option<String> {
    if t.lost == 0 && t.not_written == 0 {
        return None;
    }
    let mut line = format!("log: {} line(s) written", t.written);
    if t.lost > 0 {
        line += &format!(", {} lost to {} write error(s)", t.lost, t.write_errors);
    }
    if t.not_written > 0 {
        line += &format!(
            ", {} not written: the log output blocked for {}s",
            t.not_written,
            DEFAULT_FINISH_WAIT.as_secs_f64()
        );
    }
    Some(line)
}

/// SIGHUP: every `tls` listener re-reads its certificate, key and client
/// CA. New handshakes use a good new set at once; open connections keep
/// theirs; a bad set is refused and the old one stays. Each listener's
/// outcome is printed and logged (`tls_reload`).
fn reload_tls(
    specs: &[ListenerSpec],
    s: &Settings,
    log: &Option<Arc<LogWriter>>,
    notices: &Notices,
) {
    for (i, spec) in specs.iter().enumerate() {
        let Some(tls) = s.operations.listener(i).tls else {
            continue;
        };
        let listener = ("listener", Value::Str(spec.to_string()));
        match tls.reload() {
            Ok(loaded) => {
                let mut expiry = String::new();
                ringport_engine::log::rfc3339(
                    &mut expiry,
                    UNIX_EPOCH + Duration::from_secs(loaded.cert.not_after.max(0) as u64),
                );
                notices.say(format!(
                    "SIGHUP: {spec}: new handshakes use the certificate {} (SHA-256 {}, expires {expiry})",
                    loaded.cert.subject,
                    loaded.cert.fingerprint_hex()
                ));
                for w in tls_lines(spec, &tls, SystemTime::now())
                    .iter()
                    .filter(|l| l.starts_with("warning:"))
                {
                    notices.say(w.as_str());
                }
                log_event(
                    log,
                    "tls_reload",
                    vec![
                        listener,
                        ("ok", Value::Bool(true)),
                        ("subject", Value::Str(loaded.cert.subject.clone())),
                        ("sha256", Value::Str(loaded.cert.fingerprint_hex())),
                        ("not_after", Value::Str(expiry)),
                    ],
                );
            }
            Err(e) => {
                notices.say(format!("SIGHUP: {spec}: keeping the old certificate: {e}"));
                log_event(
                    log,
                    "tls_reload",
                    vec![
                        listener,
                        ("ok", Value::Bool(false)),
                        ("error", Value::Str(e.to_string())),
                    ],
                );
            }
        }
    }
}

/// SIGHUP for the admin endpoint's certificate, when it serves HTTPS.
fn reload_admin_tls(admin: Option<&AdminServer>, log: &Option<Arc<LogWriter>>, notices: &Notices) {
    let Some(admin) = admin else { return };
    let listener = ("listener", Value::Str("admin".to_owned()));
    match admin.reload_tls() {
        Ok(None) => {}
        Ok(Some(leaf)) => {
            notices.say(format!(
                "SIGHUP: admin endpoint: new connections use the certificate {}",
                leaf.subject
            ));
            log_event(
                log,
                "tls_reload",
                vec![
                    listener,
                    ("ok", Value::Bool(true)),
                    ("subject", Value::Str(leaf.subject.clone())),
                    ("sha256", Value::Str(leaf.fingerprint_hex())),
                ],
            );
        }
        Err(e) => {
            notices.say(format!(
                "SIGHUP: admin endpoint: keeping the old certificate: {e:#}"
            ));
            log_event(
                log,
                "tls_reload",
                vec![
                    listener,
                    ("ok", Value::Bool(false)),
                    ("error", Value::Str(format!("{e:#}"))),
                ],
            );
        }
    }
}

fn open_streams(stats: &[ShardStats]) -> u64 {
    stats.iter().map(|s| s.counters.conns_open()).sum()
}

fn print_interval(prev: &[ShardStats], now: &[ShardStats], over: Duration) {
    let secs = over.as_secs_f64().max(1e-9);
    for (p, n) in prev.iter().zip(now) {
        let d = |a: u64, b: u64| b.saturating_sub(a);
        let (pc, nc) = (&p.counters, &n.counters);
        println!(
            "stats {} msgs/s {:.0} in {:.0} B/s out {:.0} B/s",
            n,
            d(pc.msgs, nc.msgs) as f64 / secs,
            d(pc.bytes_in, nc.bytes_in) as f64 / secs,
            d(pc.bytes_out, nc.bytes_out) as f64 / secs,
        );
    }
}

fn print_totals(finals: &[ShardStats], elapsed: Duration) -> Counters {
    let mut total = Counters::default();
    for s in finals {
        println!("final {s}");
        total.add(&s.counters);
    }
    let drops: Vec<String> = total
        .drop_list()
        .into_iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    println!(
        "total: msgs {} bytes_in {} bytes_out {} conns accepted {} closed {} drops {} [{}] uptime {:.1}s",
        total.msgs,
        total.bytes_in,
        total.bytes_out,
        total.conns_accepted,
        total.conns_closed,
        total.drops_total(),
        drops.join(" "),
        elapsed.as_secs_f64()
    );
    total
}
