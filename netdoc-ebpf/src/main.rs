//! netdoc's kernel programs. They read, filter, aggregate in per-CPU maps and emit records;
//! every interpretation (names, symbols, correlation) happens in userspace.
#![no_std]
#![no_main]

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
