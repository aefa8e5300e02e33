//! NET_RX concentrated on one CPU, and where its load comes from (the softirq family's own
//! correlation, which tells a NIC queue's NAPI from backlog processing).
use crate::{doctor::Snapshot, model::finding::Finding, softirq::correlate};

pub fn concentration(s: &Snapshot) -> Vec<Finding> {
    s.net_rx
        .as_ref()
        .map_or_else(Vec::new, |n| correlate::findings(&n.cpus, &n.nic_map))
}
