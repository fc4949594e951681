//! The results of `dsrlb-failbench`: one sample per kill or handover, their percentiles
//! against the goal, the failure counts, and the two ways they are printed — a
//! table for people and JSON for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use bench::json::Json;

use crate::arp::ArpOutage;

/// Issue #12's goal for kill -9 of the owner, on a LAN (faster than keepalived VRRP at
/// advert_int 0.1 s, which the issue measured at about 306 ms).
pub const GOAL_P50: Duration = Duration::from_millis(150);
pub const GOAL_MAX: Duration = Duration::from_millis(250);
/// The liveness bound: no outage may reach it.
pub const LIVENESS: Duration = Duration::from_secs(2);

/// How the owner was taken away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: the owner releases the VIP and hands leadership over before exiting.
    Handover,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Kill => "kill -9",
            Kind::Handover => "SIGTERM handover",
        }
    }
}

/// One kill or handover.
#[derive(Clone, Debug)]
pub struct Sample {
    pub old_owner: String,
    /// The node whose MAC the client used for the recovering request.
    pub new_owner: Option<String>,
    /// Signal to the first answer through another node; `None`: none within the limit.
    pub outage: Option<Duration>,
    /// Signal to the old process being reaped, and how it ended.
    pub exited_after: Option<Duration>,
    pub exit: String,
    pub attempts: usize,
    /// Failed attempts by reason (during the outage they are the outage itself).
    pub failures: BTreeMap<&'static str, usize>,
    /// Answered through the old owner's MAC after the signal (its last instant).
    pub via_old_owner: usize,
    /// The backend that answered the recovering request.
    pub backend: Option<String>,
    /// Restart of the old node to a settled cluster.
    pub settle: Duration,
    /// The same takeover at the ARP level (`arp.rs`), as measured for keepalived.
    pub arp: ArpOutage,
}

/// One crash of the keepalived anchor's VRRP master.
#[derive(Clone, Debug)]
pub struct KaSample {
    pub old_master: String,
    /// The node whose MAC first answered a probe after the crash.
    pub new_master: Option<String>,
    pub arp: ArpOutage,
    /// Signal to the old master's link being down (kill -9 and `ip link set down`).
    pub down_after: Duration,
    /// The killed master still held the VIP (keepalived could not remove it).
    pub stale_vip: bool,
    /// Restart of the old node's keepalived to a settled group.
    pub settle: Duration,
}

/// The keepalived anchor of a run (`--keepalived N`).
#[derive(Clone, Debug, Default)]
pub struct KaRun {
    /// `keepalived --version`'s first line.
    pub version: String,
    pub samples: Vec<KaSample>,
}

/// Requests made while the cluster was settled (before each kill and after each restart).
#[derive(Clone, Debug, Default)]
pub struct Steady {
    pub requests: usize,
    pub failed: usize,
    pub over_liveness: usize,
    /// Slower than a retransmission's worth (the request lost an ARP request or a SYN).
    pub slow: usize,
    pub max: Duration,
    pub first_error: Option<String>,
}

/// What the node logs of the whole run say about VIP ownership.
#[derive(Clone, Debug, Default)]
pub struct LogCounts {
    pub files: usize,
    pub unreadable: usize,
    /// "VIP owner: announcing and forwarding" (every acquisition, the first one included).
    pub acquired: usize,
    /// "VIP ownership released" (a SIGTERM'd owner logs one; a killed one cannot).
    pub released: usize,
    /// "control loop stalled" (the node distrusts its Raft metrics for one lease).
    pub stalls: usize,
}

/// The timing a run used, read back from the lab's node config.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election: (Duration, Duration),
    pub lease: Duration,
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// The `[cluster]` lines the flags added to every node's config (empty: defaults).
    pub cluster_lines: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub header: Vec<String>,
    pub timing: Timing,
    pub kills: Vec<Sample>,
    pub handovers: Vec<Sample>,
    pub steady: Steady,
    pub logs: LogCounts,
    pub limit: Duration,
    pub wall_s: f64,
    /// `None` without `--keepalived`.
    pub keepalived: Option<KaRun>,
    /// `--shape pair-witness` only: what the witness costs its host, read after the samples.
    pub witness: Option<WitnessFootprint>,
}

