//! Naming what the kernel hands over as numbers: reasons, code addresses, namespaces, devices.
use std::collections::HashMap;

use super::{
    cause::{self, Cause, Coverage, DropFacts, NFTABLES},
    reasons::DropReasons,
};
use crate::{
    facts::{kallsyms::Kallsyms, netns},
    namespaces::NetnsRef,
    session::Namespaces,
};

/// Resolves what the kernel gives as numbers: reasons, code addresses, namespaces, devices.
pub trait Namer {
    fn reasons(&self) -> &DropReasons;
    /// What the conntrack stage sentinels let us tell apart on this run (a stage mark carries
    /// its namespace: a drop where no sentinel sits, or not yet, is simply unseen).
    fn coverage(&self) -> Coverage;
    /// Whether the softirq probe ran, so a drop's NET_RX context is known.
    fn net_rx_known(&self) -> bool;
    fn location(&mut self, addr: u64) -> String;
    /// The namespace of an event at `ts_ns`: its inode and, where the kernel has one, its cookie.
    fn netns(&mut self, inode: u32, cookie: u64, ts_ns: u64) -> Option<NetnsRef>;
    fn device(&mut self, inode: u32, cookie: u64, ifindex: u32) -> Option<String>;
    /// Whether the code at `addr` lies in nftables' rule evaluation.
    fn freed_by_nftables(&mut self, addr: u64) -> bool;

    /// The cause of a drop, when it is a `NETFILTER_DROP`.
    fn cause(&mut self, reason: u32, location: u64, nf_stage: u8) -> Option<Cause> {
        // Only NETFILTER_DROPs have a cause: other drops skip the lookups below.
        if self.reasons().code("NETFILTER_DROP") != Some(reason) {
            return None;
        }
        let facts = DropFacts {
            netfilter_drop: true,
            freed_by_nftables: self.freed_by_nftables(location),
            nf_stage,
        };
        cause::classify(facts, self.coverage())
    }
}

/// Names from the running system: /proc/kallsyms, the host's namespaces, the devices in each.
pub struct LiveNamer {
    net_rx_known: bool,
    coverage: Coverage,
    reasons: DropReasons,
    namespaces: Namespaces,
    /// Device names by namespace serial and ifindex.
    devices: HashMap<(u64, u32), Option<String>>,
    locations: HashMap<u64, String>,
}

impl LiveNamer {
    pub fn new(
        reasons: DropReasons,
        net_rx_known: bool,
        coverage: Coverage,
        namespaces: Namespaces,
    ) -> Self {
        Self {
            net_rx_known,
            coverage,
            reasons,
            namespaces,
            devices: HashMap::new(),
            locations: HashMap::new(),
        }
    }
}

impl Namer for LiveNamer {
    fn reasons(&self) -> &DropReasons {
        &self.reasons
    }
    fn net_rx_known(&self) -> bool {
        self.net_rx_known
    }
    fn coverage(&self) -> Coverage {
        self.coverage
    }
    fn location(&mut self, addr: u64) -> String {
        self.locations
            .entry(addr)
            .or_insert_with(|| {
                Kallsyms::shared().map_or(format!("{addr:#x}"), |k| k.describe(addr))
            })
            .clone()
    }
    fn netns(&mut self, inode: u32, cookie: u64, ts_ns: u64) -> Option<NetnsRef> {
        self.namespaces.resolve(inode, cookie, ts_ns)
    }
    fn device(&mut self, inode: u32, cookie: u64, ifindex: u32) -> Option<String> {
        if ifindex == 0 {
            return None;
        }
        let inventory = self.namespaces.lock();
        // Keyed by the namespace's serial: an inode (and, before 5.14, all there is) is reused.
        let (serial, file) = if inode == 0 || inventory.is_own(inode) {
            (0, None)
        } else {
            let ns = inventory
                .live(inode)
                .filter(|n| cookie == 0 || n.id.cookie.is_none_or(|c| c == cookie))?;
            (ns.serial, Some(ns.file()?))
        };
        drop(inventory);
        if let Some(known) = self.devices.get(&(serial, ifindex)) {
            return known.clone();
        }
        let name = match file {
            None => netns::index_to_name(ifindex),
            Some(file) => netns::in_namespace(&file, move || netns::index_to_name(ifindex)),
        };
        self.devices.insert((serial, ifindex), name.clone());
        name
    }
    fn freed_by_nftables(&mut self, addr: u64) -> bool {
        Kallsyms::shared()
            .and_then(|k| k.function(addr))
            .is_some_and(|f| f == NFTABLES)
    }
}
