//! Kernel integration tests of the retransmit family: TCP flows between namespaces whose path
//! starts dropping, or whose second link has a smaller MTU with ICMP "fragmentation needed"
//! dropped (an MTU black hole) or allowed.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netdoc_user::output::NamedRetrans;
use serde_json::Value;

mod common;
use common::*;

const PORT: u16 = 5201;

/// Runs `f` on a thread inside namespace `ns`, pinned to CPU 0 (unpinned veth traffic reorders).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: plain syscalls on this thread with values owned by the closure.
        unsafe {
            assert_eq!(
                libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "setns"
            );
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(0, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
        f()
    })
}

/// A server in `ns` that reads one connection to EOF, counting bytes as they arrive.
fn serve(ns: &str, ip: &str) -> (Arc<AtomicU64>, JoinHandle<()>) {
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let addr = format!("{ip}:{PORT}");
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let h = in_netns(ns, move || {
        let listener = TcpListener::bind(&addr).unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 65536];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            r.fetch_add(n as u64, Ordering::SeqCst);
        }
    });
    ready.recv_timeout(Duration::from_secs(10)).unwrap();
    (received, h)
}

fn connect(ns: &str, server: &str) -> TcpStream {
    let addr = format!("{server}:{PORT}");
    in_netns(ns, move || TcpStream::connect(addr).unwrap())
        .join()
        .unwrap()
}

