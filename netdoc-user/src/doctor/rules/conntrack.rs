//! A full conntrack table and insertion failures under concurrent NAT, each namespace on its
//! own. The counters tell the two apart (`drop` beyond `insert_failed` vs `insert_failed`,
//! decided in `conntrack::findings`); the drops the sentinels tied to conntrack add the flows,
//! and DNS among them the five-second timeout pattern.
use super::{Untold, is_untold, target_evidence, untold_in};
use crate::{
    doctor::Snapshot,
    model::{
        cause::Cause,
        finding::{DropClaim, Evidence, Finding},
    },
};

pub fn conntrack(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for ns in &s.conntrack {
        for f in &ns.findings {
            let mut f = f.clone();
            let cause = match f.id.as_ref() {
                "conntrack_table_full" => Cause::ConntrackIn,
                _ => Cause::ConntrackConfirm,
            };
            // Untold drops are conntrack's when its count says so, and of this finding's kind
            // when it is the only kind conntrack dropped for.
            let one_kind = (ns.attribution.table_full == 0) != (ns.attribution.insert_failed == 0);
            let untold = untold_in(s, ns.netns.inode);
            let untold_here = one_kind && untold == Untold::Conntrack;
            let groups = s.drops.groups.iter().filter(|g| {
                g.netns == ns.netns.inode
                    && (g.cause == Some(cause) || (untold_here && is_untold(g)))
            });
            // Untold drops conntrack's counters cannot all claim are still its to explain: the
            // blind-spot note says they could not be told apart from a rule's.
            f.explains.extend(
                s.drops
                    .groups
                    .iter()
                    .filter(|g| {
                        g.netns == ns.netns.inode && untold == Untold::Mixed && is_untold(g)
                    })
                    .map(|g| DropClaim::at(g.netns, &g.reason, &g.location)),
            );
            for g in groups {
                f.explains
                    .push(DropClaim::at(g.netns, &g.reason, &g.location));
                f.evidence.extend(target_evidence(g));
                let dns = g
                    .targets
                    .iter()
                    .filter(|t| t.dport == Some(53))
                    .map(|t| t.events)
                    .sum::<u64>();
                if cause == Cause::ConntrackConfirm && dns > 0 {
                    f.evidence.push(Evidence::new(
                        format!(
                            "{dns} of them are DNS queries (udp/53): the resolver retries only after its 5 s timeout, the classic \"DNS sometimes takes five seconds\" in containers"
                        ),
                        format!("skb:kfree_skb {}@{}", g.reason, g.location),
                    ));
                }
            }
            out.push(f);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        conntrack::{Attribution, NamespaceConntrack, findings},
        doctor::rules::fixtures::*,
        model::finding::{Scope, ScopeKind},
        namespaces::NetnsRef,
    };

    fn namespace(a: Attribution) -> NamespaceConntrack {
        let scope = Scope::new(ScopeKind::Namespace, "blue");
        NamespaceConntrack {
            netns: NetnsRef::named("blue"),
            first_seen_s: 0.0,
            gone: false,
            nf_conntrack_count: Some(64),
            nf_conntrack_max: Some(64),
            peak_count: Some(64),
            peak_max: Some(64),
            findings: findings(&a, Some((64, 64)), &[], None, &scope),
            attribution: a,
            netfilter_causes: Default::default(),
            per_cpu: vec![],
            nat_rules: vec![],
            nat_rules_unavailable: None,
        }
    }

    #[test]
    fn insert_failures_on_dns_show_the_five_second_pattern() {
        let mut s = quiet();
        s.conntrack = vec![namespace(Attribution {
            insert_failed: 12,
            ..Attribution::default()
        })];
        s.drops.groups = vec![group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::ConntrackConfirm),
            "udp",
            "10.96.0.10",
            53,
            12,
        )];
        let f = conntrack(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "conntrack_insert_failed");
        assert_eq!(f[0].scope.name, "blue");
        assert!(
            f[0].shows("12 of them are DNS queries"),
            "{:?}",
            f[0].evidence
        );
        assert!(f[0].shows("udp > 10.96.0.10:53"));
    }

    #[test]
    fn untold_drops_as_many_as_conntrack_counted_are_its_own() {
        let mut s = quiet();
        s.conntrack = vec![namespace(Attribution {
            insert_failed: 12,
            ..Attribution::default()
        })];
        s.drops.groups = vec![group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::Unclassified),
            "udp",
            "10.96.0.10",
            53,
            12,
        )];
        let f = conntrack(&s);
        assert!(
            f[0].shows("12 of them are DNS queries"),
            "{:?}",
            f[0].evidence
        );
        s.drops.groups[0].events = 13;
        s.drops.groups[0].targets[0].events = 13;
        let f = conntrack(&s);
        assert!(
            !f[0].shows("DNS"),
            "one more than conntrack dropped: not all its own"
        );
    }

    #[test]
    fn a_full_table_is_not_an_insert_failure() {
        let mut s = quiet();
        s.conntrack = vec![namespace(Attribution {
            table_full: 30,
            ..Attribution::default()
        })];
        s.drops.groups = vec![group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::ConntrackIn),
            "udp",
            "10.0.0.2",
            9,
            30,
        )];
        let f = conntrack(&s);
        assert_eq!(
            f.iter().map(|f| f.id.as_ref()).collect::<Vec<_>>(),
            ["conntrack_table_full"]
        );
        assert!(f[0].shows("30 packets udp > 10.0.0.2:9"));
        assert!(!f[0].shows("DNS"));
    }
}
