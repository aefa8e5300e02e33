//! NET_RX load traced to its cause. A CPU that spends most of its time in NET_RX while carrying
//! most of all CPUs' NET_RX time is the bottleneck; the NAPI polls on it tell whose work that
//! is: a NIC receive queue the CPU serves alone, or the per-CPU backlog (veth, loopback, RPS
//! targets), which runs on the senders' CPU or where RPS steers it. The packets saturation
//! loses are softnet_stat's backlog drops and time squeezes; kfree_skb drops (NO_SOCKET, ...)
//! are what a flood's packets met later, whatever CPU they ran on, so they are no evidence here.
use std::collections::BTreeSet;

use super::{
    nicmap::{BACKLOG_NAPI, NapiUse, NicMap, QueueRow},
    series::CpuSummary,
};
use crate::model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity};

/// NET_RX share of a CPU's time from which it counts as saturated.
pub const SATURATED: f64 = 0.5;
/// Share of the NET_RX time summed over all CPUs that a saturated CPU must carry to be the
/// bottleneck: below it the load is spread, and spreading it further is not the fix. Being more
/// than half of the sum, at most one CPU qualifies.
pub const CONCENTRATED: f64 = 0.6;
/// Share of the packets polled on a CPU above which one source (the NAPI of a NIC's queues, or
/// the backlog) is the cause of its load.
const MOST: f64 = 0.5;

/// The CPU whose NET_RX is both saturated and concentrated, if any, blamed on what it polled.
pub fn findings(cpus: &[CpuSummary], map: &NicMap) -> Vec<Finding> {
    let all_cpus_share: f64 = cpus.iter().map(|c| c.share).sum();
    cpus.iter()
        .filter(|c| c.share >= SATURATED && c.share >= CONCENTRATED * all_cpus_share)
        .map(|c| Hotspot::new(c, cpus, all_cpus_share, map).finding())
        .collect()
}

/// A concentrated CPU and what was polled on it.
struct Hotspot<'a> {
    cpu: &'a CpuSummary,
    cpus: &'a [CpuSummary],
    /// Its share of the NET_RX time summed over all CPUs.
    of_all_cpus: f64,
    map: &'a NicMap,
    /// The NAPI instances polled on this CPU, most packets first.
    napi: Vec<&'a NapiUse>,
    polled: u64,
}

impl<'a> Hotspot<'a> {
    fn new(
        cpu: &'a CpuSummary,
        cpus: &'a [CpuSummary],
        all_cpus_share: f64,
        map: &'a NicMap,
    ) -> Self {
        let mut napi: Vec<&NapiUse> = map
            .cpus
            .iter()
            .filter(|r| r.cpu == cpu.cpu)
            .flat_map(|r| &r.napi)
            .collect();
        napi.sort_by_key(|n| std::cmp::Reverse(n.packets));
        Self {
            cpu,
            cpus,
            of_all_cpus: cpu.share / all_cpus_share,
            map,
            polled: napi.iter().map(|n| n.packets).sum(),
            napi,
        }
    }

    fn finding(&self) -> Finding {
        let sole = self.sole_queues_polled();
        let carries_most = |packets: u64| packets as f64 > MOST * self.polled as f64;
        let sole_packets = self.packets_from(|d| sole.iter().any(|q| q.device == d));
        let backlog_packets = self.packets_from(|d| d == BACKLOG_NAPI);
        if carries_most(sole_packets) {
            self.single_queue(&sole, sole_packets)
        } else if carries_most(backlog_packets) {
            self.backlog()
        } else {
            self.unattributed()
        }
    }

    fn packets_from(&self, device: impl Fn(&str) -> bool) -> u64 {
        self.napi
            .iter()
            .filter(|n| device(&n.device))
            .map(|n| n.packets)
            .sum()
    }

