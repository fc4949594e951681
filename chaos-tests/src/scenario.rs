//! `Scenario`: one chaos run from lab to verdict. `start` builds a 3-node cluster lab (the
//! web and echo farms, plus the ledger farms the admin writer fills), starts the capture on
//! the bridge, the ARP prober and every workload; the scenario file then strikes with the
//! nemeses (`nemesis.rs`); `finish` waits for the cluster to converge, stops the traffic,
//! judges every invariant and prints the summary row.
//!
//! Adding a scenario: a file under `tests/chaos/` with a `#[test]` that calls
//! [`Scenario::start`], strikes, and ends with `finish().assert_ok()`; list it in
//! `tests/chaos/main.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab::{
    self, ArpProber, BACKEND_HTTP_PORT, BACKEND_UDP_PORT, Capture, ClusterLab, LabFarm, LabSpec,
    MacAddr, ProbeLog, wait_for,
};

use crate::env::{can_run_lab, dsrlb, say};
use crate::invariants::{convergence, single_owner, streams, writes};
use crate::report::{Record, Verdict};
use crate::rng::{Rng, SEED_ENV, run_seed};
use crate::summary::Summary;
use crate::views::{ledger_view, node_view};
use crate::workload::Worker;
use crate::workload::requests::{self, RequestReport};
use crate::workload::streams::Streams;
use crate::workload::udp::{self, UdpReport};
use crate::workload::writes::{self as writer, WriteHistory, ledger_farms};

/// Each scenario's nemeses must be over by this long after it started.
pub const BUDGET: Duration = Duration::from_secs(30);
/// After the nemeses: the longest the cluster may take to converge.
const CONVERGE_LIMIT: Duration = Duration::from_secs(10);
/// The workloads stop themselves this long after the start, whatever happens.
const WORKLOAD_LIMIT: Duration = Duration::from_secs(50);
/// Streams are paced: enough to keep ACKs flowing through the owner, little enough that two
/// scenarios on two cores leave the nodes room.
const STREAM_RATE: u64 = 1 << 20;
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// Frames kept by the capture (ARP and frames to the VIP only: no backend replies).
const MAX_FRAMES: usize = 400_000;

/// What to build and run.
#[derive(Clone, Debug)]
pub struct Setup {
    pub nodes: usize,
    pub backends: usize,
    /// Verified streams through the VIP.
    pub vip_streams: usize,
    /// Verified streams straight to these backends' own addresses (not through the VIP).
    pub direct_streams: Vec<usize>,
    /// A TCP health check on the web farm: `(interval_ms, rise, fall)`.
    pub health_check: Option<(u64, u32, u32)>,
    /// Run the admin writer.
    pub writes: bool,
    /// Extra source addresses on the client (`LabSpec::client_extra_ips`).
    pub client_extra_ips: usize,
    /// Farms the nodes serve besides the web, echo and ledger farms.
    pub extra_farms: Vec<LabFarm>,
    /// Source-IP persistence of the web farm (`persistence_ttl`, e.g. `"300s"`).
    pub web_persistence: Option<String>,
    /// A pair: `nodes` must be 2, and `dsrlb witness` runs in the last backend's namespace
    /// as the third voter (docs/design.md#pairs). Nemeses strike the LB nodes only.
    pub pair_witness: bool,
}

impl Setup {
    /// Two LB nodes and a witness on the last backend, otherwise the defaults.
    pub fn pair_witness() -> Setup {
        Setup {
            nodes: 2,
            pair_witness: true,
            ..Setup::default()
        }
    }
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            nodes: 3,
            backends: 3,
            vip_streams: 2,
            direct_streams: Vec::new(),
            health_check: None,
            writes: true,
            client_extra_ips: 0,
            extra_farms: Vec::new(),
            web_persistence: None,
            pair_witness: false,
        }
    }
}

impl Setup {
    /// The web farm (HTTP, port 80) and the echo farm (UDP) over every backend, and the
    /// ledger farms.
    pub fn farms(&self) -> Vec<LabFarm> {
        let all: Vec<usize> = (0..self.backends).collect();
        let mut web = LabFarm::new("web", "tcp", BACKEND_HTTP_PORT, &all);
        web.check = self.health_check;
        web.persistence_ttl = self.web_persistence.clone();
        let mut farms = vec![web, LabFarm::new("echo", "udp", BACKEND_UDP_PORT, &all)];
        // Dual stack: the owner of the VIPs also owns an IPv6 one, so every takeover sends
        // unsolicited advertisements the single-owner check judges with the ARP.
        farms.push(LabFarm::new("web6", "tcp", BACKEND_HTTP_PORT, &all).on_vip(lab::DEFAULT_VIP6));
        farms.extend(ledger_farms());
        farms.extend(self.extra_farms.iter().cloned());
        farms
    }
}

