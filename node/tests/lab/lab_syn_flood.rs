//! A spoofed-source SYN flood at the VIP (issue #16), inside the lab and bounded in count
//! and time: an idle established connection keeps its entry in the flow table, so when its
//! backend is drained mid-flood the connection still reaches it (a flood that evicted it
//! would send its next segment through Maglev to the other backend, which resets it); new
//! connections of real clients keep succeeding; and at a `srcip` farm no spoofed source is
//! pinned, so the flood writes nothing to the Raft log.
//!
//! The node runs the smallest flow table (`flow_capacity = 1024` per worker) so that the
//! flood replaces every half-open entry many times over on any machine. The idle-connection
//! test runs twice: on the workers (`fast_path = "off"`, their flow table's SLRU) and on
//! the kernel fast path, where a SYN writes no flow entry at all.

use crate::admin_support::{client_with, endpoint, in_client};
use crate::common::{can_run_lab, dsrlb};
use etherparse::PacketBuilder;
use lab::{HttpConn, Lab, LabFarm, LabSpec, NodeOptions, scrape};
use proto::admin::v1 as pb;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Spoofed SYNs sent in all, in chunks of `CHUNK` paced to about `RATE` per second.
const FLOOD: usize = 200_000;
const CHUNK: usize = 5_000;
const RATE: usize = 50_000;
/// Real clients' new connections made during the flood.
const LEGIT: usize = 100;

/// `n` SYNs to `vip:port` from spoofed sources in 198.19.0.0/16 (inside the lab's range),
/// each from its own address and port, addressed to `node_mac`.
fn spoofed_syns(
    n: usize,
    offset: usize,
    from_mac: [u8; 6],
    node_mac: [u8; 6],
    vip: Ipv4Addr,
    port: u16,
) -> Vec<Vec<u8>> {
    (offset..offset + n)
        .map(|i| {
            let i = u32::try_from(i).expect("bounded flood");
            let src = Ipv4Addr::from_bits(0xc613_0000 | (i & 0xffff));
            let sport = 1024 + u16::try_from((i >> 16) & 0x3fff).expect("14 bits");
            let b = PacketBuilder::ethernet2(from_mac, node_mac)
                .ipv4(src.octets(), vip.octets(), 64)
                .tcp(sport, port, i.wrapping_mul(2_654_435_761), 1024)
                .syn();
            let mut f = Vec::with_capacity(b.size(0));
            b.write(&mut f, &[]).expect("syn frame");
            f
        })
        .collect()
}

/// Floods from client `c` (its own thread), paced, for at most `FLOOD` frames or 20 s.
fn start_flood(lab: &Lab, c: usize, port: u16) -> std::thread::JoinHandle<usize> {
    start_flood_at(lab, c, port, Some(RATE), FLOOD)
}

/// Floods from client `c`: `total` frames at about `rate` per second (`None`: as fast as
/// the lab takes them), for at most 20 s.
fn start_flood_at(
    lab: &Lab,
    c: usize,
    port: u16,
    rate: Option<usize>,
    total: usize,
) -> std::thread::JoinHandle<usize> {
    let (host, node_mac, vip) = (lab.clients()[c].clone(), lab.nodes()[0].mac.0, lab.vip());
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        while sent < total && started.elapsed() < Duration::from_secs(20) {
            let frames = spoofed_syns(
                CHUNK.min(total - sent),
                sent,
                host.mac.0,
                node_mac,
                vip,
                port,
            );
            sent += lab::inject(&host.netns, &host.ifname, &frames).expect("inject");
            let Some(rate) = rate else { continue };
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        sent
    })
}

fn lab_with(farms: &[LabFarm], fast_path: &str) -> (Lab, lab::LabProcess) {
    let mut lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 2,
        clients: 2,
        client_extra_ips: 8,
        ..LabSpec::default()
    })
    .expect("lab builds");
    lab.start_backends(dsrlb()).expect("backends start");
    let opts = NodeOptions {
        datapath_extra: format!("flow_capacity = 1024\nfast_path = {fast_path:?}\n"),
        ..NodeOptions::default()
    };
    let mut procs = vec![lab.spawn_node(0, dsrlb(), farms, &opts).unwrap()];
    lab.wait_ready(&mut procs, &[0], farms, Duration::from_secs(15))
        .expect("node owns the VIP");
    let node = procs.pop().expect("one node");
    (lab, node)
}

/// New connections from every client address, one request each; how many were answered.
fn legit_connections(lab: &Lab, n: usize) -> usize {
    let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    let mut sources = vec![lab.clients()[0].ip];
    sources.extend_from_slice(lab.client_extra_ips());
    lab.clients()[0].run(|| {
        (0..n)
            .filter(|i| {
                let src = sources[i % sources.len()];
                HttpConn::connect_from(Some(src), addr, Duration::from_secs(3))
                    .and_then(|mut c| c.get("/", false))
                    .is_ok()
            })
            .count()
    })
}

