//! Loss on the path, seen only as retransmits: an MTU black hole (full-sized segments stuck,
//! no ICMP), and other flows that keep retransmitting one segment. A local drop of the same
//! destination turns "somewhere on the path" into "here", with its reason.
use super::{MIN_PACKETS, namespace_scope};
use crate::{
    doctor::Snapshot,
    model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity},
    retrans::{mtu, report::FlowRow},
};

pub fn retransmits(s: &Snapshot) -> Vec<Finding> {
    let holes = mtu::black_holes(&s.retrans);
    let mut out: Vec<Finding> = s
        .retrans
        .iter()
        .filter(|f| {
            f.max_same_seq >= mtu::STUCK_RETRIES
                && !holes.iter().any(|h| h.scope.name.starts_with(&f.id.flow))
        })
        .map(|f| stalled(s, f))
        .collect();
    out.extend(holes);
    out
}

/// `tcp a:p > b:q`'s destination as the drop groups write it.
fn destination(f: &FlowRow) -> Option<String> {
    let ip: std::net::IpAddr = f.id.daddr.as_deref()?.parse().ok()?;
    Some(format!(
        "tcp > {}",
        crate::model::addr::endpoint(ip, f.id.dport)
    ))
}

fn stalled(s: &Snapshot, f: &FlowRow) -> Finding {
    let to = destination(f);
    let local: Vec<(&str, &str, u64)> = s
        .drops
        .groups
        .iter()
        .filter(|g| g.netns == f.id.netns)
        .flat_map(|g| g.targets.iter().map(move |t| (g, t)))
        .filter(|(_, t)| to.as_deref() == Some(t.to.as_str()))
        .map(|(g, t)| (g.reason.as_str(), g.location.as_str(), t.events))
        .collect();
    let where_ = namespace_scope(f.id.netns_name.as_deref(), f.id.netns);
    let mut evidence = vec![Evidence::new(
        format!(
            "one segment was retransmitted {} times in a row ({} retransmits in all, {} segments): retransmission timeouts, not fast recovery",
            f.max_same_seq, f.retransmits, f.segments
        ),
        "tcp:tcp_retransmit_skb",
    )];
    let (id, title, confidence) = if let Some((reason, location, _)) = local.first() {
        let n: u64 = local.iter().map(|l| l.2).sum();
        evidence.push(Evidence::new(
            format!("{n} packets to the same destination were dropped on this host: {reason} at {location}"),
            format!("skb:kfree_skb {reason}@{location}"),
        ));
        (
            "local_drop_stalls_flow",
            format!(
                "{} keeps timing out because this host drops its packets ({reason})",
                f.id.flow
            ),
            Confidence::High,
        )
    } else {
        evidence.push(Evidence::new(
            "no packet to that destination was dropped on this host".to_string(),
            "skb:kfree_skb (every reason)",
        ));
        (
            "silent_path_drop",
            format!(
                "{} keeps timing out and no drop on this host explains it: packets are lost on the path or at the peer",
                f.id.flow
            ),
            if f.retransmits >= MIN_PACKETS {
                Confidence::Medium
            } else {
                Confidence::Low
            },
        )
    };
    Finding {
        id: id.into(),
        severity: Severity::Warning,
        confidence,
        title,
        scope: Scope::new(ScopeKind::Flow, format!("{} in {where_}", f.id.flow)),
        affected: f.retransmits,
        evidence,
        fix: vec![
            "look for loss beyond this host: mtr or tracepath to the peer, the peer's own drops (run netdoc doctor there), the switch and NIC counters (ethtool -S)".into(),
            "if a local drop is named, fix that first: its own finding says how".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{doctor::rules::fixtures::*, namespaces::NetnsRef, retrans::report::tests::key};
    use netdoc_common::retrans::FlowStats;

    fn flow(same_seq: u32, retransmits: u64) -> FlowRow {
        let s = FlowStats {
            events: retransmits,
            segs: retransmits,
            max_same_seq: same_seq,
            max_seg: 100,
            mss: 1448,
            pmtu_min: 1500,
            pmtu_max: 1500,
            dev_mtu: 1500,
            bytes_acked: 100_000,
            state: 1,
            ..Default::default()
        };
        FlowRow::new(&key(40000), &s, Some(NetnsRef::named("blue")), 0.0)
    }

    #[test]
    fn a_stuck_flow_without_a_local_drop_is_a_silent_path_drop() {
        let mut s = quiet();
        s.retrans = vec![flow(5, 12)];
        let f = retransmits(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "silent_path_drop");
        assert_eq!(f[0].scope.kind, ScopeKind::Flow);
    }

    #[test]
    fn a_local_drop_to_the_same_destination_is_named() {
        let mut s = quiet();
        let row = flow(5, 12);
        let mut g = group("blue", "NETFILTER_DROP", None, "tcp", "0.0.0.0", 0, 9);
        g.netns = row.id.netns;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        s.retrans = vec![row];
        let f = retransmits(&s);
        assert_eq!(f[0].id, "local_drop_stalls_flow", "{f:?}");
        assert!(f[0].shows("NETFILTER_DROP"));
    }

    #[test]
    fn ordinary_retransmits_are_no_finding() {
        let mut s = quiet();
        s.retrans = vec![flow(1, 40)];
        assert!(retransmits(&s).is_empty());
    }
}
