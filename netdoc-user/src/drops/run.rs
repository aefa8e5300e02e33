//! `netdoc drops`: attach, stream, refresh a live view, and on exit detach and account for
//! every drop the kernel counted.
use std::{
    collections::HashMap,
    io::{IsTerminal as _, Write as _},
    path::PathBuf,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use netdoc_common::{DropEvent, DropKey};
use tokio::signal::unix::{SignalKind, signal};

use super::{
    DropKernel, DropMaps, PROBE,
    filter::{DropFilter, FilterArgs},
    reasons::DropReasons,
    render,
    report::{self, NamedDrop, Namer, SummaryInput},
};
use crate::{
    conntrack::{sentinel, stage::Coverage},
    facts::{
        caps,
        kallsyms::Kallsyms,
        netns::{self, NetnsNames},
    },
    kernel::Kernel,
    loader::{self, Configs},
    planner,
    softirq::{self, SoftirqKernel},
    stream::{Readers, StreamOptions},
};

pub struct DropsOptions {
    pub stream: StreamOptions,
    pub filter: FilterArgs,
    /// Restricts the planner to one hook type.
    pub hook: Option<String>,
    /// Whether to place the conntrack stage sentinels that name NETFILTER_DROP causes.
    pub causes: bool,
    pub btf: PathBuf,
}

/// Names from the running system: /proc/kallsyms, /run/netns, the devices in each namespace.
pub struct LiveNamer {
    net_rx_known: bool,
    coverage: Coverage,
    reasons: DropReasons,
    kallsyms: Option<Kallsyms>,
    netns: NetnsNames,
    locations: HashMap<u64, String>,
}

impl LiveNamer {
    pub fn new(reasons: DropReasons, net_rx_known: bool, coverage: Coverage) -> Self {
        Self {
            net_rx_known,
            coverage,
            reasons,
            kallsyms: Kallsyms::load().ok(),
            netns: NetnsNames::new(),
            locations: HashMap::new(),
        }
    }
}

impl Namer for LiveNamer {
    fn reasons(&self) -> &DropReasons {
        &self.reasons
    }
    fn net_rx_known(&self) -> bool {
        self.net_rx_known
    }
    fn coverage(&self) -> Coverage {
        self.coverage
    }
    fn location(&mut self, addr: u64) -> String {
        let k = &self.kallsyms;
        self.locations
            .entry(addr)
            .or_insert_with(|| {
                k.as_ref()
                    .map_or(format!("{addr:#x}"), |k| k.describe(addr))
            })
            .clone()
    }
    fn netns_name(&mut self, ino: u32) -> Option<String> {
        self.netns.name(ino)
    }
    fn device(&mut self, netns: u32, ifindex: u32) -> Option<String> {
        self.netns.device(netns, ifindex)
    }
}

pub async fn run(opts: DropsOptions) -> Result<()> {
    caps::require_tracing()?;
    // Handlers first: a signal at any point after this detaches cleanly and prints the summary.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let host = Kernel::discover(&opts.btf);
    let kernel = DropKernel::discover(&host);
    let context = SoftirqKernel::discover(&host);
    let filter = DropFilter::parse(&opts.filter, &kernel.reasons)?;
    opts.stream.check()?;
    let streaming = !opts.stream.counts_only;
    let mut cfg = kernel.config();
    filter.apply(&mut cfg);
    if cfg.filters & netdoc_common::filter::NEEDS_PACKET != 0
        && cfg.skb.skb_head == netdoc_common::NO_OFFSET
    {
        bail!(
            "--netns/--proto/--port/--addr need kernel BTF to decode packets, and {} is unreadable",
            opts.btf.display()
        );
    }
    cfg.stream = streaming as u32;
    // No sentinels (they run on every packet through netfilter) when --reason leaves no
    // NETFILTER_DROP to explain.
    let explain_netfilter = opts.causes
        && (filter.reasons.is_empty()
            || (kernel.reasons.code("NETFILTER_DROP"))
                .is_some_and(|c| filter.reasons.contains(&c)));
    let netfilter_drop = sentinel::wanted(&kernel.reasons).filter(|_| explain_netfilter);
    cfg.netfilter_drop = netfilter_drop.unwrap_or(netdoc_common::REASON_UNAVAILABLE);

    let mut ebpf = loader::load(&Configs {
        drops: cfg,
        softirq: context.config,
        ..Configs::default()
    })?;
    super::set_reason_filter(&mut ebpf, &filter.reasons)?;
    let maps = DropMaps::take(&mut ebpf)?;
    // Buffers open before the program attaches, so no event arrives with nobody to read it.
    let mut readers = match streaming {
        true => Some(Readers::<DropEvent>::open(
            ebpf.take_map("DROP_EVENTS").context("DROP_EVENTS map")?,
            opts.stream.pages,
        )?),
        false => None,
    };

    // Softirq entry/exit first, so every drop record knows whether it happened inside NET_RX.
    // Counts-only has no records and is the lowest-overhead mode: it skips these two hooks,
    // which run on every softirq (the benchmark measured them at about +300 ns per packet).
    let net_rx_known = streaming
        && softirq::timed(&context.attach(&mut ebpf, &host, &[softirq::ENTRY, softirq::EXIT]));
    if streaming && !net_rx_known {
        eprintln!("netdoc: degraded: softirq hooks did not attach; drops carry no NET_RX context");
    }
    // Sentinels in this namespace and the filtered one, so its NETFILTER_DROPs get a cause.
    let namespaces: Vec<_> = opts
        .filter
        .netns
        .as_deref()
        .and_then(netns::other_file)
        .into_iter()
        .collect();
    let (coverage, sentinels) = if explain_netfilter {
        sentinel::start(&ebpf, netfilter_drop, &namespaces)
    } else if !opts.causes {
        (Coverage::Blind, Err("--no-causes given".into()))
    } else {
        (
            Coverage::Blind,
            Err("not needed: --reason leaves out NETFILTER_DROP".into()),
        )
    };
    let netfilter_stages = match &sentinels {
        Ok(s) => s.describe(),
        Err(why) => why.clone(),
    };
    if let (true, Coverage::Blind, Err(why)) = (explain_netfilter, coverage, &sentinels) {
        eprintln!("netdoc: degraded: NETFILTER_DROP causes unknown: {why}");
    }
    let mut namer = LiveNamer::new(kernel.reasons.clone(), net_rx_known, coverage);
    let mut candidates = kernel.candidates();
    if let Some(only) = &opts.hook {
        for c in &mut candidates {
            if c.hook.kind() != only {
                c.precondition = Err(format!("--hook {only} given"));
            }
        }
    }
    let plan = planner::attach_best(&mut ebpf, PROBE, candidates, host.aya_btf.as_ref());
    let Some(chosen) = plan.chosen() else {
        bail!("{}", plan.failure());
    };
    let hook = chosen.hook.to_string();
    eprintln!(
        "netdoc: attached {PROBE} probe via {hook} (reason names: {}); Ctrl-C to stop",
        kernel.reasons.source.describe()
    );

    let started = Instant::now();
    let deadline = opts
        .stream
        .duration
        .map(|d| tokio::time::Instant::now() + d);
    let mut tick = tokio::time::interval(opts.stream.interval);
    tick.tick().await;
    let live = !opts.stream.json;
    let tty = std::io::stdout().is_terminal();
    let mut out = std::io::stdout().lock();
    let mut last_flows: HashMap<DropKey, String> = HashMap::new();
    let mut previous: HashMap<DropKey, u64> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut delivered = 0u64;

    loop {
        tokio::select! {
            Some(events) = async { readers.as_mut()?.rx.recv().await }, if readers.is_some() => {
                delivered += events.len() as u64;
                if !emit(&events, &opts, &mut namer, &mut last_flows, &mut out) {
                    break; // stdout closed
                }
            },
            _ = tick.tick(), if live => {
                let counts = maps.counts();
                let rows = report::rows(&counts, &previous, last_tick.elapsed().as_secs_f64(), &last_flows, &mut namer);
                previous = counts.iter().map(|(k, v)| (*k, v.iter().sum())).collect();
                last_tick = Instant::now();
                let screen = if tty { "\x1b[2J\x1b[H" } else { "" };
                let head = format!("netdoc drops via {hook} — {:.0}s", started.elapsed().as_secs_f64());
                if writeln!(out, "{screen}{head}\n{}", render::table(&rows, opts.stream.top)).is_err() {
                    break;
                }
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => break,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }

    // Detach first (dropping the object releases every link and waits for running programs),
    // then drain what is left, so delivered + lost matches the kernel's count exactly.
    drop(ebpf);
    drop(sentinels);
    let (mut unknown_records, mut perf_lost) = (0, 0);
    if let Some(mut r) = readers {
        r.stop();
        // Readers hold the only senders: the channel closes once each has drained its buffer.
        while let Some(events) = r.rx.recv().await {
            delivered += events.len() as u64;
            emit(&events, &opts, &mut namer, &mut last_flows, &mut out);
        }
        let totals = r.totals().await?;
        unknown_records = totals.decode.unknown;
        perf_lost = totals.perf_lost;
    }
    let stats = maps.stats();
    let duration_s = started.elapsed().as_secs_f64();
    let rows = report::rows(
        &maps.counts(),
        &HashMap::new(),
        duration_s,
        &last_flows,
        &mut namer,
    );
    let summary = report::summary(SummaryInput {
        hook,
        reason_names: namer.reasons.source.describe(),
        duration_s,
        streaming,
        stats,
        delivered,
        unknown_records,
        in_net_rx: net_rx_known.then(|| maps.per_cpu().iter().map(|c| c.1).sum()),
        netfilter_stages,
        rows: &rows,
    });
    if streaming && delivered + stats.lost != stats.matched {
        log::warn!(
            "accounting mismatch: delivered {delivered} + lost {} != matched {} (perf reported {} lost)",
            stats.lost,
            stats.matched,
            perf_lost
        );
    }
    let text = if opts.stream.json {
        serde_json::to_string(&summary)? + "\n"
    } else {
        render::summary(&summary)
    };
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

/// Prints events (JSON mode) and remembers the last flow per bucket. False once stdout is gone.
fn emit(
    events: &[DropEvent],
    opts: &DropsOptions,
    namer: &mut LiveNamer,
    last_flows: &mut HashMap<DropKey, String>,
    out: &mut impl std::io::Write,
) -> bool {
    for ev in events {
        let named = NamedDrop::new(ev, namer);
        let key = DropKey {
            reason: ev.reason,
            nf_stage: ev.nf_stage,
            location: ev.location,
            ..DropKey::default()
        };
        if opts.stream.json {
            let line = serde_json::to_string(&named).unwrap_or_default();
            if writeln!(out, "{line}").is_err() {
                return false;
            }
        }
        last_flows.insert(key, named.flow());
    }
    out.flush().is_ok()
}
