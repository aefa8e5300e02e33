//! Empty programs on the drop hook: the overhead floor `cargo xtask bench` compares against.
use aya_ebpf::{
    macros::btf_tracepoint,
    programs::{BtfTracePointContext, TracePointContext},
};

#[btf_tracepoint(function = "kfree_skb")]
pub fn floor_kfree_skb_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

tracepoint! {
    /// Returns 1 so perf consumers of the same tracepoint still see the event.
    pub fn floor_kfree_skb_tp(_ctx: TracePointContext) -> u32 {
        1
    }
}
