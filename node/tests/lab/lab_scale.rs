//! Many farms on one node (issue #20, docs/design.md#scale): 2,000 farms on the VIP forward
//! (a sample checked end to end), and setting one farm's backend off takes it out while
//! another farm's traffic goes on without a failure. Prints the start time, the node's
//! memory and how long the backend took to be out, as figures, not as pass/fail.

use crate::common::{SingleNode, can_run_lab, quick_get};
use lab::LabFarm;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const FILLER_BASE: u16 = 20_000;

/// Farms beside `web` and `echo`: 1,998, or `DSRLB_SCALE_FARMS` − 2 (up to 40,000 in all)
/// to measure a larger node by hand.
fn fillers() -> u16 {
    std::env::var("DSRLB_SCALE_FARMS")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .map_or(1_998, |n| n.clamp(3, 40_000) - 2)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn two_thousand_farms_forward_and_a_change_touches_one() {
    if !can_run_lab() {
        return;
    }
    let fillers = fillers();
    let mut farms = vec![
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]),
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]),
    ];
    farms.extend(
        (0..fillers).map(|i| LabFarm::new(&format!("f{i:04}"), "tcp", FILLER_BASE + i, &[0, 1, 2])),
    );
    let started = Instant::now();
    let s = SingleNode::start(3, 0, &farms);
    let up_after = started.elapsed();
    let vip = s.lab.vip();
    let client = s.lab.clients()[0].clone();
    eprintln!(
        "SCALE farms={} start_to_ready_ms={} rss_mib={:.1}",
        farms.len(),
        up_after.as_millis(),
        rss_kib(s.node.pid()) as f64 / 1024.0
    );

    // End to end: HTTP and UDP farms answer from every backend; a sample of the filler
    // farms, whose ports no backend listens on, is answered by a backend's RST (straight
    // to the client: DSR), which a farm the node did not forward would never get.
    let web = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let seen: BTreeSet<String> = client.run(|| {
        (0..60)
            .map(|i| quick_get(web).unwrap_or_else(|e| panic!("GET {i}: {e}")))
            .collect()
    });
    assert_eq!(seen.len(), 3, "every backend serves web: {seen:?}");
    let echo = SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    client.run(|| {
        for i in 0..10 {
            let r = lab::udp_request(echo, format!("ping {i}").as_bytes(), Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("udp {i}: {e}"));
            assert!(r.ends_with(&format!("ping {i}")), "{r:?}");
        }
    });
    let sample: Vec<u16> = (0..fillers).step_by(97).chain([fillers - 1]).collect();
    let refused = client.run(|| {
        sample
            .iter()
            .map(|&i| {
                let to = SocketAddr::from((vip, FILLER_BASE + i));
                match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
                    other => Err(format!("farm f{i:04} ({to}): {other:?}")),
                }
            })
            .collect::<Vec<_>>()
    });
    for r in &refused {
        assert!(r.is_ok(), "not answered by a backend: {r:?}");
    }

    // One backend of one farm off, while UDP to another farm runs: the UDP farm sees no
    // failure, and `web` stops sending new connections to b1.
    let token = s.lab.admin_token_file().expect("token").to_path_buf();
    let endpoint = format!("http://{}:{}", s.lab.nodes()[0].ip, lab::lbnode::ADMIN_PORT);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let udp = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            client.run(|| {
                let mut sent = 0u32;
                let mut failed = Vec::new();
                // Bounded: at most 20 s whatever happens to the test.
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed() < Duration::from_secs(20)
                {
                    if let Err(e) = lab::udp_request(echo, b"steady", Duration::from_secs(1)) {
                        failed.push(e.to_string());
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (sent, failed)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let args = lab::ctl::strings(&[
        "--endpoint",
        &endpoint,
        "--token-file",
        token.to_str().unwrap(),
        "backend",
        "set",
        "web",
        "b1",
        "--state",
        "off",
    ]);
    let t_off = Instant::now();
    lab::ctl::run_in(&client, &args).ok();
    let acked = t_off.elapsed();
    // Out: 30 new connections in a row reach other backends (bounded: 10 s).
    let out_after = client.run(|| {
        let mut streak = 0;
        while streak < 30 {
            assert!(
                t_off.elapsed() < Duration::from_secs(10),
                "b1 still takes new connections"
            );
            match quick_get(web) {
                Ok(b) if b != "b1" => streak += 1,
                _ => streak = 0,
            }
        }
        t_off.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = udp.join().expect("udp loop");
    eprintln!(
        "SCALE off_acked_ms={} web_out_after_ms={} (30 clean requests included) udp_sent={} udp_failed={}",
        acked.as_millis(),
        out_after.as_millis(),
        sent,
        failed.len()
    );
    assert!(sent > 50, "the UDP loop ran ({sent})");
    assert!(
        failed.is_empty(),
        "the other farm's traffic failed: {failed:?}"
    );
    let log = s.node.read_log();
    assert!(
        !log.contains("ERROR"),
        "{}",
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}
