//! Per-CPU perf buffers → typed records. One reader task per CPU and stream drains its buffer
//! into the session's one channel; records of unknown kind, version or size are counted, never
//! fatal.
use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result};
use aya::{
    maps::{MapData, PerfEventArray, perf::PerfEvent, perf::PerfEventArrayBuffer},
    util::online_cpus,
};
use netdoc_common::{
    DropEvent, EVENT_VERSION, EventHeader, Record, conntrack::InsertFailEvent,
    retrans::RetransEvent,
};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
    task::JoinHandle,
};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub decoded: u64,
    pub unknown: u64,
}

/// Decodes one perf sample (`head` then `tail` when it wraps the ring).
pub fn decode<T: Record>(head: &[u8], tail: &[u8], stats: &mut DecodeStats) -> Option<T> {
    let mut buf = vec![0u8; size_of::<T>()];
    let total = head.len() + tail.len();
    if total < size_of::<EventHeader>() {
        stats.unknown += 1;
        return None;
    }
    let n = total.min(buf.len());
    let from_head = head.len().min(n);
    buf[..from_head].copy_from_slice(&head[..from_head]);
    buf[from_head..n].copy_from_slice(&tail[..n - from_head]);
    // SAFETY: EventHeader is plain integers and buf holds at least its size.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
    if header.kind != T::KIND
        || header.version != EVENT_VERSION
        || header.size as usize != size_of::<T>()
        || total < size_of::<T>()
    {
        stats.unknown += 1;
        return None;
    }
    stats.decoded += 1;
    // SAFETY: records are repr(C) plain integers; the header vouches for kind, version and size.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) })
}

/// Options of every command that streams per-event records and keeps a live view.
#[derive(clap::Args)]
pub struct StreamOptions {
    /// One JSON object per event, then a final `"type":"summary"` object.
    #[arg(long)]
    pub json: bool,
    /// Count in the kernel only: no per-event records (lowest overhead).
    #[arg(long)]
    pub counts_only: bool,
    /// Stop after this long (e.g. 30s, 500ms, 2m); default: until Ctrl-C.
    #[arg(long, value_parser = crate::parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Refresh interval of the live view.
    #[arg(long, value_parser = crate::parse_duration, allow_hyphen_values = true, default_value = "1s")]
    pub interval: Duration,
    /// Perf buffer pages per CPU (power of two).
    #[arg(long, default_value_t = 64)]
    pub pages: usize,
    /// Rows shown in the live view.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

impl StreamOptions {
    /// Rejected here rather than by clap, so it is a one-line `netdoc: error:` like the others.
    pub fn check(&self) -> Result<()> {
        if !self.pages.is_power_of_two() || self.pages > MAX_PAGES {
            anyhow::bail!(
                "--pages {}: give a power of two from 1 to {MAX_PAGES} pages per CPU (e.g. 64)",
                self.pages
            );
        }
        Ok(())
    }
}

/// 16 MiB of 4 KiB pages per CPU: more only delays loss, and the kernel may refuse to map it.
const MAX_PAGES: usize = 4096;

/// A batch of decoded records from one family's per-CPU buffers.
pub enum Records {
    Drops(Vec<DropEvent>),
    Retransmits(Vec<RetransEvent>),
    InsertFailures(Vec<InsertFailEvent>),
}

/// Which family a stream carries: its loss and decoding totals are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StreamKind {
    Drops,
    Retransmits,
    InsertFailures,
}

/// A record type and how its batches travel.
pub trait Streamed: Record + Send + 'static {
    const STREAM: StreamKind;
    fn batch(records: Vec<Self>) -> Records;
}

impl Streamed for DropEvent {
    const STREAM: StreamKind = StreamKind::Drops;
    fn batch(records: Vec<Self>) -> Records {
        Records::Drops(records)
    }
}

impl Streamed for RetransEvent {
    const STREAM: StreamKind = StreamKind::Retransmits;
    fn batch(records: Vec<Self>) -> Records {
        Records::Retransmits(records)
    }
}

impl Streamed for InsertFailEvent {
    const STREAM: StreamKind = StreamKind::InsertFailures;
    fn batch(records: Vec<Self>) -> Records {
        Records::InsertFailures(records)
    }
}

/// What the per-CPU readers of one stream hand back when they stop.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderTotals {
    pub decode: DecodeStats,
    /// PERF_RECORD_LOST counts; the kernel-side EMIT_FAILED counter is authoritative.
    pub perf_lost: u64,
}

/// Per-CPU readers of every stream of a session, feeding one channel; they stop (after a
/// last drain) when told to.
pub struct Streams {
    pub rx: mpsc::Receiver<Records>,
    tx: Option<mpsc::Sender<Records>>,
    stop: watch::Sender<bool>,
    tasks: Vec<(StreamKind, JoinHandle<Result<ReaderTotals>>)>,
}

