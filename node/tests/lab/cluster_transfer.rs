//! `dsrctl leader transfer` on clusters of three, four and five voters (from four on, the
//! candidate's vote and the leader's are no quorum and the other followers must first see
//! their lease run out):
//! every transfer lands on the named node, and the bridge never shows two MACs answering ARP
//! for the VIP (the old leader releases the VIP before anyone can be elected).

use crate::common::{ClusterLab, can_run_lab, wait_for, web_and_echo};
use dsrctl::view::StatusView;
use lab::ctl::{run_in, strings};
use lab::lbnode::ADMIN_PORT;
use lab::{ArpProber, Capture, DualOwner};
use std::time::Duration;

fn transfers_land(voters: usize, rounds: usize) {
    let c = ClusterLab::start(voters, 2, &web_and_echo(2), &[]);
    let token = c.lab.admin_token_file().expect("admin token");
    let endpoints = (0..voters)
        .map(|i| format!("http://{}:{ADMIN_PORT}", c.lab.nodes()[i].ip))
        .collect::<Vec<_>>()
        .join(",");
    let client = c.lab.clients()[0].clone();
    let ctl = |args: &[&str]| {
        let mut all = strings(&["--endpoint", &endpoints, "--token-file"]);
        all.push(token.to_str().expect("utf-8 path").to_owned());
        all.extend(strings(args));
        run_in(&client, &all)
    };
    let wire = Capture::start(c.lab.switch_ns(), c.lab.bridge()).unwrap();
    let prober = ArpProber::start(
        &client,
        c.lab.vip(),
        Duration::from_millis(10),
        Duration::from_secs(60),
    )
    .unwrap();
    let mut owner = c.sole_owner();
    // The owners in the order leadership visits them: each transfer goes to the next node,
    // so a node owns again later (which the prober's flip-back check would call a dual).
    let mut expected = vec![c.lab.nodes()[owner].mac];
    for round in 0..rounds {
        let target = (owner + 1) % voters;
        let id = (target + 1).to_string();
        let r = ctl(&["leader", "transfer", &id]);
        assert_eq!(
            r.code,
            0,
            "{voters} voters, round {round}: transfer to node {id} failed: {r:#?}\n{}",
            c.logs()
        );
        // Status answers from the replica of whichever node it reaches, which may learn
        // of the new leader a moment after the old one did: wait (bounded) for it.
        let want = Some(target as u64 + 1);
        let mut last = None;
        let leads = wait_for(Duration::from_secs(3), || {
            let status: StatusView = ctl(&["-o", "json", "status"]).ok().json();
            let ok = status.leader == want;
            last = Some(status);
            ok.then_some(())
        });
        assert!(
            leads.is_some(),
            "{voters} voters, round {round}: node {id} does not lead: {last:?}\n{}",
            c.logs()
        );
        owner = wait_for(Duration::from_secs(5), || {
            (c.lab.owners().as_slice() == [target]).then_some(target)
        })
        .unwrap_or_else(|| panic!("node {id} does not own the VIP\n{}", c.logs()));
        expected.push(c.lab.nodes()[owner].mac);
    }
    let log = prober.stop().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let frames = wire.stop().unwrap();
    let a = log.analyze(&frames);
    eprintln!("{voters} voters, {rounds} transfers: {a}");
    let same_round: Vec<_> = a
        .dual
        .iter()
        .filter(|d| matches!(d, DualOwner::SameRound { .. }))
        .collect();
    assert!(same_round.is_empty(), "two owners answered one probe: {a}");
    // Claims in time order change hands only along the transfers: an old owner answering
    // after its successor (before its own turn came again) would be a second owner.
    let mut claims = log.claims(&frames);
    claims.sort_by_key(|cl| cl.at);
    let mut turns = expected.iter();
    let mut current = None;
    for cl in &claims {
        if current == Some(cl.mac) {
            continue;
        }
        assert!(
            turns.any(|m| *m == cl.mac),
            "{} answered out of turn (owners in order: {expected:?}): {a}",
            cl.mac
        );
        current = Some(cl.mac);
    }
}

#[test]
fn transfers_on_three_voters_land_with_one_owner_on_the_wire() {
    if !can_run_lab() {
        return;
    }
    transfers_land(3, 5);
}

#[test]
fn transfers_on_four_voters_land_with_one_owner_on_the_wire() {
    if !can_run_lab() {
        return;
    }
    transfers_land(4, 5);
}

#[test]
fn transfers_on_five_voters_land_with_one_owner_on_the_wire() {
    if !can_run_lab() {
        return;
    }
    transfers_land(5, 5);
}
