//! `netdoc retrans`: attach, stream retransmits, refresh a per-flow view, and on exit detach,
//! account for every event and apply the MTU black-hole rule.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use netdoc_common::retrans::{FlowKey, RetransEvent};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    RETRANS, RetransKernel, RetransMaps, mtu,
    report::{FlowRow, NamedRetrans},
};
use crate::{
    facts::{caps, netns::NetnsNames},
    finding::Finding,
    kernel::Kernel,
    loader::{self, Configs},
    stream::{Readers, StreamOptions},
};

pub struct RetransOptions {
    pub stream: StreamOptions,
    pub btf: PathBuf,
}

#[derive(Serialize)]
struct Summary<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    hook: String,
    duration_s: f64,
    streaming: bool,
    retransmits: u64,
    segments: u64,
    /// Every retransmit the probes saw: `delivered + lost` equals this when streaming.
    matched: u64,
    delivered: u64,
    lost: u64,
    unknown_records: u64,
    aggregation_overflow: u64,
    flows: &'a [FlowRow],
    findings: &'a [Finding],
}

fn rows(
    maps: &RetransMaps,
    previous: &HashMap<FlowKey, u64>,
    interval_s: f64,
    netns: &mut NetnsNames,
) -> Vec<FlowRow> {
    let mut rows: Vec<FlowRow> = maps
        .flows()
        .iter()
        .map(|(k, s)| {
            let before = previous.get(k).copied().unwrap_or(0);
            let rate = if interval_s > 0.0 {
                s.events.saturating_sub(before) as f64 / interval_s
            } else {
                0.0
            };
            FlowRow::new(k, s, netns.name(k.netns), rate)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.retransmits
            .cmp(&a.retransmits)
            .then(a.id.flow.cmp(&b.id.flow))
    });
    rows
}

fn table(rows: &[FlowRow], limit: usize) -> String {
    let mut out = format!(
        "{:<48} {:<12} {:>7} {:>6} {:>6} {:>7} {:>6} {:>5} {:>7} {:>6}  {}\n",
        "FLOW",
        "STATE",
        "RETRANS",
        "SEGS",
        "RATE/s",
        "SAMESEQ",
        "MAXSEG",
        "MSS",
        "PMTU",
        "DEVMTU",
        "NETNS"
    );
    for r in rows.iter().take(limit) {
        let pmtu = if r.path_mtu_min < r.path_mtu {
            format!("{}<{}", r.path_mtu_min, r.path_mtu)
        } else {
            r.path_mtu.to_string()
        };
        let _ = writeln!(
            out,
            "{:<48} {:<12} {:>7} {:>6} {:>6.1} {:>7} {:>6} {:>5} {:>7} {:>6}  {}",
            r.id.flow,
            r.state,
            r.retransmits + r.synacks,
            r.segments,
            r.rate,
            r.max_same_seq,
            r.max_segment,
            r.mss,
            pmtu,
            r.dev_mtu,
            r.id.netns_name
                .clone()
                .unwrap_or_else(|| r.id.netns.to_string())
        );
    }
    if rows.len() > limit {
        let _ = writeln!(out, "... {} more", rows.len() - limit);
    }
    if rows.is_empty() {
        out.push_str("(no retransmits yet)\n");
    }
    out
}

