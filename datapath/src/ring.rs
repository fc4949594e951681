//! A worker's packet socket and its TPACKET_V2 receive ring: socket setup and fanout,
//! the ring's geometry, the slot hand-off with the kernel, and the preparation of each
//! received frame for processing and transmit.
//!
//! Layout of a slot as the kernel fills it with `PACKET_VNET_HDR` on:
//! `tpacket2_hdr | sockaddr_ll | … | virtio_net_hdr (10 B) | frame` — the vnet header sits
//! right before `tp_mac`. The worker transmits `virtio_net_hdr + frame` straight from the
//! slot, so the kernel completes partial checksums and segments GSO frames on the way out
//! exactly as the sender's kernel asked.
//!
//! VLAN: the kernel strips the outer tag into `tp_vlan_tci` (`TP_STATUS_VLAN_VALID`). We
//! re-insert it in the slot's headroom (moving the vnet header and MACs 4 bytes down) and
//! adjust the vnet header's `csum_start`/`hdr_len`, which the kernel computed for the
//! untagged frame. Why re-insert rather than drop: the frame is then exactly what was on
//! the wire, so a node on a trunk port forwards within the VLAN the client used (the
//! rewrite touches only the MACs), the processor already parses up to two tags, and
//! the cost is a 26-byte move for tagged frames only. On a VLAN sub-interface
//! (`eth0.100`) frames arrive untagged and none of this runs.
//!
//! Why V2 and not V3: V3 hands over whole blocks, so under light load a frame waits for the
//! block-retire timeout (milliseconds) — latency a load balancer must not add — and V3
//! refuses a TX ring with vnet headers anyway. V2's price is a fixed slot size: every slot
//! holds a 64 KiB GSO frame.

use std::mem::offset_of;

use crate::counters::DropReason;
use crate::error::IoError;
use crate::iface::InterfaceInfo;
use crate::sys::{MappedRing, PacketSocket};

/// `struct virtio_net_hdr`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
pub(crate) const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;

/// `tpacket2_hdr` (aligned) + `sockaddr_ll`: the first byte the kernel leaves free.
const SLOT_HDR_LEN: usize = libc::TPACKET2_HDRLEN;
/// The largest frame: a 64 KiB IPv4 datagram, its Ethernet header and two inline tags.
pub(crate) const MAX_FRAME: usize = 65_535 + 14 + 8;
/// The largest `tp_mac` the kernel picks: `ALIGN16(52 + 16) + 10 - 14` = 76, rounded up.
const MAX_MAC_OFFSET: usize = 80;
/// One ring block. The kernel allocates blocks as power-of-two page runs, so a block of
/// exactly one slot (68 KiB) would cost 128 KiB; 1 MiB blocks waste under 1%.
const BLOCK_SIZE: usize = 1 << 20;
/// Upper bound on slots per worker (4096 slots ≈ 280 MiB of pinned memory).
pub const MAX_RING_SLOTS: usize = 4096;

const TPID_8021Q: u16 = 0x8100;

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
        let min_frame = (MAX_MAC_OFFSET + MAX_FRAME).next_multiple_of(libc::TPACKET_ALIGNMENT);
        let per_block = BLOCK_SIZE / min_frame;
        // Spread the block over its slots: free headroom, same memory.
        let frame_size = (BLOCK_SIZE / per_block) & !(libc::TPACKET_ALIGNMENT - 1);
        let block_nr = slots.div_ceil(per_block);
        Some(RingGeometry {
            block_size: BLOCK_SIZE,
            block_nr,
            frame_size,
            frame_nr: block_nr * per_block,
        })
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

/// Where a prepared frame lies in its slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Frame {
    /// Offset of the virtio-net header (the frame follows it).
    pub(crate) vnet: usize,
    /// Offset of the Ethernet frame.
    pub(crate) start: usize,
    /// Length of the Ethernet frame.
    pub(crate) len: usize,
}

