//! netdoc's own explanation of every kernel drop reason: what the reason means for the packet, what
//! kind of loss it is, which protocol counters move with it and what to look at next. The doctor
//! must account for every dropped packet: a drop group no specific rule explains is still reported,
//! as a generic finding built from this table, never left out.
//!
//! The table covers the core `enum skb_drop_reason` of every kernel netdoc supports (5.17 through
//! the newest: names that were added, renamed or removed on the way, such as `PTYPE_ABSENT`,
//! `VXLAN_INVALID_SMAC`, `VXLAN_NO_REMOTE`, `TCP_LISTEN_OVERFLOW`, `IPV6_TOO_MANY_EXTHDRS`) and the
//! subsystem enums (6.4+: `ovs_drop_reason`, `mac80211_drop_reason`, `qdisc_drop_reason`), named as
//! [`crate::model::reasons`] names them. The text is netdoc's, written for an operator; the kernel's
//! own comments in `include/net/dropreason-core.h` were the starting point, not the source.
//!
//! Not in the table, because they are not drops: `NOT_DROPPED_YET` and `CONSUMED` (a consumed
//! packet goes to `consume_skb`, never to `kfree_skb`), `MAX` and `SUBSYS_MASK` (bounds of the
//! enum, not values a packet carries) and the subsystems' bases and bounds
//! (`__OVS_DROP_REASON`, `OVS_DROP_MAX`, `__QDISC_DROP_REASON`, `QDISC_DROP_UNSPEC`,
//! `QDISC_DROP_MAX`, mac80211's `RX_CONTINUE` and `RX_QUEUED`). [`explain`] answers `None` for them
//! and for any name a future kernel adds; the caller still reports such a group by name and location.
//!
//! The principle of [`DropKind::Benign`]: a finding on a busy healthy host is as bad as silence on
//! a broken one, but calling real loss benign hides it. So only what is truly no loss is benign: a
//! copy of something the receiver already has (old or duplicate TCP data, a duplicate fragment or
//! Wi-Fi frame, a stale ACK) or no longer wants (data for a socket the application closed, a frame
//! for another host seen in promiscuous mode, a frame that only carried signalling). Anything a
//! sender will have to send again because of this host, or that never arrives, is not benign, however
//! routine (a full receive buffer, a listen queue overflow, path-MTU drops).
use serde::{Deserialize, Serialize};

/// What kind of loss a reason is: decides whether a drop group is a problem at all and how a person reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    /// Not loss: a copy the receiver already has or no longer needs (TCP_OLD_SEQUENCE, TCP_OLD_DATA, duplicate fragments, data for a socket the application closed, frames addressed to another host seen in promiscuous mode …). A busy healthy host shows these.
    Benign,
    /// A configured policy refused it: firewall, tc, socket filter, reverse-path filter, forwarding off, a route of type prohibit …
    Policy,
    /// A queue, buffer, table or memory limit was full.
    Capacity,
    /// Nowhere to deliver it: no socket, no route, no neighbour answer, no handler for its protocol.
    Undeliverable,
    /// Malformed, truncated or corrupt: checksum, header, length errors.
    Malformed,
    /// Protocol state rejected it: out of window, bad flags, PAWS, MD5/AO signatures, …
    Protocol,
    /// The kernel does not say (NOT_SPECIFIED and other catch-alls): the location tells more.
    Unspecific,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    /// As netdoc names it: the enum value without `SKB_DROP_REASON_` (e.g. `NO_SOCKET`); subsystem values as netdoc's `model/reasons.rs` names them.
    pub reason: &'static str,
    pub kind: DropKind,
    /// One plain-English sentence for an SRE: what happened to the packet and the usual cause. No trailing period.
    pub meaning: &'static str,
    /// SNMP/netstat counters that move with it, named as netdoc reads them (`facts::snmp`): file
    /// section + "." + field, exactly as in /proc/net/snmp and /proc/net/netstat (`Udp.NoPorts`,
    /// `TcpExt.IPReversePathFilter`, `IpExt.InNoRoutes`), and /proc/net/snmp6 split after its group
    /// (`Ip6InNoRoutes` is `Ip6.InNoRoutes`). Empty when none.
    pub counters: &'static [&'static str],
    /// What decides it or where to look next: the sysctl, the command, the table (`IF` stands for the interface).
    pub look_at: &'static str,
}

/// The explanation of a reason by netdoc's name for it (case-sensitive as netdoc prints names); None for a reason netdoc has no text for (still reported by name and location by the caller).
pub fn explain(reason: &str) -> Option<&'static Explanation> {
    TABLE
        .binary_search_by(|e| e.reason.cmp(reason))
        .ok()
        .map(|i| &TABLE[i])
}

/// Why a drop of an unspecific reason at this freeing function is no loss, where it never is:
/// traffic every link carries that nothing on this host was meant to receive.
pub fn harmless_at(reason: &str, function: &str) -> Option<&'static str> {
    HARMLESS_SITES
        .iter()
        .find(|(r, f, _)| *r == reason && *f == function)
        .map(|(.., why)| *why)
}

/// (reason, function, why).
const HARMLESS_SITES: [(&str, &str, &str); 2] = [
    (
        "NOT_SPECIFIED",
        "ip6_mc_input",
        "IPv6 multicast for a group nothing on this host joined (router solicitations, listener reports): every IPv6 link carries it",
    ),
    (
        "QUEUE_PURGE",
        "sk_stream_kill_queues",
        "data still queued on a TCP socket its application closed: the application's choice, not loss on the network",
    ),
];

/// Every explanation netdoc has, sorted by reason name.
pub fn all() -> &'static [Explanation] {
    TABLE
}