    /// Receive queues this CPU alone serves whose device's NAPI delivered packets here.
    fn sole_queues_polled(&self) -> Vec<&'a QueueRow> {
        self.map
            .queues
            .iter()
            .filter(|q| q.single_cpu && q.served_by.contains(&self.cpu.cpu))
            .filter(|q| {
                self.napi
                    .iter()
                    .any(|n| n.device == q.device && n.packets > 0)
            })
            .collect()
    }

    fn single_queue(&self, sole: &[&QueueRow], packets: u64) -> Finding {
        let cpu = self.cpu.cpu;
        let queues: Vec<String> = sole
            .iter()
            .map(|q| format!("{} queue {}", q.device, q.queue))
            .collect();
        let mut evidence = vec![
            self.load(),
            self.polls(),
            Evidence::new(
                format!(
                    "CPU {cpu} alone serves {}, RPS off; its NAPI delivered {} of the packets polled here",
                    sole.iter()
                        .map(|q| format!("{} queue {} (IRQ {})", q.device, q.queue, q.irq))
                        .collect::<Vec<_>>()
                        .join(", "),
                    percent_of(packets, self.polled)
                ),
                "irq_handler_entry, /proc/irq/N/effective_affinity_list, rps_cpus",
            ),
        ];
        for q in sole {
            if let Some(mask) = q.affinity.as_ref().filter(|m| m.len() > 1) {
                evidence.push(Evidence::new(
                    format!(
                        "the affinity mask of IRQ {} names CPUs {}, but one queue is served by one CPU",
                        q.irq,
                        cpu_list(mask)
                    ),
                    "/proc/irq/N/smp_affinity_list",
                ));
            }
        }
        evidence.push(self.softnet());
        let scope = match queues.as_slice() {
            [queue] => Scope::new(ScopeKind::NicQueue, queue.clone()),
            _ => Scope::new(ScopeKind::Cpu, format!("CPU {cpu}")),
        };
        Finding {
            explains: Vec::new(),
            id: "net_rx_single_queue_saturation".into(),
            severity: self.severity(),
            confidence: Confidence::Medium,
            title: format!(
                "CPU {cpu} is saturated by NET_RX for {}, which it serves alone",
                queues.join(", ")
            ),
            scope,
            affected: self.affected(),
            evidence,
            fix: vec![
                "spread receive work over more queues: `ethtool -L DEV combined N`, then one IRQ per CPU in /proc/irq/N/smp_affinity_list".into(),
                "where the NIC has one queue, enable RPS/RFS: echo MASK > /sys/class/net/DEV/queues/rx-0/rps_cpus (and rps_flow_cnt)".into(),
                "absorb bursts meanwhile: raise net.core.netdev_max_backlog and net.core.netdev_budget".into(),
            ],
        }
    }

    fn backlog(&self) -> Finding {
        let cpu = self.cpu.cpu;
        let mut evidence = vec![self.load(), self.polls()];
        let mut steered_here = Vec::new();
        for q in &self.map.queues {
            let Some(targets) = q.rps.as_ref().filter(|r| !r.is_empty()) else {
                continue;
            };
            let queue = format!("{} queue {}", q.device, q.queue);
            let among = if targets.contains(&cpu) {
                steered_here.push(queue.clone());
                format!(" (CPU {cpu} among them)")
            } else {
                String::new()
            };
            evidence.push(Evidence::new(
                format!("RPS steers {queue} to CPUs {}{among}", cpu_list(targets)),
                "rps_cpus",
            ));
        }
        evidence.push(self.softnet());
        let mut fix = vec![
            "spread the senders over more CPUs: veth and loopback queue packets to the backlog of the CPU the sender runs on".into(),
            "or enable RPS on the receiving veth, inside its namespace: echo MASK > /sys/class/net/DEV/queues/rx-0/rps_cpus".into(),
        ];
        if !steered_here.is_empty() {
            fix.push(format!(
                "widen the rps_cpus mask of {} beyond CPU {cpu}",
                steered_here.join(", ")
            ));
        }
        if self.cpu.backlog_dropped > 0 {
            fix.push("raise net.core.netdev_max_backlog: the backlog overflowed".into());
        }
        fix.push("for RFS, check net.core.rps_sock_flow_entries (0 disables it) and rps_flow_cnt of the receiving queue, so flows follow the CPUs of their readers".into());
        Finding {
            explains: Vec::new(),
            id: "net_rx_backlog_concentration".into(),
            severity: self.severity(),
            confidence: Confidence::Medium,
            title: format!(
                "NET_RX on CPU {cpu} is backlog processing (veth, loopback or RPS targets), {} of all CPUs' NET_RX time",
                percent(self.of_all_cpus)
            ),
            scope: Scope::new(ScopeKind::Cpu, format!("CPU {cpu}")),
            affected: self.affected(),
            evidence,
            fix,
        }
    }

    /// Neither a queue served alone nor the backlog carried most packets, or nothing was polled:
    /// naming either would be a guess.
    fn unattributed(&self) -> Finding {
        let cpu = self.cpu.cpu;
        let why = if self.napi.is_empty() {
            "no NAPI poll was recorded there to say whose work it is"
        } else {
            "neither a receive queue it serves alone nor the backlog carried most of its packets"
        };
        let mut fix = vec![
            "`netdoc irq` lists the queues each CPU serves and the NAPI devices it polls; `netdoc probes` tells why napi_poll did not attach".into(),
            "spread receive work: one IRQ per CPU in /proc/irq/N/smp_affinity_list, RPS via /sys/class/net/DEV/queues/rx-N/rps_cpus".into(),
        ];
        if self.cpu.backlog_dropped > 0 {
            fix.push("raise net.core.netdev_max_backlog: the backlog overflowed".into());
        }
        Finding {
            explains: Vec::new(),
            id: "net_rx_cpu_concentration".into(),
            severity: self.severity(),
            confidence: Confidence::Low,
            title: format!(
                "CPU {cpu} is saturated by NET_RX, {} of all CPUs' NET_RX time, but {why}",
                percent(self.of_all_cpus)
            ),
            scope: Scope::new(ScopeKind::Cpu, format!("CPU {cpu}")),
            affected: self.affected(),
            evidence: vec![self.load(), self.polls(), self.softnet()],
            fix,
        }
    }

    /// Packets lost at the backlog make it critical; saturation that lost none yet is a warning.
    fn severity(&self) -> Severity {
        if self.cpu.backlog_dropped > 0 {
            Severity::Critical
        } else {
            Severity::Warning
        }
    }

    fn affected(&self) -> u64 {
        if self.cpu.backlog_dropped > 0 {
            self.cpu.backlog_dropped
        } else {
            self.polled
        }
    }

    fn load(&self) -> Evidence {
        let others: Vec<String> = self
            .cpus
            .iter()
            .filter(|o| o.cpu != self.cpu.cpu && o.share >= 0.005)
            .map(|o| format!("CPU {} {}", o.cpu, percent(o.share)))
            .collect();
        let others = match (others.is_empty(), self.cpus.len()) {
            (true, 1) => String::new(),
            (true, _) => " (every other CPU below 1%)".into(),
            (false, _) => format!(" (others: {})", others.join(", ")),
        };
        Evidence::new(
            format!(
                "CPU {} spent {} of its time in NET_RX softirq, {} of the NET_RX time of all CPUs{others}",
                self.cpu.cpu,
                percent(self.cpu.share),
                percent(self.of_all_cpus)
            ),
            "softirq_entry/softirq_exit",
        )
    }

    fn polls(&self) -> Evidence {
        let cpu = self.cpu.cpu;
        if self.napi.is_empty() {
            return Evidence::new(
                format!(
                    "no NAPI poll was recorded on CPU {cpu} (the napi_poll probe is unavailable, or the CPU polled nothing): its NET_RX cannot be traced to a receive queue or the backlog"
                ),
                "napi:napi_poll",
            );
        }
        let devices: Vec<String> = self
            .napi
            .iter()
            .map(|n| {
                let exhausted = if n.budget_exhausted > 0 {
                    format!(", budget exhausted {} times", n.budget_exhausted)
                } else {
                    String::new()
                };
                format!(
                    "{} {} packets in {} polls ({}{exhausted})",
                    n.device,
                    n.packets,
                    n.polls,
                    percent_of(n.packets, self.polled)
                )
            })
            .collect();
        Evidence::new(
            format!("NAPI polls on CPU {cpu}: {}", devices.join("; ")),
            "napi:napi_poll",
        )
    }

    fn softnet(&self) -> Evidence {
        Evidence::new(
            format!(
                "CPU {}: {} packets dropped at the full backlog, {} time squeezes (NET_RX stopped with packets left)",
                self.cpu.cpu, self.cpu.backlog_dropped, self.cpu.time_squeeze
            ),
            "/proc/net/softnet_stat",
        )
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

fn percent_of(part: u64, whole: u64) -> String {
    percent(if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    })
}

