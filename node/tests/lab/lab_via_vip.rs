//! The DSR-aware check (`via_vip = true`, issue #15): a backend whose VIP was removed from
//! `lo` still answers on its own address, so a plain tcp check keeps it up, while the probe
//! through the VIP takes it down with "VIP path failed"; the VIP back brings it up. The
//! routes behind it are gone after a clean stop, and a start after kill -9 removes what the
//! killed node left.

use crate::common::{backend_up, can_run_lab, dsrlb, one_node_lab, wait_backend_up};
use lab::{Lab, LabFarm};
use std::time::Duration;

const INTERVAL_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 3;

fn farm(name: &str, port: u16, check: &str) -> LabFarm {
    LabFarm {
        extra: format!(
            "\n[farm.check]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{}ms\"\nrise = {RISE}\n\
             fall = {FALL}\n{check}",
            INTERVAL_MS / 2
        ),
        ..LabFarm::new(name, "tcp", port, &[0, 1])
    }
}

fn wait_state(lab: &Lab, node: &lab::LabProcess, farm: &str, backend: &str, want: f64) {
    let limit = Duration::from_millis(INTERVAL_MS * u64::from(RISE.max(FALL) + 2) + 3_000);
    let took = wait_backend_up(lab, node, farm, backend, want, limit);
    eprintln!("{farm}/{backend} = {want} after {took:?}");
}

/// The node namespace's rules of the via_vip checks (priority 3210) and routes in its
/// tables, one line each.
fn leftovers(lab: &Lab) -> Vec<String> {
    let node = &lab.nodes()[0];
    let rules = node.ip(&["-4", "rule", "show"]).expect("ip rule");
    let routes = node
        .ip(&["-4", "route", "show", "table", "all"])
        .expect("ip route");
    rules
        .lines()
        .filter(|l| l.starts_with(&format!("{}:", node::vippath::RULE_PREF)))
        .chain(routes.lines().filter(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "table")
                .nth(1)
                .and_then(|t| t.parse::<u32>().ok())
                .is_some_and(|t| t >= node::vippath::TABLE_BASE)
        }))
        .map(str::to_string)
        .collect()
}

fn dsrctl(lab: &Lab, args: &[&str]) -> String {
    let mut all = lab::ctl::strings(&[
        "--endpoint",
        &format!("http://{}:{}", lab.nodes()[0].ip, lab::lbnode::ADMIN_PORT),
        "--token-file",
        lab.admin_token_file().unwrap().to_str().unwrap(),
    ]);
    all.extend(lab::ctl::strings(args));
    lab::ctl::run_in(&lab.clients()[0], &all).ok().stdout
}

#[test]
fn a_backend_without_its_vip_fails_the_vip_path_and_nothing_is_left_behind() {
    if !can_run_lab() {
        return;
    }
    let lab = one_node_lab(2);
    let port = lab::BACKEND_HTTP_PORT;
    let farms = [
        // The service through the VIP on each backend: the default of an http check on a
        // node that can set the routes up (root, iproute2).
        farm("web", port, "type = \"http\"\n"),
        // The same backends' own address, as a plain check sees them.
        farm(
            "plain",
            port + 1,
            &format!("type = \"tcp\"\nport = {port}\nvia_vip = false\n"),
        ),
    ];
    let mut node = lab
        .start_node(0, dsrlb(), &farms)
        .expect("the node starts with every check passing");
    let paths = leftovers(&lab);
    assert_eq!(
        paths.iter().filter(|l| l.contains("fwmark")).count(),
        2,
        "one rule per backend: {paths:?}"
    );

    let vip = format!("{}/32", lab.vip());
    let b2 = &lab.backends()[1];
    b2.ip(&["addr", "del", &vip, "dev", "lo"])
        .expect("VIP off b2's lo");
    wait_state(&lab, &node, "web", "b2", 0.0);
    let table = dsrctl(&lab, &["backend", "list", "web"]);
    eprintln!("{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("b2"))
        .expect("a b2 row");
    assert!(row.contains("VIP path failed"), "{table}");
    // Fall more probes later, the plain check still finds b2 up, and b1 is untouched.
    std::thread::sleep(Duration::from_millis(INTERVAL_MS * u64::from(FALL + 1)));
    assert_eq!(
        backend_up(&lab, "plain", "b2"),
        1.0,
        "a plain check misses it"
    );
    assert_eq!(backend_up(&lab, "web", "b1"), 1.0);

    b2.ip(&["addr", "add", &vip, "dev", "lo"])
        .expect("VIP back on b2's lo");
    wait_state(&lab, &node, "web", "b2", 1.0);

    // A clean stop removes the routes.
    node.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    node.wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the node stops on SIGTERM");
    assert_eq!(leftovers(&lab), Vec::<String>::new(), "after a clean stop");

    // kill -9 leaves them; the next start removes them before it sets up its own. A rule
    // and table of a predecessor with more backends (index 7) show that it removes what it
    // would not set up again, not only what it replaces.
    let mut node = lab.start_node(0, dsrlb(), &farms).expect("restart");
    node.kill().unwrap();
    let left = leftovers(&lab);
    eprintln!("left by kill -9: {left:?}");
    assert_eq!(left.len(), 4, "kill -9 cannot clean up: {left:?}");
    let stale = (node::vippath::TABLE_BASE + 7).to_string();
    let host = &lab.nodes()[0];
    let b1 = lab.backends()[0].ip.to_string();
    host.ip(&[
        "route",
        "add",
        "default",
        "via",
        &b1,
        "dev",
        &host.ifname,
        "table",
        &stale,
    ])
    .unwrap();
    host.ip(&[
        "rule",
        "add",
        "fwmark",
        &stale,
        "lookup",
        &stale,
        "pref",
        &node::vippath::RULE_PREF.to_string(),
    ])
    .unwrap();
    assert_eq!(leftovers(&lab).len(), 6);
    let mut node = lab.start_node(0, dsrlb(), &farms).expect("restart");
    let now = leftovers(&lab);
    assert_eq!(
        now.len(),
        4,
        "exactly this run's two rules and routes: {now:?}"
    );
    assert!(
        !now.iter()
            .any(|l| l.contains(&stale) || l.contains("0x44530007")),
        "{now:?}"
    );
    node.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    node.wait_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("the node stops on SIGTERM");
    assert_eq!(leftovers(&lab), Vec::<String>::new(), "after a clean stop");
}
