//! netdoc: a Linux network doctor built on eBPF. The binary is `main`; the library exposes
//! it and the output schema ([`output`]) that its JSON follows.
// First: its `say!` is used everywhere below.
#[macro_use]
mod stdio;
#[macro_use]
mod error;
mod check;
mod cmd;
mod conntrack;
mod counted;
mod doctor;
mod drops;
mod export;
mod facts;
mod family;
mod kernel;
mod loader;
mod model;
mod namespaces;
pub mod output;
mod planner;
mod retrans;
mod sentinel;
mod session;
mod softirq;
mod text;

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};
pub use error::Error;
use error::Verb;
use facts::netns::NetnsArg;

/// Notes which standard fds were closed at start: the binary calls it before Rust's runtime
/// hides a closed stdout behind /dev/null (see `stdio`).
pub fn note_closed_standard_fds() {
    stdio::note_closed_at_start();
}

#[derive(Parser)]
#[command(
    name = "netdoc",
    version,
    about = "A Linux network doctor built on eBPF"
)]
struct Cli {
    /// Kernel BTF to read struct offsets and drop reason names from.
    /// (default: /sys/kernel/btf/vmlinux, and the classic tracepoint without it)
    #[arg(long, global = true)]
    btf: Option<PathBuf>,
    /// Ignore kernel BTF, as on a kernel built without it: classic tracepoints, reason names
    /// from tracefs, no packet decoding.
    #[arg(long, global = true, conflicts_with = "btf")]
    no_btf: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Live drop-reason tracing at skb:kfree_skb.
    Drops(DropsArgs),
    /// TCP retransmits per flow, with MTU black-hole detection.
    Retrans(session::stream::StreamOptions),
    /// Conntrack counters per CPU (insert_failed, drop, early_drop, ...) and table usage.
    Conntrack {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Stop after this long; default: until Ctrl-C.
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
        duration: Option<Duration>,
        /// Refresh interval of the live view.
        #[arg(long, value_parser = parse_interval, allow_hyphen_values = true, default_value = "1s")]
        interval: Duration,
        /// One JSON summary object at the end.
        #[arg(long)]
        json: bool,
    },
    /// Per-CPU softirq heatmap (NET_RX by default), per-CPU summary and drop correlation.
    Softirq(SoftirqArgs),
    /// The NIC map: each NIC queue IRQ, its affinity, the CPUs serving it, NAPI, RPS and NET_RX load.
    Irq {
        /// How long to observe before printing the map.
        #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "3s")]
        duration: Duration,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// A pass/fail verdict for one kernel: run a reproducer while tracing and evaluate
    /// expectations (exit 0 pass, 1 fail, 125 untestable, 128 usage error: `git bisect run` ready).
    Check(check::CheckArgs),
    /// Watch the whole host (every probe family, every namespace) and name root causes with
    /// evidence and fixes. Exit 0: nothing wrong; 1: findings; 2: could not run.
    Doctor(DoctorArgs),
    /// A Prometheus exporter: drops by reason, cause and namespace, conntrack, NET_RX per CPU
    /// and NIC queues, read from the kernel at each scrape of /metrics.
    Export(ExportArgs),
    /// Which probes attach on this kernel, with which hook, and why others were skipped.
    Probes {
        /// One JSON object per probe.
        #[arg(long)]
        json: bool,
    },
    /// Attach only an empty program on the drop hook until stopped (the benchmark's floor).
    #[command(hide = true)]
    BenchFloor,
}

/// Which namespace a host-wide command is narrowed to (all of them when none is given).
#[derive(clap::Args)]
struct ScopeArgs {
    /// Only this network namespace (name under /run/netns, path such as /proc/PID/ns/net, or
    /// inode).
    #[arg(long, group = "scope")]
    netns: Option<String>,
    /// Only the namespace of this container (id or its prefix, or RUNTIME:ID).
    #[arg(long, group = "scope")]
    container: Option<String>,
    /// Only the namespace of this Kubernetes pod (uid, NAMESPACE/NAME, or NAME).
    #[arg(long, group = "scope")]
    pod: Option<String>,
}

impl ScopeArgs {
    /// The namespace asked for, checked where it enters: a container or pod must be on this
    /// host now.
    fn resolve(&self) -> Result<Option<NetnsArg>> {
        let (flag, query, wanted) = match (&self.netns, &self.container, &self.pod) {
            (Some(ns), ..) => return NetnsArg::parse(ns).map(Some),
            (_, Some(c), _) => ("--container", c, namespaces::Wanted::Container(c)),
            (_, _, Some(p)) => ("--pod", p, namespaces::Wanted::Pod(p)),
            _ => return Ok(None),
        };
        let inventory = namespaces::Inventory::discover();
        let found = inventory
            .find(&wanted)
            .map_err(|why| why.context(format_args!("{flag} {query}")))?;
        let file = found.file().ok_or_else(|| {
            Error::Input(format!(
                "{flag} {query}: its namespace has no file to enter"
            ))
        })?;
        let mut arg = NetnsArg::parse(&file.to_string_lossy())?;
        arg.given = format!("{} ({flag} {query})", found.id.name);
        Ok(Some(arg))
    }
}

#[derive(clap::Args)]
struct DropsArgs {
    #[command(flatten)]
    stream: session::stream::StreamOptions,
    /// Only these drop reasons (comma-separated names, e.g. NO_SOCKET,NETFILTER_DROP).
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Only this L4 protocol (tcp, udp, icmp, icmpv6, sctp or a number).
    #[arg(long)]
    proto: Option<model::addr::Proto>,
    /// Only packets with this source or destination port.
    #[arg(long)]
    port: Option<u16>,
    /// Only packets with this source or destination address.
    #[arg(long)]
    addr: Option<IpAddr>,
    /// Use only this hook type (tp_btf or tracepoint) instead of the best one that attaches.
    #[arg(long)]
    hook: Option<planner::HookKind>,
    /// Do not place the conntrack stage sentinels (they run on every packet through netfilter):
    /// NETFILTER_DROP causes then stay unclassified.
    #[arg(long)]
    no_causes: bool,
    #[command(flatten)]
    sentinels: SentinelArgs,
    /// Record the kernel stack of each streamed drop (a stack map of 4 MiB; see the bench for
    /// its cost per drop).
    #[arg(long, conflicts_with = "counts_only")]
    stack: bool,
}

#[derive(clap::Args)]
struct DoctorArgs {
    /// How long to watch before the report.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "30s")]
    duration: Duration,
    /// Refresh interval of the live findings.
    #[arg(long, value_parser = parse_interval, allow_hyphen_values = true, default_value = "1s")]
    interval: Duration,
    /// One JSON report at the end.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    scope: ScopeArgs,
    /// Also write what the rules saw to FILE (a regular file or a new one), for `--replay`
    /// anywhere.
    #[arg(long, value_name = "FILE", conflicts_with = "replay", value_parser = parse_output)]
    record: Option<PathBuf>,
    /// Report on a recording instead of this host (no privileges needed).
    #[arg(long, value_name = "FILE", conflicts_with = "scope")]
    replay: Option<PathBuf>,
    /// The largest recording --replay reads, in MiB: a run's recording is a few MB at most.
    #[arg(long, value_name = "MIB", requires = "replay", default_value_t = doctor::recording::DEFAULT_MAX_MIB, value_parser = clap::value_parser!(u64).range(1..))]
    max_recording_mib: u64,
    /// Also write the report as one self-contained HTML page to FILE (a regular file or a new
    /// one; with --replay too).
    #[arg(long, value_name = "FILE", value_parser = parse_output)]
    report: Option<PathBuf>,
    /// Ring buffer pages per CPU for the drop events.
    #[arg(long, default_value_t = 64)]
    pages: usize,
    /// Records each CPU streams per second and probe; beyond it they are counted, not streamed
    /// (0: no limit).
    #[arg(long, default_value_t = session::DEFAULT_MAX_EVENTS_PER_SEC)]
    max_events_per_sec: u64,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// Address to serve /metrics and /healthz on. Loopback by default: binding elsewhere
    /// (e.g. 0.0.0.0:9435 for a scraper on another host) is this explicit choice.
    /// An IPv6 address may go without brackets (fd00::1:9435), as Kubernetes' $(HOST_IP):9435
    /// gives it.
    #[arg(long, default_value = "127.0.0.1:9435", value_parser = parse_listen)]
    listen: std::net::SocketAddr,
    /// Namespaces with series of their own; later ones fold into netns="other" (counted in
    /// netdoc_namespaces_folded_total).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..))]
    max_namespaces: u16,
    /// Kernel functions with drop-location series of their own; the rest fold into "other".
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    max_functions: u16,
    /// The doctor's rules run over windows this long; netdoc_findings shows the last complete
    /// one, so a finding clears one window after its incident ends.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "5m")]
    findings_window: Duration,
    #[command(flatten)]
    sentinels: SentinelArgs,
}

/// How long the conntrack stage sentinels, placed host-wide in a namespace when its
/// NETFILTER_DROPs come, stay there.
#[derive(clap::Args)]
struct SentinelArgs {
    /// Withdraw a namespace's stage sentinels after this long without a NETFILTER_DROP there
    /// (freed outside nftables): they cost each packet through its netfilter hooks.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true, default_value = "10m")]
    sentinels_quiet: Duration,
}

#[derive(clap::Args)]
struct SoftirqArgs {
    /// Stop after this long (e.g. 30s, 2m); default: until Ctrl-C.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Width of one heatmap column.
    #[arg(long, value_parser = parse_interval, allow_hyphen_values = true, default_value = "1s")]
    interval: Duration,
    /// Softirq vector to map.
    #[arg(long, value_enum, ignore_case = true, default_value = "NET_RX")]
    vector: softirq::Vector,
    /// Also write the heatmap as an SVG to this file (a regular file or a new one).
    #[arg(long)]
    svg: Option<PathBuf>,
    /// One JSON object with the heatmap, per-CPU summary, NIC map and findings.
    #[arg(long)]
    json: bool,
    /// Heatmap columns shown live.
    #[arg(long, default_value_t = 60)]
    width: usize,
}

/// `--duration` and friends: humantime's forms (`30s`, `500ms`, `2m`, `1h30m`), or a bare number
/// of seconds. Zero, negative and too-large values are one-line errors.
/// An address and port: `ADDR:PORT`, `[V6]:PORT`, or a bare IPv6 address then `:PORT`.
fn parse_listen(s: &str) -> Result<std::net::SocketAddr, Error> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    s.rsplit_once(':')
        .and_then(|(ip, port)| Some((ip.parse::<std::net::IpAddr>().ok()?, port.parse().ok()?)))
        .map(std::net::SocketAddr::from)
        .ok_or_else(|| {
            Error::Input(format!(
                "'{s}' is not an address and port like 127.0.0.1:9435"
            ))
        })
}

