//! SIGSTOP of the VIP owner past the election timeout, then SIGCONT, three times: another node
//! takes over while it is frozen; the resumed node, whose rings filled with ARP requests and
//! client frames while it slept and whose control loop still remembers leading, must neither
//! answer ARP nor forward a frame for the VIP (the wire check), and rejoins as a follower.

use std::time::{Duration, Instant};

use chaos_tests::{Scenario, Setup};

const ROUNDS: usize = 3;

#[test]
fn sigstop_leader() {
    run("sigstop_leader", Setup::default());
}

/// The same on a pair of LB nodes and `dsrlb witness` (docs/design.md#pairs).
#[test]
fn sigstop_leader_pair_witness() {
    run("sigstop_leader_pair_witness", Setup::pair_witness());
}

fn run(name: &str, setup: Setup) {
    let Some(mut s) = Scenario::start(name, setup) else {
        return;
    };
    for _ in 0..ROUNDS {
        if s.left() < Duration::from_secs(8) {
            break;
        }
        let settle = s.rng.millis(100, 600);
        std::thread::sleep(settle);
        // Frozen well past the longest election timeout (300 ms), for a seeded while.
        let hold = s.rng.millis(800, 1800);
        let Some(old) = s.owner() else { break };
        let Some(at) = s.freeze(old) else { break };
        s.wait_takeover("SIGSTOP", old, at);
        std::thread::sleep(hold.saturating_sub(at.elapsed()));
        let resumed = Instant::now();
        s.thaw(old);
        if !s.wait_caught_up(old) || !s.wait_streams_moving() {
            break;
        }
        // The resumed node stays a follower: ownership did not come back to it.
        if s.owner() == Some(old) {
            s.problem(format!(
                "node {old} owns the VIP again {:?} after SIGCONT",
                resumed.elapsed()
            ));
        }
    }
    s.finish().assert_ok();
}
