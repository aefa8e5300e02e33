//! Text a person reads, made safe to show. netdoc runs as root and shows what tenants chose
//! (namespace, process, interface and nftables names, strings in a recording someone sent): a
//! control character among them would reach the terminal raw and rewrite its title, clear the
//! screen or forge report lines. Every terminal and HTML renderer passes such text through
//! `printable`; the data itself keeps the bytes (JSON escapes them correctly already).

/// Whether `c` must not reach a terminal or page as itself: C0 controls (newline and tab
/// included: a name holding them would forge lines and columns), DEL, C1 controls (single-byte
/// escape sequences on some terminals), and the bidirectional overrides and isolates, which
/// reorder what follows them on screen.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}
