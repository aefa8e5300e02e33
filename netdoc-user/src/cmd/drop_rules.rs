//! The drop rules of the namespaces where a firewall dropped packets: read when a watch first
//! sees such a drop there, and again before a report, so the rule whose counter grew can be
//! named. Bounded: a few namespaces per tick, at most [`MAX_NAMESPACES`] per watch.
use std::collections::BTreeMap;

use crate::{
    doctor::{CountedDropRule, NamespaceDropRules},
    drops::report::NamedDrop,
    facts::{
        droprules::{self, DropRule},
        netns,
    },
    model::cause::{Cause, NF_QUEUE, NFTABLES},
    namespaces::{Inventory, NetnsKey, NetnsRef},
};

/// Namespaces whose rules one watch reads: each reading runs `nft` once.
const MAX_NAMESPACES: usize = 32;
/// First readings per tick.
const PER_TICK: usize = 4;
/// Samples a namespace not yet in the inventory is looked for before it is given up.
const SAMPLES_TO_FIND: u8 = 5;

type Reading = Result<Vec<DropRule>, crate::Error>;

struct Read {
    netns: NetnsRef,
    first: Reading,
    last: Option<Reading>,
}

#[derive(Default)]
pub struct DropRuleReadings {
    /// Namespaces with a drop a rule may have made, not read yet, and the samples left to find
    /// each in the inventory (a drop may come before netdoc has found its namespace).
    wanted: BTreeMap<NetnsKey, u8>,
    read: BTreeMap<NetnsKey, Read>,
}

/// Whether a rule may have made this drop: the sentinels or nftables say so, or nothing told
/// (no sentinel there, or no drop reasons, where netfilter frees in `nf_hook_slow`).
fn may_be_a_rule(d: &NamedDrop) -> bool {
    match d.cause {
        Some(Cause::Firewall | Cause::Unclassified) => true,
        Some(Cause::ConntrackIn | Cause::ConntrackConfirm) => false,
        None => {
            let function = d.location.split('+').next().unwrap_or_default();
            [NFTABLES, "nf_hook_slow", NF_QUEUE].contains(&function)
        }
    }
}

impl DropRuleReadings {
    /// Notes a streamed drop: its namespace's rules are read at the next sample.
    pub fn saw(&mut self, d: &NamedDrop) {
        let key = (d.netns, d.netns_cookie);
        if may_be_a_rule(d)
            && !self.read.contains_key(&key)
            && self.read.len() + self.wanted.len() < MAX_NAMESPACES
        {
            self.wanted.entry(key).or_insert(SAMPLES_TO_FIND);
        }
    }

    /// First readings of a few namespaces that showed a rule's drop; with `again`, every
    /// namespace read before is read again too (before a report).
    pub fn sample(&mut self, inventory: &Inventory, again: bool) {
        let first: Vec<(NetnsKey, u8)> = std::mem::take(&mut self.wanted).into_iter().collect();
        let (now, later) = first.split_at(if again {
            first.len()
        } else {
            first.len().min(PER_TICK)
        });
        self.wanted.extend(later.iter().copied());
        let mut files = Vec::new();
        let again_too = self.read.keys().filter(|_| again).map(|key| (*key, 0));
        for (key, left) in now.iter().copied().chain(again_too) {
            let live = inventory
                .all()
                .find(|n| n.id.inode == key.0 && (key.1.is_none() || n.id.cookie == key.1));
            match live.and_then(|n| Some((n.id.clone(), n.file()?))) {
                Some((id, file)) => files.push(((key, id), file)),
                None if left > 1 && !self.read.contains_key(&key) => {
                    self.wanted.insert(key, left - 1);
                }
                None => {}
            }
        }
        for ((key, id), rules) in netns::visit(files, |_| droprules::read_here()) {
            let Some(rules) = rules else { continue };
            match self.read.get_mut(&key) {
                Some(r) => r.last = Some(rules),
                None => {
                    self.read.insert(
                        key,
                        Read {
                            netns: id,
                            first: rules,
                            last: None,
                        },
                    );
                }
            }
        }
    }

    /// Each namespace's drop rules, as last read, with how much each counter grew since the
    /// first reading.
    pub fn report(&self) -> Vec<NamespaceDropRules> {
        self.read
            .values()
            .map(|r| {
                let last = r.last.as_ref().unwrap_or(&r.first);
                let first = r.first.as_ref().ok();
                match last {
                    Ok(rules) => NamespaceDropRules {
                        netns: r.netns.clone(),
                        rules: rules
                            .iter()
                            .map(|rule| CountedDropRule {
                                grew: r.last.is_some().then(|| grew(first, rule)).flatten(),
                                rule: rule.clone(),
                            })
                            .collect(),
                        unavailable: None,
                    },
                    Err(why) => NamespaceDropRules {
                        netns: r.netns.clone(),
                        rules: Vec::new(),
                        unavailable: Some(why.to_string()),
                    },
                }
            })
            .collect()
    }
}

/// How much a rule's counter grew since the first reading; a rule made since counts from 0.
fn grew(first: Option<&Vec<DropRule>>, now: &DropRule) -> Option<u64> {
    let packets = now.packets?;
    let before = first?
        .iter()
        .find(|r| {
            (r.source, &r.table, &r.chain, r.handle)
                == (now.source, &now.table, &now.chain, now.handle)
        })
        .and_then(|r| r.packets)
        .unwrap_or(0);
    Some(packets.saturating_sub(before))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(handle: u64, packets: Option<u64>) -> DropRule {
        DropRule {
            source: Default::default(),
            table: "inet f".into(),
            chain: "input".into(),
            hook: Some("input".into()),
            handle: Some(handle),
            rule: "udp dport 7777 counter drop".into(),
            packets,
        }
    }

    #[test]
    fn a_counter_grows_from_the_first_reading_and_a_new_rule_from_zero() {
        let first = vec![rule(4, Some(20))];
        assert_eq!(grew(Some(&first), &rule(4, Some(32))), Some(12));
        assert_eq!(grew(Some(&first), &rule(9, Some(5))), Some(5));
        assert_eq!(grew(Some(&first), &rule(4, None)), None);
        assert_eq!(grew(None, &rule(4, Some(5))), None, "first reading failed");
    }
}
