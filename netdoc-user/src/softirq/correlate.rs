//! Drops joined with NET_RX load and NIC queues: a CPU saturated by NET_RX that alone serves a
//! receive queue, and that carries most of the drops, is the single-queue bottleneck.
use super::{nicmap::NicMap, series::CpuSummary};
use crate::model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity};

/// NET_RX share of a CPU's time from which it counts as saturated.
pub const SATURATED: f64 = 0.5;
/// Share of all drops that must sit on that CPU.
pub const CONCENTRATED: f64 = 0.6;

pub fn findings(cpus: &[CpuSummary], map: &NicMap) -> Vec<Finding> {
    let loss = |c: &CpuSummary| c.drops.max(c.backlog_dropped);
    let total: u64 = cpus.iter().map(loss).sum();
    if total == 0 {
        return Vec::new();
    }
    cpus.iter()
        .filter(|c| c.share >= SATURATED && loss(c) as f64 >= CONCENTRATED * total as f64)
        .filter_map(|c| {
            let sole: Vec<String> = map
                .queues
                .iter()
                .filter(|q| q.single_cpu && q.served_by.iter().eq([c.cpu].iter()))
                .map(|q| format!("{} queue {} (IRQ {})", q.device, q.queue, q.irq))
                .collect();
            if sole.is_empty() {
                return None;
            }
            let others: Vec<String> = cpus
                .iter()
                .filter(|o| o.cpu != c.cpu)
                .map(|o| format!("CPU {} {:.0}%", o.cpu, o.share * 100.0))
                .collect();
            let mut evidence = vec![
                Evidence::new(format!(
                    "CPU {} spent {:.0}% of the time in NET_RX softirq (others: {})",
                    c.cpu,
                    c.share * 100.0,
                    if others.is_empty() { "none".into() } else { others.join(", ") }
                ), "softirq_entry/softirq_exit"),
                Evidence::new(format!(
                    "{} of {} drops ({:.0}%) happened on CPU {}, {} of them inside NET_RX; backlog drops {}, time squeezes {}",
                    loss(c),
                    total,
                    loss(c) as f64 * 100.0 / total as f64,
                    c.cpu,
                    c.drops_in_net_rx,
                    c.backlog_dropped,
                    c.time_squeeze
                ), "kfree_skb per CPU, /proc/net/softnet_stat"),
                Evidence::new(format!("CPU {} alone serves {}", c.cpu, sole.join(", ")), "irq_handler_entry, /proc/irq/N/effective_affinity_list, rps_cpus"),
            ];
            if let Some(q) = map.queues.iter().find(|q| q.single_cpu && q.served_by.contains(&c.cpu))
                && let Some(aff) = &q.affinity
                && aff.len() > 1
            {
                evidence.push(Evidence::new(format!(
                    "its affinity mask names CPUs {aff:?}, but one queue is served by one CPU"
                ), "/proc/irq/N/smp_affinity_list"));
            }
            Some(Finding {
                scope: Scope::new(ScopeKind::Cpu, format!("CPU {}", c.cpu)),
                id: "net_rx_single_queue_saturation".into(),
                affected: loss(c),
                severity: Severity::Critical,
                confidence: Confidence::Medium,
                title: format!(
                    "CPU {} is saturated by NET_RX for a receive queue it serves alone, and packets die there",
                    c.cpu
                ),
                evidence,
                fix: vec![
                    "spread receive work over more queues: `ethtool -L DEV combined N`, then one IRQ per CPU in /proc/irq/N/smp_affinity_list".into(),
                    "where the NIC has one queue, enable RPS/RFS: echo MASK > /sys/class/net/DEV/queues/rx-0/rps_cpus (and rps_flow_cnt)".into(),
                    "absorb bursts meanwhile: raise net.core.netdev_max_backlog and net.core.netdev_budget".into(),
                ],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::softirq::{MapReading, nicmap};

    fn cpu(cpu: u32, share: f64, drops: u64) -> CpuSummary {
        CpuSummary {
            cpu,
            count: 1000,
            proc_softirqs: 1000,
            share,
            mean_us: 10.0,
            p99_us: 64.0,
            drops,
            drops_in_net_rx: drops,
            backlog_dropped: drops / 2,
            time_squeeze: 40,
        }
    }

    fn single_queue_on(cpu: u32) -> NicMap {
        let facts = [nicmap::tests::queue(40, "eth0", 0, &[cpu], &[])];
        let observed = BTreeMap::from([(40, BTreeMap::from([(cpu, 10_000)]))]);
        nicmap::build(
            &facts,
            &observed,
            &MapReading::default(),
            &BTreeMap::new(),
            &[0, 1, 2, 3],
        )
    }

    #[test]
    fn saturated_single_queue_cpu_with_the_drops_is_a_finding() {
        let cpus = [
            cpu(0, 0.98, 9_500),
            cpu(1, 0.02, 100),
            cpu(2, 0.0, 0),
            cpu(3, 0.01, 0),
        ];
        let f = findings(&cpus, &single_queue_on(0));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "net_rx_single_queue_saturation");
        assert!(f[0].title.contains("CPU 0"));
        assert!(f[0].shows("98%"), "{:?}", f[0].evidence);
        assert!(f[0].shows("eth0 queue 0 (IRQ 40)"));
        assert!(f[0].shows("affinity mask"));
        assert!(f[0].fix.iter().any(|h| h.contains("rps_cpus")));
        assert!(f[0].fix.iter().any(|h| h.contains("ethtool -L")));
        assert!(f[0].fix.iter().any(|h| h.contains("netdev_max_backlog")));
    }

    #[test]
    fn evenly_spread_load_is_no_finding() {
        let cpus = [
            cpu(0, 0.3, 2_500),
            cpu(1, 0.3, 2_500),
            cpu(2, 0.3, 2_400),
            cpu(3, 0.3, 2_600),
        ];
        assert!(findings(&cpus, &single_queue_on(0)).is_empty());
    }

    #[test]
    fn saturation_without_drops_or_without_a_sole_queue_is_no_finding() {
        let idle = [cpu(0, 0.99, 0), cpu(1, 0.0, 0)];
        assert!(findings(&idle, &single_queue_on(0)).is_empty());
        let busy = [cpu(0, 0.99, 900), cpu(1, 0.0, 0)];
        assert!(
            findings(&busy, &single_queue_on(1)).is_empty(),
            "the queue is on CPU 1"
        );
    }
}
