//! The probes a check runs: drops and retransmits, counts only (no event stream), each
//! attached through the planner. A probe this kernel refuses is recorded with why, not fatal:
//! only expectations that need it become untestable.
use std::collections::BTreeSet;

use aya::Ebpf;

use super::measure::{DropCount, Measurements};
use crate::{
    drops::{
        self, DropKernel, DropMaps,
        filter::{DropFilter, FilterArgs},
        reasons::Source,
    },
    facts::kallsyms::Kallsyms,
    kernel::Kernel,
    loader::{self, Configs},
    planner,
    retrans::{RetransKernel, RetransMaps},
};

pub struct Tracer {
    /// Holds the links: dropping it detaches every program.
    _ebpf: Option<Ebpf>,
    drops: Result<(DropMaps, DropKernel), String>,
    retrans: Result<RetransMaps, String>,
    /// Retransmits count only in these namespaces (all when empty).
    netns: BTreeSet<u32>,
}

impl Tracer {
    /// `drop_netns`: count only drops in this namespace (a `--netns` value).
    pub fn start(
        kernel: &Kernel,
        drop_netns: Option<&str>,
        netns: BTreeSet<u32>,
    ) -> anyhow::Result<Self> {
        let drop_kernel = DropKernel::discover(kernel);
        let filter = DropFilter::parse(
            &FilterArgs {
                netns: drop_netns.map(str::to_string),
                ..Default::default()
            },
            &drop_kernel.reasons,
        )?;
        let mut drop_cfg = drop_kernel.config();
        filter.apply(&mut drop_cfg);
        let retrans_kernel = RetransKernel::discover(kernel);
        let mut ebpf = match loader::load(&Configs {
            drops: drop_cfg,
            retrans: retrans_kernel.config,
            ..Configs::default()
        }) {
            Ok(e) => e,
            Err(e) => {
                let why = format!("netdoc's eBPF object does not load on this kernel: {e:#}");
                return Ok(Self {
                    _ebpf: None,
                    drops: Err(why.clone()),
                    retrans: Err(why),
                    netns,
                });
            }
        };
        let drops = (|| {
            let maps = DropMaps::take(&mut ebpf).map_err(|e| format!("{e:#}"))?;
            let plan = planner::attach_best(
                &mut ebpf,
                drops::PROBE,
                drop_kernel.candidates(),
                kernel.aya_btf.as_ref(),
            );
            plan.chosen().ok_or_else(|| plan.failure())?;
            Ok((maps, drop_kernel))
        })();
        let retrans = (|| {
            let maps = RetransMaps::take(&mut ebpf).map_err(|e| format!("{e:#}"))?;
            let plans = retrans_kernel.attach(&mut ebpf, kernel);
            if let Some(failed) = plans.iter().find(|p| p.chosen().is_none()) {
                return Err(failed.failure());
            }
            Ok(maps)
        })();
        Ok(Self {
            _ebpf: Some(ebpf),
            drops,
            retrans,
            netns,
        })
    }

    /// Reads what the probes counted into `m`, then detaches.
    pub fn finish(self, m: &mut Measurements) {
        m.drops = Some(
            self.drops
                .as_ref()
                .map_err(Clone::clone)
                .map(|(maps, kernel)| {
                    let kallsyms = Kallsyms::load().ok();
                    m.reason_names = (kernel.reasons.source != Source::Unavailable)
                        .then(|| kernel.reasons.names().map(str::to_string).collect());
                    maps.counts()
                        .iter()
                        .map(|(key, per_cpu)| DropCount {
                            reason: kernel.reasons.name(key.reason),
                            location: kallsyms
                                .as_ref()
                                .map_or(format!("{:#x}", key.location), |k| {
                                    k.describe(key.location)
                                }),
                            count: per_cpu.iter().sum(),
                        })
                        .collect()
                }),
        );
        m.retrans = Some(self.retrans.as_ref().map_err(Clone::clone).map(|maps| {
            maps.flows()
                .iter()
                .filter(|(k, _)| self.netns.is_empty() || self.netns.contains(&k.netns))
                .fold((0, 0), |(segs, synacks), (_, s)| {
                    (segs + s.segs, synacks + s.synacks)
                })
        }));
    }
}
