//! Whether nftables is in the running kernel at all: asking a kernel without it for its rules
//! would load it.
use std::sync::OnceLock;

use super::kallsyms;

/// Whether nf_tables is in the running kernel: built in (its functions in kallsyms) or loaded
/// as a module. Where it is not there are no nftables rules, and asking for them would load it.
/// Decided once: a module loaded later is missed until netdoc restarts, which errs towards
/// asking nothing of a kernel that did not ask for nftables.
pub fn nf_tables_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let loaded = super::read_text("/proc/modules")
            .is_ok_and(|m| m.lines().any(|l| l.starts_with("nf_tables ")));
        loaded || kallsyms::defines("nft_do_chain")
    })
}
