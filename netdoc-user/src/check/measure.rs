//! What one check run measured, and the value of each metric in it. A metric that this kernel
//! (or this run) cannot measure is `Err(why)`: the check is then untestable, never a pass.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::expect::Metric;
use crate::Error;

/// Drops of one reason at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCount {
    pub reason: String,
    /// `function+0xoff`.
    pub location: String,
    pub count: u64,
}

/// Drop reasons as this kernel names them; `None` when its `kfree_skb` carries no reason.
pub type ReasonNames = Option<BTreeSet<String>>;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measurements {
    /// Per (reason, location), or why the drop probe did not run.
    pub drops: Option<Result<Vec<DropCount>, Unmeasured>>,
    #[serde(skip)]
    pub reason_names: ReasonNames,
    /// (retransmitted segments, SYN-ACK retransmits), or why the probe did not run.
    pub retrans: Option<Result<(u64, u64), Unmeasured>>,
    /// Per-column growth summed over CPUs, or why it could not be read.
    pub conntrack: Option<Result<BTreeMap<String, u64>, Unmeasured>>,
    /// Growth of every protocol counter.
    pub counters: BTreeMap<String, u64>,
    pub scenario: Option<ScenarioFacts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScenarioFacts {
    /// Bytes the sender's kernel accepted from write() before close().
    pub sent: u64,
    /// Bytes the peer read before end of stream (or its time limit).
    pub received: u64,
}

/// Why a part of the measurements is missing (its probe attached nowhere, its file could not
/// be read): recorded with the verdict, so only its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Unmeasured(pub String);

impl std::fmt::Display for Unmeasured {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn ran<T: Clone>(part: &Option<Result<T, Unmeasured>>, what: &str) -> Result<T, Error> {
    match part {
        Some(Ok(r)) => Ok(r.clone()),
        Some(Err(why)) => Err(Error::Unavailable(why.0.clone())),
        None => Err(Error::Unavailable(format!(
            "{what} was not measured in this run"
        ))),
    }
}

impl Measurements {
    /// The value of `metric`, or why this kernel or run cannot give it (the check is then
    /// untestable).
    pub fn value(&self, metric: &Metric) -> Result<u64, Error> {
        match metric {
            Metric::Drops { reason, location } => {
                let drops = ran(&self.drops, "drops")?;
                if let Some(r) = reason {
                    match &self.reason_names {
                        None => {
                            return Err(Error::Unavailable(
                                "this kernel's kfree_skb carries no drop reason".into(),
                            ));
                        }
                        Some(names) if !names.contains(r) => {
                            return Err(Error::Unavailable(format!(
                                "this kernel has no drop reason {r}"
                            )));
                        }
                        Some(_) => {}
                    }
                }
                Ok(drops
                    .iter()
                    .filter(|d| reason.as_ref().is_none_or(|r| &d.reason == r))
                    .filter(|d| {
                        location
                            .as_ref()
                            .is_none_or(|l| in_function(&d.location, l))
                    })
                    .map(|d| d.count)
                    .sum())
            }
            Metric::Retrans => ran(&self.retrans, "retransmits").map(|(segs, _)| segs),
            Metric::RetransSynack => ran(&self.retrans, "retransmits").map(|(_, s)| s),
            Metric::Conntrack(column) => {
                let cols = ran(&self.conntrack, "conntrack")?;
                cols.get(column).copied().ok_or_else(|| {
                    Error::Unavailable(format!(
                        "this kernel's /proc/net/stat/nf_conntrack has no column {column} (it has {})",
                        cols.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })
            }
            Metric::Counter(name) => match self.counters.get(name) {
                Some(v) => Ok(*v),
                None if super::known::zero_until_seen(name) => Ok(0),
                None => Err(Error::Unavailable(format!(
                    "this kernel has no counter {name}"
                ))),
            },
            Metric::Scenario(fact) => {
                let s = self
                    .scenario
                    .ok_or_else(|| Error::Input("scenario facts need --scenario".into()))?;
                Ok(match fact.as_str() {
                    "sent" => s.sent,
                    "received" => s.received,
                    _ => s.sent.saturating_sub(s.received),
                })
            }
        }
    }
}

/// `nf_hook_slow+0x9c` is in function `nf_hook_slow`.
fn in_function(location: &str, function: &str) -> bool {
    location == function
        || location
            .strip_prefix(function)
            .is_some_and(|rest| rest.starts_with('+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured() -> Measurements {
        Measurements {
            drops: Some(Ok(vec![
                DropCount {
                    reason: "NO_SOCKET".into(),
                    location: "__udp4_lib_rcv+0x5c".into(),
                    count: 7,
                },
                DropCount {
                    reason: "NETFILTER_DROP".into(),
                    location: "nf_hook_slow+0x9c".into(),
                    count: 2,
                },
                DropCount {
                    reason: "NETFILTER_DROP".into(),
                    location: "nft_do_chain+0x4a".into(),
                    count: 3,
                },
            ])),
            reason_names: Some(
                ["NO_SOCKET", "NETFILTER_DROP", "TCP_CSUM"]
                    .map(String::from)
                    .into(),
            ),
            retrans: Some(Ok((12, 1))),
            conntrack: Some(Ok([("insert_failed".to_string(), 4)].into())),
            counters: [("TcpExt.TCPWqueueTooBig".to_string(), 0)].into(),
            scenario: Some(ScenarioFacts {
                sent: 100,
                received: 60,
            }),
        }
    }

    fn drops(reason: Option<&str>, location: Option<&str>) -> Metric {
        Metric::Drops {
            reason: reason.map(String::from),
            location: location.map(String::from),
        }
    }

    #[test]
    fn metrics_read_their_part() {
        let m = measured();
        assert_eq!(m.value(&drops(None, None)), Ok(12));
        assert_eq!(m.value(&drops(Some("NETFILTER_DROP"), None)), Ok(5));
        assert_eq!(
            m.value(&drops(Some("NETFILTER_DROP"), Some("nf_hook_slow"))),
            Ok(2)
        );
        assert_eq!(
            m.value(&drops(None, Some("nf_hook"))),
            Ok(0),
            "whole function names only"
        );
        assert_eq!(m.value(&drops(Some("TCP_CSUM"), None)), Ok(0));
        assert_eq!(m.value(&Metric::Retrans), Ok(12));
        assert_eq!(m.value(&Metric::RetransSynack), Ok(1));
        assert_eq!(m.value(&Metric::Conntrack("insert_failed".into())), Ok(4));
        assert_eq!(
            m.value(&Metric::Counter("TcpExt.TCPWqueueTooBig".into())),
            Ok(0)
        );
        assert_eq!(m.value(&Metric::Scenario("missing".into())), Ok(40));
    }

    #[test]
    fn what_this_kernel_lacks_is_untestable() {
        let mut m = measured();
        let err = m
            .value(&drops(Some("TCP_LISTEN_OVERFLOW"), None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no drop reason TCP_LISTEN_OVERFLOW"), "{err}");
        assert!(m.value(&Metric::Counter("TcpExt.Nope".into())).is_err());
        assert!(
            m.value(&Metric::Conntrack("chaintoolong".into()))
                .unwrap_err()
                .to_string()
                .contains("insert_failed")
        );
        m.reason_names = None;
        assert!(
            m.value(&drops(Some("NO_SOCKET"), None))
                .unwrap_err()
                .to_string()
                .contains("no drop reason")
        );
        assert_eq!(
            m.value(&drops(None, Some("__udp4_lib_rcv"))),
            Ok(7),
            "locations need no reasons"
        );
        m.retrans = Some(Err(Unmeasured("no hook".into())));
        assert_eq!(
            m.value(&Metric::Retrans),
            Err(Error::Unavailable("no hook".into()))
        );
        m.scenario = None;
        assert!(m.value(&Metric::Scenario("sent".into())).is_err());
    }
}
