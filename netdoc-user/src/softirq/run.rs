//! `netdoc softirq` and `netdoc irq`: attach the softirq/IRQ/NAPI probes and a counts-only drop
//! probe, sample every interval, then render the heatmap, the NIC map and the findings.
use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, util::online_cpus};
use netdoc_common::softirq::NET_RX;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    SoftirqKernel, SoftirqMaps, correlate, heatmap,
    nicmap::{self, NicMap, QueueFacts},
    series::{self, CpuSummary, Heatmap, Sample},
    svg,
};
use crate::{
    drops::{DropKernel, DropMaps},
    facts::{
        caps, host,
        interrupts::{self, Interrupts},
        irqsys::IrqSys,
        procnet,
    },
    finding::Finding,
    kernel::Kernel,
    loader::{self, Configs},
    planner::{self, ProbePlan},
};

pub struct SoftirqOptions {
    pub duration: Option<Duration>,
    pub interval: Duration,
    pub vector: u32,
    pub svg: Option<PathBuf>,
    pub json: bool,
    /// Heatmap columns shown live.
    pub width: usize,
    pub btf: PathBuf,
}

/// Everything attached for one run; dropping `ebpf` detaches.
struct Session {
    /// `None` once detached.
    ebpf: Option<Ebpf>,
    plans: Vec<ProbePlan>,
    maps: SoftirqMaps,
    drops: Option<DropMaps>,
    cpus: Vec<u32>,
    started: Instant,
}

impl Session {
    fn attach(btf: &std::path::Path) -> Result<Self> {
        let kernel = Kernel::discover(btf);
        let family = SoftirqKernel::discover(&kernel);
        let drop_kernel = DropKernel::discover(&kernel);
        let cfg = Configs {
            drops: drop_kernel.config(),
            softirq: family.config,
            ..Configs::default()
        };
        let mut ebpf = loader::load(&cfg)?;
        let maps = SoftirqMaps::take(&mut ebpf)?;
        let drops = DropMaps::take(&mut ebpf)?;
        let mut plans = family.attach(
            &mut ebpf,
            &kernel,
            &[super::ENTRY, super::EXIT, super::IRQ, super::NAPI],
        );
        if !super::timed(&plans) {
            let failed: Vec<String> = plans
                .iter()
                .filter(|p| p.chosen().is_none())
                .map(ProbePlan::failure)
                .collect();
            bail!(
                "softirq timing needs both softirq hooks: {}",
                failed.join("; ")
            );
        }
        // Drops are correlation evidence: without them the heatmap still stands.
        let drop_plan = planner::attach_best(
            &mut ebpf,
            crate::drops::PROBE,
            drop_kernel.candidates(),
            kernel.aya_btf.as_ref(),
        );
        let drops = drop_plan.chosen().is_some().then_some(drops);
        plans.push(drop_plan);
        for p in plans.iter().filter(|p| p.chosen().is_none()) {
            eprintln!("netdoc: degraded: {}", p.failure());
        }
        let cpus = online_cpus()
            .map_err(|(_, e)| e)
            .context("reading online CPUs")?;
        Ok(Self {
            ebpf: Some(ebpf),
            plans,
            maps,
            drops,
            cpus,
            started: Instant::now(),
        })
    }

    fn sample(&self, vector: u32) -> Sample {
        let vector_name = super::VECTOR_NAMES[vector as usize];
        Sample {
            t_s: self.started.elapsed().as_secs_f64(),
            maps: self.maps.read(),
            softnet: procnet::read_softnet(),
            drops: self
                .drops
                .as_ref()
                .map(DropMaps::per_cpu)
                .unwrap_or_default(),
            proc_softirqs: procnet::read_softirqs()
                .remove(vector_name)
                .unwrap_or_default(),
        }
    }

    fn hooks(&self) -> Vec<(&'static str, String)> {
        self.plans
            .iter()
            .map(|p| {
                (
                    p.probe,
                    p.chosen()
                        .map_or("not attached".to_string(), |a| a.hook.to_string()),
                )
            })
            .collect()
    }

    /// Releases every link (and waits for running programs); the maps stay readable.
    fn detach(&mut self) {
        self.ebpf = None;
    }

    fn attached(&self, probe: &str) -> bool {
        self.plans
            .iter()
            .any(|p| p.probe == probe && p.chosen().is_some())
    }
}