impl Frame {
    /// `(offset, length)` of `vnet header + first frame_len bytes` within the slot.
    pub(crate) fn tx_span(&self, frame_len: usize) -> (usize, usize) {
        (self.vnet, self.start - self.vnet + frame_len.min(self.len))
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn add_u16(b: &mut [u8], off: usize, delta: u16) {
    if let Some(v) = u16_at(b, off) {
        b[off..off + 2].copy_from_slice(&v.wrapping_add(delta).to_ne_bytes());
    }
}

/// Checks a user-owned slot and readies its frame: drops truncated and oversize frames,
/// re-inserts a VLAN tag the kernel stripped. `mtu` is the interface's.
///
/// The vnet header fields are in host order: the kernel writes them with `vio_le()`,
/// which is the host's order on every little- and big-endian host without legacy virtio.
pub(crate) fn prepare(slot: &mut [u8], mtu: usize) -> Result<Frame, DropReason> {
    type H = libc::tpacket2_hdr;
    let hdr = |off| u32_at(slot, off).ok_or(DropReason::Truncated);
    let status = hdr(offset_of!(H, tp_status))?;
    let len = hdr(offset_of!(H, tp_len))? as usize;
    let snaplen = hdr(offset_of!(H, tp_snaplen))? as usize;
    let mac = u16_at(slot, offset_of!(H, tp_mac)).ok_or(DropReason::Truncated)? as usize;
    let tci = u16_at(slot, offset_of!(H, tp_vlan_tci)).ok_or(DropReason::Truncated)?;
    let tpid = u16_at(slot, offset_of!(H, tp_vlan_tpid)).ok_or(DropReason::Truncated)?;

    if snaplen < len {
        return Err(DropReason::Truncated);
    }
    // A header the kernel would never write; refuse rather than index out of the slot.
    if mac < SLOT_HDR_LEN + VNET_HDR_LEN || mac + snaplen > slot.len() {
        return Err(DropReason::Truncated);
    }
    let mut f = Frame {
        vnet: mac - VNET_HDR_LEN,
        start: mac,
        len: snaplen,
    };
    if status & libc::TP_STATUS_VLAN_VALID != 0 {
        if f.vnet < SLOT_HDR_LEN + 4 || snaplen < 12 {
            return Err(DropReason::Truncated);
        }
        let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 {
            tpid
        } else {
            TPID_8021Q
        };
        // Move vnet header and MACs down by one tag; the EtherType stays where it is.
        slot.copy_within(f.vnet..mac, f.vnet - 4);
        slot.copy_within(mac..mac + 12, mac - 4);
        slot[mac + 8..mac + 10].copy_from_slice(&tpid.to_be_bytes());
        slot[mac + 10..mac + 12].copy_from_slice(&tci.to_be_bytes());
        f = Frame {
            vnet: f.vnet - 4,
            start: mac - 4,
            len: snaplen + 4,
        };
        // The kernel measured csum_start and hdr_len on the untagged frame.
        if slot[f.vnet] & VNET_F_NEEDS_CSUM != 0 {
            add_u16(slot, f.vnet + 6, 4);
        }
        if u16_at(slot, f.vnet + 2).is_some_and(|h| h != 0) {
            add_u16(slot, f.vnet + 2, 4);
        }
    }
    // The kernel refuses (EMSGSIZE) a non-GSO frame beyond the MTU, allowing 4 more bytes
    // only for an 802.1Q tag; count it here rather than as a transmit error.
    if slot[f.vnet + 1] == VNET_GSO_NONE {
        let tagged = u16_at(slot, f.start + 12).map(u16::from_be) == Some(TPID_8021Q);
        let limit = mtu + 14 + if tagged { 4 } else { 0 };
        if f.len > limit {
            return Err(DropReason::Oversize);
        }
    }
    Ok(f)
}

/// A worker's mapped receive ring and its read cursor.
///
/// The cursor must stay on the kernel's head: the kernel fills slots strictly in order and,
/// when the ring is full, waits at the first slot user space has not released. A slot taken
/// and not yet released is still user-owned, so a cursor that went round the ring within
/// one batch (a batch larger than the ring, on a full ring: after a stop, or a burst) would
/// take the same frames again and then stand ahead of the head: every later frame would
/// wait for the kernel to lap the ring before it is read (an ARP request answered a ring's
/// worth of requests late, by a node that may have become owner meanwhile). `held` stops
/// the cursor at a full lap.
#[derive(Debug)]
pub(crate) struct RxRing {
    map: MappedRing,
    geo: RingGeometry,
    next: usize,
    /// Slots handed out by `next_ready` and not released yet.
    held: usize,
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
        Ok(RxRing {
            map,
            geo,
            next: 0,
            held: 0,
        })
    }

    /// Whether the slot under the cursor holds a frame.
    pub(crate) fn ready(&self) -> bool {
        self.slot_ready(self.next)
    }

    /// Whether `slot` holds a frame for user space.
    fn slot_ready(&self, slot: usize) -> bool {
        self.map
            .status(self.geo.slot_offset(slot))
            .is_some_and(|s| {
                s.load(std::sync::atomic::Ordering::Acquire) & libc::TP_STATUS_USER != 0
            })
    }

    /// Frames waiting from the cursor on. The kernel fills slots strictly in order, so the
    /// ready slots are one run starting at the cursor: a binary search finds its end in
    /// log2(slots) status loads, cheap enough to run after every batch. Meaningful between
    /// batches (no slot held); racing the kernel, it is a snapshot.
    pub(crate) fn backlog(&self) -> usize {
        let n = self.geo.frame_nr;
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.slot_ready((self.next + mid) % n) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Slots in the ring.
    pub(crate) fn slots(&self) -> usize {
        self.geo.frame_nr
    }

    /// The slot under the cursor if it holds a frame, advancing the cursor; `None` also when
    /// every slot is held (taken and not released).
    pub(crate) fn next_ready(&mut self) -> Option<usize> {
        if self.held >= self.geo.frame_nr || !self.ready() {
            return None;
        }
        let slot = self.next;
        self.next = (self.next + 1) % self.geo.frame_nr;
        self.held += 1;
        Some(slot)
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
        self.held = self.held.saturating_sub(1);
    }

    pub(crate) fn map(&self) -> &MappedRing {
        &self.map
    }
}

/// A worker socket with everything but the fanout: vnet headers, ring, filter, bypass.
/// Bound last, so no frame arrives before the filter is attached. `batch` is the most
/// frames the worker hands to one send; the ring takes it rather than the worker's constant
/// so that it does not depend on the worker, which depends on it. `protocol` is what the
/// socket binds: `ETH_P_ALL` taps frames before tc ingress, `ETH_P_IP` after it (what the
/// workers behind the kernel fast path need).
pub(crate) fn open_worker_socket(
    iface: &InterfaceInfo,
    geo: RingGeometry,
    filter: &[libc::sock_filter],
    batch: usize,
    protocol: u16,
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
    let sndbuf = (2 * batch * MAX_FRAME) as libc::c_int;
    if sock
        .set_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, sndbuf)
        .is_err()
    {
        set("SO_SNDBUF", libc::SOL_SOCKET, libc::SO_SNDBUF, sndbuf)?;
    }
    sock.bind(iface.index, protocol)
        .map_err(|source| IoError::Bind {
            interface: iface.name.clone(),
            source,
        })?;
    Ok((sock, ring))
}

/// Joins `sock` to the interface's fanout group: the first socket asks the kernel for an
/// id no other group in the namespace uses (so two daemons never merge groups), the others
/// join that id. Returns the id.
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

