//! The one live driver: it owns the refresh interval, `--duration`, SIGINT/SIGTERM/SIGHUP, a
//! closed stdout, detaching and the final drain. Commands only say what a batch of records and
//! a tick mean to them ([`View`]), and write their summary through [`Stdout`] afterwards.
use std::{future::Future, io, time::Duration};

use anyhow::{Context as _, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{Session, stream::Records};

/// What a command does with the session's records and ticks.
pub trait View {
    /// A batch of decoded records from one stream.
    fn records(&mut self, session: &Session, batch: Records, out: &mut Stdout) -> Result<()>;
    /// Every interval: redraw a live view, take a sample.
    fn tick(&mut self, session: &Session, out: &mut Stdout) -> Result<()>;
    /// A scrape from outside the run ([`serve`]): answered with the session as it is now.
    /// The session is mutable so that the view may forget what the kernel no longer needs.
    fn scrape(&mut self, _session: &mut Session, _scrape: Scrape) {}
}

/// A request for the view's figures now (a metrics scrape), or only whether the driver
/// answers (a health check), with where to send the answer.
pub struct Scrape {
    pub asked: Asked,
    pub reply: tokio::sync::oneshot::Sender<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked {
    /// The metrics; OpenMetrics when the scraper accepts it.
    Metrics { openmetrics: bool },
    /// Only an answer: the driver is alive.
    Health,
}

/// A view with nothing live: records are not expected and ticks do nothing.
pub struct Quiet;

impl View for Quiet {
    fn records(&mut self, _: &Session, _: Records, _: &mut Stdout) -> Result<()> {
        Ok(())
    }
    fn tick(&mut self, _: &Session, _: &mut Stdout) -> Result<()> {
        Ok(())
    }
}

/// The signals that end a run, installed before anything is attached so that a signal at any
/// later point detaches cleanly and still prints the summary. SIGHUP is a dropped SSH session.
pub struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        let on = |k| signal(k).context("installing a signal handler");
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// Waits for the first of them; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// stdout for a run: once a write finds it closed (a pager quit, `| head`), it stays closed and
/// the summary goes to stderr instead.
pub struct Stdout {
    closed: bool,
}

impl Stdout {
    pub fn new() -> Self {
        Self { closed: false }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Writes to stdout. A closed pipe ends the run quietly (an error the driver recognises);
    /// any other error (a full disk, a stdout closed from the start) is an error.
    pub fn write(&mut self, text: &str) -> io::Result<()> {
        if self.closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        crate::stdio::write_stdout(text.as_bytes()).inspect_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.closed = true;
            }
        })
    }

    /// `text` and a newline.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        self.write(&format!("{text}\n"))
    }

    /// The closing text: to stdout, or to stderr when stdout has gone away.
    pub fn finish(&mut self, text: &str) -> Result<()> {
        if !self.closed {
            match self.write(text) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => return Err(e.into()),
            }
        }
        crate::stdio::write_stderr(text.as_bytes()).context("writing the summary to stderr")
    }
}