/// Samples after `first` until the duration ends or a signal arrives; `on_tick` sees every new
/// sample.
async fn observe(
    session: &Session,
    first: Sample,
    vector: u32,
    duration: Option<Duration>,
    interval: Duration,
    mut on_tick: impl FnMut(&[Sample]) -> bool,
) -> Result<Vec<Sample>> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = duration.map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    let mut samples = vec![first];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                samples.push(session.sample(vector));
                if !on_tick(&samples) {
                    break;
                }
            }
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    // A stop just after a tick would leave a sliver of a bucket with a meaningless share:
    // fold it into the previous one.
    let last = session.sample(vector);
    if samples.len() > 1 && last.t_s - samples[samples.len() - 1].t_s < interval.as_secs_f64() / 4.0
    {
        samples.pop();
    }
    samples.push(last);
    Ok(samples)
}

/// Queue IRQs of every NIC, with what procfs/sysfs say about them.
fn queue_facts(int: &Interrupts) -> Vec<QueueFacts> {
    let alias = interrupts::device_aliases(std::path::Path::new("/sys/class/net"));
    let sys = IrqSys::live();
    int.lines
        .iter()
        .filter_map(|l| {
            let handler = l.handlers.first()?;
            let queue = interrupts::nic_queue(handler, &alias)?;
            Some(QueueFacts {
                irq: l.irq,
                handler: handler.clone(),
                affinity: sys.affinity(l.irq),
                effective: sys.effective(l.irq),
                rps: sys.rps(&queue.device, queue.index),
                queue,
            })
        })
        .collect()
}

/// Handler runs per IRQ and CPU between two moments: from the probe when it ran, else from
/// `/proc/interrupts`.
fn observed_irqs(
    session: &Session,
    first: &Sample,
    last: &Sample,
    int_before: &Interrupts,
    int_after: &Interrupts,
) -> BTreeMap<u32, BTreeMap<u32, u64>> {
    if session.attached(super::IRQ) {
        return last
            .maps
            .irqs
            .iter()
            .map(|(irq, after)| {
                let before = first.maps.irqs.get(irq);
                let per_cpu = after
                    .iter()
                    .enumerate()
                    .map(|(cpu, n)| {
                        let b = before.and_then(|v| v.get(cpu)).copied().unwrap_or(0);
                        (cpu as u32, n.saturating_sub(b))
                    })
                    .collect();
                (*irq, per_cpu)
            })
            .collect();
    }
    int_after
        .lines
        .iter()
        .map(|l| {
            let before = int_before.per_cpu(l.irq);
            let per_cpu = int_after
                .per_cpu(l.irq)
                .into_iter()
                .map(|(cpu, n)| {
                    (
                        cpu,
                        n.saturating_sub(before.get(&cpu).copied().unwrap_or(0)),
                    )
                })
                .collect();
            (l.irq, per_cpu)
        })
        .collect()
}

/// The NAPI counters accumulated between two readings.
fn napi_delta(first: &Sample, last: &Sample) -> super::MapReading {
    // Entries are created on first poll and never reset, so the last reading minus the first
    // per (entry, CPU) is the window; entries new since the first reading count whole.
    let mut reading = last.maps.clone();
    for (i, per_cpu) in reading.napi.iter_mut().enumerate() {
        if let Some(before) = first.maps.napi.get(i)
            && before
                .iter()
                .map(|s| s.dev)
                .eq(per_cpu.iter().map(|s| s.dev))
        {
            for (s, b) in per_cpu.iter_mut().zip(before) {
                s.polls = s.polls.saturating_sub(b.polls);
                s.work = s.work.saturating_sub(b.work);
                s.budget_exhausted = s.budget_exhausted.saturating_sub(b.budget_exhausted);
            }
        }
    }
    reading
}

#[derive(Serialize)]
struct Report<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    host: String,
    kernel: String,
    duration_s: f64,
    probes: BTreeMap<&'static str, String>,
    vector: &'static str,
    cpus: &'a [u32],
    heatmap: &'a Heatmap,
    summary: &'a [CpuSummary],
    nic_map: &'a NicMap,
    findings: &'a [Finding],
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
    let shares = net_rx.iter().map(|c| (c.cpu, c.share)).collect();
    let nic_map = nicmap::build(
        &queue_facts(int_after),
        &observed_irqs(session, first, last, int_before, int_after),
        &napi_delta(first, last),
        &shares,
        &session.cpus,
    );
    let findings = correlate::findings(&net_rx, &nic_map);
    Analysis {
        heatmap,
        summary,
        nic_map,
        findings,
    }
}

