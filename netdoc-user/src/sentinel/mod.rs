//! The conntrack stage sentinels, a component the drops and conntrack families share: netfilter bpf_link
//! "sentinels" sit at each hook's entry and just around conntrack's own hooks, and mark per
//! CPU the last skb they saw, its namespace and the stage (`NF_STAGE`). The drop program reads
//! that mark for every `NETFILTER_DROP`, which pins the drop to conntrack-in, conntrack confirm
//! or a rule. Host-wide they are placed on demand: where such drops come (`NF_DROP_SITES`).
//!
//! The program itself is assembled in `nfprog`. Links belong to this process: closing them
//! (dropping [`Sentinels`]) detaches them.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap as MapOf, Map, MapData, PerCpuArray, PerCpuValues},
};
use netdoc_common::conntrack::{NetfilterDropSite, StageMark, stage};

mod nfprog;

use nfprog::NetnsPath;

use crate::{
    Error,
    facts::{kallsyms::Kallsyms, netns},
    family::Family,
    kernel::Kernel,
    model::{
        cause::{Coverage, NFTABLES},
        reasons::DropReasons,
    },
    namespaces::Inventory,
    planner::{Attempt, Candidate, Hook, Outcome, ProbePlan},
    session::{Component, Request, Stages, starting::Starting},
};

pub const PROBE: &str = "conntrack_stage";
const PROGRAM: &str = "nf_stage_sentinel";

const NFPROTO_IPV4: u32 = libc::NFPROTO_IPV4 as u32;
const NFPROTO_IPV6: u32 = libc::NFPROTO_IPV6 as u32;
const PRE_ROUTING: u32 = libc::NF_INET_PRE_ROUTING as u32;
const LOCAL_IN: u32 = libc::NF_INET_LOCAL_IN as u32;
const FORWARD: u32 = libc::NF_INET_FORWARD as u32;
const LOCAL_OUT: u32 = libc::NF_INET_LOCAL_OUT as u32;
const POST_ROUTING: u32 = libc::NF_INET_POST_ROUTING as u32;
/// Conntrack-in runs here, for IPv4 and IPv6 alike.
const CONNTRACK: i32 = libc::NF_IP_PRI_CONNTRACK;
const _: () = assert!(libc::NF_IP6_PRI_CONNTRACK == CONNTRACK);
/// Netfilter links need a priority strictly between INT_MIN and INT_MAX; INT_MAX is confirm.
const FIRST: i32 = i32::MIN + 1;
const BEFORE_CONFIRM: i32 = i32::MAX - 1;
/// Another link at the same hook and priority (another netdoc) makes the kernel say EBUSY:
/// step away from conntrack by up to this many priorities.
const TRIES: i32 = 8;

/// Where one sentinel goes: a hook, the priority it wants, the way to step on EBUSY, and the
/// stage it marks.
struct Placement {
    hook: u32,
    priority: i32,
    step: i32,
    stage: u8,
}

/// Conntrack-in runs on PRE_ROUTING and LOCAL_OUT, confirm on LOCAL_IN and POST_ROUTING. A
/// mark at every hook's entry keeps a stale mark from an earlier skb at the same address from
/// ever describing a later drop.
const PLACEMENTS: [Placement; 11] = [
    at(PRE_ROUTING, FIRST, 1, stage::RULES),
    at(PRE_ROUTING, CONNTRACK - 1, -1, stage::CONNTRACK_IN),
    at(PRE_ROUTING, CONNTRACK + 1, 1, stage::RULES),
    at(LOCAL_IN, FIRST, 1, stage::RULES),
    at(LOCAL_IN, BEFORE_CONFIRM, -1, stage::CONNTRACK_CONFIRM),
    at(FORWARD, FIRST, 1, stage::RULES),
    at(LOCAL_OUT, FIRST, 1, stage::RULES),
    at(LOCAL_OUT, CONNTRACK - 1, -1, stage::CONNTRACK_IN),
    at(LOCAL_OUT, CONNTRACK + 1, 1, stage::RULES),
    at(POST_ROUTING, FIRST, 1, stage::RULES),
    at(POST_ROUTING, BEFORE_CONFIRM, -1, stage::CONNTRACK_CONFIRM),
];

