//! The commands: each composes probe families in one session and renders what they measured.
//! Commands may use any family; families never use each other.
pub mod conntrack;
pub mod doctor;
mod drop_rules;
pub mod drops;
pub mod export;
mod net_rx;
mod path_facts;
mod pending;
pub mod probes;
pub mod retrans;
pub mod softirq;
mod watch;
