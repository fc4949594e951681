//! Frames and tables shared by the datapath integration tests.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmSpec, ForwardingTable, MacAddr, Protocol,
};
use etherparse::PacketBuilder;

pub const OWN: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
pub const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
pub const MAGLEV: usize = 65_537;

pub fn backend_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 1, n])
}

pub fn backend(name: &str, n: u8) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        ip: Ipv4Addr::new(198, 18, 1, n).into(),
        mac: Some(backend_mac(n)),
        weight: 1,
        state: BackendState::Up,
        healthy: true,
    }
}

/// An IPv6 backend (2001:db8:0:2::`n`), for a farm on [`VIP6`].
pub fn backend6(name: &str, n: u8) -> BackendSpec {
    BackendSpec {
        ip: Ipv6Addr::new(0x2001, 0xdb8, 0, 2, 0, 0, 0, u16::from(n)).into(),
        ..backend(name, n)
    }
}

pub fn farm(name: &str, protocol: Protocol, port: u16, backends: Vec<BackendSpec>) -> FarmSpec {
    FarmSpec {
        name: name.into(),
        vip: VIP.into(),
        protocol,
        ports: port..=port,
        backends,
        persistence: None,
        hash: datapath::FlowHash::default(),
        limits: datapath::FarmLimits::default(),
        maglev_size: MAGLEV,
    }
}

/// A TCP farm on port 80 and a UDP farm on port 53, three backends each.
pub fn web_and_dns() -> Vec<FarmSpec> {
    vec![
        farm(
            "web",
            Protocol::Tcp,
            80,
            vec![backend("a", 1), backend("b", 2), backend("c", 3)],
        ),
        farm(
            "dns",
            Protocol::Udp,
            53,
            vec![backend("x", 11), backend("y", 12), backend("z", 13)],
        ),
    ]
}

pub fn build(farms: &[FarmSpec], registry: &CounterRegistry) -> ForwardingTable {
    ForwardingTable::build(OWN, farms, registry).expect("valid specs")
}

pub fn tcp(src: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, OWN.0)
        .ipv4(src.octets(), VIP.octets(), 64)
        .tcp(sport, dport, 1234, 512);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("tcp frame");
    out
}

/// A connection's first segment: SYN set, ACK clear.
pub fn tcp_syn(src: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, OWN.0)
        .ipv4(src.octets(), VIP.octets(), 64)
        .tcp(sport, dport, 1234, 512)
        .syn();
    let mut out = Vec::with_capacity(b.size(0));
    b.write(&mut out, &[]).expect("syn frame");
    out
}

pub fn udp(src: Ipv4Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, OWN.0)
        .ipv4(src.octets(), VIP.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("udp frame");
    out
}

pub fn tcp6(src: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, OWN.0)
        .ipv6(src.octets(), VIP6.octets(), 64)
        .tcp(sport, dport, 1234, 512);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("tcp6 frame");
    out
}

pub fn udp6(src: Ipv6Addr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT.0, OWN.0)
        .ipv6(src.octets(), VIP6.octets(), 64)
        .udp(sport, dport);
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).expect("udp6 frame");
    out
}

/// Inserts extension header `ext` (its Next Header byte is filled in) of kind `next` right
/// after the fixed header of an untagged IPv6 frame, fixing the payload length.
pub fn with_ext6(frame: &[u8], next: u8, ext: &[u8]) -> Vec<u8> {
    let mut f = frame[..54].to_vec();
    let upper = f[20];
    f[20] = next;
    let mut e = ext.to_vec();
    e[0] = upper;
    f.extend_from_slice(&e);
    f.extend_from_slice(&frame[54..]);
    let len = u16::from_be_bytes([frame[18], frame[19]]) + ext.len() as u16;
    f[18..20].copy_from_slice(&len.to_be_bytes());
    f
}

/// The client's Neighbor Solicitation for `target`, to its solicited-node group.
pub fn ns_for(target: Ipv6Addr) -> Vec<u8> {
    datapath::neighbor_solicitation(CLIENT, CLIENT_IP6, target)
}

/// Sets the IPv4 flags/fragment-offset field of an untagged frame (header checksum is
/// left stale: the datapath does not read it).
pub fn set_frag(frame: &mut [u8], more: bool, offset_units: u16) {
    let v = (u16::from(more) << 13) | (offset_units & 0x1fff);
    frame[20..22].copy_from_slice(&v.to_be_bytes());
}

/// The client's ARP request for `target`, padded to 60 bytes like a real NIC frame.
pub fn arp_request(target: Ipv4Addr) -> Vec<u8> {
    datapath::arp_request(CLIENT, CLIENT_IP, target)
}

/// The i-th client address of a deterministic sequence inside 198.18.0.0/15.
pub fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from_bits(0xc612_0000 | (i & 0x1_ffff))
}

/// A small deterministic generator (xorshift64*), so tests need no RNG crate.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

pub fn dst_mac(frame: &[u8]) -> MacAddr {
    MacAddr(frame[0..6].try_into().expect("6 bytes"))
}
