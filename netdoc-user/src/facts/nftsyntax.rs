//! A rule's JSON statements written back in nft's syntax, for the operator to recognise the
//! rule (`udp dport 7777 counter drop`). The common statements and expressions read as nft
//! prints them; any other is shown as its compact JSON, which is still one line and says
//! what it is, rather than guessed at. Every string is quoted with its escapes, so nothing a
//! rule holds can break the line.
use serde_json::{Map, Value};

/// One statement: an object of one key, its kind.
pub fn statement(statement: &Map<String, Value>) -> String {
    let mut parts = statement
        .iter()
        .map(|(kind, value)| one_statement(kind, value));
    let first = parts.next().unwrap_or_default();
    parts.fold(first, |all, next| format!("{all} {next}"))
}

fn one_statement(kind: &str, value: &Value) -> String {
    let field = |name: &str| value.get(name);
    match (kind, value) {
        ("match", _) => {
            let (Some(left), Some(right)) = (field("left"), field("right")) else {
                return compact(kind, value);
            };
            // An interface name is a string nft quotes; a keyword (`invalid`) is not.
            let names = left
                .get("meta")
                .and_then(|m| m.get("key")?.as_str())
                .is_some_and(|key| key.ends_with("name"));
            let op = match field("op").and_then(Value::as_str) {
                None | Some("==" | "in") => String::new(),
                Some(op) => format!("{op} "),
            };
            format!(
                "{} {op}{}",
                expression(left, false),
                expression(right, names)
            )
        }
        ("counter", Value::String(name)) => format!("counter name {name:?}"),
        ("counter", _) => "counter".into(),
        ("accept" | "drop" | "continue" | "return" | "reject" | "masquerade", Value::Null) => {
            kind.into()
        }
        ("jump" | "goto", _) => match field("target").and_then(Value::as_str) {
            Some(target) => format!("{kind} {}", word(target)),
            None => compact(kind, value),
        },
        ("reject", _) => {
            let how = [field("type"), field("expr")]
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(word)
                .collect::<Vec<_>>();
            format!("reject with {}", how.join(" "))
        }
        ("masquerade" | "snat" | "dnat", _) => {
            let mut words = vec![kind.to_string()];
            words.extend(field("family").and_then(Value::as_str).map(word));
            let to = match (field("addr"), field("port")) {
                (Some(addr), Some(port)) => Some(format!(
                    "{}:{}",
                    expression(addr, false),
                    expression(port, false)
                )),
                (Some(addr), None) => Some(expression(addr, false)),
                (None, Some(port)) => Some(format!(":{}", expression(port, false))),
                (None, None) => None,
            };
            words.extend(to.map(|to| format!("to {to}")));
            words.extend(flags(field("flags")));
            words.join(" ")
        }
        ("xt", _) => match (field("type"), field("name")) {
            (Some(Value::String(t)), Some(Value::String(n))) => format!("xt {} {n:?}", word(t)),
            _ => compact(kind, value),
        },
        ("vmap", _) => match (field("key"), field("data")) {
            (Some(key), Some(data)) => {
                format!(
                    "{} vmap {}",
                    expression(key, false),
                    expression(data, false)
                )
            }
            _ => compact(kind, value),
        },
        _ => compact(kind, value),
    }
}

/// `fully-random` or `["persistent", "fully-random"]`.
fn flags(flags: Option<&Value>) -> Vec<String> {
    match flags {
        Some(Value::String(flag)) => vec![word(flag)],
        Some(Value::Array(all)) => all.iter().filter_map(Value::as_str).map(word).collect(),
        _ => Vec::new(),
    }
}

