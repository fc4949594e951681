//! A `dsrctl` change seen in the traffic: in a 3-node lab cluster, `backend set web b1
//! --state off` (sent to a follower) takes b1 out of new connections through the VIP, and
//! `--state up` brings it back; `stats` shows the packets the owner forwarded.

use crate::common::{ClusterLab, can_run_lab, quick_get, wait_for, web_and_echo};
use dsrctl::view::StatsView;
use lab::BACKEND_HTTP_PORT;
use lab::ctl::{Ctl, run_in, strings};
use lab::lbnode::ADMIN_PORT;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

/// The backends that answered `n` new connections to `addr` (failed attempts skipped).
fn answered_by(c: &ClusterLab, addr: SocketAddr, n: usize) -> BTreeSet<String> {
    c.lab.clients()[0].run(|| (0..n).filter_map(|_| quick_get(addr).ok()).collect())
}

#[test]
fn backend_state_changes_move_new_connections() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let follower = (owner + 1) % 3;
    let token = c.lab.admin_token_file().expect("admin token");
    let ctl = |args: &[&str]| -> Ctl {
        let mut all = strings(&[
            "--endpoint",
            &format!("http://{}:{ADMIN_PORT}", c.lab.nodes()[follower].ip),
            "--token-file",
            token.to_str().expect("utf-8 path"),
        ]);
        all.extend(strings(args));
        run_in(&c.lab.clients()[0], &all)
    };
    let web = SocketAddr::from((c.lab.vip(), BACKEND_HTTP_PORT));
    let both: BTreeSet<String> = ["b1", "b2"].map(String::from).into();

    // Maglev spreads new connections over both (20 misses of one is a 2^-20 chance).
    let seen = wait_for(Duration::from_secs(10), || {
        let s = answered_by(&c, web, 20);
        (s == both).then_some(s)
    });
    assert!(seen.is_some(), "both backends never served\n{}", c.logs());

    ctl(&["backend", "set", "web", "b1", "--state", "off"]).ok();
    let only_b2 = wait_for(Duration::from_secs(10), || {
        let s = answered_by(&c, web, 20);
        (s.len() == 1 && s.contains("b2")).then_some(s)
    });
    assert!(only_b2.is_some(), "b1 still served after off\n{}", c.logs());
    let list = ctl(&["backend", "list", "web"]).ok().stdout;
    eprintln!("after `backend set web b1 --state off`:\n{list}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("b1 ") && l.split_whitespace().nth(4) == Some("off")),
        "{list}"
    );

    ctl(&["backend", "set", "web", "b1", "--state", "up"]).ok();
    let back = wait_for(Duration::from_secs(10), || {
        let s = answered_by(&c, web, 20);
        (s == both).then_some(s)
    });
    assert!(back.is_some(), "b1 never came back\n{}", c.logs());

    let stats = ctl(&["stats"]).ok().stdout;
    eprintln!("dsrctl stats:\n{stats}");
    let s: StatsView = ctl(&["-o", "json", "stats"]).ok().json();
    let web_stats = s.farms.iter().find(|f| f.name == "web").expect("web stats");
    for b in &web_stats.backends {
        assert!(b.packets > 0, "{} forwarded nothing: {s:?}", b.name);
    }
}
