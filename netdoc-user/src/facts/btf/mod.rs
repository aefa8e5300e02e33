//! Struct member offsets, enums and tracepoint prototypes from kernel BTF.
mod format;

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, Result};

use format::{Kind, Record, Section};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// vmlinux's BTF, or a module's with vmlinux's beneath it.
pub struct KernelBtf {
    own: Arc<Section>,
    base: Option<Arc<Section>>,
}

impl KernelBtf {
    /// Indexes BTF read whole from `path` (reading the sysfs file type by type seeks it for
    /// every type).
    pub fn parse(raw: Vec<u8>, path: &Path) -> Result<Self> {
        let own =
            Section::index(raw, None).with_context(|| format!("parsing BTF {}", path.display()))?;
        Ok(Self {
            own: Arc::new(own),
            base: None,
        })
    }

    /// The BTF as read, for aya to parse when it loads a tp_btf program.
    pub fn raw(&self) -> &[u8] {
        self.own.raw()
    }

    /// Byte offset of a member path such as `["nd_net", "net"]` in `struct name`, looking
    /// through anonymous structs and unions as C does. `None` if this kernel lacks it.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut ty = self.named(name, &[Kind::Struct, Kind::Union])?;
        let mut offset = 0;
        for (i, field) in path.iter().enumerate() {
            let (bits, member_ty) = self.find_member(ty, field)?;
            offset += bits;
            if i + 1 < path.len() {
                ty = self.strip(member_ty)?;
            }
        }
        (offset % 8 == 0).then_some(offset / 8)
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        let id = self.named(name, &[Kind::Struct, Kind::Union])?;
        Some(self.record(id)?.size_or_type)
    }

    /// `(name, value)` of every enumerator of `enum name`.
    pub fn enum_values(&self, name: &str) -> Vec<(String, u64)> {
        let Some(e) = self
            .named(name, &[Kind::Enum, Kind::Enum64])
            .and_then(|id| self.record(id))
        else {
            return Vec::new();
        };
        (0..e.vlen)
            .filter_map(|i| {
                let (name_off, value) = match e.kind {
                    Kind::Enum64 => {
                        let (name_off, low, high) = e.triple(i);
                        (name_off, (u64::from(high) << 32) | u64::from(low))
                    }
                    // kind_flag marks a signed enum.
                    _ if e.kind_flag => {
                        let (name_off, value) = e.pair(i);
                        (name_off, value as i32 as i64 as u64)
                    }
                    _ => {
                        let (name_off, value) = e.pair(i);
                        (name_off, u64::from(value))
                    }
                };
                Some((self.string(name_off)?.to_string(), value))
            })
            .collect()
    }

    /// Whether this BTF describes a kernel function `name`.
    pub fn has_function(&self, name: &str) -> bool {
        self.named(name, &[Kind::Func]).is_some()
    }

    /// Number of tracepoint arguments (the `void *` context excluded) from the
    /// `btf_trace_<name>` typedef the kernel generates for every tracepoint.
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Option<usize> {
        let typedef = self.named(&format!("btf_trace_{tracepoint}"), &[Kind::Typedef])?;
        let ptr = self.record(self.record(typedef)?.size_or_type)?;
        let proto = self
            .record(ptr.size_or_type)
            .filter(|_| ptr.kind == Kind::Ptr)?;
        (proto.kind == Kind::FuncProto).then(|| proto.vlen.saturating_sub(1))
    }

    /// The first of this BTF's own types named `name` whose kind is one of `kinds`.
    fn named(&self, name: &str, kinds: &[Kind]) -> Option<u32> {
        self.own.ids().find(|&id| {
            self.own
                .record(id)
                .is_some_and(|r| kinds.contains(&r.kind) && self.string(r.name_off) == Some(name))
        })
    }

    fn record(&self, id: u32) -> Option<Record<'_>> {
        match &self.base {
            Some(base) if !self.own.owns_type(id) => base.record(id),
            _ => self.own.record(id),
        }
    }

    fn string(&self, offset: u32) -> Option<&str> {
        match &self.base {
            Some(base) if !self.own.owns_string(offset) => base.string(offset),
            _ => self.own.string(offset),
        }
    }

    /// Follows typedefs and qualifiers down to a struct or union.
    fn strip(&self, mut id: u32) -> Option<u32> {
        for _ in 0..16 {
            let r = self.record(id)?;
            match r.kind {
                Kind::Struct | Kind::Union => return Some(id),
                Kind::Typedef | Kind::Const | Kind::Volatile | Kind::TypeTag => {
                    id = r.size_or_type;
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset and type id of `field` in struct or union `id`, searching anonymous members
    /// recursively.
    fn find_member(&self, id: u32, field: &str) -> Option<(u32, u32)> {
        let s = self.record(id)?;
        if !matches!(s.kind, Kind::Struct | Kind::Union) {
            return None;
        }
        for i in 0..s.vlen {
            let (name_off, member_ty, offset) = s.triple(i);
            // With kind_flag, the top byte holds a bitfield's width.
            let bits = if s.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            let name = self.string(name_off).unwrap_or_default();
            if name == field {
                return Some((bits, member_ty));
            }
            if name.is_empty()
                && let Some(inner) = self.strip(member_ty)
                && let Some((inner_bits, t)) = self.find_member(inner, field)
            {
                return Some((bits + inner_bits, t));
            }
        }
        None
    }
}

/// Split BTF of every loaded module, for enums and structs that live outside vmlinux.
pub fn module_btfs(base: &KernelBtf, dir: &Path) -> Vec<KernelBtf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name() != "vmlinux")
        .filter_map(|e| {
            let raw = std::fs::read(e.path()).ok()?;
            let own = Section::index(raw, Some(&base.own))
                .inspect_err(|err| log::debug!("BTF {}: {err:#}", e.path().display()))
                .ok()?;
            Some(KernelBtf {
                own: Arc::new(own),
                base: Some(base.own.clone()),
            })
        })
        .collect()
}

/// The BTF of this machine's 6.18 kernel, recorded (xz) in `tests/fixtures/btf`, so unit tests
/// never read the live system.
#[cfg(test)]
pub fn recorded() -> &'static KernelBtf {
    static BTF: std::sync::OnceLock<KernelBtf> = std::sync::OnceLock::new();
    BTF.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/btf/vmlinux-6.18.xz"
        );
        let packed = std::fs::read(path).expect("recorded BTF");
        let mut raw = Vec::new();
        lzma_rs::xz_decompress(&mut packed.as_slice(), &mut raw).expect("xz");
        KernelBtf::parse(raw, Path::new(path)).expect("BTF")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_through_anonymous_unions() {
        let b = recorded();
        // sk_buff.dev and .protocol sit inside anonymous unions/struct groups.
        let dev = b.member_offset("sk_buff", &["dev"]).unwrap();
        let proto = b.member_offset("sk_buff", &["protocol"]).unwrap();
        assert!(dev < proto, "dev {dev} precedes protocol {proto}");
        assert!(b.member_offset("net_device", &["nd_net", "net"]).is_some());
        assert!(
            b.member_offset("sock", &["__sk_common", "skc_net", "net"])
                .is_some()
        );
        assert!(b.member_offset("net", &["ns", "inum"]).is_some());
        assert_eq!(b.member_offset("sk_buff", &["no_such_member"]), None);
    }

    #[test]
    fn counts_tracepoint_arguments() {
        let b = recorded();
        let n = b.tracepoint_arg_count("kfree_skb").unwrap();
        assert!(n >= 2, "kfree_skb has at least skb and location, got {n}");
        assert!(b.enum_values("skb_drop_reason").len() > 5);
    }

    /// A BTF blob from `types` (each a header and its trailer, as u32s) and `strings`.
    fn blob(types: &[&[u32]], strings: &[u8]) -> Vec<u8> {
        let type_bytes: Vec<u8> = types
            .iter()
            .flat_map(|t| t.iter())
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        let mut raw = Vec::new();
        raw.extend(0xeb9fu16.to_ne_bytes());
        raw.extend([1, 0]);
        for word in [
            24,
            0,
            type_bytes.len() as u32,
            type_bytes.len() as u32,
            strings.len() as u32,
        ] {
            raw.extend(word.to_ne_bytes());
        }
        raw.extend(type_bytes);
        raw.extend(strings);
        raw
    }

    fn info(kind: u32, vlen: u32, kind_flag: bool) -> u32 {
        (u32::from(kind_flag) << 31) | (kind << 24) | vlen
    }

    #[test]
    fn a_module_struct_reaches_into_vmlinux_types_and_strings() {
        // vmlinux: 1 = int, 2 = struct base_s { int x at bit 32 }, size 8.
        let base_strings = b"\0int\0base_s\0x\0";
        let base = KernelBtf::parse(
            blob(
                &[
                    &[1, info(1, 0, false), 4, 32],
                    &[5, info(4, 1, false), 8, 12, 1, 32],
                ],
                base_strings,
            ),
            Path::new("vmlinux"),
        )
        .unwrap();
        // The module: 3 = struct mod_s { int y; struct base_s (anonymous) at bit 64 },
        // 4 = enum mod_e { E_ONE = 7 }, 5 = a bitfield struct: z is 3 bits wide at bit 40.
        let at = |local: u32| base_strings.len() as u32 + local;
        let module = Section::index(
            blob(
                &[
                    &[at(0), info(4, 2, false), 16, at(6), 1, 0, 0, 2, 64],
                    &[at(8), info(6, 1, false), 4, at(14), 7],
                    &[at(20), info(4, 1, true), 8, at(25), 1, (3 << 24) | 40],
                ],
                b"mod_s\0y\0mod_e\0E_ONE\0bits\0z\0",
            ),
            Some(&base.own),
        )
        .unwrap();
        let module = KernelBtf {
            own: Arc::new(module),
            base: Some(base.own.clone()),
        };
        assert_eq!(module.struct_size("mod_s"), Some(16));
        assert_eq!(module.member_offset("mod_s", &["y"]), Some(0));
        assert_eq!(module.member_offset("mod_s", &["x"]), Some(12));
        assert_eq!(module.member_offset("bits", &["z"]), Some(5));
        assert_eq!(module.enum_values("mod_e"), vec![("E_ONE".to_string(), 7)]);
        // Only a module's own types are looked up by name: vmlinux's are vmlinux's to answer.
        assert_eq!(module.struct_size("base_s"), None);
        assert_eq!(base.member_offset("base_s", &["x"]), Some(4));
    }

    #[test]
    fn refuses_what_is_not_btf() {
        let Err(err) = KernelBtf::parse(vec![0; 32], Path::new("junk")) else {
            panic!("zeros parsed as BTF");
        };
        assert!(format!("{err:#}").contains("not BTF"), "{err:#}");
        let mut cut = blob(&[&[0, info(4, 3, false), 8]], b"\0");
        cut.truncate(cut.len() - 1);
        assert!(KernelBtf::parse(cut, Path::new("cut")).is_err());
    }
}
