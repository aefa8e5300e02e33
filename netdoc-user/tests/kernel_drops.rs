//! Kernel integration tests: the real eBPF programs in the running kernel, real drops caused in
//! network namespaces that each test creates and removes. They need root; without it they say
//! so and pass nothing off as tested.
use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    net::UdpSocket,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

use serde_json::Value;

/// One netdoc at a time, so the leak check after each run sees only that run's programs.
static SERIAL: Mutex<()> = Mutex::new(());
const NETDOC: &str = env!("CARGO_BIN_EXE_netdoc");
const CLOSED_PORT: u16 = 9;
const FIREWALLED_PORT: u16 = 7777;
const N: usize = 40;

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (run `cargo xtask test` as root)");
            return;
        }
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    };
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces joined by a veth pair, with static neighbours and IPv6 off (no stray drops).
/// Removing the namespaces on drop removes the links and nft rules inside them.
struct Pair {
    a: String,
    b: String,
    dev_b: String,
    ip_a: String,
    ip_b: String,
}

impl Pair {
    fn new(tag: &str, subnet: u8) -> Pair {
        let id = std::process::id();
        let p = Pair {
            a: format!("ndt{id}{tag}a"),
            b: format!("ndt{id}{tag}b"),
            dev_b: format!("nd{tag}b"),
            ip_a: format!("10.231.{subnet}.1"),
            ip_b: format!("10.231.{subnet}.2"),
        };
        let dev_a = format!("nd{tag}a");
        let (mac_a, mac_b) = (
            format!("02:00:00:00:{subnet:02x}:01"),
            format!("02:00:00:00:{subnet:02x}:02"),
        );
        for ns in [&p.a, &p.b] {
            run("ip", &["netns", "add", ns]);
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &[
                "-n", &p.a, "link", "add", &dev_a, "address", &mac_a, "type", "veth", "peer",
                "name", &p.dev_b, "address", &mac_b, "netns", &p.b,
            ],
        );
        for (ns, dev, ip, peer_ip, peer_mac) in [
            (&p.a, &dev_a, &p.ip_a, &p.ip_b, &mac_b),
            (&p.b, &p.dev_b, &p.ip_b, &p.ip_a, &mac_a),
        ] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            );
            run("ip", &["-n", ns, "link", "set", dev, "up"]);
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    peer_ip,
                    "lladdr",
                    peer_mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
            );
        }
        let nft = |args: &[&str]| {
            let mut all = vec!["netns", "exec", p.b.as_str(), "nft"];
            all.extend(args);
            run("ip", &all);
        };
        nft(&["add", "table", "inet", "netdoc_test"]);
        nft(&[
            "add",
            "chain",
            "inet",
            "netdoc_test",
            "input",
            "{ type filter hook input priority 0; }",
        ]);
        nft(&[
            "add",
            "rule",
            "inet",
            "netdoc_test",
            "input",
            "udp",
            "dport",
            &FIREWALLED_PORT.to_string(),
            "counter",
            "drop",
        ]);
        p
    }

    fn inode_b(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.b))
            .unwrap()
            .ino()
    }

    /// Sends `n` datagrams from namespace a to b's `port`, from a thread pinned to CPU 0.
    fn send(&self, port: u16, n: usize) {
        let ns = File::open(format!("/run/netns/{}", self.a)).unwrap();
        let (from, to) = (self.ip_a.clone(), self.ip_b.clone());
        std::thread::spawn(move || {
            unsafe {
                assert_eq!(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET), 0, "setns");
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            }
            let sock = UdpSocket::bind((from.as_str(), 0)).unwrap();
            for i in 0..n {
                sock.send_to(
                    format!("netdoc test {i:04}").as_bytes(),
                    (to.as_str(), port),
                )
                .unwrap();
            }
        })
        .join()
        .unwrap();
    }

    fn udp_no_ports(&self) -> u64 {
        let snmp = run("ip", &["netns", "exec", &self.b, "cat", "/proc/net/snmp"]);
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let col = udp[0]
            .split_whitespace()
            .position(|h| h == "NoPorts")
            .unwrap();
        udp[1].split_whitespace().nth(col).unwrap().parse().unwrap()
    }

    fn nft_dropped(&self) -> u64 {
        let out = run(
            "ip",
            &[
                "netns",
                "exec",
                &self.b,
                "nft",
                "list",
                "table",
                "inet",
                "netdoc_test",
            ],
        );
        let after = out.split("counter packets ").nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Waits (bounded) until the kernel's own counters show every datagram dropped.
    fn wait_for_drops(&self, no_ports: u64, firewalled: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.udp_no_ports() < no_ports || self.nft_dropped() < firewalled {
            assert!(
                Instant::now() < deadline,
                "drops did not happen: NoPorts {} nft {}",
                self.udp_no_ports(),
                self.nft_dropped()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            (self.udp_no_ports(), self.nft_dropped()),
            (no_ports, firewalled)
        );
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

struct Netdoc {
    child: Child,
    stdout: mpsc::Receiver<String>,
}

/// Starts netdoc and waits (bounded) for its "attached" line.
fn start(args: &[&str]) -> Netdoc {
    let mut child = Command::new(NETDOC)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, stdout) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (ready_tx, ready) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = ready_tx.send(line);
        }
    });
    loop {
        match ready.recv_timeout(Duration::from_secs(60)) {
            Ok(line) if line.contains("attached") => return Netdoc { child, stdout },
            Ok(line) => eprintln!("netdoc: {line}"),
            Err(e) => panic!("netdoc did not attach: {e}"),
        }
    }
}

