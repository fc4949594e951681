//! A pair arbitrated by the L2 segment (`[cluster] pair_arbiter = "segment"`,
//! docs/design.md#pair-segment): two nodes, no witness.
//! - kill -9 of the owner: the survivor takes over without a quorum, says so (`dsrctl
//!   status`, metrics) and refuses admin writes; the restarted peer brings the log back;
//! - the control link alone cut (peer port blackholed, segment intact): no takeover, the
//!   owner keeps answering ARP, by the segment;
//! - the owner's datapath cable pulled: the survivor takes over; plugged back: one owner
//!   again, the other's last ARP claim within the documented bound of the plug (bridge
//!   capture).

use crate::admin_support::{client_with, endpoint, in_client};
use crate::common::{can_run_lab, dsrlb, served, wait_for, web_and_echo};
use lab::{ArpProber, Capture, Lab, LabFarm, LabProcess, LabSpec, NodeOptions};
use proto::admin::v1 as pb;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The config's defaults, which the tests use.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
/// The control loop's tick: a claim is acted on at the latest one tick after it arrives.
const TICK: Duration = Duration::from_millis(10);
/// Scheduling, capture and wake-up latency on a shared lab machine.
const SLACK: Duration = Duration::from_millis(60);

/// Two nodes with `pair_arbiter = "segment"`, two backends, one client. Processes are
/// declared before the lab so they are killed before its namespaces go (also on panic).
struct Pair {
    procs: Vec<Option<LabProcess>>,
    lab: Lab,
    farms: Vec<LabFarm>,
}

fn options() -> NodeOptions {
    NodeOptions {
        cluster_extra: "pair_arbiter = \"segment\"".into(),
        ..NodeOptions::default()
    }
}

impl Pair {
    fn start() -> Pair {
        Pair::start_with(web_and_echo(2))
    }

    fn start_with(farms: Vec<LabFarm>) -> Pair {
        let mut lab = Lab::build(&LabSpec {
            nodes: 2,
            backends: 2,
            clients: 1,
            ..LabSpec::default()
        })
        .expect("lab builds");
        lab.start_backends(dsrlb()).expect("backends start");
        let mut procs = Vec::new();
        for i in 0..2 {
            procs.push(
                lab.spawn_node(i, dsrlb(), &farms, &options())
                    .expect("node starts"),
            );
        }
        lab.wait_ready(&mut procs, &[0, 1], &farms, Duration::from_secs(20))
            .expect("the pair is ready");
        Pair {
            procs: procs.into_iter().map(Some).collect(),
            lab,
            farms,
        }
    }

    fn owner(&self) -> usize {
        wait_for(Duration::from_secs(10), || {
            match self.lab.owners().as_slice() {
                [one] => Some(*one),
                _ => None,
            }
        })
        .unwrap_or_else(|| panic!("no single owner\n{}", self.logs()))
    }

    fn kill(&mut self, i: usize) -> Instant {
        let mut p = self.procs[i].take().expect("running");
        let at = Instant::now();
        p.kill().expect("kill -9");
        at
    }

    fn restart(&mut self, i: usize) {
        self.procs[i] = Some(
            self.lab
                .spawn_node(i, dsrlb(), &self.farms, &options())
                .expect("node restarts"),
        );
    }

    fn logs(&self) -> String {
        self.procs
            .iter()
            .flatten()
            .map(|p| p.log_tail(30))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }

    /// The arbiter node `i`'s metrics name (`None`: it does not own).
    fn arbiter(&self, i: usize) -> Option<&'static str> {
        let m = lab::scrape(&self.lab.nodes()[i]).ok()?;
        ["quorum", "sole", "segment"]
            .into_iter()
            .find(|a| m.get("dsrlb_vip_owner_arbiter", &[("arbiter", a)]) == 1.0)
    }

    fn web(&self) -> SocketAddr {
        SocketAddr::from((self.lab.vip(), lab::BACKEND_HTTP_PORT))
    }
}

