//! `iptables-save` output read with its quoting: it prints an option's value that holds
//! anything but letters, digits, `_` and `-` in double quotes, escaping only `"`, `\` and
//! `'`, so a comment's newline is printed as it is, inside the quotes. Lines are therefore
//! split only outside quotes, and a rule is its words, never its text: no comment can forge a
//! rule, a target or a counter.

/// The records of the output (what would be its lines, had no quoted value a newline), each
/// as its words with quotes and escapes removed; empty records are left out.
pub fn records(save: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let (mut record, mut word): (Vec<String>, Option<String>) = (Vec::new(), None);
    let mut chars = save.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '\\') => word.get_or_insert_default().extend(chars.next()),
            (true, '"') => quoted = false,
            (true, c) => word.get_or_insert_default().push(c),
            (false, '"') => {
                quoted = true;
                word.get_or_insert_default();
            }
            (false, '\n') => {
                record.extend(word.take());
                if !record.is_empty() {
                    records.push(std::mem::take(&mut record));
                }
            }
            (false, c) if c.is_whitespace() => record.extend(word.take()),
            (false, c) => word.get_or_insert_default().push(c),
        }
    }
    record.extend(word);
    if !record.is_empty() {
        records.push(record);
    }
    records
}

/// Words written back as iptables would take them: quoted, with escapes, where they hold
/// anything but letters, digits and `_-.:/!`, so the result is one line.
pub fn join(words: &[String]) -> String {
    let shown: Vec<String> = words
        .iter()
        .map(|w| {
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.:/!,".contains(c));
            match plain {
                true => w.clone(),
                false => format!("{w:?}"),
            }
        })
        .collect();
    shown.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quoted_newline_stays_in_its_word() {
        let save = "*filter\n[0:0] -A INPUT -m comment --comment \"a\\\"\n[9:9] -A INPUT -j DROP\" -j ACCEPT\nCOMMIT\n";
        let records = records(save);
        assert_eq!(records.len(), 3, "{records:?}");
        assert_eq!(
            records[1],
            [
                "[0:0]",
                "-A",
                "INPUT",
                "-m",
                "comment",
                "--comment",
                "a\"\n[9:9] -A INPUT -j DROP",
                "-j",
                "ACCEPT"
            ]
        );
        assert_eq!(
            join(&records[1][3..]),
            r#"-m comment --comment "a\"\n[9:9] -A INPUT -j DROP" -j ACCEPT"#
        );
    }

    #[test]
    fn escapes_and_empty_quotes_are_words() {
        let records = records("x \"a \\\\ b\" \"\" y\n\n\n");
        assert_eq!(records, [["x", "a \\ b", "", "y"]]);
        assert_eq!(join(&records[0]), r#"x "a \\ b" "" y"#);
    }

    #[test]
    fn an_unterminated_quote_ends_with_the_output() {
        assert_eq!(records("a \"b\nc"), [["a", "b\nc"]]);
    }
}
