//! `dsrlb demo` runs start to finish — including a kill -9 of the VIP owner under a verified
//! stream — and leaves no namespace behind.

mod common;

use common::{can_run_lab, dsrlb};
use std::process::Command;

#[test]
fn the_demo_runs_and_cleans_up() {
    if !can_run_lab() {
        return;
    }
    let out = Command::new(dsrlb())
        .arg("demo")
        .output()
        .expect("demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for step in [
        "owns 198.18.0.100",
        "owner forwarded only",
        "took over",
        "every byte verified",
        "rejoined as a follower",
        "b2 out after",
        "back after",
        "3 of 3 nodes released the VIP",
    ] {
        assert!(
            stdout.contains(step),
            "demo output lacks {step:?}:\n{stdout}"
        );
    }
    // The tour's first step reads "[  0.2s] lab d1a2b3: a bridge in namespace ...".
    let prefix = stdout
        .split("] lab ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .expect("demo names its lab")
        .to_string();
    assert!(
        prefix.len() == 6 && prefix.starts_with('d'),
        "unexpected lab prefix {prefix:?}"
    );
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(
        !left.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
        "the demo left namespaces behind:\n{left}"
    );
}
