//! `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`: aggregate per flow in an LRU map and
//! optionally stream one record per retransmit.
use core::ptr;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, TracePointContext},
};
use netdoc_common::{
    EventHeader, NO_OFFSET,
    retrans::{FlowKey, FlowStats, RetransConfig, RetransEvent, flag},
    stat,
};

use crate::{emit, read};

#[unsafe(no_mangle)]
static RETRANS_CONFIG: RetransConfig = RetransConfig::EMPTY;

macro_rules! config {
    ($field:ident) => {
        unsafe { ptr::read_volatile(ptr::addr_of!(RETRANS_CONFIG.$field)) }
    };
}

#[map]
static RETRANS_FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(16384, 0);

#[map]
static RETRANS_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

#[map]
static RETRANS_SCRATCH: PerCpuArray<RetransEvent> = PerCpuArray::with_max_entries(1, 0);

#[btf_map]
static RETRANS_EVENTS: emit::Rings<RetransEvent> = emit::Rings::new();

const AF_INET: u16 = 2;

/// Kernels before 6.17: `(sk, skb)`.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_btf(ctx: BtfTracePointContext) -> i32 {
    handle(ctx.arg(0), ctx.arg(1), 0, 0);
    0
}

/// 6.17+: `(sk, skb, err)`.
#[btf_tracepoint(function = "tcp_retransmit_skb")]
pub fn tcp_retransmit_btf_err(ctx: BtfTracePointContext) -> i32 {
    handle(ctx.arg(0), ctx.arg(1), ctx.arg(2), 0);
    0
}

tracepoint! {
    /// Classic tracepoint; returns 1 so perf users of the event are not blinded.
    pub fn tcp_retransmit_tp(ctx: TracePointContext) -> u32 {
        let (sk_at, skb_at, err_at) = (config!(tp_sk), config!(tp_skb), config!(tp_err));
        let sk: u64 = unsafe { ctx.read_at(sk_at as usize) }.unwrap_or(0);
        let skb: u64 = unsafe { ctx.read_at(skb_at as usize) }.unwrap_or(0);
        let err: i32 = if err_at == NO_OFFSET {
            0
        } else {
            unsafe { ctx.read_at(err_at as usize) }.unwrap_or(0)
        };
        handle(sk, skb, err, 0);
        1
    }
}

/// `(sk, req)`: the request sock starts with a `sock_common` holding the tuple.
#[btf_tracepoint(function = "tcp_retransmit_synack")]
pub fn tcp_synack_btf(ctx: BtfTracePointContext) -> i32 {
    handle(ctx.arg(1), 0, 0, flag::SYNACK);
    0
}

tracepoint! {
    pub fn tcp_synack_tp(ctx: TracePointContext) -> u32 {
        let req_at = config!(tp_synack_req);
        let req: u64 = unsafe { ctx.read_at(req_at as usize) }.unwrap_or(0);
        handle(req, 0, 0, flag::SYNACK);
        1
    }
}

#[inline(always)]
fn bump(slot: u32) {
    emit::bump(&RETRANS_STATS, slot);
}

#[inline(always)]
fn handle(sk: u64, skb: u64, err: i32, flags: u8) {
    bump(stat::SEEN);
    let Some(ev) = RETRANS_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let ev = unsafe { &mut *ev };
    emit::zero(ev);
    ev.header = EventHeader::of::<RetransEvent>();
    ev.flags = flags;
    ev.err = err;
    read_sock(sk, ev);
    if skb != 0 {
        read_skb(skb, ev);
    }
    bump(stat::MATCHED);
    aggregate(ev);
    if config!(stream) != 0 {
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        ev.cpu = unsafe { bpf_get_smp_processor_id() };
        emit::record(&RETRANS_EVENTS, ev, &RETRANS_STATS);
    }
}

