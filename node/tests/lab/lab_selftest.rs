//! Self-test of the network-namespace lab (`lab`): hosts reach each other over the
//! bridge, backends serve and are set up by `deploy/backend-setup.sh` exactly as DSR needs
//! (VIP on lo, never claimed by ARP), and a dropped lab leaves nothing behind, also after a
//! panic. Needs root and iproute2; otherwise each test says why it skips.

use crate::common::{can_run_lab, dsrlb};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lab::client::{self, HttpConn};
use lab::{
    BACKEND_HTTP_PORT, BACKEND_READY_TIMEOUT, BACKEND_UDP_PORT, BackendArgs, BackendServer,
    Capture, Lab, LabSpec, LoadSpec, load, load_with,
};

fn setup_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/backend-setup.sh")
}

/// Whether this build's `dsrlb` has the hidden `lab-backend` subcommand (it is wired in
/// `bin/dsrlb.rs`, written separately from the lab).
fn binary_has_lab_backend() -> bool {
    Command::new(dsrlb())
        .args(["lab-backend", "--help"])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
}

/// Starts every backend the way an operator's lab would (`dsrlb lab-backend` in each backend
/// namespace); falls back to in-process servers, saying so, if the binary lacks the
/// subcommand. Returns the in-process servers (empty when the binary was used).
fn start_backends(lab: &mut Lab) -> Vec<BackendServer> {
    if binary_has_lab_backend() {
        lab.start_backends(dsrlb())
            .expect("dsrlb lab-backend starts in every backend");
        return Vec::new();
    }
    eprintln!("note: this dsrlb has no lab-backend subcommand; backends run in-process");
    let servers = lab
        .backends()
        .iter()
        .map(|b| {
            let args = BackendArgs {
                name: b.name.clone(),
                tcp_port: BACKEND_HTTP_PORT,
                udp_port: BACKEND_UDP_PORT,
            };
            BackendServer::start_in(b, &args).expect("in-process backend starts")
        })
        .collect();
    for i in 0..lab.backends().len() {
        lab.wait_backend_ready(i, BACKEND_READY_TIMEOUT)
            .expect("backend ready");
    }
    servers
}

fn netns_names() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn spec(nodes: usize, backends: usize, clients: usize, extra: usize) -> LabSpec {
    LabSpec {
        nodes,
        backends,
        clients,
        client_extra_ips: extra,
        ..LabSpec::default()
    }
}

