//! Every drop accounted for: the drops no other finding explains, grouped by namespace, reason
//! and freeing function, each above the noise a finding of its own that says what the reason
//! means, where, how many, the flows, the counters that moved with it and how to look closer.
//! A doctor that names only what it was taught and calls the rest healthy makes the engineer
//! stop looking. Drops that are not loss (a duplicate the receiver already had) are counted as
//! such, never reported as a problem.
use std::collections::BTreeMap;

use super::{MIN_PACKETS, NO_REASON, counted_in, function, grew, inside, namespace_scope};
use crate::{
    doctor::{DropAccounting, DropGroup, Snapshot},
    model::{
        explain::{self, DropKind},
        finding::{Confidence, DropClaim, Evidence, Finding, Severity},
    },
};

/// The id of the findings this rule makes.
pub const ID: &str = "unexplained_drops";

/// Drops of one namespace, reason and freeing function that no finding explains.
#[derive(Debug)]
struct Leftover<'a> {
    netns: u32,
    reason: &'a str,
    function: &'a str,
    groups: Vec<&'a DropGroup>,
    /// The drops it stands for: its delivered events, scaled up by its sites' share of the
    /// kernel's exact counts where events were sampled out or lost.
    drops: u64,
}

/// The findings for the drops `found` does not explain.
pub fn unexplained(s: &Snapshot, found: &[Finding]) -> Vec<Finding> {
    leftovers(s, found)
        .into_iter()
        .filter(|l| l.drops >= MIN_PACKETS && harmless(l.reason, l.function).is_none())
        .map(|l| finding(s, &l))
        .collect()
}

/// Where every drop of the run went: into a finding, the harmless, or the noise.
pub fn accounting(s: &Snapshot, findings: &[Finding]) -> DropAccounting {
    let mut out = DropAccounting::default();
    let scale = Scale::of(s);
    for g in &s.drops.groups {
        let drops = scale.drops(g);
        let at = function(&g.location);
        if let Some(key) = harmless(&g.reason, at) {
            *out.harmless.entry(key).or_default() += drops;
        } else if explained_by(findings, g) {
            out.explained += drops;
        } else {
            out.below_noise += drops;
        }
    }
    out
}

/// What a drop that is no loss is counted as: a benign reason by its name, a harmless site of
/// an unspecific one as `REASON@function`.
fn harmless(reason: &str, function: &str) -> Option<String> {
    if explain::explain(reason).is_some_and(|e| e.kind == DropKind::Benign) {
        return Some(reason.to_string());
    }
    explain::harmless_at(reason, function).map(|_| format!("{reason}@{function}"))
}

fn explained_by(findings: &[Finding], g: &DropGroup) -> bool {
    findings
        .iter()
        .flat_map(|f| &f.explains)
        .any(|c| c.covers(g.netns, &g.reason, &g.location))
}

/// The kernel's exact count of each site against the events delivered of it: a group's drops
/// are its events times its site's ratio (1 when every event was delivered).
struct Scale<'a> {
    sites: BTreeMap<(&'a str, &'a str), (u64, u64)>,
}

impl<'a> Scale<'a> {
    fn of(s: &'a Snapshot) -> Self {
        let mut sites: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
        for r in &s.drops.sites {
            sites.entry((&r.reason, &r.location)).or_default().0 += r.count;
        }
        for g in &s.drops.groups {
            if let Some(site) = sites.get_mut(&(g.reason.as_str(), g.location.as_str())) {
                site.1 += g.events;
            }
        }
        Self { sites }
    }

    fn drops(&self, g: &DropGroup) -> u64 {
        match self.sites.get(&(g.reason.as_str(), g.location.as_str())) {
            Some((counted, delivered)) if *delivered > 0 && counted > delivered => {
                (g.events as u128 * *counted as u128 / *delivered as u128) as u64
            }
            _ => g.events,
        }
    }
}

fn leftovers<'a>(s: &'a Snapshot, found: &[Finding]) -> Vec<Leftover<'a>> {
    let scale = Scale::of(s);
    let mut by_key: BTreeMap<(u32, &str, &str), Leftover> = BTreeMap::new();
    for g in s.drops.groups.iter().filter(|g| !explained_by(found, g)) {
        let key = (g.netns, g.reason.as_str(), function(&g.location));
        let l = by_key.entry(key).or_insert_with(|| Leftover {
            netns: g.netns,
            reason: &g.reason,
            function: function(&g.location),
            groups: Vec::new(),
            drops: 0,
        });
        l.drops += scale.drops(g);
        l.groups.push(g);
    }
    let mut out: Vec<Leftover> = by_key.into_values().collect();
    out.sort_by_key(|l| std::cmp::Reverse(l.drops));
    out
}

