//! IPv6 neighbour discovery (RFC 4861), the IPv6 counterpart of [`crate::arp`]: the
//! builders the control plane sends (unsolicited advertisements on takeover, multicast
//! solicitations to resolve backends), the readers of Neighbor Solicitations and
//! Advertisements, and the in-place solicited advertisement the workers make when a client
//! solicits a VIP.
//!
//! Only messages without extension headers are read or built (Next Header 58 right after
//! the fixed header): neighbour discovery never needs them. Every message must carry hop
//! limit 255, which any router on the way would have decremented: that is what proves it
//! was sent on the link, so no host off the link can claim or ask for a VIP (RFC 4861 7.1).
//! Unlike [`crate::packet`], this module verifies checksums: what it reads decides where a
//! VIP's traffic goes, and senders fill them in themselves (Linux's ndisc does, in
//! software), so no offload leaves them partial.

use std::net::Ipv6Addr;

use crate::packet::{ETH_HLEN, ETH_P_IPV6, IPPROTO_ICMPV6, IPV6_HLEN, MacAddr, parse_eth};

/// ICMPv6 Neighbor Solicitation and Advertisement.
pub(crate) const NS: u8 = 135;
pub(crate) const NA: u8 = 136;
/// Router Solicitation (133) to Redirect (137): all of neighbour discovery.
const NDP_FIRST: u8 = 133;
const NDP_LAST: u8 = 137;
/// Option types: source and target link-layer address.
const OPT_SLLA: u8 = 1;
const OPT_TLLA: u8 = 2;
/// Advertisement flags, in the first byte after the checksum.
const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
/// NS and NA body: type, code, checksum, flags/reserved, target.
const BODY_LEN: usize = 24;
/// A link-layer address option for Ethernet: type, length 1 (in units of 8 bytes), MAC.
const LLA_OPT_LEN: usize = 8;
/// A message as this module builds it, from the IPv6 header: body and one link-layer
/// address option.
const IP_LEN: usize = IPV6_HLEN + BODY_LEN + LLA_OPT_LEN;
const HOP_LIMIT: u8 = 255;
/// All-nodes (ff02::1).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// ff02::1:ff00:0/104, the solicited-node groups.
const SOLICITED_NODE_PREFIX: u128 = 0xff02_0000_0000_0000_0000_0001_ff00_0000;
const LOW_24: u128 = 0x00ff_ffff;

/// Whether ICMPv6 type `t` belongs to neighbour discovery.
pub(crate) fn is_ndp(t: u8) -> bool {
    (NDP_FIRST..=NDP_LAST).contains(&t)
}

/// The solicited-node multicast group of `ip`: ff02::1:ffXX:XXXX with its low 24 bits
/// (RFC 4291 2.7.1). A solicitation for `ip` goes there.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from_bits(SOLICITED_NODE_PREFIX | (ip.to_bits() & LOW_24))
}

fn is_solicited_node(ip: Ipv6Addr) -> bool {
    ip.to_bits() & !LOW_24 == SOLICITED_NODE_PREFIX
}

