//! The one way every family counts and emits: per-CPU `stat` slots, and records written to this
//! CPU's ring buffer with the outcome counted, so userspace can prove `delivered + lost ==
//! matched`.
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE},
    btf_maps::{ArrayOfMaps, RingBuf},
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_query},
    macros::map,
    maps::PerCpuArray,
};
use netdoc_common::{EmitConfig, RING_TEMPLATE_BYTES, Record, kind, stat};

/// Set by userspace before load; read-only, so the verifier drops the budget when it is off.
#[unsafe(no_mangle)]
static EMIT_CONFIG: EmitConfig = EmitConfig::EMPTY;

/// What one CPU has streamed of one record kind in the current second.
#[repr(C)]
pub struct Budget {
    second_began_ns: u64,
    used: u64,
}

/// One budget per record kind (indexed by `Record::KIND`) and CPU: no locks, no sharing.
#[map]
static BUDGETS: PerCpuArray<Budget> = PerCpuArray::with_max_entries(kind::SLOTS, 0);

const SECOND_NS: u64 = 1_000_000_000;

/// What became of a record.
#[derive(PartialEq, Eq)]
pub enum Outcome {
    Emitted,
    Lost,
    /// Over this CPU's budget for the second: counted, not streamed.
    Sampled,
}

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

/// Writes `record` to this CPU's ring of `rings` and counts it emitted, lost when the ring is
/// full (or this CPU has none: it came online after netdoc started), or sampled out when this
/// CPU has streamed its budget of records of this kind this second.
///
/// The reader is woken only when this record takes the ring past half full; otherwise it drains
/// on its own schedule. A wake-up per record is what makes a perf buffer cost microseconds per
/// event on the CPU that drops the packet.
#[inline(always)]
pub fn record<T: Record>(rings: &Rings<T>, record: &T, stats: &PerCpuArray<u64>) -> Outcome {
    if over_budget(T::KIND as u32) {
        bump(stats, stat::SAMPLED);
        return Outcome::Sampled;
    }
    write(rings, record, stats)
}

/// [`record`], with `finish` filling the record's costly last fields (a kernel stack) only once
/// the budget has admitted it: a record sampled out never pays for them.
#[inline(always)]
pub fn record_finishing<T: Record>(
    rings: &Rings<T>,
    record: &mut T,
    stats: &PerCpuArray<u64>,
    finish: impl FnOnce(&mut T),
) -> Outcome {
    if over_budget(T::KIND as u32) {
        bump(stats, stat::SAMPLED);
        return Outcome::Sampled;
    }
    finish(record);
    write(rings, record, stats)
}

/// Writes an admitted record and counts it emitted or lost.
#[inline(always)]
fn write<T: Record>(rings: &Rings<T>, record: &T, stats: &PerCpuArray<u64>) -> Outcome {
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let Some(ring) = rings.get(cpu) else {
        bump(stats, stat::EMIT_FAILED);
        return Outcome::Lost;
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
    let (slot, outcome) = match ring.output(record, flags as u64) {
        Ok(()) => (stat::EMITTED, Outcome::Emitted),
        Err(_) => (stat::EMIT_FAILED, Outcome::Lost),
    };
    bump(stats, slot);
    outcome
}

/// Zeroes a record in place, a word at a time. Assigning a defaulted record makes LLVM call the
/// BPF `memset` subprogram, which stores byte by byte: about 80 ns per drop record, a tenth of
/// what streaming cost.
#[inline(always)]
pub fn zero<T: Record>(record: &mut T) {
    const { assert!(size_of::<T>().is_multiple_of(8) && align_of::<T>() >= 8) };
    let words = ptr::from_mut(record).cast::<u64>();
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        // Volatile, so the stores are not folded back into a memset call.
        unsafe { ptr::write_volatile(words.add(i), 0) };
        i += 1;
    }
}

/// Takes one record from this CPU's budget for `kind`; true when the second's is spent.
#[inline(always)]
fn over_budget(kind: u32) -> bool {
    let max = unsafe { ptr::read_volatile(ptr::addr_of!(EMIT_CONFIG.max_per_sec)) };
    if max == 0 {
        return false;
    }
    let Some(budget) = BUDGETS.get_ptr_mut(kind) else {
        return false;
    };
    let budget = unsafe { &mut *budget };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(budget.second_began_ns) >= SECOND_NS {
        budget.second_began_ns = now;
        budget.used = 0;
    }
    if budget.used >= max {
        return true;
    }
    budget.used += 1;
    false
}
