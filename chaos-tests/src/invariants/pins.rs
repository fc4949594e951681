//! Invariant: a client with a persistence pin keeps its backend through every nemesis — the
//! new owner found the pin in its replicated table — even after a backend-set change made
//! Maglev alone map it elsewhere.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Judges where each pinned client went after the nemesis (`None`: never answered) against
/// the backend it was pinned to before.
pub fn check(
    pinned: &BTreeMap<Ipv4Addr, String>,
    after: &BTreeMap<Ipv4Addr, Option<String>>,
) -> Vec<String> {
    let mut v = Vec::new();
    for (client, was) in pinned {
        match after.get(client) {
            Some(Some(now)) if now == was => {}
            Some(Some(now)) => v.push(format!(
                "persistent client {client} moved from {was} to {now}"
            )),
            Some(None) => v.push(format!(
                "persistent client {client} (pinned to {was}) got no answer"
            )),
            None => v.push(format!("persistent client {client} was not asked again")),
        }
    }
    v
}