pub async fn run(opts: RetransOptions) -> Result<()> {
    caps::require_tracing()?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let host = Kernel::discover(&opts.btf);
    let family = RetransKernel::discover(&host);
    opts.stream.check()?;
    let streaming = !opts.stream.counts_only;
    let mut cfg = family.config;
    cfg.stream = streaming as u32;
    let mut ebpf = loader::load(&Configs {
        retrans: cfg,
        ..Configs::default()
    })?;
    let maps = RetransMaps::take(&mut ebpf)?;
    let mut readers = match streaming {
        true => Some(Readers::<RetransEvent>::open(
            ebpf.take_map("RETRANS_EVENTS")
                .context("RETRANS_EVENTS map")?,
            opts.stream.pages,
        )?),
        false => None,
    };
    let plans = family.attach(&mut ebpf, &host);
    let Some(chosen) = plans
        .iter()
        .find(|p| p.probe == RETRANS)
        .and_then(|p| p.chosen())
    else {
        bail!("{}", plans[0].failure());
    };
    let hook = chosen.hook.to_string();
    for p in plans.iter().filter(|p| p.chosen().is_none()) {
        eprintln!("netdoc: degraded: {}", p.failure());
    }
    eprintln!("netdoc: attached {RETRANS} probe via {hook}; Ctrl-C to stop");

    let mut netns = NetnsNames::new();
    let started = Instant::now();
    let deadline = opts
        .stream
        .duration
        .map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(opts.stream.interval);
    tick.tick().await;
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut previous: HashMap<FlowKey, u64> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut delivered = 0u64;
    loop {
        tokio::select! {
            Some(events) = async { readers.as_mut()?.rx.recv().await }, if readers.is_some() => {
                delivered += events.len() as u64;
                if !emit(&events, opts.stream.json, &mut netns, &mut out) {
                    break;
                }
            },
            _ = tick.tick(), if !opts.stream.json => {
                let r = rows(&maps, &previous, last_tick.elapsed().as_secs_f64(), &mut netns);
                previous = maps.flows().iter().map(|(k, s)| (*k, s.events)).collect();
                last_tick = Instant::now();
                let screen = if tty { "\x1b[2J\x1b[H" } else { "" };
                let head = format!("netdoc retrans via {hook} — {:.0}s", started.elapsed().as_secs_f64());
                if writeln!(out, "{screen}{head}\n{}", table(&r, opts.stream.top)).is_err() {
                    break;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    drop(ebpf); // detaches; then drain what is left
    let mut unknown_records = 0;
    if let Some(mut r) = readers {
        r.stop();
        while let Some(events) = r.rx.recv().await {
            delivered += events.len() as u64;
            emit(&events, opts.stream.json, &mut netns, &mut out);
        }
        unknown_records = r.totals().await?.decode.unknown;
    }
    let stats = maps.stats();
    let flows = rows(&maps, &HashMap::new(), 0.0, &mut netns);
    let findings = mtu::black_holes(&flows);
    let summary = Summary {
        kind: "summary",
        hook,
        duration_s: started.elapsed().as_secs_f64(),
        streaming,
        retransmits: flows.iter().map(|f| f.retransmits + f.synacks).sum(),
        segments: flows.iter().map(|f| f.segments).sum(),
        matched: stats.matched,
        delivered,
        lost: stats.lost,
        unknown_records,
        aggregation_overflow: stats.aggregation_overflow,
        flows: &flows,
        findings: &findings,
    };
    let text = if opts.stream.json {
        serde_json::to_string(&summary)? + "\n"
    } else {
        let mut t = format!(
            "netdoc retrans: {} retransmits ({} segments) in {:.1}s via {}\n{}",
            summary.retransmits,
            summary.segments,
            summary.duration_s,
            summary.hook,
            table(&flows, usize::MAX)
        );
        if streaming {
            let _ = writeln!(
                t,
                "events: {} matched, {} delivered, {} lost, {} unknown records",
                stats.matched, delivered, stats.lost, unknown_records
            );
        }
        for f in &findings {
            t.push_str(&f.render());
        }
        t
    };
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// Prints events in JSON mode. False once stdout is gone.
fn emit(
    events: &[RetransEvent],
    json: bool,
    netns: &mut NetnsNames,
    out: &mut impl std::io::Write,
) -> bool {
    if !json {
        return true;
    }
    for ev in events {
        let named = NamedRetrans::new(ev, netns.name(ev.netns));
        let line = serde_json::to_string(&named).unwrap_or_default();
        if writeln!(out, "{line}").is_err() {
            return false;
        }
    }
    out.flush().is_ok()
}