const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// When a run ends by itself.
pub struct Schedule {
    pub interval: Duration,
    pub duration: Option<Duration>,
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `--duration` elapsed.
    Deadline,
    /// The awaited work (a reproducer) finished.
    Done,
    Signal(&'static str),
    StdoutClosed,
    /// The namespace the run was about went away.
    NamespaceGone(String),
}

/// How a run went: why it ended, what the awaited work returned (when it finished), and
/// stdout for the summary.
pub struct Ended<T> {
    pub ending: Ending,
    pub value: Option<T>,
    pub out: Stdout,
}

/// Runs `view` over the session until `schedule`'s duration, a signal, a closed stdout or the
/// end of `until`; then detaches and drains what is left into the view, so every record the
/// kernel emitted is delivered before the summary.
pub async fn drive<V: View, T>(
    session: &mut Session,
    view: &mut V,
    signals: &mut Signals,
    schedule: Schedule,
    until: impl Future<Output = T>,
) -> Result<Ended<T>> {
    drive_scraped(session, view, signals, schedule, until, None).await
}

/// Runs a view that is also scraped from outside (`scrapes`), until a signal: every scrape is
/// answered on this task, between records and ticks, so it reads the maps the session holds.
pub async fn serve<V: View>(
    session: &mut Session,
    view: &mut V,
    signals: &mut Signals,
    schedule: Schedule,
    scrapes: tokio::sync::mpsc::Receiver<Scrape>,
) -> Result<Ended<()>> {
    drive_scraped(
        session,
        view,
        signals,
        schedule,
        std::future::pending(),
        Some(scrapes),
    )
    .await
}

async fn drive_scraped<V: View, T>(
    session: &mut Session,
    view: &mut V,
    signals: &mut Signals,
    schedule: Schedule,
    until: impl Future<Output = T>,
    mut scrapes: Option<tokio::sync::mpsc::Receiver<Scrape>>,
) -> Result<Ended<T>> {
    let mut streams = session.take_streams();
    let mut out = Stdout::new();
    let deadline = schedule
        .duration
        .and_then(|d| tokio::time::Instant::now().checked_add(d));
    let mut tick = tokio::time::interval(schedule.interval);
    tick.tick().await;
    // Namespaces are followed every second, whatever the view's interval.
    let mut watch = tokio::time::interval(WATCH_INTERVAL);
    watch.tick().await;
    let mut until = std::pin::pin!(until);
    let mut value = None;
    let mut failure = None;
    let ending = loop {
        let step = tokio::select! {
            Some(batch) = async { streams.as_mut()?.rx.recv().await } => {
                view.records(session, batch, &mut out)
            },
            _ = tick.tick() => view.tick(session, &mut out),
            Some(scrape) = async { scrapes.as_mut()?.recv().await } => {
                view.scrape(session, scrape);
                Ok(())
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap()).await }, if deadline.is_some() => {
                break Ending::Deadline;
            },
            v = &mut until => {
                value = Some(v);
                break Ending::Done;
            },
            name = signals.recv() => break Ending::Signal(name),
            _ = watch.tick() => {
                for line in session.follow_namespaces() {
                    say!("{line}");
                }
                if let Some(gone) = session.watched_gone() {
                    say!("namespace {gone} is gone: its sentinels are closed and the run ends");
                    break Ending::NamespaceGone(gone);
                }
                Ok(())
            },
        };
        if let Err(e) = step {
            if !is_broken_pipe(&e) {
                failure = Some(e);
            }
            break Ending::StdoutClosed;
        }
    };
    // Detach first (which waits for running programs), then drain: delivered + lost then
    // matches the kernel's own count exactly.
    session.detach();
    if let Some(mut s) = streams {
        s.stop();
        while let Some(batch) = s.rx.recv().await {
            // Records still count when stdout is gone; only printing stops.
            let _ = view.records(session, batch, &mut out);
        }
        session.stream_totals = s.totals().await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Ended { ending, value, out })
}

/// Runs a live view until `--duration`, a signal or a closed stdout: [`drive`] with nothing
/// else to wait for.
pub async fn run<V: View>(
    session: &mut Session,
    view: &mut V,
    signals: &mut Signals,
    schedule: Schedule,
) -> Result<Ended<()>> {
    drive(session, view, signals, schedule, std::future::pending()).await
}

/// A run with nothing attached (netdoc's object did not load here): waits for `until` or a
/// signal.
pub async fn without_session<T>(signals: &mut Signals, until: impl Future<Output = T>) -> Ended<T> {
    let (ending, value) = tokio::select! {
        v = until => (Ending::Done, Some(v)),
        name = signals.recv() => (Ending::Signal(name), None),
    };
    Ended {
        ending,
        value,
        out: Stdout::new(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<io::Error>()
        .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
}

/// Clears the terminal before a redraw, when stdout is one.
pub fn clear_screen(tty: bool) -> &'static str {
    if tty { "\x1b[2J\x1b[H" } else { "" }
}
