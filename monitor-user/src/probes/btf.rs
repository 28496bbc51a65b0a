//! A small reader for the kernel's BTF (/sys/kernel/btf/vmlinux): just enough to find the byte
//! offset and size of a struct member by path, so the probes work across kernel layouts without
//! CO-RE. About 25 ms for vmlinux at start-up.

use std::{collections::HashMap, path::Path};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
/// Nested anonymous structs deeper than this are not followed (untrusted input bound).
const MAX_DEPTH: usize = 16;

/// Errors reading BTF or finding a member in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("struct {0} not found in the kernel's BTF")]
    NoStruct(String),
    #[error("member {path} not found in struct {strukt}")]
    NoMember { strukt: String, path: String },
    #[error("member {path} of struct {strukt} is a bitfield or not byte aligned")]
    Unaligned { strukt: String, path: String },
    #[error("member {path} of struct {strukt} has size {actual}, expected {expected}")]
    Size { strukt: String, path: String, actual: u32, expected: u32 },
}

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    bit_offset: u32,
    bitfield: bool,
}

#[derive(Clone, Debug)]
struct Type {
    name: u32,
    kind: u32,
    size_or_type: u32,
    members: Vec<Member>,
    array_len: u32,
}

/// Parsed BTF types and strings.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs_by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2).and_then(|s| s.try_into().ok()).map(u16::from_le_bytes).ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_le_bytes).ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads and parses the BTF file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read { path: path.display().to_string(), source })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF bytes.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_bytes = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type { name: 0, kind: 0, size_or_type: 0, members: vec![], array_len: 0 }];
        let mut at = 0usize;
        while at < types_bytes.len() {
            let name = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut t = Type { name, kind, size_or_type, members: vec![], array_len: 0 };
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    t.size_or_type = u32_at(types_bytes, at)?;
                    t.array_len = u32_at(types_bytes, at + 8)?;
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw = u32_at(types_bytes, m + 8)?;
                        let (bit_offset, bitfield) =
                            if kind_flag { (raw & 0xff_ffff, raw >> 24 != 0) } else { (raw, false) };
                        t.members.push(Member {
                            name: u32_at(types_bytes, m)?,
                            ty: u32_at(types_bytes, m + 4)?,
                            bit_offset,
                            bitfield,
                        });
                    }
                    at += vlen * 12;
                }
                KIND_ENUM | KIND_FUNC_PROTO => at += vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12 | KIND_FLOAT
                | KIND_TYPE_TAG => {}
                _ => return Err(BtfError::Malformed("unknown type kind")),
            }
            types.push(t);
        }
        let mut btf = Btf { types, strings, structs_by_name: HashMap::new() };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 {
                let name = btf.name(t.name).to_owned();
                // Keep the first definition with members (a later empty one is a stub).
                let id = u32::try_from(id).map_err(|_| BtfError::Malformed("too many types"))?;
                btf.structs_by_name.entry(name).or_insert(id);
            }
        }
        Ok(btf)
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..MAX_DEPTH {
            match self.ty(id) {
                Some(t)
                    if matches!(t.kind, KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    /// Size in bytes of a type.
    fn size_of(&self, id: u32) -> u32 {
        let id = self.resolve(id);
        match self.ty(id) {
            Some(t) if t.kind == KIND_PTR => 8,
            Some(t) if t.kind == KIND_ARRAY => self.size_of(t.size_or_type).saturating_mul(t.array_len),
            Some(t) => t.size_or_type,
            None => 0,
        }
    }

    /// Finds a direct or anonymous-nested member named `name`: (bit offset, type id, bitfield).
    fn find_member(&self, id: u32, name: &str, depth: usize) -> Option<(u32, u32, bool)> {
        if depth > MAX_DEPTH {
            return None;
        }
        let t = self.ty(self.resolve(id))?;
        for m in &t.members {
            if m.name != 0 && self.name(m.name) == name {
                return Some((m.bit_offset, m.ty, m.bitfield));
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            if let Some((off, ty, bf)) = self.find_member(m.ty, name, depth + 1) {
                return Some((m.bit_offset + off, ty, bf));
            }
        }
        None
    }

    /// Byte offset of `path` (dot separated, anonymous members skipped) inside struct `strukt`,
    /// checking that the member has `size` bytes.
    pub fn member_offset(&self, strukt: &str, path: &str, size: u32) -> Result<u32, BtfError> {
        let root = *self.structs_by_name.get(strukt).ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        let no_member = || BtfError::NoMember { strukt: strukt.to_owned(), path: path.to_owned() };
        let (mut bits, mut ty) = (0u32, root);
        for part in path.split('.') {
            let (off, member_ty, bitfield) = self.find_member(ty, part, 0).ok_or_else(no_member)?;
            if bitfield || off % 8 != 0 {
                return Err(BtfError::Unaligned { strukt: strukt.to_owned(), path: path.to_owned() });
            }
            bits += off;
            ty = member_ty;
        }
        let actual = self.size_of(ty);
        if actual != size {
            return Err(BtfError::Size { strukt: strukt.to_owned(), path: path.to_owned(), actual, expected: size });
        }
        Ok(bits / 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut hdr = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        hdr.extend_from_slice(&[0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Btf::parse(&hdr).is_err());
    }

    #[test]
    fn finds_sock_members_in_the_running_kernel() -> Result<(), BtfError> {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            // Not a test skip on CI: every kernel CI runs on has BTF (the daemon needs it).
            assert!(std::env::var_os("CI").is_none(), "CI kernel has no {VMLINUX_BTF}");
            return Ok(());
        }
        let btf = Btf::from_file(path)?;
        assert_eq!(btf.member_offset("sock", "__sk_common.skc_family", 2)?, 16);
        let num = btf.member_offset("sock", "__sk_common.skc_num", 2)?;
        let dport = btf.member_offset("sock", "__sk_common.skc_dport", 2)?;
        assert_eq!(num, dport + 2, "skc_num follows skc_dport in sock_common");
        assert!(btf.member_offset("sock", "sk_protocol", 4).is_err(), "size is checked");
        assert!(btf.member_offset("sock", "no_such_field", 2).is_err());
        Ok(())
    }
}
