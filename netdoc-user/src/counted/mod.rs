//! Drops the kernel counts but never frees through `kfree_skb`: a SYN refused at a full listen
//! queue is freed with `consume_skb`, a datagram refused by a full receive buffer may be counted
//! only. Per namespace, these counters' growth over the run, and the sockets they belong to
//! where sock_diag can tell (listeners and their queues, UDP sockets and their drops), each
//! with the process that holds it. And the neighbour tables, whose overflows refuse entries
//! (`neighbours`).
pub mod neighbours;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    facts::{
        netns,
        snmp::{self, Counters},
        sockdiag::{self, DiagSocket},
    },
    namespaces::{
        Inventory, NetnsKey, NetnsRef,
        turns::{Activity, Turns},
    },
};

/// Which sockets explain a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Explains {
    Listeners,
    UdpSockets,
    Nothing,
}

/// The counters that count dropped packets, what each means, and which sockets explain it.
const COUNTERS: [(&str, &str, Explains); 12] = [
    (
        "TcpExt.ListenOverflows",
        "accept queue full when a handshake completed",
        Explains::Listeners,
    ),
    (
        "TcpExt.ListenDrops",
        "SYN or handshake ACK dropped at a listener",
        Explains::Listeners,
    ),
    (
        "TcpExt.TCPReqQFullDrop",
        "SYN dropped: SYN queue full and no syncookies",
        Explains::Listeners,
    ),
    (
        "TcpExt.TCPBacklogDrop",
        "segment dropped: socket backlog full",
        Explains::Nothing,
    ),
    (
        "TcpExt.TCPRcvQDrop",
        "segment dropped: receive buffer full",
        Explains::Nothing,
    ),
    (
        "TcpExt.TCPZeroWindowDrop",
        "segment dropped: zero receive window",
        Explains::Nothing,
    ),
    (
        "TcpExt.PFMemallocDrop",
        "segment dropped: memory pressure (pfmemalloc)",
        Explains::Nothing,
    ),
    (
        "TcpExt.TCPMinTTLDrop",
        "segment dropped: below IP_MINTTL",
        Explains::Nothing,
    ),
    (
        "Udp.RcvbufErrors",
        "datagram dropped: receive buffer full",
        Explains::UdpSockets,
    ),
    (
        "Udp.SndbufErrors",
        "datagram not sent: send buffer full",
        Explains::Nothing,
    ),
    (
        "Udp6.RcvbufErrors",
        "datagram dropped: receive buffer full (IPv6)",
        Explains::UdpSockets,
    ),
    (
        "Udp6.SndbufErrors",
        "datagram not sent: send buffer full (IPv6)",
        Explains::Nothing,
    ),
];

/// What the doctor reads beside the drop counters: the counters that tell look-alikes apart
/// (a closed port from a firewall, a SYN-time overflow from an ACK-time one, send-side loss),
/// and the settings its fixes name. Read in each namespace, like the drop counters.
pub struct Context {
    pub counters: &'static [&'static str],
    /// Sysctls under `/proc/sys`, read inside each namespace (net sysctls are per namespace).
    pub settings: &'static [&'static str],
}

/// Only the drop counters (`netdoc drops`).
pub const DROPS_ONLY: Context = Context {
    counters: &[],
    settings: &[],
};

/// The names of the counters that count dropped packets.
pub fn drop_counters() -> impl Iterator<Item = &'static str> {
    COUNTERS.iter().map(|(name, ..)| *name)
}

/// What a counter means, for renderers.
pub fn meaning(counter: &str) -> &'static str {
    COUNTERS
        .iter()
        .find(|(name, ..)| *name == counter)
        .map_or("", |(_, m, _)| m)
}

/// At most this many sockets of a kind are kept per namespace: the fullest.
const SOCKETS: usize = 10;

/// A socket and the process that holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedSocket {
    #[serde(flatten)]
    pub socket: DiagSocket,
    pub pid: Option<u32>,
    pub comm: Option<String>,
}

