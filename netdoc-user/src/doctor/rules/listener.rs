//! Packets to a port nobody listens on (`NO_SOCKET`; before drop reasons, a UDP packet freed by
//! the UDP receive function while `Udp.NoPorts` grew). Told apart from a firewall drop by the
//! reason itself; the ICMP counters say whether senders even learn of it (the ICMP rate limit
//! hides most "port unreachable" replies under load).
use std::collections::BTreeMap;

use super::{
    MIN_PACKETS, counted_in, counter_source, grew, inside, is_closed_port, namespace_scope,
    target_evidence,
};
use crate::{
    doctor::{DropGroup, Snapshot},
    model::finding::{Confidence, Evidence, Finding, Severity},
};

pub fn no_listener(s: &Snapshot) -> Vec<Finding> {
    // One finding per namespace and protocol, whatever the freeing locations.
    let mut by_ns: BTreeMap<(u32, &str), Vec<&DropGroup>> = BTreeMap::new();
    // A NO_SOCKET in cookie_v4_check/cookie_v6_check is a listener's full accept queue at the
    // handshake's final ACK with syncookies on: the listen-queue rule's, not a closed port.
    let closed_port = |g: &&DropGroup| is_closed_port(g) && !g.location.starts_with("cookie_v");
    for g in s.drops.groups.iter().filter(closed_port) {
        if let Some(p @ ("udp" | "tcp")) = g.proto.as_deref() {
            by_ns.entry((g.netns, p)).or_default().push(g);
        }
    }
    // Namespaces whose counter grew without delivered events (counts only, or events lost).
    for c in &s.counted {
        if grew(Some(c), "Udp.NoPorts") + grew(Some(c), "Udp6.NoPorts") >= MIN_PACKETS {
            by_ns.entry((c.netns.inode, "udp")).or_default();
        }
    }
    by_ns
        .into_iter()
        .filter_map(|((inode, proto), groups)| finding(s, inode, proto, &groups))
        .collect()
}

