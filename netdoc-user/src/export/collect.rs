//! One scrape: what the kernel maps and procfs said ([`Reading`]) turned into metric families.
//! Pure: the exporter's state ([`Exporter`]) carries only which namespaces and locations have
//! series of their own.
use std::collections::{BTreeMap, BTreeSet};

use super::{
    exposition::{Family, Kind, Label},
    http::HttpCounts,
    slots::{NamespaceSlots, NetnsSample},
};
use crate::{
    facts::{conntrack::CpuCounters, procnet::Softnet, snmp::Counters},
    model::finding::Finding,
    model::{cause::Cause, stats::KernelStats},
    namespaces::{NetnsKey, NetnsRef},
    planner::ProbeStatus,
    softirq::nicmap::QueueFacts,
};

/// The conntrack columns exported: the ones that count trouble.
pub const CONNTRACK_COLUMNS: [&str; 7] = [
    "insert_failed",
    "drop",
    "early_drop",
    "invalid",
    "clash_resolve",
    "chaintoolong",
    "search_restart",
];

/// Drops of one namespace, reason, cause and freeing function, from the kernel's aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct DropCount {
    pub netns: NetnsKey,
    pub reason: String,
    pub cause: Option<Cause>,
    pub function: String,
    pub count: u64,
    /// The key's last count: its namespace has gone and the key left the kernel's map.
    pub last: bool,
}

/// A namespace's per-CPU conntrack counters and `(nf_conntrack_count, nf_conntrack_max)`.
pub type ConntrackReading = (Vec<CpuCounters>, Option<(u64, u64)>);

/// What procfs says in one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceReading {
    pub netns: NetnsKey,
    /// Its per-CPU conntrack counters and `(count, max)`, when conntrack is in use there.
    pub conntrack: Option<ConntrackReading>,
    /// `Tcp.RetransSegs` and the counters of packets dropped without `kfree_skb`.
    pub counters: Counters,
}

/// One CPU's NET_RX softirq time and runs, from the softirq probes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuNetRx {
    pub cpu: u32,
    pub seconds: f64,
    pub runs: u64,
}

/// One of netdoc's programs, as the kernel accounts for it (`kernel.bpf_stats_enabled`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramRun {
    pub name: String,
    pub seconds: f64,
    pub runs: u64,
}

/// Everything one scrape read.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    pub version: &'static str,
    pub kernel: String,
    /// The namespaces alive now.
    pub live: Vec<NetnsRef>,
    pub drops: Vec<DropCount>,
    pub namespaces: Vec<NamespaceReading>,
    /// Empty when the softirq probes did not attach.
    pub net_rx: Vec<CpuNetRx>,
    pub softnet: Vec<Softnet>,
    pub queues: Vec<QueueFacts>,
    pub probes: Vec<ProbeStatus>,
    pub drop_stats: KernelStats,
    /// Keys in the kernel's drop aggregation.
    pub drop_keys: usize,
    /// None when `kernel.bpf_stats_enabled` is 0.
    pub programs: Option<Vec<ProgramRun>>,
    /// Whether namespaces are told apart by cookie, not by inode alone.
    pub cookies: bool,
    /// What the doctor's rules found over the last complete window, ranked.
    pub findings: Vec<Finding>,
    pub findings_window_s: f64,
    /// How long the previous scrape took.
    pub last_scrape_s: f64,
    /// The HTTP server's connections, and those it closed itself.
    pub http: HttpCounts,
}

/// The exporter's memory between scrapes.
pub struct Exporter {
    namespaces: NamespaceSlots,
    /// Freeing functions with series of their own, and how many were folded.
    functions: BTreeSet<String>,
    max_functions: usize,
    functions_folded: BTreeSet<String>,
    /// Drops by (reason, function) of keys the kernel's map let go: still in the host-wide
    /// counts, which never go down.
    locations_retired: BTreeMap<(String, String), u64>,
}

impl Exporter {
    pub fn new(max_namespaces: usize, max_functions: usize) -> Self {
        Self {
            namespaces: NamespaceSlots::new(max_namespaces),
            functions: BTreeSet::new(),
            max_functions,
            functions_folded: BTreeSet::new(),
            locations_retired: BTreeMap::new(),
        }
    }

