//! Per-namespace series under a cap. The first `cap` namespaces seen get series of their own and
//! keep them while they live; later ones are folded into `netns="other"` and counted. A
//! namespace that goes away takes its series with it, except that what a folded one counted
//! stays in `other`, and so does what the kernel counted for one with series of its own after
//! the last scrape that showed them: every counter stays monotonic and every drop is shown once.
use std::collections::{BTreeMap, BTreeSet};

use super::exposition::{Kind, Label, Sample};
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
    pub kind: Kind,
    /// Its labels besides the namespace's.
    pub labels: Vec<Label>,
    pub value: f64,
    /// A count the kernel keeps after its namespace has gone (until a scan misses it).
    pub outlives: bool,
    /// The last value of a kernel count, taken out of the kernel's map because its namespace
    /// has gone: a later count with the same labels starts again from zero.
    pub last: bool,
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
    /// Live namespaces with series of their own: the name they were labelled by, and their
    /// labels.
    own: BTreeMap<NetnsKey, (Named, Vec<Label>)>,
    /// Namespaces folded into `other` (live, or gone with kernel counts still to come).
    folded: BTreeSet<NetnsKey>,
    /// Namespaces that had series of their own and went: what their kernel counts grew by
    /// since the last scrape is credited to `other`.
    departed: BTreeSet<NetnsKey>,
    /// How much of each folded counter series is already in `other`, and of each count that
    /// outlives its namespace already shown in that namespace's own series.
    credited: BTreeMap<(NetnsKey, SeriesKey), f64>,
    /// The counters of `netns="other"`.
    other: BTreeMap<SeriesKey, f64>,
    /// Namespaces ever folded.
    pub folded_total: u64,
}

