//! `dsrlb witness`: the tie-breaker that lets two load-balancer nodes fail over
//! (docs/design.md#witness). It is a Raft voter and nothing else: no packet socket, no ARP,
//! no admin listener, no farms in its file, no root. It keeps the Raft log and applies it
//! like every member (that is what lets it refuse a vote to a candidate whose log is
//! behind), never campaigns before the load-balancer nodes, and hands leadership over at
//! once if it is elected anyway (`cluster`'s witness rule), so it never owns a VIP.

use crate::config::WitnessConfig;
use crate::metrics;
use anyhow::Context;
use cluster::{ClusterNode, ClusterSettings};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use proto::listener::GuardedListener;
use std::future::Future;
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// Runs a witness until `shutdown` completes.
pub async fn run(config: WitnessConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let span = info_span!("witness", id = config.node_id);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(
    config: WitnessConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let settings = settings(&config)?;
    // Every listener is bound before Raft starts (docs/design.md#binaries).
    let metrics_token = match &config.metrics.token_file {
        Some(path) => Some(crate::config::read_token("metrics.token_file", path)?),
        None => None,
    };
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(GuardedListener::new(
            crate::daemon::bind("metrics.listen", addr).await?,
            "metrics",
            config.metrics.limits,
        )),
        None => None,
    };
    let peer_listener = ClusterNode::bind(config.cluster.listen)
        .await
        .context("cluster.listen")?;
    // A witness never bootstraps (its config is refused with the lowest id), so it has no
    // farms to give.
    let cluster = Arc::new(
        ClusterNode::start_on(settings, Vec::new(), Some(peer_listener))
            .await
            .context("starting the cluster member")?,
    );
    info!(
        members = config.cluster.members.len(),
        listen = %cluster.local_addr(),
        "witness started: votes, never owns a VIP (no datapath)"
    );
    let metrics_server = match metrics_listener {
        Some(listener) => {
            let collector = WitnessMetrics {
                listeners: Arc::new(vec![
                    ("peer", cluster.peer_listener()),
                    ("metrics", listener.stats()),
                ]),
                leader_changes: metrics::count_leader_changes(cluster.raft_metrics()),
                cluster: cluster.clone(),
            };
            let render = move || metrics::render(Box::new(collector.clone()));
            let ready = metrics::raft_readiness(cluster.raft_metrics(), || Ok(()));
            Some(metrics::serve(listener, Arc::new(render), ready, metrics_token).await?)
        }
        None => None,
    };
    // A witness is of use once it can vote: waiting for a leader here would hold a
    // service manager's start of the cluster's third member until the other two are up.
    crate::notify::ready("voting (witness, no datapath)");
    shutdown.await;
    info!("shutting down");
    crate::notify::stopping();
    if let Some(server) = metrics_server {
        server.abort();
        // The scrape handler holds a handle on the member until the task is gone.
        let _ = server.await;
    }
    match Arc::try_unwrap(cluster) {
        Ok(cluster) => {
            if let Err(e) = cluster.shutdown().await {
                warn!(error = %e, "cluster member did not shut down cleanly");
            }
        }
        Err(_) => warn!("cluster member still referenced; stopping without a handover"),
    }
    info!("stopped");
    Ok(())
}

/// The cluster member's settings: the same as a full node's, with `witness` on.
pub(crate) fn settings(config: &WitnessConfig) -> anyhow::Result<ClusterSettings> {
    let mut s = crate::daemon::cluster_settings(config.node_id, &config.data_dir, &config.cluster)?;
    s.witness = true;
    Ok(s)
}

/// What a witness exports: its Raft series, the persistence table it holds, and a constant
/// `dsrlb_vip_owner 0`, so that "which node owns" sums the same over every member.
#[derive(Clone)]
struct WitnessMetrics {
    cluster: Arc<ClusterNode>,
    listeners: Arc<metrics::Listeners>,
    leader_changes: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for WitnessMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WitnessMetrics").finish_non_exhaustive()
    }
}

impl Collector for WitnessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let owner = ConstGauge::new(0i64);
        owner.encode(encoder.encode_descriptor(
            "dsrlb_vip_owner",
            "1 while this node answers ARP for and forwards its VIPs (a witness: never)",
            None,
            owner.metric_type(),
        )?)?;
        let raft = self.cluster.raft_metrics().borrow().clone();
        metrics::encode_build_info(&mut encoder)?;
        metrics::encode_listeners(&mut encoder, &self.listeners)?;
        metrics::encode_raft(
            &mut encoder,
            &raft,
            self.leader_changes
                .load(std::sync::atomic::Ordering::Relaxed),
        )?;
        let counts = self.cluster.pins().lock().counts();
        metrics::encode_pin_counts(&mut encoder, &counts)
    }
}
