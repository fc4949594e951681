//! Every `unsafe` of the crate: thin, bounds-checked wrappers over the AF_PACKET system
//! calls (socket options, the memory-mapped receive ring, `sendmmsg`, `SIOCGIFMTU`).
//!
//! Nothing here decides anything; [`crate::ring`], [`crate::worker`] and
//! [`crate::resolver`] are safe code over these wrappers. Errors are plain `io::Error`s;
//! the callers add which stage failed.

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// An `AF_PACKET`/`SOCK_RAW` socket.
#[derive(Debug)]
pub(crate) struct PacketSocket {
    fd: OwnedFd,
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl PacketSocket {
    /// A raw packet socket with protocol 0: it receives nothing until [`bind`] names a
    /// protocol, so options, ring and filter are in place before the first frame.
    ///
    /// [`bind`]: PacketSocket::bind
    pub(crate) fn open() -> io::Result<PacketSocket> {
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket { fd })
    }

    /// Only called with plain C structs and integers (no padding the kernel cares about).
    fn setsockopt<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` points to a live `T` of `size_of::<T>()` bytes for the duration of
        // the call; the kernel only reads (copies) it.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (value as *const T).cast(),
                size_of::<T>() as libc::socklen_t,
            )
        })
    }

    pub(crate) fn set_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        v: libc::c_int,
    ) -> io::Result<()> {
        self.setsockopt(level, name, &v)
    }

    pub(crate) fn get_int(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are live locals; the kernel writes at most `len` bytes.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        })?;
        Ok(v)
    }

    /// `PACKET_STATISTICS`: (frames received, frames the kernel dropped) since the last
    /// call — the kernel resets the counters on read.
    pub(crate) fn packet_stats(&self) -> io::Result<(u32, u32)> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live locals; the kernel writes at most `len` bytes.
        check(unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        })?;
        Ok((st.tp_packets, st.tp_drops))
    }

    /// `PACKET_RX_RING` with the given geometry.
    pub(crate) fn set_rx_ring(&self, req: &libc::tpacket_req) -> io::Result<()> {
        self.setsockopt(libc::SOL_PACKET, libc::PACKET_RX_RING, req)
    }

    /// `SO_ATTACH_FILTER`: replaces any filter atomically.
    pub(crate) fn attach_filter(&self, prog: &[libc::sock_filter]) -> io::Result<()> {
        let len =
            u16::try_from(prog.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let fprog = libc::sock_fprog {
            len,
            // The kernel only reads the program; the cast to `*mut` is what the C struct wants.
            filter: prog.as_ptr().cast_mut(),
        };
        self.setsockopt(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)
    }

    /// Binds to one interface and starts receiving `protocol` (host order, e.g. `ETH_P_ALL`).
    pub(crate) fn bind(&self, ifindex: u32, protocol: u16) -> io::Result<()> {
        let ifindex = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
        // SAFETY: sockaddr_ll is a plain C struct for which all-zero bytes are valid.
        let mut sll: libc::sockaddr_ll = unsafe { MaybeUninit::zeroed().assume_init() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = protocol.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: `sll` is a live sockaddr_ll and the length passed is its size.
        check(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })
    }

    /// Sends one whole frame on the bound interface without blocking.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<usize> {
        // SAFETY: `frame` is a live slice; the kernel reads `frame.len()` bytes from it.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Receives one frame without blocking (`WouldBlock` when none is queued).
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a live, writable slice; the kernel writes at most `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Maps the ring set up with [`set_rx_ring`](PacketSocket::set_rx_ring).
    pub(crate) fn map_ring(&self, len: usize) -> io::Result<MappedRing> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh shared mapping of the socket's ring; no existing memory is
        // affected. The result is checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(MappedRing { base, len })
    }
}

/// The memory-mapped receive ring of a packet socket, shared with the kernel.
///
/// Ownership of each slot is handed back and forth through its `tp_status` word: the
/// kernel writes a slot only while its status is `TP_STATUS_KERNEL`, user space only while
/// `TP_STATUS_USER` is set. [`slot_mut`](MappedRing::slot_mut) checks the status before
/// handing out a slice, and [`release`](MappedRing::release) needs `&mut self`, so no slice
/// outlives the slot's return to the kernel.
#[derive(Debug)]
pub(crate) struct MappedRing {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner to another
// thread moves every access with it (no interior sharing is handed out across threads).
unsafe impl Send for MappedRing {}

impl MappedRing {
    /// The status word of the slot starting at `off`, if it is a valid slot start.
    pub(crate) fn status(&self, off: usize) -> Option<&AtomicU32> {
        if !off.is_multiple_of(libc::TPACKET_ALIGNMENT) || off.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) and 4-byte aligned (the mapping is page aligned
        // and `off` is a multiple of 16). The kernel accesses this word with single
        // aligned loads and stores, so treating it as an atomic is sound; the returned
        // reference borrows `self`, so it cannot outlive the mapping.
        Some(unsafe { &*self.base.as_ptr().add(off).cast::<AtomicU32>() })
    }

