//! The results of `dsrlb-persistbench`: one row per offered rate, the sustained rate and its
//! lag against issue #5's goal, the memory per pin of every node, and the two ways they are
//! printed — a table for people and JSON for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use bench::json::Json;

/// Issue #5's goals.
pub const GOAL_RATE: f64 = 50_000.0;
pub const GOAL_P99: f64 = 0.2;
pub const GOAL_BYTES: f64 = 128.0;

/// One offered rate.
#[derive(Clone, Debug, Default)]
pub struct Step {
    pub target: u64,
    /// Frames the sender put on the wire, and at what rate it really managed.
    pub sent: u64,
    pub offered: f64,
    pub seconds: f64,
    pub sender_errors: u64,
    pub sender_first_error: Option<String>,
    /// The sender could not keep to the schedule (it ran out of time before `target` × s).
    pub sender_short: bool,
    /// Pins created on the slowest follower per second of sending.
    pub follower_rate: f64,
    /// Owner deltas.
    pub drops_new: u64,
    pub drops_refresh: u64,
    pub batch_failures: u64,
    pub ring_full: u64,
    /// The owner's other datapath drops by reason (background traffic lands here too, e.g.
    /// ARP not for the VIP), shown but not judged: `missing` catches any lost pin.
    pub other_drops: Vec<(String, u64)>,
    pub batches: u64,
    pub batch_writes: u64,
    /// New-pin requests the owner's workers queued: short of `sent` by what was lost
    /// before the datapath saw it (ring drops).
    pub queued_new: u64,
    /// Frames the owner's eth0 received while the step ran (all traffic), and dropped.
    pub arrived: u64,
    pub rx_dropped: u64,
    /// Frames the switch could not hand to the owner (its receive backlog was full).
    pub switch_dropped: u64,
    /// Pins sent but not on the slowest follower once the step settled.
    pub missing: u64,
    /// Sending end → every sent pin on every follower; `None`: not within the settle limit.
    pub settled_after: Option<Duration>,
    /// Lag over both followers, bucket bounds in seconds.
    pub lag_p50: Option<f64>,
    pub lag_p99: Option<f64>,
    pub lag_count: u64,
    /// The owner's CPU while sending, cores by thread name, busiest first.
    pub owner_threads: Vec<(String, f64)>,
    /// Each follower's CPU while sending, cores.
    pub follower_cores: Vec<(String, f64)>,
    pub note: Option<String>,
}

impl Step {
    /// No drop of any kind and every sent pin on the followers.
    pub fn clean(&self) -> bool {
        self.drops_new == 0
            && self.drops_refresh == 0
            && self.batch_failures == 0
            && self.ring_full == 0
            && self.sender_errors == 0
            && self.missing == 0
            && self.settled_after.is_some()
            && self.note.is_none()
    }

    pub fn mean_batch(&self) -> f64 {
        self.batch_writes as f64 / (self.batches as f64).max(1.0)
    }

    fn owner_cores(&self) -> f64 {
        self.owner_threads.iter().map(|(_, c)| c).sum()
    }
}

/// One node's memory.
#[derive(Clone, Debug, Default)]
pub struct NodeMemory {
    pub name: String,
    pub owner: bool,
    pub rss_before: u64,
    pub rss_after: u64,
    pub pins: u64,
    /// Size of the node's `raft.redb` (log and snapshot) with the pins in it.
    pub redb_bytes: u64,
}

impl NodeMemory {
    pub fn bytes_per_pin(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / (self.pins as f64).max(1.0)
    }
}

/// The memory phase: how the table was filled, and every node's RSS around it.
#[derive(Clone, Debug, Default)]
pub struct Memory {
    pub target: u64,
    pub fill_rate: u64,
    pub fill_seconds: f64,
    /// Pairs sent again from another source port because their pin had been lost.
    pub resent: u64,
    pub nodes: Vec<NodeMemory>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub header: Vec<String>,
    pub steps: Vec<Step>,
    pub memory: Option<Memory>,
    pub notes: Vec<String>,
    pub wall_s: f64,
}

