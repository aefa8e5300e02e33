//! `netdoc check` against the real kernel: its verdicts and exit codes for passing, failing,
//! untestable and malformed input, with reproducers that cause real drops in namespaces.
use std::process::Command;

use netdoc_user::output::{Reproducer, Verdict};

mod common;
use common::*;

/// `netdoc check --json`'s one line, as the schema's type.
fn check_report(out: &str) -> netdoc_user::output::CheckReport {
    match typed(out.trim_end()) {
        Output::Check(report) => report,
        other => panic!("not a check report: {other:?}"),
    }
}

/// Runs `netdoc check ARGS` and returns (exit code, stdout, stderr).
fn check(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(NETDOC)
        .arg("check")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A reproducer that sends `n` datagrams from namespace A to a closed port in B.
fn send_to_closed_port(pair: &Pair, n: usize) -> Vec<String> {
    let script = format!(
        "for i in $(seq {n}); do echo x > /dev/udp/{}/{CLOSED_PORT}; done",
        pair.ip_b
    );
    ["ip", "netns", "exec", &pair.a, "bash", "-c", &script]
        .map(String::from)
        .to_vec()
}

/// How a NO_SOCKET drop is named on this kernel (by function where kfree_skb has no reason).
fn no_socket_drops() -> &'static str {
    if kernel_has_drop_reasons() {
        "drops{reason=NO_SOCKET}"
    } else {
        "drops{location=__udp4_lib_rcv}"
    }
}

#[test]
fn a_reproducer_that_drops_fails_with_the_exact_count_as_evidence() {
    require_root!();
    let pair = Pair::new("k", 51);
    let reproducer = send_to_closed_port(&pair, N);
    let drops_zero = format!("{} == 0", no_socket_drops());
    let no_ports = format!("counter{{Udp.NoPorts}} == {N}");
    let mut args = vec![
        "--json",
        "--netns",
        &pair.b,
        "--expect",
        &drops_zero,
        "--expect",
        &no_ports,
        "--",
    ];
    args.extend(reproducer.iter().map(String::as_str));
    let (code, out, err) = check(&args);
    assert_eq!(code, 1, "fail: {out}{err}");
    let report = check_report(&out);
    assert_eq!(report.verdict, Verdict::Fail);
    assert_eq!(report.reproducer, Reproducer::Exited(0));
    let checks = &report.checks;
    assert_eq!(checks[0].verdict, Verdict::Fail);
    assert_eq!(
        checks[0].observed,
        Some(N as u64),
        "every drop counted, in B only"
    );
    assert_eq!(
        checks[1].verdict,
        Verdict::Pass,
        "the kernel's own counter agrees: {:?}",
        checks[1]
    );
    assert_nothing_left();
}

