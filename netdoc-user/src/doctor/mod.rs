//! The doctor: what every family saw in one run, as one typed snapshot, and the rules that
//! turn it into ranked findings. Everything here is pure: a recorded snapshot gives the same
//! report on any machine (`netdoc doctor --replay`).
pub mod html;
pub mod recording;
pub mod render;
mod rules;

pub use rules::MIN_PACKETS;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    conntrack::NamespaceConntrack,
    counted::{self, NamespaceCounted, neighbours::NeighbourTable},
    drops::report::{NamedDrop, Row},
    facts::droprules::DropRule,
    model::{cause::Cause, finding::Finding},
    namespaces::{GoneNetns, NetnsRef},
    planner::ProbeStatus,
    retrans::report::FlowRow,
    softirq::{nicmap::NicMap, series::CpuSummary},
};

/// Bumped when a field of [`Snapshot`] changes meaning or disappears: a replay refuses a
/// recording of another version rather than misread it.
pub const RECORD_VERSION: u32 = 1;

/// What the doctor reads in each namespace beside the drop counters: its own rules' counters,
/// and every counter the drop reason catalogue says moves with a reason (the evidence of a drop
/// no specific rule explains).
pub static CONTEXT: std::sync::LazyLock<counted::Context> = std::sync::LazyLock::new(|| {
    let mut counters: Vec<&'static str> = RULE_COUNTERS.to_vec();
    counters.extend(
        crate::model::explain::all()
            .iter()
            .flat_map(|e| e.counters.iter().copied()),
    );
    counters.sort_unstable();
    counters.dedup();
    counted::Context {
        counters: counters.leak(),
        settings: SETTINGS,
    }
});

const RULE_COUNTERS: &[&str] = &[
    "Udp.NoPorts",
    "Udp6.NoPorts",
    "Udp.InDatagrams",
    "Udp6.InDatagrams",
    "Icmp.OutDestUnreachs",
    "Icmp.OutRateLimitGlobal",
    "Icmp.OutRateLimitHost",
    "Icmp6.OutDestUnreachs",
    "Icmp6.OutRateLimitHost",
    "TcpExt.SyncookiesSent",
    "TcpExt.TCPWqueueTooBig",
    "TcpExt.TCPAbortOnMemory",
    "Tcp.RetransSegs",
    "TcpExt.TCPTimeouts",
    "TcpExt.TCPFastRetrans",
    "TcpExt.TCPDSACKRecvSegs",
];

const SETTINGS: &[&str] = &[
    "net.core.somaxconn",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.icmp_ratelimit",
    "net.core.rmem_default",
    "net.core.rmem_max",
];

/// Everything the rules look at, from one run (or a recording of one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub host: HostFacts,
    pub duration_s: f64,
    pub drops: Drops,
    /// Per namespace: drop and context counters that grew, settings, and the sockets behind
    /// listener and receive-buffer counters.
    pub counted: Vec<NamespaceCounted>,
    /// Every namespace that used conntrack.
    pub conntrack: Vec<NamespaceConntrack>,
    /// The ARP and NDISC tables (global to the host).
    #[serde(default)]
    pub neighbours: Vec<NeighbourTable>,
    /// Retransmitting flows from the in-kernel aggregation.
    pub retrans: Vec<FlowRow>,
    /// NET_RX time per CPU and the NIC map, when the softirq probes attached.
    pub net_rx: Option<NetRx>,
    pub probes: Vec<ProbeStatus>,
    /// The latest namespaces that went away, and how many went before them.
    pub namespaces_gone: Vec<GoneNetns>,
    #[serde(default)]
    pub namespaces_gone_earlier: u64,
    /// The drop rules of the namespaces where a rule may have dropped packets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_rules: Vec<NamespaceDropRules>,
    /// The routes, settings and neighbours of the namespaces that dropped packets for want of
    /// a route, a neighbour or a valid source, read soon after the first such drop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<NamespacePath>,
    /// The host-wide backlog settings, read soon after the first `CPU_BACKLOG` drop (an
    /// operator may change them while it goes on).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub backlog_settings: BTreeMap<String, u64>,
    /// The one namespace watched (`--netns`): drops anywhere else were not seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched_only: Option<NetnsRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    pub kernel: String,
    /// Where drop reason names came from (the running kernel's BTF, tracefs, ...).
    pub reason_names: String,
    /// Host-wide settings the rules name (`net.core.netdev_max_backlog`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, u64>,
}

