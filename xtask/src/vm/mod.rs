//! `cargo xtask vm`: boots other kernels under QEMU with netdoc inside.
//! - one kernel and a command: the command's exit code is the verdict (`git bisect run` friendly:
//!   a kernel that does not boot is 125, "skip");
//! - several kernels: a kernel → verdict table;
//! - `--matrix`: the probe plan and the integration tests on each kernel, and on the host.
mod guest;
mod initramfs;
mod kernels;
mod modules;
mod qemu;

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};

use initramfs::Stage;

/// The guest kernels the matrix covers by default: Debian bullseye, bookworm, trixie and the
/// newest Debian ships (a trixie backport).
const MATRIX: [&str; 4] = ["5.10", "6.1", "6.12", kernels::NEWEST];
/// Verdict for "this kernel cannot be tested" in `git bisect run`.
const SKIP: i32 = 125;

#[derive(clap::Args)]
pub struct VmArgs {
    /// Kernel to boot: a vmlinuz/bzImage, a .deb, or a Debian version (5.10, 6.1, 6.12,
    /// 6.1.0-56, a package name, or `newest`). Repeat it to loop over several kernels.
    #[arg(long)]
    kernel: Vec<String>,
    /// Modules for a self-built kernel: a `make modules_install INSTALL_MOD_PATH=DIR` tree.
    #[arg(long)]
    modules: Option<PathBuf>,
    /// The compatibility matrix: probe plan and integration tests per kernel (default kernels:
    /// 5.10, 6.1, 6.12, newest, plus this host's).
    #[arg(long, conflicts_with = "command")]
    matrix: bool,
    /// With --matrix: run only these integration test binaries (e.g. `kernel_export`), to
    /// re-check one failure on the kernel that showed it.
    #[arg(long, requires = "matrix")]
    only: Vec<String>,
    /// With --matrix: this host's row shows its probe plan only, its tests left to
    /// `cargo xtask test` (CI runs that just before).
    #[arg(long, requires = "matrix")]
    host_probes_only: bool,
    /// Per-boot limit in seconds: a guard against hangs (a guest runs every kernel test binary
    /// under emulation, 8 to 18 minutes; two at a time).
    #[arg(long, default_value_t = 1500)]
    timeout: u64,
    /// Seconds a guest has to reach /init (about 5 s under emulation, measured): one
    /// that has not is booted once more, then reported untestable, with its console's end.
    #[arg(long, default_value_t = 120)]
    init_timeout: u64,
    /// With --matrix: guests booted side by side (each takes one host CPU).
    #[arg(long, default_value_t = 2, requires = "matrix")]
    jobs: usize,
    #[arg(long, default_value_t = 2)]
    cpus: u32,
    #[arg(long, default_value_t = 1024)]
    memory_mb: u32,
    /// The command to run in the guest (netdoc is on PATH), e.g. `-- netdoc check --scenario sndbuf-close`.
    #[arg(last = true)]
    command: Vec<String>,
}

/// The host binaries the guest needs, built once.
struct Payload {
    release: PathBuf,
    /// (name, path) of each kernel integration test binary, and where they run netdoc from.
    tests: Vec<(String, String)>,
    netdoc_under_test: PathBuf,
}

pub fn run(args: VmArgs, root: &Path) -> Result<i32> {
    if !args.matrix && args.command.is_empty() {
        bail!(
            "give a command after --, e.g. `cargo xtask vm --kernel 6.1 -- netdoc probes`, or --matrix"
        );
    }
    if !args.matrix && args.kernel.is_empty() {
        bail!("--kernel is required: a vmlinuz, a .deb or a Debian version like 6.1");
    }
    let cache = root.join("target/vm");
    fs::create_dir_all(&cache)?;
    let mut payload = build_payload(root, args.matrix)?;
    if !args.only.is_empty() {
        payload.tests.retain(|(name, _)| args.only.contains(name));
        if payload.tests.is_empty() {
            bail!(
                "--only names no kernel_* test binary: {}",
                args.only.join(", ")
            );
        }
    }
    let base = cache.join("base.cpio");
    pack_base(&payload, &cache.join("stage-base"), &base)?;
    if args.matrix {
        return matrix(&args, &payload, &base, &cache);
    }
    let job = guest::command_job(&args.command);
    let single = args.kernel.len() == 1;
    let mut rows = Vec::new();
    for spec in &args.kernel {
        let verdict = match boot_kernel(&args, spec, &job, &base, &cache, single) {
            Ok(v) => v,
            Err(e) => Verdict::error(spec, format!("{e:#}")),
        };
        eprintln!("xtask vm: {} → {}", verdict.label, verdict.describe());
        rows.push(verdict);
    }
    if single {
        return Ok(rows[0].exit_code());
    }
    println!("{:<32} {:<12} DETAIL", "KERNEL", "VERDICT");
    for v in &rows {
        println!("{:<32} {:<12} {}", v.label, v.word(), v.describe());
    }
    Ok(0)
}

