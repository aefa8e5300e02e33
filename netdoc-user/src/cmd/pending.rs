//! Output files (`--svg`, `--record`, `--report`) written whole or not at all: under a temporary
//! name beside the target, renamed into place once complete. Creating the temporary file first
//! checks the target is writable before anything is traced, without touching an existing one.
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

pub struct PendingFile {
    target: PathBuf,
    temporary: PathBuf,
    /// The option that named it, for messages.
    flag: &'static str,
}

impl PendingFile {
    pub fn create(target: &Path, flag: &'static str) -> Result<Self> {
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".netdoc-partial");
        let temporary = target.with_file_name(name);
        std::fs::File::create(&temporary)
            .with_context(|| format!("cannot write {flag} {}", target.display()))?;
        Ok(Self {
            target: target.to_path_buf(),
            temporary,
            flag,
        })
    }

    pub fn commit(self, bytes: &[u8]) -> Result<()> {
        std::fs::write(&self.temporary, bytes)
            .and_then(|()| std::fs::rename(&self.temporary, &self.target))
            .with_context(|| format!("writing {} {}", self.flag, self.target.display()))
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Gone already after a rename; left over after an error or an interrupted run.
        let _ = std::fs::remove_file(&self.temporary);
    }
}