/// The witness process's memory and its data dir's size on disk.
#[derive(Clone, Copy, Debug, Default)]
pub struct WitnessFootprint {
    pub rss_kib: u64,
    /// Peak resident set (`VmHWM`) over the whole run.
    pub peak_rss_kib: u64,
    /// Bytes allocated on disk under the data dir (`du`, not the files' lengths).
    pub disk_bytes: u64,
}

/// p50, p90 and max of a set of outages; a missing outage counts as infinite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    pub p50: f64,
    pub p90: f64,
    pub max: f64,
}

/// Nearest-rank quantile of sorted milliseconds.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn stats(samples: &[Sample]) -> Stats {
    stats_of(samples.iter().map(|s| s.outage))
}

/// [`stats`] of the ARP-level outages.
pub fn arp_stats<'a>(arps: impl IntoIterator<Item = &'a ArpOutage>) -> Stats {
    stats_of(arps.into_iter().map(|a| a.outage))
}

fn stats_of(outages: impl IntoIterator<Item = Option<Duration>>) -> Stats {
    let mut ms: Vec<f64> = outages
        .into_iter()
        .map(|o| o.map_or(f64::INFINITY, ms))
        .collect();
    ms.sort_by(f64::total_cmp);
    Stats {
        p50: quantile(&ms, 0.5),
        p90: quantile(&ms, 0.9),
        max: quantile(&ms, 1.0),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn show_ms(x: f64, limit: Duration) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else if x.is_nan() {
        "-".into()
    } else {
        format!("> {:.0}", ms(limit))
    }
}

impl Report {
    /// Whether the kill -9 outages meet the goal (p50 and max).
    pub fn goal_met(&self) -> bool {
        let s = stats(&self.kills);
        s.p50 <= ms(GOAL_P50) && s.max <= ms(GOAL_MAX)
    }

    fn all(&self) -> impl Iterator<Item = &Sample> {
        self.kills.iter().chain(&self.handovers)
    }

    /// Failed attempts of every window, by reason.
    pub fn failures(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for s in self.all() {
            for (k, v) in &s.failures {
                *out.entry(*k).or_insert(0) += v;
            }
        }
        out
    }

    /// Outages of at least the liveness bound (or none at all within the limit).
    pub fn over_liveness(&self) -> usize {
        self.all()
            .filter(|s| s.outage.is_none_or(|o| o >= LIVENESS))
            .count()
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        for h in &self.header {
            line(&mut t, h.clone());
        }
        let tm = &self.timing;
        line(
            &mut t,
            format!(
                "timing (read back from the lab's node config): heartbeat {} ms, election timeout \
             {}..{} ms, lease {} ms, garp_count {} x garp_interval {} ms",
                tm.heartbeat.as_millis(),
                tm.election.0.as_millis(),
                tm.election.1.as_millis(),
                tm.lease.as_millis(),
                tm.garp_count,
                tm.garp_interval.as_millis()
            ),
        );
        if tm.cluster_lines.is_empty() {
            line(
                &mut t,
                "[cluster] timing keys: none set (the defaults)".to_owned(),
            );
        } else {
            line(
                &mut t,
                format!("[cluster] timing keys: {}", tm.cluster_lines.join("; ")),
            );
        }
        for (kind, samples) in [(Kind::Kill, &self.kills), (Kind::Handover, &self.handovers)] {
            if samples.is_empty() {
                continue;
            }
            line(
                &mut t,
                format!(
                    "\n{} of the VIP owner, {} times:",
                    kind.as_str(),
                    samples.len()
                ),
            );
            line(
                &mut t,
                format!(
                    "  {:>3} {:>4} {:>4} {:>11} {:>8} {:>9} {:>7} {:>8} {:>10} {:>10}  {:<8} exit",
                    "#",
                    "old",
                    "new",
                    "outage ms",
                    "arp ms",
                    "attempts",
                    "failed",
                    "via old",
                    "exited ms",
                    "settle ms",
                    "backend"
                ),
            );
            for (i, s) in samples.iter().enumerate() {
                let failed: usize = s.failures.values().sum();
                line(
                    &mut t,
                    format!(
                        "  {:>3} {:>4} {:>4} {:>11} {:>8} {:>9} {:>7} {:>8} {:>10} {:>10.0}  {:<8} {}",
                        i + 1,
                        s.old_owner,
                        s.new_owner.as_deref().unwrap_or("-"),
                        show_ms(s.outage.map_or(f64::INFINITY, ms), self.limit),
                        show_ms(s.arp.outage.map_or(f64::INFINITY, ms), self.limit),
                        s.attempts,
                        failed,
                        s.via_old_owner,
                        s.exited_after
                            .map_or_else(|| "-".into(), |d| format!("{:.1}", ms(d))),
                        ms(s.settle),
                        s.backend.as_deref().unwrap_or("-"),
                        s.exit,
                    ),
                );
            }
            let st = stats(samples);
            line(
                &mut t,
                format!(
                    "  outage: p50 {} ms, p90 {} ms, max {} ms",
                    show_ms(st.p50, self.limit),
                    show_ms(st.p90, self.limit),
                    show_ms(st.max, self.limit)
                ),
            );
            let arps: Vec<&ArpOutage> = samples.iter().map(|s| &s.arp).collect();
            self.arp_summary(&mut t, &arps);
        }
        if let Some(ka) = &self.keepalived {
            self.keepalived_table(&mut t, ka);
        }
        if let Some(w) = &self.witness {
            line(
                &mut t,
                format!(
                    "\nwitness after the samples: RSS {:.1} MiB (peak {:.1} MiB), data dir {:.1} MiB on disk",
                    w.rss_kib as f64 / 1024.0,
                    w.peak_rss_kib as f64 / 1024.0,
                    w.disk_bytes as f64 / (1024.0 * 1024.0)
                ),
            );
        }
        let st = stats(&self.kills);
        if !self.kills.is_empty() {
            line(
                &mut t,
                format!(
                    "\ngoal (kill -9): p50 <= {} ms and max <= {} ms: {} (p50 {} ms, max {} ms)",
                    GOAL_P50.as_millis(),
                    GOAL_MAX.as_millis(),
                    if self.goal_met() { "MET" } else { "NOT MET" },
                    show_ms(st.p50, self.limit),
                    show_ms(st.max, self.limit)
                ),
            );
        }
        if let Some(r) = self.ratio() {
            line(
                &mut t,
                format!(
                    "ARP-level outage, dsrlb / keepalived: p50 {} / {} ms (ratio {:.2}), max {} / {} \
                     ms (ratio {:.2}); dsrlb faster at p50 and max: {}",
                    show_ms(r.dsrlb.p50, self.limit),
                    show_ms(r.keepalived.p50, self.limit),
                    r.p50(),
                    show_ms(r.dsrlb.max, self.limit),
                    show_ms(r.keepalived.max, self.limit),
                    r.max(),
                    if r.faster() { "yes" } else { "no" }
                ),
            );
        }
        let fails = self.failures();
        let total: usize = fails.values().sum();
        line(
            &mut t,
            format!(
                "failed requests during outages: {total} {fails:?} (each is a probe that hit the \
             outage); answered via the old owner after the signal: {}",
                self.all().map(|s| s.via_old_owner).sum::<usize>()
            ),
        );
        let sd = &self.steady;
        line(
            &mut t,
            format!(
                "failed requests while settled: {} of {}{}; {} slower than 200 ms (a lost ARP \
                 request or SYN waits 1 s for its retransmission); slowest {:.1} ms",
                sd.failed,
                sd.requests,
                sd.first_error
                    .as_ref()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default(),
                sd.slow,
                ms(sd.max)
            ),
        );
        let lg = &self.logs;
        let expected = 1 + self.kills.len() + self.handovers.len();
        line(
            &mut t,
            format!(
                "node logs ({} files{}): {} VIP acquisitions (expected {expected}: the first and \
                 one per sample), {} releases (expected {}: one per SIGTERM), {} 'control loop \
                 stalled' warnings (each withholds ownership for one lease)",
                lg.files,
                if lg.unreadable > 0 {
                    format!(", {} unreadable", lg.unreadable)
                } else {
                    String::new()
                },
                lg.acquired,
                lg.released,
                self.handovers.len(),
                lg.stalls
            ),
        );
        line(
            &mut t,
            format!(
                "over {} s: {} outage(s), {} settled request(s)",
                LIVENESS.as_secs(),
                self.over_liveness(),
                sd.over_liveness
            ),
        );
        line(&mut t, format!("wall time: {:.1} s", self.wall_s));
        t
    }

    pub fn json(&self) -> String {
        let sample = |s: &Sample| {
            Json::obj([
                ("old_owner", Json::Str(s.old_owner.clone())),
                (
                    "new_owner",
                    s.new_owner.clone().map_or(Json::Num(f64::NAN), Json::Str),
                ),
                ("outage_ms", Json::Num(s.outage.map_or(f64::NAN, ms))),
                ("exited_ms", Json::Num(s.exited_after.map_or(f64::NAN, ms))),
                ("attempts", Json::Num(s.attempts as f64)),
                ("failures", counts(&s.failures)),
                ("via_old_owner", Json::Num(s.via_old_owner as f64)),
                (
                    "backend",
                    s.backend.clone().map_or(Json::Num(f64::NAN), Json::Str),
                ),
                ("settle_ms", Json::Num(ms(s.settle))),
                ("arp", arp_json(&s.arp)),
            ])
        };
        let set = |samples: &[Sample]| {
            let st = stats(samples);
            Json::obj([
                ("count", Json::Num(samples.len() as f64)),
                ("p50_ms", Json::Num(st.p50)),
                ("p90_ms", Json::Num(st.p90)),
                ("max_ms", Json::Num(st.max)),
                ("arp", stats_json(arp_stats(samples.iter().map(|s| &s.arp)))),
                ("samples", Json::Arr(samples.iter().map(sample).collect())),
            ])
        };
        let keepalived = self.keepalived.as_ref().map_or(Json::Num(f64::NAN), |ka| {
            let sample = |s: &KaSample| {
                Json::obj([
                    ("old_master", Json::Str(s.old_master.clone())),
                    (
                        "new_master",
                        s.new_master.clone().map_or(Json::Num(f64::NAN), Json::Str),
                    ),
                    ("down_ms", Json::Num(ms(s.down_after))),
                    ("stale_vip", Json::Bool(s.stale_vip)),
                    ("settle_ms", Json::Num(ms(s.settle))),
                    ("arp", arp_json(&s.arp)),
                ])
            };
            Json::obj([
                ("version", Json::Str(ka.version.clone())),
                ("count", Json::Num(ka.samples.len() as f64)),
                (
                    "arp",
                    stats_json(arp_stats(ka.samples.iter().map(|s| &s.arp))),
                ),
                (
                    "samples",
                    Json::Arr(ka.samples.iter().map(sample).collect()),
                ),
            ])
        });
        let ratio = self.ratio().map_or(Json::Num(f64::NAN), |r| {
            Json::obj([
                ("dsrlb_p50_ms", Json::Num(r.dsrlb.p50)),
                ("keepalived_p50_ms", Json::Num(r.keepalived.p50)),
                ("p50_ratio", Json::Num(r.p50())),
                ("dsrlb_max_ms", Json::Num(r.dsrlb.max)),
                ("keepalived_max_ms", Json::Num(r.keepalived.max)),
                ("max_ratio", Json::Num(r.max())),
                ("dsrlb_faster", Json::Bool(r.faster())),
            ])
        });
        let tm = &self.timing;
        let sd = &self.steady;
        Json::obj([
            (
                "header",
                Json::Arr(self.header.iter().cloned().map(Json::Str).collect()),
            ),
            (
                "timing",
                Json::obj([
                    ("heartbeat_ms", Json::Num(ms(tm.heartbeat))),
                    ("election_timeout_min_ms", Json::Num(ms(tm.election.0))),
                    ("election_timeout_max_ms", Json::Num(ms(tm.election.1))),
                    ("lease_ms", Json::Num(ms(tm.lease))),
                    ("garp_count", Json::Num(f64::from(tm.garp_count))),
                    ("garp_interval_ms", Json::Num(ms(tm.garp_interval))),
                ]),
            ),
            ("kill", set(&self.kills)),
            ("handover", set(&self.handovers)),
            (
                "goal",
                Json::obj([
                    ("p50_ms", Json::Num(ms(GOAL_P50))),
                    ("max_ms", Json::Num(ms(GOAL_MAX))),
                    ("met", Json::Bool(self.goal_met())),
                ]),
            ),
            ("keepalived", keepalived),
            (
                "witness",
                self.witness.map_or(Json::Num(f64::NAN), |w| {
                    Json::obj([
                        ("rss_kib", Json::Num(w.rss_kib as f64)),
                        ("peak_rss_kib", Json::Num(w.peak_rss_kib as f64)),
                        ("disk_bytes", Json::Num(w.disk_bytes as f64)),
                    ])
                }),
            ),
            ("arp_dsrlb_vs_keepalived", ratio),
            ("outage_failures", counts(&self.failures())),
            ("outages_over_2s", Json::Num(self.over_liveness() as f64)),
            (
                "settled",
                Json::obj([
                    ("requests", Json::Num(sd.requests as f64)),
                    ("failed", Json::Num(sd.failed as f64)),
                    ("over_2s", Json::Num(sd.over_liveness as f64)),
                    ("slow_over_200ms", Json::Num(sd.slow as f64)),
                    ("max_ms", Json::Num(ms(sd.max))),
                ]),
            ),
            (
                "node_logs",
                Json::obj([
                    ("vip_acquired", Json::Num(self.logs.acquired as f64)),
                    ("vip_released", Json::Num(self.logs.released as f64)),
                    ("control_loop_stalls", Json::Num(self.logs.stalls as f64)),
                ]),
            ),
            ("wall_s", Json::Num(self.wall_s)),
        ])
        .to_string()
    }
}

/// dsrlb's kill -9 and keepalived's crash, ARP-level, from the same run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    pub dsrlb: Stats,
    pub keepalived: Stats,
}

