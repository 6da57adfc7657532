//! `ringport doctor`: the engine's preflight checks
//! ([`ringport_engine::preflight`]) against the plan `serve` would run with
//! the same flags, printed one line per check or as JSON.

use std::io::Write;

use anyhow::Result;
use ringport_engine::plan::{Plan, PlanRequest};
use ringport_engine::preflight::{self, Check, Needs, Status};
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::config::Settings;

/// Runs the checks and prints them; returns whether none failed.
///
/// Errors are for flags or a config file that do not resolve into a plan
/// (as `serve` would refuse them); a machine that fails a check is not an
/// error.
pub fn run(args: &DoctorArgs) -> Result<bool> {
    let settings = crate::serve::settings(&args.serve)?;
    let facts = preflight::gather();
    let needs = needs(&settings, &facts.allowed_cpus)?;
    let checks = preflight::judge(&facts, &needs);
    let out = if args.json {
        json(&checks)
    } else {
        text(&checks)
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(out.as_bytes())?;
    stdout.flush()?;
    Ok(checks.iter().all(|c| c.status != Status::Fail))
}

/// The needs of the plan `serve` would build from `s`. Unlike `serve`, a
/// CPU list naming CPUs outside `allowed` is kept (the `cpus` check reports
/// it), so the other checks still see the plan.
fn needs(s: &Settings, allowed: &[usize]) -> Result<Needs> {
    let mut cpus = match &s.cpus {
        Some(list) => list.as_slice().to_vec(),
        None => allowed.to_vec(),
    };
    if cpus.is_empty() {
        // The affinity could not be read (the `cpus` check fails); count
        // the other needs as for one CPU.
        cpus.push(0);
    }
    let plan = Plan::build(PlanRequest {
        listeners: s.listeners.clone(),
        shards: s.shards.unwrap_or(cpus.len()),
        cpus,
        mode: s.mode,
        allow_idle_shards: s.allow_idle_shards,
    })?;
    Ok(Needs::new(&plan, &s.engine, s.cpus.as_ref()))
}

/// One line per check: status, name, detail, and the fix when not ok.
fn text(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4} {:<width$}  {}",
            c.status.as_str(),
            c.name,
            c.detail
        ));
        if let Some(fix) = &c.fix {
            out.push_str("; fix: ");
            out.push_str(fix);
        }
        out.push('\n');
    }
    out
}

/// One check in the JSON output, its keys in this order.
#[derive(Serialize)]
struct JsonCheck<'a> {
    check: &'a str,
    status: &'a str,
    detail: &'a str,
    fix: Option<&'a str>,
}

/// A JSON array of `{check, status, detail, fix}`.
fn json(checks: &[Check]) -> String {
    let list: Vec<JsonCheck<'_>> = checks
        .iter()
        .map(|c| JsonCheck {
            check: c.name,
            status: c.status.as_str(),
            detail: &c.detail,
            fix: c.fix.as_deref(),
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&list).expect("strings always serialize");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(flags: &[&str]) -> DoctorArgs {
        let mut all = vec!["ringport", "doctor"];
        all.extend_from_slice(flags);
        match Cli::try_parse_from(all).unwrap().command {
            Some(Command::Doctor(a)) => *a,
            _ => panic!("doctor"),
        }
    }

    fn checks() -> Vec<Check> {
        vec![
            Check {
                name: "kernel",
                status: Status::Ok,
                detail: "Linux 6.18".to_owned(),
                fix: None,
            },
            Check {
                name: "rmem_max",
                status: Status::Warn,
                detail: "too small".to_owned(),
                fix: Some("sysctl".to_owned()),
            },
            Check {
                name: "open_files",
                status: Status::Fail,
                detail: "too few".to_owned(),
                fix: Some("ulimit \"-n\"".to_owned()),
            },
        ]
    }

    #[test]
    fn text_is_one_line_per_check() {
        assert_eq!(
            text(&checks()),
            "ok   kernel      Linux 6.18\n\
             warn rmem_max    too small; fix: sysctl\n\
             fail open_files  too few; fix: ulimit \"-n\"\n"
        );
    }

    #[test]
    fn json_is_an_array_of_objects() {
        let text = json(&checks());
        assert!(
            text.starts_with(
                "[\n  {\n    \"check\": \"kernel\",\n    \"status\": \"ok\",\n    \"detail\""
            ),
            "{text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"check": "kernel", "status": "ok", "detail": "Linux 6.18", "fix": null},
                {"check": "rmem_max", "status": "warn", "detail": "too small", "fix": "sysctl"},
                {"check": "open_files", "status": "fail", "detail": "too few", "fix": "ulimit \"-n\""},
            ])
        );
    }

    #[test]
    fn needs_follow_the_serve_flags() {
        let a = args(&[]);
        assert!(!a.json);
        let s = crate::serve::settings(&a.serve).unwrap();
        // serve's defaults: four listeners of 64 ports, a shard per CPU.
        let n = needs(&s, &[0, 1]).unwrap();
        assert_eq!((n.shards, n.plan_cpus.clone()), (2, vec![0, 1]));
        assert_eq!((n.fds.listening, n.fds.needed), (256, 340));
        assert_eq!(n.cpus_asked, None);
        assert_eq!(n.udp_listeners, 2);

        let a = args(&[
            "--json",
            "--cpus",
            "3,5",
            "--listen",
            "echo@tcp:127.0.0.1:9000-9003",
            "--udp-rcvbuf",
            "1000",
            "--ring-entries",
            "64",
        ]);
        assert!(a.json);
        let s = crate::serve::settings(&a.serve).unwrap();
        // CPUs the process may not use stay in the plan for the `cpus` check.
        let n = needs(&s, &[0, 1]).unwrap();
        assert_eq!((n.shards, n.plan_cpus.clone()), (2, vec![3, 5]));
        assert_eq!(n.cpus_asked.unwrap().as_slice(), &[3, 5]);
        assert_eq!((n.fds.listening, n.udp_listeners), (4, 0));
        assert_eq!((n.udp_rcvbuf, n.ring_entries), (1000, 64));
        // An unreadable affinity still gives a plan.
        let s = crate::serve::settings(&args(&[]).serve).unwrap();
        assert_eq!(needs(&s, &[]).unwrap().shards, 1);
    }

    #[test]
    fn a_plan_serve_would_refuse_is_an_error() {
        let a = args(&["--listen", "echo@tcp:127.0.0.1:9000", "--shards", "2"]);
        let s = crate::serve::settings(&a.serve).unwrap();
        let e = needs(&s, &[0, 1]).unwrap_err().to_string();
        assert_eq!(
            e,
            "listener `echo@tcp:127.0.0.1:9000` has 1 port for 2 shards: range mode gives every \
             shard its own ports; give it at least 2 ports (e.g. `9000-9001`), run at most 1 \
             shard, use `--mode reuseport`, or let shards go without ports of it with \
             `--allow-idle-shards`"
        );
    }
}
