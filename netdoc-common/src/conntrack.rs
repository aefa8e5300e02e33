//! Conntrack insertion failures, seen where `__nf_conntrack_confirm` returns `NF_DROP`.
use crate::{EventHeader, NO_OFFSET};

/// `struct nf_conntrack_tuple`: 40 bytes on every kernel netdoc supports (source address,
/// port, l3num; destination address, port, protocol, direction). Copied raw, decoded in userspace.
pub const TUPLE_SIZE: usize = 40;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InsertFailEvent {
    pub header: EventHeader,
    pub ts_ns: u64,
    pub cpu: u32,
    /// Inode of the conntrack entry's network namespace, 0 if unknown.
    pub netns: u32,
    /// `nf_conn.zone.id`, 0 where zones are not built.
    pub zone: u16,
    pub _pad: [u8; 6],
    pub original: [u8; TUPLE_SIZE],
    pub reply: [u8; TUPLE_SIZE],
    /// `net.net_cookie` of the entry's namespace, 0 when unknown.
    pub netns_cookie: u64,
}
const _: () = assert!(core::mem::size_of::<InsertFailEvent>() == 120);

impl Default for InsertFailEvent {
    fn default() -> Self {
        Self {
            header: EventHeader::default(),
            ts_ns: 0,
            cpu: 0,
            netns: 0,
            zone: 0,
            _pad: [0; 6],
            original: [0; TUPLE_SIZE],
            reply: [0; TUPLE_SIZE],
            netns_cookie: 0,
        }
    }
}

/// Offsets the confirm programs read at, from BTF (`nf_conn` lives in the nf_conntrack module's).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfirmConfig {
    pub skb_nfct: u32,
    /// `nf_conn.tuplehash[0].tuple` and `[1].tuple`.
    pub ct_original: u32,
    pub ct_reply: u32,
    pub ct_zone_id: u32,
    /// `nf_conn.ct_net.net`.
    pub ct_net: u32,
    pub net_inum: u32,
    /// `net.net_cookie`.
    pub net_cookie: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ConfirmConfig>() == 32);

impl ConfirmConfig {
    pub const EMPTY: ConfirmConfig = ConfirmConfig {
        skb_nfct: NO_OFFSET,
        ct_original: NO_OFFSET,
        ct_reply: NO_OFFSET,
        ct_zone_id: NO_OFFSET,
        ct_net: NO_OFFSET,
        net_inum: NO_OFFSET,
        net_cookie: NO_OFFSET,
        _pad: 0,
    };
}

/// Where the netfilter stage sentinels last saw an skb, on one CPU: written by the sentinels
/// (netfilter bpf_link programs placed around the conntrack hooks), read by the drop program
/// for each `NETFILTER_DROP`. A drop of the same skb on the same CPU in the same namespace pins
/// the drop to that stage: a veth hands the same skb to another namespace, whose sentinels may
/// not be placed, and a mark made in the first must not describe a drop in the second.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageMark {
    /// `struct sk_buff *` as an address.
    pub skb: u64,
    /// One of [`stage`], with the hook ([`stage::at_hook`]).
    pub stage: u32,
    /// The inode of the namespace whose hook the sentinel ran at.
    pub netns: u32,
}
const _: () = assert!(core::mem::size_of::<StageMark>() == 16);

/// Where `NETFILTER_DROP`s happen: a namespace and the freeing address. The drop program counts
/// every one here; userspace places the stage sentinels in a namespace once drops come there
/// from anywhere but nftables (whose drops say their cause by where they are freed).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetfilterDropSite {
    /// Namespace inode; 0 when the drop program could not tell.
    pub netns: u32,
    pub _pad: u32,
    pub location: u64,
}

/// Values of [`StageMark::stage`], and of the `nf_stage` of drop keys and records.
pub mod stage {
    /// Not a `NETFILTER_DROP`, or no sentinels attached.
    pub const NONE: u8 = 0;
    /// A `NETFILTER_DROP` whose skb was not the last one a sentinel saw on its CPU, in its namespace.
    pub const UNSEEN: u8 = 1;
    /// Among rules: at a hook's entry or just after conntrack-in. A drop here is a rule's.
    pub const RULES: u8 = 2;
    /// Just before conntrack-in (`nf_conntrack_in`): table full, invalid or untrackable.
    pub const CONNTRACK_IN: u8 = 3;
    /// Just before conntrack confirm (`__nf_conntrack_confirm`): the insertion failed.
    pub const CONNTRACK_CONFIRM: u8 = 4;

    /// A sentinel's mark: the stage in the low nibble, the netfilter hook (`NF_INET_*`) it sits
    /// at plus one in the high one (0: unknown), so a drop also says where it happened.
    pub const fn at_hook(stage: u8, hook: u8) -> u8 {
        stage | (hook + 1) << 4
    }

    /// The stage of a mark.
    pub const fn of(mark: u8) -> u8 {
        mark & 0x0f
    }

    /// The netfilter hook of a mark, when it has one.
    pub const fn hook(mark: u8) -> Option<u8> {
        match mark >> 4 {
            0 => None,
            h => Some(h - 1),
        }
    }
}

pod!(ConfirmConfig);
pod!(NetfilterDropSite, StageMark);
