//! Every network namespace on the host, followed while netdoc runs: found through the processes
//! and bind mounts that hold them, keyed by inode and checked by cookie (inodes are reused once
//! a namespace dies, cookies never are), and named as people name them. A shared model: every
//! family and command may use it.
pub mod identity;
pub mod turns;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::{Path, PathBuf},
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::facts::{
    cgroup::{self, Container},
    netns,
    nsholders::{self, Holder, Holders},
};
pub use identity::{NetnsKind, NetnsRef};

/// At most this many processes of one namespace are read for their container: a pod has a
/// handful; a namespace with thousands of processes is a host's.
const CGROUP_READS: usize = 64;

/// The namespaces that went away kept for summaries and late events: the latest ones; earlier
/// ones are only counted, so a long run under pod churn stays the same size.
const GONE_KEPT: usize = 256;

/// A namespace across a run: its inode and cookie (an inode alone is reused).
pub type NetnsKey = (u32, Option<u64>);

/// One live namespace.
#[derive(Debug, Clone)]
pub struct Netns {
    pub id: NetnsRef,
    /// Unique within the run, even where inodes are reused and there are no cookies: caches
    /// of what is inside a namespace (device names) key on it.
    pub serial: u64,
    holders: Vec<Holder>,
    /// When [`Inventory::stale`] last found its file still referring to it.
    verified_ns: u64,
    /// When a scan first found it.
    found_ns: u64,
    /// When an event last had it rescanned while its name was provisional.
    asked_ns: u64,
}

/// How long a new namespace's name may still be provisional: `ip netns add` and container
/// runtimes make the namespace first and name it (a bind mount, a cgroup) just after.
const NAMING_NS: u64 = 2_000_000_000;
/// Events from a provisionally named namespace rescan at most this often.
const ASK_EVERY_NS: u64 = 100_000_000;

impl Netns {
    /// Named only after a process (or a process's file) while it may still be being set up:
    /// a scan now may find the mount or container that names it.
    fn provisional(&self, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.found_ns) < NAMING_NS
            // `Mount` too: with no mount and no readable process name, the fallback names it
            // after a process's file.
            && matches!(self.id.kind, NetnsKind::Process | NetnsKind::Mount)
            && !self.holders.iter().any(|h| matches!(h, Holder::Mount(_)))
    }
    /// A file to enter it through.
    pub fn file(&self) -> Option<PathBuf> {
        entry_file(&self.holders)
    }
}

/// The file to enter a namespace through: a mount outlives a process (a short-lived one such
/// as `ip netns exec` may be gone by the time the file is opened), so mounts first.
fn entry_file(holders: &[Holder]) -> Option<PathBuf> {
    let mount = holders.iter().find(|h| matches!(h, Holder::Mount(_)));
    mount.or(holders.first()).map(Holder::file)
}

/// A namespace that went away during the run, for the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GoneNetns {
    #[serde(flatten)]
    pub id: NetnsRef,
    /// Seconds into the run it was last seen.
    pub gone_after_s: f64,
}

/// Every network namespace on the host.
pub struct Inventory {
    live: BTreeMap<u32, Netns>,
    /// The latest [`GONE_KEPT`] namespaces that went away, oldest first.
    gone: VecDeque<GoneNetns>,
    /// Namespaces that went away before those.
    gone_earlier: u64,
    host: u32,
    own: u32,
    started: Instant,
    /// CLOCK_MONOTONIC (the clock of events' `ts_ns`) when the last scan began.
    last_scan_ns: u64,
    /// The last [`Netns::serial`] given.
    serials: u64,
    /// Whether this kernel gives cookies to userspace (`SO_NETNS_COOKIE`, 5.14+).
    cookies: bool,
    /// Namespaces of events that a rescan did not find (gone, or held only by a thread): not
    /// looked for again until the next periodic scan.
    misses: BTreeSet<(u32, u64)>,
}

