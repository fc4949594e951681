//! `dsrlb-failbench`: the takeover benchmark of issue #3. One run builds a lab (three dsrlb
//! nodes as one cluster, two backends, one client), then again and again takes the VIP owner
//! away — kill -9, then a planned SIGTERM handover — and measures the outage the client sees:
//! from the signal to the first HTTP request answered by a backend through another node.
//! After each sample the old node is restarted on its data dir and the cluster settles (one
//! owner, every backend up on every node, one term) before the next. Each sample also
//! records the ARP-level outage: from the signal to the first answer from another node to
//! the client's ARP probes (`failbench/arp.rs`).
//!
//! With `--keepalived N`, the same run then builds a fresh lab of the same shape and crashes
//! the master of a keepalived VRRP group (advert_int 0.1 s) N times, measured with the same
//! ARP window (`failbench/keepalived.rs`): the anchor issue #12's goal is stated against,
//! so the report can give dsrlb / keepalived from one run on one machine.
//!
//! `cargo build --release -p node -p bench && sudo ./target/release/dsrlb-failbench` — it needs root
//! for network namespaces and touches nothing outside them; the lab is removed on exit, on
//! error and on Ctrl-C.

#[path = "failbench/arp.rs"]
mod arp;
#[path = "failbench/keepalived.rs"]
mod keepalived;
#[path = "failbench/probe.rs"]
mod probe;
#[path = "failbench/report.rs"]
mod report;
#[path = "failbench/setup.rs"]
mod setup;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use lab::{BACKEND_HTTP_PORT, Lab, LabFarm, LabProcess, LabSpec, NodeOptions, scrape};
use nix::sys::signal::Signal;

use arp::ArpWatch;
use probe::{Outcome, Trigger, WindowSpec};
use report::{Kind, Report, Sample, Steady, WitnessFootprint};
use setup::{cluster_lines, header, read_timing, scan_node_logs};

/// Takeover benchmark: outage from kill -9 (and SIGTERM handover) of the VIP owner to the
/// first request answered through the new owner, in a 3-node lab, optionally against
/// keepalived VRRP in the same run. Needs root.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// kill -9 samples.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=200))]
    kills: u32,
    /// SIGTERM (planned handover) samples, after the kills.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    handovers: u32,
    /// `[cluster] heartbeat_ms` for every node (default: the config's default).
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// `[cluster] election_timeout_ms` as `MIN,MAX` (default: the config's default).
    #[arg(long, value_parser = parse_range)]
    election_ms: Option<(u64, u64)>,
    /// `[cluster] lease_ms` (default: the config's default).
    #[arg(long)]
    lease_ms: Option<u64>,
    /// Concurrent probers, their starts spread over one connect timeout.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    probers: u32,
    /// Connect timeout of a probe, after which it retries at once.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(5..=2000))]
    connect_timeout_ms: u64,
    /// Time a connected probe has for its answer.
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=5000))]
    request_timeout_ms: u64,
    /// A sample with no recovery within this long is recorded as "not recovered".
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(500..=60_000))]
    max_outage_ms: u64,
    /// Print the results as one JSON object on stdout; the table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Quiet time after the cluster is settled and before the next sample, so a restarted
    /// node's log has caught up (0 measures takeovers right after a restart).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    quiet_ms: u64,
    /// Copy every node log (restarts included) into this directory before the lab goes.
    #[arg(long)]
    keep_logs: Option<PathBuf>,
    /// The dsrlb binary to run in the lab (default: the `dsrlb` next to this binary).
    #[arg(long)]
    dsrlb: Option<PathBuf>,
    /// After the dsrlb samples, this many crashes of a keepalived VRRP master (advert_int
    /// 0.1 s) on a fresh lab of the same shape: the anchor the ARP-level outage is compared
    /// with (0: off). Needs Debian's keepalived (apt-get install keepalived).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=200))]
    keepalived: u32,
    /// The clusters measured, one after another in this run (comma-separated): three full
    /// nodes, a pair of LB nodes with `dsrlb witness` (as `nobody`) in the second
    /// backend's namespace as the third voter, or a pair with `pair_arbiter = "segment"`
    /// and no third voter. With several, the report ends with each
    /// one's kill -9 outage as a ratio to the first's.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "three")]
    shape: Vec<Shape>,
}

