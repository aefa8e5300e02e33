//! Pure model of what `netdoc drops` shows: named events, per-(reason, location) rows, summary.
use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use netdoc_common::{DropEvent, DropKey, REASON_UNAVAILABLE};
use serde::{Deserialize, Serialize};

use super::stacks::StackCount;
use crate::counted::NamespaceCounted;
use crate::facts::cgroup::{Container, Pod};
use crate::model::{addr::proto_name, cause::Cause, names::Namer, stats::KernelStats};
use crate::namespaces::GoneNetns;
use crate::planner::ProbeStatus;

/// One drop as printed by `--json` (`"type": "drop"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedDrop {
    pub ts_ns: u64,
    pub cpu: u32,
    /// Whether the drop happened inside the NET_RX softirq; null when not tracked.
    pub in_net_rx: Option<bool>,
    pub reason: String,
    pub reason_code: Option<u32>,
    /// For `NETFILTER_DROP`: conntrack confirm, conntrack in, firewall, or unclassified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// For a `NETFILTER_DROP` the stage sentinels saw: the netfilter hook it happened at
    /// (`prerouting`, `input`, `forward`, `output`, `postrouting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    pub location: String,
    pub location_addr: String,
    /// The namespace's inode (0: unknown).
    pub netns: u32,
    /// Its cookie, never reused during a boot; null before 5.14 or when unknown.
    pub netns_cookie: Option<u64>,
    /// `host`, the `ip netns` name, `pod NAMESPACE/NAME`, `RUNTIME:ID`, or `COMM[PID]`.
    pub netns_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    pub ifindex: u32,
    pub dev: Option<String>,
    pub family: Option<Cow<'static, str>>,
    pub proto: Option<String>,
    pub saddr: Option<String>,
    pub daddr: Option<String>,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// A TCP segment's flags, `SYN`, `ACK|FIN`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_flags: Option<String>,
    pub len: u32,
    /// `--stack`: the kernel stack from the function that dropped it outwards (`func+0xoff`);
    /// empty when it could not be taken (counted in the summary's `stacks_missing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Vec<String>>,
}

impl NamedDrop {
    pub fn new(ev: &DropEvent, namer: &mut impl Namer) -> Self {
        let family = match ev.family {
            2 => Some("ipv4"),
            10 => Some("ipv6"),
            _ => None,
        };
        let addr = |a: &[u8; 16]| -> Option<String> {
            match ev.family {
                2 => Some(Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()),
                10 => Some(Ipv6Addr::from(*a).to_string()),
                _ => None,
            }
        };
        let has_ports = family.is_some() && matches!(ev.proto, 6 | 17 | 33 | 132 | 136);
        let reason = namer.reasons().name(ev.reason);
        let location = namer.location(ev.location);
        let ns = namer.netns(ev.netns, ev.netns_cookie, ev.ts_ns);
        let cause = namer.cause(ev.reason, ev.location, ev.nf_stage);
        Self {
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            in_net_rx: namer
                .net_rx_known()
                .then_some(ev.flags & netdoc_common::context::IN_NET_RX != 0),
            cause,
            hook: cause
                .and(crate::model::cause::hook_name(ev.nf_stage))
                .map(String::from),
            reason,
            reason_code: (ev.reason != REASON_UNAVAILABLE).then_some(ev.reason),
            location,
            location_addr: format!("{:#x}", ev.location),
            netns: ev.netns,
            netns_cookie: (ev.netns_cookie != 0)
                .then_some(ev.netns_cookie)
                .or(ns.as_ref().and_then(|n| n.cookie)),
            netns_name: ns.as_ref().map(|n| n.name.clone()),
            container: ns.as_ref().and_then(|n| n.container.clone()),
            pod: ns.and_then(|n| n.pod),
            ifindex: ev.ifindex,
            dev: namer.device(ev.netns, ev.netns_cookie, ev.ifindex),
            family: family.map(Into::into),
            proto: family.map(|_| proto_name(ev.proto)),
            saddr: addr(&ev.saddr),
            daddr: addr(&ev.daddr),
            sport: has_ports.then_some(ev.sport),
            dport: has_ports.then_some(ev.dport),
            tcp_flags: (family.is_some() && ev.proto == 6).then(|| tcp_flags(ev.tcp_flags)),
            len: ev.len,
            stack: None,
        }
    }

