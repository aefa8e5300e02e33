//! The rules: each a pure function from the snapshot to findings, each about one incident
//! class and told apart from its look-alikes. A quiet host gives none.
mod backlog;
mod blind;
mod conntrack;
mod corrupt;
mod egress;
mod firewall;
mod listener;
mod neighbours;
mod net_rx;
mod path;
mod routing;
mod sockets;
mod unexplained;

pub use unexplained::accounting;

use super::{DropGroup, Snapshot};
use crate::{
    counted::NamespaceCounted,
    model::cause::Cause,
    model::finding::{DropClaim, Evidence, Finding, Scope, ScopeKind},
    model::shell,
};

/// Fewer packets than this over a run are noise (a stray scan, one late datagram), not an
/// incident: a rule names nothing below it.
pub const MIN_PACKETS: u64 = 10;

pub fn all(s: &Snapshot) -> Vec<Finding> {
    let rules: [fn(&Snapshot) -> Vec<Finding>; 18] = [
        listener::no_listener,
        firewall::rule_drops,
        firewall::unread_queues,
        conntrack::conntrack,
        sockets::receive_buffers,
        sockets::listen_queues,
        sockets::send_side,
        neighbours::overflow,
        routing::unresolved,
        routing::reverse_path,
        routing::not_routed,
        routing::too_big,
        backlog::overflow,
        egress::queue_drops,
        corrupt::corrupt,
        path::retransmits,
        net_rx::concentration,
        blind::blind_spots,
    ];
    let mut found: Vec<Finding> = rules.iter().flat_map(|rule| rule(s)).collect();
    let rest = unexplained::unexplained(s, &found);
    found.extend(rest);
    found
}

/// What a kernel without drop reasons (before 5.17) calls every drop.
const NO_REASON: &str = "UNKNOWN";

/// The function a location (`function+0xoff`) lies in.
fn function(location: &str) -> &str {
    location.split('+').next().unwrap_or(location)
}

/// A datagram to a closed port: `NO_SOCKET`, or without drop reasons a UDP packet freed by the
/// UDP receive function (which frees little else).
fn is_closed_port(g: &DropGroup) -> bool {
    g.reason == "NO_SOCKET"
        || (g.reason == NO_REASON
            && g.proto.as_deref() == Some("udp")
            && ["__udp4_lib_rcv", "udp_rcv", "__udp6_lib_rcv", "udpv6_rcv"]
                .contains(&function(&g.location)))
}

/// A netfilter verdict: `NETFILTER_DROP`, or without drop reasons a packet freed where
/// netfilter applies verdicts.
fn is_netfilter_drop(g: &DropGroup) -> bool {
    g.reason == "NETFILTER_DROP"
        || (g.reason == NO_REASON
            && ["nf_hook_slow", "nft_do_chain"].contains(&function(&g.location)))
}

/// Packets conntrack itself dropped in a namespace over the run (full table, failed
/// insertions); 0 for a namespace that does not use conntrack.
fn conntrack_dropped(s: &Snapshot, inode: u32) -> u64 {
    s.conntrack
        .iter()
        .filter(|c| c.netns.inode == inode)
        .map(|c| c.attribution.table_full + c.attribution.insert_failed)
        .sum()
}

/// A netfilter drop no sentinel or freeing function attributed.
fn is_untold(g: &DropGroup) -> bool {
    is_netfilter_drop(g) && matches!(g.cause, None | Some(Cause::Unclassified))
}

/// A drop a firewall rule made: the sentinels or nftables say so, or nothing else could have
/// (an untold netfilter drop where conntrack dropped nothing).
fn by_rule(s: &Snapshot, g: &DropGroup) -> bool {
    is_netfilter_drop(g)
        && (g.cause == Some(Cause::Firewall)
            || function(&g.location) == crate::model::cause::NFTABLES
            || (is_untold(g) && untold_in(s, g.netns) == Untold::Rules))
}

/// Whose a namespace's untold netfilter drops are, from conntrack's own count of its drops
/// (each of which is one netfilter drop): conntrack dropped nothing, so a rule's; exactly as
/// many as conntrack dropped beyond the attributed ones (and no event lost), so conntrack's;
/// else they cannot be told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Untold {
    Rules,
    Conntrack,
    Mixed,
}

fn untold_in(s: &Snapshot, inode: u32) -> Untold {
    let dropped = conntrack_dropped(s, inode);
    if dropped == 0 {
        return Untold::Rules;
    }
    let in_ns = || s.drops.groups.iter().filter(|g| g.netns == inode);
    let told_conntrack: u64 = in_ns()
        .filter(|g| matches!(g.cause, Some(Cause::ConntrackIn | Cause::ConntrackConfirm)))
        .map(|g| g.events)
        .sum();
    let untold: u64 = in_ns().filter(|g| is_untold(g)).map(|g| g.events).sum();
    let every_event = s.drops.lost == 0 && s.drops.sampled == 0;
    match every_event && untold == dropped.saturating_sub(told_conntrack) {
        true => Untold::Conntrack,
        false => Untold::Mixed,
    }
}