fn finding(s: &Snapshot, inode: u32, proto: &str, groups: &[&DropGroup]) -> Option<Finding> {
    let counted = counted_in(s, inode);
    let events: u64 = groups.iter().map(|g| g.events).sum();
    let no_ports = match proto {
        "udp" => grew(counted, "Udp.NoPorts") + grew(counted, "Udp6.NoPorts"),
        _ => 0,
    };
    let packets = events.max(no_ports);
    if packets < MIN_PACKETS {
        return None;
    }
    let name = groups
        .iter()
        .find_map(|g| g.netns_name.as_deref())
        .or(counted.map(|c| c.netns.name.as_str()));
    let scope = namespace_scope(name, inode);
    let mut ports: Vec<(u16, u64)> = Vec::new();
    for t in groups.iter().flat_map(|g| &g.targets) {
        if let Some(p) = t.dport {
            match ports.iter_mut().find(|(q, _)| *q == p) {
                Some(e) => e.1 += t.events,
                None => ports.push((p, t.events)),
            }
        }
    }
    ports.sort_by_key(|(p, n)| (std::cmp::Reverse(*n), *p));
    let port_list: Vec<String> = ports.iter().take(3).map(|(p, _)| p.to_string()).collect();
    let where_ = if port_list.is_empty() {
        String::new()
    } else {
        format!(" port {}", port_list.join(", "))
    };
    let mut evidence: Vec<Evidence> = groups.iter().flat_map(|g| target_evidence(g)).collect();
    let mut fix = Vec::new();
    let tcp = TcpSegments::of(groups);
    let (id, title, ss) = match (proto, tcp) {
        ("udp", _) => (
            "udp_no_listener",
            format!("{packets} datagrams were sent to UDP{where_}, where nothing listens"),
            "ss -ulpn",
        ),
        (_, TcpSegments::Flagged { attempts, .. }) if attempts > 0 => {
            let late = packets - attempts;
            let and_late = match late {
                0 => String::new(),
                n => format!(", and {n} late segments of closed connections arrived"),
            };
            (
                "tcp_no_listener",
                format!(
                    "{attempts} TCP connection attempts to{where_} were refused: nothing listens there{and_late}"
                ),
                "ss -tlpn",
            )
        }
        (_, TcpSegments::Flagged { .. }) => (
            "tcp_no_listener",
            format!(
                "{packets} TCP segments arrived at{where_} for connections that no longer exist (none opened one): late segments of closed connections"
            ),
            "ss -tlpn",
        ),
        // Without the segments' flags (a recording from before they were kept) a refused SYN
        // cannot be told from a late segment of a closed connection: said as such, never as a
        // problem.
        (_, TcpSegments::Unflagged) => (
            "tcp_no_listener",
            format!(
                "{packets} TCP segments arrived at{where_} for no socket: connection attempts where nothing listens, or late segments of closed connections"
            ),
            "ss -tlpn",
        ),
    };
    if let TcpSegments::Flagged { attempts, events } = tcp {
        evidence.push(Evidence::new(
            format!(
                "{attempts} of the {events} dropped segments opened a connection (SYN without ACK); the rest belonged to connections already under way"
            ),
            "TCP flags of the dropped segments (skb:kfree_skb)".to_string(),
        ));
    }
    if let Some(c) = counted.filter(|_| proto == "udp") {
        evidence.push(Evidence::new(
            format!("Udp.NoPorts grew by {no_ports} over {:.0} s", s.duration_s),
            counter_source("/proc/net/snmp Udp.NoPorts, /proc/net/snmp6 Udp6NoPorts", c),
        ));
        let unreach =
            grew(Some(c), "Icmp.OutDestUnreachs") + grew(Some(c), "Icmp6.OutDestUnreachs");
        let limited = grew(Some(c), "Icmp.OutRateLimitGlobal")
            + grew(Some(c), "Icmp.OutRateLimitHost")
            + grew(Some(c), "Icmp6.OutRateLimitHost");
        if unreach < no_ports {
            let ms = c
                .settings
                .get("net.ipv4.icmp_ratelimit")
                .map_or("unknown".to_string(), |v| format!("{v} ms"));
            evidence.push(Evidence::new(
                format!(
                    "only {unreach} ICMP destination-unreachable replies went out for {no_ports} datagrams ({limited} suppressed by the ICMP rate limit, net.ipv4.icmp_ratelimit {ms}): most senders are never told the port is closed and just time out"
                ),
                counter_source(
                    "/proc/net/snmp Icmp.OutDestUnreachs, Icmp.OutRateLimitGlobal, Icmp.OutRateLimitHost",
                    c,
                ),
            ));
        }
    }
    fix.push(format!(
        "start the service on{where_} or point the clients at the right address and port; what listens now: {}",
        inside(&scope, ss)
    ));
    if proto == "udp" {
        fix.push(
            "if the datagrams are unwanted, drop them early with a firewall rule so they stop costing a lookup and an ICMP reply".into(),
        );
    }
    // Refused connection attempts are clients failing; late segments of closed connections are
    // the normal tail of TCP, worth a note only.
    let refused =
        proto == "udp" || matches!(tcp, TcpSegments::Flagged { attempts, .. } if attempts > 0);
    // Without events (counts only), the closed-port drops the counter stands for are these.
    let mut explains = super::claims(groups);
    if groups.is_empty() {
        explains.push(crate::model::finding::DropClaim::reason(inode, "NO_SOCKET"));
    }
    Some(Finding {
        explains,
        id: id.into(),
        severity: match refused {
            true => Severity::Warning,
            false => Severity::Info,
        },
        // The reason itself says so; a freeing function or a counter alone only suggests it.
        confidence: if tcp == TcpSegments::Unflagged && proto == "tcp" {
            Confidence::Low
        } else if groups.iter().any(|g| g.reason == "NO_SOCKET") {
            Confidence::High
        } else {
            Confidence::Medium
        },
        title,
        scope,
        affected: packets,
        evidence,
        fix,
    })
}

/// What the TCP flags of a namespace's dropped segments say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpSegments {
    /// The events carried flags: how many of them opened a connection.
    Flagged { attempts: u64, events: u64 },
    /// No flags (a recording from before they were kept, or no event delivered).
    Unflagged,
}

