//! A measurement, not a check of speed: TCP upload throughput and short-request rate
//! through the VIP (via the datapath) against straight to the backend, interleaved in one
//! run on the `io_lab` segment, printed as ratios. It asserts only that every byte and
//! every request arrived. Ignored by default; run it optimised:
//!
//! `cargo test --release -p datapath --test io_throughput -- --ignored --nocapture`

mod io_lab;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use io_lab::*;

const UPLOAD: usize = 256 << 20;
const ROUNDS: usize = 3;
const REQUESTS: usize = 2000;

/// Serves until `stop`: a connection either uploads (first byte `U`: read to EOF, answer
/// the byte count) or asks (first byte `R`: answer 100 bytes per 100-byte request).
fn serve(listener: TcpListener, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::Relaxed) {
        let mut conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
        };
        std::thread::spawn(move || -> std::io::Result<()> {
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(WAIT))?;
            conn.set_nodelay(true)?;
            let mut kind = [0u8; 1];
            conn.read_exact(&mut kind)?;
            let mut buf = vec![0u8; 1 << 16];
            if kind[0] == b'U' {
                let mut total = 1u64;
                loop {
                    let n = conn.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                conn.write_all(&total.to_be_bytes())?;
            } else {
                let mut req = [0u8; 100];
                while conn.read_exact(&mut req).is_ok() {
                    conn.write_all(&[b'r'; 100])?;
                }
            }
            Ok(())
        });
    }
}

fn upload(ns: &str, to: Ipv4Addr, data: &[u8]) -> f64 {
    let addr = SocketAddr::from((to, TCP_PORT));
    let mut c = in_ns(ns, || TcpStream::connect_timeout(&addr, WAIT)).expect("connect");
    c.set_write_timeout(Some(WAIT)).expect("timeout");
    c.set_read_timeout(Some(WAIT)).expect("timeout");
    let t = Instant::now();
    c.write_all(b"U").expect("write");
    for chunk in data.chunks(1 << 20) {
        c.write_all(chunk).expect("upload");
    }
    c.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut got = [0u8; 8];
    c.read_exact(&mut got).expect("count");
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(
        u64::from_be_bytes(got),
        data.len() as u64 + 1,
        "every byte arrived"
    );
    data.len() as f64 * 8.0 / secs / 1e9
}

/// Requests per second, one fresh connection per 10 requests (a keep-alive HTTP client).
fn requests(ns: &str, to: Ipv4Addr) -> f64 {
    let addr = SocketAddr::from((to, TCP_PORT));
    let t = Instant::now();
    for _ in 0..REQUESTS / 10 {
        let mut c = in_ns(ns, || TcpStream::connect_timeout(&addr, WAIT)).expect("connect");
        c.set_nodelay(true).expect("nodelay");
        c.set_read_timeout(Some(WAIT)).expect("timeout");
        c.write_all(b"R").expect("write");
        let mut resp = [0u8; 100];
        for _ in 0..10 {
            c.write_all(&[b'q'; 100]).expect("request");
            c.read_exact(&mut resp).expect("response");
        }
    }
    REQUESTS as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
#[ignore = "a measurement; run with --release -- --ignored --nocapture"]
fn vip_versus_direct() {
    if !is_root() {
        return;
    }
    let lab = Lab::new();
    let backend = lab.iface("be");
    let node = start_node(&lab, backend.mac);
    node.shared.set_owner(true);
    let listener =
        in_ns(&lab.ns("be"), || TcpListener::bind(("0.0.0.0", TCP_PORT))).expect("listen");
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || serve(listener, stop))
    };
    let cl = lab.ns("cl");
    let data: Vec<u8> = (0..UPLOAD).map(|i| (i ^ (i >> 11)) as u8).collect();
    let (mut up_vip, mut up_direct, mut rq_vip, mut rq_direct) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        up_direct.push(upload(&cl, BACKEND, &data));
        up_vip.push(upload(&cl, VIP, &data));
        rq_direct.push(requests(&cl, BACKEND));
        rq_vip.push(requests(&cl, VIP));
    }
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server");
    let (uv, ud, rv, rd) = (
        median(up_vip),
        median(up_direct),
        median(rq_vip),
        median(rq_direct),
    );
    println!(
        "TCP upload: VIP {uv:.2} Gbit/s, direct {ud:.2} Gbit/s, ratio {:.2}",
        uv / ud
    );
    println!(
        "requests:   VIP {rv:.0}/s, direct {rd:.0}/s, ratio {:.2}",
        rv / rd
    );
    println!(
        "ring drops {}, tx errors {}",
        node.dp.ring_drops(),
        node.shared.drops.get(datapath::DropReason::TxError)
    );
    assert_no_io_drops(&node.shared);
}
