//! Per-namespace series under a cap. The first `cap` namespaces seen get series of their own and
//! keep them while they live; later ones are folded into `netns="other"` and counted. A
//! namespace that goes away takes its series with it, except that what a folded one counted
//! stays in `other`, so every counter stays monotonic.
use std::collections::{BTreeMap, BTreeSet};

use super::exposition::{Label, Sample};
use crate::{
    facts::cgroup::Pod,
    namespaces::{NetnsKey, NetnsKind, NetnsRef},
};

/// The `netns` label of every folded namespace.
pub const OTHER: &str = "other";

/// One value of one namespace, before placement.
#[derive(Debug, Clone, PartialEq)]
pub struct NetnsSample {
    pub netns: NetnsKey,
    pub metric: &'static str,
    /// Its labels besides the namespace's.
    pub labels: Vec<Label>,
    pub value: f64,
}

/// What a namespace's labels were made from: a namespace named late (a runtime names it just
/// after making it) is labelled anew.
type Named = (String, Option<Pod>);

/// A series with the namespace's labels left out.
type SeriesKey = (&'static str, Vec<Label>);

/// Which namespaces have series of their own, across scrapes.
#[derive(Debug)]
pub struct NamespaceSlots {
    cap: usize,
    /// Namespaces with series of their own: the name they were labelled by, and their labels.
    own: BTreeMap<NetnsKey, (Named, Vec<Label>)>,
    /// Folded namespaces and their last values.
    folded: BTreeMap<NetnsKey, Vec<(SeriesKey, f64)>>,
    /// What folded namespaces counted before they went away.
    retired: BTreeMap<SeriesKey, f64>,
    /// Namespaces ever folded.
    pub folded_total: u64,
}

impl NamespaceSlots {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            own: BTreeMap::new(),
            folded: BTreeMap::new(),
            retired: BTreeMap::new(),
            folded_total: 0,
        }
    }

    /// Namespaces with series of their own, and folded ones, now.
    pub fn counts(&self) -> (usize, usize) {
        (self.own.len(), self.folded.len())
    }

    /// Places `samples` among the namespaces `live` now (the host's first): each metric's
    /// samples with the namespace labels filled in.
    pub fn place(
        &mut self,
        live: &[NetnsRef],
        samples: Vec<NetnsSample>,
    ) -> BTreeMap<&'static str, Vec<Sample>> {
        let mut order: Vec<&NetnsRef> = live.iter().collect();
        order.sort_by_key(|n| n.kind != NetnsKind::Host);
        for n in order {
            let key = (n.inode, n.cookie);
            let named = (n.name.clone(), n.pod.clone());
            if self.own.get(&key).is_some_and(|(was, _)| *was != named) {
                self.own.remove(&key);
            }
            if self.own.contains_key(&key) || self.folded.contains_key(&key) {
                continue;
            }
            if self.own.len() < self.cap {
                let labels = self.labels_for(n);
                self.own.insert(key, (named, labels));
            } else {
                self.folded.insert(key, Vec::new());
                self.folded_total += 1;
            }
        }
        let live_keys: BTreeSet<NetnsKey> = live.iter().map(|n| (n.inode, n.cookie)).collect();
        let mut out: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        let mut last: BTreeMap<NetnsKey, Vec<(SeriesKey, f64)>> = BTreeMap::new();
        for s in samples {
            if let Some((_, ns_labels)) = self.own.get(&s.netns) {
                // A namespace of its own that has gone: its series go with it.
                if live_keys.contains(&s.netns) {
                    let mut labels = ns_labels.clone();
                    labels.extend(s.labels);
                    out.entry(s.metric).or_default().push(Sample {
                        labels,
                        value: s.value,
                    });
                }
            } else if self.folded.contains_key(&s.netns) {
                last.entry(s.netns)
                    .or_default()
                    .push(((s.metric, s.labels), s.value));
            } else {
                // Never seen alive (it came and went between two looks): still counted.
                *self.retired.entry((s.metric, s.labels)).or_default() += s.value;
            }
        }
        for (key, values) in last {
            self.folded.insert(key, values);
        }
        self.own.retain(|k, _| live_keys.contains(k));
        let gone: Vec<NetnsKey> = self
            .folded
            .keys()
            .filter(|k| !live_keys.contains(k))
            .copied()
            .collect();
        for key in gone {
            for (series, value) in self.folded.remove(&key).unwrap_or_default() {
                *self.retired.entry(series).or_default() += value;
            }
        }
        let mut other = self.retired.clone();
        for values in self.folded.values() {
            for (series, value) in values {
                *other.entry(series.clone()).or_default() += value;
            }
        }
        for ((metric, labels), value) in other {
            let mut all = other_labels();
            all.extend(labels);
            out.entry(metric)
                .or_default()
                .push(Sample { labels: all, value });
        }
        out
    }

    /// The namespace labels of `n`: its name (made unique among those with series), and its
    /// pod's namespace and name when it is a pod's.
    fn labels_for(&self, n: &NetnsRef) -> Vec<Label> {
        let taken = |name: &str| {
            name == OTHER
                || self
                    .own
                    .values()
                    .any(|(_, l)| l.first().is_some_and(|(_, v)| v == name))
        };
        let name = match taken(&n.name) {
            true => format!("{}#{}", n.name, n.inode),
            false => n.name.clone(),
        };
        let pod = n.pod.as_ref();
        vec![
            ("netns", name),
            (
                "pod_namespace",
                pod.and_then(|p| p.namespace.clone()).unwrap_or_default(),
            ),
            (
                "pod",
                pod.map(|p| p.name.clone().unwrap_or_else(|| p.uid.clone()))
                    .unwrap_or_default(),
            ),
        ]
    }
}

