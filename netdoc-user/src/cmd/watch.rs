//! What the doctor's rules look at, gathered live: namespaces' counters and conntrack tables
//! (those with activity and a few others in turn each tick, every one before a report),
//! the neighbour tables, the drop rules of namespaces with a rule's drops, streamed drop events
//! grouped by flow, the busiest NET_RX
//! stretch, and the kernel's drop counts since the watch began. `doctor` watches for its whole
//! run; `export` watches one window at a time for its findings metric.
use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use super::{drop_rules::DropRuleReadings, net_rx, path_facts::PathReadings};
use crate::{
    conntrack,
    counted::{self, neighbours::NeighbourTables},
    doctor::{self, DropGroup, DropGrouper, Drops, HostFacts, NetRx, RECORD_VERSION, Snapshot},
    drops::{
        DropMaps,
        report::{self, KernelCounts, NamedDrop},
    },
    model::{
        cause::Cause,
        names::{LiveNamer, Namer as _},
        stats::KernelStats,
    },
    namespaces::{NetnsKey, turns::Activity},
    retrans::{self, RetransMaps},
    session::{Namespaces, Session},
};
use netdoc_common::{DropEvent, DropKey};

/// The stretch over which NET_RX shares are measured: the busiest one is reported.
const NET_RX_WINDOW: Duration = Duration::from_secs(2);

pub struct Watch {
    namer: LiveNamer,
    namespaces: Namespaces,
    host: HostFacts,
    /// The namespace watched (an inode), or all.
    only: Option<u32>,
    window: Window,
}

/// What one watch gathers from its start: each baseline is taken when it begins.
struct Window {
    grouper: DropGrouper,
    delivered: u64,
    /// `NETFILTER_DROP` events per namespace and cause, for the conntrack view.
    causes: BTreeMap<NetnsKey, BTreeMap<Cause, u64>>,
    counted: counted::PerNamespace,
    conntrack: conntrack::PerNamespace,
    drop_rules: DropRuleReadings,
    paths: PathReadings,
    /// Namespaces with streamed drops since the last sample: their counters are read first.
    active: Activity,
    /// Retransmits and kernel-counted drops per namespace at the last sample: a namespace
    /// whose count moved is active.
    moved: MovedCounts,
    neighbours: NeighbourTables,
    net_rx: Option<net_rx::BusiestWindow>,
    /// The kernel's drop counts (by namespace, reason, stage and location) and stats then.
    drops_before: (KernelCounts, KernelStats),
    started: Instant,
}

impl Window {
    fn start(session: &Session, namespaces: &Namespaces, only: Option<u32>) -> Self {
        let inventory = namespaces.lock();
        let counted = counted::PerNamespace::start(&inventory, only, &doctor::CONTEXT);
        let conntrack = conntrack::PerNamespace::start(&inventory, only);
        drop(inventory);
        Self::with(session, counted, conntrack)
    }

    /// The window after this one, which has just read every namespace: the namespaces' counters
    /// go on from those readings.
    fn next(&self, session: &Session) -> Self {
        Self::with(
            session,
            self.counted.next_window(),
            self.conntrack.next_window(),
        )
    }

    fn with(
        session: &Session,
        counted: counted::PerNamespace,
        conntrack: conntrack::PerNamespace,
    ) -> Self {
        Self {
            grouper: DropGrouper::default(),
            delivered: 0,
            causes: BTreeMap::new(),
            counted,
            conntrack,
            drop_rules: DropRuleReadings::default(),
            paths: PathReadings::default(),
            active: Activity::new(),
            moved: MovedCounts::now(session),
            neighbours: NeighbourTables::start(),
            net_rx: session
                .net_rx_known
                .then(|| net_rx::BusiestWindow::start(session, NET_RX_WINDOW)),
            drops_before: session
                .part::<DropMaps>()
                .map(|maps| (maps.counts_per_netns(), maps.stats()))
                .unwrap_or_default(),
            started: Instant::now(),
        }
    }
}

impl Watch {
    /// Takes every baseline now (counters, tables, the kernel's drop counts), watching one
    /// namespace (`only`, an inode) or all.
    pub fn start(session: &Session, only: Option<u32>, host: HostFacts) -> Self {
        let namespaces = session.namespaces();
        Self {
            namer: LiveNamer::new(
                session.families.drops.reasons.clone(),
                session.net_rx_known,
                session.stages.coverage,
                session.namespaces(),
            ),
            window: Window::start(session, &namespaces, only),
            namespaces,
            host,
            only,
        }
    }

    /// Begins a new window now, right after [`Self::sample_all`]: the kernel's counts taken
    /// again, the namespaces' counters going on from that reading, names kept.
    pub fn restart(&mut self, session: &Session) {
        self.window = self.window.next(session);
    }