#[inline(always)]
fn read_sock(sk: u64, ev: &mut RetransEvent) {
    ev.family = read::at::<u16>(sk, config!(skc_family)).unwrap_or(0);
    ev.state = read::at::<u8>(sk, config!(skc_state)).unwrap_or(0);
    ev.sport = read::at::<u16>(sk, config!(skc_num)).unwrap_or(0);
    ev.dport = u16::from_be(read::at::<u16>(sk, config!(skc_dport)).unwrap_or(0));
    if ev.family == AF_INET {
        let mut a = [0u8; 4];
        if let Some(v) = read::at::<[u8; 4]>(sk, config!(skc_rcv_saddr)) {
            a = v;
        }
        ev.saddr[..4].copy_from_slice(&a);
        if let Some(v) = read::at::<[u8; 4]>(sk, config!(skc_daddr)) {
            a = v;
        }
        ev.daddr[..4].copy_from_slice(&a);
    } else {
        let (s_at, d_at) = (config!(skc_v6_rcv_saddr), config!(skc_v6_daddr));
        if s_at != NO_OFFSET && d_at != NO_OFFSET {
            read::into(&mut ev.saddr, sk + s_at as u64);
            read::into(&mut ev.daddr, sk + d_at as u64);
        }
    }
    let net: u64 = read::at(sk, config!(sk_net)).unwrap_or(0);
    ev.netns = read::at::<u32>(net, config!(net_inum)).unwrap_or(0);
    ev.netns_cookie = read::at::<u64>(net, config!(net_cookie)).unwrap_or(0);
    if ev.flags & flag::SYNACK != 0 {
        return; // a request sock has no tcp_sock fields
    }
    ev.mss = read::at::<u32>(sk, config!(tp_mss_cache)).unwrap_or(0);
    ev.pmtu = read::at::<u32>(sk, config!(icsk_pmtu_cookie)).unwrap_or(0);
    ev.bytes_acked = read::at::<u64>(sk, config!(tp_bytes_acked)).unwrap_or(0);
    let dst: u64 = read::at(sk, config!(sk_dst_cache)).unwrap_or(0);
    let dev: u64 = read::at(dst, config!(dst_dev)).unwrap_or(0);
    ev.dev_mtu = read::at::<u32>(dev, config!(dev_mtu)).unwrap_or(0);
}

#[inline(always)]
fn read_skb(skb: u64, ev: &mut RetransEvent) {
    let cb = config!(skb_cb);
    if cb != NO_OFFSET {
        // tcp_skb_cb starts with seq, end_seq.
        ev.seq = read::at::<u32>(skb, cb).unwrap_or(0);
        ev.end_seq = read::at::<u32>(skb, cb + 4).unwrap_or(0);
    }
    let head: u64 = read::at(skb, config!(skb_head)).unwrap_or(0);
    // On 64-bit kernels `end` is an offset from `head`; the shared info sits there.
    let end = read::at::<u32>(skb, config!(skb_end)).unwrap_or(0);
    ev.gso_segs = 1;
    if head != 0 && end != 0 {
        let shinfo = head + end as u64;
        ev.gso_segs = read::at::<u16>(shinfo, config!(shinfo_gso_segs))
            .unwrap_or(1)
            .max(1);
        ev.gso_size = read::at::<u16>(shinfo, config!(shinfo_gso_size)).unwrap_or(0);
    }
}

#[inline(always)]
fn aggregate(ev: &RetransEvent) {
    let key = FlowKey {
        saddr: ev.saddr,
        daddr: ev.daddr,
        netns: ev.netns,
        sport: ev.sport,
        dport: ev.dport,
        family: ev.family,
        _pad: [0; 6],
    };
    let now = unsafe { bpf_ktime_get_ns() };
    let synack = ev.flags & flag::SYNACK != 0;
    let len = ev.end_seq.wrapping_sub(ev.seq);
    let seg = if ev.gso_size > 0 {
        ev.gso_size as u32
    } else {
        len
    };
    let Some(f) = RETRANS_FLOWS.get_ptr_mut(&key) else {
        let f = FlowStats {
            events: (!synack) as u64,
            segs: if synack { 0 } else { ev.gso_segs as u64 },
            bytes: len as u64,
            synacks: synack as u64,
            first_ns: now,
            last_ns: now,
            last_seq: ev.seq,
            same_seq: 1,
            max_same_seq: 1,
            max_seg: seg,
            pmtu_min: ev.pmtu,
            pmtu_max: ev.pmtu,
            dev_mtu: ev.dev_mtu,
            mss: ev.mss,
            state: ev.state as u32,
            failed: (ev.err != 0) as u32,
            bytes_acked: ev.bytes_acked,
        };
        if RETRANS_FLOWS.insert(&key, &f, 0).is_err() {
            bump(stat::AGG_FULL);
        }
        return;
    };
    // Retransmits of one socket run under its lock: plain updates suffice.
    let f = unsafe { &mut *f };
    f.last_ns = now;
    if synack {
        f.synacks += 1;
        return;
    }
    f.events += 1;
    f.segs += ev.gso_segs as u64;
    f.bytes += len as u64;
    if ev.seq == f.last_seq {
        f.same_seq += 1;
    } else {
        f.same_seq = 1;
        f.last_seq = ev.seq;
    }
    if f.same_seq > f.max_same_seq {
        f.max_same_seq = f.same_seq;
    }
    if seg > f.max_seg {
        f.max_seg = seg;
    }
    if ev.pmtu != 0 && (f.pmtu_min == 0 || ev.pmtu < f.pmtu_min) {
        f.pmtu_min = ev.pmtu;
    }
    if ev.pmtu > f.pmtu_max {
        f.pmtu_max = ev.pmtu;
    }
    f.dev_mtu = ev.dev_mtu;
    f.mss = ev.mss;
    f.state = ev.state as u32;
    f.failed += (ev.err != 0) as u32;
    f.bytes_acked = ev.bytes_acked;
}
