//! `cargo xtask bench`: CPU cost per dropped packet with no tracer, an empty program (the floor),
//! netdoc counts-only, counts-only with the conntrack stage sentinels standing by (host-wide:
//! placed only where NETFILTER_DROPs come) and placed (`--netns`), streaming every drop,
//! under the default budget and with `--stack` (without the sentinels, as bpftrace has none), bpftrace's count
//! and printf, and `netdoc doctor` (every family), interleaved, with each tracer's attach time and peak resident
//! memory; plus event delivery at full drop rate, and what following many namespaces costs
//! (`namespaces`).
mod bpfstats;
mod export;
mod namespaces;
use std::{
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Datagrams per measurement.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Interleaved rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// CPU the sender is pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Scrapes of the exporter (20,160: a week at a 30 s scrape interval).
    #[arg(long, default_value_t = 20_160)]
    scrapes: usize,
    /// Run one part only.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

/// The parts of the benchmark.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Part {
    /// Per-packet cost of each mode.
    Drops,
    /// Following many namespaces.
    Namespaces,
    /// A week of scraping the exporter.
    Export,
}

/// A closed loopback port: every datagram becomes a NO_SOCKET drop.
const CLOSED_PORT: u16 = 47999;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    None,
    Floor,
    CountsOnly,
    /// Counts-only host-wide with the stage sentinels standing by: these drops are no
    /// NETFILTER_DROPs, so none are placed.
    CountsCauses,
    /// Counts-only with the stage sentinels placed (`--netns` of the sender's namespace places
    /// them from the start): on loopback each datagram crosses ten of them (LOCAL_OUT,
    /// POST_ROUTING, PRE_ROUTING, LOCAL_IN), its ICMP reply ten more.
    CountsPlaced,
    /// Every drop streamed (no budget), without the sentinels: what bpftrace's printf does.
    Streaming,
    /// Streaming under netdoc's default budget of records per second per CPU.
    StreamingBudget,
    /// Streaming every drop with its kernel stack (`--stack`).
    StreamingStack,
    /// bpftrace's in-kernel count per reason: what counts-only competes with.
    BpftraceCount,
    /// bpftrace printing a line per drop: what streaming competes with.
    BpftracePrintf,
    /// Every probe family at once: drops streamed with NET_RX context, the softirq, irq and NAPI
    /// hooks, the retransmit probes and the stage sentinels, with its rules run every second.
    Doctor,
}

impl Mode {
    const ALL: [Mode; 11] = [
        Mode::None,
        Mode::Floor,
        Mode::CountsOnly,
        Mode::CountsCauses,
        Mode::CountsPlaced,
        Mode::Streaming,
        Mode::StreamingBudget,
        Mode::StreamingStack,
        Mode::BpftraceCount,
        Mode::BpftracePrintf,
        Mode::Doctor,
    ];
    fn name(self) -> &'static str {
        match self {
            Mode::None => "no tracer",
            Mode::Floor => "empty program",
            Mode::CountsOnly => "netdoc counts-only",
            Mode::CountsCauses => "+ sentinels on demand",
            Mode::CountsPlaced => "+ sentinels placed",
            Mode::Streaming => "netdoc streaming",
            Mode::StreamingBudget => "+ default budget",
            Mode::StreamingStack => "streaming + --stack",
            Mode::BpftraceCount => "bpftrace count",
            Mode::BpftracePrintf => "bpftrace printf",
            Mode::Doctor => "netdoc doctor",
        }
    }
    /// Exit codes of a run that worked. The doctor's is its verdict: 1 when it finds something,
    /// as it does here (`udp_no_listener`); 0 only below its rules' thresholds (a tiny --count).
    fn worked(self) -> &'static [i32] {
        match self {
            Mode::Doctor => &[0, 1],
            _ => &[0],
        }
    }
}

struct Sample {
    /// Wall time per packet of the pinned sender: the loopback drop path runs entirely on its CPU.
    cpu_ns: f64,
    /// Busy time of the whole machine per packet (includes the tracer's userspace).
    box_ns: f64,
}

/// A netdoc that has said it is attached.
struct Tracer {
    child: Child,
    attach_s: f64,
    /// The rest of its stderr, read as it comes: the doctor announces each finding there while
    /// it runs, and a write to a closed pipe would end it in the middle of the flood.
    stderr: JoinHandle<Vec<String>>,
}

/// What a tracer costs besides the drop path.
struct Figures {
    /// From starting it to its "attached" line.
    attach_s: f64,
    /// Peak resident memory (`VmHWM`) just before it was stopped, in MiB: start-up included.
    peak_mib: f64,
    /// Resident memory (`VmRSS`) just before it was stopped, in MiB: what it holds while it runs.
    resident_mib: f64,
}

