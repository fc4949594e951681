//! Bearer tokens on the wire: the server-side interceptor that refuses a call without the
//! right token (`UNAUTHENTICATED`, logged once per peer address, never the token) and the
//! client-side interceptor that adds it. The peer service uses them with the cluster token;
//! the node's admin service uses the same ones with the admin token.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key carrying `Bearer <token>`.
pub const AUTH_HEADER: &str = "authorization";

/// Peers whose refusal we remember, so a misconfigured or hostile peer cannot fill memory.
const MAX_REMEMBERED_PEERS: usize = 1024;

/// Equality that takes the same time whatever the position of the first differing byte, so
/// a peer cannot guess the token byte by byte from response times. Only the length may leak
/// (it is not secret in any useful sense: tokens are long random strings).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Server side: checks every call. Clones share the expected token, so
/// [`ServerAuth::set_token`] on any clone changes it for every connection (a reload).
#[derive(Clone)]
pub struct ServerAuth {
    expected: Arc<RwLock<Arc<[u8]>>>,
    refused: Arc<Mutex<HashSet<Option<IpAddr>>>>,
    /// Which service and token this guards, as log and status words: `"a peer"`/`"cluster"`
    /// or `"an admin"`/`"admin"`.
    service: &'static str,
    token_name: &'static str,
}

impl ServerAuth {
    /// Expects `Bearer <token>` (the cluster token of the peer service).
    pub fn new(token: &str) -> Self {
        Self::for_service(token, "a peer", "cluster")
    }

    /// Expects `Bearer <token>` on calls to `service`; refusals are logged as "refused
    /// {service} call" and name `token_name` (e.g. "an admin", "admin"), never the token.
    pub fn for_service(token: &str, service: &'static str, token_name: &'static str) -> Self {
        ServerAuth {
            expected: Arc::new(RwLock::new(format!("Bearer {token}").into_bytes().into())),
            refused: Arc::new(Mutex::new(HashSet::new())),
            service,
            token_name,
        }
    }

    /// Expects `token` from now on, on every clone; the old one is refused from the next call.
    pub fn set_token(&self, token: &str) {
        let new: Arc<[u8]> = format!("Bearer {token}").into_bytes().into();
        // A poisoned lock held only an Arc being swapped; the value is still whole.
        *self.expected.write().unwrap_or_else(|p| p.into_inner()) = new;
        // A peer refused under the old token is worth one line again under the new one.
        self.refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn log_once(&self, peer: Option<IpAddr>, why: &str) {
        // A poisoned lock only means another thread panicked while logging; the set is
        // still usable, so logging goes on.
        let mut seen = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() < MAX_REMEMBERED_PEERS && seen.insert(peer) {
            tracing::warn!(
                peer = ?peer,
                "refused {} call: {why} (logged once per peer)",
                self.service
            );
        }
    }
}

impl Interceptor for ServerAuth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let presented = req.metadata().get(AUTH_HEADER).map(|v| v.as_bytes());
        let expected = self
            .expected
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let ok = presented.is_some_and(|p| constant_time_eq(p, &expected));
        if ok {
            return Ok(req);
        }
        let why = if presented.is_some() {
            format!("wrong {} token", self.token_name)
        } else {
            format!("no {} token", self.token_name)
        };
        self.log_once(req.remote_addr().map(|a| a.ip()), &why);
        Err(Status::unauthenticated(format!(
            "{} token missing or wrong",
            self.token_name
        )))
    }
}

/// Client side: adds the token to every call.
#[derive(Clone)]
pub struct ClientAuth {
    value: MetadataValue<Ascii>,
}

impl ClientAuth {
    /// Fails when the token cannot be a header value (settings validation refuses those).
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        let mut value = MetadataValue::try_from(format!("Bearer {token}"))?;
        // Keeps the token out of HTTP/2 header compression tables (HPACK "never indexed").
        value.set_sensitive(true);
        Ok(ClientAuth { value })
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        req.metadata_mut().insert(AUTH_HEADER, self.value.clone());
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_plain_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn server_refuses_missing_and_wrong_and_accepts_right() {
        let mut server = ServerAuth::new("s3cret");
        assert_eq!(
            server
                .call(Request::new(()))
                .map(|_| ())
                .map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        let mut wrong = ClientAuth::new("nope").expect("valid");
        let req = wrong.call(Request::new(())).expect("adds");
        assert_eq!(
            server.call(req).map(|_| ()).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        let mut right = ClientAuth::new("s3cret").expect("valid");
        let req = right.call(Request::new(())).expect("adds");
        assert!(server.call(req).is_ok());
        {
            let seen = server.refused.lock().expect("not poisoned");
            assert_eq!(
                seen.len(),
                1,
                "both refusals came from the same (unknown) peer"
            );
        }
        // A new token, set through a clone (as a reload does): the old one is refused.
        server.clone().set_token("n3w-s3cret");
        let req = right.call(Request::new(())).expect("adds");
        assert_eq!(
            server.call(req).map(|_| ()).map_err(|s| s.code()),
            Err(tonic::Code::Unauthenticated)
        );
        let mut new = ClientAuth::new("n3w-s3cret").expect("valid");
        let req = new.call(Request::new(())).expect("adds");
        assert!(server.call(req).is_ok());
    }
}
