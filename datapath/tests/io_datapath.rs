//! The AF_PACKET I/O on a real L2 segment (see `io_lab`): a `Datapath` on the node's
//! interface between real kernels at the client and the backend — ARP ownership, the UDP
//! rewrite, a TCP stream with offloads, VLAN tags, and backend MAC learning.
//!
//! Runs as root only (prints why it skips otherwise).

mod io_lab;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use datapath::{DropReason, ForwardingTable, MacResolver, local_ipv4_addresses};
use io_lab::*;
use socket2::SockFilter;

#[test]
fn arp_for_the_vip_is_answered_only_by_the_owner() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    let client = lab.iface("cl");
    let resolver = in_ns(&lab.ns("cl"), || {
        MacResolver::start_with(&client, CLIENT, Duration::from_millis(200))
    })
    .expect("resolver starts");

    resolver.set_targets(vec![VIP.into()]);
    // The datapath sees the requests and refuses them while not the owner.
    wait_for("refused ARP requests", || {
        (node.shared.drops.get(DropReason::NotOwner) >= 2).then_some(())
    });
    assert_eq!(
        resolver.learned(),
        vec![],
        "nobody may answer for the VIP before ownership"
    );

    node.shared.set_owner(true);
    let learned = wait_for("an ARP reply for the VIP", || {
        let l = resolver.learned();
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(learned, vec![(IpAddr::V4(VIP), node.mac)]);
    assert!(resolver.stats().requests_sent >= 2);
    assert_no_io_drops(&node.shared);
}

#[test]
fn resolver_learns_backend_macs_and_local_addresses_are_listed() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = lab.iface("lb");
    assert_eq!(node.primary_ipv4(), Some(NODE));
    assert!(node.up && node.running && node.mtu == 1500);
    assert!(node.mac.is_unicast_host());
    let locals = in_ns(&lab.ns("lb"), local_ipv4_addresses).expect("addresses");
    assert!(locals.contains(&NODE) && locals.contains(&Ipv4Addr::LOCALHOST));
    assert!(!locals.contains(&VIP));
    let be_locals = in_ns(&lab.ns("be"), local_ipv4_addresses).expect("addresses");
    assert!(be_locals.contains(&VIP));

    let resolver = in_ns(&lab.ns("lb"), || {
        MacResolver::start_with(&node, NODE, Duration::from_millis(200))
    })
    .expect("resolver starts");
    let unknown = Ipv4Addr::new(198, 18, 0, 77);
    resolver.set_targets(vec![BACKEND.into(), unknown.into()]);
    let learned = wait_for("the backend's MAC", || {
        let l = resolver.learned();
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(learned, vec![(IpAddr::V4(BACKEND), backend.mac)]);
    resolver.set_targets(vec![unknown.into()]);
    assert_eq!(resolver.learned(), vec![], "a dropped target is forgotten");
    resolver.stop();
}

#[test]
fn udp_to_the_vip_reaches_the_backend_with_only_the_macs_rewritten() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    let dev = lab.dev();
    let (server, tap) = in_ns(&lab.ns("be"), || {
        (
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind"),
            raw_socket(&dev, &any_ipv4()),
        )
    });
    server.set_read_timeout(Some(WAIT)).expect("timeout");
    let client = in_ns(&lab.ns("cl"), || UdpSocket::bind((CLIENT, 0))).expect("bind");

    let payload = b"dsrlb says hello over DSR";
    client.send_to(payload, (VIP, UDP_PORT)).expect("send");
    let mut buf = [0u8; 256];
    let (n, from) = server
        .recv_from(&mut buf)
        .expect("the backend receives the datagram");
    assert_eq!(&buf[..n], payload);
    assert_eq!(from.ip(), CLIENT);

    let frame = read_until(&tap, |f| udp_to_vip(f, payload).then(|| f.to_vec()))
        .expect("frame seen on the backend");
    assert_eq!(&frame[0..6], &backend.mac.0, "dst MAC = backend's");
    assert_eq!(&frame[6..12], &node.mac.0, "src MAC = node's");
    assert_eq!(frame[22], 64, "TTL untouched: not routed");
    assert_eq!(&frame[26..30], &CLIENT.octets(), "source address untouched");

    assert_eq!(
        backend_counts(&node.shared, "udp").0,
        1,
        "forwarded exactly once"
    );
    assert_no_io_drops(&node.shared);
}

#[test]
fn tcp_stream_with_default_offloads_arrives_intact() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);

    let listener =
        in_ns(&lab.ns("be"), || TcpListener::bind(("0.0.0.0", TCP_PORT))).expect("listen");
    let server = std::thread::spawn(move || -> std::io::Result<(u64, u64)> {
        listener.set_nonblocking(true)?;
        let deadline = Instant::now() + WAIT;
        let mut conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(WAIT))?;
        let (mut h, mut total) = (FNV_SEED, 0u64);
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = conn.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h = fnv(h, &buf[..n]);
            total += n as u64;
        }
        conn.write_all(&h.to_be_bytes())?;
        conn.write_all(&total.to_be_bytes())?;
        Ok((h, total))
    });

    let addr = SocketAddr::from((VIP, TCP_PORT));
    let mut conn = in_ns(&lab.ns("cl"), || TcpStream::connect_timeout(&addr, WAIT))
        .expect("connect through the VIP");
    conn.set_write_timeout(Some(WAIT)).expect("timeout");
    conn.set_read_timeout(Some(WAIT)).expect("timeout");
    let data: Vec<u8> = (0..16usize << 20)
        .map(|i| (i ^ (i >> 9) ^ (i >> 17)) as u8)
        .collect();
    for chunk in data.chunks(256 << 10) {
        conn.write_all(chunk).expect("upload");
    }
    conn.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut answer = [0u8; 16];
    conn.read_exact(&mut answer).expect("the backend's digest");
    let (h, total) = server.join().expect("server thread").expect("server");
    assert_eq!(total, data.len() as u64, "every byte arrived");
    assert_eq!(h, fnv(FNV_SEED, &data), "bytes intact");
    assert_eq!(answer[..8], h.to_be_bytes());

    let (packets, bytes) = backend_counts(&node.shared, "tcp");
    assert!(packets > 0);
    if cfg_io_is_xdp() {
        // XDP on a veth takes GSO away from its peer: the frames arrive segmented (with
        // partial checksums, which reached the backend completed: every byte arrived).
        assert!(
            bytes / packets <= 1514,
            "{bytes} bytes in {packets} frames: a GSO frame through XDP?"
        );
    } else {
        // The sender's kernel handed over GSO frames larger than the MTU; they were
        // forwarded whole and segmented (and checksummed) by the kernel on the way out.
        assert!(
            bytes / packets > 1514,
            "{bytes} bytes in {packets} frames: no GSO frame forwarded"
        );
    }
    assert_no_io_drops(&node.shared);
}

