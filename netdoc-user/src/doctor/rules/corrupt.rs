//! Corrupt packets: checksum, header and length errors (the catalogue's malformed reasons),
//! per namespace with the devices they arrived on and who sent them. One sender points at that
//! sender or a middlebox rewriting its packets; one device at its NIC, driver or checksum
//! offload.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, claims, counted_in, grew, inside, namespace_scope};
use crate::{
    doctor::{DropGroup, Snapshot},
    model::{
        explain::{self, DropKind},
        finding::{Confidence, Evidence, Finding, Severity},
        shell::quote,
    },
};

fn is_malformed(reason: &str) -> bool {
    explain::explain(reason).is_some_and(|e| e.kind == DropKind::Malformed)
}

pub fn corrupt(s: &Snapshot) -> Vec<Finding> {
    super::groups_by_namespace(s, |g| is_malformed(&g.reason))
        .into_iter()
        .filter(|(_, groups)| groups.iter().map(|g| g.events).sum::<u64>() >= MIN_PACKETS)
        .map(|(inode, groups)| finding(s, inode, &groups))
        .collect()
}

fn finding(s: &Snapshot, inode: u32, groups: &[&DropGroup]) -> Finding {
    let n: u64 = groups.iter().map(|g| g.events).sum();
    let scope = namespace_scope(groups.iter().find_map(|g| g.netns_name.as_deref()), inode);
    let mut reasons: Vec<&str> = groups.iter().map(|g| g.reason.as_str()).collect();
    reasons.sort_unstable();
    reasons.dedup();
    let mut evidence: Vec<Evidence> = groups
        .iter()
        .map(|g| {
            Evidence::new(
                format!(
                    "{} packets dropped with reason {} at {}: {}",
                    g.events,
                    g.reason,
                    g.location,
                    explain::explain(&g.reason).map_or("", |e| e.meaning)
                ),
                format!("skb:kfree_skb {}@{}", g.reason, g.location),
            )
        })
        .collect();
    let mut senders: BTreeMap<&str, u64> = BTreeMap::new();
    let mut devices: BTreeMap<&str, u64> = BTreeMap::new();
    for g in groups {
        for (from, k) in &g.senders {
            *senders.entry(from).or_default() += k;
        }
        for d in &g.devices {
            *devices.entry(d).or_default() += g.events;
        }
    }
    let mut busiest: Vec<(&str, u64)> = senders.into_iter().collect();
    busiest.sort_by_key(|(_, k)| std::cmp::Reverse(*k));
    if !busiest.is_empty() {
        evidence.push(Evidence::new(
            format!(
                "sent by {}",
                busiest
                    .iter()
                    .take(3)
                    .map(|(from, k)| format!("{from} ({k})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "skb:kfree_skb, the packets' source addresses",
        ));
    }
    let devices: Vec<&str> = devices.into_keys().collect();
    if !devices.is_empty() {
        evidence.push(Evidence::new(
            format!("arrived on {}", devices.join(", ")),
            "skb:kfree_skb, the packets' devices",
        ));
    }
    let ns = counted_in(s, inode);
    let mut counters: Vec<&str> = reasons
        .iter()
        .filter_map(|r| explain::explain(r))
        .flat_map(|e| e.counters.iter().copied())
        .collect();
    counters.sort_unstable();
    counters.dedup();
    for c in counters {
        let k = grew(ns, c);
        if let (true, Some(ns)) = (k > 0, ns) {
            evidence.push(Evidence::new(
                format!("{c} grew by {k}"),
                super::counter_source(c, ns),
            ));
        }
    }
    let one_sender = busiest.len() == 1;
    let dev = devices.first().copied().unwrap_or("DEV");
    Finding {
        id: "corrupt_packets".into(),
        severity: Severity::Warning,
        confidence: Confidence::High,
        title: format!(
            "{n} corrupt packets were dropped in {scope} ({}){}",
            reasons.join(", "),
            match (one_sender, busiest.first()) {
                (true, Some((from, _))) => format!(", all from {from}"),
                _ => String::new(),
            }
        ),
        affected: n,
        evidence,
        fix: vec![
            format!(
                "on a NIC, look at its errors and checksum offload: {} and {}",
                inside(&scope, &format!("ethtool -S {}", quote(dev))),
                inside(&scope, &format!("ethtool -k {}", quote(dev)))
            ),
            "from one sender: that host, or a middlebox rewriting its packets (NAT, a tunnel without checksum fix-up), is the place to look".into(),
        ],
        explains: claims(groups),
        scope,
    }
}

#[cfg(test)]
mod tests {
    use crate::doctor::rules::{all, fixtures::*};

    #[test]
    fn checksum_errors_name_their_sender_and_device() {
        let mut s = quiet();
        let mut udp = group("blue", "UDP_CSUM", None, "udp", "10.0.0.2", 53, 30);
        udp.location = "__udp4_lib_rcv+0x5a".into();
        let mut ip = group("blue", "IP_CSUM", None, "udp", "10.0.0.2", 53, 5);
        ip.location = "ip_rcv_core+0x1b0".into();
        s.drops.groups = vec![udp.clone(), ip];
        let mut ns = counted("blue", &[("Udp.InCsumErrors", 30)], &[]);
        ns.netns.inode = udp.netns;
        s.counted = vec![ns];
        let found = all(&s);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!((f.id.as_ref(), f.affected), ("corrupt_packets", 35));
        assert!(
            f.title.contains("(IP_CSUM, UDP_CSUM), all from 10.0.0.1"),
            "{}",
            f.title
        );
        assert!(f.shows("arrived on eth0"), "{f:#?}");
        assert!(f.shows("Udp.InCsumErrors grew by 30"), "{f:#?}");
        assert!(f.fix[0].contains("ethtool -S eth0"), "{:?}", f.fix);
    }
}