impl Netdoc {
    /// Signals netdoc, waits for it and returns its JSON lines.
    fn stop(mut self, signal: i32) -> (ExitStatus, Vec<Value>) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = self.child.wait().unwrap();
        let lines = self
            .stdout
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (status, lines)
    }
}

fn summary(lines: &[Value]) -> &Value {
    let last = lines.last().expect("no output");
    assert_eq!(last["type"], "summary", "last line is the summary");
    last
}

fn count(summary: &Value, reason: &str) -> u64 {
    summary["counts"][reason].as_u64().unwrap_or(0)
}

/// No program of netdoc's may stay loaded once it has exited.
fn assert_nothing_left() {
    let ours = [
        "kfree_skb_btf",
        "kfree_skb_btf_n",
        "kfree_skb_tp",
        "floor_kfree_skb",
    ];
    for p in aya::programs::loaded_programs().flatten() {
        let name = p.name_as_str().unwrap_or_default().to_string();
        assert!(
            !ours.iter().any(|o| name.starts_with(o)),
            "program {name} left loaded"
        );
    }
}

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

    let s = summary(&lines);
    assert!(
        s["hook"].as_str().unwrap().starts_with(expected_hook),
        "hook {}",
        s["hook"]
    );
    assert_eq!(count(s, "NO_SOCKET"), N as u64, "summary {s}");
    assert_eq!(count(s, "NETFILTER_DROP"), N as u64, "summary {s}");
    assert_eq!(
        s["delivered"].as_u64().unwrap() + s["lost"].as_u64().unwrap(),
        s["matched"].as_u64().unwrap()
    );
    assert_eq!(s["lost"], 0);

    let events: Vec<&Value> = lines.iter().filter(|l| l["type"] == "drop").collect();
    let inode = pair.inode_b();
    for (reason, port, location) in [
        ("NO_SOCKET", CLOSED_PORT, "__udp4_lib_rcv"),
        ("NETFILTER_DROP", FIREWALLED_PORT, "nft_do_chain"),
    ] {
        let ours: Vec<&&Value> = events.iter().filter(|e| e["reason"] == reason).collect();
        assert_eq!(ours.len(), N, "{reason} events");
        for e in ours {
            assert_eq!(e["family"], "ipv4");
            assert_eq!(e["proto"], "udp");
            assert_eq!(e["saddr"], pair.ip_a.as_str());
            assert_eq!(e["daddr"], pair.ip_b.as_str());
            assert_eq!(e["dport"], port);
            assert_eq!(e["netns"], inode);
            assert_eq!(e["netns_name"], pair.b.as_str());
            assert_eq!(e["dev"], pair.dev_b.as_str());
            assert!(
                e["location"].as_str().unwrap().starts_with(location),
                "{}",
                e["location"]
            );
            assert!(e["reason_code"].as_u64().is_some());
            assert!(e["len"].as_u64().unwrap() >= 8 + 16, "len {}", e["len"]);
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
    let s = summary(&lines);
    assert_eq!(count(s, "NETFILTER_DROP"), N as u64, "summary {s}");
    assert_eq!(
        count(s, "NO_SOCKET"),
        0,
        "port filter applied in the kernel: {s}"
    );
    assert_eq!(s["delivered"], 0);
}

#[test]
fn reason_filter_is_applied_in_the_kernel() {
    require_root!();
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
    let s = summary(&lines);
    assert_eq!(
        s["counts"].as_object().unwrap().len(),
        1,
        "only NO_SOCKET: {s}"
    );
    assert_eq!(count(s, "NO_SOCKET"), N as u64);
    assert_eq!(lines.iter().filter(|l| l["type"] == "drop").count(), N);
}

#[test]
fn duration_ends_the_run_with_a_summary() {
    require_root!();
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
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "summary");
    assert_nothing_left();
}

