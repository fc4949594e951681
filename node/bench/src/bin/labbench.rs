//! `dsrlb-labbench`: the lab benchmark of issues #2 and #13. One run builds a lab (one
//! client, one backend, and a host per load balancer, so every path reaches the same
//! server), measures every workload straight to the backend and through the VIP served by
//! dsrlb — and, when asked, by a second dsrlb build or config (`--dsrlb-b`,
//! `--datapath-b`: an A/B in one run) and by nftlb (`--nftlb`) — interleaved round by round
//! with the order rotating, and prints medians and their ratios to direct
//! (docs/design.md#targets), p99 latency added, each path's 64-byte UDP capacity and its
//! CPU cost per million packets.
//!
//! Only one load balancer is on the lab segment at a time: each runs in its own host
//! holding the VIP, and the others' cables are pulled (their bridge ports down) while it is
//! measured, so two never answer ARP for the VIP together (see `Bench::select`).
//!
//! `cargo build --release -p node -p bench && sudo ./target/release/dsrlb-labbench --nftlb`
//! — it needs root for network namespaces and touches nothing outside them; the lab is
//! removed on exit, on error and on Ctrl-C.

#[path = "labbench/report.rs"]
mod report;
#[path = "labbench/workload.rs"]
mod workload;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use lab::backend::UDP_SINK_PORT;
use lab::nftlb::{Nftlb, find_nftlb};
use lab::{
    BACKEND_HTTP_PORT, BACKEND_UDP_PORT, Host, Lab, LabFarm, LabProcess, LabSpec, MacAddr,
    NodeOptions, http_get, scrape, udp_request,
};

use report::{Blast, Report, Round, Side};
use workload::{
    MachineCpu, SendRun, cpu_seconds, gbits, if_counters, machine_cpu, sink_counts,
    voluntary_switches,
};

/// Lab benchmark: HTTP, TCP upload and UDP straight to a backend vs through the VIP served
/// by dsrlb (and optionally a second dsrlb build or config, and nftlb), interleaved round
/// by round, and each path's 64-byte UDP capacity and CPU cost. Needs root.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Rounds; each measures every workload on every path, the order rotating.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=15))]
    rounds: u32,
    /// Seconds per measured run (the 64-byte flood runs twice as long).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Print the results as one JSON object on stdout; the table goes to stderr.
    #[arg(long)]
    json: bool,
    /// Concurrent HTTP clients (each with one request in flight).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    http_concurrency: u32,
    /// UDP sender threads for the 1400-byte throughput runs. One, like iperf3, leaves a
    /// CPU of a 2-CPU machine to the node and the backend; more starve the node, so the
    /// VIP path loses to scheduling what the direct path never needs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=8))]
    udp_threads: u32,
    /// UDP sender threads for the 64-byte flood, which wants as much offered load as the
    /// client can make.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=8))]
    flood_threads: u32,
    /// The dsrlb binary to run in the lab (default: the `dsrlb` next to this binary).
    #[arg(long)]
    dsrlb: Option<PathBuf>,
    /// A line added to the `[datapath]` table of dsrlb's config (e.g. `workers = 1`);
    /// repeatable.
    #[arg(long = "datapath", value_name = "KEY = VALUE")]
    datapath: Vec<String>,
    /// A second dsrlb build measured as its own path, `dsrlb-B`, on a second node in the
    /// same run (A/B of a datapath change). Implied by --datapath-b.
    #[arg(long)]
    dsrlb_b: Option<PathBuf>,
    /// A `[datapath]` line for `dsrlb-B` (repeatable); B runs the same binary as A unless
    /// --dsrlb-b names another.
    #[arg(long = "datapath-b", value_name = "KEY = VALUE")]
    datapath_b: Vec<String>,
    /// Also measure nftlb (ZEVENET's in-kernel DSR) on its own host with the same VIP;
    /// skipped with a message when no `nftlb` binary is installed.
    #[arg(long)]
    nftlb: bool,
    /// Pace the 64-byte flood to this many datagrams per second in all (e.g. the capacity
    /// an earlier run reported, to show the rings do not drop at it); as fast as the
    /// senders can by default.
    #[arg(long)]
    flood_pps: Option<f64>,
    /// Measure only these workloads (comma-separated: http, newconn, upload, udp, udp64),
    /// e.g. `--only udp64` while profiling the forwarding path; all by default.
    #[arg(long, value_delimiter = ',', value_parser = ["http", "newconn", "upload", "udp", "udp64"])]
    only: Vec<String>,
    /// Measure over IPv6 (docs/design.md#ipv6): a dual-stack lab, the farms on its IPv6 VIP
    /// and the direct path to the backend's IPv6 address. The 64-byte flood then sends
    /// 84-byte frames (the IPv6 header is 20 bytes longer). Not with --nftlb.
    #[arg(long, conflicts_with = "nftlb")]
    ipv6: bool,
}

