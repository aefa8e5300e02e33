//! The drops probe family: `skb:kfree_skb` programs, their config, their maps and their events.
pub mod filter;
pub mod render;
pub mod report;
pub mod stacks;

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, bail};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, StackTraceMap},
};
use netdoc_common::{
    CountSlot, DROP_COUNT_SLOTS, DropConfig, DropEvent, DropKey, NO_OFFSET, REASON_UNAVAILABLE,
    SkbOffsets, TracepointOffsets, context, filter::NEEDS_PACKET, stat,
};

use crate::{
    facts::tracefs::EventFormat,
    family::Family,
    kernel::Kernel,
    loader::ObjectSettings,
    model::{reasons, stats::KernelStats},
    planner::{Candidate, Hook},
    sentinel,
    session::{
        Component, Request,
        starting::Starting,
        stream::{StreamKind, Streamed},
    },
};
use report::KernelCounts;

pub const PROBE: &str = "drops";

impl Streamed for DropEvent {
    const STREAM: StreamKind = StreamKind("drops");
}

/// What the running kernel offers the drop probe, read once at start.
pub struct DropKernel {
    /// Argument count of the `kfree_skb` tp_btf prototype, or why tp_btf cannot work.
    btf_args: Result<usize, crate::Error>,
    skb: SkbOffsets,
    pub format: Result<EventFormat, crate::Error>,
    pub reasons: reasons::DropReasons,
    /// Why kernel BTF could not be read, if so: packets are not decoded then.
    btf_unreadable: Option<String>,
}

impl DropKernel {
    pub fn discover(kernel: &Kernel) -> Self {
        let format = kernel.format("skb", "kfree_skb");
        let btf_args = kernel.tp_btf_args("kfree_skb");
        let has_reason = match (&btf_args, &format) {
            (Ok(n), _) => *n >= 3,
            (Err(_), Ok(f)) => f.field("reason").is_some(),
            _ => false,
        };
        let reasons = kernel
            .btf
            .as_ref()
            .and_then(|b| reasons::DropReasons::from_btf(b, kernel.module_btfs()))
            .or_else(|| {
                format
                    .as_ref()
                    .ok()
                    .and_then(reasons::DropReasons::from_format)
            })
            .unwrap_or_else(|| reasons::DropReasons::numbers_only(has_reason));
        Self {
            btf_args,
            skb: skb_offsets(kernel),
            format,
            reasons,
            btf_unreadable: kernel.btf_unreadable.clone(),
        }
    }

    /// Hooks for the drop probe, best first.
    pub fn candidates(&self) -> Vec<Candidate> {
        let (btf_program, btf_pre) = match &self.btf_args {
            Err(why) => ("kfree_skb_btf", Err(why.clone())),
            Ok(n) if *n >= 3 => ("kfree_skb_btf", Ok(())),
            Ok(_) => ("kfree_skb_btf_noreason", Ok(())),
        };
        let tp_pre = match &self.format {
            Ok(f) if f.field("skbaddr").is_some() && f.field("location").is_some() => Ok(()),
            Ok(_) => Err(crate::Error::Unavailable(
                "kfree_skb format lacks skbaddr/location".into(),
            )),
            Err(e) => Err(e.clone()),
        };
        vec![
            Candidate {
                hook: Hook::TpBtf {
                    event: "kfree_skb".into(),
                },
                program: btf_program,
                precondition: btf_pre,
            },
            Candidate {
                hook: Hook::Tracepoint {
                    category: "skb".into(),
                    name: "kfree_skb".into(),
                },
                program: "kfree_skb_tp",
                precondition: tp_pre,
            },
        ]
    }

    /// Kernel config with every offset this kernel has.
    pub fn config(&self) -> DropConfig {
        let mut cfg = DropConfig::EMPTY;
        cfg.skb = self.skb;
        if let Ok(f) = &self.format {
            let off = |n: &str| f.field(n).map_or(NO_OFFSET, |x| x.offset);
            cfg.tp = TracepointOffsets {
                skbaddr: off("skbaddr"),
                location: off("location"),
                reason: off("reason"),
                _pad: 0,
            };
        }
        cfg
    }
}

