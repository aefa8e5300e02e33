//! Kernel integration tests: the real eBPF programs in the running kernel, real drops caused in
//! network namespaces that each test creates and removes. They need root; without it they say
//! so and pass nothing off as tested.
use std::{
    io::Read as _,
    process::{Command, Stdio},
};

use netdoc_user::output::{self, NamedDrop, Outcome};
use serde_json::Value;

mod common;
use common::*;

/// Runs netdoc with `args` while `closed` datagrams hit the closed port and `firewalled` the
/// nft-dropped one; stops it with `signal` once the kernel's counters saw every drop, checks it
/// exited cleanly and left nothing loaded, and returns its JSON lines.
fn trace(pair: &Pair, args: &[&str], closed: usize, firewalled: usize, signal: i32) -> Vec<Value> {
    let netdoc = start(args);
    pair.send(CLOSED_PORT, closed);
    pair.send(FIREWALLED_PORT, firewalled);
    pair.wait_for_drops(closed as u64, firewalled as u64);
    let (status, lines) = netdoc.stop(signal);
    assert!(status.success(), "netdoc exited with {status}");
    assert_nothing_left();
    lines
}

fn streaming_scenario(tag: &str, subnet: u8, extra: &[&str], expected_hook: &str) {
    let pair = Pair::new(tag, subnet);
    let mut args = vec!["drops", "--json", "--netns", pair.b.as_str()];
    args.extend(extra);
    let lines = trace(&pair, &args, N, N, libc::SIGINT);

    let typed_summary = drops_summary(&lines);
    let s = &typed_summary;
    assert_eq!(count_of(s, NO_SOCKET), N as u64, "summary {s:?}");
    assert_eq!(count_of(s, FIREWALL), N as u64, "summary {s:?}");
    assert!(
        typed_summary.hook.starts_with(expected_hook),
        "hook {}",
        typed_summary.hook
    );
    assert_eq!(typed_summary.schema_version, output::SCHEMA_VERSION);
    assert_eq!(
        typed_summary.delivered + typed_summary.lost,
        typed_summary.matched
    );
    assert_eq!(typed_summary.lost, 0);

    let events = drop_events(&lines);
    let inode = pair.inode_b();
    // Where the stage sentinels are in place, each netfilter drop says its hook: b's rule sits
    // in an input chain.
    // ("22 netfilter links in 1 namespace(s)"; a kernel before 6.4 says it refused them.)
    let sentinels = typed_summary
        .netfilter_stages
        .contains("netfilter links in");
    for (kind, port) in [(NO_SOCKET, CLOSED_PORT), (FIREWALL, FIREWALLED_PORT)] {
        let ours: Vec<&NamedDrop> = events.iter().filter(|e| is_drop_of(e, kind)).collect();
        assert_eq!(ours.len(), N, "{} events", kind.reason);
        for d in ours {
            assert_eq!(d.family.as_deref(), Some("ipv4"));
            assert_eq!(d.proto.as_deref(), Some("udp"));
            assert_eq!(d.saddr.as_deref(), Some(pair.ip_a.as_str()));
            assert_eq!(d.daddr.as_deref(), Some(pair.ip_b.as_str()));
            assert_eq!(d.dport, Some(port));
            assert_eq!(u64::from(d.netns), inode);
            assert_eq!(d.netns_name.as_deref(), Some(pair.b.as_str()));
            assert_eq!(d.dev.as_deref(), Some(pair.dev_b.as_str()));
            assert_eq!(d.reason_code.is_some(), kernel_has_drop_reasons());
            assert!(d.len >= 8 + 16, "len {}", d.len);
            let hook = (port == FIREWALLED_PORT && sentinels).then_some("input");
            assert_eq!(d.hook.as_deref(), hook, "{d:?}");
        }
    }
}

#[test]
fn drops_are_named_with_flow_netns_and_device() {
    require_root!();
    streaming_scenario("s", 1, &[], "tp_btf/");
}

