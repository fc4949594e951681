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
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// How long to wait for a TCP + HTTP/2 handshake before trying the next endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The generated client with the token interceptor.
pub type Api = AdminClient<InterceptedService<Channel, Auth>>;

/// Adds `authorization: Bearer <token>` to every request (nothing without a token, which
/// the server refuses with UNAUTHENTICATED — reported as such).
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The admin token, ready to be sent. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(MetadataValue<Ascii>);

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
    format!("Bearer {token}")
        .parse()
        .map(Token)
        .map_err(|_| err("the token is not a valid header value"))
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
    timeout: Duration,
    connected: Option<(usize, Api)>,
}

impl Client {
    /// `token` is sent as a bearer token on every call.
    pub fn new(endpoints: Vec<String>, token: Option<Token>, timeout: Duration) -> Client {
        Client {
            endpoints,
            auth: Auth(token.map(|t| t.0)),
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
                        tracing::debug!(%endpoint, "trying the next endpoint: {why}");
                        cause = why;
                        self.connected = None;
                    }
                    Stop(e) => return Err(e),
                },
            }
        }
        Err(CtlError::Unreachable {
            endpoints: self.endpoints.clone(),
            cause,
        })
    }

    async fn connect(&self, endpoint: &str) -> Result<Api, String> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| error_chain(&e))?
            .connect_timeout(CONNECT_TIMEOUT.min(self.timeout))
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(AdminClient::with_interceptor(channel, self.auth.clone()))
    }
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
        assert_eq!(token.0, "Bearer s3cret-token");
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
        let mut client = Client::new(endpoints.clone(), None, Duration::from_secs(2));
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
}
