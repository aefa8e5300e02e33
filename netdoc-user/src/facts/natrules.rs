//! The source NAT rules of a network namespace (`masquerade`, `snat`), from
//! `nft -j list ruleset` run inside it: the rules whose port allocation clashes when many
//! flows leave at once, and whether each already randomizes its ports fully (`fully-random`,
//! iptables' `--random-fully`).
//! iptables-nft rules are listed there too (as an `xt target` where nft cannot translate them);
//! iptables-legacy rules are not.
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{
    iptsave,
    nftjson::{Rule, Ruleset},
};

/// One source NAT rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    /// `ip nat`, `inet kube-proxy`, ...
    pub table: String,
    pub chain: String,
    /// The rule as nft prints it, its packet and byte counts left out.
    pub rule: String,
    /// Whether its ports are fully random; null for an iptables target nft shows untranslated
    /// (`xt target "MASQUERADE"`), whose options it does not print.
    pub fully_random: Option<bool>,
}

/// The source NAT rules of `nft -j list ruleset` output, in order. nft's JSON leaves a target
/// iptables-nft could not express natively untranslated and without its options (`xt target
/// "MASQUERADE"`), although `-j MASQUERADE --random-fully` is kube-proxy's and Docker's rule:
/// for those in a `nat` table, `saved(family)` gives `iptables-nft-save -t nat` output (asked
/// once per family, only then), whose rule at the same place in its chain says.
pub fn parse(
    json: &str,
    mut saved: impl FnMut(&str) -> Option<String>,
) -> Result<Vec<NatRule>, serde_json::Error> {
    let ruleset = Ruleset::parse(json)?;
    let mut saves: BTreeMap<&str, Option<String>> = BTreeMap::new();
    let mut rules = Vec::new();
    for (at, r) in ruleset.rules.iter().enumerate() {
        let Some(mut fully_random) = source_nat(r) else {
            continue;
        };
        if fully_random.is_none() && r.table == "nat" && matches!(r.family.as_str(), "ip" | "ip6") {
            let save = saves
                .entry(r.family.as_str())
                .or_insert_with(|| saved(&r.family));
            let before = ruleset.rules[..at]
                .iter()
                .filter(|o| (&o.family, &o.table, &o.chain) == (&r.family, &r.table, &r.chain))
                .count();
            fully_random = save
                .as_deref()
                .and_then(|save| saved_random_fully(save, &r.chain, before));
        }
        rules.push(NatRule {
            table: r.table_name(),
            chain: r.chain.clone(),
            rule: r.text(),
            fully_random,
        });
    }
    Ok(rules)
}

/// Whether rule `index` of `chain` in `iptables-nft-save -t nat` output has `--random-fully`;
/// None where that rule is not a source NAT target (the ruleset changed between the reads).
fn saved_random_fully(save: &str, chain: &str, index: usize) -> Option<bool> {
    let mut in_nat = false;
    let rule = iptsave::records(save)
        .into_iter()
        .filter(|words| {
            if let Some(table) = words[0].strip_prefix('*') {
                in_nat = table == "nat";
            }
            in_nat && words.len() > 2 && words[0] == "-A" && words[1] == chain
        })
        .nth(index)?;
    let words: Vec<&str> = rule[2..].iter().map(String::as_str).collect();
    match iptsave::target(&words)? {
        ("MASQUERADE" | "SNAT", options) => Some(options.contains(&"--random-fully")),
        _ => None,
    }
}

/// For a rule whose verdict is source NAT, whether its ports are fully random (None: an
/// untranslated iptables target, which does not say); None for any other rule.
fn source_nat(rule: &Rule) -> Option<Option<bool>> {
    let native = rule
        .statements()
        .find(|(kind, _)| matches!(*kind, "masquerade" | "snat"));
    match (native, rule.xt_target()) {
        (Some((_, nat)), _) => {
            let flags = nat.get("flags");
            let random = |f: &serde_json::Value| f.as_str() == Some("fully-random");
            let fully_random = flags.is_some_and(|f| match f {
                serde_json::Value::Array(all) => all.iter().any(random),
                one => random(one),
            });
            Some(Some(fully_random))
        }
        (None, Some("MASQUERADE" | "SNAT")) => Some(None),
        (None, _) => None,
    }
}