#[test]
fn classic_tracepoint_fallback_reports_the_same() {
    require_root!();
    streaming_scenario("t", 2, &["--hook", "tracepoint"], "tracepoint/");
}

#[test]
fn counts_only_with_packet_filters_counts_exactly_in_the_kernel() {
    require_root!();
    let pair = Pair::new("c", 3);
    let args = [
        "drops",
        "--json",
        "--counts-only",
        "--proto",
        "udp",
        "--port",
        "7777",
        "--addr",
        &pair.ip_a,
    ];
    let lines = trace(&pair, &args, N, N, libc::SIGTERM);
    assert_eq!(lines.len(), 1, "counts-only prints the summary alone");
    let s = drops_summary(&lines);
    assert_eq!(count_of(&s, FIREWALL), N as u64, "summary {s:?}");
    assert_eq!(
        count_of(&s, NO_SOCKET),
        0,
        "port filter applied in the kernel: {s:?}"
    );
    assert_eq!(s.delivered, 0);
}

#[test]
fn reason_filter_is_applied_in_the_kernel() {
    require_root!();
    if !kernel_has_drop_reasons() {
        let (code, err) = fails(&["drops", "--reason", "NO_SOCKET"], false);
        assert_eq!(code, 1);
        assert!(err.contains("reports no drop reasons"), "{err}");
        return;
    }
    let pair = Pair::new("r", 4);
    let args = [
        "drops",
        "--json",
        "--reason",
        "NO_SOCKET",
        "--netns",
        &pair.b,
    ];
    let lines = trace(&pair, &args, N, N, libc::SIGINT);
    let s = drops_summary(&lines);
    assert_eq!(s.counts.len(), 1, "only NO_SOCKET: {s:?}");
    assert_eq!(count_of(&s, NO_SOCKET), N as u64);
    assert_eq!(drop_events(&lines).len(), N);
}

