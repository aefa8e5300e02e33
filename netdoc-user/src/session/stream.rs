//! Per-CPU ring buffers → typed records. One reader task drains every CPU's ring of every
//! stream into the session's one channel, in batches; records of unknown kind, version or size
//! are counted, never fatal.
use std::{
    any::Any,
    collections::BTreeMap,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::Duration,
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{MapData, RingBuf, of_maps::ArrayOfMaps},
    util::online_cpus,
};
use aya_obj::generated::bpf_map_type;
use netdoc_common::{EVENT_VERSION, EventHeader, Record};
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

/// Decodes one ring record (the kernel maps a ring twice, so a record is never split).
pub fn decode<T: Record>(bytes: &[u8], stats: &mut DecodeStats) -> Option<T> {
    if bytes.len() < size_of::<EventHeader>() {
        stats.unknown += 1;
        return None;
    }
    // SAFETY: EventHeader is plain integers and bytes holds at least its size.
    let header: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    if header.kind != T::KIND
        || header.version != EVENT_VERSION
        || header.size as usize != size_of::<T>()
        || bytes.len() < size_of::<T>()
    {
        stats.unknown += 1;
        return None;
    }
    stats.decoded += 1;
    // SAFETY: records are repr(C) plain integers; the header vouches for kind, version and size.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
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
    #[arg(long, value_parser = crate::parse_interval, allow_hyphen_values = true, default_value = "1s")]
    pub interval: Duration,
    /// Ring buffer pages per CPU (power of two).
    #[arg(long, default_value_t = 64)]
    pub pages: usize,
    /// Records each CPU streams per second; beyond it they are counted per reason, not
    /// streamed (0: no limit).
    #[arg(long, default_value_t = crate::session::DEFAULT_MAX_EVENTS_PER_SEC)]
    pub max_events_per_sec: u64,
    /// Rows shown in the live view.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
}

impl StreamOptions {
    /// Rejected here rather than by clap, so it is a one-line `netdoc: error:` like the others.
    pub fn check(&self) -> Result<()> {
        if !self.pages.is_power_of_two() || self.pages > MAX_PAGES {
            fail!(
                Input,
                "--pages {}: give a power of two from 1 to {MAX_PAGES} pages per CPU (e.g. 64)",
                self.pages
            );
        }
        Ok(())
    }
}

/// 16 MiB of 4 KiB pages per CPU: more only delays loss, and the kernel may refuse to map it.
const MAX_PAGES: usize = 4096;

/// A batch of decoded records from one stream's per-CPU buffers. A view takes the record
/// types it reads ([`Self::take`]); the stream knows none of them.
pub struct Records(Box<dyn Any + Send>);

impl Records {
    fn of<T: Streamed>(batch: Vec<T>) -> Self {
        Self(Box::new(batch))
    }

    /// The records, when the batch holds `T` records; the batch back otherwise.
    pub fn take<T: Streamed>(self) -> Result<Vec<T>, Self> {
        self.0.downcast().map(|batch| *batch).map_err(Self)
    }
}

/// Which stream a family's records travel in, by name: each stream's loss and decoding totals
/// are kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamKind(pub &'static str);

/// A record type a family streams (its module says which stream it travels in).
pub trait Streamed: Record + Send + 'static {
    const STREAM: StreamKind;
}

/// What the reader hands back per stream when it stops.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReaderTotals {
    pub decode: DecodeStats,
}

/// How often the reader drains every ring without being woken: the rings wake it only when
/// one passes half full, so this is the latency of a quiet stream.
const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// One CPU's ring of one stream, with the decoder of its record type.
struct Ring {
    kind: StreamKind,
    buf: RingBuf<MapData>,
    drain: fn(&mut RingBuf<MapData>, &mut DecodeStats) -> Option<Records>,
}

