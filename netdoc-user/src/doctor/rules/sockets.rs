//! Loss at the sockets: a receive buffer the reader drains too slowly, a listen queue the
//! application accepts from too slowly (or a SYN queue under a flood), and a sender refused
//! buffer memory. The kernel counts these per namespace; sock_diag names the socket and its
//! process.
use super::{
    MIN_PACKETS, at_listener_of, counter_source, grew, inside, namespace_scope, target_evidence,
};
use std::time::Duration;

use crate::{
    counted::{NamespaceCounted, OwnedSocket},
    doctor::Snapshot,
    facts::sockdiag::AcceptWait,
    model::finding::{Confidence, DropClaim, Evidence, Finding, Scope, ScopeKind, Severity},
};

/// `10.0.0.2:5000 (comm[pid])`
fn socket_name(s: &OwnedSocket) -> String {
    match (&s.comm, s.pid) {
        (Some(c), Some(p)) => format!("{} ({c}[{p}])", s.socket.local),
        _ => s.socket.local.to_string(),
    }
}

fn setting(ns: &NamespaceCounted, name: &str) -> String {
    ns.settings
        .get(name)
        .map_or("unknown".into(), u64::to_string)
}

pub fn receive_buffers(s: &Snapshot) -> Vec<Finding> {
    s.counted
        .iter()
        .filter_map(|ns| {
            let dropped = grew(Some(ns), "Udp.RcvbufErrors") + grew(Some(ns), "Udp6.RcvbufErrors");
            if dropped < MIN_PACKETS {
                return None;
            }
            let received = grew(Some(ns), "Udp.InDatagrams") + grew(Some(ns), "Udp6.InDatagrams");
            let where_ = namespace_scope(Some(&ns.netns.name), ns.netns.inode);
            let top = ns.udp_sockets.first();
            let scope = match top {
                Some(sock) => Scope::new(ScopeKind::Socket, format!("udp {} in {where_}", sock.socket.local)),
                None => where_.clone(),
            };
            let mut evidence = vec![Evidence::new(
                format!(
                    "Udp.RcvbufErrors grew by {dropped} while applications read {received} datagrams ({:.1}% lost at the socket)",
                    dropped as f64 * 100.0 / (dropped + received).max(1) as f64
                ),
                counter_source("/proc/net/snmp Udp.RcvbufErrors, Udp.InDatagrams", ns),
            )];
            for sock in ns.udp_sockets.iter().take(3) {
                evidence.push(Evidence::new(
                    format!(
                        "udp {} has dropped {} datagrams in all; receive buffer {} B, {} B queued",
                        socket_name(sock),
                        sock.socket.drops.unwrap_or(0),
                        sock.socket.rcvbuf.map_or("unknown".into(), |b| b.to_string()),
                        sock.socket.queue
                    ),
                    "sock_diag SK_MEMINFO, /proc/PID/fd",
                ));
            }
            if let Some(why) = &ns.sockets_unavailable {
                evidence.push(Evidence::new(format!("the sockets could not be listed: {why}"), "sock_diag"));
            }
            evidence.extend(
                s.drops
                    .groups
                    .iter()
                    .filter(|g| g.netns == ns.netns.inode && g.reason == "SOCKET_RCVBUFF")
                    .flat_map(target_evidence),
            );
            evidence.push(Evidence::new(
                format!(
                    "net.core.rmem_default {} B, net.core.rmem_max {} B",
                    setting(ns, "net.core.rmem_default"),
                    setting(ns, "net.core.rmem_max")
                ),
                counter_source("sysctl", ns),
            ));
            let who = top.map_or("the receiving process".to_string(), socket_name);
            Some(Finding {
                explains: vec![DropClaim::reason(ns.netns.inode, "SOCKET_RCVBUFF")],
                id: "socket_receive_buffer_full".into(),
                severity: Severity::Critical,
                confidence: if top.is_some() { Confidence::High } else { Confidence::Medium },
                title: format!(
                    "{dropped} datagrams were dropped because the receive buffer of {who} was full: it reads more slowly than they arrive"
                ),
                scope,
                affected: dropped,
                evidence,
                fix: vec![
                    format!("make {who} drain faster (more reader threads, recvmmsg batches, SO_REUSEPORT sockets)"),
                    format!(
                        "give it a bigger buffer to ride out bursts: setsockopt(SO_RCVBUF), allowed up to net.core.rmem_max: {}",
                        inside(&where_, "sysctl -w net.core.rmem_max=8388608")
                    ),
                ],
            })
        })
        .collect()
}

