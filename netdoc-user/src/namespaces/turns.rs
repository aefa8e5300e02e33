//! Which namespaces a tick reads. Entering a namespace and reading its counters costs about half
//! a millisecond (the kernel formats whole files); on a node with 200 container namespaces,
//! reading every one each second kept `netdoc drops` busy for 12% of a CPU. So a tick reads the
//! namespaces where drops or retransmits showed activity since the last one, and the next few
//! of the others in turn: a namespace whose only trouble the kernel counts without freeing a
//! packet (a SYN refused at a full listen queue) is still read every few seconds. The start
//! and the end of a run read every namespace.
use std::collections::BTreeSet;

/// Inodes of the namespaces with activity since the last tick. An inode, not a cookie:
/// retransmit flows carry only the inode, and a reused inode costs one extra reading at worst.
pub type Activity = BTreeSet<u32>;

/// Namespaces without activity read per tick, in turn.
const IN_TURN: usize = 8;

/// A round-robin over the namespaces without activity.
#[derive(Debug, Default)]
pub struct Turns {
    /// The inode read last in turn: the next turn starts after it.
    last: Option<u32>,
}

impl Turns {
    /// Of `candidates` (inodes), those a tick reads: every active one and the next
    /// [`IN_TURN`] others after the last turn, wrapping around.
    pub fn pick(&mut self, candidates: impl Iterator<Item = u32>, active: &Activity) -> Activity {
        let candidates: BTreeSet<u32> = candidates.collect();
        let others: Vec<u32> = candidates.difference(active).copied().collect();
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
            .intersection(active)
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
