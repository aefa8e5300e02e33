//! A hostile tenant: netdoc runs as root and shows names others chose. A namespace whose name
//! holds terminal escapes, a newline, HTML and shell metacharacters drops datagrams (at a
//! closed port, by a rule of an nft chain named as a command substitution, and at a full
//! socket of a process whose name holds escapes and a byte that is not UTF-8); what
//! `drops` and `doctor` show of it, on a terminal, piped, replayed and as an HTML page, holds
//! no raw control character, and every command its fixes suggest runs nothing but the tools
//! it names, with the name arriving as one word.
use std::{
    fs::File,
    io::Read as _,
    net::UdpSocket,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use netdoc_user::output::DoctorReport;

mod common;
use common::*;

const DATAGRAMS: usize = 40;

/// An nft chain whose name is a command substitution (nft itself takes no such name on its
/// command line; its JSON input does), dropping datagrams to [`FIREWALLED_PORT`].
const HOSTILE_CHAIN: &str = "c$(echo INJECTED-CHAIN>&2)";

/// The namespace's name: an OSC title change ended by BEL, a newline that would forge a
/// report line, a C1 CSI (U+009B) clearing the screen, markup, and a shell command
/// substitution with quotes around it. No space: it must be used as a name, not a placeholder.
fn hostile_name() -> String {
    format!(
        "ndt{}h\x1b]0;pwned\x07\nFAKE<b>&;$(echo${{IFS}}INJECTED>&2)`id`'\u{9b}2J",
        std::process::id()
    )
}

/// How netdoc shows that name to a person.
fn shown_name() -> String {
    format!(
        r"ndt{}h\x1b]0;pwned\x07\nFAKE<b>&;$(echo${{IFS}}INJECTED>&2)`id`'\u{{9b}}2J",
        std::process::id()
    )
}

/// The test process's own name while it runs, so that it owns a socket under it: an OSC title
/// change, a newline, a byte that is not UTF-8 and markup with a command substitution, in the
/// 15 bytes a process name holds.
const HOSTILE_COMM: &[u8] = b"\x1b]0;p\x07\n\xff<$(x)";
/// How netdoc shows it: escaped, the byte that is not UTF-8 as U+FFFD.
const SHOWN_COMM: &str = "\\x1b]0;p\\x07\\n\u{fffd}<$(x)";
/// The port of a socket there that is never read, its receive buffer the smallest.
const FULL_PORT: u16 = 5353;

struct Hostile {
    name: String,
    dir: PathBuf,
    /// Held open and never read: datagrams to it overflow its buffer.
    _full: UdpSocket,
    /// This process's name before the test.
    comm: Vec<u8>,
}

impl Hostile {
    fn new() -> Self {
        let name = hostile_name();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let dir = std::env::temp_dir().join(format!("netdoc-hostile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let udp_dport = serde_json::json!({"payload": {"protocol": "udp", "field": "dport"}});
        let ruleset = serde_json::json!({"nftables": [
            {"add": {"table": {"family": "inet", "name": "t"}}},
            {"add": {"chain": {"family": "inet", "table": "t", "name": HOSTILE_CHAIN,
                "type": "filter", "hook": "input", "prio": 0, "policy": "accept"}}},
            {"add": {"rule": {"family": "inet", "table": "t", "chain": HOSTILE_CHAIN, "expr": [
                {"match": {"op": "==", "left": udp_dport, "right": FIREWALLED_PORT}},
                {"counter": null},
                {"drop": null}]}}}
        ]});
        let file = dir.join("ruleset.json");
        std::fs::write(&file, ruleset.to_string()).unwrap();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &name,
                "nft",
                "-j",
                "-f",
                file.to_str().unwrap(),
            ],
        );
        let ns = File::open(Path::new("/run/netns").join(&name)).unwrap();
        let full = std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace file.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            UdpSocket::bind(("127.0.0.1", FULL_PORT)).unwrap()
        })
        .join()
        .unwrap();
        set_socket_option(&full, libc::SO_RCVBUF, 1);
        let comm = std::fs::read("/proc/self/comm").unwrap();
        std::fs::write("/proc/self/comm", HOSTILE_COMM).unwrap();
        Self {
            name,
            dir,
            _full: full,
            comm,
        }
    }

    /// Packets the hostile chain's rule counted.
    fn firewalled(&self) -> u64 {
        let ruleset = run(
            "ip",
            &["netns", "exec", &self.name, "nft", "list", "ruleset"],
        );
        let after = ruleset.split("counter packets ").nth(1).unwrap();
        after.split_whitespace().next().unwrap().parse().unwrap()
    }

    fn inode(&self) -> String {
        let file = Path::new("/run/netns").join(&self.name);
        std::fs::metadata(file).unwrap().ino().to_string()
    }

    /// Datagrams to a closed port and to the hostile chain's on the namespace's loopback, and
    /// waits (bounded) until its `Udp.NoPorts` and the rule counted them all.
    fn drop_datagrams(&self) {
        let before = ns_counter(&self.name, "snmp", "Udp", "NoPorts");
        let overflowed = ns_counter(&self.name, "snmp", "Udp", "RcvbufErrors");
        let firewalled = self.firewalled();
        let ns = File::open(Path::new("/run/netns").join(&self.name)).unwrap();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an open namespace file.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0);
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            for port in [CLOSED_PORT, FIREWALLED_PORT] {
                for i in 0..DATAGRAMS {
                    // A sender may hear of its datagram's drop (EPERM): that is the drop.
                    let _ = sock.send_to(format!("hostile {i}").as_bytes(), ("127.0.0.1", port));
                }
            }
            for _ in 0..300 {
                sock.send_to(&[0; 1000], ("127.0.0.1", FULL_PORT)).unwrap();
            }
        })
        .join()
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while ns_counter(&self.name, "snmp", "Udp", "NoPorts") < before + DATAGRAMS as u64
            || self.firewalled() < firewalled + DATAGRAMS as u64
            || ns_counter(&self.name, "snmp", "Udp", "RcvbufErrors") == overflowed
        {
            assert!(Instant::now() < deadline, "the datagrams were not dropped");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/self/comm", &self.comm);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs netdoc with `args` on a terminal (script's pty: the live views draw only there),
/// causes `incident` once netdoc says it attached, and returns its exit code and everything
/// it wrote to the terminal, stdout and stderr alike, once it exits.
fn on_a_terminal(args: &[&str], incident: impl FnOnce()) -> (Option<i32>, Vec<u8>) {
    let line = std::iter::once(NETDOC)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new("script")
        .args(["-qefc", &line, "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, chunks) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("attached") {
        match chunks.recv_timeout(Duration::from_secs(60)) {
            Ok(chunk) => seen.extend(chunk),
            Err(e) => panic!(
                "netdoc did not attach ({e}): {}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    incident();
    // The run ends by its --duration; the thread ends at end of file.
    while let Ok(chunk) = chunks.recv_timeout(Duration::from_secs(60)) {
        seen.extend(chunk);
    }
    (child.wait().unwrap().code(), seen)
}

/// Control characters in `bytes` other than netdoc's own redraw (clear screen, cursor home)
/// and line ends (`\r\n` on a terminal).
fn raw_controls(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes)
        .replace("\x1b[2J\x1b[H", "")
        .replace("\r\n", "\n");
    text.char_indices()
        .filter(|(_, c)| c.is_control() && *c != '\n')
        .map(|(i, c)| {
            let from = (0..=i.saturating_sub(40))
                .rev()
                .find(|&j| text.is_char_boundary(j))
                .unwrap_or(0);
            format!("{c:?} at {i}, after {:?}", &text[from..i])
        })
        .collect()
}

/// The commands in a fix: each between backticks, the shell's quoting inside honoured (a
/// backtick in a quoted name is part of it).
fn commands(fix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut chars = fix.chars();
    while let Some(c) = chars.next() {
        if c != '`' {
            continue;
        }
        let mut command = String::new();
        let mut next = || {
            chars
                .next()
                .unwrap_or_else(|| panic!("a command without its end: {fix:?}"))
        };
        loop {
            match next() {
                '`' => break,
                '\\' => {
                    command.push('\\');
                    command.push(next());
                }
                '\'' => {
                    let ansi = command.ends_with('$');
                    command.push('\'');
                    loop {
                        let c = next();
                        command.push(c);
                        match c {
                            '\\' if ansi => command.push(next()),
                            '\'' => break,
                            _ => {}
                        }
                    }
                }
                c => command.push(c),
            }
        }
        found.push(command);
    }
    found
}

/// The tools fixes may run, each faked by a script that only writes down its arguments.
const TOOLS: [&str; 10] = [
    "ethtool",
    "ip",
    "nsenter",
    "nft",
    "ss",
    "sysctl",
    "grep",
    "iptables-save",
    "iptables-legacy",
    "ip6tables-legacy",
];

/// Runs `command` with bash and nothing but the fake tools on PATH: the argument lists they
/// were called with, after checking bash parsed it (`bash -n`), said nothing and succeeded.
fn run_faked(command: &str, dir: &Path) -> Vec<Vec<String>> {
    let fakes = dir.join("fakes");
    let calls = dir.join("calls");
    let _ = std::fs::remove_dir_all(&calls);
    std::fs::create_dir_all(&calls).unwrap();
    if !fakes.exists() {
        std::fs::create_dir_all(&fakes).unwrap();
        for tool in TOOLS {
            let script = format!(
                "#!/bin/sh\nprintf '%s\\0' \"${{0##*/}}\" \"$@\" > \"$(/usr/bin/mktemp {}/call.XXXXXX)\"\n",
                calls.display()
            );
            let path = fakes.join(tool);
            std::fs::write(&path, script).unwrap();
            run("chmod", &["755", path.to_str().unwrap()]);
        }
    }
    let checked = Command::new("/bin/bash")
        .args(["-n", "-c", command])
        .output()
        .unwrap();
    assert!(
        checked.status.success() && checked.stderr.is_empty(),
        "bash -n {command:?}: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let ran = Command::new("/bin/bash")
        .args(["-c", command])
        .env_clear()
        .env("PATH", &fakes)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ran.status.success() && ran.stdout.is_empty() && ran.stderr.is_empty(),
        "{command:?} ran more than the fakes: {:?}, stdout {:?}, stderr {:?}",
        ran.status,
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    std::fs::read_dir(&calls)
        .unwrap()
        .map(|e| {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            let text = String::from_utf8(bytes).unwrap();
            text.strip_suffix('\0')
                .unwrap()
                .split('\0')
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn a_hostile_namespace_name_reaches_no_terminal_page_or_shell_raw() {
    require_root!();
    if same_on_every_kernel() {
        return;
    }
    let ns = Hostile::new();
    let inode = ns.inode();
    let shown = shown_name();

    // drops, on a terminal: the live view and the summary.
    let (code, drops) = on_a_terminal(&["drops", "--duration", "4s", "--netns", &inode], || {
        ns.drop_datagrams()
    });
    assert_eq!(code, Some(0));
    assert_eq!(raw_controls(&drops), Vec::<String>::new());
    let drops = String::from_utf8_lossy(&drops);
    assert!(drops.contains(&shown), "{drops}");
    let owner = format!("{SHOWN_COMM}[{}]", std::process::id());
    assert!(drops.contains(&owner), "{drops}");

    // doctor, on a terminal: the live top findings and the report; the recording kept.
    let recording = ns.dir.join("incident.json");
    let (code, doctor) = on_a_terminal(
        &[
            "doctor",
            "--duration",
            "5s",
            "--interval",
            "500ms",
            "--netns",
            &inode,
            "--record",
            recording.to_str().unwrap(),
        ],
        || ns.drop_datagrams(),
    );
    assert_eq!(code, Some(1), "findings");
    assert_eq!(raw_controls(&doctor), Vec::<String>::new());
    let doctor = String::from_utf8_lossy(&doctor);
    assert!(
        doctor.contains(&format!("(namespace {shown}): {DATAGRAMS} datagrams were sent to UDP port {CLOSED_PORT}, where nothing listens")),
        "{doctor}"
    );
    let full_socket = format!("the receive buffer of 127.0.0.1:{FULL_PORT} ({owner}) was full");
    assert!(doctor.contains(&full_socket), "{doctor}");

    // The recording replayed, piped: the report, and the page.
    let page = ns.dir.join("report.html");
    let replayed = Command::new(NETDOC)
        .args(["doctor", "--replay", recording.to_str().unwrap()])
        .args(["--report", page.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(replayed.status.code(), Some(1), "findings");
    assert_eq!(raw_controls(&replayed.stdout), Vec::<String>::new());
    assert!(replayed.stderr.is_empty());
    let html = std::fs::read(&page).unwrap();
    assert_eq!(raw_controls(&html), Vec::<String>::new());
    let escaped = shown
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let escaped = escaped.replace('\'', "&#39;");
    assert!(String::from_utf8_lossy(&html).contains(&escaped));

    // Every command of every fix: one bash word for the name, the fakes alone run.
    let json = Command::new(NETDOC)
        .args(["doctor", "--json", "--replay", recording.to_str().unwrap()])
        .output()
        .unwrap();
    let report: DoctorReport = match as_output(&json_line(&json.stdout)) {
        Output::Doctor(r) => r,
        other => panic!("not a doctor report: {other:?}"),
    };
    let listener = report
        .findings
        .iter()
        .find(|f| f.id == "udp_no_listener")
        .expect("udp_no_listener");
    assert_eq!(
        listener.scope.name, ns.name,
        "the data keeps the name as it is"
    );
    // The process's name as the data keeps it: decoded lossily, not lost.
    let comm = format!(
        "127.0.0.1:{FULL_PORT} ({}[{}])",
        String::from_utf8_lossy(HOSTILE_COMM),
        std::process::id()
    );
    let full = report
        .findings
        .iter()
        .find(|f| f.id == "socket_receive_buffer_full")
        .expect("socket_receive_buffer_full");
    assert!(full.title.contains(&comm), "{}", full.title);
    // The chain's name cannot be written into an nft command: the fix names it in words.
    let firewall = report
        .findings
        .iter()
        .find(|f| f.id == "firewall_drop")
        .expect("firewall_drop");
    let rule = format!("the rule: inet t/{HOSTILE_CHAIN} handle ");
    assert!(firewall.fix[0].starts_with(&rule), "{:?}", firewall.fix);
    assert!(
        firewall
            .fix
            .iter()
            .flat_map(|fix| commands(fix))
            .all(|c| !c.contains("INJECTED-CHAIN")),
        "{:?}",
        firewall.fix
    );
    let mut entered = 0;
    for f in &report.findings {
        for command in f.fix.iter().flat_map(|fix| commands(fix)) {
            for call in run_faked(&command, &ns.dir) {
                assert!(
                    TOOLS.contains(&call[0].as_str()),
                    "{command:?} ran {call:?}"
                );
                if call.len() > 3 && call[..3] == ["ip", "netns", "exec"] {
                    assert_eq!(call[3], ns.name, "{command:?}");
                    entered += 1;
                }
            }
        }
    }
    assert!(entered > 0, "no command entered the namespace: {report:#?}");
    assert_nothing_left();
}

fn json_line(stdout: &[u8]) -> serde_json::Value {
    let text = String::from_utf8_lossy(stdout);
    json(text.lines().last().expect("a report line"))
}
