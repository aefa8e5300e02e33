//! Tracefs: where it is mounted and what an event's record `format` says.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

const MOUNTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where tracefs is mounted (and readable by this process), if it is: no side effect.
pub fn mounted() -> Option<PathBuf> {
    MOUNTS
        .iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
        .map(Path::to_path_buf)
}

/// Mounts tracefs at /sys/kernel/tracing (as perf does), for a classic tracepoint that needs
/// its format files when it is not mounted.
pub fn mount() -> Result<PathBuf> {
    // mount(2) itself, not mount(8): its failure is one line of ours, not a tool's stderr.
    let target = std::ffi::CString::new(MOUNTS[0]).expect("no NUL in a constant");
    // SAFETY: every pointer is a NUL-terminated string that outlives the call; no data.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "tracefs is not mounted and could not be mounted ({}); run: mount -t tracefs nodev {}",
            std::io::Error::last_os_error(),
            MOUNTS[0]
        );
    }
    Ok(PathBuf::from(MOUNTS[0]))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u32,
    pub size: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFormat {
    pub fields: Vec<Field>,
    /// `(value, name)` pairs of every `__print_symbolic(REC-><field>, ...)`, by field.
    pub symbols: Vec<(String, Vec<(u64, String)>)>,
}

impl EventFormat {
    pub fn read(root: &Path, system: &str, event: &str) -> Result<Self> {
        let path = root.join("events").join(system).join(event).join("format");
        let text =
            super::read_text(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("field:"))
            .filter_map(parse_field)
            .collect();
        let symbols = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("print fmt:"))
            .map(parse_symbolics)
            .unwrap_or_default();
        Self { fields, symbols }
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn symbols_of(&self, field: &str) -> &[(u64, String)] {
        self.symbols
            .iter()
            .find(|(f, _)| f == field)
            .map_or(&[], |(_, s)| s.as_slice())
    }
}

/// `void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(rest: &str) -> Option<Field> {
    let mut parts = rest.split(';').map(str::trim);
    let decl = parts.next()?;
    let name = decl
        .split_whitespace()
        .last()?
        .split('[')
        .next()?
        .to_string();
    let mut offset = None;
    let mut size = None;
    for p in parts {
        if let Some(v) = p.strip_prefix("offset:") {
            offset = v.parse().ok();
        } else if let Some(v) = p.strip_prefix("size:") {
            size = v.parse().ok();
        }
    }
    Some(Field {
        name,
        offset: offset?,
        size: size?,
    })
}

fn parse_symbolics(fmt: &str) -> Vec<(String, Vec<(u64, String)>)> {
    let mut out = Vec::new();
    let mut rest = fmt;
    while let Some(i) = rest.find("__print_symbolic(REC->") {
        rest = &rest[i + "__print_symbolic(REC->".len()..];
        let field: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let mut pairs = Vec::new();
        // Entries look like `{ 2, "NOT_SPECIFIED" }`; the list ends at the closing `)`.
        let mut body = rest;
        while let Some(open) = body.find('{') {
            if body[..open].contains(')') {
                break;
            }
            let Some(close) = body[open..].find('}') else {
                break;
            };
            let entry = &body[open + 1..open + close];
            if let Some((num, name)) = entry.split_once(',')
                && let Ok(v) = parse_number(num.trim())
            {
                pairs.push((v, name.trim().trim_matches('"').to_string()));
            }
            body = &body[open + close + 1..];
        }
        out.push((field, pairs));
        rest = body;
    }
    out
}

fn parse_number(s: &str) -> Result<u64, std::num::ParseIntError> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
}

/// A recorded `format` file from `tests/fixtures`.
#[cfg(test)]
pub fn fixture(name: &str) -> EventFormat {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    EventFormat::parse(&std::fs::read_to_string(path).unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::facts::tracefs::fixture;

    #[test]
    fn pre_5_17_layout_has_no_reason() {
        let f = fixture("kfree_skb-5.16.format");
        assert_eq!(f.field("skbaddr").map(|x| (x.offset, x.size)), Some((8, 8)));
        assert_eq!(f.field("location").map(|x| x.offset), Some(16));
        assert_eq!(f.field("protocol").map(|x| x.offset), Some(24));
        assert!(f.field("reason").is_none());
        assert!(f.symbols_of("reason").is_empty());
    }

    #[test]
    fn layout_5_17_has_reason_and_symbols() {
        let f = fixture("kfree_skb-5.17.format");
        assert_eq!(f.field("reason").map(|x| (x.offset, x.size)), Some((28, 4)));
        let syms = f.symbols_of("reason");
        assert_eq!(syms.len(), 7);
        assert_eq!(syms[1], (1, "NO_SOCKET".to_string()));
    }

    #[test]
    fn layout_6_11_plus_moves_protocol_and_reason_after_rx_sk() {
        let f = fixture("kfree_skb-6.18.format");
        assert_eq!(f.field("rx_sk").map(|x| x.offset), Some(24));
        assert_eq!(f.field("protocol").map(|x| x.offset), Some(32));
        assert_eq!(f.field("reason").map(|x| x.offset), Some(36));
        let syms = f.symbols_of("reason");
        assert!(syms.contains(&(3, "NO_SOCKET".to_string())));
        assert!(syms.contains(&(12, "NETFILTER_DROP".to_string())));
    }

    #[test]
    fn array_fields_lose_their_brackets() {
        let f = EventFormat::parse("\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;\n");
        assert_eq!(f.field("saddr").map(|x| (x.offset, x.size)), Some((34, 4)));
    }
}
