//! `skb:kfree_skb`: count every drop per CPU by (reason, location), optionally stream a record.
use core::ptr;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_map, btf_tracepoint, map},
    maps::{HashMap, PerCpuArray, PerCpuHashMap, StackTrace},
    programs::{BtfTracePointContext, TracePointContext, tracing::StackIdContext},
};
use netdoc_common::{
    CountSlot, DROP_COUNT_KEYS, DROP_COUNT_SLOTS, DropConfig, DropEvent, DropKey, EventHeader,
    NO_STACK, REASON_UNAVAILABLE, conntrack::stage, context, filter, stat,
};

use crate::{emit, read};

/// Set by userspace before load; read-only, so the verifier prunes what the kernel lacks.
#[unsafe(no_mangle)]
static DROP_CONFIG: DropConfig = DropConfig::EMPTY;

/// Reads one field of DROP_CONFIG. Volatile so the compiler cannot fold the placeholder
/// value; field by field so the 112-byte struct is never copied onto the 512-byte stack.
macro_rules! config {
    ($($field:tt)+) => {
        unsafe { ptr::read_volatile(ptr::addr_of!(DROP_CONFIG.$($field)+)) }
    };
}

#[map]
static DROP_COUNTS: PerCpuHashMap<DropKey, u64> =
    PerCpuHashMap::with_max_entries(DROP_COUNT_KEYS, 0);

/// The per-CPU count cache in front of DROP_COUNTS (see [`DROP_COUNT_SLOTS`]).
#[map]
static DROP_COUNT_CACHE: PerCpuArray<CountSlot> =
    PerCpuArray::with_max_entries(DROP_COUNT_SLOTS, 0);

/// Streamed drops each reason had sampled out by the per-CPU budget (value: count).
#[map]
static DROP_SAMPLED: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(256, 0);

#[map]
static DROP_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Reasons to keep when the reason filter is on (value unused).
#[map]
static DROP_REASON_FILTER: HashMap<u32, u8> = HashMap::with_max_entries(256, 0);

/// Where a record is built: too large for the BPF stack next to everything else.
#[map]
static SCRATCH: PerCpuArray<DropEvent> = PerCpuArray::with_max_entries(1, 0);

/// `struct sk_buff`'s first bytes and a packet's first header bytes, each copied with one read:
/// a helper call per field was most of what streaming cost per drop.
/// Aligned like the kernel's own structs, so a naturally aligned field is read with one load.
#[repr(C, align(8))]
pub struct Copies {
    skb: [u8; SKB_BYTES],
    headers: [u8; HEADER_BYTES],
}

/// Every `sk_buff` field a record needs lies in its first 256 bytes on the kernels netdoc knows;
/// a field beyond them is read on its own.
const SKB_BYTES: usize = 256;
/// An IPv4 header with the most options (60 bytes) or an IPv6 header (40), then the ports (4).
const HEADER_BYTES: usize = 64;

#[map]
static COPIES: PerCpuArray<Copies> = PerCpuArray::with_max_entries(1, 0);

#[btf_map]
static DROP_EVENTS: emit::Rings<DropEvent> = emit::Rings::new();

/// Kernel stacks of streamed drops (`--stack`). One bucket unless asked for: userspace sizes
/// it before load.
#[map]
static DROP_STACKS: StackTrace = StackTrace::with_max_entries(1, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// tp_btf on kernels whose `kfree_skb` carries a reason (5.17+): `(skb, location, reason, ...)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    let reason: u32 = ctx.arg(2);
    handle(&ctx, Typed, skb, location, reason);
    0
}

/// tp_btf on kernels without drop reasons: `(skb, location)`.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb_btf_noreason(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    let location: u64 = ctx.arg(1);
    handle(&ctx, Typed, skb, location, REASON_UNAVAILABLE);
    0
}

tracepoint! {
    /// Classic tracepoint, fields at the offsets tracefs `format` gave. Returns 1 so perf consumers
    /// of the same tracepoint (perf, bpftrace) are not blinded.
    pub fn kfree_skb_tp(ctx: TracePointContext) -> u32 {
        let (skb_at, location_at) = (config!(tp.skbaddr), config!(tp.location));
        let skb: u64 = unsafe { ctx.read_at(skb_at as usize) }.unwrap_or(0);
        let location: u64 = unsafe { ctx.read_at(location_at as usize) }.unwrap_or(0);
        let reason_at = config!(tp.reason);
        let reason = if reason_at == netdoc_common::NO_OFFSET {
            REASON_UNAVAILABLE
        } else {
            unsafe { ctx.read_at::<u32>(reason_at as usize) }.unwrap_or(REASON_UNAVAILABLE)
        };
        handle(&ctx, Probed, skb, location, reason);
        1
    }
}

