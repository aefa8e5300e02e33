//! `skb:kfree_skb`: count every drop per CPU by (reason, location), optionally stream a record.
use core::ptr;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint, map},
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use netdoc_common::{
    DROP_COUNT_KEYS, DropConfig, DropEvent, DropKey, EventHeader, REASON_UNAVAILABLE,
    conntrack::stage, context, filter, stat,
};

use crate::{emit, read};

/// Set by userspace before load; read-only, so the verifier prunes what the kernel lacks.
#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = DropConfig::EMPTY;

/// Reads one field of DROP_CONFIG. Volatile so the compiler cannot fold the placeholder
/// value; field by field so the 104-byte struct is never copied onto the 512-byte stack.
macro_rules! config {
    ($($field:tt)+) => {
        unsafe { ptr::read_volatile(ptr::addr_of!(DROP_CONFIG.$($field)+)) }
    };
}

#[map]
static DROP_COUNTS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_COUNT_KEYS, 0);

#[map]
static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Reasons to keep when the reason filter is on (value unused).
#[map]
static DROP_REASON_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// Where a record is built: too large for the BPF stack next to everything else.
#[map]
static SCRATCH: PerCpuArray<DropEvent> = PerCpuArray::with_max_entries(1, 0);

#[btf_map]
static DROP_EVENTS: emit::Rings<DropEvent> = emit::Rings::new();

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// tp_btf on kernels whose `kfree_skb` carries a reason (5.17+): `(skb, location, reason, ...)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    handle(skb, location, reason);
    0
}

/// tp_btf on kernels without drop reasons: `(skb, location)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf_noreason(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    handle(skb, location, REASON_UNAVAILABLE);
    0
}

tracepoint! {
    /// Classic tracepoint, fields at the offsets tracefs `format` gave. Returns 1 so perf consumers
    /// of the same tracepoint (perf, bpftrace) are not blinded.
    pub fn kfree_skb_tp(ctx: TracePointContext) -> u32 {
        let (skb_at, location_at) = (config!(tp.skbaddr), config!(tp.location));
        let skb: u64 = unsafe { ctx.read_at(skb_at as usize) }.unwrap_or(0);
        let location: u64 = unsafe { ctx.read_at(location_at as usize) }.unwrap_or(0);
        let reason_at = config!(tp.reason);
        let reason = if reason_at == netdoc_common::NO_OFFSET {
            REASON_UNAVAILABLE
        } else {
            unsafe { ctx.read_at::<u32>(reason_at as usize) }.unwrap_or(REASON_UNAVAILABLE)
        };
        handle(skb, location, reason);
        1
    }
}

#[inline(always)]
fn bump(slot: u32) {
    emit::bump(&DROP_STATS, slot);
}

#[inline(always)]
fn handle(skb: u64, location: u64, reason: u32) {
    bump(stat::SEEN);
    let filters = config!(filters);
    if filters & filter::REASON != 0 && unsafe { DROP_REASON_FILTER.get(&reason) }.is_none() {
        return;
    }
    let stream = config!(stream) != 0;
    // Counting alone needs no packet parsing: keep that path as cheap as the hook allows.
    let parsed = if stream || filters & filter::NEEDS_PACKET != 0 {
        let Some(ev) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        let ev = unsafe { &mut *ev };
        *ev = DropEvent {
            header: EventHeader::of::<DropEvent>(),
            location,
            reason,
            ..Default::default()
        };
        parse_skb(skb, ev);
        if !matches(filters, ev) {
            return;
        }
        Some(ev)
    } else {
        None
    };
    bump(stat::MATCHED);
    let context = if crate::softirq::in_net_rx() {
        context::IN_NET_RX
    } else {
        0
    };
    let nf_stage = if reason != REASON_UNAVAILABLE && reason == config!(netfilter_drop) {
        crate::conntrack::stage_of(skb)
    } else {
        stage::NONE
    };
    // Per namespace only when asked: the streamed record already knows it, else it costs the
    // reads that find it.
    let (netns, netns_cookie) = match parsed.as_ref() {
        _ if config!(per_netns) == 0 => (0, 0),
        Some(ev) => (ev.netns, ev.netns_cookie),
        None => netns_of(skb),
    };
    count(DropKey {
        reason,
        context,
        nf_stage,
        _pad: 0,
        location,
        netns,
        _pad2: 0,
        netns_cookie,
    });
    if let (true, Some(ev)) = (stream, parsed) {
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        ev.cpu = unsafe { bpf_get_smp_processor_id() };
        ev.flags = context;
        ev.nf_stage = nf_stage;

        emit::record(&DROP_EVENTS, ev, &DROP_STATS);
    }
}