fn ms(x: Option<f64>) -> String {
    match x {
        Some(s) if s.is_infinite() => "> 5 s".into(),
        Some(s) => format!("≤ {:.0} ms", s * 1e3),
        None => "-".into(),
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

impl Report {
    /// The highest clean step.
    pub fn sustained(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.clean())
            .max_by(|a, b| a.offered.total_cmp(&b.offered))
    }

    /// The highest clean step that meets the goal (the rate, within 2 % for pacing, and
    /// the p99 lag).
    pub fn goal_step(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| {
                s.clean()
                    && s.offered >= GOAL_RATE * 0.98
                    && s.lag_p99.is_some_and(|p| p <= GOAL_P99)
            })
            .max_by(|a, b| a.offered.total_cmp(&b.offered))
    }

    pub fn table(&self) -> String {
        let mut o = String::new();
        for h in &self.header {
            let _ = writeln!(o, "{h}");
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:>8} {:>9} {:>8} {:>10} {:>7} {:>7} {:>6} {:>6} {:>8} {:>9} {:>10} {:>10} {:>7} {:>6}",
            "target/s",
            "offered/s",
            "queued",
            "follower/s",
            "drop_nw",
            "drop_rf",
            "b_fail",
            "ring",
            "missing",
            "settled",
            "lag p50",
            "lag p99",
            "batch",
            "owner"
        );
        for s in &self.steps {
            let _ = writeln!(
                o,
                "{:>8} {:>9.0} {:>8} {:>10.0} {:>7} {:>7} {:>6} {:>6} {:>8} {:>9} {:>10} {:>10} {:>7.0} {:>6.2}{}",
                s.target,
                s.offered,
                s.queued_new,
                s.follower_rate,
                s.drops_new,
                s.drops_refresh,
                s.batch_failures,
                s.ring_full,
                s.missing,
                s.settled_after
                    .map_or("no".into(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
                ms(s.lag_p50),
                ms(s.lag_p99),
                s.mean_batch(),
                s.owner_cores(),
                if s.clean() { "" } else { "  *" }
            );
        }
        let _ = writeln!(
            o,
            "  queued = new-pin requests the owner's workers queued; follower/s = pins created per second of sending on the slower follower; drop_nw/rf = \
             owner's dsrlb_persistence_request_drops_total new/refresh; b_fail = batch \
             failures; ring = owner's ring_full drops; missing = sent pins absent on a follower \
             after settling; settled = end of sending to every pin on both followers; lag = \
             followers' dsrlb_persistence_lag_seconds (bucket bound); batch = mean pins per \
             batch; owner = owner's CPU cores while sending; * = not clean"
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "CPU while sending (cores): owner by thread, followers in all:"
        );
        for s in &self.steps {
            let threads: Vec<String> = s
                .owner_threads
                .iter()
                .filter(|(_, c)| *c >= 0.01)
                .take(6)
                .map(|(n, c)| format!("{n} {c:.2}"))
                .collect();
            let _ = writeln!(
                o,
                "  {:>7}/s: {}; followers {}; {} batches of {:.0} pins; owner eth0 rx {} \
                 (dropped {}, {} more at the switch){}{}{}",
                s.target,
                threads.join(", "),
                s.follower_cores
                    .iter()
                    .map(|(n, c)| format!("{n} {c:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.batches,
                s.mean_batch(),
                s.arrived,
                s.rx_dropped,
                s.switch_dropped,
                if s.other_drops.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; other datapath drops {}",
                        s.other_drops
                            .iter()
                            .map(|(r, n)| format!("{r} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                s.sender_first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(
                        " — {} sender errors, first: {e}",
                        s.sender_errors
                    )),
                s.note.as_ref().map_or(String::new(), |n| format!(" — {n}"))
            );
        }
        let _ = writeln!(o);
        match self.sustained() {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "sustained: {:.0} new pins/s offered ({} target) with no drop and every pin \
                     on both followers; lag p50 {}, p99 {}",
                    s.offered,
                    s.target,
                    ms(s.lag_p50),
                    ms(s.lag_p99),
                );
            }
            None => {
                let _ = writeln!(o, "sustained: no step was clean");
            }
        }
        let _ = writeln!(
            o,
            "goal ≥ {GOAL_RATE:.0}/s with p99 lag ≤ {:.0} ms: {}",
            GOAL_P99 * 1e3,
            match self.goal_step() {
                Some(s) => format!("met ({:.0}/s clean, p99 {})", s.offered, ms(s.lag_p99)),
                None => "NOT met (no clean step at that rate within that lag)".into(),
            }
        );
        if let Some(m) = &self.memory {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "memory: {} pins wanted, filled at {}/s in {:.1} s{}",
                m.target,
                m.fill_rate,
                m.fill_seconds,
                if m.resent > 0 {
                    format!(" ({} lost pins sent again)", m.resent)
                } else {
                    String::new()
                }
            );
            for n in &m.nodes {
                let _ = writeln!(
                    o,
                    "  {:<3}{:<8} RSS {:>10} -> {:>10} with {:>8} pins: {:>6.1} B/pin \
                     (raft.redb {})",
                    n.name,
                    if n.owner { " (owner)" } else { "" },
                    mib(n.rss_before),
                    mib(n.rss_after),
                    n.pins,
                    n.bytes_per_pin(),
                    mib(n.redb_bytes)
                );
            }
            let worst = m
                .nodes
                .iter()
                .map(NodeMemory::bytes_per_pin)
                .fold(f64::NAN, f64::max);
            let _ = writeln!(
                o,
                "  worst {worst:.1} B/pin  [goal ≤ {GOAL_BYTES:.0} B: {}]",
                if worst <= GOAL_BYTES {
                    "met"
                } else {
                    "NOT met"
                }
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(o);
            for n in &self.notes {
                let _ = writeln!(o, "note: {n}");
            }
        }
        let _ = writeln!(o, "\nwall time {:.1} s", self.wall_s);
        o
    }

    pub fn json(&self) -> Json {
        let opt = |x: Option<f64>| x.map_or(Json::Num(f64::NAN), Json::Num);
        let steps = self
            .steps
            .iter()
            .map(|s| {
                Json::obj([
                    ("target_per_s", Json::Num(s.target as f64)),
                    ("offered_per_s", Json::Num(s.offered)),
                    ("sent", Json::Num(s.sent as f64)),
                    ("seconds", Json::Num(s.seconds)),
                    ("sender_errors", Json::Num(s.sender_errors as f64)),
                    ("sender_short", Json::Bool(s.sender_short)),
                    ("follower_created_per_s", Json::Num(s.follower_rate)),
                    ("request_drops_new", Json::Num(s.drops_new as f64)),
                    ("request_drops_refresh", Json::Num(s.drops_refresh as f64)),
                    ("batch_failures", Json::Num(s.batch_failures as f64)),
                    ("ring_full", Json::Num(s.ring_full as f64)),
                    (
                        "other_drops",
                        Json::Obj(
                            s.other_drops
                                .iter()
                                .map(|(r, n)| (r.clone(), Json::Num(*n as f64)))
                                .collect(),
                        ),
                    ),
                    ("batches", Json::Num(s.batches as f64)),
                    ("batch_writes", Json::Num(s.batch_writes as f64)),
                    ("queued_new", Json::Num(s.queued_new as f64)),
                    ("owner_rx", Json::Num(s.arrived as f64)),
                    ("owner_rx_dropped", Json::Num(s.rx_dropped as f64)),
                    ("switch_dropped", Json::Num(s.switch_dropped as f64)),
                    ("missing", Json::Num(s.missing as f64)),
                    (
                        "settled_ms",
                        opt(s.settled_after.map(|d| d.as_secs_f64() * 1e3)),
                    ),
                    ("lag_p50_le_s", opt(s.lag_p50)),
                    ("lag_p99_le_s", opt(s.lag_p99)),
                    ("lag_count", Json::Num(s.lag_count as f64)),
                    (
                        "owner_threads",
                        Json::Obj(
                            s.owner_threads
                                .iter()
                                .map(|(n, c)| (n.clone(), Json::Num(*c)))
                                .collect(),
                        ),
                    ),
                    (
                        "follower_cores",
                        Json::Obj(
                            s.follower_cores
                                .iter()
                                .map(|(n, c)| (n.clone(), Json::Num(*c)))
                                .collect(),
                        ),
                    ),
                    ("clean", Json::Bool(s.clean())),
                ])
            })
            .collect();
        let memory = self.memory.as_ref().map_or(Json::Num(f64::NAN), |m| {
            Json::obj([
                ("target", Json::Num(m.target as f64)),
                ("fill_rate", Json::Num(m.fill_rate as f64)),
                ("fill_seconds", Json::Num(m.fill_seconds)),
                ("resent", Json::Num(m.resent as f64)),
                (
                    "nodes",
                    Json::Arr(
                        m.nodes
                            .iter()
                            .map(|n| {
                                Json::obj([
                                    ("name", Json::Str(n.name.clone())),
                                    ("owner", Json::Bool(n.owner)),
                                    ("rss_before", Json::Num(n.rss_before as f64)),
                                    ("rss_after", Json::Num(n.rss_after as f64)),
                                    ("pins", Json::Num(n.pins as f64)),
                                    ("bytes_per_pin", Json::Num(n.bytes_per_pin())),
                                    ("redb_bytes", Json::Num(n.redb_bytes as f64)),
                                ])
                            })
                            .collect(),
                    ),
                ),
            ])
        });
        let sustained = self.sustained().map_or(Json::Num(f64::NAN), |s| {
            Json::obj([
                ("offered_per_s", Json::Num(s.offered)),
                ("lag_p50_le_s", opt(s.lag_p50)),
                ("lag_p99_le_s", opt(s.lag_p99)),
            ])
        });
        Json::obj([
            ("steps", Json::Arr(steps)),
            ("sustained", sustained),
            ("goal_met", Json::Bool(self.goal_step().is_some())),
            ("memory", memory),
            (
                "notes",
                Json::Arr(self.notes.iter().cloned().map(Json::Str).collect()),
            ),
            ("wall_s", Json::Num(self.wall_s)),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(target: u64, missing: u64) -> Step {
        Step {
            target,
            offered: target as f64,
            missing,
            settled_after: Some(Duration::from_millis(80)),
            lag_p50: Some(0.05),
            lag_p99: Some(0.1),
            ..Step::default()
        }
    }

    #[test]
    fn sustained_is_the_highest_clean_step() {
        let r = Report {
            steps: vec![step(10_000, 0), step(25_000, 0), step(50_000, 3)],
            ..Report::default()
        };
        assert_eq!(r.sustained().map(|s| s.target), Some(25_000));
        let t = r.table();
        assert!(t.contains("sustained: 25000 new pins/s"), "{t}");
        assert!(t.contains("NOT met"), "{t}");
        assert!(r.json().to_string().contains("\"clean\":false"));
        let mut fast = step(60_000, 0);
        fast.lag_p99 = Some(0.15);
        let mut slow_lag = step(90_000, 0);
        slow_lag.lag_p99 = Some(0.25);
        let r = Report {
            steps: vec![fast, slow_lag],
            ..Report::default()
        };
        assert_eq!(r.sustained().map(|s| s.target), Some(90_000));
        assert_eq!(r.goal_step().map(|s| s.target), Some(60_000));
        assert!(r.table().contains("met (60000/s clean"), "{}", r.table());
    }
}
