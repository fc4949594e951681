//! Every `dsrctl` verb, run as the real binary from the lab's client host against a real
//! 3-node cluster of `dsrlb` processes: reads name the node that answered, writes through a
//! follower land, `apply --dry-run` shows the plan and writes nothing, `apply` keeps a
//! farm the file does not list and `apply --prune` deletes it, `apply → export →
//! apply` is a no-op, `stats --watch` gives rates, refusals are one line with exit 1, and a
//! leader transfer moves the leader.

use crate::common::{ClusterLab, can_run_lab, wait_for, web_and_echo};
use dsrctl::view::{BackendsView, FarmShowView, FarmsView, StatsView, StatusView};
use lab::ctl::{Ctl, run_in, strings};
use lab::lbnode::ADMIN_PORT;
use std::path::PathBuf;
use std::time::Duration;

/// `dsrctl` against chosen lab nodes, with the lab's admin token.
struct Dsrctl<'a> {
    c: &'a ClusterLab,
    token_file: PathBuf,
}

impl Dsrctl<'_> {
    fn endpoint(&self, i: usize) -> String {
        format!("http://{}:{ADMIN_PORT}", self.c.lab.nodes()[i].ip)
    }

    /// `dsrctl --endpoint <nodes…> --token-file <lab token> args…` in the client host.
    fn on(&self, nodes: &[usize], args: &[&str]) -> Ctl {
        let endpoints: Vec<String> = nodes.iter().map(|&i| self.endpoint(i)).collect();
        let mut all = strings(&[
            "--endpoint",
            &endpoints.join(","),
            "--token-file",
            self.token_file.to_str().expect("utf-8 path"),
            "--timeout",
            "20s",
        ]);
        all.extend(strings(args));
        run_in(&self.c.lab.clients()[0], &all)
    }

    /// Repeats a read on node `i` until `ok` holds (5 s at most): a follower applies a
    /// committed write a moment after the leader answers.
    fn eventually<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
        args: &[&str],
        ok: impl Fn(&T) -> bool,
    ) -> T {
        let mut last = None;
        let found = wait_for(Duration::from_secs(5), || {
            let r = self.on(&[i], args);
            let v = (r.code == 0).then(|| r.json::<T>());
            last = Some(r);
            v.filter(|v| ok(v))
        });
        found.unwrap_or_else(|| panic!("node {i} never showed it: {last:#?}"))
    }
}