    /// How long this window has run.
    pub fn elapsed(&self) -> Duration {
        self.window.started.elapsed()
    }

    /// Streamed drop events: grouped by namespace, reason, cause and flow.
    pub fn records(&mut self, events: &[DropEvent]) {
        self.window.delivered += events.len() as u64;
        for ev in events {
            self.window.active.insert(ev.netns);
            let d = NamedDrop::new(ev, &mut self.namer);
            if let Some(cause) = d.cause {
                let per_ns = self
                    .window
                    .causes
                    .entry((d.netns, d.netns_cookie))
                    .or_default();
                *per_ns.entry(cause).or_default() += 1;
            }
            self.window.drop_rules.saw(&d);
            self.window.paths.saw(&d);
            self.window.grouper.add(&d);
        }
    }

    /// The counters of the namespaces with drops or retransmits since the last sample and of
    /// a few others in turn, the tables, and the NET_RX stretch, now.
    pub fn sample(&mut self, session: &Session) {
        self.read(session, false);
    }

    /// Like [`Watch::sample`], with every namespace's counters: before a report.
    pub fn sample_all(&mut self, session: &Session) {
        self.read(session, true);
    }

    fn read(&mut self, session: &Session, every_namespace: bool) {
        let mut active = std::mem::take(&mut self.window.active);
        let now = MovedCounts::now(session);
        active.extend(now.moved_since(&self.window.moved));
        self.window.moved = now;
        {
            let inventory = self.namespaces.lock();
            if every_namespace {
                self.window.counted.sample_all(&inventory);
                self.window.conntrack.sample_all(&inventory);
            } else {
                self.window.counted.sample(&inventory, &active);
                self.window.conntrack.sample(&inventory, &active);
            }
            self.window.neighbours.sample(&inventory);
            self.window.drop_rules.sample(&inventory, every_namespace);
            self.window.paths.sample(&inventory);
        }
        if let Some(w) = self.window.net_rx.as_mut() {
            w.sample(session);
        }
    }

    /// What the rules see now. `complete` (a final report, not every tick) also names
    /// sockets' owners (every process's fd table) and reads the NIC queues.
    pub fn snapshot(&mut self, session: &Session, complete: bool) -> Snapshot {
        let duration_s = self.window.started.elapsed().as_secs_f64();
        let drops = match session.part::<DropMaps>() {
            Some(maps) => {
                let (counts_before, stats_before) = &self.window.drops_before;
                let stats = maps.stats();
                let counts = since(maps.counts_per_netns(), counts_before);
                let mut groups = self.window.grouper.groups();
                let counted = counted_groups(&mut self.namer, &self.namespaces, &counts, &groups);
                groups.extend(counted);
                Drops {
                    sites: report::rows(
                        &without_namespaces(counts),
                        &HashMap::new(),
                        duration_s,
                        &HashMap::new(),
                        &mut self.namer,
                    ),
                    groups,
                    matched: stats.matched.saturating_sub(stats_before.matched),
                    delivered: self.window.delivered,
                    lost: stats.lost.saturating_sub(stats_before.lost),
                    sampled: stats.sampled.saturating_sub(stats_before.sampled),
                    max_events_per_sec: session.max_events_per_sec,
                    folded: self.window.grouper.folded,
                }
            }
            None => Drops::default(),
        };
        let retrans = session.part::<RetransMaps>().map_or_else(Vec::new, |maps| {
            retrans::flow_rows(maps, &HashMap::new(), 0.0, |n| {
                self.namespaces.resolve(n, 0, u64::MAX)
            })
        });
        let net_rx = self.window.net_rx.as_ref().map(|w| {
            // Ticks read NIC queues only when a CPU is saturated; the final report always.
            let m = w.busiest(session, complete);
            NetRx {
                from_s: m.from_s,
                to_s: m.to_s,
                cpus: m.cpus,
                nic_map: m.nic_map,
            }
        });
        let (namespaces_gone, namespaces_gone_earlier) = session.namespaces_gone();
        Snapshot {
            version: RECORD_VERSION,
            host: self.host.clone(),
            duration_s,
            drops,
            counted: self.window.counted.report(complete),
            conntrack: self.window.conntrack.report(&self.window.causes),
            neighbours: self.window.neighbours.report(),
            retrans,
            net_rx,
            probes: session.probe_statuses(),
            namespaces_gone,
            namespaces_gone_earlier,
            drop_rules: self.window.drop_rules.report(),
            paths: self.window.paths.report(),
            backlog_settings: self.window.paths.backlog_settings(),
            watched_only: self
                .only
                .and_then(|inode| self.namespaces.resolve(inode, 0, u64::MAX)),
        }
    }
}

/// Per namespace (inode): retransmits, and the drops the kernel counted where it counts per
/// namespace (the exporter, which streams no drop).
#[derive(Default)]
struct MovedCounts {
    retransmits: HashMap<u32, u64>,
    drops: HashMap<u32, u64>,
}

