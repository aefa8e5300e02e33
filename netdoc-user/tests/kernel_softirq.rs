//! Kernel integration tests of the softirq/IRQ family: a bounded veth flood pinned to CPU 0
//! creates NET_RX load and drops; netdoc's per-CPU counts must agree with the kernel's own.
use std::collections::BTreeMap;

mod common;
use common::*;

const FLOOD: usize = 20_000;

fn online_cpus() -> Vec<u64> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<u64>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

fn net_rx_per_cpu() -> BTreeMap<u64, u64> {
    let text = std::fs::read_to_string("/proc/softirqs").unwrap();
    let mut lines = text.lines();
    let cpus: Vec<u64> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|c| c.trim_start_matches("CPU").parse().unwrap())
        .collect();
    let row = lines
        .find(|l| l.trim_start().starts_with("NET_RX:"))
        .unwrap();
    cpus.into_iter()
        .zip(row.split_whitespace().skip(1).map(|n| n.parse().unwrap()))
        .collect()
}

fn within(a: u64, b: u64, pct: f64) -> bool {
    (a as f64 - b as f64).abs() <= pct / 100.0 * b.max(1) as f64
}

#[test]
fn net_rx_counts_match_proc_softirqs_and_the_heatmap_has_every_cpu() {
    require_root!();
    let pair = Pair::new("s", 40);
    let svg = std::env::temp_dir().join(format!("netdoc-test-{}.svg", std::process::id()));
    let netdoc = start(&[
        "softirq",
        "--json",
        "--interval",
        "300ms",
        "--svg",
        svg.to_str().unwrap(),
    ]);
    let before = net_rx_per_cpu();
    pair.send(CLOSED_PORT, FLOOD);
    pair.wait_for_drops(FLOOD as u64, 0);
    let after = net_rx_per_cpu();
    let (status, lines) = netdoc.stop(libc::SIGTERM);
    assert!(status.success(), "netdoc exited with {status}");
    assert_nothing_left();

    let Output::Softirq(report) = as_output(lines.last().expect("one JSON report")) else {
        panic!("the softirq report last: {:?}", lines.last());
    };
    assert_eq!(report.vector, "NET_RX");
    let cpus = online_cpus();
    let rows = &report.heatmap.rows;
    assert_eq!(
        rows.iter().map(|r| u64::from(r.cpu)).collect::<Vec<_>>(),
        cpus,
        "one heatmap row per online CPU"
    );
    let buckets = report.heatmap.buckets.len();
    assert!(buckets >= 1);
    assert!(rows.iter().all(|r| r.share.len() == buckets));

    // netdoc's window encloses the test's, and the box is otherwise quiet: within 5 %.
    let summary = &report.summary;
    let ours = |cpu: u64| summary[cpu as usize].count;
    let proc_delta = |cpu: u64| after[&cpu] - before[&cpu];
    let total_ours: u64 = cpus.iter().map(|c| ours(*c)).sum();
    let total_proc: u64 = cpus.iter().map(|c| proc_delta(*c)).sum();
    assert!(
        proc_delta(0) as usize >= FLOOD / 10,
        "the flood ran NET_RX on CPU 0"
    );
    assert!(
        within(ours(0), proc_delta(0), 5.0),
        "CPU 0: netdoc {} vs /proc/softirqs {}",
        ours(0),
        proc_delta(0)
    );
    assert!(
        within(total_ours, total_proc, 5.0),
        "all CPUs: netdoc {total_ours} vs /proc/softirqs {total_proc}"
    );
    // The flood's drops happen on CPU 0, inside NET_RX (the UDP lookup runs there).
    let cpu0 = &summary[0];
    assert!(cpu0.drops >= FLOOD as u64, "{cpu0:?}");
    assert!(cpu0.drops_in_net_rx >= FLOOD as u64, "{cpu0:?}");
    assert!(cpu0.share > 0.0);
    let heat_drops: u64 = rows[0].drops.iter().sum();
    assert_eq!(heat_drops, cpu0.drops);

    let text = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let cells = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("cell"))
        .count();
    assert_eq!(cells, cpus.len() * buckets, "a cell per CPU and bucket");
}

#[test]
fn drops_carry_their_net_rx_context() {
    require_root!();
    let pair = Pair::new("c", 41);
    let netdoc = start(&["drops", "--json", "--netns", pair.b.as_str()]);
    pair.send(CLOSED_PORT, N);
    pair.wait_for_drops(N as u64, 0);
    let (status, lines) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();
    let drops = drop_events(&lines);
    assert_eq!(drops.len(), N);
    assert!(
        drops
            .iter()
            .all(|d| d.in_net_rx == Some(true) && d.cpu == 0),
        "{drops:?}"
    );
    assert_eq!(drops_summary(&lines).in_net_rx, Some(N as u64));
}

