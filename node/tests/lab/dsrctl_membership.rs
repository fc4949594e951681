//! `dsrctl member add|remove` as the real binary: a fourth `dsrlb` process, started with the
//! cluster's member list plus itself (so it waits to be contacted), is added through a
//! follower and becomes a voter that every node's status lists; then it is removed.

use crate::common::{can_run_lab, dsrlb, wait_for, web_and_echo};
use dsrctl::view::{MembershipView, StatusView};
use lab::ctl::{Ctl, run_in, strings};
use lab::lbnode::ADMIN_PORT;
use lab::{Lab, LabProcess, LabSpec, PEER_PORT};
use std::time::Duration;

/// Starts lab node `i` with its usual config, but `members` limited to `members` nodes.
fn spawn_with_members(lab: &Lab, i: usize, members: usize) -> LabProcess {
    let farms = web_and_echo(2);
    let list: Vec<String> = (0..members)
        .map(|k| format!("\"{}={}:{PEER_PORT}\"", k + 1, lab.nodes()[k].ip))
        .collect();
    let text: String = lab
        .node_config(i, &farms)
        .expect("node config")
        .lines()
        .map(|l| {
            if l.starts_with("members = ") {
                format!("members = [{}]\n", list.join(", "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert!(
        text.contains(&list.join(", ")),
        "no members line in:\n{text}"
    );
    let path = lab.dir().join(format!("member-test-node{i}.toml"));
    std::fs::write(&path, text).expect("write config");
    lab.nodes()[i]
        .spawn_with_env(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            [("RUST_LOG", "info")],
        )
        .expect("dsrlb starts")
}

#[test]
fn member_add_then_remove_a_fourth_node() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&LabSpec {
        nodes: 4,
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    // Declared after the lab: the processes are killed before the namespaces go.
    let mut procs: Vec<LabProcess> = (0..3).map(|i| spawn_with_members(&lab, i, 3)).collect();
    lab.wait_ready(
        &mut procs,
        &[0, 1, 2],
        &web_and_echo(2),
        Duration::from_secs(20),
    )
    .expect("a 3-node cluster with one owner");
    procs.push(spawn_with_members(&lab, 3, 4));

    let token = lab.admin_token_file().expect("admin token");
    let ctl = |i: usize, args: &[&str]| -> Ctl {
        let mut all = strings(&[
            "--endpoint",
            &format!("http://{}:{ADMIN_PORT}", lab.nodes()[i].ip),
            "--token-file",
            token.to_str().expect("utf-8 path"),
            "--timeout",
            "30s",
        ]);
        all.extend(strings(args));
        run_in(&lab.clients()[0], &all)
    };
    let st: StatusView = ctl(0, &["-o", "json", "status"]).ok().json();
    let leader = st.leader.expect("a leader") as usize - 1;
    let follower = (leader + 1) % 3;
    let logs = || {
        procs
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name(), p.log_tail(10)))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let new_addr = format!("{}:{PEER_PORT}", lab.nodes()[3].ip);
    let r = ctl(follower, &["-o", "json", "member", "add", "4", &new_addr]);
    assert_eq!(r.code, 0, "{r:#?}\n{}", logs());
    let m: MembershipView = r.json();
    assert_eq!(
        (m.voters, m.learners),
        (vec![1, 2, 3, 4], vec![]),
        "{}",
        logs()
    );
    let table = ctl(leader, &["status"]).ok().stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("4   {new_addr}"))),
        "{table}"
    );
    // The new node has the cluster's state: it answers reads with the farms.
    let farms = wait_for(Duration::from_secs(10), || {
        let r = ctl(3, &["farm", "list"]);
        (r.code == 0 && r.stdout.contains("web") && r.stdout.contains("echo")).then_some(r)
    });
    assert!(farms.is_some(), "node 4 never served the farms\n{}", logs());

    let out = ctl((follower + 1) % 3, &["member", "remove", "4"])
        .ok()
        .stdout;
    assert!(out.starts_with("voters       1, 2, 3\n"), "{out}");
    let st: StatusView = ctl(leader, &["-o", "json", "status"]).ok().json();
    let ids: Vec<u64> = st.members.iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 2, 3], "{st:?}");
}