#[inline(always)]
fn count(key: DropKey) {
    if let Some(v) = DROP_COUNTS.get_ptr_mut(&key) {
        unsafe { *v += 1 };
    } else if DROP_COUNTS.insert(&key, &1, 0).is_err() {
        bump(stat::AGG_FULL);
    }
}

#[inline(always)]
fn matches(filters: u32, ev: &DropEvent) -> bool {
    if filters & filter::NETNS != 0 && ev.netns != config!(netns) {
        return false;
    }
    if filters & filter::PROTO != 0 && ev.proto != config!(proto) {
        return false;
    }
    if filters & filter::PORT != 0 {
        let port = config!(port);
        if ev.sport != port && ev.dport != port {
            return false;
        }
    }
    if filters & filter::ADDR != 0 {
        if ev.family != config!(addr_family) as u16 {
            return false;
        }
        let n = if ev.family == AF_INET { 4 } else { 16 };
        let mut s = true;
        let mut d = true;
        let mut i = 0;
        while i < n {
            let want = config!(addr[i]);
            s &= ev.saddr[i] == want;
            d &= ev.daddr[i] == want;
            i += 1;
        }
        if !s && !d {
            return false;
        }
    }
    true
}

/// The namespace a packet was dropped in: its device's, else its socket's (inode, cookie).
#[inline(always)]
fn netns_of(skb: u64) -> (u32, u64) {
    netns_at(skb, read::at(skb, config!(skb.skb_dev)).unwrap_or(0))
}

#[inline(always)]
fn netns_at(skb: u64, dev: u64) -> (u32, u64) {
    let net: u64 = if dev != 0 {
        read::at(dev, config!(skb.dev_net)).unwrap_or(0)
    } else {
        let sk: u64 = read::at(skb, config!(skb.skb_sk)).unwrap_or(0);
        read::at(sk, config!(skb.sk_net)).unwrap_or(0)
    };
    (
        read::at::<u32>(net, config!(skb.net_inum)).unwrap_or(0),
        read::at::<u64>(net, config!(skb.net_cookie)).unwrap_or(0),
    )
}

#[inline(always)]
fn parse_skb(skb: u64, ev: &mut DropEvent) {
    ev.len = read::at::<u32>(skb, config!(skb.skb_len)).unwrap_or(0);
    let dev: u64 = read::at(skb, config!(skb.skb_dev)).unwrap_or(0);
    if dev != 0 {
        ev.ifindex = read::at::<u32>(dev, config!(skb.dev_ifindex)).unwrap_or(0);
    }
    (ev.netns, ev.netns_cookie) = netns_at(skb, dev);
    ev.eth_proto = u16::from_be(read::at::<u16>(skb, config!(skb.skb_protocol)).unwrap_or(0));
    let head: u64 = read::at(skb, config!(skb.skb_head)).unwrap_or(0);
    let nh = read::at::<u16>(skb, config!(skb.skb_network_header)).unwrap_or(u16::MAX);
    if head == 0 || nh == u16::MAX {
        return;
    }
    let l3 = head + nh as u64;
    let l4 = match ev.eth_proto {
        ETH_P_IP => {
            let Some(ver_ihl) = read::at::<u8>(l3, 0) else {
                return;
            };
            ev.family = AF_INET;
            ev.proto = read::at::<u8>(l3, 9).unwrap_or(0);
            let mut addrs = [0u8; 8];
            if read::into(&mut addrs, l3 + 12) {
                ev.saddr[..4].copy_from_slice(&addrs[..4]);
                ev.daddr[..4].copy_from_slice(&addrs[4..]);
            }
            l3 + ((ver_ihl & 0x0f) as u64) * 4
        }
        ETH_P_IPV6 => {
            ev.family = AF_INET6;
            ev.proto = read::at::<u8>(l3, 6).unwrap_or(0);
            read::into(&mut ev.saddr, l3 + 8);
            read::into(&mut ev.daddr, l3 + 24);
            l3 + 40
        }
        _ => return,
    };
    // TCP, UDP, UDP-Lite, SCTP and DCCP all start with the two ports.
    if matches!(ev.proto, 6 | 17 | 33 | 132 | 136)
        && let Some(ports) = read::at::<[u8; 4]>(l4, 0)
    {
        ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
        ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
    }
}
