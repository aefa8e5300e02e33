//! The embedded eBPF object and loading it with what every family set for it.
use anyhow::{Context as _, Result};
use aya::{Ebpf, EbpfLoader};

/// All of netdoc's kernel programs, built by build.rs from `netdoc-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netdoc-probes"));

/// What the families set in the object before it loads: their read-only config globals and
/// the sizes of maps that depend on the machine or on what was asked.
#[derive(Default)]
pub struct ObjectSettings {
    globals: Vec<(&'static str, Vec<u8>)>,
    per_cpu: Vec<&'static str>,
    sizes: Vec<(&'static str, u32)>,
}

impl ObjectSettings {
    /// Sets the read-only global `name` (a `#[repr(C)]` config shared with the kernel side).
    pub fn global<T: aya::Pod>(&mut self, name: &'static str, value: &T) {
        // SAFETY: a Pod value is plain bytes (netdoc-common's configs pad explicitly); the
        // slice covers exactly the value and is copied at once.
        let bytes = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>())
        };
        self.globals.push((name, bytes.to_vec()));
    }

    /// Gives map `name` one entry per possible CPU (a stream's ring array, indexed by CPU).
    pub fn per_cpu(&mut self, name: &'static str) {
        self.per_cpu.push(name);
    }

    /// Gives map `name` `entries` entries.
    pub fn size(&mut self, name: &'static str, entries: u32) {
        self.sizes.push((name, entries));
    }
}

/// Loads the object's maps; programs load when the planner attaches them.
pub fn load(settings: &ObjectSettings) -> Result<Ebpf> {
    raise_memlock();
    let cpus =
        aya::util::nr_cpus().map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))? as u32;
    let mut loader = EbpfLoader::new();
    for name in &settings.per_cpu {
        loader.map_max_entries(name, cpus);
    }
    for (name, entries) in &settings.sizes {
        loader.map_max_entries(name, *entries);
    }
    for (name, bytes) in &settings.globals {
        loader.override_global(name, bytes.as_slice(), true);
    }
    loader.load(OBJECT).context("loading netdoc's eBPF object")
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it so maps can be created.
fn raise_memlock() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_is_its_value_s_bytes() {
        let mut s = ObjectSettings::default();
        s.global(
            "EMIT_CONFIG",
            &netdoc_common::EmitConfig {
                max_per_sec: 0x0102,
            },
        );
        assert_eq!(s.globals, [("EMIT_CONFIG", vec![2, 1, 0, 0, 0, 0, 0, 0])]);
    }
}
