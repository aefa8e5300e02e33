//! Kernel integration tests of `netdoc doctor`, started host-wide with no hints before the
//! namespaces of each incident exist: each incident reproduced for real must be the first
//! finding, scoped where it happened, with exact counts, and its look-alike must not be
//! reported in its place. A quiet run reports nothing, and a recording replays to the same
//! report without privileges.
use std::{
    os::fd::AsRawFd as _,
    process::{Command, ExitStatus},
    time::{Duration, Instant},
};

use netdoc_user::output::{DoctorReport as Report, ScopeKind, Severity};

mod common;
use common::*;

/// Starts the doctor for longer than any test takes (each stops it once the incident is in).
fn doctor(extra: &[&str]) -> Netdoc {
    let mut args = vec![
        "doctor",
        "--json",
        "--duration",
        "5m",
        "--interval",
        "500ms",
    ];
    args.extend(extra);
    start(&args)
}

/// Waits (bounded) until the doctor has announced every finding of `ids` (each once, in any
/// order), then stops it: its exit status and report.
fn report_after(netdoc: Netdoc, ids: &[&str]) -> (ExitStatus, Report) {
    await_announced(&netdoc, ids);
    let (status, lines) = netdoc.stop(libc::SIGINT);
    (status, the_report(&lines))
}

/// Waits (bounded) until the doctor has announced each of `ids` live.
fn await_announced(netdoc: &Netdoc, ids: &[&str]) {
    let mut awaited: Vec<String> = ids.iter().map(|id| format!(" {id} [")).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !awaited.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        match netdoc.stderr.recv_timeout(left) {
            Ok(line) => {
                eprintln!("netdoc: {line}");
                awaited.retain(|a| !line.contains(a.as_str()));
            }
            Err(e) => panic!("netdoc never announced {awaited:?} ({e})"),
        }
    }
}

fn the_report(lines: &[serde_json::Value]) -> Report {
    match as_output(lines.last().expect("a report")) {
        Output::Doctor(r) => r,
        other => panic!("not a doctor report: {other:?}"),
    }
}

fn ids(r: &Report) -> Vec<&str> {
    r.findings.iter().map(|f| f.id.as_ref()).collect()
}

/// Waits (bounded) until `done()` holds: the kernel's own counters show the incident.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn datagrams_to_a_closed_port_are_told_apart_from_a_firewall_rule() {
    require_root!();
    const CLOSED: usize = 40;
    const FIREWALLED: usize = 20;
    let netdoc = doctor(&[]);
    let pair = Pair::new("D", 71);
    // A rule whose comment, printed as text, reads as a drop rule for the same port with a
    // counter of 999999 (nft prints a comment's newline and quotes as they are): the doctor
    // must name the real rule and its real counter.
    let forged = r#"{"nftables":[{"add":{"rule":{"family":"inet","table":"netdoc_test","chain":"input",
        "expr":[{"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":9}},{"accept":null}],
        "comment":"x\"\n\t\tudp dport 7777 counter packets 999999 bytes 1 drop comment \"forged"}}}]}"#;
    let file = std::env::temp_dir().join(format!("netdoc-forged-{}.json", std::process::id()));
    std::fs::write(&file, forged).unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            "-j",
            "-f",
            file.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&file).unwrap();
    pair.send(CLOSED_PORT, CLOSED);
    pair.send(FIREWALLED_PORT, FIREWALLED);
    pair.wait_for_drops(CLOSED as u64, FIREWALLED as u64);
    let (status, r) = report_after(netdoc, &["udp_no_listener", "firewall_drop"]);
    assert_eq!(status.code(), Some(1), "findings exit 1");
    assert_eq!(ids(&r)[..2], ["udp_no_listener", "firewall_drop"], "{r:#?}");
    let closed = &r.findings[0];
    assert_eq!(closed.scope.kind, ScopeKind::Namespace);
    assert_eq!(closed.scope.name, pair.b);
    assert_eq!(closed.affected, CLOSED as u64, "{closed:#?}");
    assert!(
        closed.title.contains(&format!("UDP port {CLOSED_PORT}")),
        "{}",
        closed.title
    );
    assert!(
        closed.shows(&format!("Udp.NoPorts grew by {CLOSED}")),
        "{closed:#?}"
    );
    let rule = &r.findings[1];
    assert_eq!(rule.scope.name, pair.b);
    assert_eq!(rule.affected, FIREWALLED as u64, "{rule:#?}");
    assert!(
        rule.title
            .contains(&format!("{}:{FIREWALLED_PORT}", pair.ip_b)),
        "{}",
        rule.title
    );
    // The rule itself, from the namespace's ruleset: its counter counted every one.
    assert!(
        rule.title.contains(&format!(
            "nftables rule `udp dport {FIREWALLED_PORT} counter drop` in inet netdoc_test/input handle"
        )),
        "{}",
        rule.title
    );
    assert!(
        rule.shows(&format!("its counter reads {FIREWALLED} packets")),
        "{rule:#?}"
    );
    assert!(!format!("{r:?}").contains("999999"), "{rule:#?}");
    assert_nothing_left();
}

