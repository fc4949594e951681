//! Every invalid key or value in a node config is rejected with an error naming the key.

use cluster::{BackendState, Persistence, Protocol};
use node::config::{self, ConfigError};

const BASE: &str = r#"
[node]
id = 1
data_dir = "/tmp/dsrlb-test"

[cluster]
listen = "198.18.0.11:7100"
members = ["1=198.18.0.11:7100", "2=198.18.0.12:7100", "3=198.18.0.13:7100"]
token_file = "/etc/dsrlb/cluster.token"
heartbeat_ms = 15
election_timeout_ms = [100, 120]
lease_ms = 80

[admin]
listen = "198.18.0.11:7101"
token_file = "/etc/dsrlb/admin.token"

[datapath]
interface = "eth0"

[[farm]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"
persistence = "srcip"
persistence_ttl = "30s"

[farm.check]
type = "tcp"
interval = "1s"
timeout = "500ms"
rise = 2
fall = 3

[[farm.backend]]
name = "b1"
ip = "198.18.0.21"
weight = 2

[[farm.backend]]
name = "b2"
ip = "198.18.0.22"
mac = "02:00:00:00:00:22"
state = "drain"
priority = 2
"#;

#[test]
fn the_base_config_is_valid_and_typed() {
    let c = config::parse(BASE).expect("valid");
    assert_eq!(c.node_id, 1);
    assert_eq!(c.cluster.members.len(), 3);
    let farm = &c.farms[0];
    assert_eq!(farm.protocol, Protocol::Tcp);
    assert_eq!(farm.ports(), 80..=80);
    assert_eq!(
        farm.persistence,
        Persistence::SrcIp {
            ttl: std::time::Duration::from_secs(30)
        }
    );
    assert_eq!(farm.backends[0].weight, 2);
    assert_eq!(farm.backends[1].state, BackendState::Drain);
    assert_eq!(farm.backends[1].priority, 2);
    assert_eq!(farm.check.as_ref().unwrap().fall, 3);
}

#[test]
fn defaults_fill_what_is_left_out() {
    let c = config::parse("[node]\nid = 7\n[admin]\ntoken_file = \"/etc/dsrlb/admin.token\"\n")
        .expect("valid");
    assert_eq!(c.admin_listen.port(), 7101);
    assert_eq!(c.metrics_listen.unwrap().port(), 7102);
    assert_eq!(c.cluster.listen.port(), 7100);
    assert_eq!(c.datapath.interface, "eth0");
    assert_eq!(c.datapath.garp_count, 3);
    assert_eq!(c.datapath.garp_refresh, None);
    assert_eq!(c.datapath.io, datapath::IoMode::Auto);
    assert!(c.farms.is_empty());
}

#[test]
fn io_names_one_of_three_backends() {
    for (value, want) in [
        ("auto", datapath::IoMode::Auto),
        ("af_packet", datapath::IoMode::AfPacket),
        ("af_xdp", datapath::IoMode::AfXdp),
    ] {
        let text = BASE.replacen(
            "interface = \"eth0\"",
            &format!("interface = \"eth0\"\nio = \"{value}\""),
            1,
        );
        let c = config::parse(&text).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(c.datapath.io, want, "{value}");
    }
}

#[test]
fn garp_refresh_is_off_at_zero_and_otherwise_from_1s_to_1h() {
    use std::time::Duration;
    for (value, want) in [
        ("\"0s\"", None),
        ("\"0\"", None),
        ("\"1s\"", Some(Duration::from_secs(1))),
        ("\"30s\"", Some(Duration::from_secs(30))),
        ("\"1h\"", Some(Duration::from_secs(3600))),
    ] {
        let text = BASE.replacen(
            "interface = \"eth0\"",
            &format!("interface = \"eth0\"\ngarp_refresh = {value}"),
            1,
        );
        let c = config::parse(&text).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(c.datapath.garp_refresh, want, "{value}");
    }
    let text = BASE.replacen(
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_refresh = \"999ms\"",
        1,
    );
    let message = config::parse(&text).unwrap_err().to_string();
    assert!(
        message.contains("datapath.garp_refresh")
            && message.contains("1s")
            && message.contains("1h"),
        "{message}"
    );
}

/// (what to replace in BASE, with what, the key the error must name)
const CASES: &[(&str, &str, &str)] = &[
    ("id = 1", "id = 0", "node.id"),
    ("id = 1", "", "node.id"),
    ("id = 1", "id = \"one\"", "id"),
    (
        "data_dir = \"/tmp/dsrlb-test\"",
        "data_dir = \"\"",
        "node.data_dir",
    ),
    ("[node]", "[node]\ncolour = \"blue\"", "colour"),
    (
        "listen = \"198.18.0.11:7100\"",
        "listen = \"nowhere\"",
        "cluster.listen",
    ),
    (
        "\"2=198.18.0.12:7100\"",
        "\"2198.18.0.12:7100\"",
        "cluster.members[1]",
    ),
    (
        "\"2=198.18.0.12:7100\"",
        "\"0=198.18.0.12:7100\"",
        "cluster.members[1]",
    ),
    (
        "\"2=198.18.0.12:7100\"",
        "\"1=198.18.0.12:7100\"",
        "cluster.members[1]",
    ),
    (
        "\"1=198.18.0.11:7100\", ",
        "\"4=198.18.0.14:7100\", ",
        "cluster.members",
    ),
    (
        "token_file = \"/etc/dsrlb/cluster.token\"",
        "",
        "cluster.token_file",
    ),
    (
        "token_file = \"/etc/dsrlb/admin.token\"",
        "",
        "admin.token_file",
    ),
    (
        "token_file = \"/etc/dsrlb/admin.token\"",
        "token_file = \"\"",
        "admin.token_file",
    ),
    (
        "listen = \"198.18.0.11:7101\"",
        "listen = \"7101\"",
        "admin.listen",
    ),
    // docs/design.md#listeners
    (
        "data_dir = \"/tmp/dsrlb-test\"",
        "data_dir = \"/tmp/dsrlb-test\"\nidle_timeout = \"500ms\"",
        "node.idle_timeout",
    ),
    (
        "data_dir = \"/tmp/dsrlb-test\"",
        "data_dir = \"/tmp/dsrlb-test\"\nidle_timeout = \"2h\"",
        "node.idle_timeout",
    ),
    (
        "listen = \"198.18.0.11:7101\"",
        "listen = \"198.18.0.11:7101\"\nmax_connections = 0",
        "admin.max_connections",
    ),
    (
        "token_file = \"/etc/dsrlb/cluster.token\"",
        "token_file = \"/etc/dsrlb/cluster.token\"\nmax_connections = 5000",
        "cluster.max_connections",
    ),
    (
        "[node]",
        "[metrics]\nmax_connections = 0\n\n[node]",
        "metrics.max_connections",
    ),
    (
        "[node]",
        "[metrics]\ntoken_file = \"\"\n\n[node]",
        "metrics.token_file",
    ),
    // The lease must end LEASE_MARGIN (20 ms) before the earliest vote (election max 120).
    ("lease_ms = 80", "lease_ms = 101", "cluster.lease_ms"),
    // ...and last 3 real heartbeats (3 × 1.5 × 15 = 67.5 ms).
    ("lease_ms = 80", "lease_ms = 67", "cluster.lease_ms"),
    ("lease_ms = 80", "lease_ms = 0", "cluster.lease_ms"),
    // A slower heartbeat under the same lease: one late heartbeat would drop ownership.
    ("heartbeat_ms = 15", "heartbeat_ms = 50", "cluster.lease_ms"),
    (
        "heartbeat_ms = 15",
        "heartbeat_ms = 0",
        "cluster.heartbeat_ms",
    ),
    (
        "heartbeat_ms = 15",
        "heartbeat_ms = 5000",
        "cluster.heartbeat_ms",
    ),
    ("[100, 120]", "[120, 100]", "cluster.election_timeout_ms"),
    ("[100, 120]", "[120, 120]", "cluster.election_timeout_ms"),
    ("[100, 120]", "[10, 120]", "cluster.election_timeout_ms"),
    ("[100, 120]", "[100, 70000]", "cluster.election_timeout_ms"),
    (
        "interface = \"eth0\"",
        "interface = \"\"",
        "datapath.interface",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"a-very-long-interface\"",
        "datapath.interface",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nworkers = 1000",
        "datapath.workers",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nio = \"dpdk\"",
        "datapath.io",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nio = \"AF_XDP\"",
        "datapath.io",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_count = 0",
        "datapath.garp_count",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_interval_ms = 0",
        "datapath.garp_interval_ms",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_refresh = \"500ms\"",
        "datapath.garp_refresh",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_refresh = \"61m\"",
        "datapath.garp_refresh",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_refresh = \"often\"",
        "datapath.garp_refresh",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\ngarp_refresh = 30",
        "garp_refresh",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nring_slots = 100",
        "datapath.ring_slots",
    ),
    (
        "interface = \"eth0\"",
        // A power of two the datapath cannot map (its limit is 4096 slots).
        "interface = \"eth0\"\nring_slots = 8192",
        "datapath.ring_slots",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nflow_capacity = 1",
        "datapath.flow_capacity",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nflow_idle = \"forever\"",
        "datapath.flow_idle",
    ),
    (
        "interface = \"eth0\"",
        // A node setting no more: each farm has its own.
        "interface = \"eth0\"\nmaglev_table_size = 65537",
        "datapath.maglev_table_size",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nmaglev_table_size = 256",
        "farm[web].maglev_table_size",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nmaglev_table_size = 241",
        "farm[web].maglev_table_size",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nmaglev_table_size = 1048583",
        "farm[web].maglev_table_size",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nrings = 3",
        "rings",
    ),
    ("name = \"web\"", "name = \"we b\"", "farm[0].name"),
    ("name = \"web\"", "name = \"\"", "farm[0].name"),
    (
        "vip = \"198.18.0.100\"",
        "vip = \"198.18.0\"",
        "farm[web].vip",
    ),
    (
        "vip = \"198.18.0.100\"",
        "vip = \"224.0.0.1\"",
        "farm[web].vip",
    ),
    (
        "vip = \"198.18.0.100\"",
        "vip = \"0.0.0.0\"",
        "farm[web].vip",
    ),
    (
        "vip = \"198.18.0.100\"",
        "vip = \"198.18.0.21\"",
        "farm[web].backend[b1].ip",
    ),
    ("port = 80", "port = 0", "farm[web].port"),
    ("port = 80", "port = 70000", "port"),
    ("port = 80", "", "farm[web].port"),
    (
        "port = 80",
        "port = 80\nports = \"80-90\"",
        "farm[web].ports",
    ),
    ("port = 80", "ports = \"90-80\"", "farm[web].ports"),
    ("port = 80", "ports = \"80\"", "farm[web].ports"),
    (
        "protocol = \"tcp\"",
        "protocol = \"sctp\"",
        "farm[web].protocol",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"tcp\"\nscheduler = \"random\"",
        "farm[web].scheduler",
    ),
    (
        "persistence = \"srcip\"",
        "persistence = \"cookie\"",
        "farm[web].persistence",
    ),
    (
        "persistence_ttl = \"30s\"",
        "persistence_ttl = \"30\"",
        "farm[web].persistence_ttl",
    ),
    (
        "type = \"tcp\"",
        "type = \"gopher\"",
        "farm[web].check.type",
    ),
    // Issue #15: the keys of each check type, and only those.
    (
        "type = \"tcp\"",
        "type = \"tcp\"\npath = \"/health\"",
        "farm[web].check.path",
    ),
    (
        "type = \"tcp\"",
        "type = \"http\"\npath = \"health\"",
        "farm[web].check.path",
    ),
    (
        "type = \"tcp\"",
        "type = \"http\"\nexpect_status = \"399-200\"",
        "farm[web].check.expect_status",
    ),
    (
        "type = \"tcp\"",
        "type = \"http\"\nexpect_status = \"ok\"",
        "farm[web].check.expect_status",
    ),
    (
        "type = \"tcp\"",
        "type = \"http\"\nca_file = \"/etc/ca.pem\"",
        "farm[web].check.ca_file",
    ),
    (
        "type = \"tcp\"",
        "type = \"https\"\nca_file = \"/nonexistent/ca.pem\"",
        "farm[web].check.ca_file",
    ),
    (
        "type = \"tcp\"",
        "type = \"udp\"\nexpect_body = \"ok\"",
        "farm[web].check.expect_body",
    ),
    (
        "type = \"tcp\"",
        "type = \"udp\"\nsend = \"ping\"",
        "farm[web].check.port",
    ),
    (
        "type = \"tcp\"",
        "type = \"exec\"",
        "farm[web].check.program",
    ),
    (
        "type = \"tcp\"",
        "type = \"exec\"\nprogram = \"check.sh\"",
        "farm[web].check.program",
    ),
    (
        "type = \"tcp\"",
        "type = \"tcp\"\nport = 0",
        "farm[web].check.port",
    ),
    (
        "protocol = \"tcp\"",
        "protocol = \"udp\"",
        "farm[web].check.port",
    ),
    (
        "interval = \"1s\"",
        "interval = \"0s\"",
        "farm[web].check.interval",
    ),
    (
        "timeout = \"500ms\"",
        "timeout = \"2s\"",
        "farm[web].check.timeout",
    ),
    ("rise = 2", "rise = 0", "farm[web].check.rise"),
    ("fall = 3", "fall = 1000", "farm[web].check.fall"),
    (
        "name = \"b1\"",
        "name = \"b/1\"",
        "farm[web].backend[0].name",
    ),
    (
        "name = \"b1\"",
        "name = \"b2\"",
        "farm[web].backend[1].name",
    ),
    (
        "ip = \"198.18.0.21\"",
        "ip = \"198.18.0.22\"",
        "farm[web].backend[b2].ip",
    ),
    (
        "ip = \"198.18.0.21\"",
        "ip = \"255.255.255.255\"",
        "farm[web].backend[b1].ip",
    ),
    (
        "ip = \"198.18.0.21\"",
        "ip = \"fe80::1\"",
        "farm[web].backend[b1].ip",
    ),
    (
        "mac = \"02:00:00:00:00:22\"",
        "mac = \"02:00:00:00:22\"",
        "farm[web].backend[b2].mac",
    ),
    (
        "mac = \"02:00:00:00:00:22\"",
        "mac = \"ff:ff:ff:ff:ff:ff\"",
        "farm[web].backend[b2].mac",
    ),
    (
        "weight = 2",
        "weight = 70000",
        "farm[web].backend[b1].weight",
    ),
    ("weight = 2", "weight = -1", "weight"),
    (
        "state = \"drain\"",
        "state = \"maintenance\"",
        "farm[web].backend[b2].state",
    ),
    (
        "priority = 2",
        "priority = 0",
        "farm[web].backend[b2].priority",
    ),
    (
        "[[farm.backend]]\nname = \"b1\"",
        "[[farm.backend]]\nname = \"b1\"\nport = 8080",
        "port",
    ),
    // Issue #17: every duration and count has a range, and nonsense names its key.
    (
        "interval = \"1s\"",
        "interval = \"1ns\"",
        "farm[web].check.interval",
    ),
    (
        "interval = \"1s\"",
        "interval = \"99ms\"",
        "farm[web].check.interval",
    ),
    (
        "interval = \"1s\"",
        "interval = \"2h\"",
        "farm[web].check.interval",
    ),
    (
        "timeout = \"500ms\"",
        "timeout = \"1ms\"",
        "farm[web].check.timeout",
    ),
    (
        "persistence_ttl = \"30s\"",
        "persistence_ttl = \"600000000y\"",
        "farm[web].persistence_ttl",
    ),
    (
        "persistence_ttl = \"30s\"",
        "persistence_ttl = \"366days\"",
        "farm[web].persistence_ttl",
    ),
    (
        "persistence_ttl = \"30s\"",
        "persistence_ttl = \"100ms\"",
        "farm[web].persistence_ttl",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nflow_idle = \"600y\"",
        "datapath.flow_idle",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nflow_idle = \"25h\"",
        "datapath.flow_idle",
    ),
    (
        "interface = \"eth0\"",
        "interface = \"eth0\"\nflow_idle = \"10ms\"",
        "datapath.flow_idle",
    ),
    ("lease_ms = 80", "lease_ms = 10", "cluster.lease_ms"),
    (
        "heartbeat_ms = 15",
        "heartbeat_ms = 100",
        "cluster.election_timeout_ms",
    ),
    (
        "heartbeat_ms = 15",
        "heartbeat_ms = 0",
        "cluster.heartbeat_ms",
    ),
    (
        "election_timeout_ms = [100, 120]",
        "election_timeout_ms = [120, 120]",
        "cluster.election_timeout_ms",
    ),
    (
        "election_timeout_ms = [100, 120]",
        "election_timeout_ms = [100, 120, 140]",
        "cluster.election_timeout_ms",
    ),
    (
        "election_timeout_ms = [100, 120]",
        "election_timeout_ms = [100, 70000]",
        "cluster.election_timeout_ms",
    ),
    (
        "\"3=198.18.0.13:7100\"",
        "\"3=198.18.0.12:7100\"",
        "cluster.members[2]",
    ),
    (
        "ip = \"198.18.0.21\"",
        "ip = \"198.18.0.11\"",
        "farm[web].backend[b1].ip",
    ),
    (
        "vip = \"198.18.0.100\"",
        "vip = \"198.18.0.13\"",
        "farm[web].vip",
    ),
    (
        "name = \"b1\"",
        "name = \"b1234567890123456789012345678901234567890123456789012345678901234\"",
        "farm[web].backend[0].name",
    ),
];

#[test]
fn every_invalid_key_or_value_is_rejected_naming_the_key() {
    for (from, to, key) in CASES {
        assert!(BASE.contains(from), "case {from:?} does not apply to BASE");
        let text = BASE.replacen(from, to, 1);
        let err = match config::parse(&text) {
            Ok(_) => panic!("{from:?} -> {to:?} was accepted"),
            Err(e) => e,
        };
        let message = err.to_string();
        assert!(
            message.contains(key),
            "{from:?} -> {to:?}: error does not name {key:?}: {message}"
        );
        if let ConfigError::Invalid { key: named, .. } = &err {
            assert_eq!(named, key, "{from:?} -> {to:?}: wrong key in {message}");
        }
    }
}

#[test]
fn errors_never_echo_unbounded_input() {
    let huge = "x".repeat(3 << 20);
    for (from, to) in [
        ("name = \"web\"", format!("name = \"{huge}\"")),
        ("vip = \"198.18.0.100\"", format!("vip = \"{huge}\"")),
        ("interval = \"1s\"", format!("interval = \"{huge}\"")),
        (
            "listen = \"198.18.0.11:7101\"",
            format!("listen = \"{huge}\""),
        ),
    ] {
        let err = config::parse(&BASE.replacen(from, &to, 1))
            .expect_err(from)
            .to_string();
        assert!(err.len() < 1024, "{from}: a {} byte error", err.len());
    }
}

#[test]
fn a_farm_of_zero_weights_is_a_warning() {
    let c = config::parse(
        &BASE
            .replace("weight = 2", "weight = 0")
            .replace("priority = 2", "priority = 2\nweight = 0"),
    )
    .expect("valid");
    let w = c.warnings();
    assert!(
        w.iter()
            .any(|w| w.contains("farm[web]") && w.contains("weight 0")),
        "{w:?}"
    );
    assert!(config::parse(BASE).unwrap().warnings().is_empty());
}

#[test]
fn overlapping_farms_on_one_vip_and_protocol_are_rejected() {
    let extra = "\n[[farm]]\nname = \"web2\"\nvip = \"198.18.0.100\"\nports = \"70-85\"\nprotocol = \"tcp\"\n";
    let err = config::parse(&format!("{BASE}{extra}")).unwrap_err();
    assert!(err.to_string().contains("farm[web2].port"), "{err}");
    let udp = extra.replace("tcp", "udp");
    config::parse(&format!("{BASE}{udp}")).expect("same ports over UDP do not overlap");
    let dup = "\n[[farm]]\nname = \"web\"\nvip = \"198.18.0.101\"\nport = 80\nprotocol = \"tcp\"\n";
    let err = config::parse(&format!("{BASE}{dup}")).unwrap_err();
    assert!(err.to_string().contains("farm[1].name"), "{err}");
}

#[test]
fn a_missing_file_names_the_path() {
    let err = config::load(std::path::Path::new("/nonexistent/dsrlb.toml")).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/dsrlb.toml"), "{err}");
}

#[test]
fn the_shipped_example_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("deploy/examples exists") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            seen += 1;
        }
    }
    assert!(seen > 0, "no example configs found in {}", dir.display());
}

