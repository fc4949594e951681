//! docs/design.md#inv-durable with real processes: the replicated state survives kill -9 of the
//! whole cluster (the nodes come back with configs that list no farm at all, so whatever they serve
//! came from their data dirs), and a follower killed while the leader commits health verdicts
//! catches up when it returns.

use crate::common::{ClusterLab, can_run_lab, served, wait_for};
use lab::{LabFarm, scrape};
use std::net::SocketAddr;
use std::time::Duration;

/// (farm, backend) pairs of the lab's farms.
const PAIRS: [(&str, &str); 4] = [("web", "b1"), ("web", "b2"), ("echo", "b1"), ("echo", "b2")];

/// `dsrlb_backend_up` of every pair on node `i`, or `None` if it cannot be scraped or a
/// pair has no series (a node without the farm).
fn view(c: &ClusterLab, i: usize) -> Option<Vec<f64>> {
    let node = &c.lab.nodes()[i];
    let metrics = SocketAddr::from(([127, 0, 0, 1], lab::METRICS_PORT));
    let text = node
        .try_run(|| lab::http_get(metrics, "/metrics"))
        .ok()?
        .ok()?
        .body;
    PAIRS
        .iter()
        .map(|(f, b)| {
            let series = format!("dsrlb_backend_up{{farm=\"{f}\",backend=\"{b}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&series))?;
            line[series.len()..].trim().parse().ok()
        })
        .collect()
}

fn web_b2(c: &ClusterLab, i: usize) -> Option<f64> {
    view(c, i).map(|v| v[1])
}

#[test]
fn state_survives_a_full_restart_and_a_killed_follower_catches_up() {
    if !can_run_lab() {
        return;
    }
    let mut web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1]);
    web.check = Some((100, 2, 2));
    let echo = LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1]);
    let mut c = ClusterLab::start(3, 2, &[web, echo], &[]);
    let all = [0, 1, 2];
    let addr = SocketAddr::from((c.lab.vip(), lab::BACKEND_HTTP_PORT));
    let term_before = scrape(&c.lab.nodes()[c.sole_owner()])
        .unwrap()
        .get("dsrlb_raft_term", &[]);

    // 1. kill -9 every node, then start them all from their data dirs with no farm in
    //    their configs.
    for i in all {
        c.kill(i);
    }
    for i in all {
        c.restart_with(i, &[]);
    }
    let everyone_up = vec![1.0; PAIRS.len()];
    let back = wait_for(Duration::from_secs(20), || {
        let owners = c.owners_among(&all);
        let views: Option<Vec<Vec<f64>>> = all.iter().map(|&i| view(&c, i)).collect();
        (owners.len() == 1 && views?.iter().all(|v| *v == everyone_up)).then(|| owners[0])
    });
    let leader = back.unwrap_or_else(|| {
        let views: Vec<_> = all.iter().map(|&i| view(&c, i)).collect();
        panic!("after the full restart: views {views:?}\n{}", c.logs())
    });
    let term_after = scrape(&c.lab.nodes()[leader])
        .unwrap()
        .get("dsrlb_raft_term", &[]);
    eprintln!("full restart: node {leader} owns at term {term_after} (was {term_before})");
    // openraft restores a leader whose committed vote was its own in the same term, so the
    // term need not grow; it must not go back.
    assert!(
        term_after >= term_before,
        "the term went back: {term_after} < {term_before}"
    );
    assert!(
        c.lab.clients()[0].run(|| served(addr)).is_some(),
        "the farm from the data dirs does not serve"
    );

    // 2. kill -9 a follower, make the leader commit verdicts for b2 (down, up, down), then
    //    restart the follower: it must end where the leader is, not where it died.
    let follower = (leader + 1) % 3;
    c.kill(follower);
    let mut commits = Vec::new();
    for (step, want) in [(0, 0.0), (1, 1.0), (2, 0.0)] {
        if want == 0.0 {
            c.lab.stop_backend(1).unwrap();
        } else {
            c.lab.start_backend(1, crate::common::dsrlb()).unwrap();
        }
        let seen = wait_for(Duration::from_secs(10), || {
            (web_b2(&c, leader)? == want).then_some(())
        });
        assert!(
            seen.is_some(),
            "step {step}: the leader never committed web/b2 = {want}\n{}",
            c.logs()
        );
        commits.push(want);
    }
    c.restart(follower);
    let leader_view = view(&c, leader).expect("leader metrics");
    assert_eq!(leader_view[1], 0.0, "web/b2 is down on the leader");
    let caught_up = wait_for(Duration::from_secs(15), || {
        all.iter()
            .all(|&i| view(&c, i).is_some_and(|v| v == leader_view))
            .then_some(())
    });
    let views: Vec<_> = all.iter().map(|&i| view(&c, i)).collect();
    eprintln!("after the follower's restart ({commits:?} committed meanwhile): {views:?}");
    assert!(
        caught_up.is_some(),
        "node {follower} did not catch up: views {views:?}\n{}",
        c.logs()
    );
    assert_eq!(c.owners_among(&all), vec![leader], "ownership moved");
}