    /// The metric families of one scrape.
    pub fn families(&mut self, r: &Reading) -> Vec<Family> {
        // Keys that differ only in what the series do not show (the location, the stage of a
        // cause) are one series.
        let mut drops: BTreeMap<(NetnsKey, Vec<Label>, bool), u64> = BTreeMap::new();
        for d in &r.drops {
            let labels = vec![
                ("reason", d.reason.clone()),
                ("cause", d.cause.map(Cause::name).unwrap_or_default().into()),
            ];
            *drops.entry((d.netns, labels, d.last)).or_default() += d.count;
        }
        let mut per_ns: Vec<NetnsSample> = drops
            .into_iter()
            .map(|((netns, labels, last), n)| NetnsSample {
                outlives: true,
                last,
                ..sample(netns, DROPS, labels, n)
            })
            .collect();
        for n in &r.namespaces {
            if let Some(v) = n.counters.get(RETRANS_SEGS) {
                per_ns.push(sample(n.netns, RETRANSMITS, vec![], *v));
            }
            for (counter, v) in n
                .counters
                .iter()
                .filter(|(c, v)| *c != RETRANS_SEGS && **v > 0)
            {
                per_ns.push(sample(
                    n.netns,
                    COUNTED,
                    vec![("counter", counter.clone())],
                    *v,
                ));
            }
            if let Some((per_cpu, usage)) = &n.conntrack {
                for column in CONNTRACK_COLUMNS {
                    let sum: u64 = per_cpu.iter().filter_map(|c| c.get(column)).sum();
                    per_ns.push(sample(n.netns, CT_STAT, vec![("stat", column.into())], sum));
                }
                if let Some((count, max)) = usage {
                    per_ns.push(sample(n.netns, CT_ENTRIES, vec![], *count));
                    per_ns.push(sample(n.netns, CT_LIMIT, vec![], *max));
                }
            }
        }
        let mut placed = self.namespaces.place(&r.live, per_ns);
        let mut families = Vec::new();
        for (name, kind, help) in PER_NAMESPACE {
            let mut f = Family::new(name, kind, help);
            f.samples = placed.remove(name).unwrap_or_default();
            families.push(f);
        }
        families.push(self.locations(&r.drops));
        families.extend(per_cpu(r));
        families.push(queues(&r.queues));
        families.extend(findings(r));
        families.extend(self.health(r));
        families
    }

    /// Drops per reason and freeing function, host-wide; functions past the cap fold into
    /// `other`.
    fn locations(&mut self, drops: &[DropCount]) -> Family {
        let mut sums = self.locations_retired.clone();
        for d in drops {
            let known = self.functions.contains(&d.function);
            let function = if known || self.functions.len() < self.max_functions {
                self.functions.insert(d.function.clone());
                d.function.clone()
            } else {
                self.functions_folded.insert(d.function.clone());
                "other".into()
            };
            let key = (d.reason.clone(), function);
            if d.last {
                *self.locations_retired.entry(key.clone()).or_default() += d.count;
            }
            *sums.entry(key).or_default() += d.count;
        }
        let mut f = Family::new(
            "netdoc_drop_locations",
            Kind::Counter,
            "Packets dropped through kfree_skb, host-wide, by reason and the kernel function that freed them.",
        );
        for ((reason, function), n) in sums {
            f.push(vec![("reason", reason), ("function", function)], n as f64);
        }
        f
    }

