//! Text a person reads, made safe to show. netdoc runs as root and shows what tenants chose
//! (namespace, process, interface and nftables names, strings in a recording someone sent): a
//! control character among them would reach the terminal raw and rewrite its title, clear the
//! screen or forge report lines. Every terminal and HTML renderer passes such text through
//! [`printable`]; the data itself keeps the bytes (JSON escapes them correctly already).

use std::{borrow::Cow, fmt::Write as _};

/// Whether `c` must not reach a terminal or page as itself: C0 controls (newline and tab
/// included: a name holding them would forge lines and columns), DEL, C1 controls (single-byte
/// escape sequences on some terminals), and the bidirectional overrides and isolates, which
/// reorder what follows them on screen.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every [`is_unsafe`] character shown escaped: `\n`, `\r`, `\t`, `\x1b` below
/// 0x80, `\u{9b}` above. Borrowed, untouched, when there is none (the common case).
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && is_unsafe(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_shown_escaped_and_the_rest_as_is() {
        let hostile = "rel_a\x1b]0;pwned\x07\nFAKE netdoc: no problems found\r\t\x7f\u{9b}2J";
        assert_eq!(
            printable(hostile),
            "rel_a\\x1b]0;pwned\\x07\\nFAKE netdoc: no problems found\\r\\t\\x7f\\u{9b}2J"
        );
        assert_eq!(printable("abc\u{202e}cba"), "abc\\u{202e}cba");
        assert_eq!(printable("\0"), "\\x00");
        assert!(matches!(
            printable("pod shop/cart <b>&'\"$(x)` ünïcödé \u{fffd}"),
            Cow::Borrowed(_)
        ));
    }
}
