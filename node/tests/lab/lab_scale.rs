//! Many farms on one node (issue #20, docs/design.md#scale): 2,000 farms on the VIP forward
//! (a sample checked end to end), and setting one farm's backend off takes it out while
//! another farm's traffic goes on without a failure. Prints the start time, the node's
//! memory and how long the backend took to be out, as figures, not as pass/fail. And
//! gratuitous ARP for thousands of VIPs (a farm each) at a takeover: every VIP announced,
//! the first VIPs first, paced rather than in one burst.

use crate::common::{SingleNode, can_run_lab, dsrlb, one_node_lab, quick_get};
use lab::{Capture, LabFarm, wait_for};
use std::collections::{BTreeSet, HashMap};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const FILLER_BASE: u16 = 20_000;

/// Farms beside `web` and `echo`: 1,998, or `DSRLB_SCALE_FARMS` − 2 (up to 40,000 in all)
/// to measure a larger node by hand.
fn fillers() -> u16 {
    std::env::var("DSRLB_SCALE_FARMS")
        .ok()
        .and_then(|v| v.parse::<u16>().ok())
        .map_or(1_998, |n| n.clamp(3, 40_000) - 2)
}

/// Backends per farm: 3, or `DSRLB_SCALE_BACKENDS` (up to 9, the lab's most) by hand.
fn backends_per_farm() -> usize {
    std::env::var("DSRLB_SCALE_BACKENDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(3, |n| n.clamp(3, 9))
}

/// VIPs of the gratuitous-ARP test: 2,000, or `DSRLB_SCALE_VIPS` (up to 20,000) by hand.
fn garp_vips() -> usize {
    std::env::var("DSRLB_SCALE_VIPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(2_000, |n| n.clamp(2, 20_000))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn two_thousand_farms_forward_and_a_change_touches_one() {
    if !can_run_lab() {
        return;
    }
    let fillers = fillers();
    let nb = backends_per_farm();
    let all: Vec<usize> = (0..nb).collect();
    let mut farms = vec![
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]),
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]),
    ];
    farms.extend(
        (0..fillers).map(|i| LabFarm::new(&format!("f{i:04}"), "tcp", FILLER_BASE + i, &all)),
    );
    let started = Instant::now();
    let s = SingleNode::start(nb, 0, &farms);
    let up_after = started.elapsed();
    let vip = s.lab.vip();
    let client = s.lab.clients()[0].clone();
    eprintln!(
        "SCALE farms={} backends_per_filler={nb} start_to_ready_ms={} rss_mib={:.1}",
        farms.len(),
        up_after.as_millis(),
        rss_kib(s.node.pid()) as f64 / 1024.0
    );

    // End to end: HTTP and UDP farms answer from every backend; a sample of the filler
    // farms, whose ports no backend listens on, is answered by a backend's RST (straight
    // to the client: DSR), which a farm the node did not forward would never get.
    let web = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
    let seen: BTreeSet<String> = client.run(|| {
        (0..60)
            .map(|i| quick_get(web).unwrap_or_else(|e| panic!("GET {i}: {e}")))
            .collect()
    });
    assert_eq!(seen.len(), 3, "every backend serves web: {seen:?}");
    let echo = SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
    client.run(|| {
        for i in 0..10 {
            let r = lab::udp_request(echo, format!("ping {i}").as_bytes(), Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("udp {i}: {e}"));
            assert!(r.ends_with(&format!("ping {i}")), "{r:?}");
        }
    });
    let sample: Vec<u16> = (0..fillers).step_by(97).chain([fillers - 1]).collect();
    let refused = client.run(|| {
        sample
            .iter()
            .map(|&i| {
                let to = SocketAddr::from((vip, FILLER_BASE + i));
                match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => Ok(()),
                    other => Err(format!("farm f{i:04} ({to}): {other:?}")),
                }
            })
            .collect::<Vec<_>>()
    });
    for r in &refused {
        assert!(r.is_ok(), "not answered by a backend: {r:?}");
    }

    // One backend of one farm off, while UDP to another farm runs: the UDP farm sees no
    // failure, and `web` stops sending new connections to b1.
    let token = s.lab.admin_token_file().expect("token").to_path_buf();
    let endpoint = format!("http://{}:{}", s.lab.nodes()[0].ip, lab::lbnode::ADMIN_PORT);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let udp = {
        let (client, stop) = (client.clone(), stop.clone());
        std::thread::spawn(move || {
            client.run(|| {
                let mut sent = 0u32;
                let mut failed = Vec::new();
                // Bounded: at most 20 s whatever happens to the test.
                let t0 = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && t0.elapsed() < Duration::from_secs(20)
                {
                    if let Err(e) = lab::udp_request(echo, b"steady", Duration::from_secs(1)) {
                        failed.push(e.to_string());
                    }
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (sent, failed)
            })
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let args = lab::ctl::strings(&[
        "--endpoint",
        &endpoint,
        "--token-file",
        token.to_str().unwrap(),
        "backend",
        "set",
        "web",
        "b1",
        "--state",
        "off",
    ]);
    let t_off = Instant::now();
    lab::ctl::run_in(&client, &args).ok();
    let acked = t_off.elapsed();
    // Out: 30 new connections in a row reach other backends (bounded: 10 s).
    let out_after = client.run(|| {
        let mut streak = 0;
        while streak < 30 {
            assert!(
                t_off.elapsed() < Duration::from_secs(10),
                "b1 still takes new connections"
            );
            match quick_get(web) {
                Ok(b) if b != "b1" => streak += 1,
                _ => streak = 0,
            }
        }
        t_off.elapsed()
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = udp.join().expect("udp loop");
    eprintln!(
        "SCALE off_acked_ms={} web_out_after_ms={} (30 clean requests included) udp_sent={} udp_failed={}",
        acked.as_millis(),
        out_after.as_millis(),
        sent,
        failed.len()
    );
    // CPU per change: the node's CPU over a run of acknowledged state changes (off, up, …
    // of `echo`'s b3), less what it spends idle over the same time. Each change is a
    // Raft write, its apply and a table publish on this node.
    let changes: usize = std::env::var("DSRLB_SCALE_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(20, |n: usize| n.clamp(2, 2_000));
    let idle = cpu_of(s.node.pid(), Duration::from_millis(500), || {});
    let busy = cpu_of(s.node.pid(), Duration::ZERO, || {
        for k in 0..changes {
            let state = if k % 2 == 0 { "off" } else { "up" };
            let mut a = args.clone();
            let n = a.len();
            a[n - 4] = "echo".into();
            a[n - 3] = "b3".into();
            a[n - 1] = state.into();
            lab::ctl::run_in(&client, &a).ok();
        }
    });
    let per_change = (busy.cpu - idle.rate() * busy.wall.as_secs_f64()).max(0.0) / changes as f64;
    eprintln!(
        "SCALE cpu_per_change_ms={:.2} ({changes} changes in {:?}, node CPU {:.1} ms, idle {:.2} ms/s)",
        per_change * 1e3,
        busy.wall,
        busy.cpu * 1e3,
        idle.rate() * 1e3
    );
    assert!(sent > 50, "the UDP loop ran ({sent})");
    assert!(
        failed.is_empty(),
        "the other farm's traffic failed: {failed:?}"
    );
    let log = s.node.read_log();
    assert!(
        !log.contains("ERROR"),
        "{}",
        log.lines()
            .filter(|l| l.contains("ERROR"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// CPU seconds a process used over a span, and the span.
struct CpuSpan {
    cpu: f64,
    wall: Duration,
}

impl CpuSpan {
    fn rate(&self) -> f64 {
        self.cpu / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `pid`'s user + system time in seconds (`/proc/PID/stat` fields 14 and 15).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces: fields count from after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// The CPU `pid` used while `work` ran, or for `at_least` if that is longer.
fn cpu_of(pid: u32, at_least: Duration, work: impl FnOnce()) -> CpuSpan {
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    work();
    if let Some(rest) = at_least.checked_sub(t0.elapsed()) {
        std::thread::sleep(rest);
    }
    CpuSpan {
        cpu: cpu_seconds(pid) - c0,
        wall: t0.elapsed(),
    }
}

/// Farm `i`'s VIP: 198.19.x.y, y in 1..=250.
fn garp_vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, (i / 250) as u8, (1 + i % 250) as u8)
}

#[test]
fn gratuitous_arp_for_thousands_of_vips_is_paced_first_vips_first() {
    if !can_run_lab() {
        return;
    }
    let n = garp_vips();
    let vips: Vec<Ipv4Addr> = (0..n).map(garp_vip).collect();
    let farms: Vec<LabFarm> = vips
        .iter()
        .enumerate()
        .map(|(i, v)| LabFarm {
            vip: Some((*v).into()),
            ..LabFarm::new(&format!("v{i:05}"), "tcp", 80, &[0])
        })
        .collect();
    let lab = one_node_lab(1);
    let c = lab.clients()[0].clone();
    let index: HashMap<Ipv4Addr, usize> = vips.iter().enumerate().map(|(i, v)| (*v, i)).collect();
    // Gratuitous ARP only: sender and target both a VIP of the test. Room for every round.
    let keep = index.clone();
    let wire = Capture::start_filtered(&c.netns, &c.ifname, 2 * n * 4 + 1_000, move |f| {
        f.arp
            .is_some_and(|a| a.sender_ip == a.target_ip && keep.contains_key(&a.sender_ip))
    })
    .expect("capture on the client");
    // The node's start is its takeover: it owns the VIPs as the only voter.
    let node = lab.start_node(0, dsrlb(), &farms).expect("node starts");
    let seen = |frames: &[lab::capture::Frame]| -> usize {
        frames
            .iter()
            .filter_map(|f| f.arp.map(|a| a.sender_ip))
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_for(Duration::from_secs(60), || {
        (seen(&wire.snapshot()) == n).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "{} of {n} VIPs announced within 60 s",
            seen(&wire.snapshot())
        )
    });
    // The reply form follows each request; let the last ones land.
    std::thread::sleep(Duration::from_millis(300));
    let frames = wire.stop().expect("capture stops");
    let node_mac = lab.nodes()[0].mac;
    assert!(
        frames.iter().all(|f| f.src_mac == node_mac),
        "a gratuitous ARP for a test VIP from another MAC"
    );
    // The first round: the order in which VIPs first appear, and when the last did.
    let mut first = Vec::with_capacity(n);
    let mut forms = vec![[false; 2]; n];
    let mut round_end = frames[0].at;
    for f in &frames {
        let a = f.arp.expect("kept ARP only");
        let i = index[&a.sender_ip];
        if !forms[i][0] && !forms[i][1] {
            first.push(i);
            round_end = f.at;
        }
        forms[i][usize::from(a.op == 2)] = true;
    }
    let span = round_end - frames[0].at;
    eprintln!(
        "SCALE garp vips={n} first_round_ms={:.1} frames={}",
        span.as_secs_f64() * 1e3,
        frames.len()
    );
    assert!(
        forms.iter().all(|&[q, r]| q && r),
        "a VIP lacks its request or its reply form"
    );
    assert_eq!(
        first,
        (0..n).collect::<Vec<_>>(),
        "the VIPs were not announced in their order (first VIPs first)"
    );
    // Paced: one step per datapath::GARP_BATCH VIPs. Half the nominal time as the bound,
    // since the capture stamps frames when it reads them; a burst of every VIP at once
    // takes a few milliseconds.
    let nominal = datapath::GARP_STEP * (n.div_ceil(datapath::GARP_BATCH) as u32 - 1);
    assert!(
        span >= nominal / 2,
        "{n} VIPs announced in {span:?}: not paced (at least {nominal:?} expected)"
    );
    drop(node);
}
