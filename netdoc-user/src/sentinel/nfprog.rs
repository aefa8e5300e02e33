//! The sentinel program and the raw `bpf(2)` calls that load and link it. aya 0.14 has no
//! netfilter program type and its object parser refuses unknown sections, so the sentinel
//! (sixteen instructions) is assembled here; its only contract with the eBPF object is the
//! `NF_STAGE` map (`netdoc_common::conntrack::StageMark`).
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya_obj::generated::{bpf_attach_type, bpf_cmd, bpf_func_id, bpf_prog_type};

use crate::Error;

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
const PSEUDO_MAP_FD: u8 = aya_obj::generated::BPF_PSEUDO_MAP_FD as u8;
const NF_ACCEPT: i32 = libc::NF_ACCEPT;

/// Where the sentinel finds its namespace: `state->net` and `net->ns.inum`, from BTF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsPath {
    pub state_net: i16,
    pub net_inum: i16,
}

/// The sentinel: `mark = NF_STAGE[0]; mark.skb = ctx->skb; mark.stage = MARK (stage and hook);
/// mark.netns = ctx->state->net->ns.inum; return ACCEPT`. `struct bpf_nf_ctx` is `{ state, skb }`;
/// both are BTF pointers, so the loads through them are the verifier's checked (fault-safe) ones.
fn sentinel(map_fd: i32, mark: u8, netns: NetnsPath) -> Vec<Insn> {
    let lookup = bpf_func_id::BPF_FUNC_map_lookup_elem as i32;
    vec![
        insn(0x79, 6, 1, 8, 0),                  // r6 = *(u64 *)(r1 + 8): ctx->skb
        insn(0x79, 7, 1, 0, 0),                  // r7 = *(u64 *)(r1 + 0): ctx->state
        insn(0x79, 7, 7, netns.state_net, 0),    // r7 = state->net
        insn(0x61, 7, 7, netns.net_inum, 0),     // w7 = net->ns.inum
        insn(0x62, 10, 0, -4, 0),                // *(u32 *)(r10 - 4) = 0: the key
        insn(0x18, 1, PSEUDO_MAP_FD, 0, map_fd), // r1 = NF_STAGE
        insn(0x00, 0, 0, 0, 0),                  //      (upper half of the 64-bit load)
        insn(0xbf, 2, 10, 0, 0),                 // r2 = r10
        insn(0x07, 2, 0, 0, -4),                 // r2 += -4
        insn(0x85, 0, 0, 0, lookup),             // r0 = bpf_map_lookup_elem(r1, r2)
        insn(0x15, 0, 0, 3, 0),                  // if r0 == 0 goto accept
        insn(0x7b, 0, 6, 0, 0),                  // *(u64 *)(r0 + 0) = r6: mark.skb
        insn(0x62, 0, 0, 8, mark as i32),        // *(u32 *)(r0 + 8) = mark: stage and hook
        insn(0x63, 0, 7, 12, 0),                 // *(u32 *)(r0 + 12) = w7: mark.netns
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
    // SAFETY: `attr` is a bpf_attr prefix laid out for `cmd` (unit-tested) and outlives the
    // call; a non-negative result is a new fd that nothing else owns.
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

pub fn load(map: BorrowedFd<'_>, mark: u8, netns: NetnsPath) -> Result<OwnedFd, Error> {
    let insns = sentinel(map.as_raw_fd(), mark, netns);
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
            Some(libc::EINVAL) if last.is_empty() => Error::Unavailable(
                "the kernel refused a netfilter BPF program (netfilter links need 6.4+)".into(),
            ),
            Some(libc::EPERM) => {
                Error::Privilege("netfilter BPF programs need CAP_BPF and CAP_NET_ADMIN".into())
            }
            _ if last.is_empty() => Error::Failed(format!("loading the sentinel: {e}")),
            _ => Error::Failed(format!("loading the sentinel: {e}: {last}")),
        }
    })
}

/// Links `prog` at netfilter hook `hook` of family `pf`, in the calling thread's namespace.
pub fn link(prog: &OwnedFd, pf: u32, hook: u32, priority: i32) -> io::Result<OwnedFd> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use netdoc_common::conntrack::stage;

    #[test]
    fn instructions_encode_registers_and_the_map_load() {
        let netns = NetnsPath {
            state_net: 40,
            net_inum: 200,
        };
        let p = sentinel(7, stage::CONNTRACK_IN, netns);
        assert_eq!(p.len(), 16);
        assert_eq!(size_of::<Insn>(), 8);
        // r6 = *(u64 *)(r1 + 8): dst 6 in the low nibble, src 1 in the high one.
        assert_eq!((p[0].code, p[0].regs, p[0].off), (0x79, 0x16, 8));
        assert_eq!((p[2].regs, p[2].off), (0x77, 40), "r7 = state->net");
        assert_eq!(
            (p[3].code, p[3].off),
            (0x61, 200),
            "a 32-bit load of the inode"
        );
        assert_eq!(
            (p[5].regs, p[5].imm),
            (0x11, 7),
            "r1 = map fd 7 (pseudo map fd)"
        );
        assert_eq!(p[12].imm, stage::CONNTRACK_IN as i32);
        assert_eq!((p[13].regs, p[13].off), (0x70, 12), "mark.netns = w7");
        // The null check jumps over the three stores to `r0 = NF_ACCEPT`.
        assert_eq!(
            p[10 + 1 + p[10].off as usize],
            insn(0xb7, 0, 0, 0, NF_ACCEPT)
        );
        assert_eq!(p.last().unwrap().code, 0x95);
    }

    #[test]
    fn attr_layouts_match_the_kernel() {
        assert_eq!(std::mem::offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<NetfilterLinkAttr>(), 32);
    }
}
