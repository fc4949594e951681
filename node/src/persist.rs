//! Source-IP persistence on a node: the [`DatapathSink`] that mirrors the replicated pin
//! table into the datapath as the log is applied (on every node, so a new owner finds every
//! pin in place), and the batcher that turns the workers' pin requests into log entries.
//!
//! Clocks: the log carries wall-clock milliseconds (they survive a restart and mean the same
//! on every node); the datapath keeps monotonic nanoseconds (cheap to read per batch, never
//! stepped). The conversion happens here, both ways, against "now" on both clocks — where
//! "now" is the [`LogClock`], not this node's wall clock, so a stepped clock on one node
//! neither expires nor ages pins (docs/design.md#srcip-persistence).

use cluster::{ClusterNode, Command, FarmPinWrites, PinBatch, PinSink, PinTable, PinWrite};
use datapath::{PinEvent, Shared, monotonic_ns};
use prometheus_client::metrics::histogram::Histogram;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, warn};

/// A pin created longer ago than this when it is applied is a replay, not a lag sample.
const LAG_REPLAY_MS: u64 = 60_000;
/// An expiry-only batch is proposed at most this often.
const EXPIRY_EVERY: Duration = Duration::from_millis(250);

/// Wall clock, ms since the Unix epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How far the log's clock may run from this node's monotonic time since the last batch:
/// 1 % of the elapsed time (NTP slews at most 0.05 %), so a wall clock stepped by an hour
/// moves pin time by at most 36 s per hour while it is absorbed.
const LOG_CLOCK_SLEW_PER_MILLE: u64 = 10;

/// The log's clock on this node: the time the last applied pin batch carried (the leader's
/// wall clock when it proposed it), advanced by this node's monotonic clock since. Pin
/// batches are stamped with it and the datapath mirror ages pins by it, so every node reads
/// the same time from the log and a step of one node's wall clock (an operator's `date -s`,
/// a VM resumed) changes pin time by at most the slew above; before the first batch it is
/// the wall clock.
#[derive(Debug, Default)]
pub struct LogClock {
    /// (log time in ns, monotonic ns at which this node knew it). Nanoseconds, so a
    /// batch every 50 ms neither loses the rounding to ms nor its share of the slew.
    last: std::sync::Mutex<Option<(u64, u64)>>,
}

impl LogClock {
    /// The log's time was `log_ns` at monotonic `mono_ns`. Taken only when it is ahead of
    /// what this clock already says then: a batch is applied some time after it was
    /// stamped (the commit), and the proposer's own record of its stamp is the closer one.
    fn observe(&self, log_ns: u64, mono_ns: u64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let behind =
            last.is_some_and(|(l, at)| l.saturating_add(mono_ns.saturating_sub(at)) >= log_ns);
        if !behind {
            *last = Some((log_ns, mono_ns));
        }
    }

    /// The log's time now in ns, given this node's wall (ms) and monotonic clocks: the wall
    /// clock, held within the slew of the last known log time plus the monotonic time since.
    fn now_ns(&self, wall_ms: u64, mono_ns: u64) -> u64 {
        let wall_ns = wall_ms.saturating_mul(1_000_000);
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last {
            None => wall_ns,
            Some((log_ns, at_ns)) => {
                let elapsed = mono_ns.saturating_sub(at_ns);
                let expected = log_ns.saturating_add(elapsed);
                let slack = elapsed / 1000 * LOG_CLOCK_SLEW_PER_MILLE;
                wall_ns.clamp(
                    expected.saturating_sub(slack),
                    expected.saturating_add(slack),
                )
            }
        }
    }

    /// The log's time now in ms (see [`LogClock::now_ns`]).
    pub fn now(&self, wall_ms: u64, mono_ns: u64) -> u64 {
        self.now_ns(wall_ms, mono_ns) / 1_000_000
    }

    /// The stamp of a batch proposed now, recorded as the log's time at `mono_ns`.
    fn stamp(&self, wall_ms: u64, mono_ns: u64) -> u64 {
        let ns = self.now_ns(wall_ms, mono_ns);
        self.observe(ns, mono_ns);
        ns / 1_000_000
    }

    /// [`LogClock::now`] on this node's clocks.
    pub fn read(&self) -> u64 {
        self.now(wall_ms(), monotonic_ns())
    }
}

/// The wall-clock time of monotonic `ns`, given both clocks now.
fn to_wall(ns: u64, wall_now: u64, mono_now: u64) -> u64 {
    wall_now.saturating_sub(mono_now.saturating_sub(ns) / 1_000_000)
}

