//! The BTF encoding (`include/uapi/linux/btf.h`), read in place.
//!
//! netdoc asks BTF a few dozen questions at start-up (struct offsets, enums, tracepoint
//! prototypes). A general parser turns each of vmlinux's ~150,000 types into owned values:
//! btf-rs took 44 MiB and 0.27 s for that on 6.18, more than all the rest of netdoc. Here the
//! section stays as the kernel wrote it, with only the byte offset of each type beside it
//! (0.6 MiB), and every question walks the records it needs.
use anyhow::{Context as _, Result, bail, ensure};

const MAGIC: u16 = 0xeb9f;
const HEADER_MIN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_HEADER: usize = 12;

/// Kinds netdoc looks at (`BTF_KIND_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ptr,
    Struct,
    Union,
    Enum,
    Typedef,
    Volatile,
    Const,
    Func,
    FuncProto,
    TypeTag,
    Enum64,
    Other,
}

impl Kind {
    fn of(raw: u32) -> Self {
        match raw {
            2 => Kind::Ptr,
            4 => Kind::Struct,
            5 => Kind::Union,
            6 => Kind::Enum,
            8 => Kind::Typedef,
            9 => Kind::Volatile,
            10 => Kind::Const,
            12 => Kind::Func,
            13 => Kind::FuncProto,
            18 => Kind::TypeTag,
            19 => Kind::Enum64,
            _ => Kind::Other,
        }
    }
}

/// Bytes that follow the 12-byte header of a type of kind `kind` with `vlen` entries.
fn trailer_len(kind: u32, vlen: usize) -> Result<usize> {
    Ok(match kind {
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0,
        // INT (encoding), VAR (linkage), DECL_TAG (component index)
        1 | 14 | 17 => 4,
        // ARRAY: type, index type, nelems
        3 => 12,
        // STRUCT/UNION members and DATASEC variables: three u32 each
        4 | 5 | 15 => 12 * vlen,
        // ENUM values, FUNC_PROTO parameters: two u32 each
        6 | 13 => 8 * vlen,
        // ENUM64: name, low and high halves
        19 => 12 * vlen,
        other => bail!("unknown BTF kind {other}"),
    })
}

/// One BTF blob: vmlinux's, or a module's split BTF, whose type ids and string offsets continue
/// those of vmlinux.
pub struct Section {
    raw: Vec<u8>,
    /// Byte offset in `raw` of each type, in id order.
    types: Vec<u32>,
    /// Id of `types[0]`: 1 for vmlinux, one past vmlinux's last for a module.
    pub first_id: u32,
    /// String offsets below this belong to vmlinux.
    pub first_string: u32,
    strings: std::ops::Range<usize>,
}

/// A type record as written, borrowed from its section.
#[derive(Clone, Copy)]
pub struct Record<'a> {
    pub name_off: u32,
    pub kind: Kind,
    pub kind_flag: bool,
    pub vlen: usize,
    /// Size for structs, unions and enums; the referred type for pointers, typedefs, qualifiers.
    pub size_or_type: u32,
    trailer: &'a [u8],
}

impl Section {
    /// Indexes `raw`. `base` is vmlinux's section when `raw` is a module's split BTF.
    pub fn index(raw: Vec<u8>, base: Option<&Section>) -> Result<Self> {
        ensure!(raw.len() >= HEADER_MIN, "BTF shorter than its header");
        let magic = u16::from_ne_bytes([raw[0], raw[1]]);
        if magic == MAGIC.swap_bytes() {
            bail!("BTF of the other byte order");
        }
        ensure!(magic == MAGIC, "not BTF (magic {magic:#06x})");
        let header_len = u32_at(&raw, 4) as usize;
        let section = |at: usize| -> Result<std::ops::Range<usize>> {
            let start = header_len + u32_at(&raw, at) as usize;
            let end = start + u32_at(&raw, at + 4) as usize;
            ensure!(end <= raw.len(), "BTF section past the end of the data");
            Ok(start..end)
        };
        let type_section = section(8)?;
        let strings = section(16)?;
        let mut types = Vec::new();
        let mut at = type_section.start;
        while at < type_section.end {
            ensure!(at + TYPE_HEADER <= type_section.end, "BTF type cut short");
            let info = u32_at(&raw, at + 4);
            let len = TYPE_HEADER + trailer_len((info >> 24) & 0x1f, (info & 0xffff) as usize)?;
            types.push(u32::try_from(at).context("BTF larger than 4 GiB")?);
            at += len;
        }
        ensure!(at == type_section.end, "BTF type runs past its section");
        let (first_id, first_string) = match base {
            Some(b) => (b.first_id + b.types.len() as u32, b.string_count()),
            None => (1, 0),
        };
        Ok(Self {
            raw,
            types,
            first_id,
            first_string,
            strings,
        })
    }

    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    fn string_count(&self) -> u32 {
        self.first_string + self.strings.len() as u32
    }

    /// Ids of this section's own types.
    pub fn ids(&self) -> std::ops::Range<u32> {
        self.first_id..self.first_id + self.types.len() as u32
    }

    pub fn owns_type(&self, id: u32) -> bool {
        self.ids().contains(&id)
    }

    pub fn owns_string(&self, offset: u32) -> bool {
        (self.first_string..self.string_count()).contains(&offset)
    }

    /// The record of type `id`, which this section must own.
    pub fn record(&self, id: u32) -> Option<Record<'_>> {
        let at = *self.types.get(id.checked_sub(self.first_id)? as usize)? as usize;
        let info = u32_at(&self.raw, at + 4);
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let trailer_start = at + TYPE_HEADER;
        let trailer_end = trailer_start + trailer_len(kind, vlen).ok()?;
        Some(Record {
            name_off: u32_at(&self.raw, at),
            kind: Kind::of(kind),
            kind_flag: info >> 31 == 1,
            vlen,
            size_or_type: u32_at(&self.raw, at + 8),
            trailer: &self.raw[trailer_start..trailer_end],
        })
    }

    /// The NUL-terminated string at `offset`, which this section must own.
    pub fn string(&self, offset: u32) -> Option<&str> {
        let start = self.strings.start + (offset.checked_sub(self.first_string)? as usize);
        let rest = self.raw.get(start..self.strings.end)?;
        let len = rest.iter().position(|&b| b == 0)?;
        std::str::from_utf8(&rest[..len]).ok()
    }
}

impl Record<'_> {
    /// The `i`th three-u32 entry (struct member: name, type, offset; enum64: name, lo, hi).
    pub fn triple(&self, i: usize) -> (u32, u32, u32) {
        let at = 12 * i;
        (
            u32_at(self.trailer, at),
            u32_at(self.trailer, at + 4),
            u32_at(self.trailer, at + 8),
        )
    }

    /// The `i`th two-u32 entry (enum: name, value; function parameter: name, type).
    pub fn pair(&self, i: usize) -> (u32, u32) {
        let at = 8 * i;
        (u32_at(self.trailer, at), u32_at(self.trailer, at + 4))
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}