/// One namespace's counted drops in a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceCounted {
    pub netns: NetnsRef,
    /// Growth of each drop counter (and context counter, for the doctor) over the run: those
    /// that grew.
    pub counters: BTreeMap<String, u64>,
    /// The settings the doctor reads (`net.core.somaxconn`, ...), at the last reading.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, u64>,
    /// Listeners when a listener counter last grew, fullest first: `queue` is the accept
    /// queue, `limit` the backlog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<OwnedSocket>,
    /// UDP sockets that had dropped datagrams when a receive-buffer counter last grew.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub udp_sockets: Vec<OwnedSocket>,
    /// Why sock_diag could not list the sockets, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets_unavailable: Option<String>,
    /// It went away during the run: the last reading.
    pub gone: bool,
}

struct Followed {
    id: NetnsRef,
    first: Counters,
    last: Counters,
    settings: Counters,
    listeners: Vec<DiagSocket>,
    udp: Vec<DiagSocket>,
    /// The process holding each socket, looked for when the socket was first read: a process
    /// that overflows a queue and exits (or is restarted) before the summary is still named.
    /// None: no process held it then.
    owners: BTreeMap<u32, Option<Owner>>,
    sockets_unavailable: Option<String>,
    gone: bool,
}

/// A socket's process: pid and comm.
type Owner = (u32, String);

/// A new reading of a namespace's sockets, with those of the last one that have gone since (closed,
/// or their process exited or restarted): their last reading is what explained the growth then,
/// and a reading after they went must not lose it.
fn with_gone(mut now: Vec<DiagSocket>, before: &[DiagSocket]) -> Vec<DiagSocket> {
    let gone: Vec<DiagSocket> = before
        .iter()
        .filter(|b| !now.iter().any(|n| n.inode == b.inode))
        .cloned()
        .collect();
    now.extend(gone);
    now
}

/// The drop counters of every namespace (or only `--netns`), followed over a run. A namespace
/// there at the start counts from its reading then; one found later from zero (a new namespace's
/// counters start at zero); one that goes away keeps its last reading.
pub struct PerNamespace {
    followed: BTreeMap<NetnsKey, Followed>,
    only: Option<u32>,
    context: &'static Context,
    turns: Turns,
}

/// The drop counters and the context counters of one reading, and the settings.
fn read_here(context: &Context) -> (Counters, Counters) {
    let wanted: Vec<&str> = drop_counters()
        .chain(context.counters.iter().copied())
        .collect();
    let counters = snmp::read_named(&wanted);
    let settings = context
        .settings
        .iter()
        .filter_map(|name| {
            let path = format!("/proc/sys/{}", name.replace('.', "/"));
            let value = crate::facts::read_text(path).ok()?;
            // A multi-value setting would keep its first number.
            Some((
                name.to_string(),
                value.split_whitespace().next()?.parse().ok()?,
            ))
        })
        .collect();
    (counters, settings)
}

impl PerNamespace {
    pub fn start(namespaces: &Inventory, only: Option<u32>, context: &'static Context) -> Self {
        let mut p = Self {
            followed: BTreeMap::new(),
            only,
            context,
            turns: Turns::default(),
        };
        p.read(namespaces, true, None);
        p
    }

    /// The next window, begun at the last reading (which read every namespace): each namespace
    /// goes on from its last reading, and one first read later starts from zero. Not from a
    /// reading of its own, which would hide in its baseline what a namespace made late in the
    /// last window counted before it was first read.
    pub fn next_window(&self) -> Self {
        let followed = self
            .followed
            .iter()
            .filter(|(_, f)| !f.gone)
            .map(|(key, f)| {
                let next = Followed {
                    id: f.id.clone(),
                    first: f.last.clone(),
                    last: f.last.clone(),
                    settings: f.settings.clone(),
                    listeners: Vec::new(),
                    udp: Vec::new(),
                    owners: f.owners.clone(),
                    sockets_unavailable: None,
                    gone: false,
                };
                (*key, next)
            })
            .collect();
        Self {
            followed,
            only: self.only,
            context: self.context,
            turns: Turns::default(),
        }
    }

