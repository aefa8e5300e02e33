//! Loss on the path, seen only as retransmits: an MTU black hole (full-sized segments stuck,
//! no ICMP), and other flows that keep retransmitting one segment. A local drop of the same
//! destination turns "somewhere on the path" into "here", with its reason; a SYN retransmitted
//! to a local listener whose accept queue overflowed is that listener's finding, not the path's.
//! Retransmits are loss only when the namespace's counters say so: fast retransmits that the
//! peers reported as duplicates (DSACK) with no retransmission timeout are reordering (veth's
//! per-CPU backlogs reorder by themselves), and the duplicates a receiver discards stall
//! nothing. A flow whose namespace no process or name holds any more (an orphaned socket of a
//! deleted namespace retransmits until it times out) is said to be so and ranked below.
use std::collections::BTreeMap;

use super::{
    MIN_PACKETS, NO_REASON, at_overflowing_listener, by_rule, counted_in, function, grew,
    namespace_scope,
};
use crate::{
    doctor::Snapshot,
    model::{
        explain::{self, DropKind},
        finding::{Confidence, DropClaim, Evidence, Finding, Scope, ScopeKind, Severity},
    },
    retrans::{mtu, report::FlowRow},
};

/// States of a closing connection: a peer that went away leaves these retransmitting, which
/// says nothing about the path.
const CLOSING: [&str; 5] = [
    "FIN_WAIT1",
    "FIN_WAIT2",
    "CLOSING",
    "LAST_ACK",
    "CLOSE_WAIT",
];

