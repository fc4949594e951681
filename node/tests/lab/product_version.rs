//! Identity of a build across a real 3-node cluster: `dsrlb --version` names the release,
//! commit and build date; `dsrctl version` shows the client and every member's version as
//! each member reports it (a member that cannot be asked shows none, so the column is not
//! the answering node's own version copied); `/metrics` carries `dsrlb_build_info`.

use crate::common::{ClusterLab, can_run_lab, dsrlb, web_and_echo};
use dsrctl::view::VersionView;
use lab::ctl::{run_in, strings};
use lab::lbnode::ADMIN_PORT;

#[test]
fn versions_of_the_client_and_every_member() {
    if !can_run_lab() {
        return;
    }
    let out = std::process::Command::new(dsrlb())
        .arg("--version")
        .output()
        .expect("dsrlb runs");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(
        line,
        format!(
            "dsrlb {} ({}, {})",
            buildinfo::VERSION,
            buildinfo::COMMIT,
            buildinfo::DATE
        )
    );
    assert_ne!(buildinfo::COMMIT, "unknown", "built from a git checkout");
    let ctl = lab::ctl::run(&["--version"]);
    assert_eq!(
        ctl.stdout.trim(),
        format!("dsrctl (dsrlb) {}", buildinfo::LONG_VERSION)
    );

    let mut c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let token = c.lab.admin_token_file().expect("admin token");
    let ask = |c: &ClusterLab, i: usize, format: &[&str]| {
        let endpoint = format!("http://{}:{ADMIN_PORT}", c.lab.nodes()[i].ip);
        let mut args = strings(&["-e", &endpoint, "--token-file", token.to_str().unwrap()]);
        args.extend(strings(format));
        args.push("version".into());
        run_in(&c.lab.clients()[0], &args)
    };
    let v: VersionView = ask(&c, owner, &["-o", "json"]).ok().json();
    assert_eq!(v.client, buildinfo::LONG_VERSION);
    assert_eq!(v.answered_by, owner as u64 + 1);
    assert_eq!(v.members.len(), 3, "{v:?}");
    for m in &v.members {
        assert_eq!(
            m.version.as_deref(),
            Some(buildinfo::short().as_str()),
            "{v:?}"
        );
    }
    let table = ask(&c, owner, &[]).ok().stdout;
    assert!(
        table.starts_with(&format!("client: dsrctl {}", buildinfo::LONG_VERSION)),
        "{table}"
    );
    assert_eq!(table.matches(&buildinfo::short()).count(), 3, "{table}");

    for i in 0..3 {
        let m = lab::lbnode::scrape(&c.lab.nodes()[i]).expect("metrics");
        let labels = [
            ("version", buildinfo::VERSION),
            ("commit", buildinfo::COMMIT),
        ];
        assert_eq!(m.get("dsrlb_build_info", &labels), 1.0, "node {i}");
    }

    // A member that is down has no version to give: the answer does not invent one.
    let down = (owner + 1) % 3;
    c.kill(down);
    let v: VersionView = ask(&c, owner, &["-o", "json"]).ok().json();
    let m = v
        .members
        .iter()
        .find(|m| m.id == down as u64 + 1)
        .expect("still a member");
    assert_eq!(m.version, None, "{v:?}");
    let table = ask(&c, owner, &[]).ok().stdout;
    assert!(table.contains("- (not reached)"), "{table}");
}
