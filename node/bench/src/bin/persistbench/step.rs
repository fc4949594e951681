//! One step of `dsrlb-persistbench`: a fresh range of (farm, client) pairs at one rate, and
//! what the nodes say about it — the owner's queues, drops and batches, the followers' pins
//! and lag, and the CPU every node spent while the frames were sent.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::observe::{self, Reading, bucket_quantile, cores_by_thread, lag_delta, observations};
use crate::report::Step;
use crate::sender::Run;
use crate::{Bench, PAIRS, POLL, QUIET, SENDER_GRACE, SPORT};

impl Bench<'_> {
    /// Waits until every follower holds `expected` pins (bounded by `limit`); returns how
    /// long that took and the followers' readings at the end.
    pub(crate) fn await_pins(
        &self,
        expected: u64,
        limit: Duration,
    ) -> anyhow::Result<(Option<Duration>, Vec<Reading>)> {
        let t0 = Instant::now();
        loop {
            let readings = self
                .followers()
                .into_iter()
                .map(|i| self.scrape(i))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if readings.iter().all(|r| r.entries >= expected as f64) {
                return Ok((Some(t0.elapsed()), readings));
            }
            if t0.elapsed() >= limit || self.stop.load(Ordering::Relaxed) {
                return Ok((None, readings));
            }
            std::thread::sleep(POLL);
        }
    }

    pub(crate) fn step(&mut self, rate: u64) -> anyhow::Result<Step> {
        let owner_note = self.check_owner()?;
        let count = ((rate as f64 * self.args.step_seconds).round() as usize)
            .min(PAIRS.saturating_sub(self.cursor));
        let followers = self.followers();
        let pid = self.procs[self.owner].pid();
        let o0 = self.scrape(self.owner)?;
        let f0: Vec<Reading> = followers
            .iter()
            .map(|&i| self.scrape(i))
            .collect::<anyhow::Result<_>>()?;
        let cpu0 = observe::thread_cpu(pid)?;
        let fcpu0 = self.cpu_of(&followers)?;
        let rx0 = self.owner_rx()?;
        let port0 = self.owner_port()?;
        let run = Run {
            first: self.cursor,
            count,
            rate,
            sport: SPORT,
        };
        let flag = Arc::clone(&self.stop);
        let sent = self.raw.send(
            &self.target,
            run,
            &|| flag.load(Ordering::Relaxed),
            SENDER_GRACE,
        )?;
        let sent_at = Instant::now();
        let cpu1 = observe::thread_cpu(pid)?;
        let fcpu1 = self.cpu_of(&followers)?;
        let f_end: Vec<Reading> = followers
            .iter()
            .map(|&i| self.scrape(i))
            .collect::<anyhow::Result<_>>()?;
        self.check_stop()?;
        self.cursor += sent.frames as usize;
        let expected = self.expected + sent.frames;
        let (settled, _) = self.await_pins(expected, Duration::from_millis(self.args.settle_ms))?;
        let quiet_left = QUIET.saturating_sub(sent_at.elapsed());
        std::thread::sleep(quiet_left);
        let rx1 = self.owner_rx()?;
        let port1 = self.owner_port()?;
        let o1 = self.scrape(self.owner)?;
        let f1: Vec<Reading> = followers
            .iter()
            .map(|&i| self.scrape(i))
            .collect::<anyhow::Result<_>>()?;
        let held = f1.iter().map(|r| r.entries as u64).min().unwrap_or(0);
        let missing = expected.saturating_sub(held);
        if missing > 0 {
            self.lost.push((run.first, sent.frames as usize));
        }
        self.expected = held.min(expected);
        let secs = sent.elapsed.as_secs_f64().max(1e-3);
        let follower_rate = f0
            .iter()
            .zip(&f_end)
            .map(|(a, b)| (b.created - a.created) / secs)
            .fold(f64::INFINITY, f64::min);
        // Both followers' lag together: each pin is counted once per follower.
        let mut lag: Vec<(f64, f64)> = Vec::new();
        for (a, b) in f0.iter().zip(&f1) {
            for (le, n) in lag_delta(a, b) {
                match lag.iter_mut().find(|(l, _)| *l == le) {
                    Some(slot) => slot.1 += n,
                    None => lag.push((le, n)),
                }
            }
        }
        let d = |f: fn(&Reading) -> f64| (f(&o1) - f(&o0)).max(0.0) as u64;
        let other_drops = o1
            .drops
            .iter()
            .filter(|(reason, _)| reason != "ring_full")
            .filter_map(|(reason, n)| {
                let before = o0
                    .drops
                    .iter()
                    .find(|(r, _)| r == reason)
                    .map_or(0.0, |x| x.1);
                let delta = (n - before).max(0.0) as u64;
                (delta > 0).then(|| (reason.clone(), delta))
            })
            .collect();
        Ok(Step {
            target: rate,
            sent: sent.frames,
            offered: sent.rate(),
            seconds: secs,
            sender_errors: sent.errors,
            sender_first_error: sent.first_error.clone(),
            sender_short: sent.frames < count as u64,
            follower_rate: if follower_rate.is_finite() {
                follower_rate
            } else {
                0.0
            },
            drops_new: d(|r| r.drops_new),
            drops_refresh: d(|r| r.drops_refresh),
            batch_failures: d(|r| r.batch_failures),
            ring_full: d(|r| r.ring_full),
            other_drops,
            batches: d(|r| r.batches),
            batch_writes: d(|r| r.batch_writes),
            queued_new: d(|r| r.requests_new),
            arrived: rx1.0.saturating_sub(rx0.0),
            rx_dropped: rx1.1.saturating_sub(rx0.1),
            switch_dropped: port1.1.saturating_sub(port0.1),
            missing,
            settled_after: settled,
            lag_p50: bucket_quantile(&lag, 0.5),
            lag_p99: bucket_quantile(&lag, 0.99),
            lag_count: observations(&lag) as u64,
            owner_threads: cores_by_thread(&cpu0, &cpu1, secs),
            follower_cores: followers
                .iter()
                .zip(fcpu0.iter().zip(&fcpu1))
                .map(|(&i, (a, b))| (self.lab.nodes()[i].name.clone(), (b - a) / secs))
                .collect(),
            note: owner_note.or_else(|| {
                (sent.frames < count as u64).then(|| {
                    format!(
                        "the sender managed {} of {count} frames in time (behind by up to {:?})",
                        sent.frames, sent.max_behind
                    )
                })
            }),
        })
    }
}
