//! The loss accounting every streaming family keeps in its per-CPU `stat` slots.
use aya::maps::{MapData, PerCpuArray};
use netdoc_common::stat;
use serde::{Deserialize, Serialize};

/// Kernel-side counters of one run, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct KernelStats {
    pub seen: u64,
    pub matched: u64,
    pub emitted: u64,
    pub lost: u64,
    /// Not streamed: over a CPU's budget of records per second (`--max-events-per-sec`).
    #[serde(default)]
    pub sampled: u64,
    pub aggregation_overflow: u64,
}

/// One slot of a family's per-CPU `stat` array, summed over CPUs.
pub fn stat_slot(map: &PerCpuArray<MapData, u64>, slot: u32) -> u64 {
    map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

/// A family's per-CPU `stat` slots (seen, matched, emitted, lost, sampled, aggregation full),
/// summed.
pub fn kernel_stats(map: &PerCpuArray<MapData, u64>) -> KernelStats {
    let matched = stat_slot(map, stat::MATCHED);
    KernelStats {
        // A program without filters counts only what matched: it saw exactly that.
        seen: stat_slot(map, stat::SEEN).max(matched),
        matched,
        emitted: stat_slot(map, stat::EMITTED),
        lost: stat_slot(map, stat::EMIT_FAILED),
        sampled: stat_slot(map, stat::SAMPLED),
        aggregation_overflow: stat_slot(map, stat::AGG_FULL),
    }
}
