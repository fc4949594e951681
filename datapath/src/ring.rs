//! A worker's packet sockets and their TPACKET_V2 receive rings: socket setup and fanout,
//! the rings' geometry and the slot hand-off with the kernel. What a slot holds and how a
//! frame in it is readied lives in [`frame`].
//!
//! Two rings per worker, split by frame length. A V2 ring has one slot size, and a slot
//! must hold the largest frame it may get. With one ring, every slot had to hold a 64 KiB
//! GSO frame, so 18 MiB bought 256 slots: about 3 ms of 64-byte frames at 100 kpps, and
//! a worker that waited that long for a CPU lost frames (measured: 35–45 % `ring_full`
//! in the lab's 64-byte flood). Now the *small* ring has slots for MTU-sized frames (a few
//! thousand per MiB) and takes every frame up to that size; the *large* ring keeps 64 KiB
//! slots for GSO/GRO frames only. Both sockets filter the same VIP set plus a length test
//! (see [`crate::bpf::Lengths`]), and each kind has its own fanout group; both groups
//! hash a flow the same way over the same number of members joined in the same order,
//! so a flow's small and large frames reach the same worker.
//!
//! Why not one small ring with `TP_STATUS_COPY` (large frames left whole in the socket
//! queue and read with `recv`): built and measured, it forwarded small frames as well as
//! two rings do but lost 15–30 % of the TCP upload rate through the VIP, because the
//! worker then copies each 64 KiB frame twice in a row, while with a large ring the kernel
//! copies it into the slot in the sender's softirq, often on the other CPU.
//!
//! Why V2 and not V3: V3 hands over whole blocks, so under light load a frame waits for the
//! block-retire timeout. Measured on this kernel (veth, one frame every 3 ms, 1 ms
//! timeout): p50 0.89 ms per frame through V3 against 0.04 ms through V2, while the lab's
//! direct HTTP round trip is 0.04 ms. V3 also refuses a TX ring with vnet headers.

pub(crate) mod frame;

use crate::bpf::Lengths;
use crate::iface::InterfaceInfo;
use crate::sys::{MappedRing, PacketSocket};
use crate::worker::{BATCH, IoError};

/// The largest frame: a 64 KiB IPv4 datagram, its Ethernet header and two inline tags.
pub(crate) const MAX_FRAME: usize = 65_535 + 14 + 8;
/// The largest `tp_mac` the kernel picks: `ALIGN16(52 + 16) + 10 - 14` = 76, rounded up.
const MAX_MAC_OFFSET: usize = 80;
/// Ethernet header and two inline VLAN tags.
const L2_OVERHEAD: usize = 14 + 8;
/// One ring block. The kernel allocates blocks as power-of-two page runs, so a block of
/// exactly one 64 KiB slot (68 KiB) would cost 128 KiB; 1 MiB blocks waste under 1%.
const BLOCK_SIZE: usize = 1 << 20;
/// Upper bound on the ring budget per worker, in 64 KiB slots (≈ 280 MiB of memory).
pub const MAX_RING_SLOTS: usize = 4096;

/// The shape of one ring, as passed to `PACKET_RX_RING`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct RingGeometry {
    pub(crate) block_size: usize,
    pub(crate) block_nr: usize,
    pub(crate) frame_size: usize,
    pub(crate) frame_nr: usize,
}

impl RingGeometry {
    /// At least `slots` slots (rounded up to whole blocks), each large enough for
    /// [`MAX_FRAME`]. `None` outside `1..=MAX_RING_SLOTS`.
    pub(crate) fn for_slots(slots: usize) -> Option<RingGeometry> {
        if slots == 0 || slots > MAX_RING_SLOTS {
            return None;
        }
        RingGeometry::packed(MAX_MAC_OFFSET + MAX_FRAME, slots)
    }

    /// Slots for frames of up to `mtu` bytes of payload (plus Ethernet header and two
    /// tags) in the memory [`for_slots`](Self::for_slots)`(budget)` takes: at MTU 1500,
    /// 648 slots per MiB instead of 15. `None` when `budget` is outside
    /// `1..=MAX_RING_SLOTS` or the MTU is beyond what a slot can hold.
    pub(crate) fn for_mtu(mtu: usize, budget: usize) -> Option<RingGeometry> {
        let whole = RingGeometry::for_slots(budget)?;
        let min_frame =
            (MAX_MAC_OFFSET + L2_OVERHEAD + mtu).next_multiple_of(libc::TPACKET_ALIGNMENT);
        RingGeometry::packed(min_frame, whole.block_nr * (BLOCK_SIZE / min_frame))
    }