#[test]
fn vlan_tags_the_kernel_strips_are_put_back() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let client = lab.iface("cl");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    let dev = lab.dev();
    const VID: u16 = 100;

    // Client → VIP ARP request on VLAN 100: the reply must come back on VLAN 100.
    let (cl_tx, cl_rx) = in_ns(&lab.ns("cl"), || {
        (
            raw_socket(&dev, &[SockFilter::new(0x06, 0, 0, 0)]),
            raw_socket(&dev, &tagged(VID.into(), 0x0806)),
        )
    });
    let req = datapath::arp_request(client.mac, CLIENT, VIP);
    let mut tagged_req = req[..12].to_vec();
    tagged_req.extend_from_slice(&[0x81, 0x00, 0, VID as u8]);
    tagged_req.extend_from_slice(&req[12..]);
    cl_tx.send(&tagged_req).expect("send tagged ARP");
    let reply = read_until(&cl_rx, |f| {
        datapath::parse_arp_reply(f)
            .filter(|(ip, _)| *ip == VIP)
            .map(|r| (r, f[0..6].to_vec()))
    });
    let ((_, mac), dst) = reply.expect("a tagged ARP reply");
    assert_eq!(mac, node.mac);
    assert_eq!(dst, client.mac.0.to_vec());

    // A tagged UDP datagram to the VIP is forwarded with its tag.
    let be_rx = in_ns(&lab.ns("be"), || {
        raw_socket(&dev, &tagged(VID.into(), 0x0800))
    });
    let payload = b"tagged datagram";
    let builder = etherparse::PacketBuilder::ethernet2(client.mac.0, node.mac.0)
        .single_vlan(etherparse::VlanId::try_new(VID).expect("vid"))
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .udp(40000, UDP_PORT);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, payload).expect("build");
    cl_tx.send(&frame).expect("send tagged UDP");
    let seen = read_until(&be_rx, |f| udp_to_vip(f, payload).then(|| f.to_vec()))
        .expect("the tagged frame reaches the backend's segment");
    assert_eq!(&seen[0..6], &backend.mac.0);
    assert_eq!(&seen[6..12], &node.mac.0);
    assert_eq!(backend_counts(&node.shared, "udp").0, 1);
    assert_no_io_drops(&node.shared);
}