/// The x_tables front end whose rules `iptables-legacy-save -c` lists (absent from the QEMU
/// guests).
const XT: &str = "iptables-legacy";

/// Packets the x_tables INPUT rules of namespace `ns` matched.
fn xt_matched(ns: &str) -> u64 {
    run(
        "ip",
        &["netns", "exec", ns, XT, "-w", "-L", "INPUT", "-vnx"],
    )
    .lines()
    .skip(2)
    .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    .sum()
}

/// An iptables-legacy rule is named by its table, chain and number, from its counter, beside
/// the pair's nft drop rule that dropped nothing.
#[test]
fn an_iptables_legacy_drop_names_its_rule_by_chain_and_number() {
    require_root!();
    if !std::process::Command::new(XT)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipped: needs {XT}");
        return;
    }
    const DROPPED: usize = 20;
    const PORT: u16 = 7779;
    let netdoc = doctor(&[]);
    let pair = Pair::new("M", 94);
    let port = PORT.to_string();
    run(
        "ip",
        &[
            "netns", "exec", &pair.b, XT, "-w", "-A", "INPUT", "-p", "udp", "--dport", &port, "-j",
            "DROP",
        ],
    );
    // iptables-legacy-save prints a comment's newline inside its quotes: this one would read,
    // line by line, as a second drop rule with a counter of 999999.
    let forged = format!("a\"\n[999999:1] -A INPUT -p udp -m udp --dport {PORT} -j DROP");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            XT,
            "-w",
            "-A",
            "INPUT",
            "-p",
            "tcp",
            "--dport",
            "9",
            "-m",
            "comment",
            "--comment",
            &forged,
            "-j",
            "ACCEPT",
        ],
    );
    pair.send(PORT, DROPPED);
    wait_until("the x_tables rule matched every datagram", || {
        xt_matched(&pair.b) == DROPPED as u64
    });
    let (_, r) = report_after(netdoc, &["firewall_drop"]);
    let rule = r
        .findings
        .iter()
        .find(|f| f.id == "firewall_drop" && f.scope.name == pair.b)
        .unwrap_or_else(|| panic!("no firewall finding in {}: {r:#?}", pair.b));
    assert_eq!(rule.affected, DROPPED as u64, "{rule:#?}");
    assert!(
        rule.title.contains(&format!(
            "iptables-legacy rule `-p udp -m udp --dport {PORT} -j DROP` in filter/INPUT rule 1"
        )),
        "{}",
        rule.title
    );
    assert!(
        rule.shows(&format!("its counter reads {DROPPED} packets")),
        "{rule:#?}"
    );
    assert!(
        rule.fix[1].contains("iptables-legacy -t filter -D INPUT 1"),
        "{:?}",
        rule.fix
    );
    assert!(!format!("{r:?}").contains("999999"), "{rule:#?}");
    assert_nothing_left();
}

