//! `netdoc conntrack`: per-CPU conntrack counter deltas and table usage, live and at the end,
//! with what they attribute drops to.
use std::{fmt::Write as _, io::Write as _, time::Duration};

use anyhow::Result;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Attribution, attribute,
    confirm::{self, ConfirmProbe, InsertFailure},
    deltas, findings, snapshot,
    stage::Cause,
    staged::{CauseCounts, StageProbe},
};
use crate::{
    drops::report::NamedDrop,
    facts::{conntrack::CpuCounters, netns},
    finding::Finding,
    kernel::Kernel,
};

/// Columns worth watching, in display order.
const COLUMNS: [&str; 6] = [
    "insert_failed",
    "drop",
    "early_drop",
    "clash_resolve",
    "invalid",
    "search_restart",
];

#[derive(Serialize)]
struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    netns: Option<&'a str>,
    duration_s: f64,
    nf_conntrack_count: Option<u64>,
    nf_conntrack_max: Option<u64>,
    per_cpu: &'a [CpuCounters],
    attribution: &'a Attribution,
    /// The function hook on `__nf_conntrack_confirm`, when one attached.
    confirm_hook: Option<&'a str>,
    /// Why no function hook attached (the counters are then the only conntrack evidence).
    confirm_degraded: Option<&'a str>,
    /// Insertion-failure events delivered, and lost (buffer full or a missed kprobe entry).
    insert_failure_events: u64,
    insert_failure_events_lost: u64,
    /// Without a function hook: the stage sentinels that name each `NETFILTER_DROP`'s cause,
    /// or why they could not attach.
    stage_probe: Option<&'a str>,
    stage_degraded: Option<&'a str>,
    /// `NETFILTER_DROP`s per cause (from the kernel's counts), and the conntrack-caused drop
    /// events delivered and lost.
    netfilter_causes: &'a CauseCounts,
    conntrack_drop_events: u64,
    conntrack_drop_events_lost: u64,
    findings: &'a [Finding],
}

/// Prints a drop conntrack caused (firewall drops are only counted); true if printed.
fn print_drop(
    d: &NamedDrop,
    only_netns: Option<u32>,
    json: bool,
    out: &mut impl std::io::Write,
) -> bool {
    let ours = matches!(d.cause, Some(Cause::ConntrackConfirm | Cause::ConntrackIn));
    if !ours || only_netns.is_some_and(|n| n != d.netns) {
        return false;
    }
    let line = if json {
        serde_json::to_string(d).unwrap_or_default()
    } else {
        let cause = d.cause.map_or("", Cause::describe);
        format!("conntrack drop ({cause}): {} on CPU {}", d.flow(), d.cpu)
    };
    writeln!(out, "{line}").is_ok()
}

/// Prints insertion failures of the watched namespace; returns how many were printed.
fn print_failures(
    batch: Vec<netdoc_common::conntrack::InsertFailEvent>,
    only_netns: Option<u32>,
    json: bool,
    out: &mut impl std::io::Write,
) -> u64 {
    let mut shown = 0;
    for f in batch.iter().map(confirm::decode) {
        if only_netns.is_some_and(|n| n != f.netns) {
            continue;
        }
        shown += 1;
        let _ = writeln!(out, "{}", failure_line(&f, json));
    }
    shown
}

fn failure_line(f: &InsertFailure, json: bool) -> String {
    if json {
        return serde_json::to_string(f).unwrap_or_default();
    }
    format!(
        "insert failed: {} {} (reply {}) on CPU {}, zone {}, netns {}",
        f.proto, f.original, f.reply, f.cpu, f.zone, f.netns
    )
}

fn table(d: &[CpuCounters], usage: Option<(u64, u64)>) -> String {
    let mut out = format!("{:<5}", "CPU");
    for c in COLUMNS {
        let _ = write!(out, " {c:>14}");
    }
    out.push('\n');
    for (cpu, row) in d.iter().enumerate() {
        let _ = write!(out, "{cpu:<5}");
        for c in COLUMNS {
            match row.get(c) {
                Some(v) => {
                    let _ = write!(out, " {v:>14}");
                }
                None => {
                    let _ = write!(out, " {:>14}", "-");
                }
            }
        }
        out.push('\n');
    }
    if let Some((count, max)) = usage {
        let _ = writeln!(
            out,
            "entries: {count} of {max} ({:.1}%)",
            count as f64 * 100.0 / max.max(1) as f64
        );
    }
    out
}

