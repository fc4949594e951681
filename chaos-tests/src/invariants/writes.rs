//! Invariant: no acknowledged admin write is lost (docs/design.md#inv-durable). Every node's
//! final ledger must hold every write the cluster acknowledged; a write whose answer never
//! came (timeout, lost connection) is unknown and may be there or not; nothing may be there
//! that was never written or that the cluster refused.

use std::collections::BTreeSet;

use crate::workload::writes::{WriteHistory, WriteOutcome};

/// The ledger as one node answered it: every backend name of the ledger farms, or why the
/// node could not say.
#[derive(Clone, Debug)]
pub struct LedgerView {
    pub node: usize,
    pub names: Result<BTreeSet<String>, String>,
}

/// Judges the final `views` against `history`.
pub fn check(history: &WriteHistory, views: &[LedgerView]) -> Vec<String> {
    let mut v = Vec::new();
    let acked: BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|o| o.outcome == WriteOutcome::Acked)
        .map(|o| o.name.as_str())
        .collect();
    let maybe: BTreeSet<&str> = history
        .ops
        .iter()
        .filter(|o| matches!(o.outcome, WriteOutcome::Unknown(_)))
        .map(|o| o.name.as_str())
        .collect();
    for view in views {
        let names = match &view.names {
            Ok(names) => names,
            Err(e) => {
                v.push(format!("node {} could not list its ledger: {e}", view.node));
                continue;
            }
        };
        let lost: Vec<&str> = acked
            .iter()
            .copied()
            .filter(|n| !names.contains(*n))
            .collect();
        if !lost.is_empty() {
            v.push(format!(
                "node {} lost {} acknowledged write(s) of {}: {}",
                view.node,
                lost.len(),
                acked.len(),
                sample(&lost)
            ));
        }
        let phantom: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| !acked.contains(n) && !maybe.contains(n))
            .collect();
        if !phantom.is_empty() {
            v.push(format!(
                "node {} holds {} write(s) that were refused or never sent: {}",
                view.node,
                phantom.len(),
                sample(&phantom)
            ));
        }
    }
    v
}

/// The first few names, enough to look them up.
fn sample(names: &[&str]) -> String {
    let mut s = names.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if names.len() > 8 {
        s.push_str(", ...");
    }
    s
}
