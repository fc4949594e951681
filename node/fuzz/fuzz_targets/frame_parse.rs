//! The frame parser on arbitrary bytes: it never panics, and what it reports is what the
//! frame holds, inside the frame.
#![no_main]

use datapath::{Fragment, Parsed, parse, parse_arp_reply};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

fn ip_at(frame: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(frame[at], frame[at + 1], frame[at + 2], frame[at + 3])
}

fuzz_target!(|frame: &[u8]| {
    match parse(frame) {
        Ok(Parsed::Ipv4(ip)) => {
            let l3 = ip.l3_offset;
            assert!((14..=22).contains(&l3), "l3 offset {l3}");
            assert!((20..=60).contains(&ip.header_len));
            assert!(l3 + ip.header_len <= frame.len(), "header past the frame");
            assert!(
                ip.total_len >= ip.header_len,
                "total length below the header"
            );
            assert!(l3 + ip.total_len <= frame.len(), "datagram past the frame");
            assert_eq!(ip.src, ip_at(frame, l3 + 12));
            assert_eq!(ip.dst, ip_at(frame, l3 + 16));
            assert_eq!(ip.protocol, frame[l3 + 9]);
            if let Some((sport, dport)) = ip.ports {
                assert!(ip.protocol == 6 || ip.protocol == 17);
                assert_ne!(ip.fragment, Fragment::Later, "ports of a later fragment");
                let l4 = l3 + ip.header_len;
                assert!(l4 + 4 <= frame.len(), "ports past the frame");
                assert_eq!(sport, u16::from_be_bytes([frame[l4], frame[l4 + 1]]));
                assert_eq!(dport, u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]));
            }
            assert!(
                !ip.tcp_syn || ip.protocol == 6,
                "a SYN of protocol {}",
                ip.protocol
            );
            assert_eq!(ip.fragment == Fragment::Later, ip.fragment_offset > 0);
        }
        Ok(Parsed::Ipv6(ip)) => {
            let l3 = ip.l3_offset;
            assert!(l3 + ip.total_len <= frame.len(), "datagram past the frame");
            assert!(
                (40..=ip.total_len).contains(&ip.header_len),
                "extension headers past the payload"
            );
            if let Some((sport, dport)) = ip.ports {
                let l4 = l3 + ip.header_len;
                assert_ne!(ip.fragment, Fragment::Later);
                assert_eq!(sport, u16::from_be_bytes([frame[l4], frame[l4 + 1]]));
                assert_eq!(dport, u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]));
            }
            assert_eq!(ip.fragment == Fragment::Later, ip.fragment_offset > 0);
        }
        Ok(Parsed::Arp(a)) => {
            assert!(a.l3_offset + 28 <= frame.len(), "ARP body past the frame");
            assert_eq!(a.sender_ip, ip_at(frame, a.l3_offset + 14));
            assert_eq!(a.target_ip, ip_at(frame, a.l3_offset + 24));
        }
        Err(_) => {}
    }
    if let Some((ip, mac)) = parse_arp_reply(frame) {
        assert!(!ip.is_unspecified() && mac.is_unicast_host());
    }
});
