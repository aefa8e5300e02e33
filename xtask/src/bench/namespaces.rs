//! What following many namespaces costs: with 1 and with 200 namespaces that use conntrack,
//! `netdoc drops --counts-only` host-wide: its attach time, the netfilter links and maps it
//! holds, its peak resident memory, the CPU it takes while the namespaces are quiet (its ticks
//! read their counters), and what the stage sentinels add to each datagram in one of those
//! namespaces (against `--no-causes`, interleaved): standing by, and placed in every one of them
//! after a NETFILTER_DROP there (a NAT clash at conntrack confirm).
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{flood_in, median, spawn, stop};

/// Namespaces made for the benchmark, removed on drop.
pub(super) struct Made(Vec<String>);

/// Namespaces made so far: each gets a name of its own.
static MADE: AtomicUsize = AtomicUsize::new(0);

impl Made {
    /// `n` namespaces with loopback up, a stateful nft rule, and one datagram through it (to a
    /// closed port: a drop), so conntrack is in use in each; and a NAT rule that makes every
    /// flow to [`CLASH_PORT`] after the first one clash ([`clash_in`]).
    pub(super) fn new(n: usize) -> Result<Self> {
        let first = MADE.fetch_add(n, Ordering::Relaxed);
        let made = Made(
            (first..first + n)
                .map(|i| format!("ndbench{}x{i}", std::process::id()))
                .collect(),
        );
        for ns in &made.0 {
            sh("ip", &["netns", "add", ns])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            let rules = format!(
                "add table inet b\nadd chain inet b out {{ type filter hook output priority 0; }}\nadd rule inet b out ct state new counter\nadd table ip n\nadd chain ip n post {{ type nat hook postrouting priority 100; }}\nadd rule ip n post udp dport {CLASH_PORT} snat to 127.0.0.1:5000\n"
            );
            let file = std::env::temp_dir().join(format!("{ns}.nft"));
            std::fs::write(&file, rules)?;
            sh(
                "ip",
                &["netns", "exec", ns, "nft", "-f", &file.to_string_lossy()],
            )?;
            let _ = std::fs::remove_file(&file);
            flood_in(Some(open(ns)?), 1, 0)?;
        }
        Ok(made)
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Flows to this port are source-NATed to one address and port: the second clashes with the
/// first at conntrack confirm, a NETFILTER_DROP freed in nf_hook_slow.
const CLASH_PORT: u16 = 47998;

/// Two flows to [`CLASH_PORT`] in namespace `ns`: the second is dropped (and refused).
fn clash_in(ns: &str) -> Result<()> {
    let file = open(ns)?;
    std::thread::spawn(move || -> Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns changes only this thread, with an open namespace file.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("cannot enter the benchmark namespace");
        }
        let socks = [
            std::net::UdpSocket::bind("127.0.0.1:0")?,
            std::net::UdpSocket::bind("127.0.0.1:0")?,
        ];
        for sock in &socks {
            // The clash refuses the second send (EPERM): expected.
            let _ = sock.send_to(b"clash", ("127.0.0.1", CLASH_PORT));
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("clash thread panicked"))?
}

/// Waits (at most 30 s) until the netfilter links of `pid` stop changing, at least `least` of
/// them: the sentinels placed in every namespace that had a NETFILTER_DROP.
fn placed(pid: u32, least: usize) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = usize::MAX;
    loop {
        let links = fds_with(pid, "link_type:\tnetfilter");
        if links >= least && links == last {
            return Ok(links);
        }
        if Instant::now() > deadline {
            bail!("the sentinels were not placed: {links} netfilter links");
        }
        last = links;
        std::thread::sleep(Duration::from_millis(1500));
    }
}

fn open(ns: &str) -> Result<std::fs::File> {
    std::fs::File::open(PathBuf::from("/run/netns").join(ns)).with_context(|| ns.to_string())
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .context(cmd.to_string())?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// File descriptors of a process whose fdinfo has `key` (e.g. `link_type:\tnetfilter`).
fn fds_with(pid: u32, key: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|info| info.lines().any(|l| l.starts_with(key)))
                .count()
        })
        .unwrap_or(0)
}

