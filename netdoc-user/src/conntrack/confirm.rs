//! Layer (a) of conntrack evidence: the verdict of `__nf_conntrack_confirm` itself. Where a
//! function hook exists (fexit, else kretprobe), every `NF_DROP` it returns is an insertion
//! failure event with the entry's original and reply tuples, zone, namespace and CPU.
use std::net::{IpAddr, Ipv4Addr};

use aya::{
    Ebpf,
    maps::{MapData, PerCpuArray},
};
use netdoc_common::{
    NO_OFFSET,
    conntrack::{ConfirmConfig, InsertFailEvent, TUPLE_SIZE},
    stat,
};
use serde::{Deserialize, Serialize};

use anyhow::{Context as _, Result};

use crate::{
    Error,
    family::Family,
    kernel::Kernel,
    loader::ObjectSettings,
    model::stats::{kernel_stats, stat_slot},
    planner::{Candidate, Hook},
    session::{
        Component, Request,
        starting::Starting,
        stream::{StreamKind, Streamed},
    },
};

pub const PROBE: &str = "conntrack_confirm";
const FUNCTION: &str = "__nf_conntrack_confirm";
/// The perf event source kprobes attach through.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

impl Streamed for InsertFailEvent {
    const STREAM: StreamKind = StreamKind("insert_failures");
}

pub struct ConfirmKernel {
    pub config: ConfirmConfig,
    pub candidates: Vec<Candidate>,
}

impl ConfirmKernel {
    pub fn discover(k: &Kernel) -> Self {
        let config = config(k);
        let pre = if !k.has_function(FUNCTION) {
            Err(Error::Unavailable(format!(
                "no {FUNCTION} in the kernel's BTF or /proc/kallsyms: nf_conntrack is not loaded (modprobe nf_conntrack)"
            )))
        } else if config.ct_original == NO_OFFSET {
            Err(Error::Unavailable(
                "no BTF for struct nf_conn with a 40-byte tuple (vmlinux or module BTF)".into(),
            ))
        } else {
            Ok(())
        };
        let candidates = vec![
            Candidate {
                hook: Hook::Fexit {
                    function: FUNCTION.into(),
                },
                program: "ct_confirm_fexit",
                precondition: pre.clone(),
            },
            Candidate {
                hook: Hook::Kretprobe {
                    function: FUNCTION.into(),
                },
                program: "ct_confirm_kretprobe",
                precondition: pre.and_then(|()| {
                    if std::path::Path::new(KPROBE_PMU).exists() {
                        Ok(())
                    } else {
                        Err(Error::Unavailable(format!(
                            "no {KPROBE_PMU}: this kernel has no kprobes (CONFIG_KPROBES unset)"
                        )))
                    }
                }),
            },
        ];
        Self { config, candidates }
    }
}

impl Family for ConfirmKernel {
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)> {
        vec![(PROBE, self.candidates.clone())]
    }

    fn wanted(&self, request: &Request) -> bool {
        request.wants(Component::ConntrackConfirm)
    }

    fn prepare(&self, _: &Request, object: &mut ObjectSettings) -> Result<()> {
        object.per_cpu("CONFIRM_EVENTS");
        object.global("CONFIRM_CONFIG", &self.config);
        Ok(())
    }

    /// Attaches at once, not with the others: the drop program and the sentinels that stand
    /// in for it open only where it did not.
    fn open(&self, _: &Request, s: &mut Starting<'_>) -> Result<()> {
        s.open_stream::<InsertFailEvent>("CONFIRM_EVENTS")?;
        let maps = ConfirmMaps::take(s.ebpf)?;
        match s.attach(PROBE, self.candidates.clone()) {
            true => {
                s.keep(maps);
                s.attached(Component::ConntrackConfirm);
            }
            false => s.close_stream(InsertFailEvent::STREAM),
        }
        Ok(())
    }

    fn attach(&self, _: &Request, _: &mut Starting<'_>) -> Result<()> {
        Ok(())
    }
}

