//! The source NAT rules of a network namespace (`masquerade`, `snat`), from `nft list ruleset`
//! run inside it: the rules whose port allocation clashes when many flows leave at once, and
//! whether each already randomizes its ports fully (`fully-random`, iptables' `--random-fully`).
//! iptables-nft rules are listed there too (as an `xt target` where nft cannot translate them);
//! iptables-legacy rules are not.
use serde::{Deserialize, Serialize};

use super::nft::{block_name, without_counts};

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

/// The source NAT rules of `nft list ruleset` output, in order.
pub fn parse(ruleset: &str) -> Vec<NatRule> {
    let (mut table, mut chain) = (String::new(), String::new());
    let mut rules = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = block_name(rest);
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = block_name(rest);
        } else if let Some(fully_random) = source_nat(line) {
            rules.push(NatRule {
                table: table.clone(),
                chain: chain.clone(),
                rule: without_counts(line),
                fully_random,
            });
        }
    }
    rules
}

/// For a rule whose verdict is source NAT, whether its ports are fully random (None: an
/// untranslated iptables target, which does not say); None outside for any other line.
fn source_nat(line: &str) -> Option<Option<bool>> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let fully_random = words
        .iter()
        .any(|w| w.contains("fully-random") || w.contains("random-fully"));
    let native = words.iter().enumerate().any(|(i, w)| {
        // A chain may be called `masquerade`: `jump masquerade` is not the verdict.
        (*w == "masquerade" || *w == "snat")
            && !matches!(i.checked_sub(1).map(|p| words[p]), Some("jump" | "goto"))
    });
    let xt_target = words
        .windows(3)
        .any(|w| w[0] == "xt" && w[1] == "target" && matches!(w[2], "\"MASQUERADE\"" | "\"SNAT\""));
    match (line.starts_with("type "), native, xt_target) {
        (true, ..) => None,
        (false, true, _) => Some(Some(fully_random)),
        (false, false, true) => Some(None),
        (false, false, false) => None,
    }
}

/// The source NAT rules of the calling thread's network namespace; why they could not be read
/// otherwise (no nf_tables, no `nft` on this host, or it failed or took too long).
pub fn read_here() -> Result<Vec<NatRule>, crate::Error> {
    super::nft::list(&["list", "ruleset"]).map(|text| parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft list ruleset` of a namespace with a native nft NAT table and iptables-nft's.
    const RULESET: &str = "table ip nat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"eth0\" masquerade
		ip saddr 10.0.0.0/8 udp dport 53 snat to 1.2.3.4:5000
	}
}
table inet filt {
	chain c {
		type filter hook input priority filter; policy accept;
		tcp dport 22 accept
	}
}
table ip nat {
	chain POSTROUTING {
		type nat hook postrouting priority srcnat; policy accept;
		oifname \"eth1\" counter packets 12 bytes 720 masquerade fully-random
		oifname \"eth2\" counter packets 0 bytes 0 xt target \"MASQUERADE\"
		oifname \"eth3\" masquerade  random-fully
		ip daddr 10.0.0.0/8 jump masquerade
	}
}
table inet firewalld { # progname firewalld
	chain nat_POSTROUTING {
		type nat hook postrouting priority srcnat + 10; policy accept;
		ip saddr 192.168.1.0/24 snat ip to 203.0.113.7 comment \"snat for the lab\"
	}
}
";

    #[test]
    fn source_nat_rules_are_found_with_their_table_chain_and_port_randomness() {
        let rules = parse(RULESET);
        assert_eq!(rules.len(), 6, "{rules:#?}");
        assert_eq!(rules[0].table, "ip nat");
        assert_eq!(rules[0].chain, "post");
        assert_eq!(rules[0].rule, "oifname \"eth0\" masquerade");
        assert_eq!(rules[0].fully_random, Some(false));
        assert_eq!(
            rules[1].rule,
            "ip saddr 10.0.0.0/8 udp dport 53 snat to 1.2.3.4:5000"
        );
        assert_eq!(rules[2].chain, "POSTROUTING");
        assert_eq!(
            rules[2].rule,
            "oifname \"eth1\" counter masquerade fully-random"
        );
        assert_eq!(rules[2].fully_random, Some(true));
        assert_eq!(
            rules[3].rule,
            "oifname \"eth2\" counter xt target \"MASQUERADE\""
        );
        assert_eq!(
            rules[3].fully_random, None,
            "nft does not print its options"
        );
        assert_eq!(
            rules[4].fully_random,
            Some(true),
            "older nft spells it random-fully"
        );
        // `jump masquerade` is a jump to a chain, not source NAT.
        assert_eq!(
            (rules[5].table.as_str(), rules[5].chain.as_str()),
            ("inet firewalld", "nat_POSTROUTING")
        );
        assert_eq!(rules[5].fully_random, Some(false));
    }

    #[test]
    fn a_ruleset_without_nat_has_no_rule() {
        assert!(
            parse("table inet filt {\n\tchain c {\n\t\ttcp dport 22 accept\n\t}\n}\n").is_empty()
        );
        assert!(parse("").is_empty());
    }
}
