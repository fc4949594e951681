//! The owner's whole link goes (its port on the bridge down, like a pulled cable): no peer
//! traffic, no client frames, no ARP in or out. Another node takes over; when the cable is
//! back, the old owner (its lease long gone, its term stale) must not claim the VIP, and it
//! rejoins as a follower. Three times, for seeded lengths.

use std::time::Duration;

use chaos_tests::{Scenario, Setup};

const ROUNDS: usize = 3;

#[test]
fn partition_link() {
    let Some(mut s) = Scenario::start("partition_link", Setup::default()) else {
        return;
    };
    for _ in 0..ROUNDS {
        if s.left() < Duration::from_secs(8) {
            break;
        }
        let settle = s.rng.millis(100, 600);
        std::thread::sleep(settle);
        let hold = s.rng.millis(800, 2000);
        let Some(old) = s.owner() else { break };
        let Some(at) = s.cut_cable(old) else { break };
        s.wait_takeover("link cut", old, at);
        std::thread::sleep(hold.saturating_sub(at.elapsed()));
        s.plug_cable(old);
        if !s.wait_caught_up(old) || !s.wait_streams_moving() {
            break;
        }
    }
    s.finish().assert_ok();
}