    /// A TCP segment that opens a connection: SYN without ACK.
    pub fn opens_a_connection(&self) -> bool {
        self.tcp_flags.as_deref().is_some_and(|f| {
            let mut flags = f.split('|');
            flags.clone().any(|x| x == "SYN") && !flags.any(|x| x == "ACK")
        })
    }

    /// `udp 10.0.0.1:5000 > 10.0.0.2:9 dev veth1 netns blue`
    pub fn flow(&self) -> String {
        let mut s = String::new();
        if let (Some(p), Some(sa), Some(da)) = (&self.proto, &self.saddr, &self.daddr) {
            let ep = |a: &String, port: Option<u16>| match (port, a.parse::<IpAddr>()) {
                (Some(port), Ok(IpAddr::V6(_))) => format!("[{a}]:{port}"),
                (Some(port), _) => format!("{a}:{port}"),
                (None, _) => a.clone(),
            };
            s = format!("{p} {} > {}", ep(sa, self.sport), ep(da, self.dport));
        }
        if let Some(d) = &self.dev {
            s = format!("{s} dev {d}");
        }
        match &self.netns_name {
            Some(n) => s = format!("{s} netns {n}"),
            None if self.netns != 0 => s = format!("{s} netns {}", self.netns),
            None => {}
        }
        s.trim().to_string()
    }
}

/// The names of the flags set in a TCP header's flags byte, as tcpdump spells them, `|`-joined.
fn tcp_flags(bits: u8) -> String {
    const NAMES: [&str; 8] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"];
    let set: Vec<&str> = (0..8)
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| NAMES[i])
        .collect();
    match set.is_empty() {
        true => "none".into(),
        false => set.join("|"),
    }
}

/// A (reason, cause, location) bucket from the in-kernel aggregation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub reason: String,
    pub reason_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    pub location: String,
    pub count: u64,
    /// Drops per second over the last interval.
    pub rate: f64,
    /// Drops per CPU, CPUs with none left out.
    #[serde(deserialize_with = "crate::model::numbered::keys")]
    pub cpus: BTreeMap<u32, u64>,
    pub last_flow: Option<String>,
}

/// Per-CPU counts of one aggregation key, as read from the kernel map.
pub type KernelCounts = Vec<(DropKey, Vec<u64>)>;

/// Rows sorted by count, from the kernel counts, the previous interval's totals and the last
/// flow seen per bucket (streaming only).
pub fn rows(
    counts: &KernelCounts,
    previous: &HashMap<DropKey, u64>,
    interval_s: f64,
    last_flows: &HashMap<DropKey, String>,
    namer: &mut impl Namer,
) -> Vec<Row> {
    // Stages that name the same cause share a row.
    let mut merged: BTreeMap<(String, Option<Cause>, String), Row> = BTreeMap::new();
    for (key, per_cpu) in counts {
        let count: u64 = per_cpu.iter().sum();
        let fresh = count.saturating_sub(previous.get(key).copied().unwrap_or(0));
        let reason = namer.reasons().name(key.reason);
        let location = namer.location(key.location);
        let cause = namer.cause(key.reason, key.location, key.nf_stage);
        let row = merged
            .entry((reason.clone(), cause, location.clone()))
            .or_insert_with(|| Row {
                reason,
                reason_code: (key.reason != REASON_UNAVAILABLE).then_some(key.reason),
                cause,
                location,
                count: 0,
                rate: 0.0,
                cpus: BTreeMap::new(),
                last_flow: None,
            });
        row.count += count;
        if interval_s > 0.0 {
            row.rate += fresh as f64 / interval_s;
        }
        for (cpu, n) in per_cpu.iter().enumerate().filter(|(_, n)| **n > 0) {
            *row.cpus.entry(cpu as u32).or_insert(0) += n;
        }
        if let Some(flow) = last_flows.get(key) {
            row.last_flow = Some(flow.clone());
        }
    }
    let mut rows: Vec<Row> = merged.into_values().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    rows
}

