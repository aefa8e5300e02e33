//! Kernel memory reads at offsets computed in userspace (Rust eBPF has no CO-RE relocations).
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_probe_read_kernel as read_raw};
use netdoc_common::NO_OFFSET;

/// Reads a `T` at `base + offset`; `None` when the offset is absent on this kernel, the base is
/// NULL or the read faults.
#[inline(always)]
pub fn at<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 || offset == NO_OFFSET {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T).ok() }
}

/// Copies `size_of::<T>()` bytes at `addr` into `dst` without a stack temporary.
#[inline(always)]
pub fn into<T>(dst: &mut T, addr: u64) -> bool {
    let size = core::mem::size_of::<T>() as u32;
    unsafe { read_raw((dst as *mut T).cast(), size, addr as *const _) == 0 }
}