/// What the persistence machinery counts, for the metrics endpoint.
#[derive(Debug)]
pub struct PersistMetrics {
    /// Batches this node committed.
    pub batches: AtomicU64,
    /// Pin writes in those batches.
    pub writes: AtomicU64,
    /// Batches whose write failed (their pins are asked for again by the workers).
    pub failed: AtomicU64,
    /// Pin writes applied to this node's mirror only (segment ownership without a quorum).
    pub local: AtomicU64,
    /// First packet on the owner → pin applied here, for pins created by the log.
    pub lag: Histogram,
}

impl Default for PersistMetrics {
    fn default() -> Self {
        PersistMetrics {
            batches: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            local: AtomicU64::new(0),
            // Fine between 10 and 300 ms, where a batch interval (default 50 ms) plus a
            // replicated write lands, so p50 and p99 can be told apart from the buckets.
            lag: Histogram::new([
                0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2,
                0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0,
            ]),
        }
    }
}

/// Mirrors the replicated pin table into the datapath's per-farm maps.
pub struct DatapathSink {
    shared: Arc<Shared>,
    metrics: Arc<PersistMetrics>,
    clock: Arc<LogClock>,
}

impl DatapathSink {
    pub fn new(shared: Arc<Shared>, metrics: Arc<PersistMetrics>) -> Self {
        DatapathSink {
            shared,
            metrics,
            clock: Arc::default(),
        }
    }

    /// The log's clock as this node's applied batches set it; the batcher stamps with it.
    pub fn clock(&self) -> Arc<LogClock> {
        Arc::clone(&self.clock)
    }

    fn put(&self, farm: &str, client: IpAddr, backend: &str, seen_ms: u64, wall_now: u64) {
        // The registry gives the id the forwarding table will use for this backend.
        let Some(h) = self.shared.counters.backend(farm, backend) else {
            return;
        };
        let ago_ns = wall_now.saturating_sub(seen_ms).saturating_mul(1_000_000);
        self.shared
            .pins
            .farm(farm)
            .set_seen_ago(client, h.id, ago_ns);
    }
}

impl DatapathSink {
    /// Writes a batch into the mirror only, without the log: a pair owning by the segment
    /// cannot commit (docs/design.md#pair-segment). Expiry stays the log's: these pins live
    /// until [`resync`](DatapathSink::resync) when the peer returns.
    pub fn apply_locally(&self, batch: &PinBatch) {
        for f in &batch.farms {
            for w in &f.writes {
                self.put(&f.farm, w.client, &w.backend, w.seen_ms, batch.now_ms);
            }
        }
    }

    /// Makes the mirror the replicated table again, dropping pins applied locally.
    pub fn resync(&self, pins: &cluster::Pins) {
        self.reset(&pins.lock());
    }
}

impl PinSink for DatapathSink {
    fn reset(&self, table: &PinTable) {
        for f in self.shared.pins.all() {
            f.clear();
        }
        let now = self.clock.read();
        for (farm, client, backend, seen_ms) in table.iter() {
            self.put(farm, client, backend, seen_ms, now);
        }
    }

    fn set(&self, farm: &str, client: IpAddr, backend: &str, seen_ms: u64, created: bool) {
        let now = self.clock.read();
        self.put(farm, client, backend, seen_ms, now);
        let lag_ms = now.saturating_sub(seen_ms);
        // Older pins are the log being replayed (a restart), not replication at work.
        if created && lag_ms <= LAG_REPLAY_MS {
            self.metrics.lag.observe(lag_ms as f64 / 1000.0);
        }
    }

    fn remove(&self, farm: &str, client: IpAddr) {
        self.shared.pins.farm(farm).remove(client);
    }

    fn clear(&self, farm: &str) {
        self.shared.pins.farm(farm).clear();
    }

    fn clock(&self, now_ms: u64) {
        self.clock
            .observe(now_ms.saturating_mul(1_000_000), monotonic_ns());
    }
}

/// Starts the batcher: every `persistence_batch` (a replicated setting) it empties the
/// workers' pin queues into one `Pin` log entry; when there is nothing to write but a pin
/// may have expired, the leader proposes an empty batch so expiry happens in the log.
///
/// While `local` is set (this node owns by the segment, without a quorum) batches go into
/// the datapath's mirror through `sink` instead of the log.
pub fn spawn_batcher(
    cluster: Arc<ClusterNode>,
    shared: Arc<Shared>,
    metrics: Arc<PersistMetrics>,
    local: Arc<AtomicBool>,
    sink: Arc<DatapathSink>,
) -> JoinHandle<()> {
    let span = info_span!("persistence-batcher");
    tokio::spawn(
        async move { batcher(cluster, shared, metrics, local, sink).await }.instrument(span),
    )
}

