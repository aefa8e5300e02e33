//! netdoc's kernel programs. They read, filter, aggregate in per-CPU maps and emit records;
//! every interpretation (names, symbols, correlation) happens in userspace.
#![no_std]
#![no_main]
// Map keys and values are passed by reference on purpose: a record passed by value may be
// copied once more onto the 512-byte BPF stack.
#![allow(clippy::needless_borrows_for_generic_args)]
// Every unsafe block here is a BPF helper call or a read of kernel memory whose safety the
// verifier checks at load time; a comment per block would repeat that.
#![allow(clippy::undocumented_unsafe_blocks)]

/// A classic tracepoint program whose return value reaches the kernel. aya-ebpf's
/// `#[tracepoint]` always returns 0, and a BPF program on a tracepoint that returns 0 stops the
/// kernel from recording the event for perf and every other perf consumer of that tracepoint;
/// netdoc's programs return 1 so that they never blind another tool.
macro_rules! tracepoint {
    ($(#[$doc:meta])* pub fn $name:ident($ctx:ident: TracePointContext) -> u32 $body:block) => {
        $(#[$doc])*
        #[unsafe(no_mangle)]
        #[unsafe(link_section = "tracepoint")]
        pub fn $name(raw: *mut ::core::ffi::c_void) -> u32 {
            #[inline(always)]
            fn program($ctx: TracePointContext) -> u32 $body
            program(TracePointContext::new(raw))
        }
    };
}

mod conntrack;
mod drops;
mod emit;
mod floor;
mod read;
mod retrans;
mod softirq;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
