//! `netdoc export`: a long-running Prometheus exporter. One session counts drops per namespace
//! in the kernel (nothing streamed), with NET_RX time and queue load and the conntrack stage
//! sentinels where NETFILTER_DROPs come; each scrape of `/metrics` reads the maps
//! and every namespace's counters then. `/healthz` says the driver that reads them answers.
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tokio::sync::{mpsc, oneshot};

use super::{net_rx, watch::Watch};
use crate::{
    counted,
    doctor::{self, HostFacts},
    drops::{DropMaps, filter::DropFilter},
    export::collect::{
        ConntrackReading, CpuNetRx, DropCount, Exporter, NamespaceReading, ProgramRun, Reading,
    },
    export::exposition::{self, Format},
    export::http,
    facts::{conntrack, fdinfo, host, interrupts::Interrupts, netns, procnet, snmp},
    kernel::Kernel,
    model::finding::Finding,
    model::names::{LiveNamer, Namer as _},
    namespaces::{Inventory, NetnsKey, monotonic_ns},
    sentinel::Scope,
    session::{
        Component, DropUse, Request, Session,
        live::{self, Asked, Schedule, Scrape, Signals, Stdout, View},
        registry::Families,
        stream::Records,
    },
    softirq::SoftirqMaps,
};

pub struct ExportOptions {
    pub listen: SocketAddr,
    /// Namespaces with series of their own; the rest fold into `netns="other"`.
    pub max_namespaces: usize,
    pub max_functions: usize,
    pub findings_window: Duration,
    /// How long a namespace's stage sentinels stay without a NETFILTER_DROP there.
    pub sentinels_quiet: Duration,
}

/// How often the doctor's watch samples the namespaces' counters (those with activity and some
/// in turn; every one when a findings window ends) and the NET_RX load.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The doctor's rules over one window at a time: the findings of the last complete window are
/// exported, so one clears a window after its incident ended.
struct WindowedFindings {
    length: Duration,
    /// How often `tick` runs: a window ends on the tick nearest its length.
    every: Duration,
    watch: Watch,
    last: Vec<Finding>,
}

impl WindowedFindings {
    fn tick(&mut self, session: &Session) {
        // Ticks come `every` apart and a window starts a little after one: waiting for the
        // full length would end every window a tick late (6 s windows for `--findings-window 3s`).
        let ends = self.watch.elapsed() + self.every / 2 >= self.length;
        // A window ends with every namespace read: growth after a namespace's last reading
        // would otherwise fall between this window and the next one's baseline.
        match ends {
            true => self.watch.sample_all(session),
            false => self.watch.sample(session),
        }
        if ends {
            // Not `complete`: socket owners (every process's fd table) are not exported.
            self.last = doctor::diagnose(&self.watch.snapshot(session, false));
            self.watch.restart(session);
        }
    }
}

/// Scrapes waiting for the driver: more arrive only while one is answered.
const QUEUED_SCRAPES: usize = 4;

struct ExportView {
    exporter: Exporter,
    namer: LiveNamer,
    kernel: String,
    last_scrape_s: f64,
    http: Arc<http::Connections>,
    /// Namespaces of kernel counts that are not alive, with when a scrape first found them
    /// missing (CLOCK_MONOTONIC).
    missing_since: HashMap<(u32, u64), u64>,
    /// Whether namespaces are told apart by cookie.
    cookies: bool,
    findings: WindowedFindings,
}

impl View for ExportView {
    fn records(&mut self, _: &Session, _: Records, _: &mut Stdout) -> Result<()> {
        Ok(())
    }

    fn tick(&mut self, session: &Session, _: &mut Stdout) -> Result<()> {
        self.findings.tick(session);
        Ok(())
    }

    fn scrape(&mut self, session: &mut Session, scrape: Scrape) {
        let openmetrics = match scrape.asked {
            Asked::Health => {
                let _ = scrape.reply.send("ok\n".into());
                return;
            }
            Asked::Metrics { openmetrics } => openmetrics,
        };
        let started = Instant::now();
        let reading = self.read(session);
        let families = self.exporter.families(&reading);
        let format = match openmetrics {
            true => Format::OpenMetrics,
            false => Format::Text,
        };
        // The scraper may have given up: nothing to do then.
        let _ = scrape.reply.send(exposition::render(&families, format));
        self.last_scrape_s = started.elapsed().as_secs_f64();
    }
}

