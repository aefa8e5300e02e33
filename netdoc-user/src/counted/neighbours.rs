//! The neighbour tables over a run: how often they were full (new entries refused), how close
//! to `gc_thresh3` they came, and which namespaces held the entries when they were full (the
//! tables are global, so one namespace's neighbours can starve every other's).
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::{
    facts::{
        neigh::{self, TableStats},
        netns,
    },
    namespaces::Inventory,
};

/// Namespaces named per table: the fullest.
const BUSIEST: usize = 5;

/// Samples after an overflow during which the namespaces are counted again when the table holds
/// more or the inventory has gained a namespace: one made just before the overflow joins the
/// inventory up to a follow interval (a second) later, and may hold the entries.
const RECOUNT_SAMPLES: u32 = 5;

/// Whether to enter every namespace and count its entries now.
fn worth_counting(
    since_overflow: u32,
    entries: u64,
    counted_at: u64,
    new_namespaces: bool,
) -> bool {
    since_overflow < RECOUNT_SAMPLES && (entries > counted_at || new_namespaces)
}

/// One table in the doctor's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeighbourTable {
    /// `ipv4` (ARP) or `ipv6` (NDISC).
    pub family: String,
    pub entries: u64,
    /// The most entries seen at a sample.
    pub peak_entries: u64,
    /// `gc_thresh1..3` at the last sample, when readable.
    pub gc_thresh: Option<[u64; 3]>,
    /// Growth over the run.
    pub table_fulls: u64,
    pub forced_gc_runs: u64,
    pub unresolved_discards: u64,
    /// IPv4 entries per namespace at the fullest sample after an overflow, most first.
    pub busiest: Vec<NamespaceEntries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceEntries {
    pub netns: String,
    pub inode: u32,
    pub entries: u64,
}

struct Followed {
    family: &'static str,
    file: &'static str,
    /// Where `gc_thresh1..3` are: read at every sample, since an operator may change them.
    limits_dir: &'static str,
    limits: Option<[u64; 3]>,
    first: TableStats,
    last: TableStats,
    peak_entries: u64,
    busiest: Vec<NamespaceEntries>,
    /// The table's size when the namespaces were last counted: counting again (entering every
    /// namespace) is worth it only once the table holds more, or the inventory has more.
    counted_at: u64,
    /// The namespaces (inodes) the inventory held at that count.
    counted_in: BTreeSet<u32>,
    /// Samples since the table last overflowed (saturating: none yet).
    since_overflow: u32,
}

/// Both tables, followed from a baseline (a family whose table this kernel lacks is skipped).
pub struct NeighbourTables(Vec<Followed>);

impl NeighbourTables {
    pub fn start() -> Self {
        Self(
            neigh::FAMILIES
                .iter()
                .filter_map(|(family, file, dir)| {
                    let first = neigh::read_stat(file)?;
                    Some(Followed {
                        family,
                        file,
                        limits_dir: dir,
                        limits: neigh::read_limits(dir),
                        first,
                        last: first,
                        peak_entries: first.entries,
                        busiest: Vec::new(),
                        counted_at: 0,
                        counted_in: BTreeSet::new(),
                        since_overflow: u32::MAX,
                    })
                })
                .collect(),
        )
    }

    /// A new reading; for a few samples after an IPv4 overflow, each namespace's entries (kept
    /// when fuller than the last such count).
    pub fn sample(&mut self, namespaces: &Inventory) {
        for t in &mut self.0 {
            let Some(now) = neigh::read_stat(t.file) else {
                continue;
            };
            t.since_overflow = match now.table_fulls > t.last.table_fulls {
                true => 0,
                false => t.since_overflow.saturating_add(1),
            };
            t.peak_entries = t.peak_entries.max(now.entries);
            t.last = now;
            t.limits = neigh::read_limits(t.limits_dir).or(t.limits);
            if t.family != "ipv4" {
                continue;
            }
            let known: BTreeSet<u32> = namespaces.all().map(|n| n.id.inode).collect();
            let new_namespaces = !known.is_subset(&t.counted_in);
            if !worth_counting(t.since_overflow, now.entries, t.counted_at, new_namespaces) {
                continue;
            }
            t.counted_at = t.counted_at.max(now.entries);
            t.counted_in = known;
            let files = namespaces
                .all()
                .filter_map(|n| Some(((n.id.name.clone(), n.id.inode), n.file()?)))
                .collect();
            let mut counts: Vec<NamespaceEntries> =
                netns::visit(files, |_| neigh::arp_entries_here())
                    .into_iter()
                    .filter_map(|((netns, inode), n)| {
                        Some(NamespaceEntries {
                            netns,
                            inode,
                            entries: n.flatten()?,
                        })
                    })
                    .filter(|n| n.entries > 0)
                    .collect();
            counts.sort_by_key(|n| std::cmp::Reverse(n.entries));
            counts.truncate(BUSIEST);
            let total = |v: &[NamespaceEntries]| v.iter().map(|n| n.entries).sum::<u64>();
            if total(&counts) >= total(&t.busiest) {
                t.busiest = counts;
            }
        }
    }

    pub fn report(&self) -> Vec<NeighbourTable> {
        self.0
            .iter()
            .map(|t| NeighbourTable {
                family: t.family.into(),
                entries: t.last.entries,
                peak_entries: t.peak_entries,
                gc_thresh: t.limits,
                table_fulls: t.last.table_fulls.saturating_sub(t.first.table_fulls),
                forced_gc_runs: t.last.forced_gc_runs.saturating_sub(t.first.forced_gc_runs),
                unresolved_discards: t
                    .last
                    .unresolved_discards
                    .saturating_sub(t.first.unresolved_discards),
                busiest: t.busiest.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_counted_again_after_an_overflow_when_the_table_or_the_inventory_grows() {
        // The overflow's own sample, and the one after it that first knows a new namespace.
        assert!(worth_counting(0, 20, 0, false));
        assert!(worth_counting(2, 20, 20, true));
        // Nothing new since the last count, or too long after the overflow: no entering.
        assert!(!worth_counting(1, 20, 20, false));
        assert!(!worth_counting(RECOUNT_SAMPLES, 30, 20, true));
        assert!(!worth_counting(u32::MAX, 30, 0, true), "never overflowed");
    }
}
