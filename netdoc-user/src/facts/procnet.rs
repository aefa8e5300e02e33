//! `/proc/net/softnet_stat` and `/proc/softirqs`: the kernel's own per-CPU counters.
use std::collections::BTreeMap;

/// One CPU's row of `/proc/net/softnet_stat` (cumulative).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Softnet {
    pub cpu: u32,
    pub processed: u64,
    /// Packets dropped because the CPU's backlog was full (`netdev_max_backlog`).
    pub dropped: u64,
    /// NET_RX runs that ended with work left (budget or time exhausted).
    pub time_squeeze: u64,
}

/// Rows are per online CPU; kernels since 5.10 print the CPU number in column 13, older ones
/// only imply it by row order.
pub fn parse_softnet(text: &str) -> Vec<Softnet> {
    text.lines()
        .enumerate()
        .filter_map(|(row, l)| {
            let cols: Vec<u64> = l
                .split_whitespace()
                .map(|c| u64::from_str_radix(c, 16).ok())
                .collect::<Option<_>>()?;
            Some(Softnet {
                cpu: cols.get(12).map_or(row as u32, |c| *c as u32),
                processed: *cols.first()?,
                dropped: *cols.get(1)?,
                time_squeeze: *cols.get(2)?,
            })
        })
        .collect()
}

pub fn read_softnet() -> Vec<Softnet> {
    parse_softnet(&super::read_text("/proc/net/softnet_stat").unwrap_or_default())
}

/// `/proc/softirqs`: vector name → count per CPU number.
pub fn parse_softirqs(text: &str) -> BTreeMap<String, BTreeMap<u32, u64>> {
    let mut lines = text.lines();
    let cpus = super::interrupts::cpu_columns(lines.next().unwrap_or_default());
    lines
        .filter_map(|l| {
            let (name, counts) = l.split_once(':')?;
            let counts = counts
                .split_whitespace()
                .filter_map(|c| c.parse().ok())
                .zip(cpus.iter())
                .map(|(n, cpu)| (*cpu, n))
                .collect();
            Some((name.trim().to_string(), counts))
        })
        .collect()
}

pub fn read_softirqs() -> BTreeMap<String, BTreeMap<u32, u64>> {
    parse_softirqs(&super::read_text("/proc/softirqs").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softnet_with_and_without_cpu_column() {
        let new = "05ea2f30 00000003 00000002 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000000 00000000\n";
        assert_eq!(
            parse_softnet(new),
            vec![Softnet {
                cpu: 2,
                processed: 0x05ea2f30,
                dropped: 3,
                time_squeeze: 2
            }]
        );
        let old = "0000000a 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n0000000b 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000\n";
        let rows = parse_softnet(old);
        assert_eq!((rows[1].cpu, rows[1].dropped), (1, 4));
    }

    #[test]
    fn softirqs_by_vector_and_cpu() {
        let t = "                    CPU0       CPU1       \n          HI:          0          0\n      NET_RX:   49636309       4139\n";
        let s = parse_softirqs(t);
        assert_eq!(s["NET_RX"][&0], 49_636_309);
        assert_eq!(s["NET_RX"][&1], 4139);
        assert_eq!(s["HI"].len(), 2);
    }
}
