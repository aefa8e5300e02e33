//! The host's processes, as /proc lists them.
use std::path::PathBuf;

/// Every process now: its pid and its /proc directory. One that exits meanwhile is simply
/// missing from what its directory reads.
pub fn all() -> impl Iterator<Item = (u32, PathBuf)> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, e.path()))
        })
}
