//! Conntrack evidence from the kernel's own counters: per-CPU `/proc/net/stat/nf_conntrack`
//! deltas and table usage, read inside the namespace in question, and what they say about
//! `NETFILTER_DROP`s (insert failure, table full, or neither: a firewall rule).
pub mod confirm;

use std::{collections::BTreeMap, path::Path, time::Instant};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    facts::{
        conntrack::{self, CpuCounters},
        natrules::{self, NatRule},
        netns,
    },
    model::{
        cause::Cause,
        finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity},
    },
    namespaces::{
        Inventory, NetnsKey, NetnsRef,
        turns::{Activity, Turns},
    },
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
        None => fail!(
            Unavailable,
            "conntrack counters are unavailable (nf_conntrack not loaded?): load it with modprobe nf_conntrack"
        ),
    }
}

/// One namespace's conntrack over a run.
struct Followed {
    id: NetnsRef,
    first: Snapshot,
    last: Snapshot,
    /// The fullest the table was at a reading: a full table may be emptied (or its limit
    /// raised) by the end.
    peak: Option<(u64, u64)>,
    first_seen_s: f64,
    gone: bool,
    /// Its source NAT rules, read when its insertions first failed.
    nat_rules: Option<NatReading>,
}

/// A namespace's source NAT rules, or why they could not be read.
pub type NatReading = Result<Vec<NatRule>, crate::Error>;

/// The conntrack counters of every namespace that uses conntrack, followed over a run: the
/// first reading is the baseline; a namespace that starts using conntrack later starts from
/// zero (every counter of a namespace is zero until conntrack is used there), and one that
/// goes away keeps its last reading.
pub struct PerNamespace {
    followed: BTreeMap<NetnsKey, Followed>,
    /// `--netns`: only that namespace is followed.
    only: Option<u32>,
    started: Instant,
    turns: Turns,
}

impl PerNamespace {
    pub fn start(namespaces: &Inventory, only: Option<u32>) -> Self {
        let mut p = Self {
            followed: BTreeMap::new(),
            only,
            started: Instant::now(),
            turns: Turns::default(),
        };
        p.read(namespaces, true, None);
        p
    }

    /// The next window, begun at the last reading (which read every namespace): each namespace
    /// followed goes on from its last reading; any other starts from zero when it is first
    /// read in use. Not from a reading of its own, which would hide in its baseline what a
    /// namespace made late in the last window counted before it was first read.
    pub fn next_window(&self) -> Self {
        let followed = self
            .followed
            .iter()
            .filter(|(_, f)| !f.gone)
            .map(|(key, f)| {
                let next = Followed {
                    id: f.id.clone(),
                    first: f.last.clone(),
                    last: f.last.clone(),
                    peak: f.last.usage,
                    first_seen_s: 0.0,
                    gone: false,
                    nat_rules: None,
                };
                (*key, next)
            })
            .collect();
        Self {
            followed,
            only: self.only,
            started: Instant::now(),
            turns: Turns::default(),
        }
    }