fn parse_duration(s: &str) -> Result<Duration, Error> {
    if s.starts_with('-') {
        return Err(Error::Input(format!(
            "'{s}' must be a positive duration like 30s"
        )));
    }
    let text = if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
        format!("{s}s")
    } else {
        s.to_string()
    };
    let d = humantime::parse_duration(&text).map_err(|e| {
        Error::Input(format!(
            "'{s}' is not a duration like 30s, 500ms or 2m ({e})"
        ))
    })?;
    if d.is_zero() {
        return Err(Error::Input(format!("'{s}' must be longer than zero")));
    }
    // Deadlines are instants: a duration past any reachable one is a typo, not a wish.
    if d > MAX_DURATION {
        return Err(Error::Input(format!(
            "'{s}' is longer than netdoc runs (at most 10 years)"
        )));
    }
    Ok(d)
}

/// A file to write at the end of a run: a directory is refused now, not after the run.
fn parse_output(s: &str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(s);
    if path.is_dir() {
        return Err(Error::Input(format!("'{s}' is a directory: name a file")));
    }
    Ok(path)
}

/// The shortest refresh: a live view redrawn faster is unreadable and costs a CPU.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `--interval`: a duration of at least [`MIN_INTERVAL`].
fn parse_interval(s: &str) -> Result<Duration, Error> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(Error::Input(format!(
            "'{s}' is shorter than netdoc refreshes (at least 100ms)"
        )));
    }
    Ok(d)
}

