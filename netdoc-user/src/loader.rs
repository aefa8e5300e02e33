//! The embedded eBPF object and process-wide preparations for loading it.
use anyhow::Result;

/// All of netdoc's kernel programs, built by build.rs from `netdoc-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdoc-probes"));

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps can be created.
pub fn raise_memlock() -> Result<()> {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}