/// `Status` and a write (`DeleteFarm` of a farm that does not exist is still a write: it
/// is refused before it is judged) as node `i` answers them.
fn status_and_write(p: &Pair, i: usize) -> (pb::StatusReply, Result<(), tonic::Status>) {
    let e = endpoint(&p.lab, i);
    let token = p.lab.admin_token().expect("admin token");
    in_client(&p.lab, || async move {
        let mut c = client_with(e, Some(token)).await;
        let status = c
            .status(pb::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        let write = c
            .delete_farm(pb::DeleteFarmRequest { name: "web".into() })
            .await
            .map(drop);
        (status, write)
    })
}

/// A capture of the bridge and the client's ARP probes for the VIP every 10 ms.
fn watch(p: &Pair) -> (Capture, ArpProber) {
    let wire = Capture::start(p.lab.switch_ns(), p.lab.bridge()).expect("capture");
    let prober = ArpProber::start(
        &p.lab.clients()[0],
        p.lab.vip(),
        Duration::from_millis(10),
        Duration::from_secs(30),
    )
    .expect("prober");
    (wire, prober)
}

#[test]
fn the_survivor_of_a_killed_owner_takes_over_by_the_segment_then_the_log_rules_again() {
    if !can_run_lab() {
        return;
    }
    let mut p = Pair::start();
    let old = p.owner();
    let survivor = 1 - old;
    assert_eq!(p.arbiter(old), Some("quorum"));
    let client = p.lab.clients()[0].clone();
    let web = p.web();
    assert!(client.run(|| served(web)).is_some(), "not served before");

    let killed_at = p.kill(old);
    let took_over = wait_for(Duration::from_secs(5), || {
        (p.lab.owners() == vec![survivor]).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the survivor did not take over\n{}", p.logs()));
    eprintln!("survivor owns {:?} after the kill", took_over - killed_at);
    assert!(
        took_over - killed_at < Duration::from_secs(2),
        "takeover later than the bound (docs/design.md#inv-takeover-bound)"
    );
    assert!(client.run(|| served(web)).is_some(), "not served after");
    assert_eq!(p.arbiter(survivor), Some("segment"));

    // Without a quorum: status says so and writes are refused.
    let (status, write) = status_and_write(&p, survivor);
    assert_eq!(status.owner_arbiter, "segment");
    assert_eq!(status.vip_owner, survivor as u64 + 1);
    let refused = write.expect_err("a write was accepted without a quorum");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), "no quorum: the peer is down");
    let served_still = lab::scrape(&p.lab.nodes()[survivor])
        .map(|m| m.sum("dsrlb_backend_up"))
        .unwrap_or(0.0);
    assert_eq!(
        served_still, 4.0,
        "the farms are gone: a write went through"
    );

    // The peer returns: the log rules again, one owner under a quorum.
    p.restart(old);
    let back = wait_for(Duration::from_secs(15), || {
        let owners = p.lab.owners();
        match owners.as_slice() {
            [one] if p.arbiter(*one) == Some("quorum") => Some(*one),
            _ => None,
        }
    });
    let back =
        back.unwrap_or_else(|| panic!("no quorum owner after the peer returned\n{}", p.logs()));
    eprintln!(
        "after the peer's return node {} owns under a quorum",
        back + 1
    );
    assert!(
        client.run(|| served(web)).is_some(),
        "not served at the end"
    );
    let (status, write) = status_and_write(&p, back);
    assert_eq!(status.owner_arbiter, "quorum");
    assert!(
        write.is_ok(),
        "a write under a quorum was refused: {write:?}"
    );
}

/// A backend with `arp_ignore=0` answers the survivor's RFC 5227 probes for the VIP. Once
/// the members know each other's MACs its answers are no claims (docs/design.md#arp-flux):
/// the survivor of a killed owner still takes over by the segment.
#[test]
fn a_backend_answering_arp_for_the_vip_does_not_hold_the_survivor_back() {
    if !can_run_lab() {
        return;
    }
    let mut p = Pair::start();
    // The members ask each other for their MACs every second until all have answered.
    std::thread::sleep(Duration::from_secs(3));
    let b2 = p.lab.backends()[1].clone();
    for i in ["all", "eth0"] {
        b2.set_sysctl(&format!("net/ipv4/conf/{i}/arp_ignore"), "0")
            .expect("arp_ignore=0 on b2");
    }
    let old = p.owner();
    let survivor = 1 - old;
    let killed_at = p.kill(old);
    let took_over = wait_for(Duration::from_secs(5), || {
        (p.lab.owners() == vec![survivor]).then(Instant::now)
    })
    .unwrap_or_else(|| panic!("the survivor did not take over\n{}", p.logs()));
    eprintln!("survivor owns {:?} after the kill", took_over - killed_at);
    assert_eq!(p.arbiter(survivor), Some("segment"));
    let conflicts = lab::scrape(&p.lab.nodes()[survivor])
        .map(|m| m.sum("dsrlb_vip_conflicts_total"))
        .unwrap_or(0.0);
    assert!(
        conflicts >= 1.0,
        "b2 answered the probes, and the flux watch counted it"
    );
}

#[test]
fn cutting_only_the_control_link_moves_nothing() {
    if !can_run_lab() {
        return;
    }
    let p = Pair::start();
    let owner = p.owner();
    let other = 1 - owner;
    let (owner_host, other_host) = (p.lab.nodes()[owner].clone(), p.lab.nodes()[other].clone());
    let (wire, prober) = watch(&p);
    std::thread::sleep(Duration::from_millis(300));

    let route = format!("{}/32", other_host.ip);
    owner_host
        .ip(&["route", "add", "blackhole", &route])
        .expect("blackhole");
    // Many leases and probe rounds.
    std::thread::sleep(Duration::from_secs(3));
    let owners_during = p.lab.owners();
    let arbiter_during = p.arbiter(owner);
    let probes_by_other = lab::scrape(&other_host)
        .map(|m| m.sum("dsrlb_segment_probes_total"))
        .unwrap_or(0.0);
    owner_host
        .ip(&["route", "del", "blackhole", &route])
        .expect("unblackhole");
    let after = wait_for(Duration::from_secs(10), || {
        match p.lab.owners().as_slice() {
            [one] if p.arbiter(*one) == Some("quorum") => Some(*one),
            _ => None,
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let log = prober.stop().expect("prober");
    let frames = wire.stop().expect("capture");
    let a = log.analyze(&frames);
    eprintln!("{a}");

    assert_eq!(owners_during, vec![owner], "ownership moved\n{}", p.logs());
    assert_eq!(
        arbiter_during,
        Some("segment"),
        "the owner without its quorum holds by the segment"
    );
    assert!(
        probes_by_other > 0.0,
        "the other node never probed the segment"
    );
    let other_mac = other_host.mac;
    let claims = log.claims(&frames);
    assert!(
        !claims.iter().any(|c| c.mac == other_mac),
        "the other node claimed the VIP while the owner answered"
    );
    assert!(
        a.longest_gap < Duration::from_millis(500),
        "the owner stopped answering: {a}"
    );
    assert!(
        after.is_some(),
        "no quorum owner after healing\n{}",
        p.logs()
    );
}

#[test]
fn a_pulled_owner_cable_moves_the_vip_and_plugging_it_back_leaves_one_owner() {
    if !can_run_lab() {
        return;
    }
    let p = Pair::start();
    let owner = p.owner();
    let other = 1 - owner;
    let owner_host = p.lab.nodes()[owner].clone();
    let (wire, prober) = watch(&p);
    std::thread::sleep(Duration::from_millis(300));

    p.lab.set_cable(&owner_host, false).expect("unplug");
    let cut_at = Instant::now();
    let took_over = wait_for(Duration::from_secs(5), || {
        (lab::scrape(&p.lab.nodes()[other]).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0))
            .then(Instant::now)
    });
    let other_arbiter = p.arbiter(other);
    std::thread::sleep(Duration::from_millis(500));

    p.lab.set_cable(&owner_host, true).expect("plug");
    let plugged_at = Instant::now();
    // The log rules again: one owner under a quorum lease.
    let one = wait_for(Duration::from_secs(10), || {
        match p.lab.owners().as_slice() {
            [one] if p.arbiter(*one) == Some("quorum") => Some(*one),
            _ => None,
        }
    });
    // Some settling, then the capture is judged.
    std::thread::sleep(Duration::from_millis(1500));
    let final_owners = p.lab.owners();
    let log = prober.stop().expect("prober");
    let frames = wire.stop().expect("capture");
    let a = log.analyze(&frames);
    eprintln!("{a}");

    let took_over =
        took_over.unwrap_or_else(|| panic!("the survivor did not take over\n{}", p.logs()));
    eprintln!(
        "takeover {:?} after the cable was pulled",
        took_over - cut_at
    );
    assert_eq!(other_arbiter, Some("segment"));
    one.unwrap_or_else(|| panic!("never one owner after plugging\n{}", p.logs()));
    // One owner at the end; not necessarily the first quorum owner: the election that
    // follows the peer's return may hand the VIP over (one MAC after the other).
    let [last] = final_owners.as_slice() else {
        panic!("not one owner at the end: {final_owners:?}\n{}", p.logs());
    };

    // On the wire: after the plug, the last client probe round answered by two MACs went
    // out within one probe interval and one loop tick (plus scheduling slack) of the plug.
    // (The owner that stays may hand over to the other later, under the election that
    // follows the peer's return: that is one MAC after the other, not two at once.)
    let final_mac = p.lab.nodes()[*last].mac;
    let claims = log.claims(&frames);
    let timeline: Vec<String> = claims
        .iter()
        .filter(|c| c.at >= plugged_at && c.at <= plugged_at + Duration::from_millis(400))
        .map(|c| format!("{:?} {}", c.at - plugged_at, c.mac))
        .collect();
    eprintln!("claims in the first 400 ms after the plug: {timeline:?}");
    let mut by_round: std::collections::BTreeMap<usize, Vec<lab::MacAddr>> = Default::default();
    for c in &claims {
        if let Some(r) = c.round {
            let macs = by_round.entry(r).or_default();
            if !macs.contains(&c.mac) {
                macs.push(c.mac);
            }
        }
    }
    let last_dual = by_round
        .iter()
        .filter(|(_, macs)| macs.len() > 1)
        .map(|(r, _)| log.rounds[*r])
        .max();
    let dual = last_dual.map_or(Duration::ZERO, |t| t.saturating_duration_since(plugged_at));
    eprintln!("the last probe round answered by two MACs went out {dual:?} after the plug");
    assert!(
        last_dual.is_none_or(|t| t >= plugged_at),
        "two MACs answered one probe round before the plug: the segment was intact"
    );
    assert!(
        dual <= PROBE_INTERVAL + TICK + SLACK,
        "two owners met for {dual:?} after the segment healed (bound: one probe interval)"
    );
    // And one MAC, the last owner's, answers the client at the end (the last 300 ms of
    // probing).
    let end = log.rounds.last().copied().unwrap_or(plugged_at);
    let late: Vec<_> = claims
        .iter()
        .filter(|c| c.at + Duration::from_millis(300) > end && c.at > plugged_at)
        .map(|c| c.mac)
        .collect();
    assert!(
        !late.is_empty(),
        "nobody answers the client at the end: {a}"
    );
    assert!(
        late.iter().all(|m| *m == final_mac),
        "another MAC still claims the VIP"
    );
}

/// While it owns by the segment the survivor cannot commit, yet it must keep judging
/// backends and pinning clients: its own health verdicts and new pins apply to its own
/// tables only (docs/design.md#pair-segment), and the peer's return drops them for the log.
#[test]
fn without_a_quorum_the_survivor_applies_its_own_verdicts_and_pins() {
    if !can_run_lab() {
        return;
    }
    let mut web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1]);
    web.check = Some((200, 1, 2));
    let web = web.with_persistence("60s");
    let mut p = Pair::start_with(vec![web]);
    let old = p.owner();
    let survivor = 1 - old;
    let client = p.lab.clients()[0].clone();
    let addr = p.web();
    p.kill(old);
    let owns = wait_for(Duration::from_secs(5), || {
        (p.arbiter(survivor) == Some("segment")).then_some(())
    });
    assert!(
        owns.is_some(),
        "the survivor did not take over\n{}",
        p.logs()
    );
    let metrics = |p: &Pair| lab::scrape(&p.lab.nodes()[survivor]).expect("scrape");
    let before = metrics(&p);
    let local_before = before.sum("dsrlb_persistence_local_writes_total");

    // A new client is pinned, locally: into this node's mirror, not the replicated table
    // (`dsrlb_persistence_entries`), which no commit can reach now.
    let entries = before.get("dsrlb_persistence_entries", &[("farm", "web")]);
    assert!(
        client.run(|| served(addr)).is_some(),
        "not served by the survivor"
    );
    let pinned = wait_for(Duration::from_secs(3), || {
        let m = metrics(&p);
        (m.sum("dsrlb_persistence_local_writes_total") > local_before
            && m.get("dsrlb_persistence_entries", &[("farm", "web")]) == entries)
            .then_some(())
    });
    assert!(
        pinned.is_some(),
        "no local pin while owning by the segment\n{}",
        p.logs()
    );

    // A backend dies: the survivor's own check takes it out of its table and the client,
    // whose pin named it or not, is served by the other one.
    p.lab.stop_backend(0).expect("stop b1");
    let judged = wait_for(Duration::from_secs(5), || {
        let m = metrics(&p);
        (m.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b1")]) == 0.0
            && m.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b2")]) == 1.0)
            .then_some(())
    });
    assert!(
        judged.is_some(),
        "the survivor's health verdict did not apply locally\n{}",
        p.logs()
    );
    let answer = client.run(|| served(addr));
    assert_eq!(
        answer.as_deref(),
        Some("b2"),
        "not served by the healthy backend"
    );
    assert_eq!(
        p.arbiter(survivor),
        Some("segment"),
        "ownership moved meanwhile"
    );
}
