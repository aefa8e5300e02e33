//! MTU black hole: a flow that keeps retransmitting full-sized segments the peer never
//! acknowledges, while no ICMP "fragmentation needed" (no PMTU reduction) ever arrived for it.
use super::report::FlowRow;
use crate::model::finding::{Confidence, Evidence, Finding, Scope, ScopeKind, Severity};

/// Retransmits of one sequence number from which the flow counts as stuck.
pub const STUCK_RETRIES: u32 = 3;

pub fn black_holes(flows: &[FlowRow]) -> Vec<Finding> {
    flows.iter().filter_map(black_hole).collect()
}

fn black_hole(f: &FlowRow) -> Option<Finding> {
    let full_sized = f.mss > 0 && f.max_segment >= f.mss;
    let pmtu_reduced =
        f.path_mtu_min < f.path_mtu || (f.dev_mtu > 0 && f.path_mtu > 0 && f.path_mtu < f.dev_mtu);
    // Small segments and the handshake got through; nothing full-sized ever did.
    let never_acked_full = f.bytes_acked < 2 * f.mss as u64;
    if f.max_same_seq < STUCK_RETRIES || !full_sized || pmtu_reduced || !never_acked_full {
        return None;
    }
    let headers = f.path_mtu.saturating_sub(f.mss);
    let wire = f.max_segment + headers;
    let where_ =
        f.id.netns_name
            .as_ref()
            .map_or(String::new(), |n| format!(" (netns {n})"));
    let probe = "tcp:tcp_retransmit_skb (netdoc retrans)";
    // Some data acknowledged shows the peer is there and small packets pass; with nothing
    // acknowledged at all, a peer that went away looks the same.
    let peer_seen = f.bytes_acked > 0;
    let maybe_gone = match peer_seen {
        true => "",
        false => " (nothing was ever acknowledged: a peer that went away looks the same)",
    };
    Some(Finding {
        explains: Vec::new(),
        scope: Scope::new(ScopeKind::Flow, format!("{}{where_}", f.id.flow)),
        id: "mtu_black_hole".into(),
        affected: f.retransmits,
        severity: if peer_seen {
            Severity::Critical
        } else {
            Severity::Warning
        },
        confidence: if peer_seen {
            Confidence::High
        } else {
            Confidence::Medium
        },
        title: format!(
            "{}{where_} keeps retransmitting {}-byte segments that never get through, and no ICMP \"fragmentation needed\" arrives: an MTU black hole on the path{maybe_gone}",
            f.id.flow, f.max_segment
        ),
        evidence: vec![
            Evidence::new(
                format!(
                    "the same segment was retransmitted {} times; {} retransmits in all",
                    f.max_same_seq, f.retransmits
                ),
                probe,
            ),
            Evidence::new(
                format!(
                    "each segment is {} B of payload, {wire} B on the wire: the full MTU of the egress device ({})",
                    f.max_segment,
                    if f.dev_mtu > 0 { f.dev_mtu.to_string() } else { "unknown".into() }
                ),
                probe,
            ),
            Evidence::new(
                format!(
                    "path MTU stayed {} (no PMTU reduction, so no ICMP fragmentation-needed reached this host)",
                    f.path_mtu
                ),
                "the socket's icsk_pmtu_cookie at each retransmit",
            ),
            Evidence::new(
                format!(
                    "the peer acknowledged only {} bytes: smaller packets pass, full-sized ones do not",
                    f.bytes_acked
                ),
                "the socket's bytes_acked at each retransmit",
            ),
        ],
        fix: vec![
            "find the hop with the smaller MTU (tracepath, or ping -M do -s SIZE) and let ICMP type 3 code 4 (IPv6: type 2) through its firewalls".into(),
            "clamp the MSS where the MTU shrinks: nft add rule inet filter forward tcp flags syn tcp option maxseg size set rt mtu".into(),
            "host-side workaround: sysctl -w net.ipv4.tcp_mtu_probing=1".into(),
        ],
    })
}

#[cfg(test)]
mod tests {
    use netdoc_common::retrans::FlowStats;

    use super::*;
    use crate::retrans::report::tests::key;

    fn flow(same_seq: u32, seg: u32, pmtu: (u32, u32), acked: u64) -> FlowRow {
        let s = FlowStats {
            events: same_seq as u64,
            segs: same_seq as u64,
            max_same_seq: same_seq,
            max_seg: seg,
            mss: 1448,
            pmtu_min: pmtu.0,
            pmtu_max: pmtu.1,
            dev_mtu: 1500,
            bytes_acked: acked,
            state: 1,
            ..Default::default()
        };
        FlowRow::new(
            &key(40000),
            &s,
            Some(crate::namespaces::NetnsRef::named("client")),
            0.0,
        )
    }

    #[test]
    fn full_sized_segments_stuck_without_pmtu_reduction_are_a_black_hole() {
        let f = black_holes(&[flow(4, 1448, (1500, 1500), 0)]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].id, "mtu_black_hole");
        assert!(f[0].title.contains("10.0.0.1:40000"));
        assert!(f[0].shows("1500 B on the wire"), "{:?}", f[0].evidence);
        assert!(f[0].fix.iter().any(|x| x.contains("tcp_mtu_probing")));
    }

    #[test]
    fn pmtu_reduction_small_segments_few_retries_or_acked_data_are_not() {
        assert!(
            black_holes(&[flow(4, 1448, (1000, 1000), 0)]).is_empty(),
            "ICMP arrived"
        );
        assert!(
            black_holes(&[flow(4, 1448, (1000, 1500), 0)]).is_empty(),
            "ICMP arrived mid-flow"
        );
        assert!(
            black_holes(&[flow(4, 500, (1500, 1500), 0)]).is_empty(),
            "small segments"
        );
        assert!(
            black_holes(&[flow(2, 1448, (1500, 1500), 0)]).is_empty(),
            "not stuck yet"
        );
        assert!(
            black_holes(&[flow(6, 1448, (1500, 1500), 5_000_000)]).is_empty(),
            "full-sized data got through before: a path that started dropping"
        );
    }
}