pub fn retransmits(s: &Snapshot) -> Vec<Finding> {
    let mut holes = mtu::black_holes(&s.retrans);
    for h in &mut holes {
        if let Some(f) = s
            .retrans
            .iter()
            .find(|f| h.scope.name.starts_with(&f.id.flow))
        {
            orphaned(s, f, h);
        }
    }
    let icmp_by_rule: Vec<_> = s
        .drops
        .groups
        .iter()
        .filter(|g| matches!(g.proto.as_deref(), Some("icmp" | "icmpv6")) && by_rule(s, g))
        .collect();
    for h in &mut holes {
        // A rule on this host dropping ICMP: that is where "fragmentation needed" dies.
        for g in &icmp_by_rule {
            h.severity = Severity::Critical;
            h.confidence = Confidence::High;
            h.evidence.push(Evidence::new(
                format!(
                    "{} {} packets were dropped by a firewall rule on this host (namespace {}): \"fragmentation needed\" among them makes this black hole",
                    g.events,
                    g.proto.as_deref().unwrap_or("icmp"),
                    g.netns_name.as_deref().unwrap_or("?")
                ),
                format!("skb:kfree_skb {}@{}", g.reason, g.location),
            ));
        }
    }
    // Stalled flows per namespace and destination: one finding however many connections.
    let mut stalls: BTreeMap<(u32, String), Vec<&FlowRow>> = BTreeMap::new();
    for f in s.retrans.iter().filter(|f| {
        f.max_same_seq >= mtu::STUCK_RETRIES
            && !CLOSING.contains(&f.state.as_ref())
            && !Retransmits::of(s, f.id.netns).reordering()
            && !holes.iter().any(|h| h.scope.name.starts_with(&f.id.flow))
            && !at_overflowing_listener(s, f)
    }) {
        let to = destination(f).unwrap_or_else(|| f.id.flow.clone());
        stalls.entry((f.id.netns, to)).or_default().push(f);
    }
    // One connection's few retries are a peer that went away as often as a lossy path.
    let mut out: Vec<Finding> = stalls
        .into_iter()
        .filter(|(_, flows)| flows.iter().map(|f| f.retransmits).sum::<u64>() >= MIN_PACKETS)
        .map(|((_, to), flows)| stalled(s, &to, &flows))
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

/// What a namespace's counters say of its retransmits over the run.
#[derive(Debug, Clone, Copy)]
struct Retransmits {
    /// Its counters were read and its retransmits grew.
    counted: bool,
    segments: u64,
    timeouts: u64,
    fast: u64,
    /// Segments its peers reported as duplicates (DSACK): retransmitted needlessly.
    duplicates: u64,
}

impl Retransmits {
    fn of(s: &Snapshot, netns: u32) -> Self {
        let ns = counted_in(s, netns);
        let segments = grew(ns, "Tcp.RetransSegs");
        Self {
            counted: segments > 0,
            segments,
            timeouts: grew(ns, "TcpExt.TCPTimeouts"),
            fast: grew(ns, "TcpExt.TCPFastRetrans"),
            duplicates: grew(ns, "TcpExt.TCPDSACKRecvSegs"),
        }
    }

    /// Fast retransmits only, most of them reported back as duplicates: segments that arrived
    /// out of order, not lost ones.
    fn reordering(self) -> bool {
        self.counted && self.timeouts == 0 && self.duplicates * 2 >= self.segments
    }

    /// How the flows' retransmits came about, as evidence.
    fn evidence(self, netns: &str) -> Option<Evidence> {
        self.counted.then(|| {
            Evidence::new(
                format!(
                    "the namespace retransmitted {} segments: {} retransmission timeouts, {} fast retransmits, {} segments the peers reported as duplicates (DSACK)",
                    self.segments, self.timeouts, self.fast, self.duplicates
                ),
                format!(
                    "/proc/net/snmp Tcp.RetransSegs, /proc/net/netstat TcpExt.TCPTimeouts, TCPFastRetrans, TCPDSACKRecvSegs in namespace {netns}"
                ),
            )
        })
    }
}

/// A flow's namespace that no process or name holds any more: a socket of a deleted namespace
/// lives on until it times out. Said so, and ranked below the live ones.
fn orphaned(s: &Snapshot, f: &FlowRow, finding: &mut Finding) {
    let gone = s.namespaces_gone.iter().any(|g| g.id.inode == f.id.netns);
    if f.id.netns_name.is_some() && !gone {
        return;
    }
    finding.severity = match finding.severity {
        Severity::Critical => Severity::Warning,
        _ => Severity::Info,
    };
    finding.evidence.push(Evidence::new(
        match gone {
            true => "its namespace went away during the run: what is left is a socket retransmitting until it times out, nothing serves it".to_string(),
            false => format!(
                "its namespace ({}) is held by no process and no name: it was deleted, and this socket lingers until it times out",
                f.id.netns
            ),
        },
        "netdoc's namespace inventory",
    ));
}

/// One drop group's packets to a stalled flow's destination.
struct DropTo<'a> {
    netns: u32,
    reason: &'a str,
    location: &'a str,
    netns_name: Option<&'a str>,
    events: u64,
}

impl DropTo<'_> {
    /// Its reason, or where a kernel without drop reasons freed it.
    fn what(&self) -> String {
        match self.reason {
            NO_REASON => format!("freed in {}", function(self.location)),
            reason => reason.to_string(),
        }
    }
}

/// The drops seen of packets to `to`, in the flow's own namespace (`here`) or in the others.
fn drops_to<'a>(s: &'a Snapshot, to: &str, netns: u32, here: bool) -> Vec<DropTo<'a>> {
    s.drops
        .groups
        .iter()
        .filter(|g| (g.netns == netns) == here)
        // A duplicate the receiver discards stalls nothing.
        .filter(|g| explain::explain(&g.reason).is_none_or(|e| e.kind != DropKind::Benign))
        .flat_map(|g| g.targets.iter().map(move |t| (g, t)))
        .filter(|(_, t)| t.to == to)
        .map(|(g, t)| DropTo {
            netns: g.netns,
            reason: &g.reason,
            location: &g.location,
            netns_name: g.netns_name.as_deref(),
            events: t.events,
        })
        .collect()
}

