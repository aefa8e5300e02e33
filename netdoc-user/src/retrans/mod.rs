//! The TCP retransmit probe family: `tcp:tcp_retransmit_skb` and `tcp:tcp_retransmit_synack`,
//! per-flow aggregation in the kernel, named flows and the MTU black-hole rule in userspace.
pub mod mtu;
pub mod report;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray},
};
use netdoc_common::{
    NO_OFFSET,
    retrans::{FlowKey, FlowStats, RetransConfig, RetransEvent},
};

use crate::{
    family::Family,
    kernel::Kernel,
    loader::ObjectSettings,
    model::stats::KernelStats,
    planner::{self, Candidate},
    session::{
        Component, Request,
        starting::Starting,
        stream::{StreamKind, Streamed},
    },
};

impl Streamed for RetransEvent {
    const STREAM: StreamKind = StreamKind("retransmits");
}

pub const RETRANS: &str = "retrans";
pub const SYNACK: &str = "retrans_synack";

/// What the running kernel offers these probes.
pub struct RetransKernel {
    pub probes: Vec<(&'static str, Vec<Candidate>)>,
    pub config: RetransConfig,
}

impl RetransKernel {
    pub fn discover(k: &Kernel) -> Self {
        let skb_fmt = k.format("tcp", "tcp_retransmit_skb");
        let synack_fmt = k.format("tcp", "tcp_retransmit_synack");
        let off = |f: &Result<crate::facts::tracefs::EventFormat, crate::Error>, n: &str| {
            f.as_ref()
                .ok()
                .and_then(|f| f.field(n))
                .map_or(NO_OFFSET, |x| x.offset)
        };
        let skc = |m: &str| k.offset("sock", &["__sk_common", m]);
        let config = RetransConfig {
            tp_skb: off(&skb_fmt, "skbaddr"),
            tp_sk: off(&skb_fmt, "skaddr"),
            tp_err: off(&skb_fmt, "err"),
            tp_synack_req: off(&synack_fmt, "req"),
            skb_cb: k.offset("sk_buff", &["cb"]),
            skb_head: k.offset("sk_buff", &["head"]),
            skb_end: k.offset("sk_buff", &["end"]),
            shinfo_gso_segs: k.offset("skb_shared_info", &["gso_segs"]),
            shinfo_gso_size: k.offset("skb_shared_info", &["gso_size"]),
            skc_family: skc("skc_family"),
            skc_state: skc("skc_state"),
            skc_num: skc("skc_num"),
            skc_dport: skc("skc_dport"),
            skc_daddr: skc("skc_daddr"),
            skc_rcv_saddr: skc("skc_rcv_saddr"),
            skc_v6_daddr: skc("skc_v6_daddr"),
            skc_v6_rcv_saddr: skc("skc_v6_rcv_saddr"),
            sk_net: k.offset("sock", &["__sk_common", "skc_net", "net"]),
            net_inum: k.offset("net", &["ns", "inum"]),
            net_cookie: k.offset("net", &["net_cookie"]),
            icsk_pmtu_cookie: k.offset("inet_connection_sock", &["icsk_pmtu_cookie"]),
            tp_mss_cache: k.offset("tcp_sock", &["mss_cache"]),
            tp_bytes_acked: k.offset("tcp_sock", &["bytes_acked"]),
            sk_dst_cache: k.offset("sock", &["sk_dst_cache"]),
            dst_dev: k.offset("dst_entry", &["dev"]),
            dev_mtu: k.offset("net_device", &["mtu"]),
            stream: 0,
            _pad: 0,
        };
        // The tp_btf prototype gained `err` in 6.17: pick the program that matches it.
        let mut retrans = planner::tracepoint_pair(
            k,
            ("tcp", "tcp_retransmit_skb"),
            "tcp_retransmit_btf",
            "tcp_retransmit_tp",
            &skb_fmt,
            &["skbaddr", "skaddr"],
        );
        if k.tp_btf_args("tcp_retransmit_skb").is_ok_and(|n| n >= 3) {
            retrans[0].program = "tcp_retransmit_btf_err";
        }
        let synack = planner::tracepoint_pair(
            k,
            ("tcp", "tcp_retransmit_synack"),
            "tcp_synack_btf",
            "tcp_synack_tp",
            &synack_fmt,
            &["req"],
        );
        let mut probes = vec![(RETRANS, retrans), (SYNACK, synack)];
        // Without BTF the tuple and sequence offsets are unknown: the probe would count nothing
        // useful, so say why rather than attach.
        if config.skc_family == NO_OFFSET {
            for (_, cands) in &mut probes {
                for c in cands {
                    c.precondition = Err(crate::Error::Unavailable(
                        "no kernel BTF for sock/sk_buff offsets".into(),
                    ));
                }
            }
        }
        Self { probes, config }
    }
}

impl Family for RetransKernel {
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)> {
        self.probes.clone()
    }