pub fn listen_queues(s: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for ns in &s.counted {
        let overflows = grew(Some(ns), "TcpExt.ListenOverflows");
        let syn_drops = grew(Some(ns), "TcpExt.TCPReqQFullDrop");
        let cookies = grew(Some(ns), "TcpExt.SyncookiesSent");
        let where_ = namespace_scope(Some(&ns.netns.name), ns.netns.inode);
        // The ACK-time overflows the kernel reports as a drop: `TCP_LISTEN_OVERFLOW` (6.15+),
        // or with syncookies `NO_SOCKET` in cookie_v4_check. The rest of the counter is SYNs
        // refused at a full accept queue, which are consumed, never "dropped".
        let at_ack: u64 = s
            .drops
            .groups
            .iter()
            .filter(|g| g.netns == ns.netns.inode)
            .filter(|g| {
                g.reason == "TCP_LISTEN_OVERFLOW"
                    || (g.reason == "NO_SOCKET" && g.location.starts_with("cookie_v"))
            })
            .map(|g| g.events)
            .sum();
        let top = ns.listeners.first();
        if overflows >= MIN_PACKETS {
            let who = top.map_or("a listener".to_string(), socket_name);
            let mut evidence = vec![Evidence::new(
                format!(
                    "ListenOverflows grew by {overflows}, ListenDrops by {}",
                    grew(Some(ns), "TcpExt.ListenDrops")
                ),
                counter_source("/proc/net/netstat TcpExt.ListenOverflows, ListenDrops", ns),
            )];
            if at_ack > 0 {
                evidence.push(Evidence::new(
                    format!(
                        "{at_ack} of them at the handshake's final ACK, {} at SYN time (SYNs refused while the accept queue was full)",
                        overflows.saturating_sub(at_ack)
                    ),
                    "skb:kfree_skb TCP_LISTEN_OVERFLOW",
                ));
            }
            for l in ns.listeners.iter().take(3) {
                evidence.push(Evidence::new(
                    format!(
                        "listener {}: {} connections waiting to be accepted, backlog {}",
                        socket_name(l),
                        l.socket.queue,
                        l.socket.limit
                    ),
                    "sock_diag (accept queue and backlog)",
                ));
                evidence.extend(l.socket.accept_wait.as_ref().map(|w| accept_latency(l, w)));
            }
            evidence.extend(waiting_clients(s, ns));
            if cookies > 0 {
                evidence.push(Evidence::new(
                    format!("SyncookiesSent grew by {cookies}: its SYN queue, as small as the backlog, overflowed too"),
                    counter_source("/proc/net/netstat TcpExt.SyncookiesSent", ns),
                ));
            }
            let somaxconn = setting(ns, "net.core.somaxconn");
            evidence.push(Evidence::new(
                format!("net.core.somaxconn {somaxconn} (caps every listen backlog)"),
                counter_source("sysctl", ns),
            ));
            let capped = top.is_some_and(|l| {
                Some(l.socket.limit as u64) == ns.settings.get("net.core.somaxconn").copied()
            });
            out.push(Finding {
                explains: std::iter::once(DropClaim::reason(ns.netns.inode, "TCP_LISTEN_OVERFLOW"))
                .chain(
                    s.drops
                        .groups
                        .iter()
                        .filter(|g| g.netns == ns.netns.inode && g.reason == "NO_SOCKET" && g.location.starts_with("cookie_v"))
                        .map(|g| DropClaim::at(g.netns, &g.reason, &g.location)),
                )
                .collect(),
                id: "listen_queue_overflow".into(),
                severity: Severity::Critical,
                confidence: if top.is_some() { Confidence::High } else { Confidence::Medium },
                title: format!(
                    "{overflows} connection attempts were refused because the accept queue of {who} was full: the application accepts too slowly for its backlog"
                ),
                scope: match top {
                    Some(l) => Scope::new(ScopeKind::Listener, format!("tcp {} in {where_}", l.socket.local)),
                    None => where_.clone(),
                },
                affected: overflows,
                evidence,
                fix: vec![
                    format!("accept faster in {who} (more acceptor threads, SO_REUSEPORT listeners)"),
                    if capped {
                        format!("its backlog is capped by somaxconn: {} and a larger listen() backlog", inside(&where_, "sysctl -w net.core.somaxconn=4096"))
                    } else {
                        "raise the backlog the application passes to listen() (up to net.core.somaxconn)".into()
                    },
                ],
            });
        }
        // Syncookies beside an accept-queue overflow are that listener's (its evidence above).
        let cookies_alone = cookies >= MIN_PACKETS && overflows < MIN_PACKETS;
        if syn_drops >= MIN_PACKETS || cookies_alone {
            let syncookies = setting(ns, "net.ipv4.tcp_syncookies");
            let at = top.map_or(String::new(), |l| format!(" of {}", socket_name(l)));
            let (title, severity) = if syn_drops > 0 {
                (
                    format!(
                        "{syn_drops} SYNs were dropped at the full SYN queue{at}, with syncookies off: handshakes are not completing fast enough"
                    ),
                    Severity::Critical,
                )
            } else {
                (
                    format!(
                        "the SYN queue{at} overflowed and {cookies} syncookies were sent: a SYN flood or a burst of connections"
                    ),
                    Severity::Warning,
                )
            };
            let mut evidence = vec![
                Evidence::new(
                    format!("TCPReqQFullDrop grew by {syn_drops}, SyncookiesSent by {cookies}"),
                    counter_source(
                        "/proc/net/netstat TcpExt.TCPReqQFullDrop, SyncookiesSent",
                        ns,
                    ),
                ),
                Evidence::new(
                    format!(
                        "net.ipv4.tcp_syncookies {syncookies}, net.ipv4.tcp_max_syn_backlog {}",
                        setting(ns, "net.ipv4.tcp_max_syn_backlog")
                    ),
                    counter_source("sysctl", ns),
                ),
            ];
            if let Some(l) = top {
                evidence.push(Evidence::new(
                    format!(
                        "listener {}: backlog {} (the SYN queue holds as many handshakes in progress)",
                        socket_name(l),
                        l.socket.limit
                    ),
                    "sock_diag (accept queue and backlog)",
                ));
            }
            evidence.extend(waiting_clients(s, ns));
            out.push(Finding {
                explains: vec![DropClaim::reason(ns.netns.inode, "TCP_REQQFULLDROP")],
                id: "syn_queue_overflow".into(),
                severity,
                confidence: Confidence::High,
                title,
                scope: match top {
                    Some(l) => Scope::new(ScopeKind::Listener, format!("tcp {} in {where_}", l.socket.local)),
                    None => where_.clone(),
                },
                affected: syn_drops.max(cookies),
                evidence,
                fix: vec![
                    format!("enable syncookies: {}", inside(&where_, "sysctl -w net.ipv4.tcp_syncookies=1")),
                    "raise net.ipv4.tcp_max_syn_backlog and the listen() backlog; find why handshakes stall (lost ACKs, a flood): filter a flood upstream".into(),
                ],
            });
        }
    }
    out
}

