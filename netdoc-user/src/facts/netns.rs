//! Network namespaces by inode, their names under /run/netns, and device names inside them.
use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub const NAMED_DIR: &str = "/run/netns";

/// Inode of a namespace file such as `/proc/self/ns/net` or `/run/netns/NAME`.
pub fn inode(path: &Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.ino() as u32)
}

/// A `--netns` value, checked where it enters: a name under /run/netns, a path to a network
/// namespace file, or the inode of a namespace that a bind mount or a process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsArg {
    /// As the user gave it, for messages.
    pub given: String,
    pub path: PathBuf,
    pub inode: u32,
}

/// `NS_GET_NSTYPE` (`_IO(0xb7, 0x3)`): which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

impl NetnsArg {
    pub fn parse(arg: &str) -> anyhow::Result<Self> {
        let hint = "give a name under /run/netns, a path such as /proc/PID/ns/net, or an inode";
        if arg.is_empty() {
            anyhow::bail!("--netns: empty ({hint})");
        }
        let path = match arg.parse::<u32>() {
            Ok(ino) => NetnsNames::new().ns_file(ino).ok_or_else(|| {
                anyhow::anyhow!("--netns {arg}: no namespace with this inode is held by a bind mount or process ({hint})")
            })?,
            Err(_) if arg.contains('/') => PathBuf::from(arg),
            Err(_) => Path::new(NAMED_DIR).join(arg),
        };
        let file = File::open(&path)
            .map_err(|e| anyhow::anyhow!("--netns {arg}: {} ({e}; {hint})", path.display()))?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the open fd.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            anyhow::bail!(
                "--netns {arg}: {} is not a network namespace ({hint})",
                path.display()
            );
        }
        let inode = file.metadata()?.ino() as u32;
        Ok(Self {
            given: arg.to_string(),
            path,
            inode,
        })
    }

    /// The namespace's file, unless it is netdoc's own (where everything is placed anyway).
    pub fn other_file(&self) -> Option<PathBuf> {
        (inode(Path::new("/proc/self/ns/net")) != Some(self.inode)).then(|| self.path.clone())
    }
}

/// Namespace inodes are reused once a namespace is gone: a name seen for an inode is trusted
/// for this long, then checked against its /run/netns file again.
const RECHECK: Duration = Duration::from_millis(200);

/// Names of namespaces (by inode) and of devices inside them, kept true while namespaces come
/// and go: a name is rechecked after [`RECHECK`], and a changed or vanished one forgets the
/// devices it had.
#[derive(Default)]
pub struct NetnsNames {
    /// Inode → its /run/netns name (None: it has none), and when that was last true.
    names: HashMap<u32, (Option<String>, Instant)>,
    devices: HashMap<(u32, u32), Option<String>>,
    own: u32,
}

impl NetnsNames {
    pub fn new() -> Self {
        let mut n = Self {
            own: inode(Path::new("/proc/self/ns/net")).unwrap_or(0),
            ..Self::default()
        };
        n.rescan();
        n
    }

    /// Reads /run/netns afresh; inodes whose name changed lose their cached devices.
    fn rescan(&mut self) {
        let now = Instant::now();
        let mut fresh: HashMap<u32, (Option<String>, Instant)> = HashMap::new();
        if let Ok(dir) = std::fs::read_dir(NAMED_DIR) {
            for e in dir.flatten() {
                if let Some(ino) = inode(&e.path()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    fresh.insert(ino, (Some(name), now));
                }
            }
        }
        let changed: Vec<u32> = self
            .names
            .iter()
            .filter(|(ino, (name, _))| fresh.get(ino).map(|f| &f.0) != Some(name))
            .map(|(ino, _)| *ino)
            .collect();
        self.devices.retain(|(ino, _), _| !changed.contains(ino));
        self.names = fresh;
    }

    /// The /run/netns name of a namespace, if any.
    pub fn name(&mut self, ino: u32) -> Option<String> {
        if ino == 0 {
            return None;
        }
        let trusted = match self.names.get_mut(&ino) {
            Some((_, checked)) if checked.elapsed() < RECHECK => true,
            Some((Some(name), checked)) => {
                let still = inode(&Path::new(NAMED_DIR).join(&*name)) == Some(ino);
                if still {
                    *checked = Instant::now();
                }
                still
            }
            _ => false,
        };
        if !trusted {
            self.rescan();
            // Remember that it has no name, so unnamed namespaces cost one scan per RECHECK.
            self.names
                .entry(ino)
                .or_insert_with(|| (None, Instant::now()));
        }
        self.names.get(&ino).and_then(|(name, _)| name.clone())
    }

    /// Device name of `ifindex` inside namespace `ino` (ifindexes are per namespace).
    pub fn device(&mut self, ino: u32, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        if let Some(known) = self.devices.get(&(ino, ifindex)) {
            return known.clone();
        }
        let name = if ino == self.own || ino == 0 {
            index_to_name(ifindex)
        } else {
            self.ns_file(ino)
                .and_then(|f| in_namespace(&f, move || index_to_name(ifindex)))
        };
        self.devices.insert((ino, ifindex), name.clone());
        name
    }

    /// A file that refers to namespace `ino`: a /run/netns entry or some process's ns link.
    pub fn ns_file(&mut self, ino: u32) -> Option<PathBuf> {
        if let Some(name) = self.name(ino) {
            return Some(Path::new(NAMED_DIR).join(name));
        }
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .map(|e| e.path().join("ns/net"))
            .find(|p| inode(p) == Some(ino))
    }
}

fn index_to_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer is IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(p) };
    Some(name.to_string_lossy().into_owned())
}

/// Runs `f` on a short-lived thread that has joined the namespace at `ns_file`.
pub fn in_namespace<T: Send + 'static>(
    ns_file: &Path,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> Option<T> {
    spawn_in(ns_file, f).ok()?.join().ok().flatten()
}

/// Starts `f` on a thread inside the namespace at `ns_file` (sockets it opens live there).
pub fn spawn_in<T: Send + 'static>(
    ns_file: &Path,
    f: impl FnOnce() -> Option<T> + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<Option<T>>> {
    let file = File::open(ns_file)?;
    Ok(std::thread::spawn(move || {
        // SAFETY: the fd is an open namespace file; setns changes only this new thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        f()
    }))
}
