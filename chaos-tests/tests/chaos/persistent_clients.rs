//! Persistent clients through a backend change and a kill -9 of the leader: 16 client
//! addresses get pinned on a `srcip` web farm, a backend's weight is raised so that Maglev
//! alone would now send many of them elsewhere, and the owner is killed. Every pinned client
//! must reach its old backend through the new owner, which only its replicated table can
//! tell it. (The pins invariant's own failure is shown in `can_fail`.)

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chaos_tests::admin::{block_on_in, client};
use chaos_tests::invariants::pins;
use chaos_tests::{Scenario, Setup};
use lab::{BACKEND_HTTP_PORT, HttpConn, scrape, wait_for};
use proto::admin::v1 as pb;

/// Client addresses besides the client's own (which the other workloads use).
const CLIENTS: usize = 16;

/// The backend that answers one request from `src`, if any within 3 s.
fn backend_from(s: &Scenario, src: Ipv4Addr) -> Option<String> {
    let web = SocketAddr::from((s.c.lab.vip(), BACKEND_HTTP_PORT));
    s.client().run(|| {
        wait_for(Duration::from_secs(3), || {
            let mut conn =
                HttpConn::connect_from(Some(src), web, Duration::from_millis(300)).ok()?;
            conn.get("/", false).ok()?.backend().map(str::to_owned)
        })
    })
}

#[test]
fn persistent_clients() {
    let setup = Setup {
        client_extra_ips: CLIENTS,
        web_persistence: Some("300s".into()),
        ..Setup::default()
    };
    let Some(mut s) = Scenario::start("persistent_clients", setup) else {
        return;
    };
    let sources: Vec<Ipv4Addr> = s.c.lab.client_extra_ips().to_vec();

    // Pin: three connections each, one backend each.
    let mut pinned = BTreeMap::new();
    for &src in &sources {
        let seen: Vec<Option<String>> = (0..3).map(|_| backend_from(&s, src)).collect();
        match seen.as_slice() {
            [Some(a), Some(b), Some(c)] if a == b && b == c => {
                pinned.insert(src, a.clone());
            }
            _ => s.problem(format!("{src} did not keep one backend: {seen:?}")),
        }
    }
    let replicated = wait_for(Duration::from_secs(5), || {
        (0..s.c.lab.nodes().len())
            .all(|i| {
                scrape(&s.c.lab.nodes()[i]).is_ok_and(|m| {
                    m.get("dsrlb_persistence_entries", &[("farm", "web")]) as usize >= CLIENTS
                })
            })
            .then_some(())
    });
    if replicated.is_none() {
        s.problem("the pins never reached every node".into());
    }

    // The backend fewest clients are pinned to gets most of the weight.
    let names: Vec<String> = s.c.lab.backends().iter().map(|b| b.name.clone()).collect();
    let heavy = names
        .iter()
        .min_by_key(|n| pinned.values().filter(|b| b == n).count())
        .cloned()
        .unwrap_or_default();
    let nodes: Vec<usize> = (0..s.c.lab.nodes().len()).collect();
    let changed = client(&s.c.lab, &nodes, Duration::from_secs(5)).and_then(|mut c| {
        let req = pb::UpdateBackendRequest {
            farm: "web".into(),
            name: heavy.clone(),
            weight: Some(30),
            ..Default::default()
        };
        block_on_in(&s.client(), || async move {
            c.call(async |mut api| api.update_backend(req.clone()).await)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        })?
    });
    match changed {
        Ok(()) => {
            s.note(format!("{heavy} now weighs 30 of 32"));
        }
        Err(e) => s.problem(format!("weight change refused: {e}")),
    }
    std::thread::sleep(s.rng.millis(100, 500));

    if let Some(old) = s.kill_leader() {
        let after: BTreeMap<Ipv4Addr, Option<String>> = sources
            .iter()
            .map(|&src| (src, backend_from(&s, src)))
            .collect();
        for v in pins::check(&pinned, &after) {
            s.problem(v);
        }
        s.restart(old);
        s.wait_streams_moving();
    }
    let v = s.finish();
    v.assert_ok();
    assert_eq!(
        pinned.len(),
        CLIENTS,
        "every client was pinned\n{}",
        v.details
    );
}
