//! `netdoc conntrack`: per-CPU conntrack counter deltas and table usage, live and at the end,
//! with what they attribute drops to; insertion failures from the confirm hook where one
//! attaches, else every conntrack-caused `NETFILTER_DROP` from the drop family and the stage
//! sentinels.
use std::{collections::BTreeMap, fmt::Write as _, io::IsTerminal as _, time::Duration};

use anyhow::Result;
use netdoc_common::{DropEvent, conntrack::InsertFailEvent};

use crate::{
    conntrack::{
        NamespaceConntrack, PerNamespace, attribute,
        confirm::{self, ConfirmMaps, InsertFailure},
        snapshot,
    },
    drops::{
        self, DropMaps,
        filter::{DropFilter, FilterArgs},
        report::NamedDrop,
    },
    facts::{conntrack::CpuCounters, netns::NetnsArg},
    kernel::Kernel,
    model::{
        cause::Cause,
        finding::Finding,
        names::{LiveNamer, Namer as _},
    },
    namespaces::{NetnsKey, turns::Activity},
    output::{ConntrackSummary, Output, SCHEMA_VERSION, Summary},
    sentinel,
    session::{
        Component, DropUse, Namespaces, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::Records,
    },
    text::printable,
};

/// Ring buffer pages per CPU: conntrack events come in bursts of at most a few thousand.
const PAGES: usize = 16;

/// Each cause's `NETFILTER_DROP` count, from the kernel's own aggregation (never sampled).
type CauseCounts = BTreeMap<Cause, u64>;

/// Columns worth watching, in display order.
const COLUMNS: [&str; 6] = [
    "insert_failed",
    "drop",
    "early_drop",
    "clash_resolve",
    "invalid",
    "search_restart",
];

/// Prints a drop conntrack caused (firewall drops are only counted); true if printed.
fn print_drop(d: &NamedDrop, json: bool, out: &mut impl std::io::Write) -> bool {
    if !matches!(d.cause, Some(Cause::ConntrackConfirm | Cause::ConntrackIn)) {
        return false;
    }
    let line = if json {
        Output::Drop(d.clone()).line()
    } else {
        let cause = d.cause.map_or("", Cause::describe);
        format!(
            "conntrack drop ({cause}): {} on CPU {}\n",
            printable(&d.flow()),
            d.cpu
        )
    };
    out.write_all(line.as_bytes()).is_ok()
}

fn failure_line(f: InsertFailure, json: bool) -> String {
    if json {
        return Output::InsertFailed(f).line();
    }
    let netns = f
        .netns_name
        .as_deref()
        .map_or(f.netns.to_string(), |n| printable(n).into_owned());
    format!(
        "insert failed: {} {} (reply {}) on CPU {}, zone {}, netns {netns}\n",
        f.proto, f.original, f.reply, f.cpu, f.zone
    )
}

fn table(d: &[CpuCounters], usage: Option<(u64, u64)>) -> String {
    let mut out = format!("{:<5}", "CPU");
    for c in COLUMNS {
        let _ = write!(out, " {c:>14}");
    }
    out.push('\n');
    for (cpu, row) in d.iter().enumerate() {
        let _ = write!(out, "{cpu:<5}");
        for c in COLUMNS {
            match row.get(c) {
                Some(v) => {
                    let _ = write!(out, " {v:>14}");
                }
                None => {
                    let _ = write!(out, " {:>14}", "-");
                }
            }
        }
        out.push('\n');
    }
    if let Some((count, max)) = usage {
        let _ = writeln!(
            out,
            "entries: {count} of {max} ({:.1}%)",
            count as f64 * 100.0 / max.max(1) as f64
        );
    }
    out
}

struct ConntrackView {
    only_netns: Option<u32>,
    json: bool,
    per_ns: PerNamespace,
    namespaces: Namespaces,
    started: std::time::Instant,
    namer: Option<LiveNamer>,
    insert_failures: u64,
    drop_events: u64,
    /// `NETFILTER_DROP` events per namespace and cause.
    causes: BTreeMap<NetnsKey, CauseCounts>,
    /// Namespaces with insertion failures or drops since the last tick: read first.
    active: Activity,
}

