//! The probes a check runs: drops and retransmits in one session, counts only (no event
//! stream). A probe this kernel refuses is recorded with why, not fatal: only expectations
//! that need it become untestable.
use std::collections::BTreeSet;

use super::measure::{DropCount, Measurements, Unmeasured};
use crate::{
    drops::{
        self, DropMaps,
        filter::{DropFilter, FilterArgs},
    },
    facts::{kallsyms::Kallsyms, netns::NetnsArg},
    kernel::Kernel,
    model::reasons::Source,
    retrans::{RETRANS, RetransMaps},
    session::{Component, DropUse, Request, Session, registry::Families},
};

/// The session, or why netdoc's object does not load here.
pub type Tracer = Result<Session, crate::Error>;

/// `netns`: count only drops in this namespace, and stop if it goes away.
pub fn start(kernel: Kernel, netns: Option<&NetnsArg>) -> anyhow::Result<Tracer> {
    let families = Families::discover(&kernel);
    let filter = DropFilter::parse(
        &FilterArgs {
            netns: netns.map(|n| n.inode),
            ..Default::default()
        },
        &families.drops.reasons,
    )?;
    let mut request = Request {
        watched: netns.cloned(),
        ..Request::default()
    }
    .with(Component::Retransmits);
    request.want_drops(DropUse {
        filter,
        stream: false,
        hook: None,
        per_netns: false,
        stacks: false,
    });
    Ok(Session::start(kernel, families, request).map_err(|e| {
        crate::Error::Unavailable(format!(
            "netdoc's eBPF object does not load on this kernel: {e:#}"
        ))
    }))
}

/// Why a probe (or, by prefix, a group such as `retrans` and `retrans_synack`) counted nothing.
fn failure(tracer: &Tracer, probe: &str) -> Unmeasured {
    Unmeasured(match tracer {
        Err(why) => why.to_string(),
        Ok(s) => s
            .degraded()
            .find(|p| p.probe.starts_with(probe))
            .map_or_else(|| format!("{probe} was not attached"), |p| p.failure()),
    })
}

/// Reads what the probes counted into `m`; `netns` limits retransmits to those namespaces
/// (all when empty). The session must be detached.
pub fn finish(tracer: &Tracer, netns: &BTreeSet<u32>, m: &mut Measurements) {
    let session = tracer.as_ref().ok();
    m.drops = Some(
        match session.and_then(|s| Some((s.part::<DropMaps>()?, s))) {
            None => Err(failure(tracer, drops::PROBE)),
            Some((maps, s)) => {
                let reasons = &s.families.drops.reasons;
                let kallsyms = Kallsyms::load().ok();
                m.reason_names = (reasons.source != Source::Unavailable)
                    .then(|| reasons.names().map(str::to_string).collect());
                Ok(maps
                    .counts()
                    .iter()
                    .map(|(key, per_cpu)| DropCount {
                        reason: reasons.name(key.reason),
                        location: kallsyms
                            .as_ref()
                            .map_or(format!("{:#x}", key.location), |k| k.describe(key.location)),
                        count: per_cpu.iter().sum(),
                    })
                    .collect())
            }
        },
    );
    // Retransmit counts need both probes (segments and SYN-ACKs).
    let retrans_complete = session.is_some_and(|s| {
        s.families
            .retrans
            .probes
            .iter()
            .all(|(p, _)| s.hook(p).is_some())
    });
    m.retrans = Some(match session.and_then(|s| s.part::<RetransMaps>()) {
        Some(maps) if retrans_complete => Ok(maps
            .flows()
            .iter()
            .filter(|(k, _)| netns.is_empty() || netns.contains(&k.netns))
            .fold((0, 0), |(segs, synacks), (_, s)| {
                (segs + s.segs, synacks + s.synacks)
            })),
        _ => Err(failure(tracer, RETRANS)),
    });
}
