//! The path of the packets a namespace dropped for want of a route, a neighbour or a valid
//! source: read in the namespace soon after such a drop (a namespace may be gone by the
//! report), so the doctor can name the route, the forwarding and reverse-path settings and the
//! neighbour entry behind them. Bounded: a few namespaces per tick, a few addresses each.
use std::collections::{BTreeMap, BTreeSet};

use crate::{
    doctor::NamespacePath,
    drops::report::NamedDrop,
    facts::{netns, route},
    model::reasons,
    namespaces::{Inventory, NetnsKey, NetnsRef},
};

/// Reasons whose explanation lies in the namespace's routes, settings, neighbours and RPS
/// masks; for `IP_RPFILTER` the route back to the source decides, for the others the route
/// onwards (and for `CPU_BACKLOG` the receiving device's RPS).
pub const PATH_REASONS: [&str; 9] = [
    "CPU_BACKLOG",
    "IP_RPFILTER",
    "IP_INADDRERRORS",
    "IP_INNOROUTES",
    "IP_OUTNOROUTES",
    "NEIGH_FAILED",
    "NEIGH_QUEUEFULL",
    "IPV6DISABLED",
    "IP_INVALID_SOURCE",
];

/// Namespaces one watch reads: each reading runs `ip` once per address.
const MAX_NAMESPACES: usize = 32;
/// Addresses and devices looked up per namespace.
const MAX_PER_NAMESPACE: usize = 4;
/// Readings per tick.
const PER_TICK: usize = 4;

struct Wanted {
    addrs: BTreeSet<String>,
    sources: BTreeSet<String>,
    devices: BTreeSet<String>,
    /// Something new to look up since the last reading.
    pending: bool,
    read: Option<(NetnsRef, route::PathReading)>,
}

#[derive(Default)]
pub struct PathReadings {
    namespaces: BTreeMap<NetnsKey, Wanted>,
    /// A `CPU_BACKLOG` drop came before the host's backlog settings were read.
    backlog_seen: bool,
    backlog_settings: BTreeMap<String, u64>,
}

/// The address whose route explains a drop: the source's for a reverse-path or source check,
/// else the destination's.
fn address_of(d: &NamedDrop) -> Option<&String> {
    match is_source_check(&d.reason) {
        true => d.saddr.as_ref(),
        false => d.daddr.as_ref(),
    }
}

fn is_source_check(reason: &str) -> bool {
    ["IP_RPFILTER", "IP_INVALID_SOURCE"].contains(&reason)
}

impl PathReadings {
    /// Notes a streamed drop: its namespace's path is read at the next sample.
    pub fn saw(&mut self, d: &NamedDrop) {
        if !PATH_REASONS.contains(&d.reason.as_str()) && !reasons::is_qdisc(&d.reason) {
            return;
        }
        self.backlog_seen |= d.reason == "CPU_BACKLOG" && self.backlog_settings.is_empty();
        let key = (d.netns, d.netns_cookie);
        if !self.namespaces.contains_key(&key) && self.namespaces.len() >= MAX_NAMESPACES {
            return;
        }
        let w = self.namespaces.entry(key).or_insert_with(|| Wanted {
            addrs: BTreeSet::new(),
            sources: BTreeSet::new(),
            devices: BTreeSet::new(),
            pending: false,
            read: None,
        });
        if let Some(addr) = address_of(d)
            && w.addrs.len() < MAX_PER_NAMESPACE
        {
            w.pending |= w.addrs.insert(addr.clone());
            if is_source_check(&d.reason) {
                w.sources.insert(addr.clone());
            }
        }
        if let Some(dev) = &d.dev
            && w.devices.len() < MAX_PER_NAMESPACE
        {
            w.pending |= w.devices.insert(dev.clone());
        }
    }

    /// Reads a few namespaces with something new to look up.
    pub fn sample(&mut self, inventory: &Inventory) {
        if std::mem::take(&mut self.backlog_seen) {
            self.backlog_settings = crate::facts::host::backlog_settings();
        }
        let mut files = Vec::new();
        for (key, w) in self.namespaces.iter().filter(|(_, w)| w.pending) {
            if files.len() >= PER_TICK {
                break;
            }
            let live = inventory
                .all()
                .find(|n| n.id.inode == key.0 && (key.1.is_none() || n.id.cookie == key.1));
            if let Some((id, file)) = live.and_then(|n| Some((n.id.clone(), n.file()?))) {
                let addrs: Vec<String> = w.addrs.iter().cloned().collect();
                let devices: Vec<String> = w.devices.iter().cloned().collect();
                files.push(((*key, id, addrs, devices), file));
            }
        }
        let readings = netns::visit(files, |(_, _, addrs, devices)| {
            route::read_here(addrs, devices)
        });
        for ((key, id, ..), reading) in readings {
            if let (Some(reading), Some(w)) = (reading, self.namespaces.get_mut(&key)) {
                w.pending = false;
                w.read = Some((id, reading));
            }
        }
    }

    /// The host's backlog settings soon after the first `CPU_BACKLOG` drop; empty without one.
    pub fn backlog_settings(&self) -> BTreeMap<String, u64> {
        self.backlog_settings.clone()
    }

    /// Each namespace's path, as read.
    pub fn report(&self) -> Vec<NamespacePath> {
        self.namespaces
            .values()
            .filter_map(|w| Some((w, w.read.as_ref()?)))
            .map(|(w, (netns, reading))| NamespacePath {
                netns: netns.clone(),
                sources: w.sources.iter().cloned().collect(),
                reading: reading.clone(),
            })
            .collect()
    }
}
