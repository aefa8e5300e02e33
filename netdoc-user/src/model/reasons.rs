//! Drop reason names from the running kernel: BTF first, then the tracefs format, else numbers.
use std::collections::HashMap;

use netdoc_common::REASON_UNAVAILABLE;

use crate::facts::{btf::KernelBtf, tracefs::EventFormat};

const PREFIX: &str = "SKB_DROP_REASON_";
/// High 16 bits of a reason select a subsystem (6.4+).
const SUBSYS_SHIFT: u32 = 16;
/// Per-subsystem enums whose values already include the subsystem bits.
const SUBSYSTEM_ENUMS: [&str; 3] = [
    "ovs_drop_reason",
    "mac80211_drop_reason",
    "qdisc_drop_reason",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Btf,
    TracefsFormat,
    /// The kernel exposes reasons but netdoc found no names: raw numbers.
    Numbers,
    /// The kernel's `kfree_skb` has no reason at all (before 5.17).
    Unavailable,
}

impl Source {
    pub fn describe(self) -> &'static str {
        match self {
            Source::Btf => "BTF enum skb_drop_reason",
            Source::TracefsFormat => "tracefs format",
            Source::Numbers => "raw numbers",
            Source::Unavailable => "none: this kernel's kfree_skb has no reason",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DropReasons {
    names: HashMap<u32, String>,
    subsystems: HashMap<u32, String>,
    pub source: Source,
}

impl DropReasons {
    /// Names from kernel BTF, including subsystem enums found in vmlinux or `modules`.
    pub fn from_btf(btf: &KernelBtf, modules: &[KernelBtf]) -> Option<Self> {
        let core = btf.enum_values("skb_drop_reason");
        if core.is_empty() {
            return None;
        }
        let mut names: HashMap<u32, String> = core
            .into_iter()
            .map(|(n, v)| (v as u32, strip(&n)))
            .collect();
        for table in std::iter::once(btf).chain(modules) {
            for e in SUBSYSTEM_ENUMS {
                for (n, v) in table.enum_values(e) {
                    names.entry(v as u32).or_insert(n);
                }
            }
        }
        let subsystems = btf
            .enum_values("skb_drop_reason_subsys")
            .into_iter()
            .filter_map(|(n, v)| {
                let short = n.strip_prefix("SKB_DROP_REASON_SUBSYS_")?;
                (short != "NUM").then(|| (v as u32, short.to_string()))
            })
            .collect();
        Some(Self {
            names,
            subsystems,
            source: Source::Btf,
        })
    }

    /// Names from the `__print_symbolic` list of the tracepoint's `reason` field.
    pub fn from_format(format: &EventFormat) -> Option<Self> {
        let list = format.symbols_of("reason");
        if format.field("reason").is_none() || list.is_empty() {
            return None;
        }
        Some(Self {
            names: list.iter().map(|(v, n)| (*v as u32, strip(n))).collect(),
            subsystems: HashMap::new(),
            source: Source::TracefsFormat,
        })
    }

    pub fn numbers_only(available: bool) -> Self {
        Self {
            names: HashMap::new(),
            subsystems: HashMap::new(),
            source: if available {
                Source::Numbers
            } else {
                Source::Unavailable
            },
        }
    }

    /// Every reason name this kernel has.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.values().map(String::as_str)
    }

    pub fn name(&self, code: u32) -> String {
        if code == REASON_UNAVAILABLE {
            return "UNKNOWN".into();
        }
        if let Some(n) = self.names.get(&code) {
            return n.clone();
        }
        let subsys = code >> SUBSYS_SHIFT;
        match self.subsystems.get(&subsys) {
            Some(s) if subsys != 0 => format!("{s}:{}", code & 0xffff),
            _ => code.to_string(),
        }
    }

    /// The code of a reason given by name (any case, prefix optional) or number.
    pub fn code(&self, name: &str) -> Option<u32> {
        if let Ok(n) = name.parse() {
            return Some(n);
        }
        let wanted = strip(&name.to_ascii_uppercase());
        self.names
            .iter()
            .find(|(_, n)| **n == wanted)
            .map(|(c, _)| *c)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// The name without `SKB_DROP_REASON_`; the two non-reasons lose their `SKB_` too
/// (`SKB_CONSUMED` is `CONSUMED`), but reasons whose own name starts with `SKB_` keep it
/// (`SKB_DROP_REASON_SKB_CSUM` is `SKB_CSUM`, as the tracefs format prints it).
/// A reason a queueing discipline gives when it drops on egress: the core ones and the qdisc
/// subsystem's (6.4+).
pub fn is_qdisc(name: &str) -> bool {
    ["QDISC_", "FQ_", "CAKE_", "DUALPI2_"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn strip(name: &str) -> String {
    name.strip_prefix(PREFIX)
        .or_else(|| {
            name.strip_prefix("SKB_")
                .filter(|rest| ["NOT_DROPPED_YET", "CONSUMED"].contains(rest))
        })
        .unwrap_or(name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::tracefs::fixture as format;

    #[test]
    fn names_from_a_5_17_format_file() {
        let r = DropReasons::from_format(&format("kfree_skb-5.17.format")).unwrap();
        assert_eq!(r.source, Source::TracefsFormat);
        assert_eq!(r.name(0), "NOT_SPECIFIED");
        assert_eq!(r.name(1), "NO_SOCKET");
        assert_eq!(r.code("no_socket"), Some(1));
        assert_eq!(r.code("SKB_DROP_REASON_UDP_CSUM"), Some(5));
        assert_eq!(r.name(77), "77");
        // A reason whose own name starts with SKB_ keeps it, whichever source names it.
        let r = DropReasons::from_format(&format("kfree_skb-6.18.format")).unwrap();
        let csum = r.code("SKB_CSUM").unwrap();
        assert_eq!(r.name(csum), "SKB_CSUM");
        assert_eq!(r.code("SKB_DROP_REASON_SKB_CSUM"), Some(csum));
        assert_eq!(strip("SKB_CONSUMED"), "CONSUMED");
        assert_eq!(strip("SKB_NOT_DROPPED_YET"), "NOT_DROPPED_YET");
    }

    #[test]
    fn no_reason_field_means_no_names() {
        assert!(DropReasons::from_format(&format("kfree_skb-5.16.format")).is_none());
        let r = DropReasons::numbers_only(false);
        assert_eq!(r.source, Source::Unavailable);
        assert_eq!(r.name(REASON_UNAVAILABLE), "UNKNOWN");
    }

    #[test]
    fn btf_names_agree_with_the_same_kernels_format() {
        let r = DropReasons::from_btf(crate::facts::btf::recorded(), &[]).unwrap();
        let no_socket = r.code("NO_SOCKET").unwrap();
        assert_eq!(r.name(no_socket), "NO_SOCKET");
        assert!(r.code("NOT_SPECIFIED").is_some());
        // A subsystem reason with no per-subsystem name still names its subsystem.
        let subsys = (1 << SUBSYS_SHIFT) | 0x7777;
        assert!(r.name(subsys).ends_with(":30583"), "{}", r.name(subsys));
        // The same kernel's tracefs format names every reason as BTF does, value for value.
        let recorded = format("kfree_skb-6.18.format");
        let symbols = recorded.symbols_of("reason");
        assert!(symbols.len() > 5);
        for (code, name) in symbols {
            assert_eq!(&r.name(*code as u32), name, "reason {code}");
        }
    }
}