/// The clusters `--shape` can build (docs/design.md#pairs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Three dsrlb nodes.
    Three,
    /// Two dsrlb nodes and a witness on a backend.
    PairWitness,
    /// Two dsrlb nodes arbitrated by the datapath segment (docs/design.md#pair-segment).
    PairSegment,
}

impl Shape {
    fn lb_nodes(self) -> usize {
        match self {
            Shape::Three => 3,
            Shape::PairWitness | Shape::PairSegment => 2,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Shape::Three => "three dsrlb nodes",
            Shape::PairWitness => "two dsrlb nodes + dsrlb witness (as nobody) on backend b2",
            Shape::PairSegment => "two dsrlb nodes, pair_arbiter = \"segment\", no witness",
        }
    }
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("{s:?}: expected MIN,MAX"))?;
    let num = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|e| format!("{x:?} in {s:?}: {e}"))
    };
    Ok((num(a)?, num(b)?))
}

/// Bound on the cluster settling after a start or restart.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Bound on the probers getting ready, and on a SIGTERM'd node exiting.
const READY_LIMIT: Duration = Duration::from_secs(5);
const EXIT_LIMIT: Duration = Duration::from_secs(10);
/// Requests made through the VIP once settled; each must succeed.
const STEADY_REQUESTS: usize = 20;
const STEADY_CONNECT: Duration = Duration::from_secs(2);
const STEADY_REQUEST: Duration = Duration::from_secs(5);
/// A settled request this slow waited for a retransmission (ARP or SYN: 1 s), not for work.
const STEADY_SLOW: Duration = Duration::from_millis(200);

const NAME: &str = "dsrlb-failbench";

fn main() -> ExitCode {
    let args = Args::parse();
    bench::main(NAME, || run(&args))
}

fn progress(what: &str) {
    bench::progress(NAME, what);
}

fn run(args: &Args) -> anyhow::Result<()> {
    let bench::Start { dsrlb, stop } = bench::start(args.dsrlb.clone())?;
    // Before anything is built: a missing keepalived must not cost the dsrlb samples.
    let ka_bins = (args.keepalived > 0).then(keepalived::locate).transpose()?;
    let started = Instant::now();
    let mut reports = Vec::new();
    for &shape in &args.shape {
        reports.push((shape, measure(args, shape, &dsrlb, &stop, started)?));
    }
    if let Some((keepalived, setsid)) = &ka_bins
        && let Some((_, report)) = reports.last_mut()
    {
        report.keepalived = Some(keepalived::run(args, &stop, keepalived, setsid)?);
        report.wall_s = started.elapsed().as_secs_f64();
    }
    for (_, report) in &reports {
        bench::print_report(args.json, report.table(), report.json());
    }
    if let [(first, base), rest @ ..] = reports.as_slice()
        && !rest.is_empty()
    {
        let b = report::stats(&base.kills);
        let arp = |r: &Report| report::arp_stats(r.kills.iter().map(|s| &s.arp));
        let ba = arp(base);
        let mut lines = vec![format!(
            "kill -9 outage by cluster shape, as a ratio to {} (p50 {:.1} ms, max {:.1} ms), same run:",
            first.describe(),
            b.p50,
            b.max
        )];
        for (shape, r) in rest {
            let s = report::stats(&r.kills);
            let a = arp(r);
            lines.push(format!(
                "  {}: p50 {:.1} ms ({:.2}), max {:.1} ms ({:.2}); ARP-level p50 {:.1} ms ({:.2}), max {:.1} ms ({:.2})",
                shape.describe(),
                s.p50,
                s.p50 / b.p50,
                s.max,
                s.max / b.max,
                a.p50,
                a.p50 / ba.p50,
                a.max,
                a.max / ba.max
            ));
        }
        let text = lines.join("\n");
        if args.json {
            eprintln!("{text}");
        } else {
            println!("{text}");
        }
    }
    Ok(())
}

