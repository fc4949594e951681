//! Reading the PEM files of TLS settings, for both ends of the admin and peer services: the
//! daemon's config (`[cluster] tls_*`, `[admin] tls_*`) and `dsrctl --ca-file/--cert-file/
//! --key-file`. Files are checked when they are named, so a wrong one is reported with its
//! option or key before any handshake. Nothing here logs key material.

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PEM file cannot be used. The caller adds which key or option named it.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("must not be empty")]
    EmptyPath,
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid PEM certificate file ({reason})")]
    BadCertificate { path: String, reason: String },
    #[error("{path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: String },
    /// The parser's own message is not kept: it could quote part of the key file.
    #[error("{path}: holds no PEM private key (PKCS#8, RSA or EC)")]
    NoKey { path: String },
}

fn read(path: &str) -> Result<Vec<u8>, PemError> {
    if path.is_empty() {
        return Err(PemError::EmptyPath);
    }
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A PEM file holding at least one certificate (a chain, or a CA bundle).
pub fn read_certs(path: &str) -> Result<Vec<u8>, PemError> {
    let pem = read(path)?;
    let mut found = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| PemError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        found += 1;
    }
    if found == 0 {
        return Err(PemError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(pem)
}

/// A PEM file holding a private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key(path: &str) -> Result<Vec<u8>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PemError::NoKey {
        path: path.to_owned(),
    })?;
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_is_wrong_with_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem at all").expect("write");
        let junk = junk.to_str().expect("utf-8");
        assert!(matches!(read_certs(""), Err(PemError::EmptyPath)));
        assert!(matches!(
            read_certs("/nonexistent/ca.pem"),
            Err(PemError::Read { .. })
        ));
        assert!(matches!(
            read_certs(junk),
            Err(PemError::NoCertificate { .. })
        ));
        let no_key = read_key(junk).expect_err("no key in junk");
        assert_eq!(
            no_key.to_string(),
            format!("{junk}: holds no PEM private key (PKCS#8, RSA or EC)")
        );
    }
}
