//! Entering network namespaces: the `--netns` argument, a namespace's cookie, device names
//! and work done inside one.
use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

use super::nsholders;

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
            fail!(Input, "--netns: empty ({hint})");
        }
        let path = match arg.parse::<u32>() {
            Ok(ino) => file_of(ino).ok_or_else(|| {
                crate::Error::Input(format!("--netns {arg}: no namespace with this inode is held by a bind mount or process ({hint})"))
            })?,
            Err(_) if arg.contains('/') => PathBuf::from(arg),
            Err(_) => Path::new(NAMED_DIR).join(arg),
        };
        let file = File::open(&path).map_err(|e| {
            crate::Error::Input(format!("--netns {arg}: {} ({e}; {hint})", path.display()))
        })?;
        // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the open fd.
        let kind = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            fail!(
                Input,
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
}

/// A file that refers to namespace `ino` now: a bind mount or some process's ns link.
fn file_of(ino: u32) -> Option<PathBuf> {
    nsholders::scan()
        .remove(&ino)?
        .first()
        .map(nsholders::Holder::file)
}

/// The name of device `ifindex` in the calling thread's namespace.
pub fn index_to_name(ifindex: u32) -> Option<String> {
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

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`, 5.14+): an id the
/// kernel never reuses during a boot, unlike inodes.
pub fn cookie_here() -> Option<u64> {
    // SAFETY: plain socket calls on a socket this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut cookie = 0u64;
        let mut len = size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        );
        libc::close(fd);
        (rc == 0).then_some(cookie)
    }
}

/// Runs `f` inside each namespace of `files` in turn, on one short-lived thread: one thread
/// for a whole round, however many namespaces. A namespace that cannot be entered (gone since
/// it was listed) gives None.
pub fn visit<K: Send + 'static, T: Send + 'static>(
    files: Vec<(K, PathBuf)>,
    f: impl Fn(&K) -> T + Send + 'static,
) -> Vec<(K, Option<T>)> {
    if files.is_empty() {
        return Vec::new();
    }
    let round = std::thread::spawn(move || {
        files
            .into_iter()
            .map(|(key, file)| {
                let entered = File::open(&file).is_ok_and(|ns| {
                    // SAFETY: an open namespace file; setns changes only this thread, which
                    // exits at the end of the round.
                    unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 }
                });
                let value = entered.then(|| f(&key));
                (key, value)
            })
            .collect()
    });
    round.join().unwrap_or_default()
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
