//! Kernel facts, each behind a small reader that also accepts a recorded copy so the logic above
//! it is testable without root.
pub mod btf;
pub mod caps;
pub mod cgroup;
pub mod conntrack;
pub mod droprules;
pub mod fdinfo;
pub mod fwtables;
pub mod host;
pub mod interrupts;
pub mod irqsys;
pub mod kallsyms;
pub mod natrules;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod nsholders;
pub mod procnet;
pub mod procs;
pub mod route;
pub mod snmp;
pub mod sockdiag;
pub mod tracefs;
