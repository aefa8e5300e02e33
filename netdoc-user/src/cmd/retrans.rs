//! `netdoc retrans`: the retransmit family in one session, a per-flow live view, and on exit an
//! account of every event and the MTU black-hole rule.
use std::{
    collections::HashMap,
    fmt::Write as _,
    io::{self, IsTerminal as _},
    time::Instant,
};

use anyhow::{Context as _, Result};
use netdoc_common::retrans::{FlowKey, RetransEvent};

use crate::{
    kernel::Kernel,
    output::{Output, RetransSummary, SCHEMA_VERSION, Summary},
    retrans::{
        self, RETRANS, RetransMaps, mtu,
        report::{FlowRow, NamedRetrans},
    },
    session::{
        Component, Namespaces, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::{Records, StreamOptions, Streamed as _},
    },
    text::printable,
};

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
            printable(&r.id.flow),
            printable(&r.state),
            r.retransmits + r.synacks,
            r.segments,
            r.rate,
            r.max_same_seq,
            r.max_segment,
            r.mss,
            pmtu,
            r.dev_mtu,
            r.id.netns_name
                .as_deref()
                .map_or(r.id.netns.to_string(), |n| printable(n).into_owned())
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

struct RetransView {
    json: bool,
    top: usize,
    hook: String,
    tty: bool,
    netns: Namespaces,
    previous: HashMap<FlowKey, u64>,
    last_tick: Instant,
    delivered: u64,
}

impl RetransView {
    /// Prints events in JSON mode.
    fn events(&mut self, events: &[RetransEvent], out: &mut Stdout) -> Result<()> {
        self.delivered += events.len() as u64;
        if !self.json || out.is_closed() {
            return Ok(());
        }
        let mut text = String::new();
        for ev in events {
            text += &Output::Retransmit(NamedRetrans::new(
                ev,
                self.netns.resolve(ev.netns, ev.netns_cookie, ev.ts_ns),
            ))
            .line();
        }
        Ok(out.write(&text)?)
    }
}

impl View for RetransView {
    fn records(&mut self, _: &Session, batch: Records, out: &mut Stdout) -> Result<()> {
        match batch.take::<RetransEvent>() {
            Ok(events) => self.events(&events, out),
            Err(_) => Ok(()),
        }
    }

    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()> {
        let Some(maps) = session.part::<RetransMaps>().filter(|_| !self.json) else {
            return Ok(());
        };
        let r = retrans::flow_rows(
            maps,
            &self.previous,
            self.last_tick.elapsed().as_secs_f64(),
            |n| self.netns.resolve(n, 0, u64::MAX),
        );
        self.previous = maps.flows().iter().map(|(k, s)| (*k, s.events)).collect();
        self.last_tick = Instant::now();
        Ok(out.line(&format!(
            "{}netdoc retrans via {} — {:.0}s\n{}",
            live::clear_screen(self.tty),
            self.hook,
            session.started.elapsed().as_secs_f64(),
            table(&r, self.top)
        ))?)
    }
}

pub async fn run(opts: StreamOptions, kernel: Kernel) -> Result<()> {
    let mut signals = Signals::install()?;
    opts.check()?;
    let families = Families::discover(&kernel);
    let streaming = !opts.counts_only;
    let request = Request {
        retrans_stream: streaming,
        pages: opts.pages,
        max_events_per_sec: opts.max_events_per_sec,
        ..Request::default()
    }
    .with(Component::Retransmits);
    let mut session = Session::start(kernel, families, request)?;
    let Some(hook) = session.hook(RETRANS) else {
        fail!(
            Unavailable,
            "{}",
            session
                .plan(RETRANS)
                .map(|p| p.failure())
                .unwrap_or_default()
        );
    };
    for p in session.degraded() {
        say!("degraded: {}", p.failure());
    }
    say!("attached {RETRANS} probe via {hook}; Ctrl-C to stop");
    let mut view = RetransView {
        json: opts.json,
        top: opts.top,
        hook: hook.clone(),
        tty: io::stdout().is_terminal(),
        netns: session.namespaces(),
        previous: HashMap::new(),
        last_tick: Instant::now(),
        delivered: 0,
    };
    let schedule = Schedule {
        interval: opts.interval,
        duration: opts.duration,
    };
    let mut ended = live::run(&mut session, &mut view, &mut signals, schedule).await?;

    let maps = session
        .part::<RetransMaps>()
        .context("the retransmit probe's maps")?;
    let stats = maps.stats();
    let flows = retrans::flow_rows(maps, &HashMap::new(), 0.0, |n| {
        view.netns.resolve(n, 0, u64::MAX)
    });
    let findings = mtu::black_holes(&flows);
    let delivered = view.delivered;
    let unknown_records = session.unknown_records(RetransEvent::STREAM);
    let summary = RetransSummary {
        schema_version: SCHEMA_VERSION,
        hook,
        duration_s: session.started.elapsed().as_secs_f64(),
        streaming,
        retransmits: flows.iter().map(|f| f.retransmits + f.synacks).sum(),
        segments: flows.iter().map(|f| f.segments).sum(),
        matched: stats.matched,
        delivered,
        lost: stats.lost,
        sampled: stats.sampled,
        unknown_records,
        aggregation_overflow: stats.aggregation_overflow,
        flows,
        findings,
        probes: session.probe_statuses(),
    };
    let text = if opts.json {
        Output::Summary(Summary::Retrans(summary)).line()
    } else {
        let mut t = format!(
            "netdoc retrans: {} retransmits ({} segments) in {:.1}s via {}\n{}",
            summary.retransmits,
            summary.segments,
            summary.duration_s,
            summary.hook,
            table(&summary.flows, usize::MAX)
        );
        if streaming {
            let _ = writeln!(
                t,
                "events: {} matched, {} delivered, {} lost, {} sampled, {} unknown records",
                stats.matched, delivered, stats.lost, stats.sampled, unknown_records
            );
        }
        for f in &summary.findings {
            t.push_str(&f.render());
        }
        t
    };
    ended.out.finish(&text)
}
