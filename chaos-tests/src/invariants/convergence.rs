//! Invariant: once every nemesis has healed, the cluster converges — every node answers,
//! holds the same config (the admin `export`), names the same VIP owner in the same term,
//! and exactly that node's metrics say it owns the VIP.

/// What one node said about itself and the cluster.
#[derive(Clone, Debug)]
pub struct NodeView {
    /// Lab index (the node id is `node + 1`).
    pub node: usize,
    /// `export`, without its header comment (which names the answering node).
    pub config: Result<String, String>,
    /// `status`: (vip owner id, term).
    pub status: Result<(u64, u64), String>,
    /// `dsrlb_vip_owner` from its metrics.
    pub owns: Result<bool, String>,
}

/// Judges the views of every running node.
pub fn check(views: &[NodeView]) -> Vec<String> {
    let mut v = Vec::new();
    if views.is_empty() {
        return vec!["no node to judge".into()];
    }
    for view in views {
        for (what, err) in [
            ("export", view.config.as_ref().err()),
            ("status", view.status.as_ref().err()),
            ("metrics", view.owns.as_ref().err()),
        ] {
            if let Some(e) = err {
                v.push(format!("node {}: no {what}: {e}", view.node));
            }
        }
    }
    let configs: Vec<(usize, &String)> = views
        .iter()
        .filter_map(|w| w.config.as_ref().ok().map(|c| (w.node, c)))
        .collect();
    if let Some((first, reference)) = configs.first() {
        for (node, config) in &configs[1..] {
            if config != reference {
                v.push(format!(
                    "node {node}'s config differs from node {first}'s: {}",
                    first_difference(reference, config)
                ));
            }
        }
    }
    let statuses: Vec<(usize, (u64, u64))> = views
        .iter()
        .filter_map(|w| w.status.as_ref().ok().map(|s| (w.node, *s)))
        .collect();
    let owner_ids: std::collections::BTreeSet<u64> = statuses.iter().map(|(_, s)| s.0).collect();
    let terms: std::collections::BTreeSet<u64> = statuses.iter().map(|(_, s)| s.1).collect();
    if owner_ids.len() > 1 || owner_ids.contains(&0) {
        v.push(format!(
            "the nodes name different VIP owners (0 = none): {statuses:?}"
        ));
    }
    if terms.len() > 1 {
        v.push(format!("the nodes are in different terms: {statuses:?}"));
    }
    let owning: Vec<usize> = views
        .iter()
        .filter(|w| w.owns == Ok(true))
        .map(|w| w.node)
        .collect();
    match (owning.as_slice(), owner_ids.iter().next()) {
        ([one], Some(&id)) if owner_ids.len() == 1 && *one as u64 + 1 == id => {}
        _ => v.push(format!(
            "metrics say nodes {owning:?} own the VIP; status names node id(s) {owner_ids:?}"
        )),
    }
    v
}

fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    (0..la.len().max(lb.len()))
        .find(|&n| la.get(n) != lb.get(n))
        .map_or("same lines, different line ends".into(), |n| {
            format!("line {}: {:?} vs {:?}", n + 1, la.get(n), lb.get(n))
        })
}
