//! The one way every family counts and emits: per-CPU `stat` slots, and records written to this
//! CPU's ring buffer with the outcome counted, so userspace can prove `delivered + lost ==
//! matched`.
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::{bpf_get_smp_processor_id, bpf_ringbuf_query},
    maps::PerCpuArray,
};
use netdoc_common::{RING_TEMPLATE_BYTES, stat};

/// One BPF ring buffer per CPU, which userspace creates and places at the CPU's index before
/// anything attaches: CPUs never contend for a buffer, and the loader sizes the array to the
/// possible CPUs. The inner definition is only the template the kernel checks them against.
pub type Rings<T> = ArrayOfMaps<RingBuf<T, RING_TEMPLATE_BYTES>, 1>;

/// Adds one to a family's per-CPU `stat` slot.
#[inline(always)]
pub fn bump(stats: &PerCpuArray<u64>, slot: u32) {
    if let Some(v) = stats.get_ptr_mut(slot) {
        unsafe { *v += 1 };
    }
}

/// Writes `record` to this CPU's ring of `rings` and counts it emitted, or lost when the ring is
/// full (or this CPU has none: it came online after netdoc started).
///
/// The reader is woken only when this record takes the ring past half full; otherwise it drains
/// on its own schedule. A wake-up per record is what makes a perf buffer cost microseconds per
/// event on the CPU that drops the packet.
#[inline(always)]
pub fn record<T>(rings: &Rings<T>, record: &T, stats: &PerCpuArray<u64>) {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ring) = rings.get(cpu) else {
        bump(stats, stat::EMIT_FAILED);
        return;
    };
    let map = ptr::from_ref(ring).cast_mut().cast();
    let (queued, size) = unsafe {
        (
            bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA as u64),
            bpf_ringbuf_query(map, BPF_RB_RING_SIZE as u64),
        )
    };
    let half = size / 2;
    let flags = if queued < half && queued + core::mem::size_of::<T>() as u64 >= half {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    let slot = match ring.output(record, flags as u64) {
        Ok(()) => stat::EMITTED,
        Err(_) => stat::EMIT_FAILED,
    };
    bump(stats, slot);
}
