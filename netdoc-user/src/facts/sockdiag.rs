//! Sockets of the calling thread's network namespace through sock_diag netlink (what `ss`
//! reads): TCP listeners with their accept queue and backlog, UDP sockets with their receive
//! buffer and drop count. The netlink socket is opened by the caller's thread, so a thread that
//! joined a namespace sees that namespace's sockets, without entering its mount namespace.
use std::{collections::BTreeMap, io, net::SocketAddr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};
use serde::{Deserialize, Serialize};

/// One socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiagSocket {
    pub local: SocketAddr,
    /// Listeners: connections waiting in the accept queue. Others: bytes in the receive queue.
    pub queue: u32,
    /// Listeners: the backlog (`listen(2)`'s, capped by `somaxconn`). Others: bytes to send.
    pub limit: u32,
    /// The socket's inode (`socket:[N]` in its owners' fd tables).
    pub inode: u32,
    /// `SK_MEMINFO_DROPS`: packets the socket dropped (a full receive buffer, mostly).
    pub drops: Option<u32>,
    /// `SO_RCVBUF` in effect, in bytes.
    pub rcvbuf: Option<u32>,
    /// Listeners: how long the connections in the accept queue have waited, when listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_wait: Option<AcceptWait>,
}

/// The connections waiting in one listener's accept queue: established (or closed by their
/// client since) and held by no process yet (inode 0). Each one's wait is tcp_info's time since
/// it last sent data, which for a connection nobody accepted is the time since its handshake
/// completed: the child socket is born with that stamp and only a process's writes move it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptWait {
    pub waiting: u32,
    pub oldest_ms: u32,
    pub median_ms: u32,
    /// Waiting ones whose client already closed (CLOSE_WAIT): it gave up before the accept.
    pub closed_by_client: u32,
}

/// One connection not yet accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unaccepted {
    pub local: SocketAddr,
    pub waited_ms: u32,
    pub closed_by_client: bool,
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 10;
/// `tcpi_last_data_sent` in `struct tcp_info`: after eight one-byte fields and nine `u32`s.
const LAST_DATA_SENT: usize = 44;

/// TCP listening sockets, IPv4 and IPv6.
pub fn tcp_listeners() -> io::Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let states = StateFlags::from_bits_truncate(1 << TCP_LISTEN);
        all.extend(dump(
            family,
            IPPROTO_TCP,
            states,
            ExtensionFlags::empty(),
            decode,
        )?);
    }
    Ok(all)
}

/// TCP listening sockets with how long their accept queues have waited.
pub fn tcp_listeners_waiting() -> io::Result<Vec<DiagSocket>> {
    let mut listeners = tcp_listeners()?;
    let mut unaccepted = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let states = StateFlags::from_bits_truncate(1 << TCP_ESTABLISHED | 1 << TCP_CLOSE_WAIT);
        unaccepted.extend(dump(
            family,
            IPPROTO_TCP,
            states,
            ExtensionFlags::INFO,
            decode_unaccepted,
        )?);
    }
    attach_waits(&mut listeners, unaccepted.into_iter().flatten());
    Ok(listeners)
}

/// A connection nobody accepted yet (no inode), with its wait; `None` for every other socket.
fn decode_unaccepted(r: &InetResponse) -> Option<Unaccepted> {
    let h = &r.header;
    if h.inode != 0 {
        return None;
    }
    let info = r.nlas.iter().find_map(|n| match n {
        Nla::TcpInfo(bytes) => bytes.get(LAST_DATA_SENT..LAST_DATA_SENT + 4),
        _ => None,
    })?;
    Some(Unaccepted {
        local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
        waited_ms: u32::from_ne_bytes(info.try_into().ok()?),
        closed_by_client: h.state == TCP_CLOSE_WAIT,
    })
}

/// Gives each listener the waits of the unaccepted connections on its address and port (an
/// unspecified address takes every address; listeners sharing a port with SO_REUSEPORT share
/// them, as the kernel does not say which queue holds which).
pub fn attach_waits(
    listeners: &mut [DiagSocket],
    unaccepted: impl IntoIterator<Item = Unaccepted>,
) {
    let unaccepted: Vec<Unaccepted> = unaccepted.into_iter().collect();
    for l in listeners {
        let mut waits: Vec<&Unaccepted> = unaccepted
            .iter()
            .filter(|u| {
                u.local.port() == l.local.port()
                    && (l.local.ip().is_unspecified() || same_ip(l.local, u.local))
            })
            .collect();
        if waits.is_empty() {
            continue;
        }
        waits.sort_by_key(|u| u.waited_ms);
        l.accept_wait = Some(AcceptWait {
            waiting: waits.len() as u32,
            oldest_ms: waits[waits.len() - 1].waited_ms,
            median_ms: waits[waits.len() / 2].waited_ms,
            closed_by_client: waits.iter().filter(|u| u.closed_by_client).count() as u32,
        });
    }
}