const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The `netdoc` command line.
pub fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = match Cli::try_parse().and_then(Cli::consistent) {
        Ok(cli) => cli,
        // --help, --version: what was asked for is the output, so losing it is an error (but
        // a reader that had enough, `| head`, is not).
        Err(e) if !e.use_stderr() => {
            // In colour on a terminal, as clap itself would print it.
            let text = match std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                true => e.render().ansi().to_string(),
                false => e.render().to_string(),
            };
            return match stdio::write_stdout(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(err) => {
                    say!("error: {err}");
                    ExitCode::from(2)
                }
            };
        }
        Err(e) => {
            say!("error: {}", one_line(&e));
            // For `git bisect run`, a bad check command line must abort, not read as "bad kernel".
            let checking = std::env::args_os()
                .skip(1)
                .take_while(|a| a != "--")
                .any(|a| a == "check");
            return ExitCode::from(if checking { error::CHECK_USAGE } else { 2 });
        }
    };
    let verb = match cli.command {
        Command::Check(_) => Verb::Check,
        Command::Doctor(_) => Verb::Doctor,
        _ => Verb::Other,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: starting the runtime: {e}");
            return ExitCode::from(Error::Failed(String::new()).exit_code(verb));
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            say!("error: {e:#}");
            ExitCode::from(Error::exit_code_of(&e, verb))
        }
    }
}

