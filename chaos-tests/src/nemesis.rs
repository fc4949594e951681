//! The nemeses a scenario strikes with: kill -9, SIGSTOP/SIGCONT, a partition of the peer
//! traffic only (blackhole routes inside the node) or of the whole link (its bridge port
//! down), SIGTERM, restarts, and killing backends. Each records when it struck; those that
//! should move ownership wait (bounded) for the next owner and record the takeover. A
//! failure to recover is recorded as a problem, not a panic, so the run still ends with its
//! summary row and every invariant judged.

use std::time::{Duration, Instant};

use lab::wait_for;
use nix::sys::signal::Signal;

use crate::scenario::{Scenario, Takeover};
use crate::views::caught_up;

/// How long a takeover may take before it counts as missing (a liveness bound, far above
/// the election timeouts).
const TAKEOVER_LIMIT: Duration = Duration::from_secs(5);
/// How long a restarted node may take to rejoin and catch up.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);
/// How long a node may take to exit after SIGTERM (it hands leadership over first).
const TERM_LIMIT: Duration = Duration::from_secs(5);
/// Progress that shows a stream flows again (a few of the paced reader's chunks).
const STEADY_BYTES: u64 = 64 << 10;
/// How long a stream may take to flow again after a strike (TCP retransmission backoff).
const STEADY_LIMIT: Duration = Duration::from_secs(8);

impl Scenario {
    /// Records something seen now (not done); returns the instant.
    pub fn note(&mut self, what: impl Into<String>) -> Instant {
        let at = Instant::now();
        self.events.push((at, what.into(), false));
        at
    }

    /// Records a strike (something done to the cluster) now; returns the instant.
    pub fn strike(&mut self, what: impl Into<String>) -> Instant {
        let at = Instant::now();
        self.events.push((at, what.into(), true));
        at
    }

    /// The node that owns the VIP (exactly one among the live nodes, waiting up to 5 s);
    /// `None`, recorded as a problem, otherwise.
    pub fn owner(&mut self) -> Option<usize> {
        let live = self.live();
        let owner = self.c.wait_owner(&live, TAKEOVER_LIMIT);
        if owner.is_none() {
            self.problem(format!(
                "no single owner among live nodes {live:?}: {:?}",
                self.c.owners_among(&live)
            ));
        }
        owner
    }

    /// kill -9 node `i`.
    pub fn kill(&mut self, i: usize) -> Option<Instant> {
        match self.c.kill(i) {
            Ok(at) => {
                self.events.push((at, format!("kill -9 node {i}"), true));
                Some(at)
            }
            Err(e) => {
                self.problem(format!("kill -9 node {i}: {e}"));
                None
            }
        }
    }

    /// kill -9 of the owner, then the wait for the next one. Returns the killed node.
    pub fn kill_leader(&mut self) -> Option<usize> {
        let old = self.owner()?;
        let at = self.kill(old)?;
        self.wait_takeover("kill -9", old, at);
        Some(old)
    }

    /// SIGSTOP of node `i`.
    pub fn freeze(&mut self, i: usize) -> Option<Instant> {
        let sent = self.c.procs[i].as_ref().map(|p| p.signal(Signal::SIGSTOP));
        match sent {
            Some(Ok(())) => {
                self.frozen.push(i);
                Some(self.strike(format!("SIGSTOP node {i}")))
            }
            other => {
                self.problem(format!("SIGSTOP node {i}: {other:?}"));
                None
            }
        }
    }

    /// SIGCONT of node `i`.
    pub fn thaw(&mut self, i: usize) {
        let sent = self.c.procs[i].as_ref().map(|p| p.signal(Signal::SIGCONT));
        self.frozen.retain(|&f| f != i);
        match sent {
            Some(Ok(())) => {
                self.strike(format!("SIGCONT node {i}"));
            }
            other => self.problem(format!("SIGCONT node {i}: {other:?}")),
        }
    }

    /// Cuts node `i` off from its peers only (the external witness too): blackhole routes to
    /// them inside its namespace.
    /// Its datapath still hears every ARP request and client frame on its interface.
    pub fn partition_peers(&mut self, i: usize) -> Option<Instant> {
        self.peer_routes(i, "add")
            .then(|| self.strike(format!("partition node {i} from its peers")))
    }

