//! Packets a firewall rule dropped: `NETFILTER_DROP` whose cause the stage sentinels (or the
//! freeing function) say is a rule, not conntrack. Where neither can tell (no netfilter links
//! before 6.4, no drop reasons before 5.17), a netfilter drop in a namespace whose conntrack
//! dropped nothing during the run can only be a rule's: conntrack counts every drop it makes.
//! Which framework from where the kernel freed them: nftables frees in `nft_do_chain`,
//! x_tables in `ip*t_do_table`, a rule's `DROP` verdict otherwise at `nf_hook_slow`. Which rule
//! from the namespace's nftables ruleset: the drop rules at the hooks the sentinels saw whose
//! counters counted packets.
use std::collections::BTreeSet;

use super::{MIN_PACKETS, by_rule, function, inside, namespace_scope, target_evidence};
use crate::model::cause::NF_QUEUE;
use crate::{
    doctor::{CountedDropRule, DropGroup, Snapshot},
    facts::droprules::{DropRule, RuleSource},
    model::{
        cause::{Cause, NFTABLES},
        finding::{Confidence, Evidence, Finding, Scope, Severity},
        shell,
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

/// What a namespace's ruleset says about its rule drops at `hooks` (empty: not told).
enum Culprits<'a> {
    /// Drop rules whose counters counted packets (those that grew while netdoc watched, when
    /// any did), and how many others at those hooks have no counter to tell.
    Counted(Vec<&'a CountedDropRule>, usize),
    /// Drop rules and policies there, none with a counter that counted.
    Uncounted(Vec<&'a CountedDropRule>),
    /// The ruleset holds no drop rule there: not nftables (nor iptables-nft).
    None,
    /// Not read (too many namespaces, or gone), or unreadable, and why.
    Unknown(Option<&'a str>),
}

const RULESET: &str = "nft -j list ruleset and iptables-legacy-save -c, in the namespace";

fn culprits<'a>(s: &'a Snapshot, inode: u32, hooks: &BTreeSet<&str>) -> Culprits<'a> {
    let Some(read) = s.drop_rules.iter().find(|r| r.netns.inode == inode) else {
        return Culprits::Unknown(None);
    };
    if let Some(why) = &read.unavailable {
        return Culprits::Unknown(Some(why));
    }
    let at_hooks: Vec<&CountedDropRule> = read
        .rules
        .iter()
        .filter(|r| match r.rule.hook.as_deref() {
            Some(hook) => hooks.is_empty() || hooks.contains(hook),
            None => true,
        })
        .collect();
    let grew: Vec<&CountedDropRule> = at_hooks
        .iter()
        .copied()
        .filter(|r| r.grew.is_some_and(|n| n > 0))
        .collect();
    let counted = if grew.is_empty() {
        at_hooks
            .iter()
            .copied()
            .filter(|r| r.rule.packets.is_some_and(|n| n > 0))
            .collect()
    } else {
        grew
    };
    let uncounted = at_hooks.iter().filter(|r| r.rule.packets.is_none()).count();
    match (counted.is_empty(), at_hooks.is_empty()) {
        (false, _) => Culprits::Counted(counted, uncounted),
        (true, false) => Culprits::Uncounted(at_hooks),
        (true, true) => Culprits::None,
    }
}

/// ``nftables rule `udp dport 7777 counter drop` (inet filter/input handle 4, input hook)``,
/// or `nftables drop policy (inet filter/input policy, input hook)`.
fn describe(r: &CountedDropRule) -> String {
    let hook = match r.rule.hook.as_deref() {
        Some(h) => format!("{h} hook"),
        None => "a regular chain".into(),
    };
    let what = match r.rule.handle {
        Some(_) => format!("rule `{}`", r.rule.rule),
        None => "drop policy".into(),
    };
    format!(
        "{} {what} ({}, {hook})",
        r.rule.source.name(),
        r.rule.place()
    )
}

fn culprit_evidence(c: &Culprits, scope: &Scope) -> Vec<Evidence> {
    let line = |text: String| Evidence::new(text, RULESET);
    match c {
        Culprits::Counted(rules, uncounted) => {
            let mut lines: Vec<Evidence> = rules
                .iter()
                .take(5)
                .map(|r| {
                    let watched = match r.grew {
                        Some(n) if n > 0 => format!(", {n} of them while netdoc watched"),
                        _ => String::new(),
                    };
                    line(format!(
                        "the {}: its counter reads {} packets{watched}",
                        describe(r),
                        r.rule.packets.unwrap_or(0)
                    ))
                })
                .collect();
            if *uncounted > 0 {
                lines.push(line(format!(
                    "{uncounted} more drop rules or policies there have no counter, so they may have dropped some too"
                )));
            }
            lines
        }
        Culprits::Uncounted(rules) => {
            let each: Vec<String> = rules.iter().take(5).map(|r| describe(r)).collect();
            vec![line(format!(
                "the drop rules and policies there, none with a counter that counted, so which one cannot be told: {}",
                each.join("; ")
            ))]
        }
        Culprits::None => vec![line(format!(
            "neither the nftables ruleset of {} nor its iptables-legacy tables hold a drop rule at these hooks",
            scope.name
        ))],
        Culprits::Unknown(Some(why)) => {
            vec![line(format!("the rules could not be read: {why}"))]
        }
        Culprits::Unknown(None) => vec![],
    }
}

/// The one rule or policy that explains every drop, where the ruleset names exactly one.
fn the_culprit<'a>(c: &Culprits<'a>) -> Option<&'a CountedDropRule> {
    match c {
        Culprits::Counted(rules, 0) if rules.len() == 1 => Some(rules[0]),
        Culprits::Uncounted(rules) if rules.len() == 1 => Some(rules[0]),
        _ => None,
    }
}