/// The Ethernet address of IPv6 multicast `group`: 33:33 and its low 32 bits (RFC 2464 7).
pub fn multicast_mac(group: Ipv6Addr) -> MacAddr {
    let o = group.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The ICMPv6 checksum (RFC 4443 2.3) of `icmp` from `src` to `dst`, over the pseudo-header
/// (addresses, upper-layer length, Next Header 58) and the message. Pass the message with
/// its checksum field zeroed to compute one; as received to verify one, which then gives 0.
fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    fn words(b: &[u8]) -> u64 {
        let mut pairs = b.chunks_exact(2);
        let mut sum: u64 = (&mut pairs)
            .map(|p| u64::from(u16::from_be_bytes([p[0], p[1]])))
            .sum();
        // An odd last byte is padded with a zero byte on the right.
        if let [last] = pairs.remainder() {
            sum += u64::from(*last) << 8;
        }
        sum
    }
    // A message here is at most 65,535 bytes (the payload length field), so its length
    // fits the pseudo-header's 32 bits, and no sum of its words overflows 64.
    let len = icmp.len() as u32;
    let mut sum = words(&src.octets())
        + words(&dst.octets())
        + words(&len.to_be_bytes())
        + u64::from(IPPROTO_ICMPV6)
        + words(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn addr_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let a: [u8; 16] = b.get(at..at.checked_add(16)?)?.try_into().ok()?;
    Some(Ipv6Addr::from(a))
}

/// The ICMPv6 message of type `kind` in the IPv6 datagram at `l3`: (source, destination,
/// message). `None` unless it follows the fixed header directly, has hop limit 255, code
/// 0, a body, a source that is not a multicast group (RFC 4291 2.7), a target that is not
/// one (RFC 4861 7.1), lies inside the frame and checksums right.
fn message(frame: &[u8], l3: usize, kind: u8) -> Option<(Ipv6Addr, Ipv6Addr, &[u8])> {
    let hdr = frame.get(l3..l3.checked_add(IPV6_HLEN)?)?;
    if hdr[0] >> 4 != 6 || hdr[6] != IPPROTO_ICMPV6 || hdr[7] != HOP_LIMIT {
        return None;
    }
    // The frame may carry Ethernet padding after the datagram.
    let start = l3 + IPV6_HLEN;
    let len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    let icmp = frame.get(start..start + len)?;
    if len < BODY_LEN || icmp[0] != kind || icmp[1] != 0 {
        return None;
    }
    let (src, dst) = (addr_at(hdr, 8)?, addr_at(hdr, 24)?);
    if src.is_multicast() || addr_at(icmp, 8)?.is_multicast() {
        return None;
    }
    (icmpv6_checksum(src, dst, icmp) == 0).then_some((src, dst, icmp))
}

/// The link-layer address option of type `kind` among `opts`: `Some(None)` when absent,
/// the first when repeated (as Linux takes it). `None` when the options are malformed,
/// which discards the message: a zero length (RFC 4861 4.6; it would also never end the
/// walk), an option running past the message, or a link-layer address option of `kind`
/// whose length is not the 8 bytes an Ethernet address takes (Linux drops those too).
fn lla_option(opts: &[u8], kind: u8) -> Option<Option<MacAddr>> {
    let mut found = None;
    let mut rest = opts;
    // Every option takes at least 8 bytes, so the walk ends within opts.len() / 8 steps.
    while let &[t, units, ..] = rest {
        let len = usize::from(units) * 8;
        if len == 0 || len > rest.len() {
            return None;
        }
        if t == kind {
            if len != LLA_OPT_LEN {
                return None;
            }
            if found.is_none() {
                found = Some(MacAddr(rest.get(2..8)?.try_into().ok()?));
            }
        }
        rest = &rest[len..];
    }
    // One byte left over cannot be an option.
    rest.is_empty().then_some(found)
}

/// A valid Neighbor Solicitation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NsView {
    pub l3_offset: usize,
    /// The solicitor; unspecified (::) in duplicate address detection.
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address whose MAC is asked for.
    pub target: Ipv6Addr,
    /// The solicitor's MAC, from its source link-layer address option.
    pub src_lladdr: Option<MacAddr>,
}

/// The Neighbor Solicitation at `l3` (the IPv6 header), if it passes RFC 4861 7.1.1's
/// checks: hop limit 255, code 0, at least 24 bytes, right checksum, target not multicast,
/// options well formed; and from the unspecified address (duplicate address detection)
/// only to a solicited-node group and without a source link-layer address.
pub fn parse_ns(frame: &[u8], l3: usize) -> Option<NsView> {
    let (src, dst, icmp) = message(frame, l3, NS)?;
    let target = addr_at(icmp, 8)?;
    let src_lladdr = lla_option(icmp.get(BODY_LEN..)?, OPT_SLLA)?;
    if src.is_unspecified() && (!is_solicited_node(dst) || src_lladdr.is_some()) {
        return None;
    }
    Some(NsView {
        l3_offset: l3,
        src,
        dst,
        target,
        src_lladdr,
    })
}

/// The flags of an advertisement.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct NaFlags {
    /// R: the sender is a router.
    pub router: bool,
    /// S: an answer to a solicitation (so the target was just reachable).
    pub solicited: bool,
    /// O: the target's MAC replaces whatever the receiver has cached.
    pub override_: bool,
}

/// A valid Neighbor Advertisement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct NaView {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The address the advertisement is about.
    pub target: Ipv6Addr,
    pub flags: NaFlags,
    /// The target's MAC, from the target link-layer address option.
    pub tlladdr: Option<MacAddr>,
}

/// The Neighbor Advertisement at `l3` (the IPv6 header), if it passes RFC 4861 7.1.2's
/// checks: hop limit 255, code 0, at least 24 bytes, right checksum, target not multicast,
/// options well formed, and not solicited when sent to a group. Its source must be an
/// address of the sender (RFC 4861 4.4), so not the unspecified one.
pub fn parse_na(frame: &[u8], l3: usize) -> Option<NaView> {
    let (src, dst, icmp) = message(frame, l3, NA)?;
    let target = addr_at(icmp, 8)?;
    let f = *icmp.get(4)?;
    let flags = NaFlags {
        router: f & FLAG_ROUTER != 0,
        solicited: f & FLAG_SOLICITED != 0,
        override_: f & FLAG_OVERRIDE != 0,
    };
    if src.is_unspecified() || (dst.is_multicast() && flags.solicited) {
        return None;
    }
    Some(NaView {
        src,
        dst,
        target,
        flags,
        tlladdr: lla_option(icmp.get(BODY_LEN..)?, OPT_TLLA)?,
    })
}

