//! Kernel integration tests of the conntrack evidence: a full conntrack table (a tiny
//! `nf_conntrack_max`, restored afterwards) versus an nft drop rule. Both show as
//! `NETFILTER_DROP`; the conntrack counters netdoc reads in the namespace tell them apart.
use serde_json::Value;

mod common;
use common::*;

const MAX_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Lowers the global `nf_conntrack_max` (read-only inside child namespaces) until dropped.
struct ConntrackMax(String);

impl ConntrackMax {
    fn set(max: u32) -> Self {
        let old = std::fs::read_to_string(MAX_PATH).expect("nf_conntrack loaded");
        std::fs::write(MAX_PATH, max.to_string()).unwrap();
        ConntrackMax(old.trim().to_string())
    }
}

impl Drop for ConntrackMax {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_PATH, &self.0);
    }
}

/// Makes conntrack track namespace b (an nft rule using `ct`), then sends one datagram from each
/// of `flows` source ports to `port`, and returns netdoc drops' and netdoc conntrack's summaries.
fn scenario(
    tag: &str,
    subnet: u8,
    port: u16,
    flows: usize,
    max: Option<u32>,
) -> (Value, Value, Pair) {
    let pair = Pair::new(tag, subnet);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            "add chain inet netdoc_test pre { type filter hook prerouting priority 0; }",
        ],
    );
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            "add rule inet netdoc_test pre ct state new counter",
        ],
    );
    let _max = max.map(ConntrackMax::set);
    let drops = start(&["drops", "--json", "--counts-only", "--netns", &pair.b]);
    let ct = start(&["conntrack", "--json", "--netns", &pair.b]);
    for _ in 0..flows {
        pair.send(port, 1); // a new socket, so a new source port and a new flow each time
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while drops_seen(&pair) < flows as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "not every datagram was accounted for"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let (s1, ct_lines) = ct.stop(libc::SIGINT);
    let (s2, drop_lines) = drops.stop(libc::SIGINT);
    assert!(s1.success() && s2.success());
    assert_nothing_left();
    (
        summary(&drop_lines).clone(),
        ct_lines.last().unwrap().clone(),
        pair,
    )
}

/// Datagrams b's kernel accounted for: UDP NoPorts, nft drops and conntrack drops.
fn drops_seen(pair: &Pair) -> u64 {
    let stat = run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "cat",
            "/proc/net/stat/nf_conntrack",
        ],
    );
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = header.iter().position(|h| *h == "drop").unwrap();
    let ct_drops: u64 = lines
        .map(|l| u64::from_str_radix(l.split_whitespace().nth(col).unwrap(), 16).unwrap())
        .sum();
    pair.udp_no_ports() + pair.nft_dropped() + ct_drops
}

/// Conntrack and x_tables drops: NETFILTER_DROP freed in nf_hook_slow.
const AT_HOOK: Kind = Kind {
    reason: "NETFILTER_DROP",
    functions: &["nf_hook_slow"],
};

fn location_count(summary: &Value, kind: Kind) -> u64 {
    summary["locations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| is_kind(r, kind))
        .map(|r| r["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn a_full_conntrack_table_is_told_apart_from_a_firewall_rule() {
    require_root!();
    let (drops, ct, _pair) = scenario("t", 43, CLOSED_PORT, 40, Some(8));
    let at_hook = location_count(&drops, AT_HOOK);
    let table_full = ct["attribution"]["table_full"].as_u64().unwrap();
    assert!(at_hook > 0, "the table filled up: {drops}");
    assert_eq!(
        table_full, at_hook,
        "every NETFILTER_DROP at nf_hook_slow is conntrack table full"
    );
    assert_eq!(ct["attribution"]["insert_failed"], 0);
    assert_eq!(count(&drops, NO_SOCKET) + at_hook, 40);
    let ids: Vec<&str> = ct["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["conntrack_table_full"]);
}

#[test]
fn an_nft_drop_rule_is_a_firewall_drop_with_no_conntrack_attribution() {
    require_root!();
    let (drops, ct, pair) = scenario("f", 44, FIREWALLED_PORT, 20, None);
    assert_eq!(pair.nft_dropped(), 20);
    assert_eq!(location_count(&drops, FIREWALL), 20);
    assert_eq!(ct["attribution"]["table_full"], 0);
    assert_eq!(ct["attribution"]["insert_failed"], 0);
    assert!(ct["findings"].as_array().unwrap().is_empty());
}