/// Whether two addresses are one, an IPv4-mapped IPv6 address being its IPv4 one.
fn same_ip(a: SocketAddr, b: SocketAddr) -> bool {
    let plain = |s: SocketAddr| s.ip().to_canonical();
    plain(a) == plain(b)
}

/// UDP sockets, IPv4 and IPv6, with their memory information.
pub fn udp_sockets() -> io::Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for family in [AF_INET, AF_INET6] {
        all.extend(dump(
            family,
            IPPROTO_UDP,
            StateFlags::all(),
            ExtensionFlags::SKMEMINFO,
            decode,
        )?);
    }
    Ok(all)
}

fn dump<T>(
    family: u8,
    protocol: u8,
    states: StateFlags,
    extensions: ExtensionFlags,
    decode: impl Fn(&InetResponse) -> T,
) -> io::Result<Vec<T>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions,
            states,
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut received = vec![0u8; 64 * 1024];
    // A dump ends with NLMSG_DONE; bound the reads all the same.
    for _ in 0..100_000 {
        let size = socket.recv(&mut &mut received[..], 0)?;
        let mut at = 0;
        while at < size {
            let message = NetlinkMessage::<SockDiagMessage>::deserialize(&received[at..size])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let length = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    out.push(decode(&r));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if length == 0 {
                break;
            }
            at += length;
        }
    }
    Err(io::Error::other("sock_diag: the dump did not end"))
}

fn decode(r: &InetResponse) -> DiagSocket {
    let h = &r.header;
    let meminfo = r.nlas.iter().find_map(|n| match n {
        Nla::MemInfo(m) => Some(m),
        _ => None,
    });
    DiagSocket {
        local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
        queue: h.recv_queue,
        limit: h.send_queue,
        inode: h.inode,
        drops: meminfo.map(|m| m.drops),
        rcvbuf: meminfo.map(|m| m.receive_queue_max),
        accept_wait: None,
    }
}

/// The process (pid and `comm`) holding each socket inode, from the processes' fd tables.
pub fn owners(inodes: &[u32]) -> BTreeMap<u32, (u32, String)> {
    let mut found = BTreeMap::new();
    if inodes.is_empty() {
        return found;
    }
    for (pid, dir) in super::procs::all() {
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let link = std::fs::read_link(fd.path()).unwrap_or_default();
            let inode = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
            if let Some(inode) = inode.filter(|i| inodes.contains(i) && !found.contains_key(i)) {
                let comm = super::procs::comm(&dir).unwrap_or_default();
                found.insert(inode, (pid, comm));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(local: &str) -> DiagSocket {
        DiagSocket {
            local: local.parse().unwrap(),
            queue: 0,
            limit: 128,
            inode: 7,
            drops: None,
            rcvbuf: None,
            accept_wait: None,
        }
    }

    fn waiting(local: &str, waited_ms: u32, closed_by_client: bool) -> Unaccepted {
        Unaccepted {
            local: local.parse().unwrap(),
            waited_ms,
            closed_by_client,
        }
    }

    #[test]
    fn each_listener_gets_the_waits_on_its_address_and_port() {
        let mut listeners = [
            listener("10.0.0.2:8080"),
            listener("[::]:9090"),
            listener("10.0.0.2:7070"),
        ];
        attach_waits(
            &mut listeners,
            [
                waiting("10.0.0.2:8080", 300, false),
                waiting("10.0.0.2:8080", 4_000, true),
                waiting("10.0.0.2:8080", 1_500, false),
                // Another address on the same port is another listener's.
                waiting("10.0.0.3:8080", 9_999, false),
                // A dual-stack listener takes IPv4-mapped and IPv6 connections.
                waiting("[::ffff:10.0.0.2]:9090", 20, false),
                waiting("[fd00::2]:9090", 40, false),
            ],
        );
        assert_eq!(
            listeners[0].accept_wait,
            Some(AcceptWait {
                waiting: 3,
                oldest_ms: 4_000,
                median_ms: 1_500,
                closed_by_client: 1,
            })
        );
        let dual = listeners[1].accept_wait.as_ref().unwrap();
        assert_eq!((dual.waiting, dual.oldest_ms), (2, 40));
        assert_eq!(listeners[2].accept_wait, None, "nothing waits at 7070");
    }

    #[test]
    fn a_mapped_address_is_its_ipv4_address() {
        let mut listeners = [listener("10.0.0.2:8080")];
        attach_waits(
            &mut listeners,
            [waiting("[::ffff:10.0.0.2]:8080", 5, false)],
        );
        assert_eq!(listeners[0].accept_wait.as_ref().unwrap().waiting, 1);
    }
}