    fn health(&self, r: &Reading) -> Vec<Family> {
        let mut info = Family::new(
            "netdoc_build",
            Kind::Info,
            "netdoc's version and the kernel it runs on.",
        );
        info.push(
            vec![("version", r.version.into()), ("kernel", r.kernel.clone())],
            1.0,
        );
        let mut probes = Family::new(
            "netdoc_probe_attached",
            Kind::Gauge,
            "1 when the probe attached (hook: how), 0 when it could not (netdoc runs degraded without it).",
        );
        for p in &r.probes {
            let attached = p.hook.is_some();
            // The hook without its changing detail (how many sentinel links where): a label
            // value that changes would start a new series.
            let hook = p.hook.as_deref().unwrap_or_default();
            let hook = hook.split_once(" (").map_or(hook, |(h, _)| h);
            probes.push(
                vec![("probe", p.probe.to_string()), ("hook", hook.into())],
                attached as u8 as f64,
            );
        }
        let mut missed = Family::new(
            "netdoc_probe_missed_runs",
            Kind::Counter,
            "Runs the kernel skipped of each attached probe's program (it was already running on that CPU when its event came again): events in no count.",
        );
        for p in r.probes.iter().filter(|p| p.hook.is_some()) {
            missed.push(vec![("probe", p.probe.to_string())], p.missed_runs as f64);
        }
        let mut full = Family::new(
            "netdoc_drop_aggregation_full",
            Kind::Counter,
            "Drops the kernel program matched but could not count by key (its map was full): counted in no drop series.",
        );
        full.push(vec![], r.drop_stats.aggregation_overflow as f64);
        let mut keys = Family::new(
            "netdoc_drop_aggregation_keys",
            Kind::Gauge,
            "Keys (namespace, reason, stage, location) in the kernel's drop aggregation; gone namespaces' keys leave it.",
        );
        keys.push(vec![], r.drop_keys as f64);
        let mut room = Family::new(
            "netdoc_drop_aggregation_keys_limit",
            Kind::Gauge,
            "Keys the kernel's drop aggregation has room for.",
        );
        room.push(vec![], netdoc_common::DROP_COUNT_KEYS as f64);
        let mut cookies = Family::new(
            "netdoc_namespaces_by_cookie",
            Kind::Gauge,
            "1 when namespaces are told apart by cookie; 0 before 5.14, by inode alone: a namespace that reuses a gone one's inode may show some of its counts.",
        );
        cookies.push(vec![], r.cookies as u8 as f64);
        let mut matched = Family::new(
            "netdoc_drop_program_matched",
            Kind::Counter,
            "Drops the kernel program counted, in namespaces gone since (whose series went with them) too.",
        );
        matched.push(vec![], r.drop_stats.matched as f64);
        let (own, folded) = self.namespaces.counts();
        let mut namespaces = Family::new(
            "netdoc_namespaces",
            Kind::Gauge,
            "Network namespaces alive with series of their own (own) and folded into netns=\"other\" (folded).",
        );
        namespaces.push(vec![("state", "own".into())], own as f64);
        namespaces.push(vec![("state", "folded".into())], folded as f64);
        let mut folded_total = Family::new(
            "netdoc_namespaces_folded",
            Kind::Counter,
            "Namespaces ever folded into netns=\"other\" because the cap (--max-namespaces) was reached.",
        );
        folded_total.push(vec![], self.namespaces.folded_total as f64);
        let mut functions_folded = Family::new(
            "netdoc_drop_functions_folded",
            Kind::Gauge,
            "Freeing functions folded into function=\"other\" because the cap was reached.",
        );
        functions_folded.push(vec![], self.functions_folded.len() as f64);
        let mut stats_on = Family::new(
            "netdoc_bpf_stats_enabled",
            Kind::Gauge,
            "1 when kernel.bpf_stats_enabled is set, so netdoc_bpf_program_* are exported.",
        );
        stats_on.push(vec![], r.programs.is_some() as u8 as f64);
        let mut run_time = Family::new(
            "netdoc_bpf_program_run_seconds",
            Kind::Counter,
            "Time the kernel spent in each of netdoc's programs.",
        );
        let mut runs = Family::new(
            "netdoc_bpf_program_runs",
            Kind::Counter,
            "Runs of each of netdoc's programs.",
        );
        for p in r.programs.iter().flatten() {
            run_time.push(vec![("program", p.name.clone())], p.seconds);
            runs.push(vec![("program", p.name.clone())], p.runs as f64);
        }
        let mut scrape = Family::new(
            "netdoc_scrape_duration_seconds",
            Kind::Gauge,
            "How long the previous scrape took to read the kernel and render.",
        );
        scrape.push(vec![], r.last_scrape_s);
        let mut open = Family::new(
            "netdoc_http_connections",
            Kind::Gauge,
            "Connections open to the exporter's HTTP server.",
        );
        open.push(vec![], r.http.open as f64);
        let mut cap = Family::new(
            "netdoc_http_connections_limit",
            Kind::Gauge,
            "Connections the server keeps open at most; at the cap a new one closes the quietest.",
        );
        cap.push(vec![], r.http.limit as f64);
        let mut closed = Family::new(
            "netdoc_http_connections_closed",
            Kind::Counter,
            "Connections the server closed itself: at the cap, a request head too slow or too large, or idle.",
        );
        for (why, n) in &r.http.closed {
            closed.push(vec![("why", why.label().to_string())], *n as f64);
        }
        vec![
            info,
            probes,
            missed,
            full,
            keys,
            room,
            cookies,
            matched,
            namespaces,
            folded_total,
            functions_folded,
            stats_on,
            run_time,
            runs,
            scrape,
            open,
            cap,
            closed,
        ]
    }
}