/// A nemesis that should move ownership, and what came of it.
#[derive(Clone, Debug)]
pub struct Takeover {
    /// What struck (`kill -9`, `SIGSTOP`, ...).
    pub kind: &'static str,
    /// When it struck.
    pub at: Instant,
    pub from: usize,
    /// The node that owned next, if one did in time.
    pub to: Option<usize>,
    /// Until the VIP answered a probe sent after the strike (filled in by `finish`).
    pub outage: Option<Duration>,
    /// TCP attempts failed and UDP requests lost from the strike to the next strike.
    pub failed: u64,
}

/// One chaos run. Fields drop in order: traffic first, then the capture, then the cluster.
pub struct Scenario {
    pub(crate) streams: Option<Streams>,
    requests: Option<Worker<RequestReport>>,
    udp: Option<Worker<UdpReport>>,
    writer: Option<Worker<WriteHistory>>,
    prober: Option<ArpProber>,
    wire: Option<Capture>,
    pub c: ClusterLab,
    pub name: String,
    pub seed: u64,
    pub rng: Rng,
    pub(crate) started: Instant,
    pub(crate) frozen: Vec<usize>,
    /// `(when, what, whether it was a strike)`.
    pub(crate) events: Vec<(Instant, String, bool)>,
    pub(crate) takeovers: Vec<Takeover>,
    /// Backends down on purpose right now (not expected up on a node that catches up).
    pub(crate) down: Vec<usize>,
    /// Backends killed on purpose at some point: streams they served are expected to break.
    pub(crate) doomed: Vec<usize>,
    /// Problems found while striking (no takeover, a node that did not catch up, ...).
    pub(crate) problems: Vec<String>,
    setup: Setup,
}

