//! Pure model of `netdoc softirq`: cumulative samples taken each interval become a per-CPU time
//! series (the heatmap) and a per-CPU summary of the whole run.
use std::collections::BTreeMap;

use netdoc_common::softirq::{HIST_BUCKETS, SoftirqTime};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::MapReading;
use crate::facts::procnet::Softnet;

/// Everything read at one tick; all counters cumulative.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the probes attached.
    pub t_s: f64,
    pub maps: MapReading,
    pub softnet: Vec<Softnet>,
    /// Per CPU: (all drops, drops inside NET_RX).
    pub drops: Vec<(u64, u64)>,
    /// The chosen vector's `/proc/softirqs` count per CPU.
    pub proc_softirqs: BTreeMap<u32, u64>,
}

impl Sample {
    fn time(&self, cpu: u32, vector: u32) -> SoftirqTime {
        self.maps
            .softirq
            .get(cpu as usize)
            .and_then(|v| v.get(vector as usize))
            .copied()
            .unwrap_or(SoftirqTime::ZERO)
    }

    fn softnet(&self, cpu: u32) -> Softnet {
        self.softnet
            .iter()
            .find(|s| s.cpu == cpu)
            .copied()
            .unwrap_or_default()
    }

    fn drops(&self, cpu: u32) -> (u64, u64) {
        self.drops.get(cpu as usize).copied().unwrap_or_default()
    }
}

/// One CPU's row of the heatmap: one value per time bucket.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HeatRow {
    pub cpu: u32,
    /// Share of each bucket's wall time spent in the vector (0..1).
    pub share: Vec<f64>,
    /// Runs of the vector per bucket.
    pub count: Vec<u64>,
    /// Drops per bucket (all reasons).
    pub drops: Vec<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Heatmap {
    pub vector: Cow<'static, str>,
    /// `[start_s, end_s]` of each bucket, relative to attach.
    pub buckets: Vec<[f64; 2]>,
    pub rows: Vec<HeatRow>,
}

pub fn heatmap(samples: &[Sample], cpus: &[u32], vector: u32) -> Heatmap {
    let pairs: Vec<(&Sample, &Sample)> = samples.windows(2).map(|w| (&w[0], &w[1])).collect();
    let buckets = pairs.iter().map(|(a, b)| [a.t_s, b.t_s]).collect();
    let rows = cpus
        .iter()
        .map(|&cpu| {
            let mut row = HeatRow {
                cpu,
                share: Vec::new(),
                count: Vec::new(),
                drops: Vec::new(),
            };
            for (a, b) in &pairs {
                let (ta, tb) = (a.time(cpu, vector), b.time(cpu, vector));
                let wall_ns = (b.t_s - a.t_s) * 1e9;
                let busy = tb.total_ns.saturating_sub(ta.total_ns) as f64;
                row.share.push(if wall_ns > 0.0 {
                    (busy / wall_ns).min(1.0)
                } else {
                    0.0
                });
                row.count.push(tb.count.saturating_sub(ta.count));
                row.drops
                    .push(b.drops(cpu).0.saturating_sub(a.drops(cpu).0));
            }
            row
        })
        .collect();
    Heatmap {
        vector: super::VECTOR_NAMES
            .get(vector as usize)
            .copied()
            .unwrap_or("?")
            .into(),
        buckets,
        rows,
    }
}

/// One CPU over the whole run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CpuSummary {
    pub cpu: u32,
    /// Runs of the vector counted by netdoc.
    pub count: u64,
    /// The same from `/proc/softirqs` over the run, for comparison.
    pub proc_softirqs: u64,
    /// Share of the run spent in the vector (0..1).
    pub share: f64,
    pub mean_us: f64,
    /// Upper bound of the log2 bucket holding the 99th percentile run time.
    pub p99_us: f64,
    pub drops: u64,
    pub drops_in_net_rx: u64,
    /// `/proc/net/softnet_stat` deltas.
    pub backlog_dropped: u64,
    pub time_squeeze: u64,
}