#[test]
fn pair_arbiter_segment_needs_a_pair_of_load_balancers_and_bounded_probes() {
    let lease = "lease_ms = 80";
    let pair = BASE.replace(", \"3=198.18.0.13:7100\"", "");
    let with = |extra: &str| pair.replacen(lease, &format!("{lease}\n{extra}"), 1);
    let c = config::parse(&with("pair_arbiter = \"segment\"")).expect("a pair with segment");
    let seg = c.cluster.segment.expect("the segment arbiter is on");
    assert_eq!(seg.probe_interval, std::time::Duration::from_millis(50));
    assert_eq!(seg.probe_count, 3);
    let c = config::parse(&with(
        "pair_arbiter = \"segment\"\nsegment_probe_interval_ms = 20\nsegment_probe_count = 5",
    ))
    .unwrap();
    let seg = c.cluster.segment.unwrap();
    assert_eq!((seg.probe_interval.as_millis(), seg.probe_count), (20, 5));
    assert!(config::parse(BASE).unwrap().cluster.segment.is_none());
    let three = BASE.replacen(lease, &format!("{lease}\npair_arbiter = \"segment\""), 1);
    for (text, key) in [
        (with("pair_arbiter = \"vrrp\""), "cluster.pair_arbiter"),
        (three, "cluster.pair_arbiter"),
        (
            with("pair_arbiter = \"segment\"\nwitness = true"),
            "cluster.pair_arbiter",
        ),
        (
            with("pair_arbiter = \"segment\"\nsegment_probe_interval_ms = 5"),
            "cluster.segment_probe_interval_ms",
        ),
        (
            with("pair_arbiter = \"segment\"\nsegment_probe_interval_ms = 1001"),
            "cluster.segment_probe_interval_ms",
        ),
        (
            with("pair_arbiter = \"segment\"\nsegment_probe_count = 0"),
            "cluster.segment_probe_count",
        ),
        (
            with("pair_arbiter = \"segment\"\nsegment_probe_count = 21"),
            "cluster.segment_probe_count",
        ),
    ] {
        match config::parse(&text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(ConfigError::Invalid { key: named, reason }) => {
                assert_eq!(named, key, "{reason}")
            }
            Err(e) => panic!("not a key error: {e}"),
        }
    }
}

