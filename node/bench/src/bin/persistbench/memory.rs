//! The memory phase of `dsrlb-persistbench`: fills the replicated table to `--memory-pins`
//! (fresh pairs first, lost ones again from another source port once the pool is spent),
//! waits until all three nodes hold the same pins, and reads every node's RSS against the
//! reading taken before any pin existed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::report::{Memory, NodeMemory};
use crate::sender::Run;
use crate::{Bench, FILL_ROUNDS, MAX_FILL, PAIRS, SPORT, SPORT_RESEND, progress};

impl Bench<'_> {
    /// Fills the table to `--memory-pins` at `rate`, sends lost pairs again from another
    /// source port if the fresh ones did not suffice, waits until all three nodes hold the
    /// same pins and reads every node's RSS.
    pub(crate) fn memory(&mut self, rate: u64, rss_before: Vec<u64>) -> anyhow::Result<Memory> {
        let want = self.args.memory_pins;
        let fresh = (want.saturating_sub(self.expected) as usize).min(PAIRS - self.cursor);
        // Never longer than MAX_FILL: a slow cluster is filled faster and loses some pins,
        // which the later rounds make up for.
        let rate = rate.max((fresh as f64 / MAX_FILL.as_secs_f64()).ceil() as u64);
        progress(&format!(
            "memory: {} pins held, filling to {want} at {rate}/s",
            self.expected
        ));
        let t0 = Instant::now();
        let mut resent = 0;
        let limit = Duration::from_millis(self.args.settle_ms) * 3;
        // Fresh pairs while the pool has them: the fill loses what the steps lost (a few
        // ring drops), so a second, smaller round usually tops it up.
        let mut fresh = fresh;
        for _ in 0..FILL_ROUNDS {
            if fresh == 0 {
                break;
            }
            self.check_stop()?;
            let first = self.cursor;
            self.fill(first, fresh, rate, SPORT)?;
            self.cursor += fresh;
            let (_, r) = self.await_pins(self.expected + fresh as u64, limit)?;
            let held = r.iter().map(|r| r.entries as u64).min().unwrap_or(0);
            if held < self.expected + fresh as u64 {
                self.lost.push((first, fresh));
            }
            self.expected = held;
            let short = want.saturating_sub(held);
            // A tenth more than missing, as the next round may lose some too.
            fresh = ((short + short / 10) as usize).min(PAIRS - self.cursor);
        }
        // The pool is spent: lost pairs again, from another source port (a new flow).
        if self.expected < want {
            for (first, count) in std::mem::take(&mut self.lost) {
                self.check_stop()?;
                self.fill(first, count, rate, SPORT_RESEND)?;
                resent += count as u64;
            }
            let (_, r) = self.await_pins(want, limit)?;
            self.expected = r.iter().map(|r| r.entries as u64).min().unwrap_or(0);
        }
        let fill_seconds = t0.elapsed().as_secs_f64();
        if self.expected < want {
            self.notes.push(format!(
                "memory: only {} of {want} pins reached the followers",
                self.expected
            ));
        }
        // Every node must agree (the owner applies the same log), and nothing may still be
        // in flight when memory is read.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last: Vec<u64> = Vec::new();
        loop {
            self.check_stop()?;
            let now: Vec<u64> = (0..self.lab.nodes().len())
                .map(|i| self.scrape(i).map(|r| r.entries as u64))
                .collect::<anyhow::Result<_>>()?;
            if now == last && now.iter().all(|n| *n == now[0]) {
                break;
            }
            if Instant::now() > deadline {
                self.notes
                    .push(format!("memory: the nodes did not agree on pins: {now:?}"));
                break;
            }
            last = now;
            std::thread::sleep(Duration::from_millis(500));
        }
        let rss_after = self.rss_all()?;
        let nodes = (0..self.lab.nodes().len())
            .map(|i| -> anyhow::Result<NodeMemory> {
                let r = self.scrape(i)?;
                if r.evicted_full > 0.0 {
                    bail!(
                        "{} evicted {} pins from a full table: raise persistence_max_entries",
                        self.lab.nodes()[i].name,
                        r.evicted_full
                    );
                }
                let name = &self.lab.nodes()[i].name;
                // Where the lab puts a node's data dir (see `Lab::node_config_members`).
                let redb = self
                    .lab
                    .dir()
                    .join(format!("{name}-data"))
                    .join("raft.redb");
                Ok(NodeMemory {
                    name: name.clone(),
                    redb_bytes: std::fs::metadata(&redb).map_or(0, |m| m.len()),
                    owner: i == self.owner,
                    rss_before: rss_before[i],
                    rss_after: rss_after[i],
                    pins: r.entries as u64,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Memory {
            target: want,
            fill_rate: rate,
            fill_seconds,
            resent,
            nodes,
        })
    }

    fn fill(&mut self, first: usize, count: usize, rate: u64, sport: u16) -> anyhow::Result<()> {
        let run = Run {
            first,
            count,
            rate,
            sport,
        };
        let flag = Arc::clone(&self.stop);
        let grace = MAX_FILL / 4;
        let sent = self
            .raw
            .send(&self.target, run, &|| flag.load(Ordering::Relaxed), grace)?;
        self.check_stop()?;
        if sent.frames < count as u64 {
            self.notes.push(format!(
                "memory fill: the sender managed {} of {count} frames",
                sent.frames
            ));
        }
        Ok(())
    }
}