pub fn run(netdoc: &Path, args: &BenchArgs) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs: run it as root");
    }
    let part = |p: Part| args.only.is_none_or(|only| only == p);
    if part(Part::Drops) {
        per_packet(netdoc, args)?;
        footprint(netdoc, args)?;
    }
    if part(Part::Namespaces) {
        namespaces::run(netdoc, args.count / 4, args.rounds, args.cpu)?;
    }
    if part(Part::Export) {
        export::run(netdoc, args.scrapes, args.cpu)?;
    }
    Ok(())
}

/// Each mode's cost per dropped packet, interleaved, with attach time and peak memory.
fn per_packet(netdoc: &Path, args: &BenchArgs) -> Result<()> {
    let out_file = std::env::temp_dir().join(format!("netdoc-bench-{}.json", std::process::id()));
    let mut samples: Vec<Vec<Sample>> = Mode::ALL.iter().map(|_| Vec::new()).collect();
    let mut figures: Vec<Vec<Figures>> = Mode::ALL.iter().map(|_| Vec::new()).collect();
    let mut last_summary = None;
    let mut last_budget = None;
    let mut last_stack = None;
    let mut last_doctor = None;
    let mut stages = None;
    for round in 0..args.rounds {
        for (i, mode) in Mode::ALL.iter().enumerate() {
            let tracer = start(netdoc, *mode, &out_file, args.cpu)?;
            let sample = flood(args.count, args.cpu);
            // Stopped whatever the flood did: a tracer left attached would skew all that follows.
            if let Some(tracer) = tracer {
                figures[i].push(stop(tracer, mode.worked())?);
            }
            let sample = sample?;
            if *mode == Mode::Streaming {
                last_summary = last_line(&out_file, "summary");
            }
            if *mode == Mode::StreamingBudget {
                last_budget = last_line(&out_file, "summary");
            }
            if *mode == Mode::StreamingStack {
                last_stack = last_line(&out_file, "summary");
            }
            if *mode == Mode::Doctor {
                last_doctor = last_line(&out_file, "doctor");
            }
            if *mode == Mode::CountsPlaced {
                stages = last_line(&out_file, "summary").and_then(|s| {
                    let placed = s.get("netfilter_stages")?.as_str()?;
                    placed.contains("links").then(|| placed.to_string())
                });
            }
            eprintln!(
                "round {}/{}: {:<20} {:>6.0} ns/pkt on the sender CPU, {:>6.0} ns/pkt box busy",
                round + 1,
                args.rounds,
                mode.name(),
                sample.cpu_ns,
                sample.box_ns
            );
            samples[i].push(sample);
        }
    }
    let _ = std::fs::remove_file(&out_file);

    let cpu: Vec<f64> = samples.iter().map(|v| median(v, |s| s.cpu_ns)).collect();
    let busy: Vec<f64> = samples.iter().map(|v| median(v, |s| s.box_ns)).collect();
    println!(
        "\nnetdoc bench: {} datagrams to a closed UDP port per run, sender pinned to CPU {}, tracer on the other CPUs, median of {} interleaved rounds",
        args.count, args.cpu, args.rounds
    );
    println!(
        "{:<20} {:>14} {:>14} {:>12} {:>12} {:>16} {:>9} {:>9} {:>9}",
        "mode",
        "sender ns/pkt",
        "added ns/pkt",
        "spread ns",
        "pkt/s",
        "box busy ns/pkt",
        "attach s",
        "peak MiB",
        "rss MiB"
    );
    for (i, mode) in Mode::ALL.iter().enumerate() {
        // Max minus min over the rounds: an added cost below it is noise, not overhead.
        let xs: Vec<f64> = samples[i].iter().map(|s| s.cpu_ns).collect();
        let spread = xs.iter().copied().fold(f64::MIN, f64::max)
            - xs.iter().copied().fold(f64::MAX, f64::min);
        // No tracer, nothing attached and no memory of its own.
        let (attach, peak, resident) = match figures[i].is_empty() {
            true => ("-".to_string(), "-".to_string(), "-".to_string()),
            false => (
                format!("{:.2}", median(&figures[i], |f| f.attach_s)),
                format!("{:.1}", median(&figures[i], |f| f.peak_mib)),
                format!("{:.1}", median(&figures[i], |f| f.resident_mib)),
            ),
        };
        println!(
            "{:<20} {:>14.1} {:>14.1} {:>12.1} {:>12.0} {:>16.0} {attach:>9} {peak:>9} {resident:>9}",
            mode.name(),
            cpu[i],
            cpu[i] - cpu[0],
            spread,
            1e9 / cpu[i],
            busy[i]
        );
    }
    let floor = cpu[1] - cpu[0];
    let counts = cpu[2] - cpu[0];
    if floor > 0.0 {
        println!(
            "counts-only added / empty-program added = {:.2} (target <= 1.5)",
            counts / floor
        );
    } else {
        println!(
            "empty-program overhead is below this run's noise; ratio not meaningful (more --count or --rounds)"
        );
    }
    let added = |m: Mode| {
        let i = Mode::ALL.iter().position(|x| *x == m).unwrap_or(0);
        cpu[i] - cpu[0]
    };
    println!(
        "beside bpftrace in this run: counts-only added / bpftrace count added = {:.2} (target <= 0.33); streaming added / bpftrace printf added = {:.2} (target <= 0.1)",
        added(Mode::CountsOnly) / added(Mode::BpftraceCount),
        added(Mode::Streaming) / added(Mode::BpftracePrintf)
    );
    println!(
        "conntrack stage sentinels added {:.1} ns/pkt to counts-only standing by (target <= 200), {:.1} placed ({})",
        added(Mode::CountsCauses) - added(Mode::CountsOnly),
        added(Mode::CountsPlaced) - added(Mode::CountsOnly),
        stages.as_deref().unwrap_or("not placed: no nf_conntrack")
    );
    match last_summary {
        Some(s) => println!("streaming at full drop rate: {}", accounting(&s, "")),
        None => println!("streaming: no summary line was read"),
    }
    match last_budget {
        Some(s) => println!(
            "streaming under the default budget ({} per second per CPU): {}",
            s["max_events_per_sec"],
            accounting(&s, "")
        ),
        None => println!("streaming under the default budget: no summary line was read"),
    }
    match last_stack {
        Some(s) => println!(
            "streaming with --stack: {}; stacks missing {}; added / streaming added = {:.2}",
            accounting(&s, ""),
            s["stacks_missing"],
            added(Mode::StreamingStack) / added(Mode::Streaming)
        ),
        None => println!("streaming with --stack: no summary line was read"),
    }
    match last_doctor {
        Some(r) => {
            let findings: Vec<String> = r["findings"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| format!("{} ({})", f["id"].as_str().unwrap_or("?"), f["affected"]))
                .collect();
            println!(
                "doctor at full drop rate: {}; findings: {}",
                accounting(&r, "drops_"),
                findings.join(", ")
            );
        }
        None => println!("doctor: no report was read"),
    }
    program_time(netdoc, args)
}

