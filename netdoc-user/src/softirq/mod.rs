//! The softirq/IRQ probe family: softirq run time per CPU and vector, hardirq counts per CPU,
//! NAPI polls per CPU and device; and, in userspace, the NIC queue map and the correlation of
//! drops with NET_RX load.
pub mod correlate;
pub mod heatmap;
pub mod nicmap;
pub mod series;
pub mod svg;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray, PerCpuHashMap},
};
use netdoc_common::{
    NO_OFFSET,
    softirq::{NapiStats, SoftirqConfig, SoftirqTime, VECTORS},
};

use crate::{
    family::Family,
    kernel::Kernel,
    loader::ObjectSettings,
    planner::{self, Candidate},
    session::{Component, Request, starting::Starting},
};

pub const ENTRY: &str = "softirq_entry";
pub const EXIT: &str = "softirq_exit";
pub const IRQ: &str = "irq_handler";
pub const NAPI: &str = "napi_poll";

/// Vector names in `NR_SOFTIRQS` order, as `/proc/softirqs` prints them.
pub const VECTOR_NAMES: [&str; VECTORS as usize] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// A softirq vector as `--vector` takes it, in `NR_SOFTIRQS` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Vector {
    Hi,
    Timer,
    NetTx,
    NetRx,
    Block,
    IrqPoll,
    Tasklet,
    Sched,
    Hrtimer,
    Rcu,
}

impl Vector {
    /// The kernel's vector number.
    pub fn number(self) -> u32 {
        self as u32
    }
}

/// What the running kernel offers these probes.
pub struct SoftirqKernel {
    pub probes: Vec<(&'static str, Vec<Candidate>)>,
    pub config: SoftirqConfig,
}

impl SoftirqKernel {
    pub fn discover(k: &Kernel) -> Self {
        let softirq = k.format("irq", "softirq_entry");
        let irq = k.format("irq", "irq_handler_entry");
        let napi = k.format("napi", "napi_poll");
        let off = |f: &Result<crate::facts::tracefs::EventFormat, crate::Error>, n: &str| {
            f.as_ref()
                .ok()
                .and_then(|f| f.field(n))
                .map_or(NO_OFFSET, |x| x.offset)
        };
        let config = SoftirqConfig {
            tp_vec: off(&softirq, "vec"),
            tp_irq: off(&irq, "irq"),
            tp_napi: off(&napi, "napi"),
            tp_napi_work: off(&napi, "work"),
            tp_napi_budget: off(&napi, "budget"),
            napi_dev: k.offset("napi_struct", &["dev"]),
            dev_name: k.offset("net_device", &["name"]),
            dev_ifindex: k.offset("net_device", &["ifindex"]),
            dev_net: k.offset("net_device", &["nd_net", "net"]),
            net_inum: k.offset("net", &["ns", "inum"]),
            // The session turns it off when only the drops' NET_RX context is wanted.
            timing: 1,
        };
        let exit = k.format("irq", "softirq_exit");
        let probes = vec![
            (
                ENTRY,
                planner::tracepoint_pair(
                    k,
                    ("irq", "softirq_entry"),
                    "softirq_entry_btf",
                    "softirq_entry_tp",
                    &softirq,
                    &["vec"],
                ),
            ),
            (
                EXIT,
                planner::tracepoint_pair(
                    k,
                    ("irq", "softirq_exit"),
                    "softirq_exit_btf",
                    "softirq_exit_tp",
                    &exit,
                    &["vec"],
                ),
            ),
            (
                IRQ,
                planner::tracepoint_pair(
                    k,
                    ("irq", "irq_handler_entry"),
                    "irq_handler_btf",
                    "irq_handler_tp",
                    &irq,
                    &["irq"],
                ),
            ),
            (
                NAPI,
                planner::tracepoint_pair(
                    k,
                    ("napi", "napi_poll"),
                    "napi_poll_btf",
                    "napi_poll_tp",
                    &napi,
                    &["napi", "work", "budget"],
                ),
            ),
        ];
        Self { probes, config }
    }
}

impl Family for SoftirqKernel {
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)> {
        self.probes.clone()
    }

