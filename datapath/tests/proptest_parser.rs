//! docs/design.md#inv-parser-total: no byte string makes the datapath panic, and every frame that
//! is not sent carries a drop reason. Arbitrary bytes and mutated valid frames go through
//! `Processor::process`; a table-driven test produces each reason on purpose.

mod common;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use common::*;
use datapath::{
    ARP_OP_REPLY, BackendState, CounterRegistry, DropReason, FarmSpec, ForwardingTable, Parsed,
    Processor, ProcessorConfig, Protocol, Verdict, parse, parse_na,
};
use proptest::prelude::*;

/// Counted by the I/O layer, never produced by `process`.
const IO_ONLY: [DropReason; 4] = [
    DropReason::Truncated,
    DropReason::TxError,
    DropReason::Oversize,
    DropReason::RingFull,
];

/// Reasons that depend on a farm's limits and the processor's history rather than on one
/// frame; `tests/limits.rs` produces each.
const LIMITS: [DropReason; 4] = [
    DropReason::RateLimited,
    DropReason::FarmRateLimited,
    DropReason::BackendFull,
    DropReason::TcpStrict,
];

fn specs() -> Vec<FarmSpec> {
    let mut s = web_and_dns();
    // A second TCP farm on the VIP, so fragments of TCP are ambiguous.
    s.push(farm("alt", Protocol::Tcp, 8080, vec![backend("q", 21)]));
    // A UDP farm on another VIP whose only backend is off: NoBackend.
    let mut dead = farm("dead", Protocol::Udp, 9, vec![backend("d", 31)]);
    dead.vip = Ipv4Addr::new(198, 18, 0, 101).into();
    dead.backends[0].state = BackendState::Off;
    s.push(dead);
    // IPv6: a TCP and a UDP farm on VIP6.
    for (name, protocol, port) in [("web6", Protocol::Tcp, 80), ("dns6", Protocol::Udp, 53)] {
        let mut f = farm(
            name,
            protocol,
            port,
            vec![backend6("s", 41), backend6("t", 42)],
        );
        f.vip = VIP6.into();
        s.push(f);
    }
    s
}

static TABLE: LazyLock<ForwardingTable> =
    LazyLock::new(|| build(&specs(), &CounterRegistry::new(1)));

fn backend_macs() -> Vec<datapath::MacAddr> {
    specs()
        .iter()
        .flat_map(|f| f.backends.iter().filter_map(|b| b.mac))
        .collect()
}

/// Runs one frame through a fresh processor and checks what each verdict promises.
fn check(orig: &[u8], owner: bool) -> Result<Verdict, TestCaseError> {
    let mut f = orig.to_vec();
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let v = p.process(&TABLE, owner, &mut f, 1);
    match v {
        Verdict::Forward => {
            prop_assert!(owner);
            prop_assert_eq!(f.len(), orig.len());
            prop_assert_eq!(&f[6..12], &OWN.0[..]);
            prop_assert_eq!(&f[12..], &orig[12..]);
            prop_assert!(backend_macs().contains(&dst_mac(&f)));
            let to_vip = match parse(orig) {
                Ok(Parsed::Ipv4(ip)) => TABLE.is_vip(ip.dst),
                Ok(Parsed::Ipv6(ip)) => TABLE.is_vip(ip.dst),
                _ => false,
            };
            prop_assert!(to_vip);
        }
        Verdict::Reply { len } => {
            prop_assert!(owner);
            prop_assert!((42..=f.len()).contains(&len));
            match parse(&f[..len]) {
                Ok(Parsed::Arp(a)) => {
                    prop_assert_eq!(a.oper, ARP_OP_REPLY);
                    prop_assert_eq!(a.sender_mac, OWN);
                    prop_assert!(TABLE.is_vip(a.sender_ip));
                }
                Ok(Parsed::Ipv6(ip)) => {
                    let na = parse_na(&f[..len], ip.l3_offset);
                    prop_assert!(na.is_some(), "reply does not parse as an advertisement");
                    let na = na.unwrap();
                    prop_assert!(TABLE.is_vip(na.target) && na.src == na.target);
                    prop_assert_eq!(na.tlladdr, Some(OWN));
                    prop_assert!(na.flags.override_);
                    prop_assert_eq!(&f[6..12], &OWN.0[..]);
                }
                other => prop_assert!(false, "reply does not parse as ARP or NA: {:?}", other),
            }
        }
        Verdict::Drop(r) => {
            prop_assert!(
                !IO_ONLY.contains(&r),
                "process produced io-only reason {r:?}"
            );
            if !owner && r != DropReason::NotOwner {
                // Checks that come before ownership give the same reason to the owner.
                let mut g = orig.to_vec();
                let as_owner = p.process(&TABLE, true, &mut g, 1);
                prop_assert_eq!(as_owner, Verdict::Drop(r));
            }
        }
    }
    Ok(v)
}

