//! The conntrack stage sentinels, a component the drops and conntrack families share: netfilter bpf_link
//! "sentinels" sit at each hook's entry and just around conntrack's own hooks, and mark per
//! CPU the last skb they saw and the stage (`NF_STAGE`). The drop program reads that mark for
//! every `NETFILTER_DROP`, which pins the drop to conntrack-in, conntrack confirm or a rule.
//!
//! The program itself is assembled in `nfprog`. Links belong to this process: closing them
//! (dropping [`Sentinels`]) detaches them.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::{AsFd as _, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use aya::{Ebpf, maps::Map};
use netdoc_common::conntrack::stage;

mod nfprog;

use crate::{
    Error,
    facts::{conntrack, fwtables, netns},
    family::Family,
    model::{cause::Coverage, reasons::DropReasons},
    namespaces::{Inventory, NetnsRef},
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

/// Where sentinels go besides netdoc's own namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace where conntrack is in use or that has firewall tables (which may put it to
    /// use with their first packet), as soon as it is: the host-wide default.
    EveryActive,
    /// Only this namespace (`--netns`), whether or not conntrack is in use there yet.
    Only(u32),
}

/// At most this many namespaces get sentinels (22 links each): beyond it, their
/// `NETFILTER_DROP`s stay unclassified and a warning says so.
const MOST_NAMESPACES: usize = 256;

/// The links of one namespace other than netdoc's own.
struct Elsewhere {
    /// The inventory's serial of the namespace: the same inode later is another namespace.
    serial: u64,
    links: Vec<OwnedFd>,
}

/// Every sentinel link of a run. Dropping it detaches them all.
pub struct Sentinels {
    /// The sentinel programs by the mark each writes.
    programs: Arc<Vec<(u8, OwnedFd)>>,
    /// netdoc's own namespace's links.
    here: Vec<OwnedFd>,
    /// Links in other namespaces, by inode. A link keeps its namespace alive: these are closed
    /// as soon as the namespace has no other holder.
    elsewhere: BTreeMap<u32, Elsewhere>,
    /// Namespaces (serials) the kernel refused links in: not tried again.
    refused: BTreeSet<u64>,
    scope: Scope,
    bound_warned: bool,
    /// The layout in netdoc's own namespace.
    pub placed: Vec<Placed>,
    /// Why IPv6 has none (no IPv6 in the kernel), if so.
    pub ipv6_missing: Option<String>,
}

impl Sentinels {
    pub fn describe(&self) -> String {
        let links = self.here.len()
            + self
                .elsewhere
                .values()
                .map(|e| e.links.len())
                .sum::<usize>();
        let s = format!(
            "{links} netfilter links in {} namespace(s)",
            1 + self.elsewhere.len()
        );
        match &self.ipv6_missing {
            Some(why) => format!("{s} (IPv4 only: {why})"),
            None => s,
        }
    }

    /// The namespaces (inodes) with sentinels: netdoc's own and every other placed.
    pub fn namespaces(&self, own: u32) -> BTreeSet<u32> {
        std::iter::once(own)
            .chain(self.elsewhere.keys().copied())
            .collect()
    }

    /// [`Self::follow`], then tells the inventory where sentinels sit (causes are told apart
    /// only there).
    pub fn follow_and_record(&mut self, inventory: &mut Inventory, announce: bool) -> Vec<String> {
        let said = self.follow(inventory, announce);
        inventory.set_sentinels(self.namespaces(inventory.own()));
        said
    }

