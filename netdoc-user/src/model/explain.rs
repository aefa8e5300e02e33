//! STUB (replaced by the catalogue on merge).
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropKind {
    Benign,
    Policy,
    Capacity,
    Undeliverable,
    Malformed,
    Protocol,
    Unspecific,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Explanation {
    pub reason: &'static str,
    pub kind: DropKind,
    pub meaning: &'static str,
    pub counters: &'static [&'static str],
    pub look_at: &'static str,
}

static TABLE: &[Explanation] = &[
    Explanation {
        reason: "IP_NOPROTO",
        kind: DropKind::Undeliverable,
        meaning: "no protocol handler",
        counters: &["Ip.InUnknownProtos"],
        look_at: "x",
    },
    Explanation {
        reason: "TCP_OLD_SEQUENCE",
        kind: DropKind::Benign,
        meaning: "old",
        counters: &["TcpExt.TCPDSACKOldSent"],
        look_at: "x",
    },
    Explanation {
        reason: "TCP_OLD_DATA",
        kind: DropKind::Benign,
        meaning: "old",
        counters: &["TcpExt.TCPDSACKOldSent"],
        look_at: "x",
    },
];

pub fn explain(reason: &str) -> Option<&'static Explanation> {
    TABLE.iter().find(|e| e.reason == reason)
}

pub fn all() -> &'static [Explanation] {
    TABLE
}
