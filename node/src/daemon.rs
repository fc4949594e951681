//! The `dsrlb run` daemon: checks the host, starts the datapath, health checks and metrics,
//! and keeps the forwarding table in step with health verdicts and learned MACs.
//!
//! Today a node with no peers is a cluster of one: it owns its VIPs from start to shutdown.
//! Shutdown order matters for DSR: ownership is dropped first (no more ARP answers, no more
//! forwarding), then the workers stop, so clients move to another owner as early as possible.

use crate::config::Config;
use crate::health::{self, CheckTarget, HealthChecker, HealthView};
use crate::metrics::{self, NodeMetrics};
use crate::preflight::{self, HostFacts};
use crate::tables;
use anyhow::Context;
use datapath::packet::MacAddr;
use datapath::process::ProcessorConfig;
use datapath::resolver::MacResolver;
use datapath::shared::Shared;
use datapath::table::ForwardingTable;
use datapath::worker::{Datapath, DatapathConfig};
use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

/// How often learned MACs are compared with the table's; cheap, and bounds how long a
/// backend that just answered ARP waits to become selectable.
const RESOLVE_POLL: Duration = Duration::from_millis(200);

/// Runs a node until `shutdown` completes.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let span = info_span!("node", id = config.node_id);
    run_inner(config, shutdown).instrument(span).await
}

async fn run_inner(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let facts = HostFacts::gather(&config.datapath.interface)
        .context("reading interface and sysctl facts")?;
    let approved = preflight::check(&config, &facts)?;
    let iface = datapath::iface::InterfaceInfo::lookup(&config.datapath.interface)?;
    info!(
        interface = %config.datapath.interface,
        mac = %approved.mac,
        ip = %approved.own_ip,
        farms = config.farms.len(),
        "host checks passed"
    );

    let workers = datapath::worker::resolve_workers(config.datapath.workers);
    let shared = Shared::new(workers, approved.mac);

    let health = Arc::new(HealthView::default());
    let (health_tx, mut health_rx) = watch::channel(0u64);
    let targets = check_targets(&config);
    let checker = HealthChecker::start(targets, health.clone(), health_tx);

    let resolver = MacResolver::start(&iface, approved.own_ip)?;
    resolver.set_targets(tables::arp_targets(&config.farms));

    let node_metrics = Arc::new(NodeMetrics::new(shared.clone(), health.clone()));
    let mut learned: HashMap<Ipv4Addr, MacAddr> = HashMap::new();
    let ctx = Publisher {
        config: &config,
        shared: &shared,
        health: &health,
        metrics: &node_metrics,
        own_mac: approved.mac,
    };
    ctx.publish(&learned)?;

    let datapath = Datapath::start(
        DatapathConfig {
            interface: config.datapath.interface.clone(),
            workers,
            ring_slots: config.datapath.ring_slots,
            processor: ProcessorConfig {
                flow_capacity: config.datapath.flow_capacity,
                flow_idle_ns: config.datapath.flow_idle.as_nanos() as u64,
            },
        },
        shared.clone(),
    )?;
    info!(workers, "datapath started");

    let metrics_server = match config.metrics_listen {
        Some(addr) => Some(metrics::serve(addr, node_metrics.clone()).await?),
        None => None,
    };

    // A cluster of one owns its VIPs: announce them, then answer and forward.
    let vips: Vec<Ipv4Addr> = shared.table.load().vips().collect();
    shared.set_owner(true);
    node_metrics.takeovers.fetch_add(1, Ordering::Relaxed);
    info!(vips = ?vips, "this node owns its VIPs");
    resolver.send_garp(
        &vips,
        config.datapath.garp_count,
        config.datapath.garp_interval,
    );

    tokio::pin!(shutdown);
    let mut poll = tokio::time::interval(RESOLVE_POLL);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            changed = health_rx.changed() => {
                if changed.is_err() {
                    warn!("health checker stopped");
                    break;
                }
                ctx.publish(&learned)?;
            }
            _ = poll.tick() => {
                let now: HashMap<Ipv4Addr, MacAddr> = resolver.learned().into_iter().collect();
                if now != learned {
                    for (ip, mac) in &now {
                        if learned.get(ip) != Some(mac) {
                            info!(%ip, %mac, "backend MAC learned");
                        }
                    }
                    for ip in learned.keys().filter(|ip| !now.contains_key(ip)) {
                        warn!(%ip, "backend MAC forgotten (no ARP answer)");
                    }
                    learned = now;
                    ctx.publish(&learned)?;
                }
            }
        }
    }

    info!("shutting down: releasing VIPs");
    shared.set_owner(false);
    datapath.stop();
    resolver.stop();
    checker.stop().await;
    if let Some(server) = metrics_server {
        server.abort();
    }
    info!("stopped");
    Ok(())
}

fn check_targets(config: &Config) -> Vec<CheckTarget> {
    config
        .farms
        .iter()
        .filter_map(|farm| farm.check.as_ref().map(|check| (farm, check)))
        .flat_map(|(farm, check)| {
            farm.backends.iter().map(move |b| CheckTarget {
                key: (farm.name.clone(), b.name.clone()),
                addr: health::check_addr(b.ip, *farm.ports.start()),
                check: check.clone(),
            })
        })
        .collect()
}

/// Everything a table rebuild reads besides the learned MACs.
struct Publisher<'a> {
    config: &'a Config,
    shared: &'a Shared,
    health: &'a HealthView,
    metrics: &'a NodeMetrics,
    own_mac: MacAddr,
}

impl Publisher<'_> {
    /// Rebuilds the forwarding table from the current state and swaps it in.
    fn publish(&self, learned: &HashMap<Ipv4Addr, MacAddr>) -> anyhow::Result<()> {
        let specs = tables::farm_specs(&self.config.farms, self.health, learned);
        let table = ForwardingTable::build(
            self.own_mac,
            &specs,
            &self.shared.counters,
            self.config.datapath.maglev_table_size,
        )
        .context("building the forwarding table")?;
        self.shared.publish(table);
        self.metrics.set_backends(&specs);
        Ok(())
    }
}
