//! The ARP-flux watch (issue #15, docs/design.md#arp-flux): in a cluster of two nodes and a
//! witness, a backend set up right is never reported, nor is a member's answer to another
//! member's question; once the backend answers ARP for the VIP (`arp_ignore=0`), every
//! datapath node counts the conflict, logs it once naming the backend, and `dsrctl status`
//! shows it as a warning.

use crate::common::{ClusterLab, can_run_lab, wait_for, web_and_echo};
use lab::ctl::{run_in, strings};
use lab::lbnode::ADMIN_PORT;
use std::time::Duration;

/// `dsrctl status` as node `i` answers it.
fn status(c: &ClusterLab, i: usize) -> String {
    let token = c.lab.admin_token_file().expect("admin token");
    let all = strings(&[
        "--endpoint",
        &format!("http://{}:{ADMIN_PORT}", c.lab.nodes()[i].ip),
        "--token-file",
        token.to_str().expect("utf-8 path"),
        "status",
    ]);
    run_in(&c.lab.clients()[0], &all).ok().stdout
}

fn conflicts(c: &ClusterLab, i: usize) -> f64 {
    lab::scrape(&c.lab.nodes()[i]).expect("metrics").get(
        "dsrlb_vip_conflicts_total",
        &[("vip", &c.lab.vip().to_string())],
    )
}

#[test]
fn a_backend_answering_arp_for_the_vip_is_named_by_every_node() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[2]);
    let owner = c.sole_owner();
    let follower = 1 - owner;

    // Two passes of questions (one every 5 s) and the members' MACs asked twice over: the
    // owner answered the follower's questions, and nobody else answered.
    std::thread::sleep(Duration::from_secs(11));
    for i in [owner, follower] {
        assert_eq!(conflicts(&c, i), 0.0, "node {i} before\n{}", c.logs());
        let s = status(&c, i);
        assert!(!s.contains("WARNING"), "node {i}: {s}");
    }

    let b2 = &c.lab.backends()[1];
    for i in ["all", "eth0"] {
        b2.set_sysctl(&format!("net/ipv4/conf/{i}/arp_ignore"), "0")
            .expect("arp_ignore=0 on b2");
    }
    let b2_mac = b2.mac.to_string();
    for i in [owner, follower] {
        let s = wait_for(Duration::from_secs(15), || {
            let s = status(&c, i);
            s.contains("WARNING: ARP flux").then_some(s)
        })
        .unwrap_or_else(|| panic!("node {i} shows no conflict in 15 s\n{}", c.logs()));
        eprintln!("node {i}:\n{s}");
        let warning = s
            .lines()
            .find(|l| l.starts_with("WARNING: ARP flux"))
            .expect("a warning line");
        assert!(
            warning.contains(&format!(
                "echo/b2, web/b2 ({b2_mac}) answers ARP for {}",
                c.lab.vip()
            )),
            "{warning}"
        );
        assert!(
            warning.contains("set arp_ignore=1, arp_announce=2"),
            "{warning}"
        );
        assert_eq!(
            s.matches("WARNING").count(),
            1,
            "b1 and the members stay out: {s}"
        );
        assert!(conflicts(&c, i) >= 1.0, "node {i}: the counter");
    }
    // The warning is logged on the watch's next round (every 2 s); then no more of it.
    let logs = wait_for(Duration::from_secs(5), || {
        let logs = c.logs();
        (logs.matches("ARP flux").count() >= 2).then_some(logs)
    })
    .unwrap_or_else(|| c.logs());
    std::thread::sleep(Duration::from_secs(5));
    let later = c.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains("ARP flux")).collect();
    assert_eq!(lines.len(), 2, "one warning per node: {lines:#?}");
    assert_eq!(later.matches("ARP flux").count(), 2, "logged once: {later}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("backend=echo/b2, web/b2")
                || l.contains("backend=\"echo/b2, web/b2\"")),
        "{lines:#?}"
    );
}