    const MTU: usize = 1500;
    const MAC: usize = 76;

    /// A slot as the kernel fills it: header fields, vnet header, frame.
    fn slot(frame: &[u8], len: usize, status: u32, tci: u16, tpid: u16, vnet: [u8; 10]) -> Vec<u8> {
        type H = libc::tpacket2_hdr;
        let geo = RingGeometry::for_slots(1).unwrap();
        let mut s = vec![0u8; geo.frame_size];
        let put32 =
            |s: &mut Vec<u8>, off: usize, v: u32| s[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        let put16 =
            |s: &mut Vec<u8>, off: usize, v: u16| s[off..off + 2].copy_from_slice(&v.to_ne_bytes());
        put32(
            &mut s,
            offset_of!(H, tp_status),
            libc::TP_STATUS_USER | status,
        );
        put32(&mut s, offset_of!(H, tp_len), len as u32);
        put32(&mut s, offset_of!(H, tp_snaplen), frame.len() as u32);
        put16(&mut s, offset_of!(H, tp_mac), MAC as u16);
        put16(&mut s, offset_of!(H, tp_vlan_tci), tci);
        put16(&mut s, offset_of!(H, tp_vlan_tpid), tpid);
        s[MAC - 10..MAC].copy_from_slice(&vnet);
        s[MAC..MAC + frame.len()].copy_from_slice(frame);
        s
    }

    fn frame(n: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..n).map(|i| i as u8).collect();
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f
    }

    fn vnet(flags: u8, gso: u8, hdr_len: u16, csum_start: u16) -> [u8; 10] {
        let mut v = [0u8; 10];
        v[0] = flags;
        v[1] = gso;
        v[2..4].copy_from_slice(&hdr_len.to_ne_bytes());
        v[6..8].copy_from_slice(&csum_start.to_ne_bytes());
        v
    }

