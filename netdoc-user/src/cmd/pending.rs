//! Output files (`--svg`, `--record`, `--report`) written whole or not at all: under a temporary
//! name beside the target, renamed into place once complete. Everything that could make that
//! fail or do harm is checked when the file is created, before anything is traced: a rename
//! replaces whatever is at the path, so the target must be a regular file or nothing yet (not
//! `/dev/null`, a fifo, a directory, a symlink to nothing); a symlink to a regular file is
//! followed, so the file it names is replaced, not the link; and the directory must be writable.
use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use crate::Error;

pub struct PendingFile {
    /// The file the rename replaces: the path given with its symlinks resolved.
    target: PathBuf,
    temporary: PathBuf,
    /// Open from the start and written through: never opened again by name.
    file: File,
    /// The option that named it, and the path as given, for messages.
    flag: &'static str,
    given: PathBuf,
}

impl PendingFile {
    pub fn create(given: &Path, flag: &'static str) -> Result<Self> {
        let named = format!("{flag} {}", given.display());
        let target = resolve(given).map_err(|why| Error::Input(format!("{named}: {why}")))?;
        let mut name = target.file_name().unwrap_or_default().to_os_string();
        name.push(".netdoc-partial");
        let temporary = target.with_file_name(name);
        // One left by an interrupted run goes; created anew (never followed, were it a
        // symlink planted there), it is this run's alone.
        if std::fs::symlink_metadata(&temporary).is_ok_and(|m| !m.is_dir()) {
            std::fs::remove_file(&temporary)
                .with_context(|| format!("cannot write {named}: {}", temporary.display()))?;
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)
            .with_context(|| format!("cannot write {named}"))?;
        Ok(Self {
            target,
            temporary,
            file,
            flag,
            given: given.to_path_buf(),
        })
    }

    pub fn commit(mut self, bytes: &[u8]) -> Result<()> {
        let what = format!("writing {} {}", self.flag, self.given.display());
        // Whatever came to the path during the run is checked again, as at the start.
        if let Err(why) = resolve(&self.target) {
            fail!(Failed, "{what}: {why}");
        }
        self.file
            .write_all(bytes)
            .and_then(|()| std::fs::rename(&self.temporary, &self.target))
            .with_context(|| what)
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        // Gone already after a rename; left over after an error or an interrupted run.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// The regular file `given` names, its symlinks resolved, or where a new one will be; why not
/// where the path holds anything else.
fn resolve(given: &Path) -> Result<PathBuf, String> {
    match std::fs::metadata(given) {
        Ok(m) if m.is_file() => given.canonicalize().map_err(|e| e.to_string()),
        Ok(m) => Err(format!(
            "{}, not a regular file: the file is written whole beside it and renamed into place, which would replace it",
            file_kind(&m.file_type())
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(given).is_ok() {
                return Err(
                    "a symlink to nothing: renaming the file into place would replace the link"
                        .into(),
                );
            }
            let name = given.file_name().ok_or("names no file")?;
            let parent = match given.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let parent = parent
                .canonicalize()
                .map_err(|e| format!("{}: {e}", parent.display()))?;
            Ok(parent.join(name))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A directory of its own for each test, removed after.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("netdoc-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn refusal(path: &Path) -> String {
        match PendingFile::create(path, "--report") {
            Ok(_) => panic!("{} accepted", path.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn only_a_regular_file_or_a_new_one_is_renamed_over() {
        let dir = Scratch::new("pending-kinds");
        let fifo = dir.0.join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.unwrap().success());
        let dangling = dir.0.join("dangling");
        symlink(dir.0.join("nothing"), &dangling).unwrap();
        let to_fifo = dir.0.join("to-fifo");
        symlink(&fifo, &to_fifo).unwrap();
        const RENAME: &str =
            "the file is written whole beside it and renamed into place, which would replace it";
        for (path, says) in [
            (&fifo, format!("a fifo, not a regular file: {RENAME}")),
            (&to_fifo, format!("a fifo, not a regular file: {RENAME}")),
            (&dir.0, format!("a directory, not a regular file: {RENAME}")),
            (
                &dangling,
                "a symlink to nothing: renaming the file into place would replace the link".into(),
            ),
        ] {
            assert_eq!(
                refusal(path),
                format!("--report {}: {says}", path.display())
            );
        }
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert!(std::fs::symlink_metadata(&dangling).unwrap().is_symlink());
        assert_eq!(
            std::fs::read_dir(&dir.0).unwrap().count(),
            3,
            "no temporary left"
        );
    }

    #[test]
    fn a_symlink_to_a_file_keeps_the_link_and_replaces_the_file() {
        let dir = Scratch::new("pending-link");
        let real = dir.0.join("real.html");
        std::fs::write(&real, "old").unwrap();
        let link = dir.0.join("link.html");
        symlink(&real, &link).unwrap();
        // A symlink planted where the temporary goes is removed, never written through.
        let victim = dir.0.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        symlink(&victim, dir.0.join("real.html.netdoc-partial")).unwrap();
        let file = PendingFile::create(&link, "--report").unwrap();
        file.commit(b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let fresh = dir.0.join("new.json");
        PendingFile::create(&fresh, "--record")
            .unwrap()
            .commit(b"{}")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "{}");
    }
}