impl TcpSegments {
    fn of(groups: &[&DropGroup]) -> Self {
        match groups.iter().any(|g| g.tcp_flags_known) {
            true => TcpSegments::Flagged {
                attempts: groups.iter().map(|g| g.connection_attempts).sum(),
                events: groups.iter().map(|g| g.events).sum(),
            },
            false => TcpSegments::Unflagged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::rules::fixtures::*;

    #[test]
    fn datagrams_to_a_closed_port_name_the_port_and_the_hidden_icmp() {
        let mut s = quiet();
        s.drops.groups = vec![group("blue", "NO_SOCKET", None, "udp", "10.0.0.2", 9, 40)];
        s.counted = vec![counted(
            "blue",
            &[
                ("Udp.NoPorts", 40),
                ("Icmp.OutDestUnreachs", 6),
                ("Icmp.OutRateLimitGlobal", 34),
            ],
            &[("net.ipv4.icmp_ratelimit", 1000)],
        )];
        let f = no_listener(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "udp_no_listener");
        assert_eq!(f[0].scope.name, "blue");
        assert_eq!(f[0].affected, 40);
        assert!(f[0].title.contains("UDP port 9"), "{}", f[0].title);
        assert!(f[0].shows("Udp.NoPorts grew by 40"));
        assert!(f[0].shows("only 6 ICMP destination-unreachable replies"));
        assert!(f[0].shows("34 suppressed"));
        assert!(
            f[0].fix
                .iter()
                .any(|x| x.contains("ip netns exec blue ss -ulpn"))
        );
    }

    #[test]
    fn a_few_stray_datagrams_and_other_reasons_are_no_finding() {
        let mut s = quiet();
        s.drops.groups = vec![
            group(
                "blue",
                "NO_SOCKET",
                None,
                "udp",
                "10.0.0.2",
                9,
                MIN_PACKETS - 1,
            ),
            group("blue", "NETFILTER_DROP", None, "udp", "10.0.0.2", 9, 500),
        ];
        assert!(no_listener(&s).is_empty());
    }

    /// A namespace's TCP segments to a closed port, `attempts` of them SYNs; `flags` false for a
    /// recording from before flags were kept.
    fn tcp_segments(attempts: u64, events: u64, flags: bool) -> Vec<Finding> {
        let mut s = quiet();
        let mut g = group("blue", "NO_SOCKET", None, "tcp", "10.0.0.2", 8080, events);
        g.location = "tcp_v4_rcv+0x1a4".into();
        g.connection_attempts = attempts;
        g.tcp_flags_known = flags;
        s.drops.groups = vec![g];
        no_listener(&s)
    }

    #[test]
    fn refused_connection_attempts_are_told_from_late_segments_by_their_flags() {
        let refused = tcp_segments(30, 30, true);
        assert_eq!(refused.len(), 1, "{refused:?}");
        let f = &refused[0];
        assert_eq!(
            (f.id.as_ref(), f.severity, f.confidence),
            ("tcp_no_listener", Severity::Warning, Confidence::High)
        );
        assert_eq!(
            f.title,
            "30 TCP connection attempts to port 8080 were refused: nothing listens there"
        );
        assert!(
            f.shows("30 of the 30 dropped segments opened a connection"),
            "{f:?}"
        );

        let mixed = &tcp_segments(25, 40, true)[0];
        assert!(
            mixed
                .title
                .ends_with("and 15 late segments of closed connections arrived"),
            "{}",
            mixed.title
        );
        assert_eq!(mixed.severity, Severity::Warning);

        let late = &tcp_segments(0, 40, true)[0];
        assert_eq!(
            (late.severity, late.confidence),
            (Severity::Info, Confidence::High)
        );
        assert!(
            late.title.contains("late segments of closed connections"),
            "{}",
            late.title
        );
        assert!(!late.title.contains("refused"), "{}", late.title);

        let unknown = &tcp_segments(0, 40, false)[0];
        assert_eq!(
            (unknown.severity, unknown.confidence),
            (Severity::Info, Confidence::Low)
        );
        assert!(
            unknown
                .title
                .contains("connection attempts where nothing listens, or late segments"),
            "{}",
            unknown.title
        );
        assert!(!unknown.shows("opened a connection"), "{unknown:?}");
    }

    #[test]
    fn a_syncookie_ack_refused_at_a_full_accept_queue_is_not_a_closed_port() {
        let mut s = quiet();
        let mut g = group("blue", "NO_SOCKET", None, "tcp", "10.0.0.2", 8080, 50);
        g.location = "cookie_v4_check+0x5e1".into();
        s.drops.groups = vec![g];
        assert!(no_listener(&s).is_empty());
    }

    #[test]
    fn the_counter_alone_is_a_finding_of_medium_confidence() {
        let mut s = quiet();
        s.counted = vec![counted("blue", &[("Udp.NoPorts", 25)], &[])];
        let f = no_listener(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].confidence, Confidence::Medium);
        assert_eq!(f[0].affected, 25);
    }
}