/// docs/design.md#pairs: a pair without a witness never fails over, so it is refused unless
/// the operator says so; the error names the key and what to add.
#[test]
fn a_pair_without_a_witness_is_refused_unless_allowed() {
    let pair = BASE.replace(", \"3=198.18.0.13:7100\"", "");
    match config::parse(&pair) {
        Err(ConfigError::Invalid { key, reason }) => {
            assert_eq!(key, "cluster.members");
            assert!(reason.contains("dsrlb witness"), "{reason}");
            assert!(reason.contains("allow_no_failover"), "{reason}");
        }
        other => panic!("a two-voter cluster was not refused: {other:?}"),
    }
    let allowed = pair.replace("lease_ms = 80", "lease_ms = 80\nallow_no_failover = true");
    let c = config::parse(&allowed).expect("allowed on purpose");
    assert!(c.cluster.allow_no_failover);
    assert_eq!(c.cluster.members.len(), 2);
}

/// The lowest id creates the cluster with its farms; a witness has none to give.
#[test]
fn a_witness_with_the_lowest_id_is_refused() {
    let witness = BASE.replace("lease_ms = 80", "lease_ms = 80\nwitness = true");
    match config::parse(&witness) {
        Err(ConfigError::Invalid { key, reason }) => {
            assert_eq!(key, "node.id");
            assert!(reason.contains("higher id"), "{reason}");
        }
        other => panic!("a witness with the lowest id was accepted: {other:?}"),
    }
    let highest = witness.replace("id = 1\n", "id = 3\n");
    let c = config::parse(&highest).expect("a witness with the highest id");
    assert!(c.cluster.witness);
}

