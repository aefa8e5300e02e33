//! Kernel integration tests of the doctor's accounting: every drop above the noise ends up in a
//! finding, a specific rule's or the generic `unexplained_drops`, and a busy healthy host (bulk
//! TCP over veth on both CPUs, reordering and spurious retransmits included) gets none. Each
//! incident happens in namespaces made after `netdoc doctor` started host-wide.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    process::ExitStatus,
    time::{Duration, Instant},
};

use netdoc_user::output::{DoctorReport as Report, Severity};

mod common;
use common::*;

fn doctor() -> Netdoc {
    start(&[
        "doctor",
        "--json",
        "--duration",
        "5m",
        "--interval",
        "500ms",
    ])
}

/// Waits (bounded) until the doctor announced `id` live, then stops it.
fn report_after(netdoc: Netdoc, id: &str) -> (ExitStatus, Report) {
    let awaited = format!(" {id} [");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match netdoc.stderr.recv_timeout(left) {
            Ok(line) if line.contains(&awaited) => break,
            Ok(line) => eprintln!("netdoc: {line}"),
            Err(e) => panic!("netdoc never announced {id} ({e})"),
        }
    }
    let (status, lines) = netdoc.stop(libc::SIGINT);
    match as_output(lines.last().expect("a report")) {
        Output::Doctor(r) => (status, r),
        other => panic!("not a doctor report: {other:?}"),
    }
}

/// Waits (bounded) until `done()` holds: the kernel's own counters show the incident.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether this kernel names `reason` (its `kfree_skb` format lists it).
fn kernel_names(reason: &str) -> bool {
    let known = std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format")
        .is_ok_and(|f| f.contains(&format!("\"{reason}\"")));
    if !known {
        eprintln!("skipped: this kernel has no drop reason {reason}");
    }
    known
}

fn ip(ns: &str, args: &str) {
    let mut all = vec!["-n", ns];
    all.extend(args.split_whitespace());
    run("ip", &all);
}

fn sysctl(ns: &str, setting: &str) {
    run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]);
}

/// Runs `f` on a thread in namespace `ns`, on whatever CPU the scheduler picks.
fn in_namespace<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with an open namespace file.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns");
        f()
    })
}

#[test]
fn drops_no_rule_knows_are_an_unexplained_finding_with_their_exact_count() {
    require_root!();
    if !kernel_names("IP_NOPROTO") {
        return;
    }
    const PACKETS: u64 = 50;
    let netdoc = doctor();
    let pair = Pair::new("U", 81);
    // IP protocol 253 (for experiments): nothing on b handles it.
    pair.send_raw(253, b"netdoc", PACKETS as usize);
    wait_until("the unknown-protocol drops", || {
        ns_counter(&pair.b, "snmp", "Ip", "InUnknownProtos") == PACKETS
    });
    let (status, r) = report_after(netdoc, "unexplained_drops");
    assert_eq!(
        status.code(),
        Some(1),
        "a drop group above the noise is a problem"
    );
    let f = &r.findings[0];
    assert_eq!(f.id, "unexplained_drops", "{r:#?}");
    assert_eq!(f.scope.name, pair.b, "{f:#?}");
    assert_eq!(f.affected, PACKETS, "{f:#?}");
    assert!(
        f.title.contains("IP_NOPROTO in ip_local_deliver_finish"),
        "{}",
        f.title
    );
    assert!(
        f.shows(&format!("Ip.InUnknownProtos grew by {PACKETS}")),
        "{f:#?}"
    );
    assert!(f.shows("IP protocol"), "the reason's meaning: {f:#?}");
    assert!(
        f.fix.iter().any(|x| x.contains(&format!(
            "netdoc drops --reason IP_NOPROTO --netns {}",
            pair.b
        ))),
        "{f:#?}"
    );
    assert!(
        r.drops_accounted.explained >= PACKETS,
        "{:?}",
        r.drops_accounted
    );
    assert_nothing_left();
}