const fn at(hook: u32, priority: i32, step: i32, stage: u8) -> Placement {
    Placement {
        hook,
        priority,
        step,
        stage,
    }
}

impl Placement {
    /// What its sentinel writes: the stage and this hook.
    const fn mark(&self) -> u8 {
        stage::at_hook(self.stage, self.hook as u8)
    }
}

/// One attached sentinel, as `netdoc probes` and the summaries report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub family: &'static str,
    pub hook: u32,
    pub priority: i32,
    pub stage: u8,
}

/// Where sentinels go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Host-wide, the default: into a namespace (netdoc's own included) once `NETFILTER_DROP`s
    /// come there from anywhere but nftables, and out again after `quiet` without one. A
    /// packet pays for the sentinels only where they are needed: each crossing costs about
    /// 70 ns, and a loopback datagram crosses ten. The drops before they are placed stay
    /// unclassified (the doctor weighs them against conntrack's own counters).
    OnDemand { quiet: Duration },
    /// Only this namespace (`--netns`), from the start, for the whole run.
    Only(u32),
}

/// Sentinels placed on demand go after this long without a `NETFILTER_DROP` outside nftables
/// in their namespace, unless told otherwise (`--sentinels-quiet`).
pub const QUIET: Duration = Duration::from_secs(600);

impl Scope {
    /// Only `netns`, or host-wide with sentinels withdrawn after `quiet`.
    pub fn only_or_on_demand(netns: Option<u32>, quiet: Duration) -> Self {
        match netns {
            Some(ino) => Scope::Only(ino),
            None => Scope::OnDemand { quiet },
        }
    }
}

/// At most this many namespaces get sentinels (22 links each): beyond it, their
/// `NETFILTER_DROP`s stay unclassified and a warning says so.
const MOST_NAMESPACES: usize = 256;

/// The links of one namespace.
struct Links {
    /// The inventory's serial of the namespace (the same inode later is another namespace);
    /// None for netdoc's own.
    serial: Option<u64>,
    fds: Vec<OwnedFd>,
    /// When they were placed or a `NETFILTER_DROP` outside nftables last came there.
    last_drop: Instant,
}

/// Every sentinel link of a run. Dropping it detaches them all.
pub struct Sentinels {
    /// The sentinel programs by the mark each writes.
    programs: Arc<Vec<(u8, OwnedFd)>>,
    /// Links by namespace inode. A link keeps its namespace alive: those of a namespace with
    /// no other holder are closed.
    links: BTreeMap<u32, Links>,
    /// The marks the drop program reads, cleared when sentinels are withdrawn: a mark they
    /// left must not describe a later drop of an skb at the same address.
    marks: PerCpuArray<MapData, StageMark>,
    /// Every `NETFILTER_DROP` by namespace and freeing address, as the drop program counts
    /// them, and each site's count at the last reading.
    sites: MapOf<MapData, NetfilterDropSite, u64>,
    read: HashMap<NetfilterDropSite, u64>,
    /// Namespaces (serials; None: netdoc's own) the kernel refused links in: not tried again.
    refused: BTreeSet<Option<u64>>,
    scope: Scope,
    bound_warned: bool,
    /// The layout of the first namespace placed.
    pub placed: Vec<Placed>,
    /// Why IPv6 has none (no IPv6 in the kernel), if so.
    pub ipv6_missing: Option<String>,
}

impl Sentinels {
    pub fn describe(&self) -> String {
        let links = self.links.values().map(|l| l.fds.len()).sum::<usize>();
        let mut s = format!(
            "{links} netfilter links in {} namespace(s)",
            self.links.len()
        );
        if let Scope::OnDemand { .. } = self.scope {
            s += " now, placed where NETFILTER_DROPs come";
        }
        match &self.ipv6_missing {
            Some(why) => format!("{s} (IPv4 only: {why})"),
            None => s,
        }
    }

