//! Bad input, as a hostile but fair user gives it: every invocation ends with its exit code and
//! one line on stderr saying what is wrong, never a panic, never a run that ignores it. Run as
//! root, so that each one reaches the check it is about (not the privilege check).
use std::{ffi::OsString, os::unix::ffi::OsStringExt as _, process::Command};

mod common;
use common::*;

/// clap's usage errors (and ours about values clap cannot check).
const USAGE: i32 = 2;
/// Input a command checks itself: a name, a file, a namespace, a size.
const REFUSED: i32 = 1;
/// `netdoc check`'s usage errors, which stop `git bisect run`.
const CHECK_USAGE: i32 = 128;

fn corpus() -> Vec<(Vec<OsString>, i32, &'static str)> {
    let s = |args: &[&str]| args.iter().map(OsString::from).collect::<Vec<_>>();
    let not_utf8 = || OsString::from_vec(vec![0xff, 0xfe]);
    let mut all = vec![
        // drops
        (s(&["drops", "--duration", "-1"]), USAGE, "positive"),
        (s(&["drops", "--duration", "0"]), USAGE, "longer than zero"),
        (s(&["drops", "--duration", "5x"]), USAGE, "not a duration"),
        (s(&["drops", "--duration", "abc"]), USAGE, "not a duration"),
        (
            s(&["drops", "--duration", "99999999999999999999s"]),
            USAGE,
            "duration",
        ),
        (
            s(&["drops", "--duration", "18446744073709551615h"]),
            USAGE,
            "duration",
        ),
        (s(&["drops", "--duration", ""]), USAGE, "duration"),
        (s(&["drops", "--interval", "0"]), USAGE, "longer than zero"),
        (s(&["drops", "--interval", "-5s"]), USAGE, "positive"),
        (s(&["drops", "--pages", "0"]), REFUSED, "--pages 0"),
        (s(&["drops", "--pages", "3"]), REFUSED, "power of two"),
        (
            s(&["drops", "--pages", "1048576"]),
            REFUSED,
            "power of two from 1 to",
        ),
        (s(&["drops", "--reason", ""]), REFUSED, "--reason"),
        (s(&["drops", "--reason", ","]), REFUSED, "--reason"),
        (s(&["drops", "--netns", ""]), REFUSED, "--netns: empty"),
        (
            s(&["drops", "--netns", "/proc/self/status"]),
            REFUSED,
            "not a network namespace",
        ),
        (
            s(&["drops", "--netns", "/proc/self/ns/pid"]),
            REFUSED,
            "not a network namespace",
        ),
        (
            s(&["drops", "--netns", "4294967295"]),
            REFUSED,
            "no namespace with this inode",
        ),
        (
            s(&["drops", "--netns", "no-such-netns-here"]),
            REFUSED,
            "--netns no-such-netns-here",
        ),
        (
            s(&["drops", "--netns", "/nonexistent/ns"]),
            REFUSED,
            "--netns /nonexistent/ns",
        ),
        (
            s(&["drops", "--container", "f00dfeedf00dfeed"]),
            REFUSED,
            "--container f00dfeedf00dfeed: no network namespace",
        ),
        (
            s(&["drops", "--pod", "no-such/pod"]),
            REFUSED,
            "--pod no-such/pod: no network namespace",
        ),
        (
            s(&["drops", "--netns", "x", "--pod", "y"]),
            USAGE,
            "cannot be used with",
        ),
        (
            s(&["conntrack", "--container", "f00dfeedf00dfeed"]),
            REFUSED,
            "--container",
        ),
        (s(&["drops", "--proto", "300"]), USAGE, "from 0 to 255"),
        (s(&["drops", "--proto", "nope"]), USAGE, "unknown protocol"),
        (s(&["drops", "--port", "70000"]), USAGE, "--port"),
        (s(&["drops", "--port", "-1"]), USAGE, "-1"),
        (s(&["drops", "--addr", "999.1.1.1"]), USAGE, "--addr"),
        (s(&["drops", "--addr", "nope"]), USAGE, "--addr"),
        (s(&["drops", "--hook", "kprobe"]), USAGE, "possible values"),
        (s(&["drops", "--top", "x"]), USAGE, "--top"),
        (s(&["drops", "--nosuch"]), USAGE, "--nosuch"),
        (
            s(&["--btf", "/nonexistent", "drops"]),
            REFUSED,
            "--btf /nonexistent",
        ),
        (
            s(&["--btf", "/proc/self/status", "drops"]),
            REFUSED,
            "--btf /proc/self/status",
        ),
        (s(&["drops", "extra"]), USAGE, "extra"),
        // retrans
        (s(&["retrans", "--duration", "-1"]), USAGE, "positive"),
        (s(&["retrans", "--pages", "3"]), REFUSED, "power of two"),
        (s(&["retrans", "--interval", "x"]), USAGE, "not a duration"),
        (s(&["retrans", "--nosuch"]), USAGE, "--nosuch"),
        // conntrack
        (
            s(&["conntrack", "--netns", "/proc/self/status"]),
            REFUSED,
            "not a network namespace",
        ),
        (
            s(&["conntrack", "--netns", "no-such-netns-here"]),
            REFUSED,
            "--netns",
        ),
        (
            s(&["conntrack", "--duration", "0"]),
            USAGE,
            "longer than zero",
        ),
        (
            s(&["conntrack", "--interval", "x"]),
            USAGE,
            "not a duration",
        ),
        (s(&["conntrack", "extra"]), USAGE, "extra"),
        // softirq and irq
        (
            s(&["softirq", "--vector", "nope"]),
            USAGE,
            "possible values",
        ),
        (
            s(&["softirq", "--svg", "/nonexistent/dir/x.svg"]),
            REFUSED,
            "--svg",
        ),
        (s(&["softirq", "--duration", "-1"]), USAGE, "positive"),
        (s(&["softirq", "--width", "x"]), USAGE, "--width"),
        (
            s(&["softirq", "--interval", "0"]),
            USAGE,
            "longer than zero",
        ),
        (s(&["irq", "--duration", "0"]), USAGE, "longer than zero"),
        (s(&["irq", "--duration", "-1"]), USAGE, "positive"),
        (s(&["irq", "extra"]), USAGE, "extra"),
        // probes and the command line itself
        (s(&["probes", "extra"]), USAGE, "extra"),
        (s(&["probes", "--nosuch"]), USAGE, "--nosuch"),
        (s(&["nosuch"]), USAGE, "nosuch"),
        (s(&[]), USAGE, "subcommand"),
        // check: every usage error stops a bisect
        (
            s(&["check", "--expect", "drops >> 1", "--", "true"]),
            CHECK_USAGE,
            "drops >> 1",
        ),
        (
            s(&["check", "--expect", "drop == 0", "--", "true"]),
            CHECK_USAGE,
            "drop == 0",
        ),
        (
            s(&["check", "--expect", "retrans < 5"]),
            CHECK_USAGE,
            "nothing to run",
        ),
        (
            s(&["check", "--scenario", "sndbuf-close", "--", "true"]),
            CHECK_USAGE,
            "only one",
        ),
        (
            s(&["check", "--expect-file", "/nonexistent", "--", "true"]),
            CHECK_USAGE,
            "/nonexistent",
        ),
        (
            s(&[
                "check",
                "--netns",
                "/proc/self/status",
                "--expect",
                "retrans < 5",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "not a network namespace",
        ),
        (
            s(&[
                "check",
                "--netns",
                "no-such-netns-here",
                "--expect",
                "retrans < 5",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "--netns",
        ),
        (s(&["check", "--duration", "1s"]), CHECK_USAGE, "--expect"),
        (
            s(&[
                "check",
                "--timeout",
                "0",
                "--expect",
                "retrans < 5",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "longer than zero",
        ),
        (
            s(&["check", "--scenario", "nope"]),
            CHECK_USAGE,
            "possible values",
        ),
        (
            s(&["check", "--duration", "-1", "--expect", "retrans < 5"]),
            CHECK_USAGE,
            "positive",
        ),
    ];
    // A counter or conntrack column no kernel has is a typo, named with the one meant.
    all.push((
        s(&[
            "check",
            "--expect",
            "counter{Udp.NoPortz} == 0",
            "--",
            "true",
        ]),
        CHECK_USAGE,
        "no kernel netdoc knows has a counter Udp.NoPortz (did you mean Udp.NoPorts?)",
    ));
    all.push((
        s(&[
            "check",
            "--expect",
            "counter{Bogus.Thing} > 1",
            "--",
            "true",
        ]),
        CHECK_USAGE,
        "counter Bogus.Thing",
    ));
    all.push((
        s(&[
            "check",
            "--expect",
            "conntrack.insert_faild == 0",
            "--",
            "true",
        ]),
        CHECK_USAGE,
        "conntrack column insert_faild (did you mean insert_failed?)",
    ));
    all.push((
        vec![
            OsString::from("drops"),
            OsString::from("--reason"),
            not_utf8(),
        ],
        USAGE,
        "UTF-8",
    ));
    all.push((
        vec![
            OsString::from("check"),
            OsString::from("--expect"),
            not_utf8(),
        ],
        CHECK_USAGE,
        "UTF-8",
    ));
    // Contradictory or degenerate flags, refused before anything runs.
    let recording = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doctor/incident.json"
    );
    let same = std::env::temp_dir().join(format!("netdoc-inputs-{}.out", std::process::id()));
    let same = same.to_str().unwrap();
    all.extend([
        (
            s(&["doctor", "--replay", recording, "--netns", "host"]),
            USAGE,
            "cannot be used with",
        ),
        (
            s(&["doctor", "--record", same, "--report", same]),
            USAGE,
            "are the same file",
        ),
        (
            s(&["doctor", "--replay", recording, "--report", recording]),
            USAGE,
            "are the same file",
        ),
        (
            s(&[
                "doctor",
                "--record",
                "/tmp/./netdoc-x.json",
                "--report",
                "/tmp/netdoc-x.json",
            ]),
            USAGE,
            "are the same file",
        ),
        (
            s(&["doctor", "--record", "/tmp"]),
            USAGE,
            "'/tmp' is a directory",
        ),
        (
            s(&["doctor", "--report", "/tmp/"]),
            USAGE,
            "'/tmp/' is a directory",
        ),
        (s(&["drops", "--interval", "1ns"]), USAGE, "at least 100ms"),
        (
            s(&["doctor", "--interval", "99ms"]),
            USAGE,
            "at least 100ms",
        ),
        (
            s(&[
                "check",
                "--expect",
                "drops{reason=NO_SOCKET,reason=NO_SOCKET} == 0",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "label reason is given twice",
        ),
        (
            s(&[
                "check",
                "--expect",
                "drops == 0\nretrans == 0",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "an expectation is one line",
        ),
    ]);
    // Recordings no run makes: each refused in one line, never reported on.
    let dir = std::env::temp_dir().join(format!("netdoc-inputs-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let real = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doctor/veth-flood-6.18.json"
    ))
    .unwrap();
    let duration = real.split("\"duration_s\":").nth(1).unwrap();
    let duration = format!(
        "\"duration_s\":{}",
        &duration[..duration.find(',').unwrap()]
    );
    for (name, text, says) in [
        (
            "negative.json",
            real.replacen(&duration, "\"duration_s\":-1", 1),
            "duration_s is -1, and a recording holds no negative number",
        ),
        (
            "instant.json",
            real.replacen(&duration, "\"duration_s\":0", 1),
            "duration_s is 0, and a run lasts",
        ),
        (
            "cpu.json",
            real.replacen("\"cpu\":0", "\"cpu\":4294967295", 1),
            "cpu is 4294967295, past any CPU a kernel has",
        ),
        (
            "large.json",
            " ".repeat(2 * 1024 * 1024),
            "larger than 1 MiB",
        ),
    ] {
        assert_ne!(text, real, "{name}");
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_string();
        all.push((
            s(&["doctor", "--replay", &path, "--max-recording-mib", "1"]),
            2,
            says,
        ));
    }
    all.push((
        s(&["doctor", "--max-recording-mib", "1"]),
        USAGE,
        "--replay",
    ));
    if kernel_has_drop_reasons() {
        // Any case is a reason's name; a typo names the nearest one.
        all.push((
            s(&[
                "check",
                "--expect",
                "drops{reason=no_sokcet} == 0",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "(did you mean NO_SOCKET?)",
        ));
        // A typo in a reason name is an error, not an untestable kernel.
        all.push((
            s(&["drops", "--reason", "NO_SOKET"]),
            REFUSED,
            "unknown drop reason",
        ));
        all.push((
            s(&[
                "check",
                "--expect",
                "drops{reason=NO_SOKET} == 0",
                "--",
                "true",
            ]),
            CHECK_USAGE,
            "no drop reason NO_SOKET",
        ));
    }
    all
}

#[test]
fn every_bad_input_is_one_line_and_its_exit_code() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let corpus = corpus();
    assert!(corpus.len() >= 60, "{} invocations", corpus.len());
    for (args, code, says) in corpus {
        let out = Command::new(NETDOC).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let shown = format!("{args:?}: exit {:?}, stderr {err:?}", out.status.code());
        assert_eq!(out.status.code(), Some(code), "{shown}");
        assert_eq!(err.lines().count(), 1, "{shown}");
        assert!(err.starts_with("netdoc: error: "), "{shown}");
        assert!(err.contains(says), "expected {says:?}: {shown}");
        assert!(out.stdout.is_empty(), "{shown}");
    }
    assert_nothing_left();
}

/// What an output path is, to tell it was left as it was: its type, device numbers and a
/// symlink's target.
fn what_is(path: &std::path::Path) -> String {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let m = std::fs::symlink_metadata(path).unwrap();
    let t = m.file_type();
    match () {
        _ if t.is_symlink() => format!("symlink to {:?}", std::fs::read_link(path).unwrap()),
        _ if t.is_char_device() => format!("char device {:x}", m.rdev()),
        _ if t.is_fifo() => "fifo".into(),
        _ if t.is_dir() => "directory".into(),
        _ => format!("{} bytes, mode {:o}", m.len(), m.mode()),
    }
}

/// An output file is renamed into place: over anything but a regular file that would replace
/// it (`/dev/null` made a regular file, the `/dev/stdout` symlink gone). Each is refused before
/// the run, with its exit code and one line, and left as it was. The devices and the symlink
/// are made in a directory of the test's own: the host's /dev is never named.
#[test]
fn output_files_that_are_not_regular_files_are_refused_and_left_as_they_were() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("netdoc-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let at = |name: &str| dir.join(name).to_str().unwrap().to_string();
    run("mknod", &[&at("null"), "c", "1", "3"]);
    run("mknod", &[&at("full"), "c", "1", "7"]);
    run("mkfifo", &[&at("fifo")]);
    std::os::unix::fs::symlink("/proc/self/fd/1", at("stdout")).unwrap();
    std::os::unix::fs::symlink(at("nothing"), at("dangling")).unwrap();
    let recording = at("recording.json");
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/doctor/incident.json"
    );
    std::fs::copy(fixture, &recording).unwrap();
    let before: Vec<(String, String)> = ["null", "full", "fifo", "stdout", "dangling"]
        .iter()
        .map(|n| (n.to_string(), what_is(&dir.join(n))))
        .chain([(
            "recording.json".to_string(),
            what_is(&dir.join("recording.json")),
        )])
        .collect();
    // The doctor's every error is "could not examine" (2).
    const DOCTOR: i32 = 2;
    const RENAMED: &str = "not a regular file: the file is written whole beside it and renamed into place, which would replace it";
    let cases: Vec<(Vec<String>, i32, String)> = vec![
        (
            vec!["doctor".into(), "--record".into(), at("null")],
            DOCTOR,
            format!("--record {}: a character device, {RENAMED}", at("null")),
        ),
        (
            vec!["doctor".into(), "--report".into(), at("stdout")],
            DOCTOR,
            // Its stdout, as netdoc sees it, is the test's pipe.
            format!("--report {}: a fifo, {RENAMED}", at("stdout")),
        ),
        (
            vec!["doctor".into(), "--record".into(), at("full")],
            DOCTOR,
            format!("--record {}: a character device", at("full")),
        ),
        (
            vec!["softirq".into(), "--svg".into(), at("full")],
            REFUSED,
            format!("--svg {}: a character device, {RENAMED}", at("full")),
        ),
        (
            vec!["softirq".into(), "--svg".into(), at("dangling")],
            REFUSED,
            format!("--svg {}: a symlink to nothing", at("dangling")),
        ),
        (
            vec![
                "doctor".into(),
                "--replay".into(),
                recording.clone(),
                "--report".into(),
                at("fifo"),
            ],
            DOCTOR,
            format!("--report {}: a fifo, {RENAMED}", at("fifo")),
        ),
    ];
    for (args, code, says) in cases {
        let out = Command::new(NETDOC).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let shown = format!("{args:?}: exit {:?}, stderr {err:?}", out.status.code());
        assert_eq!(out.status.code(), Some(code), "{shown}");
        assert_eq!(err.lines().count(), 1, "{shown}");
        assert!(err.starts_with("netdoc: error: "), "{shown}");
        assert!(err.contains(&says), "expected {says:?}: {shown}");
        assert!(out.stdout.is_empty(), "{shown}");
        for (name, was) in &before {
            assert_eq!(&what_is(&dir.join(name)), was, "{name} after {shown}");
        }
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "dangling",
                "fifo",
                "full",
                "null",
                "recording.json",
                "stdout"
            ],
            "{shown}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert_nothing_left();
}