    /// Removes the blackhole routes of [`Scenario::partition_peers`].
    pub fn heal_peers(&mut self, i: usize) {
        if self.peer_routes(i, "del") {
            self.strike(format!("heal node {i}'s peer routes"));
        }
    }

    fn peer_routes(&mut self, i: usize, verb: &str) -> bool {
        let host = self.c.lab.nodes()[i].clone();
        let peers: Vec<String> = (0..self.c.lab.nodes().len())
            .filter(|&k| k != i)
            .map(|k| format!("{}/32", self.c.lab.nodes()[k].ip))
            .chain(
                self.c
                    .external_witness
                    .iter()
                    .map(|w| format!("{}/32", w.host.ip)),
            )
            .collect();
        for p in peers {
            if let Err(e) = host.ip(&["route", verb, "blackhole", &p]) {
                self.problem(format!("route {verb} blackhole {p} on node {i}: {e}"));
                return false;
            }
        }
        true
    }

    /// Pulls node `i`'s cable (its bridge port down): no frame in or out.
    pub fn cut_cable(&mut self, i: usize) -> Option<Instant> {
        let host = self.c.lab.nodes()[i].clone();
        match self.c.lab.set_cable(&host, false) {
            Ok(()) => Some(self.strike(format!("cut node {i}'s cable"))),
            Err(e) => {
                self.problem(format!("cut node {i}'s cable: {e}"));
                None
            }
        }
    }

    /// Plugs node `i`'s cable back.
    pub fn plug_cable(&mut self, i: usize) {
        let host = self.c.lab.nodes()[i].clone();
        match self.c.lab.set_cable(&host, true) {
            Ok(()) => {
                self.strike(format!("plug node {i}'s cable back"));
            }
            Err(e) => self.problem(format!("plug node {i}'s cable: {e}")),
        }
    }

    /// SIGTERM to node `i` and the wait for it to exit; whether it exited cleanly in time.
    pub fn terminate(&mut self, i: usize) -> bool {
        let mut p = match self.c.take_running(i) {
            Ok(p) => p,
            Err(e) => {
                self.problem(format!("SIGTERM node {i}: {e}"));
                return false;
            }
        };
        self.strike(format!("SIGTERM node {i}"));
        if let Err(e) = p.signal(Signal::SIGTERM) {
            self.problem(format!("SIGTERM node {i}: {e}"));
        }
        match p.wait_timeout(TERM_LIMIT) {
            Ok(Some(status)) if status.success() => {
                self.note(format!("node {i} exited ({status})"));
                true
            }
            other => {
                self.problem(format!(
                    "node {i} did not exit cleanly within {TERM_LIMIT:?} of SIGTERM: {other:?}\n{}",
                    p.log_tail(10)
                ));
                false
            }
        }
    }

    /// Starts node `i` again from its data dir and waits until it has caught up.
    pub fn restart(&mut self, i: usize) -> bool {
        self.start_node(i) && self.wait_caught_up(i)
    }

    /// Starts node `i` again from its data dir, without waiting for it.
    pub fn start_node(&mut self, i: usize) -> bool {
        match self.c.restart(i) {
            Ok(()) => {
                self.strike(format!("restart node {i}"));
                true
            }
            Err(e) => {
                self.problem(format!("restart node {i}: {e}"));
                false
            }
        }
    }

    /// Waits until the owner sees node `i` reachable with nothing to catch up, and node `i`
    /// has every live backend up (so it could take over and forward at once).
    pub fn wait_caught_up(&mut self, i: usize) -> bool {
        let names: Vec<String> = (0..self.c.lab.backends().len())
            .filter(|b| !self.down.contains(b))
            .map(|b| self.c.lab.backends()[b].name.clone())
            .collect();
        let live = self.live();
        let mut last = String::new();
        let done = wait_for(CATCH_UP_LIMIT, || {
            let owner = match self.c.owners_among(&live).as_slice() {
                [one] => *one,
                other => {
                    last = format!("owners {other:?}");
                    return None;
                }
            };
            if owner != i {
                match caught_up(&self.c, owner, i) {
                    Ok(true) => {}
                    Ok(false) => {
                        last = format!("node {owner} does not see node {i} caught up");
                        return None;
                    }
                    Err(e) => {
                        last = e;
                        return None;
                    }
                }
            }
            let metrics = lab::scrape(&self.c.lab.nodes()[i]).ok()?;
            let up = names.iter().all(|b| {
                ["web", "echo"]
                    .iter()
                    .all(|f| metrics.get("dsrlb_backend_up", &[("farm", f), ("backend", b)]) == 1.0)
            });
            if !up {
                last = format!("node {i} does not have every backend up yet");
            }
            up.then_some(())
        });
        match done {
            Some(()) => {
                self.note(format!("node {i} caught up"));
                true
            }
            None => {
                self.problem(format!(
                    "node {i} not caught up within {CATCH_UP_LIMIT:?}: {last}"
                ));
                false
            }
        }
    }