    fn wanted(&self, request: &Request) -> bool {
        request.wants(Component::Retransmits)
    }

    fn prepare(&self, request: &Request, object: &mut ObjectSettings) -> Result<()> {
        let mut cfg = self.config;
        cfg.stream = request.retrans_stream as u32;
        object.per_cpu("RETRANS_EVENTS");
        object.global("RETRANS_CONFIG", &cfg);
        Ok(())
    }

    fn open(&self, request: &Request, s: &mut Starting<'_>) -> Result<()> {
        if request.retrans_stream {
            s.open_stream::<RetransEvent>("RETRANS_EVENTS")?;
        }
        let maps = RetransMaps::take(s.ebpf)?;
        s.keep(maps);
        Ok(())
    }

    /// Both probes; the family runs when the retransmit one attached (SYN-ACKs alone would
    /// miss every data retransmit).
    fn attach(&self, _: &Request, s: &mut Starting<'_>) -> Result<()> {
        let mut main = false;
        for (probe, candidates) in self.probes.clone() {
            let ok = s.attach(probe, candidates);
            main |= probe == RETRANS && ok;
        }
        match main {
            true => s.attached(Component::Retransmits),
            false => s.discard::<RetransMaps>(),
        }
        Ok(())
    }
}

pub struct RetransMaps {
    flows: BpfHashMap<MapData, FlowKey, FlowStats>,
    stats: PerCpuArray<MapData, u64>,
}

impl RetransMaps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| ebpf.take_map(name).with_context(|| format!("{name} map"));
        Ok(Self {
            flows: BpfHashMap::try_from(take("RETRANS_FLOWS")?)?,
            stats: PerCpuArray::try_from(take("RETRANS_STATS")?)?,
        })
    }

    pub fn flows(&self) -> Vec<(FlowKey, FlowStats)> {
        self.flows.iter().filter_map(|r| r.ok()).collect()
    }

    pub fn stats(&self) -> KernelStats {
        crate::model::stats::kernel_stats(&self.stats)
    }
}

/// Every retransmitting flow, busiest first, named by `name` (a namespace by inode) and with
/// its rate since `previous` (per-flow retransmits `interval_s` ago).
pub fn flow_rows(
    maps: &RetransMaps,
    previous: &std::collections::HashMap<FlowKey, u64>,
    interval_s: f64,
    name: impl Fn(u32) -> Option<crate::namespaces::NetnsRef>,
) -> Vec<report::FlowRow> {
    let mut rows: Vec<report::FlowRow> = maps
        .flows()
        .iter()
        .map(|(k, s)| {
            let before = previous.get(k).copied().unwrap_or(0);
            let rate = if interval_s > 0.0 {
                s.events.saturating_sub(before) as f64 / interval_s
            } else {
                0.0
            };
            report::FlowRow::new(k, s, name(k.netns), rate)
        })
        .collect();
    rows.sort_by(|a, b| {
        b.retransmits
            .cmp(&a.retransmits)
            .then(a.id.flow.cmp(&b.id.flow))
    });
    rows
}
