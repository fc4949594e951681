//! With `[cluster] tls_*` set, the peer port takes only clients whose certificate chains to
//! the cluster CA: a caller with the right token but a certificate from another CA (a
//! look-alike node with the first node's IP SAN), or with no certificate, or in plaintext,
//! never reaches the peer service — its vote is not even decoded. A caller with a cluster
//! certificate and the token does reach it (the control: the junk vote is decoded and
//! refused as INVALID_ARGUMENT). The cluster keeps its owner and term throughout.

use crate::common::can_run_lab;
use crate::tls_common::TlsCluster;
use lab::{PEER_PORT, scrape};
use proto::raft::v1::RaftPayload;
use proto::raft::v1::raft_peer_client::RaftPeerClient;
use std::time::Duration;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How a test caller dials the peer port.
enum Dial {
    Plaintext,
    /// Trusting the cluster CA, presenting `Some(name)`'s certificate (or none).
    Tls(Option<&'static str>),
}

/// One `vote` with a junk payload and the cluster token; the outcome as text: `"reached:
/// <code>"` when the peer service answered, `"refused: <error>"` otherwise.
async fn vote(
    c_ca: String,
    pki_cert: Option<(String, String)>,
    url: String,
    token: String,
) -> String {
    let mut ep = match Endpoint::from_shared(url.clone()) {
        Ok(ep) => ep.connect_timeout(Duration::from_secs(3)),
        Err(e) => return format!("bad url {url}: {e}"),
    };
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(c_ca));
        if let Some((cert, key)) = pki_cert {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        ep = ep.tls_config(tls).expect("tls config");
    }
    let channel = match ep.connect().await {
        Ok(ch) => ch,
        Err(e) => return format!("refused: connect: {e:?}"),
    };
    let mut client = RaftPeerClient::new(channel);
    let mut req = tonic::Request::new(RaftPayload {
        payload: vec![0xde, 0xad],
    });
    req.set_timeout(Duration::from_secs(3));
    let value = format!("Bearer {token}").parse().expect("header value");
    req.metadata_mut().insert("authorization", value);
    match client.vote(req).await {
        Ok(_) => "reached: Ok".into(),
        // The service's own answer to an undecodable payload: TLS and token both passed.
        Err(s) if s.code() == tonic::Code::InvalidArgument => {
            format!("reached: {:?} {}", s.code(), s.message())
        }
        Err(s) => format!("refused: {:?} {}", s.code(), s.message()),
    }
}

#[test]
fn a_peer_without_a_cluster_ca_certificate_never_reaches_the_peer_service() {
    if !can_run_lab() {
        return;
    }
    let c = TlsCluster::start();
    let owner = c.lab.owners();
    assert_eq!(owner.len(), 1, "one owner: {owner:?}\n{}", c.logs());
    let owner = owner[0];
    let term = |c: &TlsCluster| {
        scrape(&c.lab.nodes()[owner]).map_or(-1.0, |m| m.get("dsrlb_raft_term", &[]))
    };
    let term_before = term(&c);
    let token = std::fs::read_to_string(c.lab.cluster_token_file().expect("token"))
        .expect("read token")
        .trim()
        .to_owned();
    let ca = c.pki.read("ca.pem");
    let ip = c.lab.nodes()[owner].ip;
    let cases = [
        ("plaintext", Dial::Plaintext),
        ("no client certificate", Dial::Tls(None)),
        ("foreign CA certificate", Dial::Tls(Some("foreign"))),
        ("cluster certificate (control)", Dial::Tls(Some("node0"))),
    ];
    let mut outcomes = Vec::new();
    for (what, dial) in cases {
        let (url, cert) = match dial {
            Dial::Plaintext => (format!("http://{ip}:{PEER_PORT}"), None),
            Dial::Tls(name) => (
                format!("https://{ip}:{PEER_PORT}"),
                name.map(|n| {
                    (
                        c.pki.read(&format!("{n}.pem")),
                        c.pki.read(&format!("{n}.key")),
                    )
                }),
            ),
        };
        let (ca, token) = (ca.clone(), token.clone());
        let outcome = c.lab.clients()[0].run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(vote(ca, cert, url, token))
        });
        eprintln!("{what}: {outcome}");
        outcomes.push((what, outcome));
    }
    for (what, outcome) in &outcomes[..3] {
        assert!(outcome.starts_with("refused"), "{what}: {outcome}");
    }
    let (what, control) = &outcomes[3];
    assert!(
        control.starts_with("reached: InvalidArgument") && control.contains("undecodable"),
        "{what}: {control}"
    );
    assert_eq!(c.lab.owners(), vec![owner], "{}", c.logs());
    assert_eq!(term(&c), term_before, "no election was caused");
}
