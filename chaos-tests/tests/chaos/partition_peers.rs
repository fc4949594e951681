//! The dangerous partition: the owner loses its peers (blackhole routes to them inside its
//! namespace) while its datapath keeps hearing every ARP request and client frame. Its lease
//! must end its ownership before another node is elected; after healing it rejoins as a
//! follower and the cluster converges. Three times, for seeded lengths.

use std::time::Duration;

use chaos_tests::{Scenario, Setup};

const ROUNDS: usize = 3;

#[test]
fn partition_peers() {
    run("partition_peers", Setup::default());
}

/// The same on a pair of LB nodes and `dsrlb witness` (docs/design.md#pairs).
#[test]
fn partition_peers_pair_witness() {
    run("partition_peers_pair_witness", Setup::pair_witness());
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
        let hold = s.rng.millis(800, 2000);
        let Some(old) = s.owner() else { break };
        let Some(at) = s.partition_peers(old) else {
            break;
        };
        s.wait_takeover("peer partition", old, at);
        std::thread::sleep(hold.saturating_sub(at.elapsed()));
        s.heal_peers(old);
        if !s.wait_caught_up(old) || !s.wait_streams_moving() {
            break;
        }
    }
    s.finish().assert_ok();
}
