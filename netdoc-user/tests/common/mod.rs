//! Helpers shared by the kernel integration tests: root checks, namespaces with a veth pair,
//! starting and stopping netdoc, and the check that nothing stays loaded.
#![allow(dead_code)] // each test binary uses its own subset

use std::{
    fs::File,
    io::{BufRead as _, BufReader},
    net::UdpSocket,
    os::{fd::AsRawFd, unix::fs::MetadataExt as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

pub use netdoc_user::output::Output;
use serde_json::Value;

/// One test at a time: they share sysctls, namespace names and CPU 0.
pub static SERIAL: Mutex<()> = Mutex::new(());
/// Programs that looked like netdoc's when the running test began: another netdoc on the host
/// (an exporter, a `netdoc drops` beside the suite) holds these, and they are not this test's.
pub static BEFORE: Mutex<Vec<u32>> = Mutex::new(Vec::new());
pub const NETDOC: &str = env!("CARGO_BIN_EXE_netdoc");
pub const CLOSED_PORT: u16 = 9;
pub const FIREWALLED_PORT: u16 = 7777;
pub const N: usize = 40;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::is_root() {
            eprintln!("skipped: needs root (run `cargo xtask test` as root)");
            return;
        }
        let _serial = $crate::common::SERIAL
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        $crate::common::note_programs_before();
    };
}

/// A counter of namespace `ns` from `/proc/net/FILE` (`snmp`, `netstat`: `Group:` name lines
/// followed by value lines), read inside it.
pub fn ns_counter(ns: &str, file: &str, group: &str, name: &str) -> u64 {
    let text = run(
        "ip",
        &["netns", "exec", ns, "cat", &format!("/proc/net/{file}")],
    );
    let prefix = format!("{group}:");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    let col = rows[0]
        .split_whitespace()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no {group}.{name} in /proc/net/{file}"));
    rows[1]
        .split_whitespace()
        .nth(col)
        .unwrap()
        .parse()
        .unwrap()
}

