//! The connection to the admin API: endpoints tried in turn, the bearer token on every call,
//! and tonic failures turned into [`CtlError`]s.
//!
//! An endpoint is skipped when it cannot be connected to or answers UNAVAILABLE (it may be
//! down, starting, or cut off from the cluster); any other answer is the cluster's answer
//! and is reported as it is, since another node would give the same one.

use super::error::CtlError;
use proto::admin::v1::admin_client::AdminClient;
use std::path::Path;
use std::time::Duration;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

/// How long to wait for a TCP + HTTP/2 handshake before trying the next endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The generated client with the token interceptor.
pub type Api = AdminClient<InterceptedService<Channel, Auth>>;

/// The peers' bearer-token interceptor ([`proto::auth::ClientAuth`]), or nothing without a
/// token (the server refuses that with UNAUTHENTICATED — reported as such).
#[derive(Clone)]
pub struct Auth(Option<proto::auth::ClientAuth>);

impl Interceptor for Auth {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        match &mut self.0 {
            Some(auth) => auth.call(req),
            None => Ok(req),
        }
    }
}

/// The admin token, ready to be sent. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(proto::auth::ClientAuth);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Reads the admin token from `path` (surrounding whitespace ignored).
pub fn read_token(path: &Path) -> Result<Token, CtlError> {
    let err = |reason: &str| CtlError::TokenFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(&e.to_string()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("it is empty"));
    }
    if !token.chars().all(|c| c.is_ascii_graphic()) {
        return Err(err("the token must be printable ASCII without spaces"));
    }
    proto::auth::ClientAuth::new(token)
        .map(Token)
        .map_err(|_| err("the token is not a valid header value"))
}

/// The TLS settings for https endpoints: the CA from `ca_file` and, when given, the client
/// certificate and key. Files are checked here so a bad one is named before any call.
pub fn tls_config(
    ca_file: &Path,
    cert_key: Option<(&Path, &Path)>,
) -> Result<ClientTlsConfig, CtlError> {
    let file = |option: &'static str, path: &Path, key: bool| {
        let text = path.to_string_lossy();
        let read = if key {
            proto::pem::read_key(&text)
        } else {
            proto::pem::read_certs(&text)
        };
        read.map_err(|e| CtlError::TlsFile {
            option,
            path: path.to_owned(),
            reason: e.to_string(),
        })
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(file(
        "--ca-file",
        ca_file,
        false,
    )?));
    if let Some((cert, key)) = cert_key {
        tls = tls.identity(Identity::from_pem(
            file("--cert-file", cert, false)?,
            file("--key-file", key, true)?,
        ));
    }
    Ok(tls)
}

/// A reply and the endpoint that gave it.
pub struct Answer<R> {
    pub endpoint: String,
    pub reply: R,
}

/// Endpoints, token and timeout; connects lazily and remembers the endpoint that worked.
pub struct Client {
    endpoints: Vec<String>,
    auth: Auth,
    /// Used for https endpoints; `Cli::checked` makes sure it is there when one is given.
    tls: Option<ClientTlsConfig>,
    timeout: Duration,
    connected: Option<(usize, Api)>,
}

impl Client {
    /// `token` is sent as a bearer token on every call; `tls` is used for https endpoints.
    pub fn new(
        endpoints: Vec<String>,
        token: Option<Token>,
        tls: Option<ClientTlsConfig>,
        timeout: Duration,
    ) -> Client {
        Client {
            endpoints,
            auth: Auth(token.map(|t| t.0)),
            tls,
            timeout,
            connected: None,
        }
    }

