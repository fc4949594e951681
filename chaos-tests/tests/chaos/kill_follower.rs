//! kill -9 of a follower (a seeded one, three times): the owner keeps the VIP — no takeover, no
//! outage beyond the ordinary — admin writes go on with the remaining quorum, and the
//! restarted follower catches up on everything committed while it was down.

use std::time::Duration;

use chaos_tests::{Scenario, Setup};

const ROUNDS: usize = 3;

#[test]
fn kill_follower() {
    let Some(mut s) = Scenario::start("kill_follower", Setup::default()) else {
        return;
    };
    for _ in 0..ROUNDS {
        if s.left() < Duration::from_secs(8) {
            break;
        }
        let settle = s.rng.millis(100, 600);
        std::thread::sleep(settle);
        let Some(owner) = s.owner() else { break };
        let followers: Vec<usize> = (0..s.c.lab.nodes().len()).filter(|&i| i != owner).collect();
        let Some(victim) = s.rng.pick(&followers) else {
            break;
        };
        let down = s.rng.millis(800, 2000);
        if s.kill(victim).is_none() {
            break;
        }
        std::thread::sleep(down);
        if s.owner() != Some(owner) {
            s.problem(format!(
                "the owner changed from node {owner} while follower {victim} was down"
            ));
        }
        if !s.restart(victim) {
            break;
        }
    }
    let v = s.finish();
    v.assert_ok();
    assert_eq!(
        v.summary.takeovers, 0,
        "ownership moved on the wire although only followers died\n{}",
        v.details
    );
}