/// Each command's attach time and memory, started alone with nothing flooding: the figures the
/// targets are set per command in (attach within 0.3 s, at most 32 MiB resident).
fn footprint(netdoc: &Path, args: &BenchArgs) -> Result<()> {
    // The exit codes each ends with on SIGINT: the doctor's 1 is its verdict (findings).
    const COMMANDS: [(&str, &[i32]); 6] = [
        ("drops", &[0]),
        ("softirq", &[0]),
        ("irq", &[0]),
        ("retrans", &[0]),
        ("conntrack", &[0]),
        ("doctor", &[0, 1]),
    ];
    let out_file = std::env::temp_dir().join(format!(
        "netdoc-bench-footprint-{}.json",
        std::process::id()
    ));
    println!(
        "attach and memory per command (each alone, its JSON output, stopped after a second; median of {} rounds)",
        args.rounds
    );
    println!(
        "{:<12} {:>9} {:>9} {:>9}",
        "command", "attach s", "peak MiB", "rss MiB"
    );
    for (command, worked) in COMMANDS {
        let mut figures = Vec::new();
        for _ in 0..args.rounds {
            let tracer = spawn(netdoc, &[command, "--json"], &out_file, args.cpu, command)?;
            // A tick or two, so the resident figure is what it holds while it runs.
            std::thread::sleep(std::time::Duration::from_secs(1));
            figures.push(stop(tracer, worked)?);
        }
        println!(
            "{command:<12} {:>9.2} {:>9.1} {:>9.1}",
            median(&figures, |f| f.attach_s),
            median(&figures, |f| f.peak_mib),
            median(&figures, |f| f.resident_mib)
        );
    }
    let _ = std::fs::remove_file(&out_file);
    Ok(())
}

