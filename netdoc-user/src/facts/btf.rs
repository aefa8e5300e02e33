//! Struct member offsets, enums and tracepoint prototypes from kernel BTF.
use std::path::Path;

use anyhow::{Context as _, Result};
use btf_rs::{Btf, Type};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    /// Parses BTF read whole from `path` (parsing straight from the sysfs file seeks it for
    /// every type, and those seeks were a tenth of netdoc's start-up).
    pub fn parse(raw: &[u8], path: &Path) -> Result<Self> {
        let btf =
            Btf::from_bytes(raw).with_context(|| format!("parsing BTF {}", path.display()))?;
        Ok(Self { btf })
    }

    /// Byte offset of a member path such as `["nd_net", "net"]` in `struct name`, looking
    /// through anonymous structs and unions as C does. `None` if this kernel lacks it.
    pub fn member_offset(&self, name: &str, path: &[&str]) -> Option<u32> {
        let mut ty = self.named_struct(name)?;
        let mut offset = 0;
        for (i, field) in path.iter().enumerate() {
            let (bits, member_ty) = self.find_member(&ty, field)?;
            offset += bits;
            if i + 1 < path.len() {
                ty = self.strip(member_ty)?;
            }
        }
        (offset % 8 == 0).then_some(offset / 8)
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        match self.named_struct(name)? {
            Type::Struct(s) | Type::Union(s) => Some(s.size() as u32),
            _ => None,
        }
    }

    /// `(name, value)` of every enumerator of `enum name`.
    pub fn enum_values(&self, name: &str) -> Vec<(String, u64)> {
        let Ok(types) = self.btf.resolve_types_by_name(name) else {
            return Vec::new();
        };
        for ty in types {
            match ty {
                Type::Enum(e) => {
                    return e
                        .members
                        .iter()
                        .filter_map(|m| Some((self.btf.resolve_name(m).ok()?, m.val() as u64)))
                        .collect();
                }
                Type::Enum64(e) => {
                    return e
                        .members
                        .iter()
                        .filter_map(|m| Some((self.btf.resolve_name(m).ok()?, m.val())))
                        .collect();
                }
                _ => {}
            }
        }
        Vec::new()
    }

    /// Number of tracepoint arguments (the `void *` context excluded) from the
    /// `btf_trace_<name>` typedef the kernel generates for every tracepoint.
    pub fn tracepoint_arg_count(&self, tracepoint: &str) -> Option<usize> {
        let types = self
            .btf
            .resolve_types_by_name(&format!("btf_trace_{tracepoint}"))
            .ok()?;
        let Type::Typedef(td) = types.into_iter().next()? else {
            return None;
        };
        let Type::Ptr(ptr) = self.btf.resolve_chained_type(&td).ok()? else {
            return None;
        };
        let Type::FuncProto(proto) = self.btf.resolve_chained_type(&ptr).ok()? else {
            return None;
        };
        Some(proto.parameters.len().saturating_sub(1))
    }

    fn named_struct(&self, name: &str) -> Option<Type> {
        self.btf
            .resolve_types_by_name(name)
            .ok()?
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_) | Type::Union(_)))
    }

    /// Follows typedefs and qualifiers down to a struct or union.
    fn strip(&self, mut ty: Type) -> Option<Type> {
        for _ in 0..16 {
            match ty {
                Type::Struct(_) | Type::Union(_) => return Some(ty),
                Type::Typedef(_) | Type::Const(_) | Type::Volatile(_) | Type::TypeTag(_) => {
                    ty = self.btf.resolve_chained_type(ty.as_btf_type()?).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Bit offset and type of `field` in `ty`, searching anonymous members recursively.
    fn find_member(&self, ty: &Type, field: &str) -> Option<(u32, Type)> {
        let (Type::Struct(s) | Type::Union(s)) = ty else {
            return None;
        };
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            let member_ty = self.btf.resolve_chained_type(m).ok()?;
            if name == field {
                return Some((m.bit_offset(), member_ty));
            }
            if name.is_empty()
                && let Some(inner) = self.strip(member_ty)
                && let Some((bits, t)) = self.find_member(&inner, field)
            {
                return Some((m.bit_offset() + bits, t));
            }
        }
        None
    }
}

/// Split BTF of every loaded module, for enums that live outside vmlinux.
pub fn module_btfs(base: &KernelBtf, dir: &Path) -> Vec<KernelBtf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name() != "vmlinux")
        .filter_map(|e| Btf::from_split_file(e.path(), &base.btf).ok())
        .map(|btf| KernelBtf { btf })
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
        KernelBtf {
            btf: Btf::from_bytes(&raw).expect("BTF"),
        }
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
}