#[test]
fn without_btf_the_tracepoint_and_its_format_still_name_drops() {
    require_root!();
    let pair = Pair::new("n", 5);
    let args = [
        "drops",
        "--json",
        "--counts-only",
        "--reason",
        "NO_SOCKET",
        "--btf",
        "/nonexistent",
    ];
    let lines = trace(&pair, &args, N, 0, libc::SIGINT);
    let s = summary(&lines);
    assert!(
        s["hook"].as_str().unwrap().starts_with("tracepoint/"),
        "{s}"
    );
    assert_eq!(s["reason_names"], "tracefs format");
    // Host-wide (no packet filter without BTF): at least ours, and only NO_SOCKET.
    assert!(count(s, "NO_SOCKET") >= N as u64, "{s}");
    assert_eq!(s["counts"].as_object().unwrap().len(), 1);
    let (code, err) = fails(&["drops", "--btf", "/nonexistent", "--port", "9"], false);
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
        &["drops", "--proto", "nope"],
        &["drops", "--pages", "3"],
    ] {
        let (code, err) = fails(bad, false);
        assert_eq!(code, 1, "{bad:?}");
        assert_eq!(err.lines().count(), 1, "{bad:?}: {err}");
        assert!(err.starts_with("netdoc: error: "), "{err}");
    }
    let (code, _) = fails(&["drops", "--duration", "-1"], false);
    assert_eq!(code, 2, "usage errors exit 2");
    assert_nothing_left();
}

#[test]
fn probes_lists_every_hook_and_the_one_selected() {
    require_root!();
    let out = run(NETDOC, &["probes", "--json"]);
    let plan: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(plan["probe"], "drops");
    let attempts = plan["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    // This machine's kernel accepts both; tp_btf is preferred.
    assert_eq!(attempts[0]["hook"]["type"], "tp_btf");
    assert_eq!(attempts[0]["outcome"]["status"], "attached");
    assert_eq!(attempts[1]["outcome"]["status"], "available");
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
    let s = summary(&lines);
    let (matched, delivered, lost) = (
        s["matched"].as_u64().unwrap(),
        s["delivered"].as_u64().unwrap(),
        s["lost"].as_u64().unwrap(),
    );
    eprintln!("burst of {BURST}: delivered {delivered}, lost {lost}");
    assert_eq!(count(s, "NO_SOCKET"), BURST as u64);
    assert_eq!(matched, BURST as u64);
    assert_eq!(delivered + lost, matched);
    let events = lines.iter().filter(|l| l["type"] == "drop").count() as u64;
    assert_eq!(events, delivered, "every delivered record was printed");
}
