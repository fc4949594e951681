//! TLS set-up for the `tls_*` lab tests: a cluster CA and certificates made at test time
//! with rcgen (IP SANs of the lab node addresses), a foreign CA with a look-alike node
//! certificate, and a 3-node cluster of real `dsrlb` processes with mutual peer TLS and
//! admin TLS that requires client certificates.

use crate::common::dsrlb;
use lab::{Lab, LabFarm, LabProcess, LabSpec, NodeOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair,
};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// PEM files in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `name.pem` and `name.key`.
    pub fn cert(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        )
    }

    /// The text of a PEM file.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read PEM")
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// Writes `name.pem`/`name.key`: a certificate for `sans` signed by `issuer`, usable as a
/// server and as a client certificate (a node presents its certificate both ways).
fn issue(dir: &Path, issuer: &CertifiedIssuer<'_, KeyPair>, name: &str, sans: Vec<String>) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(sans).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer).expect("sign");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
}

/// `ca.pem`; `node{i}` for each address (IP SAN = the node's lab address); `operator` (a
/// dsrctl client certificate); `foreign-ca.pem` and `foreign`, a certificate for the first
/// node's address signed by the foreign CA (a look-alike peer).
pub fn make_pki(node_ips: &[Ipv4Addr]) -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = ca("dsrlb lab cluster CA");
    std::fs::write(dir.path().join("ca.pem"), cluster.pem()).expect("write CA");
    for (i, ip) in node_ips.iter().enumerate() {
        issue(
            dir.path(),
            &cluster,
            &format!("node{i}"),
            vec![ip.to_string()],
        );
    }
    issue(
        dir.path(),
        &cluster,
        "operator",
        vec!["operator.lab".into()],
    );
    let foreign = ca("somebody else's CA");
    std::fs::write(dir.path().join("foreign-ca.pem"), foreign.pem()).expect("write CA");
    issue(
        dir.path(),
        &foreign,
        "foreign",
        vec![node_ips[0].to_string()],
    );
    Pki { dir }
}

/// A running TLS cluster. `procs` first: nodes are killed before the lab goes away.
pub struct TlsCluster {
    pub procs: Vec<LabProcess>,
    pub lab: Lab,
    pub pki: Pki,
}

/// The web farm over both backends.
pub fn farms() -> Vec<LabFarm> {
    vec![LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1])]
}

impl TlsCluster {
    /// Three nodes, two backends, one client; every node with mutual peer TLS and admin TLS
    /// requiring client certificates of the cluster CA; waits for one owner.
    pub fn start() -> TlsCluster {
        let mut lab = Lab::build(&LabSpec {
            nodes: 3,
            backends: 2,
            clients: 1,
            ..LabSpec::default()
        })
        .expect("lab builds");
        lab.start_backends(dsrlb()).expect("backends start");
        let ips: Vec<Ipv4Addr> = lab.nodes().iter().map(|n| n.ip).collect();
        let pki = make_pki(&ips);
        let ca = pki.path("ca.pem");
        let farms = farms();
        let mut procs = Vec::new();
        for i in 0..3 {
            let (cert, key) = pki.cert(&format!("node{i}"));
            let opts = NodeOptions {
                cluster_extra: format!(
                    "tls_cert = {:?}\ntls_key = {:?}\ntls_ca = {:?}",
                    cert.display().to_string(),
                    key.display().to_string(),
                    ca.display().to_string()
                ),
                ..NodeOptions::default()
            };
            let text = lab
                .node_config_with(i, &farms, &opts)
                .expect("config")
                .replace(
                    "[admin]\n",
                    &format!(
                        "[admin]\ntls_cert = {:?}\ntls_key = {:?}\ntls_ca = {:?}\ntls_client_ca = {:?}\n",
                        cert.display().to_string(),
                        key.display().to_string(),
                        ca.display().to_string(),
                        ca.display().to_string()
                    ),
                );
            procs.push(
                lab.spawn_node_config(i, dsrlb(), &text)
                    .expect("dsrlb starts"),
            );
        }
        lab.wait_ready(&mut procs, &[0, 1, 2], &farms, Duration::from_secs(30))
            .expect("the TLS cluster forms with one owner");
        TlsCluster { procs, lab, pki }
    }

    /// Log tails of every node, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .enumerate()
            .map(|(i, p)| format!("--- node {i} ---\n{}", p.log_tail(15)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `https://<node i>:7101`.
    pub fn admin_url(&self, i: usize) -> String {
        format!(
            "https://{}:{}",
            self.lab.nodes()[i].ip,
            lab::lbnode::ADMIN_PORT
        )
    }
}
