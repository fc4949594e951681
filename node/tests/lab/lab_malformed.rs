//! Malformed frames sent from the client crash nothing, are counted by reason, and good
//! traffic in the same second is unaffected.
//!
//! Frames that are not ARP for a VIP or IPv4 to a VIP (unknown ethertypes, ARP for other
//! addresses, runts) are discarded by the kernel's BPF filter before user space, by design;
//! the test sends them too, to show they disturb nothing.

use crate::common::{SingleNode, can_run_lab};
use etherparse::PacketBuilder;
use lab::{LabFarm, Metrics, inject, scrape};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

const COPIES: usize = 50;

fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(40000, port);
    let payload = b"malformed-test";
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).expect("frame builds");
    out
}

fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, port: u16) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(40000, port, 1, 1024)
        .syn();
    let mut out = Vec::with_capacity(builder.size(0));
    builder.write(&mut out, &[]).expect("frame builds");
    out
}

/// Sets the IPv4 header checksum after a mutation, so only the intended fault remains.
fn fix_ip_checksum(f: &mut [u8]) {
    let ihl = usize::from(f[14] & 0x0f) * 4;
    if ihl < 20 || f.len() < 14 + ihl {
        return;
    }
    f[24] = 0;
    f[25] = 0;
    let sum: u32 = f[14..14 + ihl]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let folded = (folded & 0xffff) + (folded >> 16);
    f[24..26].copy_from_slice(&(!(folded as u16)).to_be_bytes());
}

fn arp(src_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

fn after_drops(m: &Metrics) -> Vec<(String, f64)> {
    datapath::DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), drops(m, r.as_str())))
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

fn drops(m: &Metrics, reason: &str) -> f64 {
    m.get("dsrlb_drops_total", &[("reason", reason)])
}

#[test]
fn malformed_frames_are_counted_and_good_traffic_goes_on() {
    if !can_run_lab() {
        return;
    }
    let farms = [
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1]),
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1]),
        LabFarm::new("echo2", "udp", 9999, &[0, 1]),
    ];
    let s = SingleNode::start(2, 0, &farms);
    let vip = s.lab.vip();
    let node = s.lab.nodes()[0].clone();
    let client = s.lab.clients()[0].clone();
    let (cmac, nmac) = (client.mac.0, node.mac.0);

    // (expected reason, frame)
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut bad_ihl = udp(cmac, nmac, client.ip, vip, 5353);
    bad_ihl[14] = 0x43;
    cases.push(("ipv4_malformed", bad_ihl));
    let mut v6_in_v4 = udp(cmac, nmac, client.ip, vip, 5353);
    v6_in_v4[14] = 0x65;
    cases.push(("ipv4_malformed", v6_in_v4));
    let mut too_long = udp(cmac, nmac, client.ip, vip, 5353);
    too_long[16..18].copy_from_slice(&1400u16.to_be_bytes());
    fix_ip_checksum(&mut too_long);
    cases.push(("ipv4_truncated", too_long));
    let mut cut_tcp = tcp(cmac, nmac, client.ip, vip, 80);
    cut_tcp[16..18].copy_from_slice(&30u16.to_be_bytes());
    fix_ip_checksum(&mut cut_tcp);
    cut_tcp.truncate(14 + 30);
    cases.push(("l4_truncated", cut_tcp));
    let mut icmp = udp(cmac, nmac, client.ip, vip, 5353);
    icmp[23] = 1;
    fix_ip_checksum(&mut icmp);
    cases.push(("unsupported_protocol", icmp));
    cases.push(("no_farm", tcp(cmac, nmac, client.ip, vip, 81)));
    let mut later_fragment = udp(cmac, nmac, client.ip, vip, 5353);
    later_fragment[20..22].copy_from_slice(&100u16.to_be_bytes());
    fix_ip_checksum(&mut later_fragment);
    cases.push(("fragment_ambiguous", later_fragment));
    let mut bad_arp = arp(cmac, client.ip, vip);
    bad_arp[19] = 6; // protocol address length 6: the addresses no longer line up
    cases.push(("arp_malformed", bad_arp));
    // Filtered in the kernel: counted nowhere, harmless.
    let mut unknown = udp(cmac, nmac, client.ip, vip, 5353);
    unknown[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let other_arp = arp(cmac, client.ip, Ipv4Addr::new(198, 18, 0, 222));
    let runt = udp(cmac, nmac, client.ip, vip, 5353)[..20].to_vec();
    let filtered = [unknown, other_arp, runt];

    let before = scrape(&node).unwrap();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let (report, sent) = std::thread::scope(|scope| {
        let load = scope.spawn(|| client.run(|| lab::load(addr, 2, Duration::from_secs(1), false)));
        let mut sent = 0;
        let malformed: Vec<Vec<u8>> = cases.iter().map(|(_, f)| f.clone()).collect();
        for _ in 0..COPIES {
            // Every malformed frame must reach the wire once per round: the counts below are
            // exact. What the kernel refused (buffer full under load) is sent again.
            let mut done = 0;
            let mut tries = 0;
            while done < malformed.len() {
                done += inject(&client.netns, &client.ifname, &malformed[done..]).unwrap();
                tries += 1;
                assert!(tries < 50, "the kernel keeps refusing frames");
            }
            sent += done;
            inject(&client.netns, &client.ifname, &filtered).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
        (load.join().expect("load thread"), sent)
    });
    assert_eq!(sent, COPIES * cases.len());
    assert_eq!(
        report.errors, 0,
        "good traffic failed: {:?}",
        report.first_error
    );
    assert!(report.requests > 10, "good traffic barely ran: {report:?}");

    let mut expected: Vec<(&str, usize)> = Vec::new();
    for (reason, _) in &cases {
        match expected.iter_mut().find(|(r, _)| r == reason) {
            Some((_, n)) => *n += COPIES,
            None => expected.push((reason, COPIES)),
        }
    }
    let counted = |m: &Metrics, reason: &str| (drops(m, reason) - drops(&before, reason)) as usize;
    // The workers may still be on the last frames: wait (bounded) until the counts settle.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut after = scrape(&node).unwrap();
    while expected.iter().any(|(r, n)| counted(&after, r) < *n)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
        after = scrape(&node).unwrap();
    }
    for (reason, n) in &expected {
        assert_eq!(
            counted(&after, reason),
            *n,
            "reason {reason}; all drops after: {:?}",
            after_drops(&after)
        );
    }
    assert!(
        s.node.log_tail(5).find("panicked").is_none(),
        "the node panicked: {}",
        s.node.log_tail(20)
    );
    // And it still serves.
    client
        .run(|| lab::http_get(addr, "/"))
        .expect("served after the malformed burst");
}
