//! `netdoc drops`: the drop family (with NET_RX context and the stage sentinels when they are
//! worth their cost) in one session, a live table, and a summary that accounts for every drop
//! the kernel counted.
use std::{
    collections::HashMap,
    io::{self, IsTerminal as _},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use netdoc_common::{DropEvent, DropKey};

use crate::{
    counted,
    drops::{
        DropMaps, PROBE,
        filter::{DropFilter, FilterArgs},
        render,
        report::{self, NamedDrop, PerNetns, SummaryInput},
        stacks::Stacks,
    },
    facts::netns::NetnsArg,
    kernel::Kernel,
    model::{
        cause::Coverage,
        names::{LiveNamer, Namer as _},
    },
    namespaces::turns::Activity,
    output::{Output, Summary},
    planner::HookKind,
    sentinel::Scope,
    session::{
        Component, DropUse, Namespaces, Request, Session,
        live::{self, Schedule, Signals, Stdout, View},
        registry::Families,
        stream::{Records, StreamOptions, Streamed as _},
    },
};

/// Stacks shown live and in the summary with `--stack`.
const STACKS_SHOWN: usize = 10;
/// Namespaces shown live, those with the most delivered drops.
const NAMESPACES_SHOWN: usize = 5;

pub struct DropsOptions {
    pub stream: StreamOptions,
    pub filter: FilterArgs,
    /// `--netns`: only its drops, and sentinels placed there too.
    pub netns: Option<NetnsArg>,
    /// Restricts the planner to one hook type.
    pub hook: Option<HookKind>,
    /// Whether to place the conntrack stage sentinels that name NETFILTER_DROP causes.
    pub causes: bool,
    /// Host-wide, how long a namespace's sentinels stay without a NETFILTER_DROP there.
    pub sentinels_quiet: Duration,
    /// `--stack`: each streamed drop carries its kernel stack.
    pub stack: bool,
}

struct DropsView {
    json: bool,
    top: usize,
    hook: String,
    tty: bool,
    namer: LiveNamer,
    last_flows: HashMap<DropKey, String>,
    previous: HashMap<DropKey, u64>,
    last_tick: Instant,
    delivered: u64,
    /// The per-CPU budget of streamed records, named when it samples drops out.
    max_events_per_sec: u64,
    per_netns: PerNetns,
    /// Drops counted by the kernel without a `kfree_skb`, per namespace.
    counted: counted::PerNamespace,
    /// Namespaces with streamed drops since the last tick: their counters are read first.
    active: Activity,
    namespaces: Namespaces,
    /// `--stack`: names each record's stack.
    stacks: Option<Stacks>,
}

impl DropsView {
    /// Remembers the last flow per bucket and prints each event in JSON mode.
    fn events(&mut self, maps: &DropMaps, events: &[DropEvent], out: &mut Stdout) -> Result<()> {
        self.delivered += events.len() as u64;
        let mut text = String::new();
        for ev in events {
            let mut named = NamedDrop::new(ev, &mut self.namer);
            if let Some(stacks) = self.stacks.as_mut() {
                named.stack = stacks.of(maps, ev.stack_id);
            }
            let key = DropKey {
                reason: ev.reason,
                nf_stage: ev.nf_stage,
                location: ev.location,
                ..DropKey::default()
            };
            self.last_flows.insert(key, named.flow());
            self.per_netns.add(&named);
            self.active.insert(ev.netns);
            if self.json {
                text += &Output::Drop(named).line();
            }
        }
        if text.is_empty() || out.is_closed() {
            return Ok(());
        }
        Ok(out.write(&text)?)
    }
}

impl View for DropsView {
    fn records(&mut self, session: &Session, batch: Records, out: &mut Stdout) -> Result<()> {
        match (batch.take::<DropEvent>(), session.part::<DropMaps>()) {
            (Ok(events), Some(maps)) => self.events(maps, &events, out),
            _ => Ok(()),
        }
    }

    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()> {
        self.counted
            .sample(&self.namespaces.lock(), &std::mem::take(&mut self.active));
        let Some(maps) = session.part::<DropMaps>().filter(|_| !self.json) else {
            return Ok(());
        };
        let counts = maps.counts();
        let rows = report::rows(
            &counts,
            &self.previous,
            self.last_tick.elapsed().as_secs_f64(),
            &self.last_flows,
            &mut self.namer,
        );
        self.previous = counts.iter().map(|(k, v)| (*k, v.iter().sum())).collect();
        self.last_tick = Instant::now();
        let sampled = maps.stats().sampled;
        let sampling = match sampled {
            0 => String::new(),
            n => format!(
                "sampling: {n} drops counted but not streamed (over {} per second per CPU)\n",
                self.max_events_per_sec
            ),
        };
        let stacks = match self.stacks.as_mut() {
            Some(s) => format!(
                "kernel stacks since the last refresh:\n{}",
                render::stacks(&s.take_recent(STACKS_SHOWN))
            ),
            None => String::new(),
        };
        Ok(out.line(&format!(
            "{}netdoc drops via {} — {:.0}s\n{}{sampling}{stacks}{}{}",
            live::clear_screen(self.tty),
            self.hook,
            session.started.elapsed().as_secs_f64(),
            render::table(&rows, self.top),
            render::per_namespace(&self.per_netns.ranked(), NAMESPACES_SHOWN),
            render::counted(&self.counted.report(false))
        ))?)
    }
}

pub async fn run(opts: DropsOptions, kernel: Kernel) -> Result<()> {
    let mut signals = Signals::install()?;
    let families = Families::discover(&kernel);
    let reasons = families.drops.reasons.clone();
    let filter = DropFilter::parse(&opts.filter, &reasons)?;
    opts.stream.check()?;
    let streaming = !opts.stream.counts_only;
    let mut request = Request {
        pages: opts.stream.pages,
        max_events_per_sec: opts.stream.max_events_per_sec,
        watched: opts.netns.clone(),
        ..Request::default()
    };
    // No sentinels (they run on every packet through netfilter) when --reason leaves no
    // NETFILTER_DROP to explain.
    let explains_netfilter = filter.reasons.is_empty()
        || (reasons.code("NETFILTER_DROP")).is_some_and(|c| filter.reasons.contains(&c));
    request.sentinels = match (opts.causes, explains_netfilter) {
        (false, _) => Err(crate::Error::Input("--no-causes given".into())),
        (true, false) => Err(crate::Error::Input(
            "not needed: --reason leaves out NETFILTER_DROP".into(),
        )),
        // Sentinels where NETFILTER_DROPs come, or in the filtered namespace from the start.
        (true, true) => Ok(Scope::only_or_on_demand(
            opts.netns.as_ref().map(|ns| ns.inode),
            opts.sentinels_quiet,
        )),
    };
    if request.sentinels.is_ok() {
        request.want(Component::StageSentinels);
    }
    // Softirq entry/exit give each drop record its NET_RX context. Counts-only has no records
    // and is the lowest-overhead mode: it skips these two hooks, which run on every softirq
    // (the benchmark measured them at about +300 ns per packet).
    if streaming {
        request.want(Component::NetRxContext);
    }
    request.want_drops(DropUse {
        filter,
        stream: streaming,
        hook: opts.hook,
        per_netns: false,
        stacks: opts.stack,
    });
    let mut session = Session::start(kernel, families, request)?;
    let Some(hook) = session.hook(PROBE) else {
        fail!(
            Unavailable,
            "{}",
            session.plan(PROBE).map(|p| p.failure()).unwrap_or_default()
        );
    };
    if streaming && !session.net_rx_known {
        say!("degraded: softirq hooks did not attach; drops carry no NET_RX context");
    }
    if let (true, Coverage::Blind, Err(why)) = (
        opts.causes && explains_netfilter,
        session.stages.coverage,
        &session.stages.status,
    ) {
        say!("degraded: NETFILTER_DROP causes unknown: {why}");
    }
    // The counters' baseline before "attached": whoever waits for that line may start the
    // incident.
    let namespaces = session.namespaces();
    let counted = counted::PerNamespace::start(
        &namespaces.lock(),
        opts.netns.as_ref().map(|n| n.inode),
        &counted::DROPS_ONLY,
    );
    say!(
        "attached {PROBE} probe via {hook} (reason names: {}); Ctrl-C to stop",
        reasons.source.describe()
    );
    let mut view = DropsView {
        json: opts.stream.json,
        top: opts.stream.top,
        hook: hook.clone(),
        tty: io::stdout().is_terminal(),
        namer: LiveNamer::new(
            reasons,
            session.net_rx_known,
            session.stages.coverage,
            session.namespaces(),
        ),
        last_flows: HashMap::new(),
        previous: HashMap::new(),
        last_tick: Instant::now(),
        delivered: 0,
        max_events_per_sec: opts.stream.max_events_per_sec,
        per_netns: PerNetns::default(),
        counted,
        active: Activity::new(),
        namespaces,
        stacks: (streaming && opts.stack).then(Stacks::new),
    };
    let schedule = Schedule {
        interval: opts.stream.interval,
        duration: opts.stream.duration,
    };
    let mut ended = live::run(&mut session, &mut view, &mut signals, schedule).await?;

    let maps = session
        .part::<DropMaps>()
        .context("the drop probe's maps")?;
    let stats = maps.stats();
    let duration_s = session.started.elapsed().as_secs_f64();
    let rows = report::rows(
        &maps.counts(),
        &HashMap::new(),
        duration_s,
        &view.last_flows,
        &mut view.namer,
    );
    let delivered = view.delivered;
    let summary = report::summary(SummaryInput {
        hook,
        reason_names: view.namer.reasons().source.describe(),
        duration_s,
        streaming,
        stats,
        delivered,
        sampled_by_reason: maps
            .sampled()
            .into_iter()
            .map(|(code, n)| (view.namer.reasons().name(code), n))
            .collect(),
        max_events_per_sec: opts.stream.max_events_per_sec,
        unknown_records: session.unknown_records(DropEvent::STREAM),
        stacks_missing: view.stacks.as_ref().map(|s| s.missing),
        stacks: view
            .stacks
            .as_ref()
            .map(|s| s.top(STACKS_SHOWN))
            .unwrap_or_default(),
        in_net_rx: session
            .net_rx_known
            .then(|| maps.per_cpu().iter().map(|c| c.1).sum()),
        netfilter_stages: match &session.stages.status {
            Ok(s) => s.clone(),
            Err(why) => why.to_string(),
        },
        rows: &rows,
        namespaces: view.per_netns.ranked(),
        counted: {
            view.counted.sample_all(&view.namespaces.lock());
            view.counted.report(true)
        },
        namespaces_gone: session.namespaces_gone(),
        probes: session.probe_statuses(),
    });
    if streaming && delivered + stats.lost + stats.sampled != stats.matched {
        log::warn!(
            "accounting mismatch: delivered {delivered} + lost {} + sampled {} != matched {}",
            stats.lost,
            stats.sampled,
            stats.matched,
        );
    }
    let text = if opts.stream.json {
        Output::Summary(Summary::Drops(summary)).line()
    } else {
        render::summary(&summary)
    };
    ended.out.finish(&text)
}