#[test]
fn irq_map_names_this_machines_nic_queues_with_their_affinity() {
    require_root!();
    let out = std::process::Command::new(NETDOC)
        .args(["irq", "--json", "--duration", "500ms"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_nothing_left();
    let Output::Irq(report) = typed(String::from_utf8_lossy(&out.stdout).trim_end()) else {
        panic!("the irq report");
    };
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap();
    for q in &report.nic_map.queues {
        let (irq, handler) = (q.irq, q.handler.as_str());
        assert!(
            interrupts
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{irq}:")) && l.ends_with(handler)),
            "IRQ {irq} {handler} is in /proc/interrupts"
        );
        let configured = std::fs::read_to_string(format!("/proc/irq/{irq}/smp_affinity_list"))
            .unwrap_or_default();
        let listed = q.affinity.clone().unwrap_or_default();
        assert!(
            configured.trim().is_empty() || !listed.is_empty(),
            "affinity of IRQ {irq} read"
        );
    }
    let cpus = &report.nic_map.cpus;
    assert_eq!(cpus.len(), online_cpus().len());
    assert!(cpus.iter().all(|c| c.net_rx_share.is_some()), "{cpus:?}");
}

/// `netdoc softirq` runs two families in one session: softirq (entry, exit, IRQ, NAPI) and
/// drops (the evidence it correlates). Each hook's program is loaded once.
#[test]
fn one_session_loads_each_shared_program_once() {
    require_root!();
    let netdoc = start(&["softirq", "--json", "--interval", "300ms"]);
    let held = programs_of(netdoc.child.id());
    let (status, _) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();
    let loaded = |prefix: &str| held.iter().filter(|n| n.starts_with(prefix)).count();
    for shared in ["kfree_skb_", "softirq_entry_", "softirq_exit_"] {
        assert_eq!(loaded(shared), 1, "{shared} in {held:?}");
    }
    for optional in ["irq_handler_", "napi_poll_"] {
        assert!(loaded(optional) <= 1, "{optional} in {held:?}");
    }
}

/// A dropped SSH session (SIGHUP) ends `softirq` and `conntrack` like Ctrl-C: their summary,
/// the SVG written, every program detached.
#[test]
fn sighup_ends_softirq_and_conntrack_with_their_summary() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let svg = std::env::temp_dir().join(format!("netdoc-test-{}-hup.svg", std::process::id()));
    let netdoc = start(&["softirq", "--json", "--svg", svg.to_str().unwrap()]);
    let (status, lines) = netdoc.stop(libc::SIGHUP);
    assert!(status.success(), "softirq exited with {status}");
    let last = as_output(lines.last().expect("one JSON report"));
    assert!(matches!(last, Output::Softirq(_)), "{last:?}");
    let written = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    assert!(written.trim_end().ends_with("</svg>"), "{written}");

    let netdoc = start(&["conntrack", "--json"]);
    let (status, lines) = netdoc.stop(libc::SIGHUP);
    assert!(status.success(), "conntrack exited with {status}");
    conntrack_summary(&lines);
    assert_nothing_left();
}

/// `softirq --svg FILE` killed outright (no chance to clean up) leaves an earlier FILE as it
/// was: the new heatmap goes to a temporary name and replaces FILE only once complete.
#[test]
fn a_killed_softirq_leaves_an_earlier_svg_intact() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let svg = std::env::temp_dir().join(format!("netdoc-test-{}-kill.svg", std::process::id()));
    let earlier = "<svg xmlns=\"http://www.w3.org/2000/svg\"><!-- an earlier incident --></svg>\n";
    std::fs::write(&svg, earlier).unwrap();
    let netdoc = start(&["softirq", "--json", "--svg", svg.to_str().unwrap()]);
    let (status, _) = netdoc.stop(libc::SIGKILL);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    let after = std::fs::read_to_string(&svg).unwrap();
    let mut partial = svg.file_name().unwrap().to_os_string();
    partial.push(".netdoc-partial");
    let _ = std::fs::remove_file(&svg);
    let _ = std::fs::remove_file(svg.with_file_name(partial));
    assert_eq!(after, earlier);
    // The kernel drops a killed process's programs with its last fd.
    assert_nothing_left();
}
