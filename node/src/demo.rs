//! `dsrlb demo`: a narrated tour of clustered DSR load balancing in a lab it builds itself —
//! network namespaces for a client, three dsrlb nodes and three backends on one bridge: load
//! balancing, the DSR proof, a kill -9 of the VIP owner in the middle of a running stream,
//! the takeover, health checks — then tears everything down. Dual stack: the same backends
//! also serve an IPv6 VIP, answered by Neighbor Discovery and taken over with unsolicited
//! advertisements.
//!
//! It runs the real binary (`dsrlb run`, `dsrlb lab-backend`) in the lab, so what it shows is
//! what an operator gets. Ctrl-C (or SIGTERM, SIGHUP) at any point cleans everything up.

use anyhow::{Context, bail};
use lab::{Host, Lab, LabFarm, LabProcess, LabSpec, NodeOptions, Stream, scrape};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Options of `dsrlb demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// After the tour, keep the lab running (until Ctrl-C) and print commands to explore it.
    #[arg(long)]
    pub keep: bool,
}

struct Tour {
    lab: Lab,
    exe: PathBuf,
    stop: Arc<AtomicBool>,
    started: Instant,
}

impl Tour {
    fn say(&self, text: &str) {
        println!("[{:>5.1}s] {text}", self.started.elapsed().as_secs_f64());
    }

    fn check_interrupt(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted; the lab has been removed");
        }
        Ok(())
    }

    /// Sleeps in small steps so Ctrl-C is noticed.
    fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check_interrupt()?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

/// Runs the demo; needs root.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "the demo builds network namespaces and needs root: run it with sudo \
             (it never touches this machine's own interfaces, routes or sysctls)"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too: a closed terminal must not leave the lab behind.
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the Ctrl-C handler")?;
    }
    let exe = std::env::current_exe().context("locating the dsrlb binary")?;
    let spec = LabSpec {
        nodes: 3,
        backends: 3,
        clients: 1,
        ipv6: true,
        ..LabSpec::default()
    };
    let started = Instant::now();
    println!("dsrlb demo: clustered Direct Server Return load balancing in a throwaway lab\n");
    let lab = Lab::build(&spec).context("building the lab")?;
    let mut tour = Tour {
        lab,
        exe,
        stop,
        started,
    };
    let result = tour_steps(&mut tour, args.keep);
    tour.say("removing the lab (namespaces, links, processes)");
    drop(tour);
    result
}

fn tour_steps(t: &mut Tour, keep: bool) -> anyhow::Result<()> {
    let vip = t.lab.vip();
    let names = |hosts: &[lab::Host]| {
        hosts
            .iter()
            .map(|h| format!("{} ({})", h.name, h.ip))
            .collect::<Vec<_>>()
            .join(", ")
    };
    t.say(&format!(
        "lab {}: a bridge in namespace {}; client {}; dsrlb nodes {}; backends {}",
        t.lab.prefix(),
        t.lab.switch_ns(),
        names(t.lab.clients()),
        names(t.lab.nodes()),
        names(t.lab.backends()),
    ));
    let vip6 = t.lab.vip6().context("the demo lab is dual-stack")?;
    t.say(&format!(
        "backends hold VIP {vip} on lo with arp_ignore=1, arp_announce=2, and VIP {vip6} as a \
         /128 on lo (deploy/backend-setup.sh)"
    ));
    let exe = t.exe.clone();
    t.lab.start_backends(&exe).context("starting backends")?;
    t.check_interrupt()?;

    let farms = [
        LabFarm {
            check: Some((300, 2, 2)),
            ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2])
        },
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]),
        LabFarm::new("web6", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]).on_vip(vip6),
    ];
    let mut nodes: Vec<Option<LabProcess>> = t
        .lab
        .start_cluster(&exe, &farms, &[])
        .context("starting the dsrlb cluster")?
        .into_iter()
        .map(Some)
        .collect();
    let owner = current_owner(t)?;
    let owner_host = t.lab.nodes()[owner].clone();
    t.say(&format!(
        "3-node Raft cluster up: {} leads and owns {vip} (it answers ARP with {}); the others keep \
         the same forwarding table hot",
        owner_host.name, owner_host.mac
    ));

    let client = t.lab.clients()[0].clone();
    let web = std::net::SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let counts = client.run(|| {
        let mut per: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..60 {
            if let Ok(r) = lab::http_get(web, "/") {
                *per.entry(r.backend().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        per
    });
    t.say(&format!(
        "60 HTTP requests to {web}, answered by: {counts:?}"
    ));
    t.check_interrupt()?;

    let before = scrape(&owner_host)?.sum("dsrlb_bytes_total");
    let size: u64 = 32 << 20;
    let got = client
        .run(|| lab::download(web, size))
        .context("downloading through the VIP")?;
    let forwarded = scrape(&owner_host)?.sum("dsrlb_bytes_total") - before;
    t.say(&format!(
        "a {} MiB download through the VIP: the client got {} MiB, the owner forwarded only {:.1} KiB \
         ({:.2} %) — the backend answered the client directly",
        size >> 20,
        got >> 20,
        forwarded / 1024.0,
        100.0 * forwarded / got as f64
    ));
    let web6 = SocketAddr::from((vip6, lab::BACKEND_HTTP_PORT));
    let v6 = client.run(|| {
        let mut per: BTreeMap<String, u32> = BTreeMap::new();
        for _ in 0..30 {
            if let Ok(r) = lab::http_get(web6, "/") {
                *per.entry(r.backend().unwrap_or("?").to_string())
                    .or_default() += 1;
            }
        }
        per
    });
    t.say(&format!(
        "dual stack: 30 HTTP requests to {web6} (the owner answered the client's Neighbor \
         Solicitation), answered by the same backends: {v6:?}"
    ));
    let udp = std::net::SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    let echo = client
        .run(|| lab::udp_request(udp, b"hello", Duration::from_secs(1)))
        .context("UDP through the VIP")?;
    t.say(&format!("UDP to {udp} answered: {:?}", echo.trim()));

    // The takeover, in the middle of a running stream, with requests running all along.
    let traffic = Traffic::start(&client, web);
    let stream = Stream::start(&client, web, 48 << 20, 8 << 20);
    t.pause(Duration::from_millis(1500))?;
    t.say(&format!(
        "a 48 MiB stream runs through the VIP at 8 MiB/s, short requests too; kill -9 of {} now",
        owner_host.name
    ));
    t.say(&live(t, &stream, &traffic));
    let killed_at = Instant::now();
    if let Some(mut p) = nodes[owner].take() {
        p.kill()?;
    }
    // One look inside the outage, at once: no node can be elected sooner than the election
    // timeout max (120 ms) after the dead owner's last heartbeat, so the VIP has no owner.
    t.say(&live(t, &stream, &traffic));
    // The live view until another node owns the VIP and a request got through, then once more.
    let mut settled = 0;
    while settled < 2 && killed_at.elapsed() < Duration::from_secs(10) {
        t.pause(Duration::from_millis(150))?;
        t.say(&live(t, &stream, &traffic));
        let answered = traffic.first_ok_after(killed_at).is_some();
        if answered && t.lab.owners().len() == 1 {
            settled += 1;
        }
    }
    let new_owner = current_owner(t)?;
    let outage = traffic
        .first_ok_after(killed_at)
        .map(|at| at - killed_at)
        .context("no request was answered within 10 s of the kill")?;
    t.say(&format!(
        "{} took over: first request answered {} ms after the kill ({} tries failed meanwhile); \
         the stream is at {:.1} MiB and still running",
        t.lab.nodes()[new_owner].name,
        outage.as_millis(),
        traffic.failed_after(killed_at),
        stream.received() as f64 / f64::from(1 << 20)
    ));
    let after6 = client.run(|| lab::http_get(web6, "/"));
    t.say(&format!(
        "{web6} after the takeover: {} (unsolicited Neighbor Advertisements moved the \
         client's entry to the new owner)",
        match &after6 {
            Ok(r) => format!("answered by {}", r.backend().unwrap_or("?")),
            Err(e) => format!("failed: {e}"),
        }
    ));
    let streamed = stream.join().context("the stream across the takeover")?;
    traffic.stop();
    t.say(&format!(
        "the stream finished: {} MiB, every byte verified — the new owner forwarded its ACKs to the \
         same backend (same replicated state, same Maglev table)",
        streamed >> 20
    ));
    nodes[owner] = Some(
        t.lab
            .spawn_node(owner, &exe, &farms, &NodeOptions::default())?,
    );
    let term = rejoined(t, owner, new_owner)?;
    t.say(&format!(
        "{} restarted from its Raft log and rejoined as a follower (term {term}, {} still owns)",
        owner_host.name,
        t.lab.nodes()[new_owner].name
    ));

    let new_host = t.lab.nodes()[new_owner].clone();
    t.say("stopping backend b2's server: the leader's health check (300 ms, fall 2) takes it out");
    t.lab.stop_backend(1)?;
    let out_at = Instant::now();
    while scrape(&new_host)?.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b2")]) != 0.0 {
        t.pause(Duration::from_millis(50))?;
        if out_at.elapsed() > Duration::from_secs(5) {
            bail!("b2 was not taken out within 5 s");
        }
    }
    let report = client.run(|| lab::load(web, 4, Duration::from_secs(1), false));
    t.say(&format!(
        "b2 out after {} ms (committed through Raft); 1 s of load: {} requests, {} errors, served by {:?}",
        out_at.elapsed().as_millis(),
        report.requests,
        report.errors,
        report.per_backend
    ));
    t.lab.start_backend(1, &exe)?;
    let back_at = Instant::now();
    while scrape(&new_host)?.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b2")]) != 1.0 {
        t.pause(Duration::from_millis(50))?;
        if back_at.elapsed() > Duration::from_secs(5) {
            bail!("b2 did not come back within 5 s");
        }
    }
    t.say(&format!(
        "b2 restarted and back after {} ms (rise 2)",
        back_at.elapsed().as_millis()
    ));

    if keep {
        explore(t)?;
        while !t.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for p in nodes.iter_mut().flatten() {
        p.signal(nix::sys::signal::Signal::SIGTERM)?;
    }
    let mut clean = 0;
    for p in nodes.iter_mut().flatten() {
        if p.wait_timeout(Duration::from_secs(5))?
            .is_some_and(|s| s.success())
        {
            clean += 1;
        }
    }
    t.say(&format!(
        "SIGTERM to the cluster: {clean} of {} nodes released the VIP and exited cleanly",
        nodes.iter().flatten().count()
    ));
    Ok(())
}

/// The node that owns the VIP, waiting a little for a takeover to settle.
fn current_owner(t: &Tour) -> anyhow::Result<usize> {
    let since = Instant::now();
    loop {
        if let [one] = t.lab.owners()[..] {
            return Ok(one);
        }
        if since.elapsed() > Duration::from_secs(5) {
            bail!("no single VIP owner after 5 s: {:?}", t.lab.owners());
        }
        t.pause(Duration::from_millis(20))?;
    }
}

/// Says how to explore the kept lab: real commands, ready to paste.
fn explore(t: &Tour) -> anyhow::Result<()> {
    let client = &t.lab.clients()[0];
    let vip = t.lab.vip();
    let dsrctl = t.exe.with_file_name("dsrctl");
    let dsrctl = if dsrctl.is_file() {
        dsrctl.display().to_string()
    } else {
        "dsrctl".to_owned()
    };
    let endpoints: Vec<String> = t
        .lab
        .nodes()
        .iter()
        .map(|n| format!("http://{}:{}", n.ip, lab::lbnode::ADMIN_PORT))
        .collect();
    let token = t.lab.admin_token_file()?;
    let ctl = format!(
        "ip netns exec {} {dsrctl} --endpoint {} --token-file {}",
        client.netns,
        endpoints.join(","),
        token.display()
    );
    t.say("the lab stays up until Ctrl-C. Try, in another shell (as root):");
    println!("    {ctl} status");
    println!("    {ctl} farm list");
    println!("    {ctl} stats");
    println!(
        "    ip netns exec {} ip neigh show {vip}    # the MAC the client sends VIP frames to",
        client.netns
    );
    let owner = t.lab.owners().first().copied().unwrap_or(0);
    println!(
        "    ip netns pids {} | xargs kill -9    # kill -9 the owner ({}), then run status again",
        t.lab.nodes()[owner].netns,
        t.lab.nodes()[owner].name
    );
    println!(
        "    ip netns list | grep {}    # every namespace of this lab",
        t.lab.prefix()
    );
    Ok(())
}

/// One line of the live view: who owns the VIP, the stream's bytes, the requests so far.
fn live(t: &Tour, stream: &Stream, traffic: &Traffic) -> String {
    let owners: Vec<String> = t
        .lab
        .owners()
        .iter()
        .map(|&i| t.lab.nodes()[i].name.clone())
        .collect();
    let owner = if owners.is_empty() {
        "none".to_owned()
    } else {
        owners.join("+")
    };
    let (answered, failed) = traffic.counts();
    let per: Vec<String> = answered.iter().map(|(b, n)| format!("{b} {n}")).collect();
    format!(
        "  live: VIP owner {owner:<4} | stream {:>5.1} MiB | requests answered {}; {failed} failed",
        stream.received() as f64 / f64::from(1 << 20),
        per.join(", ")
    )
}

/// Waits until the restarted node `node` follows the owner `owner` (same term, not owning);
/// its term.
fn rejoined(t: &Tour, node: usize, owner: usize) -> anyhow::Result<f64> {
    let since = Instant::now();
    loop {
        let theirs = scrape(&t.lab.nodes()[owner]).map(|m| m.get("dsrlb_raft_term", &[]));
        let mine = scrape(&t.lab.nodes()[node]);
        if let (Ok(term), Ok(m)) = (theirs, mine)
            && m.get("dsrlb_raft_term", &[]) == term
            && m.get("dsrlb_vip_owner", &[]) == 0.0
        {
            return Ok(term);
        }
        if since.elapsed() > Duration::from_secs(10) {
            bail!(
                "{} did not rejoin as a follower within 10 s",
                t.lab.nodes()[node].name
            );
        }
        t.pause(Duration::from_millis(50))?;
    }
}

/// Short requests through the VIP on a thread in the client host, each answer counted per
/// backend: what the live view shows, and what measures the takeover.
struct Traffic {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<TrafficLog>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct TrafficLog {
    answered: BTreeMap<String, u64>,
    /// (sent, answered) of each answered request; when each failed one was sent.
    ok: Vec<(Instant, Instant)>,
    failed_at: Vec<Instant>,
}

impl Traffic {
    /// The thread ends by itself after this, whatever happens.
    const LIMIT: Duration = Duration::from_secs(60);

    fn start(client: &Host, web: SocketAddr) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(TrafficLog::default()));
        let (flag, shared, client) = (stop.clone(), log.clone(), client.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Self::LIMIT;
            let run = client.try_run(|| {
                while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let started = Instant::now();
                    // A short connect timeout, retried at once: the kernel's own SYN retry
                    // (1 s) would hide how fast the takeover really was.
                    let answer = lab::HttpConn::connect_from(None, web, Duration::from_millis(50))
                        .and_then(|mut c| {
                            c.set_io_timeout(Duration::from_millis(500))?;
                            c.get("/", false)
                        });
                    let mut log = shared.lock().unwrap_or_else(PoisonError::into_inner);
                    match answer {
                        Ok(r) if r.status == 200 => {
                            let name = r.backend().unwrap_or("?").to_owned();
                            *log.answered.entry(name).or_default() += 1;
                            log.ok.push((started, Instant::now()));
                            drop(log);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        _ => log.failed_at.push(started),
                    }
                }
            });
            if let Err(e) = run {
                eprintln!("dsrlb demo: client traffic: {e}");
            }
        });
        Traffic {
            stop,
            log,
            thread: Some(thread),
        }
    }

    /// Answers per backend, and failures, so far.
    fn counts(&self) -> (BTreeMap<String, u64>, usize) {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        (log.answered.clone(), log.failed_at.len())
    }

    /// When the first request sent after `at` was answered.
    fn first_ok_after(&self, at: Instant) -> Option<Instant> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.ok
            .iter()
            .find(|(sent, _)| *sent >= at)
            .map(|(_, done)| *done)
    }

    /// Requests sent after `at` that failed.
    fn failed_after(&self, at: Instant) -> usize {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.failed_at.iter().filter(|t| **t > at).count()
    }

    fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("dsrlb demo: the client traffic thread panicked");
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.finish();
    }
}