/// The final `"type": "summary"` object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub schema_version: u32,
    pub hook: String,
    pub reason_names: Cow<'static, str>,
    pub duration_s: f64,
    pub streaming: bool,
    /// Drops per reason name.
    pub counts: BTreeMap<String, u64>,
    pub total: u64,
    /// Every `kfree_skb` the probe saw, before filters.
    pub seen: u64,
    /// Drops that passed the filters: `delivered + lost + sampled` equals this when streaming.
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Drops counted but not streamed: over a CPU's budget of records per second.
    #[serde(default)]
    pub sampled: u64,
    /// `sampled` per reason name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sampled_by_reason: BTreeMap<String, u64>,
    /// The per-CPU budget of streamed records per second; 0: none.
    #[serde(default)]
    pub max_events_per_sec: u64,
    pub unknown_records: u64,
    /// `--stack`: delivered records whose stack could not be taken; null without `--stack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stacks_missing: Option<u64>,
    /// `--stack`: the stacks most delivered drops took, most first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stacks: Vec<StackCount>,
    pub aggregation_overflow: u64,
    /// Drops inside the NET_RX softirq; null when not tracked.
    pub in_net_rx: Option<u64>,
    /// `NETFILTER_DROP`s per cause.
    pub netfilter_causes: BTreeMap<Cause, u64>,
    /// How causes were told apart: the sentinels attached, or why not.
    pub netfilter_stages: String,
    pub locations: Vec<Row>,
    /// Delivered drops per namespace, busiest first (empty with `--counts-only`).
    #[serde(default)]
    pub namespaces: Vec<NetnsDrops>,
    /// The latest namespaces that went away during the run, and how many went before them.
    #[serde(default)]
    pub namespaces_gone: Vec<GoneNetns>,
    #[serde(default)]
    pub namespaces_gone_earlier: u64,
    /// Drops the kernel counted without freeing them through `kfree_skb` (listen overflows,
    /// full socket buffers), per namespace, with the sockets behind them.
    #[serde(default)]
    pub counted: Vec<NamespaceCounted>,
    /// Every probe of the run: its hook, or why it is unavailable.
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
}

/// The drops of one namespace, from the delivered events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetnsDrops {
    pub netns: u32,
    pub netns_cookie: Option<u64>,
    pub netns_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    pub drops: u64,
    pub reasons: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub netfilter_causes: BTreeMap<Cause, u64>,
}

/// Delivered drops counted per namespace (by inode and cookie: inodes are reused).
#[derive(Debug, Default)]
pub struct PerNetns(BTreeMap<(u32, Option<u64>), NetnsDrops>);

impl PerNetns {
    pub fn add(&mut self, d: &NamedDrop) {
        let ns = self
            .0
            .entry((d.netns, d.netns_cookie))
            .or_insert_with(|| NetnsDrops {
                netns: d.netns,
                netns_cookie: d.netns_cookie,
                netns_name: d.netns_name.clone(),
                container: d.container.clone(),
                pod: d.pod.clone(),
                ..NetnsDrops::default()
            });
        ns.drops += 1;
        *ns.reasons.entry(d.reason.clone()).or_default() += 1;
        if let Some(c) = d.cause {
            *ns.netfilter_causes.entry(c).or_default() += 1;
        }
        // A namespace's first events may come before its container or pod was found, which
        // renames it.
        let named_later = (ns.container.is_none() && d.container.is_some())
            || (ns.pod.is_none() && d.pod.is_some());
        if ns.netns_name.is_none() || named_later {
            ns.netns_name = d.netns_name.clone();
            ns.container = d.container.clone();
            ns.pod = d.pod.clone();
        }
    }

    /// Busiest first.
    pub fn ranked(&self) -> Vec<NetnsDrops> {
        let mut all: Vec<NetnsDrops> = self.0.values().cloned().collect();
        all.sort_by_key(|n| std::cmp::Reverse(n.drops));
        all
    }
}