    /// At least `slots` slots of at least `min_frame` bytes in whole 1 MiB blocks, each
    /// block's slack spread over its slots (free headroom, same memory).
    fn packed(min_frame: usize, slots: usize) -> Option<RingGeometry> {
        let min_frame = min_frame.next_multiple_of(libc::TPACKET_ALIGNMENT);
        let per_block = BLOCK_SIZE / min_frame;
        if per_block == 0 || slots == 0 {
            return None;
        }
        let frame_size = (BLOCK_SIZE / per_block) & !(libc::TPACKET_ALIGNMENT - 1);
        let block_nr = slots.div_ceil(per_block);
        Some(RingGeometry {
            block_size: BLOCK_SIZE,
            block_nr,
            frame_size,
            frame_nr: block_nr * per_block,
        })
    }

    /// The longest frame (Ethernet header included, no stripped tag) a slot surely holds
    /// whole, whatever `tp_mac` the kernel picks.
    pub(crate) fn max_frame(&self) -> usize {
        self.frame_size.saturating_sub(MAX_MAC_OFFSET)
    }

    fn per_block(&self) -> usize {
        self.block_size / self.frame_size
    }

    /// Byte offset of slot `i` in the mapping (slots never straddle blocks).
    pub(crate) fn slot_offset(&self, i: usize) -> usize {
        (i / self.per_block()) * self.block_size + (i % self.per_block()) * self.frame_size
    }

    pub(crate) fn map_len(&self) -> usize {
        self.block_size * self.block_nr
    }

    fn request(&self) -> Option<libc::tpacket_req> {
        Some(libc::tpacket_req {
            tp_block_size: u32::try_from(self.block_size).ok()?,
            tp_block_nr: u32::try_from(self.block_nr).ok()?,
            tp_frame_size: u32::try_from(self.frame_size).ok()?,
            tp_frame_nr: u32::try_from(self.frame_nr).ok()?,
        })
    }
}

/// A worker's mapped receive ring and its read cursor.
#[derive(Debug)]
pub(crate) struct RxRing {
    map: MappedRing,
    geo: RingGeometry,
    next: usize,
}

impl RxRing {
    /// Sets up `PACKET_RX_RING` on `sock` (after `PACKET_VERSION` and `PACKET_VNET_HDR`)
    /// and maps it.
    pub(crate) fn new(sock: &PacketSocket, geo: RingGeometry) -> Result<RxRing, IoError> {
        let req = geo.request().ok_or(IoError::RingSize {
            slots: geo.frame_nr,
            max: MAX_RING_SLOTS,
        })?;
        sock.set_rx_ring(&req)
            .map_err(|source| IoError::Setsockopt {
                option: "PACKET_RX_RING",
                source,
            })?;
        let map = sock
            .map_ring(geo.map_len())
            .map_err(|source| IoError::Mmap {
                bytes: geo.map_len(),
                source,
            })?;
        Ok(RxRing { map, geo, next: 0 })
    }

    /// The slot under the cursor if it holds a frame.
    pub(crate) fn peek(&self) -> Option<usize> {
        self.map
            .status(self.geo.slot_offset(self.next))
            .is_some_and(|s| {
                s.load(std::sync::atomic::Ordering::Acquire) & libc::TP_STATUS_USER != 0
            })
            .then_some(self.next)
    }

    /// Moves the cursor past the slot [`peek`](Self::peek) returned.
    pub(crate) fn advance(&mut self) {
        self.next = (self.next + 1) % self.geo.frame_nr;
    }

    /// When the kernel filled user-owned `slot` ([`frame::stamp`]); 0 if it is not.
    pub(crate) fn stamp(&self, slot: usize) -> u64 {
        self.map
            .slot(self.geo.slot_offset(slot), self.geo.frame_size)
            .map_or(0, frame::stamp)
    }

    /// Byte offset of `slot` in the mapping.
    pub(crate) fn offset(&self, slot: usize) -> usize {
        self.geo.slot_offset(slot)
    }

    /// The bytes of a user-owned slot.
    pub(crate) fn slot_mut(&mut self, slot: usize) -> Option<&mut [u8]> {
        let off = self.geo.slot_offset(slot);
        self.map.slot_mut(off, self.geo.frame_size)
    }

    /// Gives `slot` back to the kernel.
    pub(crate) fn release(&mut self, slot: usize) {
        let off = self.geo.slot_offset(slot);
        self.map.release(off);
    }

    pub(crate) fn map(&self) -> &MappedRing {
        &self.map
    }
}

/// One of a worker's two sockets: its ring and the frame lengths its filter takes.
#[derive(Debug)]
pub(crate) struct Port {
    pub(crate) sock: PacketSocket,
    pub(crate) ring: RxRing,
    pub(crate) lengths: Lengths,
}

