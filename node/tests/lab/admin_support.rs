//! Shared by the `admin_*` tests: admin API clients that run inside the lab's client host
//! (the nodes' admin ports are on the lab network only), with or without the token.

use lab::Lab;
use lab::lbnode::ADMIN_PORT;
use proto::admin::v1 as pb;
use proto::admin::v1::admin_client::AdminClient;
use std::future::Future;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// An admin client that adds `authorization: Bearer <token>` (or nothing).
pub type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// The bearer interceptor of the tests (deliberately not the crate's, so a test can send a
/// wrong token or none).
#[derive(Clone)]
pub struct Bearer(pub Option<String>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            let v = format!("Bearer {t}").parse().expect("ASCII token");
            req.metadata_mut().insert("authorization", v);
        }
        Ok(req)
    }
}

/// The admin endpoint of lab node `i`.
pub fn endpoint(lab: &Lab, i: usize) -> String {
    format!("http://{}:{ADMIN_PORT}", lab.nodes()[i].ip)
}

/// A client of node `i` with `token`.
pub async fn client_with(lab_endpoint: String, token: Option<String>) -> Client {
    let channel = tonic::transport::Endpoint::from_shared(lab_endpoint.clone())
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect to {lab_endpoint}: {e}"));
    AdminClient::with_interceptor(channel, Bearer(token))
}

/// Clients of every lab node with the lab's admin token, in node order.
pub async fn clients(endpoints: &[String], token: &str) -> Vec<Client> {
    let mut out = Vec::new();
    for e in endpoints {
        out.push(client_with(e.clone(), Some(token.to_string())).await);
    }
    out
}

/// Runs `f` inside the lab's first client host on a fresh current-thread runtime.
pub fn in_client<F, Fut, R>(lab: &Lab, f: F) -> R
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    lab.clients()[0].run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

/// A backend message as a request carries it.
pub fn backend(name: &str, ip: &str, weight: u32) -> pb::Backend {
    pb::Backend {
        name: name.into(),
        ip: ip.into(),
        weight,
        ..Default::default()
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit` (async).
pub async fn eventually<T, Fut: Future<Output = Option<T>>>(
    limit: Duration,
    mut f: impl FnMut() -> Fut,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The export text without its header comment (which names the answering node and index).
pub fn body(export: &str) -> String {
    export
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}
