//! The exporter's HTTP server, bounded so that whoever reaches its address cannot blind it:
//! a request's head must arrive within `header_read` of the connection opening or of the
//! previous response (hyper's header read timeout, which so also closes idle keep-alive
//! connections), a connection with no byte read or written for `idle` is closed (a client that
//! stops reading its response), its buffer holds at most `request_buffer` bytes (a longer head
//! is refused with 431), and at most `connections` are open: at the cap, a new connection
//! closes the one that has been quiet longest, so a scraper's fresh connection always gets in.
//! Each close for one of these reasons is counted, and exported.
use std::{
    collections::{BTreeMap, HashMap},
    io,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub connections: usize,
    pub header_read: Duration,
    pub idle: Duration,
    pub request_buffer: usize,
}

impl Limits {
    /// The limits for a process that may open `files` more files: a scraper needs one
    /// connection, so half of what is left is plenty and leaves the rest to the namespaces'
    /// files and the kernel's maps.
    pub fn for_files(files: usize) -> Self {
        Limits {
            connections: (files / 2).clamp(MIN_CONNECTIONS, MAX_CONNECTIONS),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            // hyper's floor: a Prometheus request is a few hundred bytes.
            request_buffer: 8192,
        }
    }
}

const MIN_CONNECTIONS: usize = 4;
const MAX_CONNECTIONS: usize = 256;

/// Why the server closed a connection itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Closed {
    /// The cap was reached (or the process ran out of files) and it had been quiet longest.
    Limit,
    /// Its request head did not arrive in time.
    HeaderTimeout,
    /// Its request head was larger than the buffer.
    HeaderTooLarge,
    /// Nothing was read or written for `idle`.
    Idle,
}

impl Closed {
    pub fn label(self) -> &'static str {
        match self {
            Closed::Limit => "limit",
            Closed::HeaderTimeout => "header_timeout",
            Closed::HeaderTooLarge => "header_too_large",
            Closed::Idle => "idle",
        }
    }
}

/// The connections open now, and what the server closed, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpCounts {
    pub open: usize,
    pub limit: usize,
    pub closed: BTreeMap<Closed, u64>,
}

/// The open connections: each its last activity and its task.
pub struct Connections {
    limits: Limits,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    open: HashMap<u64, Open>,
    closed: BTreeMap<Closed, u64>,
    warned: Option<Instant>,
}

struct Open {
    /// Milliseconds from `started` to its last byte read or written.
    active: Arc<AtomicU64>,
    task: AbortHandle,
}

impl Connections {
    pub fn counts(&self) -> HttpCounts {
        let state = self.lock();
        HttpCounts {
            open: state.open.len(),
            limit: self.limits.connections,
            closed: state.closed.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding it leaves plain counts, still right.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Closes the connection quiet longest, to make room.
    fn close_quietest(state: &mut State) {
        let quietest = state
            .open
            .iter()
            .min_by_key(|(id, o)| (o.active.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        if let Some(open) = quietest.and_then(|id| state.open.remove(&id)) {
            open.task.abort();
            *state.closed.entry(Closed::Limit).or_default() += 1;
        }
    }

    /// Makes room when a connection could not be taken for want of files, and says so once a
    /// minute; a connection reset before it was taken needs nothing.
    fn accept_failed(&self, e: &io::Error) {
        if !matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
            return;
        }
        let mut state = self.lock();
        Self::close_quietest(&mut state);
        if state
            .warned
            .is_none_or(|w| w.elapsed() > Duration::from_secs(60))
        {
            state.warned = Some(Instant::now());
            say!(
                "warning: export: accepting a connection failed ({e}); closed the quietest of {} open",
                state.open.len() + 1
            );
        }
    }

    fn finished(&self, id: u64, why: Option<Closed>) {
        let mut state = self.lock();
        state.open.remove(&id);
        if let Some(why) = why {
            *state.closed.entry(why).or_default() += 1;
        }
    }
}

/// Serves `app` on `listener` within `limits` until the task is aborted.
pub fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
) -> (Arc<Connections>, tokio::task::JoinHandle<()>) {
    let connections = Arc::new(Connections {
        limits,
        started: Instant::now(),
        state: Mutex::default(),
    });
    let server = tokio::spawn(accept(listener, app, connections.clone()));
    (connections, server)
}

async fn accept(listener: TcpListener, app: axum::Router, connections: Arc<Connections>) {
    let limits = connections.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read)
        .max_buf_size(limits.request_buffer);
    let service = TowerToHyperService::new(app);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of files, or a connection reset before it was taken: the kernel's
                // queue waits a little either way, rather than the loop spinning.
                connections.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let active = Arc::new(AtomicU64::new(connections.now_ms()));
        let io = TokioIo::new(Watched {
            stream,
            active: active.clone(),
            started: connections.started,
        });
        let served = http.serve_connection(io, service.clone());
        let mut state = connections.lock();
        if state.open.len() >= limits.connections {
            Connections::close_quietest(&mut state);
        }
        let id = state.next;
        state.next += 1;
        let watched = (connections.clone(), active.clone());
        // Spawned with the lock held: its end, which takes the lock, comes after its entry.
        let task = tokio::spawn(async move {
            let (connections, active) = watched;
            let why = tokio::select! {
                served = served => match served {
                    Err(e) if e.is_timeout() => Some(Closed::HeaderTimeout),
                    Err(e) if e.is_parse_too_large() => Some(Closed::HeaderTooLarge),
                    _ => None,
                },
                () = quiet_for(&connections, &active, limits.idle) => Some(Closed::Idle),
            };
            connections.finished(id, why);
        });
        state.open.insert(
            id,
            Open {
                active,
                task: task.abort_handle(),
            },
        );
    }
}