    #[test]
    fn geometry_fits_the_largest_frame_and_whole_blocks() {
        let g = RingGeometry::for_slots(256).unwrap();
        assert!(g.frame_size >= MAX_MAC_OFFSET + MAX_FRAME);
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
    fn untagged_frame_is_left_in_place() {
        let f = frame(100);
        let mut s = slot(&f, 100, 0, 0, 0, vnet(1, 0, 0, 34));
        let p = prepare(&mut s, MTU).unwrap();
        assert_eq!(
            p,
            Frame {
                vnet: MAC - 10,
                start: MAC,
                len: 100
            }
        );
        assert_eq!(&s[p.start..p.start + p.len], &f[..]);
        assert_eq!(p.tx_span(42), (MAC - 10, 52));
    }

    #[test]
    fn stripped_tag_is_reinserted_and_offsets_follow() {
        let f = frame(100);
        let status = libc::TP_STATUS_VLAN_VALID | libc::TP_STATUS_VLAN_TPID_VALID;
        let mut s = slot(&f, 100, status, 0x2005, 0x88a8, vnet(1, 1, 54, 34));
        let p = prepare(&mut s, MTU).unwrap();
        assert_eq!(
            p,
            Frame {
                vnet: MAC - 14,
                start: MAC - 4,
                len: 104
            }
        );
        let out = &s[p.start..p.start + p.len];
        assert_eq!(&out[..12], &f[..12]);
        assert_eq!(&out[12..16], &[0x88, 0xa8, 0x20, 0x05]);
        assert_eq!(&out[16..], &f[12..]);
        let v = &s[p.vnet..p.vnet + 10];
        assert_eq!((v[0], v[1]), (1, 1));
        assert_eq!(u16::from_ne_bytes([v[2], v[3]]), 58);
        assert_eq!(u16::from_ne_bytes([v[6], v[7]]), 38);

        // No TPID reported: 802.1Q; no partial checksum: csum_start untouched.
        let mut s = slot(&f, 100, libc::TP_STATUS_VLAN_VALID, 7, 0, vnet(0, 0, 0, 0));
        let p = prepare(&mut s, MTU).unwrap();
        assert_eq!(&s[p.start + 12..p.start + 16], &[0x81, 0x00, 0x00, 0x07]);
        assert_eq!(&s[p.vnet..p.vnet + 10], &[0; 10]);
    }

    #[test]
    fn truncated_and_oversize_frames_are_dropped() {
        let f = frame(100);
        let mut s = slot(&f, 5000, 0, 0, 0, vnet(0, 0, 0, 0));
        assert_eq!(prepare(&mut s, MTU), Err(DropReason::Truncated));

        let big = frame(MTU + 15);
        let mut s = slot(&big, big.len(), 0, 0, 0, vnet(0, 0, 0, 0));
        assert_eq!(prepare(&mut s, MTU), Err(DropReason::Oversize));
        // The same size as a GSO frame is fine: the kernel segments it.
        let mut s = slot(&big, big.len(), 0, 0, 0, vnet(1, 1, 66, 34));
        assert!(prepare(&mut s, MTU).is_ok());
        // A full-size frame plus a re-inserted 802.1Q tag is still legal.
        let full = frame(MTU + 14);
        let mut s = slot(
            &full,
            full.len(),
            libc::TP_STATUS_VLAN_VALID,
            5,
            0,
            vnet(0, 0, 0, 0),
        );
        assert_eq!(prepare(&mut s, MTU).map(|p| p.len), Ok(MTU + 18));
    }

    #[test]
    fn nonsense_headers_do_not_panic() {
        // A frame said to run past the end of the slot.
        let mut s = slot(&frame(100), 100, 0, 0, 0, vnet(0, 0, 0, 0));
        s[offset_of!(libc::tpacket2_hdr, tp_mac)..][..2].copy_from_slice(&u16::MAX.to_ne_bytes());
        for field in [
            offset_of!(libc::tpacket2_hdr, tp_len),
            offset_of!(libc::tpacket2_hdr, tp_snaplen),
        ] {
            s[field..][..4].copy_from_slice(&10_000u32.to_ne_bytes());
        }
        assert_eq!(prepare(&mut s, MTU), Err(DropReason::Truncated));
        // A frame said to start inside the slot header.
        let mut s = slot(&frame(100), 100, 0, 0, 0, vnet(0, 0, 0, 0));
        s[offset_of!(libc::tpacket2_hdr, tp_mac)..][..2].copy_from_slice(&3u16.to_ne_bytes());
        assert_eq!(prepare(&mut s, MTU), Err(DropReason::Truncated));
        assert_eq!(prepare(&mut [0u8; 8], MTU), Err(DropReason::Truncated));
    }

    /// Plays the kernel's side of a TPACKET_V2 ring: writes frame `tag` at its head if that
    /// slot is the kernel's, else drops it (ring full) without moving the head.
    struct FakeKernel {
        head: usize,
    }

    impl FakeKernel {
        fn deliver(&mut self, ring: &mut RxRing, tag: u32) -> bool {
            let off = ring.geo.slot_offset(self.head);
            let status = ring.map.status(off).unwrap();
            if status.load(std::sync::atomic::Ordering::Acquire) != libc::TP_STATUS_KERNEL {
                return false;
            }
            status.store(libc::TP_STATUS_USER, std::sync::atomic::Ordering::Release);
            // The tag stands in for the frame: it sits in tp_len.
            let at = offset_of!(libc::tpacket2_hdr, tp_len);
            ring.map.slot_mut(off, 16).unwrap()[at..at + 4].copy_from_slice(&tag.to_ne_bytes());
            self.head = (self.head + 1) % ring.geo.frame_nr;
            true
        }
    }

    fn tag_of(ring: &mut RxRing, slot: usize) -> u32 {
        let at = offset_of!(libc::tpacket2_hdr, tp_len);
        let b = &ring.slot_mut(slot).unwrap()[at..at + 4];
        u32::from_ne_bytes(b.try_into().unwrap())
    }

    #[test]
    fn a_batch_larger_than_a_full_ring_takes_each_frame_once_and_keeps_the_cursor_on_the_head() {
        let geo = RingGeometry::for_slots(8).unwrap();
        let n = geo.frame_nr;
        let batch = 64;
        assert!(
            n < batch,
            "the case under test: a ring smaller than a batch"
        );
        let map = MappedRing::anonymous(geo.map_len()).unwrap();
        let mut ring = RxRing {
            map,
            geo,
            next: 3,
            held: 0,
        };
        let mut kernel = FakeKernel { head: 3 };
        // A stop: more frames arrive than the ring holds; the kernel drops the rest.
        let kept = (0..100).filter(|&t| kernel.deliver(&mut ring, t)).count();
        assert_eq!(kept, n);
        let mut taken = Vec::new();
        while taken.len() < batch {
            let Some(slot) = ring.next_ready() else { break };
            taken.push(tag_of(&mut ring, slot));
        }
        assert_eq!(
            taken,
            (0..n as u32).collect::<Vec<_>>(),
            "each frame once, in order"
        );
        for k in 0..n {
            ring.release((3 + k) % n);
        }
        // Back in step: the next frame the kernel writes is the next one read, at once.
        for t in 1000..1000 + 2 * n as u32 {
            assert!(kernel.deliver(&mut ring, t));
            let slot = ring
                .next_ready()
                .expect("the frame just written is under the cursor");
            assert_eq!(tag_of(&mut ring, slot), t);
            ring.release(slot);
        }
    }

    #[test]
    fn the_backlog_is_the_run_of_ready_slots_from_the_cursor_across_the_wrap() {
        let geo = RingGeometry::for_slots(8).unwrap();
        let n = geo.frame_nr;
        let map = MappedRing::anonymous(geo.map_len()).unwrap();
        // The cursor near the end, so the ready run wraps.
        let start = n - 2;
        let mut ring = RxRing {
            map,
            geo,
            next: start,
            held: 0,
        };
        assert_eq!(ring.slots(), n);
        let mut kernel = FakeKernel { head: start };
        assert_eq!(ring.backlog(), 0, "an empty ring");
        for (t, want) in (0..n as u32).zip(1..) {
            assert!(kernel.deliver(&mut ring, t));
            assert_eq!(ring.backlog(), want, "after {want} frames");
        }
        assert!(
            !kernel.deliver(&mut ring, 99),
            "the kernel drops on a full ring"
        );
        assert_eq!(ring.backlog(), n, "a full ring");
        // Read and hand back three: the run now starts three further on.
        for _ in 0..3 {
            let slot = ring.next_ready().unwrap();
            ring.release(slot);
        }
        assert_eq!(ring.backlog(), n - 3);
        assert!(kernel.deliver(&mut ring, 100));
        assert_eq!(ring.backlog(), n - 2);
    }
}