fn valid_frames() -> Vec<Vec<u8>> {
    let t = tcp(CLIENT_IP, 40_000, 80, b"payload");
    let mut tagged = t[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0, 5]);
    tagged.extend_from_slice(&t[12..]);
    let mut frag = udp(CLIENT_IP, 1, 53, &[7u8; 40]);
    set_frag(&mut frag, true, 0);
    let u6 = udp6(CLIENT_IP6, 40_000, 53, &[7u8; 40]);
    // Destination options (a PadN of 6 bytes), then UDP.
    let opts = with_ext6(&u6, 60, &[0, 0, 1, 4, 0, 0, 0, 0]);
    // A first fragment: offset 0, more fragments.
    let frag6 = with_ext6(&u6, 44, &[0, 0, 0, 1, 0, 0, 0, 9]);
    vec![
        t,
        tagged,
        udp(CLIENT_IP, 40_000, 53, b"q"),
        frag,
        arp_request(VIP),
        tcp6(CLIENT_IP6, 40_000, 80, b"payload"),
        u6,
        opts,
        frag6,
        ns_for(VIP6),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256), owner in any::<bool>()) {
        check(&bytes, owner)?;
    }

    #[test]
    fn mutated_valid_frames(
        which in 0usize..10,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        owner in any::<bool>(),
    ) {
        let mut f = valid_frames()[which].clone();
        for (at, val) in edits {
            let n = f.len();
            f[at % n] = val;
        }
        if let Some(c) = cut {
            f.truncate(c % (f.len() + 1));
        }
        f.extend_from_slice(&tail);
        check(&f, owner)?;
    }
}

#[test]
fn valid_frames_are_sent_when_owner() {
    for f in valid_frames() {
        let v = check(&f, true).expect("invariants hold");
        assert!(
            matches!(v, Verdict::Forward | Verdict::Reply { .. }),
            "{v:?}"
        );
    }
}