    /// Runs `call` against the first endpoint that takes it: the one that worked last time
    /// first, then the others in the order given.
    pub async fn call<R>(
        &mut self,
        mut call: impl AsyncFnMut(Api) -> Result<tonic::Response<R>, Status>,
    ) -> Result<Answer<R>, CtlError> {
        let first = self.connected.as_ref().map_or(0, |(i, _)| *i);
        let order = std::iter::once(first).chain((0..self.endpoints.len()).filter(|i| *i != first));
        let mut cause = String::from("no endpoint given");
        // A TLS failure says more than "unreachable" (the other endpoints usually fail the
        // same way: one CA, one scheme), so it is what gets reported.
        let mut tls_failure = None;
        for i in order {
            let endpoint = self.endpoints[i].clone();
            let api = match &self.connected {
                Some((k, api)) if *k == i => api.clone(),
                _ => match self.connect(&endpoint).await {
                    Ok(api) => {
                        self.connected = Some((i, api.clone()));
                        api
                    }
                    Err(e) => {
                        tracing::debug!(%endpoint, "connect failed: {e}");
                        if looks_like_tls(&endpoint, &e) {
                            tls_failure = Some((endpoint.clone(), e.clone()));
                        }
                        cause = format!("{endpoint}: {e}");
                        continue;
                    }
                },
            };
            match call(api).await {
                Ok(reply) => {
                    return Ok(Answer {
                        endpoint,
                        reply: reply.into_inner(),
                    });
                }
                Err(s) => match judge(&endpoint, &s, self.timeout) {
                    Next(why) => {
                        if looks_like_tls(&endpoint, &why) {
                            tls_failure = Some((endpoint.clone(), status_text(&s)));
                        }
                        tracing::debug!(%endpoint, "trying the next endpoint: {why}");
                        cause = why;
                        self.connected = None;
                    }
                    Stop(e) => return Err(e),
                },
            }
        }
        if let Some((endpoint, cause)) = tls_failure {
            return Err(CtlError::Tls { endpoint, cause });
        }
        Err(CtlError::Unreachable {
            endpoints: self.endpoints.clone(),
            cause,
        })
    }

    async fn connect(&self, endpoint: &str) -> Result<Api, String> {
        let mut ep = Endpoint::from_shared(endpoint.to_owned()).map_err(|e| error_chain(&e))?;
        if endpoint.starts_with("https://") {
            let tls = self
                .tls
                .clone()
                .ok_or("an https endpoint needs --ca-file")?;
            ep = ep.tls_config(tls).map_err(|e| error_chain(&e))?;
        }
        let channel = ep
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(AdminClient::with_interceptor(channel, self.auth.clone()))
    }
}

/// Whether a failure to connect to `endpoint` came from TLS rather than from the network:
/// on an https endpoint, anything but a TCP-level failure happens in the handshake.
fn looks_like_tls(endpoint: &str, cause: &str) -> bool {
    let c = cause.to_ascii_lowercase();
    let network = ["connection refused", "timed out", "no route", "unreachable"];
    endpoint.starts_with("https://") && !network.iter().any(|n| c.contains(n))
}

/// What a failed call means for the endpoints left to try.
enum Verdict {
    /// The endpoint could not serve it; another may (the cause, for the final message).
    Next(String),
    /// The cluster's answer, or an ambiguous outcome: reported as it is.
    Stop(CtlError),
}
use Verdict::{Next, Stop};

