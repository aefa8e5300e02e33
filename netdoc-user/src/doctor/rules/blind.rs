//! netdoc's own blind spots, as findings about the diagnosis: events it lost, probes this
//! kernel refused, drops whose cause it could not tell, sockets it could not list. They never
//! say the network is broken (severity info), only what the report cannot show.
use super::{NO_REASON, Untold, is_untold, namespace_scope, untold_in};
use crate::{
    doctor::Snapshot,
    model::finding::{Confidence, Evidence, Finding, Scope, Severity},
    retrans::RETRANS,
    softirq,
};

/// Probes whose absence hides an incident class, and which (without the drop probe the doctor
/// does not run at all).
const WATCHED: [(&str, &str); 5] = [
    (RETRANS, "retransmits: MTU black holes and path loss"),
    (softirq::ENTRY, "NET_RX time per CPU"),
    (softirq::EXIT, "NET_RX time per CPU"),
    (
        softirq::NAPI,
        "which device's NAPI carries a CPU's NET_RX load",
    ),
    (softirq::IRQ, "which CPU serves each NIC queue"),
];

fn blind(
    title: String,
    affected: u64,
    evidence: Vec<Evidence>,
    fix: Vec<String>,
    scope: Scope,
) -> Finding {
    Finding {
        explains: Vec::new(),
        id: crate::doctor::BLIND_SPOT.into(),
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
    let unnamed: u64 = s
        .drops
        .sites
        .iter()
        .filter(|r| r.reason == NO_REASON)
        .map(|r| r.count)
        .sum();
    if unnamed > 0 {
        out.push(blind(
            format!("this kernel's kfree_skb gives no drop reason: {unnamed} drops were recognised by the function that freed them, with less certainty"),
            unnamed,
            vec![Evidence::new(
                format!("reason names: {}", s.host.reason_names),
                "tracefs skb/kfree_skb format, kernel BTF",
            )],
            vec!["drop reasons arrived in Linux 5.17: on a newer kernel every drop says why".into()],
            Scope::host(),
        ));
    }
    if s.drops.folded > 0 {
        out.push(blind(
            format!(
                "{} drop events fell outside the {} groups the report keeps: they are counted in the drop sites, not in any namespace's flows",
                s.drops.folded,
                crate::doctor::MAX_GROUPS
            ),
            s.drops.folded,
            vec![Evidence::new(
                format!("{} events delivered", s.drops.delivered),
                "netdoc's grouping of drop events",
            )],
            vec!["narrow the run to the namespace in question: --netns, --container or --pod".into()],
            Scope::host(),
        ));
    }
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
    if s.drops.sampled > 0 {
        out.push(blind(
            format!(
                "netdoc streamed {} of {} drop events and counted the other {} (over its budget of {} per second per CPU): counts are exact, the flows and namespaces shown are a sample",
                s.drops.delivered, s.drops.matched, s.drops.sampled, s.drops.max_events_per_sec
            ),
            s.drops.sampled,
            vec![Evidence::new(
                format!(
                    "matched {}, delivered {}, sampled {}",
                    s.drops.matched, s.drops.delivered, s.drops.sampled
                ),
                "the drop probe's own counters",
            )],
            vec!["every event, at the cost of the CPUs that drop: netdoc doctor --max-events-per-sec 0".into()],
            Scope::host(),
        ));
    }
    for p in s.probes.iter().filter(|p| p.missed_runs > 0) {
        out.push(blind(
            format!(
                "the kernel skipped {} run(s) of netdoc's {} probe (its program was already running on that CPU when its event came again, from an interrupt): those events are in no count",
                p.missed_runs, p.probe
            ),
            p.missed_runs,
            vec![Evidence::new(
                format!("recursion_misses {}", p.missed_runs),
                "the kernel's statistics of netdoc's program",
            )],
            vec!["the counts of that probe are short by exactly this many; a longer run makes it a smaller share".into()],
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
    // Untold netfilter drops where conntrack also dropped: the firewall rule cannot claim them.
    let untold = s
        .drops
        .groups
        .iter()
        .filter(|g| is_untold(g) && untold_in(s, g.netns) == Untold::Mixed);
    for g in untold {
        let scope = namespace_scope(g.netns_name.as_deref(), g.netns);
        out.push(blind(
            format!("{} netfilter drops could not be told apart (firewall rule or conntrack: conntrack also dropped there)", g.events),
            g.events,
            vec![Evidence::new(
                format!("freed at {}, no stage sentinel saw them", g.location),
                "skb:kfree_skb NETFILTER_DROP, netfilter stage sentinels",
            )],
            vec!["host-wide, the stage sentinels go into a namespace after its first netfilter drops freed outside nftables, which stay untold: `--netns` places them there from the start; netdoc conntrack shows that namespace's counters".into()],
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
    use crate::{doctor::rules::fixtures::*, model::cause::Cause, planner::ProbeStatus};

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
                missed_runs: 0,
            },
            ProbeStatus {
                probe: "conntrack_confirm".into(),
                hook: None,
                unavailable: Some("fentry refused".into()),
                missed_runs: 0,
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
    fn runs_the_kernel_skipped_are_an_info_finding_with_their_count() {
        let mut s = quiet();
        s.probes = vec![ProbeStatus {
            probe: "retrans".into(),
            hook: Some("tp_btf/tcp_retransmit_skb".into()),
            unavailable: None,
            missed_runs: 1,
        }];
        let f = blind_spots(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].severity, f[0].affected), (Severity::Info, 1));
        assert!(
            f[0].title
                .contains("skipped 1 run(s) of netdoc's retrans probe")
        );
    }

    #[test]
    fn sampled_events_are_an_info_finding_that_names_the_budget() {
        let mut s = quiet();
        s.drops.matched = 50_000;
        s.drops.delivered = 20_000;
        s.drops.sampled = 30_000;
        s.drops.max_events_per_sec = 20_000;
        let f = blind_spots(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].severity, Severity::Info);
        assert!(
            f[0].title
                .contains("streamed 20000 of 50000 drop events and counted the other 30000 (over its budget of 20000 per second per CPU)"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn netfilter_drops_neither_sentinels_nor_counters_can_attribute_are_a_blind_spot() {
        let mut s = quiet();
        s.drops.groups = vec![group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::Unclassified),
            "udp",
            "10.0.0.2",
            9,
            30,
        )];
        s.conntrack = vec![conntrack_dropping("blue", 12)];
        let f = blind_spots(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(
            f[0].title
                .contains("30 netfilter drops could not be told apart")
        );
        assert_eq!(f[0].scope.name, "blue");
    }

    #[test]
    fn a_kernel_without_drop_reasons_says_so() {
        let mut s = quiet();
        s.drops.sites = vec![crate::drops::report::Row {
            reason: "UNKNOWN".into(),
            reason_code: None,
            cause: None,
            location: "__udp4_lib_rcv+0x4bc".into(),
            count: 40,
            rate: 0.0,
            cpus: Default::default(),
            last_flow: None,
        }];
        let f = blind_spots(&s);
        assert_eq!(f.len(), 1);
        assert!(f[0].title.contains("gives no drop reason: 40 drops"));
    }

    #[test]
    fn a_clean_run_has_no_blind_spot() {
        assert!(blind_spots(&quiet()).is_empty());
    }
}
