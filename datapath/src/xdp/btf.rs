//! Finds a kernel function's BTF id in `/sys/kernel/btf/vmlinux`, so the steering program
//! can call an XDP metadata kfunc (`bpf_xdp_metadata_rx_vlan_tag`): a kfunc call names its
//! target by BTF id, which differs between kernel builds.
//!
//! Only the walk over the type section is needed: each type is a 12-byte `btf_type`
//! followed by kind-specific data whose size follows from the kind and `vlen`.

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_FUNC: u32 = 12;

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

/// Bytes that follow a `btf_type` of `kind` with `vlen` members.
fn extra(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        1 => 4,                    // INT
        3 => 12,                   // ARRAY
        4 | 5 => 12 * vlen,        // STRUCT, UNION
        6 => 8 * vlen,             // ENUM
        13 => 8 * vlen,            // FUNC_PROTO
        14 => 4,                   // VAR
        15 => 12 * vlen,           // DATASEC
        17 => 4,                   // DECL_TAG
        19 => 12 * vlen,           // ENUM64
        2 | 7..=12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG
        _ => return None,
    })
}

/// The BTF id of function `name` in the BTF blob `btf` (little-endian hosts only: the
/// kernel's own BTF is in host order).
pub(crate) fn func_id(btf: &[u8], name: &str) -> Option<u32> {
    if cfg!(target_endian = "big") || u16::from_le_bytes([*btf.first()?, *btf.get(1)?]) != BTF_MAGIC
    {
        return None;
    }
    let hdr_len = u32_at(btf, 4)? as usize;
    let type_off = u32_at(btf, 8)? as usize;
    let type_len = u32_at(btf, 12)? as usize;
    let str_off = u32_at(btf, 16)? as usize;
    let str_len = u32_at(btf, 20)? as usize;
    let types = btf.get(hdr_len + type_off..hdr_len + type_off + type_len)?;
    let strings = btf.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
    let name_at = |off: usize| -> Option<&[u8]> {
        let s = strings.get(off..)?;
        Some(&s[..s.iter().position(|&c| c == 0)?])
    };
    let (mut at, mut id) = (0usize, 1u32);
    while at + 12 <= types.len() {
        let name_off = u32_at(types, at)? as usize;
        let info = u32_at(types, at + 4)?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if kind == KIND_FUNC && name_at(name_off) == Some(name.as_bytes()) {
            return Some(id);
        }
        at += 12 + extra(kind, vlen)?;
        id += 1;
    }
    None
}

/// The id of `name` in the running kernel's BTF, if it has BTF and the function.
pub(crate) fn kernel_func_id(name: &str) -> Option<u32> {
    let btf = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    func_id(&btf, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_kernel_has_the_vlan_kfunc_or_says_none() {
        // Either answer is legitimate on some kernel; on one that has it, the id is real.
        if let Some(id) = kernel_func_id("bpf_xdp_metadata_rx_vlan_tag") {
            assert!(id > 1);
            assert_eq!(kernel_func_id("bpf_xdp_metadata_rx_vlan_tag"), Some(id));
        }
        assert_eq!(kernel_func_id("dsrlb_no_such_function"), None);
    }
}