pub fn run(cmd: &str, args: &[&str]) -> String {
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
pub struct Pair {
    pub a: String,
    pub b: String,
    pub dev_b: String,
    pub ip_a: String,
    pub ip_b: String,
}

impl Pair {
    pub fn new(tag: &str, subnet: u8) -> Pair {
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

    pub fn inode_a(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.a))
            .unwrap()
            .ino()
    }

    pub fn inode_b(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.b))
            .unwrap()
            .ino()
    }

    /// Runs `f(from, to)` (a's and b's addresses) on a thread in namespace a pinned to CPU 0.
    pub fn run_in_a<T: Send + 'static>(
        &self,
        f: impl FnOnce(&str, &str) -> T + Send + 'static,
    ) -> T {
        let ns = File::open(format!("/run/netns/{}", self.a)).unwrap();
        let (from, to) = (self.ip_a.clone(), self.ip_b.clone());
        std::thread::spawn(move || {
            // SAFETY: plain syscalls on this thread with values owned by the closure.
            unsafe {
                assert_eq!(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET), 0, "setns");
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
            }
            f(&from, &to)
        })
        .join()
        .unwrap()
    }

    /// Sends `n` raw IP packets of protocol `proto` carrying `payload` from namespace a to b,
    /// from a thread pinned to CPU 0.
    pub fn send_raw(&self, proto: i32, payload: &'static [u8], n: usize) {
        self.run_in_a(move |_, to| {
            // SAFETY: a raw socket of this thread, closed when it returns.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, proto) };
            assert!(fd >= 0, "raw socket");
            let to: std::net::Ipv4Addr = to.parse().unwrap();
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(to).to_be(),
                },
                sin_zero: [0; 8],
            };
            for _ in 0..n {
                // SAFETY: a valid buffer and address for the call's duration.
                let sent = unsafe {
                    libc::sendto(
                        fd,
                        payload.as_ptr().cast(),
                        payload.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                assert_eq!(sent, payload.len() as isize);
            }
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        })
    }

    /// Sends `n` datagrams from namespace a to b's `port`, from a thread pinned to CPU 0.
    pub fn send(&self, port: u16, n: usize) {
        self.run_in_a(move |from, to| {
            let sock = UdpSocket::bind((from, 0)).unwrap();
            for i in 0..n {
                sock.send_to(format!("netdoc test {i:04}").as_bytes(), (to, port))
                    .unwrap();
            }
        })
    }

    /// Sends `n` datagrams of 1000 bytes from namespace a to b's `port` through a socket with
    /// the smallest send buffer that never waits, from a thread pinned to CPU 0: how many the
    /// kernel refused with EAGAIN (the send buffer full).
    pub fn send_without_waiting(&self, port: u16, n: usize) -> usize {
        self.run_in_a(move |from, to| {
            let sock = UdpSocket::bind((from, 0)).unwrap();
            set_socket_option(&sock, libc::SO_SNDBUF, 1);
            sock.set_nonblocking(true).unwrap();
            (0..n)
                .filter(|_| match sock.send_to(&[0; 1000], (to, port)) {
                    Ok(_) => false,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                    Err(e) => panic!("sending: {e}"),
                })
                .count()
        })
    }

    /// A UDP socket bound to b's `port` inside namespace b.
    pub fn udp_socket_in_b(&self, port: u16) -> UdpSocket {
        let ns_b = File::open(format!("/run/netns/{}", self.b)).unwrap();
        let bind = format!("{}:{port}", self.ip_b);
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace file.
            let entered = unsafe { libc::setns(ns_b.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            UdpSocket::bind(&bind).unwrap()
        })
        .join()
        .unwrap()
    }

    /// Tries `n` TCP connections from namespace a to b's `port`, one after another, from a
    /// thread pinned to CPU 0: how many b refused (a RST for the SYN, no retry).
    pub fn connect(&self, port: u16, n: usize) -> usize {
        self.run_in_a(move |_, to| {
            let to = std::net::SocketAddr::new(to.parse().unwrap(), port);
            (0..n)
                .filter(|_| {
                    std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
                        .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
                })
                .count()
        })
    }

    /// Sends one datagram from each of `flows` new sockets (a new source port, so a new flow
    /// each) from namespace a to b's `port`, pinned to CPU 0. Returns how many sends netfilter
    /// refused (EPERM: dropped on the way out).
    pub fn send_flows(&self, port: u16, flows: usize) -> usize {
        self.run_in_a(move |from, to| {
            let mut refused = 0;
            // Every socket stays open until the last send: a closed one's port may be handed
            // out again, and that send would join an earlier flow instead of making a new one.
            let mut open = Vec::with_capacity(flows);
            for i in 0..flows {
                let sock = UdpSocket::bind((from, 0)).unwrap();
                match sock.send_to(format!("flow {i:04}").as_bytes(), (to, port)) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EPERM) => refused += 1,
                    Err(e) => panic!("send: {e}"),
                }
                open.push(sock);
            }
            refused
        })
    }

    /// Sends one datagram from namespace a to `port` of each of `hosts` addresses on its link
    /// that nobody has (`.10` onwards), pinned to CPU 0: each needs a neighbour entry of its
    /// own. Sends the kernel refuses are expected (no entry could be made).
    pub fn send_to_hosts(&self, port: u16, hosts: u8) {
        let subnet = self.ip_a.rsplit_once('.').unwrap().0.to_string();
        self.run_in_a(move |from, _| {
            let sock = UdpSocket::bind((from, 0)).unwrap();
            for host in 10..10 + hosts {
                let _ = sock.send_to(
                    b"netdoc neighbour",
                    (format!("{subnet}.{host}").as_str(), port),
                );
            }
        })
    }

    /// No SYN-ACK retransmits in b: once the clients are gone, its listen counters stay still.
    pub fn no_synack_retries_in_b(&self) {
        let set = "net.ipv4.tcp_synack_retries=0";
        run("ip", &["netns", "exec", &self.b, "sysctl", "-qw", set]);
    }

    /// `n` TCP connection attempts from a to `to`, one after another, each given `timeout`
    /// (without waiting longer: a full queue drops the SYN), from a thread in a's namespace.
    /// Those that connected stay open until the result is dropped.
    pub fn connect_from_a(
        &self,
        to: std::net::SocketAddr,
        n: usize,
        timeout: Duration,
    ) -> Vec<std::io::Result<std::net::TcpStream>> {
        let ns_a = File::open(format!("/run/netns/{}", self.a)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace file.
            let entered = unsafe { libc::setns(ns_a.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            (0..n)
                .map(|_| std::net::TcpStream::connect_timeout(&to, timeout))
                .collect()
        })
        .join()
        .unwrap()
    }

    pub fn udp_no_ports(&self) -> u64 {
        ns_counter(&self.b, "snmp", "Udp", "NoPorts")
    }

    pub fn nft_dropped(&self) -> u64 {
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
    pub fn wait_for_drops(&self, no_ports: u64, firewalled: u64) {
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

pub struct Netdoc {
    pub child: Child,
    /// Its "attached" line.
    pub attached: String,
    pub stdout: mpsc::Receiver<String>,
    /// stderr lines after the "attached" one.
    pub stderr: mpsc::Receiver<String>,
}

/// Starts netdoc and waits (bounded) for its "attached" line.
pub fn start(args: &[&str]) -> Netdoc {
    start_command(Command::new(NETDOC).args(args))
}

/// Starts netdoc under `wrapper` (a command that runs the rest of its arguments, such as
/// setpriv with fewer privileges) and waits (bounded) for its "attached" line.
pub fn start_under(wrapper: &[&str], args: &[&str]) -> Netdoc {
    start_command(
        Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(NETDOC)
            .args(args),
    )
}

/// Starts netdoc allowed at most `files` open files (RLIMIT_NOFILE, set in the child: the QEMU
/// guests have no `prlimit`) and waits (bounded) for its "attached" line.
pub fn start_with_file_limit(files: u64, args: &[&str]) -> Netdoc {
    use std::os::unix::process::CommandExt as _;
    let mut command = Command::new(NETDOC);
    command.args(args);
    // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    start_command(&mut command)
}

fn start_command(command: &mut Command) -> Netdoc {
    let mut child = command
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
            Ok(line) if line.contains("attached") => {
                return Netdoc {
                    child,
                    attached: line,
                    stdout,
                    stderr: ready,
                };
            }
            Ok(line) => eprintln!("netdoc: {line}"),
            Err(e) => panic!("netdoc did not attach: {e}"),
        }
    }
}

impl Netdoc {
    /// Waits (bounded) for a stderr line containing `needle`, such as netdoc saying it now
    /// covers a namespace.
    pub fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(line) => eprintln!("netdoc: {line}"),
                Err(e) => panic!("netdoc never said {needle:?} ({e})"),
            }
        }
    }

    /// Signals netdoc, waits (bounded) for it and returns its JSON lines.
    pub fn stop(mut self, signal: i32) -> (ExitStatus, Vec<Value>) {
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let status = exited_within(&mut self.child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("netdoc did not exit within 30 s of signal {signal}"));
        let lines = self.stdout.iter().map(|l| json(&l)).collect();
        (status, lines)
    }
}