/// nft's identifier as its command line takes one unquoted: a letter, `_` or `.`, then
/// letters, digits and `/-_.` (none of which the shell treats specially either). nft 1.0 takes
/// no other table or chain name there, quoted or not.
fn is_nft_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || "_.".contains(c))
        && chars.all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c))
}

/// The table and chain of `r` as words of a command of its tool, or None where no command can
/// name them safely: nft joins its arguments into one line and parses that (a `;` in a name
/// would start a command of its own), so only its plain identifiers go in; iptables takes each
/// argument as it is, so shell quoting suffices.
fn command_words(r: &DropRule) -> Option<(String, String)> {
    if r.source != RuleSource::Nftables {
        return Some((
            shell::quote(&r.table).into_owned(),
            shell::quote(&r.chain).into_owned(),
        ));
    }
    let (family, name) = r.table.split_once(' ')?;
    let families = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];
    (families.contains(&family) && is_nft_identifier(name) && is_nft_identifier(&r.chain))
        .then(|| (r.table.clone(), r.chain.clone()))
}

/// The fix for one named rule or policy: where it is, and how to let wanted traffic through;
/// where its names cannot go into a command, where to find it and what to do, in words.
fn culprit_fix(r: &CountedDropRule, scope: &Scope, wanted: Option<(&str, u16)>) -> Vec<String> {
    let tool = r.rule.source.tool();
    let nft = r.rule.source == RuleSource::Nftables;
    let Some((table, chain)) = command_words(&r.rule) else {
        let unnamed = format!(
            "{}, in {} (its table or chain name cannot be written into a command safely)",
            r.rule.place(),
            inside(scope, "nft -a list ruleset")
        );
        return match r.rule.handle {
            Some(_) => vec![
                format!("the rule: {unnamed}"),
                "if the traffic is wanted, accept it before that rule or delete the rule; if not, REJECT instead of DROP so clients fail fast instead of timing out".into(),
            ],
            None => vec![
                format!("the chain's policy drops what no rule accepted: {unnamed}"),
                "if the traffic is wanted, accept it in that chain".into(),
            ],
        };
    };
    let wanted = match (wanted, nft) {
        (Some((proto, port)), true) => format!("{proto} dport {port}"),
        (Some((proto, port)), false) => format!("-p {proto} --dport {port}"),
        (None, _) => "MATCH".into(),
    };
    let show = inside(
        scope,
        &if nft {
            format!("nft -a list chain {table} {chain}")
        } else {
            format!("{tool} -t {table} -L {chain} -v -n --line-numbers")
        },
    );
    let accept = |position: Option<u64>| {
        inside(
            scope,
            &match (nft, position) {
                (true, Some(h)) => {
                    format!("nft insert rule {table} {chain} position {h} {wanted} accept")
                }
                (true, None) => format!("nft add rule {table} {chain} {wanted} accept"),
                (false, Some(n)) => format!("{tool} -t {table} -I {chain} {n} {wanted} -j ACCEPT"),
                (false, None) => format!("{tool} -t {table} -I {chain} {wanted} -j ACCEPT"),
            },
        )
    };
    match r.rule.handle {
        Some(handle) => {
            let delete = if nft {
                format!("nft delete rule {table} {chain} handle {handle}")
            } else {
                format!("{tool} -t {table} -D {chain} {handle}")
            };
            vec![
                format!("the rule: {show} ({})", r.rule.place()),
                format!(
                    "if the traffic is wanted, accept it before that rule ({}) or delete the rule ({}); if not, REJECT instead of DROP so clients fail fast instead of timing out",
                    accept(Some(handle)),
                    inside(scope, &delete)
                ),
            ]
        }
        None => vec![
            format!("the chain's policy drops what no rule accepted: {show}"),
            format!(
                "if the traffic is wanted, accept it in that chain ({})",
                accept(None)
            ),
        ],
    }
}