#[test]
fn strict_reverse_path_filtering_names_the_route_back_by_another_interface() {
    require_root!();
    if !kernel_names("IP_RPFILTER") {
        return;
    }
    const PACKETS: usize = 40;
    let netdoc = doctor();
    let pair = Pair::new("R", 82);
    // A second link between a and b: b routes a's second address back through it.
    let (dev_c, dev_d) = ("ndRc", "ndRd");
    ip(
        &pair.a,
        &format!(
            "link add {dev_c} type veth peer name {dev_d} netns {}",
            pair.b
        ),
    );
    ip(&pair.a, &format!("addr add 10.232.82.5/24 dev {dev_c}"));
    ip(&pair.b, &format!("addr add 10.232.82.1/24 dev {dev_d}"));
    ip(&pair.a, &format!("link set {dev_c} up"));
    ip(&pair.b, &format!("link set {dev_d} up"));
    sysctl(&pair.b, "net.ipv4.conf.all.rp_filter=1");
    let before = ns_counter(&pair.b, "netstat", "TcpExt", "IPReversePathFilter");
    pair.run_in_a(|_, to| {
        let sock = UdpSocket::bind(("10.232.82.5", 0)).unwrap();
        for _ in 0..PACKETS {
            sock.send_to(b"netdoc", (to, CLOSED_PORT)).unwrap();
        }
    });
    wait_until("the reverse-path drops", || {
        ns_counter(&pair.b, "netstat", "TcpExt", "IPReversePathFilter") - before == PACKETS as u64
    });
    let (status, r) = report_after(netdoc, "reverse_path_filter");
    assert_eq!(status.code(), Some(1));
    let f = &r.findings[0];
    assert_eq!(f.id, "reverse_path_filter", "{r:#?}");
    assert_eq!(f.scope.name, pair.b, "{f:#?}");
    assert_eq!(f.affected, PACKETS as u64, "{f:#?}");
    assert!(
        f.shows(&format!("arrived on {}", pair.dev_b))
            || f.shows(&format!("not by {}", pair.dev_b)),
        "{f:#?}"
    );
    assert!(
        f.shows(&format!(
            "the route back to the source 10.232.82.5 leaves by dev {dev_d}"
        )),
        "{f:#?}"
    );
    assert!(
        f.shows("the effective mode is the larger, 1 (strict)"),
        "{f:#?}"
    );
    assert!(f.fix.iter().any(|x| x.contains("rp_filter=2")), "{f:#?}");
    assert!(
        !r.findings
            .iter()
            .any(|f| f.id == "unexplained_drops" && f.title.contains("IP_RPFILTER")),
        "{r:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_namespace_that_does_not_forward_is_told_apart_from_a_missing_route() {
    require_root!();
    if !kernel_names("IP_INADDRERRORS") {
        return;
    }
    const PACKETS: usize = 30;
    let netdoc = doctor();
    let pair = Pair::new("W", 83);
    // a routes a network beyond b through b, which does not forward.
    ip(
        &pair.a,
        &format!("route add 10.233.83.0/24 via {}", pair.ip_b),
    );
    sysctl(&pair.b, "net.ipv4.ip_forward=0");
    let before = ns_counter(&pair.b, "snmp", "Ip", "InAddrErrors");
    pair.run_in_a(|_, _| {
        let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        for _ in 0..PACKETS {
            sock.send_to(b"netdoc", ("10.233.83.9", CLOSED_PORT))
                .unwrap();
        }
    });
    wait_until("the unforwarded drops", || {
        ns_counter(&pair.b, "snmp", "Ip", "InAddrErrors") - before == PACKETS as u64
    });
    let (status, r) = report_after(netdoc, "forwarding_disabled");
    assert_eq!(status.code(), Some(1));
    let f = &r.findings[0];
    assert_eq!(f.id, "forwarding_disabled", "{r:#?}");
    assert_eq!(f.scope.name, pair.b, "{f:#?}");
    assert_eq!(f.affected, PACKETS as u64, "{f:#?}");
    assert!(f.shows("net.ipv4.ip_forward = 0"), "{f:#?}");
    assert!(
        f.fix.iter().any(|x| x.contains("net.ipv4.ip_forward=1")),
        "{f:#?}"
    );
    assert!(
        !r.findings.iter().any(|f| f.id == "route_refuses"),
        "{r:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_neighbour_that_never_answers_is_not_a_full_neighbour_table() {
    require_root!();
    if !kernel_names("NEIGH_FAILED") {
        return;
    }
    const PACKETS: usize = 60;
    let netdoc = doctor();
    let pair = Pair::new("N", 84);
    let nobody = "10.231.84.77";
    pair.run_in_a(move |_, _| {
        let sock = UdpSocket::bind(("0.0.0.0", 0)).unwrap();
        for _ in 0..PACKETS {
            sock.send_to(b"netdoc", (nobody, CLOSED_PORT)).unwrap();
        }
    });
    let (status, r) = report_after(netdoc, "neighbour_unresolved");
    assert_eq!(status.code(), Some(1));
    let f = &r.findings[0];
    assert_eq!(f.id, "neighbour_unresolved", "{r:#?}");
    assert_eq!(f.scope.name, pair.a, "{f:#?}");
    assert!(f.title.contains(nobody), "{}", f.title);
    // Every datagram queued for the address, or beyond the queue, is dropped with it.
    assert_eq!(f.affected, PACKETS as u64, "{f:#?}");
    assert!(
        !r.findings
            .iter()
            .any(|f| f.id == "neighbour_table_overflow"),
        "{r:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_full_input_backlog_names_the_cpu_rps_steers_to() {
    require_root!();
    if !kernel_names("CPU_BACKLOG")
        || std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        return;
    }
    let netdoc = doctor();
    let pair = Pair::new("K", 85);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "sh",
            "-c",
            &format!(
                "echo 2 > /sys/class/net/{}/queues/rx-0/rps_cpus",
                pair.dev_b
            ),
        ],
    );
    let dropped = || -> u64 {
        std::fs::read_to_string("/proc/net/softnet_stat")
            .unwrap()
            .lines()
            .nth(1)
            .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
            .unwrap_or(0)
    };
    let before = dropped();
    // As small while the doctor reports as when the backlog overflowed.
    let _small = Sysctl::set("/proc/sys/net/core/netdev_max_backlog", 16);
    // Bounded: until CPU 1's backlog has overflowed, at most 20 rounds.
    for _ in 0..20 {
        pair.send(CLOSED_PORT, 5_000);
        if dropped() - before >= 100 {
            break;
        }
    }
    assert!(dropped() > before, "CPU 1's backlog never overflowed");
    let (status, r) = report_after(netdoc, "cpu_backlog_overflow");
    assert_eq!(status.code(), Some(1));
    let f = r
        .findings
        .iter()
        .find(|f| f.id == "cpu_backlog_overflow")
        .unwrap();
    assert_eq!(f.severity, Severity::Critical);
    assert_eq!(f.scope.name, "CPU 1", "{f:#?}");
    assert!(
        f.shows("rps_cpus 2 (every packet it receives is queued to CPU 1)"),
        "{f:#?}"
    );
    assert!(
        f.title.contains("net.core.netdev_max_backlog 16"),
        "{}",
        f.title
    );
    assert!(
        !r.findings
            .iter()
            .any(|f| f.id == "unexplained_drops" && f.title.contains("CPU_BACKLOG")),
        "{r:#?}"
    );
    assert_nothing_left();
}

