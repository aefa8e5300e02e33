//! One probe session: netdoc's eBPF object loaded once with every family's config, each
//! kernel-side component attached once however many commands or families want it, the maps
//! taken out so they outlive the links, and every event stream feeding one channel. Dropping
//! the session (or [`Session::detach`]) releases every link.
pub mod live;
pub mod registry;
pub mod stream;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, util::online_cpus};
use netdoc_common::{
    DropEvent, REASON_UNAVAILABLE, conntrack::InsertFailEvent, retrans::RetransEvent,
};

use crate::family::Family as _;
use crate::{
    Error,
    conntrack::confirm::{self, ConfirmMaps},
    drops::{self, DropMaps, filter::DropFilter},
    facts::{
        kallsyms::Kallsyms,
        netns::{self, NetnsArg},
    },
    kernel::Kernel,
    loader,
    model::cause::Coverage,
    namespaces::{GoneNetns, Inventory, NetnsRef},
    planner::{self, ProbePlan, ProbeStatus},
    retrans::{RETRANS, RetransMaps},
    sentinel::{self, Sentinels},
    softirq::{self, SoftirqMaps},
};
use registry::Families;
use stream::{ReaderTotals, StreamKind, Streams};

/// Why a component is absent when no command asked for it.
fn not_requested() -> Error {
    Error::Input("not requested".into())
}

/// A kernel-side component the session attaches at most once.
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

/// How a command wants the drop program.
#[derive(Debug, Clone, Default)]
pub struct DropUse {
    pub filter: DropFilter,
    /// Emit a record per drop (else count only).
    pub stream: bool,
    /// Restrict the planner to one hook type.
    pub hook: Option<planner::HookKind>,
    /// Count each namespace apart in the kernel (the exporter's drops per namespace).
    pub per_netns: bool,
    /// Each streamed record carries its kernel stack (`--stack`).
    pub stacks: bool,
}

/// Records each CPU streams per second and stream unless told otherwise: about what one reader
/// decodes and names per second, so a drop storm on a few CPUs is summarized exactly instead of
/// burying the reader (and the terminal) under records it could not keep up with.
pub const DEFAULT_MAX_EVENTS_PER_SEC: u64 = 20_000;

/// What the commands of one session want attached.
#[derive(Debug, Clone)]
pub struct Request {
    pub drops: Option<DropUse>,
    pub components: Vec<Component>,
    /// Where stage sentinels go besides netdoc's own namespace, or why none are wanted.
    pub sentinels: Result<sentinel::Scope, Error>,
    /// Whether the retransmit probes stream records.
    pub retrans_stream: bool,
    /// Ring buffer pages per CPU for each stream.
    pub pages: usize,
    /// Records each CPU may stream per second and stream (0: no limit).
    pub max_events_per_sec: u64,
    /// The namespace the command is about (`--netns`): when it goes away, its sentinel links
    /// are closed (they would keep it alive) and the run ends.
    pub watched: Option<NetnsArg>,
    /// The drop program and the stage sentinels stand in for the conntrack confirm hook: they
    /// attach only where it did not.
    pub stand_in_for_confirm: bool,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            drops: None,
            components: Vec::new(),
            sentinels: Err(not_requested()),
            retrans_stream: false,
            pages: 64,
            max_events_per_sec: DEFAULT_MAX_EVENTS_PER_SEC,
            watched: None,
            stand_in_for_confirm: false,
        }
    }
}

impl Request {
    pub fn with(mut self, c: Component) -> Self {
        self.want(c);
        self
    }

    pub fn want(&mut self, c: Component) {
        if !self.components.contains(&c) {
            self.components.push(c);
        }
    }

    /// Asks for the drop program; a second use widens the first (either streams, fewer filters).
    pub fn want_drops(&mut self, usage: DropUse) {
        self.want(Component::Drops);
        self.drops = Some(match self.drops.take() {
            None => usage,
            Some(had) => DropUse {
                filter: if had.filter == usage.filter {
                    had.filter
                } else {
                    DropFilter::default()
                },
                stream: had.stream || usage.stream,
                hook: had.hook.filter(|h| usage.hook == Some(*h)),
                per_netns: had.per_netns || usage.per_netns,
                stacks: had.stacks || usage.stacks,
            },
        });
    }