/// The protocol and port of the busiest destination's traffic, to accept it by.
fn wanted_traffic<'a>(groups: &[&'a DropGroup]) -> Option<(&'a str, u16)> {
    let g = groups.iter().max_by_key(|g| g.events)?;
    let proto = g
        .proto
        .as_deref()
        .filter(|p| ["tcp", "udp", "sctp"].contains(p))?;
    Some((proto, g.targets.first()?.dport?))
}

pub fn rule_drops(s: &Snapshot) -> Vec<Finding> {
    super::groups_by_namespace(s, |g| by_rule(s, g))
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
            // Groups told and untold (before the sentinels came) share their destinations.
            let mut ports: Vec<String> = Vec::new();
            for t in groups.iter().flat_map(|g| &g.targets) {
                if ports.len() < 3 && !ports.contains(&t.to) {
                    ports.push(t.to.clone());
                }
            }
            let hooks: BTreeSet<&str> =
                groups.iter().flat_map(|g| g.hooks.keys().map(String::as_str)).collect();
            let culprits = culprits(s, inode, &hooks);
            evidence.extend(culprit_evidence(&culprits, &scope));
            let told = groups
                .iter()
                .all(|g| g.cause == Some(Cause::Firewall) || function(&g.location) == NFTABLES);
            if !told {
                evidence.push(Evidence::new(
                    format!("conntrack dropped nothing in {scope} during the run, so no conntrack drop hides among these"),
                    "/proc/net/stat/nf_conntrack drop, insert_failed",
                ));
            }
            let mut finding = Finding {
                explains: super::claims(&groups),
                id: "firewall_drop".into(),
                severity: Severity::Warning,
                confidence: if told { Confidence::High } else { Confidence::Medium },
                title: match the_culprit(&culprits) {
                    Some(r) => format!(
                        "{packets} packets were dropped by the {} {} ({})",
                        r.rule.source.name(),
                        match r.rule.handle {
                            Some(_) => format!("rule `{}` in {}", r.rule.rule, r.rule.place()),
                            None => format!("policy of chain {}/{}", r.rule.table, r.rule.chain),
                        },
                        ports.join(", ")
                    ),
                    None => format!(
                        "{packets} packets were dropped by {} ({})",
                        frameworks.join(" and "),
                        ports.join(", ")
                    ),
                },
                fix: match the_culprit(&culprits) {
                    Some(r) => culprit_fix(r, &scope, wanted_traffic(&groups)),
                    None => vec![
                        format!(
                            "find the rule: {} and {}",
                            inside(&scope, "nft -a list ruleset | grep -n drop"),
                            inside(&scope, "iptables-save -c | grep -e DROP -e REJECT")
                        ),
                        "if the traffic is wanted, allow it before that rule; if not, REJECT instead of DROP so clients fail fast instead of timing out".into(),
                    ],
                },
                scope: scope.clone(),
                affected: packets,
                evidence,
            };
            if let Some(r) = the_culprit(&culprits).filter(|r| drops_invalid(&r.rule.rule)) {
                invalid_state(s, inode, r, &mut finding);
            }
            Some(finding)
        })
        .collect()
}

