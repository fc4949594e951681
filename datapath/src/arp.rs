//! ARP frames: the builders the control plane sends (gratuitous ARP on takeover, requests
//! to resolve backends), the reader of replies, and the in-place reply the workers make
//! when a client asks for a VIP.

use std::net::Ipv4Addr;

use crate::packet::{
    ARP_LEN, ARP_OP_REPLY, ARP_OP_REQUEST, ETH_HLEN, ETH_P_ARP, ETH_P_IPV4, MacAddr, Parsed, parse,
};

/// Minimum Ethernet frame without FCS: built frames are padded to it so that links that
/// do not pad (veth) and links that do carry the same bytes.
pub const MIN_FRAME: usize = 60;

fn frame(
    eth_dst: MacAddr,
    src: MacAddr,
    oper: u16,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&ETH_P_IPV4.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&oper.to_be_bytes());
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha.0);
    f.extend_from_slice(&tpa.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// Gratuitous ARP, request form (RFC 5227 announcement): sender = target = VIP.
pub fn garp_request(own_mac: MacAddr, vip: Ipv4Addr) -> Vec<u8> {
    frame(
        MacAddr::BROADCAST,
        own_mac,
        ARP_OP_REQUEST,
        vip,
        MacAddr::ZERO,
        vip,
    )
}

/// Gratuitous ARP, reply form (as `arping -A`), for hosts that only learn from replies.
pub fn garp_reply(own_mac: MacAddr, vip: Ipv4Addr) -> Vec<u8> {
    frame(MacAddr::BROADCAST, own_mac, ARP_OP_REPLY, vip, own_mac, vip)
}

/// A broadcast request for `target`'s MAC.
pub fn arp_request(own_mac: MacAddr, own_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    frame(
        MacAddr::BROADCAST,
        own_mac,
        ARP_OP_REQUEST,
        own_ip,
        MacAddr::ZERO,
        target,
    )
}

/// The sender's (IP, MAC) of any well-formed ARP frame — reply, request or gratuitous —
/// when both could belong to a host (IP set, MAC unicast and non-zero).
pub fn parse_arp_reply(frame: &[u8]) -> Option<(Ipv4Addr, MacAddr)> {
    match parse(frame) {
        Ok(Parsed::Arp(a)) if !a.sender_ip.is_unspecified() && a.sender_mac.is_unicast_host() => {
            Some((a.sender_ip, a.sender_mac))
        }
        _ => None,
    }
}

/// The (target, sender MAC) of an ARP probe (RFC 5227: a request from sender address
/// 0.0.0.0, asking whether anyone holds the target).
pub fn parse_arp_probe(frame: &[u8]) -> Option<(Ipv4Addr, MacAddr)> {
    match parse(frame) {
        Ok(Parsed::Arp(a))
            if a.oper == ARP_OP_REQUEST
                && a.sender_ip.is_unspecified()
                && !a.target_ip.is_unspecified()
                && a.sender_mac.is_unicast_host() =>
        {
            Some((a.target_ip, a.sender_mac))
        }
        _ => None,
    }
}

/// Turns the ARP request at `l3` into our reply for `vip`, in place, and returns the
/// length of the frame to send. VLAN tags stay; trailing padding is zeroed and kept up to
/// [`MIN_FRAME`]. The caller has parsed the request (the body fits in `frame`).
pub(crate) fn reply_in_place(
    frame: &mut [u8],
    l3: usize,
    own_mac: MacAddr,
    vip: Ipv4Addr,
) -> usize {
    let end = l3 + ARP_LEN;
    if frame.len() < end || l3 < ETH_HLEN {
        return 0;
    }
    let (eth, rest) = frame.split_at_mut(l3);
    let body = &mut rest[..ARP_LEN];
    let mut requester = [0u8; 6];
    requester.copy_from_slice(&body[8..14]);
    let mut requester_ip = [0u8; 4];
    requester_ip.copy_from_slice(&body[14..18]);

    eth[0..6].copy_from_slice(&requester);
    eth[6..12].copy_from_slice(&own_mac.0);
    body[6..8].copy_from_slice(&ARP_OP_REPLY.to_be_bytes());
    body[8..14].copy_from_slice(&own_mac.0);
    body[14..18].copy_from_slice(&vip.octets());
    body[18..24].copy_from_slice(&requester);
    body[24..28].copy_from_slice(&requester_ip);

    let len = end.max(MIN_FRAME.min(frame.len()));
    frame[end..len].fill(0);
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::ArpView;

    const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xaa]);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    fn arp(f: &[u8]) -> ArpView {
        match parse(f) {
            Ok(Parsed::Arp(a)) => a,
            other => panic!("not ARP: {other:?}"),
        }
    }

    #[test]
    fn builders_produce_parseable_frames() {
        let g = garp_request(OWN, VIP);
        assert_eq!(g.len(), MIN_FRAME);
        assert_eq!(&g[0..6], &[0xff; 6]);
        let a = arp(&g);
        assert_eq!(
            (a.oper, a.sender_ip, a.target_ip),
            (ARP_OP_REQUEST, VIP, VIP)
        );
        let r = arp(&garp_reply(OWN, VIP));
        assert_eq!(
            (r.oper, r.sender_mac, r.target_mac),
            (ARP_OP_REPLY, OWN, OWN)
        );
        let own_ip = Ipv4Addr::new(198, 18, 0, 2);
        let q = arp(&arp_request(OWN, own_ip, Ipv4Addr::new(198, 18, 0, 9)));
        assert_eq!(q.sender_ip, own_ip);
        assert_eq!(q.target_ip, Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(parse_arp_reply(&garp_reply(OWN, VIP)), Some((VIP, OWN)));
        assert_eq!(parse_arp_reply(&garp_request(MacAddr::ZERO, VIP)), None);
        assert_eq!(parse_arp_reply(&[0u8; 3]), None);
        let probe = arp_request(OWN, Ipv4Addr::UNSPECIFIED, VIP);
        assert_eq!(parse_arp_probe(&probe), Some((VIP, OWN)));
        assert_eq!(parse_arp_reply(&probe), None, "a probe claims nothing");
        assert_eq!(parse_arp_probe(&garp_request(OWN, VIP)), None);
        assert_eq!(parse_arp_probe(&arp_request(OWN, own_ip, VIP)), None);
    }

    #[test]
    fn reply_in_place_swaps_roles_and_keeps_tags() {
        let client = MacAddr([2, 0, 0, 0, 0, 1]);
        let client_ip = Ipv4Addr::new(198, 18, 0, 1);
        let req = arp_request(client, client_ip, VIP);
        // Insert an 802.1Q tag after the MACs and keep the padding.
        let mut f = req[..12].to_vec();
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
        f.extend_from_slice(&req[12..]);
        let l3 = 18;
        let len = reply_in_place(&mut f, l3, OWN, VIP);
        assert_eq!(len, MIN_FRAME);
        assert_eq!(&f[0..6], &client.0);
        assert_eq!(&f[6..12], &OWN.0);
        assert_eq!(&f[12..16], &[0x81, 0x00, 0x00, 0x05]);
        let a = arp(&f[..len]);
        assert_eq!(a.oper, ARP_OP_REPLY);
        assert_eq!((a.sender_mac, a.sender_ip), (OWN, VIP));
        assert_eq!((a.target_mac, a.target_ip), (client, client_ip));

        let mut bare = arp_request(client, client_ip, VIP);
        bare.truncate(42);
        assert_eq!(reply_in_place(&mut bare, ETH_HLEN, OWN, VIP), 42);
        assert_eq!(reply_in_place(&mut [0u8; 20], ETH_HLEN, OWN, VIP), 0);
    }
}