struct Verdict {
    label: String,
    rc: Option<i32>,
    booted: bool,
    timed_out: bool,
    error: Option<String>,
    seconds: f64,
    results: guest::Results,
    /// The first boot hung before /init and this verdict is the second's.
    booted_again: bool,
}

impl Verdict {
    fn error(label: &str, why: String) -> Self {
        Self {
            label: label.to_string(),
            rc: None,
            booted: false,
            timed_out: false,
            error: Some(why),
            seconds: 0.0,
            results: Default::default(),
            booted_again: false,
        }
    }

    /// For `git bisect run`: the command's code; a hang or crash after boot is a failure; a
    /// kernel that never reaches init is skipped.
    fn exit_code(&self) -> i32 {
        match (self.rc, self.booted) {
            (Some(rc), _) => rc,
            (None, true) => 1,
            (None, false) => SKIP,
        }
    }

    fn word(&self) -> &'static str {
        match self.exit_code() {
            0 => "pass",
            SKIP => "untestable",
            _ => "fail",
        }
    }

    fn describe(&self) -> String {
        let first = self.describe_boot();
        if self.booted_again {
            format!("{first}; the first boot hung before /init")
        } else {
            first
        }
    }

    fn describe_boot(&self) -> String {
        if let Some(e) = &self.error {
            return format!("not booted: {e}");
        }
        match (self.rc, self.booted, self.timed_out) {
            (Some(rc), _, _) => format!("exit {rc} after {:.0} s", self.seconds),
            (None, true, true) => format!("hung: no verdict within {:.0} s", self.seconds),
            (None, true, false) => {
                "the guest kernel crashed or powered off before the command finished".into()
            }
            (None, false, true) => format!("did not boot within {:.0} s", self.seconds),
            (None, false, false) => "the kernel did not reach init (see the console log)".into(),
        }
    }
}

fn boot_kernel(
    args: &VmArgs,
    spec: &str,
    job: &str,
    base: &Path,
    cache: &Path,
    console_on_terminal: bool,
) -> Result<Verdict> {
    let prepared = prepare(args, spec, job, base, cache)?;
    boot_prepared(args, &prepared, console_on_terminal)
}

/// A kernel ready to boot: its image and an initramfs with the job, in a run directory of its
/// own (so guests may run side by side).
struct Prepared {
    label: String,
    vmlinuz: PathBuf,
    dir: PathBuf,
}

fn prepare(args: &VmArgs, spec: &str, job: &str, base: &Path, cache: &Path) -> Result<Prepared> {
    let kernel = kernels::resolve(spec, args.modules.as_deref(), cache)?;
    let dir = cache.join("runs").join(sanitize(&kernel.label));
    fs::create_dir_all(&dir)?;
    pack_kernel_part(
        &kernel,
        job,
        &dir.join("stage"),
        base,
        &dir.join("initrd.cpio"),
    )?;
    Ok(Prepared {
        label: kernel.label,
        vmlinuz: kernel.vmlinuz,
        dir,
    })
}

