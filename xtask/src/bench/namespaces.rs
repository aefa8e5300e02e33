//! What following many namespaces costs: with 1 and with 200 namespaces that use conntrack,
//! `netdoc drops --counts-only` host-wide: its attach time, the netfilter links and maps it
//! holds, its peak resident memory, the CPU it takes while the namespaces are quiet (its ticks
//! read their counters), and what the stage sentinels add to each datagram in one of those
//! namespaces (against `--no-causes`, interleaved).
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
    /// closed port: a drop), so conntrack is in use in each.
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
            let rules = "add table inet b\nadd chain inet b out { type filter hook output priority 0; }\nadd rule inet b out ct state new counter\n";
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
        "{:>10} {:>10} {:>14} {:>12} {:>10} {:>10} {:>14} {:>18}",
        "namespaces",
        "attach s",
        "netfilter links",
        "map fds",
        "peak MiB",
        "rss MiB",
        "quiet CPU %",
        "sentinels ns/pkt"
    );
    let out = std::env::temp_dir().join(format!("netdoc-bench-ns-{}.json", std::process::id()));
    for n in [1, 200] {
        let made = Made::new(n)?;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        let mut figures = None;
        let mut quiet_cpu = None;
        for _ in 0..rounds {
            for causes in [false, true] {
                let args: &[&str] = match causes {
                    true => &["drops", "--counts-only", "--json"],
                    false => &["drops", "--counts-only", "--json", "--no-causes"],
                };
                let tracer = spawn(netdoc, args, &out, cpu, "namespaces")?;
                let sample = flood_in(Some(open(&made.0[0])?), count, cpu)?;
                let pid = tracer.child.id();
                let fds = causes.then(|| {
                    (
                        fds_with(pid, "link_type:\tnetfilter"),
                        fds_with(pid, "map_type:"),
                    )
                });
                if causes && quiet_cpu.is_none() {
                    quiet_cpu = Some(cpu_share(pid, QUIET)?);
                }
                let stopped = stop(tracer, &[0])?;
                match fds {
                    Some(fds) => {
                        figures = Some((stopped, fds));
                        with.push(sample.cpu_ns);
                    }
                    None => without.push(sample.cpu_ns),
                }
            }
        }
        let (stopped, (links, maps)) = figures.context("no round ran")?;
        println!(
            "{n:>10} {:>10.2} {links:>14} {maps:>12} {:>10.1} {:>10.1} {:>14.2} {:>18.1}",
            stopped.attach_s,
            stopped.peak_mib,
            stopped.resident_mib,
            quiet_cpu.unwrap_or_default() * 100.0,
            median(&with, |x| *x) - median(&without, |x| *x)
        );
    }
    let _ = std::fs::remove_file(&out);
    Ok(())
}