/// A namespace's nftables drop rules and drop policies (`nft -j list ruleset`), or why they
/// could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceDropRules {
    pub netns: NetnsRef,
    pub rules: Vec<CountedDropRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// What a namespace said of the path of the packets it dropped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespacePath {
    pub netns: NetnsRef,
    /// The addresses looked up as the sources of the dropped packets (the route back to them
    /// decides reverse-path filtering); the others are destinations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(flatten)]
    pub reading: crate::facts::route::PathReading,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountedDropRule {
    #[serde(flatten)]
    pub rule: DropRule,
    /// Packets its counter grew by between netdoc's first reading (at the first drop it saw
    /// there) and the last; null when read once or without a counter.
    pub grew: Option<u64>,
}

/// The drop family's view: exact counts per site, and what the delivered events add (where,
/// which flows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Drops {
    /// Per (reason, cause, location), from the kernel's own aggregation: exact.
    pub sites: Vec<Row>,
    /// Delivered events grouped by namespace, reason, cause and protocol.
    pub groups: Vec<DropGroup>,
    /// Drops the probe matched, delivered as events, lost (buffer full), and sampled out (over
    /// a CPU's budget of events per second).
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
    #[serde(default)]
    pub sampled: u64,
    /// That budget; 0: none.
    #[serde(default)]
    pub max_events_per_sec: u64,
    /// Delivered events that found no room among the groups (counted in `sites` only).
    #[serde(default)]
    pub folded: u64,
}

/// Delivered drops of one namespace, reason, cause and protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropGroup {
    pub netns: u32,
    pub netns_name: Option<String>,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Where the kernel freed them (`function+0xoff`).
    pub location: String,
    pub proto: Option<String>,
    pub events: u64,
    /// TCP segments among them that opened a connection (SYN without ACK); each of the rest
    /// belonged to one already under way. Recordings from before it was kept have 0.
    #[serde(default)]
    pub connection_attempts: u64,
    /// Whether the events carried TCP flags (false in recordings from before they did).
    #[serde(default)]
    pub tcp_flags_known: bool,
    /// The busiest destinations, at most [`TOP_TARGETS`].
    pub targets: Vec<Target>,
    /// Events per netfilter hook, where the stage sentinels told it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hooks: BTreeMap<String, u64>,
    /// The devices the packets were on (at most [`DEVICES_PER_GROUP`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// The busiest source addresses and their packets, at most [`TOP_TARGETS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<(String, u64)>,
}

/// Devices remembered per group: a drop group is rarely on more than a few.
pub const DEVICES_PER_GROUP: usize = 8;

/// One destination of dropped packets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// `udp > 10.0.0.2:53`
    pub to: String,
    pub dport: Option<u16>,
    pub events: u64,
    /// One whole flow, for the report.
    pub example: String,
}

/// Destinations kept per group: the report names a few, the counts stay exact.
pub const TOP_TARGETS: usize = 5;
/// Groups kept in a snapshot; events of further groups are counted as folded.
pub const MAX_GROUPS: usize = 256;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetRx {
    /// The busiest stretch of the run (seconds from its start), or the whole run.
    #[serde(default)]
    pub from_s: f64,
    #[serde(default)]
    pub to_s: f64,
    pub cpus: Vec<CpuSummary>,
    pub nic_map: NicMap,
}

impl DropGroup {
    fn key(&self) -> (u32, &str, Option<Cause>, &str, Option<&str>) {
        (
            self.netns,
            &self.reason,
            self.cause,
            &self.location,
            self.proto.as_deref(),
        )
    }
}

/// Groups delivered drop events as they arrive (bounded: at most [`MAX_GROUPS`] groups, and
/// per group the destinations seen).
#[derive(Debug, Default)]
pub struct DropGrouper {
    groups: BTreeMap<GroupKey, Grouped>,
    /// Events that found no room in a new group (counted, never silently dropped).
    pub folded: u64,
}

/// Namespace inode, reason, cause, location, protocol.
type GroupKey = (u32, String, Option<Cause>, String, Option<String>);

#[derive(Debug)]
struct Grouped {
    netns_name: Option<String>,
    events: u64,
    connection_attempts: u64,
    tcp_flags_known: bool,
    targets: BTreeMap<(String, Option<u16>), (u64, String)>,
    hooks: BTreeMap<String, u64>,
    devices: std::collections::BTreeSet<String>,
    senders: BTreeMap<String, u64>,
}

/// Distinct destinations remembered per group before new ones are only counted.
const TARGETS_PER_GROUP: usize = 1024;

