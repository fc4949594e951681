//! A backend dies during a takeover: kill -9 of the owner and, a seeded moment later, of a
//! backend that carries no stream through the VIP. The new owner's health check (which only
//! a leader runs) must take the backend out and commit it; from then on every request is
//! answered by the others. Streams through the VIP survive, and so do the control streams
//! opened straight to the surviving backends; the one straight to the killed backend must
//! break — the stream check seeing a real broken stream.

use std::net::SocketAddr;
use std::time::Duration;

use chaos_tests::workload::requests::attempt;
use chaos_tests::{Scenario, Setup};
use lab::{BACKEND_HTTP_PORT, scrape, wait_for};

/// How long the new owner's health check may take to commit the verdict (200 ms checks,
/// fall 2, after an election).
const VERDICT_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn kill_backend_takeover() {
    let setup = Setup {
        health_check: Some((200, 2, 2)),
        direct_streams: vec![0, 1, 2],
        ..Setup::default()
    };
    let Some(mut s) = Scenario::start("kill_backend_takeover", setup) else {
        return;
    };
    let names: Vec<String> = s.c.lab.backends().iter().map(|b| b.name.clone()).collect();
    let carried: Vec<String> = s.stream_backends()[..s.setup().vip_streams]
        .iter()
        .flatten()
        .cloned()
        .collect();
    let free: Vec<usize> = (0..names.len())
        .filter(|b| !carried.contains(&names[*b]))
        .collect();
    let web = SocketAddr::from((s.c.lab.vip(), BACKEND_HTTP_PORT));
    let settle = s.rng.millis(200, 800);
    std::thread::sleep(settle);
    let victim = s
        .rng
        .pick(&free)
        .expect("3 backends, 2 streams: one is free");
    let lag = s.rng.millis(0, 200);
    let Some(old) = s.owner() else {
        s.finish().assert_ok();
        return;
    };
    if let Some(at) = s.kill(old) {
        std::thread::sleep(lag);
        s.kill_backend(victim);
        if let Some(new) = s.wait_takeover("kill -9", old, at) {
            let host = s.c.lab.nodes()[new].clone();
            let down = wait_for(VERDICT_LIMIT, || {
                scrape(&host).ok().and_then(|m| {
                    let up = m.get(
                        "dsrlb_backend_up",
                        &[("farm", "web"), ("backend", &names[victim])],
                    );
                    (up == 0.0).then_some(())
                })
            });
            match down {
                None => s.problem(format!(
                    "node {new} did not take {} out within {VERDICT_LIMIT:?}",
                    names[victim]
                )),
                Some(()) => {
                    s.note(format!("node {new} took {} out", names[victim]));
                    // Every request now goes to a live backend.
                    let burst: Vec<Result<String, String>> =
                        s.client().run(|| (0..20).map(|_| attempt(web)).collect());
                    let bad: Vec<&Result<String, String>> = burst
                        .iter()
                        .filter(|r| r.as_ref().map_or(true, |b| *b == names[victim]))
                        .collect();
                    if !bad.is_empty() {
                        s.problem(format!(
                            "{} of 20 requests after the verdict failed or reached {}: {bad:?}",
                            bad.len(),
                            names[victim]
                        ));
                    }
                }
            }
        }
    }
    let hold = s.rng.millis(300, 1000);
    std::thread::sleep(hold);
    s.start_backend(victim);
    s.restart(old);
    s.wait_streams_moving();
    s.finish().assert_ok();
}
