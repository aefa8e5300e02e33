//! The heatmap as a standalone SVG for incident reports: title with host and kernel, CPU and
//! time axes, one cell per CPU × interval (with its value as a tooltip) and a colour legend.
//! Also its one-column form, per-CPU shares of a whole run, for inlining into an HTML report.
use std::fmt::Write as _;

use super::{
    heatmap::colour,
    series::{CpuSummary, Heatmap},
};
use crate::text;

pub struct Titles<'a> {
    pub host: &'a str,
    pub kernel: &'a str,
    /// Wall-clock start of the recording, as text.
    pub started: &'a str,
}

const LEFT: f64 = 70.0;
const TOP: f64 = 60.0;
const ROW_H: f64 = 22.0;
const LEGEND_W: f64 = 200.0;

/// `s` safe as XML/HTML text and as a quoted attribute value (the SVG here and the doctor's
/// HTML page share it): markup as entities, control characters shown escaped
/// ([`text::printable`]; XML allows most of them nowhere, and a page should not hide them).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in text::printable(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(h: &Heatmap, t: &Titles<'_>) -> String {
    let n = h.buckets.len().max(1);
    let cell_w = (900.0 / n as f64).clamp(3.0, 40.0);
    let plot_w = cell_w * n as f64;
    let plot_h = ROW_H * h.rows.len() as f64;
    // Wide enough for the title even when there are few buckets.
    let width = LEFT + plot_w.max(720.0) + 30.0;
    let height = TOP + plot_h + 100.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="white"/>
<text x="{LEFT}" y="22" font-size="16" font-weight="bold">{} softirq time per CPU — {} (kernel {})</text>
<text x="{LEFT}" y="42" fill="#555">recorded {} · share of each interval spent in {}</text>"##,
        escape(&h.vector),
        escape(t.host),
        escape(t.kernel),
        escape(t.started),
        escape(&h.vector)
    );
    for (r, row) in h.rows.iter().enumerate() {
        let y = TOP + r as f64 * ROW_H;
        let _ = writeln!(
            s,
            r#"<text x="{:.0}" y="{:.1}" text-anchor="end">CPU {}</text>"#,
            LEFT - 8.0,
            y + ROW_H * 0.7,
            row.cpu
        );
        for (b, share) in row.share.iter().enumerate() {
            let (red, green, blue) = colour(*share);
            let [from, to] = h.buckets[b];
            let _ = writeln!(
                s,
                r##"<rect class="cell" data-cpu="{}" data-bucket="{b}" x="{:.1}" y="{y:.1}" width="{cell_w:.1}" height="{ROW_H}" fill="#{red:02x}{green:02x}{blue:02x}"><title>CPU {} {from:.1}–{to:.1}s: {:.1}% {}, {} runs, {} drops</title></rect>"##,
                row.cpu,
                LEFT + b as f64 * cell_w,
                row.cpu,
                share * 100.0,
                escape(&h.vector),
                row.count[b],
                row.drops[b]
            );
        }
    }
    // Time axis: about eight labelled ticks.
    let axis_y = TOP + plot_h;
    let _ = writeln!(
        s,
        r#"<line x1="{LEFT}" y1="{axis_y:.1}" x2="{:.1}" y2="{axis_y:.1}" stroke="black"/>"#,
        LEFT + plot_w
    );
    let step = n.div_ceil(8).max(1);
    for b in (0..=n).step_by(step) {
        let x = LEFT + b as f64 * cell_w;
        let secs = h
            .buckets
            .get(b)
            .map(|x| x[0])
            .or_else(|| h.buckets.last().map(|x| x[1]))
            .unwrap_or(0.0);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{axis_y:.1}" x2="{x:.1}" y2="{:.1}" stroke="black"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{secs:.0}s</text>"#,
            axis_y + 5.0,
            axis_y + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since start</text>"#,
        LEFT + plot_w / 2.0,
        axis_y + 34.0
    );
    // Legend: a gradient from 0 % to 100 %.
    let ly = axis_y + 52.0;
    let _ = writeln!(s, r#"<defs><linearGradient id="ramp">"#);
    for i in 0..=10 {
        let (r, g, b) = colour(i as f64 / 10.0);
        let _ = writeln!(
            s,
            r##"<stop offset="{}%" stop-color="#{r:02x}{g:02x}{b:02x}"/>"##,
            i * 10
        );
    }
    let _ = writeln!(
        s,
        r##"</linearGradient></defs>
<g class="legend"><rect x="{LEFT}" y="{ly:.1}" width="{LEGEND_W}" height="14" fill="url(#ramp)" stroke="#999"/>
<text x="{LEFT}" y="{:.1}">0%</text><text x="{:.1}" y="{:.1}" text-anchor="middle">50%</text><text x="{:.1}" y="{:.1}" text-anchor="end">100%</text>
<text x="{:.1}" y="{:.1}">of the interval in {}</text></g>
</svg>"##,
        ly + 28.0,
        LEFT + LEGEND_W / 2.0,
        ly + 28.0,
        LEFT + LEGEND_W,
        ly + 28.0,
        LEFT + LEGEND_W + 10.0,
        ly + 11.0,
        escape(&h.vector)
    );
    s
}

