//! The one registry of probe families: a new family is one more field here, discovered in
//! [`Families::discover`] and placed in [`Families::listed`] and [`Families::in_start_order`],
//! with the components it offers.
use anyhow::Result;
use netdoc_common::EmitConfig;

use super::Request;
use crate::{
    conntrack::confirm::ConfirmKernel, drops::DropKernel, family::Family, kernel::Kernel,
    loader::ObjectSettings, retrans::RetransKernel, sentinel::StageSentinels,
    softirq::SoftirqKernel,
};

/// What a command can ask a session for: the components the families offer (a family may
/// offer several, and several commands may want one; each is attached once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Component {
    /// `softirq_entry`/`softirq_exit` marking whether each CPU is inside NET_RX: the context
    /// of every drop.
    NetRxContext,
    /// The same two hooks also counting and timing every softirq (the heatmap's run time).
    SoftirqTime,
    /// `irq_handler_entry` and `napi_poll`: which CPU serves which queue.
    QueueLoad,
    /// The conntrack stage sentinels (netfilter links) that name `NETFILTER_DROP` causes.
    StageSentinels,
    /// The `kfree_skb` program.
    Drops,
    /// `tcp_retransmit_skb` and `tcp_retransmit_synack`.
    Retransmits,
    /// The function hook on `__nf_conntrack_confirm`.
    ConntrackConfirm,
}

/// Every probe family, discovered once per run from the same kernel facts.
pub struct Families {
    pub confirm: ConfirmKernel,
    pub softirq: SoftirqKernel,
    pub stages: StageSentinels,
    pub drops: DropKernel,
    pub retrans: RetransKernel,
}

impl Families {
    pub fn discover(kernel: &Kernel) -> Self {
        let drops = DropKernel::discover(kernel);
        Self {
            confirm: ConfirmKernel::discover(kernel),
            softirq: SoftirqKernel::discover(kernel),
            stages: StageSentinels::discover(kernel, &drops.reasons),
            drops,
            retrans: RetransKernel::discover(kernel),
        }
    }

    /// Every family, as `netdoc probes` lists them: the drop program first.
    pub fn listed(&self) -> [&dyn Family; 5] {
        [
            &self.drops,
            &self.softirq,
            &self.retrans,
            &self.confirm,
            &self.stages,
        ]
    }

    /// Every family, in the order a session starts them: the conntrack confirm hook first (the
    /// drop program and the sentinels stand in for it only where it did not attach), then the
    /// NET_RX context hooks and the stage sentinels, before the drop program (so that every
    /// drop knows its context and its stage).
    pub fn in_start_order(&self) -> [&dyn Family; 5] {
        [
            &self.confirm,
            &self.softirq,
            &self.stages,
            &self.drops,
            &self.retrans,
        ]
    }

    /// What every family sets in the object for `request`, and the budget every stream shares.
    pub fn object(&self, request: &Request) -> Result<ObjectSettings> {
        let mut object = ObjectSettings::default();
        object.global(
            "EMIT_CONFIG",
            &EmitConfig {
                max_per_sec: request.max_events_per_sec,
            },
        );
        for family in self.listed() {
            family.prepare(request, &mut object)?;
        }
        Ok(object)
    }
}