#[test]
fn gratuitous_arp_announces_the_vip_to_the_segment() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let client = lab.iface("cl");
    let node = lab.iface("lb");
    let listener = in_ns(&lab.ns("cl"), || {
        MacResolver::start_with(&client, CLIENT, Duration::from_millis(200))
    })
    .expect("client resolver");
    listener.set_targets(vec![VIP.into()]);
    // No datapath runs and the backend never claims the VIP: nobody answers the requests.
    wait_for("a few unanswered requests", || {
        (listener.stats().requests_sent >= 2).then_some(())
    });
    assert_eq!(listener.learned(), vec![]);

    let announcer =
        in_ns(&lab.ns("lb"), || MacResolver::start(&node, NODE)).expect("node resolver");
    announcer.send_garp(&[VIP.into()], 3, Duration::from_millis(50));
    let learned = wait_for("the announcement", || {
        let l = listener.learned();
        (!l.is_empty()).then_some(l)
    });
    assert_eq!(learned, vec![(IpAddr::V4(VIP), node.mac)]);
    wait_for("all rounds sent", || {
        (announcer.stats().garps_sent == 6).then_some(())
    });
    assert_eq!(announcer.stats().send_errors, 0);
}

/// Every frame of a burst is handled without waiting for the next one: after each burst the
/// counters must reach the frames sent while nothing else arrives. (A worker that left the
/// tail of a burst in its ring until more traffic came would fail here.)
#[test]
fn each_burst_is_handled_in_full_with_no_traffic_after_it() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    // Sources on many ports so the fanout hash spreads the bursts over both workers.
    let clients: Vec<UdpSocket> = in_ns(&lab.ns("cl"), || {
        (0..16)
            .map(|_| UdpSocket::bind((CLIENT, 0)).expect("bind"))
            .collect()
    });
    let mut sent = 0u64;
    for round in 0..40 {
        for (i, c) in clients.iter().enumerate() {
            if (round + i) % 3 == 0 {
                c.send_to(b"burst", (VIP, UDP_PORT)).expect("send");
                sent += 1;
            }
        }
        // Generous for a loaded machine, far below any "wait for the next burst" effect.
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = backend_counts(&node.shared, "udp").0;
        while got < sent && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            got = backend_counts(&node.shared, "udp").0;
        }
        assert_eq!(
            got, sent,
            "round {round}: frames left unhandled after the burst"
        );
    }
    assert_no_io_drops(&node.shared);
}

/// A VIP published while the workers sit idle in `poll` is admitted by their kernel
/// filters before `publish` returns: the very first datagram sent afterwards gets through. With filters re-attached by each worker on its
/// next wake-up, this datagram was dropped by the kernel, uncounted, for up to 100 ms.
#[test]
fn a_newly_published_vip_is_received_at_once() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    let iface = lab.iface("lb");
    // No ARP on the way: the datagram below is the client's only frame, so nothing (no ARP
    // retry) could make up for it being filtered out.
    let mac = iface.mac.0.map(|b| format!("{b:02x}")).join(":");
    sh(&[
        "ip",
        "-n",
        &lab.ns("cl"),
        "neigh",
        "replace",
        &VIP.to_string(),
        "lladdr",
        &mac,
        "dev",
        &lab.dev(),
        "nud",
        "permanent",
    ]);
    // Start from a table without the VIP and let the workers go idle.
    node.shared.publish(ForwardingTable::empty(iface.mac));
    std::thread::sleep(Duration::from_millis(300));
    let server = in_ns(&lab.ns("be"), || {
        UdpSocket::bind(("0.0.0.0", UDP_PORT)).expect("bind")
    });
    server.set_read_timeout(Some(WAIT)).expect("timeout");
    let client = in_ns(&lab.ns("cl"), || UdpSocket::bind((CLIENT, 0))).expect("bind");

    node.shared
        .publish(lab_table(&node.shared, iface.mac, backend.mac));
    client
        .send_to(b"first", (VIP, UDP_PORT))
        .expect("send right after publish");
    let mut buf = [0u8; 64];
    let (n, _) = server
        .recv_from(&mut buf)
        .expect("the first datagram after publish reaches the backend");
    assert_eq!(&buf[..n], b"first");
    assert_eq!(backend_counts(&node.shared, "udp").0, 1);
    assert_no_io_drops(&node.shared);
}
