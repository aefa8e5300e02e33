//! Conntrack evidence from the kernel's own counters: per-CPU `/proc/net/stat/nf_conntrack`
//! deltas and table usage, read inside the namespace in question, and what they say about
//! `NETFILTER_DROP`s (insert failure, table full, or neither: a firewall rule).
pub mod confirm;

use std::{collections::BTreeMap, path::Path};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use crate::{
    facts::{
        conntrack::{self, CpuCounters},
        netns,
    },
    model::finding::Finding,
};

/// Counters at one moment in one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub per_cpu: Vec<CpuCounters>,
    /// `(nf_conntrack_count, nf_conntrack_max)`.
    pub usage: Option<(u64, u64)>,
}

/// Reads the counters in the namespace of file `ns`, or in netdoc's own.
pub fn snapshot(ns: Option<&Path>) -> Result<Snapshot> {
    let read = || {
        Some(Snapshot {
            per_cpu: conntrack::read_stat().ok()?,
            usage: conntrack::read_usage(),
        })
    };
    let snap = match ns {
        None => read(),
        Some(path) => netns::in_namespace(path, read),
    };
    match snap {
        Some(s) => Ok(s),
        None => bail!(
            "conntrack counters are unavailable (nf_conntrack not loaded?): load it with modprobe nf_conntrack"
        ),
    }
}

/// Per-CPU counter growth between two snapshots. `entries` is a level, not a counter: kept as is.
pub fn deltas(before: &Snapshot, after: &Snapshot) -> Vec<CpuCounters> {
    after
        .per_cpu
        .iter()
        .enumerate()
        .map(|(cpu, row)| {
            row.iter()
                .map(|(k, v)| {
                    let was = before.per_cpu.get(cpu).and_then(|r| r.get(k)).copied();
                    let d = if k == "entries" {
                        *v
                    } else {
                        v.saturating_sub(was.unwrap_or(0))
                    };
                    (k.clone(), d)
                })
                .collect()
        })
        .collect()
}

/// What the counters attribute conntrack drops to, summed over CPUs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// Confirm failed (NAT tuple clash): `insert_failed`.
    pub insert_failed: u64,
    /// New connections refused with the table full: `drop` beyond `insert_failed`.
    pub table_full: u64,
    pub early_drop: u64,
    pub clash_resolve: u64,
    pub invalid: u64,
}

pub fn attribute(deltas: &[CpuCounters]) -> Attribution {
    let sum = |k: &str| deltas.iter().filter_map(|r| r.get(k)).sum::<u64>();
    let insert_failed = sum("insert_failed");
    Attribution {
        insert_failed,
        table_full: sum("drop").saturating_sub(insert_failed),
        early_drop: sum("early_drop"),
        clash_resolve: sum("clash_resolve"),
        invalid: sum("invalid"),
    }
}

/// Findings from the attribution and the table usage at the end.
pub fn findings(
    a: &Attribution,
    usage: Option<(u64, u64)>,
    per_cpu: &[CpuCounters],
) -> Vec<Finding> {
    let mut out = Vec::new();
    let usage_text = usage.map_or("table usage unknown".to_string(), |(c, m)| {
        format!("nf_conntrack_count {c} of nf_conntrack_max {m}")
    });
    if a.table_full > 0 {
        out.push(Finding {
            id: "conntrack_table_full".into(),
            title: format!(
                "{} new connections were dropped because the conntrack table was full",
                a.table_full
            ),
            evidence: vec![
                format!("conntrack drop counter grew by {} (insert_failed {})", a.table_full + a.insert_failed, a.insert_failed),
                format!("early_drop evicted {} entries to make room", a.early_drop),
                usage_text.clone(),
            ],
            fix: vec![
                "raise net.netfilter.nf_conntrack_max (and nf_conntrack_buckets, ideally max/4)".into(),
                "shorten timeouts of idle flows (net.netfilter.nf_conntrack_udp_timeout, ..._tcp_timeout_established)".into(),
                "exempt traffic that needs no state: nft ... notrack".into(),
            ],
        });
    }
    if a.insert_failed > 0 {
        let cpus: BTreeMap<usize, u64> = per_cpu
            .iter()
            .enumerate()
            .filter_map(|(c, r)| Some((c, *r.get("insert_failed")?)))
            .filter(|(_, n)| *n > 0)
            .collect();
        out.push(Finding {
            id: "conntrack_insert_failed".into(),
            title: format!(
                "{} packets were dropped because their conntrack entry could not be inserted (a tuple clash, typically concurrent SNAT/masquerade port allocation)",
                a.insert_failed
            ),
            evidence: vec![
                format!("insert_failed per CPU: {cpus:?}"),
                format!("clashes resolved without a drop: {}", a.clash_resolve),
                usage_text,
            ],
            fix: vec![
                "randomize SNAT source ports: masquerade fully-random (iptables --random-fully)".into(),
                "give SNAT more source addresses or a wider port range".into(),
            ],
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rows: &[&[(&str, u64)]], usage: Option<(u64, u64)>) -> Snapshot {
        Snapshot {
            per_cpu: rows
                .iter()
                .map(|r| r.iter().map(|(k, v)| (k.to_string(), *v)).collect())
                .collect(),
            usage,
        }
    }

    #[test]
    fn table_full_and_insert_failures_are_told_apart() {
        let before = snap(
            &[
                &[
                    ("entries", 5),
                    ("drop", 10),
                    ("insert_failed", 2),
                    ("early_drop", 0),
                ],
                &[
                    ("entries", 5),
                    ("drop", 0),
                    ("insert_failed", 0),
                    ("early_drop", 0),
                ],
            ],
            None,
        );
        let after = snap(
            &[
                &[
                    ("entries", 8),
                    ("drop", 40),
                    ("insert_failed", 2),
                    ("early_drop", 3),
                ],
                &[
                    ("entries", 8),
                    ("drop", 5),
                    ("insert_failed", 5),
                    ("early_drop", 0),
                ],
            ],
            Some((8, 8)),
        );
        let d = deltas(&before, &after);
        assert_eq!(d[0]["entries"], 8, "entries is a level");
        assert_eq!(d[0]["drop"], 30);
        let a = attribute(&d);
        assert_eq!(
            a,
            Attribution {
                insert_failed: 5,
                table_full: 30,
                early_drop: 3,
                clash_resolve: 0,
                invalid: 0
            }
        );
        let f = findings(&a, after.usage, &d);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, "conntrack_table_full");
        assert!(
            f[0].evidence
                .iter()
                .any(|e| e.contains("nf_conntrack_count 8 of nf_conntrack_max 8"))
        );
        assert_eq!(f[1].id, "conntrack_insert_failed");
        assert!(f[1].evidence[0].contains("{1: 5}"));
    }

    #[test]
    fn quiet_counters_make_no_finding() {
        let s = snap(&[&[("drop", 3), ("insert_failed", 1)]], Some((1, 100)));
        let a = attribute(&deltas(&s, &s));
        assert_eq!(a, Attribution::default());
        assert!(findings(&a, s.usage, &[]).is_empty());
    }
}
