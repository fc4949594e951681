//! `dsrlb demo`: a narrated tour of clustered DSR load balancing in a lab it builds itself —
//! network namespaces for a client, three dsrlb nodes and three backends on one bridge: load
//! balancing, the DSR proof, a kill -9 of the VIP owner in the middle of a running stream,
//! the takeover, health checks — then tears everything down.
//!
//! It runs the real binary (`dsrlb run`, `dsrlb lab-backend`) in the lab, so what it shows is
//! what an operator gets. Ctrl-C at any point cleans everything up.

use crate::lab::{self, Lab, LabFarm, LabProcess, LabSpec, NodeOptions, Stream, scrape};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the Ctrl-C handler")?;
    }
    let exe = std::env::current_exe().context("locating the dsrlb binary")?;
    let spec = LabSpec {
        nodes: 3,
        backends: 3,
        clients: 1,
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
    t.say(&format!(
        "backends hold VIP {vip} on lo with arp_ignore=1, arp_announce=2 (deploy/backend-setup.sh)"
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
    let udp = std::net::SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    let echo = client
        .run(|| lab::udp_request(udp, b"hello", Duration::from_secs(1)))
        .context("UDP through the VIP")?;
    t.say(&format!("UDP to {udp} answered: {:?}", echo.trim()));

    // The takeover, in the middle of a running stream.
    let stream = Stream::start(&client, web, 48 << 20, 8 << 20);
    t.pause(Duration::from_millis(1500))?;
    t.say(&format!(
        "a 48 MiB stream runs through the VIP at 8 MiB/s ({:.1} MiB so far); kill -9 of {} now",
        stream.received() as f64 / f64::from(1 << 20),
        owner_host.name
    ));
    let killed_at = Instant::now();
    if let Some(mut p) = nodes[owner].take() {
        p.kill()?;
    }
    let (outage, failed) = client.run(|| {
        let mut failed = 0u32;
        loop {
            // A short connect timeout, retried at once: the kernel's own SYN retry (1 s)
            // would hide how fast the takeover really was.
            let answered = lab::HttpConn::connect_from(None, web, Duration::from_millis(50))
                .and_then(|mut c| c.get("/", false));
            match answered {
                Ok(r) if r.status == 200 => return (killed_at.elapsed(), failed),
                _ => failed += 1,
            }
            if killed_at.elapsed() > Duration::from_secs(10) {
                return (killed_at.elapsed(), failed);
            }
        }
    });
    let new_owner = current_owner(t)?;
    t.say(&format!(
        "{} took over: first request answered {} ms after the kill ({failed} tries failed meanwhile); \
         the stream is at {:.1} MiB and still running",
        t.lab.nodes()[new_owner].name,
        outage.as_millis(),
        stream.received() as f64 / f64::from(1 << 20)
    ));
    let streamed = stream.join().context("the stream across the takeover")?;
    t.say(&format!(
        "the stream finished: {} MiB, every byte verified — the new owner forwarded its ACKs to the \
         same backend (same replicated state, same Maglev table)",
        streamed >> 20
    ));
    nodes[owner] = Some(
        t.lab
            .spawn_node(owner, &exe, &farms, &NodeOptions::default())?,
    );
    t.say(&format!(
        "{} restarted from its Raft log and rejoined as a follower",
        owner_host.name
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
        t.say("the lab stays up until Ctrl-C. Try, in another shell:");
        println!("    ip netns exec {} curl -s http://{vip}/", client.netns);
        for n in t.lab.nodes() {
            println!(
                "    ip netns exec {} curl -s http://127.0.0.1:{}/metrics | grep -E 'vip_owner|raft_term'",
                n.netns,
                lab::METRICS_PORT
            );
        }
        println!("    ip netns exec {} ip neigh", client.netns);
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