    fn wanted(&self, request: &Request) -> bool {
        request.softirq_hooks() || request.wants(Component::QueueLoad)
    }

    fn prepare(&self, request: &Request, object: &mut ObjectSettings) -> Result<()> {
        let mut cfg = self.config;
        cfg.timing = request.wants(Component::SoftirqTime) as u32;
        object.global("SOFTIRQ_CONFIG", &cfg);
        Ok(())
    }

    fn open(&self, _: &Request, s: &mut Starting<'_>) -> Result<()> {
        let maps = SoftirqMaps::take(s.ebpf)?;
        s.keep(maps);
        Ok(())
    }

    /// The entry/exit hooks (the NET_RX context of drops, or timing) and the queue-load hooks,
    /// each pair marked attached only when both of its hooks are.
    fn attach(&self, request: &Request, s: &mut Starting<'_>) -> Result<()> {
        let mut groups = Vec::new();
        if request.softirq_hooks() {
            groups.push((Component::NetRxContext, [ENTRY, EXIT]));
        }
        if request.wants(Component::QueueLoad) {
            groups.push((Component::QueueLoad, [IRQ, NAPI]));
        }
        for (component, pair) in groups {
            let mut all = true;
            for (probe, candidates) in self.probes.iter().filter(|(p, _)| pair.contains(p)) {
                all &= s.attach(probe, candidates.clone());
            }
            if all {
                s.attached(component);
            }
        }
        Ok(())
    }
}

/// The family's maps, taken out of the object so they outlive its links.
pub struct SoftirqMaps {
    time: PerCpuArray<MapData, SoftirqTime>,
    irqs: PerCpuHashMap<MapData, u32, u64>,
    napi: PerCpuHashMap<MapData, u64, NapiStats>,
}

/// Cumulative per-CPU readings of the maps at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapReading {
    /// `[cpu][vector]`.
    pub softirq: Vec<Vec<SoftirqTime>>,
    /// IRQ → count per CPU.
    pub irqs: std::collections::BTreeMap<u32, Vec<u64>>,
    /// Per NAPI instance: per-CPU stats (the device name is set on CPUs that polled it).
    pub napi: Vec<Vec<NapiStats>>,
}

impl SoftirqMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        Ok(Self {
            time: PerCpuArray::try_from(take("SOFTIRQ_TIME")?)?,
            irqs: PerCpuHashMap::try_from(take("IRQ_COUNTS")?)?,
            napi: PerCpuHashMap::try_from(take("NAPI_POLLS")?)?,
        })
    }

    pub fn read(&self) -> MapReading {
        let mut softirq: Vec<Vec<SoftirqTime>> = Vec::new();
        for vec in 0..VECTORS {
            let Ok(per_cpu) = self.time.get(&vec, 0) else {
                continue;
            };
            softirq.resize(per_cpu.len(), vec![SoftirqTime::ZERO; VECTORS as usize]);
            for (cpu, t) in per_cpu.iter().enumerate() {
                softirq[cpu][vec as usize] = *t;
            }
        }
        MapReading {
            softirq,
            irqs: self
                .irqs
                .iter()
                .filter_map(|r| r.ok())
                .map(|(irq, v)| (irq, v.iter().copied().collect()))
                .collect(),
            napi: self
                .napi
                .iter()
                .filter_map(|r| r.ok())
                .map(|(_, v)| v.iter().copied().collect())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_numbered_and_named_as_the_kernel_does() {
        use clap::ValueEnum as _;
        assert_eq!(Vector::NetRx.number(), netdoc_common::softirq::NET_RX);
        assert_eq!(Vector::Rcu.number(), 9);
        for v in Vector::value_variants() {
            let name = v.to_possible_value().unwrap();
            assert_eq!(name.get_name(), VECTOR_NAMES[v.number() as usize]);
        }
        assert_eq!(Vector::from_str("net_rx", true), Ok(Vector::NetRx));
    }
}
