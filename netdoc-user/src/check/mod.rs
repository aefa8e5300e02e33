//! `netdoc check`: runs a reproducer (a command, a built-in scenario, or a watch for a duration)
//! while tracing, then evaluates expectations over what netdoc measured and the kernel's own
//! counters. Exit codes suit `git bisect run`: 0 pass, 1 fail, 125 untestable on this kernel,
//! and `USAGE` (which makes `git bisect run` stop) for bad input.
pub mod expect;
mod known;
pub mod measure;
pub mod scenario;
pub mod tracer;
pub mod verdict;

use std::{
    collections::BTreeSet,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    conntrack,
    facts::{
        netns::{self, NetnsArg},
        snmp,
    },
    kernel::Kernel,
    model::reasons::{DropReasons, Source},
    output::Output,
    session::live::{self, Quiet, Schedule, Signals},
};
use expect::{Expectation, Metric};
use measure::{Measurements, ScenarioFacts, Unmeasured};
use verdict::Reproducer;

/// Above 127, so that `git bisect run` aborts instead of calling the kernel bad.
pub const USAGE: u8 = crate::error::CHECK_USAGE;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// An expectation, repeatable: `drops{reason=NO_SOCKET} == 0`, `retrans < 5`,
    /// `conntrack.insert_failed == 0`, `counter{TcpExt.TCPWqueueTooBig} == 0`, `scenario.missing == 0`.
    #[arg(long = "expect", value_name = "EXPR")]
    expect: Vec<String>,
    /// Expectations from a file, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE")]
    expect_file: Option<PathBuf>,
    /// A built-in reproducer, with its own expectations added.
    #[arg(long, value_parser = scenario::NAMES)]
    scenario: Option<String>,
    /// No reproducer: watch this long (e.g. 30s).
    #[arg(long, value_parser = crate::parse_duration, allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Longest the reproducer may run before it is killed and the check fails.
    #[arg(long, value_parser = crate::parse_duration, allow_hyphen_values = true, default_value = "5m")]
    timeout: Duration,
    /// Count drops and read counters of this network namespace (name under /run/netns or path).
    #[arg(long)]
    netns: Option<String>,
    /// One JSON object with the verdict, each expectation and the evidence.
    #[arg(long)]
    json: bool,
    /// The reproducer: a command and its arguments, after `--`.
    #[arg(last = true)]
    command: Vec<String>,
}

enum Reproduce {
    Command(Vec<String>),
    Scenario(scenario::Topology),
    Watch(Duration),
}

fn expectations(a: &CheckArgs) -> Result<Vec<Expectation>> {
    let mut all = Vec::new();
    if a.scenario.is_some() {
        for e in scenario::EXPECTATIONS {
            all.push(Expectation::parse(e).map_err(anyhow::Error::msg)?);
        }
    }
    for e in &a.expect {
        all.push(Expectation::parse(e).map_err(anyhow::Error::msg)?);
    }
    if let Some(file) = &a.expect_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--expect-file {}", file.display()))?;
        let parsed = Expectation::parse_file(&text)
            .map_err(|e| crate::Error::Input(format!("--expect-file {}: {e}", file.display())))?;
        all.extend(parsed);
    }
    Ok(all)
}

/// The namespaces whose counters the check reads: the scenario's, `--netns`, or netdoc's own.
fn counter_namespaces(netns: Option<&NetnsArg>, how: &Reproduce) -> Vec<PathBuf> {
    if let Reproduce::Scenario(t) = how {
        return t.namespaces().to_vec();
    }
    vec![match netns {
        None => PathBuf::from("/proc/thread-self/ns/net"),
        Some(n) => n.path.clone(),
    }]
}

/// A reason this kernel names nowhere is a typo, not an untestable kernel: `git bisect run`
/// would skip every commit; the error names the nearest reason. One it names in any case
/// (`no_socket`, a number) is given its canonical name, which the drops are counted under and
/// the verdict shows. Kernels without drop reasons leave it untestable (it says why).
fn canonical_reasons(expectations: &mut [Expectation], reasons: &DropReasons) -> Result<()> {
    if reasons.source == Source::Unavailable {
        return Ok(());
    }
    for e in expectations {
        let Metric::Drops {
            reason: Some(name), ..
        } = &mut e.metric
        else {
            continue;
        };
        let Some(code) = reasons.code(name) else {
            let names: Vec<String> = reasons.names().map(str::to_string).collect();
            let hint = match known::nearest(name, &names, &[]) {
                Some(near) => format!("did you mean {near}?"),
                None => format!("{} known, e.g. NO_SOCKET, NETFILTER_DROP", reasons.len()),
            };
            fail!(
                Input,
                "expectation '{}': this kernel names no drop reason {name} ({hint})",
                e.text
            );
        };
        let canonical = reasons.name(code);
        e.text = e.text.replacen(name.as_str(), &canonical, 1);
        *name = canonical;
    }
    Ok(())
}

