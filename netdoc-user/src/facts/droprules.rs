//! The firewall rules of a network namespace that drop packets, read inside it: from
//! `nft -j list ruleset` (iptables-nft rules included) each `drop` or `reject` rule with its
//! table, chain, the hook of its chain, its handle and its counter, and each base chain whose
//! policy is drop; from `iptables-legacy-save -c` (and ip6tables'), where legacy x_tables
//! tables exist, each `DROP`/`REJECT` rule with its number in its chain, and `DROP` policies.
use serde::{Deserialize, Serialize};

use super::{
    iptsave, nft,
    nftjson::{Rule, Ruleset},
};

/// The tool whose ruleset a rule is in: it tells how to list, change or delete it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSource {
    #[default]
    Nftables,
    IptablesLegacy,
    Ip6tablesLegacy,
}

impl RuleSource {
    /// The command that changes its rules.
    pub fn tool(self) -> &'static str {
        match self {
            RuleSource::Nftables => "nft",
            RuleSource::IptablesLegacy => "iptables-legacy",
            RuleSource::Ip6tablesLegacy => "ip6tables-legacy",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RuleSource::Nftables => "nftables",
            legacy => legacy.tool(),
        }
    }
}

/// One way a namespace's ruleset drops packets: a rule, or a base chain's drop policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRule {
    #[serde(default)]
    pub source: RuleSource,
    /// `inet filter`, `ip kube-proxy`, ...; an x_tables table (`filter`) for iptables-legacy.
    pub table: String,
    pub chain: String,
    /// The netfilter hook of a base chain (`input`, `forward`, ...); null for a regular chain,
    /// reached by a jump from any hook.
    pub hook: Option<String>,
    /// The rule's nft handle, or for iptables-legacy its number in its chain; null for a
    /// policy.
    pub handle: Option<u64>,
    /// The rule as its tool prints it, its packet and byte counts and handle left out (for
    /// iptables-legacy without `-A CHAIN`); `policy drop` for a chain's policy.
    pub rule: String,
    /// Its counter's packets; null without a `counter` (an nft policy has none).
    pub packets: Option<u64>,
}

impl DropRule {
    /// `inet filter/input handle 4`, `filter/INPUT rule 2`, or `inet filter/input policy`.
    pub fn place(&self) -> String {
        let which = match (self.handle, self.source) {
            (None, _) => "policy".to_string(),
            (Some(h), RuleSource::Nftables) => format!("handle {h}"),
            (Some(n), _) => format!("rule {n}"),
        };
        format!("{}/{} {which}", self.table, self.chain)
    }
}

/// The drop rules and drop policies of `nft -j list ruleset` output, chain by chain in the
/// order nft lists them: a base chain's drop policy, then its drop rules.
pub fn parse(json: &str) -> Result<Vec<DropRule>, serde_json::Error> {
    let ruleset = Ruleset::parse(json)?;
    let mut found = Vec::new();
    for chain in &ruleset.chains {
        let rule = |handle, rule, packets| DropRule {
            source: RuleSource::Nftables,
            table: chain.table_name(),
            chain: chain.name.clone(),
            hook: chain.hook.clone(),
            handle,
            rule,
            packets,
        };
        if chain.policy.as_deref() == Some("drop") {
            found.push(rule(None, "policy drop".into(), None));
        }
        let rules = ruleset.rules.iter().filter(|r| chain.holds(r) && drops(r));
        found.extend(rules.map(|r| rule(Some(r.handle), r.text(), r.packets())));
    }
    Ok(found)
}

/// Whether a rule's verdict drops: `drop`, `reject ...`, a verdict map with `drop` among its
/// verdicts, a `queue` without `bypass` (its packets are dropped while no program reads the
/// queue), or iptables-nft's untranslated `xt target "REJECT"`; a jump to a chain named
/// `drop` does not, nor anything a comment says.
fn drops(rule: &Rule) -> bool {
    let verdict = rule.statements().any(|(kind, value)| match kind {
        "drop" | "reject" => true,
        "vmap" => value.get("data").is_some_and(holds_drop),
        "queue" => !value.get("flags").is_some_and(holds_bypass),
        _ => false,
    });
    verdict || rule.xt_target() == Some("REJECT")
}

