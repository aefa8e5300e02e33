//! Who holds each network namespace open: processes (`/proc/PID/ns/net`) and nsfs bind mounts
//! (`ip netns` keeps its namespaces under /run/netns, docker under /run/docker/netns, CNI
//! plugins under /var/run/netns). Parsing takes text, so recorded copies test it.
use std::{
    collections::BTreeMap,
    ffi::OsString,
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
};

/// What keeps a namespace alive and lets netdoc enter it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Holder {
    /// A process whose `/proc/PID/ns/net` is the namespace.
    Process(u32),
    /// An nsfs bind mount of the namespace.
    Mount(PathBuf),
}

impl Holder {
    /// A file that refers to the namespace, for `setns`.
    pub fn file(&self) -> PathBuf {
        match self {
            Holder::Process(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Holder::Mount(path) => path.clone(),
        }
    }
}

/// Every holder of every network namespace, by namespace inode.
pub type Holders = BTreeMap<u32, Vec<Holder>>;

/// The inode in a namespace link's text: `net:[4026531840]`.
pub fn link_inode(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// The network namespace bind mounts in a `/proc/PID/mountinfo` text: (inode, mount point).
/// For an nsfs mount the root field is the namespace link text; the mount point has spaces and
/// other awkward bytes escaped as octal (`\040`), and any other byte as it is: the text is
/// taken as bytes, line by line, so a mount point that is not UTF-8 is kept exactly (it is
/// what `setns` opens) and costs no other line.
pub fn nsfs_mounts(mountinfo: &[u8]) -> Vec<(u32, PathBuf)> {
    mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let separator = line.windows(3).position(|w| w == b" - ")?;
            let (mount, fs) = (&line[..separator], &line[separator + 3..]);
            if fields(fs).next()? != b"nsfs" {
                return None;
            }
            let mut fields = fields(mount);
            let inode = link_inode(std::str::from_utf8(fields.nth(3)?).ok()?)?;
            Some((
                inode,
                PathBuf::from(OsString::from_vec(unescape(fields.next()?))),
            ))
        })
        .collect()
}

/// A mountinfo line's space-separated fields.
fn fields(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    line.split(|&b| b == b' ').filter(|f| !f.is_empty())
}

/// A mount point field with its octal escapes (`\040`) decoded.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (field[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Reads every holder on this host: each process's namespace link and this mount namespace's
/// nsfs mounts. Processes that exit mid-scan are skipped. Threads that joined another namespace
/// alone are not followed: a namespace only they hold is not seen.
pub fn scan() -> Holders {
    let mut holders = Holders::new();
    for (pid, dir) in super::procs::all() {
        let link = std::fs::read_link(dir.join("ns/net"));
        if let Some(inode) = link.ok().and_then(|l| link_inode(l.to_str()?)) {
            holders.entry(inode).or_default().push(Holder::Process(pid));
        }
    }
    let mounts = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
    for (inode, path) in nsfs_mounts(&mounts) {
        let held = holders.entry(inode).or_default();
        let mount = Holder::Mount(path);
        if !held.contains(&mount) {
            held.push(mount);
        }
    }
    holders
}

/// The `ip netns` name of a mount point under /run/netns or /var/run/netns; bytes that are not
/// UTF-8 shown as U+FFFD (the name is still the one people see, though no longer one to type).
pub fn ip_netns_name(path: &Path) -> Option<String> {
    let parent = path.parent()?;
    (parent == Path::new("/run/netns") || parent == Path::new("/var/run/netns"))
        .then(|| Some(path.file_name()?.to_string_lossy().into_owned()))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
520 25 0:4 net:[4026532286] /run/netns/blue rw shared:240 - nsfs nsfs rw
521 25 0:4 net:[4026532286] /var/run/netns/blue rw shared:240 - nsfs nsfs rw
530 25 0:4 net:[4026532400] /run/docker/netns/1a2b\\040c rw - nsfs nsfs rw
531 25 0:4 mnt:[4026532500] /run/some/mnt rw - nsfs nsfs rw
";

    #[test]
    fn net_namespace_mounts_are_found_with_their_inode() {
        assert_eq!(
            nsfs_mounts(MOUNTINFO.as_bytes()),
            [
                (4026532286, PathBuf::from("/run/netns/blue")),
                (4026532286, PathBuf::from("/var/run/netns/blue")),
                (4026532400, PathBuf::from("/run/docker/netns/1a2b c")),
            ]
        );
    }

    #[test]
    fn a_mount_point_that_is_not_utf8_costs_no_other_line_and_is_kept_exactly() {
        let mut mountinfo = b"600 25 0:50 / /mnt/\xff\xfe rw - tmpfs tmpfs rw\n".to_vec();
        mountinfo.extend(MOUNTINFO.as_bytes());
        mountinfo
            .extend(b"601 25 0:4 net:[4026532999] /run/netns/bad\xff\\040x rw - nsfs nsfs rw\n");
        let bad = PathBuf::from(OsString::from_vec(b"/run/netns/bad\xff x".to_vec()));
        assert_eq!(
            nsfs_mounts(&mountinfo),
            [
                (4026532286, PathBuf::from("/run/netns/blue")),
                (4026532286, PathBuf::from("/var/run/netns/blue")),
                (4026532400, PathBuf::from("/run/docker/netns/1a2b c")),
                (4026532999, bad.clone()),
            ]
        );
        assert_eq!(ip_netns_name(&bad), Some("bad\u{fffd} x".into()));
    }

    #[test]
    fn only_ip_netns_directories_give_names() {
        assert_eq!(
            ip_netns_name(Path::new("/var/run/netns/cni-12")),
            Some("cni-12".into())
        );
        assert_eq!(ip_netns_name(Path::new("/run/docker/netns/1a2b")), None);
        assert_eq!(link_inode("net:[4026531840]"), Some(4026531840));
        assert_eq!(link_inode("mnt:[4026531840]"), None);
    }
}
