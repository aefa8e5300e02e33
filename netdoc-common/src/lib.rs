//! Types shared by netdoc's kernel programs and its userspace loader.
//!
//! Every record that crosses a ring buffer starts with an [`EventHeader`] so userspace can
//! count (never choke on) kinds or versions it does not know. Layouts are fixed by
//! compile-time size checks: a change here must be made on both sides at once.
#![no_std]

/// Marks types as `aya::Pod` for userspace (map keys and values, config globals): each module
/// lists its own.
macro_rules! pod {
    ($($t:ty),* $(,)?) => {$(
        // SAFETY: every one is repr(C) plain integers with explicit padding fields.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $t {}
    )*};
}

pub mod conntrack;
pub mod retrans;
pub mod softirq;

/// Bumped whenever a record layout changes.
pub const EVENT_VERSION: u16 = 5;

/// Record kinds carried in [`EventHeader::kind`].
pub mod kind {
    pub const DROP: u16 = 1;
    pub const RETRANS: u16 = 2;
    pub const INSERT_FAILED: u16 = 3;
    /// Every kind: a new one is listed here too.
    const ALL: [u16; 3] = [DROP, RETRANS, INSERT_FAILED];
    /// Entries of the maps kept per kind (the streaming budgets): one past the highest kind.
    pub const SLOTS: u32 = {
        let (mut i, mut highest) = (0, 0);
        while i < ALL.len() {
            if ALL[i] > highest {
                highest = ALL[i];
            }
            i += 1;
        }
        highest as u32 + 1
    };
}

/// A record that crosses a ring buffer: its kind tells userspace how to decode it.
pub trait Record: Copy {
    const KIND: u16;
}

impl Record for DropEvent {
    const KIND: u16 = kind::DROP;
}

impl Record for retrans::RetransEvent {
    const KIND: u16 = kind::RETRANS;
}

impl Record for conntrack::InsertFailEvent {
    const KIND: u16 = kind::INSERT_FAILED;
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub version: u16,
    /// Size of the whole record in bytes, header included.
    pub size: u32,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 8);

impl EventHeader {
    /// The header of a `T` record of this version: the one constructor every family uses.
    pub const fn of<T: Record>() -> Self {
        Self {
            kind: T::KIND,
            version: EVENT_VERSION,
            size: core::mem::size_of::<T>() as u32,
        }
    }
}

/// `reason` value when the running kernel's `kfree_skb` carries no drop reason (before 5.17).
pub const REASON_UNAVAILABLE: u32 = u32::MAX;

/// Marks an offset the running kernel does not have (a missing field or struct member).
pub const NO_OFFSET: u32 = u32::MAX;

/// One dropped packet, as seen at `skb:kfree_skb`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    pub header: EventHeader,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub ts_ns: u64,
    /// Kernel text address that freed the skb.
    pub location: u64,
    /// Raw `enum skb_drop_reason` value, or [`REASON_UNAVAILABLE`].
    pub reason: u32,
    pub cpu: u32,
    /// Inode of the network namespace (as in `/proc/PID/ns/net`), 0 when unknown.
    pub netns: u32,
    pub ifindex: u32,
    /// `skb->len`.
    pub len: u32,
    /// AF_INET (2), AF_INET6 (10), or 0 for non-IP packets.
    pub family: u16,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// OR of [`context`] bits.
    pub flags: u8,
    /// Network byte order; IPv4 addresses use the first four bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    pub dport: u16,
    /// `skb->protocol` in host byte order (ETH_P_*).
    pub eth_proto: u16,
    /// For `NETFILTER_DROP`s: a [`conntrack::stage`] value.
    pub nf_stage: u8,
    /// A TCP segment's flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...); 0
    /// for other packets.
    pub tcp_flags: u8,
    /// `net.net_cookie`: the namespace's id, never reused during a boot; 0 when unknown.
    pub netns_cookie: u64,
    /// The kernel stack's id in the `DROP_STACKS` map (`--stack`), a negative errno when it
    /// could not be taken, or [`NO_STACK`] when none was asked for.
    pub stack_id: i32,
    pub _pad2: u32,
}
const _: () = assert!(core::mem::size_of::<DropEvent>() == 104);

/// [`DropEvent::stack_id`] when stacks were not asked for.
pub const NO_STACK: i32 = i32::MIN;

/// Distinct kernel stacks the `DROP_STACKS` map holds with `--stack` (its buckets): a stack
/// whose bucket another one holds is reported missing, never as the other one.
pub const DROP_STACK_IDS: u32 = 4096;

/// Keys the in-kernel drop aggregation has room for: drops of a key beyond them are counted in
/// [`stat::AGG_FULL`] only.
pub const DROP_COUNT_KEYS: u32 = 16384;

