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

#[cfg(test)]
mod tests {
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
        assert_eq!(decode(head, tail, &mut stats), Some(sample()));
        assert_eq!(decode(&bytes, &[], &mut stats), Some(sample()));
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
        assert_eq!(decode(&record(&other), &[], &mut stats), None);
        let mut newer = sample();
        newer.header.version = EVENT_VERSION + 1;
        assert_eq!(decode(&record(&newer), &[], &mut stats), None);
        assert_eq!(decode(&record(&sample())[..20], &[], &mut stats), None);
        assert_eq!(decode(&[1, 2], &[], &mut stats), None);
        assert_eq!(
            stats,
            DecodeStats {
                decoded: 0,
                unknown: 4
            }
        );
    }
}
