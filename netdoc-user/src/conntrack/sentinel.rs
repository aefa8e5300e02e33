//! Layer (b) of conntrack evidence, for kernels without a function hook: netfilter bpf_link
//! "sentinels" sit at each hook's entry and just around conntrack's own hooks, and mark per
//! CPU the last skb they saw and the stage (`NF_STAGE`). The drop program reads that mark for
//! every `NETFILTER_DROP`, which pins the drop to conntrack-in, conntrack confirm or a rule.
//!
//! aya 0.14 has no netfilter program type and its object parser refuses unknown sections, so
//! the sentinel (twelve instructions) is assembled here and loaded with raw `bpf(2)` calls.
//! Links belong to this process: closing them (dropping [`Sentinels`]) detaches them.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{Ebpf, maps::Map};
use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_func_id, bpf_prog_type};
use netdoc_common::conntrack::stage;

use super::stage::Coverage;
use crate::{
    drops::reasons::DropReasons,
    facts::netns,
    planner::{Attempt, Hook, Outcome, ProbePlan},
};

pub const PROBE: &str = "conntrack_stage";
const PROGRAM: &str = "nf_stage_sentinel";

const NFPROTO_IPV4: u32 = 2;
const NFPROTO_IPV6: u32 = 10;
const PRE_ROUTING: u32 = 0;
const LOCAL_IN: u32 = 1;
const FORWARD: u32 = 2;
const LOCAL_OUT: u32 = 3;
const POST_ROUTING: u32 = 4;
/// `NF_IP_PRI_CONNTRACK` (and IPv6's): conntrack-in runs here.
const CONNTRACK: i32 = -200;
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
    Placement {
        hook: PRE_ROUTING,
        priority: FIRST,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: PRE_ROUTING,
        priority: CONNTRACK - 1,
        step: -1,
        stage: stage::CONNTRACK_IN,
    },
    Placement {
        hook: PRE_ROUTING,
        priority: CONNTRACK + 1,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: LOCAL_IN,
        priority: FIRST,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: LOCAL_IN,
        priority: BEFORE_CONFIRM,
        step: -1,
        stage: stage::CONNTRACK_CONFIRM,
    },
    Placement {
        hook: FORWARD,
        priority: FIRST,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: LOCAL_OUT,
        priority: FIRST,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: LOCAL_OUT,
        priority: CONNTRACK - 1,
        step: -1,
        stage: stage::CONNTRACK_IN,
    },
    Placement {
        hook: LOCAL_OUT,
        priority: CONNTRACK + 1,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: POST_ROUTING,
        priority: FIRST,
        step: 1,
        stage: stage::RULES,
    },
    Placement {
        hook: POST_ROUTING,
        priority: BEFORE_CONFIRM,
        step: -1,
        stage: stage::CONNTRACK_CONFIRM,
    },
];

/// One BPF instruction, as `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// Source register in the high nibble, destination in the low one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map fd.
const PSEUDO_MAP_FD: u8 = 1;
const NF_ACCEPT: i32 = 1;