/// How long the connections in a listener's accept queue have waited for the application.
fn accept_latency(l: &OwnedSocket, w: &AcceptWait) -> Evidence {
    let time = |ms: u32| humantime::format_duration(Duration::from_millis(ms.into())).to_string();
    let gave_up = match w.closed_by_client {
        0 => String::new(),
        n => format!("; {n} of them closed by their client before being accepted"),
    };
    Evidence::new(
        format!(
            "accept latency at {}: {} connections not yet accepted, the oldest waiting {}, the median {}{gave_up}",
            l.socket.local,
            w.waiting,
            time(w.oldest_ms),
            time(w.median_ms)
        ),
        "sock_diag tcp_info of the connections no process holds yet (time since the handshake)",
    )
}

/// Handshakes at an overflowing listener of `ns` that retransmitted: how long clients waited.
fn waiting_clients(s: &Snapshot, ns: &NamespaceCounted) -> Option<Evidence> {
    let waiting: Vec<_> = s.retrans.iter().filter(|f| at_listener_of(ns, f)).collect();
    let longest = waiting.iter().map(|f| f.max_same_seq).max()?;
    Some(Evidence::new(
        format!(
            "{} handshakes at it were retransmitted (clients' SYNs, its SYN-ACKs), up to {longest} times: each retry waits a second or more",
            waiting.len()
        ),
        "tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack",
    ))
}