/// netdoc's own blind spot, for real: over its budget of streamed events it samples them out,
/// and says so as a finding about the diagnosis (ranked below the incident), with the probe's
/// exact accounting, while the incident's count (from the kernel's counter) stays exact.
#[test]
fn events_over_the_budget_are_a_blind_spot_below_the_incident_and_counts_stay_exact() {
    require_root!();
    const CLOSED: usize = 200;
    let netdoc = doctor(&["--max-events-per-sec", "5"]);
    let pair = Pair::new("U", 88);
    pair.send(CLOSED_PORT, CLOSED);
    pair.wait_for_drops(CLOSED as u64, 0);
    let (status, r) = report_after(netdoc, &["udp_no_listener"]);
    assert_eq!(status.code(), Some(1));
    assert_eq!(ids(&r)[0], "udp_no_listener", "{r:#?}");
    assert_eq!(r.findings[0].affected, CLOSED as u64, "{r:#?}");
    let blind = r
        .findings
        .iter()
        .find(|f| f.id == "netdoc_blind_spot" && f.title.contains("over its budget of 5"))
        .unwrap_or_else(|| panic!("no sampling blind spot: {r:#?}"));
    assert_eq!(blind.severity, Severity::Info);
    assert_eq!(
        blind.evidence[0].text,
        format!(
            "matched {}, delivered {}, sampled {}",
            r.drops_matched, r.drops_delivered, r.drops_sampled
        )
    );
    assert!(r.drops_sampled > 0, "{r:#?}");
    assert!(r.drops_matched >= CLOSED as u64, "{r:#?}");
    assert_eq!(
        r.drops_delivered + r.drops_sampled + r.drops_lost,
        r.drops_matched
    );
    assert_nothing_left();
}

#[test]
fn refused_tcp_connections_are_named_as_such_by_their_flags() {
    require_root!();
    const ATTEMPTS: usize = 12;
    if !kernel_has_drop_reasons() {
        // tcp_v4_rcv frees a segment for no socket and for a bad checksum at the same call:
        // without the reason, nothing tells them apart, and the doctor says nothing.
        eprintln!("skipped: kfree_skb has no drop reason on this kernel");
        return;
    }
    let netdoc = doctor(&[]);
    let pair = Pair::new("W", 82);
    assert_eq!(
        pair.connect(CLOSED_PORT, ATTEMPTS),
        ATTEMPTS,
        "each SYN refused"
    );
    let (status, r) = report_after(netdoc, &["tcp_no_listener"]);
    assert_eq!(status.code(), Some(1), "findings exit 1");
    let first = &r.findings[0];
    assert_eq!(first.id, "tcp_no_listener", "{r:#?}");
    assert_eq!(first.severity, Severity::Warning, "{first:#?}");
    assert_eq!(first.scope.name, pair.b);
    assert_eq!(first.affected, ATTEMPTS as u64, "{first:#?}");
    assert_eq!(
        first.title,
        format!(
            "{ATTEMPTS} TCP connection attempts to port {CLOSED_PORT} were refused: nothing listens there"
        )
    );
    assert!(
        first.shows(&format!(
            "{ATTEMPTS} of the {ATTEMPTS} dropped segments opened a connection"
        )),
        "{first:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_full_conntrack_table_in_a_new_namespace_is_not_called_a_firewall() {
    require_root!();
    const FLOWS: usize = 40;
    let netdoc = doctor(&[]);
    let pair = Pair::new("T", 72);
    for rule in [
        "add chain inet netdoc_test pre { type filter hook prerouting priority 0; }",
        "add rule inet netdoc_test pre ct state new counter",
    ] {
        run("ip", &["netns", "exec", &pair.b, "nft", rule]);
    }
    let max = Sysctl::set(MAX_PATH, 8);
    pair.send_flows(CLOSED_PORT, FLOWS);
    drop(max);
    let (status, r) = report_after(netdoc, &["conntrack_table_full"]);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "conntrack_table_full", "{r:#?}");
    assert_eq!(first.scope.name, pair.b);
    assert!(
        first.affected > 0 && first.affected < FLOWS as u64,
        "{first:#?}"
    );
    assert!(
        !ids(&r).contains(&"firewall_drop"),
        "conntrack's drops are not a rule's: {r:#?}"
    );
    assert!(!ids(&r).contains(&"conntrack_insert_failed"), "{r:#?}");
    assert_nothing_left();
}