    /// Waits until every stream moved on by [`STEADY_BYTES`] from now (bounded): the next
    /// strike then hits streams in their steady state rather than a TCP connection still
    /// backing off from the last one. Streams on killed backends are not waited for.
    pub fn wait_streams_moving(&mut self) -> bool {
        let Some(streams) = self.streams.as_ref() else {
            return true;
        };
        let names: Vec<String> = self
            .doomed
            .iter()
            .map(|&b| self.c.lab.backends()[b].name.clone())
            .collect();
        let watched: Vec<bool> = streams
            .backends()
            .iter()
            .map(|b| b.as_ref().is_none_or(|b| !names.contains(b)))
            .collect();
        let from = streams.progress();
        let moved = wait_for(STEADY_LIMIT, || {
            let now = streams.progress();
            (0..now.len())
                .all(|k| !watched[k] || now[k] >= from[k] + STEADY_BYTES)
                .then_some(())
        });
        if moved.is_none() {
            let now = streams.progress();
            self.problem(format!(
                "streams did not move on within {STEADY_LIMIT:?}: {from:?} -> {now:?} bytes"
            ));
        }
        moved.is_some()
    }

    /// Kills backend `b`'s server; streams it served are expected to break from now on.
    pub fn kill_backend(&mut self, b: usize) -> Option<Instant> {
        self.down.push(b);
        self.doomed.push(b);
        match self.c.lab.stop_backend(b) {
            Ok(()) => Some(self.strike(format!("kill backend b{}", b + 1))),
            Err(e) => {
                self.problem(format!("kill backend {b}: {e}"));
                None
            }
        }
    }

    /// Starts backend `b`'s server again.
    pub fn start_backend(&mut self, b: usize) {
        let dsrlb = self.c.dsrlb().to_path_buf();
        match self.c.lab.start_backend(b, &dsrlb) {
            Ok(()) => {
                self.down.retain(|&d| d != b);
                self.strike(format!("restart backend b{}", b + 1));
            }
            Err(e) => self.problem(format!("restart backend {b}: {e}")),
        }
    }

    /// Waits for a node other than `from` to own the VIP after a strike at `at`; records the
    /// takeover (or its absence, as a problem).
    pub fn wait_takeover(&mut self, kind: &'static str, from: usize, at: Instant) -> Option<usize> {
        self.wait_next_owner(kind, from, at, false)
    }

    /// After a strike at `at` that took every node down: waits for any node (`from`, the
    /// owner before, included) to own the VIP; records it like a takeover.
    pub fn wait_recovery(&mut self, kind: &'static str, from: usize, at: Instant) -> Option<usize> {
        self.wait_next_owner(kind, from, at, true)
    }

    fn wait_next_owner(
        &mut self,
        kind: &'static str,
        from: usize,
        at: Instant,
        from_too: bool,
    ) -> Option<usize> {
        let others: Vec<usize> = self
            .live()
            .into_iter()
            .filter(|&i| from_too || i != from)
            .collect();
        let to = self.c.wait_owner(&others, TAKEOVER_LIMIT);
        match to {
            Some(n) => {
                self.note(format!("node {n} owns the VIP"));
            }
            None => self.problem(format!(
                "no node of {others:?} took over from node {from} within {TAKEOVER_LIMIT:?} \
                 after {kind}"
            )),
        }
        self.takeovers.push(Takeover {
            kind,
            at,
            from,
            to,
            outage: None,
            failed: 0,
        });
        to
    }
}
