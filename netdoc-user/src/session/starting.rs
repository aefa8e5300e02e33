//! What a family sees of a session while it starts: the loaded object, the streams, the
//! planner, the components attached so far, and a place to keep what it took.
use std::{
    any::{Any, TypeId},
    collections::{BTreeSet, HashMap},
};

use anyhow::{Context as _, Result};
use aya::{Btf, Ebpf};

use super::{
    Component, Namespaces, Request, Stages,
    stream::{StreamKind, Streamed, Streams},
};
use crate::planner::{self, Candidate, ProbePlan};

/// What the families of a session took out of the object (their maps, the sentinels' links),
/// one value per type: a command reads a family's maps by their type.
#[derive(Default)]
pub struct Parts(HashMap<TypeId, Box<dyn Any + Send>>);

impl Parts {
    pub fn insert<T: Any + Send>(&mut self, part: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(part));
    }

    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>())?.downcast_ref()
    }

    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    pub fn remove<T: Any>(&mut self) -> Option<T> {
        let part = self.0.remove(&TypeId::of::<T>())?;
        part.downcast().ok().map(|b| *b)
    }
}

/// A session being started, as the families see it in [`crate::family::Family::open`] and
/// [`crate::family::Family::attach`].
pub struct Starting<'a> {
    pub ebpf: &'a mut Ebpf,
    pub(super) streams: &'a mut Streams,
    pub(super) btf: Option<&'a Btf>,
    pub(super) plans: &'a mut Vec<ProbePlan>,
    pub(super) parts: &'a mut Parts,
    pub(super) attached: &'a mut BTreeSet<Component>,
    pub(super) stages: &'a mut Stages,
    /// The host's namespaces, as the session follows them.
    pub namespaces: &'a Namespaces,
    /// Ring buffer pages per CPU for each stream.
    pub(super) pages: usize,
}

impl Starting<'_> {
    /// Opens the stream of `T` records through the per-CPU ring array `map`.
    pub fn open_stream<T: Streamed>(&mut self, map: &str) -> Result<()> {
        let array = self
            .ebpf
            .take_map(map)
            .with_context(|| format!("{map} map"))?;
        self.streams.open::<T>(array, self.pages)
    }

    /// Closes a stream whose program did not attach.
    pub fn close_stream(&mut self, kind: StreamKind) {
        self.streams.close(kind);
    }

    /// Attaches `probe` through the best candidate this kernel accepts (the plan is recorded
    /// either way); whether one did.
    pub fn attach(&mut self, probe: &'static str, candidates: Vec<Candidate>) -> bool {
        let plan = planner::attach_best(self.ebpf, probe, candidates, self.btf);
        let attached = plan.chosen().is_some();
        self.plans.push(plan);
        attached
    }

    /// Records that `component` runs: the families after this one, and the commands, rely on
    /// it.
    pub fn attached(&mut self, component: Component) {
        self.attached.insert(component);
    }

    pub fn is_attached(&self, component: Component) -> bool {
        self.attached.contains(&component)
    }

    /// Whether the conntrack confirm hook attached where `request` lets it replace its
    /// stand-ins (the drop program and the stage sentinels): they then stay out.
    pub fn confirm_covers(&self, request: &Request) -> bool {
        request.stand_in_for_confirm && self.is_attached(Component::ConntrackConfirm)
    }

    /// Keeps `part` for the session's lifetime (the maps of a family that attached).
    pub fn keep<T: Any + Send>(&mut self, part: T) {
        self.parts.insert(part);
    }

    /// Lets go of a part kept in `open` whose probe attached nowhere.
    pub fn discard<T: Any>(&mut self) {
        self.parts.remove::<T>();
    }

    pub fn has<T: Any>(&self) -> bool {
        self.parts.get::<T>().is_some()
    }

    /// Whether the stage sentinels run, and what they tell apart.
    pub fn set_stages(&mut self, stages: Stages) {
        *self.stages = stages;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_found_by_type() {
        let mut parts = Parts::default();
        parts.insert(7u32);
        parts.insert("seven");
        assert_eq!(parts.get::<u32>(), Some(&7));
        *parts.get_mut::<u32>().unwrap() += 1;
        assert_eq!(parts.remove::<u32>(), Some(8));
        assert_eq!(parts.get::<u32>(), None);
        assert_eq!(parts.get::<&str>(), Some(&"seven"));
    }
}
