//! Words of the commands a fix suggests, quoted for the shell: a person pastes them as root,
//! and a name a tenant chose (`rel_q;echo INJECTED;`, `c$(reboot)`) must arrive as one word,
//! never run. Quoting is only needed where a word holds more than the characters no shell
//! treats specially, so ordinary names stay as they read (`ip netns exec blue ss`).
use std::{borrow::Cow, fmt::Write as _};

use crate::text;

/// Characters that mean nothing to the shell anywhere in a word that is not its first.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c)
}

/// `word` as one shell word: as is when plain; else in single quotes (`'` itself written
/// `'\''`); or, when it holds characters a terminal would act on (a newline, an escape), in
/// bash's `$'…'` with those written as `\xHH` bytes, so the command shown is the command run
/// and shows no raw control character.
pub fn quote(word: &str) -> Cow<'_, str> {
    if !word.is_empty() && word.chars().all(is_plain) {
        return Cow::Borrowed(word);
    }
    if !word.chars().any(text::is_unsafe) {
        return Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")));
    }
    let mut out = String::from("$'");
    for c in word.chars() {
        match c {
            '\\' | '\'' => {
                out.push('\\');
                out.push(c);
            }
            c if text::is_unsafe(c) => {
                for byte in c.encode_utf8(&mut [0; 4]).bytes() {
                    let _ = write!(out, "\\x{byte:02x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_and_the_rest_are_one_quoted_word() {
        assert_eq!(quote("blue"), "blue");
        assert_eq!(quote("cni-1a2b.c:d"), "cni-1a2b.c:d");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("rel_q;echo INJECTED;"), "'rel_q;echo INJECTED;'");
        assert_eq!(quote("c$(echo X>&2)`id`"), "'c$(echo X>&2)`id`'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("~root *"), "'~root *'");
        assert_eq!(quote("a\x1b]0;t\x07\n'b\\"), r"$'a\x1b]0;t\x07\x0a\'b\\'");
        assert_eq!(quote("x\u{9b}"), r"$'x\xc2\x9b'");
    }
}