#[test]
fn backends_answer_over_the_bridge_and_never_claim_the_vip() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&spec(1, 2, 1, 2)).expect("lab builds");
    let vip = lab.vip();
    let c1 = lab.clients()[0].clone();
    let (b1, b2) = (lab.backends()[0].clone(), lab.backends()[1].clone());
    // Capture on the bridge before the client has sent anything, so its ARPs are seen.
    let capture = Capture::start(lab.switch_ns(), lab.bridge()).expect("capture starts");
    let in_process = start_backends(&mut lab);

    // Straight to each backend's own address, through the bridge.
    for b in [&b1, &b2] {
        let addr = b.addr(BACKEND_HTTP_PORT);
        let reply = c1.run(|| client::http_get(addr, "/")).expect("http get");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, format!("backend={}\n", b.name));
        assert_eq!(reply.local.ip(), c1.ip);
    }
    let (a1, a2) = (b1.addr(BACKEND_HTTP_PORT), b2.addr(BACKEND_HTTP_PORT));
    let n = c1
        .run(|| client::download(a1, 3_000_001))
        .expect("download verifies");
    assert_eq!(n, 3_000_001);
    let up = c1.run(|| client::upload(a2, 2_000_003)).expect("upload");
    assert_eq!(up, "ok 2000003 backend=b2");
    let udp_addr = b1.addr(BACKEND_UDP_PORT);
    let echo = c1
        .run(|| client::udp_request(udp_addr, b"hello", Duration::from_secs(2)))
        .expect("udp echo");
    assert_eq!(echo, "backend=b1 hello");

    // Keep-alive: several requests on one connection, from an extra source address.
    let extra = lab.client_extra_ips()[1];
    assert_eq!(extra, Ipv4Addr::new(198, 18, 0, 42));
    let replies = c1.run(|| -> Result<Vec<String>, lab::LabError> {
        let mut conn = HttpConn::connect_from(Some(extra), a1, client::CONNECT_TIMEOUT)?;
        assert_eq!(conn.local_addr().ip(), extra);
        (0..3)
            .map(|_| conn.get("/", true).map(|r| r.body))
            .collect()
    });
    assert_eq!(
        replies.expect("keep-alive requests"),
        vec!["backend=b1\n"; 3]
    );

    // The client asks for the VIP; nobody may answer (no node runs a datapath here).
    let vip_addr = SocketAddr::from((vip, 80));
    let attempt = c1.run(|| HttpConn::connect_from(None, vip_addr, Duration::from_millis(1500)));
    assert!(
        attempt.is_err(),
        "nothing may accept a connection to the VIP"
    );
    let frames = capture.stop().expect("capture stops");

    let asked: Vec<_> = frames
        .iter()
        .filter(|f| f.is_arp_request_for(vip) && f.src_mac == c1.mac)
        .collect();
    assert!(
        !asked.is_empty(),
        "the client's ARP request for the VIP was captured"
    );
    let claims: Vec<_> = frames
        .iter()
        .filter(|f| f.arp.is_some_and(|a| a.sender_ip == vip))
        .collect();
    assert!(
        claims.is_empty(),
        "nobody may claim the VIP in ARP: {claims:?}"
    );
    // Control: the same capture does see a backend answering ARP for its own address, so
    // the absence above is not blindness.
    assert!(
        frames
            .iter()
            .any(|f| f.is_arp_reply_for(b1.ip) && f.src_mac == b1.mac),
        "b1's ARP reply for its own address was captured"
    );

    if !in_process.is_empty() {
        eprintln!("note: process checks (log, SIGTERM, restart) need dsrlb lab-backend");
        return;
    }
    let b1_log = lab.backend_process(0).expect("b1 runs").read_log();
    assert!(b1_log.contains("lab-backend b1 listening"), "{b1_log}");

    // SIGTERM ends a backend cleanly (exit 0), as an operator's stop would.
    let b2_proc = lab.backend_process(1).expect("b2 runs");
    b2_proc
        .signal(nix::sys::signal::Signal::SIGTERM)
        .expect("term");
    let status = b2_proc
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("b2 exits on SIGTERM");
    assert!(
        status.success(),
        "b2 exit: {status}; {}",
        b2_proc.read_log()
    );

    // A killed backend stops answering; a restarted one answers again.
    lab.stop_backend(0).expect("stop b1");
    assert!(c1.run(|| client::http_get(a1, "/")).is_err());
    lab.start_backend(0, dsrlb()).expect("restart b1");
    let again = c1.run(|| client::http_get(a1, "/")).expect("b1 back");
    assert_eq!(again.backend(), Some("b1"));
}

#[test]
fn backend_setup_is_applied_idempotent_and_undoable() {
    if !can_run_lab() {
        return;
    }
    let lab = Lab::build(&spec(1, 1, 0, 0)).expect("lab builds");
    let b1 = lab.backends()[0].clone();
    let vip_on_lo = |b: &lab::Host| {
        b.ip(&["addr", "show", "dev", "lo"])
            .expect("ip addr")
            .contains(&format!("inet {}/32 ", lab.vip()))
    };
    let arp = |b: &lab::Host| {
        ["all", "eth0"].map(|i| {
            (
                b.sysctl(&format!("net/ipv4/conf/{i}/arp_ignore"))
                    .expect("read"),
                b.sysctl(&format!("net/ipv4/conf/{i}/arp_announce"))
                    .expect("read"),
            )
        })
    };
    let set = ("1".to_owned(), "2".to_owned());
    assert!(vip_on_lo(&b1), "the lab ran backend-setup.sh: VIP on lo");
    assert_eq!(arp(&b1), [set.clone(), set.clone()]);
    assert_eq!(
        lab.nodes()[0].sysctl("net/ipv4/ip_forward").expect("read"),
        "0"
    );
    assert!(!vip_on_lo(&lab.nodes()[0]), "no node holds the VIP");

    let second = lab
        .run_backend_setup(&b1, &[])
        .expect("second run succeeds");
    assert!(second.contains("nothing to change"), "second run: {second}");

    let undo = lab.run_backend_setup(&b1, &["--undo"]).expect("undo");
    assert!(!vip_on_lo(&b1), "undo removed the VIP: {undo}");
    let default = ("0".to_owned(), "0".to_owned());
    assert_eq!(arp(&b1), [default.clone(), default]);

    let again = lab
        .run_backend_setup(&b1, &["--undo"])
        .expect("second undo");
    assert!(again.contains("nothing to undo"), "second undo: {again}");

    let redo = lab.run_backend_setup(&b1, &[]).expect("setup again");
    assert!(vip_on_lo(&b1), "{redo}");
    assert_eq!(arp(&b1), [set.clone(), set]);
}

