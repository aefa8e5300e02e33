//! Kernel integration tests of the host-wide namespace inventory: namespaces made after netdoc
//! starts, named after the container or pod behind them (from cgroup paths shaped like the
//! runtimes' and the kubelet's), and namespaces that come and go with sentinels in them.
use std::{
    os::{
        fd::AsRawFd as _,
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use netdoc_user::output::NamedDrop;

mod common;
use common::*;

const POD_UID: &str = "0d7c4e2a-5b1f-4c3e-9a8d-1e2f3a4b5c6d";
const POD_CONTAINER: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const DOCKER_CONTAINER: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0ff0e1d2c3b4a5968778695a4b3c2d1e0f";

/// A cgroup hierarchy to place processes in: cgroup v2 where it is mounted (`/sys/fs/cgroup`, or
/// `/sys/fs/cgroup/unified` on hybrid hosts), else a v1 one (the `pids` controller's, or
/// systemd's named one): container runtimes on v1 nodes make the same paths in every hierarchy,
/// and netdoc reads them from any line of `/proc/PID/cgroup`.
fn cgroup_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let hierarchies: Vec<(&str, &str, &str)> = mounts
        .lines()
        .filter_map(|l| {
            let (mount, fs) = l.split_once(" - ")?;
            let point = mount.split_whitespace().nth(4)?;
            let mut fs = fs.split_whitespace();
            let kind = fs.next()?;
            let options = fs.nth(1)?;
            Some((kind, point, options))
        })
        .collect();
    let v2 = hierarchies.iter().find(|(kind, ..)| *kind == "cgroup2");
    let v1 = || {
        ["pids", "name=systemd"].iter().find_map(|controller| {
            hierarchies.iter().find(|(kind, _, options)| {
                *kind == "cgroup" && options.split(',').any(|o| o == *controller)
            })
        })
    };
    v2.or_else(v1).map(|(_, point, _)| PathBuf::from(point))
}

/// A process (a `sleep`) in a cgroup at `path` under the v2 root and in a network namespace of
/// its own, made after it joined the cgroup. Removed with its cgroups on drop.
struct Contained {
    child: Child,
    dirs: Vec<PathBuf>,
}

impl Contained {
    fn new(root: &Path, path: &str) -> Self {
        let mut dirs = Vec::new();
        let mut dir = root.to_path_buf();
        for part in path.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir).unwrap();
                dirs.push(dir.clone());
            }
        }
        let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("60").stdout(Stdio::null());
        // SAFETY: between fork and exec the child only makes async-signal-safe syscalls on
        // memory prepared before the fork.
        unsafe {
            sleep.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
                // "0" moves the writing process itself.
                if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = sleep.spawn().unwrap();
        let c = Contained { child, dirs };
        assert_ne!(c.inode(), own_inode(), "a namespace of its own");
        c
    }

    fn ns_file(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.child.id()))
    }

    fn inode(&self) -> u64 {
        std::fs::metadata(self.ns_file()).map_or(0, |m| m.ino())
    }

    /// Sends one datagram to a closed port on the namespace's loopback: one NO_SOCKET drop.
    fn drop_one(&self) {
        let ns = std::fs::File::open(self.ns_file()).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace file.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            run("ip", &["link", "set", "lo", "up"]);
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.send_to(b"netdoc", ("127.0.0.1", CLOSED_PORT)).unwrap();
        })
        .join()
        .unwrap();
    }
}

impl Drop for Contained {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in self.dirs.iter().rev() {
            // A killed process leaves its cgroup a moment later: retry (bounded).
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn own_inode() -> u64 {
    std::fs::metadata("/proc/self/ns/net").unwrap().ino()
}

/// Waits (bounded) for a drop event from namespace `inode`.
fn drop_from(netdoc: &Netdoc, inode: u64) -> NamedDrop {
    drops_from(netdoc, &[inode]).remove(0)
}

/// Waits (bounded) for a drop event from each namespace of `inodes`, returned in that order:
/// events of several CPUs arrive in batches, so one sent later may be printed first.
fn drops_from(netdoc: &Netdoc, inodes: &[u64]) -> Vec<NamedDrop> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found: Vec<Option<NamedDrop>> = vec![None; inodes.len()];
    while found.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = netdoc.stdout.recv_timeout(left).unwrap_or_else(|e| {
            panic!("no drop from every namespace of {inodes:?} ({e}); found {found:?}")
        });
        let Output::Drop(drop) = typed(&line) else {
            continue;
        };
        if let Some(i) = inodes.iter().position(|i| u64::from(drop.netns) == *i) {
            found[i].get_or_insert(drop);
        }
    }
    found.into_iter().flatten().collect()
}