const DROPS: &str = "netdoc_drops";
const RETRANSMITS: &str = "netdoc_tcp_retransmitted_segments";
const COUNTED: &str = "netdoc_counted_drops";
const CT_STAT: &str = "netdoc_conntrack_stat";
const CT_ENTRIES: &str = "netdoc_conntrack_entries";
const CT_LIMIT: &str = "netdoc_conntrack_entries_limit";
const RETRANS_SEGS: &str = "Tcp.RetransSegs";

/// The families with namespace labels (`netns`, `pod_namespace`, `pod`).
const PER_NAMESPACE: [(&str, Kind, &str); 6] = [
    (
        DROPS,
        Kind::Counter,
        "Packets the kernel dropped through kfree_skb, by namespace, reason (named from the running kernel) and, for NETFILTER_DROP, cause (firewall, conntrack_in, conntrack_confirm, unclassified).",
    ),
    (
        RETRANSMITS,
        Kind::Counter,
        "TCP segments retransmitted in the namespace (Tcp.RetransSegs).",
    ),
    (
        COUNTED,
        Kind::Counter,
        "Packets the kernel dropped and counted without kfree_skb (listen queue overflows, full socket buffers), by counter.",
    ),
    (
        CT_STAT,
        Kind::Counter,
        "Conntrack statistics of the namespace, summed over CPUs (conntrack -S), by column.",
    ),
    (
        CT_ENTRIES,
        Kind::Gauge,
        "Conntrack entries in the namespace's table (nf_conntrack_count).",
    ),
    (
        CT_LIMIT,
        Kind::Gauge,
        "The most entries the conntrack table holds (nf_conntrack_max).",
    ),
];

fn sample(netns: NetnsKey, metric: &'static str, labels: Vec<Label>, v: u64) -> NetnsSample {
    let kind = PER_NAMESPACE
        .iter()
        .find(|(name, ..)| *name == metric)
        .map_or(Kind::Gauge, |(_, kind, _)| *kind);
    NetnsSample {
        netns,
        metric,
        kind,
        labels,
        value: v as f64,
        outlives: false,
        last: false,
    }
}

/// Findings with series of their own (a flow's scope is a label value): the highest ranked.
const MAX_FINDING_SERIES: usize = 50;

fn findings(r: &Reading) -> Vec<Family> {
    let mut active = Family::new(
        "netdoc_findings",
        Kind::Gauge,
        "What netdoc doctor's rules found over the last complete window (1 per finding): id, severity, scope kind and scope.",
    );
    // Findings of one id and scope (netdoc's several blind spots on the host) are one series.
    let mut series: Vec<Vec<Label>> = Vec::new();
    for f in &r.findings {
        let labels = vec![
            ("id", f.id.to_string()),
            ("severity", f.severity.name().into()),
            ("scope_kind", f.scope.kind.name().into()),
            ("scope", f.scope.name.clone()),
        ];
        if !series.contains(&labels) {
            series.push(labels);
        }
    }
    let shown = series.len().min(MAX_FINDING_SERIES);
    for labels in series.drain(..shown) {
        active.push(labels, 1.0);
    }
    let mut unshown = Family::new(
        "netdoc_findings_unshown",
        Kind::Gauge,
        "Findings of the last window past the series cap, ranked below those shown.",
    );
    unshown.push(vec![], series.len() as f64);
    let mut window = Family::new(
        "netdoc_findings_window_seconds",
        Kind::Gauge,
        "How long each window the doctor's rules run over is (--findings-window).",
    );
    window.push(vec![], r.findings_window_s);
    vec![active, unshown, window]
}

