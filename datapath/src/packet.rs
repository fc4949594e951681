//! Frame parsing on byte slices: Ethernet with up to two VLAN tags, ARP, IPv4, IPv6 (with
//! its extension-header chain walked to a bound) and the TCP/UDP ports. Pure, allocation-free, and total: every byte string yields either a
//! view or a [`DropReason`], never a panic.
//!
//! Checksums are not verified: the backend's kernel verifies them, and a frame with a
//! partial checksum (offloads) is legal here.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::counters::DropReason;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag (outer tag of QinQ).
pub const ETH_P_8021AD: u16 = 0x88a8;
/// Destination MAC, source MAC, EtherType.
pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// QinQ: an outer and an inner tag. A third tag is refused.
pub const MAX_VLAN_TAGS: usize = 2;
/// Ethernet/IPv4 ARP body.
pub const ARP_LEN: usize = 28;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 fixed header.
pub const IPV6_HLEN: usize = 40;
/// Extension headers walked before a datagram is refused (`Ipv6ExtChain`). Real traffic
/// carries zero to two; RFC 8200 allows each kind at most once (destination options twice),
/// so eight is past any honest chain and bounds the walk.
pub const MAX_IPV6_EXT: usize = 8;
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;
const IPV4_MIN_HLEN: usize = 20;
const TCP_MIN_HLEN: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const UDP_HLEN: usize = 8;

/// An Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Group bit set (broadcast included): never a host's address.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }

    /// A unicast, non-zero address: one a host can have.
    pub fn is_unicast_host(self) -> bool {
        !self.is_multicast() && self != MacAddr::ZERO
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex octets separated by ':' or '-'")]
pub struct ParseMacError {
    pub input: String,
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError {
            input: s.to_owned(),
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

/// The Ethernet layer: where the payload starts after any VLAN tags.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct EthView {
    /// Offset of the ARP or IPv4 header.
    pub l3_offset: usize,
    /// The EtherType after the tags.
    pub ethertype: u16,
    /// Number of VLAN tags skipped (0..=2).
    pub vlan_tags: u8,
}

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ArpView {
    pub l3_offset: usize,
    pub oper: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// Where a datagram sits in its fragment series.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fragment {
    /// Not fragmented.
    Whole,
    /// Offset 0 with More Fragments set: carries the L4 header.
    First,
    /// Offset > 0: no L4 header.
    Later,
}

/// An IPv4 datagram, with its ports when its L4 header is present.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv4View {
    pub l3_offset: usize,
    /// IHL in bytes (20..=60).
    pub header_len: usize,
    /// Total length from the header; the frame may carry padding after it.
    pub total_len: usize,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub fragment: Fragment,
    /// Fragment offset in bytes.
    pub fragment_offset: u16,
    /// (source, destination) for TCP and UDP in a whole datagram or a first fragment.
    pub ports: Option<(u16, u16)>,
    /// A TCP segment with SYN set and ACK clear: the first packet of a new connection.
    pub tcp_syn: bool,
}

/// An IPv6 datagram after its extension headers, with its ports when its L4 header is
/// present.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Ipv6View {
    pub l3_offset: usize,
    /// Fixed header and extension headers in bytes: where the upper-layer header starts.
    pub header_len: usize,
    /// 40 + payload length: the datagram's end; the frame may carry padding after it.
    pub total_len: usize,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    /// The upper-layer protocol (the last Next Header of the chain).
    pub protocol: u8,
    pub fragment: Fragment,
    /// Fragment offset in bytes.
    pub fragment_offset: u16,
    /// (source, destination) for TCP and UDP in a whole datagram or a first fragment.
    pub ports: Option<(u16, u16)>,
    /// A TCP segment with SYN set and ACK clear.
    pub tcp_syn: bool,
    /// The ICMPv6 type when the upper layer is ICMPv6 and its first byte is present.
    pub icmp_type: Option<u8>,
}

/// A parsed frame.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Parsed {
    Arp(ArpView),
    Ipv4(Ipv4View),
    Ipv6(Ipv6View),
}

#[inline]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at + 2)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

#[inline]
fn ip4(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

#[inline]
fn mac(b: &[u8], at: usize) -> Option<MacAddr> {
    let s: [u8; 6] = b.get(at..at + 6)?.try_into().ok()?;
    Some(MacAddr(s))
}

/// Skips the Ethernet header and up to [`MAX_VLAN_TAGS`] tags (802.1Q or 802.1ad, any order).
#[inline]
pub fn parse_eth(frame: &[u8]) -> Result<EthView, DropReason> {
    let mut ethertype = be16(frame, 12).ok_or(DropReason::TooShort)?;
    let mut off = ETH_HLEN;
    let mut tags = 0u8;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if tags as usize == MAX_VLAN_TAGS {
            return Err(DropReason::VlanTooDeep);
        }
        // The tag's TCI is at `off - 2`; the inner EtherType follows it.
        ethertype = be16(frame, off + 2).ok_or(DropReason::TooShort)?;
        off += VLAN_HLEN;
        tags += 1;
    }
    Ok(EthView {
        l3_offset: off,
        ethertype,
        vlan_tags: tags,
    })
}

