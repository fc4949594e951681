//! The `bpf()` system call, only as far as our two programs need it: create a map (and map
//! an array into memory), update/delete/read its keys, load an XDP or tc program, attach it
//! with a bpf_link, ask a program for its name, and run a program on a test frame. Every
//! `unsafe` of the eBPF side lives here.
//!
//! nix has no wrapper for `bpf()`, so this is raw libc, with one `#[repr(C)]` struct per
//! command's slice of `union bpf_attr` (the kernel accepts a shorter attr and zero-fills
//! the rest; it rejects non-zero bytes it does not know, so every struct is fully zeroed).

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_PROG_QUERY: libc::c_int = 16;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_int = 10;

pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;
pub(crate) const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub(crate) const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
/// `BPF_F_MMAPABLE`: an array map user space can map and write in place.
pub(crate) const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `BPF_TCX_INGRESS` (Linux 6.6): tc ingress through a bpf_link, no qdisc or netlink.
pub(crate) const BPF_TCX_INGRESS: u32 = 46;
pub(crate) const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s `BPF_XDP`.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: native (driver) XDP only, never the generic skb path.
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// Object names the kernel keeps (`BPF_OBJ_NAME_LEN`, NUL included).
const OBJ_NAME_LEN: usize = 16;

fn sys_bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised `#[repr(C)]` struct of `size_of::<T>()`
    // bytes laid out as the command's part of `union bpf_attr`; every pointer inside it
    // points to memory that outlives the call, with the lengths given beside them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = RawFd::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn obj_name(name: &str) -> [u8; OBJ_NAME_LEN] {
    let mut out = [0u8; OBJ_NAME_LEN];
    for (d, s) in out.iter_mut().zip(name.bytes().take(OBJ_NAME_LEN - 1)) {
        *d = s;
    }
    out
}

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; OBJ_NAME_LEN],
}

/// `BPF_MAP_CREATE`.
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    map_create_flags(map_type, key_size, value_size, max_entries, 0, name)
}