/// A pass of its own with the kernel's BPF run-time statistics on: each tracer's program time
/// and program runs per dropped packet. Sentinels and NET_RX context hooks run on packets and
/// softirqs, not on drops, so they count here too.
fn program_time(netdoc: &Path, args: &BenchArgs) -> Result<()> {
    let packets = (args.count / 4).max(10_000);
    let out_file =
        std::env::temp_dir().join(format!("netdoc-bench-stats-{}.json", std::process::id()));
    println!(
        "in-kernel program time ({packets} datagrams per mode, kernel BPF run-time statistics, a separate pass; each program run includes the statistics' own two clock reads, which the empty program shows)"
    );
    // Held for the whole pass: the statistics count only between the two readings anyway.
    let _stats = match bpfstats::RunTimeStats::enable() {
        Ok(stats) => stats,
        Err(e) => {
            println!("in-kernel program time: skipped ({e:#})");
            return Ok(());
        }
    };
    println!(
        "{:<20} {:>14} {:>16}",
        "mode", "BPF ns/pkt", "program runs/pkt"
    );
    for mode in Mode::ALL.iter().filter(|m| **m != Mode::None) {
        let Some(tracer) = start(netdoc, *mode, &out_file, args.cpu)? else {
            continue;
        };
        let pid = tracer.child.id();
        let before = bpfstats::programs(pid);
        let flooded = flood(packets, args.cpu).map(|_| bpfstats::programs(pid));
        // Stopped whatever the flood did: a tracer left attached would skew all that follows.
        let stopped = stop(tracer, mode.worked());
        let after = flooded?;
        stopped?;
        let (ns, runs) = bpfstats::per_packet(&before, &after, packets);
        println!("{:<20} {ns:>14.0} {runs:>16.1}", mode.name());
    }
    let _ = std::fs::remove_file(&out_file);
    Ok(())
}

/// The median of `f` over `v` (not empty).
fn median<T>(v: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut xs: Vec<f64> = v.iter().map(f).collect();
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The drop events the kernel counted against those delivered and lost, from a summary or
/// report line whose fields are named `{prefix}matched` and so on.
fn accounting(line: &serde_json::Value, prefix: &str) -> String {
    let get = |k: &str| {
        line.get(format!("{prefix}{k}").as_str())
            .and_then(|v| v.as_u64())
            .unwrap_or(0)
    };
    let (matched, delivered, lost, sampled) = (
        get("matched"),
        get("delivered"),
        get("lost"),
        get("sampled"),
    );
    format!(
        "kernel counted {matched}, delivered {delivered}, lost {lost}, sampled {sampled} ({})",
        if delivered + lost + sampled == matched {
            "delivered + lost + sampled == counted"
        } else {
            "MISMATCH"
        }
    )
}

/// Starts the tracer of `mode` and waits until it reports its probe attached.
fn start(netdoc: &Path, mode: Mode, out_file: &Path, sender_cpu: usize) -> Result<Option<Tracer>> {
    let args: &[&str] = match mode {
        Mode::None => return Ok(None),
        Mode::Floor => &["bench-floor"],
        Mode::CountsOnly => &["drops", "--counts-only", "--json", "--no-causes"],
        Mode::CountsCauses => &["drops", "--counts-only", "--json"],
        Mode::CountsPlaced => &[
            "drops",
            "--counts-only",
            "--json",
            "--netns",
            "/proc/self/ns/net",
        ],
        Mode::Streaming => &[
            "drops",
            "--json",
            "--no-causes",
            "--max-events-per-sec",
            "0",
        ],
        Mode::StreamingBudget => &["drops", "--json", "--no-causes"],
        Mode::StreamingStack => &[
            "drops",
            "--json",
            "--no-causes",
            "--max-events-per-sec",
            "0",
            "--stack",
        ],
        // Its --duration defaults to 30 s, which a slow flood could outlast: it is stopped with
        // SIGINT like the others instead.
        Mode::Doctor => &["doctor", "--json", "--duration", "1h"],
        Mode::BpftraceCount => {
            return bpftrace(
                "tracepoint:skb:kfree_skb { @[args->reason] = count(); }",
                out_file,
                sender_cpu,
            )
            .map(Some);
        }
        Mode::BpftracePrintf => {
            return bpftrace(
                "tracepoint:skb:kfree_skb { printf(\"%d %d %p\\n\", cpu, args->reason, args->location); }",
                out_file,
                sender_cpu,
            )
            .map(Some);
        }
    };
    spawn(netdoc, args, out_file, sender_cpu, mode.name()).map(Some)
}

/// Starts netdoc with `args`, its userspace off the sender's CPU, and waits until it reports
/// its probe attached.
fn spawn(
    netdoc: &Path,
    args: &[&str],
    out_file: &Path,
    sender_cpu: usize,
    what: &str,
) -> Result<Tracer> {
    let started = Instant::now();
    let stdout = std::fs::File::create(out_file)?;
    let mut cmd = Command::new(netdoc);
    off_cpu(&mut cmd, sender_cpu);
    let mut child = cmd
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting netdoc")?;
    let stderr = child.stderr.take().context("netdoc stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line?;
        if line.contains("attached") {
            let attach_s = started.elapsed().as_secs_f64();
            let stderr = std::thread::spawn(move || lines.map_while(Result::ok).collect());
            return Ok(Tracer {
                child,
                attach_s,
                stderr,
            });
        }
        eprintln!("{line}");
    }
    let _ = child.wait();
    bail!("netdoc exited before attaching ({what})")
}

/// Starts bpftrace with `program` (stdout to `out_file`), off the sender's CPU, and waits
/// until it says it is attaching; its probe is in place once the first line is written.
fn bpftrace(program: &str, out_file: &Path, sender_cpu: usize) -> Result<Tracer> {
    let started = Instant::now();
    let stdout = std::fs::File::create(out_file)?;
    let mut cmd = Command::new("bpftrace");
    off_cpu(&mut cmd, sender_cpu);
    let mut child = cmd
        .args(["-e", program])
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .context("starting bpftrace (Debian package bpftrace)")?;
    let stderr = child.stderr.take().context("bpftrace stderr")?;
    let stderr = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect()
    });
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(out_file)?.contains("Attaching") {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!("bpftrace did not attach: {:?}", stderr.join());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(Tracer {
        child,
        attach_s: started.elapsed().as_secs_f64(),
        stderr,
    })
}

