//! `dsrlb-labbench`: the lab benchmark of issue #2. One run builds a lab (one client, one
//! dsrlb node, one backend, so "direct" and "via the VIP" reach the same server), measures
//! every workload straight to the backend and through the VIP, interleaved round by round
//! with the order alternating, and prints medians and their ratios (docs/design.md#targets),
//! the node's forwarding rate for 64-byte frames and its CPU cost per million packets.
//!
//! `cargo build --release -p node -p bench && sudo ./target/release/dsrlb-labbench` — it needs root
//! for network namespaces and touches nothing outside them; the lab is removed on exit,
//! on error and on Ctrl-C.

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
use lab::{
    BACKEND_HTTP_PORT, BACKEND_UDP_PORT, Host, Lab, LabFarm, LabSpec, http_get, scrape, udp_request,
};

use report::{Blast, Report, Round, Side};
use workload::{SendRun, cpu_seconds, gbits, if_counters, sink_counts, voluntary_switches};

/// Lab benchmark: HTTP, TCP upload and UDP straight to a backend vs through the VIP
/// (interleaved), and the node's 64-byte forwarding rate and CPU cost. Needs root.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Rounds; each measures every workload direct and via the VIP, order alternating.
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
    /// The node's `[datapath] io`; several (comma-separated, e.g. `af_packet,af_xdp`) run
    /// the whole benchmark once per backend in this invocation, each on a fresh lab with
    /// its own interleaved direct baseline, reports one after the other.
    #[arg(long, value_delimiter = ',', default_value = "af_packet")]
    io: Vec<String>,
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
/// How many error messages the report keeps.
const MAX_NOTES: usize = 8;

const NAME: &str = "dsrlb-labbench";

fn main() -> ExitCode {
    let args = Args::parse();
    bench::main(NAME, || run(&args))
}

fn run(args: &Args) -> anyhow::Result<()> {
    ensure!(
        (0.2..=10.0).contains(&args.seconds),
        "--seconds must be between 0.2 and 10 (got {})",
        args.seconds
    );
    for io in &args.io {
        ensure!(
            ["auto", "af_packet", "af_xdp"].contains(&io.as_str()),
            "--io {io:?}: must be auto, af_packet or af_xdp"
        );
    }
    let start = bench::start(args.dsrlb.clone())?;
    for io in &args.io {
        run_one(args, &start, io)?;
    }
    Ok(())
}

fn run_one(args: &Args, start: &bench::Start, io: &str) -> anyhow::Result<()> {
    let (dsrlb, stop) = (start.dsrlb.clone(), start.stop.clone());
    let started = Instant::now();
    let spec = LabSpec {
        nodes: 1,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    };
    progress("building the lab (1 client, 1 node, 1 backend)");
    let mut lab = Lab::build(&spec).context("building the lab")?;
    lab.start_backends(&dsrlb)
        .context("starting the backend (dsrlb lab-backend)")?;
    let farms = [
        LabFarm::new("web", "tcp", BACKEND_HTTP_PORT, &[0]),
        LabFarm::new("sink", "udp", UDP_SINK_PORT, &[0]),
        LabFarm::new("echo", "udp", BACKEND_UDP_PORT, &[0]),
    ];
    let opts = lab::NodeOptions {
        io: io.to_owned(),
        ..lab::NodeOptions::default()
    };
    progress(&format!("starting the node with io = {io}"));
    let node_proc = lab
        .start_node_with(0, &dsrlb, &farms, &opts)
        .context("starting dsrlb run on the node")?;
    let io_line = match scrape(&lab.nodes()[0]) {
        Ok(m) => {
            let running = [
                ("af_packet", "ring"),
                ("af_xdp", "copy"),
                ("af_xdp", "zerocopy"),
            ]
            .into_iter()
            .find(|(b, mode)| m.get("dsrlb_datapath_info", &[("io", b), ("mode", mode)]) == 1.0)
            .map_or("unknown".to_owned(), |(b, mode)| {
                format!("{b} ({mode} mode)")
            });
            format!("node datapath: io = {io} configured, {running} running (dsrlb_datapath_info)")
        }
        Err(e) => format!("node datapath: io = {io} configured (metrics unreadable: {e})"),
    };
    let bench = Bench {
        client: lab.clients()[0].clone(),
        node: lab.nodes()[0].clone(),
        node_pid: node_proc.pid(),
        backend: lab.backends()[0].addr(BACKEND_HTTP_PORT),
        direct_ip: lab.backends()[0].ip,
        vip: lab.vip(),
        args,
        stop,
        notes: Vec::new(),
    };
    let mut header = header(args, &lab);
    header.push(io_line);
    let mut report = Report {
        header,
        ..Report::default()
    };
    let result = bench_rounds(bench, &mut report);
    report.wall_s = started.elapsed().as_secs_f64();
    // The node and the lab go before the results are printed, so a slow print cannot
    // keep namespaces around; both are also removed by their Drop on any error above.
    drop(node_proc);
    drop(lab);
    result?;
    bench::print_report(args.json, report.table(), report.json());
    Ok(())
}

