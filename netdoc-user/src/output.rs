//! The one schema of everything netdoc prints as JSON (documented in `docs/schema.md`): every
//! line is an [`Output`], whose `"type"` comes from the enum; summaries and reports carry
//! [`SCHEMA_VERSION`]. Programs (and netdoc's own tests) read netdoc's output back into these
//! types.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    conntrack::Attribution,
    facts::conntrack::CpuCounters,
    namespaces::GoneNetns,
    planner::{ProbePlan, ProbeStatus},
    softirq::{
        nicmap::NicMap,
        series::{CpuSummary, Heatmap},
    },
};

pub use crate::{
    check::verdict::{Report as CheckReport, Reproducer, Verdict},
    conntrack::{NamespaceConntrack, confirm::InsertFailure},
    doctor::Report as DoctorReport,
    drops::report::{NamedDrop, Row as DropsRow, Summary as DropsSummary},
    model::cause::Cause,
    model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity},
    planner::{Hook, Outcome},
    retrans::report::{FlowRow, NamedRetrans},
};

/// Bumped when a field changes meaning or disappears; added fields keep the version.
pub const SCHEMA_VERSION: u32 = 3;

/// One JSON line of netdoc's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one value per printed line; boxing buys nothing here
pub enum Output {
    /// `netdoc drops --json` (and `netdoc conntrack` without a function hook): one drop.
    Drop(NamedDrop),
    /// `netdoc retrans --json`: one retransmit.
    Retransmit(NamedRetrans),
    /// `netdoc conntrack --json` with a function hook: one conntrack insertion failure.
    InsertFailed(InsertFailure),
    /// The last line of `drops`, `retrans` and `conntrack`; `"command"` says whose.
    Summary(Summary),
    /// `netdoc softirq --json`.
    Softirq(SoftirqReport),
    /// `netdoc irq --json`.
    Irq(SoftirqReport),
    /// `netdoc check --json`: the verdict and its evidence.
    Check(CheckReport),
    /// `netdoc probes --json`: one probe's attach plan.
    Probe(ProbeLine),
    /// `netdoc doctor --json`: the ranked findings of a run or a replay.
    Doctor(DoctorReport),
}

impl Output {
    /// The line as printed: JSON and a newline.
    pub fn line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default() + "\n"
    }
}

/// The summary of one live command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Summary {
    Drops(DropsSummary),
    Retrans(RetransSummary),
    Conntrack(ConntrackSummary),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetransSummary {
    pub schema_version: u32,
    pub hook: String,
    pub duration_s: f64,
    pub streaming: bool,
    pub retransmits: u64,
    pub segments: u64,
    /// Every retransmit the probes saw: `delivered + lost + sampled` equals this when streaming.
    pub matched: u64,
    pub delivered: u64,
    pub lost: u64,
    /// Counted but not streamed: over a CPU's budget of records per second.
    #[serde(default)]
    pub sampled: u64,
    pub unknown_records: u64,
    pub aggregation_overflow: u64,
    pub flows: Vec<FlowRow>,
    pub findings: Vec<Finding>,
    /// Every probe of the run: its hook, or why it is unavailable.
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConntrackSummary {
    pub schema_version: u32,
    /// `--netns` as given; null host-wide.
    pub netns: Option<String>,
    pub duration_s: f64,
    /// Entries in every namespace's table at the end, and the one limit they share.
    pub nf_conntrack_count: Option<u64>,
    pub nf_conntrack_max: Option<u64>,
    /// Counter growth summed over namespaces.
    pub per_cpu: Vec<CpuCounters>,
    pub attribution: Attribution,
    /// The function hook on `__nf_conntrack_confirm`, when one attached.
    pub confirm_hook: Option<String>,
    /// Why no function hook attached (the counters are then the only conntrack evidence).
    pub confirm_degraded: Option<String>,
    /// Insertion-failure events delivered, and lost (buffer full or a missed kprobe entry).
    pub insert_failure_events: u64,
    pub insert_failure_events_lost: u64,
    /// Counted but not streamed: over a CPU's budget of records per second.
    #[serde(default)]
    pub insert_failure_events_sampled: u64,
    /// Without a function hook: the stage sentinels that name each `NETFILTER_DROP`'s cause,
    /// or why they could not attach.
    pub stage_probe: Option<String>,
    pub stage_degraded: Option<String>,
    /// `NETFILTER_DROP`s per cause (from the kernel's counts), and the conntrack-caused drop
    /// events delivered and lost.
    pub netfilter_causes: BTreeMap<Cause, u64>,
    pub conntrack_drop_events: u64,
    pub conntrack_drop_events_lost: u64,
    #[serde(default)]
    pub conntrack_drop_events_sampled: u64,
    /// Every namespace that used conntrack during the run (only `--netns` when given).
    #[serde(default)]
    pub namespaces: Vec<NamespaceConntrack>,
    /// The latest namespaces that went away during the run, and how many went before them.
    #[serde(default)]
    pub namespaces_gone: Vec<GoneNetns>,
    #[serde(default)]
    pub namespaces_gone_earlier: u64,
    /// Every namespace's findings, each scoped to its namespace.
    pub findings: Vec<Finding>,
    /// Every probe of the run: its hook, or why it is unavailable.
    #[serde(default)]
    pub probes: Vec<ProbeStatus>,
}

/// The heatmap, per-CPU summary, NIC map and findings of `netdoc softirq` and `netdoc irq`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoftirqReport {
    pub schema_version: u32,
    pub host: String,
    pub kernel: String,
    pub duration_s: f64,
    /// Each probe and the hook it attached through, or "not attached".
    pub probes: BTreeMap<String, String>,
    pub vector: String,
    pub cpus: Vec<u32>,
    pub heatmap: Heatmap,
    pub summary: Vec<CpuSummary>,
    pub nic_map: NicMap,
    pub findings: Vec<Finding>,
}