/// Parses an Ethernet/IPv4 ARP body at `l3`.
#[inline]
pub fn parse_arp(frame: &[u8], l3: usize) -> Result<ArpView, DropReason> {
    let body = frame
        .get(l3..l3 + ARP_LEN)
        .ok_or(DropReason::ArpMalformed)?;
    let (htype, ptype) = (be16(body, 0), be16(body, 2));
    if htype != Some(1) || ptype != Some(ETH_P_IPV4) || body[4] != 6 || body[5] != 4 {
        return Err(DropReason::ArpMalformed);
    }
    let parsed = (|| {
        Some(ArpView {
            l3_offset: l3,
            oper: be16(body, 6)?,
            sender_mac: mac(body, 8)?,
            sender_ip: ip4(body, 14)?,
            target_mac: mac(body, 18)?,
            target_ip: ip4(body, 24)?,
        })
    })();
    parsed.ok_or(DropReason::ArpMalformed)
}

/// Parses an IPv4 header at `l3` and, when present, the TCP/UDP ports.
#[inline]
pub fn parse_ipv4(frame: &[u8], l3: usize) -> Result<Ipv4View, DropReason> {
    let hdr = frame
        .get(l3..l3 + IPV4_MIN_HLEN)
        .ok_or(DropReason::Ipv4Truncated)?;
    if hdr[0] >> 4 != 4 {
        return Err(DropReason::Ipv4Malformed);
    }
    let header_len = usize::from(hdr[0] & 0x0f) * 4;
    if header_len < IPV4_MIN_HLEN {
        return Err(DropReason::Ipv4Malformed);
    }
    let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
    if total_len < header_len {
        return Err(DropReason::Ipv4Malformed);
    }
    let available = frame.len() - l3;
    if header_len > available || total_len > available {
        return Err(DropReason::Ipv4Truncated);
    }
    let flags_frag = u16::from_be_bytes([hdr[6], hdr[7]]);
    let more_fragments = flags_frag & 0x2000 != 0;
    let fragment_offset = (flags_frag & 0x1fff) << 3;
    let fragment = match (fragment_offset, more_fragments) {
        (0, false) => Fragment::Whole,
        (0, true) => Fragment::First,
        _ => Fragment::Later,
    };
    let protocol = hdr[9];
    let src = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
    let dst = Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]);

    let (ports, tcp_syn) = l4_ports(
        frame,
        protocol,
        fragment,
        l3 + header_len,
        total_len - header_len,
    )?;
    Ok(Ipv4View {
        l3_offset: l3,
        header_len,
        total_len,
        src,
        dst,
        protocol,
        fragment,
        fragment_offset,
        ports,
        tcp_syn,
    })
}

/// The TCP/UDP ports of the upper-layer header at `l4` in a datagram whose upper layer is
/// `l4_len` bytes long, and whether it is a pure SYN. `Later` fragments have none.
#[inline]
fn l4_ports(
    frame: &[u8],
    protocol: u8,
    fragment: Fragment,
    l4: usize,
    l4_len: usize,
) -> Result<(Option<(u16, u16)>, bool), DropReason> {
    let min = match protocol {
        IPPROTO_TCP => TCP_MIN_HLEN,
        IPPROTO_UDP => UDP_HLEN,
        _ => return Ok((None, false)),
    };
    if fragment == Fragment::Later {
        return Ok((None, false));
    }
    // RFC 1858 (and RFC 7112 for IPv6): a first fragment too short for the transport
    // header is refused, since later fragments could otherwise rewrite the ports.
    if l4_len < min {
        return Err(DropReason::L4Truncated);
    }
    let ports = match (be16(frame, l4), be16(frame, l4 + 2)) {
        (Some(s), Some(d)) => (s, d),
        _ => return Err(DropReason::L4Truncated),
    };
    // The flags byte is inside the 20 bytes checked above for TCP.
    let syn = protocol == IPPROTO_TCP
        && frame
            .get(l4 + 13)
            .is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN);
    Ok((Some(ports), syn))
}