/// One frame per reason `process` can give, so each reason provably has a path.
#[test]
fn each_reason_has_a_frame() {
    let vip2 = Ipv4Addr::new(198, 18, 0, 101);
    let mut cases: Vec<(DropReason, Vec<u8>, bool)> = Vec::new();
    let base = tcp(CLIENT_IP, 40_000, 80, b"");
    cases.push((DropReason::TooShort, base[..13].to_vec(), true));
    let mut lldp = base.clone();
    lldp[12..14].copy_from_slice(&0x88ccu16.to_be_bytes());
    cases.push((DropReason::UnknownEthertype, lldp, true));
    // An IPv4 datagram labelled IPv6: version 4.
    let mut v6 = base.clone();
    v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
    cases.push((DropReason::Ipv6Malformed, v6, true));
    let t6 = tcp6(CLIENT_IP6, 40_000, 80, b"");
    cases.push((DropReason::Ipv6Truncated, t6[..14 + 39].to_vec(), true));
    cases.push((DropReason::Ipv6Truncated, t6[..t6.len() - 1].to_vec(), true));
    // A routing header with a segment left: the VIP is only a waypoint.
    let routed = with_ext6(&t6, 43, &[0, 0, 0, 1, 0, 0, 0, 0]);
    cases.push((DropReason::Ipv6ExtChain, routed, true));
    let mut long = t6.clone();
    for _ in 0..=datapath::MAX_IPV6_EXT {
        long = with_ext6(&long, 60, &[0, 0, 1, 4, 0, 0, 0, 0]);
    }
    cases.push((DropReason::Ipv6ExtChain, long, true));
    // A solicitation that did not come from the link (hop limit below 255).
    let mut hopped = ns_for(VIP6);
    hopped[14 + 7] = 64;
    cases.push((DropReason::NdpMalformed, hopped, true));
    let stranger6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9);
    cases.push((DropReason::NdpNotForVip, ns_for(stranger6), true));
    cases.push((
        DropReason::NdpNotSolicitation,
        datapath::unsolicited_na(CLIENT, CLIENT_IP6),
        true,
    ));
    let mut not_vip6 = t6.clone();
    not_vip6[14 + 24..14 + 40].copy_from_slice(&stranger6.octets());
    cases.push((DropReason::NotVip, not_vip6, true));
    cases.push((DropReason::NotOwner, t6.clone(), false));
    cases.push((DropReason::NotOwner, ns_for(VIP6), false));
    cases.push((DropReason::NoFarm, tcp6(CLIENT_IP6, 1, 81, b""), true));
    let mut deep = base[..12].to_vec();
    deep.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3]);
    deep.extend_from_slice(&base[12..]);
    cases.push((DropReason::VlanTooDeep, deep, true));
    let mut bad_arp = arp_request(VIP);
    bad_arp[14..16].copy_from_slice(&6u16.to_be_bytes());
    cases.push((DropReason::ArpMalformed, bad_arp, true));
    cases.push((
        DropReason::ArpNotForVip,
        arp_request(Ipv4Addr::new(198, 18, 0, 9)),
        true,
    ));
    cases.push((
        DropReason::ArpNotRequest,
        datapath::garp_reply(CLIENT, VIP),
        true,
    ));
    let mut bad_ver = base.clone();
    bad_ver[14] = 0x65;
    cases.push((DropReason::Ipv4Malformed, bad_ver, true));
    cases.push((DropReason::Ipv4Truncated, base[..30].to_vec(), true));
    let mut short_tcp = udp(CLIENT_IP, 1, 80, &[0u8; 4]);
    short_tcp[23] = 6; // protocol TCP with only 12 bytes of L4
    cases.push((DropReason::L4Truncated, short_tcp, true));
    cases.push((DropReason::NoFarm, tcp(CLIENT_IP, 1, 81, b""), true));
    let mut not_vip = base.clone();
    not_vip[30..34].copy_from_slice(&[198, 18, 0, 50]);
    cases.push((DropReason::NotVip, not_vip, true));
    cases.push((DropReason::NotOwner, base.clone(), false));
    let mut dead = udp(CLIENT_IP, 1, 9, b"");
    dead[30..34].copy_from_slice(&vip2.octets());
    cases.push((DropReason::NoBackend, dead, true));
    let mut frag = tcp(CLIENT_IP, 1, 80, &[0u8; 16]);
    set_frag(&mut frag, false, 3);
    cases.push((DropReason::FragmentAmbiguous, frag, true));
    let mut icmp = base.clone();
    icmp[23] = 1;
    cases.push((DropReason::UnsupportedProtocol, icmp, true));

    for (want, frame, owner) in &cases {
        let got = check(frame, *owner).expect("invariants hold");
        assert_eq!(got, Verdict::Drop(*want), "case {want:?}");
    }
    let covered: Vec<DropReason> = cases.iter().map(|c| c.0).collect();
    for r in DropReason::ALL {
        assert!(
            covered.contains(r) || IO_ONLY.contains(r) || LIMITS.contains(r),
            "no case for {r:?}"
        );
    }
}