/// A worker socket with everything but the fanout: vnet headers, ring, filter, bypass.
/// Bound last, so no frame arrives before the filter is attached.
pub(crate) fn open_worker_socket(
    iface: &InterfaceInfo,
    geo: RingGeometry,
    filter: &[libc::sock_filter],
) -> Result<(PacketSocket, RxRing), IoError> {
    let sock = PacketSocket::open().map_err(|source| IoError::Socket {
        purpose: "a datapath worker",
        source,
    })?;
    let set = |option, level, name, v| {
        sock.set_int(level, name, v)
            .map_err(|source| IoError::Setsockopt { option, source })
    };
    set(
        "PACKET_VERSION",
        libc::SOL_PACKET,
        libc::PACKET_VERSION,
        libc::tpacket_versions::TPACKET_V2 as libc::c_int,
    )?;
    set(
        "PACKET_VNET_HDR",
        libc::SOL_PACKET,
        libc::PACKET_VNET_HDR,
        1,
    )?;
    let ring = RxRing::new(&sock, geo)?;
    sock.attach_filter(filter)
        .map_err(|source| IoError::Setsockopt {
            option: "SO_ATTACH_FILTER",
            source,
        })?;
    set(
        "PACKET_QDISC_BYPASS",
        libc::SOL_PACKET,
        libc::PACKET_QDISC_BYPASS,
        1,
    )?;
    set(
        "PACKET_IGNORE_OUTGOING",
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        1,
    )?;
    // Room for a whole batch of 64 KiB frames in flight on devices that free skbs late;
    // SO_SNDBUFFORCE (root) ignores wmem_max, SO_SNDBUF is the unprivileged fallback.
    let sndbuf = (2 * BATCH * MAX_FRAME) as libc::c_int;
    if sock
        .set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
        .is_err()
    {
        set("SO_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf)?;
    }
    sock.bind(iface.index, libc::ETH_P_ALL as u16)
        .map_err(|source| IoError::Bind {
            interface: iface.name.clone(),
            source,
        })?;
    Ok((sock, ring))
}

/// Joins `sock` to a fanout group on its interface: the first socket asks the kernel for
/// an id no other group in the namespace uses (so two daemons never merge groups), the
/// others join that id. Returns the id.
pub(crate) fn join_fanout(sock: &PacketSocket, id: Option<u16>) -> Result<u16, IoError> {
    let flags = libc::PACKET_FANOUT_HASH | libc::PACKET_FANOUT_FLAG_IGNORE_OUTGOING;
    let (id_field, type_flags) = match id {
        Some(id) => (u32::from(id), flags),
        None => (0, flags | libc::PACKET_FANOUT_FLAG_UNIQUEID),
    };
    let arg = (id_field | (type_flags << 16)) as libc::c_int;
    sock.set_int(libc::SOL_PACKET, libc::PACKET_FANOUT, arg)
        .map_err(|source| IoError::Setsockopt {
            option: "PACKET_FANOUT",
            source,
        })?;
    let got = sock
        .get_int(libc::SOL_PACKET, libc::PACKET_FANOUT)
        .map_err(|source| IoError::Getsockopt {
            option: "PACKET_FANOUT",
            source,
        })?;
    Ok((got as u32 & 0xffff) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_fits_the_largest_frame_and_whole_blocks() {
        let g = RingGeometry::for_slots(256).unwrap();
        assert!(g.frame_size >= MAX_MAC_OFFSET + MAX_FRAME);
        assert!(g.max_frame() >= MAX_FRAME);
        assert_eq!(g.frame_size % libc::TPACKET_ALIGNMENT, 0);
        assert!(g.frame_nr >= 256);
        assert_eq!(g.frame_nr, g.block_nr * (g.block_size / g.frame_size));
        let last = g.slot_offset(g.frame_nr - 1);
        assert!(last + g.frame_size <= g.map_len());
        assert_eq!(g.slot_offset(g.block_size / g.frame_size), g.block_size);
        assert!(RingGeometry::for_slots(0).is_none());
        assert!(RingGeometry::for_slots(MAX_RING_SLOTS + 1).is_none());
    }

    #[test]
    fn mtu_geometry_packs_many_slots_in_the_same_memory() {
        let whole = RingGeometry::for_slots(128).unwrap();
        let g = RingGeometry::for_mtu(1500, 128).unwrap();
        assert_eq!(g.map_len(), whole.map_len());
        assert!(g.frame_nr >= 40 * whole.frame_nr, "{} slots", g.frame_nr);
        assert!(g.max_frame() >= 1500 + L2_OVERHEAD);
        assert!(g.max_frame() < 2 * 1500);
        assert_eq!(g.frame_size % libc::TPACKET_ALIGNMENT, 0);
        assert_eq!(g.frame_nr, g.block_nr * (g.block_size / g.frame_size));
        // Jumbo frames still fit, in fewer slots.
        let jumbo = RingGeometry::for_mtu(9000, 128).unwrap();
        assert!(jumbo.max_frame() >= 9000 + L2_OVERHEAD);
        assert!(jumbo.frame_nr < g.frame_nr);
        assert!(RingGeometry::for_mtu(1500, 0).is_none());
        assert!(RingGeometry::for_mtu(1 << 21, 128).is_none());
    }
}
