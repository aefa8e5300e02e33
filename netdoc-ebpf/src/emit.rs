//! The one way every family counts and emits: per-CPU `stat` slots, and records written to this
//! CPU's perf buffer with the outcome counted, so userspace can prove `delivered + lost ==
//! matched`.
use core::{ffi::c_void, ptr};

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_CURRENT_CPU,
    helpers::bpf_perf_event_output,
    maps::{PerCpuArray, PerfEventArray},
};
use netdoc_common::stat;

/// Adds one to a family's per-CPU `stat` slot.
#[inline(always)]
pub fn bump(stats: &PerCpuArray<u64>, slot: u32) {
    if let Some(v) = stats.get_ptr_mut(slot) {
        unsafe { *v += 1 };
    }
}

/// Writes `record` to this CPU's buffer of `events` and counts it emitted, or lost when the
/// buffer is full. (`PerfEventArray::output` discards the helper's result, which is the loss.)
#[inline(always)]
pub fn record<C: EbpfContext, T>(
    ctx: &C,
    events: &PerfEventArray<T>,
    record: &mut T,
    stats: &PerCpuArray<u64>,
) {
    // The map type is repr(transparent) over its definition, so its address is the map.
    let ret = unsafe {
        bpf_perf_event_output(
            ctx.as_ptr(),
            ptr::from_ref(events).cast_mut().cast::<c_void>(),
            BPF_F_CURRENT_CPU,
            ptr::from_mut(record).cast::<c_void>(),
            core::mem::size_of::<T>() as u64,
        )
    };
    bump(
        stats,
        if ret == 0 {
            stat::EMITTED
        } else {
            stat::EMIT_FAILED
        },
    );
}
