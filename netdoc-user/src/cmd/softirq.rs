//! `netdoc softirq` and `netdoc irq`: the softirq family (softirq time, IRQ and NAPI load) and
//! the drop family (counts only, as correlation evidence) in one session, sampled every
//! interval; then the heatmap, the NIC map and the findings.
use std::{collections::BTreeMap, io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use netdoc_common::softirq::NET_RX;

use super::{net_rx, pending::PendingFile};
use crate::{
    drops::filter::DropFilter,
    facts::{host, interrupts::Interrupts},
    kernel::Kernel,
    model::finding::Finding,
    output::{Output, SCHEMA_VERSION, SoftirqReport},
    session::{
        Component, DropUse, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::Records,
    },
    softirq::{
        self, VECTOR_NAMES, correlate, heatmap,
        nicmap::NicMap,
        series::{self, CpuSummary, Heatmap, Sample},
        svg,
    },
};

pub struct SoftirqOptions {
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub vector: u32,
    pub svg: Option<PathBuf>,
    pub json: bool,
    /// Heatmap columns shown live.
    pub width: usize,
}

/// Attaches the softirq family's four probes and the drop probe (counts only: correlation
/// evidence, the heatmap stands without it).
fn attach(kernel: Kernel) -> Result<Session> {
    let families = Families::discover(&kernel);
    let mut request = Request::default()
        .with(Component::NetRxContext)
        .with(Component::SoftirqTime)
        .with(Component::QueueLoad);
    request.want_drops(DropUse {
        filter: DropFilter::default(),
        stream: false,
        hook: None,
        per_netns: false,
        stacks: false,
    });
    let session = Session::start(kernel, families, request)?;
    if !session.net_rx_known {
        let failed: Vec<String> = session
            .degraded()
            .filter(|p| [softirq::ENTRY, softirq::EXIT].contains(&p.probe.as_ref()))
            .map(|p| p.failure())
            .collect();
        fail!(
            Unavailable,
            "softirq timing needs both softirq hooks: {}",
            failed.join("; ")
        );
    }
    for p in session.degraded() {
        say!("degraded: {}", p.failure());
    }
    Ok(session)
}

/// Each probe and the hook it attached through.
fn hooks(session: &Session) -> BTreeMap<String, String> {
    session
        .plans
        .iter()
        .map(|p| {
            (
                p.probe.to_string(),
                p.chosen()
                    .map_or("not attached".to_string(), |a| a.hook.to_string()),
            )
        })
        .collect()
}

/// Samples every tick; the live heatmap when asked.
struct SamplingView {
    vector: u32,
    samples: Vec<Sample>,
    /// Columns of the live heatmap; None when nothing is shown live.
    live_width: Option<usize>,
    tty: bool,
}

impl View for SamplingView {
    fn records(&mut self, _: &Session, _: Records, _: &mut Stdout) -> Result<()> {
        Ok(())
    }

    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()> {
        self.samples.push(net_rx::sample(session, self.vector));
        let Some(width) = self.live_width else {
            return Ok(());
        };
        let h = series::heatmap(&self.samples, &session.cpus, self.vector);
        Ok(out.line(&format!(
            "{}netdoc softirq — {:.0}s\n{}",
            live::clear_screen(self.tty),
            self.samples[self.samples.len() - 1].t_s,
            heatmap::render(&h, width, self.tty)
        ))?)
    }
}

/// Samples after `first` until the duration ends, a signal arrives or stdout closes.
async fn observe(
    session: &mut Session,
    signals: &mut Signals,
    mut view: SamplingView,
    schedule: Schedule,
) -> Result<(Vec<Sample>, Stdout)> {
    let interval = schedule.interval;
    let ended = live::run(session, &mut view, signals, schedule).await?;
    let mut samples = view.samples;
    // A stop just after a tick would leave a sliver of a bucket with a meaningless share:
    // fold it into the previous one.
    let last = net_rx::sample(session, view.vector);
    if samples.len() > 1 && last.t_s - samples[samples.len() - 1].t_s < interval.as_secs_f64() / 4.0
    {
        samples.pop();
    }
    samples.push(last);
    Ok((samples, ended.out))
}

struct Analysis {
    heatmap: Heatmap,
    summary: Vec<CpuSummary>,
    nic_map: NicMap,
    findings: Vec<Finding>,
}

fn analyse(
    session: &Session,
    samples: &[Sample],
    vector: u32,
    int_before: &Interrupts,
    int_after: &Interrupts,
) -> Analysis {
    let (first, last) = (&samples[0], &samples[samples.len() - 1]);
    let heatmap = series::heatmap(samples, &session.cpus, vector);
    let summary = series::summaries(first, last, &session.cpus, vector);
    let net_rx = series::summaries(first, last, &session.cpus, NET_RX);
    let nic_map = net_rx::nic_map(session, first, last, int_before, int_after, &net_rx);
    let findings = correlate::findings(&net_rx, &nic_map);
    Analysis {
        heatmap,
        summary,
        nic_map,
        findings,
    }
}

fn report(session: &Session, a: Analysis) -> SoftirqReport {
    SoftirqReport {
        schema_version: SCHEMA_VERSION,
        host: host::hostname(),
        kernel: host::kernel_release(),
        duration_s: session.started.elapsed().as_secs_f64(),
        probes: hooks(session),
        vector: a.heatmap.vector.to_string(),
        cpus: session.cpus.clone(),
        heatmap: a.heatmap,
        summary: a.summary,
        nic_map: a.nic_map,
        findings: a.findings,
    }
}

pub async fn softirq(opts: SoftirqOptions, kernel: Kernel) -> Result<()> {
    let mut signals = Signals::install()?;
    // Fail on an unwritable SVG path before tracing anything; the file itself appears only
    // once complete, so an interrupted run never leaves a truncated one.
    let svg_file = match &opts.svg {
        Some(p) => Some(PendingFile::create(p, "--svg")?),
        None => None,
    };
    let int_before = Interrupts::read().unwrap_or_default();
    let mut session = attach(kernel)?;
    let started_wall = wall_clock();
    let vector_name = VECTOR_NAMES[opts.vector as usize];
    // The baseline is read before announcing readiness, so nothing after it goes uncounted.
    let first = net_rx::sample(&session, opts.vector);
    say!(
        "attached softirq probes; sampling {vector_name} time on {} CPUs every {:?}; Ctrl-C to stop",
        session.cpus.len(),
        opts.interval
    );
    let tty = std::io::stdout().is_terminal();
    let view = SamplingView {
        vector: opts.vector,
        samples: vec![first],
        live_width: (!opts.json).then_some(opts.width),
        tty,
    };
    let schedule = Schedule {
        interval: opts.interval,
        duration: opts.duration,
    };
    let (samples, mut out) = observe(&mut session, &mut signals, view, schedule).await?;
    let int_after = Interrupts::read().unwrap_or_default();
    let a = analyse(&session, &samples, opts.vector, &int_before, &int_after);
    let rep = report(&session, a);
    if let Some(f) = svg_file {
        let titles = svg::Titles {
            host: &rep.host,
            kernel: &rep.kernel,
            started: &started_wall,
        };
        f.commit(svg::render(&rep.heatmap, &titles).as_bytes())?;
    }
    let text = if opts.json {
        Output::Softirq(rep).line()
    } else {
        let mut t = format!(
            "netdoc softirq: {:.1}s on {} (kernel {})\n{}\n{}",
            rep.duration_s,
            rep.host,
            rep.kernel,
            heatmap::render(&rep.heatmap, opts.width, tty),
            heatmap::summary_table(vector_name, &rep.summary)
        );
        for f in &rep.findings {
            t.push_str(&f.render());
        }
        t
    };
    out.finish(&text)
}

pub async fn irq(duration: Duration, json: bool, kernel: Kernel) -> Result<()> {
    let mut signals = Signals::install()?;
    let int_before = Interrupts::read().context("reading /proc/interrupts")?;
    let mut session = attach(kernel)?;
    let first = net_rx::sample(&session, NET_RX);
    say!("attached; observing IRQs, NAPI and NET_RX for {duration:?}");
    let view = SamplingView {
        vector: NET_RX,
        samples: vec![first],
        live_width: None,
        tty: false,
    };
    let schedule = Schedule {
        interval: duration,
        duration: Some(duration),
    };
    let (samples, mut out) = observe(&mut session, &mut signals, view, schedule).await?;
    let int_after = Interrupts::read().context("reading /proc/interrupts")?;
    let a = analyse(&session, &samples, NET_RX, &int_before, &int_after);
    let rep = report(&session, a);
    let text = if json {
        Output::Irq(rep).line()
    } else {
        let mut t = heatmap::nic_map(&rep.nic_map);
        for f in &rep.findings {
            t.push_str(&f.render());
        }
        t
    };
    out.finish(&text)
}

fn wall_clock() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
