//! Kernel facts, each behind a small reader that also accepts a recorded copy so the logic above
//! it is testable without root.
pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod conntrack;
pub mod droprules;
pub mod fdinfo;
pub mod fwtables;
pub mod host;
pub mod interrupts;
pub mod iptsave;
pub mod irqsys;
pub mod kallsyms;
pub mod natrules;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod nftjson;
pub mod nftsyntax;
pub mod nsholders;
pub mod procnet;
pub mod procs;
pub mod route;
pub mod snmp;
pub mod sockdiag;
pub mod tracefs;

/// A kernel text file (/proc, /sys, tracefs) read whole, its bytes decoded lossily: a byte that
/// is not UTF-8 (in a mount point, a process or interface name a tenant chose) costs only the
/// characters it is in, shown as U+FFFD, never the file's other lines.
pub fn read_text(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}
