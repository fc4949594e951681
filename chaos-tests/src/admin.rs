//! Admin API calls from the lab's client host (the nodes' admin ports are on the lab network
//! only), through the same client `dsrctl` uses: endpoints tried in turn, the bearer token,
//! tonic failures turned into `CtlError`s.

use std::future::Future;
use std::time::Duration;

use dsrctl::client::{Client, Token, read_token};
use lab::lbnode::ADMIN_PORT;
use lab::{Host, Lab};

/// The admin endpoint of lab node `i`.
pub fn endpoint(lab: &Lab, i: usize) -> String {
    format!("http://{}:{ADMIN_PORT}", lab.nodes()[i].ip)
}

/// The lab's admin token, as the client sends it.
pub fn token(lab: &Lab) -> Result<Token, String> {
    let path = lab.admin_token_file().map_err(|e| e.to_string())?;
    read_token(&path).map_err(|e| e.to_string())
}

/// A client of the nodes `nodes` (tried in that order), each call bounded by `timeout`.
pub fn client(lab: &Lab, nodes: &[usize], timeout: Duration) -> Result<Client, String> {
    let endpoints = nodes.iter().map(|&i| endpoint(lab, i)).collect();
    Ok(Client::new(endpoints, Some(token(lab)?), None, timeout))
}

/// Runs `f` to completion inside `host` on a fresh current-thread runtime.
pub fn block_on_in<F, Fut, R>(host: &Host, f: F) -> Result<R, String>
where
    F: FnOnce() -> Fut + Send,
    Fut: Future<Output = R>,
    R: Send,
{
    host.try_run(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f()))
            .map_err(|e| format!("tokio runtime: {e}"))
    })
    .map_err(|e| e.to_string())?
}