impl NamespaceSlots {
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            own: BTreeMap::new(),
            folded: BTreeSet::new(),
            departed: BTreeSet::new(),
            credited: BTreeMap::new(),
            other: BTreeMap::new(),
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
        self.learn_cookies(live);
        let live_keys: BTreeSet<NetnsKey> = live.iter().map(|n| (n.inode, n.cookie)).collect();
        // The gone first: their slots and names are free for the new.
        for key in self.own.keys().filter(|k| !live_keys.contains(k)) {
            self.departed.insert(*key);
        }
        self.own.retain(|k, _| live_keys.contains(k));
        self.assign(live);
        let sampled: BTreeSet<NetnsKey> = samples.iter().map(|s| s.netns).collect();
        let mut out: BTreeMap<&'static str, Vec<Sample>> = BTreeMap::new();
        let mut gauges: BTreeMap<SeriesKey, f64> = BTreeMap::new();
        for s in samples {
            if let Some((_, ns_labels)) = self.own.get(&s.netns) {
                if s.outlives {
                    self.credited
                        .insert((s.netns, (s.metric, s.labels.clone())), s.value);
                }
                let mut labels = ns_labels.clone();
                labels.extend(s.labels);
                out.entry(s.metric).or_default().push(Sample {
                    labels,
                    value: s.value,
                });
            } else if self.departed.contains(&s.netns) {
                // Its series went with it; what it counted after the scrape that last showed
                // them (a drop in its last moments, or counted late) is shown in other.
                if s.outlives {
                    self.credit(s);
                }
            } else if s.kind == Kind::Gauge {
                // The fullest folded namespace: a sum of tables (or of one global limit) would
                // hide the one that is full.
                if self.folded.contains(&s.netns) && live_keys.contains(&s.netns) {
                    let g = gauges.entry((s.metric, s.labels)).or_default();
                    *g = g.max(s.value);
                }
            } else if self.folded.contains(&s.netns) || s.last {
                // A folded namespace's counts, or the last count of one never seen alive
                // (made and gone between two scans).
                self.credit(s);
            }
            // Else a namespace not seen yet: it is named at the next scan, and counted then.
        }
        // A namespace gone with nothing left to report is forgotten.
        let done = |k: &NetnsKey| live_keys.contains(k) || sampled.contains(k);
        self.folded.retain(done);
        self.departed.retain(done);
        self.credited.retain(|(k, _), _| done(k));
        for ((metric, labels), value) in self.other.iter().chain(&gauges) {
            let mut all = other_labels();
            all.extend(labels.iter().cloned());
            out.entry(metric).or_default().push(Sample {
                labels: all,
                value: *value,
            });
        }
        out
    }

    /// A namespace first seen without its cookie (its holder left before it was read), whose
    /// cookie is known now, keeps its slot and credits under its full key.
    fn learn_cookies(&mut self, live: &[NetnsRef]) {
        for n in live {
            let (Some(_), was) = (n.cookie, (n.inode, None)) else {
                continue;
            };
            let now = (n.inode, n.cookie);
            if let Some(slot) = self.own.remove(&was) {
                self.own.insert(now, slot);
            }
            if self.folded.remove(&was) {
                self.folded.insert(now);
            }
            let moved: Vec<_> = self
                .credited
                .keys()
                .filter(|(k, _)| *k == was)
                .cloned()
                .collect();
            for key in moved {
                if let Some(v) = self.credited.remove(&key) {
                    self.credited.insert((now, key.1), v);
                }
            }
        }
    }

    /// Gives each newly seen live namespace a slot of its own while there is room, else folds
    /// it; one renamed since is labelled anew.
    fn assign(&mut self, live: &[NetnsRef]) {
        let mut order: Vec<&NetnsRef> = live.iter().collect();
        order.sort_by_key(|n| n.kind != NetnsKind::Host);
        for n in order {
            let key = (n.inode, n.cookie);
            let named = (n.name.clone(), n.pod.clone());
            if self.own.get(&key).is_some_and(|(was, _)| *was != named) {
                self.own.remove(&key);
            }
            if self.own.contains_key(&key) || self.folded.contains(&key) {
                continue;
            }
            if self.own.len() < self.cap {
                let labels = self.labels_for(n);
                self.own.insert(key, (named, labels));
            } else {
                self.folded.insert(key);
                self.folded_total += 1;
            }
        }
    }

    /// Adds to `other` what a folded counter grew by since it was last credited.
    fn credit(&mut self, s: NetnsSample) {
        let series = (s.metric, s.labels);
        let key = (s.netns, series.clone());
        let credited = self.credited.get(&key).copied().unwrap_or(0.0);
        if s.value > credited {
            *self.other.entry(series).or_default() += s.value - credited;
        }
        match s.last {
            true => self.credited.remove(&key),
            false => self.credited.insert(key, s.value.max(credited)),
        };
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
            kind: Kind::Counter,
            labels: vec![("reason", "NO_SOCKET".into())],
            value,
            outlives: true,
            last: false,
        }
    }

    /// The last count of a key the kernel's map let go.
    fn last_drops(n: &NetnsRef, value: f64) -> NetnsSample {
        NetnsSample {
            last: true,
            ..drops(n, value)
        }
    }

    fn entries(n: &NetnsRef, value: f64) -> NetnsSample {
        NetnsSample {
            metric: "netdoc_entries",
            kind: Kind::Gauge,
            labels: vec![],
            outlives: false,
            ..drops(n, value)
        }
    }

    fn gauge_of(out: &BTreeMap<&str, Vec<Sample>>, netns: &str) -> Option<f64> {
        out.get("netdoc_entries")?
            .iter()
            .find(|s| s.labels[0].1 == netns)
            .map(|s| s.value)
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
    fn a_namespace_never_seen_alive_counts_in_other_once_its_count_is_let_go() {
        let mut slots = NamespaceSlots::new(10);
        let brief = ns(9, "brief");
        let out = slots.place(&[], vec![drops(&brief, 2.0)]);
        assert_eq!(
            value_of(&out, OTHER),
            None,
            "not seen yet: it may be named at the next scan"
        );
        let out = slots.place(&[], vec![last_drops(&brief, 3.0)]);
        assert_eq!(value_of(&out, OTHER), Some(3.0));
        let out = slots.place(&[], vec![]);
        assert_eq!(value_of(&out, OTHER), Some(3.0));
    }

    #[test]
    fn a_namespace_seen_late_gets_its_whole_count_in_its_own_series() {
        let mut slots = NamespaceSlots::new(10);
        let late = ns(9, "late");
        let out = slots.place(&[], vec![drops(&late, 2.0)]);
        assert_eq!(value_of(&out, "late"), None);
        let out = slots.place(std::slice::from_ref(&late), vec![drops(&late, 4.0)]);
        assert_eq!(value_of(&out, "late"), Some(4.0));
        assert_eq!(value_of(&out, OTHER), None, "nothing counted twice");
    }

    #[test]
    fn the_last_counts_of_gone_namespaces_are_counted_once() {
        let mut slots = NamespaceSlots::new(1);
        let (a, b) = (ns(1, "a"), ns(2, "b"));
        slots.place(
            &[a.clone(), b.clone()],
            vec![drops(&a, 1.0), drops(&b, 2.0)],
        );
        // Both go; the next scrape still finds their keys, the one after takes them out.
        let out = slots.place(&[], vec![drops(&a, 1.0), drops(&b, 3.0)]);
        assert_eq!(value_of(&out, "a"), None, "a's series went with it");
        assert_eq!(value_of(&out, OTHER), Some(3.0));
        let out = slots.place(&[], vec![last_drops(&a, 5.0), last_drops(&b, 4.0)]);
        assert_eq!(
            value_of(&out, OTHER),
            Some(8.0),
            "b's last count adds what it grew by, and a's what it grew by since its series showed 1"
        );
        let out = slots.place(&[], vec![]);
        assert_eq!(value_of(&out, OTHER), Some(8.0));
        assert_eq!(slots.counts(), (0, 0), "nothing kept of gone namespaces");
        assert!(slots.credited.is_empty() && slots.departed.is_empty());
    }

    #[test]
    fn a_drop_counted_after_a_namespaces_last_scrape_is_shown_once_in_other() {
        // The scrape gives it a series before its drop is counted (the softirq that drops
        // ran late); it goes before the next scrape, whose kernel count has the drop.
        let mut slots = NamespaceSlots::new(10);
        let (brief, shown) = (ns(7, "brief"), ns(8, "shown"));
        let out = slots.place(
            &[brief.clone(), shown.clone()],
            vec![drops(&shown, 2.0), entries(&shown, 5.0)],
        );
        assert_eq!(value_of(&out, "brief"), None);
        assert_eq!(value_of(&out, "shown"), Some(2.0));
        let out = slots.place(&[], vec![drops(&brief, 1.0), drops(&shown, 2.0)]);
        assert_eq!(value_of(&out, "brief"), None, "its series went with it");
        assert_eq!(
            value_of(&out, OTHER),
            Some(1.0),
            "the drop no scrape showed; not what shown's series did"
        );
        let out = slots.place(&[], vec![last_drops(&brief, 1.0), last_drops(&shown, 3.0)]);
        assert_eq!(value_of(&out, OTHER), Some(2.0), "each drop once");
        let out = slots.place(&[], vec![]);
        assert_eq!(value_of(&out, OTHER), Some(2.0));
        assert!(slots.departed.is_empty() && slots.credited.is_empty());
    }

    #[test]
    fn other_shows_the_fullest_folded_namespace_while_it_lives() {
        let mut slots = NamespaceSlots::new(1);
        let (a, b, c) = (ns(1, "a"), ns(2, "b"), ns(3, "c"));
        let out = slots.place(
            &[a.clone(), b.clone(), c.clone()],
            vec![entries(&a, 1.0), entries(&b, 2.0), entries(&c, 3.0)],
        );
        assert_eq!(gauge_of(&out, OTHER), Some(3.0));
        let out = slots.place(
            &[a.clone(), b.clone()],
            vec![entries(&a, 1.0), entries(&b, 2.0)],
        );
        assert_eq!(gauge_of(&out, OTHER), Some(2.0), "c's entries went with it");
    }

    #[test]
    fn a_namespace_replaced_within_one_scrape_takes_the_freed_slot_and_name() {
        let mut slots = NamespaceSlots::new(1);
        let old = ns(1, "web-0");
        slots.place(std::slice::from_ref(&old), vec![drops(&old, 4.0)]);
        let new = ns(2, "web-0");
        let out = slots.place(std::slice::from_ref(&new), vec![drops(&new, 1.0)]);
        assert_eq!(value_of(&out, "web-0"), Some(1.0), "the same series, reset");
        assert_eq!(value_of(&out, OTHER), None);
    }

    #[test]
    fn a_cookie_learned_late_keeps_the_slot_and_what_was_credited() {
        let mut slots = NamespaceSlots::new(1);
        let a = ns(1, "a");
        let unread = NetnsRef {
            cookie: None,
            ..ns(2, "b")
        };
        slots.place(
            &[a.clone(), unread.clone()],
            vec![drops(&a, 1.0), drops(&unread, 5.0)],
        );
        let read = ns(2, "b");
        let out = slots.place(
            &[a.clone(), read.clone()],
            vec![drops(&a, 1.0), drops(&read, 6.0)],
        );
        assert_eq!(
            value_of(&out, OTHER),
            Some(6.0),
            "credited once, not again from zero"
        );
        assert_eq!(slots.counts(), (1, 1));
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
