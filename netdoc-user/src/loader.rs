//! The embedded eBPF object and loading it with every family's read-only config.
use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader};
use netdoc_common::{
    DropConfig, EmitConfig, conntrack::ConfirmConfig, retrans::RetransConfig,
    softirq::SoftirqConfig,
};

/// All of netdoc's kernel programs, built by build.rs from `netdoc-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdoc-probes"));

/// Each probe family's config global; the defaults parse and filter nothing.
#[derive(Clone, Copy)]
pub struct Configs {
    pub drops: DropConfig,
    pub softirq: SoftirqConfig,
    pub retrans: RetransConfig,
    pub confirm: ConfirmConfig,
    pub emit: EmitConfig,
}

impl Default for Configs {
    fn default() -> Self {
        Self {
            drops: DropConfig::EMPTY,
            softirq: SoftirqConfig::EMPTY,
            retrans: RetransConfig::EMPTY,
            confirm: ConfirmConfig::EMPTY,
            emit: EmitConfig::EMPTY,
        }
    }
}

/// The per-CPU ring arrays of the object.
const STREAMS: [&str; 3] = ["DROP_EVENTS", "RETRANS_EVENTS", "CONFIRM_EVENTS"];

/// Loads the object's maps; programs load when the planner attaches them.
pub fn load(cfg: &Configs) -> Result<Ebpf> {
    raise_memlock();
    let cpus =
        aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))? as u32;
    let mut loader = EbpfLoader::new();
    // Every stream's array holds one ring per possible CPU (a program indexes it by its CPU).
    for stream in STREAMS {
        loader.map_max_entries(stream, cpus);
    }
    // A stack map's buckets are allocated whole at creation: room only when stacks are asked for.
    if cfg.drops.stacks != 0 {
        loader.map_max_entries("DROP_STACKS", netdoc_common::DROP_STACK_IDS);
    }
    loader
        .override_global("DROP_CONFIG", &cfg.drops, true)
        .override_global("SOFTIRQ_CONFIG", &cfg.softirq, true)
        .override_global("RETRANS_CONFIG", &cfg.retrans, true)
        .override_global("CONFIRM_CONFIG", &cfg.confirm, true)
        .override_global("EMIT_CONFIG", &cfg.emit, true)
        .load(OBJECT)
        .context("loading netdoc's eBPF object")
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps can be created.
fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}