#[test]
fn datagrams_with_a_bad_checksum_are_corrupt_packets_from_their_sender() {
    require_root!();
    if !kernel_names("UDP_CSUM") {
        return;
    }
    const PACKETS: u64 = 30;
    let netdoc = doctor();
    let pair = Pair::new("C", 88);
    let before = ns_counter(&pair.b, "snmp", "Udp", "InCsumErrors");
    // A UDP header to port 9 whose checksum cannot be right, then "netdoc".
    const DATAGRAM: &[u8] = &[
        0x04, 0xd2, 0x00, 0x09, 0x00, 0x0e, 0xde, 0xad, b'n', b'e', b't', b'd', b'o', b'c',
    ];
    pair.send_raw(libc::IPPROTO_UDP, DATAGRAM, PACKETS as usize);
    wait_until("the checksum errors", || {
        ns_counter(&pair.b, "snmp", "Udp", "InCsumErrors") - before == PACKETS
    });
    let (status, r) = report_after(netdoc, "corrupt_packets");
    assert_eq!(status.code(), Some(1));
    let f = &r.findings[0];
    assert_eq!(f.id, "corrupt_packets", "{r:#?}");
    assert_eq!(f.scope.name, pair.b, "{f:#?}");
    assert_eq!(f.affected, PACKETS, "{f:#?}");
    assert!(
        f.title
            .contains(&format!("(UDP_CSUM), all from {}", pair.ip_a)),
        "{}",
        f.title
    );
    assert!(f.shows(&format!("arrived on {}", pair.dev_b)), "{f:#?}");
    assert!(
        f.shows(&format!("Udp.InCsumErrors grew by {PACKETS}")),
        "{f:#?}"
    );
    assert_nothing_left();
}