/// Parses an IPv6 header at `l3`, walks its extension headers (at most [`MAX_IPV6_EXT`])
/// and, when present, reads the TCP/UDP ports.
///
/// Refused: a hop-by-hop header anywhere but first (RFC 8200 4.1), a routing header with
/// segments left (the VIP is then not the destination, only a waypoint), a chain longer than
/// the bound, a header running past the payload, a jumbogram (payload length 0: never on
/// an Ethernet link of ours). An atomic fragment (offset 0, M clear; RFC 6946) is whole.
#[inline]
pub fn parse_ipv6(frame: &[u8], l3: usize) -> Result<Ipv6View, DropReason> {
    let hdr = frame
        .get(l3..l3 + IPV6_HLEN)
        .ok_or(DropReason::Ipv6Truncated)?;
    if hdr[0] >> 4 != 6 {
        return Err(DropReason::Ipv6Malformed);
    }
    let payload_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
    if payload_len == 0 {
        return Err(DropReason::Ipv6Malformed);
    }
    let total_len = IPV6_HLEN + payload_len;
    if total_len > frame.len() - l3 {
        return Err(DropReason::Ipv6Truncated);
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&hdr[at..at + 16]);
        Ipv6Addr::from(a)
    };
    let (src, dst) = (addr(8), addr(24));
    let end = l3 + total_len;
    let mut next = hdr[6];
    let mut off = l3 + IPV6_HLEN;
    let mut fragment = Fragment::Whole;
    let mut fragment_offset = 0u16;
    let mut walked = 0usize;
    while let NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_FRAGMENT | NH_AH = next {
        if walked == MAX_IPV6_EXT {
            return Err(DropReason::Ipv6ExtChain);
        }
        if next == NH_HOP_BY_HOP && walked > 0 {
            return Err(DropReason::Ipv6Malformed);
        }
        // Every extension header starts with Next Header and a length byte.
        let h = frame
            .get(off..(off + 8).min(end))
            .filter(|h| h.len() == 8)
            .ok_or(DropReason::Ipv6Malformed)?;
        let len = match next {
            NH_FRAGMENT => {
                let fo = u16::from_be_bytes([h[2], h[3]]);
                fragment_offset = fo & 0xfff8;
                fragment = match (fragment_offset, fo & 1 == 1) {
                    (0, false) => Fragment::Whole,
                    (0, true) => Fragment::First,
                    _ => Fragment::Later,
                };
                8
            }
            NH_AH => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if next == NH_ROUTING && h[3] != 0 {
            return Err(DropReason::Ipv6ExtChain);
        }
        if off + len > end {
            return Err(DropReason::Ipv6Malformed);
        }
        next = h[0];
        off += len;
        walked += 1;
    }
    let protocol = next;
    let (ports, tcp_syn) = l4_ports(frame, protocol, fragment, off, end - off)?;
    let icmp_type = if protocol == IPPROTO_ICMPV6 && fragment == Fragment::Whole && off < end {
        frame.get(off).copied()
    } else {
        None
    };
    Ok(Ipv6View {
        l3_offset: l3,
        header_len: off - l3,
        total_len,
        src,
        dst,
        protocol,
        fragment,
        fragment_offset,
        ports,
        tcp_syn,
        icmp_type,
    })
}