/// A rule that drops what conntrack marked invalid: `ct state invalid` (nft), `--ctstate
/// INVALID` or `--state INVALID` (x_tables).
fn drops_invalid(rule: &str) -> bool {
    let words: Vec<&str> = rule.split_whitespace().collect();
    words
        .windows(3)
        .any(|w| w[0] == "ct" && w[1] == "state" && w[2].split(',').any(|s| s == "invalid"))
        || words.windows(2).any(|w| {
            ["--ctstate", "--state"].contains(&w[0]) && w[1].split(',').any(|s| s == "INVALID")
        })
}

/// A drop of conntrack's invalid packets is conntrack's verdict carried out by a rule: the
/// packets fit no connection it tracks. Named as such, with conntrack's own count and what
/// usually makes packets invalid, told apart from a rule that drops traffic by what it is.
fn invalid_state(s: &Snapshot, inode: u32, r: &CountedDropRule, f: &mut Finding) {
    f.id = "conntrack_invalid_drop".into();
    let invalid: u64 = s
        .conntrack
        .iter()
        .filter(|c| c.netns.inode == inode)
        .map(|c| c.attribution.invalid)
        .sum();
    f.title = format!(
        "{} packets conntrack found invalid (they fit no connection it tracks) were dropped by the rule `{}` in {}",
        f.affected,
        r.rule.rule,
        r.rule.place()
    );
    if invalid > 0 {
        f.evidence.push(Evidence::new(
            format!("conntrack counted {invalid} invalid packets in {}", f.scope),
            "/proc/net/stat/nf_conntrack invalid",
        ));
    }
    f.fix.insert(
        0,
        format!(
            "find what makes them invalid: the usual causes are an asymmetric path (the replies take another way and conntrack never sees the handshake), connections older than conntrack's entries (a flush, a failover), TCP out of window; {} has the kernel log why",
            inside(&f.scope, "sysctl -w net.netfilter.nf_conntrack_log_invalid=255")
        ),
    );
    f.fix.insert(
        1,
        format!(
            "if the path is asymmetric by design, let conntrack accept out-of-window TCP: {}",
            inside(
                &f.scope,
                "sysctl -w net.netfilter.nf_conntrack_tcp_be_liberal=1"
            )
        ),
    );
}

