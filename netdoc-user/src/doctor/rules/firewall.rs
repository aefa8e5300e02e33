//! Packets a firewall rule dropped: `NETFILTER_DROP` whose cause the stage sentinels (or the
//! freeing function) say is a rule, not conntrack. Where neither can tell (no netfilter links
//! before 6.4, no drop reasons before 5.17), a netfilter drop in a namespace whose conntrack
//! dropped nothing during the run can only be a rule's: conntrack counts every drop it makes.
//! Which framework from where the kernel freed them: nftables frees in `nft_do_chain`,
//! x_tables in `ip*t_do_table`, a rule's `DROP` verdict otherwise at `nf_hook_slow`.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, by_rule, function, inside, namespace_scope, target_evidence};
use crate::{
    doctor::{DropGroup, Snapshot},
    model::{
        cause::{Cause, NFTABLES},
        finding::{Confidence, Evidence, Finding, Severity},
    },
};

/// The framework whose rule freed a packet at `location`.
fn framework(location: &str) -> &'static str {
    match function(location) {
        NFTABLES => "nftables",
        "ipt_do_table" | "ip6t_do_table" | "arpt_do_table" | "ebt_do_table" => {
            "x_tables (iptables)"
        }
        _ => "a netfilter rule (nftables or iptables)",
    }
}

/// `, at the input hook`, or `, at the hooks input 12, output 3`; empty where no stage
/// sentinel told.
fn at_hooks(g: &DropGroup) -> String {
    match g.hooks.len() {
        0 => String::new(),
        1 => format!(", at the {} hook", g.hooks.keys().next().unwrap()),
        _ => {
            let each: Vec<String> = g.hooks.iter().map(|(h, n)| format!("{h} {n}")).collect();
            format!(", at the hooks {}", each.join(", "))
        }
    }
}

pub fn rule_drops(s: &Snapshot) -> Vec<Finding> {
    let mut by_ns: BTreeMap<u32, Vec<&DropGroup>> = BTreeMap::new();
    for g in s.drops.groups.iter().filter(|g| by_rule(s, g)) {
        by_ns.entry(g.netns).or_default().push(g);
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
                            "{} {} packets freed at {} with reason {} ({}){}",
                            g.events,
                            g.proto.as_deref().unwrap_or("non-IP"),
                            g.location,
                            g.reason,
                            framework(&g.location),
                            at_hooks(g)
                        ),
                        format!("skb:kfree_skb {}@{}, netfilter stage sentinels", g.reason, g.location),
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
            let told = groups
                .iter()
                .all(|g| g.cause == Some(Cause::Firewall) || function(&g.location) == NFTABLES);
            if !told {
                evidence.push(Evidence::new(
                    format!("conntrack dropped nothing in {scope} during the run, so no conntrack drop hides among these"),
                    "/proc/net/stat/nf_conntrack drop, insert_failed",
                ));
            }
            Some(Finding {
                id: "firewall_drop".into(),
                severity: Severity::Warning,
                confidence: if told { Confidence::High } else { Confidence::Medium },
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
    fn the_hooks_the_sentinels_saw_are_named() {
        let mut s = quiet();
        let mut g = group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::Firewall),
            "tcp",
            "10.0.0.2",
            22,
            12,
        );
        g.hooks = [("input".to_string(), 12)].into();
        s.drops.groups = vec![g.clone()];
        assert!(rule_drops(&s)[0].shows("at the input hook"));
        g.hooks = [("input".to_string(), 9), ("output".to_string(), 3)].into();
        s.drops.groups = vec![g];
        assert!(rule_drops(&s)[0].shows("at the hooks input 9, output 3"));
    }

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
    fn conntrack_drops_are_not_rules() {
        let mut s = quiet();
        s.drops.groups = vec![group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::ConntrackIn),
            "udp",
            "10.0.0.2",
            9,
            400,
        )];
        assert!(rule_drops(&s).is_empty());
    }

    #[test]
    fn untold_netfilter_drops_are_a_rule_only_where_conntrack_dropped_nothing() {
        let mut s = quiet();
        let mut g = group("blue", "UNKNOWN", None, "udp", "10.0.0.2", 7777, 20);
        g.location = "nf_hook_slow+0x8e".into();
        s.drops.groups = vec![g];
        let f = rule_drops(&s);
        assert_eq!(f.len(), 1, "blue uses no conntrack");
        assert_eq!(f[0].confidence, Confidence::Medium);
        assert!(f[0].shows("conntrack dropped nothing"));
        s.conntrack = vec![conntrack_dropping("blue", 5)];
        assert!(
            rule_drops(&s).is_empty(),
            "conntrack dropped there: cannot tell"
        );
    }
}