    fn wanted<'a>(
        &self,
        namespaces: &'a Inventory,
    ) -> impl Iterator<Item = (NetnsKey, &'a NetnsRef, std::path::PathBuf)> + 'a {
        let only = self.only;
        namespaces
            .all()
            .filter(move |n| only.is_none_or(|o| o == n.id.inode))
            .filter_map(|n| Some(((n.id.inode, n.id.cookie), &n.id, n.file()?)))
    }

    /// Reads the namespaces with `active` drops or retransmits, and a few others in turn;
    /// marks the followed ones that are gone.
    pub fn sample(&mut self, namespaces: &Inventory, active: &Activity) {
        let candidates: Vec<u32> = self
            .wanted(namespaces)
            .map(|((inode, _), ..)| inode)
            .collect();
        let picked = self.turns.pick(candidates.into_iter(), active);
        self.read(namespaces, false, Some(&picked));
    }

    /// Reads every namespace: for a summary.
    pub fn sample_all(&mut self, namespaces: &Inventory) {
        self.read(namespaces, false, None);
    }

    /// Reads the namespaces `picked` (inodes), or all, where they use conntrack.
    fn read(&mut self, namespaces: &Inventory, initial: bool, picked: Option<&Activity>) {
        let files: Vec<(NetnsKey, std::path::PathBuf)> = self
            .wanted(namespaces)
            .filter(|((inode, _), ..)| picked.is_none_or(|p| p.contains(inode)))
            .map(|(k, _, f)| (k, f))
            .collect();
        let ids: BTreeMap<NetnsKey, NetnsRef> = self
            .wanted(namespaces)
            .map(|(k, id, _)| (k, id.clone()))
            .collect();
        let readings = netns::visit(files, |_| {
            let per_cpu = conntrack::read_stat().ok()?;
            conntrack::in_use(&per_cpu).then(|| Snapshot {
                per_cpu,
                usage: conntrack::read_usage(),
            })
        });
        let now = self.started.elapsed().as_secs_f64();
        for (key, reading) in readings {
            let Some(snap) = reading.flatten() else {
                continue;
            };
            match self.followed.get_mut(&key) {
                Some(f) => {
                    let grew = attribute(&deltas(&f.last, &snap));
                    if grew.table_full + grew.insert_failed + grew.early_drop + grew.invalid > 0 {
                        self.turns.grew(key.0);
                    }
                    f.peak = fuller(f.peak, snap.usage);
                    f.last = snap;
                }
                None => {
                    self.followed.insert(
                        key,
                        Followed {
                            id: ids[&key].clone(),
                            first: if initial {
                                snap.clone()
                            } else {
                                Snapshot::default()
                            },
                            peak: snap.usage,
                            last: snap,
                            first_seen_s: if initial { 0.0 } else { now },
                            gone: false,
                            nat_rules: None,
                        },
                    );
                }
            }
        }
        for (key, f) in &mut self.followed {
            f.gone = !ids.contains_key(key);
        }
        self.read_nat_rules(namespaces);
    }

    /// Reads the source NAT rules of each namespace whose insertions failed for the first time:
    /// the rules whose port allocation clashes.
    fn read_nat_rules(&mut self, namespaces: &Inventory) {
        let failing: Vec<(NetnsKey, std::path::PathBuf)> = self
            .wanted(namespaces)
            .filter(|(key, ..)| {
                self.followed.get(key).is_some_and(|f| {
                    f.nat_rules.is_none()
                        && !f.gone
                        && attribute(&deltas(&f.first, &f.last)).insert_failed > 0
                })
            })
            .map(|(key, _, file)| (key, file))
            .collect();
        for (key, rules) in netns::visit(failing, |_| natrules::read_here()) {
            if let (Some(f), Some(rules)) = (self.followed.get_mut(&key), rules) {
                f.nat_rules = Some(rules);
            }
        }
    }

    /// Each namespace's counter growth, attribution and findings, busiest first.
    pub fn report(
        &self,
        causes: &BTreeMap<NetnsKey, BTreeMap<Cause, u64>>,
    ) -> Vec<NamespaceConntrack> {
        let mut out: Vec<NamespaceConntrack> = self
            .followed
            .iter()
            .map(|(key, f)| {
                let per_cpu = deltas(&f.first, &f.last);
                let attribution = attribute(&per_cpu);
                let scope = Scope::new(ScopeKind::Namespace, f.id.name.clone());
                let found = findings(&attribution, f.peak, &per_cpu, f.nat_rules.as_ref(), &scope);
                NamespaceConntrack {
                    netns: f.id.clone(),
                    first_seen_s: f.first_seen_s,
                    gone: f.gone,
                    nf_conntrack_count: f.last.usage.map(|u| u.0),
                    nf_conntrack_max: f.last.usage.map(|u| u.1),
                    peak_count: f.peak.map(|u| u.0),
                    peak_max: f.peak.map(|u| u.1),
                    attribution,
                    netfilter_causes: causes.get(key).cloned().unwrap_or_default(),
                    per_cpu,
                    findings: found,
                    nat_rules: match &f.nat_rules {
                        Some(Ok(rules)) => rules.clone(),
                        _ => Vec::new(),
                    },
                    nat_rules_unavailable: f
                        .nat_rules
                        .as_ref()
                        .and_then(|r| r.as_ref().err().map(ToString::to_string)),
                }
            })
            .collect();
        out.sort_by_key(|n| {
            let a = &n.attribution;
            std::cmp::Reverse(a.table_full + a.insert_failed + a.early_drop + a.invalid)
        });
        out
    }
}

