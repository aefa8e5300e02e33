//! The contract every probe family implements. Families sit below the session and the
//! commands and never use each other; `session::registry` names them all.
use crate::{loader::Configs, planner::Candidate};

/// What a probe family tells the session about the running kernel: the hooks it could attach
/// to and its part of the object's read-only config. Its maps and records are typed in its own
/// module; the session takes and streams them.
pub trait Family {
    /// Each probe's candidate hooks, best first: what the planner tries and `netdoc probes`
    /// lists.
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)>;
    /// Writes this family's config global (offsets from BTF and tracefs formats).
    fn configure(&self, configs: &mut Configs);
}
