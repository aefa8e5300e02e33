//! `netdoc doctor`: every family in one session, every namespace's counters, and the rules over
//! what they saw; live, the top findings; at the end, the ranked report (and, when asked, the
//! recording it came from and the report as an HTML page). `--replay` reads a recording back,
//! with no kernel at all.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use super::{net_rx, pending::PendingFile};
use crate::{
    conntrack,
    counted::{self, neighbours::NeighbourTables},
    doctor::{
        self, DropGrouper, Drops, HostFacts, NetRx, RECORD_VERSION, Report, Snapshot, html, render,
    },
    drops::{
        filter::{DropFilter, FilterArgs},
        report::{self, NamedDrop},
    },
    facts::{host, netns::NetnsArg},
    kernel::Kernel,
    model::{cause::Cause, names::LiveNamer},
    namespaces::NetnsKey,
    output::Output,
    retrans,
    sentinel::Scope,
    session::{
        Component, DropUse, Namespaces, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::Records,
    },
};

/// Exit codes: documented in the README, `netdoc doctor --help` and `docs/schema.md`.
pub const HEALTHY: u8 = 0;
pub const FINDINGS: u8 = 1;
/// netdoc could not run (no privileges, no probe, a bad recording).
pub const CANNOT_RUN: u8 = 2;

/// The stretch over which NET_RX shares are measured: the busiest one of the run is reported.
const NET_RX_WINDOW: Duration = Duration::from_secs(2);

/// Findings shown live.
const LIVE_TOP: usize = 5;

pub struct DoctorOptions {
    pub duration: Duration,
    pub interval: Duration,
    pub json: bool,
    pub netns: Option<NetnsArg>,
    pub record: Option<PathBuf>,
    /// Where to write the report as HTML.
    pub report: Option<PathBuf>,
    pub pages: usize,
}

struct DoctorView {
    json: bool,
    tty: bool,
    namer: LiveNamer,
    grouper: DropGrouper,
    delivered: u64,
    /// `NETFILTER_DROP` events per namespace and cause, for the conntrack view.
    causes: BTreeMap<NetnsKey, BTreeMap<Cause, u64>>,
    counted: counted::PerNamespace,
    conntrack: conntrack::PerNamespace,
    neighbours: NeighbourTables,
    namespaces: Namespaces,
    net_rx: Option<net_rx::BusiestWindow>,
    host: HostFacts,
    /// Findings already announced on stderr (by id and scope), when there is no live view.
    announced: BTreeSet<(String, String)>,
}

