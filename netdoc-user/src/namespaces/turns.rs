//! Which namespaces a tick reads. Entering a namespace and reading its counters costs about half
//! a millisecond (the kernel formats whole files); on a node with 200 container namespaces,
//! reading every one each second kept `netdoc drops` busy for 12% of a CPU. So a tick reads the
//! namespaces where drops or retransmits showed activity since the last one, those whose
//! counters grew in the last few readings, and the next eight of the others in turn: each
//! namespace is read at least every ⌈N/8⌉ ticks (25 with 200), so one whose only trouble the
//! kernel counts without freeing a packet (a SYN refused at a full listen queue) is found by
//! its turn and then followed every tick. The start and the end of a run read every namespace.
use std::collections::{BTreeMap, BTreeSet};

/// Inodes of the namespaces with activity since the last tick. An inode, not a cookie:
/// retransmit flows carry only the inode, and a reused inode costs one extra reading at worst.
pub type Activity = BTreeSet<u32>;

/// Namespaces without activity read per tick, in turn.
const IN_TURN: usize = 8;

/// Ticks a namespace stays read after its counters grew.
const AFTER_GROWTH: u8 = 10;

/// A round-robin over the namespaces without activity.
#[derive(Debug, Default)]
pub struct Turns {
    /// The inode read last in turn: the next turn starts after it.
    last: Option<u32>,
    /// Namespaces whose counters grew lately, and how many more ticks they are read for.
    lately: BTreeMap<u32, u8>,
}

impl Turns {
    /// A reading of namespace `inode` found its counters grown: it is read every tick for a
    /// while.
    pub fn grew(&mut self, inode: u32) {
        self.lately.insert(inode, AFTER_GROWTH);
    }

    /// Of `candidates` (inodes), those a tick reads: every active one, every one that grew
    /// lately, and the next [`IN_TURN`] others after the last turn, wrapping around.
    pub fn pick(&mut self, candidates: impl Iterator<Item = u32>, active: &Activity) -> Activity {
        let candidates: BTreeSet<u32> = candidates.collect();
        let active: Activity = active.iter().chain(self.lately.keys()).copied().collect();
        self.lately.retain(|_, ticks| {
            *ticks -= 1;
            *ticks > 0
        });
        let others: Vec<u32> = candidates.difference(&active).copied().collect();
        let start = self
            .last
            .map_or(0, |last| others.partition_point(|i| *i <= last));
        let in_turn: Vec<u32> = others
            .iter()
            .cycle()
            .skip(start)
            .take(IN_TURN.min(others.len()))
            .copied()
            .collect();
        if let Some(last) = in_turn.last() {
            self.last = Some(*last);
        }
        candidates
            .intersection(&active)
            .copied()
            .chain(in_turn)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn few_namespaces_are_all_read_every_tick() {
        let mut turns = Turns::default();
        for _ in 0..3 {
            let picked = turns.pick([7, 3, 5].into_iter(), &Activity::new());
            assert_eq!(picked, Activity::from([3, 5, 7]));
        }
    }

    #[test]
    fn the_others_take_turns_and_the_active_are_always_read() {
        let mut turns = Turns::default();
        let candidates = || 100..120u32;
        let active = Activity::from([101, 150]);
        let first = turns.pick(candidates(), &active);
        // The active one among the candidates, and the first eight others.
        assert_eq!(
            first,
            Activity::from([100, 101, 102, 103, 104, 105, 106, 107, 108])
        );
        let second = turns.pick(candidates(), &Activity::new());
        assert_eq!(second, (109..=116).collect());
        let third = turns.pick(candidates(), &Activity::new());
        assert_eq!(third, [117, 118, 119, 100, 101, 102, 103, 104].into());
    }

    #[test]
    fn a_namespace_whose_counters_grew_is_read_every_tick_for_a_while() {
        let mut turns = Turns::default();
        let candidates = || 1..=100u32;
        turns.grew(50);
        for tick in 0..AFTER_GROWTH {
            let picked = turns.pick(candidates(), &Activity::new());
            assert!(picked.contains(&50), "tick {tick}");
            assert_eq!(picked.len(), IN_TURN + 1);
        }
        // Then only in its turn again, which the ten ticks of others moved past it.
        let next = turns.pick(candidates(), &Activity::new());
        assert!(!next.contains(&50), "{next:?}");
    }

    #[test]
    fn a_turn_goes_on_after_its_last_namespace_is_gone() {
        let mut turns = Turns::default();
        turns.pick((1..=10).map(|i| i * 10), &Activity::new());
        // 80 was read last; it and its neighbours went away.
        let next = turns.pick([10, 20, 30, 100].into_iter(), &Activity::new());
        assert_eq!(next, Activity::from([10, 20, 30, 100]));
        // The turn wrapped around to 30: the next one starts after it.
        let next = turns.pick((1..=20).map(|i| i * 10), &Activity::new());
        assert_eq!(next, (4..=11).map(|i| i * 10).collect());
    }
}
