//! The Prometheus endpoint (`/metrics` on the metrics port) with the names of
//! docs/design.md#metrics. Values are read at scrape time from the datapath's counters and the
//! node's state, so nothing on the packet path knows about Prometheus.

use crate::ownership::{Arbiter, ArbiterCell};
use crate::persist::PersistMetrics;
use datapath::{
    BackendState, BackendStats, DropReason, FarmStats, IoBackend, ResolverStatsReader, Shared,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use proto::listener::ListenerStats;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::task::JoinHandle;

/// What the node exports; shared with the daemon, which updates the node-level parts.
#[derive(Debug)]
pub struct NodeMetrics {
    shared: Arc<Shared>,
    /// Times this node became the VIP owner.
    pub takeovers: AtomicU64,
    /// The member's Raft metrics and its count of leader changes, once it runs.
    raft: OnceLock<(
        tokio::sync::watch::Receiver<cluster::RaftMetrics>,
        Arc<AtomicU64>,
    )>,
    /// The health checker's record of its probes, once the daemon runs.
    checks: OnceLock<Arc<crate::health::CheckLog>>,
    persist: Arc<PersistMetrics>,
    /// The replicated persistence table, once the cluster member runs.
    pins: OnceLock<cluster::Pins>,
    /// The ARP thread's counters, once it runs.
    resolver: OnceLock<ResolverStatsReader>,
    flux: OnceLock<datapath::ResolverHandle>,
    /// The I/O backend the datapath runs, once started.
    io: OnceLock<(IoBackend, bool)>,
    /// Which arbiter grants this node's ownership now.
    pub arbiter: Arc<ArbiterCell>,
    /// A pair arbitrated by the segment: what it counts.
    segment: OnceLock<SegmentMetrics>,
    /// Set once the first forwarding table built from the replicated state is published
    /// (`/readyz`, and READY=1 to systemd).
    pub published: std::sync::atomic::AtomicBool,
    /// The peer, admin and metrics listeners' counts, as each is bound.
    listeners: Mutex<Listeners>,
}

/// Each listener's name and counts (docs/design.md#listeners).
pub type Listeners = Vec<(&'static str, Arc<ListenerStats>)>;

/// One backend of the published table, for the per-backend gauges.
#[derive(Debug, Clone)]
struct BackendRow {
    farm: String,
    backend: String,
    /// The health verdict (true when the farm has no check).
    healthy: bool,
    mac_known: bool,
    /// The administrative state's name.
    state: &'static str,
}

impl BackendRow {
    /// Can take new flows: `dsrlb_backend_up` (weight aside, as before).
    fn up(&self) -> bool {
        self.healthy && self.mac_known && self.state != "off"
    }
}

/// The admin states `dsrlb_backend_admin_state` has a series for.
const ADMIN_STATES: [&str; 3] = ["up", "drain", "off"];

/// The segment arbiter's own numbers (docs/design.md#metrics).
#[derive(Debug, Default)]
pub struct SegmentMetrics {
    /// 1 while the peer is silent on the control plane.
    pub peer_silent: std::sync::atomic::AtomicBool,
    /// Segment grants given up because a higher-priority owner claimed the VIPs.
    pub yields: AtomicU64,
    /// Segment grants ended by a call from the peer (read from the gate).
    pub released_by_peer: OnceLock<Arc<crate::segment::SegmentGate>>,
}

impl NodeMetrics {
    pub fn new(shared: Arc<Shared>, persist: Arc<PersistMetrics>) -> Self {
        NodeMetrics {
            shared,
            takeovers: AtomicU64::new(0),
            raft: OnceLock::new(),
            checks: OnceLock::new(),
            persist,
            pins: OnceLock::new(),
            resolver: OnceLock::new(),
            flux: OnceLock::new(),
            arbiter: Arc::new(ArbiterCell::default()),
            segment: OnceLock::new(),
            io: OnceLock::new(),
            published: std::sync::atomic::AtomicBool::new(false),
            listeners: Mutex::new(Vec::new()),
        }
    }

    /// Exports `stats` as listener `name`'s.
    pub fn add_listener(&self, name: &'static str, stats: Arc<ListenerStats>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, stats));
    }

    /// Where `dsrlb_datapath_info` is read from.
    pub fn set_io(&self, io: IoBackend, fast_path: bool) {
        if self.io.set((io, fast_path)).is_err() {
            tracing::warn!("a second datapath for the metrics; the first one is exported");
        }
    }

    /// The segment arbiter's metrics, if turned on.
    pub fn segment_opt(&self) -> Option<&SegmentMetrics> {
        self.segment.get()
    }

    /// Turns on the segment arbiter's metrics; returns where the daemon records them.
    pub fn segment(&self) -> &SegmentMetrics {
        self.segment.get_or_init(SegmentMetrics::default)
    }

    /// Where the `dsrlb_raft_*` series are read from; starts counting leader changes (call
    /// inside the runtime).
    pub fn set_raft(&self, raft: tokio::sync::watch::Receiver<cluster::RaftMetrics>) {
        let changes = count_leader_changes(raft.clone());
        let _ = self.raft.set((raft, changes));
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

    /// Where `dsrlb_vip_conflicts_total` is read from (docs/design.md#arp-flux).
    pub fn set_flux(&self, handle: datapath::ResolverHandle) {
        let _ = self.flux.set(handle);
    }

    /// Where the health-check series are read from.
    pub fn set_check_log(&self, log: Arc<crate::health::CheckLog>) {
        let _ = self.checks.set(log);
    }

    /// Each backend of the published table, read when scraped: a publish costs nothing here
    /// (docs/design.md#scale).
    fn backend_rows(&self) -> Vec<BackendRow> {
        let table = self.shared.table.load();
        table
            .specs()
            .flat_map(|f| {
                f.backends.iter().map(move |b| BackendRow {
                    farm: f.name.clone(),
                    backend: b.name.clone(),
                    healthy: b.healthy,
                    mac_known: b.mac.is_some(),
                    state: match b.state {
                        BackendState::Up => "up",
                        BackendState::Drain => "drain",
                        BackendState::Off => "off",
                    },
                })
            })
            .collect()
    }

    /// The text exposition, as served on `/metrics`.
    pub fn render(self: &Arc<Self>) -> String {
        render(Box::new(self.clone()))
    }
}

impl Collector for NodeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_build_info(&mut encoder)?;
        encode_listeners(
            &mut encoder,
            &self.listeners.lock().unwrap_or_else(|e| e.into_inner()),
        )?;
        let stats = self.shared.stats();
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
        let mut backend_flows = encoder.encode_descriptor(
            "dsrlb_backend_flows",
            "Established flows of the backend in this node's flow tables (what max_flows limits)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for f in &stats {
            for b in &f.backends {
                let labels = [("farm", f.farm.as_str()), ("backend", b.backend.as_str())];
                ConstGauge::new(i64::try_from(b.flows).unwrap_or(i64::MAX))
                    .encode(backend_flows.encode_family(&labels)?)?;
            }
        }
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
        let ft = self.shared.flows.total();
        let entries = ConstGauge::new(i64::try_from(ft.entries).unwrap_or(i64::MAX));
        entries.encode(encoder.encode_descriptor(
            "dsrlb_flow_table_entries",
            "Flows the workers' flow tables hold (seen within flow_idle, swept lazily)",
            None,
            entries.metric_type(),
        )?)?;
        let capacity = ConstGauge::new(i64::try_from(ft.capacity).unwrap_or(i64::MAX));
        capacity.encode(encoder.encode_descriptor(
            "dsrlb_flow_table_capacity",
            "Flows the workers' flow tables have room for (entries / capacity is their fill)",
            None,
            capacity.metric_type(),
        )?)?;
        // Workers whose ring is set up (a worker that never started has none).
        let rings: Vec<_> = self
            .shared
            .rings
            .per_worker()
            .into_iter()
            .enumerate()
            .filter(|(_, r)| r.slots > 0)
            .collect();
        type Field = fn(&datapath::RingFillEntry) -> u64;
        let ring_gauges: [(&str, &str, Field); 2] = [
            (
                "dsrlb_ring_slots",
                "Receive slots of each worker's data ring",
                |r| r.slots,
            ),
            (
                "dsrlb_ring_backlog_frames",
                "Frames waiting in each worker's receive ring when it last came to take a batch, 0 once idle (backlog / slots is the fill; a full ring drops as ring_full)",
                |r| r.backlog,
            ),
        ];
        for (name, help, field) in ring_gauges {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for (w, r) in &rings {
                let label = w.to_string();
                ConstGauge::new(i64::try_from(field(r)).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&[("worker", label.as_str())])?)?;
            }
        }
        let mut evictions = encoder.encode_descriptor(
            "dsrlb_flow_table_evictions",
            "Flow entries pushed out of a full bucket: half_open by any new flow, established only by another established flow",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (kind, n) in [
            ("half_open", ft.evicted_half_open),
            ("established", ft.evicted_established),
        ] {
            ConstCounter::new(n).encode(evictions.encode_family(&[("kind", kind)])?)?;
        }
        let full = ConstCounter::new(ft.full);
        full.encode(encoder.encode_descriptor(
            "dsrlb_flow_table_full",
            "New half-open flows forwarded without an entry: their bucket held only established flows",
            None,
            full.metric_type(),
        )?)?;
        if let Some((io, fast)) = self.io.get() {
            let mut info = encoder.encode_descriptor(
                "dsrlb_datapath_info",
                "1, labelled with the I/O backend the datapath runs, how frames cross into user space, and whether the kernel fast path (tc) forwards plain farms",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            let fast_path = if *fast { "tc" } else { "off" };
            let labels = [
                ("io", io.as_str()),
                ("mode", io.mode()),
                ("fast_path", fast_path),
            ];
            ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        }
        // The datapath says at start whether the fast path runs (`set_io`).
        if self.io.get().is_some_and(|(_, fast)| *fast) {
            let fast = ConstCounter::new(self.shared.fast_path_packets());
            fast.encode(encoder.encode_descriptor(
                "dsrlb_fast_path_packets",
                "Frames the kernel fast path forwarded (included in dsrlb_packets_total)",
                None,
                fast.metric_type(),
            )?)?;
        }
        let is_owner = self.shared.is_owner();
        let owner = ConstGauge::new(i64::from(is_owner));
        owner.encode(encoder.encode_descriptor(
            "dsrlb_vip_owner",
            "1 while this node answers ARP for and forwards its VIPs",
            None,
            owner.metric_type(),
        )?)?;
        let mut owned = encoder.encode_descriptor(
            "dsrlb_vip_owned",
            "Per VIP of the published table: 1 while this node owns it (a node owns all of \
             its VIPs or none)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for vip in self.shared.table.load().vips() {
            let vip = vip.to_string();
            ConstGauge::new(i64::from(is_owner))
                .encode(owned.encode_family(&[("vip", vip.as_str())])?)?;
        }
        for (name, help, value) in [
            (
                "dsrlb_datapath_workers",
                "Datapath worker threads started",
                self.io.get().map_or(0, |_| self.shared.workers),
            ),
            (
                "dsrlb_datapath_workers_running",
                "Datapath worker threads running now (fewer than started: one ended on an error)",
                self.shared.workers_running(),
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        let mut up = encoder.encode_descriptor(
            "dsrlb_backend_up",
            "1 while the backend can take new flows (healthy, MAC known, not off)",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        let rows = self.backend_rows();
        for r in &rows {
            let labels = [("farm", r.farm.as_str()), ("backend", r.backend.as_str())];
            ConstGauge::new(i64::from(r.up())).encode(up.encode_family(&labels)?)?;
        }
        // What `dsrlb_backend_up` combines, one series each, so an operator sees which one
        // keeps a backend out.
        for (name, help, value) in [
            (
                "dsrlb_backend_healthy",
                "1 while the backend's replicated health verdict is up (or its farm has no check)",
                (|r: &BackendRow| r.healthy) as fn(&BackendRow) -> bool,
            ),
            (
                "dsrlb_backend_mac_known",
                "1 while the backend's MAC is known (pinned or learned by ARP)",
                |r: &BackendRow| r.mac_known,
            ),
        ] {
            let mut family =
                encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for r in &rows {
                let labels = [("farm", r.farm.as_str()), ("backend", r.backend.as_str())];
                ConstGauge::new(i64::from(value(r))).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut admin = encoder.encode_descriptor(
            "dsrlb_backend_admin_state",
            "1 for the backend's administrative state (up, drain, off), 0 for the others",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for r in &rows {
            for state in ADMIN_STATES {
                let labels = [
                    ("farm", r.farm.as_str()),
                    ("backend", r.backend.as_str()),
                    ("state", state),
                ];
                ConstGauge::new(i64::from(r.state == state))
                    .encode(admin.encode_family(&labels)?)?;
            }
        }
        self.encode_checks(&mut encoder)?;
        if let Some((raft, changes)) = self.raft.get() {
            let m = raft.borrow().clone();
            encode_raft(&mut encoder, &m, changes.load(Ordering::Relaxed))?;
        }
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
        self.encode_arbiter(&mut encoder)?;
        self.encode_conflicts(&mut encoder)?;
        self.encode_persistence(&mut encoder)
    }
}

impl NodeMetrics {
    /// The health checker's probes on this node (the leader; nothing elsewhere).
    fn encode_checks(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.checks.get().map(|l| l.snapshot()).unwrap_or_default();
        let mut total = encoder.encode_descriptor(
            "dsrlb_health_checks",
            "Health probes run by this node, by result: up, down, or error (not run: this \
             node's own fault, such as no descriptor or no route; never a verdict)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for ((farm, backend), c) in &snapshot {
            for (result, n) in [("up", c.up), ("down", c.down), ("error", c.error)] {
                let labels = [
                    ("farm", farm.as_str()),
                    ("backend", backend.as_str()),
                    ("result", result),
                ];
                ConstCounter::new(n).encode(total.encode_family(&labels)?)?;
            }
        }
        let mut duration = encoder.encode_descriptor(
            "dsrlb_health_check_duration_seconds",
            "Time of the health probes that reached a verdict",
            None,
            prometheus_client::metrics::MetricType::Histogram,
        )?;
        for ((farm, backend), c) in &snapshot {
            let labels = [("farm", farm.as_str()), ("backend", backend.as_str())];
            let within: u64 = c.buckets.iter().sum();
            let buckets: Vec<(f64, u64)> = crate::health::DURATION_BUCKETS
                .iter()
                .copied()
                .zip(c.buckets.iter().copied())
                .chain(std::iter::once((f64::MAX, c.count - within)))
                .collect();
            duration
                .encode_family(&labels)?
                .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    c.sum, c.count, &buckets, None,
                )?;
        }
        Ok(())
    }

    /// ARP claims for each VIP by MACs that are not the cluster's, all MACs together (a
    /// `mac` label would let forged claims grow the series without bound; `dsrctl status`
    /// names them).
    fn encode_conflicts(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(flux) = self.flux.get() else {
            return Ok(());
        };
        let (conflicts, overflow) = flux.vip_conflicts();
        let mut by_vip: BTreeMap<std::net::Ipv4Addr, u64> = BTreeMap::new();
        for c in &conflicts {
            *by_vip.entry(c.vip).or_default() += c.claims;
        }
        let mut total = encoder.encode_descriptor(
            "dsrlb_vip_conflicts",
            "ARP frames claiming a VIP from a MAC that is not a cluster member's (ARP flux: a \
             backend without arp_ignore=1/arp_announce=2, or a stranger)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (vip, n) in by_vip {
            let vip = vip.to_string();
            ConstCounter::new(n).encode(total.encode_family(&[("vip", vip.as_str())])?)?;
        }
        let overflow = ConstCounter::new(overflow);
        overflow.encode(encoder.encode_descriptor(
            "dsrlb_vip_conflicts_untallied",
            "Conflicting ARP claims not tallied because the table of (VIP, MAC) pairs was full",
            None,
            overflow.metric_type(),
        )?)
    }

    fn encode_arbiter(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = self.arbiter.get();
        let mut by = encoder.encode_descriptor(
            "dsrlb_vip_owner_arbiter",
            "1 for the arbiter that grants this node's VIP ownership now, 0 for the others",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        for a in [Arbiter::Quorum, Arbiter::Sole, Arbiter::Segment] {
            ConstGauge::new(i64::from(now == Some(a)))
                .encode(by.encode_family(&[("arbiter", a.as_str())])?)?;
        }
        let Some(seg) = self.segment.get() else {
            return Ok(());
        };
        let ev = self
            .resolver
            .get()
            .map(|r| r.segment_evidence())
            .unwrap_or_default();
        let silent = ConstGauge::new(i64::from(seg.peer_silent.load(Ordering::Relaxed)));
        silent.encode(encoder.encode_descriptor(
            "dsrlb_segment_peer_silent",
            "1 while the pair's peer has been silent on the control plane for a lease",
            None,
            silent.metric_type(),
        )?)?;
        for (name, help, v) in [
            (
                "dsrlb_segment_probes",
                "ARP requests for the VIPs sent to probe the datapath segment",
                ev.probes_sent,
            ),
            (
                "dsrlb_segment_probe_rounds",
                "Probe rounds of which at least one request was sent",
                ev.rounds,
            ),
            (
                "dsrlb_segment_claims",
                "ARP frames from another MAC claiming one of the VIPs",
                ev.claims,
            ),
            (
                "dsrlb_segment_yields",
                "Segment ownership given up to a higher-priority owner met on the segment",
                seg.yields.load(Ordering::Relaxed),
            ),
            (
                "dsrlb_segment_peer_releases",
                "Segment ownership ended by a call from the returning peer",
                seg.released_by_peer
                    .get()
                    .map_or(0, |g| g.released_by_peer.load(Ordering::Relaxed)),
            ),
        ] {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)?;
        }
        Ok(())
    }

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
            ("evicted_full", applied.evicted_full),
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
            (
                "dsrlb_persistence_local_writes",
                "Pin writes applied to this node's mirror only (segment ownership, no quorum)",
                &self.persist.local,
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

/// `dsrlb_build_info{version,commit} 1`: which build runs, for joins in queries and for
/// a dashboard that shows a mixed-version cluster; a witness exports it too.
pub(crate) fn encode_build_info(encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let mut info = encoder.encode_descriptor(
        "dsrlb_build_info",
        "1, labelled with the dsrlb release and the git commit this node runs",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    let labels = [
        ("version", buildinfo::VERSION),
        ("commit", buildinfo::COMMIT),
    ];
    ConstGauge::new(1i64).encode(info.encode_family(&labels)?)
}

/// `dsrlb_listener_connections` and `dsrlb_listener_refused_total`, per listener; a witness
/// exports them too.
pub(crate) fn encode_listeners(
    encoder: &mut DescriptorEncoder,
    listeners: &[(&'static str, Arc<ListenerStats>)],
) -> Result<(), std::fmt::Error> {
    let mut open = encoder.encode_descriptor(
        "dsrlb_listener_connections",
        "Connections open now on the peer, admin and metrics ports",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (name, s) in listeners {
        ConstGauge::new(s.open() as i64).encode(open.encode_family(&[("listener", *name)])?)?;
    }
    let mut refused = encoder.encode_descriptor(
        "dsrlb_listener_refused",
        "Connections closed at accept because the listener's cap (total or per address) was reached",
        None,
        ConstCounter::new(0u64).metric_type(),
    )?;
    for (name, s) in listeners {
        ConstCounter::new(s.refused()).encode(refused.encode_family(&[("listener", *name)])?)?;
    }
    Ok(())
}

/// Counts changes of the Raft leader this member sees (a new leader, or none after one)
/// for `dsrlb_raft_leader_changes_total`, until `raft`'s sender is gone.
pub(crate) fn count_leader_changes(
    mut raft: tokio::sync::watch::Receiver<cluster::RaftMetrics>,
) -> Arc<AtomicU64> {
    let changes = Arc::new(AtomicU64::new(0));
    let count = changes.clone();
    tokio::spawn(async move {
        let mut leader = raft.borrow_and_update().current_leader;
        while raft.changed().await.is_ok() {
            let now = raft.borrow_and_update().current_leader;
            if now != leader {
                leader = now;
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    changes
}

/// The Raft series every member exports (a witness too): term, role, log and applied
/// index, leader changes, and on the leader the age of its last quorum acknowledgement
/// (what the VIP lease runs on) and each member's replication lag in entries.
pub(crate) fn encode_raft(
    encoder: &mut DescriptorEncoder,
    m: &cluster::RaftMetrics,
    leader_changes: u64,
) -> Result<(), std::fmt::Error> {
    let leading = m.state == cluster::ServerState::Leader;
    let last = m.last_log_index.unwrap_or(0);
    for (name, help, value) in [
        ("dsrlb_raft_term", "Current Raft term", m.current_term),
        (
            "dsrlb_raft_is_leader",
            "1 while this member is the Raft leader (and so may own the VIPs)",
            u64::from(leading),
        ),
        (
            "dsrlb_raft_last_log_index",
            "Index of the last entry in this member's log",
            last,
        ),
        (
            "dsrlb_raft_applied_index",
            "Index of the last entry this member applied (committed entries only)",
            m.last_applied.map_or(0, |l| l.index),
        ),
    ] {
        let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
        g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
    }
    let changes = ConstCounter::new(leader_changes);
    changes.encode(encoder.encode_descriptor(
        "dsrlb_raft_leader_changes",
        "Changes of the leader this member saw since it started (to another, or to none)",
        None,
        changes.metric_type(),
    )?)?;
    if !leading {
        return Ok(());
    }
    if let Some(ms) = m.millis_since_quorum_ack {
        let age = ConstGauge::new(ms as f64 / 1000.0);
        age.encode(encoder.encode_descriptor(
            "dsrlb_raft_quorum_ack_age_seconds",
            "On the leader: time since a quorum last acknowledged it (the VIP lease's age)",
            None,
            age.metric_type(),
        )?)?;
    }
    let mut lag = encoder.encode_descriptor(
        "dsrlb_raft_member_lag_entries",
        "On the leader: entries each member's log is behind the leader's (members whose \
         progress is known)",
        None,
        ConstGauge::new(0i64).metric_type(),
    )?;
    for (id, matched) in m.replication.iter().flatten() {
        if let Some(matched) = matched {
            let behind = last.saturating_sub(matched.index);
            let id = id.to_string();
            ConstGauge::new(i64::try_from(behind).unwrap_or(i64::MAX))
                .encode(lag.encode_family(&[("member", id.as_str())])?)?;
        }
    }
    Ok(())
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

/// Why a node is not ready (`/readyz` answers 503 with it), or `Ok` when it is.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Readiness from Raft alone: a member that knows a leader. `extra` adds the node's own
/// conditions (the first forwarding table published).
pub fn raft_readiness(
    raft: tokio::sync::watch::Receiver<cluster::RaftMetrics>,
    extra: impl Fn() -> Result<(), String> + Send + Sync + 'static,
) -> Readiness {
    Arc::new(move || {
        if raft.borrow().current_leader.is_none() {
            return Err("no leader known: not (yet) part of a cluster with a quorum".into());
        }
        extra()
    })
}

/// The metrics port's connections as axum takes them, under the caps of
/// docs/design.md#listeners.
struct Guarded(proto::listener::GuardedListener);

impl axum::serve::Listener for Guarded {
    type Io = proto::listener::GuardedStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// Serves `/metrics` (the text `render` makes at each scrape; with `token`, only to a
/// request carrying `Authorization: Bearer <token>`), `/healthz` (200 while the process
/// serves at all) and `/readyz` (200 when `ready` says so, else 503 and why) until the
/// returned task is aborted.
pub async fn serve(
    listener: proto::listener::GuardedListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    ready: Readiness,
    token: Option<String>,
) -> anyhow::Result<JoinHandle<()>> {
    use axum::http::{HeaderMap, StatusCode, header};
    let token: Option<Arc<str>> = token.map(Into::into);
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move |headers: HeaderMap| {
                let render = render.clone();
                let token = token.clone();
                async move {
                    if let Some(token) = token {
                        let presented = headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
                        if !presented
                            .is_some_and(|p| proto::auth::constant_time_eq(p, token.as_bytes()))
                        {
                            return (
                                StatusCode::UNAUTHORIZED,
                                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                                "metrics.token_file is set: send Authorization: Bearer <token>\n"
                                    .to_string(),
                            );
                        }
                    }
                    (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        render(),
                    )
                }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move {
                    match ready() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(Guarded(listener), app).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datapath::{BackendSpec, ForwardingTable, MacAddr, Protocol};

    /// The status line of `GET path` on `addr`, with `auth` as the Authorization header.
    async fn status(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        c.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).await.unwrap();
        reply.lines().next().unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn a_metrics_token_guards_the_exposition_but_not_the_probes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = proto::listener::Limits {
            max_connections: 8,
            per_source: 8,
            idle: std::time::Duration::from_secs(5),
        };
        let task = serve(
            proto::listener::GuardedListener::new(listener, "metrics", limits),
            Arc::new(|| "dsrlb_x 1\n".to_owned()),
            Arc::new(|| Ok(())),
            Some("0123456789abcdef".into()),
        )
        .await
        .unwrap();
        assert_eq!(
            status(addr, "/metrics", None).await,
            "HTTP/1.1 401 Unauthorized"
        );
        assert_eq!(
            status(addr, "/metrics", Some("Bearer 0123456789abcdeX")).await,
            "HTTP/1.1 401 Unauthorized"
        );
        assert_eq!(
            status(addr, "/metrics", Some("Basic 0123456789abcdef")).await,
            "HTTP/1.1 401 Unauthorized"
        );
        assert_eq!(
            status(addr, "/metrics", Some("Bearer 0123456789abcdef")).await,
            "HTTP/1.1 200 OK"
        );
        assert_eq!(status(addr, "/healthz", None).await, "HTTP/1.1 200 OK");
        assert_eq!(status(addr, "/readyz", None).await, "HTTP/1.1 200 OK");
        task.abort();
    }

    #[test]
    fn the_exposition_carries_the_contract_names() {
        let shared = Shared::new(1, MacAddr([2, 0, 0, 0, 0, 1]));
        let farm = datapath::FarmSpec {
            name: "web".into(),
            vip: std::net::Ipv4Addr::new(198, 18, 0, 100).into(),
            protocol: Protocol::Tcp,
            ports: 80..=80,
            backends: vec![BackendSpec {
                name: "b1".into(),
                ip: std::net::Ipv4Addr::new(198, 18, 0, 21).into(),
                mac: Some(MacAddr([2, 0, 0, 0, 0, 0x21])),
                weight: 1,
                state: BackendState::Up,
                healthy: true,
            }],
            persistence: None,
            hash: datapath::FlowHash::default(),
            limits: datapath::FarmLimits::default(),
            maglev_size: 251,
        };
        let table = ForwardingTable::build(
            MacAddr([2, 0, 0, 0, 0, 1]),
            std::slice::from_ref(&farm),
            &shared.counters,
        )
        .unwrap();
        shared.publish(table);
        let m = Arc::new(NodeMetrics::new(shared.clone(), Default::default()));
        shared.set_owner(true);
        let text = m.render();
        for line in [
            "dsrlb_packets_total{farm=\"web\",backend=\"b1\"} 0",
            "dsrlb_bytes_total{farm=\"web\",backend=\"b1\"} 0",
            "dsrlb_flows_new_total{farm=\"web\"} 0",
            "dsrlb_backend_flows{farm=\"web\",backend=\"b1\"} 0",
            "dsrlb_drops_total{reason=\"not_owner\"} 0",
            "dsrlb_vip_owner 1",
            "dsrlb_backend_up{farm=\"web\",backend=\"b1\"} 1",
            "dsrlb_vip_owned{vip=\"198.18.0.100\"} 1",
            "dsrlb_datapath_workers_running 0",
            "dsrlb_takeovers_total 0",
            "dsrlb_gratuitous_arp_frames_total 0",
            "# TYPE dsrlb_persistence_entries gauge",
            "dsrlb_persistence_requests_total{kind=\"new\"} 0",
            "dsrlb_persistence_request_drops_total{kind=\"refresh\"} 0",
            "# TYPE dsrlb_persistence_lag_seconds histogram",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        let build = format!(
            "dsrlb_build_info{{version=\"{}\",commit=\"{}\"}} 1",
            buildinfo::VERSION,
            buildinfo::COMMIT
        );
        assert!(text.contains(&build), "missing {build:?} in:\n{text}");
    }
}
