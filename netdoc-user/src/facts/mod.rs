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
pub mod iptsave;
pub mod irqsys;
pub mod kallsyms;
pub mod natrules;
pub mod neigh;
pub mod netns;
pub mod nft;
pub mod nftjson;
pub mod nftsyntax;
pub mod nsholders;
pub mod procnet;
pub mod procs;
pub mod snmp;
pub mod sockdiag;
pub mod tracefs;