#[test]
fn drops_in_pod_and_docker_namespaces_carry_their_container_and_pod() {
    require_root!();
    let Some(root) = cgroup_root() else {
        eprintln!("skipped: no cgroup hierarchy");
        return;
    };
    let netdoc = start(&["drops", "--json", "--no-causes"]);
    let uid_ = POD_UID.replace('-', "_");
    let pod = Contained::new(
        &root,
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{POD_CONTAINER}.scope"
        ),
    );
    let docker = Contained::new(
        &root,
        &format!("system.slice/docker-{DOCKER_CONTAINER}.scope"),
    );
    pod.drop_one();
    docker.drop_one();
    let mut both = drops_from(&netdoc, &[pod.inode(), docker.inode()]);
    let d = both.pop().expect("the docker namespace's drop");
    let p = both.pop().expect("the pod's drop");
    let pod_container = p.container.as_ref().expect("the pod's container");
    assert_eq!(
        p.pod.as_ref().map(|pod| pod.uid.as_str()),
        Some(POD_UID),
        "{p:?}"
    );
    assert_eq!(pod_container.id, POD_CONTAINER, "{p:?}");
    assert_eq!(pod_container.runtime, "containerd");
    assert_eq!(p.netns_name, Some(format!("pod {POD_UID}")));
    assert_ne!(p.netns_cookie, Some(0), "a cookie, or none before 5.14");
    let docker_container = d.container.as_ref().expect("the docker container");
    assert_eq!(docker_container.id, DOCKER_CONTAINER, "{d:?}");
    assert_eq!(docker_container.runtime, "docker");
    assert!(d.pod.is_none(), "{d:?}");
    assert_eq!(
        d.netns_name,
        Some(format!("docker:{}", &DOCKER_CONTAINER[..12]))
    );
    let (status, _) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_nothing_left();
}

