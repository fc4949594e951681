//! The rtnetlink messages the XDP side needs: which XDP program an interface has (and in
//! which mode), and attaching or detaching one the pre-bpf_link way.
//!
//! Hand-written because the workspace has no netlink crate and these are three fixed,
//! small messages (`RTM_GETLINK`, `RTM_SETLINK` with a nested `IFLA_XDP`); a general
//! netlink library would be far more code than it saves here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
const NLA_F_NESTED: u16 = 1 << 15;
/// `XDP_FLAGS_UPDATE_IF_NOEXIST`: never replace someone else's program.
pub(crate) const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_REPLACE`: only if the attached program is the expected one.
const XDP_FLAGS_REPLACE: u32 = 1 << 4;
const XDP_ATTACHED_SKB: u8 = 2;

const NLMSG_HDR: usize = 16;
const IFINFO_LEN: usize = 16;

/// An interface's XDP attachment as rtnetlink reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Attached {
    pub(crate) prog_id: u32,
    /// The `XDP_FLAGS_*_MODE` flag to name when detaching it.
    pub(crate) mode_flag: u32,
}

struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(align4(buf.len()), 0);
}

/// Iterates the attributes in `b` as `(type without flags, payload)`.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let kind = u16::from_ne_bytes([b[2], b[3]]) & !NLA_F_NESTED & !(1 << 14);
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[align4(len).min(b.len())..];
        Some((kind, payload))
    })
}

fn u32_of(p: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(p.get(..4)?.try_into().ok()?))
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request (`body` = ifinfomsg + attributes) and returns the reply messages'
    /// payloads of type `want` (an error reply becomes the error).
    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        body: &[u8],
        want: u16,
    ) -> io::Result<Vec<Vec<u8>>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(NLMSG_HDR + body.len());
        msg.extend_from_slice(&((NLMSG_HDR + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: `msg` is a live buffer of `msg.len()` bytes the kernel only reads; no
        // address is passed (the kernel is the default destination).
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: `buf` is a live, writable buffer; the kernel writes at most its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
            let mut b = &buf[..n];
            while b.len() >= NLMSG_HDR {
                let len = u32_of(b).unwrap_or(0) as usize;
                let ty = u16::from_ne_bytes([b[4], b[5]]);
                let seq = u32_of(&b[8..]).unwrap_or(0);
                if len < NLMSG_HDR || len > b.len() {
                    return Err(io::Error::from_raw_os_error(libc::EBADMSG));
                }
                let payload = &b[NLMSG_HDR..len];
                b = &b[align4(len).min(b.len())..];
                if seq != self.seq {
                    continue;
                }
                match ty as i32 {
                    libc::NLMSG_ERROR => {
                        let errno = u32_of(payload).map(|e| e as i32).unwrap_or(-libc::EBADMSG);
                        return if errno == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-errno))
                        };
                    }
                    libc::NLMSG_DONE => return Ok(out),
                    _ if ty == want => {
                        out.push(payload.to_vec());
                        // A plain (non-dump) get answers with one message and no DONE.
                        if flags & libc::NLM_F_ACK as u16 == 0 {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

fn ifinfo(ifindex: u32) -> Vec<u8> {
    let mut b = vec![0u8; IFINFO_LEN];
    // ifi_family = AF_UNSPEC, then ifi_type, ifi_index at 4, flags, change.
    b[4..8].copy_from_slice(&(ifindex as i32).to_ne_bytes());
    b
}

/// The XDP program attached to `ifindex`, if any.
pub(crate) fn attached(ifindex: u32) -> io::Result<Option<Attached>> {
    let mut nl = Netlink::open()?;
    let replies = nl.request(libc::RTM_GETLINK, 0, &ifinfo(ifindex), libc::RTM_NEWLINK)?;
    let Some(link) = replies.first() else {
        return Err(io::Error::from_raw_os_error(libc::ENODEV));
    };
    let Some(link_attrs) = link.get(IFINFO_LEN..) else {
        return Err(io::Error::from_raw_os_error(libc::EBADMSG));
    };
    for (kind, payload) in attrs(link_attrs) {
        if kind != IFLA_XDP {
            continue;
        }
        let (mut mode, mut id) = (0u8, 0u32);
        for (k, p) in attrs(payload) {
            match k {
                IFLA_XDP_ATTACHED => mode = p.first().copied().unwrap_or(0),
                IFLA_XDP_PROG_ID => id = u32_of(p).unwrap_or(0),
                _ => {}
            }
        }
        if id == 0 {
            return Ok(None);
        }
        let mode_flag = if mode == XDP_ATTACHED_SKB {
            XDP_FLAGS_SKB_MODE
        } else {
            crate::ebpf::sys::XDP_FLAGS_DRV_MODE
        };
        return Ok(Some(Attached {
            prog_id: id,
            mode_flag,
        }));
    }
    Ok(None)
}

fn set_xdp(ifindex: u32, fd: i32, flags: u32, expected: Option<i32>) -> io::Result<()> {
    let mut nested = Vec::new();
    put_attr(&mut nested, IFLA_XDP_FD, &fd.to_ne_bytes());
    put_attr(&mut nested, IFLA_XDP_FLAGS, &flags.to_ne_bytes());
    if let Some(e) = expected {
        put_attr(&mut nested, IFLA_XDP_EXPECTED_FD, &e.to_ne_bytes());
    }
    let mut body = ifinfo(ifindex);
    put_attr(&mut body, IFLA_XDP | NLA_F_NESTED, &nested);
    let mut nl = Netlink::open()?;
    nl.request(
        libc::RTM_SETLINK,
        libc::NLM_F_ACK as u16,
        &body,
        libc::RTM_NEWLINK,
    )
    .map(drop)
}

/// Attaches `prog` the netlink way, only if the interface has no program yet.
pub(crate) fn attach(ifindex: u32, prog: &OwnedFd, mode_flag: u32) -> io::Result<()> {
    set_xdp(
        ifindex,
        prog.as_raw_fd(),
        mode_flag | XDP_FLAGS_UPDATE_IF_NOEXIST,
        None,
    )
}

/// Detaches `prog` if (and only if) it is the program attached: a program someone else
/// attached meanwhile is left alone. Fails with EBUSY when it is attached by a bpf_link.
pub(crate) fn detach(ifindex: u32, prog: &OwnedFd, mode_flag: u32) -> io::Result<()> {
    set_xdp(
        ifindex,
        -1,
        mode_flag | XDP_FLAGS_REPLACE,
        Some(prog.as_raw_fd()),
    )
}
