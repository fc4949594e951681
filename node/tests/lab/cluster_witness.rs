//! Two LB nodes and a witness: kill -9 either LB node (first n1, then, after it is back, n2)
//! and the other one owns the VIP and serves; the witness keeps the quorum but never claims
//! the VIP on the wire and never reports `dsrlb_vip_owner 1`.

use crate::common::{ClusterLab, can_run_lab, served, web_and_echo};
use lab::{ArpProber, Capture, scrape};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const WITNESS: usize = 2;

/// Waits until restarted node `i` serves every backend and is in the leader's term, then a
/// little longer so that its log has caught up. Killing the other LB node before that
/// deadlocks the cluster: see `a_stale_lb_node_and_a_witness_elect_nobody` below.
fn caught_up(c: &ClusterLab, i: usize) -> bool {
    let node = c.lab.nodes()[i].clone();
    let back = crate::common::wait_for(Duration::from_secs(15), || {
        let m = scrape(&node).ok()?;
        let term = m.get("dsrlb_raft_term", &[]);
        let leader_term = c
            .owners_among(&[0, 1])
            .first()
            .and_then(|&o| scrape(&c.lab.nodes()[o]).ok())
            .map(|m| m.get("dsrlb_raft_term", &[]))?;
        (m.sum("dsrlb_backend_up") == 4.0 && term == leader_term).then_some(())
    });
    // The term arrives with the first append-entries; the entries may need one more round.
    std::thread::sleep(Duration::from_millis(500));
    back.is_some()
}

#[test]
fn either_lb_node_can_die_and_the_witness_never_owns() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[WITNESS]);
    let client = c.lab.clients()[0].clone();
    let vip = c.lab.vip();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let witness = c.lab.nodes()[WITNESS].clone();
    assert_ne!(c.sole_owner(), WITNESS, "the witness owns the VIP");

    // Watch the witness's own view for the whole run, every 20 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let (scrapes, owned) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let watcher = {
        let (stop, scrapes, owned, witness) = (
            stop.clone(),
            scrapes.clone(),
            owned.clone(),
            witness.clone(),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok(m) = scrape(&witness) {
                    scrapes.fetch_add(1, Ordering::Relaxed);
                    if m.get("dsrlb_vip_owner", &[]) != 0.0 {
                        owned.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &client,
        vip,
        Duration::from_millis(10),
        Duration::from_secs(28),
    )
    .unwrap();

    std::thread::sleep(Duration::from_millis(300));

    // Each LB node in turn: kill it, the other owns and serves, then bring it back.
    let mut phases = Vec::new();
    for victim in [0, 1] {
        let survivor = 1 - victim;
        let owner_before = c.owners_among(&[0, 1, 2]);
        let killed_at = c.kill(victim);
        let owner = c.wait_owner(&[survivor, WITNESS], Duration::from_secs(10));
        let serving = client.run(|| served(addr));
        phases.push((victim, owner_before, owner, serving.clone(), killed_at));
        assert_eq!(
            owner,
            Some(survivor),
            "after killing node {victim}: owner {owner:?}\n{}",
            c.logs()
        );
        assert!(serving.is_some(), "not served after killing node {victim}");
        c.restart(victim);
        assert!(
            caught_up(&c, victim),
            "node {victim} did not come back\n{}",
            c.logs()
        );
    }
    let log = prober.stop().unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().expect("watcher thread");
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    for (victim, before, owner, serving, _) in &phases {
        eprintln!(
            "killed node {victim} (owners before {before:?}): owner {owner:?}, served by {serving:?}"
        );
    }

    // Judge each phase on its own: n1 owning again after n2 dies is a takeover, not a flip.
    let claims = log.claims(&frames);
    let mut bounds: Vec<Instant> = vec![log.rounds[0]];
    bounds.extend(phases.iter().map(|p| p.4));
    bounds.push(Instant::now());
    for (k, w) in bounds.windows(2).enumerate() {
        let phase: Vec<_> = claims
            .iter()
            .copied()
            .filter(|cl| cl.at >= w[0] && cl.at < w[1])
            .collect();
        let a = lab::analyze(&log.rounds, &phase);
        let macs: Vec<String> = a.macs.iter().map(|(m, n)| format!("{m}×{n}")).collect();
        eprintln!("phase {k}: claims {}", macs.join(" "));
        assert!(a.dual.is_empty(), "phase {k}: {a}");
        assert!(!phase.is_empty(), "phase {k}: nobody answered ARP");
    }
    let witness_claims = claims.iter().filter(|cl| cl.mac == witness.mac).count();
    assert_eq!(witness_claims, 0, "the witness claimed the VIP on the wire");
    assert!(
        frames
            .iter()
            .all(|f| !(f.src_mac == witness.mac && f.ipv4.is_some_and(|p| p.dst == vip))),
        "the witness forwarded VIP traffic"
    );
    let (scrapes, owned) = (
        scrapes.load(Ordering::Relaxed),
        owned.load(Ordering::Relaxed),
    );
    assert!(scrapes > 20, "only {scrapes} scrapes of the witness");
    assert_eq!(
        owned, 0,
        "the witness reported dsrlb_vip_owner 1 in {owned} of {scrapes} scrapes"
    );
    let a = log.analyze(&frames);
    assert!(a.owners().iter().all(|m| *m != witness.mac), "{a}");
}

/// An LB node restarts, and the other LB node dies before replication has brought the
/// restarted one up to date. The witness holds the newest log, so it refuses the stale
/// node's votes ("reject vote-request: by last_log_id"). The witness campaigns after twice
/// the election timeout, wins, and hands leadership to the LB node once it has caught up, so
/// the VIP is served again. (Before witnesses campaigned, nobody was ever elected here.)
#[test]
fn a_stale_lb_node_and_a_witness_still_elect_an_owner() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[WITNESS]);
    let first = c.sole_owner();
    let other = 1 - first;
    c.kill(first);
    assert_eq!(
        c.wait_owner(&[other, WITNESS], Duration::from_secs(10)),
        Some(other)
    );
    c.restart(first);
    // Only until its metrics answer: its log is still behind the witness's.
    crate::common::wait_for(Duration::from_secs(10), || {
        scrape(&c.lab.nodes()[first]).ok()
    });
    c.kill(other);
    let owner = c.wait_owner(&[first, WITNESS], Duration::from_secs(10));
    assert_eq!(
        owner,
        Some(first),
        "no owner after the second kill\n{}",
        c.logs()
    );
}