/// Writes what the socket takes without blocking (the rest of a stalled flow stays queued).
fn write_some(conn: &mut TcpStream, n: usize) -> usize {
    conn.set_nonblocking(true).unwrap();
    let data = vec![0x5au8; n];
    let mut sent = 0;
    while sent < n {
        match conn.write(&data[sent..]) {
            Ok(k) => sent += k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    sent
}

fn tcp_counter(ns: &str, name: &str) -> u64 {
    ns_counter(ns, "snmp", "Tcp", name)
}

fn wait_until(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn nft(ns: &str, rule: &str) {
    run("ip", &["netns", "exec", ns, "nft", rule]);
}

/// Whether `TcpRetransSegs` counted a retransmit that ended with `err` (reported on 6.17+).
/// `__tcp_retransmit_skb` gives up before counting with -EAGAIN (send buffer), -EBUSY (the skb
/// is still in a host queue), -ENOMEM and -EHOSTUNREACH; an error from the transmit itself
/// (-ENOBUFS from a full veth peer, say) comes after the segments were counted.
fn counted_by_the_kernel(err: i64) -> bool {
    let before_counting = [libc::EAGAIN, libc::EBUSY, libc::ENOMEM, libc::EHOSTUNREACH];
    !before_counting.iter().any(|e| -i64::from(*e) == err)
}

#[test]
fn retransmits_of_a_flow_whose_path_starts_dropping_match_tcp_retrans_segs() {
    require_root!();
    let pair = Pair::new("r", 42);
    let netdoc = start(&["retrans", "--json"]);
    let before = tcp_counter(&pair.a, "RetransSegs");
    let (received, server) = serve(&pair.b, &pair.ip_b);
    let mut conn = connect(&pair.a, &pair.ip_b);
    let first = write_some(&mut conn, 100_000) as u64;
    wait_until("the first part to arrive", 10, || {
        received.load(Ordering::SeqCst) >= first
    });
    nft(
        &pair.b,
        &format!("add rule inet netdoc_test input tcp dport {PORT} drop"),
    );
    let second = write_some(&mut conn, 64_000) as u64;
    wait_until("three retransmits", 15, || {
        tcp_counter(&pair.a, "RetransSegs") >= before + 3
    });
    nft(&pair.b, "flush chain inet netdoc_test input");
    wait_until("the rest to arrive", 20, || {
        received.load(Ordering::SeqCst) >= first + second
    });
    let after = tcp_counter(&pair.a, "RetransSegs");
    let client_port = conn.local_addr().unwrap().port();
    drop(conn);
    server.join().unwrap();
    let (status, lines) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();

    let ino = std::fs::metadata(format!("/run/netns/{}", pair.a))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let ours: Vec<NamedRetrans> = lines
        .iter()
        .filter_map(|l| match as_output(l) {
            Output::Retransmit(e) if u64::from(e.id.netns) == ino => Some(e),
            _ => None,
        })
        .collect();
    let flow = format!("tcp {}:{client_port} > {}:{PORT}", pair.ip_a, pair.ip_b);
    assert!(!ours.is_empty());
    assert!(
        ours.iter().all(|e| e.id.flow == flow),
        "only that flow: {ours:?}"
    );
    assert!(
        ours.iter()
            .all(|e| e.id.netns_name.as_ref() == Some(&pair.a)
                && e.id.netns_cookie == ours[0].id.netns_cookie),
        "each event names its namespace, by one cookie: {ours:?}"
    );
    let sent_segs: u64 = ours
        .iter()
        .filter(|e| counted_by_the_kernel(i64::from(e.err)))
        .map(|e| u64::from(e.segs))
        .sum();
    let seen: Vec<(u16, i32)> = ours.iter().map(|e| (e.segs, e.err)).collect();
    let summary = retrans_summary(&lines);
    assert_eq!(
        sent_segs,
        after - before,
        "segments agree with TcpRetransSegs; events (segs, err): {seen:?}; summary {summary:?}"
    );
    let row = summary
        .flows
        .iter()
        .find(|f| f.id.flow == flow)
        .expect("the flow is aggregated");
    assert_eq!(row.retransmits, ours.len() as u64);
    assert_eq!(row.id.netns_name.as_ref(), Some(&pair.a));
    assert_eq!(summary.delivered, summary.matched);
    assert!(
        summary.findings.is_empty(),
        "a path that drops everything is not an MTU black hole: {:?}",
        summary.findings
    );
}

/// client — router — server. The router's side of the second link has MTU 1000 while the server
/// keeps 1500: both ends negotiate a 1460-byte MSS, so full-sized segments cannot cross.
struct Topology {
    ns: [String; 3],
}

impl Topology {
    fn new(tag: &str, drop_frag_needed: bool) -> Self {
        let id = std::process::id();
        let ns = ["c", "r", "s"].map(|n| format!("ndt{id}{tag}{n}"));
        let t = Topology { ns };
        let [c, r, s] = &t.ns;
        for n in &t.ns {
            run("ip", &["netns", "add", n]);
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    n,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            );
            run("ip", &["-n", n, "link", "set", "lo", "up"]);
        }
        run(
            "ip",
            &["netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        );
        let link = |a: &str, da: &str, ipa: &str, b: &str, db: &str, ipb: &str, mtu_a: &str| {
            run(
                "ip",
                &[
                    "-n", a, "link", "add", da, "mtu", mtu_a, "type", "veth", "peer", "name", db,
                    "netns", b,
                ],
            );
            for (n, d, ip) in [(a, da, ipa), (b, db, ipb)] {
                run("ip", &["-n", n, "addr", "add", ip, "dev", d]);
                run("ip", &["-n", n, "link", "set", d, "up"]);
            }
        };
        link(c, "c0", "10.232.1.1/24", r, "r0", "10.232.1.254/24", "1500");
        link(r, "r1", "10.232.2.254/24", s, "s0", "10.232.2.1/24", "1000");
        run(
            "ip",
            &["-n", c, "route", "add", "default", "via", "10.232.1.254"],
        );
        run(
            "ip",
            &["-n", s, "route", "add", "default", "via", "10.232.2.254"],
        );
        if drop_frag_needed {
            nft(r, "add table inet netdoc_test");
            nft(
                r,
                "add chain inet netdoc_test out { type filter hook output priority 0; }",
            );
            nft(
                r,
                "add rule inet netdoc_test out icmp type destination-unreachable icmp code frag-needed drop",
            );
        }
        t
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// The client — router — server topology with `netdoc ARGS` watching a transfer; returns the
/// flow and netdoc's JSON lines.
fn mtu_scenario(tag: &str, drop_frag_needed: bool, args: &[&str]) -> (String, Vec<Value>) {
    let topo = Topology::new(tag, drop_frag_needed);
    let [c, _, s] = &topo.ns;
    let netdoc = start(args);
    let (received, server) = serve(s, "10.232.2.1");
    let mut conn = connect(c, "10.232.2.1");
    let sent = write_some(&mut conn, 256_000) as u64;
    if drop_frag_needed {
        wait_until("the stalled flow to retransmit three times", 20, || {
            tcp_counter(c, "RetransSegs") >= 3
        });
    } else {
        wait_until("the transfer to complete", 20, || {
            received.load(Ordering::SeqCst) >= sent
        });
    }
    let flow = format!(
        "tcp 10.232.1.1:{} > 10.232.2.1:{PORT}",
        conn.local_addr().unwrap().port()
    );
    let (status, lines) = netdoc.stop(libc::SIGINT);
    // The doctor exits 1 when it found something.
    assert!(matches!(status.code(), Some(0 | 1)), "{status}");
    assert_nothing_left();
    // A FIN would queue behind the stuck data (the server would wait for it); an RST is small
    // enough to cross any MTU.
    close_with_reset(conn);
    server.join().unwrap();
    (flow, lines)
}

#[test]
fn mtu_black_hole_is_flagged_with_segment_size_above_the_path_mtu() {
    require_root!();
    let (flow, lines) = mtu_scenario("b", true, &["retrans", "--json"]);
    let summary = retrans_summary(&lines);
    let Some(f) = summary.findings.iter().find(|f| f.id == "mtu_black_hole") else {
        // The kernel may skip a run of the probe (an interrupt brought a retransmit while the
        // program ran for another): then the third retransmit is unseen, and the summary says so.
        let missed: u64 = summary
            .probes
            .iter()
            .filter(|p| p.probe == "retrans")
            .map(|p| p.missed_runs)
            .sum();
        assert!(missed > 0, "no black hole flagged: {summary:?}");
        eprintln!("no finding: the kernel skipped {missed} run(s) of the retrans probe");
        return;
    };
    eprintln!("finding: {f:#?}");
    assert!(f.title.contains(&flow), "{f:?}");
    let row = summary.flows.iter().find(|r| r.id.flow == flow).unwrap();
    assert!(row.max_segment + 40 > 1000, "{row:?}");
    assert_eq!(row.path_mtu, 1500, "no PMTU reduction arrived");
    assert_eq!(row.dev_mtu, 1500);
}

/// The doctor, started before the topology exists, names the black hole first, about the flow,
/// and does not call it a silent path drop (its look-alike: a stall with no local drop).
#[test]
fn the_doctor_names_an_mtu_black_hole_not_a_silent_path_drop() {
    require_root!();
    let (flow, lines) = mtu_scenario("d", true, &["doctor", "--json", "--duration", "5m"]);
    let Output::Doctor(report) = as_output(lines.last().unwrap()) else {
        panic!("not a doctor report: {:?}", lines.last());
    };
    let first = &report.findings[0];
    assert_eq!(first.id, "mtu_black_hole", "{report:#?}");
    assert!(first.scope.name.starts_with(&flow), "{first:#?}");
    assert!(
        !report.findings.iter().any(|f| f.id == "silent_path_drop"),
        "{report:#?}"
    );
}

#[test]
fn the_same_path_with_icmp_allowed_is_not_flagged() {
    require_root!();
    let (flow, lines) = mtu_scenario("a", false, &["retrans", "--json"]);
    let summary = retrans_summary(&lines);
    assert!(summary.findings.is_empty(), "{:?}", summary.findings);
    // Any retransmit of the flow happened after the PMTU reduction to the 1000-byte link.
    if let Some(row) = summary.flows.iter().find(|r| r.id.flow == flow) {
        assert_eq!(row.path_mtu_min, 1000, "{row:?}");
    }
}
