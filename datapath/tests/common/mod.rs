//! Frames and tables shared by the datapath integration tests.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use datapath::{
    BackendSpec, BackendState, CounterRegistry, FarmSpec, ForwardingTable, MacAddr, Protocol,
};
use etherparse::PacketBuilder;

pub const OWN: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
pub const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const MAGLEV: usize = 65_537;

pub fn backend_mac(n: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 1, n])
}

pub fn backend(name: &str, n: u8) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        ip: Ipv4Addr::new(198, 18, 1, n),
        mac: Some(backend_mac(n)),
        weight: 1,
        state: BackendState::Up,
        healthy: true,
    }
}

pub fn farm(name: &str, protocol: Protocol, port: u16, backends: Vec<BackendSpec>) -> FarmSpec {
    FarmSpec {
        name: name.into(),
        vip: VIP,
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