/// One shape's dsrlb samples, on a lab of its own (removed before this returns).
fn measure(
    args: &Args,
    shape: Shape,
    dsrlb: &std::path::Path,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> anyhow::Result<Report> {
    let dsrlb = dsrlb.to_path_buf();
    let spec = LabSpec {
        nodes: shape.lb_nodes(),
        backends: 2,
        clients: 1,
        ..LabSpec::default()
    };
    progress(&format!(
        "building the lab ({}, 2 backends, 1 client)",
        shape.describe()
    ));
    let mut lab = Lab::build(&spec).context("building the lab")?;
    let farms = vec![LabFarm::new("web", "tcp", BACKEND_HTTP_PORT, &[0, 1])];
    let witness_id = spec.nodes as u64 + 1;
    let mut opts = NodeOptions {
        cluster_extra: cluster_lines(args).join("\n"),
        ..NodeOptions::default()
    };
    match shape {
        Shape::PairWitness => opts.extra_members = vec![(witness_id, lab.backends()[1].ip)],
        Shape::PairSegment => {
            if !opts.cluster_extra.is_empty() {
                opts.cluster_extra.push('\n');
            }
            opts.cluster_extra.push_str("pair_arbiter = \"segment\"");
        }
        Shape::Three => {}
    }
    let timing = read_timing(&lab, &farms, &opts, args)?;
    lab.start_backends(&dsrlb)
        .context("starting the backends (dsrlb lab-backend)")?;
    let witness = match shape {
        Shape::PairWitness => Some(
            lab.spawn_witness(&lab.backends()[1].clone(), witness_id, &dsrlb)
                .context("starting dsrlb witness on b2")?,
        ),
        Shape::Three | Shape::PairSegment => None,
    };
    let mut report = Report {
        header: header(args, shape, &lab),
        timing,
        limit: Duration::from_millis(args.max_outage_ms),
        ..Report::default()
    };
    let mut bench = Bench {
        procs: Vec::new(),
        witness,
        lab,
        dsrlb,
        farms,
        opts,
        args,
        shape,
        stop: Arc::clone(stop),
        steady: Steady::default(),
    };
    let result = bench.samples(&mut report);
    if let Some(w) = &bench.witness {
        let dir = bench.lab.witness_data_dir(&bench.lab.backends()[1]);
        report.witness = Some(witness_footprint(w.pid(), &dir)?);
    }
    report.steady = std::mem::take(&mut bench.steady);
    report.logs = scan_node_logs(bench.lab.dir(), args.keep_logs.as_deref());
    report.wall_s = started.elapsed().as_secs_f64();
    // Nodes and lab go before anything is printed (and before the keepalived lab is built,
    // so the anchor has the machine to itself as dsrlb had); both also go by Drop on any
    // error.
    drop(bench);
    result?;
    Ok(report)
}

/// Issue #19 asks what a witness costs the host it shares: its memory now and at its peak
/// (`/proc/PID/status`), and the blocks its Raft log and snapshots take.
fn witness_footprint(pid: u32, data_dir: &std::path::Path) -> anyhow::Result<WitnessFootprint> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the witness's /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("no {key} in /proc/{pid}/status"))
    };
    fn disk(dir: &std::path::Path) -> std::io::Result<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let mut total = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            total += if meta.is_dir() {
                disk(&entry.path())?
            } else {
                meta.blocks() * 512
            };
        }
        Ok(total)
    }
    Ok(WitnessFootprint {
        rss_kib: kib("VmRSS:")?,
        peak_rss_kib: kib("VmHWM:")?,
        disk_bytes: disk(data_dir).with_context(|| format!("measuring {}", data_dir.display()))?,
    })
}