fn boot_prepared(args: &VmArgs, p: &Prepared, console_on_terminal: bool) -> Result<Verdict> {
    let log = p.dir.join("console.log");
    let boot = qemu::Boot {
        vmlinuz: &p.vmlinuz,
        initrd: &p.dir.join("initrd.cpio"),
        cpus: args.cpus,
        memory_mb: args.memory_mb,
        timeout: Duration::from_secs(args.timeout),
        init_timeout: Duration::from_secs(args.init_timeout.min(args.timeout)),
        console: (!console_on_terminal).then_some(log.as_path()),
        results: &p.dir.join("results"),
    };
    let mut outcome = qemu::boot(&boot)?;
    // Under emulation a guest has, rarely, hung silently before /init with a kernel that
    // boots on every other try: one more boot tells such a hang from a kernel that cannot boot.
    let booted_again = outcome.stuck_before_init;
    if booted_again {
        eprintln!(
            "xtask vm: {} did not reach /init within {} s; booting it once more",
            p.label, args.init_timeout
        );
        let _ = fs::rename(&log, p.dir.join("console.first-boot.log"));
        outcome = qemu::boot(&boot)?;
    }
    Ok(Verdict {
        label: p.label.clone(),
        rc: outcome.results.rc,
        booted: outcome.results.booted.is_some(),
        timed_out: outcome.timed_out,
        error: None,
        seconds: outcome.elapsed.as_secs_f64(),
        results: outcome.results,
        booted_again,
    })
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn build_payload(root: &Path, with_tests: bool) -> Result<Payload> {
    let release = crate::build_release()?;
    let mut tests = Vec::new();
    if with_tests {
        let out = Command::new(env!("CARGO"))
            .args([
                "test",
                "--package",
                "netdoc-user",
                "--no-run",
                "--message-format=json",
            ])
            .current_dir(root)
            .output()
            .context("building the test binaries")?;
        if !out.status.success() {
            bail!(
                "cargo test --no-run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let name = msg["target"]["name"].as_str().unwrap_or_default();
            if msg["reason"] == "compiler-artifact"
                && msg["target"]["kind"][0] == "test"
                && name.starts_with("kernel_")
                && let Some(exe) = msg["executable"].as_str()
            {
                tests.push((name.to_string(), exe.to_string()));
            }
        }
        tests.sort();
        if tests.is_empty() {
            bail!("no kernel_* integration test binaries were built");
        }
    }
    Ok(Payload {
        release,
        tests,
        netdoc_under_test: root.join("target/debug/netdoc"),
    })
}

/// The part shared by every kernel: busybox, tools, netdoc, the test binaries, /init.
fn pack_base(p: &Payload, stage_dir: &Path, out: &Path) -> Result<()> {
    let stage = Stage::new(stage_dir)?;
    for tool in ["busybox", "bash", "ip", "nft", "setpriv", "tc"] {
        stage.tool(tool)?;
    }
    stage.executable(&p.release, Path::new("/usr/local/bin/netdoc"))?;
    // At their host paths: the test binaries name netdoc by its absolute build path.
    for (_, exe) in &p.tests {
        stage.executable(Path::new(exe), Path::new(exe))?;
    }
    // The tests run the binary at netdoc's debug path; under emulation the release build there
    // is several times faster (BTF parsing dominates each start).
    if !p.tests.is_empty() {
        stage.executable(&p.release, &p.netdoc_under_test)?;
    }
    stage.file("init", guest::INIT.as_bytes(), 0o755)?;
    stage.pack(out)
}

/// The per-kernel part (modules and job), appended to the base: the kernel unpacks
/// concatenated cpio archives in order.
fn pack_kernel_part(
    kernel: &kernels::KernelImage,
    job: &str,
    stage_dir: &Path,
    base: &Path,
    out: &Path,
) -> Result<()> {
    let stage = Stage::new(stage_dir)?;
    if let Some(tree) = &kernel.modules {
        stage.modules(&modules::closure(tree)?)?;
    } else {
        stage.modules(&[])?;
    }
    stage.file(initramfs::JOB, job.as_bytes(), 0o644)?;
    let part = stage_dir.with_extension("cpio");
    stage.pack(&part)?;
    let mut bytes = fs::read(base)?;
    bytes.extend(fs::read(&part)?);
    fs::write(out, bytes)?;
    Ok(())
}

fn matrix(args: &VmArgs, p: &Payload, base: &Path, cache: &Path) -> Result<i32> {
    let specs: Vec<String> = if args.kernel.is_empty() {
        MATRIX.iter().map(|s| s.to_string()).collect()
    } else {
        args.kernel.clone()
    };
    let job = guest::matrix_job(&p.tests);
    let mut rows = vec![host_row(p, !args.host_probes_only)?];
    // Downloads and packing one after another, then the guests side by side: each runs on one
    // host thread (single-threaded TCG), so `--jobs` guests share the host's CPUs.
    let prepared: Vec<(&String, Result<Prepared>)> = specs
        .iter()
        .map(|spec| (spec, prepare(args, spec, &job, base, cache)))
        .collect();
    // Newest kernels first: they take longest, so the last to start is a short one and the
    // guests side by side end close together. The table keeps the matrix order.
    let queue = std::sync::Mutex::new(prepared.iter().enumerate().rev());
    let verdicts = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let Some((i, (spec, next))) = queue.lock().unwrap().next() else {
                        return;
                    };
                    let v = match next {
                        Ok(k) => {
                            eprintln!("xtask vm: matrix: booting {}", k.label);
                            boot_prepared(args, k, false)
                                .unwrap_or_else(|e| Verdict::error(&k.label, format!("{e:#}")))
                        }
                        Err(e) => Verdict::error(spec, format!("{e:#}")),
                    };
                    report(&v, cache);
                    verdicts.lock().unwrap().push((i, v));
                }
            });
        }
    });
    let mut verdicts = verdicts.into_inner().unwrap();
    verdicts.sort_by_key(|(i, _)| *i);
    rows.extend(verdicts.into_iter().map(|(_, v)| v));
    print!("{}", render_matrix(&rows));
    Ok(if rows.iter().all(|r| r.exit_code() == 0) {
        0
    } else {
        1
    })
}