    /// Follows the namespaces and their netfilter drops: closes the links of namespaces gone
    /// (so they can go) and, on demand, of those quiet for the scope's quiet time; places
    /// sentinels where the scope wants them and there are none yet. Returns what to tell the
    /// user.
    pub fn follow(&mut self, namespaces: &Inventory, announce: bool) -> Vec<String> {
        let now = Instant::now();
        let mut said = Vec::new();
        let placed = self.links.len();
        self.links.retain(|ino, l| match l.serial {
            None => true,
            Some(serial) => namespaces.live(*ino).is_some_and(|n| n.serial == serial),
        });
        if self.links.len() < placed {
            said.extend(self.clear_marks());
        }
        let wanted: BTreeSet<u32> = match self.scope {
            Scope::Only(ino) => [ino].into(),
            Scope::OnDemand { quiet } => {
                let dropping = self.dropping(namespaces);
                for ino in &dropping {
                    if let Some(l) = self.links.get_mut(ino) {
                        l.last_drop = now;
                    }
                }
                said.extend(self.withdraw_quiet(namespaces, now, quiet));
                dropping
            }
        };
        let new: Vec<u32> = wanted
            .into_iter()
            .filter(|ino| !self.links.contains_key(ino))
            .collect();
        said.extend(self.place(namespaces, new, announce, now));
        said
    }

    /// Namespaces with `NETFILTER_DROP`s outside nftables since the last reading.
    fn dropping(&mut self, namespaces: &Inventory) -> BTreeSet<u32> {
        let counts: HashMap<NetfilterDropSite, u64> = self.sites.iter().flatten().collect();
        new_drops(
            &mut self.read,
            counts,
            |ino| namespaces.is_own(ino) || namespaces.live(ino).is_some(),
            // Read on the first netfilter drop only: parsing kallsyms at start-up would add a
            // tenth of a second and megabytes to every attach.
            |addr| Kallsyms::shared().and_then(|k| k.function(addr)) == Some(NFTABLES),
        )
    }

    /// Withdraws the sentinels placed on demand from each namespace quiet for `quiet`, then
    /// clears the marks they may have left.
    fn withdraw_quiet(
        &mut self,
        namespaces: &Inventory,
        now: Instant,
        quiet: Duration,
    ) -> Vec<String> {
        let gone: Vec<u32> = self
            .links
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_drop) >= quiet)
            .map(|(ino, _)| *ino)
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        let mut said: Vec<String> = gone
            .iter()
            .map(|ino| {
                self.links.remove(ino);
                format!(
                    "conntrack stage sentinels withdrawn from {}: no NETFILTER_DROP outside nftables there for {}",
                    where_(namespaces, *ino),
                    humantime::format_duration(quiet)
                )
            })
            .collect();
        said.extend(self.clear_marks());
        said
    }

    /// Clears the marks of links just closed (closing one waits for the hook's running
    /// programs, so none of them writes a mark any more): a mark they left must not describe a
    /// later drop of an skb at the same address in the same namespace.
    fn clear_marks(&mut self) -> Option<String> {
        clear(&mut self.marks)
            .err()
            .map(|e| format!("warning: clearing the stage marks: {e}"))
    }

    /// Places sentinels in each namespace of `inodes` (netdoc's own in this thread, the others
    /// from a visiting one).
    fn place(
        &mut self,
        namespaces: &Inventory,
        inodes: Vec<u32>,
        announce: bool,
        now: Instant,
    ) -> Vec<String> {
        let mut targets: Vec<(Target, Option<PathBuf>)> = Vec::new();
        for ino in inodes {
            let name = where_(namespaces, ino);
            if namespaces.is_own(ino) {
                targets.push((
                    Target {
                        serial: None,
                        ino,
                        name,
                    },
                    None,
                ));
            } else if let Some((n, file)) = namespaces.live(ino).and_then(|n| Some((n, n.file()?)))
            {
                let serial = Some(n.serial);
                targets.push((Target { serial, ino, name }, Some(file)));
            }
        }
        targets.retain(|(t, _)| !self.refused.contains(&t.serial));
        let room = MOST_NAMESPACES.saturating_sub(self.links.len());
        let mut said = Vec::new();
        if targets.len() > room {
            let Target { ino, name, .. } = &targets[room].0;
            if !self.bound_warned {
                self.bound_warned = true;
                said.push(format!(
                    "warning: conntrack stage sentinels are in {MOST_NAMESPACES} namespaces, the most netdoc places: NETFILTER_DROPs in {name} (inode {ino}) and further ones stay unclassified"
                ));
            }
            targets.truncate(room);
        }
        let programs = self.programs.clone();
        let mut there = Vec::new();
        let mut results = Vec::new();
        for (target, file) in targets {
            match file {
                Some(file) => there.push((target, file)),
                None => results.push((target, Some(place_here(&programs)))),
            }
        }
        results.extend(netns::visit(there, move |_| place_here(&programs)));
        for (Target { serial, ino, name }, result) in results {
            match result {
                Some(Ok(here)) => {
                    if announce {
                        said.push(format!(
                            "conntrack stage sentinels placed in {name} (inode {ino})"
                        ));
                    }
                    if self.placed.is_empty() {
                        self.placed = here.placed;
                        self.ipv6_missing = here.ipv6_missing;
                    }
                    let links = Links {
                        serial,
                        fds: here.links,
                        last_drop: now,
                    };
                    self.links.insert(ino, links);
                }
                Some(Err(why)) => {
                    said.push(format!(
                        "warning: no conntrack stage sentinels in {name}: {why}"
                    ));
                    self.refused.insert(serial);
                }
                None => {}
            }
        }
        said
    }
}

