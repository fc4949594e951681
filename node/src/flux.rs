//! The node's side of the ARP-flux watch (docs/design.md#arp-flux): which MACs are the
//! cluster's (asked of the members), who the strangers claiming a VIP are (a backend of
//! ours, named, or unknown), one warning per stranger, and the rows `Status` and the metrics
//! show. The datapath's resolver does the listening and the asking.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datapath::{ForwardingTable, MacAddr, ResolverHandle, Shared, VipConflict};
use tracing::{Instrument, warn};

/// How often new conflicts are looked for.
const EVERY: Duration = Duration::from_millis(500);
/// How often the members are asked for their MACs while one has not given it yet, and once
/// every one has.
const RETRY: Duration = Duration::from_secs(1);
const REFRESH: Duration = Duration::from_secs(60);
/// How long one member gets to answer.
const ASK_LIMIT: Duration = Duration::from_secs(1);

/// A conflict with what the node knows about the MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictRow {
    pub vip: Ipv4Addr,
    pub mac: MacAddr,
    /// `(farm, backend)` of every backend with this MAC (a backend serving several farms
    /// appears once per farm).
    pub backends: Vec<(String, String)>,
    pub claims: u64,
    /// How long ago the last claim was seen.
    pub last_seen: Duration,
}

impl ConflictRow {
    /// The backends as `farm/backend`; empty when the MAC is no backend's.
    pub fn backend_labels(&self) -> Vec<String> {
        self.backends
            .iter()
            .map(|(f, b)| format!("{f}/{b}"))
            .collect()
    }

    /// [`backend_labels`](ConflictRow::backend_labels), comma-separated.
    pub fn backend_names(&self) -> String {
        self.backend_labels().join(", ")
    }

    /// What the operator is told, once per MAC and VIP.
    pub fn advice(&self) -> String {
        if self.backends.is_empty() {
            format!(
                "{} answers ARP for {}, and it is neither a cluster member nor a known backend: \
                 find the host and remove the VIP from it",
                self.mac, self.vip
            )
        } else {
            format!(
                "backend {} ({}) answers ARP for {}: set arp_ignore=1, arp_announce=2 on it",
                self.backend_names(),
                self.mac,
                self.vip
            )
        }
    }
}

/// The conflicts seen, named from `table`'s backends.
pub fn rows(conflicts: &[VipConflict], table: &ForwardingTable, now: Instant) -> Vec<ConflictRow> {
    let mut by_mac: BTreeMap<MacAddr, Vec<(String, String)>> = BTreeMap::new();
    for farm in table.specs() {
        for b in &farm.backends {
            if let Some(mac) = b.mac {
                by_mac
                    .entry(mac)
                    .or_default()
                    .push((farm.name.clone(), b.name.clone()));
            }
        }
    }
    for names in by_mac.values_mut() {
        names.sort();
    }
    conflicts
        .iter()
        .map(|c| ConflictRow {
            vip: c.vip,
            mac: c.mac,
            backends: by_mac.get(&c.mac).cloned().unwrap_or_default(),
            claims: c.claims,
            last_seen: now.saturating_duration_since(c.last),
        })
        .collect()
}

/// Keeps the resolver's member MACs current and warns once per new conflict, until the
/// task is aborted. A member that does not answer keeps the MAC it last gave, so its
/// takeover while this node could not reach it is not taken for a stranger's claim.
pub fn spawn(
    cluster: Arc<cluster::ClusterNode>,
    handle: ResolverHandle,
    shared: Arc<Shared>,
    own_mac: MacAddr,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(
        async move {
            let mut known: BTreeMap<u64, MacAddr> = BTreeMap::new();
            // Members that answered at least once (a witness answers without a MAC).
            let mut answered: BTreeSet<u64> = BTreeSet::new();
            let mut warned: BTreeSet<(Ipv4Addr, MacAddr)> = BTreeSet::new();
            let mut asked: Option<Instant> = None;
            let mut tick = tokio::time::interval(EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let me = cluster.id();
                let ids: Vec<u64> = cluster.membership().nodes.into_keys().collect();
                // A removed member's MAC is a stranger's again.
                known.retain(|id, _| ids.contains(id));
                // Before the membership is known (a node not yet in a bootstrapped cluster)
                // nobody answered: that is not "all".
                let complete = |answered: &BTreeSet<u64>| {
                    ids.contains(&me) && ids.iter().all(|id| *id == me || answered.contains(id))
                };
                let missing = !complete(&answered);
                let since = asked.map(|t| t.elapsed());
                // MACs seldom change: once every member gave its MAC the members are asked
                // again only every REFRESH, so a steady cluster adds no peer calls.
                let due = since.is_none_or(|s| s >= if missing { RETRY } else { REFRESH });
                if ids.iter().any(|id| *id != me) && due {
                    asked = Some(Instant::now());
                    for (id, info) in cluster.member_info(ASK_LIMIT).await {
                        let Some(info) = info else { continue };
                        answered.insert(id);
                        if let Ok(mac) = info.datapath_mac.parse::<MacAddr>() {
                            known.insert(id, mac);
                        }
                    }
                }
                let all_answered = complete(&answered);
                let mut macs: Vec<MacAddr> = known.values().copied().collect();
                macs.push(own_mac);
                handle.set_members(macs, all_answered);
                // Until every member gave its MAC, a member's claim may still be taken for a
                // stranger's (the tally is corrected when it does): warn only after.
                if !all_answered {
                    continue;
                }
                let (conflicts, _) = handle.vip_conflicts();
                let table = shared.table.load();
                for row in rows(&conflicts, &table, Instant::now()) {
                    if warned.insert((row.vip, row.mac)) {
                        warn!(
                            vip = %row.vip,
                            mac = %row.mac,
                            backend = row.backend_names(),
                            "ARP flux: {}",
                            row.advice()
                        );
                    }
                }
            }
        }
        .in_current_span(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_the_backend_or_says_it_is_a_stranger() {
        let row = ConflictRow {
            vip: Ipv4Addr::new(198, 18, 0, 100),
            mac: MacAddr([2, 0, 0, 0, 0, 0x22]),
            backends: vec![("web".into(), "b2".into())],
            claims: 3,
            last_seen: Duration::ZERO,
        };
        assert_eq!(
            row.advice(),
            "backend web/b2 (02:00:00:00:00:22) answers ARP for 198.18.0.100: set \
             arp_ignore=1, arp_announce=2 on it"
        );
        let stranger = ConflictRow {
            backends: Vec::new(),
            ..row
        };
        assert!(
            stranger
                .advice()
                .contains("neither a cluster member nor a known backend")
        );
    }
}