/// What a neighbour-discovery frame (any VLAN tags skipped) tells of an address's MAC, the
/// analogue of [`crate::arp::parse_arp_reply`]: an advertisement's target and its target
/// link-layer address, or, solicited and without the option (RFC 4861 7.2.4 lets an answer
/// to a unicast solicitation omit it), the frame's Ethernet source; a solicitation's source
/// and its source link-layer address. Only a MAC a host can have.
pub fn parse_neighbor(frame: &[u8]) -> Option<(Ipv6Addr, MacAddr)> {
    let eth = parse_eth(frame).ok()?;
    if eth.ethertype != ETH_P_IPV6 {
        return None;
    }
    let l3 = eth.l3_offset;
    let (ip, mac) = match *frame.get(l3.checked_add(IPV6_HLEN)?)? {
        NA => {
            let na = parse_na(frame, l3)?;
            match na.tlladdr {
                Some(m) => (na.target, m),
                None if na.flags.solicited => {
                    (na.target, MacAddr(frame.get(6..12)?.try_into().ok()?))
                }
                None => return None,
            }
        }
        NS => {
            let ns = parse_ns(frame, l3)?;
            // A duplicate address detection probe claims nothing.
            if ns.src.is_unspecified() {
                return None;
            }
            (ns.src, ns.src_lladdr?)
        }
        _ => return None,
    };
    (!ip.is_unspecified() && mac.is_unicast_host()).then_some((ip, mac))
}

/// A message as this module builds it: every byte from the IPv6 header on is written, so
/// nothing of what the buffer held before survives.
struct Message {
    kind: u8,
    flags: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    /// The link-layer address option: its type and our MAC.
    option: u8,
    mac: MacAddr,
}

