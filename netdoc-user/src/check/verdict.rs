//! From measurements to a verdict with its evidence, and its rendering. Exit codes follow
//! `git bisect run`: 0 good, 1 bad, 125 skip (this kernel cannot be tested), and 130 (above 127:
//! bisect stops) when the check itself was interrupted.
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{expect::Expectation, measure::Measurements};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    Untestable,
    /// A signal stopped the check: nothing can be said about this kernel.
    Interrupted,
}

impl Verdict {
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Pass => 0,
            Verdict::Fail => 1,
            Verdict::Untestable => crate::error::CHECK_UNTESTABLE,
            Verdict::Interrupted => 130,
        }
    }
}

/// How the reproducer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Reproducer {
    /// No command: a built-in scenario or a watch for a duration.
    None,
    Exited(i32),
    Killed(String),
    TimedOut(u64),
    /// netdoc received this signal while the reproducer ran; its process group was killed.
    Interrupted(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checked {
    pub expectation: Expectation,
    pub verdict: Verdict,
    pub observed: Option<u64>,
    /// Why it could not be evaluated, when untestable.
    pub why: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub kernel: String,
    pub reproducer: Reproducer,
    pub checks: Vec<Checked>,
    pub measured: Measurements,
}

/// A failed expectation or a failed reproducer is a failure even if something else was
/// untestable: it is an observation. Otherwise anything unmeasurable makes the run untestable.
pub fn evaluate(
    expectations: &[Expectation],
    measured: Measurements,
    reproducer: Reproducer,
    kernel: String,
) -> Report {
    let checks: Vec<Checked> = expectations
        .iter()
        .map(|e| match measured.value(&e.metric) {
            Ok(v) => Checked {
                expectation: e.clone(),
                verdict: if e.op.holds(v, e.value) {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                observed: Some(v),
                why: None,
            },
            Err(why) => Checked {
                expectation: e.clone(),
                verdict: Verdict::Untestable,
                observed: None,
                why: Some(why.to_string()),
            },
        })
        .collect();
    let repro = match &reproducer {
        Reproducer::None | Reproducer::Exited(0) => Verdict::Pass,
        Reproducer::Exited(125) => Verdict::Untestable,
        _ => Verdict::Fail,
    };
    let all = checks.iter().map(|c| c.verdict).chain([repro]);
    let verdict = all.fold(Verdict::Pass, |acc, v| match (acc, v) {
        _ if matches!(reproducer, Reproducer::Interrupted(_)) => Verdict::Interrupted,
        (Verdict::Fail, _) | (_, Verdict::Fail) => Verdict::Fail,
        (Verdict::Untestable, _) | (_, Verdict::Untestable) => Verdict::Untestable,
        _ => Verdict::Pass,
    });
    Report {
        verdict,
        kernel,
        reproducer,
        checks,
        measured,
    }
}

/// Counters that moved most, as evidence beside the expectations.
const COUNTERS_SHOWN: usize = 8;
const DROPS_SHOWN: usize = 5;

pub fn render(r: &Report) -> String {
    let word = match r.verdict {
        Verdict::Pass => "PASS",
        Verdict::Fail => "FAIL",
        Verdict::Untestable => "UNTESTABLE",
        Verdict::Interrupted => "INTERRUPTED",
    };
    let mut out = format!("netdoc check: {word} on kernel {}\n", r.kernel);
    match &r.reproducer {
        Reproducer::None => {}
        Reproducer::Exited(0) => out.push_str("  reproducer exited 0\n"),
        Reproducer::Exited(125) => {
            out.push_str("  ? reproducer exited 125: it cannot test this kernel\n")
        }
        Reproducer::Exited(c) => {
            let _ = writeln!(out, "  ✗ reproducer exited {c}");
        }
        Reproducer::Killed(s) => {
            let _ = writeln!(out, "  ✗ reproducer was killed by {s}");
        }
        Reproducer::TimedOut(s) => {
            let _ = writeln!(out, "  ✗ reproducer did not finish within {s} s (killed)");
        }
        Reproducer::Interrupted(s) => {
            let _ = writeln!(
                out,
                "  ! netdoc was stopped by {s} while the reproducer ran (its process group was killed): no verdict"
            );
        }
    }
    for c in &r.checks {
        let mark = match c.verdict {
            Verdict::Pass => "✓",
            Verdict::Fail => "✗",
            Verdict::Untestable | Verdict::Interrupted => "?",
        };
        match (c.observed, &c.why) {
            (Some(v), _) => {
                let _ = writeln!(out, "  {mark} {}  (observed {v})", c.expectation);
            }
            (None, why) => {
                let _ = writeln!(
                    out,
                    "  {mark} {}  (untestable: {})",
                    c.expectation,
                    why.as_deref().unwrap_or("?")
                );
            }
        }
    }
    out.push_str(&evidence(&r.measured));
    out
}

fn evidence(m: &Measurements) -> String {
    let mut out = String::from("evidence:\n");
    if let Some(s) = m.scenario {
        let _ = writeln!(
            out,
            "  scenario: {} bytes accepted by write() before close(), {} read by the peer",
            s.sent, s.received
        );
    }
    match &m.drops {
        Some(Ok(d)) => {
            let total: u64 = d.iter().map(|x| x.count).sum();
            let _ = write!(out, "  drops: {total}");
            let mut top = d.clone();
            top.sort_by_key(|x| std::cmp::Reverse(x.count));
            let shown: Vec<String> = top
                .iter()
                .take(DROPS_SHOWN)
                .map(|x| format!("{} at {} ×{}", x.reason, x.location, x.count))
                .collect();
            if !shown.is_empty() {
                let _ = write!(out, " ({})", shown.join("; "));
            }
            out.push('\n');
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "  drops: not measured: {why}");
        }
        None => {}
    }
    match &m.retrans {
        Some(Ok((segs, synacks))) => {
            let _ = writeln!(out, "  retransmits: {segs} segments, {synacks} SYN-ACKs");
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "  retransmits: not measured: {why}");
        }
        None => {}
    }
    match &m.conntrack {
        Some(Ok(cols)) => {
            let moved: Vec<String> = cols
                .iter()
                .filter(|(k, v)| **v > 0 && k.as_str() != "entries")
                .map(|(k, v)| format!("{k} +{v}"))
                .collect();
            let _ = writeln!(
                out,
                "  conntrack: {}",
                if moved.is_empty() {
                    "no counter moved".into()
                } else {
                    moved.join(", ")
                }
            );
        }
        Some(Err(why)) => {
            let _ = writeln!(out, "  conntrack: not read: {why}");
        }
        None => {}
    }
    let mut moved: Vec<(&String, &u64)> = m.counters.iter().filter(|(_, v)| **v > 0).collect();
    moved.sort_by(|a, b| b.1.cmp(a.1));
    if !moved.is_empty() {
        let shown: Vec<String> = moved
            .iter()
            .take(COUNTERS_SHOWN)
            .map(|(k, v)| format!("{k} +{v}"))
            .collect();
        let _ = writeln!(out, "  counters that moved: {}", shown.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::measure::ScenarioFacts;

    fn exp(s: &str) -> Expectation {
        Expectation::parse(s).unwrap()
    }

    fn measured() -> Measurements {
        Measurements {
            retrans: Some(Ok((3, 0))),
            counters: [("TcpExt.TCPWqueueTooBig".to_string(), 2)].into(),
            scenario: Some(ScenarioFacts {
                sent: 10,
                received: 10,
            }),
            ..Default::default()
        }
    }

    fn verdict(exps: &[&str], repro: Reproducer) -> Verdict {
        let e: Vec<Expectation> = exps.iter().map(|s| exp(s)).collect();
        evaluate(&e, measured(), repro, "test".into()).verdict
    }

    #[test]
    fn verdicts_and_exit_codes() {
        assert_eq!(
            verdict(&["retrans < 5", "scenario.missing == 0"], Reproducer::None),
            Verdict::Pass
        );
        assert_eq!(verdict(&["retrans < 3"], Reproducer::None), Verdict::Fail);
        assert_eq!(
            verdict(&["counter{TcpExt.Nope} == 0"], Reproducer::None),
            Verdict::Untestable
        );
        assert_eq!(
            verdict(
                &[
                    "counter{TcpExt.Nope} == 0",
                    "counter{TcpExt.TCPWqueueTooBig} == 0"
                ],
                Reproducer::None
            ),
            Verdict::Fail,
            "an observed failure outweighs an unmeasurable expectation"
        );
        assert_eq!(
            verdict(&["retrans < 5"], Reproducer::Exited(3)),
            Verdict::Fail
        );
        assert_eq!(
            verdict(&["retrans < 5"], Reproducer::Exited(125)),
            Verdict::Untestable
        );
        assert_eq!(
            verdict(&["retrans < 5"], Reproducer::TimedOut(60)),
            Verdict::Fail
        );
        assert_eq!(verdict(&[], Reproducer::Exited(0)), Verdict::Pass);
        // An interrupted check says nothing about the kernel, even where a count already failed.
        let interrupted = Reproducer::Interrupted("SIGINT".into());
        assert_eq!(
            verdict(&["retrans < 0"], interrupted.clone()),
            Verdict::Interrupted
        );
        assert_eq!(Verdict::Interrupted.exit_code(), 130);
        assert_eq!(
            [Verdict::Pass, Verdict::Fail, Verdict::Untestable].map(Verdict::exit_code),
            [0, 1, 125]
        );
    }

    #[test]
    fn the_rendering_shows_each_expectation_with_its_value() {
        let e = [exp("retrans < 3"), exp("counter{TcpExt.Nope} == 0")];
        let text = render(&evaluate(
            &e,
            measured(),
            Reproducer::Exited(0),
            "6.1.0".into(),
        ));
        assert!(
            text.starts_with("netdoc check: FAIL on kernel 6.1.0\n"),
            "{text}"
        );
        assert!(text.contains("✗ retrans < 3  (observed 3)"), "{text}");
        assert!(
            text.contains(
                "? counter{TcpExt.Nope} == 0  (untestable: this kernel has no counter TcpExt.Nope)"
            ),
            "{text}"
        );
        assert!(
            text.contains("counters that moved: TcpExt.TCPWqueueTooBig +2"),
            "{text}"
        );
        assert!(text.contains("10 bytes accepted by write()"), "{text}");
    }
}