/// `--config` defaults to `/etc/dsrlb/dsrlb.toml`; `DSRLB_CONFIG` names another file;
/// `--config` wins over both. Seen through `check-config`, which reads the same argument as
/// `run` and `witness`.
#[test]
fn the_config_path_defaults_to_etc_and_follows_dsrlb_config() {
    let dsrlb = env!("CARGO_BIN_EXE_dsrlb");
    let check = |env: Option<&str>, args: &[&str]| {
        let mut cmd = std::process::Command::new(dsrlb);
        cmd.arg("check-config")
            .args(args)
            .env_remove("DSRLB_CONFIG");
        if let Some(path) = env {
            cmd.env("DSRLB_CONFIG", path);
        }
        let out = cmd.output().expect("dsrlb runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let help = std::process::Command::new(dsrlb)
        .args(["run", "--help"])
        .output()
        .expect("dsrlb runs");
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    assert!(
        help.contains("[env: DSRLB_CONFIG=]") && help.contains("[default: /etc/dsrlb/dsrlb.toml]"),
        "{help}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let missing = missing.to_str().unwrap();
    let (code, text) = check(Some(missing), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(missing), "DSRLB_CONFIG is read: {text}");
    let other = dir.path().join("other.toml");
    let other = other.to_str().unwrap();
    let (_, text) = check(Some(missing), &["--config", other]);
    assert!(
        text.contains(other) && !text.contains(missing),
        "--config wins: {text}"
    );
    if !std::path::Path::new("/etc/dsrlb/dsrlb.toml").exists() {
        let (code, text) = check(None, &[]);
        assert_eq!(code, Some(1), "{text}");
        assert!(text.contains("/etc/dsrlb/dsrlb.toml"), "{text}");
    }
}

#[test]
fn check_config_refuses_an_interface_this_host_lacks() {
    let mut c = config::parse(BASE).expect("base config");
    c.datapath.interface = "lo".into();
    config::check_host(&c).expect("every host has lo");
    c.datapath.interface = "dsrlbnone0".into();
    let e = config::check_host(&c).expect_err("no such interface");
    let text = e.to_string();
    assert!(
        text.contains("datapath.interface") && text.contains("dsrlbnone0"),
        "{text}"
    );
}

/// A dual-stack node: the IPv4 farm of [`BASE`] and an IPv6 farm, the node's listeners on
/// IPv6 (docs/design.md#ipv6).
fn dual_stack() -> String {
    BASE.replace("198.18.0.11:7100", "[2001:db8::11]:7100")
        .replace("198.18.0.12:7100", "[2001:db8::12]:7100")
        .replace("198.18.0.13:7100", "[2001:db8::13]:7100")
        .replace("198.18.0.11:7101", "[2001:db8::11]:7101")
        + r#"
[metrics]
listen = "[::1]:9100"

[[farm]]
name = "web6"
vip = "2001:db8::100"
port = 80
protocol = "tcp"

[[farm.backend]]
name = "b1"
ip = "2001:db8::21"

[[farm.backend]]
name = "b2"
ip = "fe80::22"
mac = "02:00:00:00:00:22"
"#
}

#[test]
fn an_ipv6_farm_and_ipv6_listeners_are_valid() {
    let c = config::parse(&dual_stack()).expect("valid dual-stack config");
    let srcip = dual_stack().replacen(
        "vip = \"2001:db8::100\"",
        "vip = \"2001:db8::100\"\npersistence = \"srcip\"",
        1,
    );
    config::parse(&srcip).expect("srcip persistence on an IPv6 VIP");
    let web6 = c.farms.iter().find(|f| f.name == "web6").expect("web6");
    assert_eq!(
        web6.vip,
        "2001:db8::100".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(
        web6.backends[1].ip,
        "fe80::22".parse::<std::net::IpAddr>().unwrap()
    );
    assert_eq!(c.cluster.listen, "[2001:db8::11]:7100".parse().unwrap());
    assert_eq!(c.admin_listen, "[2001:db8::11]:7101".parse().unwrap());
}

#[test]
fn every_invalid_ipv6_case_is_rejected_naming_the_key() {
    let base = dual_stack();
    let web6 = "vip = \"2001:db8::100\"";
    let cases: &[(&str, &str, &str, &str)] = &[
        // A farm is one family.
        (
            "ip = \"2001:db8::21\"",
            "ip = \"198.18.0.31\"",
            "farm[web6].backend[b1].ip",
            "family",
        ),
        (
            "ip = \"198.18.0.21\"",
            "ip = \"2001:db8::31\"",
            "farm[web].backend[b1].ip",
            "family",
        ),
        (web6, "vip = \"ff02::1\"", "farm[web6].vip", "unicast"),
        (web6, "vip = \"fe80::100\"", "farm[web6].vip", "link-local"),
        (
            web6,
            "vip = \"::ffff:198.18.0.100\"",
            "farm[web6].vip",
            "IPv4-mapped",
        ),
        (web6, "vip = \"::1\"", "farm[web6].vip", "unicast"),
        (web6, "vip = \"::\"", "farm[web6].vip", "unicast"),
        (
            web6,
            "vip = \"2001:db8::1::2\"",
            "farm[web6].vip",
            "not an IPv4 or IPv6",
        ),
        // The VIP is a node's address.
        (web6, "vip = \"2001:db8::12\"", "farm[web6].vip", "node 2"),
        (
            "ip = \"2001:db8::21\"",
            "ip = \"ff05::21\"",
            "farm[web6].backend[b1].ip",
            "unicast",
        ),
        (
            "ip = \"2001:db8::21\"",
            "ip = \"2001:db8::100\"",
            "farm[web6].backend[b1].ip",
            "VIP",
        ),
    ];
    for (from, to, key, why) in cases {
        assert!(
            base.contains(from),
            "case {key}: {from:?} not in the config"
        );
        let text = base.replacen(from, to, 1);
        match config::parse(&text) {
            Err(ConfigError::Invalid { key: named, reason }) => {
                assert_eq!(named, *key, "{to:?}: {reason}");
                assert!(
                    reason.contains(why),
                    "{to:?}: {reason:?} does not say {why:?}"
                );
            }
            other => panic!("{to:?} was not rejected naming {key}: {other:?}"),
        }
    }
}
