//! A CPU's input backlog overflowing: packets handed to a CPU for receive processing (RPS, or
//! veth and loopback, whose receive work always goes through the backlog) beyond
//! `netdev_max_backlog` are dropped (`CPU_BACKLOG`), counted in that CPU's softnet "dropped".
//! Told apart from NET_RX concentrated on one CPU without loss (the softirq rule) by the drops
//! themselves; the RPS masks of the receiving devices say what steers the load there.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, claims, inside, namespace_scope};
use crate::model::shell::quote;
use crate::{
    doctor::{DropGroup, Snapshot},
    facts::route::mask_cpus,
    model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity},
};

const REASON: &str = "CPU_BACKLOG";
const SETTING: &str = "net.core.netdev_max_backlog";

pub fn overflow(s: &Snapshot) -> Vec<Finding> {
    let groups: Vec<&DropGroup> = s
        .drops
        .groups
        .iter()
        .filter(|g| g.reason == REASON)
        .collect();
    let n: u64 = groups.iter().map(|g| g.events).sum();
    if n < MIN_PACKETS {
        return Vec::new();
    }
    // The kernel's exact counts per CPU; the events only sample them under a budget.
    let mut per_cpu: BTreeMap<u32, u64> = BTreeMap::new();
    for row in s.drops.sites.iter().filter(|r| r.reason == REASON) {
        for (cpu, count) in &row.cpus {
            *per_cpu.entry(*cpu).or_default() += count;
        }
    }
    let counted: u64 = per_cpu.values().sum();
    // The drop is freed on the CPU that hands the packet over; the backlog that was full is
    // the one whose softnet "dropped" grew.
    let full: Vec<u32> = s.net_rx.as_ref().map_or_else(Vec::new, |r| {
        r.cpus
            .iter()
            .filter(|c| c.backlog_dropped > 0)
            .map(|c| c.cpu)
            .collect()
    });
    let mut evidence: Vec<Evidence> = per_cpu
        .iter()
        .map(|(cpu, count)| {
            Evidence::new(
                format!(
                    "{count} packets dropped while CPU {cpu} handed them to a full input backlog"
                ),
                format!("skb:kfree_skb {REASON}@{}, per CPU", groups[0].location),
            )
        })
        .collect();
    if let Some(net_rx) = &s.net_rx {
        for c in net_rx.cpus.iter().filter(|c| c.backlog_dropped > 0) {
            evidence.push(Evidence::new(
                format!(
                    "CPU {}: softnet dropped grew by {} over seconds {:.0} to {:.0}, {} NET_RX runs squeezed",
                    c.cpu, c.backlog_dropped, net_rx.from_s, net_rx.to_s, c.time_squeeze
                ),
                "/proc/net/softnet_stat dropped, time_squeeze",
            ));
        }
    }
    // As read soon after the first such drop, else at the start.
    let limit = s
        .backlog_settings
        .get(SETTING)
        .or(s.host.settings.get(SETTING))
        .copied();
    if let Some(limit) = limit {
        evidence.push(Evidence::new(
            format!("{SETTING} = {limit} packets per CPU (host-wide)"),
            "/proc/sys/net/core/netdev_max_backlog",
        ));
    }
    // What steers the load: the RPS masks of the devices the packets arrived on.
    let mut steering: Vec<(Scope, String, Vec<u32>)> = Vec::new();
    for g in &groups {
        let Some(path) = s.paths.iter().find(|p| p.netns.inode == g.netns) else {
            continue;
        };
        let scope = namespace_scope(g.netns_name.as_deref(), g.netns);
        for dev in &g.devices {
            let Some(masks) = path.reading.rps.get(dev) else {
                continue;
            };
            let mut targets: Vec<u32> = masks.iter().flat_map(|m| mask_cpus(m)).collect();
            targets.sort_unstable();
            targets.dedup();
            evidence.push(Evidence::new(
                format!(
                    "{dev} in {scope}: rps_cpus {} ({})",
                    masks.join(" "),
                    match targets.as_slice() {
                        [] => "no RPS: each packet is processed on the CPU that received it"
                            .to_string(),
                        [one] => format!("every packet it receives is queued to CPU {one}"),
                        many => format!("spread over CPUs {many:?}"),
                    }
                ),
                format!("/sys/class/net/{dev}/queues/rx-*/rps_cpus in {scope}"),
            ));
            if !steering.iter().any(|(sc, d, _)| *sc == scope && d == dev) {
                steering.push((scope.clone(), dev.clone(), targets));
            }
        }
    }
    evidence.extend(
        groups
            .iter()
            .flat_map(|g| super::target_evidence(g))
            .take(3),
    );
    let raise = limit.map_or(2000, |l| (l * 4).max(2000));
    let mut fix = vec![format!(
        "let each backlog hold more (host-wide): sysctl -w {SETTING}={raise}"
    )];
    for (scope, dev, targets) in &steering {
        if targets.len() == 1 {
            fix.push(format!(
                "spread the receive work of {dev} over more CPUs: {}",
                // The device goes in as an argument of the script, never as its code.
                inside(
                    scope,
                    &format!(
                        "sh -c 'echo ff > /sys/class/net/\"$1\"/queues/rx-0/rps_cpus' sh {}",
                        quote(dev)
                    )
                )
            ));
        }
    }
    fix.push(
        "or slow the sender: a CPU that cannot keep up drops whatever exceeds the backlog".into(),
    );
    let exact = counted.max(n);
    // Without softnet's view, the CPUs RPS steers to, else those that handed the packets over.
    let mut named: Vec<u32> = match full.is_empty() {
        false => full.clone(),
        true => steering
            .iter()
            .flat_map(|(.., t)| t.iter().copied())
            .collect(),
    };
    if named.is_empty() {
        named = per_cpu.keys().copied().collect();
    }
    named.sort_unstable();
    named.dedup();
    let cpus: Vec<String> = named.iter().map(u32::to_string).collect();
    vec![Finding {
        id: "cpu_backlog_overflow".into(),
        severity: Severity::Critical,
        confidence: match full.is_empty() {
            false => Confidence::High,
            true => Confidence::Medium,
        },
        title: format!(
            "{exact} packets were dropped because the input backlog of CPU {} was full{}: receive work arrives there faster than it is processed",
            cpus.join(", "),
            limit.map_or(String::new(), |l| format!(" ({SETTING} {l})"))
        ),
        scope: Scope::new(ScopeKind::Cpu, format!("CPU {}", cpus.join(", "))),
        affected: exact,
        evidence,
        fix,
        explains: claims(&groups),
    }]
}
