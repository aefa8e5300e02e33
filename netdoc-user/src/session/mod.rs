//! One probe session: netdoc's eBPF object loaded once with every family's config, each
//! kernel-side component attached once however many commands or families want it, the maps
//! taken out so they outlive the links, and every event stream feeding one channel. Dropping
//! the session (or [`Session::detach`]) releases every link. The session knows the families
//! only through their contract ([`crate::family::Family`]) and the registry.
pub mod live;
pub mod registry;
pub mod starting;
pub mod stream;

use std::{
    any::Any,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, util::online_cpus};

use crate::{
    Error,
    drops::{self, filter::DropFilter},
    facts::{
        kallsyms::Kallsyms,
        netns::{self, NetnsArg},
    },
    kernel::Kernel,
    loader,
    model::cause::Coverage,
    namespaces::{GoneNetns, Inventory, NetnsRef},
    planner::{self, ProbePlan, ProbeStatus},
    sentinel::{self, Sentinels},
};
pub use registry::Component;
use registry::Families;
use starting::{Parts, Starting};
use stream::{ReaderTotals, StreamKind, Streams};

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
            sentinels: Err(Stages::not_requested_error()),
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

    pub fn wants(&self, c: Component) -> bool {
        self.components.contains(&c)
    }

    /// Whether the softirq entry/exit hooks run: for the drops' NET_RX context, or for timing.
    pub fn softirq_hooks(&self) -> bool {
        self.wants(Component::NetRxContext) || self.wants(Component::SoftirqTime)
    }
}

/// Whether the stage sentinels run, and what they let the drop program tell apart.
pub struct Stages {
    pub coverage: Coverage,
    /// `Ok(where they sit)` or why there are none.
    pub status: Result<String, Error>,
}

impl Stages {
    /// Why the sentinels are absent when no command asked for them.
    fn not_requested_error() -> Error {
        Error::Input("not requested".into())
    }

    /// No sentinels, because no command asked for them (or what they stand in for attached).
    pub fn not_requested() -> Self {
        Self {
            coverage: Coverage::Blind,
            status: Err(Self::not_requested_error()),
        }
    }

    fn requested(&self) -> bool {
        self.status != Err(Self::not_requested_error())
    }
}

pub struct Session {
    pub families: Families,
    /// `None` once detached.
    ebpf: Option<Ebpf>,
    pub plans: Vec<ProbePlan>,
    /// What the families kept: their maps where they attached, and the sentinels' links.
    parts: Parts,
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
    /// Runs the kernel skipped of each program, as they were when it was detached.
    missed_at_detach: BTreeMap<String, u64>,
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

impl Session {
    /// Loads the object and starts every family `request` wants, in the registry's order: each
    /// opens its maps and streams, the streams start, then each attaches. A probe that
    /// attaches nowhere is recorded in `plans` (the commands decide whether they can go on
    /// without it).
    pub fn start(mut kernel: Kernel, families: Families, request: Request) -> Result<Self> {
        let object = families.object(&request)?;
        let namespaces = Namespaces::discover();
        kernel.release_btf();
        let mut ebpf = loader::load(&object)?;
        drop(object);
        let mut streams = Streams::new();
        let loader_btf = kernel.loader_btf();
        let mut plans = Vec::new();
        let mut parts = Parts::default();
        let mut attached = BTreeSet::new();
        // Why no sentinels were wanted (`--no-causes`, ...) is said in every summary; where they
        // are wanted, their family says how they went.
        let mut stages = match &request.sentinels {
            Err(why) => Stages {
                coverage: Coverage::Blind,
                status: Err(why.clone()),
            },
            Ok(_) => Stages::not_requested(),
        };
        let wanted: Vec<_> = families
            .in_start_order()
            .into_iter()
            .filter(|f| f.wanted(&request))
            .collect();
        {
            let mut s = Starting {
                ebpf: &mut ebpf,
                streams: &mut streams,
                btf: loader_btf.as_ref(),
                plans: &mut plans,
                parts: &mut parts,
                attached: &mut attached,
                stages: &mut stages,
                namespaces: &namespaces,
                pages: request.pages,
            };
            // Maps first, and buffers open before any program attaches, so no record arrives
            // with nowhere to go (the reader starts once they are all open; until then they
            // wait).
            for family in &wanted {
                family.open(&request, &mut s)?;
            }
            s.streams.start()?;
            for family in &wanted {
                family.attach(&request, &mut s)?;
            }
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
            plans,
            parts,
            stages,
            net_rx_known: attached.contains(&Component::NetRxContext),
            streams: Some(streams),
            stream_totals: BTreeMap::new(),
            max_events_per_sec: request.max_events_per_sec,
            cpus,
            started: Instant::now(),
            watched: request.watched,
            namespaces,
            missed_at_detach: BTreeMap::new(),
        })
    }

    /// What a family kept of the object (its maps), by type: present when its probe attached.
    pub fn part<T: Any>(&self) -> Option<&T> {
        self.parts.get()
    }

    pub fn part_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.parts.get_mut()
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

    /// Each probe tried, and the stage sentinels when asked for: attached where, or why not,
    /// and the runs the kernel skipped.
    pub fn probe_statuses(&self) -> Vec<ProbeStatus> {
        let mut all: Vec<ProbeStatus> = self
            .plans
            .iter()
            .map(|plan| ProbeStatus {
                missed_runs: plan.chosen().map_or(0, |a| self.missed_runs(&a.program)),
                ..plan.status()
            })
            .collect();
        if self.stages.requested() {
            all.push(ProbeStatus {
                probe: sentinel::PROBE.into(),
                hook: self
                    .stages
                    .status
                    .as_ref()
                    .ok()
                    .map(|at| format!("{} ({at})", planner::Hook::NetfilterLink)),
                unavailable: self.stages.status.as_ref().err().map(ToString::to_string),
                missed_runs: 0,
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

    /// Runs the kernel skipped of one of netdoc's programs (see
    /// [`crate::facts::fdinfo::missed_runs`]): read live, or as they were at detach.
    fn missed_runs(&self, program: &str) -> u64 {
        use std::os::fd::AsFd as _;
        match &self.ebpf {
            Some(ebpf) => ebpf
                .program(program)
                .and_then(|p| p.fd().ok())
                .map_or(0, |fd| crate::facts::fdinfo::missed_runs(fd.as_fd())),
            None => self.missed_at_detach.get(program).copied().unwrap_or(0),
        }
    }

    /// Releases every link and sentinel, waiting for running programs. The maps stay readable.
    /// Says which probes' programs the kernel skipped runs of: events no count includes.
    pub fn detach(&mut self) {
        for plan in &self.plans {
            let Some(chosen) = plan.chosen() else {
                continue;
            };
            let missed = self.missed_runs(&chosen.program);
            if missed > 0 {
                say!(
                    "warning: the kernel skipped {missed} run(s) of the {} probe (its program was already running on that CPU when the event came again): those events are in no count",
                    plan.probe
                );
                self.missed_at_detach
                    .insert(chosen.program.to_string(), missed);
            }
        }
        self.ebpf = None;
        self.parts.remove::<Sentinels>();
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
        let Some(s) = self.parts.get_mut::<Sentinels>() else {
            return Vec::new();
        };
        let said = s.follow(&inventory, true);
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
