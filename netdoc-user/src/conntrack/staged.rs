//! Layer (b) as `netdoc conntrack` uses it where no function hook exists: the drop probe,
//! limited in the kernel to `NETFILTER_DROP`, with the stage sentinels, so each drop arrives as
//! an event that names its cause (conntrack confirm, conntrack in, a rule).
use std::collections::BTreeMap;

use aya::Ebpf;
use netdoc_common::DropEvent;

use super::{
    sentinel::{self, Sentinels},
    stage::{self, Cause},
};
use crate::{
    drops::{
        DropKernel, DropMaps, PROBE as DROPS,
        filter::{DropFilter, FilterArgs},
        report::{NamedDrop, Namer},
        run::LiveNamer,
        set_reason_filter,
    },
    facts::{caps, netns},
    kernel::Kernel,
    loader::{self, Configs},
    planner,
    stream::Readers,
};

/// Perf buffer pages per CPU: conntrack drops come in bursts of at most a few thousand.
const PAGES: usize = 16;

/// The attached drop probe and sentinels. Dropping it detaches both.
pub struct StageProbe {
    ebpf: Ebpf,
    sentinels: Sentinels,
    maps: DropMaps,
    namer: LiveNamer,
    pub readers: Readers<DropEvent>,
}

/// Each cause's `NETFILTER_DROP` count, from the kernel's own aggregation (never sampled).
pub type CauseCounts = BTreeMap<Cause, u64>;

impl StageProbe {
    /// Attaches in this namespace and `ns` (a `--netns` value); or says why it cannot.
    pub fn start(k: &Kernel, ns: Option<&str>) -> Result<Self, String> {
        caps::require_tracing().map_err(|e| format!("{e:#}"))?;
        let kernel = DropKernel::discover(k);
        let wanted = sentinel::wanted(&kernel.reasons)
            .ok_or("no NETFILTER_DROP reason or no nf_conntrack on this kernel")?;
        let filter = DropFilter::parse(
            &FilterArgs {
                reason: Some("NETFILTER_DROP".into()),
                netns: ns.map(str::to_string),
                ..FilterArgs::default()
            },
            &kernel.reasons,
        )
        .map_err(|e| format!("{e:#}"))?;
        let mut cfg = kernel.config();
        filter.apply(&mut cfg);
        cfg.stream = 1;
        cfg.netfilter_drop = wanted;
        let mut ebpf = loader::load(&Configs {
            drops: cfg,
            ..Configs::default()
        })
        .map_err(|e| format!("{e:#}"))?;
        set_reason_filter(&mut ebpf, &filter.reasons).map_err(|e| format!("{e:#}"))?;
        let maps = DropMaps::take(&mut ebpf).map_err(|e| format!("{e:#}"))?;
        let events = ebpf
            .take_map("DROP_EVENTS")
            .ok_or("DROP_EVENTS map missing")?;
        let readers = Readers::open(events, PAGES).map_err(|e| format!("{e:#}"))?;
        let namespaces: Vec<_> = ns.and_then(netns::other_file).into_iter().collect();
        let (coverage, sentinels) = sentinel::start(&ebpf, Some(wanted), &namespaces);
        let sentinels = sentinels?;
        let plan = planner::attach_best(&mut ebpf, DROPS, kernel.candidates(), k.aya_btf.as_ref());
        plan.chosen().ok_or_else(|| plan.failure())?;
        Ok(Self {
            ebpf,
            sentinels,
            maps,
            namer: LiveNamer::new(kernel.reasons, false, coverage),
            readers,
        })
    }

    pub fn describe(&self) -> String {
        format!("netfilter stage sentinels ({})", self.sentinels.describe())
    }

    /// Names a drop and its cause.
    pub fn name(&mut self, ev: &DropEvent) -> NamedDrop {
        NamedDrop::new(ev, &mut self.namer)
    }

    /// Detaches, drains the remaining events into `sink`, and returns the drops per cause and
    /// the events lost (buffer full).
    pub async fn finish(self, mut sink: impl FnMut(NamedDrop)) -> (CauseCounts, u64) {
        let StageProbe {
            ebpf,
            sentinels,
            maps,
            mut namer,
            mut readers,
        } = self;
        drop(ebpf);
        drop(sentinels);
        readers.stop();
        while let Some(batch) = readers.rx.recv().await {
            for ev in &batch {
                sink(NamedDrop::new(ev, &mut namer));
            }
        }
        let mut counts = CauseCounts::new();
        for (key, per_cpu) in maps.counts() {
            let reason = namer.reasons().name(key.reason);
            let location = namer.location(key.location);
            let coverage = namer.coverage();
            if let Some(c) = stage::classify(&reason, &location, key.nf_stage, coverage) {
                *counts.entry(c).or_insert(0) += per_cpu.iter().sum::<u64>();
            }
        }
        (counts, maps.stats().lost)
    }
}
