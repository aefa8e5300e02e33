//! `--stack`: the kernel stack of each streamed drop, read from the stack map by the id its
//! record carries and named from kallsyms, each distinct stack once.
use std::collections::HashMap;

use netdoc_common::NO_STACK;
use serde::{Deserialize, Serialize};

use super::DropMaps;
use crate::facts::kallsyms::Kallsyms;

pub struct Stacks {
    named: HashMap<u32, Vec<String>>,
    /// Records whose stack could not be taken (its bucket held another stack) or read.
    pub missing: u64,
    /// Records per stack id, over the run and since the live view last showed them.
    run: HashMap<u32, u64>,
    recent: HashMap<u32, u64>,
}

/// One kernel stack and how many delivered drops took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackCount {
    pub count: u64,
    /// From the function that dropped the packet outwards.
    pub frames: Vec<String>,
}

impl Stacks {
    pub fn new() -> Self {
        Self {
            named: HashMap::new(),
            missing: 0,
            run: HashMap::new(),
            recent: HashMap::new(),
        }
    }

    /// The `limit` stacks most drops took over the run.
    pub fn top(&self, limit: usize) -> Vec<StackCount> {
        self.ranked(&self.run, limit)
    }

    /// The `limit` stacks most drops took since the last call.
    pub fn take_recent(&mut self, limit: usize) -> Vec<StackCount> {
        let recent = std::mem::take(&mut self.recent);
        self.ranked(&recent, limit)
    }

    fn ranked(&self, counts: &HashMap<u32, u64>, limit: usize) -> Vec<StackCount> {
        let mut out: Vec<StackCount> = counts
            .iter()
            .filter_map(|(id, n)| {
                Some(StackCount {
                    count: *n,
                    frames: self.named.get(id)?.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.frames.cmp(&b.frames)));
        out.truncate(limit);
        out
    }

    /// The stack of a record, innermost frame first and the tracing machinery left out;
    /// `None` when stacks were not asked for, empty when this one is missing.
    pub fn of(&mut self, maps: &DropMaps, stack_id: i32) -> Option<Vec<String>> {
        if stack_id == NO_STACK {
            return None;
        }
        // Negative: the kernel's errno (EEXIST: the bucket holds another stack).
        let Ok(id) = u32::try_from(stack_id) else {
            self.missing += 1;
            return Some(Vec::new());
        };
        let named = match self.named.get(&id) {
            // Ids are kept by the kernel (nothing is deleted), so a known id is the same stack.
            Some(named) => named.clone(),
            None => {
                let Some(addrs) = maps.stack(id) else {
                    self.missing += 1;
                    return Some(Vec::new());
                };
                let frames = addrs
                    .iter()
                    .map(|a| match Kallsyms::shared() {
                        Some(k) => k.describe(*a),
                        None => format!("{a:#x}"),
                    })
                    .collect();
                let named = from_the_drop(frames);
                self.named.insert(id, named.clone());
                named
            }
        };
        *self.run.entry(id).or_default() += 1;
        *self.recent.entry(id).or_default() += 1;
        Some(named)
    }
}

/// The frames from the function that dropped the packet outwards: the tracepoint's and BPF's
/// own frames on top (and the JIT code kallsyms cannot name) are left out.
fn from_the_drop(frames: Vec<String>) -> Vec<String> {
    const MACHINERY: [&str; 7] = [
        "bpf_",
        "__bpf_",
        "___bpf_",
        "perf_",
        "trace_",
        "__traceiter_",
        "0x",
    ];
    let plumbing = frames
        .iter()
        .take_while(|f| MACHINERY.iter().any(|p| f.starts_with(p)))
        .count();
    frames.into_iter().skip(plumbing).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracepoint_and_bpf_frames_are_left_out() {
        let frames = [
            "bpf_prog_4e3f8c1d2a_kfree_skb_btf+0x2c1",
            "0xffffffffc0a1b2c3",
            "bpf_trace_run3+0x8c",
            "__bpf_trace_kfree_skb+0x9",
            "sk_skb_reason_drop+0x98",
            "__udp4_lib_rcv+0x4bc",
            "ip_protocol_deliver_rcu+0xc4",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            from_the_drop(frames),
            [
                "sk_skb_reason_drop+0x98",
                "__udp4_lib_rcv+0x4bc",
                "ip_protocol_deliver_rcu+0xc4"
            ]
        );
    }

    #[test]
    fn a_stack_without_machinery_is_kept_whole() {
        let frames = vec![
            "kfree_skb_reason+0x1".to_string(),
            "udp_rcv+0x2".to_string(),
        ];
        assert_eq!(from_the_drop(frames.clone()), frames);
    }
}
