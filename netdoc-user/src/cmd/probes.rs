//! `netdoc probes`: the attach plan of every probe family on this kernel.
use std::fmt::Write as _;

use anyhow::Result;

use crate::{
    drops,
    kernel::Kernel,
    loader,
    output::{Output, ProbeLine},
    planner::{self, Candidate, Hook, Outcome, ProbePlan},
    sentinel::{self, Placed},
    session::{
        Request,
        live::{Signals, Stdout},
        registry::Families,
    },
};

/// Tries every candidate of every probe of every family on its own, then marks the one
/// `attach_best` would pick. Also returns where the conntrack stage sentinels went, when they
/// could attach.
fn survey(kernel: &Kernel, families: &Families) -> Result<(Vec<ProbePlan>, Vec<Placed>)> {
    // One object for every attempt: each candidate has a program of its own, so each is tried
    // on its own while the others stay attached; all are released together at the end.
    let mut ebpf = loader::load(&families.object(&Request::default())?)?;
    let loader_btf = kernel.loader_btf();
    let mut plans = Vec::new();
    for (probe, candidates) in families.listed().iter().flat_map(|f| f.probes()) {
        let mut attempts = Vec::new();
        let mut chosen = false;
        for c in candidates {
            let mut plan = planner::attach_best(&mut ebpf, probe, vec![c], loader_btf.as_ref());
            let mut a = plan.attempts.remove(0);
            if a.outcome == Outcome::Attached {
                if chosen {
                    a.outcome = Outcome::Available;
                }
                chosen = true;
            }
            attempts.push(a);
        }
        plans.push(ProbePlan {
            probe: probe.into(),
            attempts,
        });
    }
    // The stage sentinels are links of their own, tried for real and detached again.
    let namespaces = crate::namespaces::Inventory::discover();
    let (tried, sentinels) = families.stages.try_here(&mut ebpf, &namespaces);
    plans.push(sentinel::plan(&sentinels, tried));
    let placed = sentinels.map(|s| s.placed.clone()).unwrap_or_default();
    planner::release_all(&mut ebpf);
    Ok((plans, placed))
}

/// What the drop probe loses on kernels before 5.17 (and without the stable backport).
const NO_REASONS: &str =
    "kfree_skb carries no drop reason on this kernel: drops are told apart by location only";

pub fn show(host: Kernel, json: bool) -> Result<()> {
    let families = Families::discover(&host);
    let kernel = &families.drops;
    let (plans, placed) = survey(&host, &families)?;
    if json {
        let mut text = String::new();
        for p in &plans {
            let degraded = (p.probe == drops::PROBE
                && kernel.reasons.source == crate::model::reasons::Source::Unavailable)
                .then_some(NO_REASONS);
            let line = ProbeLine {
                plan: p.clone(),
                degraded: degraded.map(str::to_string),
            };
            text += &Output::Probe(line).line();
        }
        return Stdout::new().finish(&text);
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
        ("net.net_cookie", cfg.skb.net_cookie),
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
    Stdout::new().finish(&out)
}

/// Keeps an empty program on the drop hook until SIGINT/SIGTERM: `cargo xtask bench`'s floor.
pub async fn bench_floor(host: Kernel) -> Result<()> {
    let mut signals = Signals::install()?;
    let families = Families::discover(&host);
    let mut ebpf = loader::load(&families.object(&Request::default())?)?;
    let candidates = vec![
        Candidate {
            hook: Hook::TpBtf {
                event: "kfree_skb".into(),
            },
            program: "floor_kfree_skb_btf",
            precondition: Ok(()),
        },
        Candidate {
            hook: Hook::Tracepoint {
                category: "skb".into(),
                name: "kfree_skb".into(),
            },
            program: "floor_kfree_skb_tp",
            precondition: Ok(()),
        },
    ];
    let plan = planner::attach_best(&mut ebpf, "floor", candidates, host.loader_btf().as_ref());
    let Some(chosen) = plan.chosen() else {
        fail!(Unavailable, "{}", plan.failure());
    };
    say!("attached empty floor program via {}", chosen.hook);
    signals.recv().await;
    Ok(())
}
