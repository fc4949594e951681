//! One received frame in its ring slot: reading the slot header the kernel wrote, and
//! readying the frame for processing and transmit (VLAN tag re-insertion, size checks).
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

use std::mem::offset_of;

use crate::counters::DropReason;

/// `struct virtio_net_hdr`: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
pub(crate) const VNET_HDR_LEN: usize = 10;
const VNET_F_NEEDS_CSUM: u8 = 1;
const VNET_GSO_NONE: u8 = 0;

/// `tpacket2_hdr` (aligned) + `sockaddr_ll`: the first byte the kernel leaves free.
pub(super) const SLOT_HDR_LEN: usize = libc::TPACKET2_HDRLEN;

const TPID_8021Q: u16 = 0x8100;

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

/// When the kernel wrote the slot starting at `slot` (`tp_sec`, `tp_nsec`), in ns: the
/// order in which one CPU delivered frames, across rings.
pub(crate) fn stamp(slot: &[u8]) -> u64 {
    type H = libc::tpacket2_hdr;
    let sec = u32_at(slot, offset_of!(H, tp_sec)).unwrap_or(0);
    let nsec = u32_at(slot, offset_of!(H, tp_nsec)).unwrap_or(0);
    u64::from(sec) * 1_000_000_000 + u64::from(nsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::RingGeometry;

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
}
