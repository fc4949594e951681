//! Reading the cluster's final state node by node — each node's `export`, `status`, metrics
//! and ledger, asked of that node alone — for the convergence and lost-write invariants.

use std::collections::BTreeSet;
use std::time::Duration;

use lab::{ClusterLab, scrape};
use proto::admin::v1 as pb;

use crate::admin::{block_on_in, client};
use crate::invariants::convergence::NodeView;
use crate::invariants::writes::LedgerView;
use crate::workload::writes::{LEDGER_FARMS, ledger_name};

/// Per call: a node that does not answer in this time counts as not converged.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// The export text without its header comment (which names the answering node and index).
fn body(export: &str) -> String {
    export
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What node `i` says (call only for running, unfrozen nodes).
pub fn node_view(c: &ClusterLab, i: usize) -> NodeView {
    let owns = scrape(&c.lab.nodes()[i])
        .map(|m| m.get("dsrlb_vip_owner", &[]) == 1.0)
        .map_err(|e| e.to_string());
    let asked = client(&c.lab, &[i], CALL_TIMEOUT).and_then(|mut cl| {
        block_on_in(&c.lab.clients()[0], || async move {
            let export = cl
                .call(async |mut api| api.export(pb::ExportRequest {}).await)
                .await
                .map(|a| body(&a.reply.config))
                .map_err(|e| e.to_string());
            let status = cl
                .call(async |mut api| api.status(pb::StatusRequest {}).await)
                .await
                .map(|a| (a.reply.vip_owner, a.reply.term))
                .map_err(|e| e.to_string());
            (export, status)
        })
    });
    let (config, status) = match asked {
        Ok(pair) => pair,
        Err(e) => (Err(e.clone()), Err(e)),
    };
    NodeView {
        node: i,
        config,
        status,
        owns,
    }
}

/// Every backend name in node `i`'s ledger farms.
pub fn ledger_view(c: &ClusterLab, i: usize) -> LedgerView {
    let names = client(&c.lab, &[i], CALL_TIMEOUT).and_then(|mut cl| {
        block_on_in(&c.lab.clients()[0], || async move {
            let mut names = BTreeSet::new();
            for k in 0..LEDGER_FARMS {
                let farm = ledger_name(k);
                let reply = cl
                    .call(async |mut api| {
                        api.list_backends(pb::ListBackendsRequest {
                            farm: farm.clone(),
                            ..Default::default()
                        })
                        .await
                    })
                    .await
                    .map_err(|e| format!("{farm}: {e}"))?;
                names.extend(reply.reply.backends.into_iter().map(|b| b.name));
            }
            Ok(names)
        })?
    });
    LedgerView { node: i, names }
}

/// Node `i` as the leader sees it: reachable, and holding the leader's last log entry.
/// `leader` is the node asked.
pub fn caught_up(c: &ClusterLab, leader: usize, i: usize) -> Result<bool, String> {
    let mut cl = client(&c.lab, &[leader], CALL_TIMEOUT)?;
    let status = block_on_in(&c.lab.clients()[0], || async move {
        cl.call(async |mut api| api.status(pb::StatusRequest {}).await)
            .await
            .map_err(|e| e.to_string())
    })??;
    let id = i as u64 + 1;
    let last = status.reply.last_log_index;
    // `lag` is 0 also when the leader has no replication progress for the member yet, so
    // the member's matched index itself must have reached the leader's last entry.
    Ok(status.reply.leader == leader as u64 + 1
        && status
            .reply
            .members
            .iter()
            .any(|m| m.id == id && m.reachable && m.last_log_index >= last && last > 0))
}
