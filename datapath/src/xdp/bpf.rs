//! The `bpf()` system call, only as far as the AF_XDP backend needs it: create a map,
//! update/delete/iterate its keys, load an XDP program, attach it with a bpf_link, and ask
//! a program for its name. Every `unsafe` of the XDP program side lives here.
//!
//! nix has no wrapper for `bpf()`, so this is raw libc, with one `#[repr(C)]` struct per
//! command's slice of `union bpf_attr` (the kernel accepts a shorter attr and zero-fills
//! the rest; it rejects non-zero bytes it does not know, so every struct is fully zeroed).

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_LINK_CREATE: libc::c_int = 28;

pub(crate) const BPF_MAP_TYPE_HASH: u32 = 1;
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
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
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
    // The steering program (about forty instructions generated by `prog.rs`) is declared
    // "Dual MIT/GPL": the kernel lets only GPL-compatible programs call kfuncs, and the
    // VLAN metadata kfunc is one. MIT keeps it compatible with the crate's Apache-2.0; the
    // crate itself stays Apache-2.0. (With "Apache-2.0" here the kfunc load is refused and
    // the program is loaded without it: everything works but out-of-band VLAN tags.)
    const LICENSE: &CStr = c"Dual MIT/GPL";
    let attempt = |log: Option<&mut Vec<u8>>| {
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: LICENSE.as_ptr() as u64,
            prog_name: obj_name(name),
            expected_attach_type: BPF_XDP,
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
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
        ..LinkCreateAttr::default()
    };
    fd_result(sys_bpf(BPF_LINK_CREATE, &mut attr)?)
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