/// One probe of `netdoc probes --json`: every hook tried, and what this kernel lacks for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProbeLine {
    #[serde(flatten)]
    pub plan: ProbePlan,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub degraded: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_names_its_type_and_reads_back() {
        let summary = Output::Summary(Summary::Retrans(RetransSummary {
            schema_version: SCHEMA_VERSION,
            hook: "tp_btf/tcp_retransmit_skb".into(),
            duration_s: 1.5,
            streaming: true,
            retransmits: 3,
            segments: 4,
            matched: 3,
            delivered: 3,
            lost: 0,
            sampled: 0,
            unknown_records: 0,
            aggregation_overflow: 0,
            flows: vec![],
            findings: vec![],
            probes: vec![],
        }));
        let line = summary.line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "summary");
        assert_eq!(v["command"], "retrans");
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        let back: Output = serde_json::from_str(&line).unwrap();
        let Output::Summary(Summary::Retrans(r)) = back else {
            panic!("read back as another variant: {line}");
        };
        assert_eq!((r.retransmits, r.segments), (3, 4));
    }

    /// Recorded from `netdoc drops --counts-only --json` on 6.18: per-CPU counts are a map
    /// keyed by CPU number, which JSON writes as strings.
    #[test]
    fn a_recorded_drops_summary_reads_back() {
        let line = r#"{"type":"summary","command":"drops","schema_version":1,"hook":"tp_btf/kfree_skb","reason_names":"BTF enum skb_drop_reason","duration_s":1.54,"streaming":false,"counts":{"NETFILTER_DROP":32,"NO_SOCKET":8},"total":40,"seen":40,"matched":40,"delivered":0,"lost":0,"unknown_records":0,"aggregation_overflow":0,"in_net_rx":null,"netfilter_causes":{"conntrack_in":32},"netfilter_stages":"44 netfilter links in 2 namespace(s)","locations":[{"reason":"NETFILTER_DROP","reason_code":12,"cause":"conntrack_in","location":"nf_hook_slow+0x7d","count":32,"rate":20.7,"cpus":{"0":32},"last_flow":null}]}"#;
        let Output::Summary(Summary::Drops(s)) = serde_json::from_str(line).unwrap() else {
            panic!("a drops summary");
        };
        assert_eq!(s.netfilter_causes[&Cause::ConntrackIn], 32);
        assert_eq!(s.locations[0].cpus[&0], 32);
        // Recorded before `sampled`, `namespaces` and `probes` were added: an added field
        // reads as empty and writes back.
        let again = Output::Summary(Summary::Drops(s)).line();
        let with_budget = line.replace(
            "\"lost\":0,",
            "\"lost\":0,\"sampled\":0,\"max_events_per_sec\":0,",
        );
        assert_eq!(
            again.trim_end(),
            format!(
                "{},\"namespaces\":[],\"namespaces_gone\":[],\"namespaces_gone_earlier\":0,\"counted\":[],\"probes\":[]}}",
                with_budget.trim_end_matches('}')
            )
        );
    }
}
