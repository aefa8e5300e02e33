//! Perf records → typed drop events; records of unknown kind or version are counted, not fatal.
use netdoc_common::{DropEvent, EVENT_VERSION, EventHeader, kind};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecodeStats {
    pub decoded: u64,
    pub unknown: u64,
}

/// Decodes one perf sample (`head` then `tail` when it wraps the ring).
pub fn decode(head: &[u8], tail: &[u8], stats: &mut DecodeStats) -> Option<DropEvent> {
    let mut buf = [0u8; size_of::<DropEvent>()];
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
    if header.kind != kind::DROP
        || header.version != EVENT_VERSION
        || header.size as usize != size_of::<DropEvent>()
        || total < size_of::<DropEvent>()
    {
        stats.unknown += 1;
        return None;
    }
    stats.decoded += 1;
    // SAFETY: DropEvent is plain integers; the header vouches for kind, version and size.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) })
}
