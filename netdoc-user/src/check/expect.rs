//! Expectations: `METRIC[{LABELS}] OP NUMBER`, e.g. `drops{reason=NO_SOCKET} == 0`,
//! `retrans < 5`, `conntrack.insert_failed == 0`, `counter{TcpExt.TCPWqueueTooBig} == 0`.
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// Packets freed at `skb:kfree_skb`, optionally of one reason and/or at one function.
    Drops {
        reason: Option<String>,
        location: Option<String>,
    },
    /// Retransmitted TCP segments (a TSO retransmit counts all its segments).
    Retrans,
    /// Retransmitted SYN-ACKs.
    RetransSynack,
    /// Growth of a `/proc/net/stat/nf_conntrack` column, summed over CPUs.
    Conntrack(String),
    /// Growth of a `/proc/net/{netstat,snmp}` counter, `Group.Name`.
    Counter(String),
    /// A fact of the built-in scenario: `sent`, `received` or `missing` bytes.
    Scenario(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    /// Longest tokens first, so `<=` is not read as `<`.
    const TOKENS: [(&'static str, Op); 6] = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    pub fn holds(self, observed: u64, expected: u64) -> bool {
        match self {
            Op::Eq => observed == expected,
            Op::Ne => observed != expected,
            Op::Lt => observed < expected,
            Op::Le => observed <= expected,
            Op::Gt => observed > expected,
            Op::Ge => observed >= expected,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Expectation {
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    pub value: u64,
}

impl TryFrom<String> for Expectation {
    type Error = Error;
    fn try_from(text: String) -> Result<Self, Error> {
        Expectation::parse(&text)
    }
}

impl From<Expectation> for String {
    fn from(e: Expectation) -> String {
        e.text
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.text)
    }
}

const EXAMPLE: &str = "e.g. 'drops{reason=NO_SOCKET} == 0', 'retrans < 5', \
                       'conntrack.insert_failed == 0', 'counter{TcpExt.TCPWqueueTooBig} == 0'";

impl Expectation {
    pub fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        // Shown escaped: an error is one line whatever the expectation holds.
        let shown = text.escape_debug();
        let bad = |why: &str| Error::Input(format!("expectation '{shown}': {why} ({EXAMPLE})"));
        if text.contains(char::is_control) {
            return Err(bad(
                "an expectation is one line, without control characters",
            ));
        }
        let (at, op_token, op) = Op::TOKENS
            .iter()
            .filter_map(|(tok, op)| text.find(tok).map(|i| (i, *tok, *op)))
            .min_by_key(|(i, tok, _)| (*i, std::cmp::Reverse(tok.len())))
            .ok_or_else(|| bad("no comparison (==, !=, <, <=, >, >=)"))?;
        let left = text[..at].trim();
        let right = text[at + op_token.len()..].trim();
        let value = right
            .parse::<u64>()
            .map_err(|_| bad(&format!("'{right}' is not a whole number")))?;
        let (name, labels) = match left.split_once('{') {
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .ok_or_else(|| bad("labels must end with '}'"))?;
                (name.trim(), Some(inner.trim()))
            }
            None => (left, None),
        };
        let metric = match (name, labels) {
            ("drops", labels) => drops(labels.unwrap_or("")).map_err(|w| bad(&w.to_string()))?,
            ("retrans", None) => Metric::Retrans,
            ("retrans.synack", None) => Metric::RetransSynack,
            ("counter", Some(c)) if valid_counter(c) => Metric::Counter(c.to_string()),
            ("counter", _) => {
                return Err(bad(
                    "counter needs {Group.Name}, e.g. counter{Tcp.RetransSegs}",
                ));
            }
            (n, None) if n.starts_with("conntrack.") && n.len() > 10 => {
                Metric::Conntrack(n["conntrack.".len()..].to_string())
            }
            (n, None) if n.starts_with("scenario.") => {
                let fact = &n["scenario.".len()..];
                if !["sent", "received", "missing"].contains(&fact) {
                    return Err(bad("scenario facts are sent, received and missing"));
                }
                Metric::Scenario(fact.to_string())
            }
            (n, Some(_)) if n != "drops" => return Err(bad(&format!("{n} takes no labels"))),
            (n, _) => {
                return Err(bad(&format!(
                    "unknown metric '{n}': use drops, retrans, retrans.synack, conntrack.COLUMN, counter{{Group.Name}} or scenario.FACT"
                )));
            }
        };
        Ok(Self {
            text: text.to_string(),
            metric,
            op,
            value,
        })
    }

    /// Expectations from a file: one per line, `#` comments and blank lines ignored.
    pub fn parse_file(text: &str) -> Result<Vec<Self>, Error> {
        text.lines()
            .enumerate()
            .map(|(n, l)| (n + 1, l.split('#').next().unwrap_or("").trim()))
            .filter(|(_, l)| !l.is_empty())
            .map(|(n, l)| Self::parse(l).map_err(|e| e.context(format_args!("line {n}"))))
            .collect()
    }
}

fn drops(labels: &str) -> Result<Metric, Error> {
    let mut reason = None;
    let mut location = None;
    for pair in labels.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| Error::Input(format!("label '{pair}' needs key=value")))?;
        let v = v.trim().trim_matches('"').to_string();
        if v.is_empty() {
            return Err(Error::Input(format!("label '{pair}' has no value")));
        }
        let (key, slot) = match k.trim() {
            "reason" => ("reason", &mut reason),
            "location" => ("location", &mut location),
            other => {
                return Err(Error::Input(format!(
                    "drops has labels reason and location, not '{other}'"
                )));
            }
        };
        // `reason=A,reason=B` matches nothing: a typo, not an expectation.
        if slot.is_some() {
            return Err(Error::Input(format!("label {key} is given twice")));
        }
        *slot = Some(match key {
            "reason" => v.trim_start_matches("SKB_DROP_REASON_").to_string(),
            _ => v,
        });
    }
    Ok(Metric::Drops { reason, location })
}

