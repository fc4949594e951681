//! Backend admin states and priority tiers, changed through the admin API on a running node
//! and seen in the traffic: a long-lived stream to a drained backend keeps going while new
//! connections avoid it; `off` cuts a stream at once; a higher tier serves only while the
//! lower one has no live backend, and hands back when it has one again.

use crate::admin_support::{Client, endpoint, in_client};
use crate::common::{SingleNode, can_run_lab, quick_get, wait_for};
use lab::{LabFarm, Stream};
use proto::admin::v1 as pb;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Sets fields of backend `name` of farm `web` through the admin API.
fn set(s: &SingleNode, name: &str, state: Option<&str>, priority: Option<u32>) {
    let (e, token) = (endpoint(&s.lab, 0), s.lab.admin_token().unwrap());
    let (name, state) = (name.to_string(), state.map(str::to_string));
    in_client(&s.lab, || async move {
        let mut c: Client = crate::admin_support::client_with(e, Some(token)).await;
        c.update_backend(pb::UpdateBackendRequest {
            farm: "web".into(),
            name,
            state,
            priority,
            ..Default::default()
        })
        .await
        .expect("update backend");
    });
}

/// Packets forwarded per backend of `web`, from the admin API's stats.
fn packets(s: &SingleNode) -> BTreeMap<String, u64> {
    let (e, token) = (endpoint(&s.lab, 0), s.lab.admin_token().unwrap());
    in_client(&s.lab, || async move {
        let mut c = crate::admin_support::client_with(e, Some(token)).await;
        let st = c.stats(pb::StatsRequest { node: 0 }).await.expect("stats");
        let st = st.into_inner();
        assert!(st.vip_owner);
        st.farms
            .into_iter()
            .find(|f| f.name == "web")
            .expect("web in stats")
            .backends
            .into_iter()
            .map(|b| (b.name, b.packets))
            .collect()
    })
}

/// Which backends answer `n` new connections.
fn answering(s: &SingleNode, n: usize) -> BTreeMap<String, usize> {
    let addr = SocketAddr::from((s.lab.vip(), lab::BACKEND_HTTP_PORT));
    s.lab.clients()[0].run(|| {
        let mut seen = BTreeMap::new();
        for i in 0..n {
            let who = wait_for(Duration::from_secs(3), || quick_get(addr).ok())
                .unwrap_or_else(|| panic!("request {i} got no answer"));
            *seen.entry(who).or_insert(0) += 1;
        }
        seen
    })
}

/// Waits (bounded) until ten new connections in a row are answered only by `expected`:
/// the write returns once the change is applied, the node's table follows a moment later.
fn settle(s: &SingleNode, expected: &[&str]) {
    let settled = wait_for(Duration::from_secs(5), || {
        let seen = answering(s, 10);
        seen.keys()
            .all(|k| expected.contains(&k.as_str()))
            .then_some(())
    });
    assert!(settled.is_some(), "traffic never settled on {expected:?}");
}

/// The backend whose packet count grows while only `stream` runs.
fn backend_of_stream(s: &SingleNode, before: &BTreeMap<String, u64>, stream: &Stream) -> String {
    wait_for(Duration::from_secs(5), || {
        if stream.received() < 64 << 10 {
            return None;
        }
        let now = packets(s);
        let grown: Vec<String> = now
            .iter()
            .filter(|(b, p)| **p > before.get(*b).copied().unwrap_or(0))
            .map(|(b, _)| b.clone())
            .collect();
        match grown.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    })
    .expect("the stream's backend shows in the stats")
}

#[test]
fn drain_keeps_flows_off_cuts_them_and_tiers_fail_over() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1]);
    let s = SingleNode::start(2, 0, &[web]);
    let addr = SocketAddr::from((s.lab.vip(), lab::BACKEND_HTTP_PORT));
    let client = s.lab.clients()[0].clone();

    // Drain: the stream's backend keeps the stream, new connections go elsewhere.
    let before = packets(&s);
    let total = 1_500_000;
    let stream = Stream::start(&client, addr, total, 300_000);
    let drained = backend_of_stream(&s, &before, &stream);
    set(&s, &drained, Some("drain"), None);
    let at_drain = stream.received();
    let other = if drained == "b1" { "b2" } else { "b1" };
    settle(&s, &[other]);
    let seen = answering(&s, 30);
    assert!(
        !seen.contains_key(&drained),
        "new connections reached drained {drained}: {seen:?}"
    );
    assert!(at_drain < total, "the stream ended before the drain");
    assert_eq!(
        stream.join().expect("a drained backend keeps its stream"),
        total
    );

    // Off: a stream to the backend that is switched off breaks.
    set(&s, &drained, Some("up"), None);
    let before = packets(&s);
    let stream = Stream::start(&client, addr, 3_000_000, 300_000);
    let cut = backend_of_stream(&s, &before, &stream);
    set(&s, &cut, Some("off"), None);
    let outcome = stream.join();
    assert!(
        outcome.is_err(),
        "a stream to {cut} survived `off`: {outcome:?}"
    );
    let up = if cut == "b1" { "b2" } else { "b1" };
    settle(&s, &[up]);
    let seen = answering(&s, 20);
    assert!(
        !seen.contains_key(&cut),
        "new connections reached {cut}, which is off: {seen:?}"
    );
    set(&s, &cut, Some("up"), None);

    // Priority tiers: b2 is a backup; it serves only while b1 is down (here: off).
    set(&s, "b2", None, Some(2));
    settle(&s, &["b1"]);
    let seen = answering(&s, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["b1"], "{seen:?}");
    set(&s, "b1", Some("off"), None);
    settle(&s, &["b2"]);
    let seen = answering(&s, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["b2"], "{seen:?}");
    set(&s, "b1", Some("up"), None);
    settle(&s, &["b1"]);
    let seen = answering(&s, 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["b1"], "{seen:?}");
}