impl DropGrouper {
    pub fn add(&mut self, d: &NamedDrop) {
        let key = (
            d.netns,
            d.reason.clone(),
            d.cause,
            d.location.clone(),
            d.proto.clone(),
        );
        if !self.groups.contains_key(&key) && self.groups.len() >= MAX_GROUPS {
            self.folded += 1;
            return;
        }
        let g = self.groups.entry(key).or_insert_with(|| Grouped {
            netns_name: d.netns_name.clone(),
            events: 0,
            connection_attempts: 0,
            tcp_flags_known: false,
            targets: BTreeMap::new(),
            hooks: BTreeMap::new(),
            devices: Default::default(),
            senders: BTreeMap::new(),
        });
        if let Some(from) = &d.saddr {
            let room = g.senders.len() < TARGETS_PER_GROUP;
            match g.senders.get_mut(from) {
                Some(n) => *n += 1,
                None if room => {
                    g.senders.insert(from.clone(), 1);
                }
                None => {}
            }
        }
        g.events += 1;
        // Per event: a name is copied only the first time it is seen.
        if let Some(dev) = &d.dev
            && g.devices.len() < DEVICES_PER_GROUP
            && !g.devices.contains(dev)
        {
            g.devices.insert(dev.clone());
        }
        if let Some(hook) = &d.hook {
            *g.hooks.entry(hook.clone()).or_default() += 1;
        }
        g.connection_attempts += u64::from(d.opens_a_connection());
        g.tcp_flags_known |= d.tcp_flags.is_some();
        let to = match (&d.proto, &d.daddr) {
            (Some(p), Some(a)) => match (d.dport, a.parse()) {
                (Some(port), Ok(ip)) => format!("{p} > {}", crate::model::addr::endpoint(ip, port)),
                _ => format!("{p} > {a}"),
            },
            _ => "unknown destination".into(),
        };
        let room = g.targets.len() < TARGETS_PER_GROUP;
        match g.targets.get_mut(&(to.clone(), d.dport)) {
            Some(t) => t.0 += 1,
            None if room => {
                g.targets.insert((to, d.dport), (1, d.flow()));
            }
            None => {}
        }
    }

    /// The groups, busiest first, each with its busiest destinations.
    pub fn groups(&self) -> Vec<DropGroup> {
        let mut out: Vec<DropGroup> = self
            .groups
            .iter()
            .map(|((netns, reason, cause, location, proto), g)| {
                // Sorted by reference: only the few kept are cloned.
                let mut busiest: Vec<_> = g.targets.iter().collect();
                busiest.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.0.cmp(&b.0.0)));
                let targets: Vec<Target> = busiest
                    .into_iter()
                    .take(TOP_TARGETS)
                    .map(|((to, dport), (events, example))| Target {
                        to: to.clone(),
                        dport: *dport,
                        events: *events,
                        example: example.clone(),
                    })
                    .collect();
                DropGroup {
                    netns: *netns,
                    netns_name: g.netns_name.clone(),
                    reason: reason.clone(),
                    cause: *cause,
                    location: location.clone(),
                    proto: proto.clone(),
                    events: g.events,
                    connection_attempts: g.connection_attempts,
                    tcp_flags_known: g.tcp_flags_known,
                    targets,
                    hooks: g.hooks.clone(),
                    devices: g.devices.iter().cloned().collect(),
                    senders: busiest_senders(&g.senders),
                }
            })
            .collect();
        out.sort_by(|a, b| b.events.cmp(&a.events).then(a.key().cmp(&b.key())));
        out
    }
}

fn busiest_senders(senders: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut busiest: Vec<(&String, &u64)> = senders.iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    busiest
        .into_iter()
        .take(TOP_TARGETS)
        .map(|(from, n)| (from.clone(), *n))
        .collect()
}

/// Every rule over the snapshot, findings ranked: most severe first, then the surest, then
/// the most packets.
pub fn diagnose(s: &Snapshot) -> Vec<Finding> {
    let mut all = rules::all(s);
    all.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.confidence.cmp(&a.confidence))
            .then(b.affected.cmp(&a.affected))
            .then(a.id.cmp(&b.id))
    });
    all
}

/// The id of findings about netdoc's own blind spots: rendered apart, as what a run could not
/// see.
pub const BLIND_SPOT: &str = "netdoc_blind_spot";

pub fn is_blind_spot(f: &Finding) -> bool {
    f.id == BLIND_SPOT
}

/// Whether the findings say something is wrong (exit 1): netdoc's own blind spots alone do not.
pub fn anything_wrong(findings: &[Finding]) -> bool {
    findings
        .iter()
        .any(|f| f.severity > crate::model::finding::Severity::Info)
}

/// What `netdoc doctor` prints at the end (`"type": "doctor"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub hostname: String,
    pub kernel: String,
    pub duration_s: f64,
    /// Ranked: most severe first, then the surest, then the most packets.
    pub findings: Vec<Finding>,
    /// Drop events matched, delivered, lost and sampled out during the run.
    pub drops_matched: u64,
    pub drops_delivered: u64,
    pub drops_lost: u64,
    #[serde(default)]
    pub drops_sampled: u64,
    /// Where the delivered drops went: into findings, the harmless (not loss), or the noise.
    #[serde(default)]
    pub drops_accounted: DropAccounting,
    pub namespaces_gone: Vec<GoneNetns>,
    #[serde(default)]
    pub namespaces_gone_earlier: u64,
    /// Every probe of the run: its hook, or why it is unavailable.
    pub probes: Vec<ProbeStatus>,
    /// Read from a recording (`--replay`) rather than observed.
    pub replayed: bool,
}