/// The sentinel: `mark = NF_STAGE[0]; mark.skb = ctx->skb; mark.stage = STAGE; return ACCEPT`.
/// `struct bpf_nf_ctx` is `{ state, skb }`.
fn sentinel(map_fd: i32, stage: u8) -> Vec<Insn> {
    let lookup = bpf_func_id::BPF_FUNC_map_lookup_elem as i32;
    vec![
        insn(0x79, 6, 1, 8, 0),                  // r6 = *(u64 *)(r1 + 8): ctx->skb
        insn(0x62, 10, 0, -4, 0),                // *(u32 *)(r10 - 4) = 0: the key
        insn(0x18, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = NF_STAGE
        insn(0x00, 0, 0, 0, 0),                  //      (upper half of the 64-bit load)
        insn(0xbf, 2, 10, 0, 0),                 // r2 = r10
        insn(0x07, 2, 0, 0, -4),                 // r2 += -4
        insn(0x85, 0, 0, 0, lookup),             // r0 = bpf_map_lookup_elem(r1, r2)
        insn(0x15, 0, 0, 2, 0),                  // if r0 == 0 goto accept
        insn(0x7b, 0, 6, 0, 0),                  // *(u64 *)(r0 + 0) = r6: mark.skb
        insn(0x62, 0, 0, 8, stage as i32),       // *(u32 *)(r0 + 8) = stage: mark.stage
        insn(0xb7, 0, 0, 0, NF_ACCEPT),          // accept: r0 = NF_ACCEPT
        insn(0x95, 0, 0, 0, 0),                  // exit
    ]
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`; the kernel zero-fills the rest.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_LINK_CREATE` part of `union bpf_attr`, netfilter flavour.
#[repr(C)]
struct NetfilterLinkAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pf: u32,
    hooknum: u32,
    priority: i32,
    nf_flags: u32,
}

fn bpf<T>(cmd: bpf_cmd, attr: &mut T) -> io::Result<OwnedFd> {
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a successful BPF_PROG_LOAD or BPF_LINK_CREATE returns a new fd we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn load(map: BorrowedFd<'_>, stage: u8) -> Result<OwnedFd, String> {
    let insns = sentinel(map.as_raw_fd(), stage);
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: bpf_prog_type::BPF_PROG_TYPE_NETFILTER as u32,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        expected_attach_type: bpf_attach_type::BPF_NETFILTER as u32,
        ..Default::default()
    };
    attr.prog_name[..12].copy_from_slice(b"nf_stage_snt");
    bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let verifier = String::from_utf8_lossy(&log);
        let last = verifier
            .trim_end_matches('\0')
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("")
            .to_string();
        match e.raw_os_error() {
            Some(libc::EINVAL) if last.is_empty() => {
                "the kernel refused a netfilter BPF program (netfilter links need 6.4+)".into()
            }
            Some(libc::EPERM) => "netfilter BPF programs need CAP_BPF and CAP_NET_ADMIN".into(),
            _ if last.is_empty() => format!("loading the sentinel: {e}"),
            _ => format!("loading the sentinel: {e}: {last}"),
        }
    })
}

/// One attached sentinel, as `netdoc probes` and the summaries report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub family: &'static str,
    pub hook: u32,
    pub priority: i32,
    pub stage: u8,
}

/// Every sentinel link of a run. Dropping it detaches them all.
pub struct Sentinels {
    links: Vec<OwnedFd>,
    pub placed: Vec<Placed>,
    /// How many namespaces carry sentinels.
    pub namespaces: usize,
    /// Why IPv6 has none (no IPv6 in the kernel), if so.
    pub ipv6_missing: Option<String>,
}

impl Sentinels {
    pub fn describe(&self) -> String {
        let s = format!(
            "{} netfilter links in {} namespace(s)",
            self.links.len(),
            self.namespaces
        );
        match &self.ipv6_missing {
            Some(why) => format!("{s} (IPv4 only: {why})"),
            None => s,
        }
    }
}