fn stalled(s: &Snapshot, to: &str, flows: &[&FlowRow]) -> Finding {
    let first = flows[0];
    let here = drops_to(s, to, first.id.netns, true);
    // Another namespace dropping packets to the same address is the peer's end of a path on
    // this host (a pod's, a veth peer's); a loopback address means nothing elsewhere.
    let loopback = first
        .id
        .daddr
        .as_deref()
        .and_then(|a| a.parse::<std::net::IpAddr>().ok())
        .is_none_or(|a| a.is_loopback());
    let elsewhere = match here.is_empty() && !loopback {
        true => drops_to(s, to, first.id.netns, false),
        false => Vec::new(),
    };
    let where_ = namespace_scope(first.id.netns_name.as_deref(), first.id.netns);
    let retransmits: u64 = flows.iter().map(|f| f.retransmits).sum();
    let kinds = Retransmits::of(s, first.id.netns);
    // Without the namespace's counters, the same segment sent again and again is what
    // timeouts look like; with them, they say which it was.
    let timing_out = !kinds.counted || kinds.timeouts > 0;
    let mut evidence: Vec<Evidence> = flows
        .iter()
        .take(3)
        .map(|f| {
            Evidence::new(
                format!(
                    "{} ({}): one segment retransmitted {} times in a row, {} retransmits in all",
                    f.id.flow, f.state, f.max_same_seq, f.retransmits
                ),
                "tcp:tcp_retransmit_skb",
            )
        })
        .collect();
    evidence.extend(kinds.evidence(&where_.name));
    let stalls = match timing_out {
        true => "keep timing out",
        false => "keep retransmitting",
    };
    let connections = match flows.len() {
        1 => first.id.flow.clone(),
        n => format!("{n} connections to {}", to.trim_start_matches("tcp > ")),
    };
    let (id, title, confidence) = if let Some(d) = here.first() {
        let n: u64 = here.iter().map(|d| d.events).sum();
        evidence.push(Evidence::new(
            format!(
                "{n} packets to the same destination were dropped on this host: {} at {}",
                d.reason, d.location
            ),
            format!("skb:kfree_skb {}@{}", d.reason, d.location),
        ));
        (
            "local_drop_stalls_flow",
            format!(
                "{connections} {stalls} because this host drops their packets ({})",
                d.what()
            ),
            Confidence::High,
        )
    } else if let Some(d) = elsewhere.first() {
        let n: u64 = elsewhere.iter().map(|d| d.events).sum();
        let there = match d.netns_name {
            Some(name) => format!("namespace {name}"),
            None => format!("a namespace netdoc could not name ({})", d.netns),
        };
        evidence.push(Evidence::new(
            format!(
                "{n} packets to the same destination address were dropped in {there} on this host: {} at {}",
                d.reason, d.location
            ),
            format!("skb:kfree_skb {}@{}", d.reason, d.location),
        ));
        (
            "local_drop_stalls_flow",
            format!(
                "{connections} {stalls} because {there} on this host drops their packets ({})",
                d.what()
            ),
            // Matched by address across namespaces, not by the namespace itself.
            Confidence::Medium,
        )
    } else {
        let (unseen, nowhere) = match &s.watched_only {
            Some(ns) => (
                format!(
                    "no packet to that destination was dropped in namespace {}, the only one watched (--netns): drops in other namespaces of this host were not seen",
                    ns.name
                ),
                format!("no drop in namespace {} explains it", ns.name),
            ),
            None => (
                "no packet to that destination was dropped on this host".to_string(),
                "no drop on this host explains it".to_string(),
            ),
        };
        evidence.push(Evidence::new(unseen, "skb:kfree_skb (every reason)"));
        (
            "silent_path_drop",
            format!(
                "{connections} {stalls} and {nowhere}: packets are lost on the path or at the peer"
            ),
            Confidence::Medium,
        )
    };
    let explains = here
        .iter()
        .chain(&elsewhere)
        .map(|d| DropClaim::at(d.netns, d.reason, d.location))
        .collect();
    let mut finding = Finding {
        explains,
        id: id.into(),
        severity: Severity::Warning,
        confidence,
        title,
        scope: Scope::new(ScopeKind::Flow, format!("{to} in {where_}")),
        affected: retransmits,
        evidence,
        fix: vec![
            "look for loss beyond this host: mtr or tracepath to the peer, the peer's own drops (run netdoc doctor there), the switch and NIC counters (ethtool -S)".into(),
            "if a local drop is named, fix that first: its own finding says how".into(),
        ],
    };
    orphaned(s, first, &mut finding);
    finding
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
    fn a_drop_in_another_namespace_to_the_same_address_is_named_with_it() {
        let mut s = quiet();
        let row = flow(5, 12);
        let mut g = group("red", "NETFILTER_DROP", None, "tcp", "0.0.0.0", 0, 9);
        g.netns = row.id.netns + 1;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        s.retrans = vec![row];
        let f = retransmits(&s);
        assert_eq!(f[0].id, "local_drop_stalls_flow", "{f:?}");
        assert_eq!(f[0].confidence, Confidence::Medium);
        assert!(
            f[0].title
                .contains("namespace red on this host drops their packets")
        );
        assert!(
            f[0].shows("9 packets to the same destination address were dropped in namespace red")
        );
    }

    #[test]
    fn without_drop_reasons_the_drop_is_named_by_the_function_that_freed_it() {
        let mut s = quiet();
        let row = flow(5, 12);
        let mut g = group("red", NO_REASON, None, "tcp", "0.0.0.0", 0, 9);
        g.location = "nf_hook_slow+0x93".into();
        g.netns = row.id.netns + 1;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        s.retrans = vec![row];
        let f = retransmits(&s);
        assert!(
            f[0].title
                .ends_with("drops their packets (freed in nf_hook_slow)"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn a_loopback_destination_in_another_namespace_is_another_destination() {
        let mut s = quiet();
        let mut row = flow(5, 12);
        row.id.daddr = Some("127.0.0.1".into());
        let mut g = group("red", "NETFILTER_DROP", None, "tcp", "0.0.0.0", 0, 9);
        g.netns = row.id.netns + 1;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        s.retrans = vec![row];
        assert_eq!(retransmits(&s)[0].id, "silent_path_drop");
    }

    #[test]
    fn with_one_namespace_watched_a_silent_drop_says_what_was_not_seen() {
        let mut s = quiet();
        s.watched_only = Some(NetnsRef::named("blue"));
        s.retrans = vec![flow(5, 12)];
        let f = retransmits(&s);
        assert_eq!(f[0].id, "silent_path_drop");
        assert!(
            f[0].title.contains("no drop in namespace blue explains it"),
            "{}",
            f[0].title
        );
        assert!(f[0].shows("drops in other namespaces of this host were not seen"));
    }

    #[test]
    fn stalled_connections_to_one_destination_are_one_finding() {
        let mut s = quiet();
        let mut second = flow(4, 5);
        second.id.flow = second.id.flow.replace("40000", "40001");
        s.retrans = vec![flow(5, 6), second];
        let f = retransmits(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert!(f[0].title.starts_with("2 connections to"), "{}", f[0].title);
        assert_eq!(f[0].affected, 11);
    }

    #[test]
    fn syns_refused_by_a_full_local_accept_queue_are_not_the_path() {
        let mut s = quiet();
        let mut syn = flow(4, 4);
        syn.state = "SYN_SENT".into();
        let mut ns = counted("blue", &[("TcpExt.ListenOverflows", 9)], &[]);
        ns.listeners = vec![crate::counted::OwnedSocket {
            socket: crate::facts::sockdiag::DiagSocket {
                local: format!("{}:{}", syn.id.daddr.clone().unwrap(), syn.id.dport)
                    .parse()
                    .unwrap(),
                queue: 2,
                limit: 1,
                inode: 1,
                drops: None,
                rcvbuf: None,
                accept_wait: None,
            },
            pid: None,
            comm: None,
        }];
        s.counted = vec![ns.clone()];
        s.retrans = vec![syn.clone()];
        assert!(retransmits(&s).is_empty());
        // The listener's own SYN-ACK retransmits, to a client whose ACK never arrives.
        let mut synack = flow(4, 4);
        synack.synacks = 4;
        synack.id.saddr = syn.id.daddr.clone();
        synack.id.sport = syn.id.dport;
        ns.counters = [("TcpExt.TCPReqQFullDrop".to_string(), 3)].into();
        s.counted = vec![ns];
        s.retrans = vec![synack];
        assert!(retransmits(&s).is_empty());
    }

    #[test]
    fn a_closing_connection_or_a_few_retries_are_a_peer_gone_not_the_path() {
        let mut s = quiet();
        let mut closing = flow(6, 20);
        closing.state = "LAST_ACK".into();
        s.retrans = vec![closing, flow(3, 3)];
        assert!(retransmits(&s).is_empty());
    }

    #[test]
    fn ordinary_retransmits_are_no_finding() {
        let mut s = quiet();
        s.retrans = vec![flow(1, 40)];
        assert!(retransmits(&s).is_empty());
    }

    #[test]
    fn fast_retransmits_the_peer_reported_as_duplicates_are_reordering_not_a_stall() {
        let mut s = quiet();
        let row = flow(5, 600);
        let mut g = group("red", "TCP_OLD_SEQUENCE", None, "tcp", "0.0.0.0", 0, 900);
        g.netns = 1;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        let mut ns = counted(
            "blue",
            &[
                ("Tcp.RetransSegs", 1000),
                ("TcpExt.TCPFastRetrans", 1000),
                ("TcpExt.TCPDSACKRecvSegs", 900),
            ],
            &[],
        );
        ns.netns.inode = row.id.netns;
        s.counted = vec![ns.clone()];
        s.retrans = vec![row.clone()];
        assert!(retransmits(&s).is_empty(), "{:#?}", retransmits(&s));
        // The same with timeouts: a stall, and the duplicates the receiver discarded are no
        // local drop that explains it.
        ns.counters.insert("TcpExt.TCPTimeouts".into(), 12);
        ns.counters.insert("TcpExt.TCPDSACKRecvSegs".into(), 10);
        s.counted = vec![ns];
        let f = retransmits(&s);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].id, "silent_path_drop", "{f:#?}");
        assert!(f[0].title.contains("keep timing out"), "{}", f[0].title);
        assert!(
            f[0].shows("12 retransmission timeouts, 1000 fast retransmits"),
            "{f:#?}"
        );
    }

    #[test]
    fn without_timeouts_a_stall_is_said_to_retransmit_not_to_time_out() {
        let mut s = quiet();
        let row = flow(5, 40);
        let mut ns = counted(
            "blue",
            &[("Tcp.RetransSegs", 40), ("TcpExt.TCPFastRetrans", 40)],
            &[],
        );
        ns.netns.inode = row.id.netns;
        s.counted = vec![ns];
        s.retrans = vec![row];
        let f = retransmits(&s);
        assert!(f[0].title.contains("keep retransmitting"), "{}", f[0].title);
        assert!(!f.iter().any(|f| f.shows("not fast recovery")), "{f:#?}");
    }

    #[test]
    fn a_flow_whose_namespace_is_gone_says_so_and_ranks_lower() {
        let mut s = quiet();
        let mut orphan = flow(5, 12);
        orphan.id.netns_name = None;
        s.retrans = vec![orphan];
        let f = retransmits(&s);
        assert_eq!(f[0].severity, Severity::Info, "{f:#?}");
        assert!(f[0].shows("held by no process and no name"), "{f:#?}");
        assert!(
            !f[0].title.contains("namespace another namespace"),
            "{}",
            f[0].title
        );
    }

    #[test]
    fn a_drop_in_an_unnamed_namespace_is_named_as_such_in_english() {
        let mut s = quiet();
        let row = flow(5, 12);
        let mut g = group("x", "NETFILTER_DROP", None, "tcp", "0.0.0.0", 0, 9);
        g.netns = 1;
        g.netns_name = None;
        g.targets[0].to = destination(&row).unwrap();
        s.drops.groups = vec![g];
        s.retrans = vec![row];
        let f = retransmits(&s);
        assert!(
            f[0].title
                .contains("because a namespace netdoc could not name (1) on this host drops"),
            "{}",
            f[0].title
        );
    }
}
