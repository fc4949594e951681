//! kill -9 of the VIP owner, again and again, under traffic: each time another node takes
//! over, and the killed node is restarted and catches up before the next kill. The suite's
//! measurement: the outage after each kill (p50 and max over at least 10 kills) and the
//! requests failed per takeover.

use std::time::Duration;

use chaos_tests::env::say;
use chaos_tests::summary::p50_max;
use chaos_tests::{Scenario, Setup};

/// Kills to measure over.
const KILLS: usize = 10;
/// No kill is started with less than this left of the budget (a kill, a takeover and a
/// restart with catch-up fit in it).
const ROUND: Duration = Duration::from_secs(3);

#[test]
fn kill_leader() {
    run("kill_leader", Setup::default());
}

/// The same on a pair of LB nodes and `dsrlb witness` (docs/design.md#pairs).
#[test]
fn kill_leader_pair_witness() {
    run("kill_leader_pair_witness", Setup::pair_witness());
}

fn run(name: &str, setup: Setup) {
    let Some(mut s) = Scenario::start(name, setup) else {
        return;
    };
    let mut kills = 0;
    while kills < KILLS && s.left() > ROUND {
        // Kills land at different points of the heartbeat and request cycles.
        let settle = s.rng.millis(50, 400);
        std::thread::sleep(settle);
        let Some(old) = s.kill_leader() else {
            break;
        };
        kills += 1;
        if !s.restart(old) || !s.wait_streams_moving() {
            break;
        }
    }
    let v = s.finish();
    let outages: Vec<Duration> = v.takeovers.iter().filter_map(|t| t.outage).collect();
    let (p50, max) = p50_max(&outages);
    let failed: Vec<u64> = v.takeovers.iter().map(|t| t.failed).collect();
    say(&format!(
        "CHAOS {name} measurement: {} kills, outage after kill -9 p50 {} ms, max {} ms; \
         streams broken {}; requests failed per takeover {:?} (mean {:.1})",
        outages.len(),
        p50.as_millis(),
        max.as_millis(),
        v.summary.streams_broken,
        failed,
        failed.iter().sum::<u64>() as f64 / failed.len().max(1) as f64
    ));
    v.assert_ok();
    assert!(
        kills >= KILLS,
        "only {kills} kills fit in the scenario's budget (want {KILLS})\n{}",
        v.details
    );
    assert_eq!(
        outages.len(),
        kills,
        "after some kills the VIP never answered again\n{}",
        v.details
    );
}
