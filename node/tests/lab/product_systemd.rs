//! The daemon under a service manager (docs/design.md#systemd): with `NOTIFY_SOCKET` pointed
//! at a datagram socket of this test, a node sends `READY=1` only once its forwarding table
//! is published (its `/readyz` already says ready then) and `STOPPING=1` at SIGTERM, before
//! a clean exit; with `DSRLB_LOG_FORMAT=json` every log line is one JSON object.

use crate::common::{can_run_lab, dsrlb, one_node_lab, web_and_echo};
use lab::lbnode::METRICS_PORT;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The next notification the node sends, waiting up to `limit`.
fn next_notification(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_once_the_table_is_published_stopping_at_sigterm_and_json_logs() {
    if !can_run_lab() {
        return;
    }
    let lab = one_node_lab(2);
    let farms = web_and_echo(2);
    let path = lab.dir().join("n1.toml");
    std::fs::write(&path, lab.node_config(0, &farms).expect("config")).expect("write config");
    // A path socket (not abstract): the node runs in another network namespace, and
    // abstract unix sockets belong to one.
    let sock_path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    let mut node = lab.nodes()[0]
        .spawn_with_env(
            dsrlb(),
            ["run".as_ref(), "--config".as_ref(), path.as_os_str()],
            [
                ("RUST_LOG", "info"),
                ("DSRLB_LOG_FORMAT", "json"),
                ("NOTIFY_SOCKET", sock_path.to_str().expect("utf-8 path")),
            ],
        )
        .expect("node starts");

    let first = next_notification(&sock, Duration::from_secs(20))
        .unwrap_or_else(|| panic!("no notification within 20 s:\n{}", node.log_tail(30)));
    // Asked at once: READY=1 must not come before what it promises.
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let ready = lab.nodes()[0]
        .run(move || lab::http_get(addr, "/readyz"))
        .expect("/readyz answers");
    let lines: Vec<&str> = first.lines().collect();
    assert!(lines.contains(&"READY=1"), "first notification: {first:?}");
    // The table READY=1 announces holds the configured farms, not the empty one a node
    // publishes before the cluster's Bootstrap entry applies.
    let want = format!("STATUS={} farm(s), forwarding table published", farms.len());
    assert!(
        lines.contains(&want.as_str()),
        "first notification: {first:?}, want {want:?}"
    );
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready\n"),
        "READY=1 was sent while /readyz said otherwise"
    );

    node.signal(Signal::SIGTERM).expect("SIGTERM");
    let second = next_notification(&sock, Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no STOPPING=1 within 10 s:\n{}", node.log_tail(30)));
    assert!(
        second.lines().any(|l| l == "STOPPING=1"),
        "second notification: {second:?}"
    );
    let status = node
        .wait_timeout(Duration::from_secs(20))
        .expect("wait")
        .unwrap_or_else(|| panic!("no exit 20 s after SIGTERM:\n{}", node.log_tail(30)));
    assert!(status.success(), "exit after SIGTERM: {status}");

    let log = node.read_log();
    let mut events = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "log line without level or message: {line}"
        );
        events += 1;
    }
    let started = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "datapath started")
        .unwrap_or_else(|| panic!("no 'datapath started' event in:\n{log}"));
    assert!(
        started["fields"]["io"].is_string(),
        "the event's fields are structured: {started}"
    );
    assert!(events >= 5, "only {events} log lines:\n{log}");
}