impl Message {
    fn write(&self, ip: &mut [u8; IP_LEN]) {
        let (hdr, icmp) = ip.split_at_mut(IPV6_HLEN);
        // Version 6, traffic class and flow label 0.
        hdr[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        hdr[4..6].copy_from_slice(&((BODY_LEN + LLA_OPT_LEN) as u16).to_be_bytes());
        hdr[6] = IPPROTO_ICMPV6;
        hdr[7] = HOP_LIMIT;
        hdr[8..24].copy_from_slice(&self.src.octets());
        hdr[24..40].copy_from_slice(&self.dst.octets());
        icmp[0..8].copy_from_slice(&[self.kind, 0, 0, 0, self.flags, 0, 0, 0]);
        icmp[8..24].copy_from_slice(&self.target.octets());
        icmp[24..26].copy_from_slice(&[self.option, 1]);
        icmp[26..32].copy_from_slice(&self.mac.0);
        let sum = icmpv6_checksum(self.src, self.dst, icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }

    /// The whole frame, from our MAC to `eth_dst`.
    fn frame(&self, eth_dst: MacAddr) -> Vec<u8> {
        let mut ip = [0u8; IP_LEN];
        self.write(&mut ip);
        let mut f = Vec::with_capacity(ETH_HLEN + IP_LEN);
        f.extend_from_slice(&eth_dst.0);
        f.extend_from_slice(&self.mac.0);
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&ip);
        f
    }
}

/// Turns the solicitation `ns`, parsed at `l3`, into our solicited advertisement for its
/// target, in place, and returns the length of the frame to send: 0 when `frame` (the whole
/// receive buffer: its length is the room there is) cannot hold the 72 bytes after `l3`,
/// or when the solicitor's Ethernet source is no host's. VLAN tags before `l3` stay.
///
/// Override set: a takeover must win over the previous owner's cache entries. A
/// solicitation from the unspecified address (duplicate address detection) is answered to
/// all-nodes with the solicited flag clear (RFC 4861 7.2.4), which tells the prober the VIP
/// is taken. The target link-layer address option is always present: RFC 4861 7.2.4
/// requires it when the solicitation went to a group.
pub(crate) fn reply_na_in_place(
    frame: &mut [u8],
    l3: usize,
    ns: &NsView,
    own_mac: MacAddr,
) -> usize {
    let Some(end) = l3.checked_add(IP_LEN) else {
        return 0;
    };
    if l3 < ETH_HLEN || ns.l3_offset != l3 || frame.len() < end {
        return 0;
    }
    let (dst, eth_dst, flags) = if ns.src.is_unspecified() {
        (ALL_NODES, multicast_mac(ALL_NODES), FLAG_OVERRIDE)
    } else {
        let mut requester = [0u8; 6];
        requester.copy_from_slice(&frame[6..12]);
        let requester = MacAddr(requester);
        // A group source is forged: answering it would send our reply to every member.
        if !requester.is_unicast_host() {
            return 0;
        }
        (ns.src, requester, FLAG_SOLICITED | FLAG_OVERRIDE)
    };
    let Ok(ip) = <&mut [u8; IP_LEN]>::try_from(&mut frame[l3..end]) else {
        return 0;
    };
    Message {
        kind: NA,
        flags,
        src: ns.target,
        dst,
        target: ns.target,
        option: OPT_TLLA,
        mac: own_mac,
    }
    .write(ip);
    frame[0..6].copy_from_slice(&eth_dst.0);
    frame[6..12].copy_from_slice(&own_mac.0);
    end
}

/// An unsolicited advertisement of `vip` at `own_mac` to all nodes, override set and
/// solicited clear (RFC 4861 7.2.6): sent on takeover, the IPv6 form of gratuitous ARP.
pub fn unsolicited_na(own_mac: MacAddr, vip: Ipv6Addr) -> Vec<u8> {
    Message {
        kind: NA,
        flags: FLAG_OVERRIDE,
        src: vip,
        dst: ALL_NODES,
        target: vip,
        option: OPT_TLLA,
        mac: own_mac,
    }
    .frame(multicast_mac(ALL_NODES))
}

/// A solicitation for `target`'s MAC, to its solicited-node group, from `own_ip` with our
/// MAC in the source link-layer address option (so the target can answer without a
/// solicitation of its own).
pub fn neighbor_solicitation(own_mac: MacAddr, own_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    Message {
        kind: NS,
        flags: 0,
        src: own_ip,
        dst: group,
        target,
        option: OPT_SLLA,
        mac: own_mac,
    }
    .frame(multicast_mac(group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Icmpv6Type, NetSlice, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);
    const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const VIP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
    const CLIENT_IP: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const TAG: [u8; 4] = [0x81, 0x00, 0x00, 0x05];

    /// The one's-complement sum of pseudo-header and message, checksum included, computed
    /// apart from the module: all ones when the checksum is right (RFC 1071).
    fn sums_to_ones(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> bool {
        let mut all = Vec::new();
        all.extend_from_slice(&src.octets());
        all.extend_from_slice(&dst.octets());
        all.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, 58]);
        all.extend_from_slice(icmp);
        if all.len() % 2 == 1 {
            all.push(0);
        }
        let mut s: u32 = all
            .chunks(2)
            .map(|c| (u32::from(c[0]) << 8) | u32::from(c[1]))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s == 0xffff
    }

    /// The ICMPv6 message of the datagram at `l3`, as its payload length says.
    fn icmp_at(f: &[u8], l3: usize) -> &[u8] {
        let len = usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
        &f[l3 + 40..l3 + 40 + len]
    }

    /// Recomputes the checksum of the message at `l3` after a test edited it.
    fn fix_checksum(f: &mut [u8], l3: usize) {
        let (src, dst) = (addr_at(f, l3 + 8).unwrap(), addr_at(f, l3 + 24).unwrap());
        let len = icmp_at(f, l3).len();
        let icmp = &mut f[l3 + 40..l3 + 40 + len];
        icmp[2..4].fill(0);
        let sum = icmpv6_checksum(src, dst, icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }

    /// `f` with the 802.1Q tag after the MACs.
    fn tagged(f: &[u8]) -> Vec<u8> {
        let mut t = f[..12].to_vec();
        t.extend_from_slice(&TAG);
        t.extend_from_slice(&f[12..]);
        t
    }

    /// A duplicate address detection probe for `target`: from ::, to its solicited-node
    /// group, without options (64 bytes of IPv6).
    fn dad_probe(mac: MacAddr, target: Ipv6Addr) -> Vec<u8> {
        let mut f = neighbor_solicitation(mac, Ipv6Addr::UNSPECIFIED, target);
        f.truncate(ETH_HLEN + 64);
        f[ETH_HLEN + 5] = 24;
        fix_checksum(&mut f, ETH_HLEN);
        f
    }

    /// What etherparse, which shares no code with this module, reads: the ICMPv6 type,
    /// source, destination, hop limit, and whether the checksum is right.
    fn etherparse_view(f: &[u8]) -> (Icmpv6Type, [u8; 16], [u8; 16], u8, bool) {
        let p = SlicedPacket::from_ethernet(f).expect("etherparse reads the frame");
        let Some(NetSlice::Ipv6(ip)) = p.net else {
            panic!("not IPv6: {:?}", p.net)
        };
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("not ICMPv6: {:?}", p.transport)
        };
        let h = ip.header();
        let (src, dst) = (h.source(), h.destination());
        (
            icmp.icmp_type(),
            src,
            dst,
            h.hop_limit(),
            icmp.is_checksum_valid(src, dst),
        )
    }

    #[test]
    fn groups_and_their_macs() {
        let g = solicited_node("2001:db8::1:2:3:abcd".parse().unwrap());
        assert_eq!(g, "ff02::1:ff03:abcd".parse::<Ipv6Addr>().unwrap());
        assert!(is_solicited_node(g));
        assert!(!is_solicited_node(ALL_NODES));
        assert!(!is_solicited_node("ff02::2:ff03:abcd".parse().unwrap()));
        assert_eq!(
            multicast_mac(g),
            MacAddr([0x33, 0x33, 0xff, 0x03, 0xab, 0xcd])
        );
        assert_eq!(multicast_mac(ALL_NODES), MacAddr([0x33, 0x33, 0, 0, 0, 1]));
        assert!(is_ndp(NS) && is_ndp(NA) && is_ndp(133) && is_ndp(137));
        assert!(!is_ndp(128) && !is_ndp(138));
    }

    #[test]
    fn checksum_matches_an_independent_sum_at_any_length() {
        // Odd and even lengths, and bytes that carry.
        for len in [0, 1, 2, 3, 23, 24, 33, 1499] {
            let mut icmp: Vec<u8> = (0..len).map(|i| (i * 37 + 0xf1) as u8).collect();
            if len >= 4 {
                icmp[2..4].fill(0);
                let sum = icmpv6_checksum(CLIENT_IP, VIP, &icmp);
                icmp[2..4].copy_from_slice(&sum.to_be_bytes());
                assert!(sums_to_ones(CLIENT_IP, VIP, &icmp), "len {len}");
                assert_eq!(icmpv6_checksum(CLIENT_IP, VIP, &icmp), 0, "len {len}");
            }
        }
        // RFC 1071's odd byte is the high half of a word: [0xab] sums as 0xab00.
        let one = !icmpv6_checksum(Ipv6Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED, &[0xab]);
        assert_eq!(one, 0xab00 + 1 + 58);
    }

    #[test]
    fn builders_produce_frames_the_readers_accept() {
        let ns = neighbor_solicitation(OWN, CLIENT_IP, VIP);
        assert_eq!(ns.len(), ETH_HLEN + IP_LEN);
        assert_eq!(&ns[0..6], &multicast_mac(solicited_node(VIP)).0);
        assert_eq!(&ns[6..12], &OWN.0);
        let v = parse_ns(&ns, ETH_HLEN).expect("our NS parses");
        let want = NsView {
            l3_offset: ETH_HLEN,
            src: CLIENT_IP,
            dst: solicited_node(VIP),
            target: VIP,
            src_lladdr: Some(OWN),
        };
        assert_eq!(v, want);
        assert!(sums_to_ones(CLIENT_IP, v.dst, icmp_at(&ns, ETH_HLEN)));
        let (t, src, dst, hops, sum_ok) = etherparse_view(&ns);
        assert_eq!(t, Icmpv6Type::NeighborSolicitation);
        assert_eq!(
            (src, dst),
            (CLIENT_IP.octets(), solicited_node(VIP).octets())
        );
        assert!(hops == 255 && sum_ok);
        assert_eq!(parse_neighbor(&ns), Some((CLIENT_IP, OWN)));
        assert_eq!(parse_na(&ns, ETH_HLEN), None);

        let na = unsolicited_na(OWN, VIP);
        assert_eq!(na.len(), ETH_HLEN + IP_LEN);
        assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&na[6..12], &OWN.0);
        let a = parse_na(&na, ETH_HLEN).expect("our NA parses");
        assert_eq!((a.src, a.dst, a.target), (VIP, ALL_NODES, VIP));
        let only_o = NaFlags {
            override_: true,
            ..NaFlags::default()
        };
        assert_eq!((a.flags, a.tlladdr), (only_o, Some(OWN)));
        assert!(sums_to_ones(VIP, ALL_NODES, icmp_at(&na, ETH_HLEN)));
        let (t, _, _, hops, sum_ok) = etherparse_view(&na);
        let Icmpv6Type::NeighborAdvertisement(h) = t else {
            panic!("etherparse sees {t:?}")
        };
        assert!(h.r#override && !h.solicited && !h.router && hops == 255 && sum_ok);
        assert_eq!(parse_neighbor(&na), Some((VIP, OWN)));
        assert_eq!(parse_ns(&na, ETH_HLEN), None);
    }

    #[test]
    fn a_solicitation_becomes_our_advertisement_in_place_keeping_its_tag() {
        let mut f = tagged(&neighbor_solicitation(CLIENT, CLIENT_IP, VIP));
        let l3 = ETH_HLEN + 4;
        let ns = parse_ns(&f, l3).expect("a tagged NS parses");
        assert_eq!(parse_neighbor(&f), Some((CLIENT_IP, CLIENT)));
        let len = reply_na_in_place(&mut f, l3, &ns, OWN);
        assert_eq!(len, l3 + 72);
        assert_eq!(&f[0..6], &CLIENT.0);
        assert_eq!(&f[6..12], &OWN.0);
        assert_eq!(&f[12..16], &TAG);
        assert_eq!(&f[16..18], &[0x86, 0xdd]);
        assert_eq!(
            &f[l3..l3 + 4],
            &[0x60, 0, 0, 0],
            "traffic class, flow label 0"
        );
        let a = parse_na(&f[..len], l3).expect("the reply parses");
        assert_eq!((a.src, a.dst, a.target), (VIP, CLIENT_IP, VIP));
        let s_and_o = NaFlags {
            router: false,
            solicited: true,
            override_: true,
        };
        assert_eq!((a.flags, a.tlladdr), (s_and_o, Some(OWN)));
        assert!(sums_to_ones(VIP, CLIENT_IP, icmp_at(&f, l3)));
        let (t, src, dst, hops, sum_ok) = etherparse_view(&f[..len]);
        assert!(matches!(t, Icmpv6Type::NeighborAdvertisement(h) if h.solicited && h.r#override));
        assert_eq!((src, dst), (VIP.octets(), CLIENT_IP.octets()));
        assert!(hops == 255 && sum_ok);
        assert_eq!(parse_neighbor(&f[..len]), Some((VIP, OWN)));
    }

    #[test]
    fn a_longer_solicitation_leaves_nothing_behind() {
        // An NS with an unknown option after the source link-layer address (80 bytes).
        let mut f = neighbor_solicitation(CLIENT, CLIENT_IP, VIP);
        f.extend_from_slice(&[14, 1, 0xde, 0xad, 0xbe, 0xef, 0, 1]);
        f[ETH_HLEN + 5] = 40;
        fix_checksum(&mut f, ETH_HLEN);
        let ns = parse_ns(&f, ETH_HLEN).expect("unknown options are skipped");
        assert_eq!(ns.src_lladdr, Some(CLIENT));
        let len = reply_na_in_place(&mut f, ETH_HLEN, &ns, OWN);
        assert_eq!(len, ETH_HLEN + 72);
        assert_eq!(&f[ETH_HLEN + 4..ETH_HLEN + 6], &[0, 32]);
        assert!(parse_na(&f[..len], ETH_HLEN).is_some());
    }

    #[test]
    fn a_dad_probe_is_answered_to_all_nodes_not_solicited() {
        let probe = dad_probe(CLIENT, VIP);
        let ns = parse_ns(&probe, ETH_HLEN).expect("a DAD probe parses");
        assert_eq!((ns.src, ns.src_lladdr), (Ipv6Addr::UNSPECIFIED, None));
        assert_eq!(parse_neighbor(&probe), None, "a probe claims nothing");
        let mut buf = probe.clone();
        buf.resize(2048, 0xee);
        let len = reply_na_in_place(&mut buf, ETH_HLEN, &ns, OWN);
        assert_eq!(len, ETH_HLEN + 72);
        assert_eq!(&buf[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        let a = parse_na(&buf[..len], ETH_HLEN).expect("the defence parses");
        assert_eq!((a.src, a.dst, a.target), (VIP, ALL_NODES, VIP));
        assert!(!a.flags.solicited && a.flags.override_ && !a.flags.router);
        assert_eq!(a.tlladdr, Some(OWN));
        let (_, _, _, _, sum_ok) = etherparse_view(&buf[..len]);
        assert!(sum_ok);
        // The probe's own 78 bytes cannot hold the answer.
        let mut exact = probe.clone();
        assert_eq!(reply_na_in_place(&mut exact, ETH_HLEN, &ns, OWN), 0);
        assert_eq!(exact, probe, "untouched when refused");
    }

    #[test]
    fn replies_need_room_a_host_to_answer_and_their_own_view() {
        let ns_frame = neighbor_solicitation(CLIENT, CLIENT_IP, VIP);
        let ns = parse_ns(&ns_frame, ETH_HLEN).unwrap();
        let mut short = ns_frame[..ETH_HLEN + 71].to_vec();
        assert_eq!(reply_na_in_place(&mut short, ETH_HLEN, &ns, OWN), 0);
        assert_eq!(reply_na_in_place(&mut [0u8; 20], ETH_HLEN, &ns, OWN), 0);
        assert_eq!(reply_na_in_place(&mut [], ETH_HLEN, &ns, OWN), 0);
        let mut f = ns_frame.clone();
        assert_eq!(
            reply_na_in_place(&mut f, 10, &ns, OWN),
            0,
            "l3 inside Ethernet"
        );
        assert_eq!(
            reply_na_in_place(&mut f, ETH_HLEN + 4, &ns, OWN),
            0,
            "other l3"
        );
        let far = NsView {
            l3_offset: usize::MAX - 8,
            ..ns
        };
        assert_eq!(reply_na_in_place(&mut f, usize::MAX - 8, &far, OWN), 0);
        let mut group_src = ns_frame.clone();
        group_src[6] = 0x01;
        assert_eq!(reply_na_in_place(&mut group_src, ETH_HLEN, &ns, OWN), 0);
        assert_eq!(reply_na_in_place(&mut f, ETH_HLEN, &ns, OWN), ETH_HLEN + 72);
    }

    #[test]
    fn bad_solicitations_are_refused() {
        let good = neighbor_solicitation(CLIENT, CLIENT_IP, VIP);
        assert!(parse_ns(&good, ETH_HLEN).is_some());
        let (ip, icmp) = (ETH_HLEN, ETH_HLEN + 40);
        let edited = |at: usize, v: u8, fix: bool| {
            let mut f = good.clone();
            f[at] = v;
            if fix {
                fix_checksum(&mut f, ETH_HLEN);
            }
            parse_ns(&f, ETH_HLEN)
        };
        assert_eq!(
            edited(ip + 7, 254, true),
            None,
            "routed here: hop limit 254"
        );
        assert_eq!(edited(ip + 7, 64, true), None, "hop limit 64");
        assert_eq!(
            edited(icmp + 3, good[icmp + 3] ^ 1, false),
            None,
            "bad checksum"
        );
        assert_eq!(edited(icmp + 25, 0, true), None, "zero-length option");
        assert_eq!(edited(icmp + 25, 2, true), None, "option past the message");
        assert_eq!(edited(icmp + 1, 1, true), None, "code 1");
        assert_eq!(edited(icmp, 128, true), None, "echo request");
        assert_eq!(edited(ip + 6, 0, true), None, "hop-by-hop header first");
        assert_eq!(edited(ip, 0x40, true), None, "version 4");
        assert_eq!(edited(ip + 5, 23, false), None, "body cut short");
        assert_eq!(edited(ip + 5, 33, false), None, "payload past the frame");
        assert_eq!(edited(icmp + 8, 0xff, true), None, "multicast target");
        assert_eq!(edited(ip + 8, 0xff, true), None, "multicast source");
        // The source link-layer address option must be 8 bytes on Ethernet.
        let mut long_slla = good.clone();
        long_slla[icmp + 25] = 2;
        long_slla.extend_from_slice(&[0; 8]);
        long_slla[ip + 5] = 40;
        fix_checksum(&mut long_slla, ETH_HLEN);
        assert_eq!(parse_ns(&long_slla, ETH_HLEN), None);
        // A stray byte after the options.
        let mut stray = good.clone();
        stray.push(0);
        stray[ip + 5] = 33;
        fix_checksum(&mut stray, ETH_HLEN);
        assert_eq!(parse_ns(&stray, ETH_HLEN), None);
        // Ethernet padding after the datagram is fine.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0xee; 6]);
        assert!(parse_ns(&padded, ETH_HLEN).is_some());
        for cut in 0..good.len() {
            assert_eq!(parse_ns(&good[..cut], ETH_HLEN), None, "cut at {cut}");
        }
        assert_eq!(parse_ns(&good, usize::MAX - 3), None);
    }

    #[test]
    fn duplicate_address_detection_rules() {
        let probe = dad_probe(CLIENT, VIP);
        assert!(parse_ns(&probe, ETH_HLEN).is_some());
        // From :: to anything but a solicited-node group.
        let mut to_vip = probe.clone();
        to_vip[ETH_HLEN + 24..ETH_HLEN + 40].copy_from_slice(&VIP.octets());
        fix_checksum(&mut to_vip, ETH_HLEN);
        assert_eq!(parse_ns(&to_vip, ETH_HLEN), None);
        // From :: with a source link-layer address.
        let mut with_slla = neighbor_solicitation(CLIENT, Ipv6Addr::UNSPECIFIED, VIP);
        assert_eq!(parse_ns(&with_slla, ETH_HLEN), None);
        // The same with the option turned into an unknown one is a plain probe.
        with_slla[ETH_HLEN + 40 + 24] = 14;
        fix_checksum(&mut with_slla, ETH_HLEN);
        assert!(parse_ns(&with_slla, ETH_HLEN).is_some());
    }

    #[test]
    fn bad_advertisements_are_refused() {
        let good = unsolicited_na(OWN, VIP);
        assert!(parse_na(&good, ETH_HLEN).is_some());
        let (ip, icmp) = (ETH_HLEN, ETH_HLEN + 40);
        let edited = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            fix_checksum(&mut f, ETH_HLEN);
            parse_na(&f, ETH_HLEN)
        };
        assert_eq!(edited(ip + 7, 254), None, "hop limit 254");
        assert_eq!(
            edited(icmp + 4, FLAG_SOLICITED | FLAG_OVERRIDE),
            None,
            "S to a group"
        );
        assert_eq!(edited(icmp + 25, 0), None, "zero-length option");
        assert_eq!(edited(icmp + 8, 0xff), None, "multicast target");
        let mut sum = good.clone();
        sum[icmp + 30] ^= 0x10;
        assert_eq!(parse_na(&sum, ETH_HLEN), None, "bad checksum");
        let mut from_any = good.clone();
        from_any[ip + 8..ip + 24].fill(0);
        fix_checksum(&mut from_any, ETH_HLEN);
        assert_eq!(parse_na(&from_any, ETH_HLEN), None, "from ::");
        let r = edited(icmp + 4, FLAG_ROUTER | FLAG_OVERRIDE).expect("R is legal");
        assert!(r.flags.router && r.flags.override_ && !r.flags.solicited);
        for cut in 0..good.len() {
            assert_eq!(parse_na(&good[..cut], ETH_HLEN), None, "cut at {cut}");
        }
    }

    #[test]
    fn learning_reads_advertisements_and_solicitations() {
        let backend = MacAddr([2, 0, 0, 0, 0, 7]);
        let backend_ip: Ipv6Addr = "2001:db8::7".parse().unwrap();
        // The backend answers our solicitation: solicited, to our unicast address.
        let mut ns = neighbor_solicitation(OWN, CLIENT_IP, backend_ip);
        let v = parse_ns(&ns, ETH_HLEN).unwrap();
        let len = reply_na_in_place(&mut ns, ETH_HLEN, &v, backend);
        let answer = ns[..len].to_vec();
        assert_eq!(parse_neighbor(&answer), Some((backend_ip, backend)));
        assert_eq!(
            parse_neighbor(&tagged(&answer)),
            Some((backend_ip, backend))
        );
        let mut qinq = tagged(&tagged(&answer));
        qinq[12..14].copy_from_slice(&[0x88, 0xa8]);
        assert_eq!(parse_neighbor(&qinq), Some((backend_ip, backend)));
        let three = tagged(&tagged(&tagged(&answer)));
        assert_eq!(parse_neighbor(&three), None, "a third tag");

        // Without its option, a solicited answer names the Ethernet source.
        let mut bare = answer.clone();
        bare.truncate(ETH_HLEN + 64);
        bare[ETH_HLEN + 5] = 24;
        fix_checksum(&mut bare, ETH_HLEN);
        assert_eq!(parse_na(&bare, ETH_HLEN).unwrap().tlladdr, None);
        assert_eq!(parse_neighbor(&bare), Some((backend_ip, backend)));
        // ... but an unsolicited one names nobody.
        bare[ETH_HLEN + 44] = FLAG_OVERRIDE;
        fix_checksum(&mut bare, ETH_HLEN);
        assert!(parse_na(&bare, ETH_HLEN).is_some());
        assert_eq!(parse_neighbor(&bare), None);

        // A MAC no host can have is not learned.
        assert_eq!(parse_neighbor(&unsolicited_na(MacAddr::ZERO, VIP)), None);
        let group = MacAddr([0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(parse_neighbor(&unsolicited_na(group, VIP)), None);
        assert_eq!(
            parse_neighbor(&neighbor_solicitation(group, CLIENT_IP, VIP)),
            None
        );
        // Nor an unspecified target.
        assert_eq!(
            parse_neighbor(&unsolicited_na(OWN, Ipv6Addr::UNSPECIFIED)),
            None
        );
        // Not IPv6, not neighbour discovery, too short.
        let mut arp = answer.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_neighbor(&arp), None);
        assert_eq!(parse_neighbor(&answer[..ETH_HLEN + 40]), None);
        assert_eq!(parse_neighbor(&[0u8; 3]), None);
    }

    /// A valid NS or NA, untagged or tagged, for the mutation tests.
    fn base(which: u8) -> (Vec<u8>, usize) {
        let ns = neighbor_solicitation(CLIENT, CLIENT_IP, VIP);
        match which % 5 {
            0 => (ns, ETH_HLEN),
            1 => (tagged(&ns), ETH_HLEN + 4),
            2 => (unsolicited_na(OWN, VIP), ETH_HLEN),
            3 => (dad_probe(CLIENT, VIP), ETH_HLEN),
            _ => {
                let mut f = ns.clone();
                let v = parse_ns(&f, ETH_HLEN).unwrap();
                let len = reply_na_in_place(&mut f, ETH_HLEN, &v, OWN);
                f.truncate(len);
                (tagged(&f), ETH_HLEN + 4)
            }
        }
    }

    /// Everything the module reads, on `f` at `l3`; a parsed solicitation is answered, in
    /// a buffer of `room` bytes, with an advertisement the readers accept.
    fn exercise(f: &[u8], l3: usize, room: usize) -> Result<(), TestCaseError> {
        let _ = parse_na(f, l3);
        let _ = parse_neighbor(f);
        if let Some(ns) = parse_ns(f, l3) {
            let mut buf = f.to_vec();
            buf.resize(room.max(f.len()), 0);
            let len = reply_na_in_place(&mut buf, l3, &ns, OWN);
            prop_assert!(len <= buf.len());
            if len > 0 {
                let na = parse_na(&buf[..len], l3);
                prop_assert!(na.is_some_and(|na| na.target == ns.target && na.src == ns.target));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..160),
            l3 in 0usize..64,
            room in 0usize..200,
        ) {
            exercise(&bytes, l3, room)?;
            let ns = NsView {
                l3_offset: l3,
                src: Ipv6Addr::from_bits(u128::from(bytes.first().copied().unwrap_or(0))),
                dst: ALL_NODES,
                target: VIP,
                src_lladdr: None,
            };
            let mut buf = bytes.clone();
            let len = reply_na_in_place(&mut buf, l3, &ns, OWN);
            prop_assert!(len == 0 || len == l3 + 72);
        }

        #[test]
        fn mutated_messages_never_panic(
            which in any::<u8>(),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            fix in any::<bool>(),
            cut in proptest::option::of(any::<usize>()),
            room in 0usize..200,
        ) {
            let (mut f, l3) = base(which);
            for (at, v) in &edits {
                let at = at % f.len();
                f[at] = *v;
            }
            // With its checksum fixed, a mutant reaches the checks behind the checksum.
            if fix && f.len() >= l3 + 40 && icmp_len_fits(&f, l3) {
                fix_checksum(&mut f, l3);
            }
            if let Some(cut) = cut {
                f.truncate(cut % (f.len() + 1));
            }
            exercise(&f, l3, room)?;
            for l3 in [0, 12, ETH_HLEN, ETH_HLEN + 4, ETH_HLEN + 8] {
                exercise(&f, l3, room)?;
            }
        }
    }

    fn icmp_len_fits(f: &[u8], l3: usize) -> bool {
        let len = usize::from(u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]));
        len >= 4 && l3 + 40 + len <= f.len()
    }
}
