//! Built-in reproducers. `sndbuf-close`: a server with a small `SO_SNDBUF` writes a large buffer
//! non-blocking, then closes; every byte its kernel accepted must reach the peer. (The 2019
//! `tcp_fragment` memory-limit change made exactly this stall on some kernels, with
//! TcpExt.TCPWqueueTooBig as its only trace.) It runs between two namespaces joined by a veth
//! pair that it creates and removes itself; both ends are pinned to one CPU so that veth traffic
//! does not reorder.
use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::Command,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::measure::ScenarioFacts;
use crate::facts::netns;

pub const NAMES: [&str; 1] = ["sndbuf-close"];

/// What the scenario must show on a good kernel.
pub const EXPECTATIONS: [&str; 3] = [
    "scenario.missing == 0",
    "counter{TcpExt.TCPWqueueTooBig} == 0",
    "counter{TcpExt.TCPAbortOnMemory} == 0",
];

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
/// The kernel doubles it and applies its minimum: a send buffer of a few KB.
const SNDBUF: libc::c_int = 4096;
const PAYLOAD: usize = 4 << 20;

/// Two namespaces and a veth pair, removed on drop.
pub struct Topology {
    server: String,
    client: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Topology {
    pub fn new() -> Result<Self> {
        let tag = std::process::id();
        let t = Self {
            server: format!("netdoc-check-{tag}-s"),
            client: format!("netdoc-check-{tag}-c"),
        };
        ip(&["netns", "add", &t.server])?;
        ip(&["netns", "add", &t.client])?;
        let (s, c) = (t.server.as_str(), t.client.as_str());
        ip(&[
            "-n", s, "link", "add", "veth0", "type", "veth", "peer", "name", "veth0", "netns", c,
        ])?;
        for (ns, addr) in [(s, SERVER_IP), (c, CLIENT_IP)] {
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "veth0",
            ])?;
            ip(&["-n", ns, "link", "set", "veth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(t)
    }

    pub fn namespaces(&self) -> [PathBuf; 2] {
        [&self.server, &self.client].map(|n| PathBuf::from(netns::NAMED_DIR).join(n))
    }

    /// Runs the exchange; bounded by `limit` overall.
    pub fn run(&self, limit: Duration) -> Result<ScenarioFacts> {
        let deadline = Instant::now() + limit;
        let [server_ns, client_ns] = self.namespaces();
        let (port_tx, port_rx) = mpsc::channel();
        let server = netns::spawn_in(&server_ns, move || serve(port_tx, deadline).ok())?;
        let port = port_rx
            .recv_timeout(limit)
            .context("the scenario's server did not start")?;
        let client = netns::spawn_in(&client_ns, move || receive(port, deadline).ok())?;
        let received = client
            .join()
            .ok()
            .flatten()
            .context("the scenario's client failed")?;
        let sent = server
            .join()
            .ok()
            .flatten()
            .context("the scenario's server failed")?;
        Ok(ScenarioFacts { sent, received })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting the namespaces removes the veth pair with them.
        for ns in [&self.server, &self.client] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Both ends on CPU 0: veth delivers on the sending CPU, and one CPU keeps segments in order.
fn pin() {
    // SAFETY: sched_setaffinity reads a zero-initialised cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn serve(port: mpsc::Sender<u16>, deadline: Instant) -> Result<u64> {
    pin();
    let listener = TcpListener::bind(SocketAddr::from((SERVER_IP, 0)))?;
    port.send(listener.local_addr()?.port())?;
    let (mut conn, _) = listener.accept()?;
    // SAFETY: setsockopt reads a value that lives for the call; the fd is the open socket.
    let rc = unsafe {
        libc::setsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SNDBUF as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        bail!("SO_SNDBUF: {}", std::io::Error::last_os_error());
    }
    conn.set_nonblocking(true)?;
    let payload = vec![0x5a_u8; PAYLOAD];
    let mut sent = 0;
    while sent < PAYLOAD && Instant::now() < deadline {
        match conn.write(&payload[sent..]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => wait_writable(&conn, deadline),
            Err(e) => return Err(e.into()),
        }
    }
    // close() with data still queued: the kernel must deliver it, then FIN.
    drop(conn);
    Ok(sent as u64)
}

fn wait_writable(conn: &TcpStream, deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut pfd = libc::pollfd {
        fd: conn.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll writes only into the one pollfd it is given.
    unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(1000) as i32) };
}

fn receive(port: u16, deadline: Instant) -> Result<u64> {
    pin();
    let addr = SocketAddr::from((SERVER_IP, port));
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    conn.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut received = 0u64;
    // Until end of stream; a stalled stream ends at the deadline with what arrived.
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(received)
}
