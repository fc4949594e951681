//! `Processor::process` end to end on frames built with etherparse: the Ethernet rewrite
//! leaves every other byte alone, ARP for VIPs is answered by the owner only, flows stick
//! to their backend across table rebuilds, and fragments of a datagram share a backend.

mod common;

use common::*;
use datapath::{
    BackendState, CounterRegistry, DropReason, ForwardingTable, MacAddr, Parsed, Processor,
    ProcessorConfig, Protocol, Verdict, parse,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

fn processor() -> Processor {
    Processor::new(0, &ProcessorConfig::default())
}

fn forward(p: &mut Processor, t: &ForwardingTable, frame: &mut [u8], now: u64) -> MacAddr {
    assert_eq!(p.process(t, true, frame, now), Verdict::Forward);
    dst_mac(frame)
}

#[test]
fn tcp_and_udp_rewrite_only_the_macs() {
    let reg = CounterRegistry::new(1);
    let t = build(&web_and_dns(), &reg);
    let mut p = processor();
    let web_macs = [backend_mac(1), backend_mac(2), backend_mac(3)];
    let dns_macs = [backend_mac(11), backend_mac(12), backend_mac(13)];
    let cases = [
        (
            tcp(CLIENT_IP, 40_000, 80, b"GET / HTTP/1.1\r\n\r\n"),
            &web_macs,
        ),
        (udp(CLIENT_IP, 40_001, 53, b"\x12\x34query"), &dns_macs),
    ];
    for (orig, macs) in cases {
        let mut f = orig.clone();
        assert_eq!(p.process(&t, true, &mut f, 1), Verdict::Forward);
        assert!(
            macs.contains(&dst_mac(&f)),
            "dst {} not a backend",
            dst_mac(&f)
        );
        assert_eq!(&f[6..12], &OWN.0, "src MAC must be ours");
        assert_eq!(
            &f[12..],
            &orig[12..],
            "ethertype, IP header and payload untouched"
        );

        let before = SlicedPacket::from_ethernet(&orig).expect("original parses");
        let after = SlicedPacket::from_ethernet(&f).expect("rewritten parses");
        let (Some(NetSlice::Ipv4(a)), Some(NetSlice::Ipv4(b))) = (&before.net, &after.net) else {
            panic!("not IPv4");
        };
        assert_eq!(a.header().slice(), b.header().slice());
        assert_eq!(a.payload().payload, b.payload().payload);
        match (&before.transport, &after.transport) {
            (Some(TransportSlice::Tcp(x)), Some(TransportSlice::Tcp(y))) => {
                assert_eq!(x.slice(), y.slice())
            }
            (Some(TransportSlice::Udp(x)), Some(TransportSlice::Udp(y))) => {
                assert_eq!(x.slice(), y.slice())
            }
            other => panic!("transport changed: {other:?}"),
        }
    }
    let stats = reg.snapshot();
    for f in &stats {
        assert_eq!(f.flows_new, 1, "farm {}", f.farm);
        assert_eq!(f.backends.iter().map(|b| b.packets).sum::<u64>(), 1);
    }
    let web = stats.iter().find(|f| f.farm == "web").expect("web stats");
    let bytes: u64 = web.backends.iter().map(|b| b.bytes).sum();
    let sent = tcp(CLIENT_IP, 40_000, 80, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(bytes, sent.len() as u64, "whole frames are counted");
}

#[test]
fn vlan_tags_are_kept() {
    let reg = CounterRegistry::new(1);
    let t = build(&web_and_dns(), &reg);
    let plain = tcp(CLIENT_IP, 40_000, 80, b"x");
    let mut tagged = plain[..12].to_vec();
    tagged.extend_from_slice(&[0x88, 0xa8, 0, 9, 0x81, 0x00, 0, 5]);
    tagged.extend_from_slice(&plain[12..]);
    let orig = tagged.clone();
    let mac = forward(&mut processor(), &t, &mut tagged, 1);
    assert_eq!(mac, forward(&mut processor(), &t, &mut plain.clone(), 1));
    assert_eq!(&tagged[12..], &orig[12..]);
}

#[test]
fn arp_for_a_vip_is_answered_by_the_owner_only() {
    let reg = CounterRegistry::new(1);
    let t = build(&web_and_dns(), &reg);
    let mut p = processor();
    let mut f = arp_request(VIP);
    assert_eq!(
        p.process(&t, false, &mut f, 1),
        Verdict::Drop(DropReason::NotOwner)
    );
    let Verdict::Reply { len } = p.process(&t, true, &mut f, 1) else {
        panic!("owner must reply");
    };
    assert_eq!(len, 60);
    assert_eq!(dst_mac(&f), CLIENT);
    assert_eq!(&f[6..12], &OWN.0);
    let Ok(Parsed::Arp(a)) = parse(&f[..len]) else {
        panic!("reply is not ARP")
    };
    assert_eq!((a.oper, a.sender_mac, a.sender_ip), (2, OWN, VIP));
    assert_eq!((a.target_mac, a.target_ip), (CLIENT, CLIENT_IP));
    // Our own reply seen again (e.g. looped back) is not answered.
    assert_eq!(
        p.process(&t, true, &mut f, 1),
        Verdict::Drop(DropReason::ArpNotRequest)
    );
    let mut other = arp_request(std::net::Ipv4Addr::new(198, 18, 0, 7));
    assert_eq!(
        p.process(&t, true, &mut other, 1),
        Verdict::Drop(DropReason::ArpNotForVip)
    );
    let mut garp = datapath::garp_request(CLIENT, VIP);
    assert_eq!(
        p.process(&t, true, &mut garp, 1),
        Verdict::Drop(DropReason::ArpNotRequest)
    );
}

#[test]
fn established_flows_survive_drain_and_weight_changes_but_not_off() {
    let reg = CounterRegistry::new(1);
    let mut specs = web_and_dns();
    let t1 = build(&specs, &reg);
    let mut p = processor();
    let frames: Vec<Vec<u8>> = (0..200).map(|i| tcp(client(i), 50_000, 80, b"")).collect();
    let first: Vec<MacAddr> = frames
        .iter()
        .map(|f| forward(&mut p, &t1, &mut f.clone(), 10))
        .collect();
    let victim = backend_mac(1);
    let on_victim = first.iter().filter(|&&m| m == victim).count();
    assert!(
        on_victim > 20,
        "backend a should carry about a third of 200 flows"
    );

    // Drain `a` and change weights: known flows keep their backend, new ones avoid `a`.
    specs[0].backends[0].state = BackendState::Drain;
    specs[0].backends[1].weight = 5;
    let t2 = build(&specs, &reg);
    for (f, m) in frames.iter().zip(&first) {
        assert_eq!(forward(&mut p, &t2, &mut f.clone(), 20), *m);
    }
    for i in 1000..1200 {
        let m = forward(&mut p, &t2, &mut tcp(client(i), 50_000, 80, b""), 20);
        assert_ne!(m, victim, "a draining backend takes no new flow");
    }
    // A fresh processor (another node after takeover) agrees with Maglev, not with history.
    let mut fresh = processor();
    for f in frames.iter().take(50) {
        assert_ne!(forward(&mut fresh, &t2, &mut f.clone(), 20), victim);
    }

    // Off: its flows move elsewhere.
    specs[0].backends[0].state = BackendState::Off;
    let t3 = build(&specs, &reg);
    for f in &frames {
        assert_ne!(forward(&mut p, &t3, &mut f.clone(), 30), victim);
    }
    // Idle flows are forgotten: after the idle time a flow is placed by Maglev again.
    let idle = ProcessorConfig::default().flow_idle_ns;
    let mut q = processor();
    let f = &frames[first
        .iter()
        .position(|&m| m == victim)
        .expect("a flow on a")];
    assert_eq!(forward(&mut q, &t1, &mut f.clone(), 1), victim);
    assert_eq!(
        forward(&mut q, &t2, &mut f.clone(), 2),
        victim,
        "sticky while fresh"
    );
    assert_ne!(
        forward(&mut q, &t2, &mut f.clone(), 3 + idle),
        victim,
        "idle → Maglev"
    );
}

/// A client port reused within the flow idle time: the new connection's SYN is scheduled
/// by Maglev over the backends that take new flows, not sent down the old flow's path to
/// a drained backend; the connection's later segments follow the SYN's choice.
#[test]
fn a_syn_is_a_new_connection_even_on_a_known_flow() {
    let reg = CounterRegistry::new(1);
    let mut specs = web_and_dns();
    let t1 = build(&specs, &reg);
    let mut p = processor();
    let victim = backend_mac(1);
    let i = (0..1000)
        .find(|&i| forward(&mut p, &t1, &mut tcp(client(i), 40_000, 80, b"x"), 10) == victim)
        .expect("some flow lands on backend a");

    specs[0].backends[0].state = BackendState::Drain;
    let t2 = build(&specs, &reg);
    // The old connection's segments keep their backend while it drains...
    assert_eq!(
        forward(&mut p, &t2, &mut tcp(client(i), 40_000, 80, b"x"), 20),
        victim
    );
    // ...a new connection on the same 5-tuple goes where Maglev puts it, as on a node that
    // never saw the old one.
    let syn = forward(&mut p, &t2, &mut tcp_syn(client(i), 40_000, 80), 30);
    assert_ne!(syn, victim, "a SYN must not reach a drained backend");
    assert_eq!(
        syn,
        forward(
            &mut processor(),
            &t2,
            &mut tcp_syn(client(i), 40_000, 80),
            30
        )
    );
    assert_eq!(
        forward(&mut p, &t2, &mut tcp(client(i), 40_000, 80, b""), 40),
        syn
    );
}

#[test]
fn unhealthy_or_macless_backends_lose_flows() {
    let reg = CounterRegistry::new(1);
    let mut specs = web_and_dns();
    let t1 = build(&specs, &reg);
    let mut p = processor();
    let frames: Vec<Vec<u8>> = (0..100).map(|i| tcp(client(i), 50_000, 80, b"")).collect();
    for f in &frames {
        forward(&mut p, &t1, &mut f.clone(), 1);
    }
    specs[0].backends[0].healthy = false;
    specs[0].backends[1].mac = None;
    let t2 = build(&specs, &reg);
    for f in &frames {
        assert_eq!(forward(&mut p, &t2, &mut f.clone(), 2), backend_mac(3));
    }
    specs[0].backends[2].state = BackendState::Off;
    let t3 = build(&specs, &reg);
    assert_eq!(
        p.process(&t3, true, &mut frames[0].clone(), 3),
        Verdict::Drop(DropReason::NoBackend)
    );
}

#[test]
fn fragments_of_a_datagram_share_a_backend() {
    let reg = CounterRegistry::new(1);
    let t = build(&web_and_dns(), &reg);
    let mut p = processor();
    for i in 0..100 {
        let mut first = udp(client(i), 40_000 + i as u16, 53, &[0u8; 64]);
        set_frag(&mut first, true, 0);
        let mut later = udp(client(i), 0, 0, &[0u8; 64]);
        set_frag(&mut later, false, 9);
        let a = forward(&mut p, &t, &mut first, 1);
        // A different worker with an empty flow table must agree (pure hash).
        let b = forward(&mut processor(), &t, &mut later, 1);
        assert_eq!(a, b, "datagram {i}");
    }
    // Two TCP farms on one VIP: fragments cannot tell them apart.
    let mut specs = web_and_dns();
    specs.push(farm("web-alt", Protocol::Tcp, 8080, vec![backend("q", 21)]));
    let t2 = build(&specs, &reg);
    let mut frag = tcp(CLIENT_IP, 40_000, 80, &[0u8; 32]);
    set_frag(&mut frag, true, 0);
    assert_eq!(
        p.process(&t2, true, &mut frag, 1),
        Verdict::Drop(DropReason::FragmentAmbiguous)
    );
    let mut whole = tcp(CLIENT_IP, 40_000, 8080, b"");
    assert_eq!(forward(&mut p, &t2, &mut whole, 1), backend_mac(21));
}

#[test]
fn counters_follow_the_worker_and_survive_rebuilds() {
    let reg = CounterRegistry::new(2);
    let specs = web_and_dns();
    let t1 = build(&specs, &reg);
    let mut w0 = Processor::new(0, &ProcessorConfig::default());
    let mut w1 = Processor::new(1, &ProcessorConfig::default());
    let f = tcp(CLIENT_IP, 40_000, 80, b"hello");
    assert_eq!(w0.process(&t1, true, &mut f.clone(), 1), Verdict::Forward);
    let t2 = build(&specs, &reg);
    assert_eq!(w0.process(&t2, true, &mut f.clone(), 2), Verdict::Forward);
    assert_eq!(w1.process(&t2, true, &mut f.clone(), 2), Verdict::Forward);
    let web = reg
        .snapshot()
        .into_iter()
        .find(|s| s.farm == "web")
        .expect("web");
    assert_eq!(
        web.flows_new, 2,
        "one per worker; the rebuild kept w0's flow"
    );
    let packets: u64 = web.backends.iter().map(|b| b.packets).sum();
    let bytes: u64 = web.backends.iter().map(|b| b.bytes).sum();
    assert_eq!((packets, bytes), (3, 3 * f.len() as u64));
}