/// Where the stage sentinels are in a round.
#[derive(Clone, Copy, PartialEq)]
enum Sentinels {
    /// `--no-causes`: none.
    Off,
    /// Host-wide, with no NETFILTER_DROP: none placed yet.
    StandingBy,
    /// Placed in every namespace, each after a NETFILTER_DROP there.
    Placed,
}

/// How long netdoc's CPU time is watched while nothing happens: several of its one-second ticks.
const QUIET: Duration = Duration::from_secs(5);

/// The share of one CPU that process `pid` used over `window` (user and system time).
fn cpu_share(pid: u32, window: Duration) -> Result<f64> {
    let ticks = || -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // After the command name, which may hold spaces, come fields 3 (state) onwards:
        // utime and stime are fields 14 and 15.
        let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
        let field = |n: usize| -> f64 {
            rest.split_whitespace()
                .nth(n - 3)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(field(14) + field(15))
    };
    let (before, started) = (ticks()?, Instant::now());
    std::thread::sleep(window);
    let used = ticks()? - before;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(used / hz / started.elapsed().as_secs_f64())
}

pub fn run(netdoc: &Path, count: u64, rounds: usize, cpu: usize) -> Result<()> {
    if Command::new("nft").arg("--version").output().is_err()
        || !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists()
    {
        println!("namespaces: skipped (needs nft and nf_conntrack)");
        return Ok(());
    }
    println!(
        "\nnamespaces that use conntrack, netdoc drops --counts-only host-wide; sentinel cost from {count} datagrams in one of them, median of {rounds}"
    );
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>14} {:>18} {:>14} {:>12} {:>18}",
        "namespaces",
        "attach s",
        "peak MiB",
        "rss MiB",
        "quiet CPU %",
        "standing by ns/pkt",
        "links placed",
        "map fds",
        "placed ns/pkt"
    );
    let out = std::env::temp_dir().join(format!("netdoc-bench-ns-{}.json", std::process::id()));
    for n in [1, 200] {
        let made = Made::new(n)?;
        let mut samples: [Vec<f64>; 3] = Default::default();
        let mut figures = None;
        let mut quiet_cpu = None;
        let mut fds = (0, 0);
        for _ in 0..rounds {
            for (i, mode) in [Sentinels::Off, Sentinels::StandingBy, Sentinels::Placed]
                .into_iter()
                .enumerate()
            {
                let args: &[&str] = match mode {
                    Sentinels::Off => &["drops", "--counts-only", "--json", "--no-causes"],
                    _ => &["drops", "--counts-only", "--json"],
                };
                let tracer = spawn(netdoc, args, &out, cpu, "namespaces")?;
                let pid = tracer.child.id();
                if mode == Sentinels::Placed {
                    for ns in &made.0 {
                        clash_in(ns)?;
                    }
                    fds = (placed(pid, 11 * n)?, fds_with(pid, "map_type:"));
                }
                let sample = flood_in(Some(open(&made.0[0])?), count, cpu)?;
                if mode == Sentinels::StandingBy && quiet_cpu.is_none() {
                    quiet_cpu = Some(cpu_share(pid, QUIET)?);
                }
                let stopped = stop(tracer, &[0])?;
                if mode == Sentinels::StandingBy {
                    figures = Some(stopped);
                }
                samples[i].push(sample.cpu_ns);
            }
        }
        let stopped = figures.context("no round ran")?;
        let added = |i: usize| median(&samples[i], |x| *x) - median(&samples[0], |x| *x);
        println!(
            "{n:>10} {:>10.2} {:>10.1} {:>10.1} {:>14.2} {:>18.1} {:>14} {:>12} {:>18.1}",
            stopped.attach_s,
            stopped.peak_mib,
            stopped.resident_mib,
            quiet_cpu.unwrap_or_default() * 100.0,
            added(1),
            fds.0,
            fds.1,
            added(2)
        );
    }
    let _ = std::fs::remove_file(&out);
    Ok(())
}
