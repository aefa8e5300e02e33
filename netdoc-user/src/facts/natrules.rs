//! The source NAT rules of a network namespace (`masquerade`, `snat`), from
//! `nft -j list ruleset` run inside it: the rules whose port allocation clashes when many
//! flows leave at once, and whether each already randomizes its ports fully (`fully-random`,
//! iptables' `--random-fully`).
//! iptables-nft rules are listed there too (as an `xt target` where nft cannot translate them);
//! iptables-legacy rules are not.
use serde::{Deserialize, Serialize};

use super::nftjson::{Rule, Ruleset};

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

/// The source NAT rules of `nft -j list ruleset` output, in order.
pub fn parse(json: &str) -> Result<Vec<NatRule>, serde_json::Error> {
    let ruleset = Ruleset::parse(json)?;
    let rules = ruleset.rules.iter().filter_map(|r| {
        Some(NatRule {
            table: r.table_name(),
            chain: r.chain.clone(),
            rule: r.text(),
            fully_random: source_nat(r)?,
        })
    });
    Ok(rules.collect())
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
    parse(&json).map_err(|e| crate::Error::Failed(format!("nft -j list ruleset: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::nftjson::tests::RULESET;

    #[test]
    fn source_nat_rules_are_found_with_their_table_chain_and_port_randomness() {
        let rules = parse(RULESET).unwrap();
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
                // target untranslated, its options unsaid.
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
        assert!(parse(json).unwrap().is_empty());
    }

    #[test]
    fn a_ruleset_without_nat_has_no_rule_and_text_is_no_ruleset() {
        let json = r#"{"nftables":[{"rule":{"family":"inet","table":"f","chain":"c","handle":3,
            "expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":22}},{"accept":null}]}}]}"#;
        assert!(parse(json).unwrap().is_empty());
        assert!(parse("table ip nat {\n\tchain post {\n\t\tmasquerade\n\t}\n}\n").is_err());
    }
}
