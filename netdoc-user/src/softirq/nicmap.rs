//! Pure join of the NIC map: every NIC queue IRQ with its configured and effective affinity, the
//! CPUs seen servicing it, RPS, and per CPU the NAPI devices it polls and its NET_RX share.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::MapReading;
use crate::facts::interrupts::{NicQueue, QueueKind};

/// What the system says about one queue IRQ.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueFacts {
    pub irq: u32,
    pub handler: String,
    pub queue: NicQueue,
    pub affinity: Option<BTreeSet<u32>>,
    pub effective: Option<BTreeSet<u32>>,
    pub rps: Option<BTreeSet<u32>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct QueueRow {
    pub irq: u32,
    pub handler: String,
    pub device: String,
    pub kind: QueueKind,
    pub queue: u32,
    pub affinity: Option<BTreeSet<u32>>,
    pub effective: Option<BTreeSet<u32>>,
    /// Handler runs per CPU during the observation.
    #[serde(deserialize_with = "crate::model::numbered::keys")]
    pub observed: BTreeMap<u32, u64>,
    pub rps: Option<BTreeSet<u32>>,
    /// CPUs whose NET_RX work this queue lands on: observed, else effective, else configured.
    pub served_by: BTreeSet<u32>,
    /// A receive queue whose work one CPU alone carries (no RPS to spread it).
    pub single_cpu: bool,
}

/// The device name of the per-CPU backlog NAPI, which has no device of its own: it carries what
/// veth, loopback and RPS hand to a CPU's input queue.
pub const BACKLOG_NAPI: &str = "backlog";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NapiUse {
    pub device: String,
    pub polls: u64,
    pub packets: u64,
    pub budget_exhausted: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuRow {
    pub cpu: u32,
    /// Share of the observation spent in NET_RX (0..1), when the softirq probe ran.
    pub net_rx_share: Option<f64>,
    /// `device:queue` of each receive queue served by this CPU.
    pub queues: Vec<String>,
    pub napi: Vec<NapiUse>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NicMap {
    pub queues: Vec<QueueRow>,
    pub cpus: Vec<CpuRow>,
    /// The CPU carrying the most NET_RX time, when any was measured.
    pub busiest_cpu: Option<u32>,
}

pub fn build(
    facts: &[QueueFacts],
    observed: &BTreeMap<u32, BTreeMap<u32, u64>>,
    napi_delta: &MapReading,
    net_rx_share: &BTreeMap<u32, f64>,
    cpus: &[u32],
) -> NicMap {
    let queues: Vec<QueueRow> = facts
        .iter()
        .map(|f| {
            let seen: BTreeMap<u32, u64> = observed
                .get(&f.irq)
                .map(|m| {
                    m.iter()
                        .filter(|(_, n)| **n > 0)
                        .map(|(c, n)| (*c, *n))
                        .collect()
                })
                .unwrap_or_default();
            let served_by = if !seen.is_empty() {
                seen.keys().copied().collect()
            } else {
                f.effective
                    .clone()
                    .or_else(|| f.affinity.clone())
                    .unwrap_or_default()
            };
            let receives = f.queue.kind != QueueKind::Tx;
            let rps_off = f.rps.as_ref().is_none_or(|r| r.is_empty());
            QueueRow {
                irq: f.irq,
                handler: f.handler.clone(),
                device: f.queue.device.clone(),
                kind: f.queue.kind,
                queue: f.queue.index,
                affinity: f.affinity.clone(),
                effective: f.effective.clone(),
                observed: seen,
                rps: f.rps.clone(),
                single_cpu: receives && rps_off && served_by.len() == 1,
                served_by,
            }
        })
        .collect();
    let napi = napi_by_cpu(napi_delta);
    let cpu_rows = cpus
        .iter()
        .map(|&cpu| CpuRow {
            cpu,
            net_rx_share: net_rx_share.get(&cpu).copied(),
            queues: queues
                .iter()
                .filter(|q| q.kind != QueueKind::Tx && q.served_by.contains(&cpu))
                .map(|q| format!("{}:{}", q.device, q.queue))
                .collect(),
            napi: napi.get(&cpu).cloned().unwrap_or_default(),
        })
        .collect();
    let busiest_cpu = net_rx_share
        .iter()
        .filter(|(_, s)| **s > 0.0)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(c, _)| *c);
    NicMap {
        queues,
        cpus: cpu_rows,
        busiest_cpu,
    }
}

/// NAPI polls per CPU and device name (the per-CPU backlog shows as [`BACKLOG_NAPI`]).
fn napi_by_cpu(reading: &MapReading) -> BTreeMap<u32, Vec<NapiUse>> {
    let mut out: BTreeMap<u32, BTreeMap<String, NapiUse>> = BTreeMap::new();
    for per_cpu in &reading.napi {
        let name = per_cpu
            .iter()
            .map(|s| dev_name(&s.dev))
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| BACKLOG_NAPI.to_string());
        for (cpu, s) in per_cpu.iter().enumerate() {
            if s.polls == 0 {
                continue;
            }
            let u = out
                .entry(cpu as u32)
                .or_default()
                .entry(name.clone())
                .or_insert_with(|| NapiUse {
                    device: name.clone(),
                    polls: 0,
                    packets: 0,
                    budget_exhausted: 0,
                });
            u.polls += s.polls;
            u.packets += s.work;
            u.budget_exhausted += s.budget_exhausted;
        }
    }
    out.into_iter()
        .map(|(cpu, m)| (cpu, m.into_values().collect()))
        .collect()
}

