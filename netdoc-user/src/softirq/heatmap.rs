//! Terminal rendering of the heatmap, the per-CPU summary and the NIC map.
use std::fmt::Write as _;

use super::{
    nicmap::NicMap,
    series::{CpuSummary, Heatmap},
};
use crate::text::printable;

/// Shades from idle to saturated when colour is off.
const RAMP: [char; 10] = [' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

/// Sequential palette (light yellow → dark red), shared with the SVG so both read the same.
pub fn colour(share: f64) -> (u8, u8, u8) {
    const STOPS: [(f64, (f64, f64, f64)); 5] = [
        (0.0, (255.0, 255.0, 229.0)),
        (0.25, (254.0, 227.0, 145.0)),
        (0.5, (254.0, 153.0, 41.0)),
        (0.75, (217.0, 72.0, 1.0)),
        (1.0, (127.0, 39.0, 4.0)),
    ];
    let s = share.clamp(0.0, 1.0);
    let i = STOPS
        .iter()
        .rposition(|(at, _)| *at <= s)
        .unwrap_or(0)
        .min(3);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (s - a) / (b - a);
    let mix = |x: f64, y: f64| (x + (y - x) * t).round() as u8;
    (mix(ca.0, cb.0), mix(ca.1, cb.1), mix(ca.2, cb.2))
}

/// Rows = CPUs, columns = the last `width` buckets.
pub fn render(h: &Heatmap, width: usize, colour_on: bool) -> String {
    let start = h.buckets.len().saturating_sub(width);
    let mut out = String::new();
    let span = h.buckets.get(start).map(|b| b[0]).unwrap_or(0.0);
    let _ = writeln!(
        out,
        "{} share per CPU, one column per interval (from {span:.0}s): ' '=0% .. '@'=100%",
        h.vector
    );
    for row in &h.rows {
        let _ = write!(out, "CPU{:<3} |", row.cpu);
        for &s in &row.share[start..] {
            if colour_on {
                let (r, g, b) = colour(s);
                let _ = write!(out, "\x1b[48;2;{r};{g};{b}m \x1b[0m");
            } else {
                out.push(
                    RAMP[((s * (RAMP.len() - 1) as f64).round() as usize).min(RAMP.len() - 1)],
                );
            }
        }
        let now = row.share.last().copied().unwrap_or(0.0);
        let _ = writeln!(out, "| {:>5.1}%", now * 100.0);
    }
    out
}

pub fn summary_table(vector: &str, cpus: &[CpuSummary]) -> String {
    let mut out = format!(
        "{:<5} {:>10} {:>10} {:>7} {:>9} {:>9} {:>9} {:>10} {:>12} {:>9}\n",
        "CPU",
        vector,
        "/proc",
        "SHARE",
        "MEAN_us",
        "P99_us",
        "DROPS",
        "IN_NET_RX",
        "BACKLOG_DROP",
        "SQUEEZED"
    );
    for c in cpus {
        let _ = writeln!(
            out,
            "{:<5} {:>10} {:>10} {:>6.1}% {:>9.1} {:>9.1} {:>9} {:>10} {:>12} {:>9}",
            c.cpu,
            c.count,
            c.proc_softirqs,
            c.share * 100.0,
            c.mean_us,
            c.p99_us,
            c.drops,
            c.drops_in_net_rx,
            c.backlog_dropped,
            c.time_squeeze
        );
    }
    out
}

fn cpus(set: &Option<std::collections::BTreeSet<u32>>) -> String {
    match set {
        None => "?".into(),
        Some(s) if s.is_empty() => "-".into(),
        Some(s) => s.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
    }
}

pub fn nic_map(m: &NicMap) -> String {
    let mut out = format!(
        "{:<5} {:<24} {:<12} {:>5} {:<9} {:<10} {:<10} {:<22} {:<8} {}\n",
        "IRQ",
        "HANDLER",
        "DEVICE",
        "QUEUE",
        "KIND",
        "AFFINITY",
        "EFFECTIVE",
        "OBSERVED CPU:RUNS",
        "RPS",
        "NOTE"
    );
    for q in &m.queues {
        let observed = if q.observed.is_empty() {
            "-".to_string()
        } else {
            q.observed
                .iter()
                .map(|(c, n)| format!("{c}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let note = if q.single_cpu {
            format!(
                "served by CPU {} alone",
                q.served_by.iter().next().unwrap_or(&0)
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<5} {:<24} {:<12} {:>5} {:<9} {:<10} {:<10} {:<22} {:<8} {note}",
            q.irq,
            printable(&q.handler),
            printable(&q.device),
            q.queue,
            format!("{:?}", q.kind).to_lowercase(),
            cpus(&q.affinity),
            cpus(&q.effective),
            observed,
            cpus(&q.rps)
        );
    }
    if m.queues.is_empty() {
        out.push_str("(no NIC queue IRQs found in /proc/interrupts)\n");
    }
    out.push_str(
        "\nCPU   NET_RX  RX QUEUES SERVED        NAPI (device polls/packets/budget-exhausted)\n",
    );
    for c in &m.cpus {
        let share = c
            .net_rx_share
            .map_or("?".to_string(), |s| format!("{:.1}%", s * 100.0));
        let napi = c
            .napi
            .iter()
            .map(|n| {
                format!(
                    "{} {}/{}/{}",
                    printable(&n.device),
                    n.polls,
                    n.packets,
                    n.budget_exhausted
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let busiest = if m.busiest_cpu == Some(c.cpu) {
            "  <- most NET_RX"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "{:<5} {:>6}  {:<22} {}{busiest}",
            c.cpu,
            share,
            if c.queues.is_empty() {
                "-".into()
            } else {
                printable(&c.queues.join(",")).into_owned()
            },
            if napi.is_empty() { "-".into() } else { napi }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::softirq::series::{heatmap, tests::sample};
    use netdoc_common::softirq::NET_RX;

    #[test]
    fn palette_runs_light_to_dark() {
        assert_eq!(colour(0.0), (255, 255, 229));
        assert_eq!(colour(1.0), (127, 39, 4));
        let lum = |c: (u8, u8, u8)| c.0 as u32 + c.1 as u32 + c.2 as u32;
        assert!(lum(colour(0.3)) > lum(colour(0.6)));
    }

    #[test]
    fn one_text_row_per_cpu_one_column_per_bucket() {
        let s = [
            sample(0.0, &[0, 0], &[0, 0], &[0, 0]),
            sample(1.0, &[10, 10], &[1_000_000_000, 0], &[0, 0]),
            sample(2.0, &[20, 20], &[1_500_000_000, 0], &[0, 0]),
        ];
        let text = render(&heatmap(&s, &[0, 1], NET_RX), 80, false);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1], "CPU0   |@+|  50.0%");
        assert_eq!(lines[2], "CPU1   |  |   0.0%");
    }
}