/// UNAVAILABLE (connection lost, node starting or cut off) moves on to the next endpoint.
/// A client-side timeout does not: a write may still be applied, and a retry elsewhere
/// could apply a create twice (ALREADY_EXISTS) or hide how long the cluster took.
fn judge(endpoint: &str, s: &Status, timeout: Duration) -> Verdict {
    let endpoint = endpoint.to_owned();
    match s.code() {
        Code::Unauthenticated => Stop(CtlError::Refused { endpoint }),
        // No status from a server (a status made from a transport error carries it as its
        // source): the connection itself failed mid-call. On http:// this is also what a
        // TLS-only admin port does to a plaintext client: it drops it, and the client sees
        // a broken pipe (UNKNOWN) or an undecodable HTTP/2 frame (INTERNAL), by timing.
        Code::Unknown | Code::Internal
            if endpoint.starts_with("http://") && std::error::Error::source(s).is_some() =>
        {
            Stop(CtlError::Closed {
                endpoint,
                cause: status_text(s),
            })
        }
        // On https, a connection dropped before any status is how a node that requires a
        // client certificate refuses one it does not accept (TLS 1.3 checks it after the
        // client's handshake has finished, so the call, not the connect, sees it).
        Code::Unknown | Code::Cancelled | Code::Internal
            if endpoint.starts_with("https://")
                && s.message() != tonic::TimeoutExpired(()).to_string()
                && std::error::Error::source(s).is_some() =>
        {
            Stop(CtlError::Tls {
                endpoint,
                cause: status_text(s),
            })
        }
        Code::Unavailable => Next(format!("{endpoint}: {}", status_text(s))),
        Code::Cancelled if s.message() == tonic::TimeoutExpired(()).to_string() => {
            Stop(CtlError::TimedOut {
                endpoint,
                after: humantime::format_duration(timeout).to_string(),
            })
        }
        code => Stop(CtlError::Rpc {
            endpoint,
            code,
            message: s.message().to_owned(),
        }),
    }
}

