//! The HA pair (docs/design.md#pairs): two voters without a witness are refused (and run,
//! with a warning, only when the operator allows it); two LB nodes with `dsrlb witness`
//! running as `nobody` in a backend's namespace fail over both ways, ride out the witness's
//! death without a takeover, and fail over again once it is back.

use crate::common::{ClusterLab, can_run_lab, dsrlb, served, wait_for, web_and_echo};
use dsrctl::view::StatusView;
use lab::ctl::{run_in, strings};
use lab::lbnode::ADMIN_PORT;
use lab::{Lab, LabSpec, NodeOptions, scrape};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// `dsrctl -o json status` against node `i`, from the client.
fn status(lab: &Lab, i: usize) -> Option<StatusView> {
    let token = lab.admin_token_file().ok()?;
    let mut args = strings(&[
        "--endpoint",
        &format!("http://{}:{ADMIN_PORT}", lab.nodes()[i].ip),
        "--token-file",
    ]);
    args.push(token.to_str()?.to_owned());
    args.extend(strings(&["-o", "json", "status"]));
    let r = run_in(&lab.clients()[0], &args);
    (r.code == 0).then(|| r.json())
}

#[test]
fn a_pair_without_a_witness_is_refused_unless_allowed_and_then_warned_about() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&LabSpec {
        nodes: 2,
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let farms = web_and_echo(2);

    // Refused by check-config and by run, naming the key and the way out.
    let path = lab.dir().join("pair-n1.toml");
    // In n1's namespace: check-config also wants the datapath interface to exist.
    let n1 = lab.nodes()[0].clone();
    let check = |text: &str| {
        std::fs::write(&path, text).expect("write config");
        n1.run(|| {
            std::process::Command::new(dsrlb())
                .args(["check-config", "--config"])
                .arg(&path)
                .output()
                .expect("check-config runs")
        })
    };
    let out = check(&lab.node_config(0, &farms).expect("config"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "check-config accepted a pair: {stderr}"
    );
    assert!(stderr.contains("cluster.members"), "{stderr}");
    assert!(stderr.contains("dsrlb witness"), "{stderr}");
    assert!(stderr.contains("allow_no_failover"), "{stderr}");
    let mut refused = lab
        .spawn_node(0, dsrlb(), &farms, &NodeOptions::default())
        .expect("spawn");
    let exit = wait_for(Duration::from_secs(10), || {
        refused.try_wait().ok().flatten()
    });
    assert_eq!(
        exit.and_then(|s| s.code()),
        Some(2),
        "run did not refuse the pair"
    );
    assert!(refused.log_tail(5).contains("cluster.members"));

    // Allowed: it runs, check-config and status both say it cannot fail over.
    let allowed = NodeOptions {
        cluster_extra: "allow_no_failover = true".into(),
        ..NodeOptions::default()
    };
    let out = check(&lab.node_config_with(0, &farms, &allowed).expect("config"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("warning: no failover: 2 voters, no witness"),
        "{stdout}"
    );
    let mut procs: Vec<_> = (0..2)
        .map(|i| lab.spawn_node(i, dsrlb(), &farms, &allowed).expect("spawn"))
        .collect();
    lab.wait_ready(&mut procs, &[0, 1], &farms, Duration::from_secs(20))
        .expect("the allowed pair starts with one owner");
    let s = status(&lab, 0).expect("status answers");
    assert_eq!(s.failover, "no failover: 2 voters, no witness", "{s:?}");
}

#[test]
fn a_pair_with_a_witness_on_a_backend_fails_over_and_outlives_the_witness() {
    if !can_run_lab() {
        return;
    }
    let mut c = ClusterLab::pair_with_witness(2, &web_and_echo(2));
    let vip = c.lab.vip();
    let web = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let witness = c.external_witness.as_ref().expect("witness").host.clone();
    let client = c.lab.clients()[0].clone();
    let s = status(&c.lab, 0).expect("status answers");
    assert_eq!(s.failover, "survives 1 failure", "{s:?}");
    assert!(
        s.members.iter().any(|m| m.id == 3 && m.reachable),
        "the witness is not a reachable member: {s:?}"
    );

    // kill -9 of the owner: the other LB node takes over, with the witness's vote.
    let first = c.sole_owner();
    let other = 1 - first;
    let killed_at = c.kill(first);
    let owner = c.wait_owner(&[other], Duration::from_secs(10));
    assert_eq!(
        owner,
        Some(other),
        "no takeover after kill -9\n{}",
        c.logs()
    );
    eprintln!(
        "pair+witness: takeover seen {:?} after kill -9",
        killed_at.elapsed()
    );
    assert!(
        client.run(|| served(web)).is_some(),
        "the VIP does not serve after the takeover"
    );

    // The killed node comes back and catches up.
    c.restart(first);
    let mut last = None;
    let caught_up = wait_for(Duration::from_secs(15), || {
        let s = status(&c.lab, other)?;
        let ok = s.members.iter().all(|m| m.reachable && m.lag == Some(0));
        last = Some(s);
        ok.then_some(())
    });
    assert!(
        caught_up.is_some(),
        "node {first} did not catch up: {last:#?}\n{}",
        c.logs()
    );

    // kill -9 of the witness: a quorum of two remains, the owner stays the owner and the VIP
    // keeps answering; the other node never takes over. (With one peer left to acknowledge,
    // a starved machine can let the owner's lease lapse for a few ms and come back: that is
    // not a takeover, and the nodes' logs say so.)
    let takeovers = |c: &ClusterLab, i: usize| {
        scrape(&c.lab.nodes()[i]).map_or(-1.0, |m| m.get("dsrlb_takeovers_total", &[]))
    };
    let before = takeovers(&c, first);
    c.kill_witness().expect("kill the witness");
    let watch_until = Instant::now() + Duration::from_secs(2);
    let mut seen = Vec::new();
    while Instant::now() < watch_until {
        seen.push(c.owners_among(&[0, 1]));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.iter().all(|o| !o.contains(&first)),
        "node {first} took over while the owner lived: {seen:?}\n{}",
        c.logs()
    );
    let owned = seen.iter().filter(|o| **o == vec![other]).count();
    eprintln!(
        "pair+witness, witness down: owner seen in {owned} of {} scrapes",
        seen.len()
    );
    assert!(
        client.run(|| served(web)).is_some(),
        "the VIP stopped serving when the witness died"
    );
    assert_eq!(
        c.wait_owner(&[0, 1], Duration::from_secs(2)),
        Some(other),
        "{}",
        c.logs()
    );
    assert_eq!(
        takeovers(&c, first),
        before,
        "node {first} took the VIP over when the witness died\n{}",
        c.logs()
    );

    // The witness comes back and rejoins: the leader sees it caught up...
    c.restart_witness().expect("restart the witness");
    let rejoined = wait_for(Duration::from_secs(15), || {
        let s = status(&c.lab, other)?;
        s.members
            .iter()
            .any(|m| m.id == 3 && m.reachable && m.lag == Some(0))
            .then_some(())
    });
    assert!(
        rejoined.is_some(),
        "the witness did not rejoin\n{}",
        c.logs()
    );
    assert!(scrape(&witness).is_ok(), "the witness serves no metrics");
    // What a witness costs (docs/design.md#witness quotes it): resident memory and disk.
    let pid = c
        .external_witness
        .as_ref()
        .and_then(|w| w.proc.as_ref())
        .map(|p| p.pid());
    let rss = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        });
    let disk: u64 = std::fs::read_dir(c.lab.witness_data_dir(&witness))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    eprintln!("pair+witness: witness {rss:?}, data dir {disk} bytes");
    // ...and its vote counts again: the owner can die once more.
    c.kill(other);
    let owner = c.wait_owner(&[first], Duration::from_secs(10));
    assert_eq!(
        owner,
        Some(first),
        "no takeover after the witness rejoined\n{}",
        c.logs()
    );
    assert!(
        client.run(|| served(web)).is_some(),
        "the VIP does not serve after the second takeover"
    );
}
