//! `/healthz` and `/readyz` on the metrics port of real nodes: a node whose peers are not
//! up yet is healthy (the process serves) but not ready (no leader known); once the rest of
//! its cluster starts it becomes ready (leader known, forwarding table published).

use crate::common::{can_run_lab, dsrlb, wait_for, web_and_echo};
use lab::lbnode::METRICS_PORT;
use lab::{Lab, LabSpec, NodeOptions};
use std::net::SocketAddr;
use std::time::Duration;

fn get(lab: &Lab, i: usize, path: &'static str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    lab.nodes()[i]
        .try_run(move || lab::http_get(addr, path))
        .ok()?
        .ok()
        .map(|r| (r.status, r.body))
}

#[test]
fn healthy_at_once_ready_with_a_leader_and_a_table() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&LabSpec {
        nodes: 3,
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let farms = web_and_echo(2);
    let first = lab
        .spawn_node(0, dsrlb(), &farms, &NodeOptions::default())
        .expect("node 1 starts");
    let health = wait_for(Duration::from_secs(10), || get(&lab, 0, "/healthz"))
        .unwrap_or_else(|| panic!("no /healthz:\n{}", first.read_log()));
    assert_eq!(health, (200, "ok\n".into()));
    // Alone, of three members: no quorum, no leader.
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = get(&lab, 0, "/readyz").expect("/readyz answers");
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("not ready: no leader known"), "{body}");

    let _rest: Vec<_> = (1..3)
        .map(|i| {
            lab.spawn_node(i, dsrlb(), &farms, &NodeOptions::default())
                .expect("node starts")
        })
        .collect();
    let ready = wait_for(Duration::from_secs(15), || {
        (0..3)
            .all(|i| get(&lab, i, "/readyz").is_some_and(|(c, _)| c == 200))
            .then_some(())
    });
    assert!(
        ready.is_some(),
        "not every node became ready: {:?}",
        (0..3).map(|i| get(&lab, i, "/readyz")).collect::<Vec<_>>()
    );
    assert_eq!(get(&lab, 0, "/readyz"), Some((200, "ready\n".into())));
}