#[test]
fn backend_setup_rejects_bad_usage() {
    // Argument checks come before anything is touched, so this needs no root.
    for args in [
        &[][..],
        &["198.18.0"][..],
        &["256.1.1.1"],
        &["01.2.3.4"],
        &["198.18.0.100", "--bogus"],
        &["198.18.0.100", "198.18.0.101"],
    ] {
        let out = Command::new("sh")
            .arg(setup_script())
            .args(args)
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(2), "args {args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("usage: backend-setup.sh VIP [--persist] [--undo]"),
            "{err}"
        );
    }
}

#[test]
fn in_process_backend_answers_on_the_vip_like_a_dsr_backend() {
    if !can_run_lab() {
        return;
    }
    let lab = Lab::build(&spec(0, 1, 1, 0)).expect("lab builds");
    let (b1, c1) = (lab.backends()[0].clone(), lab.clients()[0].clone());
    let args = BackendArgs {
        name: b1.name.clone(),
        tcp_port: BACKEND_HTTP_PORT,
        udp_port: BACKEND_UDP_PORT,
    };
    let server = BackendServer::start_in(&b1, &args).expect("in-process backend");
    lab.wait_backend_ready(0, BACKEND_READY_TIMEOUT)
        .expect("the in-process backend answers as b1");
    // Play the load balancer's part by hand: the client sends VIP traffic to b1's MAC.
    let vip = lab.vip().to_string();
    c1.ip(&[
        "neigh",
        "replace",
        &vip,
        "lladdr",
        &b1.mac.to_string(),
        "dev",
        "eth0",
    ])
    .expect("static neighbour");
    let capture = Capture::start(&b1.netns, "eth0").expect("capture on b1");

    let via_vip = SocketAddr::from((lab.vip(), BACKEND_HTTP_PORT));
    let reply = c1
        .run(|| client::http_get(via_vip, "/"))
        .expect("http via VIP");
    assert_eq!(reply.body, "backend=b1\n");
    let n = c1
        .run(|| client::download(via_vip, 1_000_000))
        .expect("download via VIP");
    assert_eq!(n, 1_000_000);
    // The client's UDP socket is connected to the VIP: the echo only arrives if b1 answers
    // from the VIP, not from its own address.
    let udp_vip = SocketAddr::from((lab.vip(), BACKEND_UDP_PORT));
    let echo = c1
        .run(|| client::udp_request(udp_vip, b"dsr", Duration::from_secs(2)))
        .expect("udp echo from the VIP");
    assert_eq!(echo, "backend=b1 dsr");

    let frames = capture.stop().expect("capture stops");
    let from_vip = frames
        .iter()
        .filter(|f| f.outgoing() && f.is_ipv4(lab.vip(), c1.ip))
        .count();
    assert!(
        from_vip > 0,
        "b1 replied from the VIP straight to the client"
    );
    assert!(
        !frames
            .iter()
            .any(|f| f.arp.is_some_and(|a| a.sender_ip == lab.vip())),
        "b1 never put the VIP in an ARP packet"
    );
    server.stop().expect("backend stops cleanly");
}

