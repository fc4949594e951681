//! Mutual peer TLS in process: three nodes with certificates of one CA (IP SAN 127.0.0.1)
//! elect a leader and replicate a write; a node whose certificate comes from another CA is
//! listed as a member but can neither take part nor catch up — the other two carry on as a
//! majority and never hand it an entry.

mod common;
use anyhow::{Result, ensure};
use cluster::PeerTls;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::time::Duration;

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A node certificate for 127.0.0.1 (no extended key usage: server and client alike).
fn material(
    issuer: &CertifiedIssuer<'_, KeyPair>,
    trusted: &CertifiedIssuer<'_, KeyPair>,
) -> PeerTls {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, issuer)
        .expect("sign");
    PeerTls {
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
        ca_pem: trusted.pem().into_bytes(),
    }
}

/// Waits (bounded) until nodes 1 and 2 agree on a leader that is one of them.
async fn leader_of_two(c: &TestCluster) -> Result<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let (a, b) = (c.node(0).leader(), c.node(1).leader());
        if let Some(l) = a
            && a == b
            && l != 3
            && c.node(c.index_of(l)).raft_metrics().borrow().state == cluster::ServerState::Leader
        {
            return Ok(l);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("nodes 1 and 2 agreed on no leader within {WAIT:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_cluster_certificates_replicate_and_a_stranger_is_left_out() -> Result<()> {
    init_tracing();
    let cluster_ca = ca();
    let foreign_ca = ca();
    let good = material(&cluster_ca, &cluster_ca);
    // Trusts the cluster CA but presents a certificate the cluster does not trust.
    let stranger = material(&foreign_ca, &cluster_ca);
    let mut c = TestCluster::new(3, |s| {
        s.tls = Some(if s.node_id == 3 {
            stranger.clone()
        } else {
            good.clone()
        });
    })?;
    c.start_all().await?;
    let leader = leader_of_two(&c).await?;
    ensure!(leader != 3, "the stranger cannot lead");
    let applied = c.node(c.index_of(leader)).write(put("web", 2)).await?;
    ensure!(applied.changed, "the write was applied");
    for i in [0, 1] {
        c.wait_state(i, |s| s.farms.contains_key("web")).await?;
    }
    // The stranger is never sent an entry: its TLS handshakes with the others fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    ensure!(
        !c.node(2).state().borrow().farms.contains_key("web"),
        "node 3 got the write without a cluster certificate"
    );
    Ok(())
}