/// Per-CPU slots the drop program counts in before the aggregation map, when it counts without
/// namespaces: a direct-mapped cache of the busiest keys. Bumping a slot is an array access;
/// a map update hashes the key and costs about 100 ns per drop. A key whose slot holds
/// another moves that one's count into the map first ([`stat::FLUSHES`]).
pub const DROP_COUNT_SLOTS: u32 = 64;
const _: () = assert!(DROP_COUNT_SLOTS.is_power_of_two());

/// One slot of the drop count cache: a key and this CPU's drops of it not yet in the map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountSlot {
    pub key: DropKey,
    /// 0: the slot is free, whatever `key` says.
    pub count: u64,
}

/// Key of the in-kernel per-CPU drop aggregation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DropKey {
    pub reason: u32,
    /// OR of [`context`] bits: where the drop happened.
    pub context: u8,
    /// For `NETFILTER_DROP`s: a [`conntrack::stage`] value, so each stage is counted apart.
    pub nf_stage: u8,
    pub _pad: u16,
    pub location: u64,
    /// The namespace's inode and cookie when [`DropConfig::per_netns`] is set, else 0: the
    /// exporter counts per namespace without streaming a record per drop.
    pub netns: u32,
    pub _pad2: u32,
    pub netns_cookie: u64,
}

/// Bits of [`DropKey::context`] and [`DropEvent::flags`].
pub mod context {
    /// The drop happened while its CPU ran the NET_RX softirq (needs the softirq probe).
    pub const IN_NET_RX: u8 = 1 << 0;
}
const _: () = assert!(core::mem::size_of::<DropKey>() == 32);

/// The budget every stream shares, set by userspace before load.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmitConfig {
    /// Records each CPU may stream per second and per stream; 0: no limit.
    pub max_per_sec: u64,
}

impl EmitConfig {
    pub const EMPTY: Self = Self { max_per_sec: 0 };
}

/// Bytes of the template ring every family's per-CPU ring array is declared with: the kernel
/// checks the rings userspace places against its type, not its size, so this is only the
/// smallest ring there is (one page).
pub const RING_TEMPLATE_BYTES: usize = 4096;

/// Slots of the per-CPU `DROP_STATS` array.
pub mod stat {
    /// Every `kfree_skb` the program saw; the drop program counts it only when it filters
    /// (without filters it is [`MATCHED`]).
    pub const SEEN: u32 = 0;
    /// Drops that passed the in-kernel filters (the count every consumer must account for).
    pub const MATCHED: u32 = 1;
    /// Records handed to the ring buffer.
    pub const EMITTED: u32 = 2;
    /// Records the ring buffer refused (full): the lost events.
    pub const EMIT_FAILED: u32 = 3;
    /// Matched drops that found the aggregation map full.
    pub const AGG_FULL: u32 = 4;
    /// A return probe that found no saved arguments (an overwritten or missed entry).
    pub const UNPAIRED: u32 = 5;
    /// Records not streamed because this CPU had used its budget of the second
    /// ([`EmitConfig::max_per_sec`]); counted, so `delivered + lost + sampled == matched`.
    pub const SAMPLED: u32 = 6;
    /// Bumped before and after each move of a cached count into the aggregation map (odd while
    /// one is under way): a reader of the cache and the map retries a reading a move crossed.
    pub const FLUSHES: u32 = 7;
    pub const COUNT: u32 = 8;
}

/// Bits of [`DropConfig::filters`].
pub mod filter {
    pub const REASON: u32 = 1 << 0;
    pub const NETNS: u32 = 1 << 1;
    pub const PROTO: u32 = 1 << 2;
    pub const PORT: u32 = 1 << 3;
    pub const ADDR: u32 = 1 << 4;
    /// Filters that need the packet parsed.
    pub const NEEDS_PACKET: u32 = NETNS | PROTO | PORT | ADDR;
}

/// Kernel struct member offsets, computed in userspace from the running kernel's BTF.
/// Each is a byte offset, or [`NO_OFFSET`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkbOffsets {
    pub skb_len: u32,
    pub skb_dev: u32,
    pub skb_sk: u32,
    pub skb_head: u32,
    pub skb_network_header: u32,
    pub skb_transport_header: u32,
    pub skb_protocol: u32,
    pub dev_ifindex: u32,
    /// `net_device.nd_net.net`.
    pub dev_net: u32,
    /// `sock.__sk_common.skc_net.net`.
    pub sk_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `net.net_cookie`.
    pub net_cookie: u32,
}
const _: () = assert!(core::mem::size_of::<SkbOffsets>() == 48);

/// Offsets of fields in the classic tracepoint record, from tracefs `format`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub skbaddr: u32,
    pub location: u32,
    pub reason: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 16);