impl MovedCounts {
    fn now(session: &Session) -> Self {
        let mut counts = Self::default();
        if let Some(maps) = session.part::<RetransMaps>() {
            for (key, stats) in maps.flows() {
                *counts.retransmits.entry(key.netns).or_default() += stats.events;
            }
        }
        if let Some(maps) = session.part::<DropMaps>() {
            // Without per-namespace counting every key's namespace is 0: nothing to tell.
            for (key, per_cpu) in maps.counts_per_netns().iter().filter(|(k, _)| k.netns != 0) {
                *counts.drops.entry(key.netns).or_default() += per_cpu.iter().sum::<u64>();
            }
        }
        counts
    }

    /// The namespaces whose retransmits or drops moved since `before`.
    fn moved_since<'a>(&'a self, before: &'a Self) -> impl Iterator<Item = u32> + 'a {
        let moved = |now: &'a HashMap<u32, u64>, then: &'a HashMap<u32, u64>| {
            now.iter()
                .filter(move |(netns, n)| then.get(netns) != Some(n))
                .map(|(netns, _)| *netns)
        };
        moved(&self.retransmits, &before.retransmits).chain(moved(&self.drops, &before.drops))
    }
}

/// Groups for what the kernel counted per namespace (where it counts by namespace, as for
/// the exporter, which streams no event) with no event group of its own: exact counts, no
/// flows, so every rule sees every namespace's drops.
fn counted_groups(
    namer: &mut LiveNamer,
    namespaces: &Namespaces,
    counts: &KernelCounts,
    events: &[DropGroup],
) -> Vec<DropGroup> {
    let mut merged: BTreeMap<(u32, String, Option<Cause>, String), u64> = BTreeMap::new();
    for (key, per_cpu) in counts.iter().filter(|(k, _)| k.netns != 0) {
        let reason = namer.reasons().name(key.reason);
        let location = namer.location(key.location);
        let cause = namer.cause(key.reason, key.location, key.nf_stage);
        *merged
            .entry((key.netns, reason, cause, location))
            .or_default() += per_cpu.iter().sum::<u64>();
    }
    merged
        .into_iter()
        .filter(|((netns, reason, cause, location), _)| {
            !events.iter().any(|g| {
                g.netns == *netns
                    && g.reason == *reason
                    && g.cause == *cause
                    && g.location == *location
            })
        })
        .map(|((netns, reason, cause, location), events)| DropGroup {
            netns,
            netns_name: namespaces.resolve(netns, 0, u64::MAX).map(|n| n.name),
            reason,
            cause,
            location,
            proto: None,
            events,
            connection_attempts: 0,
            tcp_flags_known: false,
            targets: Vec::new(),
            hooks: BTreeMap::new(),
            devices: Vec::new(),
            senders: Vec::new(),
        })
        .collect()
}

/// Counts by reason, stage and location: the namespaces merged.
fn without_namespaces(counts: KernelCounts) -> KernelCounts {
    let mut merged: HashMap<DropKey, Vec<u64>> = HashMap::new();
    for (key, per_cpu) in counts {
        let key = DropKey {
            netns: 0,
            netns_cookie: 0,
            ..key
        };
        let sum = merged.entry(key).or_insert_with(|| vec![0; per_cpu.len()]);
        for (s, n) in sum.iter_mut().zip(per_cpu) {
            *s += n;
        }
    }
    merged.into_iter().collect()
}

/// The per-CPU counts of `now` less those of `before`, key by key (a key not in `before`
/// counts from zero; one the exporter took out of the map, and made again, from zero too).
fn since(now: KernelCounts, before: &KernelCounts) -> KernelCounts {
    if before.is_empty() {
        return now;
    }
    let before: HashMap<_, _> = before.iter().map(|(k, v)| (*k, v)).collect();
    now.into_iter()
        .filter_map(|(key, per_cpu)| {
            let base = before.get(&key);
            let left: Vec<u64> = per_cpu
                .iter()
                .enumerate()
                .map(|(cpu, n)| n - base.and_then(|b| b.get(cpu)).copied().unwrap_or(0).min(*n))
                .collect();
            left.iter().any(|n| *n > 0).then_some((key, left))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_since_a_baseline_keep_only_what_grew() {
        let key = |reason| DropKey {
            reason,
            ..DropKey::default()
        };
        let before = vec![(key(2), vec![5, 1]), (key(3), vec![4, 0])];
        let now = vec![
            (key(2), vec![7, 1]),
            (key(3), vec![4, 0]),
            (key(5), vec![0, 2]),
        ];
        assert_eq!(
            since(now, &before),
            vec![(key(2), vec![2, 0]), (key(5), vec![0, 2])]
        );
    }
}
