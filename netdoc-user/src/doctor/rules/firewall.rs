//! Packets a firewall rule dropped: `NETFILTER_DROP` whose cause the stage sentinels (or the
//! freeing function) say is a rule, not conntrack. Which framework from where the kernel freed
//! them: nftables frees in `nft_do_chain`, x_tables in `ip*t_do_table`, a rule's `DROP`
//! verdict otherwise at `nf_hook_slow`.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, inside, namespace_scope, target_evidence};
use crate::{
    doctor::{DropGroup, Snapshot},
    model::{
        cause::{Cause, NFTABLES},
        finding::{Confidence, Evidence, Finding, Severity},
    },
};

/// The framework whose rule freed a packet at `location`.
fn framework(location: &str) -> &'static str {
    let function = location.split('+').next().unwrap_or(location);
    match function {
        NFTABLES => "nftables",
        "ipt_do_table" | "ip6t_do_table" | "arpt_do_table" | "ebt_do_table" => {
            "x_tables (iptables)"
        }
        _ => "a netfilter rule (nftables or iptables)",
    }
}

pub fn rule_drops(s: &Snapshot) -> Vec<Finding> {
    let mut by_ns: BTreeMap<u32, Vec<&DropGroup>> = BTreeMap::new();
    for g in &s.drops.groups {
        let by_rule = g.cause == Some(Cause::Firewall)
            || (g.reason == "NETFILTER_DROP" && g.location.starts_with(NFTABLES));
        if by_rule {
            by_ns.entry(g.netns).or_default().push(g);
        }
    }
    by_ns
        .into_iter()
        .filter_map(|(inode, groups)| {
            let packets: u64 = groups.iter().map(|g| g.events).sum();
            if packets < MIN_PACKETS {
                return None;
            }
            let scope = namespace_scope(groups.iter().find_map(|g| g.netns_name.as_deref()), inode);
            let mut frameworks: Vec<&str> = groups.iter().map(|g| framework(&g.location)).collect();
            frameworks.sort();
            frameworks.dedup();
            let mut evidence: Vec<Evidence> = groups
                .iter()
                .map(|g| {
                    Evidence::new(
                        format!(
                            "{} {} packets freed at {} with reason NETFILTER_DROP ({})",
                            g.events,
                            g.proto.as_deref().unwrap_or("non-IP"),
                            g.location,
                            framework(&g.location)
                        ),
                        "skb:kfree_skb NETFILTER_DROP, netfilter stage sentinels",
                    )
                })
                .collect();
            evidence.extend(groups.iter().flat_map(|g| target_evidence(g)));
            let ports: Vec<String> = groups
                .iter()
                .flat_map(|g| &g.targets)
                .take(3)
                .map(|t| t.to.clone())
                .collect();
            Some(Finding {
                id: "firewall_drop".into(),
                severity: Severity::Warning,
                confidence: Confidence::High,
                title: format!(
                    "{packets} packets were dropped by {} ({})",
                    frameworks.join(" and "),
                    ports.join(", ")
                ),
                scope: scope.clone(),
                affected: packets,
                evidence,
                fix: vec![
                    format!(
                        "find the rule: {} and {}",
                        inside(&scope, "nft -a list ruleset | grep -n drop"),
                        inside(&scope, "iptables-save -c | grep -e DROP -e REJECT")
                    ),
                    "if the traffic is wanted, allow it before that rule; if not, REJECT instead of DROP so clients fail fast instead of timing out".into(),
                ],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::rules::fixtures::*;

    #[test]
    fn rule_drops_name_the_framework_and_the_destinations() {
        let mut s = quiet();
        let mut g = group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::Firewall),
            "udp",
            "10.0.0.2",
            7777,
            40,
        );
        g.location = "nf_hook_slow+0x8e".into();
        s.drops.groups = vec![g];
        let f = rule_drops(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "firewall_drop");
        assert!(f[0].title.contains("udp > 10.0.0.2:7777"), "{}", f[0].title);
        assert!(f[0].title.contains("nftables or iptables"));
        assert!(f[0].fix[0].contains("ip netns exec blue nft -a list ruleset"));
        assert_eq!(framework("nft_do_chain+0x4a2"), "nftables");
        assert_eq!(framework("ipt_do_table+0x3b1"), "x_tables (iptables)");
    }

    #[test]
    fn conntrack_and_unclassified_netfilter_drops_are_not_rules() {
        let mut s = quiet();
        s.drops.groups = vec![
            group(
                "blue",
                "NETFILTER_DROP",
                Some(Cause::ConntrackIn),
                "udp",
                "10.0.0.2",
                9,
                400,
            ),
            group(
                "blue",
                "NETFILTER_DROP",
                Some(Cause::Unclassified),
                "udp",
                "10.0.0.2",
                9,
                400,
            ),
        ];
        assert!(rule_drops(&s).is_empty());
    }
}
