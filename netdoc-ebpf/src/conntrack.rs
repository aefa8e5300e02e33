//! Conntrack insertion failures: `__nf_conntrack_confirm` returning `NF_DROP` (an unresolved
//! clash, a chain too long, a dying entry). fexit where the kernel allows it, else a kprobe that
//! remembers the skb per task and a kretprobe that reads the verdict.
use core::ptr;

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_map, fexit, kprobe, kretprobe, map},
    maps::{HashMap, LruHashMap, PerCpuArray},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use netdoc_common::{
    EventHeader,
    conntrack::{ConfirmConfig, InsertFailEvent, NetfilterDropSite, StageMark, stage},
    stat,
};

use crate::{emit, read};

#[unsafe(no_mangle)]
static CONFIRM_CONFIG: ConfirmConfig = ConfirmConfig::EMPTY;

macro_rules! config {
    ($field:ident) => {
        unsafe { ptr::read_volatile(ptr::addr_of!(CONFIRM_CONFIG.$field)) }
    };
}

#[map]
static CONFIRM_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// The skb of each task inside `__nf_conntrack_confirm`, for the kretprobe.
#[map]
static CONFIRM_SKB: HashMap<u64, u64> = HashMap::with_max_entries(4096, 0);

#[btf_map]
static CONFIRM_EVENTS: emit::Rings<InsertFailEvent> = emit::Rings::new();

/// Written by the netfilter stage sentinels. Those are assembled in userspace (aya 0.14 has
/// no netfilter program type), so this map is the whole contract between them and us.
#[map]
static NF_STAGE: PerCpuArray<StageMark> = PerCpuArray::with_max_entries(1, 0);

/// Every `NETFILTER_DROP` by namespace and freeing address: userspace places the sentinels
/// where these come (value: a count, only ever compared with its last reading). The least
/// recently used site goes first when it is full.
#[map]
static NF_DROP_SITES: LruHashMap<NetfilterDropSite, u64> = LruHashMap::with_max_entries(1024, 0);

/// Notes a `NETFILTER_DROP` of `skb` in namespace `netns` freed at `location`, and returns the
/// stage the sentinels last saw it at on this CPU: only if this skb, in this namespace, is the
/// one they saw (an unknown namespace matches no mark).
#[inline(always)]
pub fn netfilter_drop(skb: u64, netns: u32, location: u64) -> u8 {
    let site = NetfilterDropSite {
        netns,
        _pad: 0,
        location,
    };
    match NF_DROP_SITES.get_ptr_mut(&site) {
        Some(count) => unsafe { *count += 1 },
        None => {
            let _ = NF_DROP_SITES.insert(&site, &1, 0);
        }
    }
    match NF_STAGE.get(0) {
        Some(mark) if mark.skb == skb && mark.netns == netns && netns != 0 => mark.stage as u8,
        _ => stage::UNSEEN,
    }
}

const NF_DROP: i32 = 0;
/// `skb->_nfct` keeps the conntrack info in its low 3 bits.
const NFCT_PTRMASK: u64 = !7;

#[fexit(function = "__nf_conntrack_confirm")]
pub fn ct_confirm_fexit(ctx: FExitContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let ret: i32 = ctx.arg(1);
    on_return(skb, ret);
    0
}

#[kprobe]
pub fn ct_confirm_kretprobe_entry(ctx: ProbeContext) -> u32 {
    if let Some(skb) = ctx.arg::<u64>(0) {
        let _ = CONFIRM_SKB.insert(&bpf_get_current_pid_tgid(), &skb, 0);
    }
    0
}

#[kretprobe]
pub fn ct_confirm_kretprobe(ctx: RetProbeContext) -> u32 {
    let task = bpf_get_current_pid_tgid();
    let Some(skb) = (unsafe { CONFIRM_SKB.get(&task) }).copied() else {
        bump(stat::UNPAIRED);
        return 0;
    };
    let _ = CONFIRM_SKB.remove(&task);
    let ret: i32 = ctx.ret();
    on_return(skb, ret);
    0
}

#[inline(always)]
fn bump(slot: u32) {
    emit::bump(&CONFIRM_STATS, slot);
}

#[inline(always)]
fn on_return(skb: u64, ret: i32) {
    bump(stat::SEEN);
    if ret != NF_DROP {
        return;
    }
    bump(stat::MATCHED);
    let ct = read::at::<u64>(skb, config!(skb_nfct)).unwrap_or(0) & NFCT_PTRMASK;
    let mut ev = InsertFailEvent {
        header: EventHeader::of::<InsertFailEvent>(),
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cpu: unsafe { bpf_get_smp_processor_id() },
        ..InsertFailEvent::default()
    };
    if ct != 0 {
        let (orig, reply) = (config!(ct_original), config!(ct_reply));
        if orig != netdoc_common::NO_OFFSET {
            read::into(&mut ev.original, ct + orig as u64);
        }
        if reply != netdoc_common::NO_OFFSET {
            read::into(&mut ev.reply, ct + reply as u64);
        }
        ev.zone = read::at::<u16>(ct, config!(ct_zone_id)).unwrap_or(0);
        let net = read::at::<u64>(ct, config!(ct_net)).unwrap_or(0);
        ev.netns = read::at::<u32>(net, config!(net_inum)).unwrap_or(0);
        ev.netns_cookie = read::at::<u64>(net, config!(net_cookie)).unwrap_or(0);
    }
    emit::record(&CONFIRM_EVENTS, &ev, &CONFIRM_STATS);
}
