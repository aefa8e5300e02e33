//! A diagnosis: what is wrong, the measurements that show it, and what to do. Every probe
//! family's correlation produces these; renderers only print them.
use std::borrow::Cow;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    /// Stable identifier of the incident class, e.g. `net_rx_single_queue_saturation`.
    pub id: Cow<'static, str>,
    /// One line naming the root cause.
    pub title: String,
    /// Where it happened, when not host-wide: `namespace NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    pub evidence: Vec<String>,
    pub fix: Vec<String>,
}

impl Finding {
    pub fn render(&self) -> String {
        let mut out = match &self.scope {
            Some(scope) => format!("FINDING {} ({scope}): {}\n", self.id, self.title),
            None => format!("FINDING {}: {}\n", self.id, self.title),
        };
        for e in &self.evidence {
            out.push_str(&format!("  evidence: {e}\n"));
        }
        for f in &self.fix {
            out.push_str(&format!("  fix: {f}\n"));
        }
        out
    }
}