#[test]
fn snat_clashes_are_insert_failures_not_a_full_table() {
    require_root!();
    const FLOWS: usize = 20;
    let netdoc = doctor(&[]);
    let pair = Pair::new("S", 73);
    let snat = format!(
        "add rule ip netdoc_nat post udp dport {CLOSED_PORT} snat to {}:5000",
        pair.ip_a
    );
    for rule in [
        "add table ip netdoc_nat",
        "add chain ip netdoc_nat post { type nat hook postrouting priority 100; }",
        &snat,
    ] {
        run("ip", &["netns", "exec", &pair.a, "nft", rule]);
    }
    pair.send_flows(CLOSED_PORT, FLOWS);
    let (status, r) = report_after(netdoc, &["conntrack_insert_failed"]);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "conntrack_insert_failed", "{r:#?}");
    assert_eq!(
        first.scope.name, pair.a,
        "the clash is in the NATing namespace"
    );
    assert_eq!(
        first.affected,
        FLOWS as u64 - 1,
        "every flow after the first: {first:#?}"
    );
    // The rule whose port allocation clashed, read in that namespace, and the fix names it.
    let rule = format!(
        "ip netdoc_nat post: udp dport {CLOSED_PORT} snat to {}:5000",
        pair.ip_a
    );
    assert!(
        first
            .evidence
            .iter()
            .any(|e| e.text == format!("source NAT rule in {rule} (ports not fully random)")),
        "{first:#?}"
    );
    assert!(
        first.fix[0].starts_with(&format!("randomize the source ports of {rule} (")),
        "{first:#?}"
    );
    assert!(first.fix.iter().any(|f| f.contains("random-fully")));
    assert!(!ids(&r).contains(&"conntrack_table_full"), "{r:#?}");
    assert_nothing_left();
}

#[test]
fn an_accept_queue_overflow_names_the_listener_and_its_backlog() {
    require_root!();
    // Enough that a syncookie ACK refused at the full queue (NO_SOCKET in cookie_v4_check)
    // would pass for a closed port if the rules mistook it.
    const CLIENTS: usize = 16;
    const PORT: u16 = 8080;
    let netdoc = doctor(&[]);
    let pair = Pair::new("Q", 74);
    // No SYN-ACK retransmits: once the clients are gone the counters stay still.
    pair.no_synack_retries_in_b();
    let listener = tiny_listener(&pair.b, &pair.ip_b, PORT);
    let to: std::net::SocketAddr = format!("{}:{PORT}", pair.ip_b).parse().unwrap();
    let clients = pair.connect_from_a(to, CLIENTS, Duration::from_millis(300));
    let overflows = ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows");
    assert!(overflows > 0, "the queue overflowed");
    let (status, r) = report_after(netdoc, &["listen_queue_overflow"]);
    drop(clients);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "listen_queue_overflow", "{r:#?}");
    assert_eq!(first.scope.kind, ScopeKind::Listener);
    assert!(first.scope.name.contains(&to.to_string()), "{first:#?}");
    assert!(first.scope.name.contains(&pair.b), "{first:#?}");
    assert!(first.affected >= overflows, "{first:#?}");
    assert!(first.shows("backlog 1"), "{first:#?}");
    // A backlog of 1 holds two connections, and a third when its SYN passed the check before
    // the second completed (seen in the slower guests); the clients keep theirs open,
    // unaccepted, and both readings of the queue say how many.
    let waiting = (2..=3)
        .find(|n| {
            first.shows(&format!(
                "{n} connections waiting to be accepted, backlog 1"
            ))
        })
        .unwrap_or_else(|| panic!("the queue held 2 or 3: {first:#?}"));
    assert!(
        first.shows(&format!(
            "accept latency at {to}: {waiting} connections not yet accepted"
        )),
        "{first:#?}"
    );
    assert!(
        !ids(&r).contains(&"tcp_no_listener"),
        "a listener exists: {r:#?}"
    );
    assert!(
        first.title.contains(&format!("[{}]", std::process::id())),
        "the owner is this process: {}",
        first.title
    );
    drop(listener);
    assert_nothing_left();
}