fn report<'a>(session: &'a Session, a: &'a Analysis, kind: &'static str) -> Report<'a> {
    Report {
        kind,
        host: host::hostname(),
        kernel: host::kernel_release(),
        duration_s: session.started.elapsed().as_secs_f64(),
        probes: session.hooks().into_iter().collect(),
        vector: a.heatmap.vector,
        cpus: &session.cpus,
        heatmap: &a.heatmap,
        summary: &a.summary,
        nic_map: &a.nic_map,
        findings: &a.findings,
    }
}

pub async fn softirq(opts: SoftirqOptions) -> Result<()> {
    caps::require_tracing()?;
    // Fail on an unwritable SVG path before tracing anything.
    let mut svg_file = match &opts.svg {
        Some(p) => Some(
            std::fs::File::create(p)
                .with_context(|| format!("cannot write --svg {}", p.display()))?,
        ),
        None => None,
    };
    let int_before = Interrupts::read().unwrap_or_default();
    let mut session = Session::attach(&opts.btf)?;
    let started_wall = wall_clock();
    let vector_name = super::VECTOR_NAMES[opts.vector as usize];
    // The baseline is read before announcing readiness, so nothing after it goes uncounted.
    let first = session.sample(opts.vector);
    eprintln!(
        "netdoc: attached softirq probes; sampling {vector_name} time on {} CPUs every {:?}; Ctrl-C to stop",
        session.cpus.len(),
        opts.interval
    );
    let tty = std::io::stdout().is_terminal();
    let live = !opts.json;
    let samples = observe(
        &session,
        first,
        opts.vector,
        opts.duration,
        opts.interval,
        |s| {
            if !live {
                return true;
            }
            let h = series::heatmap(s, &session.cpus, opts.vector);
            let screen = if tty { "\x1b[2J\x1b[H" } else { "" };
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{screen}netdoc softirq — {:.0}s\n{}",
                s[s.len() - 1].t_s,
                heatmap::render(&h, opts.width, tty)
            )
            .is_ok()
        },
    )
    .await?;
    session.detach();
    let int_after = Interrupts::read().unwrap_or_default();
    let a = analyse(&session, &samples, opts.vector, &int_before, &int_after);
    let rep = report(&session, &a, "softirq");
    if let Some(f) = svg_file.as_mut() {
        let titles = svg::Titles {
            host: &rep.host,
            kernel: &rep.kernel,
            started: &started_wall,
        };
        f.write_all(svg::render(&a.heatmap, &titles).as_bytes())
            .context("writing the SVG")?;
    }
    let mut out = std::io::stdout().lock();
    let text = if opts.json {
        serde_json::to_string(&rep)? + "\n"
    } else {
        let mut t = format!(
            "netdoc softirq: {:.1}s on {} (kernel {})\n{}\n{}",
            rep.duration_s,
            rep.host,
            rep.kernel,
            heatmap::render(&a.heatmap, opts.width, tty),
            heatmap::summary_table(vector_name, &a.summary)
        );
        for f in &a.findings {
            t.push_str(&f.render());
        }
        t
    };
    let _ = out.write_all(text.as_bytes());
    Ok(())
}

pub async fn irq(duration: Duration, json: bool, btf: PathBuf) -> Result<()> {
    caps::require_tracing()?;
    let int_before = Interrupts::read().context("reading /proc/interrupts")?;
    let mut session = Session::attach(&btf)?;
    let first = session.sample(NET_RX);
    eprintln!("netdoc: attached; observing IRQs, NAPI and NET_RX for {duration:?}");
    let samples = observe(&session, first, NET_RX, Some(duration), duration, |_| true).await?;
    session.detach();
    let int_after = Interrupts::read().context("reading /proc/interrupts")?;
    let a = analyse(&session, &samples, NET_RX, &int_before, &int_after);
    let rep = report(&session, &a, "irq");
    let text = if json {
        serde_json::to_string(&rep)? + "\n"
    } else {
        let mut t = heatmap::nic_map(&a.nic_map);
        for f in &a.findings {
            t.push_str(&f.render());
        }
        t
    };
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(())
}

fn wall_clock() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}
