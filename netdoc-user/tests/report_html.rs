//! `netdoc doctor --replay FIXTURE --report OUT.html` needs neither root nor a kernel probe, so
//! the page is checked here as a browser reads it: headless Chromium (which `cargo xtask setup`
//! installs) must load it and show every finding and the NET_RX bars.
use std::{
    fs::{self, File},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const NETDOC: &str = env!("CARGO_BIN_EXE_netdoc");
/// A closed-port incident in namespace `blue`, NET_RX backlog load on CPU 1, a missing probe.
const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/doctor/incident.json"
);
/// A browser that has not printed the page by then has hung (it takes about a second).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

/// A directory of this test's own, removed however the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("netdoc-report-html-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Text as a browser serializes it back into markup (`--dump-dom`): only these are escaped.
fn as_dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Runs headless Chromium on `page` with `mode`'s flags and returns what it printed. Killed
/// with its helper processes (one process group) if it outlives [`BROWSER_TIMEOUT`].
fn chromium(browser: &Path, dir: &Path, mode: &[String], page: &Path) -> String {
    let (stdout, stderr) = (dir.join("browser.out"), dir.join("browser.err"));
    let mut child = Command::new(browser)
        // --no-sandbox: Chromium refuses to run as root with its sandbox, and the tests run as root.
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(mode)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).unwrap())
        .stderr(File::create(&stderr).unwrap())
        .process_group(0)
        .spawn()
        .expect("starting chromium");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            // SAFETY: kill has no memory preconditions; the group is our child's own.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "chromium did not finish within {BROWSER_TIMEOUT:?}: {}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {mode:?}: {status}: {}",
        fs::read_to_string(&stderr).unwrap_or_default()
    );
    fs::read_to_string(&stdout).unwrap()
}

#[test]
fn the_report_of_a_recording_is_a_page_a_browser_shows_whole() {
    let scratch = Scratch::new();
    let page = scratch.0.join("report.html");
    let run = Command::new(NETDOC)
        .args(["doctor", "--replay", FIXTURE, "--json", "--report"])
        .arg(&page)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "findings exit 1: {stderr}");
    let report: Value = serde_json::from_slice(&run.stdout).expect("one JSON report");
    let findings = report["findings"].as_array().unwrap();
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "net_rx_backlog_concentration",
            "udp_no_listener",
            "netdoc_blind_spot"
        ]
    );
    let titles: Vec<&str> = findings
        .iter()
        .map(|f| f["title"].as_str().unwrap())
        .collect();
    assert!(
        !scratch.0.join("report.html.netdoc-partial").exists(),
        "the partial page was renamed"
    );
    let html = fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<p class=\"verdict problems\">2 findings</p>"));

    // A page that cannot be written is an error (exit 2), not a report without it.
    let unwritable = Command::new(NETDOC)
        .args(["doctor", "--replay", FIXTURE, "--report"])
        .arg(scratch.0.join("no-such-dir/report.html"))
        .output()
        .unwrap();
    assert_eq!(unwritable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unwritable.stderr).contains("--report"));

    let Some(browser) = on_path("chromium") else {
        eprintln!("skipped: chromium not installed");
        return;
    };
    let dom = chromium(&browser, &scratch.0, &["--dump-dom".into()], &page);
    for title in &titles {
        assert!(
            dom.contains(&as_dom_text(title)),
            "the browser shows {title:?}"
        );
    }
    assert!(dom.contains("<svg class=\"share-bars\""), "{dom}");
    assert_eq!(dom.matches("class=\"bar\"").count(), 4, "one bar per CPU");
    for shown in [
        "What this run could not see",
        "tp_btf/tcp_retransmit_skb: no such BTF type",
        "__udp4_lib_rcv+0x4bc",
        "<td>red</td>",
    ] {
        assert!(dom.contains(shown), "the browser shows {shown:?}");
    }
    assert!(!dom.contains("<script"));

    let png = scratch.0.join("report.png");
    chromium(
        &browser,
        &scratch.0,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,2400".into(),
        ],
        &page,
    );
    let shot = fs::read(&png).expect("a screenshot");
    assert!(shot.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        shot.len() > 10_000,
        "a page with content: {} bytes",
        shot.len()
    );
}