#[test]
fn duration_ends_the_run_with_a_summary() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let mut child = Command::new(NETDOC)
        .args(["drops", "--json", "--counts-only", "--duration", "300ms"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(child.wait().unwrap().success());
    let last = typed(out.lines().last().unwrap());
    assert!(matches!(last, Output::Summary(_)), "{last:?}");
    assert_nothing_left();
}

#[test]
fn without_btf_the_tracepoint_and_its_format_still_name_drops() {
    require_root!();
    if !kernel_has_drop_reasons() {
        eprintln!("this kernel's kfree_skb has no reason: nothing to name (covered on 5.17+)");
        return;
    }
    let pair = Pair::new("n", 5);
    let args = [
        "drops",
        "--json",
        "--counts-only",
        "--reason",
        "NO_SOCKET",
        "--no-btf",
    ];
    let lines = trace(&pair, &args, N, 0, libc::SIGINT);
    let s = drops_summary(&lines);
    assert!(s.hook.starts_with("tracepoint/"), "{s:?}");
    assert_eq!(s.reason_names, "tracefs format");
    // Host-wide (no packet filter without BTF): at least ours, and only NO_SOCKET.
    assert!(count_of(&s, NO_SOCKET) >= N as u64, "{s:?}");
    assert_eq!(s.counts.len(), 1);
    let (code, err) = fails(&["drops", "--no-btf", "--port", "9"], false);
    assert_eq!(code, 1);
    assert!(err.contains("need kernel BTF"), "{err}");
}

/// Runs netdoc and returns (exit code, stderr).
fn fails(args: &[&str], unprivileged: bool) -> (i32, String) {
    let mut cmd = if unprivileged {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", NETDOC]);
        c
    } else {
        Command::new(NETDOC)
    };
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn failures_are_one_clear_line_and_leave_nothing() {
    require_root!();
    let (code, err) = fails(&["drops"], true);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("needs root, or CAP_BPF and CAP_PERFMON"),
        "{err}"
    );
    for bad in [
        &["drops", "--reason", "NOT_A_REASON"][..],
        &["drops", "--netns", "no-such-netns-here"],
        &["drops", "--pages", "3"],
    ] {
        let (code, err) = fails(bad, false);
        assert_eq!(code, 1, "{bad:?}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.starts_with("netdoc: error: "), "{err}");
    }
    for usage in [
        &["drops", "--duration", "-1"][..],
        &["drops", "--proto", "nope"],
    ] {
        let (code, err) = fails(usage, false);
        assert_eq!(code, 2, "usage errors exit 2: {usage:?}: {err}");
    }
    assert_nothing_left();
}

#[test]
fn probes_lists_every_hook_and_the_one_selected() {
    require_root!();
    let out = run(NETDOC, &["probes", "--json"]);
    let Output::Probe(line) = typed(out.lines().next().unwrap()) else {
        panic!("a probe plan first: {out}");
    };
    let plan = line.plan;
    assert_eq!(plan.probe, "drops");
    let attempts = plan.attempts;
    assert_eq!(attempts.len(), 2);
    // This machine's kernel accepts both; tp_btf is preferred.
    assert_eq!(attempts[0].hook.kind(), "tp_btf");
    assert_eq!(attempts[0].outcome, Outcome::Attached);
    assert_eq!(attempts[1].outcome, Outcome::Available);
    assert_nothing_left();
}

#[test]
fn every_drop_is_delivered_or_counted_lost_under_pressure() {
    require_root!();
    const BURST: usize = 5000;
    let pair = Pair::new("l", 6);
    // One page per CPU holds about forty records: a burst may overflow it.
    let args = ["drops", "--json", "--netns", &pair.b, "--pages", "1"];
    let lines = trace(&pair, &args, BURST, 0, libc::SIGINT);
    let s = drops_summary(&lines);
    let (matched, delivered, lost) = (s.matched, s.delivered, s.lost);
    eprintln!("burst of {BURST}: delivered {delivered}, lost {lost}");
    assert_eq!(count_of(&s, NO_SOCKET), BURST as u64);
    assert_eq!(matched, BURST as u64);
    assert_eq!(delivered + lost, matched);
    let events = drop_events(&lines).len() as u64;
    assert_eq!(events, delivered, "every delivered record was printed");
}

#[test]
fn a_budget_samples_streamed_drops_out_and_counts_each_one() {
    require_root!();
    const BURST: usize = 5000;
    const BUDGET: u64 = 100;
    let pair = Pair::new("b", 11);
    let budget = BUDGET.to_string();
    let args = [
        "drops",
        "--json",
        "--netns",
        &pair.b,
        "--max-events-per-sec",
        &budget,
    ];
    let lines = trace(&pair, &args, BURST, 0, libc::SIGINT);
    let s = drops_summary(&lines);
    let (matched, delivered, lost, sampled) = (s.matched, s.delivered, s.lost, s.sampled);
    eprintln!("burst of {BURST} at {BUDGET}/s per CPU: delivered {delivered}, sampled {sampled}");
    assert_eq!(
        count_of(&s, NO_SOCKET),
        BURST as u64,
        "counting is never sampled"
    );
    assert_eq!(matched, BURST as u64);
    assert_eq!(delivered + lost + sampled, matched);
    assert!(
        sampled > 0,
        "{BURST} drops within a second or so exceed {BUDGET}"
    );
    assert_eq!(s.max_events_per_sec, BUDGET);
    let by_reason: u64 = s.sampled_by_reason.values().sum();
    assert_eq!(by_reason, sampled, "{:?}", s.sampled_by_reason);
    let events = drop_events(&lines).len() as u64;
    assert_eq!(events, delivered, "every delivered record was printed");
}

/// Another consumer counting `skb:kfree_skb` host-wide while netdoc runs, which a BPF program
/// returning 0 on the classic tracepoint blinds: `perf stat`, a bpftrace one-liner, or the
/// counting event `perf stat` opens, opened by the test itself so that the proof needs no tool
/// and runs on the kernel matrix's guests, which have neither perf nor bpftrace.
enum Bystander {
    Tool {
        child: std::process::Child,
        lines: std::sync::mpsc::Receiver<String>,
    },
    /// One counting event per online CPU: an event of every process must name its CPU.
    Counter(Vec<std::fs::File>),
}

/// Where tracefs may be mounted: the matrix's guests and `cargo xtask setup` mount it at the
/// first, and a mounted debugfs shows it at the second.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

impl Bystander {
    /// perf prints one count per interval on stderr; its first line means it counts.
    fn perf() -> Option<Self> {
        let mut child = Command::new("perf")
            .args(["stat", "-a", "-x,", "-I", "200", "-e", "skb:kfree_skb"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        let err = child.stderr.take()?;
        Self::ready(child, err, "kfree_skb")
    }

    /// bpftrace runs BEGIN once every probe is attached.
    fn bpftrace() -> Option<Self> {
        let mut child = Command::new("bpftrace")
            .args([
                "-e",
                r#"BEGIN { printf("ready\n"); } tracepoint:skb:kfree_skb { @drops = count(); }"#,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let out = child.stdout.take()?;
        Self::ready(child, out, "ready")
    }

    /// What `perf stat -a -e skb:kfree_skb` opens: a tracepoint event of every process on
    /// each online CPU, counting (no sample period) and enabled at open, so it counts once
    /// this returns. It needs only root, so any failure is the test's, never a skip.
    fn perf_event() -> Option<Self> {
        use aya_obj::generated::{PERF_FLAG_FD_CLOEXEC, perf_event_attr, perf_type_id};
        use std::os::fd::FromRawFd as _;

        let id_file = TRACEFS
            .iter()
            .map(|root| format!("{root}/events/skb/kfree_skb/id"))
            .find(|f| std::path::Path::new(f).exists())
            .unwrap_or_else(|| panic!("tracefs is mounted at neither of {TRACEFS:?}"));
        let id: u64 = std::fs::read_to_string(&id_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{id_file}: {e}"));
        // SAFETY: the attr is integers and unions of integers, for which all-zero bytes are
        // valid; zero also means what we want: enabled (the `disabled` bit clear), counting
        // (`sample_period` 0), no inheritance and every exclusion off.
        let mut attr: perf_event_attr = unsafe { std::mem::zeroed() };
        attr.type_ = perf_type_id::PERF_TYPE_TRACEPOINT as u32;
        // The kernel reads this many bytes; older kernels accept the newer size as long as
        // the fields they do not know are zero.
        attr.size = std::mem::size_of::<perf_event_attr>() as u32;
        attr.config = id;
        let cpus = aya::util::online_cpus().unwrap_or_else(|(file, e)| panic!("{file}: {e}"));
        let events = cpus
            .into_iter()
            .map(|cpu| {
                let (pid, group): (libc::pid_t, libc::c_int) = (-1, -1);
                // SAFETY: attr outlives the call and its size says how much the kernel reads;
                // the other arguments are plain integers.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_perf_event_open,
                        &attr as *const perf_event_attr,
                        pid,
                        cpu as libc::c_int,
                        group,
                        libc::c_ulong::from(PERF_FLAG_FD_CLOEXEC),
                    )
                };
                assert!(
                    fd >= 0,
                    "perf_event_open of skb:kfree_skb (id {id}) on CPU {cpu}: {}",
                    std::io::Error::last_os_error()
                );
                // SAFETY: perf_event_open returned a new descriptor that nothing else owns.
                unsafe { std::fs::File::from_raw_fd(fd as libc::c_int) }
            })
            .collect();
        Some(Self::Counter(events))
    }

    fn ready(
        child: std::process::Child,
        output: impl std::io::Read + Send + 'static,
        first: &str,
    ) -> Option<Self> {
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(output)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.contains(first) => return Some(Self::Tool { child, lines }),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Stops counting and sums what was counted (perf's interval counts, bpftrace's map, or
    /// each CPU's event, which reads as one u64 without a `read_format`).
    fn stop(self) -> u64 {
        match self {
            Self::Counter(events) => events
                .iter()
                .map(|mut event| {
                    let mut count = [0; 8];
                    event.read_exact(&mut count).unwrap();
                    u64::from_ne_bytes(count)
                })
                .sum(),
            Self::Tool { mut child, lines } => {
                // SAFETY: kill has no memory preconditions; the pid is our own child.
                unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
                let _ = child.wait();
                lines
                    .iter()
                    .filter_map(|l| {
                        let count = match l.strip_prefix("@drops: ") {
                            Some(n) => n,
                            None => l.split(',').nth(1)?,
                        };
                        count.trim().parse::<u64>().ok()
                    })
                    .sum()
            }
        }
    }
}

type StartTracer = fn() -> Option<Bystander>;

fn installed(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A BPF program on a classic tracepoint that returns 0 hides the event from perf: netdoc's
/// must not, on either hook. The test's own counting event runs on every kernel; perf and
/// bpftrace beside netdoc run too where they are installed.
#[test]
fn perf_and_bpftrace_still_see_every_drop_beside_netdoc() {
    require_root!();
    let mut tools: Vec<(&str, StartTracer)> =
        vec![("the test's perf event", Bystander::perf_event)];
    for (tool, start_tool) in [
        ("perf", Bystander::perf as StartTracer),
        ("bpftrace", Bystander::bpftrace),
    ] {
        if installed(tool) {
            tools.push((tool, start_tool));
        } else {
            eprintln!("{tool} is not installed, so it does not count beside netdoc");
        }
    }
    let pair = Pair::new("pf", 9);
    let mut sent = 0;
    for hook in ["tracepoint", "tp_btf"] {
        for (tool, start_tool) in &tools {
            let netdoc = start(&[
                "drops",
                "--json",
                "--counts-only",
                "--hook",
                hook,
                "--no-causes",
            ]);
            let bystander = start_tool().unwrap_or_else(|| panic!("{tool} starts counting"));
            pair.send(CLOSED_PORT, N);
            sent += N;
            // The pair's counter keeps growing across rounds.
            pair.wait_for_drops(sent as u64, 0);
            let seen = bystander.stop();
            let (status, _) = netdoc.stop(libc::SIGINT);
            assert!(status.success());
            assert!(
                seen >= N as u64,
                "{tool} saw {seen} of {N} drops beside netdoc --hook {hook}"
            );
        }
    }
    assert_nothing_left();
}

/// A dropped SSH session (SIGHUP) ends a live view like Ctrl-C: summary, detach, exit 0.
#[test]
fn sighup_ends_a_live_view_with_its_summary() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let netdoc = start(&["drops", "--json", "--counts-only", "--no-causes"]);
    let (status, lines) = netdoc.stop(libc::SIGHUP);
    assert!(status.success(), "netdoc exited with {status}");
    let s = drops_summary(&lines);
    assert_eq!(s.matched, s.total);
    assert_eq!(
        s.netfilter_stages, "--no-causes given",
        "why there are no sentinels"
    );
    let stages = s.probes.iter().find(|p| p.probe == "conntrack_stage");
    assert_eq!(
        stages.and_then(|p| p.unavailable.as_deref()),
        Some("--no-causes given"),
        "{:?}",
        s.probes
    );
    assert_nothing_left();
}

/// Output that cannot be written is an error with one line, never a panic or a silent exit 0:
/// a full disk (/dev/full) and a stdout closed from the start (`>&-`, which Rust's runtime
/// would hide behind /dev/null), for every command's output path.
#[test]
fn a_full_or_closed_stdout_is_a_one_line_error() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    for args in [
        &["probes"][..],
        &["probes", "--json"],
        &["drops", "--duration", "300ms", "--no-causes"],
        &["drops", "--json", "--duration", "300ms", "--no-causes"],
        &["check", "--duration", "300ms", "--expect", "drops >= 0"],
        &["softirq", "--duration", "300ms"],
        &["conntrack", "--duration", "300ms", "--json"],
        &["doctor", "--duration", "1s"],
        &["retrans", "--json", "--duration", "300ms"],
        &["irq", "--duration", "300ms"],
        &["--version"],
    ] {
        for closed in [false, true] {
            let out = if closed {
                Command::new("sh")
                    .args(["-c", "exec \"$0\" \"$@\" >&-", NETDOC])
                    .args(args)
                    .output()
                    .unwrap()
            } else {
                let full = std::fs::OpenOptions::new()
                    .write(true)
                    .open("/dev/full")
                    .unwrap();
                Command::new(NETDOC)
                    .args(args)
                    .stdout(full)
                    .output()
                    .unwrap()
            };
            let err = String::from_utf8_lossy(&out.stderr);
            let shown = format!("{args:?} (stdout closed: {closed}): {} {err}", out.status);
            let errors: Vec<&str> = err
                .lines()
                .filter(|l| l.starts_with("netdoc: error"))
                .collect();
            assert!(
                !out.status.success() && out.status.code() != Some(101),
                "{shown}"
            );
            assert_eq!(errors.len(), 1, "{shown}");
            assert!(!err.contains("panicked"), "{shown}");
            assert!(
                errors[0].starts_with("netdoc: error: writing to stdout"),
                "{shown}"
            );
        }
    }
    assert_nothing_left();
}

/// What netdoc says on stderr is not its output: a full or closed stderr must neither panic
/// (`eprintln!` exits 101) nor change the run's result.
#[test]
fn a_full_or_closed_stderr_changes_nothing() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    for args in [
        &["probes"][..],
        &["drops", "--duration", "300ms", "--no-causes"],
        &["check", "--duration", "300ms", "--expect", "drops >= 0"],
    ] {
        for (how, redirect) in [("full", "2>/dev/full"), ("closed", "2>&-")] {
            let script = format!("exec \"$0\" \"$@\" >/dev/null {redirect}");
            let status = Command::new("sh")
                .args(["-c", &script, NETDOC])
                .args(args)
                .status()
                .unwrap();
            assert_eq!(status.code(), Some(0), "{args:?} with stderr {how}");
        }
    }
    // A usage error is still one, with nowhere to say so.
    let status = Command::new("sh")
        .args(["-c", "exec \"$0\" drops --nosuch 2>/dev/full", NETDOC])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
    assert_nothing_left();
}

/// Namespaces come and go while netdoc runs, and the kernel reuses their inodes: every drop
/// must still carry the name of the namespace it happened in.
#[test]
fn names_stay_right_while_namespaces_come_and_go() {
    require_root!();
    const ROUNDS: usize = 50;
    let mut args = vec!["drops", "--json", "--no-causes"];
    if kernel_has_drop_reasons() {
        args.extend(["--reason", "NO_SOCKET"]);
    }
    let netdoc = start(&args);
    for round in 0..ROUNDS {
        let pair = Pair::new(&format!("c{round}"), 100 + round as u8);
        pair.send(CLOSED_PORT, 1);
        pair.wait_for_drops(1, 0);
        let inode = pair.inode_b();
        // Wait (bounded) for netdoc to have printed this namespace's drop before it goes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let drop = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = netdoc
                .stdout
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("round {round}: no drop printed ({e})"));
            if let Output::Drop(d) = typed(&line)
                && u64::from(d.netns) == inode
            {
                break d;
            }
        };
        assert_eq!(drop.netns_name.as_ref(), Some(&pair.b), "round {round}");
        assert_eq!(drop.dev.as_ref(), Some(&pair.dev_b), "round {round}");
    }
    let (status, _) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();
}

/// `--netns X`, then X is deleted: netdoc lets go of it at once (its sentinel links would keep
/// the namespace and its devices alive) and ends the run with its summary, by itself.
#[test]
fn a_deleted_netns_target_is_let_go() {
    require_root!();
    let pair = Pair::new("g", 10);
    let mut netdoc = start(&["drops", "--json", "--netns", pair.b.as_str()]);
    run("ip", &["netns", "del", &pair.b]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = netdoc.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "netdoc did not notice its namespace went away"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "netdoc exited with {status}");
    // The reader thread ends at end of output: every line is in.
    let lines: Vec<Value> = netdoc.stdout.iter().map(|l| json(&l)).collect();
    drops_summary(&lines);
    // With nothing holding it, the namespace goes, and the veth pair with it.
    let dev_a = "ndga"; // Pair::new("g", ..) names A's end nd<tag>a
    let gone = (0..250).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !Command::new("ip")
            .args(["-n", &pair.a, "link", "show", dev_a])
            .output()
            .unwrap()
            .status
            .success()
    });
    assert!(gone, "the veth pair outlived its namespace");
    assert_nothing_left();
}

/// Only the capabilities the README asks for, as a user other than root: CAP_BPF and
/// CAP_PERFMON, and CAP_SYS_RESOURCE where the kernel charges BPF maps to RLIMIT_MEMLOCK
/// (before 5.11), as the README says.
fn bpf_and_perfmon() -> Vec<String> {
    let caps = match charges_maps_to_memlock() {
        true => "+bpf,+perfmon,+sys_resource",
        false => "+bpf,+perfmon",
    };
    [
        "setpriv".to_string(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
    ]
    .into()
}

/// Kernels before 5.11 count BPF map memory against RLIMIT_MEMLOCK, which only
/// CAP_SYS_RESOURCE may raise.
fn charges_maps_to_memlock() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) < (5, 11)
}

