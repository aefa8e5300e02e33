//! `/proc/net/stat/nf_conntrack` (per-CPU counters, hex, columns named by its header) and
//! `nf_conntrack_count` / `nf_conntrack_max`.
use std::collections::BTreeMap;

/// One CPU's counters by column name, as this kernel names them.
pub type CpuCounters = BTreeMap<String, u64>;

/// Rows in CPU order. The header changed over time (`searched` became `clashres`, `delete_list`
/// became `chainlength`), so columns are taken by name, never by position, and named as
/// `conntrack -S` names them (`clash_resolve`, `chaintoolong`).
pub fn parse_stat(text: &str) -> Vec<CpuCounters> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    lines
        .filter_map(|l| {
            let values: Vec<u64> = l
                .split_whitespace()
                .map(|v| u64::from_str_radix(v, 16).ok())
                .collect::<Option<_>>()?;
            (values.len() == header.len()).then(|| {
                header
                    .iter()
                    .map(|h| canonical(h).to_string())
                    .zip(values)
                    .collect()
            })
        })
        .collect()
}

/// One name per meaning across kernel versions.
fn canonical(column: &str) -> &str {
    match column {
        "clashres" => "clash_resolve",
        // Since 5.15 this column counts insertions refused for a too-long hash chain.
        "chainlength" => "chaintoolong",
        other => other,
    }
}

/// Whether conntrack is in use in the namespace these rows are of: it holds entries or has
/// counted anything. A namespace where no rule asks for conntrack has every value zero.
pub fn in_use(rows: &[CpuCounters]) -> bool {
    rows.iter().any(|r| r.values().any(|v| *v != 0))
}

/// This thread's namespace (`thread-self`, so a thread that joined another namespace reads it).
pub fn read_stat() -> std::io::Result<Vec<CpuCounters>> {
    Ok(parse_stat(&super::read_text(
        "/proc/thread-self/net/stat/nf_conntrack",
    )?))
}

/// `(nf_conntrack_count, nf_conntrack_max)` of this network namespace, when conntrack is loaded.
pub fn read_usage() -> Option<(u64, u64)> {
    let read = |f: &str| {
        super::read_text(format!("/proc/sys/net/netfilter/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((read("nf_conntrack_count")?, read("nf_conntrack_max")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
0000002a  00000000 00000010 00000000 00000003 00000000 00000000 00000000 00000000 00000005 00000002 00000001 00000000  00000000 00000000 00000000 00000000\n\
0000002a  00000000 00000020 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 0000000b\n";

    const NEW: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
00000007  00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000011 00000011 00000000 00000000  00000000 00000000 00000000 00000000\n";

    #[test]
    fn before_5_10_header_names_columns_searched_and_delete_list() {
        let rows = parse_stat(OLD);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["entries"], 42);
        assert_eq!(rows[0]["insert_failed"], 5);
        assert_eq!(rows[0]["drop"], 2);
        assert_eq!(rows[0]["early_drop"], 1);
        assert_eq!(rows[0]["invalid"], 3);
        assert!(rows[0].contains_key("searched") && !rows[0].contains_key("clash_resolve"));
        assert_eq!(rows[1]["search_restart"], 11);
    }

    #[test]
    fn a_namespace_with_any_entry_or_count_uses_conntrack() {
        assert!(in_use(&parse_stat(NEW)));
        let idle = NEW.lines().next().unwrap().to_string() + "\n" + &"00000000 ".repeat(17);
        assert!(!in_use(&parse_stat(&idle)));
    }

    #[test]
    fn current_header_has_clash_resolve_and_chaintoolong() {
        let rows = parse_stat(NEW);
        assert_eq!(rows[0]["clash_resolve"], 4);
        assert_eq!(rows[0]["insert_failed"], 17);
        assert_eq!(rows[0]["drop"], 17);
        assert!(rows[0].contains_key("chaintoolong") && !rows[0].contains_key("chainlength"));
    }
}
