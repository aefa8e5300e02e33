//! Boots a kernel and initramfs under QEMU's software emulation (TCG): this host's /dev/kvm cannot
//! run stock kernels. The console goes to a log file or the terminal; results to a second port.
use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use super::guest::Results;

pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub cpus: u32,
    pub memory_mb: u32,
    pub timeout: Duration,
    /// Limit for reaching init: a guest whose /init has not reported by then is stopped, so a
    /// boot that hangs early costs minutes, not the whole `timeout`.
    pub init_timeout: Duration,
    /// Console log file; `None` shows the console on the terminal.
    pub console: Option<&'a Path>,
    pub results: &'a Path,
}

pub struct Outcome {
    pub results: Results,
    pub timed_out: bool,
    /// Stopped by `init_timeout`: the kernel never ran /init.
    pub stuck_before_init: bool,
    pub elapsed: Duration,
}

pub fn boot(b: &Boot) -> Result<Outcome> {
    let _ = fs::remove_file(b.results);
    let console = match b.console {
        Some(path) => format!("file:{}", path.display()),
        None => "stdio".to_string(),
    };
    let start = Instant::now();
    // One TCG thread for all vCPUs: with one thread per vCPU, the guest kernel's live code
    // patching (enabling a tracepoint's static key) raced and oopsed on an int3 in 6.12.
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=single", "-cpu", "max"])
        .args([
            "-smp",
            &b.cpus.to_string(),
            "-m",
            &format!("{}M", b.memory_mb),
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", &console])
        .args(["-serial", &format!("file:{}", b.results.display())])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        // Boot messages at the default level, so a boot that hangs shows where in the console
        // log; /init quietens the console once it runs.
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let mut timed_out = false;
    let mut stuck_before_init = false;
    let mut reached_init = false;
    // Bounded: the guest powers off by itself; the timeouts cover hangs and boot failures.
    while child.try_wait()?.is_none() {
        if !reached_init && start.elapsed() > b.init_timeout {
            reached_init = Results::parse(&fs::read_to_string(b.results).unwrap_or_default())
                .booted
                .is_some();
            stuck_before_init = !reached_init;
        }
        if stuck_before_init || start.elapsed() > b.timeout {
            timed_out = true;
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = fs::read_to_string(b.results).unwrap_or_default();
    Ok(Outcome {
        results: Results::parse(&text),
        timed_out,
        stuck_before_init,
        elapsed: start.elapsed(),
    })
}