/// Whether netdoc chooses a classic tracepoint for some probe on this kernel (it has no tp_btf
/// for that event): there its `format` file, and so tracefs, is needed.
fn some_probe_needs_tracefs() -> bool {
    run(NETDOC, &["probes", "--json"])
        .lines()
        .map(typed)
        .any(|p| match p {
            Output::Probe(line) => line
                .plan
                .chosen()
                .is_some_and(|a| a.hook.kind() == "tracepoint"),
            _ => false,
        })
}

/// The README's promise: root, or CAP_BPF and CAP_PERFMON. With only those two, every drop is
/// seen with its reason, flow and namespace, and nothing asks for tracefs (which that user can
/// neither read nor mount, and tp_btf does not need): no mount is attempted, no complaint.
#[test]
fn cap_bpf_and_cap_perfmon_are_enough() {
    require_root!();
    let wrapper = bpf_and_perfmon();
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    // Where every probe has a tp_btf hook, nothing needs tracefs, which this user can neither
    // read nor mount: nothing is attempted and nothing said. (Where one has none, its line says
    // why it is unavailable.)
    if !some_probe_needs_tracefs() {
        let out = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .args([NETDOC, "probes"])
            .output()
            .unwrap();
        let (plan, err) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{plan}{err}");
        assert_eq!(err, "", "nothing said on stderr");
        assert!(
            !plan.contains("could not be mounted"),
            "no mount attempted: {plan}"
        );
        for line in plan.lines().filter(|l| l.contains("tracepoint/")) {
            assert!(line.contains("needs none"), "{line}");
        }
    }

    let pair = Pair::new("p", 53);
    let netdoc = start_under(&wrapper, &["drops", "--json", "--no-causes"]);
    pair.send(CLOSED_PORT, N);
    pair.wait_for_drops(N as u64, 0);
    let (status, lines) = netdoc.stop(libc::SIGINT);
    assert!(status.success(), "netdoc exited with {status}");
    // Each drop with its reason, flow and namespace. Entering other namespaces to name their
    // devices needs CAP_SYS_ADMIN, and kallsyms shows this user no addresses: the README says
    // so, and the device stays an index, the location an address.
    let drops = drop_events(&lines);
    let seen = drops
        .iter()
        .filter(|d| d.netns_name.as_ref() == Some(&pair.b))
        .filter(|d| !kernel_has_drop_reasons() || d.reason == "NO_SOCKET")
        .filter(|d| d.daddr.as_ref() == Some(&pair.ip_b) && d.dport == Some(CLOSED_PORT))
        .count();
    let first = drops.first();
    assert_eq!(seen, N, "every drop, named: {first:?}");
    assert_nothing_left();
}