fn link(prog: &OwnedFd, pf: u32, hook: u32, priority: i32) -> io::Result<OwnedFd> {
    let mut attr = NetfilterLinkAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: 0,
        attach_type: bpf_attach_type::BPF_NETFILTER as u32,
        flags: 0,
        pf,
        hooknum: hook,
        priority,
        nf_flags: 0,
    };
    bpf(bpf_cmd::BPF_LINK_CREATE, &mut attr)
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
            .find(|(s, _)| *s == p.stage)
            .expect("a program per stage")
            .1;
        let mut attempt = 0;
        loop {
            let priority = p.priority + attempt * p.step;
            match link(prog, pf, p.hook, priority) {
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
fn place_here(programs: &[(u8, OwnedFd)]) -> Result<Here, String> {
    let (mut links, mut placed) =
        place_family(programs, NFPROTO_IPV4).map_err(|e| match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => {
                format!("the kernel refused a netfilter link ({e}): netfilter links need 6.4+")
            }
            _ => format!("attaching a netfilter link: {e}"),
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

/// Loads the three sentinel programs against `ebpf`'s `NF_STAGE` map and links them in this
/// namespace and in each of `namespaces` (files such as /run/netns/NAME).
fn attach(ebpf: &Ebpf, namespaces: &[PathBuf]) -> Result<Sentinels, String> {
    let Some(Map::PerCpuArray(map)) = ebpf.map("NF_STAGE") else {
        return Err("NF_STAGE map missing from the object".into());
    };
    let fd = map.fd();
    let programs = std::sync::Arc::new(
        [stage::RULES, stage::CONNTRACK_IN, stage::CONNTRACK_CONFIRM]
            .into_iter()
            .map(|s| load(std::os::fd::AsFd::as_fd(fd), s).map(|p| (s, p)))
            .collect::<Result<Vec<_>, _>>()?,
    );
    let Here {
        mut links,
        mut placed,
        ipv6_missing,
    } = place_here(&programs)?;
    for ns in namespaces {
        let progs = programs.clone();
        let there = netns::spawn_in(ns, move || Some(place_here(&progs)))
            .map_err(|e| format!("{}: {e}", ns.display()))?
            .join()
            .ok()
            .flatten()
            .ok_or_else(|| format!("could not enter namespace {}", ns.display()))??;
        links.extend(there.links);
        placed.extend(there.placed);
    }
    Ok(Sentinels {
        links,
        placed,
        namespaces: 1 + namespaces.len(),
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
    conntrack_loaded()
        .then(|| reasons.code("NETFILTER_DROP"))
        .flatten()
}

/// Attaches the sentinels if [`wanted`] gave a code, in this namespace and `namespaces`; the
/// coverage says which drops can be told apart.
pub fn start(
    ebpf: &Ebpf,
    wanted: Option<u32>,
    namespaces: &[PathBuf],
) -> (Coverage, Result<Sentinels, String>) {
    match wanted {
        Some(_) => match attach(ebpf, namespaces) {
            Ok(s) => (Coverage::Sentinels, Ok(s)),
            Err(why) => (Coverage::Blind, Err(why)),
        },
        None if !conntrack_loaded() => (
            Coverage::NoConntrack,
            Err("nf_conntrack is not loaded: every NETFILTER_DROP is a rule's".into()),
        ),
        None => (
            Coverage::Blind,
            Err("this kernel names no NETFILTER_DROP reason".into()),
        ),
    }
}

/// The plan line for `netdoc probes`, from an attach result (`tried`: whether it was tried).
pub fn plan(result: &Result<Sentinels, String>, tried: bool) -> ProbePlan {
    ProbePlan {
        probe: PROBE,
        attempts: vec![Attempt {
            hook: Hook::NetfilterLink,
            program: PROGRAM,
            outcome: match result {
                Ok(_) => Outcome::Attached,
                Err(why) if tried => Outcome::Failed(why.clone()),
                Err(why) => Outcome::Skipped(why.clone()),
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
    fn instructions_encode_registers_and_the_map_load() {
        let p = sentinel(7, stage::CONNTRACK_IN);
        assert_eq!(p.len(), 12);
        assert_eq!(size_of::<Insn>(), 8);
        // r6 = *(u64 *)(r1 + 8): dst 6 in the low nibble, src 1 in the high one.
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x79, 0x16, 8));
        assert_eq!(
            (p[2].regs, p[2].imm),
            (0x11, 7),
            "r1 = map fd 7 (pseudo map fd)"
        );
        assert_eq!(p[9].imm, stage::CONNTRACK_IN as i32);
        // The null check jumps over both stores to `r0 = NF_ACCEPT`.
        assert_eq!(p[7 + 1 + p[7].off as usize], insn(0xb7, 0, 0, 0, NF_ACCEPT));
        assert_eq!(p.last().unwrap().code, 0x95);
    }

    #[test]
    fn attr_layouts_match_the_kernel() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<NetfilterLinkAttr>(), 32);
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