impl Args {
    fn wants(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// Payload of the throughput datagrams: 1428-byte IP packets, under the 1500 MTU.
const UDP_PAYLOAD: usize = 1400;
/// 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 + 4 (FCS) = a minimum-size 64-byte frame.
const SMALL_PAYLOAD: usize = 18;
/// Connected sockets (source ports) per sender thread: several flows, so the node's
/// fanout can spread them over its workers as real traffic would be.
const FLOWS_PER_THREAD: usize = 4;
/// Longest wait for the sink's count to stop moving after a UDP run.
const SETTLE_MAX: Duration = Duration::from_secs(1);
const SETTLE_STEP: Duration = Duration::from_millis(50);
/// The datapath adds its ring-full drops to `dsrlb_drops_total` when a worker has been
/// idle for a poll interval (100 ms); waiting longer than that before and after the flood
/// puts every drop in the window it belongs to.
const QUIET: Duration = Duration::from_millis(300);
/// Longest wait for the VIP to answer through a load balancer just plugged in.
const SWITCH_MAX: Duration = Duration::from_secs(10);
/// How many error messages the report keeps.
const MAX_NOTES: usize = 8;

const NAME: &str = "dsrlb-labbench";

fn main() -> ExitCode {
    let args = Args::parse();
    bench::main(NAME, || run(&args))
}

/// One load balancer of the run: the host it runs in (plugged into the segment only while
/// it is measured) and, for dsrlb, its process.
struct Lb {
    name: String,
    host: Host,
    /// The dsrlb process (`None` for nftlb, which forwards in the kernel).
    dsrlb: Option<LabProcess>,
    _nftlb: Option<Nftlb>,
}

fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        (0.2..=10.0).contains(&args.seconds),
        "--seconds must be between 0.2 and 10 (got {})",
        args.seconds
    );
    let bench::Start { dsrlb, stop } = bench::start(args.dsrlb.clone())?;
    let dsrlb_b = match (&args.dsrlb_b, args.datapath_b.is_empty()) {
        (Some(p), _) => Some(bench::locate_dsrlb(Some(p.clone()))?),
        (None, false) => Some(dsrlb.clone()),
        (None, true) => None,
    };
    let nftlb_bin = if args.nftlb {
        let found = find_nftlb();
        if found.is_none() {
            progress(
                "--nftlb: no nftlb binary in $PATH or /usr/sbin (Debian: apt-get install \
                 nftlb); measuring without it",
            );
        }
        found
    } else {
        None
    };
    let started = Instant::now();
    let spec = LabSpec {
        nodes: 1 + usize::from(dsrlb_b.is_some()),
        backends: 1,
        clients: 1,
        other_lbs: usize::from(nftlb_bin.is_some()),
        ipv6: args.ipv6,
        ..LabSpec::default()
    };
    progress(&format!(
        "building the lab (1 client, {} dsrlb node(s), {} nftlb host(s), 1 backend)",
        spec.nodes, spec.other_lbs
    ));
    let mut lab = Lab::build(&spec).context("building the lab")?;
    lab.start_backends(&dsrlb)
        .context("starting the backend (dsrlb lab-backend)")?;
    let on = |f: LabFarm| match lab.vip6() {
        Some(v6) => f.on_vip(v6),
        None => f,
    };
    let farms = [
        on(LabFarm::new("web", "tcp", BACKEND_HTTP_PORT, &[0])),
        on(LabFarm::new("sink", "udp", UDP_SINK_PORT, &[0])),
        on(LabFarm::new("echo", "udp", BACKEND_UDP_PORT, &[0])),
    ];
    let mut header = Vec::new();
    let mut lbs = Vec::new();
    let mut variants = vec![("dsrlb", dsrlb.clone(), &args.datapath)];
    if let Some(b) = &dsrlb_b {
        variants.push(("dsrlb-B", b.clone(), &args.datapath_b));
    }
    // Each load balancer starts alone on the segment (the others' cables pulled), so only
    // one ever answers for the VIP; it stays unplugged until it is measured.
    for (i, (name, bin, extra)) in variants.into_iter().enumerate() {
        for (k, n) in lab.nodes().iter().enumerate() {
            lab.set_cable(n, k == i)?;
        }
        progress(&format!(
            "starting {name} ({}) on {}",
            bin.display(),
            lab.nodes()[i].name
        ));
        let config = lab.node_config_members(i, &farms, &NodeOptions::default(), &[i])?;
        let config = with_datapath(&config, extra)?;
        header.push(format!(
            "{name}: {} on {}, [datapath] {}",
            bin.display(),
            lab.nodes()[i].name,
            datapath_settings(&config)?
        ));
        let mut procs = vec![lab.spawn_node_config(i, &bin, &config)?];
        lab.wait_ready(&mut procs, &[i], &farms, Duration::from_secs(20))
            .with_context(|| format!("starting {name}"))?;
        lab.set_cable(&lab.nodes()[i], false)?;
        lbs.push(Lb {
            name: name.into(),
            host: lab.nodes()[i].clone(),
            dsrlb: procs.pop(),
            _nftlb: None,
        });
    }
    if let Some(bin) = &nftlb_bin {
        let host = lab.other_lbs()[0].clone();
        progress(&format!(
            "starting nftlb ({}) on {}",
            bin.display(),
            host.name
        ));
        let nft = Nftlb::start(&lab, &host, bin, &farms).context("starting nftlb")?;
        header.push(format!(
            "nftlb: {} on {} (pid {}), farms mode dsr, scheduler hash srcip srcport, \
             backend ether-addr set; netdev ingress on eth0",
            bin.display(),
            host.name,
            nft.process().pid()
        ));
        lbs.push(Lb {
            name: "nftlb".into(),
            host,
            dsrlb: None,
            _nftlb: Some(nft),
        });
    }
    let mut paths = vec!["direct".to_owned()];
    paths.extend(lbs.iter().map(|l| l.name.clone()));
    let mut report = Report {
        header: header_lines(args, &lab, &lbs)
            .into_iter()
            .chain(header)
            .collect(),
        paths,
        ..Report::default()
    };
    let bench = Bench {
        lab: &lab,
        client: lab.clients()[0].clone(),
        lbs: &lbs,
        plugged: None,
        backends_expected: farms.iter().map(|f| f.backends.len()).sum::<usize>() as f64,
        backend: lab.backends()[0].addr(BACKEND_HTTP_PORT),
        direct_ip: match lab.backends()[0].ip6 {
            Some(ip6) => ip6.into(),
            None => lab.backends()[0].ip.into(),
        },
        vip: lab.vip6().map_or(lab.vip().into(), Into::into),
        args,
        stop,
        notes: Vec::new(),
    };
    let result = bench_rounds(bench, &mut report);
    report.wall_s = started.elapsed().as_secs_f64();
    // The load balancers and the lab go before the results are printed, so a slow print
    // cannot keep namespaces around; both are also removed by their Drop on any error.
    drop(lbs);
    drop(lab);
    result?;
    bench::print_report(args.json, report.table(), report.json());
    Ok(())
}