fn config(k: &Kernel) -> ConfirmConfig {
    let mut cfg = ConfirmConfig::EMPTY;
    cfg.skb_nfct = k.offset("sk_buff", &["_nfct"]);
    cfg.net_inum = k.offset("net", &["ns", "inum"]);
    cfg.net_cookie = k.offset("net", &["net_cookie"]);
    k.with_struct_btf("nf_conn", |btf| {
        let layout_known = btf.struct_size("nf_conntrack_tuple") == Some(TUPLE_SIZE as u32);
        if let (Some(base), Some(tuple), Some(size), true) = (
            btf.member_offset("nf_conn", &["tuplehash"]),
            btf.member_offset("nf_conntrack_tuple_hash", &["tuple"]),
            btf.struct_size("nf_conntrack_tuple_hash"),
            layout_known,
        ) {
            cfg.ct_original = base + tuple;
            cfg.ct_reply = base + size + tuple;
        }
        let or_none = |o: Option<u32>| o.unwrap_or(NO_OFFSET);
        cfg.ct_zone_id = or_none(btf.member_offset("nf_conn", &["zone", "id"]));
        cfg.ct_net = or_none(btf.member_offset("nf_conn", &["ct_net", "net"]));
    });
    cfg
}

/// The confirm hook's loss accounting, taken out of the object so it outlives the links.
pub struct ConfirmMaps {
    stats: PerCpuArray<MapData, u64>,
}

impl ConfirmMaps {
    pub fn take(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let stats = ebpf
            .take_map("CONFIRM_STATS")
            .context("CONFIRM_STATS map")?;
        Ok(Self {
            stats: PerCpuArray::try_from(stats)?,
        })
    }

    /// Events lost: buffer full, or returns whose entry half was missed (each may or may not
    /// have been a failure).
    pub fn lost(&self) -> u64 {
        kernel_stats(&self.stats).lost + stat_slot(&self.stats, stat::UNPAIRED)
    }

    /// Events counted but not streamed: over a CPU's budget of records per second.
    pub fn sampled(&self) -> u64 {
        stat_slot(&self.stats, stat::SAMPLED)
    }
}

/// One conntrack entry that could not be inserted (its packet was dropped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsertFailure {
    pub ts_ns: u64,
    pub cpu: u32,
    pub netns: u32,
    /// The namespace's cookie; null before 5.14.
    pub netns_cookie: Option<u64>,
    /// Named by the view from the host's namespaces.
    pub netns_name: Option<String>,
    pub zone: u16,
    pub proto: String,
    pub original: Tuple,
    pub reply: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tuple {
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{}:{} → {}:{}",
            self.src, self.sport, self.dst, self.dport
        )
    }
}

/// `struct nf_conntrack_tuple`: src.u3 at 0 (16 bytes), src.u.all at 16 (network order),
/// src.l3num at 18, dst.u3 at 20, dst.u.all at 36, dst.protonum at 38.
fn tuple(raw: &[u8; TUPLE_SIZE]) -> (Tuple, u8) {
    let l3num = u16::from_ne_bytes([raw[18], raw[19]]);
    let addr = |at: usize| -> IpAddr {
        let bytes: [u8; 16] = raw[at..at + 16].try_into().unwrap_or_default();
        crate::model::addr::ip(l3num, &bytes).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let port = |at: usize| u16::from_be_bytes([raw[at], raw[at + 1]]);
    (
        Tuple {
            src: addr(0),
            sport: port(16),
            dst: addr(20),
            dport: port(36),
        },
        raw[38],
    )
}

pub fn decode(ev: &InsertFailEvent) -> InsertFailure {
    let (original, proto) = tuple(&ev.original);
    let (reply, _) = tuple(&ev.reply);
    InsertFailure {
        ts_ns: ev.ts_ns,
        cpu: ev.cpu,
        netns: ev.netns,
        netns_cookie: (ev.netns_cookie != 0).then_some(ev.netns_cookie),
        netns_name: None,
        zone: ev.zone,
        proto: crate::model::addr::proto_name(proto),
        original,
        reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_decode_from_their_raw_layout() {
        let mut ev = InsertFailEvent::default();
        let mut o = [0u8; TUPLE_SIZE];
        o[..4].copy_from_slice(&[10, 0, 0, 1]);
        o[16..18].copy_from_slice(&5000u16.to_be_bytes());
        o[18..20].copy_from_slice(&2u16.to_ne_bytes());
        o[20..24].copy_from_slice(&[10, 0, 0, 2]);
        o[36..38].copy_from_slice(&53u16.to_be_bytes());
        o[38] = 17;
        ev.original = o;
        ev.cpu = 1;
        let f = decode(&ev);
        assert_eq!(f.proto, "udp");
        assert_eq!(f.original.to_string(), "10.0.0.1:5000 → 10.0.0.2:53");
        assert_eq!(f.cpu, 1);
        let mut six = [0u8; TUPLE_SIZE];
        six[0] = 0xfe;
        six[1] = 0x80;
        six[15] = 1;
        six[18..20].copy_from_slice(&10u16.to_ne_bytes());
        assert_eq!(tuple(&six).0.src, "fe80::1".parse::<IpAddr>().unwrap());
    }
}