pub fn send_side(s: &Snapshot) -> Vec<Finding> {
    s.counted
        .iter()
        .filter_map(|ns| {
            let counters = [
                (
                    "TcpExt.TCPWqueueTooBig",
                    "times TCP refused to split a queued segment (its send queue too big): the transfer stalls",
                ),
                (
                    "TcpExt.TCPAbortOnMemory",
                    "TCP connections aborted: out of socket memory",
                ),
                ("Udp.SndbufErrors", "datagrams not sent: send buffer full"),
                (
                    "Udp6.SndbufErrors",
                    "datagrams not sent: send buffer full (IPv6)",
                ),
            ];
            // A datagram a queueing discipline of this namespace or a full input backlog (a veth
            // hands its datagrams straight to one) dropped fails its send with ENOBUFS too:
            // those findings explain it.
            let mut dropped_here: u64 = s
                .drops
                .groups
                .iter()
                .filter(|g| {
                    (g.netns == ns.netns.inode && crate::model::reasons::is_qdisc(&g.reason))
                        || g.reason == "CPU_BACKLOG"
                })
                .map(|g| g.events)
                .sum();
            let grown: Vec<(&str, &str, u64)> = counters
                .iter()
                .map(|(c, m)| {
                    let mut n = grew(Some(ns), c);
                    if c.ends_with(".SndbufErrors") {
                        let explained = n.min(dropped_here);
                        dropped_here -= explained;
                        n -= explained;
                    }
                    (*c, *m, n)
                })
                .filter(|(_, _, n)| *n > 0)
                .collect();
            let total: u64 = grown.iter().map(|g| g.2).sum();
            if total < MIN_PACKETS {
                return None;
            }
            let scope = namespace_scope(Some(&ns.netns.name), ns.netns.inode);
            Some(Finding {
                explains: Vec::new(),
                id: "send_side_loss".into(),
                severity: Severity::Warning,
                confidence: Confidence::Medium,
                title: format!(
                    "this host refused to send: {}",
                    grown
                        .iter()
                        .map(|(c, _, n)| format!("{c} +{n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                scope,
                affected: total,
                evidence: grown
                    .iter()
                    .map(|(c, m, n)| Evidence::new(format!("{c} grew by {n}: {m}"), counter_source(&format!("/proc/net {c}"), ns)))
                    .collect(),
                fix: vec![
                    "give the senders more buffer (SO_SNDBUF; net.ipv4.tcp_wmem, net.core.wmem_max) or pace them".into(),
                    "if this began with a kernel update, bisect it: netdoc check --expect ... -- REPRODUCER on each kernel (git bisect run)".into(),
                ],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{doctor::rules::fixtures::*, facts::sockdiag::DiagSocket};

    fn socket(local: &str, queue: u32, limit: u32, drops: Option<u32>) -> OwnedSocket {
        OwnedSocket {
            socket: DiagSocket {
                local: local.parse().unwrap(),
                queue,
                limit,
                inode: 1234,
                drops,
                rcvbuf: Some(4608),
                accept_wait: None,
            },
            pid: Some(42),
            comm: Some("server".into()),
        }
    }

    #[test]
    fn a_full_receive_buffer_names_the_socket_and_its_process() {
        let mut s = quiet();
        let mut ns = counted(
            "blue",
            &[("Udp.RcvbufErrors", 300), ("Udp.InDatagrams", 700)],
            &[("net.core.rmem_max", 212992)],
        );
        ns.udp_sockets = vec![socket("10.0.0.2:5000", 4608, 0, Some(300))];
        s.counted = vec![ns];
        let f = receive_buffers(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "socket_receive_buffer_full");
        assert_eq!(f[0].scope.kind, ScopeKind::Socket);
        assert!(
            f[0].title.contains("10.0.0.2:5000 (server[42])"),
            "{}",
            f[0].title
        );
        assert!(f[0].shows("30.0% lost"));
        assert!(f[0].shows("receive buffer 4608 B"));
        assert!(f[0].shows("rmem_max 212992"));
    }

    #[test]
    fn an_accept_queue_overflow_names_the_listener_and_somaxconn() {
        let mut s = quiet();
        let mut ns = counted(
            "blue",
            &[("TcpExt.ListenOverflows", 16), ("TcpExt.ListenDrops", 16)],
            &[("net.core.somaxconn", 4096)],
        );
        ns.listeners = vec![socket("10.0.0.2:8080", 2, 1, None)];
        s.counted = vec![ns];
        let f = listen_queues(&s);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].id, "listen_queue_overflow");
        assert_eq!(f[0].scope.kind, ScopeKind::Listener);
        assert!(f[0].shows("2 connections waiting to be accepted, backlog 1"));
        assert!(f[0].fix[1].contains("listen()"), "not capped by somaxconn");
        assert!(!f[0].shows("accept latency"), "no waits were listed");
    }

    #[test]
    fn an_accept_queue_overflow_says_how_long_connections_wait_to_be_accepted() {
        let mut s = quiet();
        let mut ns = counted("blue", &[("TcpExt.ListenOverflows", 16)], &[]);
        let mut listener = socket("10.0.0.2:8080", 3, 2, None);
        listener.socket.accept_wait = Some(AcceptWait {
            waiting: 3,
            oldest_ms: 12_400,
            median_ms: 7_050,
            closed_by_client: 1,
        });
        ns.listeners = vec![listener];
        s.counted = vec![ns];
        let f = listen_queues(&s);
        assert!(
            f[0].shows(
                "accept latency at 10.0.0.2:8080: 3 connections not yet accepted, the oldest waiting 12s 400ms, the median 7s 50ms; 1 of them closed by their client before being accepted"
            ),
            "{f:#?}"
        );
    }

    #[test]
    fn syncookies_are_a_syn_queue_finding_not_an_accept_queue_one() {
        let mut s = quiet();
        s.counted = vec![counted(
            "blue",
            &[("TcpExt.SyncookiesSent", 500)],
            &[("net.ipv4.tcp_syncookies", 1)],
        )];
        let f = listen_queues(&s);
        assert_eq!(
            f.iter().map(|f| f.id.as_ref()).collect::<Vec<_>>(),
            ["syn_queue_overflow"]
        );
        assert_eq!(f[0].severity, Severity::Warning);
    }

    #[test]
    fn send_buffer_errors_point_at_bisecting() {
        let mut s = quiet();
        s.counted = vec![counted("host", &[("TcpExt.TCPWqueueTooBig", 12)], &[])];
        let f = send_side(&s);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].scope, Scope::host());
        assert!(f[0].fix.iter().any(|x| x.contains("netdoc check")));
    }
}