fn finding(s: &Snapshot, l: &Leftover) -> Finding {
    let name = l.groups.iter().find_map(|g| g.netns_name.as_deref());
    let scope = namespace_scope(name, l.netns);
    let what = explain::explain(l.reason);
    let meaning = what.map_or(
        "netdoc has no explanation of its own for this reason: the kernel's include/net/dropreason*.h documents it",
        |e| e.meaning,
    );
    let source = |g: &DropGroup| format!("skb:kfree_skb {}@{}", g.reason, g.location);
    let delivered: u64 = l.groups.iter().map(|g| g.events).sum();
    let mut evidence = vec![Evidence::new(
        format!(
            "{} packets dropped with reason {} in {}{}: {meaning}",
            l.drops,
            l.reason,
            l.function,
            match delivered == l.drops {
                true => String::new(),
                false => format!(
                    " ({delivered} delivered as events, the rest counted at the same sites)"
                ),
            }
        ),
        source(l.groups[0]),
    )];
    let mut devices: Vec<&str> = Vec::new();
    let mut flows = 0;
    for g in &l.groups {
        for t in &g.targets {
            if flows < 3 {
                evidence.push(Evidence::new(
                    format!("{} packets {} (e.g. {})", t.events, t.to, t.example),
                    source(g),
                ));
                flows += 1;
            }
        }
        devices.extend(g.devices.iter().map(String::as_str));
    }
    devices.sort_unstable();
    devices.dedup();
    let mut senders: Vec<(&str, u64)> = l
        .groups
        .iter()
        .flat_map(|g| g.senders.iter().map(|(from, n)| (from.as_str(), *n)))
        .collect();
    senders.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    if !senders.is_empty() {
        let shown: Vec<String> = senders
            .iter()
            .take(3)
            .map(|(from, n)| format!("{from} ({n})"))
            .collect();
        evidence.push(Evidence::new(
            format!("sent by {}", shown.join(", ")),
            source(l.groups[0]),
        ));
    }
    if !devices.is_empty() {
        evidence.push(Evidence::new(
            format!("on device {}", devices.join(", ")),
            source(l.groups[0]),
        ));
    }
    let ns = counted_in(s, l.netns);
    for counter in what.map_or(&[][..], |e| e.counters) {
        let n = grew(ns, counter);
        if n > 0 {
            evidence.push(Evidence::new(
                format!("{counter} grew by {n}"),
                ns.map_or(counter.to_string(), |ns| super::counter_source(counter, ns)),
            ));
        }
    }
    // Before 5.17 `kfree_skb` has no reason and also frees packets that were never dropped:
    // a note to look at, not a verdict.
    let reasonless = l.reason == NO_REASON;
    if reasonless {
        evidence.push(Evidence::new(
            "this kernel's kfree_skb carries no drop reason (before 5.17) and also frees packets that were not dropped: only the function tells",
            "skb:kfree_skb format (no reason field)",
        ));
    }
    let mut fix = vec![format!(
        "look closer: netdoc drops --reason {}{} --stack",
        l.reason,
        match scope.kind {
            crate::model::finding::ScopeKind::Host => String::new(),
            _ => format!(" --netns {}", scope.name),
        }
    )];
    if let Some(e) = what {
        fix.push(format!("what decides it: {}", e.look_at));
    }
    fix.push(inside(&scope, "nstat -az"));
    Finding {
        id: ID.into(),
        severity: match reasonless {
            true => Severity::Info,
            false => Severity::Warning,
        },
        // The kernel said it dropped them and why; what to change is the reader's call.
        confidence: Confidence::Medium,
        title: format!(
            "{} packets dropped in {scope} ({} in {}), which no other finding explains",
            l.drops, l.reason, l.function
        ),
        scope,
        affected: l.drops,
        evidence,
        fix,
        explains: l
            .groups
            .iter()
            .map(|g| DropClaim::at(g.netns, &g.reason, &g.location))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::rules::{all, fixtures::*};
    use crate::drops::report::Row;

    fn site(reason: &str, location: &str, count: u64) -> Row {
        Row {
            reason: reason.into(),
            reason_code: None,
            cause: None,
            location: location.into(),
            count,
            rate: 0.0,
            cpus: BTreeMap::from([(0, count)]),
            last_flow: None,
        }
    }

    #[test]
    fn a_drop_no_rule_knows_is_a_finding_with_its_meaning_counters_and_next_step() {
        let mut s = quiet();
        let mut g = group("blue", "IP_NOPROTO", None, "253", "10.0.0.2", 0, 50);
        g.location = "ip_local_deliver_finish+0x81".into();
        s.drops.groups = vec![g.clone()];
        s.counted = vec![counted("blue", &[("Ip.InUnknownProtos", 50)], &[])];
        s.counted[0].netns.inode = g.netns;
        let found = all(&s);
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(
            (f.id.as_ref(), f.severity, f.affected),
            (ID, Severity::Warning, 50)
        );
        assert_eq!(f.scope.name, "blue");
        assert!(
            f.title.contains("IP_NOPROTO in ip_local_deliver_finish"),
            "{}",
            f.title
        );
        assert!(
            f.shows("IP protocol number"),
            "the catalogue's meaning: {f:#?}"
        );
        assert!(f.shows("Ip.InUnknownProtos grew by 50"), "{f:#?}");
        assert!(f.shows("on device eth0"), "{f:#?}");
        assert_eq!(
            f.fix[0],
            "look closer: netdoc drops --reason IP_NOPROTO --netns blue --stack"
        );
        assert!(f.explains[0].covers(g.netns, "IP_NOPROTO", &g.location));
        let accounted = accounting(&s, &found);
        assert_eq!(accounted.explained, 50);
    }

    #[test]
    fn duplicates_and_noise_are_accounted_for_without_a_finding() {
        let mut s = quiet();
        let dup = group(
            "blue",
            "TCP_OLD_SEQUENCE",
            None,
            "tcp",
            "10.0.0.2",
            5201,
            4000,
        );
        let mut mc = group("blue", "NOT_SPECIFIED", None, "icmpv6", "ff02::2", 0, 30);
        mc.location = "ip6_mc_input+0xd4".into();
        let stray = group("blue", "IP_CSUM", None, "udp", "10.0.0.2", 53, 3);
        s.drops.groups = vec![dup, mc, stray];
        let found = all(&s);
        assert!(found.is_empty(), "{found:#?}");
        let a = accounting(&s, &found);
        assert_eq!(a.explained, 0);
        assert_eq!(a.below_noise, 3);
        assert_eq!(
            a.harmless,
            BTreeMap::from([
                ("NOT_SPECIFIED@ip6_mc_input".to_string(), 30),
                ("TCP_OLD_SEQUENCE".to_string(), 4000)
            ])
        );
    }

    #[test]
    fn drops_a_rule_explains_are_not_explained_again() {
        let mut s = quiet();
        s.drops.groups = vec![group("blue", "NO_SOCKET", None, "udp", "10.0.0.2", 9, 40)];
        let found = all(&s);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].id, "udp_no_listener");
        assert_eq!(accounting(&s, &found).explained, 40);
    }

    #[test]
    fn sampled_events_stand_for_the_kernels_exact_count() {
        let mut s = quiet();
        let mut g = group("blue", "IP_NOPROTO", None, "udp", "10.0.0.2", 53, 8);
        g.location = "ip_local_deliver_finish+0x81".into();
        s.drops.groups = vec![g];
        s.drops.sites = vec![site("IP_NOPROTO", "ip_local_deliver_finish+0x81", 80)];
        s.drops.sampled = 72;
        let found = all(&s);
        let f = found.iter().find(|f| f.id == ID).unwrap();
        assert_eq!(f.affected, 80, "{found:#?}");
        assert!(f.shows("8 delivered as events"), "{found:#?}");
    }

    #[test]
    fn a_reasonless_kernels_frees_are_a_note_not_a_verdict() {
        let mut s = quiet();
        let mut g = group("blue", "UNKNOWN", None, "tcp", "10.0.0.2", 80, 40);
        g.location = "tcp_data_queue+0x1f0".into();
        s.drops.groups = vec![g];
        let found = all(&s);
        assert_eq!(found[0].severity, Severity::Info, "{found:#?}");
        assert!(!crate::doctor::anything_wrong(&found));
    }

    #[test]
    fn a_reason_netdoc_has_no_text_for_is_still_reported_by_name_and_location() {
        let mut s = quiet();
        let mut g = group(
            "blue",
            "SOME_FUTURE_REASON",
            None,
            "udp",
            "10.0.0.2",
            53,
            12,
        );
        g.location = "future_rcv+0x10".into();
        s.drops.groups = vec![g];
        let f = &all(&s)[0];
        assert!(
            f.title.contains("SOME_FUTURE_REASON in future_rcv"),
            "{}",
            f.title
        );
        assert!(f.shows("netdoc has no explanation of its own"), "{f:#?}");
    }
}