impl ConntrackView {
    /// Prints insertion failures (of the `--netns` namespace, when given); returns how many.
    fn failures(
        &mut self,
        batch: Vec<netdoc_common::conntrack::InsertFailEvent>,
        out: &mut impl std::io::Write,
    ) -> u64 {
        let mut shown = 0;
        for ev in &batch {
            let mut f = confirm::decode(ev);
            if self.only_netns.is_some_and(|n| n != f.netns) {
                continue;
            }
            let ns = self
                .namespaces
                .lock()
                .resolve(f.netns, ev.netns_cookie, ev.ts_ns);
            f.netns_name = ns.map(|n| n.name);
            self.active.insert(f.netns);
            shown += 1;
            let _ = out.write_all(failure_line(f, self.json).as_bytes());
        }
        shown
    }
}

impl View for ConntrackView {
    fn records(&mut self, _: &Session, batch: Records, out: &mut Stdout) -> Result<()> {
        let mut text = Vec::new();
        match batch.take::<InsertFailEvent>() {
            Ok(batch) => self.insert_failures += self.failures(batch, &mut text),
            Err(batch) => {
                let batch = batch.take::<DropEvent>().unwrap_or_default();
                if let Some(namer) = self.namer.as_mut() {
                    for ev in &batch {
                        let d = NamedDrop::new(ev, namer);
                        self.active.insert(d.netns);
                        if let Some(cause) = d.cause {
                            let key = (d.netns, d.netns_cookie);
                            *self
                                .causes
                                .entry(key)
                                .or_default()
                                .entry(cause)
                                .or_default() += 1;
                        }
                        self.drop_events += print_drop(&d, self.json, &mut text) as u64;
                    }
                }
            }
        }
        if text.is_empty() || out.is_closed() {
            return Ok(());
        }
        Ok(out.write(&String::from_utf8_lossy(&text))?)
    }

    fn tick(&mut self, _: &Session, out: &mut Stdout) -> Result<()> {
        self.per_ns
            .sample(&self.namespaces.lock(), &std::mem::take(&mut self.active));
        if self.json {
            return Ok(());
        }
        let namespaces = self.per_ns.report(&self.causes);
        Ok(out.line(&format!(
            "{}netdoc conntrack — {:.0}s, counts since start\n{}",
            live::clear_screen(std::io::stdout().is_terminal()),
            self.started.elapsed().as_secs_f64(),
            render_namespaces(&namespaces)
        ))?)
    }
}

