//! Per-CPU perf buffers → typed records. One reader task per CPU drains its buffer into a
//! channel; records of unknown kind, version or size are counted, never fatal.
use crate::drops::report::KernelStats;
use std::time::Duration;

use anyhow::{Context as _, Result};
use aya::{
    maps::{MapData, PerfEventArray, perf::PerfEvent, perf::PerfEventArrayBuffer},
    util::online_cpus,
};
use netdoc_common::{EVENT_VERSION, EventHeader, Record, stat};
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
    #[arg(long, value_parser = crate::parse_duration)]
    pub duration: Option<Duration>,
    /// Refresh interval of the live view.
    #[arg(long, value_parser = crate::parse_duration, default_value = "1s")]
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
        if !self.pages.is_power_of_two() {
            anyhow::bail!("--pages must be a power of two (e.g. 64)");
        }
        Ok(())
    }
}

/// A family's per-CPU `stat` slots (seen, matched, emitted, lost, aggregation full), summed.
pub fn kernel_stats(map: &aya::maps::PerCpuArray<MapData, u64>) -> KernelStats {
    let sum = |slot: u32| -> u64 { map.get(&slot, 0).map(|v| v.iter().sum()).unwrap_or(0) };
    KernelStats {
        seen: sum(stat::SEEN),
        matched: sum(stat::MATCHED),
        emitted: sum(stat::EMITTED),
        lost: sum(stat::EMIT_FAILED),
        aggregation_overflow: sum(stat::AGG_FULL),
    }
}

/// What a per-CPU reader hands back when it stops.
#[derive(Default)]
pub struct ReaderTotals {
    pub decode: DecodeStats,
    /// PERF_RECORD_LOST counts; the kernel-side EMIT_FAILED counter is authoritative.
    pub perf_lost: u64,
}

/// Per-CPU readers of one perf event array; they stop (after a last drain) when `stop` fires.
pub struct Readers<T> {
    pub rx: mpsc::Receiver<Vec<T>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<ReaderTotals>>>,
}

impl<T: Record + Send + 'static> Readers<T> {
    /// Opens every online CPU's buffer (`pages` per CPU). Call before attaching, so no record
    /// arrives with nobody to read it.
    pub fn open(map: aya::maps::Map, pages: usize) -> Result<Self> {
        let mut perf = PerfEventArray::try_from(map)?;
        let (tx, rx) = mpsc::channel::<Vec<T>>(256);
        let (stop, stop_rx) = watch::channel(false);
        let cpus = online_cpus()
            .map_err(|(_, e)| e)
            .context("reading online CPUs")?;
        let mut tasks = Vec::new();
        for cpu in cpus {
            let buf = perf
                .open(cpu, Some(pages))
                .with_context(|| format!("opening the perf buffer of CPU {cpu}"))?;
            tasks.push(tokio::spawn(read_cpu(buf, tx.clone(), stop_rx.clone())));
        }
        Ok(Self { rx, stop, tasks })
    }

    /// Tells the readers to drain and stop; `rx` then closes once all is delivered.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }

    pub async fn totals(self) -> Result<ReaderTotals> {
        let mut totals = ReaderTotals::default();
        for t in self.tasks {
            let t = t.await.context("perf reader task")??;
            totals.decode.unknown += t.decode.unknown;
            totals.decode.decoded += t.decode.decoded;
            totals.perf_lost += t.perf_lost;
        }
        Ok(totals)
    }
}

async fn read_cpu<T: Record>(
    buf: PerfEventArrayBuffer<MapData>,
    tx: mpsc::Sender<Vec<T>>,
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
                let batch = drain(guard.get_inner_mut(), &mut totals);
                if !batch.is_empty() && tx.send(batch).await.is_err() {
                    break;
                }
            }
            _ = stop.changed() => break,
        }
    }
    let batch = drain(fd.get_mut(), &mut totals);
    if !batch.is_empty() {
        let _ = tx.send(batch).await;
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
    use netdoc_common::{DropEvent, kind};

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
