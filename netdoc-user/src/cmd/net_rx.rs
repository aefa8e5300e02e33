//! The NET_RX observation `softirq`, `irq` and `doctor` share: samples of the softirq family's
//! maps and the kernel's own counters, and the NIC map joined from them.
use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use netdoc_common::softirq::NET_RX;

use crate::{
    drops::DropMaps,
    facts::{
        interrupts::{self, Interrupts},
        irqsys::IrqSys,
        procnet,
    },
    session::Session,
    softirq::{
        self, SoftirqMaps, VECTOR_NAMES, correlate,
        nicmap::{self, NicMap, QueueFacts},
        series::{self, CpuSummary, Sample},
    },
};

/// One reading of the softirq maps, softnet_stat, the drop counts per CPU and /proc/softirqs.
pub fn sample(session: &Session, vector: u32) -> Sample {
    let vector_name = VECTOR_NAMES[vector as usize];
    Sample {
        t_s: session.started.elapsed().as_secs_f64(),
        maps: session
            .part::<SoftirqMaps>()
            .map(|m| m.read())
            .unwrap_or_default(),
        softnet: procnet::read_softnet(),
        drops: session
            .part::<DropMaps>()
            .map(DropMaps::per_cpu)
            .unwrap_or_default(),
        proc_softirqs: procnet::read_softirqs()
            .remove(vector_name)
            .unwrap_or_default(),
    }
}

fn attached(session: &Session, probe: &str) -> bool {
    session.plan(probe).is_some_and(|p| p.chosen().is_some())
}

/// Queue IRQs of every NIC, with what procfs/sysfs say about them.
pub fn queue_facts(int: &Interrupts) -> Vec<QueueFacts> {
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
    if attached(session, softirq::IRQ) {
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
fn napi_delta(first: &Sample, last: &Sample) -> softirq::MapReading {
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

/// The NIC map between two samples, with each CPU's NET_RX share from `net_rx`.
pub fn nic_map(
    session: &Session,
    first: &Sample,
    last: &Sample,
    int_before: &Interrupts,
    int_after: &Interrupts,
    net_rx: &[CpuSummary],
) -> NicMap {
    let shares = net_rx.iter().map(|c| (c.cpu, c.share)).collect();
    nicmap::build(
        &queue_facts(int_after),
        &observed_irqs(session, first, last, int_before, int_after),
        &napi_delta(first, last),
        &shares,
        &session.cpus,
    )
}

/// NET_RX per CPU over the busiest stretch of a run: a saturation of a few seconds stays
/// visible in a long run, where the whole-run average would dilute it below any threshold.
/// Each tick computes only the per-CPU shares; the NIC queues (sysfs and procfs per IRQ) are
/// read for a stretch only when a CPU in it is saturated, or for the final report.
pub struct BusiestWindow {
    window: Duration,
    first: (Sample, Interrupts),
    /// Readings of the last `window`, oldest first; the last is the latest reading.
    recent: VecDeque<(Sample, Interrupts)>,
    /// The window whose busiest CPU had the highest share so far, and its two readings.
    peak: Option<(Measured, [(Sample, Interrupts); 2])>,
}

/// NET_RX over one stretch of the run.
#[derive(Clone)]
pub struct Measured {
    pub from_s: f64,
    pub to_s: f64,
    pub cpus: Vec<CpuSummary>,
    pub nic_map: NicMap,
}

fn busiest_share(cpus: &[CpuSummary]) -> f64 {
    cpus.iter().map(|c| c.share).fold(0.0, f64::max)
}

fn reading(session: &Session) -> (Sample, Interrupts) {
    (
        sample(session, NET_RX),
        Interrupts::read().unwrap_or_default(),
    )
}

/// The stretch from `a` to `b`, its NIC queues read when `queues` (else NAPI use only).
fn measure(
    session: &Session,
    a: &(Sample, Interrupts),
    b: &(Sample, Interrupts),
    cpus: Vec<CpuSummary>,
    queues: bool,
) -> Measured {
    let nic_map = match queues {
        true => nic_map(session, &a.0, &b.0, &a.1, &b.1, &cpus),
        false => {
            let shares = cpus.iter().map(|c| (c.cpu, c.share)).collect();
            let napi = napi_delta(&a.0, &b.0);
            nicmap::build(&[], &BTreeMap::new(), &napi, &shares, &session.cpus)
        }
    };
    Measured {
        from_s: a.0.t_s,
        to_s: b.0.t_s,
        cpus,
        nic_map,
    }
}

impl BusiestWindow {
    pub fn start(session: &Session, window: Duration) -> Self {
        let first = reading(session);
        Self {
            window,
            recent: VecDeque::from([first.clone()]),
            first,
            peak: None,
        }
    }

    /// A reading now; the window ending now replaces the peak when its busiest CPU is busier.
    pub fn sample(&mut self, session: &Session) {
        let now = reading(session);
        let horizon = now.0.t_s - self.window.as_secs_f64();
        while self.recent.len() > 1 && self.recent[1].0.t_s <= horizon {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        let (Some(oldest), Some(newest)) = (self.recent.front(), self.recent.back()) else {
            return;
        };
        // Only whole windows: a stretch shorter than the window is a sliver, not a measure.
        if newest.0.t_s - oldest.0.t_s < self.window.as_secs_f64() * 0.9 {
            return;
        }
        let cpus = series::summaries(&oldest.0, &newest.0, &session.cpus, NET_RX);
        let busier = self
            .peak
            .as_ref()
            .is_none_or(|(p, _)| busiest_share(&cpus) > busiest_share(&p.cpus));
        if busier {
            let saturated = busiest_share(&cpus) >= correlate::SATURATED;
            let m = measure(session, oldest, newest, cpus, saturated);
            self.peak = Some((m, [oldest.clone(), newest.clone()]));
        }
    }

    /// The busiest window, or the whole run up to the last reading when it is busier (or
    /// shorter than a window). `queues`: read the NIC queues even when no CPU is saturated
    /// (the final report shows them).
    pub fn busiest(&self, session: &Session, queues: bool) -> Measured {
        let last = self.recent.back().unwrap_or(&self.first);
        let whole = series::summaries(&self.first.0, &last.0, &session.cpus, NET_RX);
        match &self.peak {
            Some((p, [a, b])) if busiest_share(&p.cpus) > busiest_share(&whole) => {
                let saturated = busiest_share(&p.cpus) >= correlate::SATURATED;
                match queues && !saturated {
                    // Kept without its queues: read them for the report.
                    true => measure(session, a, b, p.cpus.clone(), true),
                    false => p.clone(),
                }
            }
            _ => {
                let saturated = busiest_share(&whole) >= correlate::SATURATED;
                measure(session, &self.first, last, whole, queues || saturated)
            }
        }
    }
}
