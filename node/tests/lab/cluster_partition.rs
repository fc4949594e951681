//! The dangerous partition: the owner loses its peers (blackhole routes to them inside its
//! namespace) while its datapath keeps running on AF_PACKET and still hears every ARP
//! request. Its lease must end its ownership before any other node can be elected; another
//! node takes over; the bridge never shows two MACs claiming the VIP; after healing, the
//! cluster converges on one owner and one term. And the harmless partition: a follower cut
//! off for many leases comes back without raising the term or moving the VIP.

use crate::common::{ClusterLab, can_run_lab, served, wait_for, web_and_echo};
use lab::{ArpProber, Capture};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The default election timeout max, openraft's leader lease: no voter grants a vote sooner
/// after the last heartbeat, so no other node can win an election earlier than this after
/// the cut, and the old owner must have stopped by then.
const EARLIEST_ELECTION: Duration = Duration::from_millis(120);

/// The /32 routes to every node but `i`: blackholed inside `i`'s namespace, they cut its
/// control plane off while its datapath keeps the wire.
fn peers_of(c: &ClusterLab, i: usize) -> Vec<String> {
    (0..c.lab.nodes().len())
        .filter(|&j| j != i)
        .map(|j| format!("{}/32", c.lab.nodes()[j].ip))
        .collect()
}

/// Adds (`add`) or removes the blackhole routes to `peers` in `host`.
fn blackhole(host: &lab::Host, peers: &[String], add: bool) {
    let verb = if add { "add" } else { "del" };
    for p in peers {
        host.ip(&["route", verb, "blackhole", p]).unwrap();
    }
}

/// A capture of the bridge and an ARP prober for the VIP from the client, every 10 ms.
fn watch(c: &ClusterLab) -> (Capture, ArpProber) {
    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &c.lab.clients()[0],
        c.lab.vip(),
        Duration::from_millis(10),
        Duration::from_secs(25),
    )
    .unwrap();
    (wire, prober)
}

#[test]
fn a_partitioned_owner_stops_before_anyone_else_takes_over() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let vip = c.lab.vip();
    let client = c.lab.clients()[0].clone();
    let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let old = c.sole_owner();
    let old_host = c.lab.nodes()[old].clone();
    let peers = peers_of(&c, old);
    assert!(
        client.run(|| served(addr)).is_some(),
        "not served before the cut"
    );

    let (wire, prober) = watch(&c);
    std::thread::sleep(Duration::from_millis(500));

    blackhole(&old_host, &peers, true);
    let cut_at = Instant::now();
    let new = wait_for(Duration::from_secs(10), || {
        let owners = c.lab.owners();
        match owners.as_slice() {
            [one] if *one != old => Some(*one),
            _ => None,
        }
    });
    let old_view = lab::scrape(&old_host).map(|m| m.get("dsrlb_vip_owner", &[]));
    let served_by_new = client.run(|| served(addr));
    std::thread::sleep(Duration::from_millis(300));

    blackhole(&old_host, &peers, false);
    let converged = c.wait_converged(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(300));
    let log = prober.stop().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{a}");

    let new = new.unwrap_or_else(|| panic!("no other node took over\n{}", c.logs()));
    let (old_mac, new_mac) = (old_host.mac, c.lab.nodes()[new].mac);
    assert_eq!(
        old_view.ok(),
        Some(0.0),
        "the cut-off node still says it owns"
    );
    assert!(
        served_by_new.is_some(),
        "no request served after the takeover"
    );

    // The old owner answered no probe sent after the earliest possible election.
    let claims = log.claims(&frames);
    let last_old_round = claims
        .iter()
        .filter(|cl| cl.mac == old_mac)
        .filter_map(|cl| cl.round)
        .max()
        .expect("the owner answered before the cut");
    let last_old_probe = log.rounds[last_old_round];
    let after_cut = last_old_probe.saturating_duration_since(cut_at);
    eprintln!("the cut-off owner answered its last probe sent {after_cut:?} after the cut");
    assert!(
        after_cut < EARLIEST_ELECTION,
        "the cut-off owner answered a probe sent {after_cut:?} after the cut"
    );
    let last_old = claims
        .iter()
        .filter(|cl| cl.mac == old_mac)
        .map(|cl| cl.at)
        .max();
    let first_new = claims
        .iter()
        .filter(|cl| cl.mac == new_mac)
        .map(|cl| cl.at)
        .min();
    assert!(
        last_old < first_new,
        "the old owner's last claim is not before the new owner's first"
    );
    assert!(a.dual.is_empty(), "{a}");
    assert_eq!(a.owners()[..2], [old_mac, new_mac], "{a}");

    let (owner, term) =
        converged.unwrap_or_else(|| panic!("no convergence after healing\n{}", c.logs()));
    eprintln!("after healing: node {owner} owns at term {term}");
    eprintln!("{}", c.logs());
    assert!(
        client.run(|| served(addr)).is_some(),
        "VIP not served after healing"
    );
}

#[test]
fn an_isolated_follower_rejoins_without_disturbing_the_leader() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let (owner, term) = c
        .wait_converged(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no convergence\n{}", c.logs()));
    let follower = (0..3).find(|&i| i != owner).expect("three nodes");
    let f_host = c.lab.nodes()[follower].clone();
    let peers = peers_of(&c, follower);
    let (wire, prober) = watch(&c);
    blackhole(&f_host, &peers, true);
    // Many leases: openraft's own timer would have campaigned (and raised the term) over
    // and over in this time; the elector's pre-votes reach no one and change nothing.
    std::thread::sleep(Duration::from_millis(1500));
    blackhole(&f_host, &peers, false);
    // Long enough for the follower's next heartbeat round, and for any term it raised to
    // reach the leader and depose it.
    std::thread::sleep(Duration::from_millis(1000));
    let after = c.wait_converged(Duration::from_secs(10));
    let log = prober.stop().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{a}");

    let (owner_after, term_after) =
        after.unwrap_or_else(|| panic!("no convergence after healing\n{}", c.logs()));
    assert_eq!(
        (owner_after, term_after),
        (owner, term),
        "healing the follower moved the VIP or the term\n{}",
        c.logs()
    );
    let owner_mac = c.lab.nodes()[owner].mac;
    assert_eq!(a.owners(), [owner_mac], "another node claimed the VIP: {a}");
    assert!(a.dual.is_empty(), "{a}");
}