/// tracefs is mounted only for a classic tracepoint that needs its format files: in a mount
/// namespace of the test's own without tracefs, `probes` (tp_btf everywhere) leaves it
/// unmounted, and `drops --hook tracepoint` mounts it there.
#[test]
fn tracefs_is_mounted_only_when_a_classic_tracepoint_needs_it() {
    require_root!();
    // debugfs goes too: looking up its `tracing` directory makes the kernel mount tracefs there
    // by itself, which is not netdoc mounting it.
    let script = "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; umount /sys/kernel/debug 2>/dev/null
        grep -c ' - tracefs ' /proc/self/mountinfo
        \"$0\" probes >/dev/null || echo probes failed
        grep -c ' - tracefs ' /proc/self/mountinfo
        \"$0\" drops --hook tracepoint --duration 300ms --no-causes >/dev/null 2>&1 || echo drops failed
        grep ' - tracefs ' /proc/self/mountinfo | cut -d' ' -f5";
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            NETDOC,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    let context = format!("{said}{}", String::from_utf8_lossy(&out.stderr));
    // tp_btf serves every probe `probes` chooses, so nothing mounts tracefs until the classic
    // hook is asked for (5.10, 6.1 and 6.18 alike, once debugfs cannot mount it by itself).
    assert_eq!(lines, ["0", "0", "/sys/kernel/tracing"], "{context}");
    assert_nothing_left();
}