fn per_cpu(r: &Reading) -> Vec<Family> {
    let cpu = |c: u32| vec![("cpu", c.to_string())];
    let mut seconds = Family::new(
        "netdoc_net_rx_seconds",
        Kind::Counter,
        "Time each CPU spent in the NET_RX softirq.",
    );
    let mut runs = Family::new(
        "netdoc_net_rx_runs",
        Kind::Counter,
        "NET_RX softirq runs per CPU.",
    );
    for c in &r.net_rx {
        seconds.push(cpu(c.cpu), c.seconds);
        runs.push(cpu(c.cpu), c.runs as f64);
    }
    let mut processed = Family::new(
        "netdoc_softnet_processed",
        Kind::Counter,
        "Packets each CPU's NET_RX processed (/proc/net/softnet_stat).",
    );
    let mut dropped = Family::new(
        "netdoc_softnet_dropped",
        Kind::Counter,
        "Packets dropped because the CPU's backlog was full (net.core.netdev_max_backlog).",
    );
    let mut squeezed = Family::new(
        "netdoc_softnet_time_squeeze",
        Kind::Counter,
        "NET_RX runs that ended with work left (budget or time exhausted).",
    );
    for s in &r.softnet {
        processed.push(cpu(s.cpu), s.processed as f64);
        dropped.push(cpu(s.cpu), s.dropped as f64);
        squeezed.push(cpu(s.cpu), s.time_squeeze as f64);
    }
    vec![seconds, runs, processed, dropped, squeezed]
}