impl Family for DropKernel {
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)> {
        vec![(PROBE, self.candidates())]
    }

    fn wanted(&self, request: &Request) -> bool {
        request.drops.is_some()
    }

    fn prepare(&self, request: &Request, object: &mut ObjectSettings) -> Result<()> {
        let mut cfg = self.config();
        if let Some(usage) = &request.drops {
            usage.filter.apply(&mut cfg);
            if cfg.filters & NEEDS_PACKET != 0 && cfg.skb.skb_head == NO_OFFSET {
                bail!(
                    "--netns/--proto/--port/--addr need kernel BTF to decode packets ({})",
                    self.btf_unreadable
                        .as_deref()
                        .unwrap_or("it has no sk_buff")
                );
            }
            cfg.stream = usage.stream as u32;
            cfg.per_netns = usage.per_netns as u32;
            cfg.stacks = (usage.stream && usage.stacks) as u32;
            let stages = request.sentinels.is_ok() && request.wants(Component::StageSentinels);
            cfg.netfilter_drop = stages
                .then(|| sentinel::wanted(&self.reasons))
                .flatten()
                .unwrap_or(REASON_UNAVAILABLE);
        }
        // Drop context alone needs no clock: the hooks run on every softirq of every CPU.
        cfg.net_rx_context = request.softirq_hooks() as u32;
        // A stack map's buckets are allocated whole at creation: room only when asked for.
        if cfg.stacks != 0 {
            object.size("DROP_STACKS", netdoc_common::DROP_STACK_IDS);
        }
        object.per_cpu("DROP_EVENTS");
        object.global("DROP_CONFIG", &cfg);
        Ok(())
    }

    fn open(&self, request: &Request, s: &mut Starting<'_>) -> Result<()> {
        let Some(usage) = &request.drops else {
            return Ok(());
        };
        if s.confirm_covers(request) {
            return Ok(());
        }
        set_reason_filter(s.ebpf, &usage.filter.reasons)?;
        if usage.stream {
            s.open_stream::<DropEvent>("DROP_EVENTS")?;
        }
        let maps = DropMaps::take(s.ebpf)?;
        s.keep(maps);
        Ok(())
    }

    fn attach(&self, request: &Request, s: &mut Starting<'_>) -> Result<()> {
        let Some(usage) = request.drops.as_ref().filter(|_| s.has::<DropMaps>()) else {
            return Ok(());
        };
        let mut candidates = self.candidates();
        if let Some(only) = usage.hook {
            for c in &mut candidates {
                if c.hook.kind() != only.name() {
                    c.precondition =
                        Err(crate::Error::Input(format!("--hook {} given", only.name())));
                }
            }
        }
        match s.attach(PROBE, candidates) {
            true => s.attached(Component::Drops),
            false => s.discard::<DropMaps>(),
        }
        Ok(())
    }
}

fn skb_offsets(k: &Kernel) -> SkbOffsets {
    SkbOffsets {
        skb_len: k.offset("sk_buff", &["len"]),
        skb_dev: k.offset("sk_buff", &["dev"]),
        skb_sk: k.offset("sk_buff", &["sk"]),
        skb_head: k.offset("sk_buff", &["head"]),
        skb_network_header: k.offset("sk_buff", &["network_header"]),
        skb_transport_header: k.offset("sk_buff", &["transport_header"]),
        skb_protocol: k.offset("sk_buff", &["protocol"]),
        dev_ifindex: k.offset("net_device", &["ifindex"]),
        dev_net: k.offset("net_device", &["nd_net", "net"]),
        sk_net: k.offset("sock", &["__sk_common", "skc_net", "net"]),
        net_inum: k.offset("net", &["ns", "inum"]),
        net_cookie: k.offset("net", &["net_cookie"]),
    }
}

/// Fills the in-kernel reason filter; must run before attaching.
pub fn set_reason_filter(ebpf: &mut Ebpf, reasons: &[u32]) -> Result<()> {
    let mut map: BpfHashMap<_, u32, u8> = BpfHashMap::try_from(
        ebpf.map_mut("DROP_REASON_FILTER")
            .context("reason filter map")?,
    )?;
    for r in reasons {
        map.insert(r, 1, 0)?;
    }
    Ok(())
}