/// [`map_create`] with `map_flags` (e.g. [`BPF_F_MMAPABLE`]).
pub(crate) fn map_create_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: obj_name(name),
        ..MapCreateAttr::default()
    };
    fd_result(sys_bpf(BPF_MAP_CREATE, &mut attr)?)
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `BPF_MAP_UPDATE_ELEM` (`BPF_ANY`): `key` and `value` must be the map's sizes.
pub(crate) fn map_update(map: &OwnedFd, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_LOOKUP_ELEM` into `value` (for a per-CPU map: one 8-byte-aligned value per
/// possible CPU). `Ok(false)` when the key is absent.
pub(crate) fn map_lookup(map: &OwnedFd, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        r => r.map(|_| true),
    }
}

/// `BPF_MAP_DELETE_ELEM`; a key that is not there is not an error.
pub(crate) fn map_delete(map: &OwnedFd, key: &[u8]) -> io::Result<()> {
    let mut attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        ..MapElemAttr::default()
    };
    match sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        r => r.map(drop),
    }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; OBJ_NAME_LEN],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why a program load failed: the errno and, when the verifier said something, its log.
#[derive(Debug, thiserror::Error)]
#[error("{source}{}", if log.is_empty() { String::new() } else { format!("; verifier: {log}") })]
pub(crate) struct LoadError {
    pub(crate) source: io::Error,
    pub(crate) log: String,
}

/// `BPF_F_XDP_DEV_BOUND_ONLY`: the program may call the device's metadata kfuncs and can
/// only be attached to that device.
const BPF_F_XDP_DEV_BOUND_ONLY: u32 = 1 << 6;

/// `BPF_PROG_LOAD` of an XDP program, bound to device `bound_to` when given (needed for
/// metadata kfuncs). On failure the load is repeated with the verifier log on, so the error
/// says why.
pub(crate) fn prog_load_xdp(
    insns: &[u64],
    name: &str,
    bound_to: Option<u32>,
) -> Result<OwnedFd, LoadError> {
    prog_load(BPF_PROG_TYPE_XDP, BPF_XDP, insns, name, bound_to)
}

/// `BPF_PROG_LOAD` of a tc (`sched_cls`) program for tcx ingress.
pub(crate) fn prog_load_tc(insns: &[u64], name: &str) -> Result<OwnedFd, LoadError> {
    prog_load(BPF_PROG_TYPE_SCHED_CLS, BPF_TCX_INGRESS, insns, name, None)
}

fn prog_load(
    prog_type: u32,
    expected_attach_type: u32,
    insns: &[u64],
    name: &str,
    bound_to: Option<u32>,
) -> Result<OwnedFd, LoadError> {
    // The steering program (about forty instructions generated by `prog.rs`) is declared
    // "Dual MIT/GPL": the kernel lets only GPL-compatible programs call kfuncs, and the
    // VLAN metadata kfunc is one. MIT keeps it compatible with the crate's Apache-2.0; the
    // crate itself stays Apache-2.0. (With "Apache-2.0" here the kfunc load is refused and
    // the program is loaded without it: everything works but out-of-band VLAN tags.)
    const LICENSE: &CStr = c"Dual MIT/GPL";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: obj_name(name),
            expected_attach_type,
            prog_ifindex: bound_to.unwrap_or(0),
            prog_flags: if bound_to.is_some() {
                BPF_F_XDP_DEV_BOUND_ONLY
            } else {
                0
            },
            ..ProgLoadAttr::default()
        };
        if let Some(buf) = log {
            attr.log_level = 1;
            attr.log_size = buf.len() as u32;
            attr.log_buf = buf.as_mut_ptr() as u64;
        }
        sys_bpf(BPF_PROG_LOAD, &mut attr).and_then(fd_result)
    };
    match attempt(None) {
        Ok(fd) => Ok(fd),
        Err(source) => {
            let mut buf = vec![0u8; 1 << 16];
            let again = attempt(Some(&mut buf));
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            let log = String::from_utf8_lossy(&buf[..end]).trim().to_owned();
            match again {
                // Loaded the second time (a transient failure such as EAGAIN).
                Ok(fd) => Ok(fd),
                Err(_) => Err(LoadError { source, log }),
            }
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    // The union that follows (target_btf_id, iterator info, …); XDP leaves it zero.
    _rest: [u64; 4],
}

/// `BPF_LINK_CREATE` for XDP on `ifindex`: the attachment lives exactly as long as the
/// returned descriptor (so a killed process leaves nothing attached).
pub(crate) fn link_create_xdp(prog: &OwnedFd, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    link_create(prog, ifindex, BPF_XDP, flags)
}

/// `BPF_LINK_CREATE` of `attach_type` on `ifindex` (e.g. [`BPF_TCX_INGRESS`]), detached
/// when the returned descriptor closes.
pub(crate) fn link_create(
    prog: &OwnedFd,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type,
        flags,
        ..LinkCreateAttr::default()
    };
    fd_result(sys_bpf(BPF_LINK_CREATE, &mut attr)?)
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// `BPF_PROG_QUERY`: how many programs are attached to `ifindex` at `attach_type`.
pub(crate) fn prog_count(ifindex: u32, attach_type: u32) -> io::Result<u32> {
    let mut attr = QueryAttr {
        target_ifindex: ifindex,
        attach_type,
        ..QueryAttr::default()
    };
    sys_bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(attr.prog_cnt)
}

#[cfg(test)]
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

#[cfg(test)]
/// `BPF_PROG_TEST_RUN` of `prog` on `frame`: its return value and the frame as the program
/// left it (written back into `frame`; the length is unchanged for our programs).
pub(crate) fn prog_test_run(prog: &OwnedFd, frame: &mut [u8]) -> io::Result<u32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..TestRunAttr::default()
    };
    sys_bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let n = (attr.data_size_out as usize).min(frame.len());
    frame[..n].copy_from_slice(&out[..n]);
    Ok(attr.retval)
}

/// A shared, writable mapping of an array map of 8-byte values created with
/// [`BPF_F_MMAPABLE`], unmapped on drop. (The kernel lays array elements out at 8-byte
/// strides whatever the value size, so 8-byte values are what a mapping indexes plainly.)
#[derive(Debug)]
pub(crate) struct MappedArray {
    base: std::ptr::NonNull<u64>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; access goes through
// `&mut self` (writes) or copies, so moving it between threads is sound.
unsafe impl Send for MappedArray {}
// SAFETY: shared references only read through `len()`; writes need `&mut self`.
unsafe impl Sync for MappedArray {}

impl MappedArray {
    /// Maps `entries` values of `map` (an mmapable array of 8-byte values).
    pub(crate) fn map(map: &OwnedFd, entries: usize) -> io::Result<MappedArray> {
        let bytes = entries * 8;
        // SAFETY: a fresh shared mapping of the map's memory; no existing memory is
        // affected. The result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = std::ptr::NonNull::new(p.cast::<u64>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(MappedArray { base, len: entries })
    }

    /// The values, writable in place (the program reads them concurrently; each aligned
    /// 8-byte store is atomic on the 64-bit architectures we run on, so a reader sees the
    /// old or the new value).
    pub(crate) fn values_mut(&mut self) -> &mut [u64] {
        // SAFETY: `base` points to `len` u64s of a live mapping we own; `&mut self`
        // excludes other Rust references to it.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.len) }
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which nothing references now.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len * 8);
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// `BPF_PROG_GET_FD_BY_ID`.
pub(crate) fn prog_fd_by_id(id: u32) -> io::Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    fd_result(sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?)
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Offset of `name` in `struct bpf_prog_info` (stable UAPI: type, id, tag[8], two lengths,
/// two pointers, load_time, uid, nr_map_ids, map_ids).
const PROG_INFO_NAME: usize = 64;

/// The name a loaded program was given.
pub(crate) fn prog_name(prog: &OwnedFd) -> io::Result<String> {
    let mut info = [0u8; 256];
    let mut attr = InfoAttr {
        bpf_fd: prog.as_raw_fd() as u32,
        info_len: info.len() as u32,
        info: info.as_mut_ptr() as u64,
    };
    sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name = &info[PROG_INFO_NAME..PROG_INFO_NAME + OBJ_NAME_LEN];
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Ok(String::from_utf8_lossy(&name[..end]).into_owned())
}