fn holds_bypass(flags: &serde_json::Value) -> bool {
    match flags {
        serde_json::Value::String(f) => f == "bypass",
        serde_json::Value::Array(items) => items.iter().any(holds_bypass),
        _ => false,
    }
}

fn holds_drop(data: &serde_json::Value) -> bool {
    use serde_json::Value;
    match data {
        Value::Object(o) => o.contains_key("drop") || o.values().any(holds_drop),
        Value::Array(items) => items.iter().any(holds_drop),
        _ => false,
    }
}

/// The `DROP`/`REJECT` rules and `DROP` policies of `iptables-legacy-save -c` output (or
/// ip6tables', as `source`), in order, read with its quoting.
pub fn parse_legacy(save: &str, source: RuleSource) -> Vec<DropRule> {
    let mut table = String::new();
    let mut numbers: std::collections::HashMap<String, u64> = Default::default();
    let mut rules = Vec::new();
    let hook = |chain: &str| {
        ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"]
            .contains(&chain)
            .then(|| chain.to_lowercase())
    };
    // `[12:720]`: packets and bytes.
    let packets = |counts: &str| {
        counts
            .strip_prefix('[')?
            .strip_suffix(']')?
            .split_once(':')?
            .0
            .parse()
            .ok()
    };
    for record in iptsave::records(save) {
        let words: Vec<&str> = record.iter().map(String::as_str).collect();
        match words[..] {
            [first] if first.starts_with('*') => {
                table = first[1..].to_string();
                numbers.clear();
            }
            // `:INPUT DROP [5:300]`; a user chain's policy is `-`.
            [first, "DROP", counts] if first.starts_with(':') => {
                let chain = &first[1..];
                rules.push(DropRule {
                    source,
                    table: table.clone(),
                    chain: chain.to_string(),
                    hook: hook(chain),
                    handle: None,
                    rule: "policy DROP".into(),
                    packets: packets(counts),
                });
            }
            // `[20:1120] -A INPUT -p udp -m udp --dport 7777 -j DROP`
            [counts, "-A", chain, ref spec @ ..] if counts.starts_with('[') => {
                let number = numbers.entry(chain.to_string()).or_default();
                *number += 1;
                let drops = match iptsave::target(spec) {
                    Some(("DROP" | "REJECT", _)) => true,
                    // Dropped while no program reads the queue, unless it may bypass it.
                    Some(("NFQUEUE", options)) => !options.contains(&"--queue-bypass"),
                    _ => false,
                };
                if drops {
                    rules.push(DropRule {
                        source,
                        table: table.clone(),
                        chain: chain.to_string(),
                        hook: hook(chain),
                        handle: Some(*number),
                        rule: iptsave::join(&record[3..]),
                        packets: packets(counts),
                    });
                }
            }
            _ => {}
        }
    }
    rules
}

