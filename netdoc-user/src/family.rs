//! The contract every probe family implements. Families sit below the session and the
//! commands and never use each other; `session::registry` names them all, in the order a
//! session starts them.
use anyhow::Result;

use crate::{
    loader::ObjectSettings,
    planner::Candidate,
    session::{Request, starting::Starting},
};

/// A probe family: what it finds in the running kernel, its part of netdoc's object, and how a
/// session sets it up. Its maps and records are typed in its own module; the session keeps the
/// maps it took (see [`Starting::keep`]) for the commands to read.
pub trait Family {
    /// Each probe's candidate hooks, best first: what the planner tries and `netdoc probes`
    /// lists.
    fn probes(&self) -> Vec<(&'static str, Vec<Candidate>)>;
    /// Whether `request` asks for any of this family.
    fn wanted(&self, request: &Request) -> bool;
    /// Its config global (offsets from BTF and tracefs formats, what `request` asks) and the
    /// sizes of its maps, before the object loads. Called whether or not it is wanted: the
    /// object loads whole. None by default.
    fn prepare(&self, _request: &Request, _object: &mut ObjectSettings) -> Result<()> {
        Ok(())
    }
    /// Takes its maps and opens its streams, before the streams are read and before any
    /// family attaches. Only when wanted; nothing by default.
    fn open(&self, _request: &Request, _s: &mut Starting<'_>) -> Result<()> {
        Ok(())
    }
    /// Attaches its probes through the planner, in the registry's order, keeping its maps only
    /// where they attached. Only when wanted.
    fn attach(&self, request: &Request, s: &mut Starting<'_>) -> Result<()>;
}