#[test]
fn an_idle_connection_outlives_a_syn_flood_and_a_drain_of_its_backend() {
    idle_connection_outlives_a_flood(false);
}

#[test]
fn on_the_kernel_fast_path_an_idle_connection_outlives_a_syn_flood_and_a_drain() {
    if lab::lab_io() == "af_xdp" {
        eprintln!("SKIPPED: the fast path runs with AF_PACKET only (DSRLB_LAB_IO=af_xdp)");
        return;
    }
    idle_connection_outlives_a_flood(true);
}

fn idle_connection_outlives_a_flood(fast: bool) {
    if !can_run_lab() {
        return;
    }
    let farms = [LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1])];
    let (lab, _node) = lab_with(&farms, if fast { "on" } else { "off" });
    let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    let client = lab.clients()[0].clone();
    // The idle connection: one request, then silence until the flood is over.
    let mut idle = client.run(|| HttpConn::connect(addr)).expect("connect");
    let first = client
        .run(|| idle.get("/", true))
        .expect("first request")
        .backend()
        .expect("backend header")
        .to_owned();

    let flood = start_flood(&lab, 1, lab::BACKEND_HTTP_PORT);
    std::thread::sleep(Duration::from_secs(1));
    // Mid-flood: drain the idle connection's backend. New flows avoid it from now on.
    let (e, token) = (endpoint(&lab, 0), lab.admin_token().unwrap());
    let drained = first.clone();
    in_client(&lab, || async move {
        let mut c = client_with(e, Some(token)).await;
        c.update_backend(pb::UpdateBackendRequest {
            farm: "web".into(),
            name: drained,
            state: Some("drain".into()),
            ..Default::default()
        })
        .await
        .expect("drain");
    });
    let answered = legit_connections(&lab, LEGIT);
    let sent = flood.join().expect("flood thread");

    // The idle connection, untouched during the flood, is still served by its backend.
    let again = client.run(|| idle.get("/", true));
    let m = scrape(&lab.nodes()[0]).expect("metrics");
    let half_open = m.get("dsrlb_flow_table_evictions_total", &[("kind", "half_open")]);
    let established = m.get(
        "dsrlb_flow_table_evictions_total",
        &[("kind", "established")],
    );
    let entries = m.get("dsrlb_flow_table_entries", &[]);
    eprintln!(
        "flood: {sent} SYNs; legit {answered}/{LEGIT}; evictions half_open {half_open} established {established}; entries {entries}"
    );
    assert_eq!(sent, FLOOD, "the whole flood left the client");
    let again = again.expect("the idle connection survived the flood and the drain");
    assert_eq!(
        again.backend(),
        Some(first.as_str()),
        "still served by {first}"
    );
    assert!(
        answered * 100 >= LEGIT * 99,
        "only {answered} of {LEGIT} new connections succeeded during the flood"
    );
    if fast {
        // The kernel forwarded the flood; the workers never saw it, and no SYN wrote a flow.
        let kernel = m.get(
            "dsrlb_datapath_info",
            &[("io", "af_packet"), ("mode", "ring"), ("fast_path", "tc")],
        );
        assert_eq!(kernel, 1.0, "the fast path runs");
        let forwarded = m.sum("dsrlb_packets_total");
        assert!(
            forwarded >= FLOOD as f64,
            "{forwarded} frames forwarded, fewer than the flood"
        );
        assert_eq!(
            half_open + established,
            0.0,
            "no SYN reached the workers' table"
        );
        return;
    }
    // The flood churned the table many times over, and only through half-open entries.
    assert!(
        half_open > (FLOOD / 2) as f64,
        "{half_open} half-open evictions"
    );
    assert_eq!(established, 0.0);
    assert!(
        entries <= 2.0 * 1024.0,
        "{entries} entries in two 1024-flow tables"
    );
}

