//! Partial checksums without a vnet header.
//!
//! A frame a local sender (a container or VM behind veth) handed over with
//! `CHECKSUM_PARTIAL` carries in its TCP/UDP checksum field only the folded pseudo-header
//! sum; the device was to finish it. AF_PACKET tells us so in the virtio-net header; XDP
//! has no such field, so the frame is recognised by that very value: a checksum field equal
//! to the pseudo-header sum. Completing a frame recognised this way is safe even when the
//! guess is wrong: for a frame whose full checksum happens to equal its pseudo-header sum
//! (one in 65536), completing it writes back the same value (the sum over the segment with
//! the field as it is stands in for the pseudo header either way). Only a corrupted frame
//! whose field equals that sum by chance would be "repaired"; everything else is left
//! exactly as it came.

use crate::packet::{Fragment, Ipv4View};

const TCP: u8 = 6;
const UDP: u8 = 17;

fn add(sum: u32, bytes: &[u8]) -> u32 {
    let mut s = u64::from(sum);
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        s += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        s += u64::from(*last) << 8;
    }
    fold64(s)
}

fn fold64(mut s: u64) -> u32 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// Where to complete the checksum of `frame` (`(csum_start, csum_offset)`, from the frame's
/// start) if it is a whole IPv4 TCP/UDP datagram whose checksum field holds the
/// pseudo-header sum.
pub(crate) fn partial_at(frame: &[u8], ip: &Ipv4View) -> Option<(u16, u16)> {
    if ip.fragment != Fragment::Whole {
        return None;
    }
    let field = match ip.protocol {
        TCP => 16,
        UDP => 6,
        _ => return None,
    };
    let l4 = ip.l3_offset + ip.header_len;
    let l4_len = ip.total_len.checked_sub(ip.header_len)?;
    let at = l4 + field;
    let got = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    let mut pseudo = add(0, &ip.src.octets());
    pseudo = add(pseudo, &ip.dst.octets());
    pseudo = fold64(u64::from(pseudo) + u64::from(ip.protocol) + l4_len as u64);
    (got == pseudo as u16 && got != 0).then_some((u16::try_from(l4).ok()?, field as u16))
}

/// Completes the checksum [`partial_at`] found, in software (for kernels that take no TX
/// checksum request). `end` is where the datagram ends in the frame.
pub(crate) fn complete(frame: &mut [u8], start: u16, offset: u16, end: usize, udp: bool) {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    let Some(seg) = frame.get(start..end) else {
        return;
    };
    if at + 2 > end {
        return;
    }
    let mut c = !(add(0, seg) as u16);
    if udp && c == 0 {
        c = 0xffff;
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{Parsed, parse};

    fn udp_frame(payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([198, 18, 0, 1], [198, 18, 1, 10], 64)
            .udp(40000, 53);
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    fn ip(f: &[u8]) -> Ipv4View {
        match parse(f) {
            Ok(Parsed::Ipv4(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_partial_checksum_is_found_and_completed_to_the_real_one() {
        let mut f = udp_frame(b"hello, odd length");
        let real = [f[40], f[41]];
        let v = ip(&f);
        assert_eq!(
            partial_at(&f, &v),
            None,
            "a complete checksum is left alone"
        );
        // What a sender with CHECKSUM_PARTIAL puts there: the folded pseudo-header sum.
        let l4_len = (f.len() - 34) as u64;
        let pseudo = fold64(0xc612 + 0x0001 + 0xc612 + 0x010a + 17 + l4_len) as u16;
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let (start, off) = partial_at(&f, &v).expect("recognised as partial");
        assert_eq!((start, off), (34, 6));
        let end = f.len();
        complete(&mut f, start, off, end, true);
        assert_eq!([f[40], f[41]], real);
    }
}
