// Present so that netdoc-user can name this crate as a build-dependency (aya-build rebuilds the
// eBPF binary when it changes); the programs themselves live in the `netdoc-probes` binary.
#![no_std]