#[test]
fn processes_run_inside_their_host_and_obey_signals() {
    if !can_run_lab() {
        return;
    }
    let lab = Lab::build(&spec(1, 0, 0, 0)).expect("lab builds");
    let n1 = &lab.nodes()[0];
    let mut show = n1
        .spawn(Path::new("ip"), ["-4", "addr", "show", "dev", "eth0"])
        .expect("spawn ip");
    let status = show
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("ip exits");
    assert!(status.success());
    assert!(
        show.read_log().contains("inet 198.18.0.11/24"),
        "{}",
        show.read_log()
    );

    use nix::sys::signal::Signal;
    let mut sleeper = n1.spawn(Path::new("sleep"), ["30"]).expect("spawn sleep");
    sleeper.signal(Signal::SIGSTOP).expect("stop");
    sleeper.signal(Signal::SIGCONT).expect("cont");
    assert!(sleeper.try_wait().expect("poll").is_none(), "still running");
    sleeper.signal(Signal::SIGTERM).expect("term");
    let status = sleeper
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("sleep ends on SIGTERM");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn drop_removes_everything_even_after_a_panic() {
    if !can_run_lab() {
        return;
    }
    let seen = std::sync::Mutex::new(None);
    let outcome = std::panic::catch_unwind(|| {
        let lab = Lab::build(&spec(1, 1, 1, 0)).expect("lab builds");
        let names = netns_names();
        for ns in lab.namespaces() {
            assert!(
                names.contains(ns.as_str()),
                "{ns} exists while the lab lives"
            );
        }
        let sleeper = lab.backends()[0]
            .spawn(Path::new("sleep"), ["60"])
            .expect("spawn");
        *seen.lock().expect("lock") =
            Some((lab.prefix().to_owned(), lab.dir().to_owned(), sleeper.pid()));
        // Handed out of the closure on purpose: the lab must kill it, not its drop.
        std::mem::forget(sleeper);
        lab.clients()[0].run(|| panic!("a test assertion fails inside the lab"));
    });
    assert!(outcome.is_err(), "the closure's panic propagates");
    let (prefix, dir, pid) = seen.lock().expect("lock").take().expect("lab was built");
    let left: Vec<_> = netns_names()
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!dir.exists(), "temp dir {} left behind", dir.display());
    // The process in the backend namespace was killed (it may linger only as a zombie).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "process {pid} survived the lab: {stat}"
    );
}

#[test]
fn concurrent_labs_get_distinct_prefixes() {
    if !can_run_lab() {
        return;
    }
    let labs: Vec<Lab> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Lab::build(&spec(0, 1, 1, 0))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic").expect("lab builds"))
            .collect()
    });
    let mut prefixes: Vec<&str> = labs.iter().map(|l| l.prefix()).collect();
    prefixes.sort_unstable();
    prefixes.dedup();
    assert_eq!(prefixes.len(), 3, "{prefixes:?}");
    for lab in &labs {
        let c1 = lab.clients()[0].clone();
        let b1 = lab.backends()[0].addr(9);
        // Each lab is its own segment: b1 answers (refuses port 9) inside its own lab only.
        let err = c1
            .run(|| HttpConn::connect(b1))
            .expect_err("nothing listens on 9");
        assert!(err.to_string().contains("refused"), "{err}");
    }
}

#[test]
fn load_generator_counts_answers_per_backend() {
    if !can_run_lab() {
        return;
    }
    let mut lab = Lab::build(&spec(0, 1, 1, 2)).expect("lab builds");
    let _in_process = start_backends(&mut lab);
    let c1 = lab.clients()[0].clone();
    let b1 = lab.backends()[0].addr(BACKEND_HTTP_PORT);
    for keepalive in [true, false] {
        let mut load = LoadSpec::new(b1, 3, Duration::from_millis(700), keepalive);
        load.max_requests = 2_000;
        load.sources = lab.client_extra_ips().to_vec();
        let report = c1.run(|| load_with(&load));
        assert_eq!(
            report.errors, 0,
            "keepalive={keepalive}: {:?}",
            report.first_error
        );
        assert!(
            report.requests > 0 && report.requests <= 2_000,
            "{report:?}"
        );
        assert_eq!(report.per_backend.get("b1"), Some(&report.requests));
        assert_eq!(report.per_backend.len(), 1, "{report:?}");
        assert!(report.p50 <= report.p99, "{report:?}");
    }
    // Nothing listens on port 9: every request fails, and the run still ends on time.
    let refused = c1.run(|| {
        load(
            lab.backends()[0].addr(9),
            2,
            Duration::from_millis(300),
            true,
        )
    });
    assert_eq!(refused.requests, 0);
    assert!(refused.errors > 0, "{refused:?}");
    assert!(refused.first_error.is_some_and(|e| e.contains("refused")));
}