#[test]
fn a_syn_flood_at_a_srcip_farm_pins_no_spoofed_source() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1]).with_persistence("300s");
    let (lab, _node) = lab_with(&[web], "auto");
    let node = lab.nodes()[0].clone();
    let batches_before = scrape(&node)
        .unwrap()
        .get("dsrlb_persistence_batches_total", &[]);
    let flood = start_flood(&lab, 1, lab::BACKEND_HTTP_PORT);
    let answered = legit_connections(&lab, LEGIT);
    let sent = flood.join().expect("flood thread");
    // Real clients' pins are written within a batch interval or two.
    let legit_sources = 1 + lab.client_extra_ips().len();
    let pinned = lab::wait_for(Duration::from_secs(5), || {
        let n = scrape(&node)
            .ok()?
            .get("dsrlb_persistence_entries", &[("farm", "web")]);
        (n >= legit_sources as f64).then_some(n)
    });
    let m = scrape(&node).unwrap();
    let created = m.get("dsrlb_persistence_applied_total", &[("outcome", "created")]);
    let batches = m.get("dsrlb_persistence_batches_total", &[]) - batches_before;
    eprintln!(
        "flood: {sent} SYNs; legit {answered}/{LEGIT}; pins {pinned:?}, created {created}, batches {batches}"
    );
    assert_eq!(sent, FLOOD);
    assert!(
        answered * 100 >= LEGIT * 99,
        "{answered} of {LEGIT} answered"
    );
    assert_eq!(
        pinned,
        Some(legit_sources as f64),
        "every real client pinned, no spoofed source"
    );
    assert_eq!(created, legit_sources as f64);
    // A handful of batches carried the real clients' pins; the flood added none.
    assert!(batches <= 20.0, "{batches} pin batches committed");
}

/// The measurement behind issue #16's note, not a test (`--ignored` to run it): real
/// clients' new connections (connect + one request, 1 s to connect) during spoofed SYN
/// floods of rising rate, 4 s each, the last as fast as the lab injects; one table row per
/// rate with the success rate, the p50/p99 time of a whole exchange (connect, request,
/// reply, close) and the rate the flood reached.
///
/// Run once per path (`fast_path` off: the workers; on: the kernel), with the owner's CPU:
/// the dsrlb process's (user + system) and the machine's busy share, both in cores.
#[test]
#[ignore = "a measurement: prints a table"]
fn measure_legit_connects_against_syn_flood_rates() {
    if !can_run_lab() {
        return;
    }
    for fast in ["off", "on"] {
        eprintln!("fast_path = {fast:?}");
        measure_against_floods(fast);
    }
}

/// utime + stime of `pid`, in seconds.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// (busy, total) jiffies of the whole machine.
fn machine_cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn measure_against_floods(fast: &str) {
    let (lab, node) = lab_with(
        &[LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1])],
        fast,
    );
    let pid = node.pid();
    let addr = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    let mut sources = vec![lab.clients()[0].ip];
    sources.extend_from_slice(lab.client_extra_ips());
    const SECONDS: usize = 4;
    let mut rows = Vec::new();
    for rate in [Some(0), Some(10_000), Some(25_000), Some(50_000), None] {
        let total = rate.map_or(400_000, |r| r * SECONDS);
        let cpu0 = process_cpu(pid);
        let (busy0, all0) = machine_cpu();
        let started = Instant::now();
        let flood =
            (total > 0).then(|| start_flood_at(&lab, 1, lab::BACKEND_HTTP_PORT, rate, total));
        let mut times: Vec<Duration> = Vec::new();
        let mut tried = 0;
        lab.clients()[0].run(|| {
            while started.elapsed() < Duration::from_secs(SECONDS as u64) {
                let src = sources[tried % sources.len()];
                tried += 1;
                let t = Instant::now();
                let ok = HttpConn::connect_from(Some(src), addr, Duration::from_secs(1))
                    .and_then(|mut c| c.get("/", false))
                    .is_ok();
                if ok {
                    times.push(t.elapsed());
                }
            }
        });
        let sent = flood.map_or(0, |f| f.join().expect("flood thread"));
        let flood_secs = started.elapsed().as_secs_f64();
        let owner_cores = (process_cpu(pid) - cpu0) / flood_secs;
        let (busy1, all1) = machine_cpu();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let machine_cores = cpus * (busy1 - busy0) / (all1 - all0).max(1.0);
        times.sort_unstable();
        let pct = |p: usize| {
            times
                .get((times.len() * p / 100).min(times.len().saturating_sub(1)))
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        rows.push(format!(
            "| {:>9} | {:>9.0} | {:>4}/{:<4} ({:>5.1} %) | {:>7.2} | {:>7.2} | {:>5.2} | {:>5.2} |",
            rate.map_or("max".to_string(), |r| r.to_string()),
            sent as f64 / flood_secs,
            times.len(),
            tried,
            100.0 * times.len() as f64 / tried.max(1) as f64,
            pct(50),
            pct(99),
            owner_cores,
            machine_cores,
        ));
    }
    let m = scrape(&lab.nodes()[0]).expect("metrics");
    eprintln!(
        "| flood pps asked | reached | legit ok/tried | p50 ms (connect+request) | p99 ms | dsrlb cores | machine cores |\n|---|---|---|---|---|---|---|\n{}\nring_full drops {}",
        rows.join("\n"),
        m.get("dsrlb_drops_total", &[("reason", "ring_full")])
    );
}
