//! A rolling restart of every node, in a seeded order, as an operator upgrades a cluster:
//! SIGTERM (the owner releases the VIP and hands leadership over first), a clean exit, a
//! start from the data dir, catch-up, then the next node. One owner at a time on the wire,
//! no stream reset, no acknowledged write lost.

use chaos_tests::{Scenario, Setup};

#[test]
fn rolling_restart() {
    let Some(mut s) = Scenario::start("rolling_restart", Setup::default()) else {
        return;
    };
    let mut order: Vec<usize> = (0..s.c.lab.nodes().len()).collect();
    s.rng.shuffle(&mut order);
    for i in order {
        let settle = s.rng.millis(200, 800);
        std::thread::sleep(settle);
        let owned = s.owner() == Some(i);
        let at = std::time::Instant::now();
        if !s.terminate(i) {
            break;
        }
        if owned {
            s.wait_takeover("SIGTERM", i, at);
        }
        if !s.restart(i) || !s.wait_streams_moving() {
            break;
        }
    }
    s.finish().assert_ok();
}
