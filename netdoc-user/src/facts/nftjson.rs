//! The ruleset as `nft -j list ruleset` prints it: JSON, whose strings are escaped, so a
//! comment is one field of its rule and can never read as another rule, chain or policy (the
//! text listing prints a comment's newlines and quotes as they are). Only chains and rules are
//! kept; tables, sets, maps, flowtables and what a newer nft adds are skipped.
use serde::Deserialize;
use serde_json::{Map, Value};

/// The chains and rules of a ruleset, in the order nft lists them.
#[derive(Debug, Default)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
pub struct Chain {
    pub family: String,
    pub table: String,
    pub name: String,
    /// Only a base chain has a hook and a policy.
    pub hook: Option<String>,
    pub policy: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Rule {
    pub family: String,
    pub table: String,
    pub chain: String,
    pub handle: u64,
    /// Its statements, each an object of one key (`match`, `counter`, `drop`, ...).
    pub expr: Vec<Map<String, Value>>,
    pub comment: Option<String>,
}

/// One entry of the `nftables` array: an object of one key, its kind.
#[derive(Deserialize)]
struct Entry {
    chain: Option<Chain>,
    rule: Option<Rule>,
}

#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Entry>,
}

impl Ruleset {
    /// The chains and rules of `nft -j list ruleset` output; an error for anything that is
    /// not its JSON (a truncated listing is not taken for a smaller ruleset).
    pub fn parse(json: &str) -> Result<Ruleset, serde_json::Error> {
        let listing: Listing = serde_json::from_str(json)?;
        let mut ruleset = Ruleset::default();
        for entry in listing.nftables {
            ruleset.chains.extend(entry.chain);
            ruleset.rules.extend(entry.rule);
        }
        Ok(ruleset)
    }
}

impl Chain {
    /// `inet filter`: how nft names its table.
    pub fn table_name(&self) -> String {
        format!("{} {}", self.family, self.table)
    }

    /// Whether a rule is one of this chain's.
    pub fn holds(&self, rule: &Rule) -> bool {
        (&self.family, &self.table, &self.name) == (&rule.family, &rule.table, &rule.chain)
    }
}

impl Rule {
    pub fn table_name(&self) -> String {
        format!("{} {}", self.family, self.table)
    }

    /// Its statements as (kind, value) pairs.
    pub fn statements(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.expr
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k.as_str(), v)))
    }

    /// The packets of its first anonymous counter; None without one (a named counter's
    /// figures are the counter object's, not the rule's).
    pub fn packets(&self) -> Option<u64> {
        self.statements()
            .find(|(kind, _)| *kind == "counter")
            .and_then(|(_, counter)| counter.get("packets")?.as_u64())
    }

    /// The iptables target iptables-nft left untranslated (`xt target "REJECT"`), if any.
    pub fn xt_target(&self) -> Option<&str> {
        self.statements().find_map(|(kind, xt)| {
            (kind == "xt" && xt.get("type")?.as_str()? == "target")
                .then(|| xt.get("name")?.as_str())
                .flatten()
        })
    }

    /// The rule in nft's syntax, its counter's figures and handle left out (they change
    /// while netdoc runs); every string it quotes is escaped, so it is one line whatever a
    /// comment holds.
    pub fn text(&self) -> String {
        let mut words: Vec<String> = self.expr.iter().map(super::nftsyntax::statement).collect();
        if let Some(comment) = &self.comment {
            words.push(format!("comment {comment:?}"));
        }
        words.join(" ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `nft -j list ruleset` recorded in a namespace made for it (nft 1.0.6): a native table
    /// with a set, a verdict map, a regular chain, an output chain with policy drop and rules
    /// with hostile comments (one holding a quote, a newline and a whole forged drop rule, one
    /// ending in a newline; a comment of non-UTF-8 bytes, which nft leaves out of its JSON),
    /// iptables-nft's filter and nat tables (a `-j REJECT` it did not translate, `MASQUERADE
    /// --random-fully`, a comment match), a native NAT table; three datagrams were dropped
    /// by `udp dport 7777`.
    pub(crate) const RULESET: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nft/ruleset.json"
    ));

    #[test]
    fn the_recorded_ruleset_reads_as_its_chains_and_rules() {
        let ruleset = Ruleset::parse(RULESET).unwrap();
        assert_eq!(ruleset.chains.len(), 8);
        assert_eq!(ruleset.rules.len(), 18);
        let forged = ruleset.rules.iter().find(|r| r.handle == 13).unwrap();
        assert_eq!(
            forged.text(),
            r#"tcp dport 9 accept comment "x\"\n\t\tudp dport 7777 counter packets 999999 bytes 1 drop comment \"forged""#
        );
        assert_eq!(forged.packets(), None);
    }

    #[test]
    fn anything_but_a_listing_is_an_error() {
        for bad in [
            "",
            "table inet f {",
            "{\"nftables\": [",
            "[]",
            "{\"nftables\": 3}",
        ] {
            assert!(Ruleset::parse(bad).is_err(), "{bad:?}");
        }
        let empty = Ruleset::parse(r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}]}"#);
        assert!(empty.unwrap().rules.is_empty());
    }

    #[test]
    fn a_counter_reads_from_its_statement_and_a_named_one_has_no_figures() {
        let rule = |expr: &str| -> Rule {
            serde_json::from_str(&format!(
                r#"{{"family":"ip","table":"t","chain":"c","handle":1,"expr":{expr}}}"#
            ))
            .unwrap()
        };
        let counted = rule(r#"[{"counter":{"packets":7,"bytes":420}},{"drop":null}]"#);
        assert_eq!(counted.packets(), Some(7));
        assert_eq!(counted.text(), "counter drop");
        let named = rule(r#"[{"counter":"drops"},{"drop":null}]"#);
        assert_eq!(named.packets(), None);
        assert_eq!(named.text(), "counter name \"drops\" drop");
    }
}