/// One guest's verdict, and the end of its console when it failed.
fn report(v: &Verdict, cache: &Path) {
    let mut text = format!(
        "xtask vm: matrix: {} → {} ({})\n",
        v.label,
        v.word(),
        v.describe()
    );
    if v.exit_code() != 0 {
        let log = cache
            .join("runs")
            .join(sanitize(&v.label))
            .join("console.log");
        if let Ok(console) = fs::read_to_string(&log) {
            text.push_str(&format!(
                "---- console of {} (last 80 lines) ----\n",
                v.label
            ));
            let lines: Vec<&str> = console.lines().collect();
            for l in &lines[lines.len().saturating_sub(80)..] {
                text.push_str(l);
                text.push('\n');
            }
        }
    }
    // One write: guests finishing together do not interleave their reports.
    eprint!("{text}");
}

/// The host's own row: same job, run directly.
fn host_row(p: &Payload, with_tests: bool) -> Result<Verdict> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_string();
    eprintln!("xtask vm: matrix: this host ({release})");
    let mut text = format!("booted {release}\n");
    let probes = Command::new(&p.release)
        .args(["probes", "--json"])
        .output()?;
    for line in String::from_utf8_lossy(&probes.stdout).lines() {
        text.push_str(&format!("probe {line}\n"));
    }
    let mut rc = 0;
    for (name, exe) in p.tests.iter().filter(|_| with_tests) {
        let out = Command::new(exe).arg("--test-threads=1").output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(summary) = stdout.lines().find(|l| l.starts_with("test result")) {
            text.push_str(&format!("result {name} {summary}\n"));
        }
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            rc = 1;
            eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        }
        text.push_str(&format!("test {name} {code}\n"));
    }
    text.push_str(&format!("rc {rc}\n"));
    Ok(Verdict {
        label: format!("host {release}"),
        rc: Some(rc),
        booted: true,
        timed_out: false,
        error: None,
        seconds: 0.0,
        results: guest::Results::parse(&text),
        booted_again: false,
    })
}

