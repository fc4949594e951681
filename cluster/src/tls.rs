//! Optional mutual TLS of the peer service: the PEM material one node holds and the tonic
//! server and client configurations built from it. When it is set, the peer listener accepts
//! only clients whose certificate chains to the cluster CA, and this node's client presents
//! its own certificate and trusts only servers whose certificate chains to that CA. The
//! cluster token is still required on every call (defence in depth: a leaked certificate
//! alone does not make a peer).
//!
//! Peers are dialled by IP address, so their certificates need an IP SAN with that address;
//! rustls matches an IP server name against IP SANs only.

use std::fmt;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// The PEM files of `[cluster] tls_cert`, `tls_key` and `tls_ca`, already read and checked
/// by the node's config loader.
#[derive(Clone)]
pub struct PeerTls {
    /// This node's certificate chain (leaf first), used as server and as client.
    pub cert_pem: Vec<u8>,
    /// The private key of that certificate. Never logged.
    pub key_pem: Vec<u8>,
    /// The cluster CA: peers' certificates (both directions) must chain to it.
    pub ca_pem: Vec<u8>,
}

impl fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By hand so the key can never reach a log line through `{:?}`.
        f.debug_struct("PeerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("ca_pem", &format_args!("{} bytes", self.ca_pem.len()))
            .finish()
    }
}

impl PeerTls {
    fn identity(&self) -> Identity {
        Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// Server side: this node's identity, client certificates required and checked
    /// against the cluster CA.
    pub(crate) fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity())
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
            .client_auth_optional(false)
    }

    /// Client side: the cluster CA as the only trust root, this node's certificate
    /// presented. The server name is the IP of the URI (tonic's default).
    pub(crate) fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(self.identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_key() {
        let tls = PeerTls {
            cert_pem: b"cert".to_vec(),
            key_pem: b"-----BEGIN PRIVATE KEY-----very-secret".to_vec(),
            ca_pem: b"ca".to_vec(),
        };
        let shown = format!("{tls:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