/// Packets a rule queued to an NFQUEUE queue no program reads (and that may not bypass it):
/// freed at `nf_queue`, every one, until a program binds the queue. The rule that queued them
/// is the one whose counter grew.
pub fn unread_queues(s: &Snapshot) -> Vec<Finding> {
    super::groups_by_namespace(s, |g| function(&g.location) == NF_QUEUE)
        .into_iter()
        .filter_map(|(inode, groups)| {
            let packets: u64 = groups.iter().map(|g| g.events).sum();
            if packets < MIN_PACKETS {
                return None;
            }
            let scope = namespace_scope(groups.iter().find_map(|g| g.netns_name.as_deref()), inode);
            let mut evidence: Vec<Evidence> = groups
                .iter()
                .map(|g| {
                    Evidence::new(
                        format!("{} packets freed at {} ({}): queued to a queue no program reads", g.events, g.location, g.reason),
                        format!("skb:kfree_skb {}@{}", g.reason, g.location),
                    )
                })
                .collect();
            // The rule whose counter grew while netdoc watched first; a burst may be over before
            // the first reading, so one whose counter counted any packet otherwise.
            let mut queuing: Vec<&CountedDropRule> = s
                .drop_rules
                .iter()
                .filter(|r| r.netns.inode == inode)
                .flat_map(|r| &r.rules)
                .filter(|r| r.rule.rule.split_whitespace().any(|w| w == "queue" || w == "NFQUEUE"))
                .filter(|r| r.grew.unwrap_or(0) > 0 || r.rule.packets.unwrap_or(0) > 0)
                .collect();
            queuing.sort_by_key(|r| std::cmp::Reverse((r.grew.unwrap_or(0), r.rule.packets.unwrap_or(0))));
            for r in queuing.iter().take(3) {
                evidence.push(Evidence::new(
                    format!(
                        "the {} rule `{}` in {} queues them{}",
                        r.rule.source.name(),
                        r.rule.rule,
                        r.rule.place(),
                        r.grew.map_or(String::new(), |g| format!("; its counter grew by {g} while netdoc watched"))
                    ),
                    RULESET,
                ));
            }
            evidence.extend(groups.iter().flat_map(|g| target_evidence(g)));
            Some(Finding {
                id: "nfqueue_unread".into(),
                severity: Severity::Critical,
                confidence: if queuing.is_empty() { Confidence::Medium } else { Confidence::High },
                title: match queuing.first() {
                    Some(r) => format!(
                        "{packets} packets were dropped in {scope} because the rule `{}` ({}) queues them to an NFQUEUE queue no program reads",
                        r.rule.rule,
                        r.rule.place()
                    ),
                    None => format!("{packets} packets were dropped in {scope}: queued to an NFQUEUE queue no program reads"),
                },
                affected: packets,
                evidence,
                fix: vec![
                    "start the program that reads the queue (an IPS, a userspace filter), or let packets pass while none does: nft `queue num N bypass`, iptables `-j NFQUEUE --queue-num N --queue-bypass`".into(),
                    format!(
                        "the queueing rules: {}",
                        match queuing.first().map(|r| r.rule.source) {
                            Some(source) if source != RuleSource::Nftables => inside(&scope, &format!("{}-save -c | grep NFQUEUE", source.tool())),
                            _ => inside(&scope, "nft -a list ruleset | grep -n queue"),
                        }
                    ),
                ],
                explains: super::claims(&groups),
                scope,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::rules::fixtures::*;

    fn drop_rule(
        hook: &str,
        handle: Option<u64>,
        packets: Option<u64>,
        grew: Option<u64>,
    ) -> CountedDropRule {
        CountedDropRule {
            rule: crate::facts::droprules::DropRule {
                source: RuleSource::Nftables,
                table: "inet filt".into(),
                chain: hook.into(),
                hook: Some(hook.into()),
                handle,
                rule: match handle {
                    Some(h) => format!("udp dport {h} counter drop"),
                    None => "policy drop".into(),
                },
                packets,
            },
            grew,
        }
    }

    fn read(rules: Vec<CountedDropRule>) -> crate::doctor::NamespaceDropRules {
        crate::doctor::NamespaceDropRules {
            netns: crate::namespaces::NetnsRef::named("blue"),
            rules,
            unavailable: None,
        }
    }

    fn input_drops() -> Snapshot {
        let mut s = quiet();
        let mut g = group(
            "blue",
            "NETFILTER_DROP",
            Some(Cause::Firewall),
            "udp",
            "10.0.0.2",
            7777,
            12,
        );
        g.hooks = [("input".to_string(), 12)].into();
        s.drops.groups = vec![g];
        s
    }

    #[test]
    fn packets_queued_to_a_queue_nobody_reads_name_the_queueing_rule() {
        let mut s = quiet();
        let mut g = group("blue", "NOT_SPECIFIED", None, "udp", "10.0.0.2", 5000, 30);
        g.location = "nf_queue+0x9a".into();
        s.drops.groups = vec![g.clone()];
        let mut queue = drop_rule("INPUT", Some(1), Some(30), Some(30));
        queue.rule.rule = "-p udp -m udp --dport 5000 -j NFQUEUE --queue-num 5".into();
        queue.rule.source = RuleSource::IptablesLegacy;
        let mut r = read(vec![queue]);
        r.netns.inode = g.netns;
        s.drop_rules = vec![r];
        let found = super::super::all(&s);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(
            (f.id.as_ref(), f.severity, f.affected),
            ("nfqueue_unread", Severity::Critical, 30)
        );
        assert!(f.title.contains("--queue-num 5"), "{}", f.title);
        assert!(f.fix[0].contains("--queue-bypass"), "{:?}", f.fix);
    }

    #[test]
    fn a_rule_dropping_conntrack_invalid_packets_is_told_apart_from_a_plain_rule() {
        let mut s = input_drops();
        let mut invalid = drop_rule("input", Some(4), Some(40), Some(12));
        invalid.rule.rule = "ct state invalid counter drop".into();
        s.drop_rules = vec![read(vec![invalid])];
        let mut ct = conntrack_dropping("blue", 0);
        ct.netns.inode = s.drops.groups[0].netns;
        ct.attribution.invalid = 12;
        s.conntrack = vec![ct];
        let f = &rule_drops(&s)[0];
        assert_eq!(f.id, "conntrack_invalid_drop", "{f:#?}");
        assert!(f.title.contains("conntrack found invalid"), "{}", f.title);
        assert!(f.shows("conntrack counted 12 invalid packets"), "{f:#?}");
        assert!(f.fix[0].contains("asymmetric path"), "{:?}", f.fix);
        assert!(
            f.fix[1].contains("nf_conntrack_tcp_be_liberal=1"),
            "{:?}",
            f.fix
        );
        for rule in [
            "ct state invalid drop",
            "ct state established,invalid counter drop",
            "-m conntrack --ctstate INVALID -j DROP",
            "-m state --state INVALID -j DROP",
        ] {
            assert!(drops_invalid(rule), "{rule}");
        }
        for rule in [
            "udp dport 53 drop",
            "ct state new counter drop",
            "-m comment --comment \"ct state invalid\" -j DROP",
        ] {
            assert!(!drops_invalid(rule), "{rule}");
        }
    }

    #[test]
    fn the_rule_whose_counter_grew_at_the_hook_is_named_with_a_fix_for_it() {
        let mut s = input_drops();
        s.drop_rules = vec![read(vec![
            drop_rule("input", Some(4), Some(40), Some(12)),
            drop_rule("input", Some(6), Some(500), Some(0)),
            drop_rule("forward", Some(9), Some(80), Some(80)),
        ])];
        let f = &rule_drops(&s)[0];
        assert!(
            f.title
                .contains("nftables rule `udp dport 4 counter drop` in inet filt/input handle 4"),
            "{}",
            f.title
        );
        assert!(f.shows("its counter reads 40 packets, 12 of them while netdoc watched"));
        assert!(!f.shows("handle 6"), "its counter did not grow: {f:#?}");
        assert!(!f.shows("handle 9"), "another hook");
        assert!(f.fix[1].contains("ip netns exec blue nft insert rule inet filt input position 4 udp dport 7777 accept"), "{:?}", f.fix);
        assert!(f.fix[1].contains("nft delete rule inet filt input handle 4"));
    }

    #[test]
    fn an_iptables_legacy_rule_gets_iptables_commands() {
        let mut s = input_drops();
        let mut legacy = drop_rule("input", Some(2), Some(12), Some(12));
        legacy.rule.source = RuleSource::IptablesLegacy;
        legacy.rule.table = "filter".into();
        legacy.rule.chain = "INPUT".into();
        legacy.rule.rule = "-p udp -m udp --dport 7777 -j DROP".into();
        s.drop_rules = vec![read(vec![legacy])];
        let f = &rule_drops(&s)[0];
        assert!(
            f.title.contains("by the iptables-legacy rule `-p udp -m udp --dport 7777 -j DROP` in filter/INPUT rule 2"),
            "{}",
            f.title
        );
        assert!(f.fix[0].contains(
            "ip netns exec blue iptables-legacy -t filter -L INPUT -v -n --line-numbers"
        ));
        assert!(
            f.fix[1].contains("iptables-legacy -t filter -I INPUT 2 -p udp --dport 7777 -j ACCEPT"),
            "{:?}",
            f.fix
        );
        assert!(f.fix[1].contains("iptables-legacy -t filter -D INPUT 2"));
    }

    #[test]
    fn hostile_table_and_chain_names_never_reach_a_command_unquoted() {
        let mut s = input_drops();
        let mut hostile = drop_rule("input", Some(4), Some(12), Some(12));
        hostile.rule.chain = "c$(echo INJECTED-CHAIN>&2)".into();
        s.drop_rules = vec![read(vec![hostile.clone()])];
        let f = &rule_drops(&s)[0];
        assert_eq!(
            f.fix,
            [
                "the rule: inet filt/c$(echo INJECTED-CHAIN>&2) handle 4, in `ip netns exec blue nft -a list ruleset` (its table or chain name cannot be written into a command safely)",
                "if the traffic is wanted, accept it before that rule or delete the rule; if not, REJECT instead of DROP so clients fail fast instead of timing out",
            ]
        );
        // nft parses its joined arguments: a `;` in a table's name would be a command of its own.
        hostile.rule.chain = "input".into();
        hostile.rule.table = "inet t;flush ruleset".into();
        s.drop_rules = vec![read(vec![hostile.clone()])];
        assert!(
            rule_drops(&s)[0]
                .fix
                .iter()
                .all(|x| !x.contains("nft delete"))
        );
        // iptables takes its arguments as they are: quoted, the chain is one word.
        hostile.rule.source = RuleSource::IptablesLegacy;
        (hostile.rule.table, hostile.rule.chain) = ("filter".into(), "X;id`id`".into());
        s.drop_rules = vec![read(vec![hostile])];
        let f = &rule_drops(&s)[0];
        assert!(
            f.fix[1].contains("(`ip netns exec blue iptables-legacy -t filter -D 'X;id`id`' 4`)"),
            "{:?}",
            f.fix
        );
    }

    #[test]
    fn rules_without_counters_are_candidates_not_a_culprit() {
        let mut s = input_drops();
        s.drop_rules = vec![read(vec![
            drop_rule("input", Some(4), None, None),
            drop_rule("input", None, None, None),
        ])];
        let f = &rule_drops(&s)[0];
        assert!(
            f.title
                .contains("packets were dropped by a netfilter rule ("),
            "{}",
            f.title
        );
        assert!(f.shows("none with a counter that counted, so which one cannot be told"));
        assert!(f.shows("inet filt/input policy"));
        // One policy alone is the culprit.
        s.drop_rules = vec![read(vec![drop_rule("input", None, None, None)])];
        let f = &rule_drops(&s)[0];
        assert!(
            f.title
                .contains("by the nftables policy of chain inet filt/input"),
            "{}",
            f.title
        );
        assert!(f.fix[1].contains("nft add rule inet filt input udp dport 7777 accept"));
        // A counted rule beside an uncounted one: named as evidence, not as the one culprit.
        s.drop_rules = vec![read(vec![
            drop_rule("input", Some(4), Some(12), None),
            drop_rule("input", None, None, None),
        ])];
        let f = &rule_drops(&s)[0];
        assert!(f.shows("1 more drop rules or policies there have no counter"));
        assert!(!f.title.contains("handle 4"));
    }

    #[test]
    fn no_drop_rule_at_the_hooks_is_said_and_an_unreadable_ruleset_says_why() {
        let mut s = input_drops();
        s.drop_rules = vec![read(vec![drop_rule(
            "forward",
            Some(4),
            Some(12),
            Some(12),
        )])];
        assert!(
            rule_drops(&s)[0]
                .shows("nor its iptables-legacy tables hold a drop rule at these hooks")
        );
        let mut unreadable = read(vec![]);
        unreadable.unavailable = Some("nft -a list ruleset: No such file or directory".into());
        s.drop_rules = vec![unreadable];
        assert!(rule_drops(&s)[0].shows("the rules could not be read: nft -a list ruleset"));
    }

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
    fn drops_before_and_after_the_sentinels_came_name_their_destination_once() {
        let mut s = input_drops();
        let mut before = s.drops.groups[0].clone();
        (before.cause, before.hooks) = (Some(Cause::Unclassified), Default::default());
        s.drops.groups.push(before);
        let f = &rule_drops(&s)[0];
        assert!(f.title.ends_with("(udp > 10.0.0.2:7777)"), "{}", f.title);
        assert_eq!(f.affected, 24, "{f:#?}");
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
