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
}

const TCP_LISTEN: u8 = 10;

/// TCP listening sockets, IPv4 and IPv6.
pub fn tcp_listeners() -> io::Result<Vec<DiagSocket>> {
    let mut all = Vec::new();
    for family in [AF_INET, AF_INET6] {
        let states = StateFlags::from_bits_truncate(1 << TCP_LISTEN);
        all.extend(dump(family, IPPROTO_TCP, states, ExtensionFlags::empty())?);
    }
    Ok(all)
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
        )?);
    }
    Ok(all)
}

fn dump(
    family: u8,
    protocol: u8,
    states: StateFlags,
    extensions: ExtensionFlags,
) -> io::Result<Vec<DiagSocket>> {
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
                let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
                found.insert(inode, (pid, comm.trim().to_string()));
            }
        }
        if found.len() == inodes.len() {
            break;
        }
    }
    found
}
