//! The TLS keys of the config (`[cluster] tls_*`, `[admin] tls_*`): which combinations are
//! allowed, and reading each PEM file once at load time so that a missing, unreadable or
//! wrong file is a [`ConfigError`] naming its key (and `dsrlb check-config` finds it), not a
//! handshake failure later. Key material is kept in memory only; nothing here logs it.

use super::ConfigError;
use super::raw::{RawAdmin, RawCluster};
use cluster::PeerTls;
use std::fmt;

type Result<T> = std::result::Result<T, ConfigError>;

/// The admin listener's TLS, from `[admin] tls_cert`, `tls_key`, `tls_ca`, `tls_client_ca`.
#[derive(Clone)]
pub struct AdminTls {
    /// This node's admin certificate chain (leaf first); also presented as the client
    /// certificate when this node calls another node's admin service.
    pub cert_pem: Vec<u8>,
    /// Its private key. Never logged.
    pub key_pem: Vec<u8>,
    /// `tls_ca`: the CA this node trusts when it calls another node's admin service (Stats
    /// of the VIP owner). `None`: such calls are refused with a message naming the key.
    pub ca_pem: Option<Vec<u8>>,
    /// `tls_client_ca`: when set, admin clients must present a certificate chaining to it
    /// (mutual TLS); otherwise the admin token alone authenticates them.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for AdminTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand so the key can never reach a log line through `{:?}`.
        f.debug_struct("AdminTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("client_ca_pem", &self.client_ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

/// A PEM file holding at least one certificate, checked now; errors name `key`.
pub fn read_certs(key: &str, path: &str) -> Result<Vec<u8>> {
    proto::pem::read_certs(path).map_err(|e| ConfigError::invalid(key, e.to_string()))
}

/// A PEM file holding a private key, checked now; errors name `key`.
pub fn read_key(key: &str, path: &str) -> Result<Vec<u8>> {
    proto::pem::read_key(path).map_err(|e| ConfigError::invalid(key, e.to_string()))
}

/// `[cluster] tls_cert`, `tls_key`, `tls_ca`: all three or none.
pub fn peer_tls(c: &RawCluster) -> Result<Option<PeerTls>> {
    match (&c.tls_cert, &c.tls_key, &c.tls_ca) {
        (None, None, None) => Ok(None),
        (Some(cert), Some(key), Some(ca)) => Ok(Some(PeerTls {
            cert_pem: read_certs("cluster.tls_cert", cert)?,
            key_pem: read_key("cluster.tls_key", key)?,
            ca_pem: read_certs("cluster.tls_ca", ca)?,
        })),
        (cert, key, _) => {
            let missing = if cert.is_none() {
                "cluster.tls_cert"
            } else if key.is_none() {
                "cluster.tls_key"
            } else {
                "cluster.tls_ca"
            };
            Err(ConfigError::invalid(
                missing,
                "is required: cluster.tls_cert, tls_key and tls_ca are set together (mutual TLS between peers) or not at all",
            ))
        }
    }
}

/// `[admin] tls_cert` and `tls_key` both or neither; `tls_ca` and `tls_client_ca` only with
/// them (every node of a cluster serves its admin API the same way).
pub fn admin_tls(a: &RawAdmin) -> Result<Option<AdminTls>> {
    let (cert, key) = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => {
            for (name, value) in [
                ("admin.tls_ca", &a.tls_ca),
                ("admin.tls_client_ca", &a.tls_client_ca),
            ] {
                if value.is_some() {
                    return Err(ConfigError::invalid(
                        name,
                        "needs admin.tls_cert and admin.tls_key (the admin listener is plaintext without them)",
                    ));
                }
            }
            return Ok(None);
        }
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                "admin.tls_cert",
                "is required when admin.tls_key is set",
            ));
        }
        (Some(_), None) => {
            return Err(ConfigError::invalid(
                "admin.tls_key",
                "is required when admin.tls_cert is set",
            ));
        }
    };
    Ok(Some(AdminTls {
        cert_pem: read_certs("admin.tls_cert", cert)?,
        key_pem: read_key("admin.tls_key", key)?,
        ca_pem: a
            .tls_ca
            .as_deref()
            .map(|p| read_certs("admin.tls_ca", p))
            .transpose()?,
        client_ca_pem: a
            .tls_client_ca
            .as_deref()
            .map(|p| read_certs("admin.tls_client_ca", p))
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use crate::config::{ConfigError, parse};
    use std::path::Path;

    const BASE: &str = r#"
[node]
id = 1
[cluster]
listen = "198.18.0.11:7100"
members = ["1=198.18.0.11:7100", "2=198.18.0.12:7100", "3=198.18.0.13:7100"]
token_file = "/etc/dsrlb/cluster.token"
[admin]
listen = "198.18.0.11:7101"
token_file = "/etc/dsrlb/admin.token"
"#;

    /// A directory with `ca.pem`, `node.pem`, `node.key` (real PEM, from rcgen) and
    /// `junk.pem` (no PEM block at all).
    fn pem_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, ca_key).expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["198.18.0.11".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let write =
            |name: &str, text: String| std::fs::write(dir.path().join(name), text).expect("write");
        write("ca.pem", ca.pem());
        write("node.pem", cert.pem());
        write("node.key", key.serialize_pem());
        write("junk.pem", "not a pem file\n".into());
        dir
    }

    fn with(dir: &Path, cluster: &str, admin: &str) -> String {
        let d = dir.display();
        let fill = |s: &str| s.replace("$D", &d.to_string());
        BASE.replace(
            "token_file = \"/etc/dsrlb/cluster.token\"",
            &format!(
                "token_file = \"/etc/dsrlb/cluster.token\"\n{}",
                fill(cluster)
            ),
        )
        .replace(
            "token_file = \"/etc/dsrlb/admin.token\"",
            &format!("token_file = \"/etc/dsrlb/admin.token\"\n{}", fill(admin)),
        )
    }

    fn key_of(text: &str) -> (String, String) {
        match parse(text) {
            Err(ConfigError::Invalid { key, reason }) => (key, reason),
            other => panic!("expected an invalid key, got {other:?}"),
        }
    }

    #[test]
    fn no_tls_keys_means_plaintext() {
        let c = parse(BASE).expect("valid");
        assert!(c.cluster.tls.is_none());
        assert!(c.admin_tls.is_none());
    }

    #[test]
    fn full_peer_and_admin_tls_load_and_debug_hides_keys() {
        let dir = pem_dir();
        let text = with(
            dir.path(),
            "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/node.key\"\ntls_ca = \"$D/ca.pem\"",
            "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/node.key\"\ntls_ca = \"$D/ca.pem\"\ntls_client_ca = \"$D/ca.pem\"",
        );
        let c = parse(&text).expect("valid");
        let peer = c.cluster.tls.as_ref().expect("peer tls");
        let admin = c.admin_tls.as_ref().expect("admin tls");
        assert!(admin.ca_pem.is_some() && admin.client_ca_pem.is_some());
        let key = std::fs::read_to_string(dir.path().join("node.key")).expect("key");
        let body = key.lines().nth(1).expect("a base64 line");
        let shown = format!("{c:?}");
        assert!(!shown.contains(body), "a key line reached Debug output");
        assert_eq!(peer.key_pem, key.as_bytes());
    }

    #[test]
    fn peer_tls_is_all_three_or_none() {
        let dir = pem_dir();
        for (cluster, missing) in [
            (
                "tls_key = \"$D/node.key\"\ntls_ca = \"$D/ca.pem\"",
                "cluster.tls_cert",
            ),
            (
                "tls_cert = \"$D/node.pem\"\ntls_ca = \"$D/ca.pem\"",
                "cluster.tls_key",
            ),
            (
                "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/node.key\"",
                "cluster.tls_ca",
            ),
            ("tls_ca = \"$D/ca.pem\"", "cluster.tls_cert"),
        ] {
            let (key, reason) = key_of(&with(dir.path(), cluster, ""));
            assert_eq!(key, missing, "{cluster}: {reason}");
            assert!(reason.contains("together"), "{reason}");
        }
    }

    #[test]
    fn admin_tls_rules() {
        let dir = pem_dir();
        for (admin, at) in [
            ("tls_cert = \"$D/node.pem\"", "admin.tls_key"),
            ("tls_key = \"$D/node.key\"", "admin.tls_cert"),
            ("tls_ca = \"$D/ca.pem\"", "admin.tls_ca"),
            ("tls_client_ca = \"$D/ca.pem\"", "admin.tls_client_ca"),
        ] {
            let (key, reason) = key_of(&with(dir.path(), "", admin));
            assert_eq!(key, at, "{admin}: {reason}");
        }
        // tls_ca is optional: server-side TLS alone is a valid config.
        let c = parse(&with(
            dir.path(),
            "",
            "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/node.key\"",
        ))
        .expect("valid");
        let admin = c.admin_tls.expect("admin tls");
        assert!(admin.ca_pem.is_none() && admin.client_ca_pem.is_none());
    }

    #[test]
    fn bad_or_unreadable_files_name_their_key() {
        let dir = pem_dir();
        let peer = |cert: &str, key: &str, ca: &str| {
            with(
                dir.path(),
                &format!("tls_cert = \"{cert}\"\ntls_key = \"{key}\"\ntls_ca = \"{ca}\""),
                "",
            )
        };
        let cases = [
            (
                peer("$D/missing.pem", "$D/node.key", "$D/ca.pem"),
                "cluster.tls_cert",
                "cannot read",
            ),
            (
                peer("$D/junk.pem", "$D/node.key", "$D/ca.pem"),
                "cluster.tls_cert",
                "no PEM certificate",
            ),
            (
                peer("$D/node.pem", "$D/node.pem", "$D/ca.pem"),
                "cluster.tls_key",
                "no PEM private key",
            ),
            (
                peer("$D/node.pem", "$D/node.key", "$D/node.key"),
                "cluster.tls_ca",
                "no PEM certificate",
            ),
            (
                peer("$D/node.pem", "$D/node.key", ""),
                "cluster.tls_ca",
                "must not be empty",
            ),
            (
                with(
                    dir.path(),
                    "",
                    "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/node.key\"\ntls_ca = \"$D/junk.pem\"",
                ),
                "admin.tls_ca",
                "no PEM certificate",
            ),
            (
                with(
                    dir.path(),
                    "",
                    "tls_cert = \"$D/node.pem\"\ntls_key = \"$D/nope.key\"",
                ),
                "admin.tls_key",
                "cannot read",
            ),
        ];
        for (text, at, why) in cases {
            let (key, reason) = key_of(&text);
            assert_eq!(key, at, "{reason}");
            assert!(reason.contains(why), "{at}: {reason}");
        }
    }
}
