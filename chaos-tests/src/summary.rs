//! The one row every scenario prints: scenario, seed, outage, streams broken, requests
//! failed, time with two owners — plus the counts behind them — in a fixed `key=value`
//! layout, so rows from many runs can be collected with grep.

use std::fmt;
use std::time::Duration;

/// What a scenario measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub scenario: String,
    /// `None` for a check that draws nothing at random.
    pub seed: Option<u64>,
    /// The longest time the VIP answered no ARP probe.
    pub outage: Duration,
    pub streams: usize,
    pub streams_broken: usize,
    /// Failed TCP attempts plus lost UDP requests.
    pub requests_failed: u64,
    pub tcp_failed: u64,
    pub tcp_gave_up: u64,
    pub udp_lost: u64,
    /// How long two nodes acted as owner at once.
    pub two_owners: Duration,
    /// Owner changes seen on the wire.
    pub takeovers: usize,
    pub writes_acked: usize,
    pub writes_unknown: usize,
    /// The scenario's wall time, lab set-up included.
    pub elapsed: Duration,
    pub passed: bool,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CHAOS {:<22} seed={} outage_ms={:<5} streams_broken={}/{} requests_failed={:<4} \
             two_owner_ms={:<3} | takeovers={} tcp_failed={} gave_up={} udp_lost={} \
             writes_acked={} writes_unknown={} wall={:.1}s {}",
            self.scenario,
            self.seed.map_or("-".into(), |s| format!("{s:#018x}")),
            self.outage.as_millis(),
            self.streams_broken,
            self.streams,
            self.requests_failed,
            self.two_owners.as_millis(),
            self.takeovers,
            self.tcp_failed,
            self.tcp_gave_up,
            self.udp_lost,
            self.writes_acked,
            self.writes_unknown,
            self.elapsed.as_secs_f64(),
            if self.passed { "PASS" } else { "FAIL" },
        )
    }
}

/// p50 and max of `samples` (zero when empty).
pub fn p50_max(samples: &[Duration]) -> (Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort();
    match s.len() {
        0 => (Duration::ZERO, Duration::ZERO),
        n => (s[(n - 1) / 2], s[n - 1]),
    }
}