fn bench_rounds(mut bench: Bench<'_>, report: &mut Report) -> anyhow::Result<()> {
    bench.preflight()?;
    for i in 0..bench.args.rounds {
        let vip_first = i % 2 == 1;
        progress(&format!(
            "round {}/{} ({} first)",
            i + 1,
            bench.args.rounds,
            if vip_first { "VIP" } else { "direct" }
        ));
        report.rounds.push(bench.round(vip_first)?);
    }
    report.notes = bench.notes;
    Ok(())
}

fn progress(what: &str) {
    bench::progress(NAME, what);
}

fn header(args: &Args, lab: &Lab) -> Vec<String> {
    let (cpus, kernel) = bench::machine();
    vec![
        format!(
            "dsrlb-labbench: lab {} — client {}, node {} (dsrlb run, lab config), backend {}; VIP {}",
            lab.prefix(),
            lab.clients()[0].ip,
            lab.nodes()[0].ip,
            lab.backends()[0].ip,
            lab.vip()
        ),
        format!(
            "{} rounds x {} s per run, direct and via the VIP interleaved (order alternates); \
             medians shown, ratio = via VIP / direct",
            args.rounds, args.seconds
        ),
        format!(
            "machine: {cpus} CPUs (kernel {kernel}) shared by client, node and backend: \
             absolute numbers are CPU-bound, the ratios are the point"
        ),
        format!(
            "http: {} clients, GET /; tcp upload: 32 MiB POSTs on one connection, verified by \
             the backend; udp: {} sender thread(s) x {FLOWS_PER_THREAD} flows, {UDP_PAYLOAD} B \
             payloads, goodput counted at the backend's sink",
            args.http_concurrency, args.udp_threads
        ),
        format!(
            "udp 64B: {} sender thread(s), {SMALL_PAYLOAD} B payloads (64 B frames with FCS) \
             for {} s; node CPU = utime+stime of the dsrlb process, which on veth includes \
             the backend's receive work its sends start",
            args.flood_threads,
            args.seconds * 2.0
        ),
    ]
}