impl Scenario {
    /// Builds the lab and starts the traffic; `None` (after saying why) when this machine
    /// cannot run a lab.
    ///
    /// # Panics
    /// When the lab or the cluster cannot be started (the message names the seed).
    pub fn start(name: &str, setup: Setup) -> Option<Scenario> {
        if !can_run_lab(name) {
            return None;
        }
        let seed = run_seed().unwrap_or_else(|e| panic!("chaos {name}: {e}"));
        eprintln!(
            "chaos {name}: seed {seed:#x} (replay: {SEED_ENV}={seed:#x} cargo test --release \
             -p chaos-tests --test chaos -- {name})"
        );
        let started = Instant::now();
        let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
            panic!("chaos {name} (seed {seed:#x}): {what}: {e}")
        };
        let spec = LabSpec {
            nodes: setup.nodes,
            backends: setup.backends,
            clients: 1,
            client_extra_ips: setup.client_extra_ips,
            ipv6: true,
            ..LabSpec::default()
        };
        let c = if setup.pair_witness {
            ClusterLab::start_pair_with_witness(&spec, &dsrlb(), &setup.farms(), setup.backends - 1)
        } else {
            ClusterLab::start(&spec, &dsrlb(), &setup.farms(), &[])
        }
        .unwrap_or_else(|e| fail("the cluster does not start", &e));
        let vip = c.lab.vip();
        let wire =
            Capture::start_filtered(c.lab.switch_ns(), c.lab.bridge(), MAX_FRAMES, move |f| {
                f.arp.is_some() || f.ipv4.is_some_and(|p| p.dst == vip)
            })
            .unwrap_or_else(|e| fail("capture on the bridge", &e));
        let client = c.lab.clients()[0].clone();
        let prober = ArpProber::start(&client, vip, PROBE_INTERVAL, WORKLOAD_LIMIT)
            .unwrap_or_else(|e| fail("ARP prober", &e));
        let web = SocketAddr::from((vip, BACKEND_HTTP_PORT));
        // The client learns the VIP's MAC the ordinary way before the traffic starts.
        let served =
            client.run(|| wait_for(Duration::from_secs(5), || requests::attempt(web).ok()));
        if served.is_none() {
            fail("the VIP does not serve before the nemeses", &c.logs());
        }
        let mut targets = vec![web; setup.vip_streams];
        targets.extend(
            setup
                .direct_streams
                .iter()
                .map(|&b| c.lab.backends()[b].addr(BACKEND_HTTP_PORT)),
        );
        let streams = Streams::start(&client, &targets, STREAM_RATE, WORKLOAD_LIMIT);
        let requests = Worker::spawn(&client, "requests", WORKLOAD_LIMIT, move |stop, end| {
            requests::run(web, stop, end)
        });
        let echo = SocketAddr::from((vip, BACKEND_UDP_PORT));
        let udp = Worker::spawn(&client, "udp", WORKLOAD_LIMIT, move |stop, end| {
            udp::run(echo, stop, end)
        });
        let writer = if setup.writes {
            let mut order: Vec<usize> = (0..setup.nodes).collect();
            let mut rng = Rng::for_scenario(seed, &format!("{name}/writer"));
            rng.shuffle(&mut order);
            let client_api = crate::admin::client(&c.lab, &order, writer::WRITE_TIMEOUT)
                .unwrap_or_else(|e| fail("admin client", &e));
            Some(Worker::spawn(
                &client,
                "writer",
                WORKLOAD_LIMIT,
                move |stop, end| writer::run(client_api, stop, end),
            ))
        } else {
            None
        };
        let mut s = Scenario {
            streams: Some(streams),
            requests: Some(requests),
            udp: Some(udp),
            writer,
            prober: Some(prober),
            wire: Some(wire),
            c,
            name: name.to_owned(),
            seed,
            rng: Rng::for_scenario(seed, name),
            started,
            frozen: Vec::new(),
            events: Vec::new(),
            takeovers: Vec::new(),
            down: Vec::new(),
            doomed: Vec::new(),
            problems: Vec::new(),
            setup,
        };
        // Every stream under way (its head read) before anything strikes.
        let flowing = wait_for(Duration::from_secs(5), || {
            let progress = s
                .streams
                .as_ref()
                .map(Streams::progress)
                .unwrap_or_default();
            progress.iter().all(|b| *b > 0).then_some(())
        });
        if flowing.is_none() {
            s.problem("the streams did not start within 5 s".into());
        }
        Some(s)
    }

    /// Records a problem found while striking; `finish` reports it as a violation.
    pub fn problem(&mut self, what: String) {
        eprintln!("chaos {}: PROBLEM: {what}", self.name);
        self.problems.push(what);
    }

    /// Time left of the scenario's budget.
    pub fn left(&self) -> Duration {
        BUDGET.saturating_sub(self.started.elapsed())
    }

    /// The backend serving each stream, as far as known.
    pub fn stream_backends(&self) -> Vec<Option<String>> {
        self.streams
            .as_ref()
            .map(Streams::backends)
            .unwrap_or_default()
    }

    /// Waits for the cluster to converge, stops the traffic, judges every invariant and
    /// prints the summary row.
    pub fn finish(mut self) -> Verdict {
        let mut violations = std::mem::take(&mut self.problems);
        if !self.frozen.is_empty() {
            violations.push(format!("nodes {:?} still frozen at the end", self.frozen));
        }
        let live = self.live();
        let mut views = Vec::new();
        let mut diverged = Vec::new();
        let converged = wait_for(CONVERGE_LIMIT, || {
            views = live.iter().map(|&i| node_view(&self.c, i)).collect();
            diverged = convergence::check(&views);
            diverged.is_empty().then_some(())
        });
        if converged.is_none() {
            violations.extend(diverged.iter().map(|d| format!("not converged: {d}")));
        }
        let history = self.writer.take().map(Worker::finish);
        let requests = self.requests.take().map(Worker::finish);
        let udp = self.udp.take().map(Worker::finish);
        let outcomes = self.streams.take().map(Streams::finish).unwrap_or_default();
        // Late replies to the last probes are still on their way.
        std::thread::sleep(Duration::from_millis(200));
        let log = self.prober.take().map(ArpProber::stop);
        std::thread::sleep(Duration::from_millis(100));
        let wire = self.wire.take();
        let overflow = wire.as_ref().map_or(0, Capture::overflow);
        let frames = wire.map(Capture::stop);

        let (log, frames) = match (log, frames) {
            (Some(Ok(log)), Some(Ok(frames))) => (log, frames),
            (log, frames) => {
                violations.push(format!(
                    "no wire record: prober {:?}, capture {:?}",
                    log.map(|l| l.map(|_| ())),
                    frames.map(|f| f.map(|_| ()))
                ));
                (
                    ProbeLog {
                        vip: self.c.lab.vip(),
                        rounds: Vec::new(),
                        send_errors: 0,
                    },
                    Vec::new(),
                )
            }
        };
        if overflow > 0 {
            violations.push(format!(
                "the capture overflowed ({overflow} frames not recorded): the owner check is \
                 incomplete"
            ));
        }
        let node_macs: Vec<MacAddr> = self.c.lab.nodes().iter().map(|n| n.mac).collect();
        let obs = single_owner::observations(
            &frames,
            self.c.lab.vip(),
            self.c.lab.vip6(),
            &node_macs,
            log.rounds.len(),
        );
        let owner = single_owner::check(&obs, &log.rounds);
        violations.extend(owner.violations());

        let requests = report(requests, &mut violations);
        let udp = report(udp, &mut violations);
        let last_nemesis = self.events.iter().rev().find(|e| e.2).map(|e| e.0);
        let doomed_names: Vec<String> = self
            .doomed
            .iter()
            .map(|&b| self.c.lab.backends()[b].name.clone())
            .collect();
        let doomed = |k: usize| {
            outcomes[k]
                .backend
                .as_ref()
                .is_some_and(|b| doomed_names.contains(b))
        };
        violations.extend(streams::check(&outcomes, doomed, last_nemesis));
        if requests.ok == 0 {
            violations.push("the request loop got no answer at all".into());
        }
        if udp.answered == 0 {
            violations.push("the UDP loop got no answer at all".into());
        }

        let history = match history {
            Some(Ok(h)) => {
                let ledgers: Vec<_> = live.iter().map(|&i| ledger_view(&self.c, i)).collect();
                violations.extend(writes::check(&h, &ledgers));
                if h.acked() == 0 {
                    violations.push("the admin writer got no write acknowledged".into());
                }
                Some(h)
            }
            Some(Err(e)) => {
                violations.push(e);
                None
            }
            None => None,
        };

        // Per takeover: the outage, and what the clients lost until the next strike.
        let strikes: Vec<Instant> = self.events.iter().filter(|e| e.2).map(|e| e.0).collect();
        let end = Instant::now();
        let next_strike = |at: Instant| {
            strikes
                .iter()
                .copied()
                .filter(|s| *s > at)
                .min()
                .unwrap_or(end)
        };
        for t in &mut self.takeovers {
            let next = next_strike(t.at);
            // Never answered again before the next strike: no outage to speak of, a failure.
            t.outage = single_owner::outage_after(&obs, &log.rounds, t.at)
                .map(|_| single_owner::outage_between(&obs, t.at, next));
            let lost = udp.lost_at.iter().filter(|l| **l >= t.at && **l < next);
            t.failed = requests.failed_between(t.at, next) as u64 + lost.count() as u64;
        }

        let summary = Summary {
            scenario: self.name.clone(),
            seed: Some(self.seed),
            outage: single_owner::longest_outage(&obs, &log.rounds),
            streams: outcomes.len(),
            streams_broken: streams::broken(&outcomes),
            requests_failed: requests.attempts_failed + udp.lost(),
            tcp_failed: requests.attempts_failed,
            tcp_gave_up: requests.gave_up,
            udp_lost: udp.lost(),
            two_owners: owner.two_owners,
            takeovers: owner.turns.len().saturating_sub(1),
            writes_acked: history.as_ref().map_or(0, WriteHistory::acked),
            writes_unknown: history.as_ref().map_or(0, WriteHistory::unknown),
            elapsed: self.started.elapsed(),
            passed: violations.is_empty(),
        };
        say(&summary.to_string());
        crate::env::keep_logs(self.c.lab.dir(), &format!("{}-{:x}", self.name, self.seed));
        let details = self.details(&Record {
            requests: &requests,
            udp: &udp,
            outcomes: &outcomes,
            owner: &owner,
            obs: &obs,
            log: &log,
            end,
        });
        eprintln!("{details}");
        Verdict {
            summary,
            violations,
            takeovers: self.takeovers.clone(),
            outcomes,
            details,
            logs: self.c.logs(),
        }
    }

    /// Nodes that run and are not frozen.
    pub(crate) fn live(&self) -> Vec<usize> {
        self.c
            .running()
            .into_iter()
            .filter(|i| !self.frozen.contains(i))
            .collect()
    }

    /// The setup this scenario runs.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// The lab's client host.
    pub fn client(&self) -> lab::Host {
        self.c.lab.clients()[0].clone()
    }
}

/// A workload's report, or its default with the failure recorded.
fn report<T: Default>(r: Option<Result<T, String>>, violations: &mut Vec<String>) -> T {
    match r {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            violations.push(e);
            T::default()
        }
        None => T::default(),
    }
}
