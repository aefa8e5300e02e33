//! `netdoc probes`: the attach plan of every probe family on this kernel.
use std::{fmt::Write as _, path::Path};

use anyhow::{Result, bail};
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    conntrack::{
        confirm::{self, ConfirmKernel},
        sentinel::{self, Placed},
    },
    drops::{self, DropKernel},
    facts::caps,
    kernel::Kernel,
    loader::{self, Configs},
    planner::{self, Candidate, Hook, Outcome, ProbePlan},
    retrans::RetransKernel,
    softirq::SoftirqKernel,
};

/// Tries every candidate of every probe on its own, then marks the one `attach_best` would pick.
/// Also returns where the conntrack stage sentinels went, when they could attach.
fn survey(kernel: &Kernel, drops: &DropKernel) -> Result<(Vec<ProbePlan>, Vec<Placed>)> {
    caps::require_tracing()?;
    let softirq = SoftirqKernel::discover(kernel);
    let retrans = RetransKernel::discover(kernel);
    let confirm = ConfirmKernel::discover(kernel);
    let cfg = Configs {
        drops: drops.config(),
        softirq: softirq.config,
        retrans: retrans.config,
        confirm: confirm.config,
    };
    let mut families = vec![(drops::PROBE, drops.candidates())];
    families.extend(softirq.probes);
    families.extend(retrans.probes);
    families.push((confirm::PROBE, confirm.candidates));
    let mut plans = Vec::new();
    for (probe, candidates) in families {
        let mut attempts = Vec::new();
        let mut chosen = false;
        for c in candidates {
            let mut ebpf = loader::load(&cfg)?;
            let mut plan = planner::attach_best(&mut ebpf, probe, vec![c], kernel.aya_btf.as_ref());
            drop(ebpf); // detaches
            let mut a = plan.attempts.remove(0);
            if a.outcome == Outcome::Attached {
                if chosen {
                    a.outcome = Outcome::Available;
                }
                chosen = true;
            }
            attempts.push(a);
        }
        plans.push(ProbePlan { probe, attempts });
    }
    // The stage sentinels are links of their own, tried for real and detached again.
    let ebpf = loader::load(&cfg)?;
    let wanted = sentinel::wanted(&drops.reasons);
    let (_, sentinels) = sentinel::start(&ebpf, wanted, &[]);
    plans.push(sentinel::plan(&sentinels, wanted.is_some()));
    let placed = sentinels.map(|s| s.placed.clone()).unwrap_or_default();
    Ok((plans, placed))
}

/// What the drop probe loses on kernels before 5.17 (and without the stable backport).
const NO_REASONS: &str =
    "kfree_skb carries no drop reason on this kernel: drops are told apart by location only";

#[derive(Serialize)]
struct PlanLine<'a> {
    #[serde(flatten)]
    plan: &'a ProbePlan,
    #[serde(skip_serializing_if = "Option::is_none")]
    degraded: Option<&'static str>,
}

pub fn show(btf_path: &Path, json: bool) -> Result<()> {
    let host = Kernel::discover(btf_path);
    let kernel = DropKernel::discover(&host);
    let (plans, placed) = survey(&host, &kernel)?;
    if json {
        for p in &plans {
            let degraded = (p.probe == drops::PROBE
                && kernel.reasons.source == drops::reasons::Source::Unavailable)
                .then_some(NO_REASONS);
            println!(
                "{}",
                serde_json::to_string(&PlanLine { plan: p, degraded })?
            );
        }
        return Ok(());
    }
    let mut out = format!(
        "{:<17} {:<38} {:<24} {}\n",
        "PROBE", "HOOK", "PROGRAM", "STATUS"
    );
    for p in &plans {
        for a in &p.attempts {
            let status = match &a.outcome {
                Outcome::Attached => "selected: attaches".to_string(),
                Outcome::Available => "available as fallback".to_string(),
                Outcome::Skipped(w) => format!("skipped: {w}"),
                Outcome::Failed(w) => format!("failed: {w}"),
            };
            let _ = writeln!(
                out,
                "{:<17} {:<38} {:<24} {status}",
                p.probe,
                a.hook.to_string(),
                a.program
            );
        }
    }
    let _ = writeln!(
        out,
        "\ndrop reason names: {} ({} known)",
        kernel.reasons.source.describe(),
        kernel.reasons.len()
    );
    let cfg = kernel.config();
    let missing = [
        ("sk_buff.dev", cfg.skb.skb_dev),
        ("sk_buff.head", cfg.skb.skb_head),
        ("net_device.ifindex", cfg.skb.dev_ifindex),
        ("net.ns.inum", cfg.skb.net_inum),
    ]
    .iter()
    .filter(|(_, o)| *o == netdoc_common::NO_OFFSET)
    .map(|(n, _)| *n)
    .collect::<Vec<_>>();
    if missing.is_empty() {
        out.push_str("packet decoding: all struct offsets found in BTF\n");
    } else {
        let _ = writeln!(
            out,
            "packet decoding degraded: no BTF offset for {}",
            missing.join(", ")
        );
    }
    if !placed.is_empty() {
        out.push_str("conntrack stage sentinels (priority:stage), IPv4:\n");
        for line in sentinel::layout(&placed, "ipv4") {
            let _ = writeln!(out, "  {line}");
        }
    }
    print!("{out}");
    Ok(())
}

/// Keeps an empty program on the drop hook until SIGINT/SIGTERM: `cargo xtask bench`'s floor.
pub async fn bench_floor(btf_path: &Path) -> Result<()> {
    caps::require_tracing()?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let host = Kernel::discover(btf_path);
    let kernel = DropKernel::discover(&host);
    let mut ebpf = loader::load(&Configs {
        drops: kernel.config(),
        ..Configs::default()
    })?;
    let candidates = vec![
        Candidate {
            hook: Hook::TpBtf { event: "kfree_skb" },
            program: "floor_kfree_skb_btf",
            precondition: Ok(()),
        },
        Candidate {
            hook: Hook::Tracepoint {
                category: "skb",
                name: "kfree_skb",
            },
            program: "floor_kfree_skb_tp",
            precondition: Ok(()),
        },
    ];
    let plan = planner::attach_best(&mut ebpf, "floor", candidates, host.aya_btf.as_ref());
    let Some(chosen) = plan.chosen() else {
        bail!("{}", plan.failure());
    };
    eprintln!("netdoc: attached empty floor program via {}", chosen.hook);
    tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
    Ok(())
}