/// kernel × probe → attached hook or why degraded, then kernel × test binary → pass/fail.
fn render_matrix(rows: &[Verdict]) -> String {
    let mut probes: Vec<String> = Vec::new();
    for r in rows {
        for p in &r.results.probes {
            let name = p["probe"].as_str().unwrap_or("?").to_string();
            if !probes.contains(&name) {
                probes.push(name);
            }
        }
    }
    let mut out = String::from("\nPROBES\n");
    for r in rows {
        out.push_str(&format!(
            "{}\n",
            r.results.booted.as_deref().unwrap_or(&r.label)
        ));
        if r.results.probes.is_empty() {
            out.push_str(&format!("  (no probe plan: {})\n", r.describe()));
        }
        for name in &probes {
            if let Some(p) = r
                .results
                .probes
                .iter()
                .find(|p| p["probe"] == name.as_str())
            {
                out.push_str(&format!("  {name:<16} {}\n", probe_cell(p)));
            }
        }
    }
    out.push_str("\nTESTS\n");
    for r in rows {
        let label = r.results.booted.as_deref().unwrap_or(&r.label);
        if r.results.tests.is_empty() {
            out.push_str(&format!("{label:<30} {:<18} {}\n", "-", r.describe()));
        }
        for (name, code, summary) in &r.results.tests {
            let word = if *code == 0 { "pass" } else { "FAIL" };
            out.push_str(&format!("{label:<30} {name:<18} {word:<5} {summary}\n"));
        }
    }
    out
}

/// "attached via tp_btf/kfree_skb" or "degraded: <why>" from one `netdoc probes --json` line.
fn probe_cell(plan: &serde_json::Value) -> String {
    let attempts = plan["attempts"].as_array().cloned().unwrap_or_default();
    let hook = |a: &serde_json::Value| {
        // The type, then whatever names the target (a netfilter link has none).
        let h = &a["hook"];
        [
            &h["type"],
            &h["event"],
            &h["category"],
            &h["name"],
            &h["function"],
        ]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join("/")
    };
    let attached = |a: &serde_json::Value| a["outcome"]["status"] == "attached";
    // Why each hook before the chosen one (or every hook, if none attached) was passed over.
    let passed_over: Vec<String> = attempts
        .iter()
        .take_while(|a| !attached(a))
        .map(|a| {
            format!(
                "{}: {}",
                hook(a),
                a["outcome"]["detail"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let notes = plan["degraded"]
        .as_str()
        .map(|d| format!(" (degraded: {d})"))
        .unwrap_or_default();
    match attempts.iter().find(|a| attached(a)) {
        Some(a) if passed_over.is_empty() => format!("attached via {}{notes}", hook(a)),
        Some(a) => format!(
            "attached via {}{notes} [skipped {}]",
            hook(a),
            passed_over.join("; ")
        ),
        None => format!("degraded: no hook attaches ({})", passed_over.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::probe_cell;

    #[test]
    fn probe_cells_name_the_hook_and_what_was_passed_over() {
        let fexit = json!({"type": "fexit", "function": "f"});
        let kretprobe = json!({"type": "kretprobe", "function": "f"});
        let plan = json!({"probe": "p", "attempts": [
            {"hook": fexit, "outcome": {"status": "failed", "detail": "EPERM"}},
            {"hook": kretprobe, "outcome": {"status": "attached"}},
        ]});
        assert_eq!(
            probe_cell(&plan),
            "attached via kretprobe/f [skipped fexit/f: EPERM]"
        );
        let plan = json!({"probe": "p", "degraded": "no reason", "attempts": [
            {"hook": {"type": "tp_btf", "event": "e"}, "outcome": {"status": "attached"}},
            {"hook": {"type": "tracepoint", "category": "c", "name": "e"}, "outcome": {"status": "available"}},
        ]});
        assert_eq!(
            probe_cell(&plan),
            "attached via tp_btf/e (degraded: no reason)"
        );
        let plan = json!({"probe": "p", "attempts": [
            {"hook": fexit, "outcome": {"status": "failed", "detail": "EPERM"}},
            {"hook": kretprobe, "outcome": {"status": "skipped", "detail": "no kprobes"}},
        ]});
        assert_eq!(
            probe_cell(&plan),
            "degraded: no hook attaches (fexit/f: EPERM; kretprobe/f: no kprobes)"
        );
        let plan = json!({"probe": "p", "attempts": [
            {"hook": {"type": "netfilter_link"}, "outcome": {"status": "attached"}},
        ]});
        assert_eq!(probe_cell(&plan), "attached via netfilter_link");
    }
}
