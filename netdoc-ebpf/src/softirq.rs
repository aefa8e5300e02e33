//! `irq:softirq_entry/exit`, `irq:irq_handler_entry` and `napi:napi_poll`: per-CPU counts, run
//! time and NAPI work, aggregated in per-CPU maps (no per-event stream).
use core::ptr;

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, PerCpuHashMap},
    programs::{BtfTracePointContext, TracePointContext},
};
use netdoc_common::{
    NO_OFFSET,
    softirq::{HIST_BUCKETS, NET_RX, NapiStats, SoftirqConfig, SoftirqTime, VECTORS, hist_bucket},
};

use crate::read;

#[unsafe(no_mangle)]
static SOFTIRQ_CONFIG: SoftirqConfig = SoftirqConfig::EMPTY;

macro_rules! config {
    ($field:ident) => {
        unsafe { ptr::read_volatile(ptr::addr_of!(SOFTIRQ_CONFIG.$field)) }
    };
}

/// Indexed by vector.
#[map]
static SOFTIRQ_TIME: PerCpuArray<SoftirqTime> = PerCpuArray::with_max_entries(VECTORS, 0);

/// Entry timestamp per vector; 0 when no entry was seen (attached mid-softirq).
#[map]
static SOFTIRQ_START: PerCpuArray<u64> = PerCpuArray::with_max_entries(VECTORS, 0);

/// Slot 0 is 1 while this CPU runs NET_RX; the drop programs read it.
#[map]
pub static IN_NET_RX: PerCpuArray<u8> = PerCpuArray::with_max_entries(1, 0);

/// Hardirq handler invocations per IRQ number.
#[map]
static IRQ_COUNTS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// Keyed by `napi_struct` address.
#[map]
static NAPI_POLLS: PerCpuHashMap<u64, NapiStats> = PerCpuHashMap::with_max_entries(4096, 0);

#[btf_tracepoint(function = "softirq_entry")]
pub fn softirq_entry_btf(ctx: BtfTracePointContext) -> i32 {
    entry(ctx.arg(0));
    0
}

#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit_btf(ctx: BtfTracePointContext) -> i32 {
    exit(ctx.arg(0));
    0
}

tracepoint! {
    /// Classic tracepoints return 1 so perf users of the same event still see it.
    pub fn softirq_entry_tp(ctx: TracePointContext) -> u32 {
        let at = config!(tp_vec) as usize;
        if let Ok(vec) = unsafe { ctx.read_at::<u32>(at) } {
            entry(vec);
        }
        1
    }
}

tracepoint! {
    pub fn softirq_exit_tp(ctx: TracePointContext) -> u32 {
        let at = config!(tp_vec) as usize;
        if let Ok(vec) = unsafe { ctx.read_at::<u32>(at) } {
            exit(vec);
        }
        1
    }
}

#[inline(always)]
fn entry(vec: u32) {
    if vec >= VECTORS {
        return;
    }
    if vec == NET_RX {
        set_in_net_rx(1);
    }
    if config!(timing) == 0 {
        return;
    }
    if let Some(t) = SOFTIRQ_TIME.get_ptr_mut(vec) {
        unsafe { (*t).count += 1 };
    }
    if let Some(s) = SOFTIRQ_START.get_ptr_mut(vec) {
        unsafe { *s = bpf_ktime_get_ns() };
    }
}

#[inline(always)]
fn exit(vec: u32) {
    if vec >= VECTORS {
        return;
    }
    if vec == NET_RX {
        set_in_net_rx(0);
    }
    if config!(timing) == 0 {
        return;
    }
    let Some(s) = SOFTIRQ_START.get_ptr_mut(vec) else {
        return;
    };
    let start = unsafe { *s };
    if start == 0 {
        return;
    }
    unsafe { *s = 0 };
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(start);
    if let Some(t) = SOFTIRQ_TIME.get_ptr_mut(vec) {
        let t = unsafe { &mut *t };
        t.timed += 1;
        t.total_ns += ns;
        let b = hist_bucket(ns);
        if b < HIST_BUCKETS {
            t.hist[b] += 1;
        }
    }
}

#[inline(always)]
fn set_in_net_rx(v: u8) {
    if let Some(f) = IN_NET_RX.get_ptr_mut(0) {
        unsafe { *f = v };
    }
}

/// Whether this CPU is inside the NET_RX softirq right now.
#[inline(always)]
pub fn in_net_rx() -> bool {
    IN_NET_RX.get(0).is_some_and(|f| *f != 0)
}

#[btf_tracepoint(function = "irq_handler_entry")]
pub fn irq_handler_btf(ctx: BtfTracePointContext) -> i32 {
    count_irq(ctx.arg(0));
    0
}

tracepoint! {
    pub fn irq_handler_tp(ctx: TracePointContext) -> u32 {
        let at = config!(tp_irq) as usize;
        if let Ok(irq) = unsafe { ctx.read_at::<u32>(at) } {
            count_irq(irq);
        }
        1
    }
}

#[inline(always)]
fn count_irq(irq: u32) {
    if let Some(v) = IRQ_COUNTS.get_ptr_mut(&irq) {
        unsafe { *v += 1 };
    } else {
        let _ = IRQ_COUNTS.insert(&irq, &1, 0);
    }
}

#[btf_tracepoint(function = "napi_poll")]
pub fn napi_poll_btf(ctx: BtfTracePointContext) -> i32 {
    napi_poll(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

tracepoint! {
    pub fn napi_poll_tp(ctx: TracePointContext) -> u32 {
        let (napi_at, work_at, budget_at) = (
            config!(tp_napi) as usize,
            config!(tp_napi_work) as usize,
            config!(tp_napi_budget) as usize,
        );
        let napi = unsafe { ctx.read_at::<u64>(napi_at) }.unwrap_or(0);
        let work = unsafe { ctx.read_at::<i32>(work_at) }.unwrap_or(0);
        let budget = unsafe { ctx.read_at::<i32>(budget_at) }.unwrap_or(0);
        napi_poll(napi, work, budget);
        1
    }
}

#[inline(always)]
fn napi_poll(napi: u64, work: i32, budget: i32) {
    let work = if work > 0 { work as u64 } else { 0 };
    let exhausted = (budget > 0 && work >= budget as u64) as u64;
    if let Some(v) = NAPI_POLLS.get_ptr_mut(&napi) {
        let v = unsafe { &mut *v };
        v.polls += 1;
        v.work += work;
        v.budget_exhausted += exhausted;
        return;
    }
    // First poll of this NAPI on this CPU: name its device once.
    let mut stats = NapiStats {
        polls: 1,
        work,
        budget_exhausted: exhausted,
        ifindex: 0,
        netns: 0,
        dev: [0; 16],
    };
    let dev: u64 = read::at(napi, config!(napi_dev)).unwrap_or(0);
    if dev != 0 {
        stats.ifindex = read::at::<u32>(dev, config!(dev_ifindex)).unwrap_or(0);
        let net: u64 = read::at(dev, config!(dev_net)).unwrap_or(0);
        stats.netns = read::at::<u32>(net, config!(net_inum)).unwrap_or(0);
        let name_at = config!(dev_name);
        if name_at != NO_OFFSET {
            read::into(&mut stats.dev, dev + name_at as u64);
        }
    }
    let _ = NAPI_POLLS.insert(&napi, &stats, 0);
}