/// Parses a whole frame down to ARP, IPv4 or IPv6 (with ports).
#[inline]
pub fn parse(frame: &[u8]) -> Result<Parsed, DropReason> {
    let eth = parse_eth(frame)?;
    match eth.ethertype {
        ETH_P_ARP => parse_arp(frame, eth.l3_offset).map(Parsed::Arp),
        ETH_P_IPV4 => parse_ipv4(frame, eth.l3_offset).map(Parsed::Ipv4),
        ETH_P_IPV6 => parse_ipv6(frame, eth.l3_offset).map(Parsed::Ipv6),
        _ => Err(DropReason::UnknownEthertype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn ipv4(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(ETH_P_IPV4);
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 10, 0, 0, 1, 198, 18, 0, 100]);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn mac_round_trips_and_rejects_junk() {
        let m: MacAddr = "02:AB:cd:0e:0f:10".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0xab, 0xcd, 0x0e, 0x0f, 0x10]));
        assert_eq!(m.to_string(), "02:ab:cd:0e:0f:10");
        assert_eq!("02-ab-cd-0e-0f-10".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "02:ab:cd:0e:0f",
            "02:ab:cd:0e:0f:10:11",
            "02:ab:cd:0e:0f:1g",
            "002:ab:cd:e:f:1",
            "02:ab:cd::0f:10",
            "+2:ab:cd:0e:0f:10",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!(!MacAddr::ZERO.is_unicast_host());
        assert!(m.is_unicast_host());
    }

    #[test]
    fn vlan_tags_are_skipped_up_to_two() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x08, 0x00]);
        let e = parse_eth(&f).unwrap();
        assert_eq!((e.l3_offset, e.ethertype, e.vlan_tags), (22, ETH_P_IPV4, 2));
        let mut deep = vec![0u8; 12];
        deep.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 8, 0]);
        assert_eq!(parse_eth(&deep), Err(DropReason::VlanTooDeep));
        assert_eq!(parse_eth(&f[..19]), Err(DropReason::TooShort));
        assert_eq!(parse_eth(&f[..13]), Err(DropReason::TooShort));
    }

    #[test]
    fn ipv4_ports_and_fragments() {
        let udp = ipv4(IPPROTO_UDP, 0, &[0x30, 0x39, 0, 53, 0, 8, 0, 0]);
        let Ok(Parsed::Ipv4(v)) = parse(&udp) else {
            panic!("udp not parsed")
        };
        assert_eq!(v.ports, Some((12345, 53)));
        assert_eq!(v.fragment, Fragment::Whole);
        assert_eq!(v.dst, Ipv4Addr::new(198, 18, 0, 100));

        let first = ipv4(IPPROTO_UDP, 0x2000, &[0, 1, 0, 2, 0, 0, 0, 0]);
        let Ok(Parsed::Ipv4(v)) = parse(&first) else {
            panic!("first fragment not parsed")
        };
        assert_eq!((v.fragment, v.ports), (Fragment::First, Some((1, 2))));

        let later = ipv4(IPPROTO_UDP, 3, &[1, 2, 3]);
        let Ok(Parsed::Ipv4(v)) = parse(&later) else {
            panic!("later fragment not parsed")
        };
        assert_eq!(
            (v.fragment, v.ports, v.fragment_offset),
            (Fragment::Later, None, 24)
        );

        let icmp = ipv4(1, 0, &[8, 0, 0, 0]);
        let Ok(Parsed::Ipv4(v)) = parse(&icmp) else {
            panic!("icmp not parsed")
        };
        assert_eq!(v.ports, None);
    }

    #[test]
    fn ipv4_errors() {
        let tcp_short = ipv4(IPPROTO_TCP, 0, &[0; 12]);
        assert_eq!(parse(&tcp_short), Err(DropReason::L4Truncated));
        let mut v6 = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        v6[14] = 0x65;
        assert_eq!(parse(&v6), Err(DropReason::Ipv4Malformed));
        let mut ihl = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        ihl[14] = 0x44;
        assert_eq!(parse(&ihl), Err(DropReason::Ipv4Malformed));
        let mut long = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        long[17] = 200;
        assert_eq!(parse(&long), Err(DropReason::Ipv4Truncated));
        let mut short_total = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        short_total[17] = 19;
        assert_eq!(parse(&short_total), Err(DropReason::Ipv4Malformed));
        let hdr_only = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        assert_eq!(parse(&hdr_only[..30]), Err(DropReason::Ipv4Truncated));
        let mut padded = ipv4(IPPROTO_UDP, 0, &[0; 8]);
        padded.resize(60, 0);
        assert!(matches!(parse(&padded), Ok(Parsed::Ipv4(_))));
        assert_eq!(parse(&eth(0x86dd)), Err(DropReason::Ipv6Truncated));
        assert_eq!(parse(&eth(0x88cc)), Err(DropReason::UnknownEthertype));
    }

    #[test]
    fn arp_fields_and_errors() {
        let mut f = eth(ETH_P_ARP);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 198, 18, 0, 1]);
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
        let Ok(Parsed::Arp(a)) = parse(&f) else {
            panic!("arp not parsed")
        };
        assert_eq!(a.oper, ARP_OP_REQUEST);
        assert_eq!(a.sender_mac, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(a.target_ip, Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(parse(&f[..41]), Err(DropReason::ArpMalformed));
        let mut ipx = f.clone();
        ipx[17] = 0x37;
        assert_eq!(parse(&ipx), Err(DropReason::ArpMalformed));
    }

    #[test]
    fn a_pure_syn_is_marked() {
        let syn_of = |proto, flags: u8| {
            let mut l4 = [0u8; 20];
            l4[13] = flags;
            match parse(&ipv4(proto, 0, &l4)) {
                Ok(Parsed::Ipv4(ip)) => ip.tcp_syn,
                other => panic!("{other:?}"),
            }
        };
        assert!(syn_of(IPPROTO_TCP, TCP_SYN));
        assert!(!syn_of(IPPROTO_TCP, TCP_SYN | TCP_ACK));
        assert!(!syn_of(IPPROTO_TCP, TCP_ACK));
        assert!(!syn_of(IPPROTO_UDP, TCP_SYN));
    }
}
