//! The host's processes, as /proc lists them.
use std::path::{Path, PathBuf};

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

/// The process name (`comm`) in a process's /proc directory, as a person reads it: bytes that
/// are not UTF-8 (a process may name itself anything) shown as U+FFFD rather than losing the
/// name. None once the process is gone.
pub fn comm(dir: &Path) -> Option<String> {
    let text = super::read_text(dir.join("comm")).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(&text).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_is_not_utf8_is_kept_readable() {
        let dir = std::env::temp_dir().join(format!("netdoc-comm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("comm"), b"web\xff\xfe srv\n").unwrap();
        assert_eq!(comm(&dir).as_deref(), Some("web\u{fffd}\u{fffd} srv"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(comm(&dir), None);
    }
}