    /// The bytes of the user-owned slot `[off, off + len)`; `None` when the slot is out of
    /// bounds or still the kernel's.
    pub(crate) fn slot_mut(&mut self, off: usize, len: usize) -> Option<&mut [u8]> {
        let end = off.checked_add(len)?;
        if end > self.len || len < 4 {
            return None;
        }
        // Acquire pairs with the kernel's barrier before it set TP_STATUS_USER: the frame
        // bytes it wrote are visible once the status is.
        if self.status(off)?.load(Ordering::Acquire) & libc::TP_STATUS_USER == 0 {
            return None;
        }
        // SAFETY: in bounds (checked above); the slot is user-owned, so the kernel does not
        // write it until `release`, which needs `&mut self` and so ends this borrow first.
        Some(unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(off), len) })
    }

    /// Hands the slot at `off` back to the kernel.
    pub(crate) fn release(&mut self, off: usize) {
        if let Some(s) = self.status(off) {
            // Release: our reads of the slot happen before the kernel may overwrite it.
            s.store(libc::TP_STATUS_KERNEL, Ordering::Release);
        }
    }
}

#[cfg(test)]
impl MappedRing {
    /// Private anonymous memory laid out as a ring, for tests that play the kernel.
    pub(crate) fn anonymous(len: usize) -> io::Result<MappedRing> {
        // SAFETY: a fresh private anonymous mapping; checked against MAP_FAILED before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(MappedRing { base, len })
    }
}

impl Drop for MappedRing {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping made in `map_ring`, and no
        // reference into it survives (they all borrow `self`).
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        // munmap of a mapping we made cannot fail short of a kernel bug; nothing to recover.
        debug_assert_eq!(rc, 0, "munmap of the packet ring failed");
    }
}

/// Preallocated `sendmmsg` vectors: one message of one iovec per frame.
///
/// Holds raw pointers only during [`send`](TxBatch::send); built once per worker thread.
pub(crate) struct TxBatch {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
}

impl TxBatch {
    pub(crate) fn new(capacity: usize) -> TxBatch {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are valid (null
        // pointers, zero lengths).
        let msg: libc::mmsghdr = unsafe { MaybeUninit::zeroed().assume_init() };
        TxBatch {
            msgs: vec![msg; capacity],
            iovs: vec![iov; capacity],
        }
    }

    /// Sends `frames` (each `(offset, len)` inside `ring`) with one `sendmmsg` call that
    /// points straight into the ring: no copy in user space. Returns how many frames the
    /// kernel took, in order; an error means the first frame was refused.
    pub(crate) fn send(
        &mut self,
        sock: &PacketSocket,
        ring: &MappedRing,
        frames: &[(usize, usize)],
    ) -> io::Result<usize> {
        let n = frames.len().min(self.msgs.len());
        if n == 0 {
            return Ok(0);
        }
        for (i, &(off, len)) in frames[..n].iter().enumerate() {
            match off.checked_add(len) {
                Some(end) if end <= ring.len => {}
                _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
            }
            // SAFETY: `off` is within the mapping (checked above), so the pointer stays
            // inside the same allocation. The kernel only reads through it.
            let base = unsafe { ring.base.as_ptr().add(off) };
            self.iovs[i] = libc::iovec {
                iov_base: base.cast(),
                iov_len: len,
            };
            let h = &mut self.msgs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: `msgs[..n]` are initialised and each points at one live iovec, which
        // points into the live mapping borrowed from `ring` for the whole call.
        let rc = unsafe {
            libc::sendmmsg(
                sock.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(rc).map_err(|_| io::Error::last_os_error())
    }
}

/// The MTU of interface `name` (`SIOCGIFMTU`), in the calling thread's network namespace.
pub(crate) fn interface_mtu(name: &str) -> io::Result<u32> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct (with a union) for which all-zero bytes are valid.
    let mut ifr: libc::ifreq = unsafe { MaybeUninit::zeroed().assume_init() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: `ifr` is a live ifreq with a NUL-terminated name (zeroed tail); SIOCGIFMTU
    // writes only `ifru_mtu` inside it.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) })?;
    // SAFETY: SIOCGIFMTU succeeded, so the kernel filled the `ifru_mtu` member.
    let mtu = unsafe { ifr.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}
