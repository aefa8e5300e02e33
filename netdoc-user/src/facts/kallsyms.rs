//! Kernel text symbols from `/proc/kallsyms`, for `func+0xoff` drop locations.
use std::sync::{Arc, OnceLock};

use anyhow::{Context as _, Result};

pub struct Kallsyms {
    /// Sorted by address.
    syms: Vec<(u64, String)>,
}

/// Whether the kernel has a text symbol `name` (a module function exists only once loaded), in
/// the symbols this process read first ([`Kallsyms::shared`]).
pub fn defines(name: &str) -> bool {
    Kallsyms::shared().is_some_and(|k| k.syms.iter().any(|(_, n)| n == name))
}

impl Kallsyms {
    /// The symbols as this process first read them, read once: the kernel formats every line of
    /// `/proc/kallsyms` for each reader, which was a fifth of netdoc's start-up when the probes
    /// and the namer each read it.
    pub fn shared() -> Option<Arc<Self>> {
        static SHARED: OnceLock<Option<Arc<Kallsyms>>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::load().ok().map(Arc::new))
            .clone()
    }

    pub fn load() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let addr = u64::from_str_radix(it.next()?, 16).ok()?;
                let kind = it.next()?;
                let name = it.next()?;
                // Text symbols only; zero addresses mean kptr_restrict hides them.
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_string()))
            })
            .collect();
        syms.sort_unstable();
        Self { syms }
    }

    /// The symbol covering `addr` and the offset into it.
    fn covering(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self.syms.partition_point(|(a, _)| *a <= addr);
        let (start, name) = &self.syms[i.checked_sub(1)?];
        (addr - start < 1 << 20).then(|| (name.as_str(), addr - start))
    }

    /// The function `addr` lies in.
    pub fn function(&self, addr: u64) -> Option<&str> {
        self.covering(addr).map(|(name, _)| name)
    }

    /// `func+0xoff`, or the bare hex address when no symbol covers it.
    pub fn describe(&self, addr: u64) -> String {
        match self.covering(addr) {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Kallsyms {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kallsyms.sample"
        );
        Kallsyms::parse(&std::fs::read_to_string(path).unwrap())
    }

    #[test]
    fn names_an_address_inside_a_function() {
        let k = sample();
        assert_eq!(k.describe(0xffffffff820490cc), "__udp4_lib_rcv+0x4bc");
        assert_eq!(k.describe(0xffffffff81f653d0), "nft_do_chain+0x0");
    }

    #[test]
    fn module_symbols_and_unknown_addresses() {
        let k = sample();
        assert_eq!(k.describe(0xffffffffc0001010), "nf_confirm+0x10");
        assert_eq!(k.describe(0x1000), "0x1000");
    }

    #[test]
    fn data_symbols_do_not_name_code() {
        // Past the last text symbol by more than 1 MiB (some_data is a D symbol): no name.
        assert_eq!(sample().describe(0xffffffff83000010), "0xffffffff83000010");
    }
}