/// Sorted by `reason` (byte order) for [`explain`]'s binary search; a test keeps it so.
static TABLE: &[Explanation] = &[
    Explanation {
        reason: "ARP_PVLAN_DISABLE",
        kind: DropKind::Policy,
        meaning: "A packet would have gone back out of the interface it came in on in a private VLAN setup where that is not enabled, so it was dropped",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.proxy_arp_pvlan`",
    },
    Explanation {
        reason: "BLACKHOLE",
        kind: DropKind::Policy,
        meaning: "The packet matched a blackhole route, which silently discards it",
        counters: &[],
        look_at: "`ip route show type blackhole` (and `ip -6`) in that namespace",
    },
    Explanation {
        reason: "BPF_CGROUP_EGRESS",
        kind: DropKind::Policy,
        meaning: "A cgroup eBPF program refused the packet on its way out of a socket",
        counters: &[],
        look_at: "`bpftool cgroup tree` for cgroup_skb programs on the sender's cgroup (container runtimes and network policy agents attach them)",
    },
    Explanation {
        reason: "BRIDGE_INGRESS_STP_STATE",
        kind: DropKind::Policy,
        meaning: "A bridge port's spanning-tree state (blocking, listening, disabled) does not let it forward frames, so the frame was dropped",
        counters: &[],
        look_at: "`bridge link show` (port state) and the spanning-tree topology",
    },
    Explanation {
        reason: "CAKE_FLOOD",
        kind: DropKind::Capacity,
        meaning: "CAKE's flood protection dropped a packet of a flow that keeps sending despite congestion signals",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (cake tin statistics) and the unresponsive flow",
    },
    Explanation {
        reason: "CANFD_RX_INVALID_FRAME",
        kind: DropKind::Malformed,
        meaning: "A received CAN FD frame was invalid (bad length or flags), so it was dropped",
        counters: &[],
        look_at: "the CAN device and sender",
    },
    Explanation {
        reason: "CANXL_RX_INVALID_FRAME",
        kind: DropKind::Malformed,
        meaning: "A received CAN XL frame was invalid (bad length or flags), so it was dropped",
        counters: &[],
        look_at: "the CAN device and sender",
    },
    Explanation {
        reason: "CAN_RX_INVALID_FRAME",
        kind: DropKind::Malformed,
        meaning: "A received CAN frame was invalid (bad length or flags), so it was dropped",
        counters: &[],
        look_at: "the CAN device and sender",
    },
    Explanation {
        reason: "CPU_BACKLOG",
        kind: DropKind::Capacity,
        meaning: "The per-CPU input backlog queue was full (or RPS flow limit hit), so the received packet was dropped before protocol processing",
        counters: &[],
        look_at: "column 2 (\"dropped\") of `/proc/net/softnet_stat` for that CPU; `net.core.netdev_max_backlog`, RPS (`/sys/class/net/IF/queues/rx-N/rps_cpus`) and `net.core.flow_limit_cpu_bitmap`; veth and loopback traffic passes this queue",
    },
    Explanation {
        reason: "DEV_HDR",
        kind: DropKind::Malformed,
        meaning: "A device driver found the packet's device-specific header or metadata invalid (for example a virtio-net or tun header)",
        counters: &[],
        look_at: "the driver of that device and whatever writes the header (a VM, a tun/tap user)",
    },
    Explanation {
        reason: "DEV_READY",
        kind: DropKind::Undeliverable,
        meaning: "The device was not ready to send or receive (down, not running, or its queue not attached), so the packet was dropped",
        counters: &[],
        look_at: "`ip link show dev IF` (state, carrier) and, for tun/tap, whether a process has the queue open",
    },
    Explanation {
        reason: "DUALPI2_STEP_DROP",
        kind: DropKind::Capacity,
        meaning: "The DualPI2 qdisc dropped a packet that could not be ECN-marked while the low-latency queue's delay was above its step threshold",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (dualpi2 step threshold) and whether the flow's sender supports ECN",
    },
    Explanation {
        reason: "DUP_FRAG",
        kind: DropKind::Benign,
        meaning: "An IP fragment the host already held for reassembly arrived again, so the duplicate was discarded",
        counters: &[],
        look_at: "nothing when it is rare; many mean the path duplicates packets",
    },
    Explanation {
        reason: "FQ_BAND_LIMIT",
        kind: DropKind::Capacity,
        meaning: "The fq qdisc dropped the packet because its priority band had reached its packet limit",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (fq band limits and drops)",
    },
    Explanation {
        reason: "FQ_FLOW_LIMIT",
        kind: DropKind::Capacity,
        meaning: "The fq qdisc dropped the packet because its flow had reached the per-flow packet limit",
        counters: &[],
        look_at: "the fq `flow_limit` (`tc -s qdisc show dev IF`) and the flow's sending rate",
    },
    Explanation {
        reason: "FQ_HORIZON_LIMIT",
        kind: DropKind::Policy,
        meaning: "The fq qdisc dropped the packet because its departure time was further in the future than the configured horizon",
        counters: &[],
        look_at: "the fq `horizon` and `horizon_drop` settings (`tc qdisc show dev IF`) and the application setting transmit times (SO_TXTIME, pacing)",
    },
    Explanation {
        reason: "FRAG_REASM_TIMEOUT",
        kind: DropKind::Protocol,
        meaning: "The fragments of an IP datagram were discarded because the missing ones did not arrive within the reassembly timeout (a fragment was lost on the way)",
        counters: &[
            "Ip.ReasmTimeout",
            "Ip.ReasmFails",
            "Ip6.ReasmTimeout",
            "Ip6.ReasmFails",
        ],
        look_at: "`net.ipv4.ipfrag_time`; loss on the path; senders that fragment (large UDP such as DNS with EDNS, tunnels)",
    },
    Explanation {
        reason: "FRAG_TOO_FAR",
        kind: DropKind::Protocol,
        meaning: "An IP fragment arrived after too many other fragments from the same source (further apart than allowed), so its incomplete datagram was dropped",
        counters: &["Ip.ReasmFails"],
        look_at: "`net.ipv4.ipfrag_max_dist`; heavy reordering or loss on the path",
    },
    Explanation {
        reason: "FULL_RING",
        kind: DropKind::Capacity,
        meaning: "A device's ring or queue was full, so the packet could not be handed to it",
        counters: &[],
        look_at: "the device's ring sizes (`ethtool -g IF`) and its consumer (a VM, a tun/tap reader, the other end of veth with XDP)",
    },
    Explanation {
        reason: "HDR_TRUNC",
        kind: DropKind::Malformed,
        meaning: "The packet was too short to hold the protocol header that had to be read next",
        counters: &[],
        look_at: "the sender or device truncating frames; `ip -s link show dev IF`",
    },
    Explanation {
        reason: "ICMP_CSUM",
        kind: DropKind::Malformed,
        meaning: "An ICMP message arrived with a bad checksum",
        counters: &["Icmp.InCsumErrors", "Icmp6.InCsumErrors", "Icmp.InErrors"],
        look_at: "the sender and the path; `ethtool -S IF` for CRC errors",
    },
    Explanation {
        reason: "INVALID_PROTO",
        kind: DropKind::Policy,
        meaning: "An ICMP message the host does not answer in that form was discarded, such as an echo or timestamp request sent to a broadcast or multicast address",
        counters: &["Icmp.InErrors"],
        look_at: "`net.ipv4.icmp_echo_ignore_broadcasts`; who sends broadcast pings",
    },
    Explanation {
        reason: "IPV6DISABLED",
        kind: DropKind::Policy,
        meaning: "An IPv6 packet arrived on or was sent through an interface where IPv6 is disabled",
        counters: &["Ip6.InDiscards"],
        look_at: "`net.ipv6.conf.{all,IF}.disable_ipv6`",
    },
    Explanation {
        reason: "IPV6_BAD_EXTHDR",
        kind: DropKind::Malformed,
        meaning: "An IPv6 extension header was invalid, so the packet was dropped",
        counters: &["Ip6.InHdrErrors"],
        look_at: "the sender; `tcpdump -vv` of the packet",
    },
    Explanation {
        reason: "IPV6_NDISC_BAD_CODE",
        kind: DropKind::Malformed,
        meaning: "A neighbour discovery message carried an invalid ICMPv6 code",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "IPV6_NDISC_BAD_OPTIONS",
        kind: DropKind::Malformed,
        meaning: "A neighbour discovery message carried invalid options",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "IPV6_NDISC_FRAG",
        kind: DropKind::Malformed,
        meaning: "A neighbour discovery message arrived inside a fragmented packet, which the protocol forbids, so it was dropped",
        counters: &[],
        look_at: "the sender; `net.ipv6.conf.IF.suppress_frag_ndisc`",
    },
    Explanation {
        reason: "IPV6_NDISC_HOP_LIMIT",
        kind: DropKind::Protocol,
        meaning: "A neighbour discovery message arrived with a hop limit other than 255, so it may come from off-link and was dropped",
        counters: &[],
        look_at: "the sender (off-link or forged neighbour discovery)",
    },
    Explanation {
        reason: "IPV6_NDISC_NS_OTHERHOST",
        kind: DropKind::Benign,
        meaning: "A neighbour solicitation for an address this host does not own was ignored, as happens on a shared link",
        counters: &[],
        look_at: "nothing: solicitations for other hosts reach every host that listens on the same solicited-node group",
    },
    Explanation {
        reason: "IPV6_TOO_MANY_EXTHDRS",
        kind: DropKind::Malformed,
        meaning: "An IPv6 packet chained more extension headers than the kernel accepts, so it was dropped",
        counters: &[],
        look_at: "the sender (such chains are rare outside attacks)",
    },
    Explanation {
        reason: "IP_CSUM",
        kind: DropKind::Malformed,
        meaning: "An IPv4 packet arrived with a bad header checksum",
        counters: &["IpExt.InCsumErrors", "Ip.InHdrErrors"],
        look_at: "`ethtool -S IF` for CRC errors; the device or tunnel that delivered it",
    },
    Explanation {
        reason: "IP_INADDRERRORS",
        kind: DropKind::Policy,
        meaning: "A packet addressed to another host arrived on a host that does not forward, or matched an unreachable or prohibit route, so it was dropped",
        counters: &["Ip.InAddrErrors", "Ip6.InAddrErrors"],
        look_at: "`net.ipv4.ip_forward` and `net.ipv4.conf.IF.forwarding` (`net.ipv6.conf.IF.forwarding`); `ip route get DST iif IF` for unreachable or prohibit routes; why traffic for that address is sent here",
    },
    Explanation {
        reason: "IP_INHDR",
        kind: DropKind::Malformed,
        meaning: "The IP header was invalid (wrong version, header length or total length, or a bad option)",
        counters: &["Ip.InHdrErrors", "Ip6.InHdrErrors"],
        look_at: "the sender or middlebox producing it; `tcpdump -vv` on the receiving interface",
    },
    Explanation {
        reason: "IP_INNOROUTES",
        kind: DropKind::Undeliverable,
        meaning: "The host had no route for a received packet's destination, so it could not forward it",
        counters: &["IpExt.InNoRoutes", "Ip6.InNoRoutes"],
        look_at: "`ip route get DST iif IF` in that namespace; policy rules (`ip rule`)",
    },
    Explanation {
        reason: "IP_INVALID_DEST",
        kind: DropKind::Malformed,
        meaning: "A packet arrived with an impossible destination address (such as 0.0.0.0), so it was dropped",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.log_martians`; the sender",
    },
    Explanation {
        reason: "IP_INVALID_SOURCE",
        kind: DropKind::Malformed,
        meaning: "A packet arrived with an impossible source address (multicast, limited broadcast, or zero outside IGMP), so it was dropped as a martian",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.log_martians` to log them; the sender",
    },
    Explanation {
        reason: "IP_LOCALNET",
        kind: DropKind::Policy,
        meaning: "A packet with a loopback (127.0.0.0/8) source or destination arrived on an interface that does not accept them, so it was dropped",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.route_localnet`; NAT rules that redirect to 127.0.0.1",
    },
    Explanation {
        reason: "IP_LOCAL_SOURCE",
        kind: DropKind::Policy,
        meaning: "A packet arrived from outside with one of this host's own addresses as its source (a loop or spoofing), so it was dropped as a martian",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.accept_local`; `net.ipv4.conf.IF.log_martians` to log them; bridge or routing loops",
    },
    Explanation {
        reason: "IP_NOPROTO",
        kind: DropKind::Undeliverable,
        meaning: "Nothing on this host handles the packet's IP protocol number (a protocol whose module is not loaded, or no raw socket for it)",
        counters: &["Ip.InUnknownProtos", "Ip6.InUnknownProtos"],
        look_at: "the protocol number in the packet (`tcpdump -n 'not tcp and not udp and not icmp'`) and the modules that would handle it (sctp, gre, ipip ...)",
    },
    Explanation {
        reason: "IP_OUTNOROUTES",
        kind: DropKind::Undeliverable,
        meaning: "The host had no route for an outgoing packet's destination",
        counters: &["Ip.OutNoRoutes", "Ip6.OutNoRoutes"],
        look_at: "`ip route get DST` (and `ip -6 route get DST`) in that namespace; policy rules (`ip rule`) and VRFs",
    },
    Explanation {
        reason: "IP_RPFILTER",
        kind: DropKind::Policy,
        meaning: "Reverse-path filtering dropped the packet because the route back to its source leaves through another interface (asymmetric routing, or a spoofed source)",
        counters: &["TcpExt.IPReversePathFilter"],
        look_at: "`net.ipv4.conf.{all,IF}.rp_filter` (the effective mode is the higher of the two: 1 strict, 2 loose) and `ip route get SRC iif IF`",
    },
    Explanation {
        reason: "IP_TUNNEL_ECN",
        kind: DropKind::Protocol,
        meaning: "A decapsulated packet was dropped because its outer ECN marking could not be carried into the inner packet (congestion marked on a flow that does not support ECN, per RFC 6040)",
        counters: &[],
        look_at: "ECN settings of the tunnel ends and the inner flow's sender",
    },
    Explanation {
        reason: "LOCAL_MAC",
        kind: DropKind::Protocol,
        meaning: "A frame arrived with this device's own MAC address as its source (a loop), so it was dropped",
        counters: &[],
        look_at: "bridge or switch loops; duplicate MAC addresses",
    },
    Explanation {
        reason: "MAC_IEEE_MAC_CONTROL",
        kind: DropKind::Protocol,
        meaning: "A bridge dropped a frame sent to the IEEE MAC control address (such as a pause frame), which must never be forwarded",
        counters: &[],
        look_at: "the device sending pause frames (flow control, `ethtool -a IF`)",
    },
    Explanation {
        reason: "MAC_INVALID_SOURCE",
        kind: DropKind::Malformed,
        meaning: "A frame's source MAC address was invalid (multicast or zero), so it was dropped",
        counters: &[],
        look_at: "the sender (a VXLAN peer, a bridge port)",
    },
    Explanation {
        reason: "NEIGH_CREATEFAIL",
        kind: DropKind::Capacity,
        meaning: "The neighbour (ARP/NDP) table was full, so no entry could be created for the next hop and the packet was dropped",
        counters: &[],
        look_at: "`net.ipv4.neigh.default.gc_thresh3` (and ipv6) against the entries in `ip neigh show`; `table_fulls` in `/proc/net/stat/arp_cache`; \"neighbor table overflow\" in dmesg",
    },
    Explanation {
        reason: "NEIGH_DEAD",
        kind: DropKind::Undeliverable,
        meaning: "The neighbour entry the packet was queued on was removed (its device went down or the entry was flushed)",
        counters: &[],
        look_at: "interface state changes and `ip neigh flush` around the drop",
    },
    Explanation {
        reason: "NEIGH_FAILED",
        kind: DropKind::Undeliverable,
        meaning: "The next hop never answered ARP or neighbour discovery, so packets waiting for it were dropped",
        counters: &[],
        look_at: "the next hop's state in `ip neigh` (FAILED), whether it is up, and `res_failed` in `/proc/net/stat/arp_cache`",
    },
    Explanation {
        reason: "NEIGH_HH_FILLFAIL",
        kind: DropKind::Undeliverable,
        meaning: "The link-layer header for the next hop could not be built from its neighbour entry, so the packet was dropped",
        counters: &[],
        look_at: "the neighbour entry (`ip neigh`) and the device it points to",
    },
    Explanation {
        reason: "NEIGH_QUEUEFULL",
        kind: DropKind::Capacity,
        meaning: "Too many packets were waiting for a next hop's address to resolve, so the queue for it overflowed",
        counters: &[],
        look_at: "`net.ipv4.neigh.IF.unres_qlen_bytes` and `unresolved_discards` in `/proc/net/stat/arp_cache`; a next hop that resolves slowly or never",
    },
    Explanation {
        reason: "NETFILTER_DROP",
        kind: DropKind::Policy,
        meaning: "A netfilter verdict dropped the packet: an nftables or iptables rule, or conntrack (a full table, an invalid packet, a NAT clash)",
        counters: &[],
        look_at: "the ruleset of that namespace (`nft list ruleset`, `iptables-save`) and its counters; `/proc/net/stat/nf_conntrack` (`drop`, `insert_failed`, `invalid`) and `nf_conntrack_count` against `nf_conntrack_max`",
    },
    Explanation {
        reason: "NOMEM",
        kind: DropKind::Capacity,
        meaning: "Memory allocation failed while handling the packet",
        counters: &[],
        look_at: "kernel memory (`/proc/meminfo`, `/proc/net/sockstat`), `vm.min_free_kbytes`; dmesg for allocation failures",
    },
    Explanation {
        reason: "NOT_SPECIFIED",
        kind: DropKind::Unspecific,
        meaning: "The kernel freed the packet without naming a reason, so only the location where it was freed tells what happened",
        counters: &[],
        look_at: "the location (function) of the drop: among others an NFQUEUE queue no program reads (without `bypass`) and IPv6 neighbour table overflow report this",
    },
    Explanation {
        reason: "NO_SOCKET",
        kind: DropKind::Undeliverable,
        meaning: "No socket was listening or connected for the packet's address and port (a closed port, a stopped service, or a connection the host no longer knows), so it was refused",
        counters: &["Udp.NoPorts", "Udp6.NoPorts", "Tcp.OutRsts"],
        look_at: "`ss -lntu` for listeners on that port; TCP answers with a reset and UDP with ICMP port unreachable (rate limited: `net.ipv4.icmp_ratelimit`, `Icmp.OutRateLimitHost`); with syncookies an overflowing accept queue shows here too (`TcpExt.ListenOverflows`)",
    },
    Explanation {
        reason: "NO_TX_TARGET",
        kind: DropKind::Undeliverable,
        meaning: "A device found no target to send the packet to (a VXLAN device without a remote for it, for example), so it was dropped",
        counters: &[],
        look_at: "`bridge fdb show dev VXLAN` (default and per-MAC remotes) or the device's own configuration",
    },
    Explanation {
        reason: "OTHERHOST",
        kind: DropKind::Benign,
        meaning: "A frame addressed to another host's link-layer address reached the IP layer and was discarded, as happens with promiscuous mode (packet capture, bridge or virtual switch ports)",
        counters: &[],
        look_at: "which interface is promiscuous (`ip -d link`, `PROMISC`); if none should be, a bridge or macvlan that floods unknown unicast",
    },
    Explanation {
        reason: "OVS_DROP_ACTION_ERROR",
        kind: DropKind::Unspecific,
        meaning: "An Open vSwitch datapath action failed while processing the packet",
        counters: &[],
        look_at: "`ovs-dpctl dump-flows` for the flow's actions; `ovs-vswitchd.log`",
    },
    Explanation {
        reason: "OVS_DROP_CONNTRACK",
        kind: DropKind::Unspecific,
        meaning: "An Open vSwitch conntrack action failed for the packet (an invalid packet, a full table or a NAT failure)",
        counters: &[],
        look_at: "`ovs-appctl dpctl/dump-conntrack`, `/proc/net/stat/nf_conntrack` and the ct() actions of the flow",
    },
    Explanation {
        reason: "OVS_DROP_DEFERRED_LIMIT",
        kind: DropKind::Capacity,
        meaning: "Open vSwitch had too many deferred actions queued for the packet, so it was dropped",
        counters: &[],
        look_at: "flows with many recirculations or clones (`ovs-dpctl dump-flows`)",
    },
    Explanation {
        reason: "OVS_DROP_EXPLICIT",
        kind: DropKind::Policy,
        meaning: "An Open vSwitch flow dropped the packet with an explicit drop action",
        counters: &[],
        look_at: "the OpenFlow rules (`ovs-ofctl dump-flows BRIDGE`) and `ovs-appctl ofproto/trace`",
    },
    Explanation {
        reason: "OVS_DROP_EXPLICIT_WITH_ERROR",
        kind: DropKind::Unspecific,
        meaning: "Open vSwitch dropped the packet with an explicit drop that records an error in translating the flow (a missing port, too deep recursion)",
        counters: &[],
        look_at: "`ovs-appctl ofproto/trace` for the packet and `ovs-appctl coverage/show`; `ovs-vswitchd.log`",
    },
    Explanation {
        reason: "OVS_DROP_FRAG_INVALID_PROTO",
        kind: DropKind::Malformed,
        meaning: "Open vSwitch was asked to fragment a packet that is not IP, so it was dropped",
        counters: &[],
        look_at: "the flow's output port MTU and the packet's protocol",
    },
    Explanation {
        reason: "OVS_DROP_FRAG_L2_TOO_LONG",
        kind: DropKind::Malformed,
        meaning: "Open vSwitch could not fragment the packet because its link-layer header was too long",
        counters: &[],
        look_at: "the packet's encapsulation and the output port's MTU",
    },
    Explanation {
        reason: "OVS_DROP_IP_TTL",
        kind: DropKind::Undeliverable,
        meaning: "An Open vSwitch TTL decrement reached zero, so the packet was dropped",
        counters: &[],
        look_at: "routing loops through the switch; the flows that decrement the TTL",
    },
    Explanation {
        reason: "OVS_DROP_LAST_ACTION",
        kind: DropKind::Policy,
        meaning: "An Open vSwitch flow ended without sending the packet anywhere (a flow with no output, which is how OpenFlow drops)",
        counters: &[],
        look_at: "`ovs-dpctl dump-flows` and the OpenFlow rules (`ovs-ofctl dump-flows BRIDGE`)",
    },
    Explanation {
        reason: "OVS_DROP_METER",
        kind: DropKind::Policy,
        meaning: "An Open vSwitch meter dropped the packet because its flow exceeded the meter's rate",
        counters: &[],
        look_at: "`ovs-ofctl -O OpenFlow13 meter-stats BRIDGE` and the meter's configuration",
    },
    Explanation {
        reason: "OVS_DROP_RECURSION_LIMIT",
        kind: DropKind::Undeliverable,
        meaning: "Open vSwitch actions recursed too deeply (a loop between flows or ports), so the packet was dropped",
        counters: &[],
        look_at: "the flows that send the packet back into the datapath (`ovs-appctl ofproto/trace`)",
    },
    Explanation {
        reason: "PACKET_SOCK_ERROR",
        kind: DropKind::Capacity,
        meaning: "A packet socket (packet capture, a DHCP or LLDP agent) could not take its copy of the packet, usually because its buffer was full, while the packet itself went on",
        counters: &[],
        look_at: "the packet sockets (`ss -0 -p`) and their drops (`/proc/net/packet`, PACKET_STATISTICS)",
    },
    Explanation {
        reason: "PFMEMALLOC",
        kind: DropKind::Capacity,
        meaning: "A packet allocated from the emergency memory reserves reached a socket not allowed to use them, so it was dropped",
        counters: &["TcpExt.PFMemallocDrop"],
        look_at: "memory pressure (`/proc/meminfo`, `vm.min_free_kbytes`); swap over network storage",
    },
    Explanation {
        reason: "PKT_TOO_BIG",
        kind: DropKind::Undeliverable,
        meaning: "The packet was larger than the outgoing link's MTU and could not be fragmented (DF set, or IPv6), so it was dropped and an ICMP \"too big\" sent back",
        counters: &["Ip.FragFails", "Ip6.InTooBigErrors", "Icmp6.OutPktTooBigs"],
        look_at: "the MTUs on the path (`ip link`, `ip route get DST`); normal path-MTU discovery if the ICMP reaches the sender, a black hole if a firewall drops it",
    },
    Explanation {
        reason: "PKT_TOO_SMALL",
        kind: DropKind::Malformed,
        meaning: "The packet was shorter than its own headers claim (a truncated IP or UDP packet)",
        counters: &[
            "IpExt.InTruncatedPkts",
            "Ip6.InTruncatedPkts",
            "Udp.InErrors",
        ],
        look_at: "the sender or a device that truncates frames (MTU, offload, a broken tunnel); `ip -s link show dev IF`",
    },
    Explanation {
        reason: "PROTO_MEM",
        kind: DropKind::Capacity,
        meaning: "No memory could be charged to queue the packet: the socket's receive buffer was used up or the protocol's budget for all sockets was exhausted (TCP or UDP memory pressure)",
        counters: &[
            "Udp.MemErrors",
            "Udp6.MemErrors",
            "TcpExt.TCPRcvQDrop",
            "TcpExt.TCPOFODrop",
            "TcpExt.TCPMemoryPressures",
        ],
        look_at: "the socket's receive buffer (`ss -m`, `net.ipv4.tcp_rmem`, SO_RCVBUF); `net.ipv4.tcp_mem` and `net.ipv4.udp_mem` against the pages in use in `/proc/net/sockstat`; sockets holding large unread queues",
    },
    Explanation {
        reason: "PSP_INPUT",
        kind: DropKind::Protocol,
        meaning: "A received packet failed the PSP encryption checks (not encrypted though the socket requires it, or the wrong key or association)",
        counters: &[],
        look_at: "the PSP associations of the socket and its peer",
    },
    Explanation {
        reason: "PSP_OUTPUT",
        kind: DropKind::Protocol,
        meaning: "A packet to send failed the PSP encryption checks, so it was dropped",
        counters: &[],
        look_at: "the PSP associations of the socket and the device's PSP support",
    },
    Explanation {
        reason: "PTYPE_ABSENT",
        kind: DropKind::Undeliverable,
        meaning: "No protocol handler was registered for the frame's ethertype, so it was dropped (the name 5.18-era kernels used for UNHANDLED_PROTO)",
        counters: &[],
        look_at: "the ethertype in the frame (`tcpdump -e`); `rx_dropped` in `ip -s link show dev IF`",
    },
    Explanation {
        reason: "QDISC_CONGESTED",
        kind: DropKind::Capacity,
        meaning: "An active queue management algorithm (CoDel, PIE, RED and kin) dropped the packet to signal congestion",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF`: the qdisc's target, interval and drop counters; the link's rate",
    },
    Explanation {
        reason: "QDISC_DROP",
        kind: DropKind::Capacity,
        meaning: "The device's queueing discipline refused the outgoing packet, usually because its queue was full",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (dropped, overlimits, backlog); the qdisc's limit and the device's tx queue length (`ip link`)",
    },
    Explanation {
        reason: "QDISC_DROP_BAND_LIMIT",
        kind: DropKind::Capacity,
        meaning: "A qdisc dropped the packet because its priority band had reached its packet limit",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (band limits and drops)",
    },
    Explanation {
        reason: "QDISC_DROP_CAKE_FLOOD",
        kind: DropKind::Capacity,
        meaning: "CAKE's flood protection dropped a packet of a flow that keeps sending despite congestion signals",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (cake tin statistics) and the unresponsive flow",
    },
    Explanation {
        reason: "QDISC_DROP_CONGESTED",
        kind: DropKind::Capacity,
        meaning: "An active queue management algorithm (CoDel, PIE, RED and kin) dropped the packet to signal congestion",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF`: the qdisc's target and drop counters; the link's rate",
    },
    Explanation {
        reason: "QDISC_DROP_FLOOD_PROTECTION",
        kind: DropKind::Capacity,
        meaning: "A qdisc's flood protection (BLUE, as in CAKE) dropped a packet of a flow that keeps sending despite congestion signals",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` and the unresponsive flow",
    },
    Explanation {
        reason: "QDISC_DROP_FLOW_LIMIT",
        kind: DropKind::Capacity,
        meaning: "A qdisc (fq, sfq) dropped the packet because its flow had reached the per-flow limit",
        counters: &[],
        look_at: "the qdisc's per-flow limit (`tc -s qdisc show dev IF`) and the flow's sending rate",
    },
    Explanation {
        reason: "QDISC_DROP_FQ_BAND_LIMIT",
        kind: DropKind::Capacity,
        meaning: "The fq qdisc dropped the packet because its priority band had reached its packet limit",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (fq band limits and drops)",
    },
    Explanation {
        reason: "QDISC_DROP_FQ_HORIZON_LIMIT",
        kind: DropKind::Policy,
        meaning: "The fq qdisc dropped the packet because its departure time was further in the future than the configured horizon",
        counters: &[],
        look_at: "the fq `horizon` and `horizon_drop` settings and the application setting transmit times (SO_TXTIME, pacing)",
    },
    Explanation {
        reason: "QDISC_DROP_GENERIC",
        kind: DropKind::Capacity,
        meaning: "A queueing discipline dropped the packet without a more specific reason",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF`",
    },
    Explanation {
        reason: "QDISC_DROP_HORIZON_LIMIT",
        kind: DropKind::Policy,
        meaning: "A qdisc dropped the packet because its departure time was further in the future than the configured horizon",
        counters: &[],
        look_at: "the qdisc's `horizon` settings and the application setting transmit times (SO_TXTIME, pacing)",
    },
    Explanation {
        reason: "QDISC_DROP_L4S_STEP_NON_ECN",
        kind: DropKind::Capacity,
        meaning: "The DualPI2 qdisc dropped a packet that could not be ECN-marked while the low-latency queue's delay was above its step threshold",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF` (dualpi2 step threshold) and whether the flow's sender supports ECN",
    },
    Explanation {
        reason: "QDISC_DROP_MAXFLOWS",
        kind: DropKind::Capacity,
        meaning: "A per-flow qdisc (such as sfq) had no free flow slot for a new flow, so the packet was dropped",
        counters: &[],
        look_at: "the qdisc's `flows`/`divisor` settings (`tc -s qdisc show dev IF`)",
    },
    Explanation {
        reason: "QDISC_DROP_OVERLIMIT",
        kind: DropKind::Capacity,
        meaning: "The queueing discipline was over its configured limit, so the packet was dropped",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF`: the qdisc's limit and backlog",
    },
    Explanation {
        reason: "QDISC_OVERLIMIT",
        kind: DropKind::Capacity,
        meaning: "The queueing discipline was over its configured total limit (packets or bytes), so the packet was dropped",
        counters: &[],
        look_at: "`tc -s qdisc show dev IF`: the qdisc's limit and backlog",
    },
    Explanation {
        reason: "QUEUE_PURGE",
        kind: DropKind::Unspecific,
        meaning: "A whole queue of packets was freed at once (a device going down, a qdisc reset, a socket or neighbour being destroyed), so the location tells whose queue it was",
        counters: &[],
        look_at: "the location and what was torn down at that time (interface changes, restarts)",
    },
    Explanation {
        reason: "RECURSION_LIMIT",
        kind: DropKind::Undeliverable,
        meaning: "The packet looped through virtual devices (a tunnel routed into itself, stacked devices) until the nesting limit stopped it",
        counters: &[],
        look_at: "the routes and devices that send the tunnel's own traffic back into it (`ip route get REMOTE`)",
    },
    Explanation {
        reason: "RX_DROP",
        kind: DropKind::Unspecific,
        meaning: "mac80211 dropped the received frame without a more specific reason",
        counters: &[],
        look_at: "`iw dev IF station dump` and the driver's logs",
    },
    Explanation {
        reason: "RX_DROP_MONITOR",
        kind: DropKind::Unspecific,
        meaning: "mac80211 dropped the received frame after handing it to any monitor interfaces, without a more specific reason",
        counters: &[],
        look_at: "`iw dev IF station dump` and the driver's logs",
    },
    Explanation {
        reason: "RX_DROP_M_BAD_BCN_KEYIDX",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a protected beacon whose key index is invalid",
        counters: &[],
        look_at: "the access point's beacon protection keys",
    },
    Explanation {
        reason: "RX_DROP_M_BAD_MGMT_KEYIDX",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a protected management frame whose key index is invalid",
        counters: &[],
        look_at: "the management frame protection (802.11w) keys of both ends",
    },
    Explanation {
        reason: "RX_DROP_M_UNEXPECTED_4ADDR_FRAME",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame from a station not set up for four-address mode",
        counters: &[],
        look_at: "the station's 4addr/WDS setting (`iw dev IF set 4addr`)",
    },
    Explanation {
        reason: "RX_DROP_UNUSABLE",
        kind: DropKind::Unspecific,
        meaning: "mac80211 found the received frame unusable and dropped it, without a more specific reason",
        counters: &[],
        look_at: "`iw dev IF station dump` and the driver's logs",
    },
    Explanation {
        reason: "RX_DROP_U_ACTION_UNKNOWN_SRC",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped an action frame from a station it does not know",
        counters: &[],
        look_at: "the station's association state (`iw dev IF station dump`)",
    },
    Explanation {
        reason: "RX_DROP_U_AMSDU_WITHOUT_DATA",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped an aggregated frame (A-MSDU) that had no data",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_AP_RX_GROUPCAST",
        kind: DropKind::Protocol,
        meaning: "An access point dropped a group-addressed frame sent to it by a station, which stations may not send",
        counters: &[],
        look_at: "the station's driver",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_4ADDR",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame that this interface type does not accept",
        counters: &[],
        look_at: "the 4addr/WDS settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_AMSDU",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped an aggregated frame (A-MSDU) that could not be split",
        counters: &[],
        look_at: "the sender's driver; A-MSDU injection attempts",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_AMSDU_CIPHER",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an aggregated frame (A-MSDU) whose protection does not allow aggregation",
        counters: &[],
        look_at: "the cipher and SPP A-MSDU settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_BCN_KEYIDX",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a protected beacon whose key index is invalid",
        counters: &[],
        look_at: "the access point's beacon protection keys",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_CIPHER",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a frame protected with a cipher that does not match the key",
        counters: &[],
        look_at: "the cipher configured on both ends",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_KEY_COLOR",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a fragment protected with a different key than the earlier fragments",
        counters: &[],
        look_at: "rekeying during fragmented transfers; fragment injection attempts",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_MGMT_KEYIDX",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a protected management frame whose key index is invalid",
        counters: &[],
        look_at: "the management frame protection (802.11w) keys of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_BAD_MMIE",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a management frame with an invalid integrity element (MMIE)",
        counters: &[],
        look_at: "the sender's 802.11w support",
    },
    Explanation {
        reason: "RX_DROP_U_BAR_OUTSIDE_SESSION",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a block-ack request for a session that does not exist",
        counters: &[],
        look_at: "aggregation sessions of the station",
    },
    Explanation {
        reason: "RX_DROP_U_CTRL_FRAME",
        kind: DropKind::Benign,
        meaning: "mac80211 dropped a control frame that needs no further processing",
        counters: &[],
        look_at: "nothing: control frames carry no data",
    },
    Explanation {
        reason: "RX_DROP_U_DECRYPT_FAIL",
        kind: DropKind::Protocol,
        meaning: "mac80211 could not decrypt the frame",
        counters: &[],
        look_at: "the Wi-Fi keys of both ends and rekeying",
    },
    Explanation {
        reason: "RX_DROP_U_DEFRAG_MISMATCH",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a fragment that matched no frame being reassembled",
        counters: &[],
        look_at: "loss of earlier fragments; the sender's fragmentation threshold",
    },
    Explanation {
        reason: "RX_DROP_U_DUP",
        kind: DropKind::Benign,
        meaning: "mac80211 dropped a retransmitted Wi-Fi frame it had already received (same sequence number)",
        counters: &[],
        look_at: "nothing when it is a small share: Wi-Fi retransmits frames whose acknowledgement got lost",
    },
    Explanation {
        reason: "RX_DROP_U_EXPECTED_MGMT",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a frame that reached management processing without being a management frame",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_EXPECT_DEFRAG_PROT",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected fragment where protected fragments were expected",
        counters: &[],
        look_at: "fragment injection attempts; the sender's encryption",
    },
    Explanation {
        reason: "RX_DROP_U_INVALID_8023",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a frame that could not be converted to an Ethernet frame",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_KEY_TAINTED",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a frame protected with a key that is being replaced",
        counters: &[],
        look_at: "rekeying on the network",
    },
    Explanation {
        reason: "RX_DROP_U_MALFORMED_ACTION",
        kind: DropKind::Malformed,
        meaning: "An access point dropped a malformed action frame instead of returning it",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "RX_DROP_U_MCAST_DEAUTH",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a deauthentication frame sent to a multicast address",
        counters: &[],
        look_at: "the sender; spoofed deauthentication",
    },
    Explanation {
        reason: "RX_DROP_U_MCAST_DISASSOC",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a disassociation or association response sent to a multicast address",
        counters: &[],
        look_at: "the sender; spoofed frames",
    },
    Explanation {
        reason: "RX_DROP_U_MCAST_FRAGMENT",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a fragment of a multicast frame, which is not allowed",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_A3_MISMATCH",
        kind: DropKind::Protocol,
        meaning: "A mesh interface dropped a group frame that carried its own address as the third address (its own frame coming back)",
        counters: &[],
        look_at: "the mesh topology",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_A4_MISMATCH",
        kind: DropKind::Protocol,
        meaning: "A mesh interface dropped a unicast frame that carried its own address as the fourth address (its own frame coming back)",
        counters: &[],
        look_at: "the mesh topology",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_BAD_AE",
        kind: DropKind::Malformed,
        meaning: "A mesh interface dropped a frame with an invalid mesh address extension",
        counters: &[],
        look_at: "the mesh peer",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_DS_BITS",
        kind: DropKind::Malformed,
        meaning: "A mesh interface dropped a group frame with invalid distribution bits",
        counters: &[],
        look_at: "the mesh peer",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_NOT_FORWARDING",
        kind: DropKind::Policy,
        meaning: "A mesh interface dropped a unicast frame to forward because forwarding is off on it",
        counters: &[],
        look_at: "the interface's `mesh_fwding` setting",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_NO_A4",
        kind: DropKind::Malformed,
        meaning: "A mesh interface dropped a unicast frame without the fourth address mesh requires",
        counters: &[],
        look_at: "the mesh peer",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_NO_TTL",
        kind: DropKind::Malformed,
        meaning: "A mesh interface dropped a frame whose mesh TTL was already zero",
        counters: &[],
        look_at: "the mesh peer",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_RMC",
        kind: DropKind::Benign,
        meaning: "A mesh interface dropped a group frame it had already seen (in its recent multicast cache), as mesh flooding delivers copies over several paths",
        counters: &[],
        look_at: "nothing: flooding in a mesh makes copies",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_TTL_EXPIRED",
        kind: DropKind::Undeliverable,
        meaning: "A mesh interface dropped a frame to forward whose mesh TTL ran out",
        counters: &[],
        look_at: "the mesh path length and `mesh_ttl`",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_UNEXP_DATA",
        kind: DropKind::Protocol,
        meaning: "A mesh interface dropped a frame from a peer it has no mesh link with",
        counters: &[],
        look_at: "the mesh peerings (`iw dev IF station dump`)",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_UNEXP_MGMT",
        kind: DropKind::Protocol,
        meaning: "A mesh interface dropped a management frame not allowed before peering",
        counters: &[],
        look_at: "the mesh peerings",
    },
    Explanation {
        reason: "RX_DROP_U_MESH_WRONG_ACTION",
        kind: DropKind::Protocol,
        meaning: "A mesh interface dropped an action frame of a category not allowed before peering",
        counters: &[],
        look_at: "the mesh peerings",
    },
    Explanation {
        reason: "RX_DROP_U_MIC_FAIL",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a frame whose message integrity check failed (wrong key or tampering)",
        counters: &[],
        look_at: "the Wi-Fi keys of both ends; repeated failures suggest an attack or a key mismatch",
    },
    Explanation {
        reason: "RX_DROP_U_MMIC_FAIL",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a TKIP frame whose Michael MIC failed",
        counters: &[],
        look_at: "the TKIP keys of both ends; countermeasures after repeated failures",
    },
    Explanation {
        reason: "RX_DROP_U_NONBCAST_BEACON",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a beacon that was not sent to the broadcast address",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "RX_DROP_U_NONSEQ_PN",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a fragment whose packet number did not follow the previous fragment's",
        counters: &[],
        look_at: "the sender; fragment injection attempts",
    },
    Explanation {
        reason: "RX_DROP_U_NOT_PORT_CONTROL",
        kind: DropKind::Policy,
        meaning: "mac80211 dropped a data frame before the port was authorized (802.1X or the handshake not done)",
        counters: &[],
        look_at: "the station's authorization (`iw dev IF station dump`: authorized) and wpa_supplicant or hostapd logs",
    },
    Explanation {
        reason: "RX_DROP_U_NO_ICV",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a WEP frame without an integrity value",
        counters: &[],
        look_at: "the sender's encryption",
    },
    Explanation {
        reason: "RX_DROP_U_NO_IV",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a protected frame without an initialization vector",
        counters: &[],
        look_at: "the sender's encryption",
    },
    Explanation {
        reason: "RX_DROP_U_NO_KEY_ID",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a protected frame without a usable key id",
        counters: &[],
        look_at: "the sender's encryption settings",
    },
    Explanation {
        reason: "RX_DROP_U_NO_LINK",
        kind: DropKind::Unspecific,
        meaning: "mac80211 dropped a frame it could not attribute to a link of a multi-link connection",
        counters: &[],
        look_at: "the driver and dmesg (this path warns once)",
    },
    Explanation {
        reason: "RX_DROP_U_NULL_DATA",
        kind: DropKind::Benign,
        meaning: "mac80211 dropped a data frame that carries no payload (a null-data frame used only for power-save signalling) after handling it",
        counters: &[],
        look_at: "nothing: stations send these to signal power saving",
    },
    Explanation {
        reason: "RX_DROP_U_OOM",
        kind: DropKind::Capacity,
        meaning: "mac80211 ran out of memory while handling the frame",
        counters: &[],
        look_at: "kernel memory (`/proc/meminfo`)",
    },
    Explanation {
        reason: "RX_DROP_U_PORT_CONTROL",
        kind: DropKind::Policy,
        meaning: "mac80211 dropped a data frame because the port was not yet authorized for it (802.1X or the handshake not done)",
        counters: &[],
        look_at: "the station's authorization (`iw dev IF station dump`) and wpa_supplicant or hostapd logs",
    },
    Explanation {
        reason: "RX_DROP_U_REJECTED_ACTION_RESPONSE",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a rejected action frame that came back to it",
        counters: &[],
        look_at: "the peer's support for the action",
    },
    Explanation {
        reason: "RX_DROP_U_REPLAY",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a frame whose packet number was already used (a replay)",
        counters: &[],
        look_at: "the peer and any retransmitting repeater; repeated replays suggest an attack",
    },
    Explanation {
        reason: "RX_DROP_U_RUNT_ACTION",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped an action frame too short to hold its category",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "RX_DROP_U_RUNT_BAR",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a block-ack request too short to read",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_RUNT_DATA",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a data frame too short to hold its header",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_RUNT_MESH_DATA",
        kind: DropKind::Malformed,
        meaning: "A mesh interface dropped a data frame too short for its mesh header",
        counters: &[],
        look_at: "the mesh peer",
    },
    Explanation {
        reason: "RX_DROP_U_RUNT_MGMT",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a management frame too short to hold its header",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_CCMP",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a CCMP frame too short to decrypt",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_CCMP_MIC",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a CCMP frame too short for its integrity code",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_CMAC",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a management frame too short for its CMAC integrity element",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_CMAC256",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a management frame too short for its CMAC-256 integrity element",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_GCMP",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a GCMP frame too short to decrypt",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_GCMP_MIC",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a GCMP frame too short for its integrity code",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_GMAC",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a management frame too short for its GMAC integrity element",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_MMIC",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a TKIP frame too short for its Michael MIC",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SHORT_TKIP",
        kind: DropKind::Malformed,
        meaning: "mac80211 dropped a TKIP frame too short to decrypt",
        counters: &[],
        look_at: "the sender's driver",
    },
    Explanation {
        reason: "RX_DROP_U_SPURIOUS",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a data frame from a station that is not associated with this interface",
        counters: &[],
        look_at: "the station's association state (`iw dev IF station dump`)",
    },
    Explanation {
        reason: "RX_DROP_U_SPURIOUS_NOTIF",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a data frame from a station that is not associated, after telling userspace about it",
        counters: &[],
        look_at: "the station's association state (`iw dev IF station dump`) and hostapd's log",
    },
    Explanation {
        reason: "RX_DROP_U_TKIP_FAIL",
        kind: DropKind::Protocol,
        meaning: "mac80211 could not decrypt a TKIP frame",
        counters: &[],
        look_at: "the TKIP keys of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_4ADDR",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame from a station not set up for four-address mode, after telling userspace",
        counters: &[],
        look_at: "the station's 4addr/WDS setting and hostapd's log",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_4ADDR_FRAME",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame from a station not set up for four-address mode",
        counters: &[],
        look_at: "the station's 4addr/WDS setting (`iw dev IF set 4addr`)",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_EXT_FRAME",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an extension frame on an interface that is not a station",
        counters: &[],
        look_at: "the interface type",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_STA_4ADDR",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame from a station not set up for four-address mode",
        counters: &[],
        look_at: "the station's 4addr/WDS setting",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_VLAN_4ADDR",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a four-address frame on an AP VLAN interface that does not expect one",
        counters: &[],
        look_at: "the AP VLAN's 4addr setting",
    },
    Explanation {
        reason: "RX_DROP_U_UNEXPECTED_VLAN_MCAST",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped a multicast frame on an AP VLAN interface that must not receive one",
        counters: &[],
        look_at: "the AP VLAN configuration",
    },
    Explanation {
        reason: "RX_DROP_U_UNHANDLED_DEAUTH",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a deauthentication frame on an interface type that does not handle it",
        counters: &[],
        look_at: "the interface type (`iw dev`)",
    },
    Explanation {
        reason: "RX_DROP_U_UNHANDLED_DISASSOC",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a disassociation or association response on an interface that is not a station",
        counters: &[],
        look_at: "the interface type (`iw dev`)",
    },
    Explanation {
        reason: "RX_DROP_U_UNHANDLED_MGMT",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a management frame this interface type does not handle",
        counters: &[],
        look_at: "the interface type (`iw dev`)",
    },
    Explanation {
        reason: "RX_DROP_U_UNHANDLED_MGMT_STYPE",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a management frame of a subtype it does not handle",
        counters: &[],
        look_at: "the sender",
    },
    Explanation {
        reason: "RX_DROP_U_UNHANDLED_PREQ",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a probe request on an interface type that does not answer them",
        counters: &[],
        look_at: "the interface type (`iw dev`)",
    },
    Explanation {
        reason: "RX_DROP_U_UNKNOWN_ACTION_REJECTED",
        kind: DropKind::Protocol,
        meaning: "mac80211 rejected an action frame it does not know and returned it to the sender",
        counters: &[],
        look_at: "the peer's use of that action",
    },
    Explanation {
        reason: "RX_DROP_U_UNKNOWN_MCAST_ACTION",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a group-addressed action frame it does not handle",
        counters: &[],
        look_at: "nothing unless frequent: other devices send actions this host does not use",
    },
    Explanation {
        reason: "RX_DROP_U_UNKNOWN_STA",
        kind: DropKind::Undeliverable,
        meaning: "mac80211 dropped a block-ack request from a station it does not know",
        counters: &[],
        look_at: "the station's association state",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROTECTED",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected frame where protection is required",
        counters: &[],
        look_at: "the encryption settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_ACTION",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected action frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_BEACON",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected beacon where beacon protection is in use",
        counters: &[],
        look_at: "the access point's beacon protection",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_DUAL",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected dual-of-public action frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_MCAST_MGMT",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected group management frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_ROBUST_ACTION",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected robust action frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_UCAST_MGMT",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected unicast management frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_UNPROT_UNICAST_PUB_ACTION",
        kind: DropKind::Protocol,
        meaning: "mac80211 dropped an unprotected unicast public action frame that must be protected",
        counters: &[],
        look_at: "management frame protection (802.11w) settings of both ends",
    },
    Explanation {
        reason: "RX_DROP_U_WEP_DEC_FAIL",
        kind: DropKind::Protocol,
        meaning: "mac80211 could not decrypt a WEP frame",
        counters: &[],
        look_at: "the WEP key of both ends",
    },
    Explanation {
        reason: "SECURITY_HOOK",
        kind: DropKind::Policy,
        meaning: "A security module (LSM such as SELinux or AppArmor) refused the packet",
        counters: &[],
        look_at: "the audit log and the security policy for the socket's label",
    },
    Explanation {
        reason: "SKB_CSUM",
        kind: DropKind::Malformed,
        meaning: "Computing or checking the packet's checksum in software failed",
        counters: &[],
        look_at: "the device's checksum offload (`ethtool -k IF`) and the path that built the packet",
    },
    Explanation {
        reason: "SKB_GSO_SEG",
        kind: DropKind::Malformed,
        meaning: "Splitting a large (GSO) packet into segments failed, usually because it was malformed or memory ran out",
        counters: &[],
        look_at: "offload settings (`ethtool -k IF`: tso, gso) of the devices on the path; virtual machines or tunnels handing over oversized packets",
    },
    Explanation {
        reason: "SKB_RX_HEADROOM",
        kind: DropKind::Unspecific,
        meaning: "A received packet lacked the buffer headroom a later stage needed to add a header, so it was dropped",
        counters: &[],
        look_at: "the location and the device or driver that delivered the packet",
    },
    Explanation {
        reason: "SKB_UCOPY_FAULT",
        kind: DropKind::Malformed,
        meaning: "Copying the packet's data from the sending application's memory failed (a bad user buffer or a zero-copy failure)",
        counters: &[],
        look_at: "the sending application (it also got EFAULT) and its use of MSG_ZEROCOPY",
    },
    Explanation {
        reason: "SOCKET_BACKLOG",
        kind: DropKind::Capacity,
        meaning: "A TCP segment arrived while the application held the socket and the socket's backlog queue was already full, so it was dropped",
        counters: &["TcpExt.TCPBacklogDrop"],
        look_at: "the receive buffer (`net.ipv4.tcp_rmem`, SO_RCVBUF), since the backlog limit follows it; threads that hold the socket lock for long",
    },
    Explanation {
        reason: "SOCKET_CLOSE",
        kind: DropKind::Benign,
        meaning: "Data still queued on a socket was discarded because the application closed the socket before reading it",
        counters: &[],
        look_at: "the application's shutdown path: Unix sockets report it (6.14+) for messages left unread at close and for garbage-collected in-flight descriptors; a TCP socket closed with unread data also resets the connection (`TcpExt.TCPAbortOnClose`)",
    },
    Explanation {
        reason: "SOCKET_FILTER",
        kind: DropKind::Policy,
        meaning: "A filter program attached to the receiving socket (classic or eBPF, SO_ATTACH_FILTER or SO_ATTACH_BPF) rejected the packet",
        counters: &[],
        look_at: "the socket's filter: `ss -0 -p`, `bpftool prog show`, `bpftool net show`",
    },
    Explanation {
        reason: "SOCKET_RCVBUFF",
        kind: DropKind::Capacity,
        meaning: "The receiving socket's buffer was full because the application did not read fast enough, so the packet was dropped",
        counters: &[
            "Udp.RcvbufErrors",
            "Udp6.RcvbufErrors",
            "TcpExt.TCPRcvQDrop",
        ],
        look_at: "the socket's receive queue and drops (`ss -m`, `skmem` `d`), SO_RCVBUF and `net.core.rmem_max`/`rmem_default`; how busy the reading thread is",
    },
    Explanation {
        reason: "TAP_FILTER",
        kind: DropKind::Policy,
        meaning: "An eBPF filter attached to a tun/tap device dropped the packet",
        counters: &[],
        look_at: "the filter set with TUNSETFILTEREBPF by the tap's owner (a VM manager)",
    },
    Explanation {
        reason: "TAP_TXFILTER",
        kind: DropKind::Policy,
        meaning: "A tun/tap device's transmit filter (its MAC or multicast list) dropped the packet",
        counters: &[],
        look_at: "the filter set with TUNSETTXFILTER by the tap's owner (a VM manager)",
    },
    Explanation {
        reason: "TCP_ABORT_ON_DATA",
        kind: DropKind::Benign,
        meaning: "Data arrived on a connection the application had already closed, so the kernel discarded it and reset the connection",
        counters: &["TcpExt.TCPAbortOnData"],
        look_at: "the application's close path (closing while the peer still sends, as HTTP keep-alive servers do); the peer sees a reset",
    },
    Explanation {
        reason: "TCP_ACK_UNSENT_DATA",
        kind: DropKind::Protocol,
        meaning: "A segment acknowledged data this host has not sent yet, so it was discarded",
        counters: &["TcpExt.TCPChallengeACK"],
        look_at: "the peer or a middlebox rewriting sequence numbers; possibly forged segments",
    },
    Explanation {
        reason: "TCP_AOFAILURE",
        kind: DropKind::Protocol,
        meaning: "A segment's TCP-AO signature did not verify (different keys, or the segment was altered)",
        counters: &["TcpExt.TCPAOBad"],
        look_at: "the TCP-AO keys on both ends; a middlebox rewriting TCP",
    },
    Explanation {
        reason: "TCP_AOKEYNOTFOUND",
        kind: DropKind::Protocol,
        meaning: "A segment's TCP-AO signature named a key this host does not have",
        counters: &["TcpExt.TCPAOKeyNotFound"],
        look_at: "the TCP-AO key ids configured on both ends",
    },
    Explanation {
        reason: "TCP_AONOTFOUND",
        kind: DropKind::Protocol,
        meaning: "A segment lacked the TCP-AO signature this connection requires",
        counters: &["TcpExt.TCPAORequired"],
        look_at: "the TCP-AO keys on both ends",
    },
    Explanation {
        reason: "TCP_AOUNEXPECTED",
        kind: DropKind::Protocol,
        meaning: "A segment carried a TCP-AO signature on a connection that does not use TCP-AO",
        counters: &["TcpExt.TCPAOKeyNotFound"],
        look_at: "the TCP-AO keys on both ends",
    },
    Explanation {
        reason: "TCP_AUTH_HDR",
        kind: DropKind::Protocol,
        meaning: "A TCP segment carried both or repeated TCP-MD5 and TCP-AO signature options, which is invalid, so it was discarded",
        counters: &[],
        look_at: "the peer's TCP-MD5/TCP-AO configuration (usually BGP sessions)",
    },
    Explanation {
        reason: "TCP_CLOSE",
        kind: DropKind::Undeliverable,
        meaning: "A segment arrived for a socket that was already in the CLOSE state",
        counters: &[],
        look_at: "connections closed while the peer still sends; the application's shutdown order",
    },
    Explanation {
        reason: "TCP_CSUM",
        kind: DropKind::Malformed,
        meaning: "A TCP segment arrived with a bad checksum (corruption on the way, or a checksum offload that did not fill it in)",
        counters: &["Tcp.InCsumErrors", "Tcp.InErrs"],
        look_at: "`ethtool -S IF` for CRC errors; checksum offload settings (`ethtool -k IF`) of the sender, the NIC and any tunnel",
    },
    Explanation {
        reason: "TCP_FASTOPEN",
        kind: DropKind::Protocol,
        meaning: "A TCP Fast Open request socket discarded a segment it could not accept",
        counters: &[],
        look_at: "`net.ipv4.tcp_fastopen`; the clients using Fast Open",
    },
    Explanation {
        reason: "TCP_FLAGS",
        kind: DropKind::Protocol,
        meaning: "A TCP segment had a combination of flags that is invalid for the connection's state, so it was discarded",
        counters: &[],
        look_at: "the peer or middlebox sending it; `tcpdump` of the flow",
    },
    Explanation {
        reason: "TCP_INVALID_ACK_SEQUENCE",
        kind: DropKind::Protocol,
        meaning: "A segment acknowledged data that was never sent or is long acknowledged (outside the send window), so it was discarded",
        counters: &[],
        look_at: "the peer's TCP, a middlebox that rewrites sequence numbers, or a connection one side lost track of",
    },
    Explanation {
        reason: "TCP_INVALID_END_SEQUENCE",
        kind: DropKind::Protocol,
        meaning: "A segment's data reached beyond the receive window the host had advertised, so it was discarded",
        counters: &["TcpExt.BeyondWindow"],
        look_at: "the sender's TCP and any middlebox that rewrites windows",
    },
    Explanation {
        reason: "TCP_INVALID_SEQUENCE",
        kind: DropKind::Protocol,
        meaning: "A segment's sequence number was outside the receive window, so it was discarded and answered with an ACK",
        counters: &["TcpExt.BeyondWindow"],
        look_at: "the peer's TCP, a middlebox that rewrites sequence numbers, or a connection one side lost track of (a conntrack or NAT timeout)",
    },
    Explanation {
        reason: "TCP_INVALID_SYN",
        kind: DropKind::Protocol,
        meaning: "A SYN arrived on a connection that is already synchronized, so it was discarded and answered with a challenge ACK",
        counters: &["TcpExt.TCPSYNChallenge", "TcpExt.TCPChallengeACK"],
        look_at: "a peer that restarted and reuses the port, or a middlebox that lost the connection",
    },
    Explanation {
        reason: "TCP_LISTEN_OVERFLOW",
        kind: DropKind::Capacity,
        meaning: "The final ACK of a handshake was dropped because the listener's accept queue was full (the application does not call accept fast enough)",
        counters: &["TcpExt.ListenOverflows", "TcpExt.ListenDrops"],
        look_at: "the listener's backlog (`ss -lnt`: Recv-Q against Send-Q), the listen() backlog and `net.core.somaxconn`; how fast the application accepts",
    },
    Explanation {
        reason: "TCP_MD5FAILURE",
        kind: DropKind::Protocol,
        meaning: "A segment's TCP-MD5 signature did not verify (the two ends use different keys, or the segment was altered)",
        counters: &["TcpExt.TCPMD5Failure"],
        look_at: "the MD5 keys on both ends (BGP neighbour passwords); a middlebox rewriting TCP",
    },
    Explanation {
        reason: "TCP_MD5NOTFOUND",
        kind: DropKind::Protocol,
        meaning: "A segment lacked the TCP-MD5 signature this connection requires",
        counters: &["TcpExt.TCPMD5NotFound"],
        look_at: "the MD5 keys on both ends (BGP neighbour passwords)",
    },
    Explanation {
        reason: "TCP_MD5UNEXPECTED",
        kind: DropKind::Protocol,
        meaning: "A segment carried a TCP-MD5 signature on a connection that has no key configured for it",
        counters: &["TcpExt.TCPMD5Unexpected"],
        look_at: "the MD5 keys on both ends (BGP neighbour passwords)",
    },
    Explanation {
        reason: "TCP_MINTTL",
        kind: DropKind::Policy,
        meaning: "A TCP segment arrived with a TTL or hop limit below the socket's required minimum (IP_MINTTL or IPV6_MINHOPCOUNT, used to protect BGP sessions), so it was dropped",
        counters: &["TcpExt.TCPMinTTLDrop"],
        look_at: "the socket's minimum TTL setting and the number of hops to the peer",
    },
    Explanation {
        reason: "TCP_OFOMERGE",
        kind: DropKind::Benign,
        meaning: "An out-of-order segment carried only data already waiting in the out-of-order queue, so the duplicate was discarded",
        counters: &["TcpExt.TCPOFOMerge", "TcpExt.TCPDSACKOfoSent"],
        look_at: "nothing when it is a small share of the traffic: reordering with retransmissions produces it",
    },
    Explanation {
        reason: "TCP_OFO_DROP",
        kind: DropKind::Benign,
        meaning: "A segment waiting in the out-of-order queue held only data that had meanwhile arrived in order, so the copy was discarded when the queue caught up",
        counters: &[],
        look_at: "nothing when it is a small share of the traffic: reordering with retransmissions produces it",
    },
    Explanation {
        reason: "TCP_OFO_QUEUE_PRUNE",
        kind: DropKind::Capacity,
        meaning: "Segments waiting in a socket's out-of-order queue were thrown away to free memory for the socket",
        counters: &["TcpExt.OfoPruned", "TcpExt.PruneCalled", "TcpExt.RcvPruned"],
        look_at: "the socket's receive buffer (`net.ipv4.tcp_rmem`) and memory pressure (`net.ipv4.tcp_mem`, `/proc/net/sockstat`)",
    },
    Explanation {
        reason: "TCP_OLD_ACK",
        kind: DropKind::Benign,
        meaning: "An ACK older than what the connection had already acknowledged (a reordered or duplicate ACK) arrived while the connection was opening or closing, so it was discarded",
        counters: &[],
        look_at: "nothing when it is a small share of the traffic; it counts reordered ACKs",
    },
    Explanation {
        reason: "TCP_OLD_DATA",
        kind: DropKind::Benign,
        meaning: "A segment carried only data the receiver had already acknowledged (a spurious retransmission or a duplicate), so the copy was discarded",
        counters: &["TcpExt.DelayedACKLost", "TcpExt.TCPDSACKOldSent"],
        look_at: "nothing when it is a small share of the traffic; many at once mean the sender retransmits too eagerly (reordering, RTO too short): `TcpExt.TCPDSACKRecv` on the sender",
    },
    Explanation {
        reason: "TCP_OLD_SEQUENCE",
        kind: DropKind::Benign,
        meaning: "A segment lay entirely before what the receiver had already received (a duplicate or spurious retransmission), so the copy was discarded",
        counters: &["TcpExt.DelayedACKLost", "TcpExt.TCPDSACKOldSent"],
        look_at: "nothing when it is a small share of the traffic; reordering (for example unpinned traffic over veth) makes senders retransmit what already arrived",
    },
    Explanation {
        reason: "TCP_OVERWINDOW",
        kind: DropKind::Protocol,
        meaning: "A segment started beyond the right edge of the receive window the host had advertised, so it was discarded",
        counters: &["TcpExt.BeyondWindow"],
        look_at: "the sender's TCP and any middlebox that rewrites windows or window scaling",
    },
    Explanation {
        reason: "TCP_RESET",
        kind: DropKind::Protocol,
        meaning: "A reset was ignored because its sequence number did not match the connection exactly (a stale or forged reset), and a challenge ACK may have been sent",
        counters: &["TcpExt.TCPChallengeACK"],
        look_at: "the source of the resets (a firewall or load balancer injecting them, a peer that restarted)",
    },
    Explanation {
        reason: "TCP_RFC7323_PAWS",
        kind: DropKind::Protocol,
        meaning: "Timestamp protection (PAWS) rejected a segment whose TCP timestamp is older than the connection's, as after a reused port or clients behind one NAT with different clocks",
        counters: &["TcpExt.PAWSEstab", "TcpExt.PAWSActive"],
        look_at: "`net.ipv4.tcp_timestamps`; NAT in front of many clients; the peer's clock or timestamp offsets",
    },
    Explanation {
        reason: "TCP_RFC7323_PAWS_ACK",
        kind: DropKind::Benign,
        meaning: "A pure ACK with an older TCP timestamp than the connection's was discarded, which reordering of ACKs causes without loss of data",
        counters: &["TcpExt.PAWSOldAck"],
        look_at: "nothing when it is a small share of the traffic; it counts reordered ACKs",
    },
    Explanation {
        reason: "TCP_RFC7323_TSECR",
        kind: DropKind::Protocol,
        meaning: "A segment echoed a TCP timestamp this host never sent, so it was rejected",
        counters: &["TcpExt.TSEcrRejected"],
        look_at: "the peer or a middlebox that rewrites TCP timestamps",
    },
    Explanation {
        reason: "TCP_RFC7323_TW_PAWS",
        kind: DropKind::Protocol,
        meaning: "Timestamp protection (PAWS) rejected a segment for a connection in TIME-WAIT because its timestamp was older, as when a client reuses a port too soon",
        counters: &["TcpExt.PAWSTimewait"],
        look_at: "clients that reuse ports quickly (behind NAT); `net.ipv4.tcp_tw_reuse`, `net.ipv4.tcp_timestamps`",
    },
    Explanation {
        reason: "TCP_TOO_OLD_ACK",
        kind: DropKind::Protocol,
        meaning: "An ACK far older than anything in flight (below the window by more than its size) was discarded as invalid",
        counters: &["TcpExt.TCPChallengeACK"],
        look_at: "the peer or a middlebox rewriting sequence numbers; possibly forged segments",
    },
    Explanation {
        reason: "TCP_ZEROWINDOW",
        kind: DropKind::Capacity,
        meaning: "The receiver's window was zero because the application was not reading, so a new data segment could not be accepted",
        counters: &["TcpExt.TCPZeroWindowDrop"],
        look_at: "the receiving application and its socket queue (`ss -tm`: `rcv_space`, `skmem`); `net.ipv4.tcp_rmem`",
    },
    Explanation {
        reason: "TC_CHAIN_NOTFOUND",
        kind: DropKind::Policy,
        meaning: "A tc filter jumped to a chain that does not exist, so the packet was dropped",
        counters: &[],
        look_at: "`tc -s filter show dev IF` and the `goto chain` actions in it",
    },
    Explanation {
        reason: "TC_COOKIE_ERROR",
        kind: DropKind::Policy,
        meaning: "Processing a tc extension cookie failed, so tc dropped the packet",
        counters: &[],
        look_at: "the tc filters and programs on the device (`tc -s filter show dev IF`, `bpftool net show`)",
    },
    Explanation {
        reason: "TC_EGRESS",
        kind: DropKind::Policy,
        meaning: "A tc filter or action on the egress hook dropped the packet",
        counters: &[],
        look_at: "`tc -s filter show dev IF egress` and `tc -s qdisc show dev IF` (clsact, tcx programs: `bpftool net show`)",
    },
    Explanation {
        reason: "TC_INGRESS",
        kind: DropKind::Policy,
        meaning: "A tc filter or action on the ingress hook dropped the packet",
        counters: &[],
        look_at: "`tc -s filter show dev IF ingress` (clsact, tcx programs: `bpftool net show`)",
    },
    Explanation {
        reason: "TC_RECLASSIFY_LOOP",
        kind: DropKind::Policy,
        meaning: "tc reclassified the packet too many times (a loop among filters), so it was dropped",
        counters: &[],
        look_at: "`tc -s filter show dev IF` and the reclassify actions in it",
    },
    Explanation {
        reason: "TUNNEL_TXINFO",
        kind: DropKind::Undeliverable,
        meaning: "A packet without the tunnel metadata it needs reached a tunnel device in external (collect_md) mode, so it was dropped",
        counters: &[],
        look_at: "the program or route that should set the tunnel key (`ip route` encap, tc tunnel_key, eBPF), and `ip -d link show` of the device",
    },
    Explanation {
        reason: "UDP_CSUM",
        kind: DropKind::Malformed,
        meaning: "A UDP datagram arrived with a bad checksum (corruption on the way, or a checksum offload that did not fill it in)",
        counters: &["Udp.InCsumErrors", "Udp6.InCsumErrors"],
        look_at: "`ethtool -S IF` for CRC errors; checksum offload settings (`ethtool -k IF`) of the sender, the NIC and any tunnel",
    },
    Explanation {
        reason: "UNHANDLED_PROTO",
        kind: DropKind::Undeliverable,
        meaning: "No handler exists for the packet's protocol (an unknown ethertype, IP protocol or header extension), so it was dropped",
        counters: &[],
        look_at: "the ethertype or protocol in the packet (`tcpdump -e`); `rx_nohandler` and `rx_dropped` in `ip -s link show dev IF`",
    },
    Explanation {
        reason: "UNICAST_IN_L2_MULTICAST",
        kind: DropKind::Policy,
        meaning: "A unicast IP packet carried in a link-layer multicast or broadcast frame was dropped as the interface's settings require",
        counters: &[],
        look_at: "`net.ipv4.conf.IF.drop_unicast_in_l2_multicast` and `net.ipv6.conf.IF.drop_unicast_in_l2_multicast`",
    },
    Explanation {
        reason: "UNIX_DISCONNECT",
        kind: DropKind::Benign,
        meaning: "Messages waiting on a Unix datagram or seqpacket socket were discarded because the socket reconnected elsewhere or found its peer closed",
        counters: &[],
        look_at: "the application that reconnects its Unix socket (`ss -x -p`)",
    },
    Explanation {
        reason: "UNIX_SKIP_OOB",
        kind: DropKind::Benign,
        meaning: "An out-of-band byte on a Unix stream socket was discarded because the application read past it without asking for out-of-band data",
        counters: &[],
        look_at: "the application's use of MSG_OOB",
    },
    Explanation {
        reason: "VXLAN_ENTRY_EXISTS",
        kind: DropKind::Policy,
        meaning: "A VXLAN forwarding entry could not move to a new remote because it is static or points to a nexthop, so the packet that would have moved it was dropped",
        counters: &[],
        look_at: "`bridge fdb show dev VXLAN` for static entries",
    },
    Explanation {
        reason: "VXLAN_INVALID_HDR",
        kind: DropKind::Malformed,
        meaning: "A VXLAN packet had an invalid VXLAN header (reserved bits set or the VNI flag missing), so it was dropped",
        counters: &[],
        look_at: "the VXLAN sender and its options (GBP, GPE) against the receiving device's (`ip -d link show`)",
    },
    Explanation {
        reason: "VXLAN_INVALID_SMAC",
        kind: DropKind::Malformed,
        meaning: "A VXLAN packet's inner source MAC address was invalid (multicast or zero), so it was dropped (renamed MAC_INVALID_SOURCE in later kernels)",
        counters: &[],
        look_at: "the sender behind the tunnel",
    },
    Explanation {
        reason: "VXLAN_NO_REMOTE",
        kind: DropKind::Undeliverable,
        meaning: "A VXLAN device had no remote to send the packet to, so it was dropped (renamed NO_TX_TARGET in later kernels)",
        counters: &[],
        look_at: "`bridge fdb show dev VXLAN` (default and per-MAC remotes)",
    },
    Explanation {
        reason: "VXLAN_VNI_NOT_FOUND",
        kind: DropKind::Undeliverable,
        meaning: "A VXLAN packet arrived for a VNI no local VXLAN device serves, so it was dropped",
        counters: &[],
        look_at: "`ip -d link show type vxlan` (VNIs, ports) and `bridge vni`",
    },
    Explanation {
        reason: "XDP",
        kind: DropKind::Policy,
        meaning: "An XDP program attached to the receiving device dropped the packet",
        counters: &[],
        look_at: "`ip link show dev IF` (xdp) and `bpftool net show`",
    },
    Explanation {
        reason: "XFRM_POLICY",
        kind: DropKind::Policy,
        meaning: "An IPsec (xfrm) policy check refused the packet: it needed protection it did not have, or matched a block policy",
        counters: &[],
        look_at: "`ip xfrm policy`, `ip xfrm state` and the error counters in `/proc/net/xfrm_stat`",
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::tracefs::fixture as format;
    use crate::model::reasons::DropReasons;

    /// Values of the kernel's enums that are not drop reasons (see the module documentation).
    const NOT_REASONS: [&str; 4] = ["NOT_DROPPED_YET", "CONSUMED", "MAX", "SUBSYS_MASK"];

    fn assert_explained<'a>(names: impl Iterator<Item = &'a str>, source: &str) -> usize {
        let mut missing = Vec::new();
        let mut n = 0;
        for name in names.filter(|n| !NOT_REASONS.contains(n)) {
            n += 1;
            if explain(name).is_none() {
                missing.push(name.to_string());
            }
        }
        missing.sort();
        assert!(
            missing.is_empty(),
            "{source}: no explanation for {missing:?}"
        );
        n
    }

    #[test]
    fn every_reason_of_the_recorded_6_18_btf_is_explained() {
        let r = DropReasons::from_btf(crate::facts::btf::recorded(), &[]).unwrap();
        let n = assert_explained(r.names(), "6.18 BTF");
        assert!(n > 120, "only {n} reasons in the recorded BTF");
        // The non-reasons are there, and deliberately have no text.
        for name in NOT_REASONS {
            assert!(r.names().any(|n| n == name), "{name} not in the BTF");
            assert!(explain(name).is_none(), "{name}");
        }
    }

    #[test]
    fn every_reason_of_the_recorded_tracefs_formats_is_explained() {
        for file in ["kfree_skb-5.17.format", "kfree_skb-6.18.format"] {
            let r = DropReasons::from_format(&format(file)).unwrap();
            let n = assert_explained(r.names(), file);
            assert!(n >= 6, "{file}: {n}");
        }
    }

    #[test]
    fn names_that_came_and_went_are_explained() {
        for name in [
            "PTYPE_ABSENT",
            "VXLAN_INVALID_SMAC",
            "VXLAN_NO_REMOTE",
            "TCP_LISTEN_OVERFLOW",
            "IPV6_TOO_MANY_EXTHDRS",
            "SKB_RX_HEADROOM",
            "QDISC_DROP_OVERLIMIT",
            "OVS_DROP_LAST_ACTION",
            "RX_DROP_MONITOR",
            "RX_DROP_U_MIC_FAIL",
        ] {
            assert!(explain(name).is_some(), "{name}");
        }
        // Names are netdoc's, case and prefix included.
        assert!(explain("no_socket").is_none());
        assert!(explain("SKB_DROP_REASON_NO_SOCKET").is_none());
        for base in [
            "__OVS_DROP_REASON",
            "OVS_DROP_MAX",
            "QDISC_DROP_UNSPEC",
            "RX_CONTINUE",
        ] {
            assert!(explain(base).is_none(), "{base}");
        }
    }

    #[test]
    fn the_table_is_sorted_without_duplicates_and_every_entry_is_found() {
        for pair in TABLE.windows(2) {
            assert!(
                pair[0].reason < pair[1].reason,
                "{} then {}: not sorted or duplicated",
                pair[0].reason,
                pair[1].reason
            );
        }
        for e in TABLE {
            assert_eq!(explain(e.reason), Some(e));
            assert!(
                e.reason
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                e.reason
            );
            assert!(!e.reason.starts_with("SKB_DROP_REASON_"), "{}", e.reason);
        }
        assert_eq!(all().len(), TABLE.len());
    }

    #[test]
    fn each_meaning_is_one_sentence_and_each_entry_says_where_to_look() {
        for e in TABLE {
            let m = e.meaning;
            let first = m.chars().next().unwrap();
            assert!(
                first.is_ascii_uppercase() || m.starts_with("mac80211 ") || m.starts_with("tc "),
                "{}: starts with {first:?}",
                e.reason
            );
            assert!(!m.ends_with('.'), "{}: trailing period", e.reason);
            for stop in [". ", "; ", "! ", "? ", "\n"] {
                assert!(!m.contains(stop), "{}: more than one sentence", e.reason);
            }
            assert!(
                m.len() > 30 && m.len() < 260,
                "{}: {} chars",
                e.reason,
                m.len()
            );
            assert!(
                !e.look_at.trim().is_empty(),
                "{}: nothing to look at",
                e.reason
            );
            assert_eq!(e.look_at, e.look_at.trim(), "{}", e.reason);
        }
    }

    /// Counters of this machine's 6.18 kernel, recorded from `/proc/net/{snmp,netstat,snmp6}` and
    /// read with netdoc's own parser.
    fn recorded_counters() -> crate::facts::snmp::Counters {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/snmp");
        let read = |f: &str| std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
        let all = |_: &str| true;
        let mut c = crate::facts::snmp::parse(&read("snmp-6.18"), &all);
        c.extend(crate::facts::snmp::parse(&read("netstat-6.18"), &all));
        c.extend(crate::facts::snmp::parse_snmp6(&read("snmp6-6.18"), &all));
        c
    }

    #[test]
    fn counters_are_named_as_netdoc_reads_them_and_exist() {
        let known = recorded_counters();
        assert!(known.contains_key("TcpExt.IPReversePathFilter"));
        assert!(known.contains_key("Ip6.InNoRoutes"));
        let sections = [
            "Ip", "IpExt", "Icmp", "Tcp", "TcpExt", "Udp", "UdpLite", "Ip6", "Icmp6", "Udp6",
            "UdpLite6",
        ];
        for e in TABLE {
            for c in e.counters {
                let (section, name) = c
                    .split_once('.')
                    .unwrap_or_else(|| panic!("{}: {c} is not Section.Name", e.reason));
                assert!(sections.contains(&section), "{}: section of {c}", e.reason);
                assert!(
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric()),
                    "{}: {c}",
                    e.reason
                );
                assert!(
                    known.contains_key(*c),
                    "{}: no counter {c} on 6.18",
                    e.reason
                );
            }
            let mut sorted = e.counters.to_vec();
            sorted.dedup();
            assert_eq!(
                sorted.len(),
                e.counters.len(),
                "{}: repeated counter",
                e.reason
            );
        }
    }

    #[test]
    fn kinds_of_the_reasons_every_host_sees() {
        let kind = |r: &str| explain(r).unwrap_or_else(|| panic!("{r}")).kind;
        for r in [
            "TCP_OLD_SEQUENCE",
            "TCP_OLD_DATA",
            "TCP_OFOMERGE",
            "DUP_FRAG",
            "OTHERHOST",
        ] {
            assert_eq!(kind(r), DropKind::Benign, "{r}");
        }
        assert_eq!(kind("NO_SOCKET"), DropKind::Undeliverable);
        assert_eq!(kind("IP_RPFILTER"), DropKind::Policy);
        assert_eq!(kind("NETFILTER_DROP"), DropKind::Policy);
        for r in [
            "CPU_BACKLOG",
            "QDISC_DROP",
            "SOCKET_RCVBUFF",
            "TCP_LISTEN_OVERFLOW",
        ] {
            assert_eq!(kind(r), DropKind::Capacity, "{r}");
        }
        assert_eq!(kind("UDP_CSUM"), DropKind::Malformed);
        assert_eq!(kind("NOT_SPECIFIED"), DropKind::Unspecific);
        // Real loss, however routine, is never benign.
        for r in [
            "SOCKET_RCVBUFF",
            "SOCKET_BACKLOG",
            "TCP_ZEROWINDOW",
            "PKT_TOO_BIG",
            "FRAG_REASM_TIMEOUT",
            "NEIGH_FAILED",
            "PROTO_MEM",
            "TCP_OFO_QUEUE_PRUNE",
            "PACKET_SOCK_ERROR",
            "NOT_SPECIFIED",
            "QUEUE_PURGE",
        ] {
            assert_ne!(kind(r), DropKind::Benign, "{r}");
        }
        // The whole benign list, so that growing it is a decision a reviewer sees.
        let benign: Vec<&str> = TABLE
            .iter()
            .filter(|e| e.kind == DropKind::Benign)
            .map(|e| e.reason)
            .collect();
        assert_eq!(
            benign,
            [
                "DUP_FRAG",
                "IPV6_NDISC_NS_OTHERHOST",
                "OTHERHOST",
                "RX_DROP_U_CTRL_FRAME",
                "RX_DROP_U_DUP",
                "RX_DROP_U_MESH_RMC",
                "RX_DROP_U_NULL_DATA",
                "SOCKET_CLOSE",
                "TCP_ABORT_ON_DATA",
                "TCP_OFOMERGE",
                "TCP_OFO_DROP",
                "TCP_OLD_ACK",
                "TCP_OLD_DATA",
                "TCP_OLD_SEQUENCE",
                "TCP_RFC7323_PAWS_ACK",
                "UNIX_DISCONNECT",
                "UNIX_SKIP_OOB",
            ]
        );
    }

    #[test]
    fn kinds_serialize_in_snake_case() {
        assert_eq!(
            serde_json::to_string(&DropKind::Undeliverable).unwrap(),
            "\"undeliverable\""
        );
    }
}
