//! Kernel text symbols from `/proc/kallsyms`, for `func+0xoff` drop locations.
use std::{io::BufRead, sync::OnceLock};

use anyhow::{Context as _, Result};

pub struct Kallsyms {
    /// Text symbols sorted by address: the address and where the name sits in `names`. Packed
    /// so: one `String` per symbol was 4 MiB on 6.18, a tenth of netdoc's memory.
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

/// Whether the kernel has a text symbol `name` (a module function exists only once loaded), in
/// the symbols this process read first ([`Kallsyms::shared`]).
pub fn defines(name: &str) -> bool {
    Kallsyms::shared().is_some_and(|k| (0..k.syms.len()).any(|i| k.name(i) == name))
}

impl Kallsyms {
    /// The symbols as this process first read them, read once: the kernel formats every line of
    /// `/proc/kallsyms` for each reader, which was a fifth of netdoc's start-up when the probes
    /// and the namer each read it.
    /// Start-up reads them on a thread of its own ([`crate::kernel::Kernel::discover`]); the
    /// first to ask before that is done waits for it, so ask only when a name is needed.
    pub fn shared() -> Option<&'static Self> {
        static SHARED: OnceLock<Option<Kallsyms>> = OnceLock::new();
        SHARED.get_or_init(|| Self::load().ok()).as_ref()
    }

    pub fn load() -> Result<Self> {
        let file = std::fs::File::open("/proc/kallsyms").context("reading /proc/kallsyms")?;
        Self::read(std::io::BufReader::with_capacity(1 << 16, file))
            .context("reading /proc/kallsyms")
    }

    /// Reads line by line: the whole file is 5 MiB, its text symbols' names under 2. Each line
    /// as bytes, decoded lossily: one that is not UTF-8 costs no other.
    pub fn read(mut text: impl BufRead) -> std::io::Result<Self> {
        let mut syms = Vec::new();
        let mut names = String::new();
        let mut line = Vec::new();
        while text.read_until(b'\n', &mut line)? != 0 {
            let decoded = String::from_utf8_lossy(&line);
            let mut it = decoded.split_whitespace();
            if let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next())
                && let Ok(addr) = u64::from_str_radix(addr, 16)
                // Text symbols only; zero addresses mean kptr_restrict hides them.
                && addr != 0
                && matches!(kind, "t" | "T")
            {
                syms.push((addr, names.len() as u32, name.len() as u32));
                names.push_str(name);
            }
            drop(decoded);
            line.clear();
        }
        // Aliases share an address: the same one names it on every run.
        let name =
            |&(_, start, len): &(u64, u32, u32)| &names[start as usize..(start + len) as usize];
        syms.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| name(a).cmp(name(b))));
        syms.shrink_to_fit();
        names.shrink_to_fit();
        Ok(Self { syms, names })
    }

    fn name(&self, i: usize) -> &str {
        let (_, start, len) = self.syms[i];
        &self.names[start as usize..(start + len) as usize]
    }

    /// The symbol covering `addr` and the offset into it.
    fn covering(&self, addr: u64) -> Option<(&str, u64)> {
        let i = self
            .syms
            .partition_point(|&(a, _, _)| a <= addr)
            .checked_sub(1)?;
        let start = self.syms[i].0;
        (addr - start < 1 << 20).then(|| (self.name(i), addr - start))
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
        Kallsyms::read(std::io::BufReader::new(std::fs::File::open(path).unwrap())).unwrap()
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
    fn a_line_that_is_not_utf8_costs_no_other() {
        let text = b"ffffffff81000000 T first\nffffffff81000100 t bad\xff [m\xfe]\nffffffff81000200 T last\n";
        let k = Kallsyms::read(&text[..]).unwrap();
        assert_eq!(k.describe(0xffffffff81000010), "first+0x10");
        assert_eq!(k.describe(0xffffffff81000101), "bad\u{fffd}+0x1");
        assert_eq!(k.describe(0xffffffff81000204), "last+0x4");
    }

    #[test]
    fn data_symbols_do_not_name_code() {
        // Past the last text symbol by more than 1 MiB (some_data is a D symbol): no name.
        assert_eq!(sample().describe(0xffffffff83000010), "0xffffffff83000010");
    }
}