#[test]
fn packets_queued_to_a_queue_no_program_reads_name_the_rule() {
    require_root!();
    // Absent from the QEMU guests.
    if !std::process::Command::new("iptables-legacy")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: needs iptables-legacy");
        return;
    }
    const PACKETS: usize = 25;
    let netdoc = doctor();
    let pair = Pair::new("Q", 89);
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "iptables-legacy",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "5000",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "5",
        ],
    );
    pair.send(5000, PACKETS);
    let (status, r) = report_after(netdoc, "nfqueue_unread");
    assert_eq!(status.code(), Some(1));
    let f = &r.findings[0];
    assert_eq!(f.id, "nfqueue_unread", "{r:#?}");
    assert_eq!(f.scope.name, pair.b, "{f:#?}");
    assert_eq!(f.affected, PACKETS as u64, "{f:#?}");
    assert!(f.title.contains("-j NFQUEUE --queue-num 5"), "{}", f.title);
    assert!(
        !r.findings.iter().any(|f| f.id == "unexplained_drops"),
        "{r:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_busy_healthy_host_has_no_finding() {
    require_root!();
    const STREAMS: usize = 4;
    let run_for = Duration::from_secs(8);
    let pair = Pair::new("H", 86);
    let netdoc = doctor();
    let listener = {
        let at = format!("{}:5001", pair.ip_b);
        in_namespace(&pair.b, move || TcpListener::bind(at).unwrap())
            .join()
            .unwrap()
    };
    let echo = {
        let at = format!("{}:5002", pair.ip_b);
        in_namespace(&pair.b, move || UdpSocket::bind(at).unwrap())
            .join()
            .unwrap()
    };
    echo.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + run_for;
    let echoing = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            if let Ok((n, from)) = echo.recv_from(&mut buf) {
                let _ = echo.send_to(&buf[..n], from);
            }
        }
    });
    let sinks = std::thread::spawn(move || {
        let streams: Vec<TcpStream> = (0..STREAMS).map(|_| listener.accept().unwrap().0).collect();
        let readers: Vec<_> = streams
            .into_iter()
            .map(|mut s| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while s.read(&mut buf).is_ok_and(|n| n > 0) {}
                })
            })
            .collect();
        readers.into_iter().for_each(|r| r.join().unwrap());
    });
    let to_b = pair.ip_b.clone();
    let senders: Vec<_> = (0..STREAMS)
        .map(|_| {
            let to = format!("{to_b}:5001");
            in_namespace(&pair.a, move || {
                let mut s = TcpStream::connect(to).unwrap();
                let chunk = vec![7u8; 1 << 16];
                while Instant::now() < end {
                    s.write_all(&chunk).unwrap();
                }
            })
        })
        .collect();
    let to = format!("{to_b}:5002");
    let requests = in_namespace(&pair.a, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 2048];
        let mut answered = 0u64;
        while Instant::now() < end {
            sock.send_to(&[1u8; 64], &to).unwrap();
            answered += u64::from(sock.recv_from(&mut buf).is_ok());
        }
        answered
    });
    senders.into_iter().for_each(|s| s.join().unwrap());
    let answered = requests.join().unwrap();
    sinks.join().unwrap();
    echoing.join().unwrap();
    let retransmitted = ns_counter(&pair.a, "snmp", "Tcp", "RetransSegs");
    let timeouts = ns_counter(&pair.a, "netstat", "TcpExt", "TCPTimeouts");
    eprintln!(
        "{answered} requests answered; a retransmitted {retransmitted} segments, {timeouts} timeouts"
    );
    let (status, lines) = netdoc.stop(libc::SIGINT);
    let r = match as_output(lines.last().expect("a report")) {
        Output::Doctor(r) => r,
        other => panic!("not a doctor report: {other:?}"),
    };
    let problems: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    assert!(
        problems.is_empty(),
        "a busy healthy host: {problems:#?}\naccounted: {:?}",
        r.drops_accounted
    );
    assert_eq!(status.code(), Some(0));
    assert_nothing_left();
}