pub struct SummaryInput<'a> {
    pub hook: String,
    pub reason_names: &'static str,
    pub duration_s: f64,
    pub streaming: bool,
    pub stats: KernelStats,
    pub delivered: u64,
    /// Sampled-out drops per reason name.
    pub sampled_by_reason: BTreeMap<String, u64>,
    pub max_events_per_sec: u64,
    pub unknown_records: u64,
    pub stacks_missing: Option<u64>,
    pub stacks: Vec<StackCount>,
    pub in_net_rx: Option<u64>,
    pub netfilter_stages: String,
    pub rows: &'a [Row],
    pub namespaces: Vec<NetnsDrops>,
    pub namespaces_gone: (Vec<GoneNetns>, u64),
    pub counted: Vec<NamespaceCounted>,
    pub probes: Vec<ProbeStatus>,
}

pub fn summary(input: SummaryInput<'_>) -> Summary {
    let mut counts = BTreeMap::new();
    let mut netfilter_causes = BTreeMap::new();
    for r in input.rows {
        *counts.entry(r.reason.clone()).or_insert(0) += r.count;
        if let Some(c) = r.cause {
            *netfilter_causes.entry(c).or_insert(0) += r.count;
        }
    }
    Summary {
        schema_version: crate::output::SCHEMA_VERSION,
        hook: input.hook,
        reason_names: input.reason_names.into(),
        duration_s: input.duration_s,
        streaming: input.streaming,
        total: counts.values().sum(),
        counts,
        seen: input.stats.seen,
        matched: input.stats.matched,
        delivered: input.delivered,
        lost: input.stats.lost,
        sampled: input.stats.sampled,
        sampled_by_reason: input.sampled_by_reason,
        max_events_per_sec: input.max_events_per_sec,
        unknown_records: input.unknown_records,
        stacks_missing: input.stacks_missing,
        stacks: input.stacks,
        aggregation_overflow: input.stats.aggregation_overflow,
        in_net_rx: input.in_net_rx,
        netfilter_causes,
        netfilter_stages: input.netfilter_stages,
        locations: input.rows.to_vec(),
        namespaces: input.namespaces,
        namespaces_gone: input.namespaces_gone.0,
        namespaces_gone_earlier: input.namespaces_gone.1,
        counted: input.counted,
        probes: input.probes,
    }
}

#[cfg(test)]
mod tests {
    use netdoc_common::EventHeader;

    use super::*;
    use crate::{
        facts::tracefs::fixture,
        model::{cause::Coverage, reasons::DropReasons},
        namespaces::{NetnsKind, NetnsRef},
        output::{Output, Summary as OutputSummary},
    };

    struct FakeNamer(DropReasons);

    impl Namer for FakeNamer {
        fn reasons(&self) -> &DropReasons {
            &self.0
        }
        fn net_rx_known(&self) -> bool {
            true
        }
        fn coverage(&self) -> Coverage {
            Coverage::Sentinels
        }
        fn location(&mut self, addr: u64) -> String {
            format!("fn_{addr:x}+0x4")
        }
        fn netns(&mut self, inode: u32, cookie: u64, _ts_ns: u64) -> Option<NetnsRef> {
            (inode == 42).then(|| NetnsRef {
                inode,
                cookie: Some(cookie),
                name: "blue".into(),
                kind: NetnsKind::IpNetns,
                container: None,
                pod: Some(Pod {
                    uid: "u1".into(),
                    namespace: None,
                    name: None,
                }),
            })
        }
        fn device(&mut self, _netns: u32, _cookie: u64, ifindex: u32) -> Option<String> {
            (ifindex == 7).then(|| "veth-b".to_string())
        }
        fn freed_by_nftables(&mut self, _addr: u64) -> bool {
            false
        }
    }

    fn namer() -> FakeNamer {
        FakeNamer(DropReasons::from_format(&fixture("kfree_skb-6.18.format")).unwrap())
    }

    fn udp_drop() -> DropEvent {
        let mut ev = DropEvent {
            header: EventHeader::default(),
            ts_ns: 123,
            cpu: 1,
            reason: 3,
            location: 0xabc,
            netns: 42,
            netns_cookie: 4096,
            ifindex: 7,
            len: 38,
            family: 2,
            proto: 17,
            sport: 40000,
            dport: 9,
            eth_proto: 0x0800,
            flags: netdoc_common::context::IN_NET_RX,
            ..Default::default()
        };
        ev.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        ev.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        ev
    }

