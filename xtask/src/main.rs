//! Developer tasks: `cargo xtask setup | run | test | bench | vm | image`. Each installs what is missing first.
mod bench;
mod image;
mod setup;
mod vm;

use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the eBPF toolchain and test tools (idempotent).
    Setup,
    /// Build netdoc (release) and run it: `cargo xtask run -- drops --json` (default: `doctor`).
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and, as root, the kernel integration tests.
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Measure drop-path overhead and event delivery; prints figures.
    Bench(bench::BenchArgs),
    /// Boot other kernels under QEMU with netdoc inside: a command's verdict per kernel
    /// (for `git bisect run`), or the compatibility matrix (`--matrix`).
    Vm(vm::VmArgs),
    /// Build netdoc's container image (the static release binary alone) with podman.
    Image {
        #[arg(long, default_value = concat!("netdoc:", env!("CARGO_PKG_VERSION")))]
        tag: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Setup => setup::ensure(true),
        Task::Run { args } => {
            setup::ensure(false)?;
            let netdoc = build_release()?;
            let args = if args.is_empty() {
                vec!["doctor".to_string()]
            } else {
                args
            };
            let status = Command::new(netdoc).args(&args).status()?;
            if !status.success() {
                std::process::exit(status.code().unwrap_or(1));
            }
            Ok(())
        }
        Task::Test { args } => {
            setup::ensure(true)?;
            lint()?;
            // Every test but the kernel tests (tests/kernel_*), of the default members (the eBPF
            // crate builds only for bpfel, via netdoc-user).
            const NOT_KERNEL: [&str; 7] = [
                "test",
                "--lib",
                "--bins",
                "--test",
                "report_html",
                "--test",
                "deploy",
            ];
            if !setup::is_root() {
                eprintln!(
                    "xtask: not root: SKIPPED the kernel integration tests (tests/kernel_*) and the image test; running the unit tests, the HTML report and the deploy manifest tests only"
                );
                return cargo(&NOT_KERNEL, &args);
            }
            if !args.is_empty() {
                return cargo(&["test"], &args);
            }
            // The kernel tests then run once, beside another netdoc: the QEMU matrix runs them
            // alone on four kernels.
            cargo(&NOT_KERNEL, &[])?;
            beside_another_netdoc()
        }
        Task::Bench(args) => {
            setup::ensure(false)?;
            setup::ensure_bench()?;
            let netdoc = build_release()?;
            bench::run(&netdoc, &args)
        }
        Task::Image { tag } => {
            setup::ensure(true)?;
            image::build(&tag, workspace_root()?)
        }
        Task::Vm(args) => {
            setup::ensure(true)?;
            setup::ensure_vm()?;
            let code = vm::run(args, workspace_root()?)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}

/// Formatting and clippy (`-D warnings`) over the host crates and the eBPF crate.
fn lint() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(&["clippy", "--all-targets", "--", "-D", "warnings"], &[])?;
    let status = Command::new("cargo")
        .args([
            "+nightly",
            "clippy",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ])
        .current_dir(workspace_root()?.join("netdoc-ebpf"))
        .status()
        .context("running clippy on the eBPF crate")?;
    if !status.success() {
        bail!("clippy found problems in netdoc-ebpf");
    }
    Ok(())
}

/// The kernel tests while another netdoc (`netdoc drops`, with its stage sentinels and NET_RX
/// hooks) runs on the host, as an exporter would: the tests must neither see its programs as
/// leaks nor lose counts to it.
fn beside_another_netdoc() -> Result<()> {
    let netdoc = workspace_root()?.join("target/debug/netdoc");
    let mut bystander = Command::new(&netdoc)
        .args(["drops", "--duration", "30m"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", netdoc.display()))?;
    // Its stderr says "attached" once every program is in place; keep reading it so the
    // pipe never fills or closes under it.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = bystander.stderr.take().context("the bystander's stderr")?;
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let attached = loop {
        match lines.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(line) if line.contains("attached") => break Ok(()),
            Ok(line) => eprintln!("bystander: {line}"),
            Err(e) => break Err(anyhow::anyhow!("the bystander netdoc did not attach: {e}")),
        }
    };
    eprintln!("xtask: kernel tests beside a running `netdoc drops`");
    let result = attached.and_then(|()| cargo(&["test", "--test", "kernel_*"], &[]));
    // SAFETY: kill has no memory preconditions; the pid is our own child.
    unsafe { libc::kill(bystander.id() as i32, libc::SIGINT) };
    let status = bystander.wait()?;
    result?;
    if !status.success() {
        bail!("the bystander netdoc exited with {status}");
    }
    Ok(())
}

fn cargo(base: &[&str], extra: &[String]) -> Result<()> {
    let status = Command::new(env!("CARGO"))
        .args(base)
        .args(extra)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed", base.join(" "));
    }
    Ok(())
}

fn workspace_root() -> Result<&'static std::path::Path> {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")
}

/// The host target, named so that `+crt-static` applies to netdoc and not to build scripts and
/// proc macros (which cannot be static).
const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the release binary, statically linked (it runs on any distribution, in a `FROM
/// scratch` image and in the QEMU guests), and returns its path.
fn build_release() -> Result<std::path::PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--package",
            "netdoc-user",
            "--target",
            HOST_TARGET,
        ])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo build --release failed");
    }
    // cargo builds into CARGO_TARGET_DIR when it is set (a worktree sharing another's target),
    // so the binary to run is there, not under this workspace.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => workspace_root()?.join("target"),
    };
    Ok(target.join(HOST_TARGET).join("release/netdoc"))
}
