//! `dsrlb demo`: a narrated tour of DSR load balancing in a lab it builds itself — network
//! namespaces for a client, a dsrlb node and three backends on one bridge — then tears down.
//!
//! It runs the real binary (`dsrlb run`, `dsrlb lab-backend`) in the lab, so what it shows is
//! what an operator gets. Ctrl-C at any point cleans everything up. Until the cluster issue
//! lands the lab has one node; the takeover part of the tour comes with it.

use crate::lab::{self, Lab, LabFarm, LabSpec, scrape};
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
        nodes: 1,
        backends: 3,
        clients: 1,
        ..LabSpec::default()
    };
    let started = Instant::now();
    println!("dsrlb demo: Direct Server Return load balancing in a throwaway lab\n");
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
    t.say(&format!(
        "lab {}: a bridge in namespace {}, client {} ({}), node {} ({}), backends {}",
        t.lab.prefix(),
        t.lab.switch_ns(),
        t.lab.clients()[0].name,
        t.lab.clients()[0].ip,
        t.lab.nodes()[0].name,
        t.lab.nodes()[0].ip,
        t.lab
            .backends()
            .iter()
            .map(|b| format!("{} ({})", b.name, b.ip))
            .collect::<Vec<_>>()
            .join(", ")
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
    let mut node = t
        .lab
        .start_node(0, &exe, &farms)
        .context("starting dsrlb on the node")?;
    let n1 = t.lab.nodes()[0].clone();
    t.say(&format!(
        "dsrlb runs on {} and owns {vip}: it answers ARP for it and forwards tcp/80 and udp/5353",
        n1.name
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

    let before = scrape(&n1)?.sum("dsrlb_bytes_total");
    let size: u64 = 32 << 20;
    let got = client
        .run(|| lab::download(web, size))
        .context("downloading through the VIP")?;
    let forwarded = scrape(&n1)?.sum("dsrlb_bytes_total") - before;
    t.say(&format!(
        "a {} MiB download through the VIP: the client got {} MiB, the node forwarded only {:.1} KiB \
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

    t.say("stopping backend b2's server: the health check (300 ms, fall 2) takes it out");
    t.lab.stop_backend(1)?;
    let out_at = Instant::now();
    while scrape(&n1)?.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b2")]) != 0.0 {
        t.pause(Duration::from_millis(50))?;
        if out_at.elapsed() > Duration::from_secs(5) {
            bail!("b2 was not taken out within 5 s");
        }
    }
    let report = client.run(|| lab::load(web, 4, Duration::from_secs(1), false));
    t.say(&format!(
        "b2 out after {} ms; 1 s of load: {} requests, {} errors, served by {:?}",
        out_at.elapsed().as_millis(),
        report.requests,
        report.errors,
        report.per_backend
    ));
    t.lab.start_backend(1, &exe)?;
    let back_at = Instant::now();
    while scrape(&n1)?.get("dsrlb_backend_up", &[("farm", "web"), ("backend", "b2")]) != 1.0 {
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
        println!(
            "    ip netns exec {} curl -s http://127.0.0.1:7102/metrics | grep dsrlb_",
            n1.netns
        );
        println!("    ip netns exec {} ip neigh", client.netns);
        while !t.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    node.signal(nix::sys::signal::Signal::SIGTERM)?;
    let status = node.wait_timeout(Duration::from_secs(5))?;
    t.say(&format!(
        "SIGTERM to dsrlb: it released the VIP and exited ({})",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "still running; killed".into())
    ));
    Ok(())
}