    /// Reads the namespaces with `active` drops or retransmits, and a few others in turn.
    pub fn sample(&mut self, namespaces: &Inventory, active: &Activity) {
        let only = self.only;
        let candidates = namespaces
            .all()
            .map(|n| n.id.inode)
            .filter(|inode| only.is_none_or(|o| o == *inode));
        let picked = self.turns.pick(candidates, active);
        self.read(namespaces, false, Some(&picked));
    }

    /// Reads every namespace: for a summary.
    pub fn sample_all(&mut self, namespaces: &Inventory) {
        self.read(namespaces, false, None);
    }

    /// Reads the namespaces `picked` (inodes), or all.
    fn read(&mut self, namespaces: &Inventory, initial: bool, picked: Option<&Activity>) {
        let wanted: Vec<(NetnsRef, std::path::PathBuf)> = namespaces
            .all()
            .filter(|n| self.only.is_none_or(|o| o == n.id.inode))
            .filter_map(|n| Some((n.id.clone(), n.file()?)))
            .collect();
        let files: BTreeMap<NetnsKey, std::path::PathBuf> = wanted
            .iter()
            .map(|(id, f)| ((id.inode, id.cookie), f.clone()))
            .collect();
        let wanted = wanted
            .into_iter()
            .filter(|(id, _)| picked.is_none_or(|p| p.contains(&id.inode)))
            .collect();
        let context = self.context;
        let readings = netns::visit(wanted, move |_| read_here(context));
        let mut explain: Vec<((NetnsKey, Explains), std::path::PathBuf)> = Vec::new();
        let mut grown = Vec::new();
        for (id, reading) in readings {
            let Some((now, settings)) = reading else {
                continue;
            };
            let key = (id.inode, id.cookie);
            let f = self.followed.entry(key).or_insert_with(|| Followed {
                id,
                first: if initial {
                    now.clone()
                } else {
                    Counters::new()
                },
                last: Counters::new(),
                settings: Counters::new(),
                listeners: Vec::new(),
                udp: Vec::new(),
                owners: BTreeMap::new(),
                sockets_unavailable: None,
                gone: false,
            });
            let before = |name: &str| f.last.get(name).or(f.first.get(name)).copied().unwrap_or(0);
            let grew = |name: &str| now.get(name).is_some_and(|v| *v > before(name));
            if !initial && COUNTERS.iter().any(|(name, ..)| grew(name)) {
                grown.push(key.0);
            }
            for (name, _, explains) in COUNTERS.iter().filter(|c| c.2 != Explains::Nothing) {
                if grew(name)
                    && !initial
                    && !explain.iter().any(|((k, e), _)| *k == key && e == explains)
                {
                    explain.push(((key, *explains), files[&key].clone()));
                }
            }
            f.last = now;
            f.settings = settings;
        }
        for inode in grown {
            self.turns.grew(inode);
        }
        for ((key, explains), sockets) in netns::visit(explain, |(_, explains)| match explains {
            Explains::Listeners => sockdiag::tcp_listeners_waiting(),
            _ => sockdiag::udp_sockets(),
        }) {
            let Some(f) = self.followed.get_mut(&key) else {
                continue;
            };
            let mut sockets = match sockets {
                Some(Ok(sockets)) => sockets,
                Some(Err(e)) => {
                    f.sockets_unavailable = Some(format!("sock_diag: {e}"));
                    continue;
                }
                None => continue,
            };
            match explains {
                Explains::Listeners => {
                    let mut sockets = with_gone(sockets, &f.listeners);
                    // Fullest first: the queue against its limit.
                    sockets.sort_by_key(|s| {
                        std::cmp::Reverse((s.queue as u64 * 1000) / s.limit.max(1) as u64)
                    });
                    sockets.truncate(SOCKETS);
                    f.listeners = sockets;
                }
                _ => {
                    sockets.retain(|s| s.drops.is_some_and(|d| d > 0));
                    let mut sockets = with_gone(sockets, &f.udp);
                    sockets.sort_by_key(|s| std::cmp::Reverse(s.drops));
                    sockets.truncate(SOCKETS);
                    f.udp = sockets;
                }
            }
        }
        self.find_new_owners();
        for (key, f) in &mut self.followed {
            f.gone = !files.contains_key(key);
        }
    }