    fn wants(&self, c: Component) -> bool {
        self.components.contains(&c)
    }
}

/// Whether the stage sentinels run, and what they let the drop program tell apart.
pub struct Stages {
    pub coverage: Coverage,
    /// `Ok(where they sit)` or why there are none.
    pub status: Result<String, Error>,
}

pub struct Session {
    pub families: Families,
    /// `None` once detached.
    ebpf: Option<Ebpf>,
    sentinels: Option<Sentinels>,
    pub plans: Vec<ProbePlan>,
    /// Each component's maps, present when its probe attached.
    pub drops: Option<DropMaps>,
    pub softirq: Option<SoftirqMaps>,
    pub retrans: Option<RetransMaps>,
    pub confirm: Option<ConfirmMaps>,
    pub stages: Stages,
    /// Whether drops know their NET_RX context (both softirq hooks attached).
    pub net_rx_known: bool,
    streams: Option<Streams>,
    /// Each stream's decoding and loss totals, once the streams have stopped.
    pub stream_totals: BTreeMap<StreamKind, ReaderTotals>,
    pub cpus: Vec<u32>,
    /// Each CPU's budget of streamed records per second and stream (0: none).
    pub max_events_per_sec: u64,
    pub started: Instant,
    watched: Option<NetnsArg>,
    namespaces: Namespaces,
}

/// The host's namespaces, shared by the session (which follows them) and the namers of the
/// views (which name events by them).
#[derive(Clone)]
pub struct Namespaces(Arc<Mutex<Inventory>>);

impl Namespaces {
    pub fn discover() -> Self {
        Self(Arc::new(Mutex::new(Inventory::discover())))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inventory> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The namespace an event at `ts_ns` names (see [`Inventory::resolve`]).
    pub fn resolve(&self, inode: u32, cookie: u64, ts_ns: u64) -> Option<NetnsRef> {
        self.lock().resolve(inode, cookie, ts_ns)
    }
}

/// Places and releases sentinels as the namespaces are now, and tells the inventory where they
/// sit (causes are told apart only there).
fn follow_sentinels(s: &mut Sentinels, inventory: &mut Inventory, announce: bool) -> Vec<String> {
    let said = s.follow(inventory, announce);
    inventory.set_sentinels(s.namespaces(inventory.own()));
    said
}

impl Session {
    /// Loads the object and attaches what `request` asks for, each component once. A
    /// component that attaches nowhere is recorded in `plans` (the commands decide whether
    /// they can go on without it).
    pub fn start(mut kernel: Kernel, families: Families, request: Request) -> Result<Self> {
        let mut configs = families.configs();
        let netfilter_drop = match &request.sentinels {
            Ok(_) if request.wants(Component::StageSentinels) => {
                sentinel::wanted(&families.drops.reasons)
            }
            _ => None,
        };
        if let Some(usage) = &request.drops {
            usage.filter.apply(&mut configs.drops);
            if configs.drops.filters & netdoc_common::filter::NEEDS_PACKET != 0
                && configs.drops.skb.skb_head == netdoc_common::NO_OFFSET
            {
                bail!(
                    "--netns/--proto/--port/--addr need kernel BTF to decode packets ({})",
                    kernel
                        .btf_unreadable
                        .as_deref()
                        .unwrap_or("it has no sk_buff")
                );
            }
            configs.drops.stream = usage.stream as u32;
            configs.drops.per_netns = usage.per_netns as u32;
            configs.drops.stacks = (usage.stream && usage.stacks) as u32;
            configs.drops.netfilter_drop = netfilter_drop.unwrap_or(REASON_UNAVAILABLE);
        }
        // Drop context alone needs no clock: the hooks run on every softirq of every CPU.
        configs.softirq.timing = request.wants(Component::SoftirqTime) as u32;
        let softirq_hooks =
            request.wants(Component::NetRxContext) || request.wants(Component::SoftirqTime);
        configs.drops.net_rx_context = softirq_hooks as u32;
        configs.retrans.stream = request.retrans_stream as u32;
        configs.emit.max_per_sec = request.max_events_per_sec;
        let namespaces = Namespaces::discover();
        kernel.release_btf();
        let mut ebpf = loader::load(&configs)?;
        let mut streams = Streams::new();
        let take_stream = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name).with_context(|| format!("{name} map"))
        };

