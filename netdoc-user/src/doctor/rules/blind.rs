//! netdoc's own blind spots, as findings about the diagnosis: events it lost, probes this
//! kernel refused, drops whose cause it could not tell, sockets it could not list. They never
//! say the network is broken (severity info), only what the report cannot show.
use super::namespace_scope;
use crate::{
    doctor::Snapshot,
    model::{
        cause::Cause,
        finding::{Confidence, Evidence, Finding, Scope, Severity},
    },
};

/// Probes whose absence hides an incident class, and which.
const WATCHED: [(&str, &str); 5] = [
    ("drops", "every drop reason and flow"),
    ("retrans", "retransmits: MTU black holes and path loss"),
    ("softirq_entry", "NET_RX time per CPU"),
    (
        "napi_poll",
        "which device's NAPI carries a CPU's NET_RX load",
    ),
    ("irq_handler", "which CPU serves each NIC queue"),
];

fn blind(
    title: String,
    affected: u64,
    evidence: Vec<Evidence>,
    fix: Vec<String>,
    scope: Scope,
) -> Finding {
    Finding {
        id: "netdoc_blind_spot".into(),
        severity: Severity::Info,
        confidence: Confidence::High,
        title,
        scope,
        affected,
        evidence,
        fix,
    }
}

pub fn blind_spots(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    if s.drops.lost > 0 {
        out.push(blind(
            format!(
                "netdoc lost {} of {} drop events (its buffer was full): counts are exact, but their flows and namespaces are unknown",
                s.drops.lost, s.drops.matched
            ),
            s.drops.lost,
            vec![Evidence::new(
                format!("matched {}, delivered {}, lost {}", s.drops.matched, s.drops.delivered, s.drops.lost),
                "the drop probe's own counters",
            )],
            vec!["a bigger buffer: netdoc doctor --pages 256".into()],
            Scope::host(),
        ));
    }
    for p in &s.probes {
        let Some(why) = &p.unavailable else { continue };
        if let Some((_, hides)) = WATCHED.iter().find(|(name, _)| *name == p.probe) {
            out.push(blind(
                format!(
                    "this kernel gave no {} probe, so this report cannot show {hides}",
                    p.probe
                ),
                0,
                vec![Evidence::new(
                    why.clone(),
                    "the attach planner (netdoc probes)",
                )],
                vec!["netdoc probes lists what each hook needs".into()],
                Scope::host(),
            ));
        }
    }
    for g in s
        .drops
        .groups
        .iter()
        .filter(|g| g.cause == Some(Cause::Unclassified))
    {
        let scope = namespace_scope(g.netns_name.as_deref(), g.netns);
        out.push(blind(
            format!("{} NETFILTER_DROPs could not be told apart (firewall rule or conntrack)", g.events),
            g.events,
            vec![Evidence::new(
                format!("freed at {}, no stage sentinel saw them", g.location),
                "skb:kfree_skb NETFILTER_DROP, netfilter stage sentinels",
            )],
            vec!["sentinels go into namespaces that use conntrack; netdoc conntrack shows that namespace's counters".into()],
            scope,
        ));
    }
    for c in &s.counted {
        if let Some(why) = &c.sockets_unavailable {
            out.push(blind(
                format!("the sockets of namespace {} could not be listed, so its socket findings name no socket", c.netns.name),
                0,
                vec![Evidence::new(why.clone(), "sock_diag")],
                vec!["load inet_diag, tcp_diag and udp_diag".into()],
                namespace_scope(Some(&c.netns.name), c.netns.inode),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{doctor::rules::fixtures::*, planner::ProbeStatus};

    #[test]
    fn lost_events_and_refused_probes_are_info_findings() {
        let mut s = quiet();
        s.drops.matched = 100;
        s.drops.delivered = 90;
        s.drops.lost = 10;
        s.probes = vec![
            ProbeStatus {
                probe: "napi_poll".into(),
                hook: None,
                unavailable: Some("no napi:napi_poll".into()),
            },
            ProbeStatus {
                probe: "conntrack_confirm".into(),
                hook: None,
                unavailable: Some("fentry refused".into()),
            },
        ];
        let f = blind_spots(&s);
        assert_eq!(
            f.len(),
            2,
            "the confirm hook is covered by the sentinels: {f:?}"
        );
        assert!(f.iter().all(|f| f.severity == Severity::Info));
        assert!(f[0].title.contains("lost 10 of 100"));
        assert!(f[1].title.contains("napi_poll"));
    }

    #[test]
    fn a_clean_run_has_no_blind_spot() {
        assert!(blind_spots(&quiet()).is_empty());
    }
}
