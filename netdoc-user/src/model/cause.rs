//! What a `NETFILTER_DROP` was, from the stage the netfilter sentinels last saw its skb at and
//! the function that freed it. Pure: every family and the tests share it.
use netdoc_common::conntrack::stage;
use serde::{Deserialize, Serialize};

/// The cause of one `NETFILTER_DROP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// `__nf_conntrack_confirm` refused the packet: its entry could not be inserted (a tuple
    /// clash, typically concurrent SNAT port allocation).
    ConntrackConfirm,
    /// `nf_conntrack_in` refused the packet: the table was full, or the packet untrackable.
    ConntrackIn,
    /// A rule (nftables, iptables, NAT) returned DROP.
    Firewall,
    /// No sentinel saw this skb last on its CPU: another namespace, or nested packet work.
    Unclassified,
}

impl Cause {
    /// The name in JSON and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Cause::ConntrackConfirm => "conntrack_confirm",
            Cause::ConntrackIn => "conntrack_in",
            Cause::Firewall => "firewall",
            Cause::Unclassified => "unclassified",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cause::ConntrackConfirm => "conntrack confirm: insert failed",
            Cause::ConntrackIn => "conntrack in: table full or invalid",
            Cause::Firewall => "firewall rule",
            Cause::Unclassified => "unclassified",
        }
    }
}

/// How the drop probe can tell causes apart on this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    /// Sentinels are attached: every `NETFILTER_DROP` carries a stage.
    Sentinels,
    /// nf_conntrack is not loaded: nothing but rules can return DROP.
    NoConntrack,
    /// Neither: causes stay unknown.
    Blind,
}

/// One drop as the cause rule sees it: typed kernel values only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropFacts {
    /// Whether the drop reason is this kernel's `NETFILTER_DROP`.
    pub netfilter_drop: bool,
    /// Whether the freeing code lies in `nft_do_chain`: nftables frees the packets its rules
    /// drop itself, so such a drop is always a rule's.
    pub freed_by_nftables: bool,
    /// The sentinels' last mark of the skb: its stage and hook (`netdoc_common::conntrack::stage`).
    pub nf_stage: u8,
}

/// The function whose drops are nftables rules'.
pub const NFTABLES: &str = "nft_do_chain";

/// The function that frees a packet queued to an NFQUEUE queue no program reads.
pub const NF_QUEUE: &str = "nf_queue";

/// The cause of a `NETFILTER_DROP`; None for other reasons.
pub fn classify(drop: DropFacts, coverage: Coverage) -> Option<Cause> {
    if !drop.netfilter_drop {
        return None;
    }
    if drop.freed_by_nftables {
        return Some(Cause::Firewall);
    }
    Some(match coverage {
        Coverage::NoConntrack => Cause::Firewall,
        Coverage::Blind => Cause::Unclassified,
        Coverage::Sentinels => match stage::of(drop.nf_stage) {
            stage::RULES => Cause::Firewall,
            stage::CONNTRACK_IN => Cause::ConntrackIn,
            stage::CONNTRACK_CONFIRM => Cause::ConntrackConfirm,
            _ => Cause::Unclassified,
        },
    })
}

/// The netfilter hook a sentinel's mark names, as nftables names hooks.
pub fn hook_name(nf_stage: u8) -> Option<&'static str> {
    match stage::hook(nf_stage)? {
        0 => Some("prerouting"),
        1 => Some("input"),
        2 => Some("forward"),
        3 => Some("output"),
        4 => Some("postrouting"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netfilter(freed_by_nftables: bool, nf_stage: u8) -> DropFacts {
        DropFacts {
            netfilter_drop: true,
            freed_by_nftables,
            nf_stage,
        }
    }

    #[test]
    fn labels_are_the_json_names() {
        for c in [
            Cause::ConntrackConfirm,
            Cause::ConntrackIn,
            Cause::Firewall,
            Cause::Unclassified,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.name());
        }
    }

    #[test]
    fn each_stage_names_its_cause() {
        let at = |s| classify(netfilter(false, s), Coverage::Sentinels);
        assert_eq!(at(stage::CONNTRACK_IN), Some(Cause::ConntrackIn));
        assert_eq!(at(stage::CONNTRACK_CONFIRM), Some(Cause::ConntrackConfirm));
        assert_eq!(at(stage::RULES), Some(Cause::Firewall));
        assert_eq!(at(stage::UNSEEN), Some(Cause::Unclassified));
        assert_eq!(at(stage::NONE), Some(Cause::Unclassified));
    }

    #[test]
    fn a_mark_carries_its_hook_beside_its_stage() {
        let confirm_at_postrouting = stage::at_hook(stage::CONNTRACK_CONFIRM, 4);
        assert_eq!(
            classify(
                netfilter(false, confirm_at_postrouting),
                Coverage::Sentinels
            ),
            Some(Cause::ConntrackConfirm)
        );
        assert_eq!(hook_name(confirm_at_postrouting), Some("postrouting"));
        assert_eq!(hook_name(stage::at_hook(stage::RULES, 1)), Some("input"));
        assert_eq!(
            hook_name(stage::at_hook(stage::RULES, 0)),
            Some("prerouting")
        );
        // Records from before marks carried hooks, and drops no sentinel saw.
        assert_eq!(hook_name(stage::RULES), None);
        assert_eq!(hook_name(stage::UNSEEN), None);
    }

    #[test]
    fn nftables_drops_are_rules_whatever_the_stage() {
        for cov in [Coverage::Sentinels, Coverage::Blind, Coverage::NoConntrack] {
            assert_eq!(
                classify(netfilter(true, stage::CONNTRACK_IN), cov),
                Some(Cause::Firewall)
            );
        }
    }

    #[test]
    fn without_sentinels_only_a_missing_conntrack_decides() {
        let drop = |cov| classify(netfilter(false, stage::NONE), cov);
        assert_eq!(drop(Coverage::NoConntrack), Some(Cause::Firewall));
        assert_eq!(drop(Coverage::Blind), Some(Cause::Unclassified));
        assert_eq!(
            classify(
                DropFacts {
                    netfilter_drop: false,
                    ..netfilter(false, stage::CONNTRACK_IN)
                },
                Coverage::Sentinels
            ),
            None
        );
    }
}
