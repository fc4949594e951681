//! A worker's two rings on a real L2 segment (see `io_lab`): datagrams up to the MTU and
//! GSO datagrams of one flow arrive on different sockets, and must still leave the node
//! in the order the client sent them, with nothing lost at a modest rate.
//!
//! Runs as root only (prints why it skips otherwise).

mod io_lab;

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_lab::*;

/// `UDP_SEGMENT` (linux/udp.h): sends larger than this go out as one GSO datagram that
/// is cut into datagrams of this size only when it reaches the receiving host.
const UDP_SEGMENT: libc::c_int = 103;
const SEGMENT: usize = 1200;
const SEGMENTS: usize = 8;
const BURSTS: u32 = 300;

fn set_int(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) {
    // SAFETY: `v` is a live c_int and the length passed is its size; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt {level}/{name}");
}

/// A datagram (or a GSO segment) that starts with its sequence number.
fn datagram(seq: u32, len: usize) -> Vec<u8> {
    let mut d = vec![0x5a; len];
    d[..4].copy_from_slice(&seq.to_be_bytes());
    d
}

#[test]
fn small_and_gso_datagrams_of_one_flow_keep_their_order() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    let server = in_ns(&lab.ns("be"), || UdpSocket::bind(("0.0.0.0", UDP_PORT))).expect("bind");
    set_int(&server, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20);
    server
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let client = in_ns(&lab.ns("cl"), || UdpSocket::bind((CLIENT, 0))).expect("bind");
    client.connect((VIP, UDP_PORT)).expect("connect");
    set_int(&client, libc::SOL_UDP, UDP_SEGMENT, SEGMENT as libc::c_int);
    let mut buf = vec![0u8; 65536];
    // The client's kernel queues only a few datagrams while it resolves the VIP: resolve
    // it first.
    client.send(b"warm-up").expect("warm-up");
    let n = server.recv(&mut buf).expect("the warm-up datagram");
    assert_eq!(&buf[..n], b"warm-up");

    // Each burst: a small datagram, then one GSO send of several segments, sent back to
    // back so that both of the worker's rings often hold frames at once.
    let mut seq = 0u32;
    for burst in 0..BURSTS {
        client.send(&datagram(seq, 64)).expect("small datagram");
        seq += 1;
        let mut gso = Vec::with_capacity(SEGMENT * SEGMENTS);
        for _ in 0..SEGMENTS {
            gso.extend_from_slice(&datagram(seq, SEGMENT));
            seq += 1;
        }
        client.send(&gso).expect("GSO datagram");
        if burst % 20 == 19 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    let mut got = Vec::with_capacity(seq as usize);
    while got.len() < seq as usize {
        let Ok(n) = server.recv(&mut buf) else {
            break;
        };
        assert!(n >= 4, "a {n}-byte datagram");
        got.push(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
    }
    let overtaken = got.windows(2).filter(|w| w[1] <= w[0]).count();
    assert_eq!(
        overtaken,
        0,
        "datagrams out of order: {:?}",
        &got[..got.len().min(40)]
    );
    assert_eq!(got.len(), seq as usize, "every datagram arrived");

    // Both kinds took the node: single small frames and GSO frames forwarded whole.
    let (packets, bytes) = backend_counts(&node.shared, "udp");
    assert_eq!(
        packets,
        u64::from(1 + 2 * BURSTS),
        "the warm-up, then one small and one GSO frame per burst"
    );
    assert!(bytes > u64::from(BURSTS) * (SEGMENT * SEGMENTS) as u64);
    assert_no_io_drops(&node.shared);
}
