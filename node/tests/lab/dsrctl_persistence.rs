//! `dsrctl persistence list|flush`, the real binary in the lab's client host against real
//! `dsrlb` nodes. Refusals are one line with exit 1 and an empty table says so; then, on a
//! 3-node cluster, clients from a dozen source addresses connect through the VIP: every
//! node lists one entry per client address, with the backend that answers that client;
//! `--client` and `--limit` cut the listing; `flush --backend` removes only that backend's
//! entries and `flush` empties the table, as every node's own endpoint shows.

use crate::common::{ClusterLab, SingleNode, can_run_lab, wait_for, web_and_echo};
use dsrctl::view::{PersistenceView, WriteView};
use lab::ctl::{Ctl, run_in, strings};
use lab::lbnode::ADMIN_PORT;
use lab::{BACKEND_HTTP_PORT, HttpConn, Lab};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Client source addresses: with two backends, a dozen leave each backend some clients
/// (Maglev over the client address; all on one backend would be one chance in 2048).
const CLIENTS: usize = 12;

/// Long enough that nothing expires while the test runs.
const TTL_MS: u64 = 600_000;

/// `dsrctl` in the lab's client host against one node, with the lab's admin token.
struct Dsrctl<'a> {
    lab: &'a Lab,
    token_file: PathBuf,
}

impl<'a> Dsrctl<'a> {
    fn new(lab: &'a Lab) -> Self {
        Dsrctl {
            lab,
            token_file: lab.admin_token_file().expect("admin token"),
        }
    }

    fn on(&self, node: usize, args: &[&str]) -> Ctl {
        let endpoint = format!("http://{}:{ADMIN_PORT}", self.lab.nodes()[node].ip);
        let mut all = strings(&[
            "--endpoint",
            &endpoint,
            "--token-file",
            self.token_file.to_str().expect("utf-8 path"),
            "--timeout",
            "20s",
        ]);
        all.extend(strings(args));
        run_in(&self.lab.clients()[0], &all)
    }

    /// `-o json persistence list web extra…` on `node`.
    fn list(&self, node: usize, extra: &[&str]) -> PersistenceView {
        let mut args = vec!["-o", "json", "persistence", "list", "web"];
        args.extend_from_slice(extra);
        self.on(node, &args).ok().json()
    }
}

fn pairs(v: &PersistenceView) -> BTreeMap<Ipv4Addr, String> {
    v.entries
        .iter()
        .map(|e| (e.client.parse().expect("an IPv4 client"), e.backend.clone()))
        .collect()
}

fn now_ms() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock");
    d.as_millis() as u64
}

#[test]
fn refusals_are_one_line_and_an_empty_table_says_so() {
    if !can_run_lab() {
        return;
    }
    let s = SingleNode::start(2, 0, &web_and_echo(2));
    let ctl = Dsrctl::new(&s.lab);
    let refused = |args: &[&str]| ctl.on(0, args).failed_one_line().to_owned();

    assert!(
        refused(&["persistence", "list", "echo"])
            .starts_with("dsrctl: not possible now: farm \"echo\" has persistence = \"none\""),
    );
    assert_eq!(
        refused(&["persistence", "list", "nope"]),
        "dsrctl: not found: farm \"nope\" does not exist"
    );
    ctl.on(
        0,
        &[
            "farm",
            "set",
            "web",
            "--persistence",
            "srcip",
            "--persistence-ttl",
            "90s",
        ],
    )
    .ok();
    assert_eq!(
        refused(&["persistence", "flush", "web", "--backend", "zz"]),
        "dsrctl: not found: farm \"web\" has no backend \"zz\""
    );

    let out = ctl.on(0, &["persistence", "list", "web"]).ok().stdout;
    assert_eq!(
        out,
        "no persistence entries (farm web, answered by node 1)\n"
    );
    let out = ctl
        .on(
            0,
            &["persistence", "list", "web", "--client", "198.18.0.41"],
        )
        .ok()
        .stdout;
    assert_eq!(
        out,
        "no persistence entry for client 198.18.0.41 (farm web, answered by node 1; the farm \
         holds 0 entries)\n"
    );
    assert_eq!(
        ctl.list(0, &["--client", "198.18.0.41"]),
        PersistenceView {
            answered_by: 1,
            farm: "web".into(),
            client: Some("198.18.0.41".into()),
            total: 0,
            truncated: false,
            entries: Vec::new(),
        }
    );

    let out = ctl.on(0, &["persistence", "flush", "web"]).ok().stdout;
    assert!(
        out.starts_with("persistence entries of farm web flushed (applied at index "),
        "{out}"
    );
    let w: WriteView = ctl
        .on(
            0,
            &[
                "-o",
                "json",
                "persistence",
                "flush",
                "web",
                "--backend",
                "b1",
            ],
        )
        .ok()
        .json();
    assert_eq!(
        (w.done.as_str(), w.answered_by),
        (
            "persistence entries of farm web pinned to backend b1 flushed",
            1
        )
    );
}

