//! A full neighbour table: new ARP/NDISC entries refused at `gc_thresh3`, so packets to
//! addresses not yet resolved are dropped (`NEIGH_CREATEFAIL`). The table is global: the
//! namespace holding most entries when it overflowed is named, since it starves the others.
use super::{MIN_PACKETS, namespace_scope};
use crate::{
    doctor::Snapshot,
    model::finding::{Confidence, DropClaim, Evidence, Finding, Scope, Severity},
};

pub fn overflow(s: &Snapshot) -> Vec<Finding> {
    s.neighbours
        .iter()
        .filter_map(|t| {
            let family = t.family.as_str();
            let failed: Vec<_> = s
                .drops
                .groups
                .iter()
                .filter(|g| g.reason == "NEIGH_CREATEFAIL")
                // Counted towards the family its freeing function names; IPv4's when it names
                // none (the table that overflows in practice, and one table, never both).
                .filter(|g| family_of(g.location.as_str()).unwrap_or("ipv4") == family)
                .collect();
            let refused: u64 = failed.iter().map(|g| g.events).sum();
            if t.table_fulls == 0 && refused < MIN_PACKETS {
                return None;
            }
            let (stat, sysctl) = match family {
                "ipv6" => ("/proc/net/stat/ndisc_cache", "net.ipv6.neigh.default"),
                _ => ("/proc/net/stat/arp_cache", "net.ipv4.neigh.default"),
            };
            let scope = t
                .busiest
                .first()
                .map_or_else(Scope::host, |n| namespace_scope(Some(&n.netns), n.inode));
            let mut evidence = vec![Evidence::new(
                format!(
                    "table_fulls grew by {}: new {family} neighbour entries were refused (the kernel log's \"neighbor table overflow!\")",
                    t.table_fulls
                ),
                format!("{stat} table_fulls"),
            )];
            if let Some([t1, t2, t3]) = t.gc_thresh {
                evidence.push(Evidence::new(
                    format!(
                        "entries peaked at {} of gc_thresh3 {t3} (gc_thresh1 {t1}, gc_thresh2 {t2}); {} forced garbage collections",
                        t.peak_entries, t.forced_gc_runs
                    ),
                    format!("{stat} entries, forced_gc_runs; {sysctl}.gc_thresh1..3"),
                ));
            }
            for n in &t.busiest {
                evidence.push(Evidence::new(
                    format!("namespace {} held {} IPv4 neighbour entries when the table was full", n.netns, n.entries),
                    format!("/proc/net/arp in namespace {}", n.netns),
                ));
            }
            if let Some(example) = failed.iter().flat_map(|g| &g.targets).next() {
                let destinations: usize = failed.iter().map(|g| g.targets.len()).sum();
                evidence.push(Evidence::new(
                    format!(
                        "{refused} packets were dropped for want of a neighbour entry, to {destinations}{} destinations (e.g. {})",
                        if destinations >= crate::doctor::TOP_TARGETS { "+" } else { "" },
                        example.example
                    ),
                    format!("skb:kfree_skb NEIGH_CREATEFAIL@{}", failed[0].location),
                ));
            }
            let raise = t.gc_thresh.map_or(
                format!("sysctl -w {sysctl}.gc_thresh3=N {sysctl}.gc_thresh2=N/2 {sysctl}.gc_thresh1=N/8"),
                |[_, _, t3]| {
                    let n = (t3 * 4).max(4096);
                    format!(
                        "sysctl -w {sysctl}.gc_thresh3={n} {sysctl}.gc_thresh2={} {sysctl}.gc_thresh1={} (in the host namespace: the limits are global)",
                        n / 2,
                        n / 8
                    )
                },
            );
            // Packets queued for the entries it could not keep fail with them.
            let mut explains = super::claims(&failed);
            explains.extend(
                s.drops
                    .groups
                    .iter()
                    .filter(|g| t.table_fulls > 0 && g.reason == "NEIGH_FAILED")
                    .map(|g| DropClaim::at(g.netns, &g.reason, &g.location)),
            );
            Some(Finding {
                explains,
                id: "neighbour_table_overflow".into(),
                severity: Severity::Critical,
                confidence: if t.table_fulls > 0 { Confidence::High } else { Confidence::Medium },
                title: format!(
                    "the {family} neighbour table is full: packets to addresses not yet resolved are dropped{}",
                    t.busiest
                        .first()
                        .map_or(String::new(), |n| format!(" (namespace {} holds the most entries)", n.netns))
                ),
                scope,
                affected: t.table_fulls.max(refused),
                evidence,
                fix: vec![
                    raise,
                    "or hold fewer neighbours on one L2 segment: route instead of bridging (a /32 per pod or VM), smaller subnets".into(),
                ],
            })
        })
        .collect()
}

/// The family whose neighbour code freed a packet at `location`, when the function tells.
fn family_of(location: &str) -> Option<&'static str> {
    let function = location.split('+').next()?;
    if function.starts_with("ip6") || function.contains("ndisc") {
        Some("ipv6")
    } else if function.starts_with("ip_") || function.contains("arp") {
        Some("ipv4")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        counted::neighbours::{NamespaceEntries, NeighbourTable},
        doctor::rules::fixtures::*,
    };

    fn table(fulls: u64) -> NeighbourTable {
        NeighbourTable {
            family: "ipv4".into(),
            entries: 20,
            peak_entries: 24,
            gc_thresh: Some([8, 16, 24]),
            table_fulls: fulls,
            forced_gc_runs: 3,
            unresolved_discards: 0,
            busiest: vec![NamespaceEntries {
                netns: "blue".into(),
                inode: 4026532000,
                entries: 20,
            }],
        }
    }

    #[test]
    fn an_overflow_names_the_limit_and_the_namespace_holding_the_entries() {
        let mut s = quiet();
        s.neighbours = vec![table(40)];
        let mut g = group("blue", "NEIGH_CREATEFAIL", None, "udp", "10.0.5.9", 9, 40);
        g.location = "ip_finish_output2+0x1f2".into();
        s.drops.groups = vec![g];
        let f = overflow(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "neighbour_table_overflow");
        assert_eq!(f[0].scope.name, "blue");
        assert_eq!(f[0].affected, 40);
        assert!(f[0].shows("entries peaked at 24 of gc_thresh3 24"));
        assert!(f[0].shows("namespace blue held 20"));
        assert!(f[0].fix[0].contains("gc_thresh3=4096"));
        assert!(f[0].shows("40 packets were dropped for want of a neighbour entry"));
    }

    #[test]
    fn a_table_that_never_filled_is_no_finding() {
        let mut s = quiet();
        s.neighbours = vec![table(0)];
        assert!(overflow(&s).is_empty());
    }
}
