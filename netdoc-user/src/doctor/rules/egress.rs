//! A queueing discipline dropping on egress (`QDISC_DROP` and its kin): the device, the
//! qdisc's kind, parameters and the kernel's own drop and overlimit counts, read in the
//! namespace soon after the first drop, the flows, and what the senders saw (UDP senders are
//! told with ENOBUFS: `Udp.SndbufErrors`; TCP retransmits). Told apart from loss beyond this
//! host: the packet never left it.

use super::{MIN_PACKETS, claims, counted_in, grew, inside, namespace_scope};
use crate::model::shell::quote;
use crate::{
    doctor::{DropGroup, Snapshot},
    model::{
        finding::{Confidence, Evidence, Finding, Severity},
        reasons,
    },
};

pub fn queue_drops(s: &Snapshot) -> Vec<Finding> {
    super::groups_by_namespace(s, |g| reasons::is_qdisc(&g.reason))
        .into_iter()
        .filter(|(_, groups)| groups.iter().map(|g| g.events).sum::<u64>() >= MIN_PACKETS)
        .map(|(inode, groups)| finding(s, inode, &groups))
        .collect()
}

fn finding(s: &Snapshot, inode: u32, groups: &[&DropGroup]) -> Finding {
    let n: u64 = groups.iter().map(|g| g.events).sum();
    let scope = namespace_scope(groups.iter().find_map(|g| g.netns_name.as_deref()), inode);
    let mut devices: Vec<&str> = groups
        .iter()
        .flat_map(|g| g.devices.iter().map(String::as_str))
        .collect();
    devices.sort_unstable();
    devices.dedup();
    let mut evidence: Vec<Evidence> = groups
        .iter()
        .map(|g| {
            Evidence::new(
                format!(
                    "{} packets dropped by a queueing discipline on egress ({} at {})",
                    g.events, g.reason, g.location
                ),
                format!("skb:kfree_skb {}@{}", g.reason, g.location),
            )
        })
        .collect();
    let qdiscs: Vec<_> = s
        .paths
        .iter()
        .filter(|p| p.netns.inode == inode)
        .flat_map(|p| &p.reading.qdiscs)
        .filter(|q| devices.contains(&q.dev.as_str()) && (q.drops > 0 || q.overlimits > 0))
        .collect();
    for q in &qdiscs {
        evidence.push(Evidence::new(
            format!(
                "{} on {}{}: {} dropped, {} over its limits, {} packets ({} bytes) queued; {}",
                q.kind,
                q.dev,
                if q.root { " (root)" } else { "" },
                q.drops,
                q.overlimits,
                q.qlen,
                q.backlog,
                if q.options.is_empty() {
                    "no parameters"
                } else {
                    q.options.as_str()
                }
            ),
            format!("tc -j -s qdisc show dev {} in {scope}", q.dev),
        ));
    }
    let ns = counted_in(s, inode);
    let told = grew(ns, "Udp.SndbufErrors") + grew(ns, "Udp6.SndbufErrors");
    if told > 0 {
        evidence.push(Evidence::new(
            format!("Udp.SndbufErrors grew by {told}: UDP senders were told (ENOBUFS)"),
            format!("/proc/net/snmp Udp.SndbufErrors in {scope}"),
        ));
    }
    let retransmits = grew(ns, "Tcp.RetransSegs");
    if retransmits > 0 {
        evidence.push(Evidence::new(
            format!("TCP retransmitted {retransmits} segments in {scope}"),
            format!("/proc/net/snmp Tcp.RetransSegs in {scope}"),
        ));
    }
    evidence.extend(
        groups
            .iter()
            .flat_map(|g| super::target_evidence(g))
            .take(3),
    );
    let dev = devices.first().copied().unwrap_or("DEV");
    let kind = qdiscs
        .first()
        .map_or("queueing discipline", |q| q.kind.as_str());
    Finding {
        id: "egress_queue_drop".into(),
        severity: Severity::Warning,
        confidence: if qdiscs.is_empty() { Confidence::Medium } else { Confidence::High },
        title: format!(
            "{n} packets were dropped on egress by the {kind} of {dev} in {scope}: more is sent than it lets through"
        ),
        affected: n,
        evidence,
        fix: vec![
            format!("look at its rate and limit: {}", inside(&scope, &format!("tc -s qdisc show dev {}", quote(dev)))),
            "raise the limit or the rate if it shapes more than intended, or pace the senders (a shaper drops whatever exceeds it)".into(),
        ],
        explains: claims(groups),
        scope,
    }
}