/// Returns once nothing was read or written for `idle`.
async fn quiet_for(connections: &Connections, active: &AtomicU64, idle: Duration) {
    loop {
        let last = Duration::from_millis(active.load(Ordering::Relaxed));
        let deadline = connections.started + last + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// A connection that notes when it last moved a byte.
struct Watched {
    stream: TcpStream,
    active: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn moved(&self, bytes: usize) {
        if bytes > 0 {
            let now = self.started.elapsed().as_millis() as u64;
            self.active.store(now, Ordering::Relaxed);
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.moved(buf.filled().len() - before);
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The warning for an address others may reach: any but loopback (`0.0.0.0` and `[::]` are
/// every address the host has).
pub fn exposure(bound: std::net::SocketAddr) -> Option<String> {
    (!bound.ip().is_loopback()).then(|| {
        format!(
            "warning: --listen {bound} is not loopback: anyone who reaches it can read these metrics and open connections; limit it with a firewall or a NetworkPolicy"
        )
    })
}

/// How many more files this process may open: its soft `RLIMIT_NOFILE` less those open.
pub fn files_left() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let open = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    match got {
        true => (limit.rlim_cur as usize).saturating_sub(open),
        false => MAX_CONNECTIONS * 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_is_half_the_files_left_within_bounds() {
        assert_eq!(Limits::for_files(1000).connections, 256);
        assert_eq!(Limits::for_files(300).connections, 150);
        assert_eq!(Limits::for_files(3).connections, 4);
    }

    #[test]
    fn only_loopback_goes_without_a_warning() {
        for loopback in ["127.0.0.1:9435", "127.3.0.1:1", "[::1]:9435"] {
            assert_eq!(exposure(loopback.parse().unwrap()), None, "{loopback}");
        }
        let warning = exposure("[::]:41234".parse().unwrap()).unwrap();
        assert!(
            warning.starts_with("warning: --listen [::]:41234 is not loopback"),
            "{warning}"
        );
        assert!(exposure("0.0.0.0:9435".parse().unwrap()).is_some());
        assert!(exposure("10.0.0.5:9435".parse().unwrap()).is_some());
    }

    async fn connect(addr: std::net::SocketAddr) -> TcpStream {
        TcpStream::connect(addr).await.unwrap()
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = connect(addr).await;
        s.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        reply
    }

    /// Waits (on the runtime's clock) until the server's counts say `done`.
    async fn until(connections: &Connections, done: impl Fn(&HttpCounts) -> bool) -> HttpCounts {
        for _ in 0..500 {
            let counts = connections.counts();
            if done(&counts) {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        connections.counts()
    }

    #[tokio::test]
    async fn at_the_cap_the_quietest_connection_makes_room_and_is_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let limits = Limits {
            connections: 4,
            header_read: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            request_buffer: 8192,
        };
        let (connections, server) = serve(listener, app, limits);
        let mut idle = Vec::new();
        for _ in 0..10 {
            idle.push(connect(addr).await);
        }
        let counts = until(&connections, |c| c.closed.get(&Closed::Limit) == Some(&6)).await;
        assert_eq!(
            (counts.open, counts.closed.get(&Closed::Limit)),
            (4, Some(&6))
        );
        assert!(
            get(addr).await.ends_with("\r\n\r\nx"),
            "a new request is served"
        );
        server.abort();
    }

    #[tokio::test]
    async fn a_slow_or_oversized_head_and_a_quiet_connection_are_closed_and_counted() {
        use tokio::io::AsyncWriteExt as _;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "x" }));
        let limits = Limits {
            connections: 16,
            header_read: Duration::from_millis(300),
            idle: Duration::from_secs(60),
            request_buffer: 8192,
        };
        let (connections, server) = serve(listener, app.clone(), limits);
        let mut slow = connect(addr).await;
        slow.write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n")
            .await
            .unwrap();
        let mut large = connect(addr).await;
        let header = format!("GET /x HTTP/1.1\r\nx: {}\r\n", "a".repeat(64 * 1024));
        let _ = large.write_all(header.as_bytes()).await;
        let counts = until(&connections, |c| c.open == 0).await;
        assert_eq!(counts.closed.get(&Closed::HeaderTimeout), Some(&1));
        assert_eq!(counts.closed.get(&Closed::HeaderTooLarge), Some(&1));
        server.abort();

        // A client that sent its head and reads nothing back is idle, not slow.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            idle: Duration::from_millis(300),
            header_read: Duration::from_secs(60),
            ..limits
        };
        let blocked = axum::Router::new().route(
            "/x",
            axum::routing::get(std::future::pending::<&'static str>),
        );
        let (connections, server) = serve(listener, blocked, limits);
        let mut waiting = connect(addr).await;
        waiting
            .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let counts = until(&connections, |c| c.open == 0 && !c.closed.is_empty()).await;
        assert_eq!(counts.closed.get(&Closed::Idle), Some(&1));
        server.abort();
    }
}