#[test]
fn a_listener_whose_process_exited_is_still_named_by_that_process() {
    require_root!();
    // Enough overflows for a finding (each client's one SYN, no retries in 300 ms).
    const CLIENTS: usize = 16;
    const PORT: u16 = 8080;
    let netdoc = doctor(&[]);
    let pair = Pair::new("O", 89);
    pair.no_synack_retries_in_b();
    // The listener passes to a `sleep` (its fd 3), which alone holds it: a server that overflows
    // its queue, then crashes or is restarted before anyone looks.
    let listener = tiny_listener(&pair.b, &pair.ip_b, PORT);
    let raw = listener.as_raw_fd();
    let mut holder = Command::new("sleep");
    holder.arg("60");
    // SAFETY: between fork and exec the child only calls dup2, which is async-signal-safe; the
    // copy it makes is open across exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut holder, move || {
            match libc::dup2(raw, 3) {
                3 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let mut holder = holder.spawn().unwrap();
    drop(listener);
    let to: std::net::SocketAddr = format!("{}:{PORT}", pair.ip_b).parse().unwrap();
    let clients = pair.connect_from_a(to, CLIENTS, Duration::from_millis(300));
    assert!(ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows") > 0);
    await_announced(&netdoc, &["listen_queue_overflow"]);
    let holder_pid = holder.id();
    holder.kill().unwrap();
    holder.wait().unwrap();
    drop(clients);
    // Another listener of b overflows after the first one closed: netdoc reads b's listeners
    // again (by the report at the latest), and the gone one's last reading must survive that.
    // Its backlog of 4 keeps it less full than the gone one (5 of 4 against 2 of 1).
    let _other = common::listener(&pair.b, &pair.ip_b, PORT + 1, 4);
    let other: std::net::SocketAddr = format!("{}:{}", pair.ip_b, PORT + 1).parse().unwrap();
    let before = ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows");
    let more = pair.connect_from_a(other, CLIENTS, Duration::from_millis(300));
    assert!(ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows") > before);
    let (status, lines) = netdoc.stop(libc::SIGINT);
    drop(more);
    let r = the_report(&lines);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "listen_queue_overflow", "{r:#?}");
    assert!(
        first.title.contains(&format!("sleep[{holder_pid}]")),
        "named by the process that held it, gone by the report: {}",
        first.title
    );
    assert_nothing_left();
}

#[test]
fn a_full_syn_queue_without_syncookies_is_told_apart_from_a_full_accept_queue() {
    require_root!();
    const CLIENTS: usize = 20;
    const PORT: u16 = 8081;
    let netdoc = doctor(&[]);
    let pair = Pair::new("Y", 80);
    // No syncookies, and no handshake ever completes (b drops the clients' final ACKs): the
    // SYN queue of a backlog-1 listener fills and further SYNs are dropped there.
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "sysctl",
            "-qw",
            "net.ipv4.tcp_syncookies=0",
        ],
    );
    let ack = format!(
        "add rule inet netdoc_test input tcp dport {PORT} tcp flags & (syn | ack) == ack drop"
    );
    run("ip", &["netns", "exec", &pair.b, "nft", &ack]);
    let listener = tiny_listener(&pair.b, &pair.ip_b, PORT);
    let to: std::net::SocketAddr = format!("{}:{PORT}", pair.ip_b).parse().unwrap();
    let clients = pair.connect_from_a(to, CLIENTS, Duration::from_millis(200));
    let syn_drops = ns_counter(&pair.b, "netstat", "TcpExt", "TCPReqQFullDrop");
    assert!(syn_drops > 0, "the SYN queue overflowed");
    let (status, r) = report_after(netdoc, &["syn_queue_overflow"]);
    // A client that saw the SYN-ACK thinks it is connected; closed normally, its FIN (an ACK to
    // b's rule) would be retransmitted into that rule for as long as b lives, into the next
    // test's quiet run. A reset is sent once.
    for client in clients.into_iter().flatten() {
        close_with_reset(client);
    }
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "syn_queue_overflow", "{r:#?}");
    assert_eq!(first.scope.kind, ScopeKind::Listener, "{first:#?}");
    assert!(first.scope.name.contains(&to.to_string()), "{first:#?}");
    assert!(first.affected >= syn_drops, "{first:#?}");
    assert!(first.shows("tcp_syncookies 0"), "{first:#?}");
    assert!(
        !ids(&r).contains(&"listen_queue_overflow"),
        "the accept queue never filled: {r:#?}"
    );
    assert!(
        !ids(&r).contains(&"silent_path_drop"),
        "the SYNs were refused here: {r:#?}"
    );
    drop(listener);
    assert_nothing_left();
}

#[test]
fn a_full_receive_buffer_names_the_socket_not_a_closed_port() {
    require_root!();
    const DATAGRAMS: usize = 300;
    const PORT: u16 = 5353;
    let netdoc = doctor(&[]);
    let pair = Pair::new("R", 75);
    // A socket in b with the smallest receive buffer, never read.
    let socket = pair.udp_socket_in_b(PORT);
    set_socket_option(&socket, libc::SO_RCVBUF, 1);
    pair.send(PORT, DATAGRAMS);
    let rcvbuf = || ns_counter(&pair.b, "snmp", "Udp", "RcvbufErrors");
    wait_until("receive buffer drops", || rcvbuf() > 0);
    let (status, r) = report_after(netdoc, &["socket_receive_buffer_full"]);
    // Read after the doctor's last sample: the buffer has long been full and still.
    let dropped = rcvbuf();
    assert!(dropped > DATAGRAMS as u64 / 2, "most overflowed: {dropped}");
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "socket_receive_buffer_full", "{r:#?}");
    assert_eq!(first.scope.kind, ScopeKind::Socket);
    assert!(
        first.scope.name.contains(&format!("{}:{PORT}", pair.ip_b)),
        "{first:#?}"
    );
    assert_eq!(first.affected, dropped, "{first:#?}");
    assert!(!ids(&r).contains(&"udp_no_listener"), "{r:#?}");
    drop(socket);
    assert_nothing_left();
}

