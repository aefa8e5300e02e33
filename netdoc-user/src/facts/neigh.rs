//! The neighbour tables (ARP, NDISC): `/proc/net/stat/arp_cache` and `ndisc_cache`, one line of
//! hex per CPU whose `entries` column is the table's size (the same on every line) and whose
//! other columns are per-CPU counters. The tables are global: the files and the `gc_thresh*`
//! limits exist only in the initial namespace. Each namespace's own IPv4 entries are the lines
//! of its `/proc/net/arp`.
use serde::{Deserialize, Serialize};

/// One reading of a table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    pub entries: u64,
    /// Allocations refused because the table was at `gc_thresh3` (the "neighbor table
    /// overflow!" of the kernel log).
    pub table_fulls: u64,
    pub forced_gc_runs: u64,
    /// Packets dropped while waiting for an address that never resolved.
    pub unresolved_discards: u64,
}

pub fn parse_stat(text: &str) -> Option<TableStats> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (entries, fulls, forced, unresolved) = (
        col("entries")?,
        col("table_fulls")?,
        col("forced_gc_runs")?,
        col("unresolved_discards")?,
    );
    let mut stats = TableStats::default();
    for line in lines {
        let row: Vec<u64> = line
            .split_whitespace()
            .map(|v| u64::from_str_radix(v, 16))
            .collect::<Result<_, _>>()
            .ok()?;
        stats.entries = *row.get(entries)?;
        stats.table_fulls += row.get(fulls)?;
        stats.forced_gc_runs += row.get(forced)?;
        stats.unresolved_discards += row.get(unresolved)?;
    }
    Some(stats)
}

/// `ipv4` or `ipv6`, with its stat file and its limits under `/proc/sys`.
pub const FAMILIES: [(&str, &str, &str); 2] = [
    (
        "ipv4",
        "/proc/net/stat/arp_cache",
        "/proc/sys/net/ipv4/neigh/default",
    ),
    (
        "ipv6",
        "/proc/net/stat/ndisc_cache",
        "/proc/sys/net/ipv6/neigh/default",
    ),
];

/// A table's stats, read from the initial namespace (netdoc's own).
pub fn read_stat(file: &str) -> Option<TableStats> {
    parse_stat(&super::read_text(file).ok()?)
}

/// `gc_thresh1..3` of a family's table.
pub fn read_limits(dir: &str) -> Option<[u64; 3]> {
    let read = |n: u8| -> Option<u64> {
        super::read_text(format!("{dir}/gc_thresh{n}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some([read(1)?, read(2)?, read(3)?])
}

/// IPv4 neighbour entries in `/proc/net/arp` text: every line after the header.
pub fn count_arp(text: &str) -> u64 {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

/// The calling thread's namespace's IPv4 neighbour entries.
pub fn arp_entries_here() -> Option<u64> {
    Some(count_arp(
        &super::read_text("/proc/thread-self/net/arp").ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Recorded from this host's 6.18 kernel (two CPUs).
    const ARP_CACHE: &str = "entries  allocs   destroys hash_grows lookups  hits     res_failed rcv_probes_mcast rcv_probes_ucast periodic_gc_runs forced_gc_runs unresolved_discards table_fulls
00000004 00000e4c 00000d0d 00000005   00003497 000000dd 00000000   00000000         00000000         00000647         00000003       00000002            00000010
00000004 00000bc4 00000cff 00000000   000030e4 00000023 00000000   00000000         00000000         00000000         00000001       00000000            00000022
";

    #[test]
    fn entries_are_a_level_and_the_rest_sum_over_cpus() {
        let s = parse_stat(ARP_CACHE).unwrap();
        assert_eq!(
            s,
            TableStats {
                entries: 4,
                table_fulls: 0x32,
                forced_gc_runs: 4,
                unresolved_discards: 2
            }
        );
        assert_eq!(parse_stat("entries\nzz\n"), None);
    }

    #[test]
    fn arp_lines_after_the_header_are_entries() {
        let arp = "IP address       HW type     Flags       HW address            Mask     Device
10.0.0.1         0x1         0x2         52:54:00:12:35:02     *        eth0
10.0.0.9         0x1         0x0         00:00:00:00:00:00     *        eth0
";
        assert_eq!(count_arp(arp), 2);
        assert_eq!(count_arp(arp.lines().next().unwrap()), 0);
    }
}