impl ExportView {
    /// Everything one scrape reports: the kernel maps, then every live namespace's counters.
    fn read(&mut self, session: &mut Session) -> Reading {
        let namespaces = session.namespaces();
        let (live, files) = {
            let inventory = namespaces.lock();
            let live: Vec<_> = inventory.all().map(|n| n.id.clone()).collect();
            let files: Vec<(NetnsKey, std::path::PathBuf)> = inventory
                .all()
                .filter_map(|n| Some(((n.id.inode, n.id.cookie), n.file()?)))
                .collect();
            (live, files)
        };
        let mut drops = Vec::new();
        if let Some(maps) = session.part_mut::<DropMaps>() {
            // Counts of namespaces that went away leave the kernel map (it has room for the
            // living), and are reported one last time.
            let forgotten = {
                let inventory = namespaces.lock();
                let missing_since = &mut self.missing_since;
                let now = monotonic_ns();
                maps.forget(|inode, cookie| {
                    if is_alive(&inventory, inode, cookie) {
                        missing_since.remove(&(inode, cookie));
                        return false;
                    }
                    let since = *missing_since.entry((inode, cookie)).or_insert(now);
                    // A namespace made after the last scan is not in it yet; one that a scan
                    // begun after it was missed still did not find has gone.
                    inventory.last_scan_ns() > since
                })
            };
            for (key, _) in &forgotten {
                self.missing_since.remove(&(key.netns, key.netns_cookie));
            }
            let counts: Vec<_> = maps
                .counts_per_netns()
                .into_iter()
                .map(|c| (c, false))
                .chain(forgotten.into_iter().map(|c| (c, true)))
                .collect();
            // Each namespace named once (one not known yet is looked for, once per scan).
            let named: HashMap<(u32, u64), NetnsKey> = {
                let mut ids: Vec<(u32, u64)> = counts
                    .iter()
                    .map(|((key, _), _)| (key.netns, key.netns_cookie))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                ids.into_iter()
                    .map(|id| {
                        let (inode, cookie) = id;
                        let netns = namespaces
                            .resolve(inode, cookie, u64::MAX)
                            .map_or((inode, (cookie != 0).then_some(cookie)), |n| {
                                (n.inode, n.cookie)
                            });
                        (id, netns)
                    })
                    .collect()
            };
            for ((key, per_cpu), last) in counts {
                let netns = named[&(key.netns, key.netns_cookie)];
                let location = self.namer.location(key.location);
                drops.push(DropCount {
                    netns,
                    reason: self.namer.reasons().name(key.reason),
                    cause: self.namer.cause(key.reason, key.location, key.nf_stage),
                    function: location
                        .split_once('+')
                        .map_or(location.clone(), |(f, _)| f.to_string()),
                    count: per_cpu.iter().sum(),
                    last,
                });
            }
        }
        let per_namespace = netns::visit(files, |_| read_namespace())
            .into_iter()
            .filter_map(|(netns, reading)| {
                let (conntrack, counters) = reading?;
                Some(NamespaceReading {
                    netns,
                    conntrack,
                    counters,
                })
            })
            .collect();
        let net_rx = session.part::<SoftirqMaps>().map_or_else(Vec::new, |maps| {
            let reading = maps.read();
            reading
                .softirq
                .iter()
                .enumerate()
                .map(|(cpu, vectors)| {
                    let t = vectors[netdoc_common::softirq::NET_RX as usize];
                    CpuNetRx {
                        cpu: cpu as u32,
                        seconds: t.total_ns as f64 / 1e9,
                        runs: t.count,
                    }
                })
                .collect()
        });
        let programs = fdinfo::bpf_stats_enabled().then(|| {
            session
                .program_runs()
                .into_iter()
                .map(|(name, run_ns, runs)| ProgramRun {
                    name,
                    seconds: run_ns as f64 / 1e9,
                    runs,
                })
                .collect()
        });
        Reading {
            version: env!("CARGO_PKG_VERSION"),
            kernel: self.kernel.clone(),
            live,
            drops,
            namespaces: per_namespace,
            net_rx,
            softnet: procnet::read_softnet(),
            queues: Interrupts::read()
                .map(|i| net_rx::queue_facts(&i))
                .unwrap_or_default(),
            probes: session.probe_statuses(),
            drop_stats: session
                .part::<DropMaps>()
                .map(DropMaps::stats)
                .unwrap_or_default(),
            drop_keys: session.part::<DropMaps>().map_or(0, DropMaps::keys_in_use),
            programs,
            cookies: self.cookies,
            findings: self.findings.last.clone(),
            findings_window_s: self.findings.length.as_secs_f64(),
            last_scrape_s: self.last_scrape_s,
            http: self.http.counts(),
        }
    }
}

/// Whether the namespace a kernel count names is alive: one with its inode and, where both
/// are known, its cookie (a reused inode is another namespace).
fn is_alive(inventory: &Inventory, inode: u32, cookie: u64) -> bool {
    inventory
        .live(inode)
        .is_some_and(|n| cookie == 0 || n.id.cookie.is_none_or(|c| c == cookie))
}

/// In one namespace: its conntrack counters and usage when conntrack is in use there, and the
/// retransmit and drop counters.
fn read_namespace() -> (Option<ConntrackReading>, snmp::Counters) {
    let ct = conntrack::read_stat()
        .ok()
        .filter(|rows| conntrack::in_use(rows))
        .map(|rows| (rows, conntrack::read_usage()));
    let wanted: Vec<&str> = counted::drop_counters()
        .chain(["Tcp.RetransSegs"])
        .collect();
    let counters = snmp::read_named(&wanted);
    (ct, counters)
}

