//! Developer tasks: `cargo xtask setup | run | test | bench | vm`. Each installs what is missing first.
mod bench;
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
    /// Build netdoc (release) and run it: `cargo xtask run -- drops --json`.
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
                vec!["drops".to_string()]
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
            if !setup::is_root() {
                eprintln!(
                    "xtask: not root: kernel integration tests will report themselves skipped"
                );
            }
            // The default members: the eBPF crate builds only for bpfel (via netdoc-user).
            cargo(&["test"], &args)
        }
        Task::Bench(args) => {
            setup::ensure(false)?;
            let netdoc = build_release()?;
            bench::run(&netdoc, &args)
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

/// Builds the release binary and returns its path.
fn build_release() -> Result<std::path::PathBuf> {
    cargo(&["build", "--release", "--package", "netdoc-user"], &[])?;
    Ok(workspace_root()?.join("target/release/netdoc"))
}