#[test]
fn each_streamed_drop_carries_the_kernel_stack_that_dropped_it() {
    require_root!();
    let pair = Pair::new("K", 12);
    let args = ["drops", "--json", "--stack", "--netns", pair.b.as_str()];
    let lines = trace(&pair, &args, N, N, libc::SIGINT);
    let s = drops_summary(&lines);
    assert_eq!(s.stacks_missing, Some(0), "every stack was taken");
    let drops = drop_events(&lines);
    // One stack per kind here: a closed port and a firewall rule drop in different code.
    for port in [CLOSED_PORT, FIREWALLED_PORT] {
        let ours: Vec<_> = drops.iter().filter(|d| d.dport == Some(port)).collect();
        assert_eq!(ours.len(), N, "drops to port {port}");
        for d in &ours {
            let stack = d.stack.as_ref().expect("--stack gives every drop a stack");
            // The location is the return address into the function that dropped it: the
            // frame right under the drop itself, named the same way.
            assert!(stack.contains(&d.location), "{} in {stack:?}", d.location);
            assert!(
                !stack[0].starts_with("bpf_") && !stack[0].starts_with("0x"),
                "the tracing machinery is left out: {stack:?}"
            );
        }
        let in_summary: u64 = s
            .stacks
            .iter()
            .filter(|st| ours.iter().any(|d| st.frames.contains(&d.location)))
            .map(|st| st.count)
            .sum();
        assert_eq!(
            in_summary, N as u64,
            "the summary counts each stack: {:?}",
            s.stacks
        );
    }
}