/// Connections from a to b that stall: b's firewall starts dropping their data, so each
/// connection's head segment times out again and again. The host-wide doctor sees that drop in
/// b and names it; one watching only a (`--netns`) cannot, as if b were another host, and calls
/// it what it then is: a silent drop on the path.
#[test]
fn a_stalled_flow_is_its_peers_drop_host_wide_and_a_silent_path_drop_seen_from_its_own_namespace() {
    require_root!();
    const CONNECTIONS: usize = 4;
    const PORT: u16 = 5202;
    let host_wide = doctor(&[]);
    let pair = Pair::new("J", 87);
    // Returns once it has attached, as every start does.
    let only_a = doctor(&["--netns", &pair.a]);
    let ns = |name: &str| std::fs::File::open(format!("/run/netns/{name}")).unwrap();
    let in_ns = |file: std::fs::File| {
        // SAFETY: setns on the calling thread only, with an open namespace file.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0);
    };
    let (ns_a, ns_b) = (ns(&pair.a), ns(&pair.b));
    let to: std::net::SocketAddr = format!("{}:{PORT}", pair.ip_b).parse().unwrap();
    // Connections completed by the kernel wait unaccepted; their data is still acknowledged.
    let listener = std::thread::spawn(move || {
        in_ns(ns_b);
        std::net::TcpListener::bind(to).unwrap()
    })
    .join()
    .unwrap();
    let mut clients = std::thread::spawn(move || {
        in_ns(ns_a);
        (0..CONNECTIONS)
            .map(|_| std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap())
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.b,
            "nft",
            &format!("add rule inet netdoc_test input tcp dport {PORT} drop"),
        ],
    );
    let before = ns_counter(&pair.a, "snmp", "Tcp", "RetransSegs");
    for c in &mut clients {
        std::io::Write::write_all(c, &[0x5a; 1000]).unwrap();
    }
    // Four timeouts of each head segment (0.2 + 0.4 + 0.8 + 1.6 s).
    wait_until("the stalled segments to time out four times each", || {
        ns_counter(&pair.a, "snmp", "Tcp", "RetransSegs") >= before + 4 * CONNECTIONS as u64
    });
    let (_, seen_from_a) = report_after(only_a, &["silent_path_drop"]);
    let (_, r) = report_after(host_wide, &["local_drop_stalls_flow"]);
    drop((clients, listener));

    let stalled = r
        .findings
        .iter()
        .find(|f| f.id == "local_drop_stalls_flow")
        .unwrap();
    assert_eq!(stalled.scope.kind, ScopeKind::Flow);
    assert!(stalled.scope.name.contains(&pair.a), "{stalled:#?}");
    // Without drop reasons (5.10) the drop is named by the function that freed it.
    let dropped = match kernel_has_drop_reasons() {
        true => "NETFILTER_DROP",
        false => "freed in nf_hook_slow",
    };
    assert!(
        stalled.title.contains(&format!(
            "{CONNECTIONS} connections to {to} keep timing out because namespace {} on this host drops their packets ({dropped})",
            pair.b
        )),
        "{stalled:#?}"
    );
    assert!(!ids(&r).contains(&"silent_path_drop"), "{r:#?}");

    let first = &seen_from_a.findings[0];
    assert_eq!(first.id, "silent_path_drop", "{seen_from_a:#?}");
    assert_eq!(first.scope.kind, ScopeKind::Flow);
    assert!(
        first.title.contains(&format!(
            "{CONNECTIONS} connections to {to} keep timing out and no drop in namespace {} explains it",
            pair.a
        )),
        "{first:#?}"
    );
    assert!(
        !ids(&seen_from_a).contains(&"firewall_drop"),
        "b's drops are not watched: {seen_from_a:#?}"
    );
    assert_nothing_left();
}