    #[test]
    fn a_tcp_drop_names_its_flags_and_whether_it_opens_a_connection() {
        let segment = |flags: u8| {
            let mut ev = udp_drop();
            ev.proto = 6;
            ev.tcp_flags = flags;
            NamedDrop::new(&ev, &mut namer())
        };
        let syn = segment(0x02);
        assert_eq!(syn.tcp_flags.as_deref(), Some("SYN"));
        assert!(syn.opens_a_connection());
        let late = segment(0x11);
        assert_eq!(late.tcp_flags.as_deref(), Some("FIN|ACK"));
        assert!(!late.opens_a_connection());
        assert!(!segment(0x12).opens_a_connection(), "a SYN-ACK answers one");
        let datagram = NamedDrop::new(&udp_drop(), &mut namer());
        assert_eq!(datagram.tcp_flags, None);
        assert!(!datagram.opens_a_connection());
    }

    #[test]
    fn event_json_carries_the_documented_fields() {
        let d = NamedDrop::new(&udp_drop(), &mut namer());
        let v: serde_json::Value = serde_json::to_value(Output::Drop(d.clone())).unwrap();
        for key in [
            "type",
            "ts_ns",
            "cpu",
            "reason",
            "reason_code",
            "location",
            "netns",
            "ifindex",
            "dev",
            "family",
            "proto",
            "saddr",
            "daddr",
            "sport",
            "dport",
            "len",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["type"], "drop");
        assert_eq!(v["reason"], "NO_SOCKET");
        assert_eq!(v["reason_code"], 3);
        assert_eq!(v["location"], "fn_abc+0x4");
        assert_eq!(v["netns_name"], "blue");
        assert_eq!(v["netns_cookie"], 4096);
        assert_eq!(v["pod"]["uid"], "u1");
        assert!(v.get("container").is_none(), "absent when none");
        assert_eq!(v["dev"], "veth-b");
        assert_eq!(v["family"], "ipv4");
        assert_eq!(v["proto"], "udp");
        assert_eq!(v["saddr"], "10.0.0.1");
        assert_eq!(v["dport"], 9);
        assert_eq!(v["in_net_rx"], true);
        assert_eq!(
            d.flow(),
            "udp 10.0.0.1:40000 > 10.0.0.2:9 dev veth-b netns blue"
        );
    }

    #[test]
    fn non_ip_and_ipv6_drops() {
        let mut ev = udp_drop();
        ev.family = 0;
        ev.reason = REASON_UNAVAILABLE;
        let d = NamedDrop::new(&ev, &mut namer());
        assert_eq!(
            (d.saddr, d.sport, d.proto, d.reason_code),
            (None, None, None, None)
        );
        assert_eq!(d.reason, "UNKNOWN");
        let mut ev = udp_drop();
        ev.family = 10;
        ev.proto = 6;
        ev.saddr = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let d = NamedDrop::new(&ev, &mut namer());
        assert!(
            d.flow().starts_with("tcp [fd00::1]:40000 > [fd00::2]:9"),
            "{}",
            d.flow()
        );
    }