/// Each namespace's table, busiest first.
fn render_namespaces(namespaces: &[NamespaceConntrack]) -> String {
    if namespaces.is_empty() {
        return "no namespace uses conntrack\n".into();
    }
    let mut out = String::new();
    for n in namespaces {
        let since = match (n.gone, n.first_seen_s) {
            (true, _) => " (gone: last reading)".to_string(),
            (false, s) if s > 0.0 => format!(" (using conntrack since {s:.0}s)"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "namespace {} (inode {}){since}",
            printable(&n.netns.name),
            n.netns.inode
        );
        out.push_str(&table(
            &n.per_cpu,
            n.nf_conntrack_count.zip(n.nf_conntrack_max),
        ));
    }
    out
}

/// `nf_conntrack_max`: one limit for every namespace (read-only inside child namespaces).
fn read_max() -> Option<u64> {
    crate::facts::conntrack::read_usage().map(|u| u.1)
}

/// Counter growth summed over namespaces, CPU by CPU.
fn sum_per_cpu(namespaces: &[NamespaceConntrack]) -> Vec<CpuCounters> {
    let mut total: Vec<CpuCounters> = Vec::new();
    for n in namespaces {
        for (cpu, row) in n.per_cpu.iter().enumerate() {
            if total.len() <= cpu {
                total.resize(cpu + 1, CpuCounters::new());
            }
            for (k, v) in row {
                *total[cpu].entry(k.clone()).or_default() += v;
            }
        }
    }
    total
}

/// The confirm hook alone where it attaches; else why not, and, standing in for it in the same
/// session, the drop family limited in the kernel to `NETFILTER_DROP` with the stage sentinels
/// (in this namespace and `ns`), so each conntrack drop arrives as an event that names its cause.
fn start(kernel: Kernel, ns: Option<&NetnsArg>) -> Result<(Session, Option<String>)> {
    let families = Families::discover(&kernel);
    let mut request = Request {
        pages: PAGES,
        watched: ns.cloned(),
        stand_in_for_confirm: true,
        ..Request::default()
    }
    .with(Component::ConntrackConfirm);
    if sentinel::wanted(&families.drops.reasons).is_none() {
        request.sentinels = Err(crate::Error::Unavailable(
            "no NETFILTER_DROP reason or no nf_conntrack on this kernel".into(),
        ));
    } else {
        request.sentinels = Ok(sentinel::Scope::only_or_on_demand(
            ns.map(|ns| ns.inode),
            sentinel::QUIET,
        ));
        request.want(Component::StageSentinels);
        let filter = DropFilter::parse(
            &FilterArgs {
                reason: Some("NETFILTER_DROP".into()),
                netns: ns.map(|n| n.inode),
                ..FilterArgs::default()
            },
            &families.drops.reasons,
        )?;
        request.want_drops(DropUse {
            filter,
            stream: true,
            hook: None,
            per_netns: false,
            stacks: false,
        });
    }
    let session = Session::start(kernel, families, request)?;
    let why = session
        .plan(confirm::PROBE)
        .filter(|p| p.chosen().is_none())
        .map(|p| p.failure());
    Ok((session, why))
}

pub async fn run(
    netns: Option<NetnsArg>,
    duration: Option<Duration>,
    interval: Duration,
    json: bool,
    kernel: Kernel,
) -> Result<()> {
    let mut signals = Signals::install()?;
    // Fails early, with the fix, where conntrack is not loaded.
    snapshot(netns.as_ref().map(|n| n.path.as_path()))?;
    let only_netns = netns.as_ref().map(|n| n.inode);
    let (mut session, confirm_degraded) = start(kernel, netns.as_ref())?;
    // The baseline before "attached": whoever waits for that line may start the incident.
    let namespaces = session.namespaces();
    let per_ns = PerNamespace::start(&namespaces.lock(), only_netns);
    let hook = session.hook(confirm::PROBE);
    let stage_probe = session
        .part::<DropMaps>()
        .and(session.stages.status.as_ref().ok())
        .map(|s| format!("netfilter stage sentinels ({s})"));
    let stage_degraded = match (&confirm_degraded, &stage_probe) {
        (Some(_), None) => Some(match (&session.stages.status, session.plan(drops::PROBE)) {
            (Err(why), _) => why.to_string(),
            (Ok(_), Some(p)) => p.failure(),
            (Ok(_), None) => "the drop probe was not tried".into(),
        }),
        _ => None,
    };
    match (&hook, &confirm_degraded, &stage_probe, &stage_degraded) {
        (Some(h), ..) => say!("attached {} probe via {h}", confirm::PROBE),
        (None, Some(why), Some(p), _) => say!("no function hook ({why}); using {p}"),
        (None, Some(why), None, Some(e)) => {
            say!("degraded: {why}; and {e}; conntrack counters only")
        }
        _ => {}
    }
    say!(
        "attached to the conntrack counters of {}; Ctrl-C to stop",
        netns
            .as_ref()
            .map_or("every namespace", |n| n.given.as_str())
    );
    let mut view = ConntrackView {
        only_netns,
        json,
        per_ns,
        namespaces,
        causes: BTreeMap::new(),
        active: Activity::new(),
        started: std::time::Instant::now(),
        namer: stage_probe.as_ref().map(|_| {
            LiveNamer::new(
                session.families.drops.reasons.clone(),
                false,
                session.stages.coverage,
                session.namespaces(),
            )
        }),
        insert_failures: 0,
        drop_events: 0,
    };
    let schedule = Schedule { interval, duration };
    let mut ended = live::run(&mut session, &mut view, &mut signals, schedule).await?;
    let lost = session.part::<ConfirmMaps>().map_or(0, |c| c.lost());
    let sampled = session.part::<ConfirmMaps>().map_or(0, |c| c.sampled());
    let (causes, drops_lost, drops_sampled) =
        match (session.part::<DropMaps>(), view.namer.as_mut()) {
            (Some(maps), Some(namer)) => {
                let mut counts = CauseCounts::new();
                for (key, per_cpu) in maps.counts() {
                    if let Some(c) = namer.cause(key.reason, key.location, key.nf_stage) {
                        *counts.entry(c).or_insert(0) += per_cpu.iter().sum::<u64>();
                    }
                }
                let stats = maps.stats();
                (counts, stats.lost, stats.sampled)
            }
            _ => (CauseCounts::new(), 0, 0),
        };
    let events = view.insert_failures;
    let drop_events = view.drop_events;
    view.per_ns.sample_all(&view.namespaces.lock());
    let namespaces = view.per_ns.report(&view.causes);
    let d = sum_per_cpu(&namespaces);
    let a = attribute(&d);
    let count = namespaces
        .iter()
        .filter(|n| !n.gone)
        .map(|n| n.nf_conntrack_count);
    let usage = count.sum::<Option<u64>>().zip(read_max());
    let f: Vec<Finding> = namespaces.iter().flat_map(|n| n.findings.clone()).collect();
    let text = if json {
        let (gone, gone_earlier) = session.namespaces_gone();
        Output::Summary(Summary::Conntrack(ConntrackSummary {
            schema_version: SCHEMA_VERSION,
            netns: netns.as_ref().map(|n| n.given.clone()),
            duration_s: view.started.elapsed().as_secs_f64(),
            nf_conntrack_count: usage.map(|u| u.0),
            nf_conntrack_max: usage.map(|u| u.1),
            per_cpu: d.clone(),
            attribution: a.clone(),
            confirm_hook: hook.clone(),
            confirm_degraded: confirm_degraded.clone(),
            insert_failure_events: events,
            insert_failure_events_lost: lost,
            insert_failure_events_sampled: sampled,
            stage_probe: stage_probe.clone(),
            stage_degraded: stage_degraded.clone(),
            netfilter_causes: causes.clone(),
            conntrack_drop_events: drop_events,
            conntrack_drop_events_lost: drops_lost,
            conntrack_drop_events_sampled: drops_sampled,
            namespaces: namespaces.clone(),
            namespaces_gone: gone,
            namespaces_gone_earlier: gone_earlier,
            findings: f.clone(),
            probes: session.probe_statuses(),
        }))
        .line()
    } else {
        let mut t = format!(
            "netdoc conntrack: {:.1}s\n{}",
            view.started.elapsed().as_secs_f64(),
            render_namespaces(&namespaces)
        );
        let _ = writeln!(
            t,
            "conntrack drops in all: {} table full, {} insert failed; any other NETFILTER_DROP at nf_hook_slow is a firewall rule",
            a.table_full, a.insert_failed
        );
        match (&hook, &confirm_degraded) {
            (Some(h), _) => {
                let _ = writeln!(
                    t,
                    "insertion failures seen at {h}: {events} (lost {lost}, sampled {sampled})"
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(t, "no function hook on __nf_conntrack_confirm: {why}");
            }
            _ => {}
        }
        match (&stage_probe, &stage_degraded) {
            (Some(p), _) => {
                let causes: Vec<String> = causes
                    .iter()
                    .map(|(c, n)| format!("{n} {}", c.describe()))
                    .collect();
                let _ = writeln!(
                    t,
                    "NETFILTER_DROP causes via {p}: {} (conntrack drop events {drop_events}, lost {drops_lost}, sampled {drops_sampled})",
                    if causes.is_empty() {
                        "none".to_string()
                    } else {
                        causes.join(", ")
                    }
                );
            }
            (None, Some(why)) => {
                let _ = writeln!(t, "NETFILTER_DROP causes unknown: {why}");
            }
            _ => {}
        }
        for x in &f {
            t.push_str(&x.render());
        }
        t
    };
    ended.out.finish(&text)
}
