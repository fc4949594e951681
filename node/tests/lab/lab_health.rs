//! TCP health checks: a backend whose server stops is out within fall × interval while
//! requests keep succeeding on the others; started again, it is back after rise × interval.

use crate::common::{SingleNode, can_run_lab, dsrlb};
use lab::{LabFarm, scrape};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 3;

fn backend_up(s: &SingleNode, name: &str) -> f64 {
    scrape(&s.lab.nodes()[0])
        .expect("metrics")
        .get("dsrlb_backend_up", &[("farm", "web"), ("backend", name)])
}

/// Polls until `backend_up` is `want`, returning how long that took; bounded by `limit`.
fn wait_state(s: &SingleNode, name: &str, want: f64, limit: Duration) -> Duration {
    let start = Instant::now();
    while backend_up(s, name) != want {
        assert!(
            start.elapsed() < limit,
            "{name} not {want} after {limit:?}: {}",
            s.node.log_tail(10)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn a_stopped_backend_leaves_and_returns() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm {
        check: Some((INTERVAL_MS, RISE, FALL)),
        ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2])
    };
    let mut s = SingleNode::start(3, 0, &[web]);
    let addr = SocketAddr::from((s.lab.vip(), lab::BACKEND_HTTP_PORT));
    let client = s.lab.clients()[0].clone();

    s.lab.stop_backend(1).unwrap();
    // One interval of slack for the check already in flight, one for the poll.
    let limit = Duration::from_millis(INTERVAL_MS * (u64::from(FALL) + 2));
    let took = wait_state(&s, "b2", 0.0, limit + Duration::from_millis(500));
    eprintln!("b2 out after {took:?} (fall {FALL} × {INTERVAL_MS} ms)");

    let served = client.run(|| {
        (0..100)
            .map(|i| {
                lab::http_get(addr, "/")
                    .unwrap_or_else(|e| panic!("request {i} with b2 down: {e}"))
                    .backend()
                    .unwrap_or("?")
                    .to_string()
            })
            .collect::<Vec<_>>()
    });
    assert!(!served.iter().any(|b| b == "b2"), "b2 served while down");
    assert!(served.iter().any(|b| b == "b1") && served.iter().any(|b| b == "b3"));

    s.lab.start_backend(1, dsrlb()).unwrap();
    let limit = Duration::from_millis(INTERVAL_MS * (u64::from(RISE) + 2));
    let took = wait_state(&s, "b2", 1.0, limit + Duration::from_millis(500));
    eprintln!("b2 back after {took:?} (rise {RISE} × {INTERVAL_MS} ms)");
    let served = client.run(|| {
        (0..100)
            .filter_map(|_| lab::http_get(addr, "/").ok())
            .filter(|r| r.backend() == Some("b2"))
            .count()
    });
    assert!(served > 0, "b2 takes new flows again");
}