/// An expression: a literal, a field of the packet or its metadata, a set or a verdict.
fn expression(value: &Value, quoted: bool) -> String {
    match value {
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) if quoted => format!("{s:?}"),
        Value::String(s) => word(s),
        // A concatenation of flags (`ct state established,related`).
        Value::Array(items) => items
            .iter()
            .map(|i| expression(i, quoted))
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(object) if object.len() == 1 => {
            let (kind, inner) = object.iter().next().expect("one key");
            let field = |name: &str| inner.get(name).and_then(Value::as_str).map(word);
            match (kind.as_str(), inner) {
                ("payload", _) => match (field("protocol"), field("field")) {
                    (Some(protocol), Some(name)) => format!("{protocol} {name}"),
                    _ => compact(kind, inner),
                },
                ("meta", _) => match field("key") {
                    Some(key) if UNQUALIFIED_META.contains(&key.as_str()) => key,
                    Some(key) => format!("meta {key}"),
                    None => compact(kind, inner),
                },
                ("ct", _) => match (field("dir"), field("key")) {
                    (Some(dir), Some(key)) => format!("ct {dir} {key}"),
                    (None, Some(key)) => format!("ct {key}"),
                    _ => compact(kind, inner),
                },
                ("prefix", _) => match (inner.get("addr"), inner.get("len")) {
                    (Some(addr), Some(len)) => {
                        format!("{}/{}", expression(addr, false), expression(len, false))
                    }
                    _ => compact(kind, inner),
                },
                ("range", Value::Array(ends)) if ends.len() == 2 => format!(
                    "{}-{}",
                    expression(&ends[0], quoted),
                    expression(&ends[1], quoted)
                ),
                ("set", Value::Array(elements)) => {
                    let elements: Vec<String> = elements
                        .iter()
                        .map(|e| match e {
                            // A map's element: key and value (a verdict, for a vmap).
                            Value::Array(pair) if pair.len() == 2 => format!(
                                "{} : {}",
                                expression(&pair[0], quoted),
                                expression(&pair[1], false)
                            ),
                            e => expression(e, quoted),
                        })
                        .collect();
                    format!("{{ {} }}", elements.join(", "))
                }
                ("accept" | "drop" | "continue" | "return" | "jump" | "goto", _) => {
                    one_statement(kind, inner)
                }
                ("&" | "|" | "^" | "<<" | ">>", Value::Array(operands)) if operands.len() == 2 => {
                    format!(
                        "{} {kind} {}",
                        expression(&operands[0], false),
                        expression(&operands[1], false)
                    )
                }
                _ => compact(kind, inner),
            }
        }
        other => other.to_string(),
    }
}

/// The meta keys nft prints without `meta` (its `meta_key_is_unqualified`).
const UNQUALIFIED_META: [&str; 6] = ["iif", "oif", "iifname", "oifname", "iifgroup", "oifgroup"];

/// A bare word as nft prints it (`invalid`, `10.9.0.1`, `@blocked`); quoted with its escapes
/// when it holds anything else, so it cannot be taken for more words or another line.
fn word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/@$".contains(c));
    match plain {
        true => text.to_string(),
        false => format!("{text:?}"),
    }
}

/// A statement or expression this writer does not know: its kind and its compact JSON.
fn compact(kind: &str, value: &Value) -> String {
    format!("{} {value}", word(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(statement_json: &str) -> String {
        statement(&serde_json::from_str(statement_json).unwrap())
    }

    #[test]
    fn common_statements_read_as_nft_prints_them() {
        for (json, text) in [
            (
                r#"{"match":{"op":"==","left":{"payload":{"protocol":"udp","field":"dport"}},"right":7777}}"#,
                "udp dport 7777",
            ),
            (
                r#"{"match":{"op":"!=","left":{"meta":{"key":"iifname"}},"right":"eth0"}}"#,
                "iifname != \"eth0\"",
            ),
            (
                r#"{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":["established","related"]}}"#,
                "ct state established,related",
            ),
            (
                r#"{"match":{"op":"==","left":{"payload":{"protocol":"ip","field":"saddr"}},"right":{"prefix":{"addr":"10.0.0.0","len":8}}}}"#,
                "ip saddr 10.0.0.0/8",
            ),
            (
                r#"{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[22,{"range":[80,90]}]}}}"#,
                "tcp dport { 22, 80-90 }",
            ),
            (
                r#"{"vmap":{"key":{"payload":{"protocol":"tcp","field":"dport"}},"data":{"set":[[23,{"drop":null}],[24,{"jump":{"target":"x"}}]]}}}"#,
                "tcp dport vmap { 23 : drop, 24 : jump x }",
            ),
            (
                r#"{"reject":{"type":"icmp","expr":"port-unreachable"}}"#,
                "reject with icmp port-unreachable",
            ),
            (
                r#"{"snat":{"addr":"1.2.3.4","port":5000,"flags":["persistent","fully-random"]}}"#,
                "snat to 1.2.3.4:5000 persistent fully-random",
            ),
            (
                r#"{"masquerade":{"flags":"fully-random"}}"#,
                "masquerade fully-random",
            ),
            (
                r#"{"xt":{"type":"target","name":"REJECT"}}"#,
                "xt target \"REJECT\"",
            ),
            (r#"{"log":{"prefix":"x y"}}"#, "log {\"prefix\":\"x y\"}"),
            (
                r#"{"match":{"op":"==","left":{"meta":{"key":"mark"}},"right":1}}"#,
                "meta mark 1",
            ),
        ] {
            assert_eq!(written(json), text, "{json}");
        }
    }

    #[test]
    fn hostile_strings_stay_quoted_on_one_line() {
        let text = written(
            r#"{"match":{"op":"==","left":{"meta":{"key":"oifname"}},"right":"a\"\n\tdrop # handle 4"}}"#,
        );
        assert_eq!(text, r#"oifname "a\"\n\tdrop # handle 4""#);
        let jump = written(r#"{"jump":{"target":"x\ndrop"}}"#);
        assert_eq!(jump, r#"jump "x\ndrop""#);
        assert!(!written(r#"{"weird\nkind":{"a":"\n"}}"#).contains('\n'));
    }
}