/// The drop program's maps, taken out of the object so they outlive its links.
pub struct DropMaps {
    counts: PerCpuHashMap<MapData, DropKey, u64>,
    /// The per-CPU count cache in front of `counts` (`DROP_COUNT_SLOTS`).
    cache: PerCpuArray<MapData, CountSlot>,
    pub stats: PerCpuArray<MapData, u64>,
    sampled: PerCpuHashMap<MapData, u32, u64>,
    stacks: StackTraceMap<MapData>,
}

impl DropMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        Ok(Self {
            counts: PerCpuHashMap::try_from(take("DROP_COUNTS")?)?,
            cache: PerCpuArray::try_from(take("DROP_COUNT_CACHE")?)?,
            stats: PerCpuArray::try_from(take("DROP_STATS")?)?,
            sampled: PerCpuHashMap::try_from(take("DROP_SAMPLED")?)?,
            stacks: StackTraceMap::try_from(take("DROP_STACKS")?)?,
        })
    }

    /// The return addresses of stack `id` (`--stack`), innermost first.
    pub fn stack(&self, id: u32) -> Option<Vec<u64>> {
        let trace = self.stacks.get(&id, 0).ok()?;
        Some(trace.frames().iter().map(|f| f.ip).collect())
    }

    /// Streamed drops each raw reason had sampled out by the per-CPU budget, summed over CPUs.
    pub fn sampled(&self) -> BTreeMap<u32, u64> {
        self.sampled
            .iter()
            .filter_map(|r| r.ok())
            .map(|(reason, per_cpu)| (reason, per_cpu.iter().sum()))
            .collect()
    }

    /// Per-CPU counts by (reason, netfilter stage, location), the context bits and namespaces
    /// merged.
    pub fn counts(&self) -> KernelCounts {
        self.merged(|key| DropKey {
            context: 0,
            netns: 0,
            netns_cookie: 0,
            ..key
        })
    }

    /// Per-CPU counts by namespace, reason, netfilter stage and location (the context bits
    /// merged): the namespaces are known only when the program counts per namespace.
    pub fn counts_per_netns(&self) -> KernelCounts {
        self.merged(|key| DropKey { context: 0, ..key })
    }

    /// Keys in the kernel's aggregation now (room: [`netdoc_common::DROP_COUNT_KEYS`]).
    pub fn keys_in_use(&self) -> usize {
        self.counts.keys().filter(|k| k.is_ok()).count()
    }

    /// Forgets the counts of namespaces that are gone (`gone(inode, cookie)`), so the map keeps
    /// room for the living; returns them, for whoever still owes them to a total.
    pub fn forget(&mut self, mut gone: impl FnMut(u32, u64) -> bool) -> KernelCounts {
        let mut forgotten = Vec::new();
        let keys: Vec<DropKey> = self
            .counts
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.netns != 0 && gone(k.netns, k.netns_cookie))
            .collect();
        for key in keys {
            if let Ok(per_cpu) = self.counts.get(&key, 0) {
                forgotten.push((key, per_cpu.iter().copied().collect()));
            }
            let _ = self.counts.remove(&key);
        }
        forgotten
    }

    /// Every per-CPU count, the map's and the cache's (a key may come several times), read
    /// again, at most [`READS`] times, while a move from a CPU's cache into the map crossed the
    /// reading: counted in both or in neither, a drop would show twice or not at all.
    fn entries(&self) -> KernelCounts {
        const READS: usize = 3;
        let flushes = || -> Vec<u64> {
            self.stats
                .get(&stat::FLUSHES, 0)
                .map(|per_cpu| per_cpu.iter().copied().collect())
                .unwrap_or_default()
        };
        let mut entries = Vec::new();
        for _ in 0..READS {
            let before = flushes();
            entries = self.read_entries();
            if before.iter().all(|f| f % 2 == 0) && flushes() == before {
                break;
            }
        }
        entries
    }

    fn read_entries(&self) -> KernelCounts {
        let mut entries: KernelCounts = self
            .counts
            .iter()
            .filter_map(|r| r.ok())
            .map(|(key, per_cpu)| (key, per_cpu.iter().copied().collect()))
            .collect();
        for slot in 0..DROP_COUNT_SLOTS {
            let Ok(per_cpu) = self.cache.get(&slot, 0) else {
                continue;
            };
            for (cpu, cached) in per_cpu.iter().enumerate().filter(|(_, c)| c.count > 0) {
                let mut counts = vec![0; per_cpu.len()];
                counts[cpu] = cached.count;
                entries.push((cached.key, counts));
            }
        }
        entries
    }

    fn merged(&self, fold: impl Fn(DropKey) -> DropKey) -> KernelCounts {
        let mut merged: std::collections::HashMap<DropKey, Vec<u64>> = Default::default();
        for (key, per_cpu) in self.entries() {
            let sum = merged
                .entry(fold(key))
                .or_insert_with(|| vec![0; per_cpu.len()]);
            for (s, v) in sum.iter_mut().zip(per_cpu.iter()) {
                *s += v;
            }
        }
        merged.into_iter().collect()
    }

    /// Per CPU: (all drops, drops inside NET_RX softirq).
    pub fn per_cpu(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (key, per_cpu) in self.entries() {
            out.resize(out.len().max(per_cpu.len()), (0, 0));
            let in_rx = key.context & context::IN_NET_RX != 0;
            for (slot, v) in out.iter_mut().zip(per_cpu.iter()) {
                slot.0 += v;
                if in_rx {
                    slot.1 += v;
                }
            }
        }
        out
    }

    pub fn stats(&self) -> KernelStats {
        crate::model::stats::kernel_stats(&self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Hook;

    fn without_btf(format: Result<EventFormat, crate::Error>) -> DropKernel {
        let reasons = format
            .as_ref()
            .ok()
            .and_then(reasons::DropReasons::from_format)
            .unwrap_or_else(|| reasons::DropReasons::numbers_only(false));
        DropKernel {
            btf_args: Err(crate::Error::Unavailable("no kernel BTF".into())),
            skb: DropConfig::EMPTY.skb,
            format,
            reasons,
            btf_unreadable: Some("no /sys/kernel/btf/vmlinux".into()),
        }
    }

    #[test]
    fn without_btf_a_packet_filter_is_refused_before_the_object_loads() {
        let k = kernel_with_format("kfree_skb-5.16.format");
        let mut request = Request::default();
        request.want_drops(crate::session::DropUse {
            filter: filter::DropFilter {
                netns: Some(4026531840),
                ..Default::default()
            },
            ..Default::default()
        });
        let why = k
            .prepare(&request, &mut ObjectSettings::default())
            .unwrap_err();
        assert_eq!(
            why.to_string(),
            "--netns/--proto/--port/--addr need kernel BTF to decode packets (no /sys/kernel/btf/vmlinux)"
        );
        let counting = Request::default().with(Component::NetRxContext);
        assert!(k.prepare(&counting, &mut ObjectSettings::default()).is_ok());
        assert!(!k.wanted(&counting), "the drop program only when asked for");
    }

    fn kernel_with_format(name: &str) -> DropKernel {
        without_btf(Ok(crate::facts::tracefs::fixture(name)))
    }

    #[test]
    fn without_btf_the_plan_falls_back_to_the_classic_tracepoint() {
        let k = kernel_with_format("kfree_skb-5.16.format");
        let c = k.candidates();
        assert_eq!(
            c[0].hook,
            Hook::TpBtf {
                event: "kfree_skb".into()
            }
        );
        assert_eq!(
            c[0].precondition,
            Err(crate::Error::Unavailable("no kernel BTF".into()))
        );
        assert_eq!(c[1].precondition, Ok(()));
        let cfg = k.config();
        assert_eq!(
            (cfg.tp.skbaddr, cfg.tp.location, cfg.tp.reason),
            (8, 16, NO_OFFSET)
        );
        assert_eq!(cfg.skb.skb_len, NO_OFFSET, "no BTF, no struct offsets");
    }

    #[test]
    fn tracepoint_offsets_follow_each_layout() {
        assert_eq!(
            kernel_with_format("kfree_skb-5.17.format")
                .config()
                .tp
                .reason,
            28
        );
        assert_eq!(
            kernel_with_format("kfree_skb-6.18.format")
                .config()
                .tp
                .reason,
            36
        );
    }

    #[test]
    fn a_missing_format_skips_the_tracepoint_with_its_reason() {
        let unmounted = crate::Error::Unavailable("tracefs is not mounted".into());
        let k = without_btf(Err(unmounted.clone()));
        assert_eq!(k.candidates()[1].precondition, Err(unmounted));
    }
}