/// How the program reaches kernel memory at offsets userspace found in BTF.
trait Memory: Copy {
    /// A field of `struct sk_buff`, from `copy` (its first bytes) where that holds it.
    fn skb<T: Copy>(self, copy: Option<&[u8; SKB_BYTES]>, skb: u64, offset: u32) -> Option<T>;
    /// A field of a struct reached from it (`net_device`, `sock`, `net`).
    fn at<T: Copy>(self, base: u64, offset: u32) -> Option<T>;
    /// Whether [`Memory::skb`] wants the sk_buff copied first.
    const COPIES_SKB: bool;
}

/// A `tp_btf` program's pointers are BTF-typed: a field is one load, which the verifier checks
/// against the struct's BTF (the offsets are constants of the frozen config) and the JIT guards
/// against faults (a faulting load reads 0). A helper call per field was most of what a streamed
/// drop cost.
#[derive(Clone, Copy)]
struct Typed;

impl Memory for Typed {
    const COPIES_SKB: bool = false;

    #[inline(always)]
    fn skb<T: Copy>(self, _: Option<&[u8; SKB_BYTES]>, skb: u64, offset: u32) -> Option<T> {
        self.at(skb, offset)
    }

    #[inline(always)]
    fn at<T: Copy>(self, base: u64, offset: u32) -> Option<T> {
        if base == 0 || offset == netdoc_common::NO_OFFSET {
            return None;
        }
        Some(unsafe { ptr::read_volatile((base + offset as u64) as *const T) })
    }
}

/// A classic tracepoint's `skbaddr` is a number: `bpf_probe_read_kernel`, with the sk_buff's
/// first bytes copied in one call.
#[derive(Clone, Copy)]
struct Probed;

impl Memory for Probed {
    const COPIES_SKB: bool = true;

    #[inline(always)]
    fn skb<T: Copy>(self, copy: Option<&[u8; SKB_BYTES]>, skb: u64, offset: u32) -> Option<T> {
        skb_field(copy, skb, offset)
    }

    #[inline(always)]
    fn at<T: Copy>(self, base: u64, offset: u32) -> Option<T> {
        read::at(base, offset)
    }
}

#[inline(always)]
fn bump(slot: u32) {
    emit::bump(&DROP_STATS, slot);
}

#[inline(always)]
fn handle(ctx: &impl StackIdContext, mem: impl Memory, skb: u64, location: u64, reason: u32) {
    let filters = config!(filters);
    // Without filters every drop seen matches: userspace takes MATCHED for SEEN then.
    if filters != 0 {
        bump(stat::SEEN);
    }
    if filters & filter::REASON != 0 && unsafe { DROP_REASON_FILTER.get(&reason) }.is_none() {
        return;
    }
    let stream = config!(stream) != 0;
    // Counting alone needs no packet parsing: keep that path as cheap as the hook allows.
    let parsed = if stream || filters & filter::NEEDS_PACKET != 0 {
        let Some(ev) = SCRATCH.get_ptr_mut(0) else {
            return;
        };
        let ev = unsafe { &mut *ev };
        emit::zero(ev);
        ev.header = EventHeader::of::<DropEvent>();
        ev.location = location;
        ev.reason = reason;
        parse_skb(mem, skb, ev);
        if !matches(filters, ev) {
            return;
        }
        Some(ev)
    } else {
        None
    };
    bump(stat::MATCHED);
    let context = if config!(net_rx_context) != 0 && crate::softirq::in_net_rx() {
        context::IN_NET_RX
    } else {
        0
    };
    // A netfilter drop's stage mark must be its namespace's: read on this rare path only.
    let nf_stage = if reason != REASON_UNAVAILABLE && reason == config!(netfilter_drop) {
        let netns = match parsed.as_ref() {
            Some(ev) => ev.netns,
            None => netns_of(mem, skb).0,
        };
        crate::conntrack::netfilter_drop(skb, netns, location)
    } else {
        stage::NONE
    };
    // Per namespace only when asked: the streamed record already knows it, else it costs the
    // reads that find it. The flag is read where it is tested, here and below: the verifier
    // then prunes on its frozen value (read once into a variable, it cost every drop 25 ns).
    let (netns, netns_cookie) = match parsed.as_ref() {
        _ if config!(per_netns) == 0 => (0, 0),
        Some(ev) => (ev.netns, ev.netns_cookie),
        None => netns_of(mem, skb),
    };
    let key = DropKey {
        reason,
        context,
        nf_stage,
        _pad: 0,
        location,
        netns,
        _pad2: 0,
        netns_cookie,
    };
    // Per-namespace keys go straight to the map: userspace forgets the keys of namespaces that
    // are gone, which it could not do to a CPU's slot.
    if config!(per_netns) == 0 {
        count_cached(&key);
    } else {
        count(&key, 1);
    }
    if let (true, Some(ev)) = (stream, parsed) {
        ev.ts_ns = unsafe { bpf_ktime_get_ns() };
        ev.cpu = unsafe { bpf_get_smp_processor_id() };
        ev.flags = context;
        ev.nf_stage = nf_stage;
        ev.stack_id = NO_STACK;
        let stacks = config!(stacks) != 0;
        // Without BPF_F_REUSE_STACKID: a stack whose bucket holds another one fails (counted
        // as missing in userspace) instead of overwriting a stack a record already names.
        let take_stack = |ev: &mut DropEvent| {
            if stacks {
                ev.stack_id = match ctx.get_stackid(&DROP_STACKS, 0) {
                    Ok(id) => id as i32,
                    Err(errno) => errno,
                };
            }
        };
        let outcome = emit::record_finishing(&DROP_EVENTS, ev, &DROP_STATS, take_stack);
        if outcome == emit::Outcome::Sampled {
            add_one(&DROP_SAMPLED, &reason);
        }
    }
}