/// A 3-node cluster whose client host has [`CLIENTS`] extra addresses.
struct Cluster(ClusterLab);

impl std::ops::Deref for Cluster {
    type Target = ClusterLab;
    fn deref(&self) -> &ClusterLab {
        &self.0
    }
}

impl Cluster {
    fn start() -> Cluster {
        Cluster(ClusterLab::start_with_ips(
            3,
            2,
            CLIENTS,
            &web_and_echo(2),
            &[],
        ))
    }

    /// One `GET /` through the VIP from each of `sources`: the backend that answered each
    /// (`None` when the request failed).
    fn get_from(&self, sources: Vec<Ipv4Addr>) -> Vec<(Ipv4Addr, Option<String>)> {
        let vip = SocketAddr::new(self.lab.vip().into(), BACKEND_HTTP_PORT);
        self.lab.clients()[0].run(move || {
            sources
                .into_iter()
                .map(|src| {
                    let answer = HttpConn::connect_from(Some(src), vip, Duration::from_secs(2))
                        .and_then(|mut c| c.get("/", false))
                        .ok()
                        .and_then(|r| r.backend().map(str::to_owned));
                    (src, answer)
                })
                .collect()
        })
    }
}

#[test]
fn entries_of_real_clients_are_listed_and_flushed_on_every_node() {
    if !can_run_lab() {
        return;
    }
    let c = Cluster::start();
    let owner = c.sole_owner();
    let (f1, f2) = ((owner + 1) % 3, (owner + 2) % 3);
    let id = |i: usize| i as u64 + 1;
    let ctl = Dsrctl::new(&c.lab);
    let sources: Vec<Ipv4Addr> = c.lab.client_extra_ips().to_vec();
    assert_eq!(sources.len(), CLIENTS);
    let n = CLIENTS as u64;

    ctl.on(
        f1,
        &[
            "farm",
            "set",
            "web",
            "--persistence",
            "srcip",
            "--persistence-ttl",
            &format!("{TTL_MS}ms"),
        ],
    )
    .ok();

    // Connect from every source until the table has them all: the first connections may
    // reach the owner before its datapath has taken the farm's new settings.
    let started_ms = now_ms();
    let mut listed = BTreeMap::new();
    let all = wait_for(Duration::from_secs(20), || {
        let missing: Vec<Ipv4Addr> = sources
            .iter()
            .filter(|s| !listed.contains_key(*s))
            .copied()
            .collect();
        c.get_from(missing);
        let v = ctl.list(owner, &[]);
        listed = pairs(&v);
        (listed.len() == CLIENTS).then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the table never held all {CLIENTS} clients; it holds {listed:?}\n{}",
            c.logs()
        )
    });
    assert_eq!(
        listed.keys().copied().collect::<BTreeSet<_>>(),
        sources.iter().copied().collect::<BTreeSet<_>>(),
        "one entry per client address, and only those"
    );
    assert_eq!((all.total, all.truncated), (n, false), "{all:?}");
    for e in &all.entries {
        assert!(
            (started_ms.saturating_sub(2_000)..=now_ms() + 2_000).contains(&e.last_seen_unix_ms),
            "last seen is not this test's time: {e:?} (started at {started_ms})"
        );
        assert!(
            e.expires_in_ms > 0 && e.expires_in_ms <= TTL_MS,
            "expiry outside the TTL: {e:?}"
        );
    }

    // The listed backend is the one that answers the client, connection after connection.
    for round in 0..3 {
        for (src, answer) in c.get_from(sources.clone()) {
            assert_eq!(
                answer.as_deref(),
                Some(listed[&src].as_str()),
                "client {src}, connection {round}: listed on {}",
                listed[&src]
            );
        }
    }
    let per_backend = |b: &str| listed.values().filter(|x| x.as_str() == b).count();
    assert!(
        per_backend("b1") > 0 && per_backend("b2") > 0,
        "every client landed on one backend, nothing to tell flush --backend by: {listed:?}"
    );

    // Every node lists the same entries (the read catches up with the leader first).
    for i in 0..3 {
        let v = ctl.list(i, &[]);
        assert_eq!(v.answered_by, id(i));
        assert_eq!(pairs(&v), listed, "node {i}");
    }

    // The table for people.
    let table = ctl.on(f1, &["persistence", "list", "web"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CLIENT ")
            && lines[0].contains(" BACKEND ")
            && lines[0].contains(" LAST SEEN ")
            && lines[0].ends_with(" EXPIRES IN"),
        "{table}"
    );
    assert_eq!(lines.len(), CLIENTS + 2, "{table}");
    for (line, (src, backend)) in lines[1..=CLIENTS].iter().zip(&listed) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[..2], &[src.to_string().as_str(), backend], "{table}");
        assert!(line.contains("s ago"), "{table}");
    }
    assert_eq!(
        lines[CLIENTS + 1],
        format!("{CLIENTS} entries (farm web, answered by node {})", id(f1))
    );

    // --client: that client's entry, out of the farm's.
    let first = sources[0].to_string();
    let one = ctl.list(f2, &["--client", &first]);
    assert_eq!(
        (one.entries.len(), one.total, one.truncated),
        (1, n, false),
        "{one:?}"
    );
    assert_eq!(
        (one.entries[0].client.as_str(), &one.entries[0].backend),
        (first.as_str(), &listed[&sources[0]])
    );
    let table = ctl
        .on(f2, &["persistence", "list", "web", "--client", &first])
        .ok()
        .stdout;
    assert!(
        table.ends_with(&format!(
            "1 of {CLIENTS} entries (farm web, answered by node {})\n",
            id(f2)
        )),
        "{table}"
    );

    // --limit: the first entries in address order, and a footer that says so.
    let cut = ctl.list(owner, &["--limit", "5"]);
    assert_eq!((cut.total, cut.truncated), (n, true), "{cut:?}");
    let want: BTreeMap<Ipv4Addr, String> = listed
        .iter()
        .take(5)
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    assert_eq!(pairs(&cut), want);
    let table = ctl
        .on(owner, &["persistence", "list", "web", "--limit", "5"])
        .ok()
        .stdout;
    assert!(
        table.ends_with(&format!(
            "5 of {CLIENTS} entries; a higher --limit shows more (farm web, answered by node {})\n",
            id(owner)
        )),
        "{table}"
    );

    // The last connections' closing packets have passed the owner before the flushes, so
    // what is left afterwards is what the flush left.
    std::thread::sleep(Duration::from_secs(1));

    // flush --backend through a follower: only b1's clients lose their entries, everywhere.
    let out = ctl
        .on(f1, &["persistence", "flush", "web", "--backend", "b1"])
        .ok()
        .stdout;
    assert!(
        out.starts_with("persistence entries of farm web pinned to backend b1 flushed"),
        "{out}"
    );
    let b2_only: BTreeMap<Ipv4Addr, String> = listed
        .iter()
        .filter(|(_, b)| b.as_str() == "b2")
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    for i in 0..3 {
        let v = ctl.list(i, &[]);
        assert_eq!(pairs(&v), b2_only, "node {i} after flush --backend b1");
        assert_eq!(v.total, b2_only.len() as u64, "node {i}");
    }

    // flush through the other follower: the table is empty on every node.
    ctl.on(f2, &["persistence", "flush", "web"]).ok();
    for i in 0..3 {
        let out = ctl.on(i, &["persistence", "list", "web"]).ok().stdout;
        assert_eq!(
            out,
            format!(
                "no persistence entries (farm web, answered by node {})\n",
                id(i)
            ),
            "node {i} after flush"
        );
    }
}
