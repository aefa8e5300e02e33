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

mod conntrack;
mod drops;
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
