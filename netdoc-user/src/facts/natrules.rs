//! The source NAT rules of a network namespace (`masquerade`, `snat`), from `nft list ruleset`
//! run inside it: the rules whose port allocation clashes when many flows leave at once, and
//! whether each already randomizes its ports fully (`fully-random`, iptables' `--random-fully`).
//! iptables-nft rules are listed there too; iptables-legacy rules are not.
use std::process::Command;

use serde::{Deserialize, Serialize};

/// One source NAT rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatRule {
    /// `ip nat`, `inet kube-proxy`, ...
    pub table: String,
    pub chain: String,
    /// The rule as nft prints it, its packet and byte counts left out.
    pub rule: String,
    pub fully_random: bool,
}

/// The source NAT rules of `nft list ruleset` output, in order.
pub fn parse(ruleset: &str) -> Vec<NatRule> {
    let (mut table, mut chain) = (String::new(), String::new());
    let mut rules = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches('{').trim().to_string();
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
        } else if is_source_nat(line) {
            rules.push(NatRule {
                table: table.clone(),
                chain: chain.clone(),
                rule: without_counts(line),
                fully_random: line.split_whitespace().any(|w| w.contains("fully-random")),
            });
        }
    }
    rules
}

/// A rule (not a chain's `type nat hook ...` line) whose verdict is source NAT.
fn is_source_nat(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    !line.starts_with("type ") && words.iter().any(|w| *w == "masquerade" || *w == "snat")
}

/// `counter packets 12 bytes 720` becomes `counter`: the counts change while netdoc runs.
fn without_counts(line: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut words = line.split_whitespace().peekable();
    while let Some(w) = words.next() {
        out.push(w);
        if w == "counter" {
            while words
                .peek()
                .is_some_and(|n| *n == "packets" || *n == "bytes")
            {
                words.next();
                words.next();
            }
        }
    }
    out.join(" ")
}

/// The source NAT rules of the calling thread's network namespace; why they could not be read
/// otherwise (no `nft` on this host, or it failed).
pub fn read_here() -> Result<Vec<NatRule>, String> {
    let out = Command::new("nft")
        .args(["list", "ruleset"])
        .output()
        .map_err(|e| format!("nft list ruleset: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft list ruleset: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
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
	}
}
";

    #[test]
    fn source_nat_rules_are_found_with_their_table_chain_and_port_randomness() {
        let rules = parse(RULESET);
        assert_eq!(rules.len(), 3, "{rules:#?}");
        assert_eq!(rules[0].table, "ip nat");
        assert_eq!(rules[0].chain, "post");
        assert_eq!(rules[0].rule, "oifname \"eth0\" masquerade");
        assert!(!rules[0].fully_random);
        assert_eq!(
            rules[1].rule,
            "ip saddr 10.0.0.0/8 udp dport 53 snat to 1.2.3.4:5000"
        );
        assert_eq!(rules[2].chain, "POSTROUTING");
        assert_eq!(
            rules[2].rule,
            "oifname \"eth1\" counter masquerade fully-random"
        );
        assert!(rules[2].fully_random);
    }

    #[test]
    fn a_ruleset_without_nat_has_no_rule() {
        assert!(
            parse("table inet filt {\n\tchain c {\n\t\ttcp dport 22 accept\n\t}\n}\n").is_empty()
        );
        assert!(parse("").is_empty());
    }
}
