//! What every probe family reads from the running kernel, read once per run and shared.
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::{
    Error,
    facts::{
        btf::{self, KernelBtf},
        kallsyms,
        tracefs::{self, EventFormat},
    },
};

pub struct Kernel {
    pub btf_path: PathBuf,
    pub btf: Option<KernelBtf>,
    /// Why the BTF could not be read, when it could not.
    pub btf_unreadable: Option<String>,
    /// The classic tracepoint was asked for (`--hook tracepoint`): it needs tracefs even where
    /// tp_btf would do.
    pub classic_wanted: bool,
    /// tracefs where it was mounted at start, else the one attempt to mount it (made only
    /// when a classic tracepoint needs it).
    tracefs: std::sync::OnceLock<Result<PathBuf, Error>>,
    /// Parsed once: the drop reasons and the conntrack hook both look through them.
    module_btfs: std::sync::OnceLock<Vec<KernelBtf>>,
}

impl Kernel {
    pub fn discover(btf_path: &Path) -> Self {
        let btf = std::fs::read(btf_path)
            .with_context(|| format!("reading BTF {}", btf_path.display()))
            .and_then(|raw| KernelBtf::parse(raw, btf_path));
        let (btf, btf_unreadable) = match btf {
            Ok(b) => (Some(b), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Self {
            btf_path: btf_path.to_path_buf(),
            btf,
            btf_unreadable,
            classic_wanted: false,
            tracefs: found_tracefs(),
            module_btfs: std::sync::OnceLock::new(),
        }
    }

    /// The BTF as aya parses it, which loading a tp_btf program needs: 14 MiB on 6.18, so
    /// parsed only while programs are being attached and dropped after. Read from the file
    /// again once [`Self::release_btf`] has freed netdoc's own copy.
    pub fn loader_btf(&self) -> Option<aya::Btf> {
        if self.btf_unreadable.is_some() {
            return None;
        }
        let read;
        let raw = match &self.btf {
            Some(b) => b.raw(),
            None => {
                read = std::fs::read(&self.btf_path)
                    .inspect_err(|e| log::warn!("reading {}: {e}", self.btf_path.display()))
                    .ok()?;
                &read
            }
        };
        aya::Btf::parse(raw, aya::Endianness::default())
            .inspect_err(|e| log::warn!("aya cannot parse {}: {e}", self.btf_path.display()))
            .ok()
    }

    /// Frees netdoc's own BTF (5.5 MiB of vmlinux's on 6.18, and the modules') once every
    /// family has taken its offsets from it: netdoc holds 4 to 6 MiB less while it runs. (The
    /// start-up peak is aya's own parse of the BTF, which this does not change.)
    pub fn release_btf(&mut self) {
        self.btf = None;
        self.module_btfs = std::sync::OnceLock::new();
    }

    /// The kernel as netdoc sees one built without BTF (`--no-btf`): classic tracepoints,
    /// reason names from tracefs, no struct offsets.
    pub fn without_btf() -> Self {
        Self {
            btf_path: PathBuf::from(btf::VMLINUX),
            btf: None,
            btf_unreadable: Some("--no-btf given".into()),
            classic_wanted: false,
            tracefs: found_tracefs(),
            module_btfs: std::sync::OnceLock::new(),
        }
    }

    /// A tracepoint's record format, or why it cannot be read (the planner's skip reason).
    /// tracefs is mounted for it only when the classic tracepoint is the way to this event (no
    /// tp_btf for it, or the classic hook asked for): mounting changes the host, and where
    /// tp_btf serves, nothing needs it.
    pub fn format(&self, system: &str, event: &str) -> Result<EventFormat, Error> {
        if self.tracefs.get().is_none() && !self.classic_wanted && self.tp_btf_args(event).is_ok() {
            return Err(Error::Unavailable(format!(
                "tracefs is not mounted (or not readable here), and tp_btf/{event} needs none"
            )));
        }
        let root = self
            .tracefs
            .get_or_init(|| tracefs::mount().map_err(|e| Error::Unavailable(format!("{e:#}"))))
            .as_ref()
            .map_err(Clone::clone)?;
        EventFormat::read(root, system, event).map_err(|e| Error::Unavailable(format!("{e:#}")))
    }

    /// Split BTF of loaded modules (enums and structs outside vmlinux), read on first use.
    pub fn module_btfs(&self) -> &[KernelBtf] {
        self.module_btfs
            .get_or_init(|| match (&self.btf, self.btf_path.parent()) {
                (Some(b), Some(dir)) => btf::module_btfs(b, dir),
                _ => Vec::new(),
            })
    }

    /// Byte offset of a struct member path, or `NO_OFFSET`.
    pub fn offset(&self, name: &str, path: &[&str]) -> u32 {
        self.btf
            .as_ref()
            .and_then(|b| b.member_offset(name, path))
            .unwrap_or(netdoc_common::NO_OFFSET)
    }

    /// Applies `f` to the BTF (vmlinux first, then loaded modules') that defines `struct name`.
    pub fn with_struct_btf<T>(&self, name: &str, f: impl FnOnce(&KernelBtf) -> T) -> Option<T> {
        if let Some(vmlinux) = &self.btf
            && vmlinux.struct_size(name).is_some()
        {
            return Some(f(vmlinux));
        }
        self.module_btfs()
            .iter()
            .find(|b| b.struct_size(name).is_some())
            .map(f)
    }

    /// Whether the kernel has a function `name` now (a module's exists only once it is loaded):
    /// from BTF, vmlinux's and the loaded modules'; from kallsyms where BTF does not say, which
    /// takes a tenth of a second to read.
    pub fn has_function(&self, name: &str) -> bool {
        let in_btf = self.btf.as_ref().is_some_and(|b| b.has_function(name))
            || self.module_btfs().iter().any(|b| b.has_function(name));
        in_btf || kallsyms::defines(name)
    }

    /// Whether a tp_btf program can attach to `event`: `Err(why)` otherwise.
    pub fn tp_btf_args(&self, event: &str) -> Result<usize, Error> {
        let b = self
            .btf
            .as_ref()
            .ok_or_else(|| Error::Unavailable("no kernel BTF".into()))?;
        b.tracepoint_arg_count(event)
            .ok_or_else(|| Error::Unavailable(format!("BTF has no btf_trace_{event}")))
    }
}

/// tracefs as found mounted at start, or nothing yet (no mount attempted).
fn found_tracefs() -> std::sync::OnceLock<Result<PathBuf, Error>> {
    let found = std::sync::OnceLock::new();
    if let Some(root) = tracefs::mounted() {
        let _ = found.set(Ok(root));
    }
    found
}