    /// Looks once for the processes of sockets read for the first time, in one pass over the
    /// processes' fd tables for all namespaces; forgets those of sockets no longer listed.
    fn find_new_owners(&mut self) {
        for f in self.followed.values_mut() {
            let listed: Vec<u32> = f.listeners.iter().chain(&f.udp).map(|s| s.inode).collect();
            f.owners.retain(|inode, _| listed.contains(inode));
        }
        let new: Vec<u32> = self
            .followed
            .values()
            .flat_map(|f| {
                f.listeners
                    .iter()
                    .chain(&f.udp)
                    .map(|s| s.inode)
                    .filter(|inode| !f.owners.contains_key(inode))
            })
            .collect();
        if new.is_empty() {
            return;
        }
        let found = sockdiag::owners(&new);
        for f in self.followed.values_mut() {
            for s in f.listeners.iter().chain(&f.udp) {
                f.owners
                    .entry(s.inode)
                    .or_insert_with(|| found.get(&s.inode).cloned());
            }
        }
    }

    /// Each namespace whose drop counters grew, with the sockets behind them and the owners
    /// found when they were first read; `owners` looks again for those none held then (which
    /// reads every process's fd table: for summaries, not live views).
    pub fn report(&self, owners: bool) -> Vec<NamespaceCounted> {
        let grown: Vec<(&Followed, Counters)> = self
            .followed
            .values()
            .map(|f| {
                let growth: Counters = snmp::deltas(&f.first, &f.last)
                    .into_iter()
                    .filter(|(_, v)| *v > 0)
                    .collect();
                (f, growth)
            })
            .filter(|(_, g)| !g.is_empty())
            .collect();
        let unowned: Vec<u32> = grown
            .iter()
            .flat_map(|(f, _)| {
                f.listeners
                    .iter()
                    .chain(&f.udp)
                    .map(|s| s.inode)
                    .filter(|inode| f.owners.get(inode).is_none_or(Option::is_none))
            })
            .collect();
        let found_now = match owners {
            true => sockdiag::owners(&unowned),
            false => BTreeMap::new(),
        };
        let own = |f: &Followed, sockets: &[DiagSocket]| -> Vec<OwnedSocket> {
            sockets
                .iter()
                .map(|s| {
                    let owner = f
                        .owners
                        .get(&s.inode)
                        .and_then(Option::as_ref)
                        .or_else(|| found_now.get(&s.inode));
                    OwnedSocket {
                        socket: s.clone(),
                        pid: owner.map(|o| o.0),
                        comm: owner.map(|o| o.1.clone()),
                    }
                })
                .collect()
        };
        let mut out: Vec<NamespaceCounted> = grown
            .into_iter()
            .map(|(f, counters)| NamespaceCounted {
                netns: f.id.clone(),
                listeners: own(f, &f.listeners),
                udp_sockets: own(f, &f.udp),
                settings: f.settings.clone(),
                sockets_unavailable: f.sockets_unavailable.clone(),
                counters,
                gone: f.gone,
            })
            .collect();
        out.sort_by_key(|n| std::cmp::Reverse(n.counters.values().sum::<u64>()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(inode: u32, queue: u32) -> DiagSocket {
        DiagSocket {
            local: "10.0.0.2:8080".parse().unwrap(),
            queue,
            limit: 1,
            inode,
            drops: None,
            rcvbuf: None,
            accept_wait: None,
        }
    }

    #[test]
    fn a_socket_gone_since_the_last_reading_keeps_its_last_reading() {
        let before = [socket(7, 2), socket(8, 0)];
        // 7 closed (its server exited); 8 is read anew; 9 is new.
        let now = with_gone(vec![socket(8, 1), socket(9, 0)], &before);
        assert_eq!(now, [socket(8, 1), socket(9, 0), socket(7, 2)]);
        assert_eq!(with_gone(Vec::new(), &[]), []);
    }
}