    /// Follows the namespaces: closes the links of those gone (so they can go), and places
    /// sentinels in each one the scope covers that has none yet. Returns what to tell the user.
    fn follow(&mut self, namespaces: &Inventory, announce: bool) -> Vec<String> {
        self.elsewhere
            .retain(|ino, e| namespaces.live(*ino).is_some_and(|n| n.serial == e.serial));
        let wanted: Vec<((u64, NetnsRef), PathBuf)> = namespaces
            .all()
            .filter(|n| {
                let ino = n.id.inode;
                !namespaces.is_own(ino)
                    && !self.elsewhere.contains_key(&ino)
                    && !self.refused.contains(&n.serial)
                    && match self.scope {
                        Scope::EveryActive => true,
                        Scope::Only(only) => only == ino,
                    }
            })
            .filter_map(|n| Some(((n.serial, n.id.clone()), n.file()?)))
            .collect();
        let room = MOST_NAMESPACES.saturating_sub(self.elsewhere.len());
        let (programs, count) = (self.programs.clone(), AtomicUsize::new(0));
        let everywhere = self.scope == Scope::EveryActive;
        let results = netns::visit(wanted, move |_| {
            // Tables may put conntrack to use with the namespace's first packet: place before it.
            let in_use = conntrack::read_stat().is_ok_and(|rows| conntrack::in_use(&rows))
                || fwtables::any_here();
            if everywhere && !in_use {
                return None;
            }
            if count.fetch_add(1, Ordering::Relaxed) >= room {
                return Some(Err(None));
            }
            Some(place_here(&programs).map_err(Some))
        });
        let mut said = Vec::new();
        for ((serial, id), result) in results {
            let (ino, name) = (id.inode, id.name);
            match result.flatten() {
                Some(Ok(here)) => {
                    let links = here.links;
                    if announce {
                        said.push(format!(
                            "conntrack stage sentinels placed in namespace {name} (inode {ino})"
                        ));
                    }
                    self.elsewhere.insert(ino, Elsewhere { serial, links });
                }
                Some(Err(Some(why))) => {
                    said.push(format!(
                        "warning: no conntrack stage sentinels in namespace {name}: {why}"
                    ));
                    self.refused.insert(serial);
                }
                Some(Err(None)) if !self.bound_warned => {
                    self.bound_warned = true;
                    said.push(format!(
                        "warning: conntrack stage sentinels are in {MOST_NAMESPACES} namespaces, the most netdoc places: NETFILTER_DROPs in namespace {name} and further ones stay unclassified"
                    ));
                }
                _ => {}
            }
        }
        said
    }
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

/// Loads the three sentinel programs against `ebpf`'s `NF_STAGE` map and links them in
/// netdoc's own namespace; [`Sentinels::follow`] places them in the others.
fn attach(ebpf: &Ebpf, scope: Scope) -> Result<Sentinels, Error> {
    let Some(Map::PerCpuArray(map)) = ebpf.map("NF_STAGE") else {
        return Err(Error::Failed("NF_STAGE map missing from the object".into()));
    };
    let fd = map.fd();
    // One program per mark (a stage at a hook): the mark is an immediate of the program.
    let marks: BTreeSet<u8> = PLACEMENTS.iter().map(Placement::mark).collect();
    let programs = Arc::new(
        marks
            .into_iter()
            .map(|m| nfprog::load(fd.as_fd(), m).map(|p| (m, p)))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let Here {
        links: here,
        placed,
        ipv6_missing,
    } = place_here(&programs)?;
    Ok(Sentinels {
        programs,
        here,
        elsewhere: BTreeMap::new(),
        refused: BTreeSet::new(),
        scope,
        bound_warned: false,
        placed,
        ipv6_missing,
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

/// Attaches the sentinels in netdoc's namespace if [`wanted`] gave a code; the coverage says
/// which drops can be told apart.
pub fn start(
    ebpf: &Ebpf,
    wanted: Option<u32>,
    scope: Scope,
) -> (Coverage, Result<Sentinels, Error>) {
    match wanted {
        Some(_) => match attach(ebpf, scope) {
            Ok(s) => (Coverage::Sentinels, Ok(s)),
            Err(why) => (Coverage::Blind, Err(why)),
        },
        None if !conntrack_loaded() => (
            Coverage::NoConntrack,
            Err(Error::Unavailable(
                "nf_conntrack is not loaded: every NETFILTER_DROP is a rule's".into(),
            )),
        ),
        None => (
            Coverage::Blind,
            Err(Error::Unavailable(
                "this kernel names no NETFILTER_DROP reason".into(),
            )),
        ),
    }
}

/// The stage sentinels as a member of a session: a component the drops and conntrack families
/// share, placed after the NET_RX hooks and before the drop program so that a
/// `NETFILTER_DROP` never misses its mark.
pub struct StageSentinels {
    /// The kernel's `NETFILTER_DROP` reason code, if it names one.
    netfilter_drop: Option<u32>,
}

impl StageSentinels {
    pub fn discover(reasons: &DropReasons) -> Self {
        Self {
            netfilter_drop: reasons.code("NETFILTER_DROP"),
        }
    }
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
        let (coverage, placed) = start(s.ebpf, worth_trying(self.netfilter_drop), scope);
        let status = placed.map(|mut sentinels| {
            // Every namespace in use before any drop is counted; later ones as the driver
            // follows them.
            for line in sentinels.follow_and_record(&mut s.namespaces.lock(), false) {
                say!("{line}");
            }
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