        let loader_btf = kernel.loader_btf();
        let btf = loader_btf.as_ref();
        let mut plans = Vec::new();
        let mut attach = |ebpf: &mut Ebpf, probe: &'static str, candidates| {
            let plan = planner::attach_best(ebpf, probe, candidates, btf);
            let ok = plan.chosen().is_some();
            plans.push(plan);
            ok
        };

        // Maps first, and buffers open before any program attaches, so no record arrives with
        // nowhere to go (the reader starts once they are all open; until then they wait).
        let confirm_maps = match request.wants(Component::ConntrackConfirm) {
            true => {
                streams.open::<InsertFailEvent>(
                    take_stream(&mut ebpf, "CONFIRM_EVENTS")?,
                    request.pages,
                )?;
                Some(ConfirmMaps::take(&mut ebpf)?)
            }
            false => None,
        };
        // First, so that a stand-in for it is set up only where it did not attach: one load of
        // the object either way.
        let confirm = confirm_maps.and_then(|maps| {
            attach(
                &mut ebpf,
                confirm::PROBE,
                families.confirm.candidates.clone(),
            )
            .then_some(maps)
        });
        if request.wants(Component::ConntrackConfirm) && confirm.is_none() {
            streams.close(StreamKind::InsertFailures);
        }
        let stand_in = !(request.stand_in_for_confirm && confirm.is_some());
        let drop_maps = match &request.drops {
            Some(usage) if stand_in => {
                drops::set_reason_filter(&mut ebpf, &usage.filter.reasons)?;
                if usage.stream {
                    streams
                        .open::<DropEvent>(take_stream(&mut ebpf, "DROP_EVENTS")?, request.pages)?;
                }
                Some(DropMaps::take(&mut ebpf)?)
            }
            _ => None,
        };
        let softirq_maps = match softirq_hooks || request.wants(Component::QueueLoad) {
            true => Some(SoftirqMaps::take(&mut ebpf)?),
            false => None,
        };
        let retrans_maps = match request.wants(Component::Retransmits) {
            true => {
                if request.retrans_stream {
                    streams.open::<RetransEvent>(
                        take_stream(&mut ebpf, "RETRANS_EVENTS")?,
                        request.pages,
                    )?;
                }
                Some(RetransMaps::take(&mut ebpf)?)
            }
            false => None,
        };

        streams.start()?;

        // Softirq entry/exit before the drop program, so every drop knows its NET_RX context.
        let mut groups: Vec<(Component, Vec<&'static str>)> = Vec::new();
        if softirq_hooks {
            groups.push((Component::NetRxContext, vec![softirq::ENTRY, softirq::EXIT]));
        }
        if request.wants(Component::QueueLoad) {
            groups.push((Component::QueueLoad, vec![softirq::IRQ, softirq::NAPI]));
        }
        let softirq_probes = families.softirq.probes();
        let mut net_rx_known = false;
        for (component, probes) in groups {
            let mut all = true;
            for (probe, candidates) in softirq_probes.iter().filter(|(p, _)| probes.contains(p)) {
                all &= attach(&mut ebpf, probe, candidates.clone());
            }
            if component == Component::NetRxContext {
                net_rx_known = all;
            }
        }

        // Sentinels before the drop program, so a NETFILTER_DROP never misses its mark.
        let (stages, sentinels) =
            match (&request.sentinels, request.wants(Component::StageSentinels)) {
                // Not needed: the confirm hook they stand in for attached.
                (Ok(_), true) if !stand_in => (
                    Stages {
                        coverage: Coverage::Blind,
                        status: Err(not_requested()),
                    },
                    None,
                ),
                (Ok(scope), true) => {
                    let (coverage, placed) = sentinel::start(&ebpf, netfilter_drop, *scope);
                    match placed {
                        Ok(mut s) => {
                            // Every namespace in use before any drop is counted; later ones
                            // as the driver follows them.
                            for line in follow_sentinels(&mut s, &mut namespaces.lock(), false) {
                                say!("{line}");
                            }
                            (
                                Stages {
                                    coverage,
                                    status: Ok(s.describe()),
                                },
                                Some(s),
                            )
                        }
                        Err(why) => (
                            Stages {
                                coverage,
                                status: Err(why),
                            },
                            None,
                        ),
                    }
                }
                (Err(why), _) => (
                    Stages {
                        coverage: Coverage::Blind,
                        status: Err(why.clone()),
                    },
                    None,
                ),
                (Ok(_), false) => (
                    Stages {
                        coverage: Coverage::Blind,
                        status: Err(not_requested()),
                    },
                    None,
                ),
            };

        let mut drops = None;
        if let (Some(usage), Some(maps)) = (&request.drops, drop_maps) {
            let mut candidates = families.drops.candidates();
            if let Some(only) = usage.hook {
                for c in &mut candidates {
                    if c.hook.kind() != only.name() {
                        c.precondition = Err(Error::Input(format!("--hook {} given", only.name())));
                    }
                }
            }
            drops = attach(&mut ebpf, drops::PROBE, candidates).then_some(maps);
        }
        let mut retrans = None;
        if let Some(maps) = retrans_maps {
            let mut main = false;
            for (probe, candidates) in families.retrans.probes() {
                let ok = attach(&mut ebpf, probe, candidates);
                main |= probe == RETRANS && ok;
            }
            retrans = main.then_some(maps);
        }
        drop(loader_btf);
        give_back_start_up_memory();
        // Events are named from the first one on, and reading the symbols takes a tenth of a
        // second here and seconds in an emulated guest: read them beside the driver's start, not
        // in its way. Not earlier: beside aya's parse of the BTF, on a thread (and so a heap
        // arena) of its own, they raised netdoc's peak by 3 MiB. Attaching needs none (functions
        // are looked up in BTF first).
        std::thread::spawn(|| {
            Kallsyms::shared();
            give_back_start_up_memory();
        });
        let cpus = online_cpus()
            .map_err(|(_, e)| e)
            .context("reading online CPUs")?;
        // The kernel's BTF and symbol tables stay only as long as attaching needs them.
        drop(kernel);
        Ok(Self {
            families,
            ebpf: Some(ebpf),
            sentinels,
            plans,
            drops,
            softirq: softirq_maps,
            retrans,
            confirm,
            stages,
            net_rx_known,
            streams: Some(streams),
            stream_totals: BTreeMap::new(),
            max_events_per_sec: request.max_events_per_sec,
            cpus,
            started: Instant::now(),
            watched: request.watched,
            namespaces,
        })
    }

    /// [`Self::start`] for the commands that cannot go on without the drop program: an error
    /// when it attached nowhere (the planner's reasons), and a warning per probe that did not.
    pub fn start_dropping(kernel: Kernel, families: Families, request: Request) -> Result<Self> {
        let session = Self::start(kernel, families, request)?;
        if session.hook(drops::PROBE).is_none() {
            bail!(
                "{}",
                session
                    .plan(drops::PROBE)
                    .map(|p| p.failure())
                    .unwrap_or_default()
            );
        }
        for p in session.degraded() {
            say!("degraded: {}", p.failure());
        }
        Ok(session)
    }

    /// The plan of one probe, if it was tried.
    pub fn plan(&self, probe: &str) -> Option<&ProbePlan> {
        self.plans.iter().find(|p| p.probe == probe)
    }

    /// The hook a probe attached through, as text.
    pub fn hook(&self, probe: &str) -> Option<String> {
        self.plan(probe)?.chosen().map(|a| a.hook.to_string())
    }

    /// Each probe tried, and the stage sentinels when asked for: attached where, or why not.
    pub fn probe_statuses(&self) -> Vec<ProbeStatus> {
        let mut all: Vec<ProbeStatus> = self.plans.iter().map(ProbePlan::status).collect();
        if self.stages.status != Err(not_requested()) {
            all.push(ProbeStatus {
                probe: sentinel::PROBE.into(),
                hook: self
                    .stages
                    .status
                    .as_ref()
                    .ok()
                    .map(|at| format!("{} ({at})", planner::Hook::NetfilterLink)),
                unavailable: self.stages.status.as_ref().err().map(ToString::to_string),
            });
        }
        all
    }

    /// Probes that were tried and attached nowhere: the session runs degraded without them.
    pub fn degraded(&self) -> impl Iterator<Item = &ProbePlan> {
        self.plans.iter().filter(|p| p.chosen().is_none())
    }

    /// Each of netdoc's programs that ran: its name, and the kernel's run time (ns) and run
    /// count for it, while `kernel.bpf_stats_enabled` is 1 (empty otherwise, or once detached).
    pub fn program_runs(&self) -> Vec<(String, u64, u64)> {
        use std::os::fd::AsFd as _;
        let Some(ebpf) = &self.ebpf else {
            return Vec::new();
        };
        ebpf.programs()
            .filter_map(|(name, program)| {
                let fd = program.fd().ok()?;
                let (run_ns, runs) = crate::facts::fdinfo::program_runs(fd.as_fd())?;
                (runs > 0).then(|| (name.to_string(), run_ns, runs))
            })
            .collect()
    }

    /// Releases every link and sentinel, waiting for running programs. The maps stay readable.
    pub fn detach(&mut self) {
        self.ebpf = None;
        self.sentinels = None;
    }

    /// The host's namespaces, for naming events.
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces.clone()
    }

    /// The latest namespaces that went away during the run, and how many went before them.
    pub fn namespaces_gone(&self) -> (Vec<GoneNetns>, u64) {
        self.namespaces.lock().gone()
    }

    /// Follows the host's namespaces: new ones are named and, where the scope says, get
    /// sentinels; vanished ones are let go (their sentinel links closed). Returns what to tell
    /// the user.
    pub fn follow_namespaces(&mut self) -> Vec<String> {
        let mut inventory = self.namespaces.lock();
        inventory.follow();
        let Some(s) = self.sentinels.as_mut() else {
            return Vec::new();
        };
        let said = follow_sentinels(s, &mut inventory, true);
        self.stages.status = Ok(s.describe());
        said
    }

    /// When the watched namespace has gone (its file removed, or now naming another
    /// namespace), says which it was: [`Self::follow_namespaces`] has let go of it.
    pub fn watched_gone(&mut self) -> Option<String> {
        let ns = self.watched.as_ref()?;
        if netns::inode(&ns.path) == Some(ns.inode) {
            return None;
        }
        self.watched.take().map(|ns| ns.given)
    }

    /// The event streams, for the one driver that reads them (and stops them after detaching).
    pub fn take_streams(&mut self) -> Option<Streams> {
        self.streams.take()
    }

    /// Records of unknown kind, version or size in one stream.
    pub fn unknown_records(&self, kind: StreamKind) -> u64 {
        self.stream_totals
            .get(&kind)
            .map_or(0, |t| t.decode.unknown)
    }
}

