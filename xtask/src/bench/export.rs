//! What a week of scraping does to the exporter: `netdoc export` scraped back to back (at a 30 s
//! scrape interval, 20,160 scrapes are a week) while namespaces come and go, twice as many
//! alive as its label cap, each with conntrack in use and a drop, each living long enough for
//! its scans to see it; findings windows of 5 s. Resident memory after the first thousand
//! scrapes and at the end, and the scrape time, from one run.
use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use super::{median, namespaces::Made, spawn, stop};

/// One scrape in every this many makes a namespace and removes the oldest.
const CHURN_EVERY: usize = 25;
/// The label cap, and the namespaces alive at once: twice as many, so half are folded.
const CAP: usize = 10;
const ALIVE: usize = 2 * CAP;
/// Resident memory is taken as the baseline after this many scrapes (allocators warm up).
const WARM: usize = 1000;

pub fn run(netdoc: &Path, scrapes: usize, cpu: usize) -> Result<()> {
    let port = free_port()?;
    let out = std::env::temp_dir().join(format!("netdoc-bench-export-{}", std::process::id()));
    let listen = format!("127.0.0.1:{port}");
    let cap = CAP.to_string();
    let args = [
        "export",
        "--listen",
        &listen,
        "--max-namespaces",
        &cap,
        "--findings-window",
        "5s",
    ];
    let tracer = spawn(netdoc, &args, &out, cpu, "export")?;
    let pid = tracer.child.id();
    let mut times = Vec::with_capacity(scrapes);
    let (mut warm_kib, mut churned) = (0, 0);
    let mut alive = std::collections::VecDeque::new();
    let started = Instant::now();
    for i in 0..scrapes {
        if i % CHURN_EVERY == 0 {
            // Made with a drop in it; the oldest goes once ALIVE are up.
            alive.push_back(Made::new(1)?);
            if alive.len() > ALIVE {
                alive.pop_front();
            }
            churned += 1;
        }
        let started = Instant::now();
        let body = scrape(port)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        if !body.contains("netdoc_drops_total") {
            bail!("scrape {i} had no drops family");
        }
        if i + 1 == WARM {
            warm_kib = super::status_kib(pid, "VmRSS");
        }
    }
    drop(alive);
    let took = started.elapsed().as_secs_f64();
    let end_kib = super::status_kib(pid, "VmRSS");
    stop(tracer, &[0])?;
    let _ = std::fs::remove_file(&out);
    println!(
        "\nnetdoc export scraped {scrapes} times back to back in {took:.0} s ({:.1} days at a 30 s interval); {churned} namespaces made and removed, {ALIVE} alive at once under --max-namespaces {CAP}, each for about {:.1} s; findings windows of 5 s",
        scrapes as f64 * 30.0 / 86400.0,
        took * (ALIVE * CHURN_EVERY) as f64 / scrapes as f64
    );
    println!(
        "{:>12} {:>14} {:>14} {:>12} {:>14}",
        "scrape ms", "p99 scrape ms", "RSS MiB @1k", "RSS MiB end", "growth KiB"
    );
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{:>12.2} {:>14.2} {:>14.1} {:>12.1} {:>14}",
        median(&times, |t| *t),
        sorted[sorted.len() * 99 / 100],
        warm_kib as f64 / 1024.0,
        end_kib as f64 / 1024.0,
        end_kib as i64 - warm_kib as i64
    );
    Ok(())
}

/// `GET /metrics` over HTTP/1.0: the body.
fn scrape(port: u16) -> Result<String> {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).context("connecting to the exporter")?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    match reply.split_once("\r\n\r\n") {
        Some((head, body)) if head.lines().next().is_some_and(|l| l.contains(" 200 ")) => {
            Ok(body.to_string())
        }
        _ => bail!(
            "the exporter answered: {}",
            reply.lines().next().unwrap_or("")
        ),
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