/// The per-CPU rings of every stream of a session, drained by one reader task into one channel;
/// it stops (after a last drain) when told to.
pub struct Streams {
    pub rx: mpsc::Receiver<Records>,
    tx: Option<mpsc::Sender<Records>>,
    stop: watch::Sender<bool>,
    rings: Vec<Ring>,
    /// The per-CPU arrays the programs write through: the programs load (and find them by fd)
    /// only when attached, so they live as long as the streams.
    arrays: Vec<(StreamKind, ArrayOfMaps<MapData, MapData>)>,
    reader: Option<JoinHandle<Result<BTreeMap<StreamKind, ReaderTotals>>>>,
}

impl Streams {
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel(256);
        let (stop, _) = watch::channel(false);
        Self {
            rx,
            tx: Some(tx),
            stop,
            rings: Vec::new(),
            arrays: Vec::new(),
            reader: None,
        }
    }

    /// Creates a ring of `pages` for every online CPU and places it in `map`, the stream's
    /// per-CPU array. Call before attaching, so no record arrives with nowhere to go.
    pub fn open<T: Streamed>(&mut self, map: aya::maps::Map, pages: usize) -> Result<()> {
        let mut array: ArrayOfMaps<MapData, MapData> = ArrayOfMaps::try_from(map)?;
        let cpus = online_cpus()
            .map_err(|(_, e)| e)
            .context("reading online CPUs")?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = u32::try_from(pages * page).context("--pages too large")?;
        for cpu in cpus {
            let def = aya_obj::Map::new_from_params(
                bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
                0,
                0,
                bytes,
                0,
            );
            // aya's error already names its cause: one line, not the chain.
            let ring = MapData::create(def, "netdoc_ring", None).map_err(|e| {
                anyhow::anyhow!(
                    "creating the ring buffer of CPU {cpu} ({pages} pages): {e}; try fewer --pages"
                )
            })?;
            array
                .set(cpu, &ring, 0)
                .with_context(|| format!("placing the ring buffer of CPU {cpu}"))?;
            self.rings.push(Ring {
                kind: T::STREAM,
                buf: RingBuf::try_from(aya::maps::Map::RingBuf(ring))?,
                drain: drain::<T>,
            });
        }
        self.arrays.push((T::STREAM, array));
        Ok(())
    }

    /// Closes a stream whose program did not attach, before [`Self::start`]: its rings go now
    /// instead of being drained empty for the whole run.
    pub fn close(&mut self, kind: StreamKind) {
        self.rings.retain(|r| r.kind != kind);
        self.arrays.retain(|(k, _)| *k != kind);
    }

    /// Starts the one reader of every ring opened so far.
    pub fn start(&mut self) -> Result<()> {
        let tx = self.tx.clone().context("streams already stopped")?;
        let rings = std::mem::take(&mut self.rings);
        if !rings.is_empty() {
            let wakeups = Wakeups::new(&rings)?;
            self.reader = Some(tokio::spawn(read(
                rings,
                wakeups,
                tx,
                self.stop.subscribe(),
            )));
        }
        Ok(())
    }

    /// Tells the reader to drain and stop; `rx` then closes once all is delivered.
    pub fn stop(&mut self) {
        self.tx = None;
        let _ = self.stop.send(true);
    }

    /// Each stream's totals, once the reader has stopped.
    pub async fn totals(self) -> Result<BTreeMap<StreamKind, ReaderTotals>> {
        match self.reader {
            Some(reader) => reader.await.context("ring reader task")?,
            None => Ok(BTreeMap::new()),
        }
    }
}

/// One epoll set of every ring, readable when a program has woken one of them (it does so when
/// the ring passes half full): the reader waits on all CPUs' rings in one place.
struct Wakeups(AsyncFd<OwnedFd>);

