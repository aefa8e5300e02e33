//! Kernel integration tests of the conntrack evidence: a full conntrack table (a tiny
//! `nf_conntrack_max`, restored afterwards) versus an nft drop rule. Both show as
//! `NETFILTER_DROP`; the conntrack counters netdoc reads in the namespace tell them apart, and
//! where netfilter links exist (6.4+, this host) so does each drop's cause in `netdoc drops`.
//! Insertion failures forced by a one-bucket hash table must each arrive as an event where the
//! kernel has a function hook on `__nf_conntrack_confirm` (the QEMU guest kernels), and as a
//! drop caused by conntrack confirm where the stage sentinels attach.
use netdoc_user::output::{
    Cause, ConntrackSummary, DropsSummary, InsertFailure, NamedDrop, NamespaceConntrack, ScopeKind,
};
use serde_json::Value;

mod common;
use common::*;

/// What a scenario sets up before sending.
#[derive(Clone, Copy)]
enum Setup {
    /// Conntrack tracks namespace b (an nft rule using `ct`); netdoc watches b.
    TrackB,
    /// As `TrackB`, plus a legacy x_tables DROP rule for [`XT_PORT`] in b: a rule whose drops,
    /// unlike nftables', are freed in `nf_hook_slow` exactly like conntrack's.
    XtablesB,
    /// Namespace a source-NATs every datagram to one fixed address and port, so every flow
    /// after the first clashes with the first's reply tuple and fails insertion at confirm
    /// (SNAT port exhaustion); netdoc watches a.
    SnatClash,
}

/// Sends one datagram from each of `flows` source ports to `port`, and returns netdoc drops'
/// summary, netdoc conntrack's lines, the pair, and how many sends netfilter refused.
fn scenario(
    tag: &str,
    subnet: u8,
    port: u16,
    flows: usize,
    max: Option<u32>,
    setup: Setup,
) -> (DropsSummary, Vec<Value>, Pair, usize) {
    let pair = Pair::new(tag, subnet);
    let watched = setup_rules(&pair, port, setup);
    let watched = watched.as_str();
    let _max = max.map(|m| Sysctl::set(MAX_PATH, m));
    let drops = start(&["drops", "--json", "--counts-only", "--netns", watched]);
    let ct = start(&["conntrack", "--json", "--netns", watched]);
    let refused = pair.send_flows(port, flows);
    let (drop_lines, ct_lines) = settle(&pair, flows as u64, drops, ct);
    (drops_summary(&drop_lines), ct_lines, pair, refused)
}

/// Waits (bounded) until the kernels accounted for `datagrams`, then stops both netdocs and
/// returns their lines (drops', conntrack's).
fn settle(pair: &Pair, datagrams: u64, drops: Netdoc, ct: Netdoc) -> (Vec<Value>, Vec<Value>) {
    wait_until_accounted(pair, datagrams);
    let (s1, ct_lines) = ct.stop(libc::SIGINT);
    let (s2, drop_lines) = drops.stop(libc::SIGINT);
    assert!(s1.success() && s2.success());
    assert_nothing_left();
    (drop_lines, ct_lines)
}