/// The child's exit status once it exits, or None (and the child killed) after `limit`: a
/// wedged netdoc fails the test instead of hanging it.
fn exited_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A test that fails before stopping netdoc must not leave it running (it would hold the
/// namespaces, its programs, and whatever it inherited).
impl Drop for Netdoc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill has no memory preconditions; the pid is our own, unreaped child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = exited_within(&mut self.child, Duration::from_secs(10));
        }
    }
}

/// One line of netdoc's JSON, which must read back into the output schema (`Output`); returned
/// as a JSON value for the assertions.
pub fn json(line: &str) -> Value {
    typed(line);
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// One line of netdoc's JSON as the schema's type.
pub fn typed(line: &str) -> Output {
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("not netdoc's output schema ({e}): {line}"))
}

/// A line already read as a JSON value, as the schema's type.
pub fn as_output(line: &Value) -> Output {
    serde_json::from_value(line.clone())
        .unwrap_or_else(|e| panic!("not netdoc's output schema ({e}): {line}"))
}

/// The drop events among netdoc's lines, as the schema's type.
pub fn drop_events(lines: &[Value]) -> Vec<netdoc_user::output::NamedDrop> {
    lines
        .iter()
        .filter_map(|l| match as_output(l) {
            Output::Drop(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// The summary of `netdoc drops`, the last line, as the schema's type.
pub fn drops_summary(lines: &[Value]) -> netdoc_user::output::DropsSummary {
    match as_output(lines.last().expect("no output")) {
        Output::Summary(netdoc_user::output::Summary::Drops(s)) => s,
        other => panic!("not the summary of netdoc drops: {other:?}"),
    }
}

/// A drop the tests cause, and how to recognise it: by its reason and the function that freed
/// it where the kernel's kfree_skb has a reason (5.17+), else by the function alone.
#[derive(Clone, Copy)]
pub struct Kind {
    pub reason: &'static str,
    /// Where kernels with drop reasons free it (compilers inline differently across versions).
    pub freed_in: &'static [&'static str],
    /// Where kernels without drop reasons free it.
    pub functions: &'static [&'static str],
}

/// 7.x inlines `__udp4_lib_rcv` into `udp_rcv`.
pub const NO_SOCKET: Kind = Kind {
    reason: "NO_SOCKET",
    freed_in: &["__udp4_lib_rcv", "udp_rcv"],
    functions: &["__udp4_lib_rcv"],
};
/// Newer kernels free nftables drops inside nftables; older ones in nf_hook_slow.
pub const FIREWALL: Kind = Kind {
    reason: "NETFILTER_DROP",
    freed_in: &["nft_do_chain"],
    functions: &["nft_do_chain", "nf_hook_slow"],
};

/// Whether this kernel's `skb:kfree_skb` carries a drop reason.
/// True in the emulated guests of `cargo xtask vm`, for a test of netdoc's own userspace (its
/// output paths, argument checks, signals, child processes) that every kernel runs alike: the
/// host runs it, and the guests' time goes to what differs between kernels. Says so when it
/// skips.
pub fn same_on_every_kernel() -> bool {
    let emulated = std::env::var_os("NETDOC_EMULATED").is_some();
    if emulated {
        eprintln!("skipped in an emulated guest: the same on every kernel, and run on the host");
    }
    emulated
}

pub fn kernel_has_drop_reasons() -> bool {
    std::fs::read_to_string("/sys/kernel/tracing/events/skb/kfree_skb/format")
        .is_ok_and(|f| f.contains("reason"))
}

fn in_functions(location: &str, functions: &[&str]) -> bool {
    functions
        .iter()
        .any(|f| location.strip_prefix(f).is_some_and(|r| r.starts_with('+')))
}

/// Whether a typed drop event is of `kind`.
pub fn is_drop_of(drop: &netdoc_user::output::NamedDrop, kind: Kind) -> bool {
    if kernel_has_drop_reasons() {
        drop.reason == kind.reason && in_functions(&drop.location, kind.freed_in)
    } else {
        in_functions(&drop.location, kind.functions)
    }
}

/// A summary row (reason, location) is of `kind`.
pub fn is_row_of(row: &netdoc_user::output::DropsRow, kind: Kind) -> bool {
    if kernel_has_drop_reasons() {
        row.reason == kind.reason && in_functions(&row.location, kind.freed_in)
    } else {
        in_functions(&row.location, kind.functions)
    }
}

/// Drops of `kind` in a typed drops summary, by their rows (reason and location).
pub fn rows_of(summary: &netdoc_user::output::DropsSummary, kind: Kind) -> u64 {
    summary
        .locations
        .iter()
        .filter(|r| is_row_of(r, kind))
        .map(|r| r.count)
        .sum()
}

/// Drops of `kind` in a typed drops summary: by reason where the kernel names them.
pub fn count_of(summary: &netdoc_user::output::DropsSummary, kind: Kind) -> u64 {
    match kernel_has_drop_reasons() {
        true => summary.counts.get(kind.reason).copied().unwrap_or(0),
        false => rows_of(summary, kind),
    }
}

/// The summary of `netdoc retrans`, the last line, as the schema's type.
pub fn retrans_summary(lines: &[Value]) -> netdoc_user::output::RetransSummary {
    match as_output(lines.last().expect("no output")) {
        Output::Summary(netdoc_user::output::Summary::Retrans(s)) => s,
        other => panic!("not the summary of netdoc retrans: {other:?}"),
    }
}

/// The summary of `netdoc conntrack`, the last line, as the schema's type.
pub fn conntrack_summary(lines: &[Value]) -> netdoc_user::output::ConntrackSummary {
    match as_output(lines.last().expect("no output")) {
        Output::Summary(netdoc_user::output::Summary::Conntrack(s)) => s,
        other => panic!("not the summary of netdoc conntrack: {other:?}"),
    }
}

/// The kernel keeps the first 15 bytes of a program name.
const OURS: [&str; 10] = [
    "kfree_skb_",
    "floor_kfree_skb",
    "softirq_entry_",
    "softirq_exit_",
    "irq_handler_",
    "napi_poll_",
    "tcp_retransmit_",
    "tcp_synack_",
    "nf_stage_snt",
    "ct_confirm_",
];

/// Loaded programs named like netdoc's: (id, name).
fn our_programs() -> Vec<(u32, String)> {
    aya::programs::loaded_programs()
        .flatten()
        .filter_map(|p| Some((p.id(), p.name_as_str()?.to_string())))
        .filter(|(_, name)| OURS.iter().any(|o| name.starts_with(o)))
        .collect()
}

/// Remembers the programs of other netdocs before the test runs its own.
pub fn note_programs_before() {
    let ids = our_programs().into_iter().map(|(id, _)| id).collect();
    *BEFORE.lock().unwrap_or_else(|e| e.into_inner()) = ids;
}

/// Names of the BPF programs a process holds open (from its fds' `prog_id`), sorted.
pub fn programs_of(pid: u32) -> Vec<String> {
    let ids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|info| {
                    info.lines()
                        .find_map(|l| l.strip_prefix("prog_id:"))
                        .and_then(|v| v.trim().parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut names: Vec<String> = aya::programs::loaded_programs()
        .flatten()
        .filter(|p| ids.contains(&p.id()))
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// No program of netdoc's may stay loaded once it has exited: any that looks like netdoc's and
/// was not there when the test began is a leak. Links to raw tracepoints are freed after an
/// RCU grace period, so a program may linger briefly: wait (bounded) for it to go.
pub fn assert_nothing_left() {
    let before = BEFORE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<String> = our_programs()
            .into_iter()
            .filter(|(id, _)| !before.contains(id))
            .map(|(_, name)| name)
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "programs left loaded: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub const MAX_PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// Sets a global conntrack sysctl (read-only inside child namespaces) until dropped.
pub struct Sysctl(&'static str, String);

impl Sysctl {
    pub fn set(path: &'static str, value: u32) -> Self {
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(path, value.to_string()).unwrap();
        Sysctl(path, old.trim().to_string())
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// A TCP listener with a backlog of 1 that never accepts, made in namespace `ns` by a thread of
/// this process (so this process owns it). Returns its fd (closed on drop by the caller).
pub fn tiny_listener(ns: &str, addr: &str, port: u16) -> std::os::fd::OwnedFd {
    listener(ns, addr, port, 1)
}

/// A TCP listener with `backlog` that never accepts, as [`tiny_listener`].
pub fn listener(ns: &str, addr: &str, port: u16, backlog: i32) -> std::os::fd::OwnedFd {
    let ns = File::open(format!("/run/netns/{ns}")).unwrap();
    let addr: std::net::Ipv4Addr = addr.parse().unwrap();
    std::thread::spawn(move || {
        use std::os::fd::FromRawFd as _;
        // SAFETY: plain syscalls on this thread with values it owns; the fd is wrapped at once.
        unsafe {
            assert_eq!(libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET), 0);
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
            let sa = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: port.to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(addr).to_be(),
                },
                sin_zero: [0; 8],
            };
            let len = size_of::<libc::sockaddr_in>() as u32;
            assert_eq!(libc::bind(fd, (&raw const sa).cast(), len), 0);
            assert_eq!(libc::listen(fd, backlog), 0);
            owned
        }
    })
    .join()
    .unwrap()
}

/// Whether the plan's attempts for `probe` include one that attached.
pub fn attaches(probe: &str) -> bool {
    // The plan of one kernel does not change while a test binary runs: asked once (it tries
    // every hook, which takes seconds in an emulated guest).
    static PLAN: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| {
        run(NETDOC, &["probes", "--json"])
            .lines()
            .map(json)
            .collect()
    })
    .iter()
    .find(|p| p["probe"] == probe)
    .unwrap_or_else(|| panic!("the plan lists {probe}"))["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["outcome"]["status"] == "attached")
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.0 GET on loopback, with an `Accept` header when given: (status, body).
pub fn http_get(port: u16, path: &str, accept: Option<&str>) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Makes namespace `ns` track connections (an nft rule using conntrack), so conntrack counts
/// there and netdoc places its stage sentinels there.
pub fn track_connections(ns: &str) {
    for rule in [
        "add table inet netdoc_test",
        "add chain inet netdoc_test pre { type filter hook prerouting priority 0; }",
        "add rule inet netdoc_test pre ct state new counter",
    ] {
        run("ip", &["netns", "exec", ns, "nft", rule]);
    }
}

/// Conntrack's `column` in namespace `ns`, summed over CPUs.
pub fn conntrack_column(ns: &str, column: &str) -> u64 {
    let stat = run(
        "ip",
        &["netns", "exec", ns, "cat", "/proc/net/stat/nf_conntrack"],
    );
    let mut lines = stat.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = header.iter().position(|h| *h == column).unwrap();
    lines
        .map(|l| u64::from_str_radix(l.split_whitespace().nth(col).unwrap(), 16).unwrap())
        .sum()
}

/// Closes `conn` with a reset instead of a FIN (`SO_LINGER` of 0): one segment, sent once and
/// never retransmitted.
pub fn close_with_reset(conn: std::net::TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a linger struct that lives for the call; the fd is open.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// Sets a `SOL_SOCKET` option that takes an int (`SO_RCVBUF`, `SO_SNDBUF`, ...).
pub fn set_socket_option(socket: &impl AsRawFd, option: libc::c_int, value: libc::c_int) {
    // SAFETY: an open socket and a c_int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt {option}: {}",
        std::io::Error::last_os_error()
    );
}

/// Netfilter links netdoc holds (from its fds).
pub fn netfilter_links(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter(|info| {
                    info.lines()
                        .any(|l| l.starts_with("link_type:") && l.ends_with("netfilter"))
                })
                .count()
        })
        .unwrap_or(0)
}
