//! What a finished scenario shows: the [`Verdict`] (violations, summary, takeovers) and the
//! run's details — its timeline with the outage after each strike, the clients' counts and
//! each stream's fate — printed with every run and on every failure.

use std::time::Instant;

use crate::invariants::single_owner;
use crate::rng::SEED_ENV;
use crate::scenario::{Scenario, Takeover};
use crate::summary::Summary;
use crate::workload::requests::RequestReport;
use crate::workload::streams::StreamOutcome;
use crate::workload::udp::UdpReport;
use lab::ProbeLog;

/// What a finished run recorded, for its details.
pub(crate) struct Record<'a> {
    pub(crate) requests: &'a RequestReport,
    pub(crate) udp: &'a UdpReport,
    pub(crate) outcomes: &'a [StreamOutcome],
    pub(crate) owner: &'a single_owner::OwnerReport,
    pub(crate) obs: &'a [single_owner::Observation],
    pub(crate) log: &'a ProbeLog,
    pub(crate) end: Instant,
}

impl Scenario {
    pub(crate) fn details(&self, r: &Record<'_>) -> String {
        let Record {
            requests,
            udp,
            outcomes,
            owner,
            obs,
            log,
            end,
        } = *r;
        let mut d = format!(
            "chaos {} (seed {:#x}): {} events, {} probes, {} owner observations, turns {:?}\n",
            self.name,
            self.seed,
            self.events.len(),
            log.rounds.len(),
            owner.observations,
            owner
                .turns
                .iter()
                .map(|m| self.c.node_of_mac(*m))
                .collect::<Vec<_>>(),
        );
        let strikes: Vec<Instant> = self.events.iter().filter(|e| e.2).map(|e| e.0).collect();
        for (t, what, strike) in &self.events {
            d += &format!(
                "  +{:>6.0} ms  {what}",
                (*t - self.started).as_secs_f64() * 1000.0
            );
            if *strike {
                let next = strikes.iter().copied().find(|s| s > t).unwrap_or(end);
                let outage = single_owner::outage_between(obs, *t, next);
                d += &format!(" (longest ARP outage until the next strike: {outage:?})");
            }
            d += "\n";
        }
        for t in &self.takeovers {
            d += &format!(
                "  takeover by {}: node {} -> {:?}, outage {:?}, requests failed {}\n",
                t.kind, t.from, t.to, t.outage, t.failed
            );
        }
        d += &format!(
            "  tcp: {} ok, {} attempts ({} failed), {} gave up, p50 {:?} p99 {:?} max gap {:?}, \
             per backend {:?}\n",
            requests.ok,
            requests.attempts,
            requests.attempts_failed,
            requests.gave_up,
            requests.quantile(0.5),
            requests.quantile(0.99),
            requests.longest_gap(),
            requests.per_backend
        );
        for (at, why) in requests.failures.iter().take(5) {
            d += &format!(
                "    failed at +{:.0} ms: {why}\n",
                (*at - self.started).as_secs_f64() * 1000.0
            );
        }
        d += &format!(
            "  udp: {} sent, {} lost, max gap {:?}\n",
            udp.sent,
            udp.lost(),
            udp.longest_gap()
        );
        for s in outcomes {
            let since = |t: Instant| (t - self.started).as_millis();
            d += &format!(
                "  stream to {} via {:?}: {} bytes, longest stall {:?} from +{:?} ms, {}\n",
                s.target,
                s.backend,
                s.bytes,
                s.longest_stall,
                s.stall_start().map(since),
                s.error.as_deref().unwrap_or("ok")
            );
        }
        d
    }
}

/// What a scenario showed.
pub struct Verdict {
    pub summary: Summary,
    /// Every invariant broken, one line each.
    pub violations: Vec<String>,
    pub takeovers: Vec<Takeover>,
    pub outcomes: Vec<StreamOutcome>,
    /// The scenario's timeline and counts.
    pub details: String,
    /// Tails of the nodes' logs.
    pub logs: String,
}

impl Verdict {
    /// Panics, with everything needed to understand and replay the run, unless every
    /// invariant held.
    pub fn assert_ok(&self) {
        assert!(
            self.violations.is_empty(),
            "chaos {} broke {} invariant(s) (replay with {SEED_ENV}={:#x}):\n- {}\n\n{}\n{}\n{}",
            self.summary.scenario,
            self.violations.len(),
            self.summary.seed.unwrap_or_default(),
            self.violations.join("\n- "),
            self.summary,
            self.details,
            self.logs
        );
    }
}
