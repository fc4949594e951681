//! The lab backend's UDP sink counts every datagram sent to it over the bridge, long ones
//! at their full length, and `GET /udp-sink` reports the counts. Needs root and iproute2;
//! otherwise the test says why it skips.

use crate::common::can_run_lab;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use lab::backend::{SinkCounts, UDP_SINK_PORT};
use lab::{
    BACKEND_HTTP_PORT, BACKEND_READY_TIMEOUT, BACKEND_UDP_PORT, BackendArgs, BackendServer, Lab,
    LabSpec, http_get,
};

#[test]
fn sink_reply_parses_in_any_order_and_rejects_garbage() {
    assert_eq!(
        SinkCounts::parse("datagrams=12 bytes=16800\n"),
        Some((12, 16_800))
    );
    assert_eq!(SinkCounts::parse("bytes=5 datagrams=1"), Some((1, 5)));
    assert_eq!(SinkCounts::parse("datagrams=1"), None);
    assert_eq!(SinkCounts::parse("datagrams=x bytes=2"), None);
    assert_eq!(SinkCounts::parse(""), None);
}

#[test]
fn udp_sink_counts_datagrams_and_bytes() {
    if !can_run_lab() {
        return;
    }
    let spec = LabSpec {
        nodes: 0,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    };
    let lab = Lab::build(&spec).expect("lab builds");
    let (b1, c1) = (lab.backends()[0].clone(), lab.clients()[0].clone());
    let args = BackendArgs {
        name: b1.name.clone(),
        tcp_port: BACKEND_HTTP_PORT,
        udp_port: BACKEND_UDP_PORT,
    };
    let server = BackendServer::start_in(&b1, &args).expect("in-process backend");
    lab.wait_backend_ready(0, BACKEND_READY_TIMEOUT)
        .expect("backend ready");
    assert_eq!(server.sink_addr().port(), UDP_SINK_PORT);

    let sink = b1.addr(UDP_SINK_PORT);
    let http = b1.addr(BACKEND_HTTP_PORT);
    let read = move || -> (u64, u64) {
        let reply = http_get(http, "/udp-sink").expect("GET /udp-sink");
        assert_eq!(reply.status, 200);
        SinkCounts::parse(&reply.body).expect("sink body parses")
    };
    assert_eq!(c1.run(read), (0, 0), "nothing counted before we send");

    // 100 ordinary datagrams and one longer than the sink's per-datagram slot (and than
    // the MTU, so it also arrives as fragments): counted at its full length.
    const SMALL: usize = 1400;
    const LONG: usize = 3000;
    let want = (101u64, (100 * SMALL + LONG) as u64);
    c1.run(move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.connect(sink).expect("connect");
        for i in 0..100u32 {
            sock.send(&[i as u8; SMALL]).expect("send small");
            // Paced so no socket buffer can overflow on a busy machine.
            if i % 10 == 9 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        sock.send(&[7u8; LONG]).expect("send long");
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = (0, 0);
    while Instant::now() < deadline {
        got = c1.run(read);
        if got == want {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got, want, "(datagrams, bytes) counted by the sink");
    assert_eq!(server.sink_counts(), want);
    server.stop().expect("backend stops cleanly");
}