/// A counter or conntrack column that neither this kernel nor any other has is a typo: a
/// usage error naming the nearest valid name, never an untestable kernel (`git bisect run`
/// would skip every commit). One that some kernel has but this one lacks stays untestable.
fn known_names(
    expectations: &[Expectation],
    counters: &snmp::Counters,
    columns: &BTreeSet<String>,
) -> Result<()> {
    for e in expectations {
        let (what, name, here, known): (_, _, Vec<&String>, _) = match &e.metric {
            Metric::Counter(name) if !known::zero_until_seen(name) => {
                ("counter", name, counters.keys().collect(), known::COUNTERS)
            }
            Metric::Conntrack(name) => (
                "conntrack column",
                name,
                columns.iter().collect(),
                known::CONNTRACK_COLUMNS,
            ),
            _ => continue,
        };
        if known::exists(name, here.iter().copied(), known) {
            continue;
        }
        let hint = match known::nearest(name, here.iter().copied(), known) {
            Some(near) => format!("did you mean {near}?"),
            None => "see /proc/net/netstat, /proc/net/snmp and /proc/net/stat/nf_conntrack".into(),
        };
        fail!(
            Input,
            "expectation '{e}': no kernel netdoc knows has a {what} {name} ({hint})"
        );
    }
    Ok(())
}

/// The protocol counters summed over `namespaces`, or an error naming one that can no longer
/// be entered (the reproducer deleted it): its counters are gone with it, and reading them as
/// absent would call them missing from this kernel.
fn read_counters(namespaces: &[PathBuf], given: Option<&NetnsArg>) -> Result<snmp::Counters> {
    let mut sum = snmp::Counters::new();
    for ns in namespaces {
        let Some(counters) = netns::in_namespace(ns, || Some(snmp::read())) else {
            let name = given.map_or_else(|| ns.display().to_string(), |n| n.given.clone());
            fail!(
                Input,
                "--netns {name} went away during the check: its counters cannot be read (the reproducer must leave it in place)"
            );
        };
        for (k, v) in counters {
            *sum.entry(k).or_default() += v;
        }
    }
    Ok(sum)
}

