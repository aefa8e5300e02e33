//! TCP retransmissions (`tcp:tcp_retransmit_skb`, `tcp:tcp_retransmit_synack`).
use crate::{EventHeader, NO_OFFSET};

/// Bits of [`RetransEvent::flags`].
pub mod flag {
    /// A SYN-ACK retransmitted for a pending connection (no skb, no sequence range).
    pub const SYNACK: u8 = 1 << 0;
}

/// One retransmitted segment (or TSO/GSO train of segments).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransEvent {
    pub header: EventHeader,
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// `TCP_ESTABLISHED` (1) ... as in `include/net/tcp_states.h`.
    pub state: u8,
    pub flags: u8,
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// Network byte order; IPv4 uses the first four bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// `TCP_SKB_CB(skb)->seq` and `end_seq`.
    pub seq: u32,
    pub end_seq: u32,
    /// Segments in the skb (`gso_segs`, at least 1) and the size of each (`gso_size`, 0 if one).
    pub gso_segs: u16,
    pub gso_size: u16,
    /// `tcp_sock.mss_cache`.
    pub mss: u32,
    /// `inet_connection_sock.icsk_pmtu_cookie`: the path MTU the socket uses.
    pub pmtu: u32,
    /// MTU of the route's egress device (`sk_dst_cache->dev->mtu`), 0 if unknown.
    pub dev_mtu: u32,
    /// The transmit's result where the kernel reports it (6.17+); 0 otherwise.
    pub err: i32,
    pub _pad: u32,
    /// `tcp_sock.bytes_acked`: how much the peer has acknowledged so far.
    pub bytes_acked: u64,
    /// `net.net_cookie` of the socket's namespace, 0 when unknown.
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<RetransEvent>() == 112);

/// Key of the in-kernel per-flow aggregation (an LRU map).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub netns: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub _pad: [u8; 6],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Retransmit events, and the segments they carried.
    pub events: u64,
    pub segs: u64,
    pub bytes: u64,
    pub synacks: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    pub last_seq: u32,
    /// Consecutive retransmits of `last_seq`, and the longest such run.
    pub same_seq: u32,
    pub max_same_seq: u32,
    /// Largest single segment payload retransmitted.
    pub max_seg: u32,
    pub pmtu_min: u32,
    pub pmtu_max: u32,
    pub dev_mtu: u32,
    pub mss: u32,
    pub state: u32,
    /// Events whose transmit failed (`err != 0`): not actually sent.
    pub failed: u32,
    /// `tcp_sock.bytes_acked` at the latest retransmit.
    pub bytes_acked: u64,
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 96);

/// Offsets the retransmit programs need, set once before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransConfig {
    /// Classic tracepoint record offsets (`tcp_retransmit_skb`).
    pub tp_skb: u32,
    pub tp_sk: u32,
    pub tp_err: u32,
    /// Classic `tcp_retransmit_synack` record offset of `req`.
    pub tp_synack_req: u32,
    /// BTF: `sk_buff.cb`, `.head`, `.end`; `skb_shared_info.gso_segs`, `.gso_size`.
    pub skb_cb: u32,
    pub skb_head: u32,
    pub skb_end: u32,
    pub shinfo_gso_segs: u32,
    pub shinfo_gso_size: u32,
    /// BTF: `sock_common` members, reached from a `sock` (or a `request_sock`).
    pub skc_family: u32,
    pub skc_state: u32,
    pub skc_num: u32,
    pub skc_dport: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    pub sk_net: u32,
    pub net_inum: u32,
    /// `net.net_cookie`.
    pub net_cookie: u32,
    pub icsk_pmtu_cookie: u32,
    pub tp_mss_cache: u32,
    pub tp_bytes_acked: u32,
    pub sk_dst_cache: u32,
    pub dst_dev: u32,
    pub dev_mtu: u32,
    /// 1: stream one record per retransmit.
    pub stream: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RetransConfig>() == 112);

impl RetransConfig {
    pub const EMPTY: RetransConfig = RetransConfig {
        tp_skb: NO_OFFSET,
        tp_sk: NO_OFFSET,
        tp_err: NO_OFFSET,
        tp_synack_req: NO_OFFSET,
        skb_cb: NO_OFFSET,
        skb_head: NO_OFFSET,
        skb_end: NO_OFFSET,
        shinfo_gso_segs: NO_OFFSET,
        shinfo_gso_size: NO_OFFSET,
        skc_family: NO_OFFSET,
        skc_state: NO_OFFSET,
        skc_num: NO_OFFSET,
        skc_dport: NO_OFFSET,
        skc_daddr: NO_OFFSET,
        skc_rcv_saddr: NO_OFFSET,
        skc_v6_daddr: NO_OFFSET,
        skc_v6_rcv_saddr: NO_OFFSET,
        sk_net: NO_OFFSET,
        net_inum: NO_OFFSET,
        net_cookie: NO_OFFSET,
        icsk_pmtu_cookie: NO_OFFSET,
        tp_mss_cache: NO_OFFSET,
        tp_bytes_acked: NO_OFFSET,
        sk_dst_cache: NO_OFFSET,
        dst_dev: NO_OFFSET,
        dev_mtu: NO_OFFSET,
        stream: 0,
        _pad: 0,
    };
}

pod!(FlowKey, FlowStats, RetransConfig);

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn retrans_event_layout_is_fixed() {
        assert_eq!(offset_of!(RetransEvent, family), 24);
        assert_eq!(offset_of!(RetransEvent, saddr), 32);
        assert_eq!(offset_of!(RetransEvent, seq), 64);
        assert_eq!(offset_of!(RetransEvent, gso_segs), 72);
        assert_eq!(offset_of!(RetransEvent, err), 88);
        assert_eq!(offset_of!(FlowKey, netns), 32);
    }
}
