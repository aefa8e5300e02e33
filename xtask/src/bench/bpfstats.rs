//! The kernel's own run-time statistics of BPF programs (`BPF_ENABLE_STATS`): the time each
//! tracer's programs spend per dropped packet, free of the noise that the sender's wall time
//! carries on a shared machine. The statistics add two clock reads to every program run, so
//! they are taken in a pass of their own, never during the timed rounds.
use std::{
    collections::BTreeMap,
    os::fd::{FromRawFd as _, OwnedFd},
};

use anyhow::{Result, bail};

/// `BPF_ENABLE_STATS` and `BPF_STATS_RUN_TIME` from `linux/bpf.h`.
const BPF_ENABLE_STATS: libc::c_int = 32;
const BPF_STATS_RUN_TIME: u32 = 0;

/// Run-time statistics are on while this lives; the kernel turns them off with the last
/// holder, so a benchmark that dies leaves the machine as it was.
pub struct RunTimeStats {
    _held: OwnedFd,
}

impl RunTimeStats {
    pub fn enable() -> Result<Self> {
        let mut attr = BPF_STATS_RUN_TIME;
        // SAFETY: BPF_ENABLE_STATS reads a `u32 type` attr that outlives the call; a
        // non-negative result is a new fd we own.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                std::ptr::from_mut(&mut attr),
                size_of::<u32>(),
            )
        };
        if fd < 0 {
            bail!(
                "BPF_ENABLE_STATS: {} (needs 5.8+)",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: a successful BPF_ENABLE_STATS returns a new fd nothing else owns.
        let held = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Self { _held: held })
    }
}

/// Run time (ns) and run count of each BPF program `pid` holds, by program id.
pub type Runs = BTreeMap<u32, (u64, u64)>;

/// The programs among `pid`'s open files, from their fdinfo.
pub fn programs(pid: u32) -> Runs {
    let mut runs = Runs::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return runs;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(ns), Some(count)) =
            (field("prog_id"), field("run_time_ns"), field("run_cnt"))
        {
            runs.insert(id as u32, (ns, count));
        }
    }
    runs
}

/// Program time and program runs per packet between two readings.
pub fn per_packet(before: &Runs, after: &Runs, packets: u64) -> (f64, f64) {
    let (ns, count) = after.iter().fold((0, 0), |(ns, count), (id, (t, n))| {
        let (t0, n0) = before.get(id).copied().unwrap_or((0, 0));
        (ns + t.saturating_sub(t0), count + n.saturating_sub(n0))
    });
    (ns as f64 / packets as f64, count as f64 / packets as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_packet_sums_every_program_and_counts_new_ones_from_zero() {
        let before = Runs::from([(1, (1_000, 10)), (2, (500, 5))]);
        let after = Runs::from([(1, (3_000, 30)), (2, (1_500, 25)), (3, (1_000, 10))]);
        assert_eq!(per_packet(&before, &after, 20), (200.0, 2.5));
    }
}
