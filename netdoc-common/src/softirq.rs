//! Softirq, hardirq and NAPI aggregation: per-CPU maps only, no per-event stream.
use crate::NO_OFFSET;

/// Softirq vectors (`NR_SOFTIRQS`): HI, TIMER, NET_TX, NET_RX, BLOCK, IRQ_POLL, TASKLET, SCHED,
/// HRTIMER, RCU.
pub const VECTORS: u32 = 10;
pub const NET_RX: u32 = 3;
/// Log2 buckets of softirq run time in nanoseconds: bucket `b` holds [2^b, 2^(b+1)).
pub const HIST_BUCKETS: usize = 32;

/// Per CPU and vector: how often it ran and for how long. Index of `SOFTIRQ_TIME`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftirqTime {
    /// Entries, as `/proc/softirqs` counts them.
    pub count: u64,
    /// Exits whose entry was seen (the runs `total_ns` and `hist` cover).
    pub timed: u64,
    pub total_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}
const _: () = assert!(core::mem::size_of::<SoftirqTime>() == 280);

impl SoftirqTime {
    pub const ZERO: SoftirqTime = SoftirqTime {
        count: 0,
        timed: 0,
        total_ns: 0,
        hist: [0; HIST_BUCKETS],
    };
}

/// Per CPU and NAPI instance (key: the `napi_struct` address) in `NAPI_POLLS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NapiStats {
    pub polls: u64,
    /// Packets processed (sum of `work`).
    pub work: u64,
    /// Polls that used their whole budget: the device had more waiting.
    pub budget_exhausted: u64,
    pub ifindex: u32,
    /// Inode of the device's network namespace.
    pub netns: u32,
    /// `net_device.name`; empty for the per-CPU backlog (RPS, veth, loopback).
    pub dev: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<NapiStats>() == 48);

/// Offsets the softirq programs need, set once before load (read-only global).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftirqConfig {
    /// Classic tracepoint record offsets, from tracefs `format`.
    pub tp_vec: u32,
    pub tp_irq: u32,
    pub tp_napi: u32,
    pub tp_napi_work: u32,
    pub tp_napi_budget: u32,
    /// From BTF: `napi_struct.dev`, `net_device.name`, `net_device.ifindex`,
    /// `net_device.nd_net.net`, `net.ns.inum`.
    pub napi_dev: u32,
    pub dev_name: u32,
    pub dev_ifindex: u32,
    pub dev_net: u32,
    pub net_inum: u32,
    /// 1: softirq entry/exit count and time each softirq (the softirq family). 0: they only
    /// mark whether the CPU is inside NET_RX (drop context), the two clock reads and three map
    /// updates per softirq saved.
    pub timing: u32,
}
const _: () = assert!(core::mem::size_of::<SoftirqConfig>() == 44);

impl SoftirqConfig {
    pub const EMPTY: SoftirqConfig = SoftirqConfig {
        tp_vec: NO_OFFSET,
        tp_irq: NO_OFFSET,
        tp_napi: NO_OFFSET,
        tp_napi_work: NO_OFFSET,
        tp_napi_budget: NO_OFFSET,
        napi_dev: NO_OFFSET,
        dev_name: NO_OFFSET,
        dev_ifindex: NO_OFFSET,
        dev_net: NO_OFFSET,
        net_inum: NO_OFFSET,
        timing: 1,
    };
}

/// Log2 histogram bucket of a duration in nanoseconds.
#[inline(always)]
pub fn hist_bucket(ns: u64) -> usize {
    let b = 63 - (ns | 1).leading_zeros() as usize;
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

pod!(SoftirqTime, NapiStats, SoftirqConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log2_and_capped() {
        assert_eq!(hist_bucket(0), 0);
        assert_eq!(hist_bucket(1), 0);
        assert_eq!(hist_bucket(2), 1);
        assert_eq!(hist_bucket(1023), 9);
        assert_eq!(hist_bucket(1024), 10);
        assert_eq!(hist_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}
