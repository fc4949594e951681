//! The operator's dashboard and alert rules (`deploy/grafana/dsrlb.json`,
//! `deploy/prometheus/alerts.yml`) name only metrics a live node exports: every `dsrlb_*`
//! name in them is declared in the `/metrics` output of a 3-node cluster with checked farms
//! (docs/design.md#metrics), so a renamed metric breaks CI, not an operator's graphs; and the
//! alert rules pass promtool's checks and their own unit tests.

use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use lab::lbnode::METRICS_PORT;
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Series that only a configuration this lab does not run exports, each with why.
const ELSEWHERE: &[(&str, &str)] = &[(
    "dsrlb_segment_",
    "a pair arbitrated by the segment only (pair_segment lab tests)",
)];

/// Series exported only with the AF_PACKET I/O backend: the tc fast path runs beside it
/// alone, so the suite's AF_XDP pass (`DSRLB_LAB_IO=af_xdp`) does not see them.
const AF_PACKET_ONLY: &[&str] = &["dsrlb_fast_path_packets_total"];

/// Every `dsrlb_…` name in `text`, skipping YAML comment lines.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find("dsrlb_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names
}

/// The sample names a scrape may carry, from its `# TYPE` lines (a family with no series
/// yet still declares itself) and its samples.
fn exported(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(decl) = line.strip_prefix("# TYPE ") {
            let family = decl.split_whitespace().next().unwrap_or_default();
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{family}{suffix}"));
            }
        } else if !line.starts_with('#') {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// promtool: `DSRLB_PROMTOOL`, else on the PATH.
fn promtool() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("DSRLB_PROMTOOL") {
        return Some(p.into());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

/// The alert rules load (`promtool check rules`) and fire as their unit tests say
/// (`promtool test rules alerts.test.yml`: no owner, two owners, a backend down, ring drops,
/// ARP flux, a full pin table, a node down, …). CI extracts promtool from Debian's
/// `prometheus` package; elsewhere the test says it skipped.
#[test]
fn alert_rules_pass_promtool() {
    let Some(promtool) = promtool() else {
        assert!(
            std::env::var_os("DSRLB_REQUIRE_LAB").is_none(),
            "promtool not found (set DSRLB_PROMTOOL or put it on the PATH)"
        );
        eprintln!("skipped: promtool not found (DSRLB_PROMTOOL or PATH)");
        return;
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn dashboard_and_alert_metrics_exist_in_a_live_nodes_output() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard = std::fs::read_to_string(deploy.join("grafana/dsrlb.json")).expect("dashboard");
    let alerts = std::fs::read_to_string(deploy.join("prometheus/alerts.yml")).expect("alerts");
    serde_json::from_str::<serde_json::Value>(&dashboard).expect("the dashboard is JSON");
    let mut wanted = names_in(&dashboard);
    wanted.extend(names_in(&alerts));
    assert!(
        wanted.len() >= 10,
        "too few metric names found, is the scan broken? {wanted:?}"
    );
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let mut have = BTreeSet::new();
    for node in c.lab.nodes() {
        let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
        let reply = node
            .run(move || lab::http_get(addr, "/metrics"))
            .expect("scrape");
        have.extend(exported(&reply.body));
    }
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !have.contains(*n))
        .filter(|n| !ELSEWHERE.iter().any(|(prefix, _)| n.starts_with(prefix)))
        .filter(|n| lab::lbnode::lab_io() == "af_packet" || !AF_PACKET_ONLY.contains(&n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard or alerts name metrics no node exports: {missing:?}"
    );
}
