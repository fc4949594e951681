//! One AF_XDP socket with its own UMEM and four rings (fill, completion, RX, TX): setup,
//! the memory maps, and the lock-free ring cursors. Every `unsafe` of the socket side lives
//! here; the worker is safe code over [`Xsk`].
//!
//! Frame accounting: the UMEM has exactly as many frames as each ring has slots, so a
//! frame is always in one place (fill ring, kernel, RX ring, worker, TX ring, kernel,
//! completion ring) and a push to the fill or TX ring can never find it full.
//!
//! TX metadata: the UMEM is registered with room for `struct xsk_tx_metadata` in front of
//! each frame, so a frame that arrived with a partial checksum is sent with the kernel
//! asked to complete it (`XDP_TXMD_FLAGS_CHECKSUM`), exactly as AF_PACKET's vnet header
//! does. Kernels without it (before 6.8 natively, copy mode later) get the checksum
//! completed in user space instead (see `csum`).

use std::io;
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// One UMEM frame: a page, which holds any non-GSO frame up to a 3.5 KiB MTU after the
/// kernel's 256-byte XDP headroom.
pub(crate) const FRAME_SIZE: u32 = 4096;
/// Bytes of `struct xsk_tx_metadata` reserved before each frame (flags, csum_start,
/// csum_offset, launch_time: 24 bytes with the 6.15 layout; a multiple of 8 as required).
pub(crate) const TX_META_LEN: usize = 24;

/// A shared or anonymous memory mapping, unmapped on drop.
#[derive(Debug)]
struct Mmap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: plain memory owned by this value; moving it moves every access with it.
unsafe impl Send for Mmap {}

impl Mmap {
    fn new(len: usize, fd: Option<RawFd>, offset: u64) -> io::Result<Mmap> {
        let (flags, fd) = match fd {
            Some(fd) => (libc::MAP_SHARED | libc::MAP_POPULATE, fd),
            None => (
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
            ),
        };
        // SAFETY: a fresh mapping; no existing memory is affected. Checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mmap { base, len })
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `new`; no reference into it outlives `self`.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap failed");
    }
}

/// One of the four rings: a producer and a consumer index shared with the kernel and an
/// array of `size` descriptors (`T` is `u64` for fill/completion, `xdp_desc` for RX/TX).
#[derive(Debug)]
struct Ring<T> {
    _map: Mmap,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    descs: NonNull<T>,
    mask: u32,
    /// Our own index (producer for fill/TX, consumer for RX/completion), not yet published
    /// beyond what the kernel has seen.
    local: u32,
    /// The other side's index as last read.
    cached: u32,
}