#[test]
fn sentinels_follow_namespaces_that_come_and_go() {
    require_root!();
    if !attaches("conntrack_stage") {
        eprintln!("skipped: no netfilter links on this kernel");
        return;
    }
    // Fifty namespaces, each with its own sentinels for a while; ten under QEMU's software
    // emulation (the matrix's guests), where each round takes seconds.
    let rounds: usize = match std::env::var_os("NETDOC_EMULATED") {
        Some(_) => 10,
        None => 50,
    };
    let netdoc = start(&["drops", "--json"]);
    let pid = netdoc.child.id();
    assert_eq!(
        netfilter_links(pid),
        0,
        "no sentinels before a netfilter drop"
    );
    let (mut per_namespace, mut names) = (0, Vec::new());
    for round in 0..rounds {
        let pair = Pair::new(&format!("w{round}"), 150 + round as u8);
        // a source-NATs every flow to one address and port: its second flow clashes with the
        // first at conntrack confirm, a NETFILTER_DROP freed in nf_hook_slow, which brings the
        // sentinels into a. The first reaches b's closed port.
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
        assert_eq!(pair.send_flows(CLOSED_PORT, 1), 0);
        assert_eq!(
            pair.send_flows(CLOSED_PORT, 1),
            1,
            "the second flow clashed"
        );
        netdoc.wait_for_stderr(&format!("placed in namespace {} ", pair.a));
        if round == 0 {
            per_namespace = netfilter_links(pid);
            assert!(per_namespace > 0);
        }
        assert_eq!(
            netfilter_links(pid),
            per_namespace,
            "round {round}: in this round's namespace alone"
        );
        names.push((pair.a.clone(), pair.b.clone()));
        // Dropping the pair deletes both namespaces.
    }
    // Every namespace let go (bounded wait): no links stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while netfilter_links(pid) != 0 {
        assert!(
            Instant::now() < deadline,
            "links left: {}",
            netfilter_links(pid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, lines) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    let summary = drops_summary(&lines);
    let gone: Vec<&str> = summary
        .namespaces_gone
        .iter()
        .map(|g| g.id.name.as_str())
        .collect();
    for (a, b) in &names {
        assert!(
            gone.contains(&a.as_str()) && gone.contains(&b.as_str()),
            "{a} or {b} not among the gone: {gone:?}"
        );
    }
    let drops: Vec<NamedDrop> = lines
        .iter()
        .filter_map(|l| match as_output(l) {
            Output::Drop(d) => Some(d),
            _ => None,
        })
        .collect();
    for (a, b) in &names {
        assert!(
            drops
                .iter()
                .any(|d| d.netns_name.as_ref() == Some(b) && d.reason != "NETFILTER_DROP"),
            "the drop in {b} is named"
        );
        assert!(
            drops
                .iter()
                .any(|d| d.netns_name.as_ref() == Some(a) && d.reason == "NETFILTER_DROP"),
            "the clash in {a} is named"
        );
    }
    assert_nothing_left();
}

#[test]
fn a_listen_queue_overflow_in_a_new_namespace_names_the_listener() {
    require_root!();
    const CLIENTS: usize = 8;
    const PORT: u16 = 8080;
    let netdoc = start(&["drops", "--json", "--no-causes"]);
    let pair = Pair::new("L", 61);
    // No SYN-ACK retransmits: once the clients are gone the counters stay still.
    pair.no_synack_retries_in_b();
    let listener = tiny_listener(&pair.b, &pair.ip_b, PORT);
    // Connect from a, without waiting: the accept queue holds two, the rest overflow.
    let to: std::net::SocketAddr = format!("{}:{PORT}", pair.ip_b).parse().unwrap();
    let clients = pair.connect_from_a(to, CLIENTS, Duration::from_millis(300));
    assert!(
        ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows") > 0,
        "the queue overflowed"
    );
    drop(clients);
    let overflows = ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows");
    let (status, lines) = netdoc.stop(libc::SIGINT);
    assert!(status.success());
    assert_eq!(
        ns_counter(&pair.b, "netstat", "TcpExt", "ListenOverflows"),
        overflows,
        "the counter stood still"
    );
    let summary = drops_summary(&lines);
    let counted = summary
        .counted
        .iter()
        .find(|c| c.netns.name == pair.b)
        .unwrap_or_else(|| panic!("{} not in {:?}", pair.b, summary.counted));
    assert_eq!(
        counted.counters.get("TcpExt.ListenOverflows"),
        Some(&overflows),
        "{counted:?}"
    );
    assert!(counted.sockets_unavailable.is_none(), "{counted:?}");
    let l = &counted.listeners[0];
    assert_eq!(l.socket.local, to, "{counted:?}");
    // The accept queue holds backlog + 1, or more where the kernel checks fullness racily
    // (5.10, SYNs and ACKs on two CPUs): the kernel's own count is what netdoc must report. A
    // listener's rx_queue in /proc/net/tcp is its accept queue.
    let tcp = run("ip", &["netns", "exec", &pair.b, "cat", "/proc/net/tcp"]);
    let listening = tcp
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 4 && f[1].ends_with(&format!(":{PORT:04X}")) && f[3] == "0A")
        .unwrap_or_else(|| panic!("no listener on {PORT} in {tcp}"));
    let queue = u64::from_str_radix(listening[4].split(':').nth(1).unwrap(), 16).unwrap();
    assert!(queue >= 2, "the accept queue is full: {listening:?}");
    assert_eq!(l.socket.limit, 1, "the backlog");
    assert_eq!(
        u64::from(l.socket.queue),
        queue,
        "the accept queue as the kernel counts it"
    );
    assert_eq!(l.pid, Some(std::process::id()));
    drop(listener);
    assert_nothing_left();
}

#[test]
fn pod_and_container_narrow_the_host_wide_view_to_their_namespace() {
    require_root!();
    let Some(root) = cgroup_root() else {
        eprintln!("skipped: no cgroup hierarchy");
        return;
    };
    let uid_ = POD_UID.replace('-', "_");
    let pod = Contained::new(
        &root,
        &format!("kubepods.slice/kubepods-pod{uid_}.slice/crio-{POD_CONTAINER}.scope"),
    );
    let docker = Contained::new(
        &root,
        &format!("system.slice/docker-{DOCKER_CONTAINER}.scope"),
    );
    for (flag, value, ours, other) in [
        ("--pod", POD_UID, &pod, &docker),
        ("--container", &DOCKER_CONTAINER[..12], &docker, &pod),
    ] {
        let netdoc = start(&["drops", "--json", "--no-causes", flag, value]);
        other.drop_one();
        ours.drop_one();
        let d = drop_from(&netdoc, ours.inode());
        let (status, lines) = netdoc.stop(libc::SIGINT);
        assert!(status.success());
        assert!(is_drop_of(&d, NO_SOCKET), "{d:?}");
        let s = drops_summary(&lines);
        assert_eq!(
            s.matched, 1,
            "{flag}: only its namespace's drop, in the kernel: {s:?}"
        );
    }
    assert_nothing_left();
}