#[test]
fn a_full_send_buffer_is_send_side_loss_not_a_receiver_problem() {
    require_root!();
    const DATAGRAMS: usize = 200;
    const PORT: u16 = 5354;
    let netdoc = doctor(&[]);
    let pair = Pair::new("E", 86);
    // a's device sends 1 KB a second: its queue holds what the socket sent, so the socket's
    // send buffer stays full.
    run(
        "tc",
        &[
            "-n", &pair.a, "qdisc", "add", "dev", "ndEa", "root", "tbf", "rate", "8kbit", "burst",
            "1600", "limit", "1000000",
        ],
    );
    // The few datagrams that get through find a socket with room in b: no drop there.
    let receiver = pair.udp_socket_in_b(PORT);
    let refused = pair.send_without_waiting(PORT, DATAGRAMS) as u64;
    assert!(
        refused > DATAGRAMS as u64 / 2,
        "most were refused: {refused}"
    );
    let sndbuf = ns_counter(&pair.a, "snmp", "Udp", "SndbufErrors");
    assert_eq!(sndbuf, refused, "the kernel counts each refusal");
    let (status, r) = report_after(netdoc, &["send_side_loss"]);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "send_side_loss", "{r:#?}");
    assert_eq!(first.scope.kind, ScopeKind::Namespace);
    assert!(first.scope.name.contains(&pair.a), "{first:#?}");
    assert_eq!(first.affected, refused, "{first:#?}");
    assert!(
        first.evidence.iter().any(|e| e
            .text
            .contains(&format!("Udp.SndbufErrors grew by {refused}"))),
        "{first:#?}"
    );
    for receiver_side in ["socket_receive_buffer_full", "udp_no_listener"] {
        assert!(!ids(&r).contains(&receiver_side), "{r:#?}");
    }
    drop(receiver);
    assert_nothing_left();
}

/// The IPv4 neighbour table's size and overflows, summed over CPUs (the table is global).
fn arp_cache() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/stat/arp_cache").unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |c| header.iter().position(|h| *h == c).unwrap();
    let (entries, fulls) = (col("entries"), col("table_fulls"));
    let rows: Vec<Vec<u64>> = lines
        .map(|l| {
            l.split_whitespace()
                .map(|v| u64::from_str_radix(v, 16).unwrap())
                .collect()
        })
        .collect();
    (rows[0][entries], rows.iter().map(|r| r[fulls]).sum())
}

#[test]
fn a_full_neighbour_table_names_the_namespace_holding_the_entries() {
    require_root!();
    const ROOM: u64 = 16;
    const ADDRESSES: u8 = 60;
    let netdoc = doctor(&[]);
    let pair = Pair::new("N", 77);
    let (entries, fulls_before) = arp_cache();
    // Room for ROOM more entries, host-wide (the limits are global; restored on drop).
    let limit = (entries + ROOM) as u32;
    let limits = [
        "/proc/sys/net/ipv4/neigh/default/gc_thresh1",
        "/proc/sys/net/ipv4/neigh/default/gc_thresh2",
        "/proc/sys/net/ipv4/neigh/default/gc_thresh3",
    ]
    .map(|path| Sysctl::set(path, limit));
    // One datagram to each of ADDRESSES hosts that do not exist on a's link: each needs a new
    // neighbour entry, and the table has room for ROOM.
    pair.send_to_hosts(CLOSED_PORT, ADDRESSES);
    wait_until("a neighbour table overflow", || {
        arp_cache().1 > fulls_before
    });
    let (status, r) = report_after(netdoc, &["neighbour_table_overflow"]);
    drop(limits);
    assert_eq!(status.code(), Some(1));
    let first = &r.findings[0];
    assert_eq!(first.id, "neighbour_table_overflow", "{r:#?}");
    assert_eq!(first.scope.name, pair.a, "a holds the entries: {first:#?}");
    assert!(first.shows(&format!("gc_thresh3 {limit}")), "{first:#?}");
    assert!(first.affected > 0, "{first:#?}");
    assert_nothing_left();
}

/// Packets dropped at full backlogs, all CPUs (`/proc/net/softnet_stat`'s second column).
fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// NAPI packets polled in a recording's NET_RX stretch: (device on `cpu`, everything else).
fn napi_packets(record: &std::path::Path, cpu: u32, device: &str) -> (u64, u64) {
    let snapshot: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    let mut ours = 0;
    let mut others = 0;
    for c in snapshot["net_rx"]["nic_map"]["cpus"].as_array().unwrap() {
        for n in c["napi"].as_array().unwrap() {
            let packets = n["packets"].as_u64().unwrap();
            match c["cpu"] == cpu && n["device"] == device {
                true => ours += packets,
                false => others += packets,
            }
        }
    }
    (ours, others)
}