/// Everything the drop programs need from userspace, set once before load (read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropConfig {
    pub skb: SkbOffsets,
    pub tp: TracepointOffsets,
    /// OR of [`filter`] bits.
    pub filters: u32,
    /// 0: counts only; 1: also stream one record per drop.
    pub stream: u32,
    pub netns: u32,
    pub port: u16,
    pub proto: u8,
    /// Family of `addr` (2 or 10).
    pub addr_family: u8,
    pub addr: [u8; 16],
    /// The `NETFILTER_DROP` reason code while the stage sentinels are attached, else
    /// [`REASON_UNAVAILABLE`]: drops with this reason carry the stage the sentinels saw.
    pub netfilter_drop: u32,
    /// 1: count each namespace apart ([`DropKey::netns`]); costs the reads that find it.
    pub per_netns: u32,
    /// 1: each streamed record carries its kernel stack's id ([`DropEvent::stack_id`]).
    pub stacks: u32,
    /// 1: the softirq entry/exit hooks track whether a CPU is in NET_RX, so each drop says
    /// ([`context::IN_NET_RX`]); 0: nothing to look up.
    pub net_rx_context: u32,
}
const _: () = assert!(core::mem::size_of::<DropConfig>() == 112);

impl DropConfig {
    /// A config that parses nothing and filters nothing.
    pub const EMPTY: DropConfig = DropConfig {
        skb: SkbOffsets {
            skb_len: NO_OFFSET,
            skb_dev: NO_OFFSET,
            skb_sk: NO_OFFSET,
            skb_head: NO_OFFSET,
            skb_network_header: NO_OFFSET,
            skb_transport_header: NO_OFFSET,
            skb_protocol: NO_OFFSET,
            dev_ifindex: NO_OFFSET,
            dev_net: NO_OFFSET,
            sk_net: NO_OFFSET,
            net_inum: NO_OFFSET,
            net_cookie: NO_OFFSET,
        },
        tp: TracepointOffsets {
            skbaddr: NO_OFFSET,
            location: NO_OFFSET,
            reason: NO_OFFSET,
            _pad: 0,
        },
        filters: 0,
        stream: 0,
        netns: 0,
        port: 0,
        proto: 0,
        addr_family: 0,
        addr: [0; 16],
        netfilter_drop: REASON_UNAVAILABLE,
        per_netns: 0,
        stacks: 0,
        net_rx_context: 0,
    };
}

pod!(DropKey, CountSlot, DropConfig, EmitConfig);

#[cfg(test)]
mod tests {
    use core::mem::offset_of;

    use super::*;

    #[test]
    fn per_kind_maps_have_a_slot_past_the_highest_kind() {
        assert_eq!(kind::SLOTS, kind::INSERT_FAILED as u32 + 1);
    }

    /// The kernel writes these records and userspace reads them: field positions are a contract.
    #[test]
    fn drop_event_layout_is_fixed() {
        assert_eq!(offset_of!(DropEvent, header), 0);
        assert_eq!(offset_of!(DropEvent, ts_ns), 8);
        assert_eq!(offset_of!(DropEvent, location), 16);
        assert_eq!(offset_of!(DropEvent, reason), 24);
        assert_eq!(offset_of!(DropEvent, netns), 32);
        assert_eq!(offset_of!(DropEvent, family), 44);
        assert_eq!(offset_of!(DropEvent, saddr), 48);
        assert_eq!(offset_of!(DropEvent, daddr), 64);
        assert_eq!(offset_of!(DropEvent, sport), 80);
        assert_eq!(offset_of!(DropEvent, eth_proto), 84);
        assert_eq!(offset_of!(DropEvent, nf_stage), 86);
        assert_eq!(offset_of!(DropEvent, netns_cookie), 88);
        assert_eq!(offset_of!(DropKey, nf_stage), 5);
        assert_eq!(offset_of!(DropKey, location), 8);
    }

    #[test]
    fn config_layout_and_defaults() {
        assert_eq!(offset_of!(DropConfig, tp), 48);
        assert_eq!(offset_of!(DropConfig, filters), 64);
        assert_eq!(offset_of!(DropConfig, addr), 80);
        assert_eq!(offset_of!(DropConfig, netfilter_drop), 96);
        assert_eq!(DropConfig::EMPTY.netfilter_drop, REASON_UNAVAILABLE);
        assert_eq!(DropConfig::EMPTY.filters, 0);
        assert_eq!(DropConfig::EMPTY.skb.skb_head, NO_OFFSET);
        assert_eq!(
            filter::NEEDS_PACKET & filter::REASON,
            0,
            "reason filtering needs no packet"
        );
    }
}