/// A handshake retransmitting at a listener of `ns` whose SYN or accept queue overflowed: a
/// client's SYN to it, or its own SYN-ACK. The listen-queue findings explain these (the SYNs
/// were refused or the handshakes never completed), not the path.
fn at_listener_of(ns: &NamespaceCounted, f: &crate::retrans::report::FlowRow) -> bool {
    let is = |ip: std::net::IpAddr, port: u16, addr: &Option<String>, want: u16| {
        port == want && (ip.is_unspecified() || Some(ip.to_string()) == *addr)
    };
    grew(Some(ns), "TcpExt.ListenOverflows") + grew(Some(ns), "TcpExt.TCPReqQFullDrop") > 0
        && ns.listeners.iter().any(|l| {
            let (ip, port) = (l.socket.local.ip(), l.socket.local.port());
            (f.state == "SYN_SENT" && is(ip, port, &f.id.daddr, f.id.dport))
                || (f.synacks > 0 && is(ip, port, &f.id.saddr, f.id.sport))
        })
}

/// [`at_listener_of`] any namespace.
fn at_overflowing_listener(s: &Snapshot, f: &crate::retrans::report::FlowRow) -> bool {
    s.counted.iter().any(|ns| at_listener_of(ns, f))
}

/// The drop groups `wanted`, per namespace (inode): most rules make one finding a namespace.
fn groups_by_namespace(
    s: &Snapshot,
    wanted: impl Fn(&DropGroup) -> bool,
) -> std::collections::BTreeMap<u32, Vec<&DropGroup>> {
    let mut out: std::collections::BTreeMap<u32, Vec<&DropGroup>> = Default::default();
    for g in s.drops.groups.iter().filter(|g| wanted(g)) {
        out.entry(g.netns).or_default().push(g);
    }
    out
}

/// What a finding explains of these groups: each one's drops.
fn claims(groups: &[&DropGroup]) -> Vec<DropClaim> {
    groups
        .iter()
        .map(|g| DropClaim::at(g.netns, &g.reason, &g.location))
        .collect()
}

/// A namespace as a scope: `host` for the initial one.
fn namespace_scope(name: Option<&str>, inode: u32) -> Scope {
    match name {
        Some("host") => Scope::host(),
        Some(n) => Scope::new(ScopeKind::Namespace, n),
        None => Scope::new(ScopeKind::Namespace, inode.to_string()),
    }
}

/// Where a counter of a namespace came from.
fn counter_source(counters: &str, ns: &NamespaceCounted) -> String {
    format!("{counters} in namespace {}", ns.netns.name)
}

/// The namespace's counters, by inode.
fn counted_in(s: &Snapshot, inode: u32) -> Option<&NamespaceCounted> {
    s.counted.iter().find(|c| c.netns.inode == inode)
}

/// A counter's growth in a namespace (0 when it did not grow).
fn grew(ns: Option<&NamespaceCounted>, counter: &str) -> u64 {
    ns.and_then(|n| n.counters.get(counter))
        .copied()
        .unwrap_or(0)
}

/// Evidence lines for the busiest destinations of delivered drops.
fn target_evidence(g: &DropGroup) -> Vec<Evidence> {
    g.targets
        .iter()
        .take(3)
        .map(|t| {
            Evidence::new(
                format!("{} packets {} (e.g. {})", t.events, t.to, t.example),
                format!("skb:kfree_skb {}@{}", g.reason, g.location),
            )
        })
        .collect()
}