/// Each NIC queue interrupt and the CPUs it is delivered to (effective affinity where the
/// kernel tells it, else the affinity mask).
fn queues(queues: &[QueueFacts]) -> Family {
    let mut f = Family::new(
        "netdoc_nic_queue",
        Kind::Info,
        "A NIC queue's interrupt and a CPU it is delivered to (one series per CPU).",
    );
    for q in queues {
        let cpus = q.effective.as_ref().or(q.affinity.as_ref());
        for cpu in cpus.into_iter().flatten() {
            f.push(
                vec![
                    ("device", q.queue.device.clone()),
                    ("queue", q.queue.index.to_string()),
                    ("kind", format!("{:?}", q.queue.kind).to_lowercase()),
                    ("irq", q.irq.to_string()),
                    ("cpu", cpu.to_string()),
                ],
                1.0,
            );
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::interrupts::{NicQueue, QueueKind};
    use crate::namespaces::NetnsKind;

    fn host() -> NetnsRef {
        NetnsRef {
            inode: 4026531840,
            cookie: Some(1),
            kind: NetnsKind::Host,
            ..NetnsRef::named("host")
        }
    }

    fn reading() -> Reading {
        let pod = NetnsRef {
            inode: 4026532100,
            cookie: Some(77),
            ..NetnsRef::named("blue")
        };
        let key = |n: &NetnsRef| (n.inode, n.cookie);
        let mut ct = CpuCounters::new();
        ct.insert("insert_failed".into(), 18);
        ct.insert("found".into(), 5);
        Reading {
            version: "0.1.0",
            kernel: "6.18.0".into(),
            live: vec![host(), pod.clone()],
            drops: vec![
                DropCount {
                    netns: key(&pod),
                    reason: "NETFILTER_DROP".into(),
                    cause: Some(Cause::ConntrackIn),
                    function: "nf_hook_slow".into(),
                    count: 40,
                    last: false,
                },
                DropCount {
                    netns: key(&pod),
                    reason: "NO_SOCKET".into(),
                    cause: None,
                    function: "__udp4_lib_rcv".into(),
                    count: 7,
                    last: false,
                },
                DropCount {
                    netns: key(&host()),
                    reason: "NO_SOCKET".into(),
                    cause: None,
                    function: "__udp4_lib_rcv".into(),
                    count: 2,
                    last: false,
                },
            ],
            namespaces: vec![NamespaceReading {
                netns: key(&pod),
                conntrack: Some((vec![ct.clone(), ct], Some((64, 64)))),
                counters: [
                    ("Tcp.RetransSegs".to_string(), 3),
                    ("TcpExt.ListenOverflows".to_string(), 0),
                    ("Udp.RcvbufErrors".to_string(), 9),
                ]
                .into(),
            }],
            net_rx: vec![CpuNetRx {
                cpu: 1,
                seconds: 0.5,
                runs: 10,
            }],
            softnet: vec![Softnet {
                cpu: 1,
                processed: 100,
                dropped: 4,
                time_squeeze: 2,
            }],
            queues: vec![QueueFacts {
                irq: 24,
                handler: "virtio0-input.0".into(),
                queue: NicQueue {
                    device: "eth0".into(),
                    kind: QueueKind::Rx,
                    index: 0,
                },
                affinity: Some([0, 1].into()),
                effective: Some([1].into()),
                rps: None,
            }],
            probes: vec![
                ProbeStatus {
                    probe: "drops".into(),
                    hook: Some("tp_btf/kfree_skb".into()),
                    unavailable: None,
                    missed_runs: 2,
                },
                ProbeStatus {
                    probe: "conntrack_stage".into(),
                    hook: Some(
                        "netfilter_link/ipv4+ipv6 (44 netfilter links in 2 namespace(s))".into(),
                    ),
                    unavailable: None,
                    missed_runs: 0,
                },
            ],
            drop_stats: KernelStats {
                matched: 49,
                ..KernelStats::default()
            },
            drop_keys: 3,
            programs: None,
            cookies: true,
            findings: vec![],
            findings_window_s: 300.0,
            last_scrape_s: 0.01,
            http: HttpCounts::default(),
        }
    }

    fn find<'a>(families: &'a [Family], name: &str) -> &'a Family {
        families.iter().find(|f| f.name == name).unwrap()
    }

    fn value(f: &Family, labels: &[(&str, &str)]) -> Option<f64> {
        f.samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(k2, v2)| k2 == k && v2 == v))
            })
            .map(|s| s.value)
    }

    #[test]
    fn drops_carry_namespace_reason_and_cause() {
        let families = Exporter::new(10, 10).families(&reading());
        let drops = find(&families, DROPS);
        assert_eq!(
            value(
                drops,
                &[
                    ("netns", "blue"),
                    ("reason", "NETFILTER_DROP"),
                    ("cause", "conntrack_in")
                ]
            ),
            Some(40.0)
        );
        assert_eq!(
            value(
                drops,
                &[("netns", "blue"), ("reason", "NO_SOCKET"), ("cause", "")]
            ),
            Some(7.0)
        );
        assert_eq!(
            value(drops, &[("netns", "host"), ("reason", "NO_SOCKET")]),
            Some(2.0)
        );
        let locations = find(&families, "netdoc_drop_locations");
        assert_eq!(
            value(
                locations,
                &[("reason", "NO_SOCKET"), ("function", "__udp4_lib_rcv")]
            ),
            Some(9.0),
            "host-wide"
        );
    }

    #[test]
    fn namespace_counters_conntrack_and_cpus() {
        let families = Exporter::new(10, 10).families(&reading());
        let stat = find(&families, CT_STAT);
        assert_eq!(
            value(stat, &[("netns", "blue"), ("stat", "insert_failed")]),
            Some(36.0)
        );
        assert_eq!(
            stat.samples.len(),
            CONNTRACK_COLUMNS.len(),
            "the trouble columns only"
        );
        assert_eq!(
            value(find(&families, CT_ENTRIES), &[("netns", "blue")]),
            Some(64.0)
        );
        assert_eq!(
            value(find(&families, RETRANSMITS), &[("netns", "blue")]),
            Some(3.0)
        );
        let counted = find(&families, COUNTED);
        assert_eq!(counted.samples.len(), 1, "counters at zero make no series");
        assert_eq!(
            value(counted, &[("counter", "Udp.RcvbufErrors")]),
            Some(9.0)
        );
        assert_eq!(
            value(find(&families, "netdoc_net_rx_seconds"), &[("cpu", "1")]),
            Some(0.5)
        );
        assert_eq!(
            value(find(&families, "netdoc_softnet_dropped"), &[("cpu", "1")]),
            Some(4.0)
        );
        let queue = find(&families, "netdoc_nic_queue");
        assert_eq!(queue.samples.len(), 1, "effective affinity wins");
        assert_eq!(
            value(queue, &[("device", "eth0"), ("cpu", "1"), ("irq", "24")]),
            Some(1.0)
        );
    }

    #[test]
    fn functions_past_the_cap_fold_into_other() {
        let mut exporter = Exporter::new(10, 1);
        let families = exporter.families(&reading());
        let locations = find(&families, "netdoc_drop_locations");
        assert_eq!(value(locations, &[("function", "other")]), Some(9.0));
        assert_eq!(
            value(find(&families, "netdoc_drop_functions_folded"), &[]),
            Some(1.0)
        );
    }

    #[test]
    fn health_says_what_attached_and_what_was_folded() {
        let families = Exporter::new(1, 10).families(&reading());
        let probes = find(&families, "netdoc_probe_attached");
        assert_eq!(
            value(probes, &[("probe", "drops"), ("hook", "tp_btf/kfree_skb")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                probes,
                &[
                    ("probe", "conntrack_stage"),
                    ("hook", "netfilter_link/ipv4+ipv6")
                ]
            ),
            Some(1.0),
            "a stable hook label: how many links where is not in it"
        );
        assert_eq!(
            value(
                find(&families, "netdoc_probe_missed_runs"),
                &[("probe", "drops")]
            ),
            Some(2.0),
            "runs the kernel skipped"
        );
        assert_eq!(
            value(find(&families, "netdoc_namespaces"), &[("state", "folded")]),
            Some(1.0)
        );
        let drops = find(&families, DROPS);
        assert_eq!(
            value(drops, &[("netns", "other"), ("reason", "NETFILTER_DROP")]),
            Some(40.0),
            "the second namespace is past a cap of one"
        );
        assert_eq!(
            value(find(&families, "netdoc_bpf_stats_enabled"), &[]),
            Some(0.0)
        );
        assert!(
            find(&families, "netdoc_bpf_program_runs")
                .samples
                .is_empty()
        );
    }

    #[test]
    fn keys_that_differ_in_what_series_do_not_show_are_one_series() {
        let mut r = reading();
        // Before 5.17 every drop is UNKNOWN: a closed port's and a firewall's in one namespace.
        for d in &mut r.drops {
            d.reason = "UNKNOWN".into();
            d.cause = None;
        }
        let families = Exporter::new(10, 10).families(&r);
        let drops = find(&families, DROPS);
        assert_eq!(
            value(drops, &[("netns", "blue"), ("reason", "UNKNOWN")]),
            Some(47.0)
        );
        assert_eq!(drops.samples.len(), 2, "blue's and the host's");
    }

    #[test]
    fn host_wide_locations_keep_what_gone_namespaces_dropped() {
        let mut exporter = Exporter::new(10, 10);
        let mut r = reading();
        exporter.families(&r);
        // blue goes: its keys' last counts come once, then never again.
        r.live.retain(|n| n.name != "blue");
        for d in r.drops.iter_mut().filter(|d| d.function == "nf_hook_slow") {
            d.last = true;
        }
        let firewall = |f: &[Family]| {
            value(
                find(f, "netdoc_drop_locations"),
                &[("function", "nf_hook_slow")],
            )
        };
        assert_eq!(firewall(&exporter.families(&r)), Some(40.0));
        r.drops.retain(|d| !d.last);
        assert_eq!(
            firewall(&exporter.families(&r)),
            Some(40.0),
            "never goes down"
        );
    }

    #[test]
    fn findings_are_series_by_id_severity_and_scope() {
        let mut r = reading();
        let finding = |id: &'static str, ns: &str| Finding {
            explains: Vec::new(),
            id: id.into(),
            severity: crate::model::finding::Severity::Critical,
            confidence: crate::model::finding::Confidence::High,
            title: String::new(),
            scope: crate::model::finding::Scope::new(
                crate::model::finding::ScopeKind::Namespace,
                ns,
            ),
            affected: 1,
            evidence: vec![],
            fix: vec![],
        };
        r.findings = (0..MAX_FINDING_SERIES + 2)
            .map(|i| finding("conntrack_table_full", &format!("ns{i}")))
            .collect();
        let families = Exporter::new(10, 10).families(&r);
        let active = find(&families, "netdoc_findings");
        assert_eq!(
            value(
                active,
                &[
                    ("id", "conntrack_table_full"),
                    ("severity", "critical"),
                    ("scope_kind", "namespace"),
                    ("scope", "ns0")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(active.samples.len(), MAX_FINDING_SERIES);
        assert_eq!(
            value(find(&families, "netdoc_findings_unshown"), &[]),
            Some(2.0)
        );
    }

    #[test]
    fn every_series_is_unique() {
        let mut r = reading();
        let blind = |title: &str| Finding {
            explains: Vec::new(),
            id: crate::doctor::BLIND_SPOT.into(),
            severity: crate::model::finding::Severity::Info,
            confidence: crate::model::finding::Confidence::High,
            title: title.into(),
            scope: crate::model::finding::Scope::host(),
            affected: 0,
            evidence: vec![],
            fix: vec![],
        };
        r.findings = vec![blind("no NAPI probe"), blind("no IRQ probe")];
        let families = Exporter::new(10, 10).families(&r);
        for f in &families {
            let mut seen = BTreeSet::new();
            for s in &f.samples {
                assert!(seen.insert(s.labels.clone()), "{} {:?}", f.name, s.labels);
            }
        }
    }
}