impl Streams {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(256);
        let (stop, _) = watch::channel(false);
        Self {
            rx,
            tx: Some(tx),
            stop,
            tasks: Vec::new(),
        }
    }

    /// Opens every online CPU's buffer of `map` (`pages` per CPU). Call before attaching, so
    /// no record arrives with nobody to read it.
    pub fn open<T: Streamed>(&mut self, map: aya::maps::Map, pages: usize) -> Result<()> {
        let mut perf = PerfEventArray::try_from(map)?;
        let tx = self.tx.clone().context("streams already stopped")?;
        let cpus = online_cpus()
            .map_err(|(_, e)| e)
            .context("reading online CPUs")?;
        for cpu in cpus {
            // aya's error already names its cause: one line, not the chain.
            let buf = perf.open(cpu, Some(pages)).map_err(|e| {
                anyhow::anyhow!(
                    "opening the perf buffer of CPU {cpu} ({pages} pages): {e}; try fewer --pages"
                )
            })?;
            let task = tokio::spawn(read_cpu::<T>(buf, tx.clone(), self.stop.subscribe()));
            self.tasks.push((T::STREAM, task));
        }
        Ok(())
    }

    /// Tells the readers to drain and stop; `rx` then closes once all is delivered.
    pub fn stop(&mut self) {
        self.tx = None;
        let _ = self.stop.send(true);
    }

    /// Each stream's totals, once the readers have stopped.
    pub async fn totals(self) -> Result<BTreeMap<StreamKind, ReaderTotals>> {
        let mut totals: BTreeMap<StreamKind, ReaderTotals> = BTreeMap::new();
        for (kind, task) in self.tasks {
            let t = task.await.context("perf reader task")??;
            let sum = totals.entry(kind).or_default();
            sum.decode.unknown += t.decode.unknown;
            sum.decode.decoded += t.decode.decoded;
            sum.perf_lost += t.perf_lost;
        }
        Ok(totals)
    }
}

async fn read_cpu<T: Streamed>(
    buf: PerfEventArrayBuffer<MapData>,
    tx: mpsc::Sender<Records>,
    mut stop: watch::Receiver<bool>,
) -> Result<ReaderTotals> {
    // SAFETY: the buffer owns its perf fd and keeps it open for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register(buf) }.map_err(|e| e.into_parts().1)?;
    let mut totals = ReaderTotals::default();
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard?;
                // Clear before draining: a record landing after the drain re-arms readiness.
                guard.clear_ready();
                let batch = drain::<T>(guard.get_inner_mut(), &mut totals);
                if !batch.is_empty() && tx.send(T::batch(batch)).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let batch = drain::<T>(fd.get_mut(), &mut totals);
    if !batch.is_empty() {
        let _ = tx.send(T::batch(batch)).await;
    }
    Ok(totals)
}

fn drain<T: Record>(buf: &mut PerfEventArrayBuffer<MapData>, totals: &mut ReaderTotals) -> Vec<T> {
    let mut batch = Vec::new();
    buf.for_each(|ev| match ev {
        PerfEvent::Sample { head, tail } => {
            if let Some(d) = decode(head, tail, &mut totals.decode) {
                batch.push(d);
            }
        }
        PerfEvent::Lost { count } => totals.perf_lost += count,
    });
    batch
}

#[cfg(test)]
mod tests {
    use netdoc_common::kind;

    use super::*;

    fn record(ev: &DropEvent) -> Vec<u8> {
        // SAFETY: DropEvent is repr(C) plain integers.
        unsafe {
            std::slice::from_raw_parts(
                (ev as *const DropEvent).cast::<u8>(),
                size_of::<DropEvent>(),
            )
        }
        .to_vec()
    }

    fn sample() -> DropEvent {
        DropEvent {
            header: EventHeader {
                kind: kind::DROP,
                version: EVENT_VERSION,
                size: size_of::<DropEvent>() as u32,
            },
            reason: 3,
            location: 0xffffffff820490cc,
            dport: 9,
            ..Default::default()
        }
    }

    #[test]
    fn decodes_a_record_split_across_the_ring_end() {
        let bytes = record(&sample());
        let mut stats = DecodeStats::default();
        let (head, tail) = bytes.split_at(30);
        assert_eq!(decode::<DropEvent>(head, tail, &mut stats), Some(sample()));
        assert_eq!(decode::<DropEvent>(&bytes, &[], &mut stats), Some(sample()));
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 2,
                unknown: 0
            }
        );
    }

    #[test]
    fn unknown_kinds_versions_and_short_records_are_counted() {
        let mut stats = DecodeStats::default();
        let mut other = sample();
        other.header.kind = 99;
        assert_eq!(decode::<DropEvent>(&record(&other), &[], &mut stats), None);
        let mut newer = sample();
        newer.header.version = EVENT_VERSION + 1;
        assert_eq!(decode::<DropEvent>(&record(&newer), &[], &mut stats), None);
        assert_eq!(
            decode::<DropEvent>(&record(&sample())[..20], &[], &mut stats),
            None
        );
        assert_eq!(decode::<DropEvent>(&[1, 2], &[], &mut stats), None);
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 0,
                unknown: 4
            }
        );
    }
}