/// Adds `n` drops of `key` to the aggregation map; counts them in AGG_FULL when it is full.
#[inline(always)]
fn count(key: &DropKey, n: u64) {
    if !add(&DROP_COUNTS, key, n)
        && let Some(full) = DROP_STATS.get_ptr_mut(stat::AGG_FULL)
    {
        unsafe { *full += n };
    }
}

/// Counts one drop of `key` in its slot of this CPU's cache, first moving the count of another
/// key that holds the slot into the map.
#[inline(always)]
fn count_cached(key: &DropKey) {
    let Some(slot) = DROP_COUNT_CACHE.get_ptr_mut(slot_of(key)) else {
        count(key, 1);
        return;
    };
    let slot = unsafe { &mut *slot };
    if slot.count != 0 && !same(&slot.key, key) {
        bump(stat::FLUSHES);
        count(&slot.key, slot.count);
        slot.count = 0;
        bump(stat::FLUSHES);
    }
    if slot.count == 0 {
        slot.key = *key;
    }
    slot.count += 1;
}

/// A key's slot: the freeing address spreads keys best (each call site is its own key).
#[inline(always)]
fn slot_of(key: &DropKey) -> u32 {
    let mixed =
        (key.location >> 4) ^ (key.location >> 13) ^ key.reason as u64 ^ key.nf_stage as u64;
    (mixed as u32) & (DROP_COUNT_SLOTS - 1)
}

/// Whether two keys are equal, compared as four words (`DropKey` has no padding bytes: every
/// gap is a named field the program sets).
#[inline(always)]
fn same(a: &DropKey, b: &DropKey) -> bool {
    let (a, b) = (
        (a as *const DropKey).cast::<[u64; 4]>(),
        (b as *const DropKey).cast::<[u64; 4]>(),
    );
    let (a, b) = unsafe { (&*a, &*b) };
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3]
}

/// Adds one at `key`; false when the map is full.
#[inline(always)]
fn add_one<K>(map: &PerCpuHashMap<K, u64>, key: &K) -> bool {
    add(map, key, 1)
}

/// Adds `n` at `key`; false when the map is full.
#[inline(always)]
fn add<K>(map: &PerCpuHashMap<K, u64>, key: &K, n: u64) -> bool {
    if let Some(v) = map.get_ptr_mut(key) {
        unsafe { *v += n };
        true
    } else {
        map.insert(key, &n, 0).is_ok()
    }
}

#[inline(always)]
fn matches(filters: u32, ev: &DropEvent) -> bool {
    if filters & filter::NETNS != 0 && ev.netns != config!(netns) {
        return false;
    }
    if filters & filter::PROTO != 0 && ev.proto != config!(proto) {
        return false;
    }
    if filters & filter::PORT != 0 {
        let port = config!(port);
        if ev.sport != port && ev.dport != port {
            return false;
        }
    }
    if filters & filter::ADDR != 0 {
        if ev.family != config!(addr_family) as u16 {
            return false;
        }
        let n = if ev.family == AF_INET { 4 } else { 16 };
        let mut s = true;
        let mut d = true;
        let mut i = 0;
        while i < n {
            let want = config!(addr[i]);
            s &= ev.saddr[i] == want;
            d &= ev.daddr[i] == want;
            i += 1;
        }
        if !s && !d {
            return false;
        }
    }
    true
}