/// `command` run inside the namespace `ns`, in backticks as every fix shows a command: as is
/// on the host, `ip netns exec NAME command` for an `ip netns` name, `nsenter -t PID -n command`
/// with the process behind a `comm[pid]` name, else with `PID` a placeholder (a process of the
/// container or pod, named after the backticks). `command` is shell text: each word in it that
/// netdoc did not write itself (a table, a chain) must be quoted already ([`shell::quote`]);
/// the namespace's name is quoted here. A name read with bytes that were not UTF-8 (shown as
/// U+FFFD) is not the namespace's real name, so it gets the placeholder too.
fn inside(ns: &Scope, command: &str) -> String {
    let name = ns.name.as_str();
    if ns.kind == ScopeKind::Host {
        return format!("`{command}`");
    }
    let pid = name
        .strip_suffix(']')
        .and_then(|n| n.rsplit_once('['))
        .map(|(_, pid)| pid)
        .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
    if let Some(pid) = pid {
        return format!("`nsenter -t {pid} -n {command}`");
    }
    if name.contains([':', '/', ' ', char::REPLACEMENT_CHARACTER]) {
        return format!("`nsenter -t PID -n {command}` with PID a process of {name}");
    }
    format!("`ip netns exec {} {command}`", shell::quote(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_enter_the_namespace_the_way_its_name_allows() {
        let ns = |n: &str| Scope::new(ScopeKind::Namespace, n);
        assert_eq!(inside(&Scope::host(), "ss -ulpn"), "`ss -ulpn`");
        assert_eq!(inside(&ns("blue"), "ss"), "`ip netns exec blue ss`");
        assert_eq!(inside(&ns("sleep[4242]"), "ss"), "`nsenter -t 4242 -n ss`");
        assert_eq!(
            inside(&ns("docker:f0e1d2c3b4a5"), "ss"),
            "`nsenter -t PID -n ss` with PID a process of docker:f0e1d2c3b4a5"
        );
        assert!(inside(&ns("pod default/web"), "ss").starts_with("`nsenter -t PID -n ss` "));
    }

    #[test]
    fn hostile_names_arrive_as_one_word_or_as_a_placeholder() {
        let ns = |n: &str| Scope::new(ScopeKind::Namespace, n);
        assert_eq!(
            inside(&ns("rel_q;reboot;"), "ss"),
            "`ip netns exec 'rel_q;reboot;' ss`"
        );
        // A space: a pod's or container's name, as far as the shape tells.
        assert_eq!(
            inside(&ns("rel_q;echo INJECTED;"), "ss"),
            "`nsenter -t PID -n ss` with PID a process of rel_q;echo INJECTED;"
        );
        assert_eq!(
            inside(&ns("a$(id)`id`'b"), "ss"),
            r"`ip netns exec 'a$(id)`id`'\''b' ss`"
        );
        assert_eq!(
            inside(&ns("rel_a\x1b]0;pwned\x07\nFAKE"), "ss"),
            r"`ip netns exec $'rel_a\x1b]0;pwned\x07\x0aFAKE' ss`"
        );
        // Not a pid: the brackets are part of an `ip netns` name.
        assert_eq!(
            inside(&ns("x[1;reboot]"), "ss"),
            "`ip netns exec 'x[1;reboot]' ss`"
        );
        assert!(inside(&ns("blue\u{fffd}"), "ss").starts_with("`nsenter -t PID -n ss` "));
    }
}

#[cfg(test)]
pub mod fixtures {
    //! Snapshots shaped like recorded runs, for the rules' tests.
    use std::collections::BTreeMap;

    use crate::{
        counted::NamespaceCounted,
        doctor::{DropGroup, Drops, HostFacts, RECORD_VERSION, Snapshot, Target},
        model::cause::Cause,
        namespaces::NetnsRef,
    };

    pub fn quiet() -> Snapshot {
        Snapshot {
            version: RECORD_VERSION,
            host: HostFacts {
                hostname: "node1".into(),
                kernel: "6.18.0".into(),
                reason_names: "BTF enum skb_drop_reason".into(),
                settings: BTreeMap::new(),
            },
            duration_s: 30.0,
            drops: Drops::default(),
            counted: vec![],
            conntrack: vec![],
            neighbours: vec![],
            retrans: vec![],
            net_rx: None,
            probes: vec![],
            namespaces_gone: vec![],
            namespaces_gone_earlier: 0,
            drop_rules: vec![],
            paths: vec![],
            backlog_settings: BTreeMap::new(),
            watched_only: None,
        }
    }

    pub fn group(
        ns: &str,
        reason: &str,
        cause: Option<Cause>,
        proto: &str,
        to: &str,
        dport: u16,
        events: u64,
    ) -> DropGroup {
        DropGroup {
            netns: 4026532000,
            netns_name: Some(ns.into()),
            reason: reason.into(),
            cause,
            location: "udp_queue_rcv_one_skb+0x2f".into(),
            proto: Some(proto.into()),
            events,
            connection_attempts: 0,
            tcp_flags_known: false,
            targets: vec![Target {
                to: format!("{proto} > {to}:{dport}"),
                dport: Some(dport),
                events,
                example: format!("{proto} 10.0.0.1:40000 > {to}:{dport} dev eth0 netns {ns}"),
            }],
            hooks: BTreeMap::new(),
            devices: vec!["eth0".into()],
            senders: vec![("10.0.0.1".into(), events)],
        }
    }

    /// A namespace whose conntrack refused `table_full` new connections.
    pub fn conntrack_dropping(ns: &str, table_full: u64) -> crate::conntrack::NamespaceConntrack {
        crate::conntrack::NamespaceConntrack {
            netns: NetnsRef::named(ns),
            first_seen_s: 0.0,
            gone: false,
            nf_conntrack_count: Some(8),
            nf_conntrack_max: Some(8),
            peak_count: Some(8),
            peak_max: Some(8),
            attribution: crate::conntrack::Attribution {
                table_full,
                ..Default::default()
            },
            netfilter_causes: BTreeMap::new(),
            per_cpu: vec![],
            findings: vec![],
            nat_rules: vec![],
            nat_rules_unavailable: None,
        }
    }

    pub fn counted(
        ns: &str,
        counters: &[(&str, u64)],
        settings: &[(&str, u64)],
    ) -> NamespaceCounted {
        NamespaceCounted {
            netns: NetnsRef::named(ns),
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect::<BTreeMap<_, _>>(),
            listeners: vec![],
            udp_sockets: vec![],
            sockets_unavailable: None,
            gone: false,
        }
    }
}
