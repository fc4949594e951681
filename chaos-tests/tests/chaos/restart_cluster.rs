//! The whole cluster restarts: kill -9 of every node in a seeded order, a seeded pause with
//! nobody up, then every node starts again from its data dir. Committed admin writes all
//! come back (the ledger), one node owns the VIP again, and the streams through the VIP —
//! whose backends kept sending straight to the client — resume without a reset.

use chaos_tests::{Scenario, Setup};

#[test]
fn restart_cluster() {
    let Some(mut s) = Scenario::start("restart_cluster", Setup::default()) else {
        return;
    };
    let settle = s.rng.millis(300, 1200);
    std::thread::sleep(settle);
    let n = s.c.lab.nodes().len();
    let mut order: Vec<usize> = (0..n).collect();
    s.rng.shuffle(&mut order);
    let old = s.owner();
    let mut first = None;
    for &i in &order {
        let at = s.kill(i);
        first = first.or(at);
        let gap = s.rng.millis(0, 100);
        std::thread::sleep(gap);
    }
    let down = s.rng.millis(200, 1000);
    std::thread::sleep(down);
    s.rng.shuffle(&mut order);
    for &i in &order {
        s.start_node(i);
    }
    if let (Some(old), Some(at)) = (old, first) {
        s.wait_recovery("restart of every node", old, at);
    }
    for i in 0..n {
        if !s.wait_caught_up(i) {
            break;
        }
    }
    s.wait_streams_moving();
    s.finish().assert_ok();
}