async fn batcher(
    cluster: Arc<ClusterNode>,
    shared: Arc<Shared>,
    metrics: Arc<PersistMetrics>,
    local: Arc<AtomicBool>,
    sink: Arc<DatapathSink>,
) {
    let state = cluster.state();
    let pins = cluster.pins();
    let raft = cluster.raft_metrics();
    let clock = sink.clock();
    let mut last_expiry = Instant::now();
    let mut warned_at: Option<Instant> = None;
    loop {
        let every = state.borrow().settings.persistence_batch;
        tokio::time::sleep(every.max(Duration::from_millis(5))).await;
        let mono_now = monotonic_ns();
        let now_ms = clock.stamp(wall_ms(), mono_now);
        let batch = collect(&shared, now_ms, mono_now);
        let batch = match batch {
            Some(farms) => PinBatch { now_ms, farms },
            None => {
                let leader = raft.borrow().state == cluster::ServerState::Leader;
                let due = {
                    let s = state.borrow().clone();
                    pins.lock().next_expiry_ms(&s).is_some_and(|t| t <= now_ms)
                };
                if !(leader && due && last_expiry.elapsed() >= EXPIRY_EVERY) {
                    continue;
                }
                last_expiry = Instant::now();
                PinBatch {
                    now_ms,
                    farms: Vec::new(),
                }
            }
        };
        let n: usize = batch.farms.iter().map(|f| f.writes.len()).sum();
        if local.load(Ordering::Relaxed) {
            if n > 0 {
                sink.apply_locally(&batch);
                metrics.local.fetch_add(n as u64, Ordering::Relaxed);
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    warn!(
                        writes = n,
                        "no quorum: persistence pins applied locally only"
                    );
                    warned_at = Some(Instant::now());
                }
            }
            continue;
        }
        // Sequential on purpose: while a write is in flight the workers' queues fill, and
        // the next batch carries all of it in one entry.
        match cluster.write(Command::Pin(batch)).await {
            Ok(_) => {
                metrics.batches.fetch_add(1, Ordering::Relaxed);
                metrics.writes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                metrics.failed.fetch_add(1, Ordering::Relaxed);
                // One line per few seconds: during an election every batch fails.
                if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    warn!(writes = n, error = %e, "a persistence batch was not committed; its pins are asked for again");
                    warned_at = Some(Instant::now());
                } else {
                    debug!(writes = n, error = %e, "persistence batch not committed");
                }
            }
        }
    }
}

/// Two requests for one client in one batch: a new pin wins over a refresh, and between two
/// of a kind the later sighting wins. (Queues drain one worker after the other, not in time
/// order: a client whose connections reached two workers across a backend-set change must
/// be pinned where its latest connection went.)
fn merge(a: PinEvent, b: PinEvent) -> PinEvent {
    let take_b = match (a.new, b.new) {
        (true, false) => false,
        (false, true) => true,
        _ => b.seen_ns >= a.seen_ns,
    };
    let mut m = if take_b { b } else { a };
    m.seen_ns = a.seen_ns.max(b.seen_ns);
    m
}