/// Start-up parses kernel BTF twice inside aya (14 MiB each, one after the other) and loads the
/// object, all freed again by now, which glibc keeps for reuse unless asked: an agent that runs
/// for weeks gives it back.
fn give_back_start_up_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free pages of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_wanted_twice_is_attached_once() {
        let mut r = Request::default()
            .with(Component::NetRxContext)
            .with(Component::NetRxContext);
        r.want_drops(DropUse::default());
        r.want_drops(DropUse::default());
        assert_eq!(r.components, [Component::NetRxContext, Component::Drops]);
    }

    #[test]
    fn a_second_use_of_the_drop_program_widens_the_first() {
        let mut r = Request::default();
        let netns_only = DropFilter {
            netns: Some(4026531840),
            ..DropFilter::default()
        };
        r.want_drops(DropUse {
            filter: netns_only.clone(),
            stream: false,
            hook: Some(planner::HookKind::Tracepoint),
            per_netns: false,
            stacks: false,
        });
        r.want_drops(DropUse {
            filter: netns_only.clone(),
            stream: true,
            hook: Some(planner::HookKind::Tracepoint),
            per_netns: false,
            stacks: false,
        });
        let same = r.drops.clone().unwrap();
        assert_eq!(same.filter, netns_only, "equal filters stay");
        assert!(same.stream, "either streams");
        assert_eq!(same.hook, Some(planner::HookKind::Tracepoint));
        r.want_drops(DropUse::default());
        let wide = r.drops.unwrap();
        assert_eq!(
            wide.filter,
            DropFilter::default(),
            "different filters: none"
        );
        assert_eq!(wide.hook, None, "different hooks: the planner's choice");
        assert!(wide.stream);
    }
}