impl Cli {
    /// What clap cannot tell from the arguments one by one: a file both read and written, or
    /// written twice.
    fn consistent(self) -> Result<Self, clap::Error> {
        if let Command::Doctor(a) = &self.command {
            let pairs = [
                ("--record", &a.record, "--report", &a.report),
                ("--replay", &a.replay, "--report", &a.report),
            ];
            for (one, first, other, second) in pairs {
                if let (Some(first), Some(second)) = (first, second)
                    && same_file(first, second)
                {
                    let mut command = <Self as clap::CommandFactory>::command();
                    return Err(command.error(
                        clap::error::ErrorKind::ArgumentConflict,
                        format!(
                            "{one} {} and {other} {} are the same file: one would overwrite the other",
                            first.display(),
                            second.display()
                        ),
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// Whether two paths name one file: the same inode where both exist, else the same name in
/// the same directory (`./a` and `a`).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let inode = |p: &std::path::Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let place = |p: &std::path::Path| {
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => std::path::Path::new("."),
        };
        (
            dir.canonicalize().ok(),
            p.file_name().map(ToOwned::to_owned),
        )
    };
    match (inode(a), inode(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b || place(a) == place(b),
    }
}

/// clap's message on one line: what is wrong and what would be right, without the usage block.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    parts.join(" ").trim_start_matches("error: ").to_string()
}

/// The exit code: 0 for every command but `check` and `doctor`, whose verdict it is.
async fn run(cli: Cli) -> Result<u8> {
    // A replay reads a file: no kernel, no privileges.
    if let Command::Doctor(DoctorArgs {
        replay: Some(path),
        max_recording_mib,
        json,
        report,
        ..
    }) = &cli.command
    {
        return cmd::doctor::replay(path, *max_recording_mib, *json, report.as_deref());
    }
    // Every other command attaches probes: say so before touching tracefs or BTF.
    facts::caps::require_tracing()?;
    let mut kernel = match &cli.btf {
        _ if cli.no_btf => kernel::Kernel::without_btf(),
        // Asked for by name: a file that cannot be read is an error, not a quiet fallback.
        Some(path) => {
            let kernel = kernel::Kernel::discover(path);
            if let Some(why) = &kernel.btf_unreadable {
                return Err(Error::Input(format!("--btf {}: {why}", path.display())).into());
            }
            kernel
        }
        None => kernel::Kernel::discover(std::path::Path::new(facts::btf::VMLINUX)),
    };
    kernel.classic_wanted = matches!(
        &cli.command,
        Command::Drops(DropsArgs {
            hook: Some(planner::HookKind::Tracepoint),
            ..
        })
    );
    match cli.command {
        Command::Check(a) => return check::run(a, kernel).await,
        Command::Doctor(a) => {
            let netns = a.scope.resolve()?;
            return cmd::doctor::run(
                cmd::doctor::DoctorOptions {
                    duration: a.duration,
                    interval: a.interval,
                    json: a.json,
                    netns,
                    record: a.record,
                    report: a.report,
                    pages: a.pages,
                    max_events_per_sec: a.max_events_per_sec,
                },
                kernel,
            )
            .await;
        }
        Command::Drops(a) => {
            let netns = a.scope.resolve()?;
            cmd::drops::run(
                cmd::drops::DropsOptions {
                    stream: a.stream,
                    netns: netns.clone(),
                    filter: drops::filter::FilterArgs {
                        reason: a.reason,
                        netns: netns.map(|n| n.inode),
                        proto: a.proto,
                        port: a.port,
                        addr: a.addr,
                    },
                    hook: a.hook,
                    causes: !a.no_causes,
                    sentinels_quiet: a.sentinels.sentinels_quiet,
                    stack: a.stack,
                },
                kernel,
            )
            .await
        }
        Command::Retrans(a) => cmd::retrans::run(a, kernel).await,
        Command::Conntrack {
            scope,
            duration,
            interval,
            json,
        } => {
            let netns = scope.resolve()?;
            cmd::conntrack::run(netns, duration, interval, json, kernel).await
        }
        Command::Softirq(a) => {
            cmd::softirq::softirq(
                cmd::softirq::SoftirqOptions {
                    duration: a.duration,
                    interval: a.interval,
                    vector: a.vector.number(),
                    svg: a.svg,
                    json: a.json,
                    width: a.width.max(1),
                },
                kernel,
            )
            .await
        }
        Command::Irq { duration, json } => cmd::softirq::irq(duration, json, kernel).await,
        Command::Export(a) => {
            cmd::export::run(
                cmd::export::ExportOptions {
                    listen: a.listen,
                    max_namespaces: a.max_namespaces as usize,
                    max_functions: a.max_functions as usize,
                    findings_window: a.findings_window,
                    sentinels_quiet: a.sentinels.sentinels_quiet,
                },
                kernel,
            )
            .await
        }
        Command::Probes { json } => cmd::probes::show(kernel, json),
        Command::BenchFloor => cmd::probes::bench_floor(kernel).await,
    }
    .map(|()| 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        let ok = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(ok("127.0.0.1:9435"), "127.0.0.1:9435");
        assert_eq!(ok("[fd00::1]:9435"), "[fd00::1]:9435");
        assert_eq!(
            ok("fd00::1:9435"),
            "[fd00::1]:9435",
            "Kubernetes' $(HOST_IP):PORT"
        );
        for bad in ["9435", "localhost:9435", "1.2.3.4", "1.2.3.4:99999", ""] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_interval_has_a_floor() {
        assert_eq!(parse_interval("100ms"), Ok(MIN_INTERVAL));
        for fast in ["1ns", "99ms", "0.05s"] {
            let why = parse_interval(fast).unwrap_err().to_string();
            assert!(why.contains("at least 100ms"), "{fast}: {why}");
        }
    }

    #[test]
    fn one_file_under_two_names_is_one_file() {
        use std::path::Path;
        let dir = std::env::temp_dir();
        let here = dir.join(format!("netdoc-same-{}", std::process::id()));
        assert!(same_file(
            &here,
            &dir.join(".").join(here.file_name().unwrap())
        ));
        assert!(!same_file(&here, &dir.join("netdoc-other")));
        std::fs::write(&here, "x").unwrap();
        let link = dir.join(format!("netdoc-same-link-{}", std::process::id()));
        std::os::unix::fs::symlink(&here, &link).unwrap();
        let same = same_file(&here, &link);
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(&here).unwrap();
        assert!(same, "a link and its file");
        assert!(same_file(Path::new("a.json"), Path::new("./a.json")));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "0",
            "5x",
            "abc",
            "",
            "-1",
            "99999999999999999999s",
            "18446744073709551615h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
