//! The nftables rules of a network namespace that drop packets, from `nft -a list ruleset` run
//! inside it: each `drop` or `reject` rule with its table, chain, the hook of its chain, its
//! handle and its counter, and each base chain whose policy is drop. iptables-nft rules are
//! listed there too; iptables-legacy rules are not.
use serde::{Deserialize, Serialize};

use super::nft::{block_name, without_counts};

/// One way a namespace's ruleset drops packets: a rule, or a base chain's drop policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropRule {
    /// `inet filter`, `ip kube-proxy`, ...
    pub table: String,
    pub chain: String,
    /// The netfilter hook of a base chain (`input`, `forward`, ...); null for a regular chain,
    /// reached by a jump from any hook.
    pub hook: Option<String>,
    /// The rule's handle; null for a policy.
    pub handle: Option<u64>,
    /// The rule as nft prints it, its packet and byte counts and handle left out; `policy drop`
    /// for a chain's policy.
    pub rule: String,
    /// Its counter's packets; null without a `counter` (a policy has none).
    pub packets: Option<u64>,
}

impl DropRule {
    /// `inet filter/input handle 4`, or `inet filter/input policy`.
    pub fn place(&self) -> String {
        match self.handle {
            Some(h) => format!("{}/{} handle {h}", self.table, self.chain),
            None => format!("{}/{} policy", self.table, self.chain),
        }
    }
}

/// The drop rules and drop policies of `nft -a list ruleset` output, in order.
pub fn parse(ruleset: &str) -> Vec<DropRule> {
    let (mut table, mut chain, mut hook) = (String::new(), String::new(), None);
    // Brace depth: rules are the statements one level inside a chain (sets, maps and
    // flowtables hold elements, not rules).
    let (mut depth, mut chain_depth) = (0usize, None);
    let mut rules = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        let code = line.split(" # ").next().unwrap_or(line);
        let opens = code.matches('{').count();
        let closes = code.matches('}').count();
        if let Some(rest) = line.strip_prefix("table ") {
            table = block_name(rest);
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = block_name(rest);
            hook = None;
            chain_depth = Some(depth + 1);
        } else if chain_depth == Some(depth) {
            if let Some(base) = line.strip_prefix("type ") {
                hook = word_after(base, "hook");
                if base.contains("policy drop") {
                    rules.push(DropRule {
                        table: table.clone(),
                        chain: chain.clone(),
                        hook: hook.clone(),
                        handle: None,
                        rule: "policy drop".into(),
                        packets: None,
                    });
                }
            } else if drops(code) {
                rules.push(DropRule {
                    table: table.clone(),
                    chain: chain.clone(),
                    hook: hook.clone(),
                    handle: handle(line),
                    rule: without_counts(code),
                    packets: word_after(code, "packets").and_then(|n| n.parse().ok()),
                });
            }
        }
        depth = (depth + opens).saturating_sub(closes);
        if chain_depth.is_some_and(|d| depth < d) {
            chain_depth = None;
        }
    }
    rules
}

/// Whether a rule's verdict drops: `drop`, `reject ...`, or iptables-nft's untranslated
/// `xt target "REJECT"`; a `comment "..."` does not count, nor a jump to a chain so named.
fn drops(code: &str) -> bool {
    let statements = code.split(" comment \"").next().unwrap_or(code);
    let words: Vec<&str> = statements.split_whitespace().collect();
    let verdict = words.iter().enumerate().any(|(i, w)| {
        (*w == "drop" || *w == "reject")
            && !matches!(i.checked_sub(1).map(|p| words[p]), Some("jump" | "goto"))
    });
    verdict || statements.contains("xt target \"REJECT\"")
}

fn word_after(text: &str, key: &str) -> Option<String> {
    let mut words = text.split([' ', ';']).filter(|w| !w.is_empty());
    words.find(|w| *w == key)?;
    words.next().map(str::to_string)
}

/// The `# handle N` nft -a appends.
fn handle(line: &str) -> Option<u64> {
    line.rsplit_once("# handle ")?.1.trim().parse().ok()
}

/// The drop rules of the calling thread's network namespace; why they could not be read
/// otherwise.
pub fn read_here() -> Result<Vec<DropRule>, String> {
    super::nft::list(&["-a", "list", "ruleset"]).map(|text| parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `nft -a list ruleset` of a namespace with a native table, a set, a regular chain and
    /// iptables-nft's filter table.
    const RULESET: &str = "table inet netdoc_test { # handle 3
	set blocked { # handle 5
		type ipv4_addr
		elements = { 10.9.0.1, 10.9.0.2 }
	}

	chain input { # handle 1
		type filter hook input priority filter; policy accept;
		udp dport 7777 counter packets 20 bytes 1120 drop # handle 4
		ip saddr @blocked reject with icmp port-unreachable # handle 6
		tcp dport 22 accept comment \"drop nothing here\" # handle 7
		ip daddr 10.0.0.0/8 jump drop # handle 8
	}

	chain drop { # handle 9
		ct state invalid counter packets 3 bytes 180 drop # handle 10
	}
}
table ip filter { # handle 11
	chain FORWARD { # handle 1
		type filter hook forward priority filter; policy drop;
		iifname \"eth0\" counter packets 0 bytes 0 xt target \"REJECT\" # handle 2
	}
}
";

    #[test]
    fn drop_rules_and_policies_are_found_with_their_hook_handle_and_counter() {
        let rules = parse(RULESET);
        let places: Vec<String> = rules.iter().map(DropRule::place).collect();
        assert_eq!(
            places,
            [
                "inet netdoc_test/input handle 4",
                "inet netdoc_test/input handle 6",
                "inet netdoc_test/drop handle 10",
                "ip filter/FORWARD policy",
                "ip filter/FORWARD handle 2",
            ]
        );
        assert_eq!(rules[0].rule, "udp dport 7777 counter drop");
        assert_eq!(rules[0].hook.as_deref(), Some("input"));
        assert_eq!(rules[0].packets, Some(20));
        assert_eq!(rules[1].packets, None, "no counter");
        assert_eq!(
            rules[2].hook, None,
            "a regular chain: reached from any hook"
        );
        assert_eq!(rules[2].packets, Some(3));
        assert_eq!(rules[3].rule, "policy drop");
        assert_eq!(rules[3].hook.as_deref(), Some("forward"));
        assert_eq!(
            rules[4].rule,
            "iifname \"eth0\" counter xt target \"REJECT\""
        );
    }

    #[test]
    fn a_ruleset_without_drops_has_none() {
        assert!(parse("table inet f { # handle 1\n\tchain c { # handle 2\n\t\ttcp dport 22 accept # handle 3\n\t}\n}\n").is_empty());
        assert!(parse("").is_empty());
    }
}