/// A namespace to place sentinels in.
struct Target {
    /// The inventory's serial; None for netdoc's own.
    serial: Option<u64>,
    ino: u32,
    /// As netdoc names it when it speaks of it.
    name: String,
}

/// The namespaces of the sites whose count moved since `read` (which then holds the new
/// counts), but those freed by nftables (whose drops say their cause without a sentinel). A site
/// of a namespace not `known` yet is left for the next reading; one of an unknown namespace (0)
/// names none.
fn new_drops(
    read: &mut HashMap<NetfilterDropSite, u64>,
    counts: HashMap<NetfilterDropSite, u64>,
    known: impl Fn(u32) -> bool,
    by_nftables: impl Fn(u64) -> bool,
) -> BTreeSet<u32> {
    // The map forgets sites (the least recently used first): so do we.
    read.retain(|site, _| counts.contains_key(site));
    let mut dropping = BTreeSet::new();
    for (site, count) in counts {
        if read.get(&site) == Some(&count) || (site.netns != 0 && !known(site.netns)) {
            continue;
        }
        read.insert(site, count);
        if site.netns != 0 && !by_nftables(site.location) {
            dropping.insert(site.netns);
        }
    }
    dropping
}

/// How a namespace is named in what netdoc says: `namespace NAME` (tests wait for it).
fn where_(namespaces: &Inventory, ino: u32) -> String {
    if namespaces.is_own(ino) {
        return "netdoc's own namespace".into();
    }
    match namespaces.live(ino) {
        Some(n) => format!("namespace {}", n.id.name),
        None => format!("namespace {ino}"),
    }
}

/// Clears every CPU's stage mark.
fn clear(marks: &mut PerCpuArray<MapData, StageMark>) -> Result<(), Error> {
    let cpus =
        aya::util::nr_cpus().map_err(|(_, e)| Error::Failed(format!("counting CPUs: {e}")))?;
    let none = PerCpuValues::try_from(vec![StageMark::default(); cpus])
        .map_err(|e| Error::Failed(e.to_string()))?;
    marks
        .set(0, none, 0)
        .map_err(|e| Error::Failed(e.to_string()))
}

