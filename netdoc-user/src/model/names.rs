//! Naming what the kernel hands over as numbers: reasons, code addresses, namespaces, devices.
use std::collections::HashMap;

use super::{
    cause::{self, Cause, Coverage, DropFacts, NFTABLES},
    reasons::DropReasons,
};
use crate::facts::{kallsyms::Kallsyms, netns::NetnsNames};

/// Resolves what the kernel gives as numbers: reasons, code addresses, namespaces, devices.
pub trait Namer {
    fn reasons(&self) -> &DropReasons;
    /// What the conntrack stage sentinels let us tell apart on this run.
    fn coverage(&self) -> Coverage;
    /// Whether the softirq probe ran, so a drop's NET_RX context is known.
    fn net_rx_known(&self) -> bool;
    fn location(&mut self, addr: u64) -> String;
    fn netns_name(&mut self, ino: u32) -> Option<String>;
    fn device(&mut self, netns: u32, ifindex: u32) -> Option<String>;
    /// Whether the code at `addr` lies in nftables' rule evaluation.
    fn freed_by_nftables(&mut self, addr: u64) -> bool;

    /// The cause of a drop, when it is a `NETFILTER_DROP`.
    fn cause(&mut self, reason: u32, location: u64, nf_stage: u8) -> Option<Cause> {
        let netfilter_drop = self.reasons().code("NETFILTER_DROP") == Some(reason);
        let facts = DropFacts {
            netfilter_drop,
            freed_by_nftables: netfilter_drop && self.freed_by_nftables(location),
            nf_stage,
        };
        cause::classify(facts, self.coverage())
    }
}

/// Names from the running system: /proc/kallsyms, /run/netns, the devices in each namespace.
pub struct LiveNamer {
    net_rx_known: bool,
    coverage: Coverage,
    reasons: DropReasons,
    kallsyms: Option<Kallsyms>,
    netns: NetnsNames,
    locations: HashMap<u64, String>,
}

impl LiveNamer {
    pub fn new(reasons: DropReasons, net_rx_known: bool, coverage: Coverage) -> Self {
        Self {
            net_rx_known,
            coverage,
            reasons,
            kallsyms: Kallsyms::load().ok(),
            netns: NetnsNames::new(),
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
        let k = &self.kallsyms;
        self.locations
            .entry(addr)
            .or_insert_with(|| {
                k.as_ref()
                    .map_or(format!("{addr:#x}"), |k| k.describe(addr))
            })
            .clone()
    }
    fn netns_name(&mut self, ino: u32) -> Option<String> {
        self.netns.name(ino)
    }
    fn device(&mut self, netns: u32, ifindex: u32) -> Option<String> {
        self.netns.device(netns, ifindex)
    }
    fn freed_by_nftables(&mut self, addr: u64) -> bool {
        self.kallsyms
            .as_ref()
            .and_then(|k| k.function(addr))
            .is_some_and(|f| f == NFTABLES)
    }
}