pub async fn run(a: CheckArgs, kernel: Kernel) -> Result<u8> {
    let mut expectations = expectations(&a)?;
    let how = match (&a.scenario, a.duration, a.command.is_empty()) {
        (Some(_), None, true) => None,
        (None, Some(d), true) => Some(Reproduce::Watch(d)),
        (None, None, false) => Some(Reproduce::Command(a.command.clone())),
        (None, None, true) => fail!(
            Input,
            "nothing to run: give a reproducer after --, --scenario {} or --duration",
            scenario::NAMES.join("|")
        ),
        _ => fail!(
            Input,
            "give only one of: a command after --, --scenario, --duration"
        ),
    };
    if expectations.is_empty() && matches!(how, Some(Reproduce::Watch(_))) {
        fail!(
            Input,
            "--duration needs at least one --expect or --expect-file"
        );
    }
    if a.scenario.is_some() && a.netns.is_some() {
        fail!(
            Input,
            "--scenario runs in namespaces of its own: drop --netns"
        );
    }
    let how = match how {
        Some(h) => h,
        None => Reproduce::Scenario(scenario::Topology::new().context("setting up the scenario")?),
    };
    let netns = a.netns.as_deref().map(NetnsArg::parse).transpose()?;
    let namespaces = counter_namespaces(netns.as_ref(), &how);
    let inodes: BTreeSet<u32> = namespaces.iter().filter_map(|p| netns::inode(p)).collect();
    let mut signals = Signals::install()?;
    let mut tracer = tracer::start(kernel, netns.as_ref())?;
    if let Ok(session) = &tracer {
        canonical_reasons(&mut expectations, &session.families.drops.reasons)?;
    }
    let counters_before = read_counters(&namespaces, netns.as_ref())?;
    let conntrack_before = conntrack::snapshot(netns.as_ref().map(|n| n.path.as_path())).ok();
    let columns = conntrack_before
        .iter()
        .flat_map(|s| s.per_cpu.iter().flat_map(|row| row.keys().cloned()))
        .collect();
    known_names(&expectations, &counters_before, &columns)?;

    let mut measured = Measurements::default();
    let reproduce = async {
        match &how {
            Reproduce::Command(cmd) => run_command(cmd, a.timeout).await,
            Reproduce::Watch(d) => {
                tokio::time::sleep(*d).await;
                Ok((Reproducer::None, None))
            }
            Reproduce::Scenario(t) => {
                let facts = tokio::task::block_in_place(|| t.run(a.timeout))
                    .context("running the scenario")?;
                Ok((Reproducer::None, Some(facts)))
            }
        }
    };
    let schedule = Schedule {
        interval: Duration::from_secs(3600),
        duration: None,
    };
    let mut ended = match tracer.as_mut() {
        Ok(session) => live::drive(session, &mut Quiet, &mut signals, schedule, reproduce).await?,
        Err(_) => live::without_session(&mut signals, reproduce).await,
    };
    let (reproducer, scenario) = match (ended.value, &ended.ending) {
        (Some(outcome), _) => outcome?,
        (None, live::Ending::Signal(name)) => (Reproducer::Interrupted(name.to_string()), None),
        // The driver has said on stderr that the namespace is gone (one line is enough): its
        // counters went with it, so there is no verdict, and `git bisect run` must stop.
        (None, live::Ending::NamespaceGone(_)) => return Ok(USAGE),
        (None, other) => bail!("the check ended before its reproducer: {other:?}"),
    };
    measured.scenario = scenario;

    let after = read_counters(&namespaces, netns.as_ref())?;
    measured.counters = snmp::deltas(&counters_before, &after);
    // A reproducer may load conntrack itself: no "before" then means zeros before.
    measured.conntrack = Some(
        match conntrack::snapshot(netns.as_ref().map(|n| n.path.as_path())) {
            Ok(after) => Ok(
                conntrack::deltas(&conntrack_before.unwrap_or_default(), &after)
                    .iter()
                    .flat_map(|row| row.iter().filter(|(k, _)| k.as_str() != "entries"))
                    .fold(
                        Default::default(),
                        |mut sum: std::collections::BTreeMap<String, u64>, (k, v)| {
                            *sum.entry(k.clone()).or_default() += v;
                            sum
                        },
                    ),
            ),
            Err(e) => Err(Unmeasured(format!("{e:#}"))),
        },
    );
    tracer::finish(&tracer, &inodes, &mut measured);
    drop(how); // removes the scenario's namespaces before the verdict is printed

    let report = verdict::evaluate(&expectations, measured, reproducer, kernel_release());
    let code = report.verdict.exit_code();
    // `git bisect run` hides stdout: say on stderr why this kernel could not be judged.
    if report.verdict == verdict::Verdict::Untestable {
        let why: Vec<String> = report
            .checks
            .iter()
            .filter_map(|c| Some(format!("{}: {}", c.expectation, c.why.as_ref()?)))
            .chain(
                matches!(report.reproducer, Reproducer::Exited(125))
                    .then(|| "the reproducer exited 125".to_string()),
            )
            .collect();
        say!("untestable on this kernel: {}", why.join("; "));
    }
    let text = match a.json {
        true => Output::Check(report).line(),
        false => verdict::render(&report),
    };
    ended.out.finish(&text)?;
    Ok(code)
}

fn kernel_release() -> String {
    crate::facts::read_text("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kills a reproducer's whole process group when dropped: on timeout, and when a signal ends
/// the check while it runs (the future awaiting it is dropped).
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; a negative pid names the group we made.
        unsafe { libc::kill(-self.0, libc::SIGKILL) };
    }
}

async fn run_command(
    cmd: &[String],
    limit: Duration,
) -> Result<(Reproducer, Option<ScenarioFacts>)> {
    let start = Instant::now();
    let mut command = Command::new(&cmd[0]);
    // Its own process group, so everything it starts can be killed with it.
    command.args(&cmd[1..]).process_group(0);
    let mut child = tokio::process::Command::from(command)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting the reproducer {}", cmd[0]))?;
    let _group = child.id().map(|pid| ProcessGroup(pid as i32));
    match tokio::time::timeout(limit, child.wait()).await {
        Ok(status) => {
            let status = status?;
            let how = match (status.code(), status.signal()) {
                (Some(c), _) => Reproducer::Exited(c),
                (None, Some(s)) => Reproducer::Killed(format!("signal {s}")),
                (None, None) => Reproducer::Killed("an unknown cause".into()),
            };
            Ok((how, None))
        }
        Err(_) => Ok((Reproducer::TimedOut(start.elapsed().as_secs()), None)),
    }
}