pub async fn run(
    netns: Option<String>,
    duration: Option<Duration>,
    interval: Duration,
    json: bool,
    btf: &std::path::Path,
) -> Result<()> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let ns = netns.as_deref();
    let first = snapshot(ns)?;
    let only_netns = ns.and_then(netns::resolve_arg);
    let kernel = Kernel::discover(btf);
    let mut probe = ConfirmProbe::start(&kernel);
    // Without a function hook, layer (b) names the cause of each NETFILTER_DROP instead.
    let mut staged = match &probe {
        Ok(p) => {
            eprintln!("netdoc: attached {} probe via {}", confirm::PROBE, p.hook);
            None
        }
        Err(why) => {
            let staged = StageProbe::start(&kernel, ns);
            match &staged {
                Ok(s) => eprintln!("netdoc: no function hook ({why}); using {}", s.describe()),
                Err(e) => eprintln!("netdoc: degraded: {why}; and {e}; conntrack counters only"),
            }
            Some(staged)
        }
    };
    let stage_probe = staged
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .map(StageProbe::describe);
    let mut drop_events = 0u64;
    eprintln!(
        "netdoc: attached to the conntrack counters of {}; Ctrl-C to stop",
        ns.unwrap_or("this namespace")
    );
    let mut events = 0u64;
    let started = std::time::Instant::now();
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            Some(batch) = async { probe.as_mut().ok()?.readers.rx.recv().await }, if probe.is_ok() => {
                events += print_failures(batch, only_netns, json, &mut out);
            },
            Some(batch) = async { staged.as_mut()?.as_mut().ok()?.readers.rx.recv().await }, if matches!(staged, Some(Ok(_))) => {
                let Some(Ok(s)) = staged.as_mut() else { continue };
                for ev in &batch {
                    drop_events += print_drop(&s.name(ev), only_netns, json, &mut out) as u64;
                }
            },
            _ = tick.tick(), if !json => {
                let now = snapshot(ns)?;
                let text = format!("netdoc conntrack — {:.0}s, counts since start\n{}", started.elapsed().as_secs_f64(), table(&deltas(&first, &now), now.usage));
                if writeln!(out, "{text}").is_err() {
                    break;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    let (hook, degraded, lost) = match probe {
        Ok(p) => {
            let hook = p.hook.clone();
            let lost = p
                .finish(|batch| events += print_failures(batch, only_netns, json, &mut out))
                .await;
            (Some(hook), None, lost)
        }
        Err(why) => (None, Some(why), 0),
    };
    let (causes, drops_lost, stage_degraded) = match staged {
        Some(Ok(s)) => {
            let (c, lost) = s
                .finish(|d| drop_events += print_drop(&d, only_netns, json, &mut out) as u64)
                .await;
            (c, lost, None)
        }
        Some(Err(why)) => (CauseCounts::new(), 0, Some(why)),
        None => (CauseCounts::new(), 0, None),
    };
    let last = snapshot(ns)?;
    let d = deltas(&first, &last);
    let a = attribute(&d);
    let f = findings(&a, last.usage, &d);
    let text = if json {
        serde_json::to_string(&Summary {
            kind: "summary",
            netns: ns,
            duration_s: started.elapsed().as_secs_f64(),
            nf_conntrack_count: last.usage.map(|u| u.0),
            nf_conntrack_max: last.usage.map(|u| u.1),
            per_cpu: &d,
            attribution: &a,
            confirm_hook: hook.as_deref(),
            confirm_degraded: degraded.as_deref(),
            insert_failure_events: events,
            insert_failure_events_lost: lost,
            stage_probe: stage_probe.as_deref(),
            stage_degraded: stage_degraded.as_deref(),
            netfilter_causes: &causes,
            conntrack_drop_events: drop_events,
            conntrack_drop_events_lost: drops_lost,
            findings: &f,
        })? + "\n"
    } else {
        let mut t = format!(
            "netdoc conntrack: {:.1}s\n{}",
            started.elapsed().as_secs_f64(),
            table(&d, last.usage)
        );
        let _ = writeln!(
            t,
            "conntrack drops: {} table full, {} insert failed; any other NETFILTER_DROP at nf_hook_slow is a firewall rule",
            a.table_full, a.insert_failed
        );
        match (&hook, &degraded) {
            (Some(h), _) => {
                let _ = writeln!(t, "insertion failures seen at {h}: {events} (lost {lost})");
            }
            (None, Some(why)) => {
                let _ = writeln!(t, "no function hook on __nf_conntrack_confirm: {why}");
            }
            _ => {}
        }
        match (&stage_probe, &stage_degraded) {
            (Some(p), _) => {
                let causes: Vec<String> = causes
                    .iter()
                    .map(|(c, n)| format!("{n} {}", c.describe()))
                    .collect();
                let _ = writeln!(
                    t,
                    "NETFILTER_DROP causes via {p}: {} (conntrack drop events {drop_events}, lost {drops_lost})",
                    if causes.is_empty() {
                        "none".to_string()
                    } else {
                        causes.join(", ")
                    }
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(t, "NETFILTER_DROP causes unknown: {why}");
            }
            _ => {}
        }
        for x in &f {
            t.push_str(&x.render());
        }
        t
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}