/// A transport error's whole cause chain ("transport error" alone says nothing).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let top = e.to_string();
    // tonic's own layer says only "transport error"; the cause is below it.
    if top != "transport error" || e.source().is_none() {
        parts.push(top);
    }
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn status_text(s: &Status) -> String {
    match std::error::Error::source(s) {
        Some(src) if s.message().is_empty() => error_chain(src),
        Some(src) => format!("{}: {}", s.message(), error_chain(src)),
        None => s.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_trimmed_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("good");
        std::fs::write(&good, "  s3cret-token\n").expect("write");
        let token = read_token(&good).expect("reads");
        // What goes on the wire, through the interceptor that sends it.
        let sent = Auth(Some(token.0.clone()))
            .call(tonic::Request::new(()))
            .expect("intercepted");
        assert_eq!(
            sent.metadata()
                .get(proto::auth::AUTH_HEADER)
                .expect("header"),
            "Bearer s3cret-token"
        );
        assert_eq!(format!("{token:?}"), "Token(..)");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        let e = read_token(&empty).expect_err("empty token").to_string();
        assert!(
            e.contains("it is empty") && e.contains("--token-file"),
            "{e}"
        );

        let missing = dir.path().join("missing");
        let e = read_token(&missing).expect_err("missing").to_string();
        assert!(e.contains(&missing.display().to_string()), "{e}");
        // The token itself never appears in a message.
        let spaced = dir.path().join("spaced");
        std::fs::write(&spaced, "two words").expect("write");
        let e = read_token(&spaced).expect_err("space").to_string();
        assert!(!e.contains("two words"), "{e}");
    }

    #[test]
    fn which_answers_move_on_to_the_next_endpoint() {
        let ep = "http://198.18.0.2:7101";
        let t = Duration::from_secs(5);
        let msg = |v: Verdict| match v {
            Next(cause) => format!("next: {cause}"),
            Stop(e) => format!("stop: {e}"),
        };
        assert_eq!(
            msg(judge(ep, &Status::unavailable("no leader"), t)),
            "next: http://198.18.0.2:7101: no leader"
        );
        assert!(
            msg(judge(ep, &Status::unauthenticated("bad token"), t)).starts_with(
                "stop: refused: the admin token was rejected by http://198.18.0.2:7101"
            )
        );
        assert_eq!(
            msg(judge(ep, &Status::cancelled("Timeout expired"), t)),
            "stop: timed out: http://198.18.0.2:7101 did not answer within 5s; a longer \
             --timeout may help"
        );
        assert_eq!(
            msg(judge(
                ep,
                &Status::invalid_argument("farm.vip: not unicast"),
                t
            )),
            "stop: invalid: farm.vip: not unicast"
        );
        assert_eq!(
            msg(judge(ep, &Status::failed_precondition("the last voter"), t)),
            "stop: not possible now: the last voter"
        );
    }

    #[tokio::test]
    async fn unreachable_endpoints_are_all_tried_and_named() {
        // Ports on 127.0.0.1 that nothing listens on: bind, note the port, close.
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                std::net::TcpListener::bind("127.0.0.1:0")
                    .expect("bind")
                    .local_addr()
                    .expect("addr")
                    .port()
            })
            .collect();
        let endpoints: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let mut client = Client::new(endpoints.clone(), None, None, Duration::from_secs(2));
        let err = client
            .call(async |mut api| api.status(proto::admin::v1::StatusRequest {}).await)
            .await
            .err()
            .expect("nothing listens");
        let text = err.to_string();
        assert!(matches!(err, CtlError::Unreachable { .. }), "{text}");
        for e in &endpoints {
            assert!(text.contains(e), "{text}");
        }
        assert!(text.contains("check --endpoint"), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }

    /// A TLS-only gRPC server on 127.0.0.1 with no services (a call that gets through the
    /// handshake is answered UNIMPLEMENTED), its certificate for 127.0.0.1 signed by a CA;
    /// returns the port, the CA's PEM and the server task.
    async fn tls_server() -> (u16, String, tokio::task::JoinHandle<()>) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().expect("key"))
                .expect("ca");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("cert");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(Identity::from_pem(cert.pem(), key.serialize_pem()));
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .expect("tls config")
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("test server: {e}");
            }
        });
        (port, ca.pem(), task)
    }

    async fn status_via(endpoint: String, ca_pem: &str, dir: &Path) -> Result<(), CtlError> {
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, ca_pem).expect("write");
        let tls = tls_config(&ca, None)?;
        let mut client = Client::new(vec![endpoint], None, Some(tls), Duration::from_secs(3));
        client
            .call(async |mut api| api.status(proto::admin::v1::StatusRequest {}).await)
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn tls_failures_are_one_line_saying_what_to_check() {
        let (port, ca_pem, server) = tls_server().await;
        let dir = tempfile::tempdir().expect("tempdir");
        // The right CA: the handshake works and the (empty) server answers.
        let ok = status_via(format!("https://127.0.0.1:{port}"), &ca_pem, dir.path()).await;
        assert!(
            matches!(
                &ok,
                Err(CtlError::Rpc {
                    code: Code::Unimplemented,
                    ..
                })
            ),
            "{:?}",
            ok.err().map(|e| e.to_string())
        );
        // Another CA: refused, with the one-line TLS message.
        let (_, other_ca, other) = tls_server().await;
        other.abort();
        let e = status_via(format!("https://127.0.0.1:{port}"), &other_ca, dir.path())
            .await
            .expect_err("unknown issuer");
        let text = e.to_string();
        assert!(matches!(e, CtlError::Tls { .. }), "{text}");
        assert!(text.contains("--ca-file") && !text.contains('\n'), "{text}");
        // Plaintext to the TLS port: refused, and the message points at the scheme.
        let mut plain = Client::new(
            vec![format!("http://127.0.0.1:{port}")],
            None,
            None,
            Duration::from_secs(3),
        );
        let e = plain
            .call(async |mut api| api.status(proto::admin::v1::StatusRequest {}).await)
            .await
            .err()
            .expect("plaintext to a TLS port");
        let text = e.to_string();
        assert!(matches!(e, CtlError::Closed { .. }), "{text}");
        assert!(text.contains("https://") && !text.contains('\n'), "{text}");
        // A bad CA file is named before any call.
        std::fs::write(dir.path().join("junk.pem"), "junk").expect("write");
        let e = tls_config(&dir.path().join("junk.pem"), None).expect_err("junk");
        assert!(e.to_string().starts_with("cannot use --ca-file"), "{e}");
        server.abort();
    }
}
