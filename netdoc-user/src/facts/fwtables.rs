//! Whether the calling thread's network namespace has firewall tables: nftables tables (one
//! nfnetlink dump, what `nft list tables` asks) or legacy x_tables ones (`ip_tables_names`).
//! A namespace with tables may put conntrack to use with its very first packet, before its
//! conntrack counters show anything.
use std::{io, sync::OnceLock};

use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_NETFILTER};

use super::kallsyms;

/// Whether nf_tables is in the running kernel: built in (its functions in kallsyms) or loaded
/// as a module. Where it is not there are no nftables rules, and asking for them would load it.
/// Decided once: a module loaded later is missed until netdoc restarts, which errs towards
/// asking nothing of a kernel that did not ask for nftables.
pub fn nf_tables_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        let loaded = std::fs::read_to_string("/proc/modules")
            .is_ok_and(|m| m.lines().any(|l| l.starts_with("nf_tables ")));
        loaded || kallsyms::defines("nft_do_chain")
    })
}

/// Whether this namespace has any nftables or x_tables table.
pub fn any_here() -> bool {
    let legacy = ["ip_tables_names", "ip6_tables_names"].iter().any(|f| {
        std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
            .is_ok_and(|names| !names.trim().is_empty())
    });
    legacy || (nf_tables_present() && nft_tables_here().is_ok_and(|n| n > 0))
}

const NFNL_SUBSYS_NFTABLES: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;
const NFT_MSG_NEWTABLE: u16 = libc::NFT_MSG_NEWTABLE as u16;
const NFT_MSG_GETTABLE: u16 = libc::NFT_MSG_GETTABLE as u16;
const NLMSG_HEADER: usize = 16;

/// The number of nftables tables in this namespace, every family.
fn nft_tables_here() -> io::Result<usize> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    socket.send(&table_dump_request(), 0)?;
    let mut received = vec![0u8; 64 * 1024];
    let mut tables = 0;
    // A dump ends with NLMSG_DONE; bound the reads all the same.
    for _ in 0..1_000 {
        let size = socket.recv(&mut &mut received[..], 0)?;
        match count_tables(&received[..size])? {
            Batch::More(n) => tables += n,
            Batch::Done(n) => return Ok(tables + n),
        }
    }
    Err(io::Error::other("nftables: the table dump did not end"))
}

/// `NFT_MSG_GETTABLE` as a dump of every family: a netlink header and an `nfgenmsg`.
fn table_dump_request() -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HEADER + 4);
    m.extend_from_slice(&((NLMSG_HEADER + 4) as u32).to_ne_bytes());
    m.extend_from_slice(&(NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETTABLE).to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    // nfgenmsg: NFPROTO_UNSPEC (every family), NFNETLINK_V0, resource id 0.
    m.extend_from_slice(&[0, 0, 0, 0]);
    m
}

/// Tables in one read of the dump, and whether the dump ended there.
#[derive(Debug, PartialEq, Eq)]
enum Batch {
    More(usize),
    Done(usize),
}

/// Counts the `NFT_MSG_NEWTABLE` messages of one read; an error message is the kernel's errno.
fn count_tables(buf: &[u8]) -> io::Result<Batch> {
    let (mut at, mut tables) = (0, 0);
    while at + NLMSG_HEADER <= buf.len() {
        let word = |o: usize| u32::from_ne_bytes(buf[at + o..at + o + 4].try_into().unwrap());
        let length = word(0) as usize;
        let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        match kind {
            k if k == libc::NLMSG_DONE as u16 => return Ok(Batch::Done(tables)),
            k if k == libc::NLMSG_ERROR as u16 => {
                if at + NLMSG_HEADER + 4 > buf.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "nftables: a truncated netlink error",
                    ));
                }
                let errno = word(NLMSG_HEADER) as i32;
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                return Ok(Batch::Done(tables));
            }
            k if k == NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE => tables += 1,
            _ => {}
        }
        if length < NLMSG_HEADER {
            break;
        }
        // Messages are 4-byte aligned.
        at += (length + 3) & !3;
    }
    Ok(Batch::More(tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HEADER + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    const TABLE: u16 = NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWTABLE;

    #[test]
    fn the_request_is_a_gettable_dump_of_every_family() {
        let r = table_dump_request();
        assert_eq!(r.len(), 20);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0a01);
        assert_eq!(u16::from_ne_bytes([r[6], r[7]]), 0x301);
        assert_eq!(&r[16..], &[0, 0, 0, 0]);
    }

    #[test]
    fn tables_are_counted_across_reads_until_done() {
        // Odd payload lengths: the next message starts at the next 4-byte boundary.
        let first = [message(TABLE, &[1; 25]), message(TABLE, &[2; 31])].concat();
        assert_eq!(count_tables(&first).unwrap(), Batch::More(2));
        let last = [
            message(TABLE, &[3; 8]),
            message(libc::NLMSG_DONE as u16, &[0; 4]),
        ]
        .concat();
        assert_eq!(count_tables(&last).unwrap(), Batch::Done(1));
        let none = message(libc::NLMSG_DONE as u16, &[0; 4]);
        assert_eq!(count_tables(&none).unwrap(), Batch::Done(0));
    }

    #[test]
    fn a_refused_dump_is_the_kernels_errno() {
        let refused = message(libc::NLMSG_ERROR as u16, &(-libc::EPERM).to_ne_bytes());
        let e = count_tables(&refused).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    }
}