fn valid_counter(c: &str) -> bool {
    c.split_once('.').is_some_and(|(g, n)| {
        !g.is_empty()
            && !n.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Expectation {
        Expectation::parse(s).unwrap()
    }

    #[test]
    fn the_issue_examples_parse() {
        let e = p("drops{reason=NO_SOCKET} == 0");
        assert_eq!(
            e.metric,
            Metric::Drops {
                reason: Some("NO_SOCKET".into()),
                location: None
            }
        );
        assert_eq!((e.op, e.value), (Op::Eq, 0));
        assert_eq!(p("retrans < 5").metric, Metric::Retrans);
        assert_eq!(p("retrans < 5").op, Op::Lt);
        assert_eq!(
            p("conntrack.insert_failed == 0").metric,
            Metric::Conntrack("insert_failed".into())
        );
        assert_eq!(
            p("counter{TcpExt.TCPWqueueTooBig} == 0").metric,
            Metric::Counter("TcpExt.TCPWqueueTooBig".into())
        );
    }

    #[test]
    fn operators_and_labels() {
        assert_eq!(p("drops<=3").op, Op::Le);
        assert_eq!(p("drops >= 3").op, Op::Ge);
        assert_eq!(p("drops != 3").op, Op::Ne);
        assert_eq!(p("drops > 3").op, Op::Gt);
        assert_eq!(
            p("drops{reason=SKB_DROP_REASON_NETFILTER_DROP, location=nf_hook_slow} == 0").metric,
            Metric::Drops {
                reason: Some("NETFILTER_DROP".into()),
                location: Some("nf_hook_slow".into())
            }
        );
        assert_eq!(
            p("drops == 0").metric,
            Metric::Drops {
                reason: None,
                location: None
            }
        );
        assert_eq!(
            p("scenario.missing == 0").metric,
            Metric::Scenario("missing".into())
        );
        assert!(Op::Lt.holds(4, 5) && !Op::Lt.holds(5, 5) && Op::Ge.holds(5, 5));
    }

    #[test]
    fn malformed_expectations_are_errors() {
        for bad in [
            "",
            "drops",
            "drops == ",
            "drops == -1",
            "drops == many",
            "drop == 0",
            "drops{reason} == 0",
            "drops{reason=} == 0",
            "drops{reason=X == 0",
            "drops{port=80} == 0",
            "retrans{x=1} < 5",
            "counter == 0",
            "counter{TCPWqueueTooBig} == 0",
            "conntrack. == 0",
            "scenario.bytes == 0",
            "retrans =< 5",
            "drops{reason=NO_SOCKET,reason=NETFILTER_DROP} == 0",
            "drops{location=a, location=b} == 0",
            "drops == 0\nretrans == 0",
            "drops{reason=NO_SOCKET\r} == 0",
        ] {
            let err = Expectation::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::Input(_)), "bad input: {err:?}");
            let err = err.to_string();
            assert!(!err.contains('\n'), "{err}");
            assert!(err.starts_with("expectation '"), "{err}");
        }
    }

    #[test]
    fn a_duplicate_label_and_a_second_line_say_so_on_one_line() {
        let twice = Expectation::parse("drops{reason=A,reason=B} == 0").unwrap_err();
        assert!(
            twice.to_string().contains("label reason is given twice"),
            "{twice}"
        );
        let lines = Expectation::parse("drops == 0\nretrans == 0").unwrap_err();
        assert!(
            lines
                .to_string()
                .starts_with("expectation 'drops == 0\\nretrans == 0': an expectation is one line"),
            "{lines}"
        );
    }

    #[test]
    fn files_skip_comments_and_name_the_bad_line() {
        let ok =
            Expectation::parse_file("# regression\n\nretrans < 5  # flaky above\ndrops == 0\n")
                .unwrap();
        assert_eq!(ok.len(), 2);
        let err = Expectation::parse_file("retrans < 5\nretrans <\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("line 2: "), "{err}");
    }
}
