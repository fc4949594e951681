//! Views → text for `-o table` and `-o wide` (people) and `-o json` (scripts). Every
//! renderer is pure and returns the whole output, so tests compare strings.

use super::table::{Table, fields};
use super::view::{
    BackendView, BackendsView, ExportView, FarmShowView, FarmView, FarmsView, LeaderView,
    MembershipView, StatusView, VersionView, WriteView,
};
use serde::Serialize;

/// Pretty JSON and a newline; the views hold nothing serde could refuse.
pub fn json<T: Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

fn node(id: Option<u64>) -> String {
    id.map_or_else(|| "none".to_owned(), |n| format!("node {n}"))
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn list(ids: &[u64]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// How the answering node holds the VIPs, if it does.
fn owned_by(s: &StatusView) -> Option<String> {
    Some(match s.owner_arbiter.as_str() {
        "" => return None,
        "quorum" => format!("node {} under a quorum lease", s.answered_by),
        "sole" => format!("node {}, the cluster's only voter", s.answered_by),
        "segment" => format!(
            "node {} by the segment arbiter: no quorum, the peer is down (writes refused)",
            s.answered_by
        ),
        other => format!("node {} ({other})", s.answered_by),
    })
}

pub fn status(s: &StatusView) -> String {
    let lease = if s.leader == Some(s.answered_by) {
        format!("{} ms", s.lease_age_ms)
    } else {
        "- (known to the leader only)".into()
    };
    let mut rows = vec![
        ("answered by", format!("node {}", s.answered_by)),
        ("leader", node(s.leader)),
        ("vip owner", node(s.vip_owner)),
        ("term", s.term.to_string()),
        ("lease age", lease),
        (
            "log index",
            format!("{} (applied {})", s.last_log_index, s.applied_index),
        ),
        ("failover", s.failover.clone()),
    ];
    if let Some(by) = owned_by(s) {
        rows.insert(3, ("owned by", by));
    }
    let mut out = fields(&rows);
    out.push('\n');
    let mut t = Table::new(&[
        "id",
        "address",
        "role",
        "reachable",
        "last log",
        "lag",
        "version",
    ]);
    for m in &s.members {
        t.row(vec![
            m.id.to_string(),
            m.address.clone(),
            m.role.clone(),
            yes_no(m.reachable),
            m.last_log_index.to_string(),
            m.lag.map_or_else(|| "-".to_string(), |l| l.to_string()),
            m.version.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    out.push_str(&t.render());
    if !s.vips.is_empty() {
        out.push('\n');
        let mut t = Table::new(&["vip", "owner"]);
        for v in &s.vips {
            t.row(vec![v.vip.clone(), node(v.owner)]);
        }
        out.push_str(&t.render());
    }
    for c in &s.vip_conflicts {
        out.push_str(&format!(
            "\nWARNING: ARP flux: {} ({} claim{}, last {} s ago)",
            c.advice,
            c.claims,
            if c.claims == 1 { "" } else { "s" },
            c.last_seen_ms_ago / 1000
        ));
    }
    if !s.vip_conflicts.is_empty() {
        out.push('\n');
    }
    out
}

/// `dsrctl version`: the client line, then one row per member; a mixed-version cluster
/// says so under the table.
pub fn version(v: &VersionView) -> String {
    let mut out = format!("client: dsrctl {}\n\n", v.client);
    let mut t = Table::new(&["id", "address", "role", "version"]);
    for m in &v.members {
        let mut role = m.role.clone();
        if m.id == v.answered_by {
            role.push_str(" (answered)");
        }
        t.row(vec![
            m.id.to_string(),
            m.address.clone(),
            role,
            m.version
                .clone()
                .unwrap_or_else(|| "- (not reached)".into()),
        ]);
    }
    out.push_str(&t.render());
    let mut known: Vec<&str> = v
        .members
        .iter()
        .filter_map(|m| m.version.as_deref())
        .collect();
    known.sort_unstable();
    known.dedup();
    if known.len() > 1 {
        out.push_str(&format!(
            "\nmixed versions: {} different builds run in this cluster\n",
            known.len()
        ));
    }
    out
}

fn check_text(f: &FarmView) -> String {
    let Some(c) = &f.check else {
        return "none".into();
    };
    let mut what = c.kind.clone();
    if c.port != 0 {
        what.push_str(&format!(" port {}", c.port));
    }
    for (label, v) in [
        ("path", &c.path),
        ("host", &c.host),
        ("status", &c.expect_status),
        ("body", &c.expect_body),
        ("ca", &c.ca_file),
        ("send", &c.send),
        ("expect", &c.expect),
        ("program", &c.program),
    ] {
        if !v.is_empty() {
            what.push_str(&format!(" {label} {v:?}"));
        }
    }
    if !c.args.is_empty() {
        what.push_str(&format!(" args {:?}", c.args));
    }
    match c.via_vip {
        Some(true) => what.push_str(" via the VIP"),
        Some(false) => what.push_str(" not via the VIP"),
        None => {}
    }
    format!(
        "{what} every {}, timeout {}, rise {}, fall {}",
        c.interval, c.timeout, c.rise, c.fall
    )
}

/// Backends that take new flows: administratively up and passing their check.
fn serving(backends: &[BackendView]) -> usize {
    backends
        .iter()
        .filter(|b| b.healthy && b.state == "up")
        .count()
}

/// `farm list`; `wide` adds the Maglev slots, the persistence TTL, the limits and the
/// backends (`name=ip`).
pub fn farms(v: &FarmsView, wide: bool) -> String {
    if v.farms.is_empty() {
        return format!("no farms (answered by node {})\n", v.answered_by);
    }
    let mut head = vec![
        "name",
        "vip",
        "ports",
        "protocol",
        "scheduler",
        "persistence",
        "check",
        "serving",
    ];
    if wide {
        head.extend(["slots", "ttl", "limits", "backends"]);
    }
    let mut t = Table::new(&head);
    for f in &v.farms {
        let mut row = vec![
            f.name.clone(),
            f.vip.clone(),
            f.ports.clone(),
            f.protocol.clone(),
            f.scheduler.clone(),
            f.persistence.clone(),
            f.check
                .as_ref()
                .map_or_else(|| "none".into(), |c| format!("{} {}", c.kind, c.interval)),
            format!("{}/{}", serving(&f.backends), f.backends.len()),
        ];
        if wide {
            let backends = f
                .backends
                .iter()
                .map(|b| format!("{}={}", b.name, b.ip))
                .collect::<Vec<_>>()
                .join(",");
            row.extend([
                f.maglev_table_size.to_string(),
                match &f.persistence_ttl {
                    Some(ttl) if f.persistence != "none" => ttl.clone(),
                    _ => "-".into(),
                },
                limits_text(f),
                if backends.is_empty() {
                    "-".into()
                } else {
                    backends
                },
            ]);
        }
        t.row(row);
    }
    format!("{}(answered by node {})\n", t.render(), v.answered_by)
}

fn backend_table(backends: &[BackendView], wide: bool) -> String {
    if backends.is_empty() {
        return "no backends\n".into();
    }
    // The check columns when the answer carries probe results (`backend list` of a checked
    // farm) or when asked for (`wide`): `farm show` and unchecked farms keep their narrower
    // table.
    let checked = wide || backends.iter().any(|b| b.last_check.is_some());
    let mut head = vec![
        "name", "ip", "mac", "weight", "state", "priority", "healthy",
    ];
    if checked {
        head.extend(["last check", "latency", "reason"]);
    }
    if wide {
        head.push("checked by");
    }
    let mut t = Table::new(&head);
    for b in backends {
        let mut row = vec![
            b.name.clone(),
            b.ip.clone(),
            b.mac.clone().unwrap_or_else(|| "(arp)".into()),
            b.weight.to_string(),
            b.state.clone(),
            b.priority.to_string(),
            yes_no(b.healthy),
        ];
        if checked {
            match &b.last_check {
                Some(c) => row.extend([
                    format!("{} ({} ago)", c.result, age_text(c.age_ms)),
                    format!("{:.1} ms", c.latency_us as f64 / 1000.0),
                    if c.reason.is_empty() {
                        "-".into()
                    } else {
                        c.reason.clone()
                    },
                ]),
                None => row.extend(["-".into(), "-".into(), "-".into()]),
            }
        }
        if wide {
            row.push(
                b.last_check
                    .as_ref()
                    .map_or_else(|| "-".into(), |c| format!("node {}", c.checked_by)),
            );
        }
        t.row(row);
    }
    t.render()
}

/// `850ms`, `3.2s`, `4m`.
fn age_text(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        _ => format!("{}m", ms / 60_000),
    }
}

pub fn farm_show(v: &FarmShowView, wide: bool) -> String {
    let f = &v.farm;
    let persistence = match &f.persistence_ttl {
        Some(ttl) if f.persistence != "none" => format!("{} (ttl {ttl})", f.persistence),
        _ => f.persistence.clone(),
    };
    let mut out = fields(&[
        ("name", f.name.clone()),
        ("vip", f.vip.clone()),
        ("ports", format!("{}/{}", f.ports, f.protocol)),
        (
            "scheduler",
            format!("{} ({} slots)", f.scheduler, f.maglev_table_size),
        ),
        ("persistence", persistence),
        ("check", check_text(f)),
        ("limits", limits_text(f)),
        (
            "serving",
            format!("{} of {} backends", serving(&f.backends), f.backends.len()),
        ),
        ("answered by", format!("node {}", v.answered_by)),
    ]);
    out.push('\n');
    out.push_str(&backend_table(&f.backends, wide));
    out
}

/// The farm's limits in one line, `none` when it has none.
fn limits_text(f: &FarmView) -> String {
    let rate = |per_sec: u32, burst: u32| {
        let burst = if burst == 0 { per_sec } else { burst };
        format!("{per_sec}/s burst {burst}")
    };
    let mut parts = Vec::new();
    if f.new_rate_limit > 0 {
        parts.push(format!(
            "per source {}",
            rate(f.new_rate_limit, f.new_rate_limit_burst)
        ));
    }
    if f.new_rate_limit_farm > 0 {
        parts.push(format!(
            "farm {}",
            rate(f.new_rate_limit_farm, f.new_rate_limit_farm_burst)
        ));
    }
    if f.max_flows > 0 {
        parts.push(format!("max {} flows per backend", f.max_flows));
    }
    if f.tcp_strict {
        parts.push("tcp strict".into());
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

pub fn backends(v: &BackendsView, wide: bool) -> String {
    format!(
        "{}(farm {}, answered by node {})\n",
        backend_table(&v.backends, wide),
        v.farm,
        v.answered_by
    )
}

pub fn write(v: &WriteView) -> String {
    format!(
        "{} (applied at index {}, request taken by node {})\n",
        v.done, v.applied_index, v.answered_by
    )
}

pub fn export(v: &ExportView) -> String {
    let mut s = v.config.clone();
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

pub fn membership(v: &MembershipView) -> String {
    fields(&[
        ("voters", list(&v.voters)),
        ("learners", list(&v.learners)),
        ("answered by", format!("node {}", v.answered_by)),
    ])
}

pub fn leader(v: &LeaderView) -> String {
    format!("leader is now {}\n", node(v.leader))
}

#[cfg(test)]
mod tests {
    use super::super::view::{CheckResultView, CheckView, MemberView, VipView};
    use super::*;

    fn web() -> FarmView {
        FarmView {
            name: "web".into(),
            vip: "198.18.0.100".into(),
            ports: "80".into(),
            protocol: "tcp".into(),
            scheduler: "maglev".into(),
            persistence: "srcip".into(),
            persistence_ttl: Some("60s".into()),
            check: Some(CheckView {
                kind: "tcp".into(),
                interval: "2s".into(),
                timeout: "1s".into(),
                rise: 2,
                fall: 3,
                ..CheckView::default()
            }),
            backends: vec![
                BackendView {
                    name: "b1".into(),
                    ip: "198.18.0.10".into(),
                    mac: None,
                    weight: 1,
                    state: "up".into(),
                    priority: 1,
                    healthy: true,
                    last_check: None,
                },
                BackendView {
                    name: "b2".into(),
                    ip: "198.18.0.11".into(),
                    mac: Some("02:00:00:00:00:0b".into()),
                    weight: 3,
                    state: "drain".into(),
                    priority: 2,
                    healthy: true,
                    last_check: None,
                },
            ],
            new_rate_limit: 20,
            new_rate_limit_burst: 0,
            new_rate_limit_farm: 0,
            new_rate_limit_farm_burst: 0,
            max_flows: 500,
            tcp_strict: true,
            maglev_table_size: 307,
        }
    }

    #[test]
    fn status_table() {
        let s = StatusView {
            answered_by: 1,
            leader: Some(1),
            vip_owner: Some(1),
            term: 4,
            lease_age_ms: 12,
            last_log_index: 40,
            applied_index: 40,
            owner_arbiter: String::new(),
            failover: "no failover: 2 voters, no witness".into(),
            version: Some("0.1.0 (aaaaaaaaaaaa)".into()),
            members: vec![
                MemberView {
                    id: 1,
                    address: "198.18.0.2:7100".into(),
                    role: "leader".into(),
                    reachable: true,
                    last_log_index: 40,
                    lag: Some(0),
                    version: Some("0.1.0 (aaaaaaaaaaaa)".into()),
                },
                MemberView {
                    id: 2,
                    address: "198.18.0.3:7100".into(),
                    role: "voter".into(),
                    reachable: false,
                    last_log_index: 0,
                    lag: None,
                    version: None,
                },
            ],
            vips: vec![VipView {
                vip: "198.18.0.100".into(),
                owner: None,
            }],
            vip_conflicts: Vec::new(),
        };
        assert_eq!(
            status(&s),
            "answered by  node 1\n\
             leader       node 1\n\
             vip owner    node 1\n\
             term         4\n\
             lease age    12 ms\n\
             log index    40 (applied 40)\n\
             failover     no failover: 2 voters, no witness\n\
             \n\
             ID  ADDRESS          ROLE    REACHABLE  LAST LOG  LAG  VERSION\n\
             1   198.18.0.2:7100  leader  yes        40        0    0.1.0 (aaaaaaaaaaaa)\n\
             2   198.18.0.3:7100  voter   no         0         -    -\n\
             \n\
             VIP           OWNER\n\
             198.18.0.100  none\n"
        );
        let mut v = crate::view::VersionView::from(s.clone());
        let text = version(&v);
        assert!(
            text.starts_with(&format!("client: dsrctl {}\n", buildinfo::LONG_VERSION)),
            "{text}"
        );
        assert!(
            text.contains("leader (answered)  0.1.0 (aaaaaaaaaaaa)"),
            "{text}"
        );
        assert!(text.contains("- (not reached)"), "{text}");
        assert!(!text.contains("mixed"), "{text}");
        v.members[1].version = Some("0.2.0 (bbbbbbbbbbbb)".into());
        assert!(version(&v).contains("mixed versions: 2 different builds"));

        let flux = StatusView {
            vip_conflicts: vec![crate::view::ConflictView {
                vip: "198.18.0.100".into(),
                mac: "02:00:00:00:00:22".into(),
                backends: vec!["web/b2".into()],
                claims: 7,
                last_seen_ms_ago: 2500,
                advice: "backend web/b2 (02:00:00:00:00:22) answers ARP for 198.18.0.100: set \
                         arp_ignore=1, arp_announce=2 on it"
                    .into(),
            }],
            ..s
        };
        assert!(status(&flux).ends_with(
            "198.18.0.100  none\n\nWARNING: ARP flux: backend web/b2 (02:00:00:00:00:22) answers \
             ARP for 198.18.0.100: set arp_ignore=1, arp_announce=2 on it (7 claims, last 2 s \
             ago)\n"
        ));
    }

    #[test]
    fn farm_list_and_show() {
        let v = FarmsView {
            answered_by: 2,
            farms: vec![web()],
        };
        assert_eq!(
            farms(&v, false),
            "NAME  VIP           PORTS  PROTOCOL  SCHEDULER  PERSISTENCE  CHECK   SERVING\n\
             web   198.18.0.100  80     tcp       maglev     srcip        tcp 2s  1/2\n\
             (answered by node 2)\n"
        );
        let out = farm_show(
            &FarmShowView {
                answered_by: 3,
                farm: web(),
            },
            false,
        );
        assert!(out.starts_with("name         web\n"), "{out}");
        assert!(out.contains("persistence  srcip (ttl 60s)\n"), "{out}");
        assert!(out.contains("scheduler    maglev (307 slots)\n"), "{out}");
        assert!(
            out.contains("check        tcp every 2s, timeout 1s, rise 2, fall 3\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "limits       per source 20/s burst 20, max 500 flows per backend, tcp strict\n"
            ),
            "{out}"
        );
        assert!(
            out.contains("b2    198.18.0.11  02:00:00:00:00:0b  3       drain  2         yes\n"),
            "{out}"
        );
    }

    #[test]
    fn wide_adds_columns_to_farm_and_backend_tables() {
        let mut f = web();
        f.backends[0].last_check = Some(CheckResultView {
            result: "up".into(),
            latency_us: 1_500,
            reason: String::new(),
            age_ms: 800,
            checked_by: 2,
        });
        let v = FarmsView {
            answered_by: 2,
            farms: vec![f.clone()],
        };
        let out = farms(&v, true);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            [
                "NAME",
                "VIP",
                "PORTS",
                "PROTOCOL",
                "SCHEDULER",
                "PERSISTENCE",
                "CHECK",
                "SERVING",
                "SLOTS",
                "TTL",
                "LIMITS",
                "BACKENDS"
            ]
        );
        let row = lines.next().unwrap();
        assert!(
            row.ends_with(
                "307    60s  per source 20/s burst 20, max 500 flows per backend, tcp strict  \
                 b1=198.18.0.10,b2=198.18.0.11"
            ),
            "{row}"
        );
        // Backend tables: the check columns and who checked, also for a backend never probed.
        let out = backends(
            &BackendsView {
                answered_by: 1,
                farm: "web".into(),
                backends: f.backends.clone(),
            },
            true,
        );
        assert!(out.contains("LAST CHECK"), "{out}");
        assert!(out.lines().next().unwrap().ends_with("CHECKED BY"), "{out}");
        assert!(out.contains("up (800ms ago)"), "{out}");
        let b1 = out.lines().find(|l| l.starts_with("b1 ")).unwrap();
        assert!(b1.ends_with("node 2"), "{b1}");
        let b2 = out.lines().find(|l| l.starts_with("b2 ")).unwrap();
        assert!(b2.trim_end().ends_with('-'), "{b2}");
        // Without wide, an unprobed farm's `farm show` keeps the narrow table.
        let narrow = farm_show(
            &FarmShowView {
                answered_by: 3,
                farm: web(),
            },
            false,
        );
        assert!(!narrow.contains("LAST CHECK"), "{narrow}");
        let wide = farm_show(
            &FarmShowView {
                answered_by: 3,
                farm: web(),
            },
            true,
        );
        assert!(wide.contains("CHECKED BY"), "{wide}");
    }

    #[test]
    fn json_shape_is_stable() {
        let v = FarmsView {
            answered_by: 2,
            farms: vec![web()],
        };
        let value: serde_json::Value = serde_json::from_str(&json(&v)).expect("valid JSON");
        assert_eq!(value["answered_by"], 2);
        assert_eq!(value["farms"][0]["check"]["type"], "tcp");
        assert_eq!(
            value["farms"][0]["backends"][0]["mac"],
            serde_json::Value::Null
        );
        assert_eq!(value["farms"][0]["backends"][1]["state"], "drain");
        let back: FarmsView = serde_json::from_str(&json(&v)).expect("round trip");
        assert_eq!(back, v);
    }

    #[test]
    fn writes_and_membership() {
        assert_eq!(
            write(&WriteView {
                done: "farm web created".into(),
                applied_index: 17,
                answered_by: 2
            }),
            "farm web created (applied at index 17, request taken by node 2)\n"
        );
        assert_eq!(
            membership(&MembershipView {
                voters: vec![1, 2, 3],
                learners: vec![],
                answered_by: 1
            }),
            "voters       1, 2, 3\nlearners     -\nanswered by  node 1\n"
        );
    }
}
