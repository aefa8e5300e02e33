//! Pure model of what `netdoc retrans` shows: named retransmit events and per-flow rows.
use netdoc_common::retrans::{FlowKey, FlowStats, RetransEvent, flag};
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::{
    facts::cgroup::{Container, Pod},
    model::addr,
    namespaces::NetnsRef,
};

pub fn state_name(state: u32) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// Which connection, as events and rows both print it (flattened into their JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowId {
    /// `tcp 10.0.0.1:40000 > 10.0.1.2:5201`
    pub flow: String,
    pub saddr: Option<String>,
    pub sport: u16,
    pub daddr: Option<String>,
    pub dport: u16,
    pub netns: u32,
    /// The namespace's cookie (events only: the per-flow aggregation keys by inode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_cookie: Option<u64>,
    pub netns_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
}

impl FlowId {
    fn new(key: &FlowKey, ns: Option<NetnsRef>) -> Self {
        let (s, d) = (
            addr::ip(key.family, &key.saddr),
            addr::ip(key.family, &key.daddr),
        );
        let flow = match (s, d) {
            (Some(s), Some(d)) => format!(
                "tcp {} > {}",
                addr::endpoint(s, key.sport),
                addr::endpoint(d, key.dport)
            ),
            _ => format!("tcp ?:{} > ?:{}", key.sport, key.dport),
        };
        Self {
            flow,
            saddr: s.map(|a| a.to_string()),
            sport: key.sport,
            daddr: d.map(|a| a.to_string()),
            dport: key.dport,
            netns: key.netns,
            netns_cookie: None,
            netns_name: ns.as_ref().map(|n| n.name.clone()),
            container: ns.as_ref().and_then(|n| n.container.clone()),
            pod: ns.and_then(|n| n.pod),
        }
    }
}

/// The aggregation key of an event's flow.
fn key_of(ev: &RetransEvent) -> FlowKey {
    FlowKey {
        saddr: ev.saddr,
        daddr: ev.daddr,
        netns: ev.netns,
        sport: ev.sport,
        dport: ev.dport,
        family: ev.family,
        _pad: [0; 6],
    }
}

/// One retransmit as printed by `--json` (`"type": "retransmit"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NamedRetrans {
    pub ts_ns: u64,
    pub cpu: u32,
    #[serde(flatten)]
    pub id: FlowId,
    pub state: Cow<'static, str>,
    pub synack: bool,
    pub seq: u32,
    pub end_seq: u32,
    /// Payload bytes of the retransmitted skb (all its segments).
    pub len: u32,
    pub segs: u16,
    /// Payload per segment (`gso_size`), or `len` for a single segment.
    pub seg_size: u32,
    pub mss: u32,
    pub path_mtu: u32,
    pub dev_mtu: u32,
    pub bytes_acked: u64,
    /// Non-zero: the retransmit was not sent (6.17+ report it).
    pub err: i32,
}

impl NamedRetrans {
    pub fn new(ev: &RetransEvent, ns: Option<NetnsRef>) -> Self {
        let len = ev.end_seq.wrapping_sub(ev.seq);
        let cookie = (ev.netns_cookie != 0).then_some(ev.netns_cookie);
        let mut id = FlowId::new(&key_of(ev), ns.clone());
        id.netns_cookie = cookie.or(ns.and_then(|n| n.cookie));
        Self {
            ts_ns: ev.ts_ns,
            cpu: ev.cpu,
            id,
            state: state_name(ev.state as u32).into(),
            synack: ev.flags & flag::SYNACK != 0,
            seq: ev.seq,
            end_seq: ev.end_seq,
            len,
            segs: ev.gso_segs,
            seg_size: if ev.gso_size > 0 {
                ev.gso_size as u32
            } else {
                len
            },
            mss: ev.mss,
            path_mtu: ev.pmtu,
            dev_mtu: ev.dev_mtu,
            bytes_acked: ev.bytes_acked,
            err: ev.err,
        }
    }
}

/// One flow from the in-kernel aggregation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FlowRow {
    #[serde(flatten)]
    pub id: FlowId,
    pub state: Cow<'static, str>,
    pub retransmits: u64,
    /// Segments those retransmits carried (what `TcpRetransSegs` counts, failed ones aside).
    pub segments: u64,
    pub bytes: u64,
    pub synacks: u64,
    /// Retransmits that were not sent (`err != 0`).
    pub failed: u32,
    /// Longest run of retransmits of one sequence number.
    pub max_same_seq: u32,
    /// Largest single-segment payload retransmitted.
    pub max_segment: u32,
    pub mss: u32,
    /// Path MTU the socket used (`icsk_pmtu_cookie`): highest and lowest seen.
    pub path_mtu: u32,
    pub path_mtu_min: u32,
    pub dev_mtu: u32,
    pub bytes_acked: u64,
    /// Retransmits per second over the last interval.
    pub rate: f64,
}

impl FlowRow {
    pub fn new(key: &FlowKey, s: &FlowStats, ns: Option<NetnsRef>, rate: f64) -> Self {
        Self {
            id: FlowId::new(key, ns),
            state: state_name(s.state).into(),
            retransmits: s.events,
            segments: s.segs,
            bytes: s.bytes,
            synacks: s.synacks,
            failed: s.failed,
            max_same_seq: s.max_same_seq,
            max_segment: s.max_seg,
            mss: s.mss,
            path_mtu: s.pmtu_max,
            path_mtu_min: s.pmtu_min,
            dev_mtu: s.dev_mtu,
            bytes_acked: s.bytes_acked,
            rate,
        }
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub fn key(sport: u16) -> FlowKey {
        let mut k = FlowKey {
            netns: 7,
            sport,
            dport: 5201,
            family: 2,
            ..Default::default()
        };
        k.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        k.daddr[..4].copy_from_slice(&[10, 0, 1, 2]);
        k
    }

    #[test]
    fn rows_and_events_name_the_flow() {
        let s = FlowStats {
            events: 4,
            segs: 9,
            max_same_seq: 4,
            max_seg: 1448,
            mss: 1448,
            pmtu_min: 1500,
            pmtu_max: 1500,
            dev_mtu: 1500,
            state: 1,
            ..Default::default()
        };
        let row = FlowRow::new(&key(40000), &s, Some(NetnsRef::named("client")), 2.0);
        assert_eq!(row.id.flow, "tcp 10.0.0.1:40000 > 10.0.1.2:5201");
        assert_eq!(
            (row.state.as_ref(), row.segments, row.path_mtu),
            ("ESTABLISHED", 9, 1500)
        );
        let ev = RetransEvent {
            family: 10,
            sport: 1,
            dport: 2,
            seq: 1000,
            end_seq: 3896,
            gso_segs: 2,
            gso_size: 1448,
            state: 1,
            err: -16,
            ..Default::default()
        };
        let n = NamedRetrans::new(&ev, None);
        assert_eq!(n.id.flow, "tcp [::]:1 > [::]:2");
        assert_eq!((n.len, n.seg_size, n.segs, n.err), (2896, 1448, 2, -16));
        let v = serde_json::to_value(crate::output::Output::Retransmit(n)).unwrap();
        assert_eq!(v["type"], "retransmit");
        assert_eq!(v["flow"], "tcp [::]:1 > [::]:2", "the flow id is flattened");
        assert_eq!(v["synack"], false);
    }
}
