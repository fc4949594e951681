//! SIGHUP on the leader of a real 3-node cluster reloads the admin token without a restart:
//! the node stays leader and VIP owner in the same term, the new token is accepted and the
//! old one refused there, and the log says what was reloaded. The other nodes, not
//! signalled, still take the old token (a reload is per node, as an operator rolls it).

use crate::admin_support::{client_with, endpoint, in_client};
use crate::common::{ClusterLab, can_run_lab, wait_for, web_and_echo};
use nix::sys::signal::Signal;
use proto::admin::v1 as pb;
use std::time::Duration;

#[test]
fn sighup_on_the_leader_reloads_the_admin_token() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let old = c.lab.admin_token().expect("admin token");
    let new = format!("{old}-rotated");
    let (e_owner, e_other) = (endpoint(&c.lab, owner), endpoint(&c.lab, (owner + 1) % 3));
    let status = |e: String, token: &str| {
        let token = token.to_string();
        in_client(&c.lab, move || async move {
            client_with(e, Some(token))
                .await
                .status(pb::StatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
    };
    let before = status(e_owner.clone(), &old).expect("status with the token");
    assert_eq!(before.leader, owner as u64 + 1);

    // The token file keeps its mode (600); only its content changes.
    std::fs::write(c.lab.admin_token_file().expect("path"), &new).expect("rewrite token");
    let proc = c.procs[owner].as_ref().expect("owner runs");
    proc.signal(Signal::SIGHUP).expect("SIGHUP");
    let log = wait_for(Duration::from_secs(5), || {
        let log = proc.read_log();
        log.contains("reload done").then_some(log)
    })
    .unwrap_or_else(|| panic!("no reload in the log:\n{}", c.logs()));
    assert!(log.contains("reloaded=[\"admin token\"]"), "{log}");

    let after = status(e_owner.clone(), &new).expect("the new token is accepted");
    assert_eq!(
        (after.leader, after.term, after.vip_owner),
        (before.leader, before.term, owner as u64 + 1),
        "still leader and owner, in the same term"
    );
    assert_eq!(c.lab.owners(), vec![owner], "still the only owner");
    let refused = status(e_owner, &old).expect_err("the old token is refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    status(e_other, &old).expect("a node not signalled keeps its token");
    let exited = c.procs[owner]
        .as_mut()
        .expect("owner")
        .try_wait()
        .expect("wait");
    assert_eq!(exited, None, "the node ended:\n{}", c.logs());
}