/// The fuller of two `(count, max)` readings, by share of the limit.
fn fuller(a: Option<(u64, u64)>, b: Option<(u64, u64)>) -> Option<(u64, u64)> {
    let share = |(c, m): (u64, u64)| c as f64 / m.max(1) as f64;
    match (a, b) {
        (Some(a), Some(b)) => Some(if share(b) >= share(a) { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// One namespace in `netdoc conntrack`'s summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceConntrack {
    pub netns: NetnsRef,
    /// Seconds into the run it was first seen using conntrack (0: from the start); counts
    /// before then are in the baseline of a namespace that was there, or zero for a new one.
    pub first_seen_s: f64,
    /// It went away during the run: its counts are the last reading.
    pub gone: bool,
    /// Table usage at the last reading.
    pub nf_conntrack_count: Option<u64>,
    pub nf_conntrack_max: Option<u64>,
    /// The fullest reading of the run (read when its drops or counters moved, and in its
    /// turn): count and the limit then.
    pub peak_count: Option<u64>,
    pub peak_max: Option<u64>,
    pub attribution: Attribution,
    /// `NETFILTER_DROP` events delivered from this namespace, per cause.
    pub netfilter_causes: BTreeMap<Cause, u64>,
    pub per_cpu: Vec<CpuCounters>,
    pub findings: Vec<Finding>,
    /// Its source NAT rules, read once its insertions failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_rules: Vec<NatRule>,
    /// Why they could not be read, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_rules_unavailable: Option<String>,
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

/// Where the conntrack counters and table usage come from.
const STAT: &str = "/proc/net/stat/nf_conntrack";
const NFT: &str = "nft -j list ruleset, in the namespace";

/// The namespace's source NAT rules, each with whether its ports are fully random.
fn nat_evidence(nat: Option<&NatReading>) -> Vec<Evidence> {
    match nat {
        None => Vec::new(),
        Some(Err(why)) => vec![Evidence::new(
            format!("its source NAT rules could not be read: {why}"),
            NFT,
        )],
        Some(Ok(rules)) if rules.is_empty() => vec![Evidence::new(
            "no source NAT rule (masquerade, snat) in its nftables ruleset (iptables-legacy rules are not listed there)",
            NFT,
        )],
        Some(Ok(rules)) => rules
            .iter()
            .map(|r| {
                let ports = match r.fully_random {
                    Some(true) => "ports fully random",
                    Some(false) => "ports not fully random",
                    None => "an iptables target nft does not translate: iptables-save -t nat shows whether it has --random-fully",
                };
                Evidence::new(
                    format!(
                        "source NAT rule in {} {}: {} ({ports})",
                        r.table, r.chain, r.rule
                    ),
                    NFT,
                )
            })
            .collect(),
    }
}

/// What to change in the NAT rules: the ones without fully random ports, by name (or those
/// whose randomness nft does not show, to check).
fn nat_fix(nat: Option<&NatReading>) -> String {
    const HOW: &str = "nft: masquerade fully-random, snat to ... fully-random; iptables: -j MASQUERADE --random-fully";
    let named = |rules: &[NatRule], randomness: Option<bool>| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.fully_random == randomness)
            .map(|r| format!("{} {}: {}", r.table, r.chain, r.rule))
            .collect()
    };
    match nat {
        Some(Ok(rules)) if !rules.is_empty() => {
            let (plain, unknown) = (named(rules, Some(false)), named(rules, None));
            if !plain.is_empty() {
                format!("randomize the source ports of {} ({HOW})", plain.join("; "))
            } else if !unknown.is_empty() {
                format!(
                    "check that these iptables rules have --random-fully (iptables-save -t nat), and add it where missing: {}",
                    unknown.join("; ")
                )
            } else {
                "its NAT rules already randomize ports fully: the clashes are packets of one new flow racing each other (DNS A and AAAA queries from one socket); see the DNS fix".into()
            }
        }
        _ => format!("randomize SNAT source ports ({HOW})"),
    }
}

const USAGE: &str = "net.netfilter.nf_conntrack_count/max, sampled";

/// Findings from the attribution and the fullest table usage seen, about `scope`.
pub fn findings(
    a: &Attribution,
    usage: Option<(u64, u64)>,
    per_cpu: &[CpuCounters],
    nat: Option<&NatReading>,
    scope: &Scope,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let usage_text = usage.map_or("table usage unknown".to_string(), |(c, m)| {
        format!("fullest sampled table: nf_conntrack_count {c} of nf_conntrack_max {m}")
    });
    let raise = usage.map_or(
        "sysctl -w net.netfilter.nf_conntrack_max=N (and nf_conntrack_buckets, ideally max/4)"
            .to_string(),
        |(_, m)| {
            format!(
                "sysctl -w net.netfilter.nf_conntrack_max={} (now {m}; and nf_conntrack_buckets={}, a quarter of it)",
                (m * 2).max(65536),
                (m * 2).max(65536) / 4
            )
        },
    );
    if a.table_full > 0 {
        out.push(Finding {
            explains: Vec::new(),
            scope: scope.clone(),
            id: "conntrack_table_full".into(),
            affected: a.table_full,
            severity: Severity::Critical,
            confidence: if usage.is_some_and(|(c, m)| c * 10 >= m * 9) {
                Confidence::High
            } else {
                Confidence::Medium
            },
            title: format!(
                "{} new connections were dropped because the conntrack table was full",
                a.table_full
            ),
            evidence: vec![
                Evidence::new(
                    format!(
                        "conntrack drop counter grew by {} (insert_failed {})",
                        a.table_full + a.insert_failed,
                        a.insert_failed
                    ),
                    STAT,
                ),
                Evidence::new(
                    format!("early_drop evicted {} entries to make room", a.early_drop),
                    STAT,
                ),
                Evidence::new(usage_text.clone(), USAGE),
            ],
            fix: vec![
                raise.clone(),
                "shorten timeouts of idle flows (net.netfilter.nf_conntrack_udp_timeout, ..._tcp_timeout_established)".into(),
                "exempt traffic that needs no state: nft add rule inet raw prerouting udp dport 53 notrack".into(),
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
            explains: Vec::new(),
            scope: scope.clone(),
            id: "conntrack_insert_failed".into(),
            affected: a.insert_failed,
            severity: Severity::Critical,
            confidence: Confidence::High,
            title: format!(
                "{} packets were dropped because their conntrack entry could not be inserted (a tuple clash, typically concurrent SNAT/masquerade port allocation)",
                a.insert_failed
            ),
            evidence: [
                Evidence::new(format!("insert_failed per CPU: {cpus:?}"), STAT),
                Evidence::new(
                    format!("clashes resolved without a drop: {}", a.clash_resolve),
                    STAT,
                ),
                Evidence::new(usage_text, USAGE),
            ]
            .into_iter()
            .chain(nat_evidence(nat))
            .collect(),
            fix: [nat_fix(nat)]
                .into_iter()
                .chain([
                    "give SNAT more source addresses or a wider port range (net.ipv4.ip_local_port_range)".into(),
                    "for DNS over UDP (the five-second timeout): options single-request-reopen in resolv.conf, or a node-local DNS cache".into(),
                ])
                .collect(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_goes_on_from_the_last_readings_of_the_live_namespaces() {
        let followed = |first, last, gone| Followed {
            id: NetnsRef::named("b"),
            first,
            last,
            peak: Some((8, 8)),
            first_seen_s: 2.5,
            gone,
            nat_rules: Some(Ok(vec![])),
        };
        let before = snap(&[&[("drop", 0)]], Some((1, 8)));
        let after = snap(&[&[("drop", 32)]], Some((8, 8)));
        let mut window = PerNamespace {
            followed: BTreeMap::new(),
            only: None,
            started: Instant::now(),
            turns: Turns::default(),
        };
        window
            .followed
            .insert((1, Some(1)), followed(before.clone(), after.clone(), false));
        window
            .followed
            .insert((2, Some(2)), followed(before, after.clone(), true));
        let next = window.next_window();
        assert_eq!(next.followed.len(), 1, "the gone namespace is left behind");
        let b = &next.followed[&(1, Some(1))];
        assert_eq!((&b.first, &b.last), (&after, &after), "no growth yet");
        assert_eq!(
            (b.peak, b.first_seen_s, b.nat_rules.is_none()),
            (Some((8, 8)), 0.0, true)
        );
    }

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
        let f = findings(&a, after.usage, &d, None, &Scope::host());
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, "conntrack_table_full");
        assert!(f[0].evidence.iter().any(|e| {
            e.text
                .contains("nf_conntrack_count 8 of nf_conntrack_max 8")
        }));
        assert_eq!(f[1].id, "conntrack_insert_failed");
        assert!(f[1].evidence[0].text.contains("{1: 5}"));
    }

    fn rule(rule: &str, fully_random: Option<bool>) -> NatRule {
        NatRule {
            table: "ip nat".into(),
            chain: "POSTROUTING".into(),
            rule: rule.into(),
            fully_random,
        }
    }

    #[test]
    fn insert_failures_name_the_nat_rules_to_randomize() {
        let a = Attribution {
            insert_failed: 19,
            ..Attribution::default()
        };
        let rules: NatReading = Ok(vec![
            rule("oifname \"eth0\" masquerade", Some(false)),
            rule(
                "ip saddr 10.0.0.0/8 snat to 1.2.3.4 fully-random",
                Some(true),
            ),
        ]);
        let f = findings(&a, None, &[], Some(&rules), &Scope::host());
        assert_eq!(f[0].id, "conntrack_insert_failed");
        let evidence: Vec<&str> = f[0].evidence.iter().map(|e| e.text.as_str()).collect();
        assert!(evidence.contains(
            &"source NAT rule in ip nat POSTROUTING: oifname \"eth0\" masquerade (ports not fully random)"
        ));
        assert!(evidence.contains(
            &"source NAT rule in ip nat POSTROUTING: ip saddr 10.0.0.0/8 snat to 1.2.3.4 fully-random (ports fully random)"
        ));
        assert!(
            f[0].fix[0].starts_with(
                "randomize the source ports of ip nat POSTROUTING: oifname \"eth0\" masquerade ("
            ),
            "only the rule without fully random ports: {}",
            f[0].fix[0]
        );
        let random: NatReading = Ok(vec![rule("masquerade fully-random", Some(true))]);
        let f = findings(&a, None, &[], Some(&random), &Scope::host());
        assert!(f[0].fix[0].contains("already randomize ports fully"));
        let untranslated: NatReading = Ok(vec![
            rule("masquerade fully-random", Some(true)),
            rule("counter xt target \"MASQUERADE\"", None),
        ]);
        let f = findings(&a, None, &[], Some(&untranslated), &Scope::host());
        assert!(
            f[0].fix[0].starts_with("check that these iptables rules have --random-fully")
                && f[0].fix[0].ends_with("ip nat POSTROUTING: counter xt target \"MASQUERADE\""),
            "never called fully random, never called plain: {}",
            f[0].fix[0]
        );
        let unread: NatReading = Err(crate::Error::Unavailable(
            "nft list ruleset: No such file or directory".into(),
        ));
        let f = findings(&a, None, &[], Some(&unread), &Scope::host());
        assert!(
            f[0].evidence
                .last()
                .unwrap()
                .text
                .contains("could not be read")
        );
        assert!(f[0].fix[0].contains("--random-fully"), "the general advice");
    }

    #[test]
    fn the_peak_is_the_fullest_share_of_the_limit() {
        assert_eq!(fuller(Some((8, 8)), Some((8, 262144))), Some((8, 8)));
        assert_eq!(fuller(None, Some((1, 10))), Some((1, 10)));
        assert_eq!(fuller(Some((5, 10)), Some((9, 10))), Some((9, 10)));
    }

    #[test]
    fn quiet_counters_make_no_finding() {
        let s = snap(&[&[("drop", 3), ("insert_failed", 1)]], Some((1, 100)));
        let a = attribute(&deltas(&s, &s));
        assert_eq!(a, Attribution::default());
        assert!(findings(&a, s.usage, &[], None, &Scope::host()).is_empty());
    }
}
