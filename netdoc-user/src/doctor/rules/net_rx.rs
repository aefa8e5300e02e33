//! NET_RX concentrated on one CPU, and where its load comes from (the softirq family's own
//! correlation, which tells a NIC queue's NAPI from backlog processing), over the busiest
//! stretch of the run.
use crate::{
    doctor::Snapshot,
    model::finding::{Evidence, Finding},
    softirq::correlate,
};

pub fn concentration(s: &Snapshot) -> Vec<Finding> {
    let Some(n) = &s.net_rx else {
        return Vec::new();
    };
    let mut found = correlate::findings(&n.cpus, &n.nic_map);
    for f in &mut found {
        f.evidence.push(Evidence::new(
            format!(
                "measured over seconds {:.0} to {:.0} of the {:.0} s run, its busiest stretch",
                n.from_s, n.to_s, s.duration_s
            ),
            "softirq_entry/softirq_exit, sampled",
        ));
    }
    found
}