/// The drop rules of the calling thread's network namespace: nftables' where nf_tables is in
/// the kernel, iptables-legacy's where it has legacy tables; why none could be read otherwise.
pub fn read_here() -> Result<Vec<DropRule>, crate::Error> {
    let mut rules = Vec::new();
    let mut unreadable = Vec::new();
    if super::fwtables::nf_tables_present() {
        match nft::list(&["-j", "list", "ruleset"]).and_then(|json| {
            parse(&json).map_err(|e| crate::Error::Failed(format!("nft -j list ruleset: {e}")))
        }) {
            Ok(found) => rules.extend(found),
            Err(why) => unreadable.push(why),
        }
    }
    for (names, source) in [
        ("ip_tables_names", RuleSource::IptablesLegacy),
        ("ip6_tables_names", RuleSource::Ip6tablesLegacy),
    ] {
        let legacy = std::fs::read_to_string(format!("/proc/thread-self/net/{names}"))
            .is_ok_and(|t| !t.trim().is_empty());
        if legacy {
            match nft::output_of(&format!("{}-save", source.tool()), &["-c"]) {
                Ok(text) => rules.extend(parse_legacy(&text, source)),
                Err(why) => unreadable.push(why),
            }
        }
    }
    if rules.is_empty() && !unreadable.is_empty() {
        let why = unreadable
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        let why = why.join("; ");
        return Err(
            match unreadable
                .iter()
                .all(|e| matches!(e, crate::Error::Unavailable(_)))
            {
                true => crate::Error::Unavailable(why),
                false => crate::Error::Failed(why),
            },
        );
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::nftjson::tests::RULESET;

    #[test]
    fn drop_rules_and_policies_are_found_with_their_hook_handle_and_counter() {
        let rules = parse(RULESET).unwrap();
        let found: Vec<(String, &str, Option<&str>, Option<u64>)> = rules
            .iter()
            .map(|r| (r.place(), r.rule.as_str(), r.hook.as_deref(), r.packets))
            .collect();
        assert_eq!(
            found,
            [
                (
                    "ip filter/INPUT handle 2".into(),
                    "udp dport 5353 counter drop",
                    Some("input"),
                    Some(0)
                ),
                (
                    "ip filter/FORWARD policy".into(),
                    "policy drop",
                    Some("forward"),
                    None
                ),
                (
                    "ip filter/FORWARD handle 4".into(),
                    "iifname \"eth0\" counter xt target \"REJECT\"",
                    Some("forward"),
                    Some(0)
                ),
                (
                    "inet netdoc_test/input handle 5".into(),
                    "udp dport 7777 counter drop",
                    Some("input"),
                    Some(3)
                ),
                (
                    "inet netdoc_test/input handle 6".into(),
                    "ip saddr @blocked reject with icmp port-unreachable",
                    Some("input"),
                    None
                ),
                (
                    "inet netdoc_test/input handle 10".into(),
                    "tcp dport vmap { 23 : drop, 24 : accept }",
                    Some("input"),
                    None
                ),
                // A regular chain: reached from any hook.
                (
                    "inet netdoc_test/drops handle 11".into(),
                    "ct state invalid counter drop",
                    None,
                    Some(0)
                ),
                (
                    "inet netdoc_test/out policy".into(),
                    "policy drop",
                    Some("output"),
                    None
                ),
            ]
        );
    }

    #[test]
    fn no_comment_forges_a_rule_or_hides_one() {
        // The recording's comments hold a whole drop rule with a counter of 999999 after a
        // newline (handle 13), and a lone newline (handle 14): neither is a drop rule, and
        // the chain's rules after them are still its own.
        let rules = parse(RULESET).unwrap();
        assert!(rules.iter().all(|r| r.packets != Some(999999)));
        assert!(rules.iter().all(|r| !matches!(r.handle, Some(13..=15))));
        let hostile = r#"{"nftables":[
            {"chain":{"family":"inet","table":"f","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},
            {"rule":{"family":"inet","table":"f","chain":"input","handle":2,"expr":[{"accept":null}],
              "comment":"x\"\n}\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tudp dport 1 counter packets 9 bytes 9 drop # handle 9"}},
            {"rule":{"family":"inet","table":"f","chain":"input","handle":3,"expr":[{"counter":{"packets":4,"bytes":9}},{"drop":null}]}}]}"#;
        let rules = parse(hostile).unwrap();
        assert_eq!(rules.len(), 1, "{rules:#?}");
        assert_eq!(rules[0].place(), "inet f/input handle 3");
        assert_eq!(rules[0].packets, Some(4));
    }

    #[test]
    fn a_jump_to_a_chain_named_drop_is_not_a_drop() {
        let json = r#"{"nftables":[{"rule":{"family":"inet","table":"f","chain":"c","handle":3,
            "expr":[{"jump":{"target":"drop"}}],"comment":"drop"}}]}"#;
        assert!(parse(json).unwrap().is_empty());
    }

    /// `iptables-legacy-save -c` recorded in the same namespace: a drop rule, a drop policy,
    /// a comment holding a quote, a newline and a forged counted `-j DROP` rule, and one
    /// holding `-j DROP` and a backslash.
    const LEGACY: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nft/iptables-legacy-save.txt"
    ));

    #[test]
    fn legacy_drop_rules_carry_their_number_in_their_chain_and_no_comment_forges_one() {
        let rules = parse_legacy(LEGACY, RuleSource::IptablesLegacy);
        let places: Vec<String> = rules.iter().map(DropRule::place).collect();
        assert_eq!(places, ["filter/FORWARD policy", "filter/INPUT rule 1"]);
        assert_eq!(rules[0].hook.as_deref(), Some("forward"));
        assert_eq!(rules[1].rule, "-p udp -m udp --dport 7778 -j DROP");
        assert_eq!(rules[1].packets, Some(0));
        assert_eq!(rules[1].source.tool(), "iptables-legacy");
    }

    #[test]
    fn legacy_rules_are_numbered_by_chain_and_a_comment_is_never_a_target() {
        let save = "# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [5:300]
:mychain - [0:0]
[2:100] -A INPUT -p tcp -m tcp --dport 22 -m comment --comment -j -j ACCEPT
[20:1120] -A INPUT -p udp -m udp --dport 7777 -j DROP
[0:0] -A INPUT -j mychain
[3:180] -A mychain -s 10.9.0.0/16 -m comment --comment \"why \\\"\n[7:7] -A mychain\" -j REJECT --reject-with icmp-port-unreachable
COMMIT
";
        let rules = parse_legacy(save, RuleSource::IptablesLegacy);
        let found: Vec<(String, Option<u64>)> =
            rules.iter().map(|r| (r.place(), r.packets)).collect();
        assert_eq!(
            found,
            [
                ("filter/FORWARD policy".into(), Some(5)),
                ("filter/INPUT rule 2".into(), Some(20)),
                ("filter/mychain rule 1".into(), Some(3)),
            ]
        );
        assert_eq!(
            rules[2].rule,
            r#"-s 10.9.0.0/16 -m comment --comment "why \"\n[7:7] -A mychain" -j REJECT --reject-with icmp-port-unreachable"#
        );
        assert_eq!(rules[2].hook, None);
    }

    /// A queue without `bypass` drops while no program reads it; one with it does not.
    #[test]
    fn queues_without_bypass_are_drop_rules() {
        let json = r#"{"nftables":[{"table":{"family":"inet","name":"q","handle":1}},{"chain":{"family":"inet","table":"q","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},{"rule":{"family":"inet","table":"q","chain":"input","handle":2,"expr":[{"counter":{"packets":5,"bytes":300}},{"queue":{"num":5}}]}},{"rule":{"family":"inet","table":"q","chain":"input","handle":3,"expr":[{"queue":{"num":6,"flags":"bypass"}}]}},{"rule":{"family":"inet","table":"q","chain":"input","handle":4,"expr":[{"queue":{"num":{"range":[1,2]},"flags":["bypass","fanout"]}}]}}]}"#;
        let rules = parse(json).unwrap();
        assert_eq!(rules.len(), 1, "{rules:#?}");
        assert_eq!((rules[0].handle, rules[0].packets), (Some(2), Some(5)));
        // As iptables-legacy-save -c prints them on this host.
        let legacy = "*filter\n:INPUT ACCEPT [0:0]\n[7:420] -A INPUT -p udp -m udp --dport 5000 -j NFQUEUE --queue-num 5\n[1:60] -A INPUT -p udp -m udp --dport 5001 -j NFQUEUE --queue-num 6 --queue-bypass\nCOMMIT\n";
        let rules = parse_legacy(legacy, RuleSource::IptablesLegacy);
        assert_eq!(rules.len(), 1, "{rules:#?}");
        assert_eq!(
            rules[0].rule,
            "-p udp -m udp --dport 5000 -j NFQUEUE --queue-num 5"
        );
        assert_eq!(rules[0].packets, Some(7));
    }

    #[test]
    fn a_ruleset_without_drops_has_none() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"table":{"family":"inet","name":"f","handle":1}}]}"#;
        assert!(parse(json).unwrap().is_empty());
        assert!(parse_legacy("", RuleSource::IptablesLegacy).is_empty());
    }
}