const BAR_W: f64 = 400.0;

/// One row per CPU: a bar as long as the share of the measured stretch spent in `vector`, in the heatmap's
/// colour for that share. For a run summed per CPU (the doctor's), which has no intervals to
/// lay out. Without an XML declaration or namespace: HTML needs neither for inline SVG.
pub fn share_bars(vector: &str, cpus: &[CpuSummary]) -> String {
    let width = LEFT + BAR_W + 80.0;
    let height = ROW_H * cpus.len() as f64 + 8.0;
    let mut s = format!(
        r#"<svg class="share-bars" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12" role="img" aria-label="{} share per CPU">"#,
        escape(vector)
    );
    s.push('\n');
    for (r, c) in cpus.iter().enumerate() {
        let y = 4.0 + r as f64 * ROW_H;
        let (red, green, blue) = colour(c.share);
        let _ = writeln!(
            s,
            r##"<text x="{:.0}" y="{:.1}" text-anchor="end">CPU {}</text><rect x="{LEFT}" y="{:.1}" width="{BAR_W}" height="{:.0}" fill="none" stroke="#ccc"/><rect class="bar" data-cpu="{}" x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.0}" fill="#{red:02x}{green:02x}{blue:02x}" stroke="#999"><title>CPU {}: {:.1}% of the run in {}, {} backlog drops, {} time squeezes</title></rect><text x="{:.0}" y="{:.1}">{:.1}%</text>"##,
            LEFT - 8.0,
            y + ROW_H * 0.65,
            c.cpu,
            y + 2.0,
            ROW_H - 4.0,
            c.cpu,
            y + 2.0,
            BAR_W * c.share.clamp(0.0, 1.0),
            ROW_H - 4.0,
            c.cpu,
            c.share * 100.0,
            escape(vector),
            c.backlog_dropped,
            c.time_squeeze,
            LEFT + BAR_W + 8.0,
            y + ROW_H * 0.65,
            c.share * 100.0
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::softirq::series::{heatmap, tests::sample};
    use netdoc_common::softirq::NET_RX;

    #[test]
    fn well_formed_with_a_cell_per_cpu_and_bucket() {
        let s: Vec<_> = (0..6)
            .map(|i| sample(i as f64, &[i * 10, i], &[i * 300_000_000, 0], &[i, 0]))
            .collect();
        let h = heatmap(&s, &[0, 1], NET_RX);
        let svg = render(
            &h,
            &Titles {
                host: "db-7 <prod>",
                kernel: "6.18.0",
                started: "2026-11-22T10:00:00Z",
            },
        );
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let cells: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("cell"))
            .collect();
        assert_eq!(cells.len(), 2 * 5);
        let title: String = doc
            .descendants()
            .filter(|n| n.is_text())
            .filter_map(|n| n.text())
            .collect();
        assert!(title.contains("db-7 <prod>") && title.contains("kernel 6.18.0"));
        assert!(
            doc.descendants()
                .any(|n| n.attribute("class") == Some("legend"))
        );
    }

    #[test]
    fn one_bar_per_cpu_as_long_as_its_share() {
        let cpu = |cpu, share| CpuSummary {
            cpu,
            count: 0,
            proc_softirqs: 0,
            share,
            mean_us: 0.0,
            p99_us: 0.0,
            drops: 0,
            drops_in_net_rx: 0,
            backlog_dropped: 0,
            time_squeeze: 0,
        };
        let svg = share_bars("NET_RX", &[cpu(0, 0.05), cpu(1, 0.75)]);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed XML");
        let bars: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .collect();
        assert_eq!(bars.len(), 2);
        assert_eq!(bars[1].attribute("width"), Some("300.0"));
        let (r, g, b) = colour(0.75);
        assert_eq!(
            bars[1].attribute("fill"),
            Some(format!("#{r:02x}{g:02x}{b:02x}").as_str())
        );
    }
}