struct Bench<'a> {
    client: Host,
    node: Host,
    node_pid: u32,
    /// The backend's own HTTP address (where the sink counts are read).
    backend: SocketAddr,
    direct_ip: std::net::Ipv4Addr,
    vip: std::net::Ipv4Addr,
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

    /// Both paths answer as b1 before anything is measured, so a broken lab fails here
    /// with a clear message rather than as a ratio of zero.
    fn preflight(&self) -> anyhow::Result<()> {
        let (direct, vip) = (
            self.addr(false, BACKEND_HTTP_PORT),
            self.addr(true, BACKEND_HTTP_PORT),
        );
        let echo = SocketAddr::from((self.vip, BACKEND_UDP_PORT));
        let backend = self.backend;
        self.client.run(|| -> anyhow::Result<()> {
            for addr in [direct, vip] {
                let reply = http_get(addr, "/").with_context(|| format!("GET http://{addr}/"))?;
                ensure!(
                    reply.backend() == Some("b1"),
                    "GET http://{addr}/ answered {:?}",
                    reply.body
                );
            }
            let answer = udp_request(echo, b"labbench", Duration::from_secs(2))
                .with_context(|| format!("UDP echo through {echo}"))?;
            ensure!(
                answer.starts_with("backend=b1 "),
                "UDP echo answered {answer:?}"
            );
            sink_counts(backend)?;
            Ok(())
        })?;
        // A short unmeasured run per path: ARP, flow tables and caches warm up.
        let warm = Duration::from_millis(300);
        let c = self.args.http_concurrency as usize;
        for addr in [direct, vip] {
            self.client.run(|| workload::http(addr, c, warm, true));
        }
        Ok(())
    }

    fn addr(&self, vip: bool, port: u16) -> SocketAddr {
        SocketAddr::from((if vip { self.vip } else { self.direct_ip }, port))
    }

    fn round(&mut self, vip_first: bool) -> anyhow::Result<Round> {
        let mut round = Round {
            vip_first,
            ..Round::default()
        };
        let order = if vip_first {
            [true, false]
        } else {
            [false, true]
        };
        let mut sides = [Side::default(), Side::default()];
        // Workload by workload, both paths back to back, so slow drift (other load on
        // the machine) affects both sides of a ratio alike.
        for step in 0..4 {
            for vip in order {
                self.check_stop()?;
                let side = &mut sides[usize::from(vip)];
                let (cpu0, t0) = (cpu_seconds(self.node_pid)?, Instant::now());
                match step {
                    0 => self.http(vip, true, side),
                    1 => self.http(vip, false, side),
                    2 => self.upload(vip, side),
                    _ => self.udp(vip, side)?,
                }
                let cpu = cpu_seconds(self.node_pid)? - cpu0;
                side.node_cores[step] = cpu / t0.elapsed().as_secs_f64().max(1e-3);
            }
        }
        let [direct, via] = sides;
        round.direct = direct;
        round.vip = via;
        self.check_stop()?;
        round.blast = self.blast()?;
        Ok(round)
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
        let (sent, delivered) = self.send_to_sink(dst, UDP_PAYLOAD)?;
        side.udp_gbps = gbits(delivered.1, sent.elapsed);
        side.udp_sent_gbps = gbits(sent.bytes, sent.elapsed);
        side.errors += sent.errors;
        self.note(&format!("udp {dst}"), sent.first_error);
        Ok(())
    }

    /// Runs the UDP senders against `dst` and returns what they sent and what the sink
    /// received meanwhile (`(datagrams, bytes)`, read once the count stops moving).
    fn send_to_sink(
        &self,
        dst: SocketAddr,
        payload: usize,
    ) -> anyhow::Result<(SendRun, (u64, u64))> {
        let backend = self.backend;
        let before = self.client.run(|| sink_counts(backend))?;
        let (threads, t) = (self.args.udp_threads as usize, self.run_time());
        let sent = self
            .client
            .run(|| workload::udp_send(dst, payload, threads, FLOWS_PER_THREAD, t));
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

    /// The 64-byte flood through the VIP, with the node's counters, interface counters
    /// and CPU time read around it.
    fn blast(&mut self) -> anyhow::Result<Blast> {
        let dst = self.addr(true, UDP_SINK_PORT);
        let farm = [("farm", "sink"), ("backend", "b1")];
        std::thread::sleep(QUIET);
        let m0 = scrape(&self.node).context("scraping the node")?;
        let rx0 = self.node.run(|| if_counters("eth0"))?;
        let backend = self.backend;
        let sink0 = self.client.run(|| sink_counts(backend))?;
        let cpu0 = cpu_seconds(self.node_pid)?;
        let wake0 = voluntary_switches(self.node_pid)?;
        let (threads, t) = (self.args.flood_threads as usize, self.run_time() * 2);
        let sent = self
            .client
            .run(|| workload::udp_send(dst, SMALL_PAYLOAD, threads, FLOWS_PER_THREAD, t));
        let sink1 = self.settled_sink()?;
        let cpu1 = cpu_seconds(self.node_pid)?;
        let wake1 = voluntary_switches(self.node_pid)?;
        std::thread::sleep(QUIET);
        let rx1 = self.node.run(|| if_counters("eth0"))?;
        let m1 = scrape(&self.node).context("scraping the node")?;
        self.note(&format!("udp 64B flood {dst}"), sent.first_error.clone());
        let delta = |name: &str, labels: &[(&str, &str)]| {
            (m1.get(name, labels) - m0.get(name, labels)).max(0.0) as u64
        };
        let drops = datapath_reasons()
            .into_iter()
            .map(|r| (r.to_owned(), delta("dsrlb_drops_total", &[("reason", r)])))
            .filter(|(_, n)| *n > 0)
            .collect();
        Ok(Blast {
            seconds: sent.elapsed.as_secs_f64(),
            sent: sent.datagrams,
            node_rx: rx1.rx_packets.saturating_sub(rx0.rx_packets),
            node_rx_dropped: rx1.rx_dropped.saturating_sub(rx0.rx_dropped),
            node_tx: rx1.tx_packets.saturating_sub(rx0.tx_packets),
            forwarded: delta("dsrlb_packets_total", &farm),
            drops,
            delivered: sink1.0.saturating_sub(sink0.0),
            node_cpu_s: cpu1 - cpu0,
            node_wakeups: wake1.saturating_sub(wake0),
        })
    }
}

/// Every `reason` label of `dsrlb_drops_total`, as the datapath names them.
fn datapath_reasons() -> Vec<&'static str> {
    datapath::DropReason::ALL
        .iter()
        .map(|r| r.as_str())
        .collect()
}