/// The source NAT rules of the calling thread's network namespace; why they could not be read
/// otherwise (no nf_tables, no `nft` on this host, it failed or took too long, or its JSON
/// could not be read).
pub fn read_here() -> Result<Vec<NatRule>, crate::Error> {
    let json = super::nft::list(&["-j", "list", "ruleset"])?;
    // Without it the rule stays one to check, as nft's JSON leaves it.
    let saved = |family: &str| {
        let tool = match family {
            "ip6" => "ip6tables-nft-save",
            _ => "iptables-nft-save",
        };
        super::nft::output_of(tool, &["-t", "nat"]).ok()
    };
    parse(&json, saved).map_err(|e| crate::Error::Failed(format!("nft -j list ruleset: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::nftjson::tests::RULESET;

    /// `iptables-nft-save -t nat` recorded with the ruleset.
    const SAVED: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nft/iptables-nft-save-nat.txt"
    ));

    fn without_saves(json: &str) -> Result<Vec<NatRule>, serde_json::Error> {
        parse(json, |_| None)
    }

    #[test]
    fn an_untranslated_target_takes_its_options_from_iptables_nft_save() {
        let mut asked = Vec::new();
        let rules = parse(RULESET, |family| {
            asked.push(family.to_string());
            Some(SAVED.to_string())
        })
        .unwrap();
        assert_eq!(asked, ["ip"], "asked once, for the family with such a rule");
        assert_eq!(rules[0].chain, "POSTROUTING");
        assert_eq!(rules[0].fully_random, Some(true));
        // A comment that reads `--random-fully` is no option; a rule at that place that is
        // no longer source NAT says nothing.
        let commented =
            "*nat\n-A POSTROUTING -m comment --comment --random-fully -j MASQUERADE\nCOMMIT\n";
        assert_eq!(saved_random_fully(commented, "POSTROUTING", 0), Some(false));
        let changed = "*nat\n-A POSTROUTING -j ACCEPT\nCOMMIT\n";
        assert_eq!(saved_random_fully(changed, "POSTROUTING", 0), None);
        assert_eq!(saved_random_fully(SAVED, "POSTROUTING", 1), None);
    }

    #[test]
    fn source_nat_rules_are_found_with_their_table_chain_and_port_randomness() {
        let rules = without_saves(RULESET).unwrap();
        let found: Vec<(&str, &str, &str, Option<bool>)> = rules
            .iter()
            .map(|r| {
                (
                    r.table.as_str(),
                    r.chain.as_str(),
                    r.rule.as_str(),
                    r.fully_random,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                // iptables-nft's `-j MASQUERADE --random-fully`: nft's JSON leaves the
                // target untranslated, its options unsaid (without iptables-nft-save).
                (
                    "ip nat",
                    "POSTROUTING",
                    "oifname \"eth2\" counter xt target \"MASQUERADE\"",
                    None
                ),
                ("ip nat", "post", "oifname \"eth0\" masquerade", Some(false)),
                (
                    "ip nat",
                    "post",
                    "ip saddr 10.0.0.0/8 udp dport 53 snat to 1.2.3.4:5000",
                    Some(false)
                ),
                (
                    "ip nat",
                    "post",
                    "oifname \"eth1\" counter masquerade fully-random",
                    Some(true)
                ),
                // `jump masq` (handle 8) is a jump to a chain, not source NAT.
            ]
        );
    }

    #[test]
    fn a_comment_is_never_a_nat_rule() {
        let json = r#"{"nftables":[{"rule":{"family":"ip","table":"nat","chain":"post","handle":3,
            "expr":[{"accept":null}],"comment":"x\n\t\toifname \"eth0\" masquerade"}}]}"#;
        assert!(without_saves(json).unwrap().is_empty());
    }

    #[test]
    fn a_ruleset_without_nat_has_no_rule_and_text_is_no_ruleset() {
        let json = r#"{"nftables":[{"rule":{"family":"inet","table":"f","chain":"c","handle":3,
            "expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"accept":null}]}}]}"#;
        assert!(without_saves(json).unwrap().is_empty());
        assert!(without_saves("table ip nat {\n\tchain post {\n\t\tmasquerade\n\t}\n}\n").is_err());
    }
}