fn other_labels() -> Vec<Label> {
    vec![
        ("netns", OTHER.to_string()),
        ("pod_namespace", String::new()),
        ("pod", String::new()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(inode: u32, name: &str) -> NetnsRef {
        NetnsRef {
            inode,
            cookie: Some(inode as u64),
            ..NetnsRef::named(name)
        }
    }

    fn drops(n: &NetnsRef, value: f64) -> NetnsSample {
        NetnsSample {
            netns: (n.inode, n.cookie),
            metric: "netdoc_drops",
            labels: vec![("reason", "NO_SOCKET".into())],
            value,
        }
    }

    fn value_of(out: &BTreeMap<&str, Vec<Sample>>, netns: &str) -> Option<f64> {
        out.get("netdoc_drops")?
            .iter()
            .find(|s| s.labels[0].1 == netns)
            .map(|s| s.value)
    }

    #[test]
    fn namespaces_past_the_cap_fold_into_other_which_never_goes_down() {
        let mut slots = NamespaceSlots::new(2);
        let (a, b, c, d) = (ns(1, "a"), ns(2, "b"), ns(3, "c"), ns(4, "d"));
        let live = vec![a.clone(), b.clone(), c.clone(), d.clone()];
        let out = slots.place(
            &live,
            vec![
                drops(&a, 1.0),
                drops(&b, 2.0),
                drops(&c, 3.0),
                drops(&d, 4.0),
            ],
        );
        assert_eq!(value_of(&out, "a"), Some(1.0));
        assert_eq!(value_of(&out, "b"), Some(2.0));
        assert_eq!(value_of(&out, OTHER), Some(7.0));
        assert_eq!(slots.counts(), (2, 2));
        assert_eq!(slots.folded_total, 2);

        // c goes away after counting 5; d keeps counting; b goes away with its series.
        let live = vec![a.clone(), d.clone()];
        let out = slots.place(&live, vec![drops(&a, 1.0), drops(&c, 5.0), drops(&d, 6.0)]);
        assert_eq!(
            value_of(&out, "b"),
            None,
            "a vanished namespace's series are removed"
        );
        assert_eq!(value_of(&out, OTHER), Some(11.0));
        let out = slots.place(&live, vec![drops(&a, 1.0), drops(&d, 6.0)]);
        assert_eq!(
            value_of(&out, OTHER),
            Some(11.0),
            "other keeps what c counted"
        );

        // A slot freed by b goes to the next new namespace, not to a folded one.
        let e = ns(5, "e");
        let out = slots.place(&[a, d, e.clone()], vec![drops(&e, 1.0)]);
        assert_eq!(value_of(&out, "e"), Some(1.0));
        assert_eq!(slots.counts(), (2, 1));
    }

    #[test]
    fn a_namespace_never_seen_alive_still_counts_in_other() {
        let mut slots = NamespaceSlots::new(10);
        let out = slots.place(&[], vec![drops(&ns(9, "brief"), 2.0)]);
        assert_eq!(value_of(&out, OTHER), Some(2.0));
    }

    #[test]
    fn the_host_gets_a_slot_first_and_names_are_unique() {
        let mut slots = NamespaceSlots::new(2);
        let host = NetnsRef {
            kind: NetnsKind::Host,
            ..ns(1, "host")
        };
        let twin = ns(3, "a");
        let pod = NetnsRef {
            pod: Some(Pod {
                uid: "u1".into(),
                namespace: Some("default".into()),
                name: Some("web".into()),
            }),
            ..ns(2, "a")
        };
        let out = slots.place(
            &[pod.clone(), twin.clone(), host.clone()],
            vec![drops(&host, 1.0), drops(&pod, 2.0), drops(&twin, 3.0)],
        );
        assert_eq!(value_of(&out, "host"), Some(1.0));
        assert_eq!(value_of(&out, OTHER), Some(3.0), "twin came third: folded");
        let labels = &out["netdoc_drops"]
            .iter()
            .find(|s| s.value == 2.0)
            .unwrap()
            .labels;
        assert_eq!(
            labels[1..3],
            [("pod_namespace", "default".into()), ("pod", "web".into())]
        );

        let renamed = NetnsRef {
            name: "web-0".into(),
            ..host.clone()
        };
        let out = slots.place(&[renamed.clone(), pod.clone()], vec![drops(&renamed, 1.0)]);
        assert_eq!(
            value_of(&out, "web-0"),
            Some(1.0),
            "named late: labelled anew"
        );
        assert_eq!(value_of(&out, "host"), None);

        let mut roomy = NamespaceSlots::new(5);
        let out = roomy.place(&[pod.clone(), twin.clone()], vec![drops(&twin, 3.0)]);
        assert_eq!(
            value_of(&out, "a#3"),
            Some(3.0),
            "a second \"a\" is told apart"
        );
    }
}