#[test]
fn a_clean_reproducer_passes_and_text_output_names_each_expectation() {
    require_root!();
    let (code, out, err) = check(&[
        "--expect",
        "retrans < 5",
        "--expect",
        "counter{TcpExt.TCPWqueueTooBig} == 0",
        "--",
        "true",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("netdoc check: PASS on kernel "), "{out}");
    assert!(out.contains("✓ retrans < 5  (observed "), "{out}");
    assert_nothing_left();
}

#[test]
fn a_reason_in_any_case_is_checked_under_its_canonical_name() {
    require_root!();
    if !kernel_has_drop_reasons() {
        return;
    }
    let (code, out, err) = check(&[
        "--expect",
        "drops{reason=skb_drop_reason_no_socket, location=__udp4_lib_rcv} == 0",
        "--",
        "true",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("✓ drops{reason=NO_SOCKET, location=__udp4_lib_rcv} == 0  (observed 0"),
        "{out}"
    );
    assert_nothing_left();
}

#[test]
fn the_small_sndbuf_close_scenario_delivers_every_byte() {
    require_root!();
    let (code, out, err) = check(&["--scenario", "sndbuf-close", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let report = check_report(&out);
    let facts = report.measured.scenario.expect("the scenario's facts");
    assert_eq!(
        facts.sent,
        4 << 20,
        "the whole buffer was accepted: {facts:?}"
    );
    assert_eq!(facts.received, facts.sent);
    let names: Vec<String> = report
        .checks
        .iter()
        .map(|c| c.expectation.to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n == "counter{TcpExt.TCPWqueueTooBig} == 0"),
        "{names:?}"
    );
    let left = run("ip", &["netns", "list"]);
    assert!(
        !left.contains("netdoc-check-"),
        "the scenario removed its namespaces: {left}"
    );
    assert_nothing_left();
}

#[test]
fn what_this_kernel_cannot_measure_is_untestable() {
    require_root!();
    // A counter older kernels had (4.14 removed prequeue), not a typo: untestable, and why on
    // stderr, which `git bisect run` shows.
    let (code, out, err) = check(&[
        "--expect",
        "counter{TcpExt.TCPPrequeued} == 0",
        "--",
        "true",
    ]);
    assert_eq!(code, 125, "{out}");
    assert!(
        out.contains("this kernel has no counter TcpExt.TCPPrequeued"),
        "{out}"
    );
    assert_eq!(
        err,
        "netdoc: untestable on this kernel: counter{TcpExt.TCPPrequeued} == 0: this kernel has no counter TcpExt.TCPPrequeued\n"
    );
    let (code, _, _) = check(&["--expect", "retrans < 5", "--", "sh", "-c", "exit 125"]);
    assert_eq!(code, 125, "a reproducer's 125 passes through");
    let (code, out, _) = check(&["--expect", "retrans < 5", "--", "sh", "-c", "exit 3"]);
    assert_eq!(code, 1, "a failing reproducer fails the check: {out}");
    assert!(out.contains("reproducer exited 3"), "{out}");
    assert_nothing_left();
}

#[test]
fn malformed_input_is_one_line_and_stops_a_bisect() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    for args in [
        &["--expect", "drops >> 1", "--", "true"][..],
        &["--expect", "drop == 0", "--", "true"],
        &["--expect", "retrans < 5"],
        &["--scenario", "sndbuf-close", "--", "true"],
        &["--expect-file", "/nonexistent", "--", "true"],
    ] {
        let (code, out, err) = check(args);
        assert_eq!(code, 128, "{args:?}: {out}{err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("netdoc: error: "), "{err}");
        assert!(out.is_empty(), "no verdict printed: {out}");
    }
    let (code, _, err) = check(&["--no-such-flag"]);
    assert_eq!(code, 128, "{err}");
    assert_nothing_left();
}

/// Whether a `sleep SECONDS` process is alive (not a zombie).
fn alive(seconds: &str) -> bool {
    let wanted = format!("sleep\0{seconds}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == wanted.as_bytes()))
}

/// A reproducer that forks leaves nothing behind: not on timeout, not when the check itself is
/// interrupted (which says so and exits 130, a code `git bisect run` stops on).
#[test]
fn a_forking_reproducer_leaves_no_process_behind() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    // Unique sleep lengths mark the reproducer's processes.
    let (a, b) = (
        format!("{}.31", std::process::id()),
        format!("{}.32", std::process::id()),
    );
    let script = format!("sleep {a} & sleep {b}");
    let (code, out, _) = check(&[
        "--timeout",
        "1s",
        "--expect",
        "retrans >= 0",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not finish within"), "{out}");
    assert!(
        !alive(&a) && !alive(&b),
        "timeout left the reproducer's children"
    );

    // Ctrl-C, a service stop and a dropped SSH session alike: the whole group goes and the
    // verdict netdoc has is printed.
    for (signal, name) in [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
    ] {
        let netdoc = Command::new(NETDOC)
            .args([
                "check",
                "--json",
                "--expect",
                "retrans >= 0",
                "--",
                "sh",
                "-c",
                &script,
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait (bounded) for the reproducer to run, then interrupt the check.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !alive(&b) {
            assert!(
                std::time::Instant::now() < deadline,
                "the reproducer never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: kill has no memory preconditions; the pid is our own child.
        unsafe { libc::kill(netdoc.id() as i32, signal) };
        let out = netdoc.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{name}");
        let report = check_report(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(report.verdict, Verdict::Interrupted, "{name}");
        assert_eq!(
            report.reproducer,
            Reproducer::Interrupted(name.to_string()),
            "{name}"
        );
        assert!(
            !alive(&a) && !alive(&b),
            "{name} left the reproducer's children"
        );
    }
    assert_nothing_left();
}

/// The reproducer deletes the `--netns` namespace: its counters are gone, so there is no
/// verdict; netdoc says so in one line and stops a bisect (never "the kernel lacks Udp.NoPorts").
#[test]
fn a_netns_the_reproducer_deletes_stops_the_check() {
    require_root!();
    /// Removes the namespace, if the test ends before its reproducer did.
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let ns = Netns(format!("ndt{}v", std::process::id()));
    for script in [
        format!("ip netns del {}", ns.0),
        // Deleted while the reproducer still runs: the check sees it go and ends.
        format!("ip netns del {} && sleep 5", ns.0),
    ] {
        run("ip", &["netns", "add", &ns.0]);
        let (code, out, err) = check(&[
            "--netns",
            &ns.0,
            "--expect",
            "counter{Udp.NoPorts} == 0",
            "--",
            // Not sh: the guests' busybox sh runs its own `ip` applet, which has no netns.
            "bash",
            "-c",
            &script,
        ]);
        assert_eq!(code, 128, "{script}: {out}{err}");
        assert!(out.is_empty(), "no verdict: {out}");
        assert_eq!(err.lines().count(), 1, "{script}: {err}");
        assert!(err.contains(&format!("{} ", ns.0)), "{err}");
        assert!(
            err.contains("went away") || err.contains("is gone"),
            "{err}"
        );
    }
    assert_nothing_left();
}