impl DoctorView {
    /// What the rules see now. `complete` (the final report, not every tick) also names
    /// sockets' owners (every process's fd table) and reads the NIC queues.
    fn snapshot(&mut self, session: &Session, complete: bool) -> Snapshot {
        let duration_s = session.started.elapsed().as_secs_f64();
        let drops = match session.drops.as_ref() {
            Some(maps) => {
                let stats = maps.stats();
                Drops {
                    sites: report::rows(
                        &maps.counts(),
                        &HashMap::new(),
                        duration_s,
                        &HashMap::new(),
                        &mut self.namer,
                    ),
                    groups: self.grouper.groups(),
                    matched: stats.matched,
                    delivered: self.delivered,
                    lost: stats.lost,
                    folded: self.grouper.folded,
                }
            }
            None => Drops::default(),
        };
        let retrans = session.retrans.as_ref().map_or_else(Vec::new, |maps| {
            retrans::flow_rows(maps, &HashMap::new(), 0.0, |n| {
                self.namespaces.resolve(n, 0, u64::MAX)
            })
        });
        let net_rx = self.net_rx.as_ref().map(|w| {
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
            counted: self.counted.report(complete),
            conntrack: self.conntrack.report(&self.causes),
            neighbours: self.neighbours.report(),
            retrans,
            net_rx,
            probes: session.probe_statuses(),
            namespaces_gone,
            namespaces_gone_earlier,
        }
    }
}

impl View for DoctorView {
    fn records(&mut self, _: &Session, batch: Records, _: &mut Stdout) -> Result<()> {
        if let Records::Drops(events) = batch {
            self.delivered += events.len() as u64;
            for ev in &events {
                let d = NamedDrop::new(ev, &mut self.namer);
                if let Some(cause) = d.cause {
                    let per_ns = self.causes.entry((d.netns, d.netns_cookie)).or_default();
                    *per_ns.entry(cause).or_default() += 1;
                }
                self.grouper.add(&d);
            }
        }
        Ok(())
    }

    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()> {
        {
            let inventory = self.namespaces.lock();
            self.counted.sample(&inventory);
            self.conntrack.sample(&inventory);
            self.neighbours.sample(&inventory);
        }
        if let Some(w) = self.net_rx.as_mut() {
            w.sample(session);
        }
        let findings = doctor::diagnose(&self.snapshot(session, false));
        if self.tty && !self.json {
            return Ok(out.write(&format!(
                "{}netdoc doctor — {:.0}s\n{}",
                live::clear_screen(true),
                session.started.elapsed().as_secs_f64(),
                render::top(&findings, LIVE_TOP)
            ))?);
        }
        // No terminal to redraw: each new problem once, on stderr, so logs show when it began.
        for f in findings
            .iter()
            .filter(|f| f.severity > crate::model::finding::Severity::Info)
        {
            if self
                .announced
                .insert((f.id.to_string(), f.scope.to_string()))
            {
                eprintln!(
                    "netdoc: at {:.0}s: {} [{}] {} ({})",
                    session.started.elapsed().as_secs_f64(),
                    f.id,
                    f.severity.name(),
                    f.title,
                    f.scope
                );
            }
        }
        Ok(())
    }
}

/// Every family, each component once: drops streamed (the rules want their flows), NET_RX
/// context and queue load, retransmits counted per flow in the kernel, and the stage sentinels
/// in every namespace that uses conntrack.
fn request(opts: &DoctorOptions, families: &Families) -> Result<Request> {
    let mut request = Request {
        pages: opts.pages,
        watched: opts.netns.clone(),
        sentinels: Ok(match &opts.netns {
            Some(ns) => Scope::Only(ns.inode),
            None => Scope::EveryActive,
        }),
        ..Request::default()
    }
    .with(Component::NetRxContext)
    .with(Component::QueueLoad)
    .with(Component::Retransmits)
    .with(Component::StageSentinels);
    let filter = DropFilter::parse(
        &FilterArgs {
            netns: opts.netns.as_ref().map(|n| n.inode),
            ..FilterArgs::default()
        },
        &families.drops.reasons,
    )?;
    request.want_drops(DropUse {
        filter,
        stream: true,
        hook: None,
        per_netns: false,
    });
    Ok(request)
}

pub async fn run(opts: DoctorOptions, kernel: Kernel) -> Result<u8> {
    let mut signals = Signals::install()?;
    // A recording or report that cannot be written fails now, not after the run.
    let record = opts
        .record
        .as_deref()
        .map(|p| PendingFile::create(p, "--record"))
        .transpose()?;
    let page = opts
        .report
        .as_deref()
        .map(|p| PendingFile::create(p, "--report"))
        .transpose()?;
    let families = Families::discover(&kernel);
    let request = request(&opts, &families)?;
    let reason_names = families.drops.reasons.source.describe().to_string();
    let mut session = Session::start_dropping(kernel, families, request)?;
    let namespaces = session.namespaces();
    let only = opts.netns.as_ref().map(|n| n.inode);
    // Baselines before "attached": whoever waits for that line may start the incident.
    let (counted, conntrack) = {
        let inventory = namespaces.lock();
        (
            counted::PerNamespace::start(&inventory, only, &doctor::CONTEXT),
            conntrack::PerNamespace::start(&inventory, only),
        )
    };
    let neighbours = NeighbourTables::start();
    let net_rx = session
        .net_rx_known
        .then(|| net_rx::BusiestWindow::start(&session, NET_RX_WINDOW));
    eprintln!(
        "netdoc: doctor attached: {} probes, watching {} for {:?}; Ctrl-C to stop early",
        session
            .plans
            .iter()
            .filter(|p| p.chosen().is_some())
            .count(),
        opts.netns
            .as_ref()
            .map_or("every namespace", |n| n.given.as_str()),
        opts.duration
    );
    let mut view = DoctorView {
        json: opts.json,
        tty: std::io::stdout().is_terminal(),
        namer: LiveNamer::new(
            session.families.drops.reasons.clone(),
            session.net_rx_known,
            session.stages.coverage,
            session.namespaces(),
        ),
        grouper: DropGrouper::default(),
        delivered: 0,
        causes: BTreeMap::new(),
        counted,
        conntrack,
        neighbours,
        namespaces,
        net_rx,
        host: HostFacts {
            hostname: host::hostname(),
            kernel: host::kernel_release(),
            reason_names,
        },
        announced: BTreeSet::new(),
    };
    let schedule = Schedule {
        interval: opts.interval,
        duration: Some(opts.duration),
    };
    let mut ended = live::run(&mut session, &mut view, &mut signals, schedule).await?;
    {
        let inventory = view.namespaces.lock();
        view.counted.sample(&inventory);
        view.conntrack.sample(&inventory);
        view.neighbours.sample(&inventory);
    }
    let snapshot = view.snapshot(&session, true);
    if let Some(file) = record {
        let text = serde_json::to_string(&snapshot).context("encoding the recording")?;
        file.commit((text + "\n").as_bytes())?;
    }
    finish(&snapshot, false, opts.json, page, &mut ended.out)
}

/// Prints the report of `snapshot` (and writes it as HTML to `page`); the exit code says
/// whether anything is wrong.
fn finish(
    snapshot: &Snapshot,
    replayed: bool,
    json: bool,
    page: Option<PendingFile>,
    out: &mut Stdout,
) -> Result<u8> {
    let report = Report::new(snapshot, replayed);
    if let Some(file) = page {
        file.commit(html::render(&report, snapshot).as_bytes())?;
    }
    let text = if json {
        Output::Doctor(report.clone()).line()
    } else {
        render::report(&report)
    };
    out.finish(&text)?;
    Ok(match doctor::anything_wrong(&report.findings) {
        true => FINDINGS,
        false => HEALTHY,
    })
}

/// `--replay FILE`: the report of a recording, on any machine, without privileges.
pub fn replay(path: &Path, json: bool, page: Option<&Path>) -> Result<u8> {
    let page = page
        .map(|p| PendingFile::create(p, "--report"))
        .transpose()?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --replay {}", path.display()))?;
    let version = serde_json::from_str::<serde_json::Value>(&text)
        .with_context(|| format!("--replay {}: not a netdoc doctor recording", path.display()))?
        .get("version")
        .and_then(serde_json::Value::as_u64);
    if version != Some(RECORD_VERSION as u64) {
        bail!(
            "--replay {}: recording version {} but this netdoc reads version {RECORD_VERSION}",
            path.display(),
            version.map_or("unknown".into(), |v| v.to_string())
        );
    }
    let snapshot: Snapshot = serde_json::from_str(&text)
        .with_context(|| format!("--replay {}: not a netdoc doctor recording", path.display()))?;
    finish(&snapshot, true, json, page, &mut Stdout::new())
}