fn dev_name(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use netdoc_common::softirq::NapiStats;

    pub fn queue(irq: u32, dev: &str, index: u32, effective: &[u32], rps: &[u32]) -> QueueFacts {
        QueueFacts {
            irq,
            handler: format!("{dev}-TxRx-{index}"),
            queue: NicQueue {
                device: dev.into(),
                kind: QueueKind::Combined,
                index,
            },
            affinity: Some((0..4).collect()),
            effective: Some(effective.iter().copied().collect()),
            rps: Some(rps.iter().copied().collect()),
        }
    }

    #[test]
    fn observed_cpus_win_over_the_affinity_mask() {
        // Affinity names all CPUs, yet only CPU 0 services the single queue.
        let facts = [queue(40, "eth0", 0, &[0, 1, 2, 3], &[])];
        let observed = BTreeMap::from([(40, BTreeMap::from([(0, 9000), (1, 0)]))]);
        let mut napi = MapReading::default();
        let mut dev = [0u8; 16];
        dev[..4].copy_from_slice(b"eth0");
        let polled = NapiStats {
            polls: 10,
            work: 640,
            budget_exhausted: 9,
            ifindex: 2,
            netns: 1,
            dev,
        };
        let idle = NapiStats {
            dev: [0; 16],
            polls: 0,
            ..polled
        };
        napi.napi = vec![vec![polled, idle]];
        let shares = BTreeMap::from([(0, 0.97), (1, 0.01)]);
        let m = build(&facts, &observed, &napi, &shares, &[0, 1]);
        assert_eq!(m.queues[0].served_by, BTreeSet::from([0]));
        assert!(m.queues[0].single_cpu);
        assert_eq!(m.cpus[0].queues, vec!["eth0:0"]);
        assert!(m.cpus[1].queues.is_empty());
        assert_eq!(m.cpus[0].napi[0].device, "eth0");
        assert_eq!(m.cpus[0].napi[0].budget_exhausted, 9);
        assert_eq!(m.busiest_cpu, Some(0));
    }

    #[test]
    fn rps_or_several_servicing_cpus_is_not_single() {
        let facts = [
            queue(40, "eth0", 0, &[1], &[0, 1]),
            queue(41, "eth1", 0, &[0], &[]),
        ];
        let observed = BTreeMap::from([(41, BTreeMap::from([(0, 5), (1, 7)]))]);
        let m = build(
            &facts,
            &observed,
            &MapReading::default(),
            &BTreeMap::new(),
            &[0, 1],
        );
        assert!(!m.queues[0].single_cpu, "RPS spreads it");
        assert!(!m.queues[1].single_cpu, "two CPUs observed");
        assert_eq!(m.busiest_cpu, None);
    }
}