/// Nanoseconds of CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Inventory {
    /// Finds every namespace now.
    pub fn discover() -> Self {
        let inode = |p: &str| netns::inode(Path::new(p)).unwrap_or(0);
        let mut inv = Self {
            live: BTreeMap::new(),
            gone: VecDeque::new(),
            gone_earlier: 0,
            host: initial_inode(),
            own: inode("/proc/self/ns/net"),
            started: Instant::now(),
            last_scan_ns: 0,
            serials: 0,
            cookies: netns::cookie_here().is_some(),
            misses: BTreeSet::new(),
        };
        inv.follow();
        inv
    }

    /// Rescans the holders: new namespaces are named, vanished ones moved to `gone`. An inode
    /// whose holders all changed is checked by cookie: the same cookie is the same namespace,
    /// another is a new namespace that reused the inode.
    pub fn follow(&mut self) {
        self.last_scan_ns = monotonic_ns();
        self.misses.clear();
        let seen = nsholders::scan();
        let (mut added, mut gone, suspect) = reconcile(&self.live, &seen);
        // A namespace whose cookie could not be read (its holder went before netdoc entered)
        // is asked again.
        let cookieless: Vec<u32> = match self.cookies {
            true => self
                .live
                .iter()
                .filter(|(ino, n)| n.id.cookie.is_none() && !suspect.contains(ino))
                .map(|(ino, _)| *ino)
                .filter(|ino| seen.contains_key(ino))
                .collect(),
            false => Vec::new(),
        };
        let check: Vec<(u32, PathBuf)> = added
            .iter()
            .chain(&suspect)
            .chain(&cookieless)
            .filter_map(|ino| Some((*ino, entry_file(seen.get(ino)?)?)))
            .collect();
        let cookies: BTreeMap<u32, Option<u64>> = netns::visit(check, |_| netns::cookie_here())
            .into_iter()
            .map(|(ino, c)| (ino, c.flatten()))
            .collect();
        for ino in cookieless {
            if let (Some(n), Some(cookie)) = (self.live.get_mut(&ino), cookies.get(&ino)) {
                n.id.cookie = *cookie;
            }
        }
        for ino in suspect {
            let had = self.live.get(&ino).and_then(|n| n.id.cookie);
            match (had, cookies.get(&ino).copied().flatten()) {
                (Some(a), Some(b)) if a == b => {}
                _ => {
                    gone.push(ino);
                    added.push(ino);
                }
            }
        }
        for ino in &gone {
            if let Some(n) = self.live.remove(ino) {
                if self.gone.len() == GONE_KEPT {
                    self.gone.pop_front();
                    self.gone_earlier += 1;
                }
                self.gone.push_back(GoneNetns {
                    id: n.id,
                    gone_after_s: self.started.elapsed().as_secs_f64(),
                });
            }
        }
        let changed: Vec<(u32, Option<u64>)> = seen
            .iter()
            .filter_map(|(ino, holders)| {
                let n = self.live.get(ino)?;
                (&n.holders != holders).then_some((*ino, n.id.cookie))
            })
            .collect();
        for (ino, cookie) in changed {
            let holders = seen[&ino].clone();
            let id = self.name(ino, cookie, &holders);
            if let Some(n) = self.live.get_mut(&ino) {
                n.holders = holders;
                n.id = id;
            }
        }
        added.sort_unstable();
        added.dedup();
        for ino in &added {
            let cookie = cookies.get(ino).copied().flatten();
            let holders = seen.get(ino).cloned().unwrap_or_default();
            let id = self.name(*ino, cookie, &holders);
            self.serials += 1;
            let serial = self.serials;
            self.live.insert(
                *ino,
                Netns {
                    id,
                    serial,
                    holders,
                    verified_ns: 0,
                    found_ns: self.last_scan_ns,
                    asked_ns: 0,
                },
            );
        }
    }

    fn name(&self, inode: u32, cookie: Option<u64>, holders: &[Holder]) -> NetnsRef {
        let is_host = inode == self.host;
        let pids: Vec<u32> = holders
            .iter()
            .filter_map(|h| match h {
                Holder::Process(pid) => Some(*pid),
                Holder::Mount(_) => None,
            })
            .collect();
        // The host's processes are not containers; reading thousands of cgroups is wasted.
        let containers: BTreeSet<Container> = match is_host {
            true => BTreeSet::new(),
            false => pids
                .iter()
                .take(CGROUP_READS)
                .filter_map(|pid| {
                    let text = crate::facts::read_text(format!("/proc/{pid}/cgroup")).ok()?;
                    cgroup::container(&text)
                })
                .collect(),
        };
        let main = pids.iter().min().and_then(|pid| {
            let comm = crate::facts::procs::comm(Path::new(&format!("/proc/{pid}")))?;
            Some((comm, *pid))
        });
        identity::identify(identity::Seen {
            inode,
            cookie,
            is_host,
            holders,
            containers: &containers,
            main,
            pod: &cgroup::pod,
        })
    }

    /// The namespace an event names: by cookie when the kernel gave one (exact even after the
    /// inode was reused), else by inode.
    pub fn get(&self, inode: u32, cookie: u64) -> Option<&NetnsRef> {
        if cookie != 0 {
            let by_cookie = |n: &&NetnsRef| n.cookie == Some(cookie);
            // A live one whose cookie is not read yet is taken by inode.
            return self
                .live
                .get(&inode)
                .map(|n| &n.id)
                .filter(|n| n.cookie.is_none_or(|c| c == cookie))
                .or_else(|| self.gone.iter().rev().map(|g| &g.id).find(by_cookie));
        }
        self.live.get(&inode).map(|n| &n.id)
    }

    /// [`Self::get`] for an event at `ts_ns` (CLOCK_MONOTONIC; `u64::MAX` when unknown). A
    /// namespace not known yet is looked for once more if the event is newer than the last scan
    /// (it may have been made since); one the last scan should have seen is gone already.
    pub fn resolve(&mut self, inode: u32, cookie: u64, ts_ns: u64) -> Option<NetnsRef> {
        if inode == 0 {
            return None;
        }
        if cookie == 0 && ts_ns >= self.last_scan_ns && self.stale(inode) {
            self.follow();
        }
        let now = monotonic_ns();
        if let Some(n) = self.live.get_mut(&inode)
            && n.provisional(now)
            && ts_ns >= self.last_scan_ns
            && now.saturating_sub(n.asked_ns) >= ASK_EVERY_NS
        {
            n.asked_ns = now;
            self.follow();
        }
        if self.get(inode, cookie).is_none()
            && ts_ns >= self.last_scan_ns
            && !self.misses.contains(&(inode, cookie))
        {
            self.follow();
            if self.get(inode, cookie).is_none() {
                self.misses.insert((inode, cookie));
            }
        }
        self.get(inode, cookie).cloned()
    }

    /// Without a cookie an event cannot tell a reused inode from the namespace the inventory
    /// knows: whether the known one's file no longer refers to `inode` (checked once per entry
    /// between scans).
    fn stale(&mut self, inode: u32) -> bool {
        let Some(n) = self.live.get_mut(&inode) else {
            return false;
        };
        if n.verified_ns >= self.last_scan_ns {
            return false;
        }
        n.verified_ns = monotonic_ns();
        n.file().and_then(|f| netns::inode(&f)) != Some(inode)
    }

    /// A live namespace by inode.
    pub fn live(&self, inode: u32) -> Option<&Netns> {
        self.live.get(&inode)
    }

    /// The latest namespaces that went away, oldest first, and how many went before them.
    pub fn gone(&self) -> (Vec<GoneNetns>, u64) {
        (self.gone.iter().cloned().collect(), self.gone_earlier)
    }

    /// Whether namespaces are told apart by cookie (5.14+); before, by inode only, which a new
    /// namespace may reuse.
    pub fn has_cookies(&self) -> bool {
        self.cookies
    }

    /// CLOCK_MONOTONIC when the last scan began: a namespace missing from it is gone if it
    /// was made before then.
    pub fn last_scan_ns(&self) -> u64 {
        self.last_scan_ns
    }

    pub fn all(&self) -> impl Iterator<Item = &Netns> {
        self.live.values()
    }

    /// netdoc's own namespace's inode.
    pub fn own(&self) -> u32 {
        self.own
    }

    /// The one live namespace `wanted` names; an error names none or several.
    pub fn find(&self, wanted: &Wanted) -> Result<&Netns, crate::Error> {
        let found: Vec<&Netns> = self.all().filter(|n| wanted.matches(&n.id)).collect();
        match found.as_slice() {
            [one] => Ok(one),
            [] => Err(crate::Error::Input(
                "no network namespace on this host belongs to it".into(),
            )),
            many => Err(crate::Error::Input(format!(
                "it matches {} namespaces ({}): give more of the id",
                many.len(),
                many.iter()
                    .map(|n| n.id.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Whether `inode` is netdoc's own namespace.
    pub fn is_own(&self, inode: u32) -> bool {
        inode == self.own
    }
}

/// What `--container` or `--pod` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted<'a> {
    /// A container id or its prefix, optionally `RUNTIME:ID`.
    Container(&'a str),
    /// A pod uid, `NAMESPACE/NAME`, or a bare name.
    Pod(&'a str),
}

impl Wanted<'_> {
    /// Whether namespace `id` is the one asked for. Pure.
    pub fn matches(&self, id: &NetnsRef) -> bool {
        match *self {
            Wanted::Container(q) => {
                let (runtime, prefix) = q.split_once(':').map_or((None, q), |(r, p)| (Some(r), p));
                id.container.as_ref().is_some_and(|c| {
                    !prefix.is_empty()
                        && c.id.starts_with(prefix)
                        && runtime.is_none_or(|r| r == c.runtime)
                })
            }
            Wanted::Pod(q) => id.pod.as_ref().is_some_and(|p| {
                let full = p.namespace.as_deref().zip(p.name.as_deref());
                p.uid == q
                    || full.is_some_and(|(ns, name)| q == format!("{ns}/{name}") || q == name)
            }),
        }
    }
}

/// The initial namespace's inode: kernel threads live there, so kthreadd's (pid 2) is it; pid
/// 1's where kthreadd is not visible (a pid namespace) or its link unreadable.
fn initial_inode() -> u32 {
    let kthreadd = crate::facts::read_text("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd");
    let from = |pid: u32| netns::inode(Path::new(&format!("/proc/{pid}/ns/net")));
    kthreadd
        .then(|| from(2))
        .flatten()
        .or_else(|| from(1))
        .unwrap_or(0)
}

/// Compares the known namespaces with a fresh scan: (added, gone, suspect) inodes, where
/// suspect ones are still there but with none of the holders they had (possibly a new namespace
/// that reused the inode). Pure.
fn reconcile(known: &BTreeMap<u32, Netns>, seen: &Holders) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let added = seen
        .keys()
        .filter(|i| !known.contains_key(i))
        .copied()
        .collect();
    let gone = known
        .keys()
        .filter(|i| !seen.contains_key(i))
        .copied()
        .collect();
    let suspect = known
        .iter()
        .filter_map(|(ino, n)| {
            let now = seen.get(ino)?;
            (!now.iter().any(|h| n.holders.contains(h))).then_some(*ino)
        })
        .collect();
    (added, gone, suspect)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn netns(inode: u32, cookie: u64, holders: Vec<Holder>) -> Netns {
        Netns {
            id: NetnsRef {
                inode,
                cookie: Some(cookie),
                name: format!("ns{inode}"),
                kind: NetnsKind::IpNetns,
                container: None,
                pod: None,
            },
            serial: u64::from(inode),
            holders,
            verified_ns: 0,
            found_ns: 0,
            asked_ns: 0,
        }
    }

    #[test]
    fn a_new_namespace_named_after_a_process_only_is_provisional_for_a_while() {
        let mut ns = netns(4026532001, 7, vec![Holder::Process(42)]);
        ns.id.kind = NetnsKind::Process;
        ns.found_ns = 10_000_000_000;
        assert!(ns.provisional(10_500_000_000), "half a second old");
        assert!(!ns.provisional(10_000_000_000 + NAMING_NS), "old enough");
        ns.holders
            .push(Holder::Mount(PathBuf::from("/run/netns/blue")));
        assert!(!ns.provisional(10_500_000_000), "a mount names it");
    }

    #[test]
    fn a_reused_inode_is_suspect_until_its_cookie_is_checked() {
        let mount = |n: &str| Holder::Mount(PathBuf::from(format!("/run/netns/{n}")));
        let known = BTreeMap::from([
            (10, netns(10, 100, vec![mount("a"), Holder::Process(5)])),
            (11, netns(11, 101, vec![mount("b")])),
            (12, netns(12, 102, vec![mount("c")])),
        ]);
        let seen = Holders::from([
            (10, vec![mount("a")]),
            (12, vec![mount("d")]),
            (13, vec![Holder::Process(9)]),
        ]);
        assert_eq!(reconcile(&known, &seen), (vec![13], vec![11], vec![12]));
    }

    #[test]
    fn a_namespace_is_entered_through_its_mount_before_any_process() {
        let holders = [
            Holder::Process(77),
            Holder::Mount(PathBuf::from("/run/netns/blue")),
        ];
        assert_eq!(entry_file(&holders), Some(PathBuf::from("/run/netns/blue")));
        assert_eq!(
            entry_file(&holders[..1]),
            Some(PathBuf::from("/proc/77/ns/net"))
        );
    }

    #[test]
    fn containers_and_pods_are_found_by_what_people_type() {
        use crate::facts::cgroup::{Container, Pod};
        let mut id = netns(7, 70, vec![]).id;
        id.container = Some(Container {
            runtime: "containerd".into(),
            id: "4f1c2d3e4f5a".repeat(5) + "abcd",
            pod_uid: Some("u-1".into()),
        });
        id.pod = Some(Pod {
            uid: "u-1".into(),
            namespace: Some("shop".into()),
            name: Some("cart".into()),
        });
        for yes in [
            Wanted::Container("4f1c2d"),
            Wanted::Container("containerd:4f1c"),
            Wanted::Pod("u-1"),
            Wanted::Pod("shop/cart"),
            Wanted::Pod("cart"),
        ] {
            assert!(yes.matches(&id), "{yes:?}");
        }
        for no in [
            Wanted::Container("docker:4f1c"),
            Wanted::Container(""),
            Wanted::Container("ab"),
            Wanted::Pod("other/cart"),
        ] {
            assert!(!no.matches(&id), "{no:?}");
        }
    }

    #[test]
    fn events_are_named_by_cookie_even_after_the_inode_moved_on() {
        let mut inv = Inventory {
            live: BTreeMap::from([(10, netns(10, 200, vec![Holder::Process(1)]))]),
            gone: VecDeque::from([GoneNetns {
                id: netns(10, 100, vec![]).id,
                gone_after_s: 1.0,
            }]),
            gone_earlier: 0,
            host: 1,
            own: 1,
            started: Instant::now(),
            last_scan_ns: 0,
            serials: 0,
            cookies: true,
            misses: BTreeSet::new(),
        };
        assert_eq!(inv.get(10, 200).unwrap().cookie, Some(200));
        assert_eq!(inv.get(10, 100).unwrap().cookie, Some(100), "the gone one");
        assert_eq!(
            inv.get(10, 0).unwrap().cookie,
            Some(200),
            "no cookie: by inode"
        );
        assert!(
            inv.get(10, 300).is_none(),
            "an unknown cookie is never guessed"
        );
        inv.live.clear();
        assert!(inv.get(11, 0).is_none());
    }
}