pub fn summaries(first: &Sample, last: &Sample, cpus: &[u32], vector: u32) -> Vec<CpuSummary> {
    let wall_ns = (last.t_s - first.t_s) * 1e9;
    cpus.iter()
        .map(|&cpu| {
            let (a, b) = (first.time(cpu, vector), last.time(cpu, vector));
            let timed = b.timed.saturating_sub(a.timed);
            let busy = b.total_ns.saturating_sub(a.total_ns);
            let mut hist = [0u64; HIST_BUCKETS];
            for (i, h) in hist.iter_mut().enumerate() {
                *h = b.hist[i].saturating_sub(a.hist[i]);
            }
            let (na, nb) = (first.softnet(cpu), last.softnet(cpu));
            let (da, db) = (first.drops(cpu), last.drops(cpu));
            let proc = |s: &Sample| s.proc_softirqs.get(&cpu).copied().unwrap_or(0);
            CpuSummary {
                cpu,
                count: b.count.saturating_sub(a.count),
                proc_softirqs: proc(last).saturating_sub(proc(first)),
                share: if wall_ns > 0.0 {
                    (busy as f64 / wall_ns).min(1.0)
                } else {
                    0.0
                },
                mean_us: if timed > 0 {
                    busy as f64 / timed as f64 / 1e3
                } else {
                    0.0
                },
                p99_us: quantile_upper_ns(&hist, 0.99) as f64 / 1e3,
                drops: db.0.saturating_sub(da.0),
                drops_in_net_rx: db.1.saturating_sub(da.1),
                backlog_dropped: nb.dropped.saturating_sub(na.dropped),
                time_squeeze: nb.time_squeeze.saturating_sub(na.time_squeeze),
            }
        })
        .collect()
}

/// Upper bound in ns of the log2 bucket where quantile `q` falls; 0 for an empty histogram.
pub fn quantile_upper_ns(hist: &[u64; HIST_BUCKETS], q: f64) -> u64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (b, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return 1u64 << (b + 1);
        }
    }
    1u64 << HIST_BUCKETS
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use netdoc_common::softirq::{NET_RX, VECTORS};

    /// A sample where each CPU has run NET_RX `count[cpu]` times for `busy_ns[cpu]` in total.
    pub fn sample(t_s: f64, count: &[u64], busy_ns: &[u64], drops: &[u64]) -> Sample {
        let softirq = count
            .iter()
            .zip(busy_ns)
            .map(|(&c, &ns)| {
                let mut v = vec![SoftirqTime::ZERO; VECTORS as usize];
                let mut hist = [0; HIST_BUCKETS];
                hist[10] = c; // ~1-2 µs each
                v[NET_RX as usize] = SoftirqTime {
                    count: c,
                    timed: c,
                    total_ns: ns,
                    hist,
                };
                v
            })
            .collect();
        Sample {
            t_s,
            maps: MapReading {
                softirq,
                ..Default::default()
            },
            softnet: Vec::new(),
            drops: drops.iter().map(|&d| (d, d)).collect(),
            proc_softirqs: count
                .iter()
                .enumerate()
                .map(|(c, n)| (c as u32, *n))
                .collect(),
        }
    }

    #[test]
    fn buckets_hold_each_intervals_share_count_and_drops() {
        let s = [
            sample(0.0, &[0, 0], &[0, 0], &[0, 0]),
            sample(1.0, &[100, 10], &[900_000_000, 1_000_000], &[50, 0]),
            sample(2.0, &[150, 20], &[1_000_000_000, 2_000_000], &[60, 1]),
        ];
        let h = heatmap(&s, &[0, 1], NET_RX);
        assert_eq!(h.vector, "NET_RX");
        assert_eq!(h.buckets, vec![[0.0, 1.0], [1.0, 2.0]]);
        assert_eq!(h.rows.len(), 2);
        assert!((h.rows[0].share[0] - 0.9).abs() < 1e-9);
        assert!((h.rows[0].share[1] - 0.1).abs() < 1e-9);
        assert_eq!(h.rows[0].count, vec![100, 50]);
        assert_eq!(h.rows[0].drops, vec![50, 10]);
        assert_eq!(h.rows[1].drops, vec![0, 1]);
        let sum = summaries(&s[0], &s[2], &[0, 1], NET_RX);
        assert_eq!(sum[0].count, 150);
        assert_eq!(sum[0].proc_softirqs, 150);
        assert!((sum[0].share - 0.5).abs() < 1e-9);
        assert_eq!(sum[0].p99_us, 2.048);
        assert_eq!(sum[1].drops_in_net_rx, 1);
    }

    #[test]
    fn quantiles_from_log2_buckets() {
        let mut h = [0; HIST_BUCKETS];
        assert_eq!(quantile_upper_ns(&h, 0.99), 0);
        h[3] = 99;
        h[20] = 1;
        assert_eq!(quantile_upper_ns(&h, 0.5), 16);
        assert_eq!(quantile_upper_ns(&h, 0.99), 16);
        assert_eq!(quantile_upper_ns(&h, 1.0), 1 << 21);
    }
}