impl Ratio {
    /// dsrlb / keepalived at p50 (below 1: dsrlb is faster); NaN without a finite baseline.
    pub fn p50(&self) -> f64 {
        ratio(self.dsrlb.p50, self.keepalived.p50)
    }
    pub fn max(&self) -> f64 {
        ratio(self.dsrlb.max, self.keepalived.max)
    }
    /// Faster at p50 and at max.
    pub fn faster(&self) -> bool {
        self.p50() < 1.0 && self.max() < 1.0
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

impl Report {
    /// The ARP-level comparison, when the run measured both kill -9 and keepalived.
    pub fn ratio(&self) -> Option<Ratio> {
        let ka = self.keepalived.as_ref()?;
        if self.kills.is_empty() || ka.samples.is_empty() {
            return None;
        }
        Some(Ratio {
            dsrlb: arp_stats(self.kills.iter().map(|s| &s.arp)),
            keepalived: arp_stats(ka.samples.iter().map(|s| &s.arp)),
        })
    }

    /// The ARP-level line under a table: percentiles, and what would make them meaningless
    /// (an old owner not seen answering before the signal, two owners at once).
    fn arp_summary(&self, t: &mut String, arps: &[&ArpOutage]) {
        let st = arp_stats(arps.iter().copied());
        line(
            t,
            format!(
                "  ARP-level outage: p50 {} ms, p90 {} ms, max {} ms (old owner seen answering \
                 before the signal: {} of {}; probe rounds with two owners: {})",
                show_ms(st.p50, self.limit),
                show_ms(st.p90, self.limit),
                show_ms(st.max, self.limit),
                arps.iter().filter(|a| a.old_answered).count(),
                arps.len(),
                arps.iter().map(|a| a.dual).sum::<usize>()
            ),
        );
    }

    fn keepalived_table(&self, t: &mut String, ka: &KaRun) {
        line(
            t,
            format!(
                "\nkeepalived VRRP ({}), crash of the master (kill -9 + link down), {} times:",
                ka.version,
                ka.samples.len()
            ),
        );
        line(
            t,
            format!(
                "  {:>3} {:>4} {:>4} {:>8} {:>8} {:>9} {:>10}",
                "#", "old", "new", "arp ms", "down ms", "stale VIP", "settle ms"
            ),
        );
        for (i, s) in ka.samples.iter().enumerate() {
            line(
                t,
                format!(
                    "  {:>3} {:>4} {:>4} {:>8} {:>8.1} {:>9} {:>10.0}",
                    i + 1,
                    s.old_master,
                    s.new_master.as_deref().unwrap_or("-"),
                    show_ms(s.arp.outage.map_or(f64::INFINITY, ms), self.limit),
                    ms(s.down_after),
                    if s.stale_vip { "yes" } else { "no" },
                    ms(s.settle),
                ),
            );
        }
        let arps: Vec<&ArpOutage> = ka.samples.iter().map(|s| &s.arp).collect();
        self.arp_summary(t, &arps);
    }
}

/// Appends one line; writing into a `String` cannot fail, so no `Result` to drop.
fn line(t: &mut String, s: String) {
    t.push_str(&s);
    t.push('\n');
}

fn stats_json(st: Stats) -> Json {
    Json::obj([
        ("p50_ms", Json::Num(st.p50)),
        ("p90_ms", Json::Num(st.p90)),
        ("max_ms", Json::Num(st.max)),
    ])
}

fn arp_json(a: &ArpOutage) -> Json {
    Json::obj([
        ("outage_ms", Json::Num(a.outage.map_or(f64::NAN, ms))),
        (
            "new_mac",
            a.new_mac
                .map_or(Json::Num(f64::NAN), |m| Json::Str(m.to_string())),
        ),
        ("old_answered", Json::Bool(a.old_answered)),
        ("dual_rounds", Json::Num(a.dual as f64)),
        ("probes", Json::Num(a.probes as f64)),
    ])
}

fn counts(m: &BTreeMap<&'static str, usize>) -> Json {
    Json::Obj(
        m.iter()
            .map(|(k, v)| ((*k).to_owned(), Json::Num(*v as f64)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outage_ms: Option<u64>) -> Sample {
        Sample {
            old_owner: "n1".into(),
            new_owner: Some("n2".into()),
            outage: outage_ms.map(Duration::from_millis),
            exited_after: None,
            exit: String::new(),
            attempts: 3,
            failures: BTreeMap::from([("connect_timeout", 2)]),
            via_old_owner: 0,
            backend: Some("b1".into()),
            settle: Duration::from_millis(900),
            arp: ArpOutage {
                outage: outage_ms.map(|m| Duration::from_millis(m / 2)),
                ..ArpOutage::default()
            },
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_a_missing_outage_is_infinite() {
        let s: Vec<Sample> = (1..=10).map(|i| sample(Some(i * 10))).collect();
        assert_eq!(
            stats(&s),
            Stats {
                p50: 50.0,
                p90: 90.0,
                max: 100.0
            }
        );
        let mut r = Report {
            kills: s,
            ..Report::default()
        };
        assert!(r.goal_met());
        r.kills.push(sample(None));
        assert!(stats(&r.kills).max.is_infinite());
        assert!(!r.goal_met());
        assert_eq!(r.over_liveness(), 1);
        assert_eq!(r.failures().get("connect_timeout"), Some(&22));
        assert!(r.json().contains("\"max_ms\":null"));
        assert!(r.json().contains("\"keepalived\":null"));
    }

    #[test]
    fn the_keepalived_ratio_is_dsrlb_over_keepalived_arp_outage() {
        let arp = |m: Option<u64>| ArpOutage {
            outage: m.map(Duration::from_millis),
            ..ArpOutage::default()
        };
        let ka = |m| KaSample {
            old_master: "n1".into(),
            new_master: Some("n2".into()),
            arp: arp(m),
            down_after: Duration::from_millis(2),
            stale_vip: true,
            settle: Duration::from_millis(500),
        };
        // dsrlb's ARP-level outages are half its request-level ones: 10..50 ms.
        let mut r = Report {
            kills: (1..=5).map(|i| sample(Some(i * 20))).collect(),
            ..Report::default()
        };
        assert_eq!(r.ratio(), None, "no anchor, no ratio");
        r.keepalived = Some(KaRun {
            version: "Keepalived v2".into(),
            samples: (1..=5).map(|i| ka(Some(i * 100))).collect(),
        });
        let ratio = r.ratio().expect("both measured");
        assert_eq!((ratio.dsrlb.p50, ratio.keepalived.p50), (30.0, 300.0));
        assert!((ratio.p50() - 0.1).abs() < 1e-9 && (ratio.max() - 0.1).abs() < 1e-9);
        assert!(ratio.faster());
        let table = r.table();
        assert!(
            table
                .contains("ARP-level outage, dsrlb / keepalived: p50 30.0 / 300.0 ms (ratio 0.10)"),
            "{table}"
        );
        assert!(r.json().contains("\"p50_ratio\":0.1"));
        // An anchor sample that never recovered makes max meaningless, not better.
        if let Some(k) = r.keepalived.as_mut() {
            k.samples.push(ka(None));
        }
        let ratio = r.ratio().expect("both measured");
        assert!(ratio.max().is_nan() && !ratio.faster());
    }
}