// SAFETY: the ring's memory is owned by `_map`, and the worker thread that owns the ring is
// the only user-space side touching it.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    fn map(
        fd: &OwnedFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Ring<T>> {
        let len = off.desc as usize + size as usize * size_of::<T>();
        let map = Mmap::new(len, Some(fd.as_raw_fd()), pgoff)?;
        let at = |o: u64| -> io::Result<NonNull<u8>> {
            if o as usize + 4 > len {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            // SAFETY: in bounds of the mapping (checked above).
            Ok(unsafe { map.base.add(o as usize) })
        };
        let producer = at(off.producer)?.cast();
        let consumer = at(off.consumer)?.cast();
        let flags = at(off.flags)?.cast();
        let descs = at(off.desc)?.cast();
        let mut ring = Ring {
            _map: map,
            producer,
            consumer,
            flags,
            descs,
            mask: size - 1,
            local: 0,
            cached: 0,
        };
        ring.local = ring.index(true).load(Ordering::Relaxed);
        Ok(ring)
    }

    fn index(&self, producer: bool) -> &AtomicU32 {
        let p = if producer {
            self.producer
        } else {
            self.consumer
        };
        // SAFETY: points into the live mapping at a 4-byte aligned offset the kernel gave;
        // the kernel accesses it with single aligned loads and stores.
        unsafe { p.as_ref() }
    }

    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: `i & mask` < size, so the pointer stays inside the descriptor array.
        unsafe { self.descs.as_ptr().add((i & self.mask) as usize) }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as in `index`.
        unsafe { self.flags.as_ref() }.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    // --- as consumer (RX, completion) ---

    /// Entries ready to read, up to `max`, starting at `self.local`.
    fn available(&mut self, max: u32) -> u32 {
        let mut n = self.cached.wrapping_sub(self.local);
        if n < max {
            // Acquire: the descriptors the kernel wrote before publishing are visible.
            self.cached = self.index(true).load(Ordering::Acquire);
            n = self.cached.wrapping_sub(self.local);
        }
        n.min(max)
    }

    fn read(&self, k: u32) -> T {
        // SAFETY: `available` said the slot holds a published entry the kernel does not
        // touch until we release it.
        unsafe { self.slot(self.local.wrapping_add(k)).read_volatile() }
    }

    fn release(&mut self, n: u32) {
        self.local = self.local.wrapping_add(n);
        // Release: our reads of the entries happen before the kernel may reuse them.
        self.index(false).store(self.local, Ordering::Release);
    }

    // --- as producer (fill, TX) ---

    /// Writes one entry; the caller guarantees room (see the frame accounting above).
    fn push(&mut self, v: T) {
        // SAFETY: the slot is ours: with as many frames as slots, at most `size` entries are
        // ever outstanding, so the kernel has consumed this slot's previous entry.
        unsafe { self.slot(self.local).write_volatile(v) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publishes the pushed entries to the kernel.
    fn submit(&mut self) {
        // Release: the entries are written before the kernel sees the new index.
        self.index(true).store(self.local, Ordering::Release);
    }

    /// As consumer: entries the kernel has published that we have not read.
    fn backlog(&self) -> u32 {
        self.index(true)
            .load(Ordering::Relaxed)
            .wrapping_sub(self.local)
    }

    /// Slots in the ring.
    fn size(&self) -> u32 {
        self.mask + 1
    }

    /// Entries published that the kernel has not consumed yet.
    fn outstanding(&self) -> u32 {
        self.local
            .wrapping_sub(self.index(false).load(Ordering::Acquire))
    }
}

/// What the kernel counted on one socket since it was opened.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct XskStats {
    /// Frames the kernel dropped: RX ring full, no free frame, too large.
    pub(crate) rx_lost: u64,
}

/// An AF_XDP socket bound to one queue, with its UMEM and rings.
#[derive(Debug)]
pub(crate) struct Xsk {
    // Field order is drop order: rings before the UMEM, the socket last.
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    umem: Mmap,
    frames: u32,
    /// Whether the kernel took `TX_META_LEN` bytes of TX metadata per frame.
    pub(crate) tx_meta: bool,
    /// Whether the kernel bound in zero-copy mode (`XDP_OPTIONS`).
    pub(crate) zerocopy: bool,
    fd: OwnedFd,
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Xsk {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn setsockopt<T>(fd: &OwnedFd, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live plain C value of `size_of::<T>()` bytes the kernel only reads.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
}

fn getsockopt<T>(fd: &OwnedFd, name: libc::c_int) -> io::Result<T> {
    let mut v = MaybeUninit::<T>::zeroed();
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `v` has room for `len` bytes; the kernel writes at most that many.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            name,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    // SAFETY: zeroed is a valid value of these plain C structs, and the kernel filled the
    // rest.
    Ok(unsafe { v.assume_init() })
}

/// Where setting up a socket failed, for the caller's error.
#[derive(Debug)]
pub(crate) struct SetupError {
    pub(crate) stage: &'static str,
    pub(crate) source: io::Error,
}

fn stage(stage: &'static str) -> impl FnOnce(io::Error) -> SetupError {
    move |source| SetupError { stage, source }
}

impl Xsk {
    /// Opens a socket with `frames` UMEM frames (a power of two) and rings of as many
    /// slots, binds it to `queue` of `ifindex`, and hands every frame to the fill ring.
    pub(crate) fn open(ifindex: u32, queue: u32, frames: u32) -> Result<Xsk, SetupError> {
        debug_assert!(frames.is_power_of_two());
        // SAFETY: socket() takes no pointers; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(stage("socket(AF_XDP)")(io::Error::last_os_error()));
        }
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let umem_len = frames as usize * FRAME_SIZE as usize;
        let umem = Mmap::new(umem_len, None, 0).map_err(stage("mmap UMEM"))?;
        let mut reg = libc::xdp_umem_reg {
            addr: umem.base.as_ptr() as u64,
            len: umem_len as u64,
            chunk_size: FRAME_SIZE,
            headroom: 0,
            flags: libc::XDP_UMEM_TX_METADATA_LEN,
            tx_metadata_len: TX_META_LEN as u32,
        };
        let tx_meta = match setsockopt(&fd, libc::XDP_UMEM_REG, &reg) {
            Ok(()) => true,
            Err(_) => {
                reg.flags = 0;
                reg.tx_metadata_len = 0;
                setsockopt(&fd, libc::XDP_UMEM_REG, &reg).map_err(stage("XDP_UMEM_REG"))?;
                false
            }
        };
        for (name, opt) in [
            ("XDP_UMEM_FILL_RING", libc::XDP_UMEM_FILL_RING),
            ("XDP_UMEM_COMPLETION_RING", libc::XDP_UMEM_COMPLETION_RING),
            ("XDP_RX_RING", libc::XDP_RX_RING),
            ("XDP_TX_RING", libc::XDP_TX_RING),
        ] {
            setsockopt(&fd, opt, &(frames as libc::c_int)).map_err(stage(name))?;
        }
        let off: libc::xdp_mmap_offsets =
            getsockopt(&fd, libc::XDP_MMAP_OFFSETS).map_err(stage("XDP_MMAP_OFFSETS"))?;
        let rx = Ring::map(&fd, &off.rx, frames, libc::XDP_PGOFF_RX_RING as u64)
            .map_err(stage("mmap RX ring"))?;
        let tx = Ring::map(&fd, &off.tx, frames, libc::XDP_PGOFF_TX_RING as u64)
            .map_err(stage("mmap TX ring"))?;
        let fill = Ring::map(&fd, &off.fr, frames, libc::XDP_UMEM_PGOFF_FILL_RING)
            .map_err(stage("mmap fill ring"))?;
        let comp = Ring::map(&fd, &off.cr, frames, libc::XDP_UMEM_PGOFF_COMPLETION_RING)
            .map_err(stage("mmap completion ring"))?;
        let mut xsk = Xsk {
            rx,
            tx,
            fill,
            comp,
            umem,
            frames,
            tx_meta,
            zerocopy: false,
            fd,
        };
        for i in 0..frames {
            xsk.fill.push(u64::from(i) * u64::from(FRAME_SIZE));
        }
        xsk.fill.submit();
        // SAFETY: sockaddr_xdp is a plain C struct for which all-zero bytes are valid.
        let mut sa: libc::sockaddr_xdp = unsafe { MaybeUninit::zeroed().assume_init() };
        sa.sxdp_family = libc::AF_XDP as u16;
        sa.sxdp_flags = libc::XDP_USE_NEED_WAKEUP;
        sa.sxdp_ifindex = ifindex;
        sa.sxdp_queue_id = queue;
        // SAFETY: `sa` is a live sockaddr_xdp and the length passed is its size.
        check(unsafe {
            libc::bind(
                xsk.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map_err(stage("bind"))?;
        if let Ok(o) = getsockopt::<libc::xdp_options>(&xsk.fd, libc::XDP_OPTIONS) {
            xsk.zerocopy = o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0;
        }
        Ok(xsk)
    }

    /// Received descriptors ready to read, up to `max`.
    pub(crate) fn rx_available(&mut self, max: u32) -> u32 {
        self.rx.available(max)
    }

    /// The `k`-th ready RX descriptor.
    pub(crate) fn rx_desc(&self, k: u32) -> libc::xdp_desc {
        self.rx.read(k)
    }

    pub(crate) fn rx_release(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Received descriptors waiting, and the RX ring's size.
    pub(crate) fn rx_fill(&self) -> (u32, u32) {
        (self.rx.backlog(), self.rx.size())
    }

    /// The bytes of the frame a descriptor names (`None` if it lies outside the UMEM, which
    /// only a kernel bug could produce).
    pub(crate) fn frame_mut(&mut self, addr: u64, len: u32) -> Option<&mut [u8]> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len as usize)?;
        let chunk_end = (start / FRAME_SIZE as usize + 1) * FRAME_SIZE as usize;
        if end > chunk_end || end > self.umem.len {
            return None;
        }
        // SAFETY: in bounds of the UMEM (checked above). The frame came off the RX ring, so
        // the kernel does not touch it until we put it on the fill or TX ring, which needs
        // `&mut self` and so ends this borrow first.
        Some(unsafe {
            std::slice::from_raw_parts_mut(self.umem.base.as_ptr().add(start), len as usize)
        })
    }

    /// Asks the kernel to complete a partial checksum on TX: writes the metadata in front
    /// of the frame at `addr`. Only with `tx_meta`.
    pub(crate) fn set_tx_csum(&mut self, addr: u64, csum_start: u16, csum_offset: u16) {
        let Some(at) = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_sub(TX_META_LEN))
        else {
            return;
        };
        if !self.tx_meta || at / FRAME_SIZE as usize != addr as usize / FRAME_SIZE as usize {
            return;
        }
        let mut meta = [0u8; TX_META_LEN];
        meta[0..8].copy_from_slice(&u64::from(libc::XDP_TXMD_FLAGS_CHECKSUM).to_ne_bytes());
        meta[8..10].copy_from_slice(&csum_start.to_ne_bytes());
        meta[10..12].copy_from_slice(&csum_offset.to_ne_bytes());
        // SAFETY: `at..at + TX_META_LEN` lies in the same UMEM chunk as the frame (checked
        // above: the kernel leaves 256 bytes of headroom), which the worker owns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                meta.as_ptr(),
                self.umem.base.as_ptr().add(at),
                TX_META_LEN,
            )
        };
    }

    /// Queues a frame for transmit (published by [`Xsk::tx_submit`]).
    pub(crate) fn tx_push(&mut self, addr: u64, len: u32, with_meta: bool) {
        let options = if with_meta && self.tx_meta {
            libc::XDP_TX_METADATA
        } else {
            0
        };
        self.tx.push(libc::xdp_desc { addr, len, options });
    }

    pub(crate) fn tx_submit(&mut self) {
        self.tx.submit();
    }

    /// Frames on the TX ring the kernel has not taken yet.
    pub(crate) fn tx_outstanding(&self) -> u32 {
        self.tx.outstanding()
    }

    /// Hands a frame back for receiving (published by [`Xsk::fill_submit`]).
    pub(crate) fn fill_push(&mut self, addr: u64) {
        self.fill.push(addr - addr % u64::from(FRAME_SIZE));
    }

    pub(crate) fn fill_submit(&mut self) {
        self.fill.submit();
    }

    /// Moves every completed transmit back to the fill ring; returns how many.
    pub(crate) fn recycle_completed(&mut self) -> u32 {
        let n = self.comp.available(self.frames);
        for k in 0..n {
            let addr = self.comp.read(k);
            self.fill_push(addr);
        }
        if n > 0 {
            self.comp.release(n);
            self.fill.submit();
        }
        n
    }

    /// Whether the kernel wants a `sendto` to process the TX ring (always in copy mode).
    pub(crate) fn tx_needs_kick(&self) -> bool {
        self.tx.needs_wakeup()
    }

    /// Whether the kernel wants a wake-up to refill its receive side.
    pub(crate) fn fill_needs_kick(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// The per-batch `sendto` that makes the kernel transmit the TX ring.
    pub(crate) fn kick(&self) -> io::Result<()> {
        // SAFETY: no buffers are passed; the call only tells the kernel to look at the ring.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `XDP_STATISTICS`: cumulative since the socket was opened.
    pub(crate) fn stats(&self) -> io::Result<XskStats> {
        let s: libc::xdp_statistics = getsockopt(&self.fd, libc::XDP_STATISTICS)?;
        Ok(XskStats {
            // A missing fill frame is counted in `rx_dropped` as well as in the fill ring's
            // own count, so that one is left out.
            rx_lost: s.rx_dropped + s.rx_ring_full,
        })
    }
}

/// `poll` on the worker's sockets (a preallocated array: no allocation per wait).
pub(crate) fn poll_in(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a live, writable array of `fds.len()` pollfds; the kernel writes only
    // their `revents`.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    usize::try_from(rc).map_err(|_| io::Error::last_os_error())
}

/// Receive queues of interface `name` (`ETHTOOL_GCHANNELS`: combined plus RX-only
/// channels), in the calling thread's namespace; `None` when the driver does not say.
pub(crate) fn rx_queues(name: &str) -> Option<u32> {
    const ETHTOOL_GCHANNELS: u32 = 0x3c;
    // struct ethtool_channels: cmd, max_rx, max_tx, max_other, max_combined, rx_count,
    // tx_count, other_count, combined_count.
    let mut ch = [0u32; 9];
    ch[0] = ETHTOOL_GCHANNELS;
    ethtool(name, &mut ch)?;
    let n = ch[5] + ch[8];
    (n > 0).then_some(n)
}

/// The driver of interface `name` (`ETHTOOL_GDRVINFO`), e.g. `"veth"`; `None` when it
/// does not say.
pub(crate) fn driver(name: &str) -> Option<String> {
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    // struct ethtool_drvinfo is 196 bytes: cmd, then driver[32], …
    let mut info = [0u32; 49];
    info[0] = ETHTOOL_GDRVINFO;
    ethtool(name, &mut info)?;
    let bytes: Vec<u8> = info[1..9].iter().flat_map(|w| w.to_ne_bytes()).collect();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let driver = String::from_utf8_lossy(&bytes[..end]).into_owned();
    (!driver.is_empty()).then_some(driver)
}

/// One `SIOCETHTOOL` request on interface `name` with `buf` (its first word the command) as
/// the argument the kernel reads and fills; `None` when the call fails.
fn ethtool(name: &str, buf: &mut [u32]) -> Option<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return None;
    }
    // SAFETY: socket() takes no pointers; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is a plain C struct (with a union) for which all-zero bytes are valid.
    let mut ifr: libc::ifreq = unsafe { MaybeUninit::zeroed().assume_init() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = buf.as_mut_ptr().cast();
    // SAFETY: `ifr` names the interface and points at `buf`, a live buffer the caller sized
    // for the command in its first word.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
    (rc >= 0).then_some(())
}