/// The workers' pending requests as writes by farm (`None` if there are none): one write
/// per client, a new pin winning over a refresh, the latest sighting kept.
fn collect(shared: &Shared, now_ms: u64, mono_now: u64) -> Option<Vec<FarmPinWrites>> {
    let mut events: HashMap<(u32, IpAddr), PinEvent> = HashMap::new();
    // What is left waits in the queues for the next batch.
    shared.pins.drain(PinBatch::MAX_WRITES, |e| {
        match events.entry((e.farm, e.client)) {
            Entry::Vacant(v) => {
                v.insert(e);
            }
            Entry::Occupied(mut o) => {
                let merged = merge(*o.get(), e);
                o.insert(merged);
            }
        }
    });
    if events.is_empty() {
        return None;
    }
    let table = shared.table.load();
    let mut by_farm: HashMap<String, Vec<PinWrite>> = HashMap::new();
    for e in events.into_values() {
        // A backend the current table no longer has: the request is moot.
        let Some((farm, backend)) = table.backend_names(e.backend) else {
            continue;
        };
        by_farm.entry(farm.to_string()).or_default().push(PinWrite {
            client: e.client,
            backend: backend.to_string(),
            seen_ms: to_wall(e.seen_ns, now_ms, mono_now),
            new: e.new,
        });
    }
    let mut farms: Vec<FarmPinWrites> = by_farm
        .into_iter()
        .map(|(farm, mut writes)| {
            writes.sort_by_key(|w| w.client);
            FarmPinWrites { farm, writes }
        })
        .collect();
    farms.sort_by(|a, b| a.farm.cmp(&b.farm));
    (!farms.is_empty()).then_some(farms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_latest_new_pin_wins_whatever_the_drain_order() {
        let ev = |backend, seen_ns, new| PinEvent {
            farm: 0,
            client: Ipv4Addr::new(198, 19, 0, 1).into(),
            backend,
            seen_ns,
            new,
        };
        let (early, late) = (ev(1, 10, true), ev(2, 20, true));
        assert_eq!(merge(early, late).backend, 2);
        assert_eq!(merge(late, early).backend, 2);
        let refresh = ev(1, 30, false);
        let m = merge(refresh, early);
        assert!(m.new && m.backend == 1 && m.seen_ns == 30);
        assert_eq!(merge(late, refresh).backend, 2);
    }

    const HOUR_MS: u64 = 3_600_000;
    const MS: u64 = 1_000_000;

    /// A leader whose wall clock jumps by `step_ms` after the first batch keeps stamping
    /// batches with the log's time: a pin seen at the first batch expires one TTL of
    /// monotonic time later (within the slew), not at once and not an hour late.
    fn stamps_after_a_step(step_ms: i64) -> Vec<(u64, u64)> {
        let clock = LogClock::default();
        let t0 = 1_700_000_000_000u64;
        let mono0 = 50 * MS;
        assert_eq!(
            clock.stamp(t0, mono0),
            t0,
            "before any batch, the wall clock"
        );
        // Batches every 50 ms for 10 minutes of monotonic time; the wall clock stepped.
        let mut out = Vec::new();
        let mut last = t0;
        for i in 1..=12_000u64 {
            let mono = mono0 + i * 50 * MS;
            let wall = (t0 + i * 50).saturating_add_signed(step_ms);
            let stamp = clock.stamp(wall, mono);
            // Applied 3 ms later, as the log commits it.
            clock.observe(stamp * MS, mono + 3 * MS);
            out.push((i * 50, stamp - t0));
            assert!(stamp >= last, "the log's clock went back: {stamp} < {last}");
            last = stamp;
        }
        out
    }

    #[test]
    fn a_wall_clock_step_of_an_hour_moves_pin_time_by_the_slew_only() {
        for step in [HOUR_MS as i64, -(HOUR_MS as i64)] {
            for (elapsed, log_elapsed) in stamps_after_a_step(step) {
                // 1 ms for the stamp's rounding down to ms.
                let bound = elapsed * LOG_CLOCK_SLEW_PER_MILLE / 1000 + 1;
                assert!(
                    log_elapsed.abs_diff(elapsed) <= bound,
                    "step {step} ms: after {elapsed} ms the log says {log_elapsed} ms"
                );
            }
        }
        // A pin with a 5-minute TTL seen at the first batch: after 5 minutes of real time
        // its batch time is within 3 s of the TTL, on both sides of a step of an hour.
        for step in [HOUR_MS as i64, -(HOUR_MS as i64)] {
            let at_5min = stamps_after_a_step(step)[5 * 60 * 20 - 1].1;
            assert!(at_5min.abs_diff(300_000) <= 3_001, "step {step}: {at_5min}");
        }
    }

    #[test]
    fn a_new_leader_continues_the_logs_clock_not_its_own() {
        let clock = LogClock::default();
        // The log's last batch said t; this node's wall clock is an hour ahead.
        let t = 1_700_000_000_000u64;
        clock.observe(t * MS, 10 * MS);
        let stamp = clock.stamp(t + HOUR_MS + 100, 110 * MS);
        assert_eq!(stamp, t + 101, "100 ms later, plus 1 % of them");
        // A wall clock within the slew is taken as it is.
        assert_eq!(clock.now(t + 1_005, 1_010 * MS), t + 1_005);
        // The log's own batch, applied after the stamp, does not pull the clock back.
        clock.observe(stamp * MS, 150 * MS);
        assert!(clock.now(t + HOUR_MS, 1_010 * MS) >= t + 1_000);
    }

    #[test]
    fn monotonic_times_convert_to_wall_clock() {
        let (wall, mono) = (1_800_000_000_000u64, 5_000_000_000_000u64);
        assert_eq!(to_wall(mono - 1_234_000_000, wall, mono), wall - 1234);
        // A time ahead of this clock is "now", never in the future.
        assert_eq!(to_wall(mono + 5, wall, mono), wall);
    }
}