/// How the run's drops are accounted for, each counted once: explained by a finding, not loss
/// at all (duplicates the receiver already had, per reason), or in groups too small to be an
/// incident. Counts are the kernel's where events were sampled out (each group's share of its
/// sites' exact counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropAccounting {
    pub explained: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub harmless: BTreeMap<String, u64>,
    pub below_noise: u64,
}

impl Report {
    pub fn new(s: &Snapshot, replayed: bool) -> Self {
        let findings = diagnose(s);
        let drops_accounted = rules::accounting(s, &findings);
        Self {
            schema_version: crate::output::SCHEMA_VERSION,
            hostname: s.host.hostname.clone(),
            kernel: s.host.kernel.clone(),
            duration_s: s.duration_s,
            findings,
            drops_matched: s.drops.matched,
            drops_delivered: s.drops.delivered,
            drops_lost: s.drops.lost,
            drops_sampled: s.drops.sampled,
            drops_accounted,
            namespaces_gone: s.namespaces_gone.clone(),
            namespaces_gone_earlier: s.namespaces_gone_earlier,
            probes: s.probes.clone(),
            replayed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::finding::Severity;

    /// Real incidents recorded with `netdoc doctor --record` on this host's 6.18 kernel: a veth
    /// flood to a closed port with 30 datagrams into an nft drop rule; SNAT clashes on DNS with
    /// a listener of backlog 1 hit by 20 clients (whose SYN retransmits are the listener's);
    /// strict rp_filter with the route back by a second link; a router namespace with
    /// forwarding off; datagrams to an on-link address nobody answers; a flood RPS steers to
    /// CPU 1 with netdev_max_backlog 8; an IP protocol nobody handles; bulk TCP on both CPUs
    /// unpinned with UDP request/response (reordering, spurious retransmits, duplicates
    /// discarded: healthy); a tbf shaping a UDP burst; forwarding onto a smaller MTU, the ICMP
    /// going back. Every drop of each is accounted for.
    #[test]
    fn recorded_incidents_replay_to_their_findings() {
        for (file, expected) in [
            (
                "veth-flood-6.18.json",
                &[
                    "udp_no_listener",
                    "firewall_drop",
                    "net_rx_backlog_concentration",
                ][..],
            ),
            (
                "snat-dns-and-listen-overflow-6.18.json",
                &["listen_queue_overflow", "conntrack_insert_failed"][..],
            ),
            (
                "reverse-path-filter-6.18.json",
                &["reverse_path_filter"][..],
            ),
            ("forwarding-off-6.18.json", &["forwarding_disabled"][..]),
            (
                "neighbour-unanswered-6.18.json",
                &["neighbour_unresolved"][..],
            ),
            (
                "cpu-backlog-rps-6.18.json",
                &["cpu_backlog_overflow", "udp_no_listener"][..],
            ),
            ("unknown-protocol-6.18.json", &["unexplained_drops"][..]),
            ("busy-healthy-veth-6.18.json", &[][..]),
            (
                "egress-tbf-6.18.json",
                &["egress_queue_drop", "udp_no_listener"][..],
            ),
            ("path-mtu-discovery-6.18.json", &[][..]),
        ] {
            let path = format!(
                "{}/tests/fixtures/doctor/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let text = std::fs::read_to_string(&path).unwrap();
            let snapshot: Snapshot = serde_json::from_str(&text).unwrap();
            assert_eq!(snapshot.version, RECORD_VERSION);
            let findings = diagnose(&snapshot);
            let problems: Vec<&str> = findings
                .iter()
                .filter(|f| f.severity > Severity::Info)
                .map(|f| f.id.as_ref())
                .collect();
            assert_eq!(problems, expected, "{file}");
            // Every delivered drop is in a finding, no loss, or the noise; nothing else.
            let a = rules::accounting(&snapshot, &findings);
            let delivered: u64 = snapshot.drops.groups.iter().map(|g| g.events).sum();
            let harmless: u64 = a.harmless.values().sum();
            if snapshot.drops.sampled == 0 && snapshot.drops.lost == 0 {
                assert_eq!(a.explained + harmless + a.below_noise, delivered, "{file}");
            }
            assert!(a.below_noise < 10 * rules::MIN_PACKETS, "{file}: {a:?}");
        }
    }
}
