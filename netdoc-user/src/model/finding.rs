//! A diagnosis: what is wrong, where, how sure netdoc is, the measurements that show it (each
//! with where it came from), and what to do. Every rule produces these; renderers only print
//! them.
use std::{borrow::Cow, fmt};

use serde::{Deserialize, Serialize};

use crate::text::printable;

/// How much it hurts: findings are ranked by this first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// netdoc's own blind spots: the diagnosis is incomplete, the network may be fine.
    Info,
    /// Packets are lost, but at a rate or in a place that degrades rather than breaks.
    Warning,
    /// Packets or connections are being refused or lost now.
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// How sure the rule is that the title is the root cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// A plausible cause among others the evidence cannot exclude.
    Low,
    /// One source of evidence shows it.
    Medium,
    /// The kernel said so directly (a drop reason, a counter), and the sources agree.
    High,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    Host,
    Namespace,
    Flow,
    Listener,
    Socket,
    Cpu,
    NicQueue,
}

impl ScopeKind {
    /// As in the JSON schema (snake case).
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Namespace => "namespace",
            Self::Flow => "flow",
            Self::Listener => "listener",
            Self::Socket => "socket",
            Self::Cpu => "cpu",
            Self::NicQueue => "nic_queue",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    pub kind: ScopeKind,
    /// `host`, the namespace's name, `tcp a:p > b:q`, `10.0.0.2:8080 in NS`, `CPU 1`, ...
    pub name: String,
}

impl Scope {
    pub fn host() -> Self {
        Self {
            kind: ScopeKind::Host,
            name: "host".into(),
        }
    }

    pub fn new(kind: ScopeKind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ScopeKind::Host => f.write_str("host"),
            ScopeKind::Namespace => write!(f, "namespace {}", self.name),
            ScopeKind::Flow => write!(f, "flow {}", self.name),
            ScopeKind::Listener => write!(f, "listener {}", self.name),
            ScopeKind::Socket => write!(f, "socket {}", self.name),
            ScopeKind::Cpu | ScopeKind::NicQueue => f.write_str(&self.name),
        }
    }
}

/// One measurement behind a finding, and where it came from: a counter
/// (`/proc/net/snmp Udp.NoPorts`), a drop reason at a location (`kfree_skb NO_SOCKET@...`),
/// a probe, a sysctl.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub text: String,
    pub source: String,
}

impl Evidence {
    pub fn new(text: impl Into<String>, source: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            source: source.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// Stable identifier of the incident class, e.g. `conntrack_table_full`.
    pub id: Cow<'static, str>,
    pub severity: Severity,
    pub confidence: Confidence,
    /// One line naming the root cause.
    pub title: String,
    pub scope: Scope,
    /// Packets, connections or retransmits it accounts for: ranks findings of one severity.
    pub affected: u64,
    pub evidence: Vec<Evidence>,
    pub fix: Vec<String>,
    /// The drops it explains: the doctor accounts for every drop, and reports those no
    /// finding explains on their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explains: Vec<DropClaim>,
}

/// Drops a finding explains: those of one namespace with one reason, at one location or at
/// any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropClaim {
    /// The namespace's inode.
    pub netns: u32,
    pub reason: String,
    /// Where the kernel freed them (`function+0xoff`); none: anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

impl DropClaim {
    /// Drops of `reason` in namespace `netns`, wherever they were freed.
    pub fn reason(netns: u32, reason: &str) -> Self {
        Self {
            netns,
            reason: reason.to_string(),
            location: None,
        }
    }

    /// Drops of `reason` freed at `location` in namespace `netns`.
    pub fn at(netns: u32, reason: &str, location: &str) -> Self {
        Self {
            netns,
            reason: reason.to_string(),
            location: Some(location.to_string()),
        }
    }

    /// Whether it covers a drop of `reason` at `location` in `netns`.
    pub fn covers(&self, netns: u32, reason: &str, location: &str) -> bool {
        self.netns == netns
            && self.reason == reason
            && self.location.as_deref().is_none_or(|l| l == location)
    }
}

impl Finding {
    /// The finding as text for a terminal: every string shown [`printable`], since names in
    /// it (and everything in a replayed recording) are someone else's.
    pub fn render(&self) -> String {
        let mut out = format!(
            "FINDING {} [{}, {} confidence] ({}): {}\n",
            printable(&self.id),
            self.severity.name(),
            self.confidence.name(),
            printable(&self.scope.to_string()),
            printable(&self.title)
        );
        for e in &self.evidence {
            out.push_str(&format!(
                "  evidence: {} [{}]\n",
                printable(&e.text),
                printable(&e.source)
            ));
        }
        for f in &self.fix {
            out.push_str(&format!("  fix: {}\n", printable(f)));
        }
        out
    }

    /// Whether any evidence line contains `needle` (what tests look for).
    pub fn shows(&self, needle: &str) -> bool {
        self.evidence.iter().any(|e| e.text.contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_strings_render_on_their_own_lines_with_no_control_character() {
        let hostile = "rel_a\x1b]0;pwned\x07\nFAKE netdoc: no problems found";
        let f = Finding {
            explains: Vec::new(),
            id: "udp_no_listener".into(),
            severity: Severity::Warning,
            confidence: Confidence::High,
            title: format!("title {hostile}"),
            scope: Scope::new(ScopeKind::Namespace, hostile),
            affected: 1,
            evidence: vec![Evidence::new(hostile, "\u{9b}2J")],
            fix: vec![hostile.into()],
        };
        let escaped = r"rel_a\x1b]0;pwned\x07\nFAKE netdoc: no problems found";
        assert_eq!(
            f.render(),
            format!(
                "FINDING udp_no_listener [warning, high confidence] (namespace {escaped}): title {escaped}\n  evidence: {escaped} [\\u{{9b}}2J]\n  fix: {escaped}\n"
            )
        );
    }

    #[test]
    fn scope_kind_names_are_the_schemas() {
        for kind in [
            ScopeKind::Host,
            ScopeKind::Namespace,
            ScopeKind::Flow,
            ScopeKind::Listener,
            ScopeKind::Socket,
            ScopeKind::Cpu,
            ScopeKind::NicQueue,
        ] {
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::from(kind.name())
            );
        }
    }
}
