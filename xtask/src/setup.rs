//! Idempotent installation of what building and testing netdoc needs on a bare machine.
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM that the nightly toolchain (and so bpf-linker) is built against.
const LLVM: &str = "llvm-22";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn quiet_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn step(what: &str, cmd: &str, args: &[&str]) -> Result<()> {
    eprintln!("xtask setup: {what}: {cmd} {}", args.join(" "));
    let status = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !status.success() {
        bail!("{what} failed ({cmd} {})", args.join(" "));
    }
    Ok(())
}

fn apt_install(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p]).contains("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "missing Debian packages {}: run as root, or: sudo apt-get install -y {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step("refreshing package lists", "apt-get", &["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    step("installing Debian packages", "apt-get", &args)
}

/// Installs, only where missing: nightly + rust-src, LLVM 22, bpf-linker, and with `for_tests`
/// the tools the integration tests drive (ip, nft, iptables, perf, bpftrace, a headless
/// browser to load the doctor's HTML report, and Prometheus to scrape the exporter).
pub fn ensure(for_tests: bool) -> Result<()> {
    if !output("rustup", &["toolchain", "list"]).contains("nightly") {
        step(
            "installing the nightly toolchain",
            "rustup",
            &["toolchain", "install", "nightly", "--profile", "minimal"],
        )?;
    }
    // rust-src builds the eBPF crate; the tests also lint both crates (fmt, clippy).
    let mut components = vec![("nightly", "rust-src")];
    if for_tests {
        components.extend([
            ("nightly", "clippy"),
            ("stable", "clippy"),
            ("stable", "rustfmt"),
        ]);
    }
    for (toolchain, component) in components {
        let installed = output(
            "rustup",
            &["component", "list", "--toolchain", toolchain, "--installed"],
        );
        if !installed.lines().any(|l| l.starts_with(component)) {
            step(
                &format!("adding {component} to {toolchain}"),
                "rustup",
                &["component", "add", component, "--toolchain", toolchain],
            )?;
        }
    }
    let mut packages = vec!["llvm-22-dev"];
    if for_tests {
        packages.extend([
            "iproute2",
            "nftables",
            "iptables",
            "util-linux",
            "linux-perf",
            "bpftrace",
            "chromium",
            // A real Prometheus server and promtool for `netdoc export`'s tests.
            "prometheus",
            // The container image (`cargo xtask image`) and its test; runc runs containers
            // where crun cannot (hosts with hybrid cgroups).
            "podman",
            "runc",
        ]);
    }
    apt_install(&packages)?;
    if !output("bpf-linker", &["--version"]).contains(BPF_LINKER_VERSION) {
        let path = format!(
            "/usr/lib/{LLVM}/bin:{}",
            std::env::var("PATH").unwrap_or_default()
        );
        eprintln!("xtask setup: installing bpf-linker {BPF_LINKER_VERSION} (about a minute)");
        let status = Command::new(env!("CARGO"))
            .env("PATH", path)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                LLVM,
            ])
            .status()?;
        if !status.success() {
            bail!("installing bpf-linker failed");
        }
    }
    if for_tests {
        mount_tracefs();
    }
    Ok(())
}

/// Mounts tracefs where it is missing (tests and bpftrace use classic tracepoints). Failure is
/// ignored: netdoc itself explains a missing tracefs, and bpftrace says what it lacks.
fn mount_tracefs() {
    if is_root() && !std::path::Path::new("/sys/kernel/tracing/events").is_dir() {
        let _ = quiet_ok("mount", &["-t", "tracefs", "nodev", "/sys/kernel/tracing"]);
    }
}

/// What `cargo xtask bench` needs beside the build: bpftrace, which it measures netdoc against.
pub fn ensure_bench() -> Result<()> {
    apt_install(&["bpftrace"])?;
    mount_tracefs();
    Ok(())
}

/// What `cargo xtask vm` needs: QEMU, busybox for the guest, and the archive tools.
pub fn ensure_vm() -> Result<()> {
    apt_install(&[
        "qemu-system-x86",
        "busybox-static",
        "cpio",
        "xz-utils",
        "zstd",
        "binutils",
        "debian-archive-keyring",
    ])
}