/// Waits (bounded) until the kernels accounted for `datagrams`.
fn wait_until_accounted(pair: &Pair, datagrams: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while drops_seen(pair) < datagrams {
        assert!(
            std::time::Instant::now() < deadline,
            "not every datagram was accounted for"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Conntrack's drops in `ns`, summed over CPUs: per CPU the larger of `drop` and
/// `insert_failed`, since newer kernels count an insertion failure in both.
fn conntrack_drops(ns: &str) -> u64 {
    let stat = run(
        "ip",
        &["netns", "exec", ns, "cat", "/proc/net/stat/nf_conntrack"],
    );
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |c| header.iter().position(|h| *h == c).unwrap();
    let (drop, failed) = (col("drop"), col("insert_failed"));
    lines
        .map(|l| {
            let row: Vec<u64> = l
                .split_whitespace()
                .map(|v| u64::from_str_radix(v, 16).unwrap())
                .collect();
            row[drop].max(row[failed])
        })
        .sum()
}

/// Datagrams the two kernels accounted for: b's UDP NoPorts, nft and x_tables drops, and
/// conntrack's drops on either side.
fn drops_seen(pair: &Pair) -> u64 {
    pair.udp_no_ports()
        + pair.nft_dropped()
        + xt_dropped(pair)
        + conntrack_drops(&pair.a)
        + conntrack_drops(&pair.b)
}

/// The legacy x_tables front end (the `iptables` package; absent from the QEMU guests).
const XT: &str = "iptables-legacy";
const XT_PORT: u16 = 7778;

fn has_xtables() -> bool {
    std::process::Command::new(XT)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Packets b's x_tables INPUT rules matched (0 without x_tables).
fn xt_dropped(pair: &Pair) -> u64 {
    if !has_xtables() {
        return 0;
    }
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.b, XT, "-w", "-L", "INPUT", "-vnx"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Conntrack and x_tables drops: NETFILTER_DROP freed in nf_hook_slow.
const AT_HOOK: Kind = Kind {
    reason: "NETFILTER_DROP",
    freed_in: &["nf_hook_slow"],
    functions: &["nf_hook_slow"],
};

/// `NETFILTER_DROP`s of one cause in a summary's causes.
fn caused(causes: &std::collections::BTreeMap<Cause, u64>, cause: Cause) -> u64 {
    causes.get(&cause).copied().unwrap_or(0)
}

/// The insertion failures among netdoc conntrack's lines.
fn insert_failures(lines: &[Value]) -> Vec<InsertFailure> {
    lines
        .iter()
        .filter_map(|l| match as_output(l) {
            Output::InsertFailed(e) => Some(e),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_conntrack_table_is_told_apart_from_a_firewall_rule() {
    require_root!();
    let (drops, ct_lines, _pair, _) = scenario("t", 43, CLOSED_PORT, 40, Some(8), Setup::TrackB);
    let ct = conntrack_summary(&ct_lines);
    let at_hook = rows_of(&drops, AT_HOOK);
    let table_full = ct.attribution.table_full;
    assert!(at_hook > 0, "the table filled up: {drops:?}");
    assert_eq!(
        table_full, at_hook,
        "every NETFILTER_DROP at nf_hook_slow is conntrack table full"
    );
    assert_eq!(ct.attribution.insert_failed, 0);
    assert_eq!(count_of(&drops, NO_SOCKET) + at_hook, 40);
    let causes = &drops.netfilter_causes;
    if attaches("conntrack_stage") {
        assert_eq!(caused(causes, Cause::ConntrackIn), at_hook, "{causes:?}");
        assert_eq!(caused(causes, Cause::Firewall), 0, "{causes:?}");
        if ct.stage_probe.is_some() {
            assert_eq!(caused(&ct.netfilter_causes, Cause::ConntrackIn), at_hook);
            assert_eq!(ct.conntrack_drop_events, at_hook, "{ct:?}");
        }
    } else if kernel_has_drop_reasons() {
        assert_eq!(caused(causes, Cause::Unclassified), at_hook, "{causes:?}");
    }
    let ids: Vec<&str> = ct.findings.iter().map(|f| f.id.as_ref()).collect();
    assert_eq!(ids, ["conntrack_table_full"]);
}

#[test]
fn an_nft_drop_rule_is_a_firewall_drop_with_no_conntrack_attribution() {
    require_root!();
    let (drops, ct_lines, pair, _) = scenario("f", 44, FIREWALLED_PORT, 20, None, Setup::TrackB);
    let ct = conntrack_summary(&ct_lines);
    assert_eq!(pair.nft_dropped(), 20);
    assert_eq!(rows_of(&drops, FIREWALL), 20);
    if kernel_has_drop_reasons() {
        let causes = &drops.netfilter_causes;
        assert_eq!(caused(causes, Cause::Firewall), 20, "{causes:?}");
        assert_eq!(caused(causes, Cause::ConntrackIn), 0, "{causes:?}");
    }
    assert_eq!(ct.attribution.table_full, 0);
    assert_eq!(ct.attribution.insert_failed, 0);
    assert!(ct.findings.is_empty(), "{:?}", ct.findings);
}

#[test]
fn an_x_tables_drop_at_nf_hook_slow_is_still_a_firewall_drop() {
    require_root!();
    if !has_xtables() || !kernel_has_drop_reasons() {
        eprintln!("skipped: needs {XT} and drop reasons");
        return;
    }
    let (drops, ct_lines, pair, _) = scenario("x", 47, XT_PORT, 20, None, Setup::XtablesB);
    let ct = conntrack_summary(&ct_lines);
    assert_eq!(xt_dropped(&pair), 20);
    assert_eq!(rows_of(&drops, AT_HOOK), 20, "{drops:?}");
    let cause = if attaches("conntrack_stage") {
        Cause::Firewall
    } else {
        Cause::Unclassified
    };
    let causes = &drops.netfilter_causes;
    assert_eq!(caused(causes, cause), 20, "{causes:?}");
    assert_eq!(ct.attribution.table_full, 0);
    assert_eq!(ct.attribution.insert_failed, 0);
}

#[test]
fn insertion_failures_are_events_or_classified_drops() {
    require_root!();
    let hook = attaches("conntrack_confirm");
    let stages = attaches("conntrack_stage");
    const FLOWS: usize = 20;
    let (drops, ct_lines, pair, refused) =
        scenario("i", 46, CLOSED_PORT, FLOWS, None, Setup::SnatClash);
    let ct = conntrack_summary(&ct_lines);
    let failed = (FLOWS - 1) as u64;
    assert_eq!(ct.attribution.insert_failed, failed, "{ct:?}");
    assert_eq!(refused as u64, failed, "each failure refused its send");
    assert_eq!(pair.udp_no_ports(), 1, "only the first flow got through");
    assert_eq!(
        rows_of(&drops, AT_HOOK),
        failed,
        "each dropped at nf_hook_slow"
    );
    if stages {
        let causes = &drops.netfilter_causes;
        assert_eq!(
            caused(causes, Cause::ConntrackConfirm),
            failed,
            "{causes:?}"
        );
        assert_eq!(
            caused(causes, Cause::ConntrackIn) + caused(causes, Cause::Firewall),
            0
        );
    }
    if !hook {
        return;
    }
    assert_eq!(
        ct.insert_failure_events, failed,
        "one event per failure: {ct:?}"
    );
    assert_eq!(ct.insert_failure_events_lost, 0);
    let events = insert_failures(&ct_lines);
    assert_eq!(events.len() as u64, failed);
    let (ip_a, ip_b): (std::net::IpAddr, std::net::IpAddr) =
        (pair.ip_a.parse().unwrap(), pair.ip_b.parse().unwrap());
    for e in events {
        assert_eq!(e.proto, "udp");
        assert_eq!((e.original.src, e.original.dst), (ip_a, ip_b));
        assert_eq!(e.original.dport, CLOSED_PORT);
        assert_eq!(e.reply.src, ip_b);
        assert_eq!(e.reply.dport, 5000, "the reply goes to the SNAT port");
        assert_eq!(u64::from(e.netns), pair.inode_a());
    }
}

/// Host-wide, as in production: `netdoc drops` and `netdoc conntrack` start with no hint, then
/// the namespaces are made and given their tables, and the incident comes in two rounds of
/// `flows` flows. The first round's `NETFILTER_DROP`s bring the stage sentinels into the
/// namespace (where they attach: both netdocs say so); the second round's come after them.
/// Returns both outputs, the pair, and how many packets netfilter dropped in the watched
/// namespace in the second round (its own counters).
fn host_wide(
    tag: &str,
    subnet: u8,
    port: u16,
    flows: usize,
    max: Option<u32>,
    setup: Setup,
) -> (Vec<Value>, Vec<Value>, Pair, u64) {
    let stages = attaches("conntrack_stage");
    let ct_uses_stages = stages && !attaches("conntrack_confirm");
    let drops = start(&["drops", "--json"]);
    let ct = start(&["conntrack", "--json"]);
    let pair = Pair::new(tag, subnet);
    let watched = setup_rules(&pair, port, setup);
    // For SNAT, the first flow is the one every later one clashes with.
    let first = if let Setup::SnatClash = setup {
        port
    } else {
        CLOSED_PORT
    };
    assert_eq!(pair.send_flows(first, 1), 0);
    let _max = max.map(|m| Sysctl::set(MAX_PATH, m));
    pair.send_flows(port, flows);
    wait_until_accounted(&pair, 1 + flows as u64);
    if stages {
        let covered = format!("placed in namespace {watched} ");
        drops.wait_for_stderr(&covered);
        if ct_uses_stages {
            ct.wait_for_stderr(&covered);
        }
    }
    let before = netfilter_dropped(&pair, &watched);
    pair.send_flows(port, flows);
    let (drop_lines, ct_lines) = settle(&pair, 1 + 2 * flows as u64, drops, ct);
    let after = netfilter_dropped(&pair, &watched) - before;
    (drop_lines, ct_lines, pair, after)
}

/// Packets netfilter dropped in namespace `ns` of the pair: conntrack's and b's x_tables rule's.
fn netfilter_dropped(pair: &Pair, ns: &str) -> u64 {
    let rules = if ns == pair.b { xt_dropped(pair) } else { 0 };
    conntrack_drops(ns) + rules
}

/// Adds a setup's rules; returns the namespace they are in.
fn setup_rules(pair: &Pair, port: u16, setup: Setup) -> String {
    let snat = format!(
        "add rule ip netdoc_nat post udp dport {port} snat to {}:5000",
        pair.ip_a
    );
    let (watched, commands): (&str, Vec<&str>) = match setup {
        Setup::TrackB | Setup::XtablesB => (
            &pair.b,
            vec![
                "add chain inet netdoc_test pre { type filter hook prerouting priority 0; }",
                "add rule inet netdoc_test pre ct state new counter",
            ],
        ),
        Setup::SnatClash => (
            &pair.a,
            vec![
                "add table ip netdoc_nat",
                "add chain ip netdoc_nat post { type nat hook postrouting priority 100; }",
                &snat,
            ],
        ),
    };
    for command in commands {
        run("ip", &["netns", "exec", watched, "nft", command]);
    }
    if let Setup::XtablesB = setup {
        let port = XT_PORT.to_string();
        run(
            "ip",
            &[
                "netns", "exec", &pair.b, XT, "-w", "-A", "INPUT", "-p", "udp", "--dport", &port,
                "-j", "DROP",
            ],
        );
    }
    watched.to_string()
}

/// `NETFILTER_DROP` events in namespace `inode`, per cause (`none` when uncaused).
fn causes_in(lines: &[Value], inode: u64) -> std::collections::BTreeMap<Option<Cause>, u64> {
    let mut out = std::collections::BTreeMap::new();
    let drops = lines.iter().filter_map(|l| match as_output(l) {
        Output::Drop(d) => Some(d),
        _ => None,
    });
    for d in
        drops.filter(|d: &NamedDrop| u64::from(d.netns) == inode && d.reason == "NETFILTER_DROP")
    {
        *out.entry(d.cause).or_default() += 1;
    }
    out
}

/// The conntrack summary's entry for namespace `inode`.
fn conntrack_of(summary: &ConntrackSummary, inode: u64) -> NamespaceConntrack {
    summary
        .namespaces
        .iter()
        .find(|n| u64::from(n.netns.inode) == inode)
        .unwrap_or_else(|| panic!("no entry for namespace {inode}: {summary:?}"))
        .clone()
}

/// The causes of one namespace's `NETFILTER_DROP`s where the sentinels are placed on demand:
/// only `cause` or unclassified, as many as netfilter counted (`total`), and at least every one
/// after the sentinels were placed (`after`) of `cause`.
fn assert_caused_from_placement(
    causes: &std::collections::BTreeMap<Option<Cause>, u64>,
    cause: Cause,
    total: u64,
    after: u64,
) {
    let of = |c| causes.get(&Some(c)).copied().unwrap_or(0);
    let (told, before) = (of(cause), of(Cause::Unclassified));
    assert_eq!(told + before, total, "{causes:?}");
    assert!(
        told >= after,
        "every drop after the placement is told: {causes:?}"
    );
    assert!(
        before > 0,
        "the first one came before any sentinel: {causes:?}"
    );
}

#[test]
fn host_wide_a_full_table_in_a_new_namespace_is_conntrack_in_there() {
    require_root!();
    let (drops, ct_lines, pair, after) =
        host_wide("H", 48, CLOSED_PORT, 40, Some(8), Setup::TrackB);
    let ct = conntrack_summary(&ct_lines);
    let b = pair.inode_b();
    let there = conntrack_of(&ct, b);
    assert_eq!(there.netns.name, pair.b);
    let table_full = there.attribution.table_full;
    assert!(after > 0, "the table was still full: {there:?}");
    assert_eq!(there.attribution.insert_failed, 0);
    if !kernel_has_drop_reasons() {
        return;
    }
    if attaches("conntrack_stage") {
        let causes = causes_in(&drops, b);
        assert_caused_from_placement(&causes, Cause::ConntrackIn, table_full, after);
        if !attaches("conntrack_confirm") {
            let causes = there
                .netfilter_causes
                .iter()
                .map(|(c, n)| (Some(*c), *n))
                .collect();
            assert_caused_from_placement(&causes, Cause::ConntrackIn, table_full, after);
        }
    }
    let findings = &ct.findings;
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].id, "conntrack_table_full");
    assert_eq!(findings[0].scope.kind, ScopeKind::Namespace);
    assert_eq!(findings[0].scope.name, pair.b);
}

#[test]
fn host_wide_snat_clashes_in_a_new_namespace_are_conntrack_confirm_there() {
    require_root!();
    const FLOWS: usize = 20;
    let (drops, ct_lines, pair, after) =
        host_wide("S", 49, CLOSED_PORT, FLOWS, None, Setup::SnatClash);
    let a = pair.inode_a();
    let there = conntrack_of(&conntrack_summary(&ct_lines), a);
    let failed = 2 * FLOWS as u64;
    assert_eq!(there.attribution.insert_failed, failed, "{there:?}");
    assert_eq!(after, FLOWS as u64, "each flow of the second round clashed");
    if kernel_has_drop_reasons() && attaches("conntrack_stage") {
        let causes = causes_in(&drops, a);
        assert_caused_from_placement(&causes, Cause::ConntrackConfirm, failed, after);
    }
    let events = insert_failures(&ct_lines);
    if attaches("conntrack_confirm") {
        assert_eq!(events.len() as u64, failed);
        assert!(
            events
                .iter()
                .all(|e| e.netns_name.as_ref() == Some(&pair.a))
        );
    }
}

#[test]
fn host_wide_an_x_tables_drop_in_a_new_namespace_is_a_firewall_drop() {
    require_root!();
    if !has_xtables() || !kernel_has_drop_reasons() || !attaches("conntrack_stage") {
        eprintln!("skipped: needs {XT}, drop reasons and netfilter links");
        return;
    }
    let (drops, ct_lines, pair, after) = host_wide("X", 50, XT_PORT, 20, None, Setup::XtablesB);
    assert_eq!(xt_dropped(&pair), 40);
    assert_eq!(after, 20);
    let causes = causes_in(&drops, pair.inode_b());
    assert_caused_from_placement(&causes, Cause::Firewall, 40, after);
    let there = conntrack_of(&conntrack_summary(&ct_lines), pair.inode_b());
    assert_eq!(there.attribution.table_full, 0);
    assert_eq!(there.attribution.insert_failed, 0);
}

/// Host-wide sentinels leave a namespace quiet for `--sentinels-quiet` (their marks cleared:
/// none may describe a later drop) and come back with its next netfilter drops.
#[test]
fn host_wide_sentinels_leave_a_quiet_namespace_and_come_back() {
    require_root!();
    if !kernel_has_drop_reasons() || !attaches("conntrack_stage") {
        eprintln!("skipped: needs drop reasons and netfilter links");
        return;
    }
    const FLOWS: usize = 5;
    let drops = start(&["drops", "--json", "--sentinels-quiet", "2s"]);
    let pid = drops.child.id();
    let pair = Pair::new("V", 52);
    let watched = setup_rules(&pair, CLOSED_PORT, Setup::SnatClash);
    assert_eq!(pair.send_flows(CLOSED_PORT, 1), 0);
    let (placed, withdrawn) = (
        format!("placed in namespace {watched} "),
        format!("withdrawn from namespace {watched}:"),
    );
    for round in 0..2 {
        assert_eq!(pair.send_flows(CLOSED_PORT, FLOWS), FLOWS, "round {round}");
        drops.wait_for_stderr(&placed);
        drops.wait_for_stderr(&withdrawn);
        assert_eq!(netfilter_links(pid), 0, "round {round}: every link closed");
    }
    assert_eq!(pair.send_flows(CLOSED_PORT, 1), 1);
    drops.wait_for_stderr(&placed);
    assert_eq!(pair.send_flows(CLOSED_PORT, FLOWS), FLOWS);
    wait_until_accounted(&pair, 1 + 3 * FLOWS as u64 + 1);
    let (status, lines) = drops.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();
    let causes = causes_in(&lines, pair.inode_a());
    let failed = (2 * FLOWS + 1 + FLOWS) as u64;
    assert_caused_from_placement(&causes, Cause::ConntrackConfirm, failed, FLOWS as u64);
}