struct Bench<'a> {
    // Before `lab`: the node processes are killed before their namespaces go.
    procs: Vec<LabProcess>,
    /// `dsrlb witness` of `--shape pair-witness`: held so it runs (and goes) with the bench;
    /// no sample touches it.
    witness: Option<LabProcess>,
    lab: Lab,
    dsrlb: PathBuf,
    farms: Vec<LabFarm>,
    opts: NodeOptions,
    args: &'a Args,
    shape: Shape,
    stop: Arc<AtomicBool>,
    steady: Steady,
}

/// Cancels a window's probers however the sample ends.
struct CancelOnDrop(Arc<Trigger>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

impl Bench<'_> {
    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted; the lab has been removed");
        }
        Ok(())
    }

    fn all_nodes(&self) -> Vec<usize> {
        (0..self.lab.nodes().len()).collect()
    }

    fn samples(&mut self, report: &mut Report) -> anyhow::Result<()> {
        progress(&format!(
            "starting {} as one cluster",
            self.shape.describe()
        ));
        for i in self.all_nodes() {
            let p = self.spawn(i)?;
            self.procs.push(p);
        }
        self.settle()?;
        for (kind, count) in [
            (Kind::Kill, self.args.kills),
            (Kind::Handover, self.args.handovers),
        ] {
            for n in 0..count {
                self.check_stop()?;
                let sample = self
                    .sample(kind)
                    .with_context(|| format!("{} {}", kind.as_str(), n + 1))?;
                progress(&format!(
                    "{} {}/{count}: {} -> {}, outage {}",
                    kind.as_str(),
                    n + 1,
                    sample.old_owner,
                    sample.new_owner.as_deref().unwrap_or("nobody"),
                    sample
                        .outage
                        .map_or_else(|| "not recovered".into(), |d| format!("{d:.1?}"))
                ));
                match kind {
                    Kind::Kill => report.kills.push(sample),
                    Kind::Handover => report.handovers.push(sample),
                }
            }
        }
        Ok(())
    }

    fn spawn(&self, i: usize) -> anyhow::Result<LabProcess> {
        self.lab
            .spawn_node(i, &self.dsrlb, &self.farms, &self.opts)
            .with_context(|| format!("starting dsrlb on {}", self.lab.nodes()[i].name))
    }

    /// Waits for one owner, every backend up on every node and one Raft term, then checks
    /// that requests through the VIP succeed.
    fn settle(&mut self) -> anyhow::Result<Duration> {
        let t = Instant::now();
        let all = self.all_nodes();
        self.lab
            .wait_ready(&mut self.procs, &all, &self.farms, SETTLE_LIMIT)
            .context("waiting for the cluster to settle")?;
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            self.check_stop()?;
            let terms: Vec<f64> = self
                .lab
                .nodes()
                .iter()
                .filter_map(|n| scrape(n).ok())
                .map(|m| m.get("dsrlb_raft_term", &[]))
                .collect();
            if terms.len() == all.len() && terms[0] > 0.0 && terms.iter().all(|t| *t == terms[0]) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "nodes did not agree on a Raft term within {SETTLE_LIMIT:?}: {terms:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let ready = t.elapsed();
        // Ready is not caught up: the leader resumes replicating to a restarted node only
        // after its retry backoff, and no metric shows a node's log position. A node whose
        // log still lags when the owner dies loses its campaign and costs the survivors an
        // extra election round, which is not the steady-state takeover being measured.
        let quiet_until = Instant::now() + Duration::from_millis(self.args.quiet_ms);
        while Instant::now() < quiet_until {
            self.check_stop()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        self.steady_requests()?;
        Ok(ready)
    }

    fn steady_requests(&mut self) -> anyhow::Result<()> {
        let addr = SocketAddr::from((self.lab.vip(), BACKEND_HTTP_PORT));
        let results = self.lab.clients()[0]
            .try_run(|| {
                (0..STEADY_REQUESTS)
                    .map(|_| {
                        let t = Instant::now();
                        let o = probe::attempt(addr, STEADY_CONNECT, STEADY_REQUEST, &|| false);
                        (o, t.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
            .context("entering the client")?;
        let s = &mut self.steady;
        for (outcome, took) in results {
            s.requests += 1;
            s.max = s.max.max(took);
            s.over_liveness += usize::from(took >= report::LIVENESS);
            s.slow += usize::from(took >= STEADY_SLOW);
            if !matches!(outcome, Outcome::Answered(_)) {
                s.failed += 1;
                s.first_error.get_or_insert_with(|| format!("{outcome:?}"));
            }
        }
        Ok(())
    }

    /// The one node that owns the VIP now.
    fn owner(&self) -> anyhow::Result<usize> {
        match self.lab.owners().as_slice() {
            [one] => Ok(*one),
            other => bail!("expected one VIP owner, found {other:?}"),
        }
    }

    fn sample(&mut self, kind: Kind) -> anyhow::Result<Sample> {
        let i = self.owner()?;
        let old = self.lab.nodes()[i].clone();
        let spec = WindowSpec {
            addr: SocketAddr::from((self.lab.vip(), BACKEND_HTTP_PORT)),
            old_mac: old.mac,
            probers: self.args.probers as usize,
            connect: Duration::from_millis(self.args.connect_timeout_ms),
            request: Duration::from_millis(self.args.request_timeout_ms),
            limit: Duration::from_millis(self.args.max_outage_ms),
        };
        let arp = ArpWatch::start(&self.lab, spec.limit).context("starting the ARP window")?;
        let trigger = Arc::new(Trigger::new());
        let guard = CancelOnDrop(Arc::clone(&trigger));
        let client = self.lab.clients()[0].clone();
        let probing = {
            let (trigger, spec) = (Arc::clone(&trigger), spec.clone());
            std::thread::spawn(move || client.try_run(|| probe::run_window(&spec, &trigger)))
        };
        let ready_by = Instant::now() + READY_LIMIT;
        while trigger.ready() < spec.probers {
            ensure!(
                Instant::now() < ready_by,
                "probers not ready within {READY_LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }

        let proc = &mut self.procs[i];
        let t0 = Instant::now();
        proc.signal(match kind {
            Kind::Kill => Signal::SIGKILL,
            Kind::Handover => Signal::SIGTERM,
        })?;
        trigger.fire(t0);
        let (exited_after, exit) = match kind {
            Kind::Kill => {
                let status = proc.kill()?;
                (Some(t0.elapsed()), status.to_string())
            }
            Kind::Handover => match proc.wait_timeout(EXIT_LIMIT)? {
                Some(status) => (Some(t0.elapsed()), status.to_string()),
                None => {
                    proc.kill()?;
                    (None, format!("still running after {EXIT_LIMIT:?}; killed"))
                }
            },
        };
        let window = match probing.join() {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => return Err(e).context("probing from the client"),
            Err(_) => bail!("a prober thread panicked"),
        };
        drop(guard);
        let arp = arp
            .finish(t0, old.mac, &self.stop)
            .context("the ARP window")?;

        let first = window.first_recovery(old.mac);
        let mut failures: BTreeMap<&'static str, usize> = BTreeMap::new();
        let mut via_old_owner = 0;
        for a in &window.attempts {
            match &a.outcome {
                Outcome::Failed(f) => *failures.entry(f.as_str()).or_insert(0) += 1,
                Outcome::Answered(_) if !a.recovered(old.mac) => via_old_owner += 1,
                Outcome::Answered(_) | Outcome::Abandoned => {}
            }
        }
        let new_owner = first.and_then(|a| a.mac_after).and_then(|mac| {
            self.lab
                .nodes()
                .iter()
                .find(|n| n.mac == mac)
                .map(|n| n.name.clone())
        });
        let mut sample = Sample {
            old_owner: old.name.clone(),
            new_owner,
            outage: first.map(|a| a.ended()),
            exited_after,
            exit,
            attempts: window.attempts.len(),
            failures,
            via_old_owner,
            backend: first.and_then(|a| match &a.outcome {
                Outcome::Answered(b) => Some(b.clone()),
                _ => None,
            }),
            settle: Duration::ZERO,
            arp,
        };

        self.check_stop()?;
        self.procs[i] = self.spawn(i)?;
        sample.settle = self.settle()?;
        Ok(sample)
    }
}
