//! `dsrctl` against a real 3-node cluster when things are wrong: a wrong or missing admin
//! token is refused with one line naming the endpoint and what to check (exit 1); the
//! environment variables stand in for the options; with the first endpoint's node killed,
//! reads and writes go to the next endpoint; with only dead endpoints, one line says which
//! could not be reached.

use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use dsrctl::view::{FarmsView, StatusView};
use lab::ctl::{Ctl, command, output, run_in, strings};
use lab::lbnode::ADMIN_PORT;
use std::path::Path;

fn endpoint(c: &ClusterLab, i: usize) -> String {
    format!("http://{}:{ADMIN_PORT}", c.lab.nodes()[i].ip)
}

/// `dsrctl --endpoint <endpoints> [--token-file <token>] args…` in the client host.
fn dsrctl(c: &ClusterLab, endpoints: &[String], token: Option<&Path>, args: &[&str]) -> Ctl {
    let mut all = strings(&["--endpoint", &endpoints.join(",")]);
    if let Some(t) = token {
        all.extend(strings(&["--token-file", t.to_str().expect("utf-8 path")]));
    }
    all.extend(strings(args));
    run_in(&c.lab.clients()[0], &all)
}

#[test]
fn refused_tokens_dead_endpoints_and_failover() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let (f1, f2) = ((owner + 1) % 3, (owner + 2) % 3);
    let id = |i: usize| i as u64 + 1;
    let token = c.lab.admin_token_file().expect("admin token");
    let wrong = c.lab.dir().join("wrong-admin.token");
    std::fs::write(&wrong, "not-the-admin-token\n").expect("write");
    let e: Vec<String> = (0..3).map(|i| endpoint(&c, i)).collect();

    // A wrong token and no token: refused by the first endpoint, not tried elsewhere.
    let refused = |ep: &str| {
        format!(
            "dsrctl: refused: the admin token was rejected by {ep}; check --token-file / \
             DSRCTL_TOKEN_FILE and the node's [admin] token_file"
        )
    };
    let both = [e[f1].clone(), e[owner].clone()];
    let r = dsrctl(&c, &both, Some(&wrong), &["status"]);
    assert_eq!(r.failed_one_line(), refused(&e[f1]));
    assert!(r.stdout.is_empty(), "{r:#?}");
    assert!(!r.stderr.contains("not-the-admin-token"), "{r:#?}");
    let r = dsrctl(&c, &both, None, &["farm", "list"]);
    assert_eq!(r.failed_one_line(), refused(&e[f1]));
    let r = dsrctl(
        &c,
        &both,
        Some(&wrong),
        &["backend", "set", "web", "b1", "--weight", "7"],
    );
    assert_eq!(r.failed_one_line(), refused(&e[f1]));

    // DSRCTL_ENDPOINT and DSRCTL_TOKEN_FILE stand in for the options.
    let mut cmd = command(&strings(&["-o", "json", "status"]));
    cmd.env("DSRCTL_ENDPOINT", &e[f2])
        .env("DSRCTL_TOKEN_FILE", &token);
    let r = c.lab.clients()[0].run(move || output(cmd)).ok();
    let st: StatusView = r.json();
    assert_eq!((st.answered_by, st.leader), (id(f2), Some(id(owner))));

    // Kill f1: with it first in the list, reads and writes are served by the next one.
    c.kill(f1);
    let dead_first = [e[f1].clone(), e[f2].clone()];
    let farms: FarmsView = dsrctl(
        &c,
        &dead_first,
        Some(&token),
        &["-o", "json", "farm", "list"],
    )
    .ok()
    .json();
    assert_eq!(farms.answered_by, id(f2));
    let out = dsrctl(
        &c,
        &dead_first,
        Some(&token),
        &["backend", "set", "web", "b1", "--weight", "3"],
    )
    .ok()
    .stdout;
    assert!(
        out.starts_with("backend b1 of farm web updated")
            && out.ends_with(&format!("request taken by node {})\n", id(f2))),
        "{out}"
    );
    // The change is the cluster's: the leader has it too.
    let list = dsrctl(
        &c,
        &[e[owner].clone()],
        Some(&token),
        &["backend", "list", "web"],
    )
    .ok()
    .stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with("b1 ") && l.split_whitespace().nth(3) == Some("3")),
        "{list}"
    );

    // Only dead endpoints: one line naming them and what to check.
    let r = dsrctl(&c, &[e[f1].clone()], Some(&token), &["status"]);
    let line = r.failed_one_line();
    assert!(
        line.starts_with(&format!("dsrctl: cannot reach {}: ", e[f1])),
        "{line}"
    );
    assert!(
        line.ends_with("; check --endpoint and that dsrlb runs with [admin] listen"),
        "{line}"
    );
}
