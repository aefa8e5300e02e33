//! What every probe family and command shares: addresses and protocols, drop reason names and
//! their explanations, the cause of a `NETFILTER_DROP`, kernel-side loss accounting, naming of
//! kernel numbers, and findings. Nothing here imports a family.
pub mod addr;
pub mod cause;
pub mod explain;
pub mod finding;
pub mod names;
pub mod numbered;
pub mod reasons;
pub mod shell;
pub mod stats;
