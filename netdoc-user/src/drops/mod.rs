//! The drops probe family: `skb:kfree_skb` programs, their config, their maps and their events.
pub mod decode;
pub mod filter;
pub mod reasons;
pub mod render;
pub mod report;
pub mod run;

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap},
};
use netdoc_common::{DropConfig, DropKey, NO_OFFSET, SkbOffsets, TracepointOffsets, stat};

use crate::{
    facts::{btf::KernelBtf, tracefs::EventFormat},
    loader,
    planner::{Candidate, Hook},
};
use report::{KernelCounts, KernelStats};

pub const PROBE: &str = "drops";

/// What the running kernel offers the drop probe, read once at start.
pub struct DropKernel {
    pub btf: Option<KernelBtf>,
    /// The same BTF as aya parses it, for loading tp_btf programs.
    pub aya_btf: Option<aya::Btf>,
    pub format: Result<EventFormat, String>,
    pub reasons: reasons::DropReasons,
}

impl DropKernel {
    pub fn discover(btf_path: &Path) -> Self {
        let btf = KernelBtf::load(btf_path).ok();
        let format = crate::facts::tracefs::root()
            .and_then(|root| EventFormat::read(&root, "skb", "kfree_skb"))
            .map_err(|e| format!("{e:#}"));
        let reasons = btf
            .as_ref()
            .and_then(|b| {
                let modules = crate::facts::btf::module_btfs(b, btf_path.parent()?);
                reasons::DropReasons::from_btf(b, &modules)
            })
            .or_else(|| {
                format
                    .as_ref()
                    .ok()
                    .and_then(reasons::DropReasons::from_format)
            })
            .unwrap_or_else(|| reasons::DropReasons::numbers_only(self_has_reason(&btf, &format)));
        Self {
            btf,
            aya_btf: aya::Btf::parse_file(btf_path, aya::Endianness::default()).ok(),
            format,
            reasons,
        }
    }

    /// Hooks for the drop probe, best first.
    pub fn candidates(&self) -> Vec<Candidate> {
        let args = self
            .btf
            .as_ref()
            .and_then(|b| b.tracepoint_arg_count("kfree_skb"));
        let (btf_program, btf_pre) = match (&self.btf, args) {
            (None, _) => ("kfree_skb_btf", Err("no kernel BTF".to_string())),
            (Some(_), None) => (
                "kfree_skb_btf",
                Err("BTF has no btf_trace_kfree_skb".to_string()),
            ),
            (Some(_), Some(n)) if n >= 3 => ("kfree_skb_btf", Ok(())),
            (Some(_), Some(_)) => ("kfree_skb_btf_noreason", Ok(())),
        };
        let tp_pre = match &self.format {
            Ok(f) if f.field("skbaddr").is_some() && f.field("location").is_some() => Ok(()),
            Ok(_) => Err("kfree_skb format lacks skbaddr/location".to_string()),
            Err(e) => Err(e.clone()),
        };
        vec![
            Candidate {
                hook: Hook::TpBtf { event: "kfree_skb" },
                program: btf_program,
                precondition: btf_pre,
            },
            Candidate {
                hook: Hook::Tracepoint {
                    category: "skb",
                    name: "kfree_skb",
                },
                program: "kfree_skb_tp",
                precondition: tp_pre,
            },
        ]
    }

    /// Kernel config with every offset this kernel has.
    pub fn config(&self) -> DropConfig {
        let mut cfg = DropConfig::EMPTY;
        if let Some(b) = &self.btf {
            cfg.skb = skb_offsets(b);
        }
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

fn self_has_reason(btf: &Option<KernelBtf>, format: &Result<EventFormat, String>) -> bool {
    let from_btf = btf
        .as_ref()
        .and_then(|b| b.tracepoint_arg_count("kfree_skb"))
        .map(|n| n >= 3);
    let from_format = format.as_ref().ok().map(|f| f.field("reason").is_some());
    from_btf.or(from_format).unwrap_or(false)
}

pub fn skb_offsets(b: &KernelBtf) -> SkbOffsets {
    let off = |s: &str, path: &[&str]| b.member_offset(s, path).unwrap_or(NO_OFFSET);
    SkbOffsets {
        skb_len: off("sk_buff", &["len"]),
        skb_dev: off("sk_buff", &["dev"]),
        skb_sk: off("sk_buff", &["sk"]),
        skb_head: off("sk_buff", &["head"]),
        skb_network_header: off("sk_buff", &["network_header"]),
        skb_transport_header: off("sk_buff", &["transport_header"]),
        skb_protocol: off("sk_buff", &["protocol"]),
        dev_ifindex: off("net_device", &["ifindex"]),
        dev_net: off("net_device", &["nd_net", "net"]),
        sk_net: off("sock", &["__sk_common", "skc_net", "net"]),
        net_inum: off("net", &["ns", "inum"]),
        _pad: 0,
    }
}

/// Loads the object with `cfg` as the drop programs' read-only config.
pub fn load(cfg: &DropConfig) -> Result<Ebpf> {
    loader::raise_memlock()?;
    EbpfLoader::new()
        .override_global("DROP_CONFIG", cfg, true)
        .load(loader::OBJECT)
        .context("loading netdoc's eBPF object")
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
    pub counts: PerCpuHashMap<MapData, DropKey, u64>,
    pub stats: PerCpuArray<MapData, u64>,
}

impl DropMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let counts = ebpf.take_map("DROP_COUNTS").context("DROP_COUNTS map")?;
        let stats = ebpf.take_map("DROP_STATS").context("DROP_STATS map")?;
        Ok(Self {
            counts: PerCpuHashMap::try_from(counts)?,
            stats: PerCpuArray::try_from(stats)?,
        })
    }

    pub fn counts(&self) -> KernelCounts {
        self.counts
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, v)| (k, v.iter().copied().collect()))
            .collect()
    }

    pub fn stats(&self) -> KernelStats {
        let sum = |slot: u32| -> u64 {
            self.stats
                .get(&slot, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        KernelStats {
            seen: sum(stat::SEEN),
            matched: sum(stat::MATCHED),
            emitted: sum(stat::EMITTED),
            lost: sum(stat::EMIT_FAILED),
            aggregation_overflow: sum(stat::AGG_FULL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Hook;

    fn kernel_with_format(name: &str) -> DropKernel {
        let format = crate::facts::tracefs::fixture(name);
        DropKernel {
            btf: None,
            aya_btf: None,
            reasons: reasons::DropReasons::from_format(&format)
                .unwrap_or_else(|| reasons::DropReasons::numbers_only(false)),
            format: Ok(format),
        }
    }

    #[test]
    fn without_btf_the_plan_falls_back_to_the_classic_tracepoint() {
        let k = kernel_with_format("kfree_skb-5.16.format");
        let c = k.candidates();
        assert_eq!(c[0].hook, Hook::TpBtf { event: "kfree_skb" });
        assert_eq!(c[0].precondition, Err("no kernel BTF".to_string()));
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
        let k = DropKernel {
            btf: None,
            aya_btf: None,
            format: Err("tracefs is not mounted".into()),
            reasons: reasons::DropReasons::numbers_only(true),
        };
        assert_eq!(
            k.candidates()[1].precondition,
            Err("tracefs is not mounted".to_string())
        );
    }
}
