//! The doctor's report as one HTML page for a ticket (`--report FILE`): the findings with their
//! evidence and fixes, the NET_RX load per CPU, the drop sites, and what the run could not see.
//! Self-contained (inline style, inline SVG, no script, nothing fetched) so it reads the same
//! attached to a ticket, mailed, or opened offline years later.
use std::fmt::Write as _;

use super::{Report, Snapshot, is_blind_spot};
use crate::{
    model::finding::{Finding, Severity},
    softirq::svg::{self, escape},
};

const STYLE: &str = "
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.facts dt { font-weight: bold; }
dl.facts dd { margin: 0; }
.verdict { font-size: 1.3em; font-weight: bold; }
.verdict.ok { color: #1a7f37; }
.verdict.problems { color: #b3261e; }
article.finding { border: 1px solid #ccc; border-left-width: 6px; border-radius: 4px; margin: 1em 0; padding: 0.5em 1em; }
article.critical { border-left-color: #b3261e; }
article.warning { border-left-color: #d97706; }
article.info { border-left-color: #888; }
.badge { display: inline-block; border-radius: 3px; padding: 0.1em 0.5em; color: white; font-size: 0.8em; text-transform: uppercase; vertical-align: middle; }
.badge.critical { background: #b3261e; }
.badge.warning { background: #d97706; }
.badge.info { background: #888; }
.meta { color: #555; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
h4 { margin: 0.5em 0 0; }
ul.fix code { white-space: pre-wrap; }
h3, dd, td, code { overflow-wrap: anywhere; }
";

pub fn render(report: &Report, snapshot: &Snapshot) -> String {
    let (blind, shown): (Vec<&Finding>, Vec<&Finding>) =
        report.findings.iter().partition(|f| is_blind_spot(f));
    let problems = shown.iter().filter(|f| f.severity > Severity::Info).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
         <title>netdoc doctor: {} (kernel {})</title><style>{STYLE}</style></head><body>\n",
        escape(&report.hostname),
        escape(&report.kernel)
    );
    header(&mut out, report, problems);
    out.push_str("<section id=\"findings\"><h2>Findings</h2>\n");
    if problems == 0 {
        out.push_str("<p>no problem found</p>\n");
    }
    for f in &shown {
        finding(&mut out, f);
    }
    out.push_str("</section>\n");
    net_rx(&mut out, snapshot);
    drop_sites(&mut out, snapshot);
    namespaces_gone(&mut out, snapshot);
    unseen(&mut out, &blind, snapshot);
    out.push_str("</body></html>\n");
    out
}

fn header(out: &mut String, r: &Report, problems: usize) {
    let (class, verdict) = match problems {
        0 => ("ok", "no problem found".to_string()),
        1 => ("problems", "1 finding".to_string()),
        n => ("problems", format!("{n} findings")),
    };
    let _ = writeln!(
        out,
        "<header><h1>netdoc doctor</h1><p class=\"verdict {class}\">{verdict}</p>\
         <dl class=\"facts\"><dt>host</dt><dd>{}</dd><dt>kernel</dt><dd>{}</dd>\
         <dt>duration</dt><dd>{:.0} s</dd><dt>source</dt><dd>{}</dd>\
         <dt>drop events</dt><dd>{} matched, {} delivered, {} lost</dd>\
         <dt>drops accounted for</dt><dd>{}</dd></dl></header>",
        escape(&r.hostname),
        escape(&r.kernel),
        r.duration_s,
        if r.replayed {
            "replayed from a recording"
        } else {
            "observed on this host"
        },
        r.drops_matched,
        r.drops_delivered,
        r.drops_lost,
        escape(&super::render::accounting(&r.drops_accounted))
    );
}

fn finding(out: &mut String, f: &Finding) {
    let severity = f.severity.name();
    let _ = write!(
        out,
        "<article class=\"finding {severity}\"><h3><span class=\"badge {severity}\">{severity}</span> {}</h3>\
         <p class=\"meta\"><code>{}</code> · {} confidence · {}",
        escape(&f.title),
        escape(&f.id),
        f.confidence.name(),
        escape(&f.scope.to_string())
    );
    if f.affected > 0 {
        let _ = write!(out, " · accounts for {}", f.affected);
    }
    out.push_str("</p>\n");
    if !f.evidence.is_empty() {
        out.push_str(
            "<table class=\"evidence\"><thead><tr><th>evidence</th><th>source</th></tr></thead><tbody>\n",
        );
        for e in &f.evidence {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                escape(&e.text),
                escape(&e.source)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    if !f.fix.is_empty() {
        out.push_str("<h4>fix</h4><ul class=\"fix\">\n");
        for fix in &f.fix {
            let _ = writeln!(out, "<li><code>{}</code></li>", escape(fix));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</article>\n");
}

/// A table with a header row, or `empty` when there are no rows; cells are already HTML.
fn table(out: &mut String, columns: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        let _ = writeln!(out, "<p>{empty}</p>");
        return;
    }
    out.push_str("<table><thead><tr>");
    for c in columns {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(cell);
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n");
}

fn text(s: &str) -> String {
    format!("<td>{}</td>", escape(s))
}

fn num(n: impl std::fmt::Display) -> String {
    format!("<td class=\"num\">{n}</td>")
}

fn net_rx(out: &mut String, s: &Snapshot) {
    out.push_str("<section id=\"net-rx\"><h2>NET_RX per CPU</h2>\n");
    let Some(n) = s.net_rx.as_ref().filter(|n| !n.cpus.is_empty()) else {
        out.push_str("<p>not measured on this run (no softirq probe attached)</p></section>\n");
        return;
    };
    let _ = writeln!(
        out,
        "<figure>{}<figcaption>share of the measured stretch each CPU spent in NET_RX</figcaption></figure>",
        svg::share_bars("NET_RX", &n.cpus)
    );
    let rows: Vec<Vec<String>> = n
        .cpus
        .iter()
        .map(|c| {
            vec![
                num(c.cpu),
                num(format!("{:.1}%", c.share * 100.0)),
                num(c.backlog_dropped),
                num(c.time_squeeze),
            ]
        })
        .collect();
    table(
        out,
        &["CPU", "share", "backlog drops", "time squeezes"],
        &rows,
        "",
    );
    out.push_str("</section>\n");
}

fn drop_sites(out: &mut String, s: &Snapshot) {
    out.push_str("<section id=\"drop-sites\"><h2>Drop sites</h2>\n");
    let rows: Vec<Vec<String>> = s
        .drops
        .sites
        .iter()
        .map(|r| {
            vec![
                text(&r.reason),
                text(r.cause.map_or("", |c| c.describe())),
                text(&r.location),
                num(r.count),
            ]
        })
        .collect();
    table(
        out,
        &["reason", "cause", "location", "count"],
        &rows,
        "no packet dropped",
    );
    out.push_str("</section>\n");
}

fn namespaces_gone(out: &mut String, s: &Snapshot) {
    out.push_str("<section id=\"namespaces-gone\"><h2>Namespaces gone during the run</h2>\n");
    let earlier = s.namespaces_gone_earlier;
    if earlier > 0 {
        let _ = writeln!(out, "<p>{earlier} went away before these</p>");
    }
    let rows: Vec<Vec<String>> = s
        .namespaces_gone
        .iter()
        .map(|g| {
            vec![
                text(&g.id.name),
                num(g.id.inode),
                num(format!("{:.0} s", g.gone_after_s)),
            ]
        })
        .collect();
    table(out, &["namespace", "inode", "last seen at"], &rows, "none");
    out.push_str("</section>\n");
}

fn unseen(out: &mut String, blind: &[&Finding], s: &Snapshot) {
    out.push_str("<section id=\"unseen\"><h2>What this run could not see</h2>\n");
    for f in blind {
        finding(out, f);
    }
    let rows: Vec<Vec<String>> = s
        .probes
        .iter()
        .filter_map(|p| {
            p.unavailable
                .as_ref()
                .map(|why| vec![text(&p.probe), text(why)])
        })
        .collect();
    out.push_str("<h3>Probes this kernel did not give</h3>\n");
    table(out, &["probe", "why"], &rows, "every probe attached");
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        doctor::{
            NetRx, Report,
            rules::fixtures::{counted, group, quiet},
        },
        planner::ProbeStatus,
        softirq::{nicmap::NicMap, series::CpuSummary},
    };

    fn incident() -> Snapshot {
        let mut s = quiet();
        s.drops.groups = vec![group("blue", "NO_SOCKET", None, "udp", "10.0.0.2", 9, 40)];
        s.counted = vec![counted("blue", &[("Udp.NoPorts", 40)], &[])];
        s.probes = vec![ProbeStatus {
            probe: "retrans".into(),
            hook: None,
            unavailable: Some("no tcp:tcp_retransmit_skb <here>".into()),
            missed_runs: 0,
        }];
        s.net_rx = Some(NetRx {
            from_s: 0.0,
            to_s: 30.0,
            cpus: (0..4)
                .map(|cpu| CpuSummary {
                    cpu,
                    count: 100,
                    proc_softirqs: 100,
                    share: if cpu == 1 { 0.7 } else { 0.05 },
                    mean_us: 10.0,
                    p99_us: 64.0,
                    drops: 0,
                    drops_in_net_rx: 0,
                    backlog_dropped: 1200,
                    time_squeeze: 34,
                })
                .collect(),
            nic_map: NicMap {
                queues: vec![],
                cpus: vec![],
                busiest_cpu: Some(1),
            },
        });
        s
    }

    fn html(s: &Snapshot) -> String {
        render(&Report::new(s, true), s)
    }

    #[test]
    fn escapes_what_html_gives_meaning() {
        assert_eq!(
            escape(r#"<a href='x'>&"</a>"#),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }

    #[test]
    fn findings_show_their_titles_escaped_evidence_and_fixes() {
        let s = incident();
        let report = Report::new(&s, true);
        let out = render(&report, &s);
        let problems: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.severity > Severity::Info)
            .collect();
        // No listener on the port, and NET_RX concentrated on CPU 1; the missing probe is info.
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(out.contains("<p class=\"verdict problems\">2 findings</p>"));
        for f in &report.findings {
            assert!(out.contains(&escape(&f.title)), "{}", f.title);
        }
        assert!(out.contains("<td>40 packets udp &gt; 10.0.0.2:9 (e.g. udp 10.0.0.1:40000 &gt;"));
        assert!(out.contains("<li><code>start the service on port 9"));
        assert!(out.contains("replayed from a recording"));
        assert!(out.contains("no tcp:tcp_retransmit_skb &lt;here&gt;"));
    }

    #[test]
    fn markup_in_a_flow_is_shown_not_run() {
        let mut s = quiet();
        let mut g = group("blue", "NO_SOCKET", None, "udp", "10.0.0.2", 9, 40);
        g.targets[0].example = "udp 10.0.0.1:1 > 10.0.0.2:9 <script>alert(1)</script>".into();
        s.drops.groups = vec![g];
        s.host.hostname = "<script>x</script>".into();
        let out = html(&s);
        assert!(!out.contains("<script"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn control_characters_in_a_recording_are_shown_escaped() {
        let mut s = quiet();
        let hostile = "rel_a\x1b]0;pwned\x07\nFAKE <b>";
        s.drops.groups = vec![group(hostile, "NO_SOCKET", None, "udp", "10.0.0.2", 9, 40)];
        s.host.hostname = "node\x1b[2J".into();
        let out = html(&s);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("namespace rel_a\\x1b]0;pwned\\x07\\nFAKE &lt;b&gt;"));
        assert!(out.contains("<dd>node\\x1b[2J</dd>"));
    }

    #[test]
    fn a_quiet_report_says_no_problem_found() {
        let out = html(&quiet());
        assert!(out.contains("<p class=\"verdict ok\">no problem found</p>"));
        assert!(!out.contains("<article"));
        assert!(out.contains("not measured on this run"));
    }

    #[test]
    fn self_contained_and_well_formed_with_a_bar_per_cpu() {
        let out = html(&incident());
        for outside in ["http://", "https://", "<script", "<link", "url("] {
            assert!(!out.contains(outside), "{outside}");
        }
        // Every element is closed, so the page also parses as XML: checkable without a browser.
        let xml = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        let doc = roxmltree::Document::parse_with_options(&out, xml).expect("well-formed");
        let bars = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("bar"))
            .count();
        assert_eq!(bars, 4);
        let sections: Vec<_> = doc
            .descendants()
            .filter(|n| n.has_tag_name("section"))
            .filter_map(|n| n.attribute("id"))
            .collect();
        assert_eq!(
            sections,
            [
                "findings",
                "net-rx",
                "drop-sites",
                "namespaces-gone",
                "unseen"
            ]
        );
    }
}
