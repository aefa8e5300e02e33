//! `netdoc doctor`: every family in one session, every namespace's counters, and the rules over
//! what they saw; live, the top findings; at the end, the ranked report (and, when asked, the
//! recording it came from and the report as an HTML page). `--replay` reads a recording back,
//! with no kernel at all.
use std::{
    collections::BTreeSet,
    io::IsTerminal as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, Result};
use netdoc_common::DropEvent;

use super::{pending::PendingFile, watch::Watch};
use crate::{
    doctor::{self, HostFacts, Report, Snapshot, html, render},
    drops::filter::{DropFilter, FilterArgs},
    facts::{host, netns::NetnsArg},
    kernel::Kernel,
    output::Output,
    sentinel::{self, Scope},
    session::{
        Component, DropUse, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::Records,
    },
};

/// Exit codes: documented in the README, `netdoc doctor --help` and `docs/schema.md`; 2, could
/// not examine, is any error's (`crate::error`).
pub const HEALTHY: u8 = 0;
pub const FINDINGS: u8 = 1;

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
    pub max_events_per_sec: u64,
}

struct DoctorView {
    json: bool,
    tty: bool,
    watch: Watch,
    /// Findings already announced on stderr (by id and scope), when there is no live view.
    announced: BTreeSet<(String, String)>,
}

impl View for DoctorView {
    fn records(&mut self, _: &Session, batch: Records, _: &mut Stdout) -> Result<()> {
        if let Ok(events) = batch.take::<DropEvent>() {
            self.watch.records(&events);
        }
        Ok(())
    }

    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()> {
        self.watch.sample(session);
        let findings = doctor::diagnose(&self.watch.snapshot(session, false));
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
                say!(
                    "at {:.0}s: {} [{}] {} ({})",
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
/// where NETFILTER_DROPs come.
fn request(opts: &DoctorOptions, families: &Families) -> Result<Request> {
    let mut request = Request {
        pages: opts.pages,
        max_events_per_sec: opts.max_events_per_sec,
        watched: opts.netns.clone(),
        sentinels: Ok(Scope::only_or_on_demand(
            opts.netns.as_ref().map(|ns| ns.inode),
            sentinel::QUIET,
        )),
        ..Request::default()
    }
    .with(Component::NetRxContext)
    .with(Component::SoftirqTime)
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
        stacks: false,
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
    // Baselines before "attached": whoever waits for that line may start the incident.
    let watch = Watch::start(
        &session,
        opts.netns.as_ref().map(|n| n.inode),
        HostFacts {
            hostname: host::hostname(),
            kernel: host::kernel_release(),
            reason_names,
            settings: host::backlog_settings(),
        },
    );
    say!(
        "doctor attached: {} probes, watching {} for {:?}; Ctrl-C to stop early",
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
        watch,
        announced: BTreeSet::new(),
    };
    let schedule = Schedule {
        interval: opts.interval,
        duration: Some(opts.duration),
    };
    let mut ended = live::run(&mut session, &mut view, &mut signals, schedule).await?;
    view.watch.sample_all(&session);
    let snapshot = view.watch.snapshot(&session, true);
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

/// `--replay FILE`: the report of a recording, on any machine, without privileges; a file
/// over `max_mib` is refused unread.
pub fn replay(path: &Path, max_mib: u64, json: bool, page: Option<&Path>) -> Result<u8> {
    let page = page
        .map(|p| PendingFile::create(p, "--report"))
        .transpose()?;
    let snapshot = doctor::recording::read(path, max_mib)?;
    finish(&snapshot, true, json, page, &mut Stdout::new())
}
