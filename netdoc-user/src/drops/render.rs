//! Terminal rendering of drop rows and the summary; JSON is serde's. Every string that came
//! from outside netdoc (names of namespaces, processes, devices in flows; a recording's) is
//! shown [`printable`].
use std::{fmt::Write as _, time::Duration};

use super::{
    report::{NetnsDrops, Row, Summary},
    stacks::StackCount,
};
use crate::{
    counted::{self, NamespaceCounted, OwnedSocket},
    text::printable,
};

fn cpus(row: &Row) -> String {
    row.cpus
        .iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The reason, and for `NETFILTER_DROP` its cause.
fn reason(row: &Row) -> String {
    let name = printable(&row.reason);
    match row.cause {
        Some(c) => format!("{name} ({})", c.describe()),
        None => name.into_owned(),
    }
}

pub fn table(rows: &[Row], limit: usize) -> String {
    let width = rows
        .iter()
        .take(limit)
        .map(|r| reason(r).len())
        .max()
        .unwrap_or(0)
        .max(24);
    let mut out = format!(
        "{:<width$} {:<36} {:>10} {:>10}  {:<16} {}\n",
        "REASON", "LOCATION", "COUNT", "RATE/s", "CPUS", "LAST FLOW"
    );
    for r in rows.iter().take(limit) {
        let _ = writeln!(
            out,
            "{:<width$} {:<36} {:>10} {:>10.1}  {:<16} {}",
            reason(r),
            printable(&r.location),
            r.count,
            r.rate,
            cpus(r),
            printable(r.last_flow.as_deref().unwrap_or("-"))
        );
    }
    if rows.len() > limit {
        let _ = writeln!(out, "... {} more", rows.len() - limit);
    }
    if rows.is_empty() {
        out.push_str("(no drops yet)\n");
    }
    out
}

/// `--stack`: each stack with its count, the dropping function first, callers after `<`.
pub fn stacks(stacks: &[StackCount]) -> String {
    let mut out = String::new();
    for s in stacks {
        let _ = writeln!(
            out,
            "  {:>8}  {}",
            s.count,
            printable(&s.frames.join(" < "))
        );
    }
    if stacks.is_empty() {
        out.push_str("  (none)\n");
    }
    out
}

pub fn summary(s: &Summary) -> String {
    let mut out = format!(
        "netdoc drops: {} drops in {:.1}s via {} (reason names: {})\n",
        s.total,
        s.duration_s,
        printable(&s.hook),
        printable(&s.reason_names)
    );
    for (reason, n) in &s.counts {
        let _ = writeln!(out, "  {:<28} {n}", printable(reason));
    }
    out.push_str(&table(&s.locations, usize::MAX));
    if !s.netfilter_causes.is_empty() {
        let causes: Vec<String> = s
            .netfilter_causes
            .iter()
            .map(|(c, n)| format!("{n} {}", c.describe()))
            .collect();
        let _ = writeln!(
            out,
            "NETFILTER_DROP causes: {} [{}]",
            causes.join(", "),
            s.netfilter_stages
        );
    }
    if s.streaming {
        let _ = writeln!(
            out,
            "events: {} matched, {} delivered, {} lost, {} unknown records",
            s.matched, s.delivered, s.lost, s.unknown_records
        );
    }
    if s.sampled > 0 {
        let reasons: Vec<String> = s
            .sampled_by_reason
            .iter()
            .map(|(r, n)| format!("{} {n}", printable(r)))
            .collect();
        let _ = writeln!(
            out,
            "sampled: {} drops counted but not streamed, over {} records per second per CPU ({}); --max-events-per-sec 0 streams all",
            s.sampled,
            s.max_events_per_sec,
            reasons.join(", ")
        );
    }
    if let Some(n) = s.in_net_rx {
        let _ = writeln!(out, "inside NET_RX softirq: {n} of {} drops", s.total);
    }
    if let Some(missing) = s.stacks_missing {
        let _ = writeln!(
            out,
            "kernel stacks of delivered drops ({missing} could not be taken):"
        );
        out.push_str(&stacks(&s.stacks));
    }
    out.push_str(&per_namespace(&s.namespaces, usize::MAX));
    out.push_str(&counted(&s.counted));
    if s.namespaces_gone_earlier > 0 {
        let _ = writeln!(
            out,
            "{} namespaces went away, then these:",
            s.namespaces_gone_earlier
        );
    }
    for gone in &s.namespaces_gone {
        let _ = writeln!(
            out,
            "namespace {} (inode {}) went away at {:.1}s",
            printable(&gone.id.name),
            gone.id.inode,
            gone.gone_after_s
        );
    }
    if s.aggregation_overflow > 0 {
        let _ = writeln!(
            out,
            "warning: {} drops found the aggregation map full and are missing from the rows",
            s.aggregation_overflow
        );
    }
    out
}

/// The delivered drops of the busiest `limit` namespaces, by name (the container's or pod's
/// where one is behind it) and inode, with their reasons.
pub fn per_namespace(namespaces: &[NetnsDrops], limit: usize) -> String {
    let mut out = String::new();
    if !namespaces.is_empty() {
        out.push_str("drops per namespace (delivered events):\n");
    }
    for ns in namespaces.iter().take(limit) {
        let name = printable(ns.netns_name.as_deref().unwrap_or("-"));
        let reasons: Vec<String> = ns
            .reasons
            .iter()
            .map(|(r, n)| format!("{} {n}", printable(r)))
            .collect();
        let _ = writeln!(
            out,
            "  {name:<28} {:<16}  {:>8}  {}",
            format!("inode {}", ns.netns),
            ns.drops,
            reasons.join(", ")
        );
    }
    if namespaces.len() > limit {
        let _ = writeln!(out, "  ... {} more", namespaces.len() - limit);
    }
    out
}

/// Drops the kernel counted without a `kfree_skb`, per namespace, with the sockets behind them.
pub fn counted(namespaces: &[NamespaceCounted]) -> String {
    let mut out = String::new();
    if !namespaces.is_empty() {
        out.push_str("counted by the kernel, never freed through kfree_skb:\n");
    }
    for ns in namespaces {
        for (counter, n) in &ns.counters {
            let _ = writeln!(
                out,
                "  {:<24} {:<26} {n:>8}  {}",
                printable(&ns.netns.name),
                printable(counter),
                counted::meaning(counter)
            );
        }
        let owner = |s: &OwnedSocket| match (&s.comm, s.pid) {
            (Some(comm), Some(pid)) => format!("{}[{pid}]", printable(comm)),
            _ => "owner unknown".into(),
        };
        for l in &ns.listeners {
            let waited = l.socket.accept_wait.as_ref().map_or(String::new(), |w| {
                format!(
                    ", oldest waiting {}",
                    humantime::format_duration(Duration::from_millis(w.oldest_ms.into()))
                )
            });
            let _ = writeln!(
                out,
                "    listener {} accept queue {} of backlog {}{waited} ({})",
                l.socket.local,
                l.socket.queue,
                l.socket.limit,
                owner(l)
            );
        }
        if let Some(why) = &ns.sockets_unavailable {
            let _ = writeln!(out, "    sockets unknown: {}", printable(why));
        }
        for u in &ns.udp_sockets {
            let _ = writeln!(
                out,
                "    udp {} dropped {} (rcvbuf {} bytes, {})",
                u.socket.local,
                u.socket.drops.unwrap_or(0),
                u.socket.rcvbuf.unwrap_or(0),
                owner(u)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netns(name: &str, inode: u32, drops: u64) -> NetnsDrops {
        NetnsDrops {
            netns: inode,
            netns_name: Some(name.into()),
            drops,
            reasons: [("NO_SOCKET".to_string(), drops)].into(),
            ..NetnsDrops::default()
        }
    }

    #[test]
    fn namespaces_show_their_names_and_inodes_busiest_first() {
        let ranked = [
            netns("containerd:3f2a9c01d4e5", 4026532301, 90),
            netns("pod shop/cart-7d9f", 4026532302, 40),
            netns("host", 4026531840, 1),
        ];
        let text = per_namespace(&ranked, 2);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1].contains("containerd:3f2a9c01d4e5") && lines[1].contains("inode 4026532301")
        );
        assert!(lines[1].contains("NO_SOCKET 90"));
        assert!(lines[2].contains("pod shop/cart-7d9f"));
        assert_eq!(lines[3].trim(), "... 1 more");
        assert_eq!(per_namespace(&[], 5), "");
    }
}
