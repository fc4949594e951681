//! Membership through the admin API on a real cluster: a fourth node started later is added
//! (learner, caught up, voter), takes leadership and with it the VIP (the outage of that
//! transfer, measured from the client, is printed), hands it back and is removed. The last
//! voter of a cluster of one cannot be removed.

use crate::admin_support::{Client, client_with, clients, endpoint, eventually, in_client};
use crate::common::{can_run_lab, dsrlb, quick_get, served, wait_for, web_and_echo};
use lab::{Lab, LabSpec, NodeOptions, scrape};
use proto::admin::v1 as pb;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::Code;

/// Requests through the VIP in a loop, in the client host, until stopped: the longest time
/// between two answered requests.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Duration, usize, usize)>,
}

impl Prober {
    fn start(lab: &Lab) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let host = lab.clients()[0].clone();
        let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
        let thread = std::thread::spawn(move || {
            host.run(move || {
                let (mut last_ok, mut longest, mut ok, mut failed) =
                    (Instant::now(), Duration::ZERO, 0, 0);
                // Bounded: at most ten minutes of probing whatever the flag does.
                for _ in 0..60_000 {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if quick_get(addr).is_ok() {
                        longest = longest.max(last_ok.elapsed());
                        last_ok = Instant::now();
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                (longest, ok, failed)
            })
        });
        Prober { stop, thread }
    }

    fn finish(self) -> (Duration, usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("prober thread")
    }
}

/// Waits until every node in `endpoints` reports the same leader and term twice, half a
/// second apart (a freshly promoted voter may start an election of its own first).
fn settled(lab: &Lab, endpoints: &[String], token: &str) -> Option<(u64, u64)> {
    let (eps, tok) = (endpoints.to_vec(), token.to_string());
    in_client(lab, || async move {
        let mut c = clients(&eps, &tok).await;
        let mut last = None;
        for _ in 0..20 {
            let mut views = Vec::new();
            for client in c.iter_mut() {
                if let Ok(st) = client.status(pb::StatusRequest {}).await {
                    let st = st.into_inner();
                    views.push((st.leader, st.term));
                }
            }
            let same = views.len() == eps.len() && views.windows(2).all(|w| w[0] == w[1]);
            let now = same.then(|| views[0]).filter(|(l, _)| *l != 0);
            if now.is_some() && now == last {
                return now;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    })
}

/// Leader transfer to `to` asked at `endpoint`; tried up to three times, the cluster
/// settling in between (each failure is printed).
fn transfer(
    lab: &Lab,
    endpoints: &[String],
    token: &str,
    at: usize,
    to: u64,
) -> Result<u64, String> {
    let mut last = String::new();
    for attempt in 1..=3 {
        let (e, tok) = (endpoints[at].clone(), token.to_string());
        let r = in_client(lab, || async move {
            let mut c = client_with(e, Some(tok)).await;
            c.transfer_leader(pb::TransferLeaderRequest { to })
                .await
                .map(|r| r.into_inner().leader)
                .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
        });
        match r {
            Ok(l) => return Ok(l),
            Err(e) => {
                eprintln!("transfer to {to}, attempt {attempt}: {e}");
                last = e;
                settled(lab, endpoints, token);
            }
        }
    }
    Err(last)
}

fn owners(lab: &Lab, among: &[usize]) -> Vec<usize> {
    among
        .iter()
        .copied()
        .filter(|&i| scrape(&lab.nodes()[i]).is_ok_and(|m| m.get("dsrlb_vip_owner", &[]) == 1.0))
        .collect()
}

#[test]
fn a_fourth_node_joins_leads_and_leaves() {
    if !can_run_lab() {
        return;
    }
    let farms = web_and_echo(2);
    let mut lab = Lab::build(&LabSpec {
        nodes: 4,
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let first = [0, 1, 2];
    let opts = NodeOptions::default();
    let mut procs: Vec<_> = first
        .iter()
        .map(|&i| {
            lab.spawn_node_members(i, dsrlb(), &farms, &opts, &first)
                .expect("node starts")
        })
        .collect();
    lab.wait_ready(&mut procs, &first, &farms, Duration::from_secs(20))
        .expect("three nodes serve");
    // The fourth node lists the cluster and itself; nobody has added it yet.
    let fourth = lab
        .spawn_node_members(3, dsrlb(), &farms, &opts, &[0, 1, 2, 3])
        .expect("node 4 starts");
    procs.push(fourth);
    let expected_up: usize = farms.iter().map(|f| f.backends.len()).sum();
    let owner = wait_for(Duration::from_secs(5), || {
        match owners(&lab, &first).as_slice() {
            [one] => Some(*one),
            _ => None,
        }
    })
    .expect("one owner");
    let follower = (owner + 1) % 3;
    let endpoints: Vec<String> = (0..4).map(|i| endpoint(&lab, i)).collect();
    let token = lab.admin_token().unwrap();
    let address4 = format!("{}:{}", lab.nodes()[3].ip, lab::PEER_PORT);

    // Added through a follower: learner, caught up, then voter.
    wait_for(Duration::from_secs(10), || scrape(&lab.nodes()[3]).ok())
        .expect("node 4 runs (its metrics answer)");
    let (eps, tok) = (endpoints.clone(), token.clone());
    let added = in_client(&lab, || async move {
        let mut c: Vec<Client> = clients(&eps[..3], &tok).await;
        let r = c[follower]
            .add_member(pb::AddMemberRequest {
                id: 4,
                address: address4,
            })
            .await
            .expect("add member")
            .into_inner();
        // Caught up: the leader's replication progress for node 4 has reached its log.
        let st = eventually(Duration::from_secs(5), || {
            let mut leader = c[owner].clone();
            async move {
                let st = leader.status(pb::StatusRequest {}).await.ok()?.into_inner();
                let m4 = st.members.iter().find(|m| m.id == 4)?;
                (m4.last_log_index >= 1 && m4.lag == Some(0)).then_some(st)
            }
        })
        .await
        .expect("node 4 caught up in the leader's status");
        (r, st)
    });
    let (reply, status) = added;
    assert_eq!(reply.voters, vec![1, 2, 3, 4], "{reply:?}");
    let m4 = status.members.iter().find(|m| m.id == 4).expect("member 4");
    assert_eq!(m4.role, "voter");
    assert!(m4.reachable && m4.last_log_index >= 1, "{m4:?}");

    // Node 4 has the farms and its backends resolved: it can own the VIP.
    wait_for(Duration::from_secs(10), || {
        scrape(&lab.nodes()[3])
            .ok()
            .filter(|m| m.sum("dsrlb_backend_up") as usize == expected_up)
    })
    .expect("node 4 has every backend up");

    // One of the first three leaves before leadership moves, so this test also covers a
    // removal under a live VIP; transfers on four and five voters have their own test
    // (cluster_transfer).
    let leaver = (owner + 2) % 3;
    let removed = remove(&lab, &endpoints[follower], &token, leaver as u64 + 1);
    assert_eq!(removed.len(), 3, "{removed:?}");
    procs[leaver].kill().expect("stop the removed node");
    let live: Vec<String> = [owner, follower, 3]
        .iter()
        .map(|&i| endpoints[i].clone())
        .collect();
    let before = settled(&lab, &live, &token).expect("the cluster settles with node 4");
    eprintln!("settled before the transfer: leader, term = {before:?}");

    // Leadership to node 4 moves the VIP; the client sees a short gap, if any.
    let prober = Prober::start(&lab);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let moved = transfer(&lab, &endpoints, &token, follower, 4);
    let took = started.elapsed();
    let logs = |procs: &[lab::LabProcess]| {
        procs
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- node {} ---\n{}", i + 1, p.log_tail(25)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    match moved {
        Ok(leader) => assert_eq!(leader, 4),
        Err(e) => panic!("transfer to node 4: {e}\n{}", logs(&procs)),
    }
    let new_owner = wait_for(Duration::from_secs(5), || {
        match owners(&lab, &[owner, follower, 3]).as_slice() {
            [3] => Some(3),
            _ => None,
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let (gap, ok, failed) = prober.finish();
    eprintln!(
        "leader transfer to node 4: call took {took:?}; longest gap between answered requests \
         {gap:?} ({ok} answered, {failed} failed; a failed request costs its 200 ms connect timeout)"
    );
    assert_eq!(new_owner, Some(3), "node 4 does not own the VIP");
    let vip_addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    assert!(
        lab.clients()[0].run(|| served(vip_addr)).is_some(),
        "nothing answers through node 4"
    );

    // Back to the first owner, then node 4 leaves.
    settled(&lab, &live, &token).expect("the cluster settles under node 4");
    assert_eq!(
        transfer(&lab, &endpoints, &token, 3, owner as u64 + 1),
        Ok(owner as u64 + 1),
        "transfer back"
    );
    let voters = remove(&lab, &endpoints[follower], &token, 4);
    procs[3].kill().expect("stop node 4");
    let mut expected = vec![owner as u64 + 1, follower as u64 + 1];
    expected.sort();
    assert_eq!(voters, expected);
    assert_eq!(
        wait_for(Duration::from_secs(5), || {
            match owners(&lab, &[owner, follower]).as_slice() {
                [one] => Some(*one),
                _ => None,
            }
        }),
        Some(owner),
        "the first owner owns the VIP again"
    );
    drop(procs);
}

/// RemoveMember asked at `endpoint`; the voters afterwards.
fn remove(lab: &Lab, endpoint: &str, token: &str, id: u64) -> Vec<u64> {
    let (e, tok) = (endpoint.to_string(), token.to_string());
    in_client(lab, || async move {
        let mut c = client_with(e, Some(tok)).await;
        c.remove_member(pb::RemoveMemberRequest { id })
            .await
            .unwrap_or_else(|s| panic!("remove member {id}: {s}"))
            .into_inner()
            .voters
    })
}

#[test]
fn the_last_voter_cannot_be_removed() {
    if !can_run_lab() {
        return;
    }
    let s = crate::common::SingleNode::start(1, 0, &[web_and_echo(1).remove(0)]);
    let (e, token) = (endpoint(&s.lab, 0), s.lab.admin_token().unwrap());
    let code = in_client(&s.lab, || async move {
        let mut c = client_with(e, Some(token)).await;
        let r = c.remove_member(pb::RemoveMemberRequest { id: 1 }).await;
        let st = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.members.len(), 1);
        assert_eq!(st.leader, 1);
        r.map(drop).map_err(|s| s.code())
    });
    assert_eq!(code, Err(Code::FailedPrecondition));
}