fn farm_names(v: &FarmsView) -> Vec<&str> {
    v.farms.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn every_verb_against_a_three_node_cluster() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let (f1, f2) = ((owner + 1) % 3, (owner + 2) % 3);
    let id = |i: usize| i as u64 + 1;
    let ctl = Dsrctl {
        c: &c,
        token_file: c.lab.admin_token_file().expect("admin token"),
    };
    let vip = c.lab.vip().to_string();
    let ips: Vec<String> = c.lab.backends().iter().map(|b| b.ip.to_string()).collect();

    // status: a follower answers and names the leader; the table says the same.
    let st: StatusView = ctl.on(&[f1], &["-o", "json", "status"]).ok().json();
    assert_eq!(st.answered_by, id(f1));
    assert_eq!(st.leader, Some(id(owner)), "{st:?}");
    assert_eq!(st.members.len(), 3, "{st:?}");
    let table = ctl.on(&[owner], &["status"]).ok().stdout;
    assert!(
        table.contains(&format!("leader       node {}", id(owner))),
        "{table}"
    );
    assert!(
        table.contains("ROLE") && table.contains("leader"),
        "{table}"
    );

    // farm list / show.
    let farms: FarmsView = ctl.on(&[f2], &["farm", "list", "-o", "json"]).ok().json();
    assert_eq!(
        (farm_names(&farms), farms.answered_by),
        (vec!["echo", "web"], id(f2))
    );
    let table = ctl.on(&[f2], &["farm", "list"]).ok().stdout;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(!table.contains("BACKENDS"), "{table}");
    // -o wide: the same rows with the slots, TTL, limits and backends.
    let wide = ctl.on(&[f2], &["farm", "list", "-o", "wide"]).ok().stdout;
    let head = wide.lines().next().unwrap_or_default();
    assert!(
        head.starts_with("NAME ") && head.ends_with("BACKENDS"),
        "{wide}"
    );
    let web_row = wide
        .lines()
        .find(|l| l.starts_with("web "))
        .unwrap_or_default();
    let web = farms.farms.iter().find(|f| f.name == "web").expect("web");
    for b in &web.backends {
        assert!(web_row.contains(&format!("{}={}", b.name, b.ip)), "{wide}");
    }
    let wide = ctl
        .on(&[f1], &["backend", "list", "web", "-o", "wide"])
        .ok()
        .stdout;
    assert!(wide.contains("CHECKED BY"), "{wide}");
    let show = ctl.on(&[f1], &["farm", "show", "web"]).ok().stdout;
    assert!(show.contains(&format!("vip          {vip}")), "{show}");
    assert!(show.contains("serving      2 of 2 backends"), "{show}");

    // farm add through a follower; another follower shows it.
    let out = ctl
        .on(
            &[f1],
            &[
                "farm",
                "add",
                "api",
                "--vip",
                &vip,
                "--port",
                "8080",
                "--protocol",
                "tcp",
                "--persistence",
                "srcip",
                "--persistence-ttl",
                "30s",
            ],
        )
        .ok()
        .stdout;
    assert!(
        out.starts_with("farm api created (applied at index ")
            && out.ends_with(&format!("request taken by node {})\n", id(f1))),
        "{out}"
    );
    let api: FarmShowView = ctl.eventually(
        f2,
        &["-o", "json", "farm", "show", "api"],
        |_: &FarmShowView| true,
    );
    assert_eq!(
        (
            api.farm.ports.as_str(),
            api.farm.persistence.as_str(),
            api.farm.persistence_ttl.as_deref()
        ),
        ("8080", "srcip", Some("30s"))
    );

    // backend add / list / set / delete.
    ctl.on(
        &[f2],
        &[
            "backend", "add", "api", "a1", "--ip", &ips[0], "--weight", "2",
        ],
    )
    .ok();
    ctl.on(
        &[owner],
        &[
            "backend",
            "add",
            "api",
            "a2",
            "--ip",
            &ips[1],
            "--priority",
            "2",
        ],
    )
    .ok();
    ctl.on(&[f1], &["backend", "set", "api", "a1", "--state", "drain"])
        .ok();
    let b: BackendsView = ctl.eventually(
        owner,
        &["-o", "json", "backend", "list", "api"],
        |b: &BackendsView| b.backends.len() == 2 && b.backends.iter().any(|x| x.state == "drain"),
    );
    let a1 = b.backends.iter().find(|x| x.name == "a1").expect("a1");
    assert_eq!((a1.weight, a1.state.as_str(), a1.priority), (2, "drain", 1));
    let a2 = b.backends.iter().find(|x| x.name == "a2").expect("a2");
    assert_eq!((a2.weight, a2.state.as_str(), a2.priority), (1, "up", 2));

    // farm set changes one thing and keeps the backends.
    ctl.on(
        &[f2],
        &[
            "farm",
            "set",
            "api",
            "--check",
            "tcp",
            "--check-interval",
            "1s",
        ],
    )
    .ok();
    let api: FarmShowView = ctl.eventually(
        f2,
        &["-o", "json", "farm", "show", "api"],
        |f: &FarmShowView| f.farm.check.is_some(),
    );
    assert_eq!(
        api.farm.check.as_ref().map(|c| c.interval.as_str()),
        Some("1s")
    );
    assert_eq!(api.farm.backends.len(), 2, "{api:?}");
    assert_eq!(api.farm.persistence, "srcip");

    ctl.on(&[f1], &["backend", "delete", "api", "a2"]).ok();
    ctl.eventually(
        owner,
        &["-o", "json", "backend", "list", "api"],
        |b: &BackendsView| b.backends.len() == 1,
    );
    let out = ctl.on(&[f1], &["farm", "delete", "api"]).ok().stdout;
    assert!(out.starts_with("farm api deleted"), "{out}");
    ctl.eventually(f2, &["-o", "json", "farm", "list"], |f: &FarmsView| {
        farm_names(f) == ["echo", "web"]
    });

    // Refusals from a reachable server: one line, exit 3 (rejected input), the server's
    // reason.
    let r = ctl.on(&[f1], &["farm", "show", "nope"]);
    assert!(
        r.failed_one_line().starts_with("dsrctl: not found: "),
        "{r:#?}"
    );
    assert_eq!(r.code, 3, "{r:#?}");
    let r = ctl.on(
        &[f1],
        &[
            "farm",
            "add",
            "bad",
            "--vip",
            "224.0.0.1",
            "--port",
            "81",
            "--protocol",
            "tcp",
        ],
    );
    assert!(
        r.failed_one_line()
            .starts_with("dsrctl: invalid: farm.vip: "),
        "{r:#?}"
    );
    assert_eq!(r.code, 3, "{r:#?}");
    let r = ctl.on(
        &[f2],
        &[
            "farm",
            "add",
            "web",
            "--vip",
            &vip,
            "--port",
            "81",
            "--protocol",
            "tcp",
        ],
    );
    assert!(
        r.failed_one_line().starts_with("dsrctl: already exists: "),
        "{r:#?}"
    );
    let r = ctl.on(&[f2], &["backend", "set", "web", "nope", "--weight", "3"]);
    assert!(
        r.failed_one_line().starts_with("dsrctl: not found: "),
        "{r:#?}"
    );

    // export → apply is a no-op; a dry run shows the plan and writes nothing.
    let exported = ctl.on(&[f1], &["export"]).ok().stdout;
    let dir = tempfile::tempdir().expect("tempdir");
    let same = dir.path().join("same.toml");
    std::fs::write(&same, &exported).expect("write");
    let out = ctl
        .on(&[f2], &["apply", "-f", same.to_str().expect("utf-8")])
        .ok()
        .stdout;
    assert!(
        out.starts_with("No changes: the cluster already matches"),
        "{out}"
    );

    let mut desired: toml::Table = toml::from_str(&exported).expect("export is TOML");
    let farms_toml = desired
        .get_mut("farm")
        .and_then(|f| f.as_array_mut())
        .expect("[[farm]] tables");
    farms_toml.retain(|f| f.get("name").and_then(|n| n.as_str()) != Some("echo"));
    let web = farms_toml
        .iter_mut()
        .find(|f| f.get("name").and_then(|n| n.as_str()) == Some("web"))
        .expect("web");
    web["backend"][0]["weight"] = toml::Value::Integer(4);
    let extra: toml::Table = toml::from_str(&format!(
        "name = \"extra\"\nvip = \"{vip}\"\nport = 8443\nprotocol = \"tcp\"\n\
         [[backend]]\nname = \"x1\"\nip = \"{}\"\n",
        ips[0]
    ))
    .expect("extra farm");
    farms_toml.push(toml::Value::Table(extra));
    let changed = dir.path().join("changed.toml");
    std::fs::write(&changed, toml::to_string(&desired).expect("TOML")).expect("write");
    let changed = changed.to_str().expect("utf-8");

    // Without --prune, `echo` (not in the file) is kept: the plan lists it, deletes nothing.
    let plan = ctl
        .on(&[f1], &["apply", "-f", changed, "--dry-run"])
        .ok()
        .stdout;
    assert!(plan.contains("+ farm extra\n"), "{plan}");
    assert!(
        plan.contains("~ farm web\n") && plan.contains("weight 1 -> 4"),
        "{plan}"
    );
    assert!(plan.contains("= farm echo\n"), "{plan}");
    assert!(!plan.contains("- farm"), "{plan}");
    assert!(
        plan.ends_with(
            "Plan: 1 to create, 1 to update, 0 to delete, 1 kept that the file does not list \
             (--prune deletes them). Dry run: nothing was written.\n"
        ),
        "{plan}"
    );
    // Same node as the first export: its header names the node and the applied index, so
    // any write in between would show.
    assert_eq!(
        ctl.on(&[f1], &["export"]).ok().stdout,
        exported,
        "dry run wrote"
    );
    let done = ctl.on(&[f2], &["apply", "-f", changed]).ok().stdout;
    assert!(
        done.contains("Applied: 1 to create, 1 to update, 0 to delete, 1 kept"),
        "{done}"
    );
    ctl.eventually(f1, &["-o", "json", "farm", "list"], |f: &FarmsView| {
        farm_names(f) == ["echo", "extra", "web"]
    });

    // With --prune the plan shows what would go, and the apply removes it.
    let plan = ctl
        .on(&[f1], &["apply", "-f", changed, "--prune", "--dry-run"])
        .ok()
        .stdout;
    assert!(plan.contains("- farm echo\n"), "{plan}");
    assert!(
        plan.ends_with(
            "Plan: 0 to create, 0 to update, 1 to delete. Dry run: nothing was written.\n"
        ),
        "{plan}"
    );
    let done = ctl
        .on(&[f2], &["apply", "-f", changed, "--prune"])
        .ok()
        .stdout;
    assert!(
        done.contains("Applied: 0 to create, 0 to update, 1 to delete"),
        "{done}"
    );
    ctl.eventually(f1, &["-o", "json", "farm", "list"], |f: &FarmsView| {
        farm_names(f) == ["extra", "web"]
    });
    let again = ctl.on(&[f1], &["apply", "-f", changed]).ok().stdout;
    assert!(again.starts_with("No changes"), "{again}");
    let exported = ctl.on(&[f1], &["export"]).ok().stdout;
    std::fs::write(&same, &exported).expect("write");
    let again = ctl
        .on(&[owner], &["apply", "-f", same.to_str().expect("utf-8")])
        .ok()
        .stdout;
    assert!(
        again.starts_with("No changes"),
        "apply → export → apply: {again}"
    );

    // stats: the VIP owner's counters by default, a named node's on request, and rates
    // between refreshes with --watch.
    let s: StatsView = ctl.on(&[f1], &["-o", "json", "stats"]).ok().json();
    assert_eq!(
        (s.node, s.vip_owner, s.answered_by),
        (id(owner), true, id(f1))
    );
    let s: StatsView = ctl
        .on(
            &[f1],
            &["-o", "json", "stats", "--node", &id(f2).to_string()],
        )
        .ok()
        .json();
    assert_eq!((s.node, s.vip_owner), (id(f2), false));
    let watch = ctl
        .on(
            &[owner],
            &[
                "-o",
                "json",
                "stats",
                "--watch",
                "--interval",
                "200ms",
                "--count",
                "2",
            ],
        )
        .ok()
        .stdout;
    let samples: Vec<StatsView> = watch
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(samples.len(), 2, "{watch}");
    assert_eq!(samples[0].interval_s, None);
    assert!(samples[1].interval_s.is_some_and(|s| s > 0.0), "{watch}");
    let table = ctl
        .on(
            &[owner],
            &["stats", "--watch", "--interval", "200ms", "--count", "2"],
        )
        .ok()
        .stdout;
    assert!(table.contains("PKT/S") && table.contains("web"), "{table}");

    // member: refusals that change nothing (a real add/remove needs a node to add).
    let r = ctl.on(&[f1], &["member", "remove", "9"]);
    let line = r.failed_one_line().to_owned();
    assert!(line.starts_with("dsrctl: "), "{line}");
    let st: StatusView = ctl.on(&[owner], &["-o", "json", "status"]).ok().json();
    assert_eq!(
        st.members.len(),
        3,
        "after `member remove 9` ({line}): {st:?}"
    );

    // leader transfer through a follower to the other follower.
    let out = ctl
        .on(&[f1], &["leader", "transfer", &id(f2).to_string()])
        .ok()
        .stdout;
    assert_eq!(out, format!("leader is now node {}\n", id(f2)));
    ctl.eventually(f1, &["-o", "json", "status"], |s: &StatusView| {
        s.leader == Some(id(f2))
    });
}