impl Wakeups {
    fn new(rings: &[Ring]) -> Result<Self> {
        // SAFETY: epoll_create1 has no memory preconditions; the fd is owned from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: fd is a new descriptor nobody else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        for ring in rings {
            // Edge-triggered: a ring enters the ready list when a program wakes it, not for as
            // long as it holds data (the timer drains those).
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLIN | libc::EPOLLET) as u32,
                u64: 0,
            };
            // SAFETY: both descriptors are open and ev outlives the call.
            let rc = unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    ring.buf.as_raw_fd(),
                    &mut ev,
                )
            };
            if rc != 0 {
                return Err(io::Error::last_os_error()).context("watching a ring buffer");
            }
        }
        // SAFETY: the AsyncFd owns the epoll descriptor, so it stays open while registered.
        Ok(Self(
            unsafe { AsyncFd::register(epoll) }.map_err(|e| e.into_parts().1)?,
        ))
    }

    /// Waits until a ring has been woken, and forgets which (every ring is drained anyway).
    async fn wait(&self) -> Result<()> {
        let mut guard = self.0.readable().await?;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: events is a writable array of the length given; timeout 0 never blocks.
        while unsafe {
            libc::epoll_wait(
                self.0.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        } == events.len() as i32
        {}
        guard.clear_ready();
        Ok(())
    }
}

async fn read(
    mut rings: Vec<Ring>,
    wakeups: Wakeups,
    tx: mpsc::Sender<Records>,
    mut stop: watch::Receiver<bool>,
) -> Result<BTreeMap<StreamKind, ReaderTotals>> {
    let mut totals: BTreeMap<StreamKind, ReaderTotals> = BTreeMap::new();
    let mut tick = tokio::time::interval(DRAIN_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            woken = wakeups.wait() => {
                woken?;
                false
            }
            _ = tick.tick() => false,
            _ = stop.changed() => true,
        };
        // The last drain happens after detaching: nothing is left behind in a ring.
        if !drain_all(&mut rings, &tx, &mut totals).await || stopping {
            break;
        }
    }
    Ok(totals)
}

/// Drains every ring into the channel; false once nobody listens.
async fn drain_all(
    rings: &mut [Ring],
    tx: &mpsc::Sender<Records>,
    totals: &mut BTreeMap<StreamKind, ReaderTotals>,
) -> bool {
    for ring in rings {
        let stats = &mut totals.entry(ring.kind).or_default().decode;
        if let Some(batch) = (ring.drain)(&mut ring.buf, stats)
            && tx.send(batch).await.is_err()
        {
            return false;
        }
    }
    true
}

/// Everything one ring holds now, decoded; None when it held nothing decodable.
fn drain<T: Streamed>(buf: &mut RingBuf<MapData>, stats: &mut DecodeStats) -> Option<Records> {
    let mut batch: Vec<T> = Vec::new();
    while let Some(item) = buf.next() {
        if let Some(record) = decode(&item, stats) {
            batch.push(record);
        }
    }
    (!batch.is_empty()).then(|| Records::of(batch))
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
    fn a_batch_is_taken_as_the_type_it_holds() {
        let batch = Records::of(vec![sample()]);
        let batch = batch
            .take::<netdoc_common::retrans::RetransEvent>()
            .unwrap_err();
        assert_eq!(batch.take::<DropEvent>().ok(), Some(vec![sample()]));
    }

    #[test]
    fn decodes_a_record() {
        let mut stats = DecodeStats::default();
        assert_eq!(
            decode::<DropEvent>(&record(&sample()), &mut stats),
            Some(sample())
        );
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 1,
                unknown: 0
            }
        );
    }

    #[test]
    fn unknown_kinds_versions_and_short_records_are_counted() {
        let mut stats = DecodeStats::default();
        let mut other = sample();
        other.header.kind = 99;
        assert_eq!(decode::<DropEvent>(&record(&other), &mut stats), None);
        let mut newer = sample();
        newer.header.version = EVENT_VERSION + 1;
        assert_eq!(decode::<DropEvent>(&record(&newer), &mut stats), None);
        assert_eq!(
            decode::<DropEvent>(&record(&sample())[..20], &mut stats),
            None
        );
        assert_eq!(decode::<DropEvent>(&[1, 2], &mut stats), None);
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 0,
                unknown: 4
            }
        );
    }
}
