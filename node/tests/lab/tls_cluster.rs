//! Optional TLS on a running cluster (issue #4, item 3): three `dsrlb` nodes with mutual
//! peer TLS and admin TLS (client certificates required) form a cluster and elect an
//! owner; `dsrctl` over https with the cluster CA and an operator certificate works, Stats
//! asked of a follower comes from the VIP owner (node-to-node admin call over TLS); a
//! plaintext client, a client trusting another CA and a client without a certificate are
//! each refused with one line that says what to check.

use crate::common::can_run_lab;
use crate::tls_common::TlsCluster;
use dsrctl::view::{StatsView, StatusView};
use lab::ctl::{Ctl, command, output};

/// Runs dsrctl in the lab's client host with no DSRCTL_* variables from this environment.
fn ctl(c: &TlsCluster, args: &[String]) -> Ctl {
    let mut cmd = command(args);
    cmd.env_remove("DSRCTL_CA_FILE")
        .env_remove("DSRCTL_CERT_FILE")
        .env_remove("DSRCTL_KEY_FILE");
    c.lab.clients()[0].run(move || output(cmd))
}

/// Global options for `endpoint`, with the token, `ca` (a file in the PKI dir) and, if
/// `client_cert`, the operator certificate.
fn globals(c: &TlsCluster, endpoint: &str, ca: &str, client_cert: bool) -> Vec<String> {
    let mut args = vec![
        "-e".to_string(),
        endpoint.to_string(),
        "--token-file".into(),
        c.lab
            .admin_token_file()
            .expect("token")
            .display()
            .to_string(),
        "--timeout".into(),
        "10s".into(),
        "-o".into(),
        "json".into(),
    ];
    if endpoint.starts_with("https://") {
        args.extend(["--ca-file".into(), c.pki.path(ca).display().to_string()]);
    }
    if client_cert {
        let (cert, key) = c.pki.cert("operator");
        args.extend([
            "--cert-file".into(),
            cert.display().to_string(),
            "--key-file".into(),
            key.display().to_string(),
        ]);
    }
    args
}

fn with(mut args: Vec<String>, verb: &[&str]) -> Vec<String> {
    args.extend(verb.iter().map(|s| (*s).to_string()));
    args
}

#[test]
fn tls_cluster_serves_dsrctl_over_https_and_refuses_plaintext_and_strangers() {
    if !can_run_lab() {
        return;
    }
    let c = TlsCluster::start();
    let owner = c.lab.owners();
    assert_eq!(owner.len(), 1, "one owner: {owner:?}\n{}", c.logs());
    let owner = owner[0];
    let follower = (owner + 1) % 3;

    // Status over https with the cluster CA and the operator certificate.
    let status: StatusView = ctl(
        &c,
        &with(
            globals(&c, &c.admin_url(follower), "ca.pem", true),
            &["status"],
        ),
    )
    .ok()
    .json();
    assert_eq!(status.answered_by, follower as u64 + 1);
    assert_eq!(status.members.len(), 3, "{status:?}");
    assert!(status.leader.is_some(), "{status:?}");
    assert!(
        status.members.iter().all(|m| m.reachable),
        "peers reachable over TLS: {status:?}"
    );

    // Stats through a follower: the follower asks the owner's admin service over TLS
    // (trusting [admin] tls_ca, presenting its node certificate to a server that requires
    // one) and relays the owner's counters.
    let stats: StatsView = ctl(
        &c,
        &with(
            globals(&c, &c.admin_url(follower), "ca.pem", true),
            &["stats"],
        ),
    )
    .ok()
    .json();
    assert_eq!(stats.node, owner as u64 + 1, "{stats:?}");
    assert!(stats.vip_owner, "{stats:?}");
    assert_eq!(stats.answered_by, follower as u64 + 1, "{stats:?}");
    assert_eq!(stats.farms.len(), 1, "{stats:?}");

    // Plaintext to the TLS-only admin port: refused, and the line points at https.
    let plain_url = format!(
        "http://{}:{}",
        c.lab.nodes()[owner].ip,
        lab::lbnode::ADMIN_PORT
    );
    let r = ctl(&c, &with(globals(&c, &plain_url, "", false), &["status"]));
    let line = r.failed_one_line();
    eprintln!("plaintext client: {line}");
    assert!(line.contains("https://"), "{line}");
    assert!(r.stdout.is_empty(), "{r:#?}");

    // https trusting another CA: the node's certificate is not accepted.
    let r = ctl(
        &c,
        &with(
            globals(&c, &c.admin_url(owner), "foreign-ca.pem", true),
            &["status"],
        ),
    );
    let line = r.failed_one_line();
    eprintln!("client with the wrong CA: {line}");
    assert!(line.starts_with("dsrctl: TLS with"), "{line}");
    assert!(
        line.contains("--ca-file") && line.contains("IP SAN"),
        "{line}"
    );

    // The right CA but no client certificate: the node requires one (tls_client_ca).
    let r = ctl(
        &c,
        &with(
            globals(&c, &c.admin_url(owner), "ca.pem", false),
            &["status"],
        ),
    );
    let line = r.failed_one_line();
    eprintln!("client without a certificate: {line}");
    assert!(line.starts_with("dsrctl: TLS with"), "{line}");
    assert!(line.contains("--cert-file"), "{line}");

    // None of this disturbed the cluster: the same single owner.
    assert_eq!(c.lab.owners(), vec![owner], "{}", c.logs());
}