/// Places every sentinel of one family in the calling thread's namespace.
fn place_family(
    programs: &[(u8, OwnedFd)],
    pf: u32,
) -> Result<(Vec<OwnedFd>, Vec<Placed>), io::Error> {
    let family = if pf == NFPROTO_IPV4 { "ipv4" } else { "ipv6" };
    let (mut links, mut placed) = (Vec::new(), Vec::new());
    for p in &PLACEMENTS {
        let prog = &programs
            .iter()
            .find(|(mark, _)| *mark == p.mark())
            .expect("a program per placement's mark")
            .1;
        let mut attempt = 0;
        loop {
            let priority = p.priority + attempt * p.step;
            match nfprog::link(prog, pf, p.hook, priority) {
                Ok(fd) => {
                    links.push(fd);
                    placed.push(Placed {
                        family,
                        hook: p.hook,
                        priority,
                        stage: p.stage,
                    });
                    break;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt + 1 < TRIES => {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok((links, placed))
}

/// The sentinels of one namespace.
struct Here {
    links: Vec<OwnedFd>,
    placed: Vec<Placed>,
    ipv6_missing: Option<String>,
}

/// Places IPv4 (required) and IPv6 (when the kernel has it) in the calling thread's namespace.
fn place_here(programs: &[(u8, OwnedFd)]) -> Result<Here, Error> {
    let (mut links, mut placed) =
        place_family(programs, NFPROTO_IPV4).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Error::Unavailable(format!(
                "the kernel refused a netfilter link ({e}): netfilter links need 6.4+"
            )),
            _ => Error::Failed(format!("attaching a netfilter link: {e}")),
        })?;
    let ipv6_missing = match place_family(programs, NFPROTO_IPV6) {
        Ok((l, p)) => {
            links.extend(l);
            placed.extend(p);
            None
        }
        Err(e) => Some(e.to_string()),
    };
    Ok(Here {
        links,
        placed,
        ipv6_missing,
    })
}

/// Loads the sentinel programs against `ebpf`'s `NF_STAGE` map, then takes the maps they work
/// with; they are placed by [`Sentinels::follow`]. The maps are taken only once nothing can
/// fail: the drop program, loaded after, refers to them, and closing them would break it.
fn attach(ebpf: &mut Ebpf, scope: Scope, netns: NetnsPath) -> Result<Sentinels, Error> {
    let missing = |name: &str| Error::Failed(format!("{name} map missing from the object"));
    let Some(Map::PerCpuArray(stage)) = ebpf.map("NF_STAGE") else {
        return Err(missing("NF_STAGE"));
    };
    // One program per mark (a stage at a hook): the mark is an immediate of the program.
    let kinds: BTreeSet<u8> = PLACEMENTS.iter().map(Placement::mark).collect();
    let programs = Arc::new(
        kinds
            .into_iter()
            .map(|m| nfprog::load(stage.fd().as_fd(), m, netns).map(|p| (m, p)))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let (Some(Map::PerCpuArray(stage)), Some(Map::LruHashMap(sites))) =
        (ebpf.take_map("NF_STAGE"), ebpf.take_map("NF_DROP_SITES"))
    else {
        return Err(missing("NF_DROP_SITES"));
    };
    let marks = PerCpuArray::try_from(Map::PerCpuArray(stage))
        .map_err(|e| Error::Failed(format!("NF_STAGE: {e}")))?;
    let sites = MapOf::try_from(Map::LruHashMap(sites))
        .map_err(|e| Error::Failed(format!("NF_DROP_SITES: {e}")))?;
    Ok(Sentinels {
        programs,
        links: BTreeMap::new(),
        marks,
        sites,
        read: HashMap::new(),
        refused: BTreeSet::new(),
        scope,
        bound_warned: false,
        placed: Vec::new(),
        ipv6_missing: None,
    })
}

/// Whether nf_conntrack is loaded: without it only rules can return DROP, and no sentinel is
/// needed to say so.
fn conntrack_loaded() -> bool {
    Path::new("/proc/net/stat/nf_conntrack").exists()
}

/// The reason code the drop program should attach stages to (set before load), when the
/// sentinels are worth trying: conntrack is loaded and the kernel names `NETFILTER_DROP`.
pub fn wanted(reasons: &DropReasons) -> Option<u32> {
    worth_trying(reasons.code("NETFILTER_DROP"))
}

/// `netfilter_drop`, the kernel's `NETFILTER_DROP` code, where the sentinels are worth trying.
fn worth_trying(netfilter_drop: Option<u32>) -> Option<u32> {
    conntrack_loaded().then_some(netfilter_drop).flatten()
}

/// Loads the sentinels if [`wanted`] gave a code and BTF says where a hook's namespace is, and
/// places them as `scope` says; the coverage says which drops can be told apart.
pub fn start(
    ebpf: &mut Ebpf,
    wanted: Option<u32>,
    netns: Option<NetnsPath>,
    scope: Scope,
    namespaces: &Inventory,
) -> (Coverage, Result<Sentinels, Error>) {
    match (wanted, netns) {
        (Some(_), Some(netns)) => match attach(ebpf, scope, netns) {
            // Kept even where none could be placed (said why): they hold the maps the drop
            // program refers to.
            Ok(mut sentinels) => {
                for line in sentinels.follow(namespaces, false) {
                    say!("{line}");
                }
                (Coverage::Sentinels, Ok(sentinels))
            }
            Err(why) => (Coverage::Blind, Err(why)),
        },
        (Some(_), None) => (
            Coverage::Blind,
            Err(Error::Unavailable(
                "BTF does not say where a netfilter hook's namespace is (nf_hook_state.net)".into(),
            )),
        ),
        (None, _) if !conntrack_loaded() => (
            Coverage::NoConntrack,
            Err(Error::Unavailable(
                "nf_conntrack is not loaded: every NETFILTER_DROP is a rule's".into(),
            )),
        ),
        (None, _) => (
            Coverage::Blind,
            Err(Error::Unavailable(
                "this kernel names no NETFILTER_DROP reason".into(),
            )),
        ),
    }
}

/// The stage sentinels as a member of a session: a component the drops and conntrack families
/// share, loaded after the NET_RX hooks and before the drop program.
pub struct StageSentinels {
    /// The kernel's `NETFILTER_DROP` reason code, if it names one.
    netfilter_drop: Option<u32>,
    /// Where a hook's namespace is, if BTF says.
    netns: Option<NetnsPath>,
}

impl StageSentinels {
    pub fn discover(kernel: &Kernel, reasons: &DropReasons) -> Self {
        Self {
            netfilter_drop: reasons.code("NETFILTER_DROP"),
            netns: netns_path(kernel),
        }
    }

    /// [`start`] for `netdoc probes`, placed in netdoc's own namespace to try them for real;
    /// and whether they were worth trying.
    pub fn try_here(
        &self,
        ebpf: &mut Ebpf,
        namespaces: &Inventory,
    ) -> (bool, Result<Sentinels, Error>) {
        let wanted = worth_trying(self.netfilter_drop);
        let scope = Scope::Only(namespaces.own());
        let result = start(ebpf, wanted, self.netns, scope, namespaces).1;
        let placed = result.and_then(|s| match s.links.is_empty() {
            true => Err(Error::Failed(
                "the kernel refused a link in netdoc's own namespace".into(),
            )),
            false => Ok(s),
        });
        (wanted.is_some(), placed)
    }
}

/// `nf_hook_state.net` and `net.ns.inum`, as the sentinel loads them.
fn netns_path(kernel: &Kernel) -> Option<NetnsPath> {
    let at = |name, path| i16::try_from(kernel.offset(name, path)).ok();
    Some(NetnsPath {
        state_net: at("nf_hook_state", &["net"])?,
        net_inum: at("net", &["ns", "inum"])?,
    })
}

impl Family for StageSentinels {
    /// None the planner tries: the links are netfilter's, placed per namespace (`netdoc
    /// probes` tries them apart).
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)> {
        Vec::new()
    }

    fn wanted(&self, request: &Request) -> bool {
        request.wants(Component::StageSentinels)
    }

    fn attach(&self, request: &Request, s: &mut Starting<'_>) -> anyhow::Result<()> {
        // Without a scope the session has said why none are wanted.
        let Ok(scope) = request.sentinels.as_ref().map(|scope| *scope) else {
            return Ok(());
        };
        // Not needed: the confirm hook they stand in for attached.
        if s.confirm_covers(request) {
            return Ok(());
        }
        let wanted = worth_trying(self.netfilter_drop);
        let namespaces = s.namespaces.clone();
        let (coverage, placed) = start(s.ebpf, wanted, self.netns, scope, &namespaces.lock());
        let status = placed.map(|sentinels| {
            let placed = sentinels.describe();
            s.keep(sentinels);
            placed
        });
        s.set_stages(Stages { coverage, status });
        Ok(())
    }
}

/// The plan line for `netdoc probes`, from an attach result (`tried`: whether it was tried).
pub fn plan(result: &Result<Sentinels, Error>, tried: bool) -> ProbePlan {
    ProbePlan {
        probe: PROBE.into(),
        attempts: vec![Attempt {
            hook: Hook::NetfilterLink,
            program: PROGRAM.into(),
            outcome: match result {
                Ok(_) => Outcome::Attached,
                Err(why) if tried => Outcome::Failed(why.to_string()),
                Err(why) => Outcome::Skipped(why.to_string()),
            },
        }],
    }
}

/// Where the sentinels of one family sit, hook by hook: `PRE_ROUTING first:rules -201:conntrack_in ...`.
pub fn layout(placed: &[Placed], family: &str) -> Vec<String> {
    const HOOKS: [&str; 5] = [
        "PRE_ROUTING",
        "LOCAL_IN",
        "FORWARD",
        "LOCAL_OUT",
        "POST_ROUTING",
    ];
    let name = |stage| match stage {
        stage::CONNTRACK_IN => "conntrack_in",
        stage::CONNTRACK_CONFIRM => "conntrack_confirm",
        _ => "rules",
    };
    let priority = |p: i32| match p {
        FIRST => "first".to_string(),
        BEFORE_CONFIRM => "last".to_string(),
        p => p.to_string(),
    };
    HOOKS
        .iter()
        .enumerate()
        .map(|(n, hook)| {
            let marks: Vec<String> = placed
                .iter()
                .filter(|p| p.family == family && p.hook == n as u32)
                .map(|p| format!("{}:{}", priority(p.priority), name(p.stage)))
                .collect();
            format!("{hook} {}", marks.join(" "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_are_wanted_where_netfilter_drops_outside_nftables_grow() {
        const NFT: u64 = 0xffff_0000;
        let site = |netns, location| NetfilterDropSite {
            netns,
            _pad: 0,
            location,
        };
        let known = |ino| ino != 7;
        let by_nftables = |addr| addr == NFT;
        let mut read = HashMap::new();
        let first = HashMap::from([
            (site(1, 0x10), 3),
            (site(2, NFT), 5),
            (site(7, 0x10), 1),
            (site(0, 0x10), 1),
        ]);
        assert_eq!(
            new_drops(&mut read, first.clone(), known, by_nftables),
            [1].into(),
            "nftables' drops need none, an unknown namespace names none"
        );
        assert!(
            !read.contains_key(&site(7, 0x10)),
            "a namespace not known yet is read again"
        );
        assert_eq!(
            new_drops(&mut read, first, |_| true, by_nftables),
            [7].into(),
            "counts that did not move are no new drops"
        );
        let later = HashMap::from([(site(1, 0x10), 4), (site(2, NFT), 6)]);
        assert_eq!(new_drops(&mut read, later, known, by_nftables), [1].into());
        assert_eq!(read.len(), 2, "sites the map forgot are forgotten");
    }

    #[test]
    fn every_conntrack_hook_has_its_marks() {
        let at = |hook| PLACEMENTS.iter().filter(move |p| p.hook == hook);
        for hook in [PRE_ROUTING, LOCAL_IN, FORWARD, LOCAL_OUT, POST_ROUTING] {
            let first = at(hook).min_by_key(|p| p.priority).unwrap();
            assert_eq!((first.priority, first.stage), (FIRST, stage::RULES));
        }
        for hook in [PRE_ROUTING, LOCAL_OUT] {
            let marks: Vec<_> = at(hook).map(|p| (p.priority, p.stage)).collect();
            assert!(marks.contains(&(CONNTRACK - 1, stage::CONNTRACK_IN)));
            assert!(marks.contains(&(CONNTRACK + 1, stage::RULES)));
        }
        for hook in [LOCAL_IN, POST_ROUTING] {
            assert!(at(hook).any(|p| p.priority == BEFORE_CONFIRM
                && p.stage == stage::CONNTRACK_CONFIRM
                && p.step < 0));
        }
    }
}