/// `config` with each `key = value` of `extra` set in its `[datapath]` table, replacing a
/// line the lab wrote for the same key (e.g. its `workers = 2`).
fn with_datapath(config: &str, extra: &[String]) -> anyhow::Result<String> {
    let key = |l: &str| l.split('=').next().map(|k| k.trim().to_owned());
    let mut keys = Vec::new();
    for l in extra {
        ensure!(
            l.contains('='),
            "--datapath {l:?}: expected `key = value` (a [datapath] line)"
        );
        keys.extend(key(l));
    }
    let mut out = String::new();
    let mut in_datapath = false;
    for l in config.lines() {
        let t = l.trim();
        if t.starts_with('[') {
            in_datapath = t == "[datapath]";
            out.push_str(l);
            out.push('\n');
            if in_datapath {
                for e in extra {
                    out.push_str(e);
                    out.push('\n');
                }
            }
            continue;
        }
        if in_datapath && key(t).is_some_and(|k| keys.contains(&k)) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    Ok(out)
}

/// The datapath settings a node config gives, defaults included, on one line (checked by
/// the daemon's own config parser, so a bad `--datapath` line fails here, before the run).
fn datapath_settings(config: &str) -> anyhow::Result<String> {
    let c = node::config::parse(config).context("the node config for the run")?;
    let d = &c.datapath;
    Ok(format!(
        "interface {}, workers {} ({}), ring_slots {} per worker, flow_capacity {}, \
         flow_idle {:?}",
        d.interface,
        d.workers,
        if d.workers == 0 {
            format!("one per CPU: {}", datapath::resolve_workers(0))
        } else {
            "as set".to_owned()
        },
        d.ring_slots,
        d.flow_capacity,
        d.flow_idle,
    ))
}

fn bench_rounds(mut bench: Bench<'_>, report: &mut Report) -> anyhow::Result<()> {
    bench.preflight()?;
    let paths = bench.lbs.len() + 1;
    for i in 0..bench.args.rounds {
        // The order rotates, so each path runs first, middle and last equally often.
        let order: Vec<usize> = (0..paths).map(|k| (k + i as usize) % paths).collect();
        let names: Vec<&str> = order.iter().map(|&p| report.paths[p].as_str()).collect();
        progress(&format!(
            "round {}/{} ({})",
            i + 1,
            bench.args.rounds,
            names.join(", ")
        ));
        report.rounds.push(bench.round(order)?);
    }
    report.notes = bench.notes;
    Ok(())
}

fn progress(what: &str) {
    bench::progress(NAME, what);
}

fn header_lines(args: &Args, lab: &Lab, lbs: &[Lb]) -> Vec<String> {
    let (cpus, kernel) = bench::machine();
    let names: Vec<String> = lbs
        .iter()
        .map(|l| format!("{} on {} {}", l.name, l.host.name, l.host.ip))
        .collect();
    vec![
        format!(
            "dsrlb-labbench: lab {} — client {}, backend {}; VIP {} served by {}",
            lab.prefix(),
            lab.clients()[0].ip,
            lab.backends()[0].ip,
            lab.vip(),
            names.join(", ")
        ),
        format!(
            "{} rounds x {} s per run, every path per workload back to back, order rotating; \
             medians shown, ratio = path / direct in the same run",
            args.rounds, args.seconds
        ),
        "one load balancer on the segment at a time: the others' cables are pulled \
         (bridge port down) and the client's ARP entry flushed before each switch"
            .to_owned(),
        format!(
            "machine: {cpus} CPUs (kernel {kernel}) shared by client, load balancers and \
             backend: absolute numbers are CPU-bound, the ratios are the point; load {}",
            load_average()
        ),
        format!(
            "http: {} clients, GET /; tcp upload: 32 MiB POSTs on one connection, verified by \
             the backend; udp: {} sender thread(s) x {FLOWS_PER_THREAD} flows, {UDP_PAYLOAD} B \
             payloads, goodput counted at the backend's sink",
            args.http_concurrency, args.udp_threads
        ),
        format!(
            "udp 64B: {} sender thread(s), {}, {SMALL_PAYLOAD} B payloads (64 B frames with \
             FCS) for {} s; dsrlb CPU = utime+stime of the dsrlb process, which on veth includes \
             the backend's receive work its sends start; machine CPU from /proc/stat",
            args.flood_threads,
            args.flood_pps
                .map_or("as fast as they can".into(), |r| format!(
                    "paced to {r:.0} pps"
                )),
            args.seconds * 2.0
        ),
    ]
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

struct Bench<'a> {
    lab: &'a Lab,
    client: Host,
    lbs: &'a [Lb],
    /// The load balancer (index into `lbs`) on the segment now.
    plugged: Option<usize>,
    /// `dsrlb_backend_up` summed over the farms once a dsrlb node has every backend.
    backends_expected: f64,
    /// The backend's own HTTP address (where the sink counts are read).
    backend: SocketAddr,
    direct_ip: std::net::IpAddr,
    vip: std::net::IpAddr,
    args: &'a Args,
    stop: Arc<AtomicBool>,
    notes: Vec<String>,
}

impl Bench<'_> {
    fn run_time(&self) -> Duration {
        Duration::from_secs_f64(self.args.seconds)
    }

    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted; the lab has been removed");
        }
        Ok(())
    }

    fn note(&mut self, what: &str, error: Option<String>) {
        if let Some(e) = error
            && self.notes.len() < MAX_NOTES
        {
            self.notes.push(format!("{what}: {e}"));
        }
    }

    /// The dsrlb process forwarding on path `p` (0 = direct), if any.
    fn dsrlb_pid(&self, p: usize) -> Option<u32> {
        p.checked_sub(1)
            .and_then(|i| self.lbs[i].dsrlb.as_ref())
            .map(LabProcess::pid)
    }

    /// Puts load balancer `i` alone on the segment: every other one unplugged first, then
    /// `i` plugged, the client's ARP cache flushed; returns once the VIP answers as b1 from
    /// `i`'s MAC, so no measurement ever runs against the wrong one.
    fn select(&mut self, i: usize) -> anyhow::Result<()> {
        if self.plugged == Some(i) {
            return Ok(());
        }
        for (k, lb) in self.lbs.iter().enumerate() {
            if k != i {
                self.lab.set_cable(&lb.host, false)?;
            }
        }
        self.plugged = None;
        let target = &self.lbs[i];
        self.lab.set_cable(&target.host, true)?;
        self.client.flush_neighbors()?;
        let (vip, mac, client) = (self.vip, target.host.mac, self.client.clone());
        let addr = SocketAddr::from((vip, BACKEND_HTTP_PORT));
        let deadline = Instant::now() + SWITCH_MAX;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.client.run(|| http_get(addr, "/")) {
                Ok(r) if r.backend() == Some("b1") => {
                    let seen = vip_mac(&client, vip)?;
                    // A dsrlb back on the segment may not have re-learned the backend's MAC
                    // for every farm yet (it lost it while unplugged): wait until it has,
                    // or its first frames would count as `no_backend`.
                    let up = match target.dsrlb {
                        Some(_) => scrape(&target.host).map_or(0.0, |m| m.sum("dsrlb_backend_up")),
                        None => f64::INFINITY,
                    };
                    if seen == Some(mac) && up >= self.backends_expected {
                        self.plugged = Some(i);
                        return Ok(());
                    }
                    last = format!(
                        "the VIP resolved to {seen:?} (want {mac}), backends up {up} of {}",
                        self.backends_expected
                    );
                }
                Ok(r) => last = format!("answered {:?}", r.body),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "{} did not answer for the VIP within {SWITCH_MAX:?}: {last}",
            target.name
        )
    }

    /// Puts the right load balancer on the segment for path `p` (direct needs none).
    fn path(&mut self, p: usize) -> anyhow::Result<()> {
        match p.checked_sub(1) {
            Some(i) => self.select(i),
            None => Ok(()),
        }
    }

    /// Every path answers as b1 before anything is measured, so a broken lab fails here
    /// with a clear message rather than as a ratio of zero.
    fn preflight(&mut self) -> anyhow::Result<()> {
        let direct = self.addr(false, BACKEND_HTTP_PORT);
        let backend = self.backend;
        self.client.run(|| -> anyhow::Result<()> {
            let reply = http_get(direct, "/").with_context(|| format!("GET http://{direct}/"))?;
            ensure!(
                reply.backend() == Some("b1"),
                "GET http://{direct}/ answered {:?}",
                reply.body
            );
            sink_counts(backend)?;
            Ok(())
        })?;
        let warm = Duration::from_millis(300);
        let c = self.args.http_concurrency as usize;
        self.client.run(|| workload::http(direct, c, warm, true));
        let echo = SocketAddr::from((self.vip, BACKEND_UDP_PORT));
        let vip = self.addr(true, BACKEND_HTTP_PORT);
        for i in 0..self.lbs.len() {
            self.select(i)?;
            let name = self.lbs[i].name.clone();
            let answer = self
                .client
                .run(|| udp_request(echo, b"labbench", Duration::from_secs(2)))
                .with_context(|| format!("UDP echo through {echo} ({name})"))?;
            ensure!(
                answer.starts_with("backend=b1 "),
                "UDP echo through {name} answered {answer:?}"
            );
            // A short unmeasured run: ARP, flow tables and caches warm up.
            self.client.run(|| workload::http(vip, c, warm, true));
        }
        Ok(())
    }

    fn addr(&self, vip: bool, port: u16) -> SocketAddr {
        SocketAddr::from((if vip { self.vip } else { self.direct_ip }, port))
    }

    fn round(&mut self, order: Vec<usize>) -> anyhow::Result<Round> {
        let paths = order.len();
        let mut sides = vec![Side::default(); paths];
        // Workload by workload, every path back to back, so slow drift (other load on
        // the machine) affects both sides of a ratio alike.
        for (step, name) in ["http", "newconn", "upload", "udp"].into_iter().enumerate() {
            if !self.args.wants(name) {
                continue;
            }
            for &p in &order {
                self.check_stop()?;
                self.path(p)?;
                let pid = self.dsrlb_pid(p);
                let side = &mut sides[p];
                let (cpu0, m0, t0) = (node_cpu(pid)?, machine_cpu()?, Instant::now());
                let vip = p > 0;
                match step {
                    0 => self.http(vip, true, side),
                    1 => self.http(vip, false, side),
                    2 => self.upload(vip, side),
                    _ => self.udp(vip, side)?,
                }
                let secs = t0.elapsed().as_secs_f64().max(1e-3);
                side.node_cores[step] = (node_cpu(pid)? - cpu0) / secs;
                side.machine_cores[step] = (machine_cpu()? - m0).busy / secs;
            }
        }
        let mut blasts = vec![Blast::default(); paths];
        for &p in order.iter().filter(|_| self.args.wants("udp64")) {
            self.check_stop()?;
            self.path(p)?;
            blasts[p] = self.blast(p)?;
        }
        Ok(Round {
            order,
            sides,
            blasts,
        })
    }

    fn http(&mut self, vip: bool, keepalive: bool, side: &mut Side) {
        let addr = self.addr(vip, BACKEND_HTTP_PORT);
        let (c, t) = (self.args.http_concurrency as usize, self.run_time());
        let r = self.client.run(|| workload::http(addr, c, t, keepalive));
        if keepalive {
            side.http_ka_rps = r.rps;
            side.http_p50_us = r.p50_us;
            side.http_p99_us = r.p99_us;
        } else {
            side.http_new_rps = r.rps;
        }
        side.errors += r.errors;
        let what = format!(
            "http {} {addr}",
            if keepalive { "keep-alive" } else { "new-conn" }
        );
        self.note(&what, r.first_error);
    }

    fn upload(&mut self, vip: bool, side: &mut Side) {
        let addr = self.addr(vip, BACKEND_HTTP_PORT);
        let t = self.run_time();
        let r = self.client.run(|| workload::upload(addr, t));
        side.upload_gbps = r.gbps;
        side.errors += u64::from(r.error.is_some());
        self.note(
            &format!("tcp upload {addr} after {} uploads", r.uploads),
            r.error,
        );
    }

    fn udp(&mut self, vip: bool, side: &mut Side) -> anyhow::Result<()> {
        let dst = self.addr(vip, UDP_SINK_PORT);
        let threads = self.args.udp_threads as usize;
        let (sent, delivered) =
            self.send_to_sink(dst, UDP_PAYLOAD, threads, self.run_time(), None)?;
        side.udp_gbps = gbits(delivered.1, sent.elapsed);
        side.udp_sent_gbps = gbits(sent.bytes, sent.elapsed);
        side.errors += sent.errors;
        self.note(&format!("udp {dst}"), sent.first_error);
        Ok(())
    }

    /// Runs UDP senders against `dst` and returns what they sent and what the sink
    /// received meanwhile (`(datagrams, bytes)`, read once the count stops moving).
    fn send_to_sink(
        &self,
        dst: SocketAddr,
        payload: usize,
        threads: usize,
        t: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<(SendRun, (u64, u64))> {
        let backend = self.backend;
        let before = self.client.run(|| sink_counts(backend))?;
        let sent = self
            .client
            .run(|| workload::udp_send(dst, payload, threads, FLOWS_PER_THREAD, t, rate));
        let after = self.settled_sink()?;
        Ok((
            sent,
            (
                after.0.saturating_sub(before.0),
                after.1.saturating_sub(before.1),
            ),
        ))
    }

    fn settled_sink(&self) -> anyhow::Result<(u64, u64)> {
        let backend = self.backend;
        let deadline = Instant::now() + SETTLE_MAX;
        let mut last = self.client.run(|| sink_counts(backend))?;
        while Instant::now() < deadline {
            std::thread::sleep(SETTLE_STEP);
            let now = self.client.run(|| sink_counts(backend))?;
            if now == last {
                break;
            }
            last = now;
        }
        Ok(last)
    }

    /// The 64-byte flood on path `p`, with the load balancer's counters, its interface
    /// counters and CPU time read around it.
    fn blast(&mut self, p: usize) -> anyhow::Result<Blast> {
        let dst = self.addr(p > 0, UDP_SINK_PORT);
        let lb = p.checked_sub(1).map(|i| self.lbs[i].host.clone());
        let pid = self.dsrlb_pid(p);
        let farm = [("farm", "sink"), ("backend", "b1")];
        std::thread::sleep(QUIET);
        let scrape_lb = || -> anyhow::Result<Option<lab::Metrics>> {
            match (&lb, pid) {
                (Some(h), Some(_)) => Ok(Some(scrape(h).context("scraping dsrlb")?)),
                _ => Ok(None),
            }
        };
        let ifc = |h: &Option<Host>| -> anyhow::Result<workload::IfCounters> {
            match h {
                Some(h) => h.run(|| if_counters("eth0")),
                None => Ok(workload::IfCounters::default()),
            }
        };
        let m0 = scrape_lb()?;
        let rx0 = ifc(&lb)?;
        let (cpu0, mc0, wake0) = (node_cpu(pid)?, machine_cpu()?, node_wakeups(pid)?);
        let (threads, t) = (self.args.flood_threads as usize, self.run_time() * 2);
        let (sent, (delivered, _)) =
            self.send_to_sink(dst, SMALL_PAYLOAD, threads, t, self.args.flood_pps)?;
        let (cpu1, mc1, wake1) = (node_cpu(pid)?, machine_cpu()?, node_wakeups(pid)?);
        std::thread::sleep(QUIET);
        let rx1 = ifc(&lb)?;
        let m1 = scrape_lb()?;
        self.note(&format!("udp 64B flood {dst}"), sent.first_error.clone());
        let node_tx = rx1.tx_packets.saturating_sub(rx0.tx_packets);
        let (forwarded, drops) = match (&m0, &m1) {
            (Some(m0), Some(m1)) => {
                let delta = |name: &str, labels: &[(&str, &str)]| {
                    (m1.get(name, labels) - m0.get(name, labels)).max(0.0) as u64
                };
                let drops = datapath_reasons()
                    .into_iter()
                    .map(|r| (r.to_owned(), delta("dsrlb_drops_total", &[("reason", r)])))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                (delta("dsrlb_packets_total", &farm), drops)
            }
            _ if lb.is_some() => (node_tx, Default::default()),
            _ => (delivered, Default::default()),
        };
        let machine: MachineCpu = mc1 - mc0;
        Ok(Blast {
            seconds: sent.elapsed.as_secs_f64(),
            sent: sent.datagrams,
            node_rx: rx1.rx_packets.saturating_sub(rx0.rx_packets),
            node_rx_dropped: rx1.rx_dropped.saturating_sub(rx0.rx_dropped),
            node_tx,
            forwarded,
            drops,
            delivered,
            node_cpu_s: cpu1 - cpu0,
            machine_cpu_s: machine.busy,
            machine_softirq_s: machine.softirq,
            node_wakeups: wake1.saturating_sub(wake0),
        })
    }
}

/// CPU seconds of the dsrlb process `pid` (0 without one).
fn node_cpu(pid: Option<u32>) -> anyhow::Result<f64> {
    pid.map_or(Ok(0.0), cpu_seconds)
}

fn node_wakeups(pid: Option<u32>) -> anyhow::Result<u64> {
    pid.map_or(Ok(0), voluntary_switches)
}

/// The MAC the client's neighbour table holds for `vip`, if any.
fn vip_mac(client: &Host, vip: std::net::IpAddr) -> anyhow::Result<Option<MacAddr>> {
    let out = client.ip(&[
        "neigh",
        "show",
        "to",
        &vip.to_string(),
        "dev",
        &client.ifname,
    ])?;
    Ok(out
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .and_then(|m| m.parse().ok()))
}

/// Every `reason` label of `dsrlb_drops_total`, as the datapath names them.
fn datapath_reasons() -> Vec<&'static str> {
    datapath::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect()
}