/// What the exporter attaches: the drop program counting per namespace (no stream), NET_RX
/// context and queue load, and the stage sentinels where NETFILTER_DROPs come.
fn request(sentinels_quiet: Duration) -> Request {
    let mut request = Request {
        sentinels: Ok(Scope::OnDemand {
            quiet: sentinels_quiet,
        }),
        ..Request::default()
    }
    .with(Component::NetRxContext)
    .with(Component::SoftirqTime)
    .with(Component::QueueLoad)
    .with(Component::StageSentinels);
    request.want_drops(DropUse {
        filter: DropFilter::default(),
        stream: false,
        hook: None,
        per_netns: true,
        stacks: false,
    });
    request
}

async fn metrics(
    State(scrapes): State<mpsc::Sender<Scrape>>,
    headers: HeaderMap,
) -> axum::response::Response {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let (reply, answer) = oneshot::channel();
    let asked = Scrape {
        asked: Asked::Metrics {
            openmetrics: format == Format::OpenMetrics,
        },
        reply,
    };
    if scrapes.send(asked).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "netdoc is stopping\n").into_response();
    }
    match answer.await {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "netdoc is stopping\n").into_response(),
    }
}

/// How long a health check waits for the driver: longer means it is wedged.
const HEALTH_WAIT: Duration = Duration::from_secs(5);

/// Healthy when the driver that reads the kernel answers, not merely the HTTP server.
async fn healthz(State(scrapes): State<mpsc::Sender<Scrape>>) -> axum::response::Response {
    let (reply, answer) = oneshot::channel();
    let asked = Scrape {
        asked: Asked::Health,
        reply,
    };
    if scrapes.send(asked).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "netdoc is stopping\n").into_response();
    }
    match tokio::time::timeout(HEALTH_WAIT, answer).await {
        Ok(Ok(text)) => text.into_response(),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "netdoc is stopping\n").into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "netdoc's driver has not answered for 5 s\n",
        )
            .into_response(),
    }
}

pub async fn run(opts: ExportOptions, kernel: Kernel) -> Result<()> {
    if opts.findings_window < Duration::from_secs(1) {
        fail!(
            Input,
            "--findings-window {:?}: a window is at least 1s",
            opts.findings_window
        );
    }
    let mut signals = Signals::install()?;
    // The address is taken before anything is attached: a port in use is a one-line error.
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("--listen {}", opts.listen))?;
    // What was bound: `--listen [::]:0` names no port.
    let bound = listener.local_addr().context("--listen")?;
    if let Some(warning) = http::exposure(bound) {
        say!("{warning}");
    }
    let families = Families::discover(&kernel);
    let request = request(opts.sentinels_quiet);
    let kernel_release = host::kernel_release();
    let mut session = Session::start_dropping(kernel, families, request)?;
    let cookies = session.namespaces().lock().has_cookies();
    let host_facts = HostFacts {
        hostname: host::hostname(),
        kernel: kernel_release.clone(),
        reason_names: session.families.drops.reasons.source.describe().to_string(),
        settings: host::backlog_settings(),
    };
    if !cookies {
        say!(
            "warning: this kernel gives namespaces no cookies (before 5.14): they are told apart by inode, so a new namespace that reuses a gone one's inode may show some of its counts"
        );
    }
    let (tx, rx) = mpsc::channel(QUEUED_SCRAPES);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(tx);
    // The cap is set from what the process may still open once its probes are attached.
    let limits = http::Limits::for_files(http::files_left());
    let (connections, server) = http::serve(listener, app, limits);
    let mut view = ExportView {
        exporter: Exporter::new(opts.max_namespaces, opts.max_functions),
        namer: LiveNamer::new(
            session.families.drops.reasons.clone(),
            session.net_rx_known,
            session.stages.coverage,
            session.namespaces(),
        ),
        kernel: kernel_release,
        last_scrape_s: 0.0,
        http: connections,
        missing_since: HashMap::new(),
        cookies,
        findings: WindowedFindings {
            length: opts.findings_window,
            every: WATCH_EVERY.min(opts.findings_window),
            watch: Watch::start(&session, None, host_facts),
            last: Vec::new(),
        },
    };
    say!("export attached: serving http://{bound}/metrics; Ctrl-C or SIGTERM to stop");
    let schedule = Schedule {
        // Windows end on a tick.
        interval: view.findings.every,
        duration: None,
    };
    let ended = live::serve(&mut session, &mut view, &mut signals, schedule, rx).await;
    server.abort();
    let ended = ended?;
    say!("export stopped ({:?}); every probe detached", ended.ending);
    Ok(())
}