/// Keeps a tracer's userspace off the sender's CPU.
fn off_cpu(cmd: &mut Command, sender_cpu: usize) {
    // SAFETY: pre_exec runs sched_setaffinity only, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            for c in 0..libc::CPU_SETSIZE as usize {
                if c != sender_cpu {
                    libc::CPU_SET(c, &mut set);
                }
            }
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            Ok(())
        });
    }
}

/// Stops `tracer` with SIGINT; an exit code other than those in `worked` is an error that
/// carries what it said on stderr.
fn stop(mut tracer: Tracer, worked: &[i32]) -> Result<Figures> {
    let figures = Figures {
        attach_s: tracer.attach_s,
        peak_mib: status_kib(tracer.child.id(), "VmHWM") as f64 / 1024.0,
        resident_mib: status_kib(tracer.child.id(), "VmRSS") as f64 / 1024.0,
    };
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe { libc::kill(tracer.child.id() as i32, libc::SIGINT) };
    let status = tracer.child.wait()?;
    let said = tracer.stderr.join().unwrap_or_default();
    if !status.code().is_some_and(|c| worked.contains(&c)) {
        bail!("netdoc exited with {status}: {}", said.join(" / "));
    }
    Ok(figures)
}

/// A memory figure of a process from `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The last line of a netdoc's JSON output, if its `type` is `kind`.
fn last_line(path: &Path, kind: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let last = text.lines().last()?;
    let v: serde_json::Value = serde_json::from_str(last).ok()?;
    (v["type"] == kind).then_some(v)
}

/// Busy CPU time of the whole machine, in nanoseconds, from /proc/stat.
fn busy_ns() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f.get(7).copied().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy * 1e9 / hz)
}

/// Sends `count` datagrams to the closed port from a thread pinned to `cpu`.
fn flood(count: u64, cpu: usize) -> Result<Sample> {
    flood_in(None, count, cpu)
}

/// [`flood`] on the loopback of the namespace at `ns`, when given.
fn flood_in(ns: Option<std::fs::File>, count: u64, cpu: usize) -> Result<Sample> {
    let before = busy_ns()?;
    let start = Instant::now();
    std::thread::spawn(move || -> Result<()> {
        if let Some(ns) = ns {
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns changes only this thread, with an open namespace file.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("cannot enter the benchmark namespace");
            }
        }
        // SAFETY: sched_setaffinity reads a cpu_set_t owned by this frame.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                bail!("cannot pin the sender to CPU {cpu}");
            }
        }
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        let payload = [0u8; 16];
        for _ in 0..count {
            // Unconnected: the ICMP port-unreachable replies must not turn into send errors.
            sock.send_to(&payload, ("127.0.0.1", CLOSED_PORT))?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("sender thread panicked"))??;
    let wall = start.elapsed().as_secs_f64();
    let busy = busy_ns()? - before;
    Ok(Sample {
        cpu_ns: wall * 1e9 / count as f64,
        box_ns: busy / count as f64,
    })
}
