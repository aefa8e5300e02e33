//! The firewall rules of a network namespace that drop packets, read inside it: from
//! `nft -a list ruleset` (iptables-nft rules included) each `drop` or `reject` rule with its
//! table, chain, the hook of its chain, its handle and its counter, and each base chain whose
//! policy is drop; from `iptables-legacy-save -c` (and ip6tables'), where legacy x_tables
//! tables exist, each `DROP`/`REJECT` rule with its number in its chain, and `DROP` policies.
use serde::{Deserialize, Serialize};

use super::nft::{self, block_name, without_counts};

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
                        source: RuleSource::Nftables,
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
                    source: RuleSource::Nftables,
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

/// The `DROP`/`REJECT` rules and `DROP` policies of `iptables-legacy-save -c` output (or
/// ip6tables', as `source`), in order.
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
            .trim_start_matches('[')
            .split(':')
            .next()
            .and_then(|n| n.parse().ok())
    };
    for line in save.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_string();
            numbers.clear();
        } else if let Some(policy) = line.strip_prefix(':') {
            // `:INPUT DROP [5:300]`; a user chain's policy is `-`.
            let words: Vec<&str> = policy.split_whitespace().collect();
            if let [chain, "DROP", counts] = words[..] {
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
        } else if line.starts_with('[') {
            // `[20:1120] -A INPUT -p udp -m udp --dport 7777 -j DROP`
            let mut parts = line.splitn(4, ' ');
            let (Some(counts), Some("-A"), Some(chain), Some(spec)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let number = numbers.entry(chain.to_string()).or_default();
            *number += 1;
            let words: Vec<&str> = spec.split_whitespace().collect();
            if words
                .windows(2)
                .any(|w| w[0] == "-j" && matches!(w[1], "DROP" | "REJECT"))
            {
                rules.push(DropRule {
                    source,
                    table: table.clone(),
                    chain: chain.to_string(),
                    hook: hook(chain),
                    handle: Some(*number),
                    rule: spec.to_string(),
                    packets: packets(counts),
                });
            }
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
        match nft::list(&["-a", "list", "ruleset"]) {
            Ok(text) => rules.extend(parse(&text)),
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
    fn legacy_drop_rules_carry_their_number_in_their_chain_and_policies_their_counter() {
        let save = "# Generated by iptables-save v1.8.9
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [5:300]
:OUTPUT ACCEPT [0:0]
:mychain - [0:0]
[2:100] -A INPUT -p tcp -m tcp --dport 22 -j ACCEPT
[20:1120] -A INPUT -p udp -m udp --dport 7777 -j DROP
[0:0] -A INPUT -j mychain
[3:180] -A mychain -s 10.9.0.0/16 -j REJECT --reject-with icmp-port-unreachable
COMMIT
";
        let rules = parse_legacy(save, RuleSource::IptablesLegacy);
        let places: Vec<String> = rules.iter().map(DropRule::place).collect();
        assert_eq!(
            places,
            [
                "filter/FORWARD policy",
                "filter/INPUT rule 2",
                "filter/mychain rule 1"
            ]
        );
        assert_eq!(rules[0].packets, Some(5));
        assert_eq!(rules[0].hook.as_deref(), Some("forward"));
        assert_eq!(rules[1].rule, "-p udp -m udp --dport 7777 -j DROP");
        assert_eq!(rules[1].packets, Some(20));
        assert_eq!(rules[2].hook, None);
        assert_eq!(rules[2].source.tool(), "iptables-legacy");
    }

    #[test]
    fn a_ruleset_without_drops_has_none() {
        assert!(parse("table inet f { # handle 1\n\tchain c { # handle 2\n\t\ttcp dport 22 accept # handle 3\n\t}\n}\n").is_empty());
        assert!(parse("").is_empty());
    }
}
