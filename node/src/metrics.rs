//! The Prometheus endpoint (`/metrics` on the metrics port) with the names of
//! docs/design.md#metrics. Values are read at scrape time from the datapath's counters and the
//! node's state, so nothing on the packet path knows about Prometheus.

use crate::persist::PersistMetrics;
use datapath::{
    BackendState, BackendStats, DropReason, FarmSpec, FarmStats, IoBackend, ResolverStatsReader,
    Shared,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::JoinHandle;

/// What the node exports; shared with the daemon, which updates the node-level parts.
#[derive(Debug)]
pub struct NodeMetrics {
    shared: Arc<Shared>,
    /// Times this node became the VIP owner.
    pub takeovers: AtomicU64,
    /// Current Raft term.
    pub term: AtomicU64,
    /// (farm, backend, selectable) as of the last published table.
    backends: Mutex<Vec<(String, String, bool)>>,
    persist: Arc<PersistMetrics>,
    /// The replicated persistence table, once the cluster member runs.
    pins: OnceLock<cluster::Pins>,
    /// The ARP thread's counters, once it runs.
    resolver: OnceLock<ResolverStatsReader>,
    /// The I/O backend the datapath runs, once started.
    io: OnceLock<IoBackend>,
}

impl NodeMetrics {
    pub fn new(shared: Arc<Shared>, persist: Arc<PersistMetrics>) -> Self {
        NodeMetrics {
            shared,
            takeovers: AtomicU64::new(0),
            term: AtomicU64::new(0),
            backends: Mutex::new(Vec::new()),
            persist,
            pins: OnceLock::new(),
            resolver: OnceLock::new(),
            io: OnceLock::new(),
        }
    }

    /// Where `dsrlb_datapath_info` is read from.
    pub fn set_io(&self, io: IoBackend) {
        if self.io.set(io).is_err() {
            tracing::warn!("a second datapath for the metrics; the first one is exported");
        }
    }

    /// Where `dsrlb_persistence_entries` and the applied-pin counters are read from.
    pub fn set_pins(&self, pins: cluster::Pins) {
        let _ = self.pins.set(pins);
    }

    /// Where `dsrlb_gratuitous_arp_frames_total` is read from.
    pub fn set_resolver(&self, reader: ResolverStatsReader) {
        if self.resolver.set(reader).is_err() {
            tracing::warn!("a second ARP resolver for the metrics; the first one is exported");
        }
    }

    /// Records which backends the last published table can send new flows to.
    pub fn set_backends(&self, specs: &[FarmSpec]) {
        let rows = specs
            .iter()
            .flat_map(|f| {
                f.backends.iter().map(move |b| {
                    let up = b.healthy && b.mac.is_some() && !matches!(b.state, BackendState::Off);
                    (f.name.clone(), b.name.clone(), up)
                })
            })
            .collect();
        *self.backends.lock().unwrap_or_else(|e| e.into_inner()) = rows;
    }

    /// The text exposition, as served on `/metrics`.
    pub fn render(self: &Arc<Self>) -> String {
        render(Box::new(self.clone()))
    }
}

impl Collector for NodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.shared.counters.snapshot();
        // Counter names get their `_total` suffix from the encoder.
        per_backend(
            &mut encoder,
            &stats,
            "dsrlb_packets",
            "Frames forwarded to a backend",
            |b| b.packets,
        )?;
        per_backend(
            &mut encoder,
            &stats,
            "dsrlb_bytes",
            "Bytes of frames forwarded to a backend",
            |b| b.bytes,
        )?;
        let mut flows = encoder.encode_descriptor(
            "dsrlb_flows_new",
            "Flows scheduled to a backend for the first time on this node",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for f in &stats {
            let labels = [("farm", f.farm.as_str())];
            ConstCounter::new(f.flows_new).encode(flows.encode_family(&labels)?)?;
        }
        let mut drops = encoder.encode_descriptor(
            "dsrlb_drops",
            "Frames the datapath did not forward, by reason",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for reason in DropReason::ALL {
            let labels = [("reason", reason.as_str())];
            ConstCounter::new(self.shared.drops.get(*reason))
                .encode(drops.encode_family(&labels)?)?;
        }
        if let Some(io) = self.io.get() {
            let mut info = encoder.encode_descriptor(
                "dsrlb_datapath_info",
                "1, labelled with the I/O backend the datapath runs and how frames cross into user space",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            let labels = [("io", io.as_str()), ("mode", io.mode())];
            ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        }
        let owner = ConstGauge::new(i64::from(self.shared.is_owner()));
        owner.encode(encoder.encode_descriptor(
            "dsrlb_vip_owner",
            "1 while this node answers ARP for and forwards its VIPs",
            None,
            owner.metric_type(),
        )?)?;
        let mut up = encoder.encode_descriptor(
            "dsrlb_backend_up",
            "1 while the backend can take new flows (healthy, MAC known, not off)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        let rows = self
            .backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (farm, backend, is_up) in &rows {
            let labels = [("farm", farm.as_str()), ("backend", backend.as_str())];
            ConstGauge::new(i64::from(*is_up)).encode(up.encode_family(&labels)?)?;
        }
        let term = ConstGauge::new(self.term.load(Ordering::Relaxed) as i64);
        term.encode(encoder.encode_descriptor(
            "dsrlb_raft_term",
            "Current Raft term",
            None,
            term.metric_type(),
        )?)?;
        let takeovers = ConstCounter::new(self.takeovers.load(Ordering::Relaxed));
        takeovers.encode(encoder.encode_descriptor(
            "dsrlb_takeovers",
            "Times this node became the VIP owner",
            None,
            takeovers.metric_type(),
        )?)?;
        let garps = ConstCounter::new(self.resolver.get().map_or(0, |r| r.get().garps_sent));
        garps.encode(encoder.encode_descriptor(
            "dsrlb_gratuitous_arp_frames",
            "Gratuitous ARP frames sent (takeover bursts and refreshes; two per VIP and round)",
            None,
            garps.metric_type(),
        )?)?;
        self.encode_persistence(&mut encoder)
    }
}

impl NodeMetrics {
    fn encode_persistence(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (counts, applied) = match self.pins.get() {
            Some(p) => {
                let t = p.lock();
                (t.counts(), t.stats())
            }
            None => (Vec::new(), cluster::PinStats::default()),
        };
        encode_pin_counts(encoder, &counts)?;
        let mut outcomes = encoder.encode_descriptor(
            "dsrlb_persistence_applied",
            "Persistence writes applied from the log on this node, by outcome",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (outcome, v) in [
            ("created", applied.created),
            ("refreshed", applied.refreshed),
            ("expired", applied.expired),
            ("rejected_full", applied.rejected_full),
            ("stale", applied.stale),
        ] {
            ConstCounter::new(v).encode(outcomes.encode_family(&[("outcome", outcome)])?)?;
        }
        let q = self.shared.pins.queue_stats();
        let mut queued = encoder.encode_descriptor(
            "dsrlb_persistence_requests",
            "Pin requests the workers queued for the batcher, by kind",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (kind, v) in [("new", q.new_queued), ("refresh", q.refresh_queued)] {
            ConstCounter::new(v).encode(queued.encode_family(&[("kind", kind)])?)?;
        }
        let mut dropped = encoder.encode_descriptor(
            "dsrlb_persistence_request_drops",
            "Pin requests dropped because a worker's queue was full (refreshes first), by kind",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (kind, v) in [("new", q.new_dropped), ("refresh", q.refresh_dropped)] {
            ConstCounter::new(v).encode(dropped.encode_family(&[("kind", kind)])?)?;
        }
        for (name, help, v) in [
            (
                "dsrlb_persistence_batches",
                "Persistence batches this node committed",
                &self.persist.batches,
            ),
            (
                "dsrlb_persistence_batch_writes",
                "Pin writes in the batches this node committed",
                &self.persist.writes,
            ),
            (
                "dsrlb_persistence_batch_failures",
                "Persistence batches this node could not commit",
                &self.persist.failed,
            ),
        ] {
            let c = ConstCounter::new(v.load(Ordering::Relaxed));
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        self.persist.lag.encode(encoder.encode_descriptor(
            "dsrlb_persistence_lag_seconds",
            "First packet of a client on the owner to its pin applied on this node",
            None,
            self.persist.lag.metric_type(),
        )?)?;
        Ok(())
    }
}

/// `dsrlb_persistence_entries`, per farm; a witness exports it too (it holds the table).
pub(crate) fn encode_pin_counts(
    encoder: &mut DescriptorEncoder,
    counts: &[(String, usize)],
) -> Result<(), std::fmt::Error> {
    let mut entries = encoder.encode_descriptor(
        "dsrlb_persistence_entries",
        "Source-IP persistence entries in the replicated table, per farm",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (farm, n) in counts {
        let labels = [("farm", farm.as_str())];
        ConstGauge::new(*n as i64).encode(entries.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The text exposition of one collector, as served on `/metrics`.
pub(crate) fn render(collector: Box<dyn Collector>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(collector);
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => out,
        Err(e) => format!("# encoding failed: {e}\n"),
    }
}

/// One counter family with a sample per (farm, backend).
fn per_backend(
    encoder: &mut DescriptorEncoder,
    stats: &[FarmStats],
    name: &str,
    help: &str,
    value: impl Fn(&BackendStats) -> u64,
) -> Result<(), std::fmt::Error> {
    let mut family =
        encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
    for f in stats {
        for b in &f.backends {
            let labels = [("farm", f.farm.as_str()), ("backend", b.backend.as_str())];
            ConstCounter::new(value(b)).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Serves `/metrics` (the text `render` makes at each scrape) until the returned task is
/// aborted.
pub async fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> anyhow::Result<JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics.listen {addr}: {e}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = render.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::{BackendSpec, ForwardingTable, MacAddr, Protocol};

    #[test]
    fn the_exposition_carries_the_contract_names() {
        let shared = Shared::new(1, MacAddr([2, 0, 0, 0, 0, 1]));
        let farm = FarmSpec {
            name: "web".into(),
            vip: std::net::Ipv4Addr::new(198, 18, 0, 100),
            protocol: Protocol::Tcp,
            ports: 80..=80,
            backends: vec![BackendSpec {
                name: "b1".into(),
                ip: std::net::Ipv4Addr::new(198, 18, 0, 21),
                mac: Some(MacAddr([2, 0, 0, 0, 0, 0x21])),
                weight: 1,
                state: BackendState::Up,
                healthy: true,
            }],
            persistence: None,
        };
        let table = ForwardingTable::build(
            MacAddr([2, 0, 0, 0, 0, 1]),
            std::slice::from_ref(&farm),
            &shared.counters,
            65537,
        )
        .unwrap();
        shared.publish(table);
        let m = Arc::new(NodeMetrics::new(shared.clone(), Default::default()));
        m.set_backends(&[farm]);
        m.term.store(7, Ordering::Relaxed);
        shared.set_owner(true);
        let text = m.render();
        for line in [
            "dsrlb_packets_total{farm=\"web\",backend=\"b1\"} 0",
            "dsrlb_bytes_total{farm=\"web\",backend=\"b1\"} 0",
            "dsrlb_flows_new_total{farm=\"web\"} 0",
            "dsrlb_drops_total{reason=\"not_owner\"} 0",
            "dsrlb_vip_owner 1",
            "dsrlb_backend_up{farm=\"web\",backend=\"b1\"} 1",
            "dsrlb_raft_term 7",
            "dsrlb_takeovers_total 0",
            "dsrlb_gratuitous_arp_frames_total 0",
            "# TYPE dsrlb_persistence_entries gauge",
            "dsrlb_persistence_requests_total{kind=\"new\"} 0",
            "dsrlb_persistence_request_drops_total{kind=\"refresh\"} 0",
            "# TYPE dsrlb_persistence_lag_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
