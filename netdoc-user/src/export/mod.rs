//! `netdoc export`: the host's drop, conntrack, NET_RX and health figures as Prometheus
//! metrics, read from the kernel's maps and procfs at each scrape. Counting stays in the
//! kernel; nothing is streamed per packet.
pub mod collect;
pub mod exposition;
pub mod http;
pub mod slots;