/// A veth flood, pinned to CPU 0, with RPS on b's veth steering its receive work to `rps`
/// (None: off). Returns the report and the recording.
fn veth_flood(tag: &str, subnet: u8, rps: Option<u32>) -> (Report, std::path::PathBuf) {
    const DATAGRAMS: usize = 100_000;
    let record =
        std::env::temp_dir().join(format!("netdoc-flood-{tag}-{}.json", std::process::id()));
    let netdoc = doctor(&["--record", record.to_str().unwrap()]);
    let pair = Pair::new(tag, subnet);
    if let Some(cpu) = rps {
        let mask = format!("{:x}", 1u64 << cpu);
        let file = format!("/sys/class/net/{}/queues/rx-0/rps_cpus", pair.dev_b);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &pair.b,
                "sh",
                "-c",
                &format!("echo {mask} > {file}"),
            ],
        );
    }
    let dropped_before = softnet_dropped();
    pair.send(CLOSED_PORT, DATAGRAMS);
    // Each datagram reaches b's closed port, or (steered to another CPU) overflows its backlog.
    wait_until("the flood's arrival", || {
        pair.udp_no_ports() + (softnet_dropped() - dropped_before) >= DATAGRAMS as u64
    });
    let (_, r) = report_after(netdoc, &["udp_no_listener"]);
    // The stretch measured is the run's busiest (the flood, or part of it): its NET_RX work is
    // that CPU's backlog, more than every other device on every CPU together.
    let backlog_cpu = rps.unwrap_or(0);
    let (backlog, others) = napi_packets(&record, backlog_cpu, "backlog");
    assert!(
        backlog > others,
        "CPU {backlog_cpu}'s backlog polled {backlog} packets, everything else {others}: {r:#?}"
    );
    (r, record)
}

#[test]
fn a_veth_flood_is_backlog_processing_never_a_nic_queue() {
    require_root!();
    for (tag, subnet, rps) in [("F", 78, None), ("G", 79, Some(1))] {
        let (r, record) = veth_flood(tag, subnet, rps);
        for f in r.findings.iter().filter(|f| f.id.starts_with("net_rx_")) {
            assert_ne!(
                f.id, "net_rx_single_queue_saturation",
                "no NIC queue carried the flood: {f:#?}"
            );
            assert_eq!(f.scope.name, format!("CPU {}", rps.unwrap_or(0)), "{f:#?}");
        }
        let _ = std::fs::remove_file(record);
    }
    assert_nothing_left();
}

#[test]
fn a_quiet_host_has_no_finding_and_a_recording_replays_the_same_unprivileged() {
    require_root!();
    let record = std::env::temp_dir().join(format!("netdoc-doctor-{}.json", std::process::id()));
    let quiet = Command::new(NETDOC)
        .args(["doctor", "--json", "--duration", "30s", "--record"])
        .arg(&record)
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&quiet.stdout)
        .lines()
        .map(json)
        .collect();
    let r = the_report(&lines);
    let problems: Vec<_> = r
        .findings
        .iter()
        .filter(|f| f.severity > Severity::Info)
        .collect();
    assert!(problems.is_empty(), "a quiet host: {problems:#?}");
    assert_eq!(
        quiet.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&quiet.stderr)
    );

    // A recording of an incident replays to the same findings, as nobody.
    let netdoc = doctor(&["--record", record.to_str().unwrap()]);
    let pair = Pair::new("P", 76);
    pair.send(CLOSED_PORT, 30);
    pair.wait_for_drops(30, 0);
    let (_, live) = report_after(netdoc, &["udp_no_listener"]);
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let replay = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            NETDOC,
            "doctor",
            "--json",
            "--replay",
        ])
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(
        replay.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&replay.stdout)
        .lines()
        .map(json)
        .collect();
    let replayed = the_report(&lines);
    assert!(replayed.replayed);
    assert_eq!(replayed.findings, live.findings);
    let size = std::fs::metadata(&record).unwrap().len();
    eprintln!("recording: {size} bytes for {:.0} s", live.duration_s);
    let _ = std::fs::remove_file(&record);
    assert_nothing_left();
}