fn cpu_list(cpus: &BTreeSet<u32>) -> String {
    cpus.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::softirq::{
        MapReading,
        nicmap::{self, QueueFacts},
    };

    fn cpu(cpu: u32, share: f64) -> CpuSummary {
        CpuSummary {
            cpu,
            count: 1000,
            proc_softirqs: 1000,
            share,
            mean_us: 10.0,
            p99_us: 64.0,
            drops: 0,
            drops_in_net_rx: 0,
            backlog_dropped: 0,
            time_squeeze: 0,
        }
    }

    /// A four-CPU host with these queues, where each `(cpu, device, packets)` was polled.
    fn host(queues: &[QueueFacts], polled: &[(u32, &str, u64)]) -> NicMap {
        let mut map = nicmap::build(
            queues,
            &BTreeMap::new(),
            &MapReading::default(),
            &BTreeMap::new(),
            &[0, 1, 2, 3],
        );
        for &(cpu, device, packets) in polled {
            map.cpus[cpu as usize].napi.push(NapiUse {
                device: device.into(),
                polls: packets / 64 + 1,
                packets,
                budget_exhausted: packets / 6400,
            });
        }
        map
    }

    #[test]
    fn veth_flood_on_the_cpu_of_an_idle_nic_queue_is_the_backlog() {
        // The issue: a veth flood on CPU 1, whose kfree_skb drops are NO_SOCKET, while the NIC
        // queue CPU 1 serves alone polled nothing.
        let flooded = CpuSummary {
            drops: 1_400_000,
            drops_in_net_rx: 1_400_000,
            time_squeeze: 120,
            ..cpu(1, 0.97)
        };
        let cpus = [cpu(0, 0.01), flooded, cpu(2, 0.0), cpu(3, 0.02)];
        let map = host(
            &[nicmap::tests::queue(40, "eth0", 0, &[1], &[])],
            &[(1, BACKLOG_NAPI, 1_450_000)],
        );
        assert!(map.queues[0].single_cpu);
        let f = findings(&cpus, &map);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "net_rx_backlog_concentration");
        assert_eq!(f[0].severity, Severity::Warning, "no backlog drops");
        assert_eq!(f[0].affected, 1_450_000);
        assert_eq!(f[0].scope, Scope::new(ScopeKind::Cpu, "CPU 1"));
        assert!(!f[0].title.contains("eth0"), "{}", f[0].title);
        assert!(!f[0].shows("eth0"), "{:?}", f[0].evidence);
        assert!(!f[0].shows("1400000"), "NO_SOCKET drops are no evidence");
        assert!(f[0].shows("backlog 1450000 packets"), "{:?}", f[0].evidence);
        assert!(f[0].shows("97% of its time in NET_RX"));
        assert!(f[0].shows("others: CPU 0 1%, CPU 3 2%"));
        assert!(f[0].shows("0 packets dropped at the full backlog, 120 time squeezes"));
        assert!(f[0].fix.iter().any(|h| h.contains("rps_cpus")));
        assert!(f[0].fix.iter().any(|h| h.contains("rps_sock_flow_entries")));
        assert!(!f[0].fix.iter().any(|h| h.contains("netdev_max_backlog")));
    }

    #[test]
    fn nic_flood_on_the_cpu_that_alone_serves_its_queue_is_the_queue() {
        let flooded = CpuSummary {
            backlog_dropped: 4_000,
            time_squeeze: 900,
            ..cpu(0, 0.98)
        };
        let cpus = [flooded, cpu(1, 0.02), cpu(2, 0.0), cpu(3, 0.01)];
        let map = host(
            &[nicmap::tests::queue(40, "eth0", 0, &[0], &[])],
            &[(0, "eth0", 2_000_000), (0, BACKLOG_NAPI, 10_000)],
        );
        let f = findings(&cpus, &map);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "net_rx_single_queue_saturation");
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].affected, 4_000);
        assert_eq!(f[0].scope, Scope::new(ScopeKind::NicQueue, "eth0 queue 0"));
        assert!(f[0].title.contains("CPU 0"));
        assert!(f[0].shows("98%"), "{:?}", f[0].evidence);
        assert!(f[0].shows("eth0 queue 0 (IRQ 40)"));
        assert!(
            f[0].shows("eth0 2000000 packets in 31251 polls (100%, budget exhausted 312 times)")
        );
        assert!(f[0].shows("affinity mask of IRQ 40 names CPUs 0,1,2,3"));
        assert!(f[0].shows("4000 packets dropped at the full backlog"));
        assert!(f[0].fix.iter().any(|h| h.contains("rps_cpus")));
        assert!(f[0].fix.iter().any(|h| h.contains("ethtool -L")));
        assert!(f[0].fix.iter().any(|h| h.contains("netdev_max_backlog")));
    }

    #[test]
    fn the_cpu_rps_steers_to_is_the_backlog() {
        // eth0 queue 0 is served by CPU 0, whose RPS hands the packets to CPU 1's backlog.
        let target = CpuSummary {
            backlog_dropped: 300,
            ..cpu(1, 0.9)
        };
        let cpus = [cpu(0, 0.2), target, cpu(2, 0.0), cpu(3, 0.0)];
        let map = host(
            &[nicmap::tests::queue(40, "eth0", 0, &[0], &[1])],
            &[(0, "eth0", 800_000), (1, BACKLOG_NAPI, 790_000)],
        );
        let f = findings(&cpus, &map);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "net_rx_backlog_concentration");
        assert_eq!(f[0].scope, Scope::new(ScopeKind::Cpu, "CPU 1"));
        assert_eq!(f[0].severity, Severity::Critical);
        assert_eq!(f[0].affected, 300);
        assert!(f[0].shows("RPS steers eth0 queue 0 to CPUs 1 (CPU 1 among them)"));
        assert!(
            f[0].shows("82% of the NET_RX time of all CPUs"),
            "{:?}",
            f[0].evidence
        );
        assert!(
            f[0].fix
                .iter()
                .any(|h| h.contains("widen the rps_cpus mask of eth0 queue 0"))
        );
        assert!(f[0].fix.iter().any(|h| h.contains("netdev_max_backlog")));
    }

    #[test]
    fn spread_or_quiet_load_is_no_finding() {
        let queues: Vec<QueueFacts> = (0..4)
            .map(|q| nicmap::tests::queue(40 + q, "eth0", q, &[q], &[]))
            .collect();
        let polled: Vec<(u32, &str, u64)> = (0..4).map(|c| (c, "eth0", 500_000)).collect();
        let map = host(&queues, &polled);
        let busy_everywhere: Vec<CpuSummary> = (0..4).map(|c| cpu(c, 0.8)).collect();
        assert!(
            findings(&busy_everywhere, &map).is_empty(),
            "saturated, not concentrated"
        );
        let light: Vec<CpuSummary> = (0..4).map(|c| cpu(c, 0.3)).collect();
        assert!(findings(&light, &map).is_empty());
        let quiet: Vec<CpuSummary> = (0..4).map(|c| cpu(c, 0.0)).collect();
        assert!(findings(&quiet, &host(&queues, &[])).is_empty());
        assert!(findings(&[], &host(&[], &[])).is_empty());
    }

    #[test]
    fn saturation_without_napi_polls_names_no_queue() {
        let cpus = [cpu(0, 0.95), cpu(1, 0.01), cpu(2, 0.0), cpu(3, 0.0)];
        let map = host(&[nicmap::tests::queue(40, "eth0", 0, &[0], &[])], &[]);
        let f = findings(&cpus, &map);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "net_rx_cpu_concentration");
        assert_eq!(f[0].confidence, Confidence::Low);
        assert_eq!(f[0].severity, Severity::Warning);
        assert!(
            f[0].title.contains("no NAPI poll was recorded"),
            "{}",
            f[0].title
        );
        assert!(!f[0].title.contains("eth0") && !f[0].shows("eth0"));
        assert!(f[0].shows("napi_poll probe is unavailable"));
    }

    #[test]
    fn a_nic_queue_that_other_cpus_also_serve_is_not_blamed_alone() {
        let cpus = [cpu(0, 0.9), cpu(1, 0.1), cpu(2, 0.0), cpu(3, 0.0)];
        let map = host(
            &[nicmap::tests::queue(40, "eth0", 0, &[0, 1], &[])],
            &[(0, "eth0", 900_000)],
        );
        let f = findings(&cpus, &map);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "net_rx_cpu_concentration");
        assert_eq!(f[0].confidence, Confidence::Low);
        assert!(
            f[0].title
                .contains("neither a receive queue it serves alone nor the backlog")
        );
        assert!(f[0].shows("eth0 900000 packets"));
    }
}