    #[test]
    fn rows_sum_cpus_rate_and_summary_counts() {
        let key = |reason, location| DropKey {
            reason,
            location,
            ..DropKey::default()
        };
        let counts: KernelCounts = vec![
            (key(3, 0x10), vec![5, 0]),
            (key(12, 0x20), vec![2, 8]),
            (key(3, 0x30), vec![0, 1]),
        ];
        let previous = HashMap::from([(key(12, 0x20), 4)]);
        let flows = HashMap::from([(key(3, 0x10), "udp a > b".to_string())]);
        let rows = rows(&counts, &previous, 2.0, &flows, &mut namer());
        assert_eq!(rows[0].reason, "NETFILTER_DROP");
        assert_eq!(rows[0].count, 10);
        assert_eq!(rows[0].rate, 3.0);
        assert_eq!(rows[0].cpus, BTreeMap::from([(0, 2), (1, 8)]));
        assert_eq!(rows[1].last_flow.as_deref(), Some("udp a > b"));
        assert_eq!(rows[1].cpus, BTreeMap::from([(0, 5)]));
        let s = summary(SummaryInput {
            hook: "tp_btf/kfree_skb".into(),
            reason_names: "test",
            duration_s: 1.0,
            streaming: true,
            stats: KernelStats {
                seen: 20,
                matched: 16,
                emitted: 12,
                lost: 1,
                sampled: 3,
                aggregation_overflow: 0,
            },
            delivered: 12,
            sampled_by_reason: BTreeMap::from([("NO_SOCKET".into(), 3)]),
            max_events_per_sec: 1000,
            unknown_records: 0,
            stacks_missing: None,
            stacks: Vec::new(),
            in_net_rx: Some(3),
            netfilter_stages: "test".into(),
            rows: &rows,
            namespaces: Vec::new(),
            namespaces_gone: (Vec::new(), 0),
            counted: Vec::new(),
            probes: vec![],
        });
        assert_eq!(
            s.counts,
            BTreeMap::from([("NETFILTER_DROP".into(), 10), ("NO_SOCKET".into(), 6)])
        );
        assert_eq!(s.total, 16);
        assert_eq!(s.delivered + s.lost + s.sampled, s.matched);
        let v = serde_json::to_value(Output::Summary(OutputSummary::Drops(s.clone()))).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["command"], "drops");
        assert_eq!(v["lost"], 1);
        assert_eq!(v["sampled_by_reason"]["NO_SOCKET"], 3);
        let text = crate::drops::render::summary(&s);
        assert!(
            text.contains("NETFILTER_DROP") && text.contains("1 lost"),
            "{text}"
        );
        assert!(
            text.contains("sampled: 3 drops counted but not streamed, over 1000 records per second per CPU (NO_SOCKET 3)"),
            "{text}"
        );
    }

    #[test]
    fn netfilter_drops_split_by_cause_and_stages_of_one_cause_share_a_row() {
        use netdoc_common::conntrack::stage as st;
        let key = |nf_stage| DropKey {
            reason: 12, // NETFILTER_DROP in the 6.18 format
            nf_stage,
            location: 0x40,
            ..DropKey::default()
        };
        let counts: KernelCounts = vec![
            (key(st::CONNTRACK_IN), vec![7, 0]),
            (key(st::RULES), vec![0, 2]),
            (key(st::UNSEEN), vec![1, 0]),
            (key(st::NONE), vec![0, 1]),
        ];
        let rows = rows(&counts, &HashMap::new(), 0.0, &HashMap::new(), &mut namer());
        let by_cause: Vec<(Option<Cause>, u64)> = rows.iter().map(|r| (r.cause, r.count)).collect();
        assert_eq!(
            by_cause,
            [
                (Some(Cause::ConntrackIn), 7),
                (Some(Cause::Firewall), 2),
                (Some(Cause::Unclassified), 2)
            ]
        );
        assert_eq!(rows[2].cpus, BTreeMap::from([(0, 1), (1, 1)]));
        let s = summary(SummaryInput {
            hook: "tp_btf/kfree_skb".into(),
            reason_names: "test",
            duration_s: 1.0,
            streaming: false,
            stats: KernelStats::default(),
            delivered: 0,
            sampled_by_reason: BTreeMap::new(),
            max_events_per_sec: 0,
            unknown_records: 0,
            stacks_missing: None,
            stacks: Vec::new(),
            in_net_rx: None,
            netfilter_stages: "22 netfilter links in 1 namespace(s)".into(),
            rows: &rows,
            namespaces: Vec::new(),
            namespaces_gone: (Vec::new(), 0),
            counted: Vec::new(),
            probes: vec![],
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["netfilter_causes"]["conntrack_in"], 7);
        assert_eq!(v["locations"][0]["cause"], "conntrack_in");
        let text = crate::drops::render::summary(&s);
        assert!(
            text.contains("NETFILTER_DROP (conntrack in: table full or invalid)")
                && text.contains("NETFILTER_DROP causes: 7 conntrack in"),
            "{text}"
        );
    }
}