/// The namespace a packet was dropped in: its device's, else its socket's (inode, cookie).
#[inline(always)]
fn netns_of(mem: impl Memory, skb: u64) -> (u32, u64) {
    netns_at(mem, skb, mem.at(skb, config!(skb.skb_dev)).unwrap_or(0))
}

#[inline(always)]
fn netns_at(mem: impl Memory, skb: u64, dev: u64) -> (u32, u64) {
    let net: u64 = if dev != 0 {
        mem.at(dev, config!(skb.dev_net)).unwrap_or(0)
    } else {
        let sk: u64 = mem.at(skb, config!(skb.skb_sk)).unwrap_or(0);
        mem.at(sk, config!(skb.sk_net)).unwrap_or(0)
    };
    (
        mem.at::<u32>(net, config!(skb.net_inum)).unwrap_or(0),
        mem.at::<u64>(net, config!(skb.net_cookie)).unwrap_or(0),
    )
}

/// Reads a `T` at `offset` of the sk_buff: from `copy` when the copy worked and holds it, else
/// from the kernel.
#[inline(always)]
fn skb_field<T: Copy>(copy: Option<&[u8; SKB_BYTES]>, skb: u64, offset: u32) -> Option<T> {
    match copy {
        Some(bytes)
            if offset != netdoc_common::NO_OFFSET
                && offset as usize + core::mem::size_of::<T>() <= SKB_BYTES =>
        {
            let at = unsafe { bytes.as_ptr().add(offset as usize) }.cast::<T>();
            // Kernel struct fields are naturally aligned, and so is the copy: one load, where an
            // unaligned read compiles to a load per byte. The offset is a load-time constant,
            // so the verifier keeps only one of the two.
            Some(match offset as usize % core::mem::align_of::<T>() {
                0 => unsafe { ptr::read(at) },
                _ => unsafe { ptr::read_unaligned(at) },
            })
        }
        _ => read::at(skb, offset),
    }
}

#[inline(always)]
fn parse_skb<M: Memory>(mem: M, skb: u64, ev: &mut DropEvent) {
    let Some(copies) = COPIES.get_ptr_mut(0) else {
        return;
    };
    let copies = unsafe { &mut *copies };
    let copy = (M::COPIES_SKB && read::into(&mut copies.skb, skb)).then_some(&copies.skb);
    ev.len = mem.skb::<u32>(copy, skb, config!(skb.skb_len)).unwrap_or(0);
    let dev: u64 = mem.skb(copy, skb, config!(skb.skb_dev)).unwrap_or(0);
    if dev != 0 {
        ev.ifindex = mem.at::<u32>(dev, config!(skb.dev_ifindex)).unwrap_or(0);
    }
    (ev.netns, ev.netns_cookie) = netns_at(mem, skb, dev);
    ev.eth_proto = u16::from_be(
        mem.skb::<u16>(copy, skb, config!(skb.skb_protocol))
            .unwrap_or(0),
    );
    let head: u64 = mem.skb(copy, skb, config!(skb.skb_head)).unwrap_or(0);
    let nh = mem
        .skb::<u16>(copy, skb, config!(skb.skb_network_header))
        .unwrap_or(u16::MAX);
    if head == 0 || nh == u16::MAX || !matches!(ev.eth_proto, ETH_P_IP | ETH_P_IPV6) {
        return;
    }
    // The head buffer ends with `skb_shared_info` (hundreds of bytes), so 64 bytes from the
    // network header stay inside it even for the shortest packet.
    let h = &mut copies.headers;
    if !read::into(h, head + nh as u64) {
        return;
    }
    let l4 = if ev.eth_proto == ETH_P_IP {
        ev.family = AF_INET;
        ev.proto = h[9];
        ev.saddr[..4].copy_from_slice(&h[12..16]);
        ev.daddr[..4].copy_from_slice(&h[16..20]);
        ((h[0] & 0x0f) as usize) * 4
    } else {
        ev.family = AF_INET6;
        ev.proto = h[6];
        ev.saddr.copy_from_slice(&h[8..24]);
        ev.daddr.copy_from_slice(&h[24..40]);
        40
    };
    // TCP, UDP, UDP-Lite, SCTP and DCCP all start with the two ports.
    if matches!(ev.proto, 6 | 17 | 33 | 132 | 136) && l4 + 4 <= HEADER_BYTES {
        let at = h.as_ptr();
        let port = |i: usize| unsafe { u16::from_be_bytes([*at.add(l4 + i), *at.add(l4 + i + 1)]) };
        ev.sport = port(0);
        ev.dport = port(2);
    }
    // The flags byte tells a refused connection attempt (SYN) from a late segment.
    if ev.proto == 6 && l4 + 14 <= HEADER_BYTES {
        ev.tcp_flags = h[l4 + 13];
    }
}
