//! Check kinds against real servers in the backends' namespaces (issue #15): an http backend
//! answering 503 goes down and comes back on 200, a body without the expected text goes
//! down, https works with a self-signed certificate, a udp service that stops replying goes
//! down, and an exec check is up on exit 0, down on non-zero, and a hanging program is killed
//! at the timeout.

use crate::common::{backend_up, can_run_lab, dsrlb, one_node_lab, wait_backend_up};
use lab::{Lab, LabFarm, scrape};
use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const INTERVAL_MS: u64 = 200;
const RISE: u32 = 2;
const FALL: u32 = 3;
const HTTP_PORT: u16 = 8081;
const HTTPS_PORT: u16 = 8443;
const UDP_PORT: u16 = 5454;

/// What the test servers answer; changed by the test while they run.
struct Answer {
    status: Mutex<(u16, String)>,
    udp_replies: AtomicBool,
    stop: AtomicBool,
}

/// Test servers in one backend's namespace, stopped on drop.
struct Servers {
    answer: Arc<Answer>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.answer.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn respond(stream: &mut dyn ReadWrite, answer: &Answer) {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let (status, body) = answer.status.lock().unwrap().clone();
    let reply = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes());
    let _ = stream.flush();
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

fn serve_tcp(
    listener: TcpListener,
    answer: Arc<Answer>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !answer.stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    match &tls {
                        None => respond(&mut { s }, &answer),
                        Some(cfg) => {
                            let conn = rustls::ServerConnection::new(cfg.clone()).unwrap();
                            let mut tls = rustls::StreamOwned::new(conn, s);
                            respond(&mut tls, &answer);
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        }
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    })
}

fn serve_udp(sock: UdpSocket, answer: Arc<Answer>) -> JoinHandle<()> {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !answer.stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = sock.recv_from(&mut buf)
                && answer.udp_replies.load(Ordering::Relaxed)
                && &buf[..n] == b"ping"
            {
                let _ = sock.send_to(b"pong", from);
            }
        }
    })
}

fn self_signed() -> Arc<rustls::ServerConfig> {
    let cert = rcgen::generate_simple_self_signed(vec!["backend.lab".into()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap(),
    )
}

fn start_servers(lab: &Lab, backend: usize) -> Servers {
    let answer = Arc::new(Answer {
        status: Mutex::new((200, "ok".into())),
        udp_replies: AtomicBool::new(true),
        stop: AtomicBool::new(false),
    });
    let (http, https, udp) = lab.backends()[backend].run(|| {
        (
            TcpListener::bind(("0.0.0.0", HTTP_PORT)).unwrap(),
            TcpListener::bind(("0.0.0.0", HTTPS_PORT)).unwrap(),
            UdpSocket::bind(("0.0.0.0", UDP_PORT)).unwrap(),
        )
    });
    let threads = vec![
        serve_tcp(http, answer.clone(), None),
        serve_tcp(https, answer.clone(), Some(self_signed())),
        serve_udp(udp, answer.clone()),
    ];
    Servers { answer, threads }
}

fn farm(name: &str, protocol: &'static str, port: u16, backends: &[usize], check: &str) -> LabFarm {
    LabFarm {
        extra: format!(
            "\n[farm.check]\ninterval = \"{INTERVAL_MS}ms\"\ntimeout = \"{}ms\"\nrise = {RISE}\n\
             fall = {FALL}\n{check}",
            INTERVAL_MS / 2
        ),
        ..LabFarm::new(name, protocol, port, backends)
    }
}

/// Polls until `farm`/`backend` is `want` (1 up, 0 down), bounded by a generous limit.
fn wait_state(lab: &Lab, node: &lab::LabProcess, farm: &str, backend: &str, want: f64) -> Duration {
    let limit = Duration::from_millis(INTERVAL_MS * u64::from(RISE.max(FALL) + 2) + 2_000);
    wait_backend_up(lab, node, farm, backend, want, limit)
}

/// `dsrctl --endpoint <node> --token-file <lab token> args…` from the client host.
fn dsrctl(lab: &Lab, args: &[&str]) -> lab::ctl::Ctl {
    let mut all = lab::ctl::strings(&[
        "--endpoint",
        &format!("http://{}:{}", lab.nodes()[0].ip, lab::lbnode::ADMIN_PORT),
        "--token-file",
        lab.admin_token_file().unwrap().to_str().unwrap(),
    ]);
    all.extend(lab::ctl::strings(args));
    lab::ctl::run_in(&lab.clients()[0], &all).ok()
}

#[test]
fn http_https_udp_and_exec_checks_judge_real_servers() {
    if !can_run_lab() {
        return;
    }
    let lab = one_node_lab(2);
    let servers: Vec<Servers> = (0..2).map(|b| start_servers(&lab, b)).collect();

    // The exec check reads what to do from a file per backend: ok, fail or hang.
    let script = lab.dir().join("check.sh");
    let state_of = |b: &str| lab.dir().join(format!("exec-{b}"));
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nstate=$(cat {}/exec-$DSRLB_BACKEND)\n\
             case $state in\n ok) exit 0;;\n hang) sleep 30 & echo $! > {}/hung-$DSRLB_BACKEND; wait;;\n *) exit 1;;\nesac\n",
            lab.dir().display(),
            lab.dir().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for b in ["b1", "b2"] {
        std::fs::write(state_of(b), "ok").unwrap();
    }

    let farms = [
        farm(
            "web",
            "tcp",
            HTTP_PORT,
            &[0, 1],
            "type = \"http\"\npath = \"/health\"\nexpect_body = \"ok\"\n",
        ),
        farm("tls", "tcp", HTTPS_PORT, &[0, 1], "type = \"https\"\n"),
        farm(
            "dns",
            "udp",
            UDP_PORT,
            &[0, 1],
            "type = \"udp\"\nsend = \"ping\"\nexpect = \"pong\"\n",
        ),
        farm(
            "ex",
            "tcp",
            lab::BACKEND_HTTP_PORT,
            &[0, 1],
            &format!(
                "type = \"exec\"\nprogram = {:?}\n",
                script.display().to_string()
            ),
        ),
    ];
    let node = lab
        .start_node(0, dsrlb(), &farms)
        .expect("the node starts with every check passing");

    // http: 503 goes down within fall × interval, 200 brings it back.
    *servers[1].answer.status.lock().unwrap() = (503, "ok".into());
    let took = wait_state(&lab, &node, "web", "b2", 0.0);
    eprintln!("http 503: b2 out after {took:?} (fall {FALL} × {INTERVAL_MS} ms)");
    assert_eq!(backend_up(&lab, "web", "b1"), 1.0, "b1 still answers 200");
    // The operator's view: the reason, the separate series, the probe counts.
    let table = dsrctl(&lab, &["backend", "list", "web"]).stdout;
    eprintln!("{table}");
    let b2 = table
        .lines()
        .find(|l| l.starts_with("b2"))
        .expect("a b2 row");
    assert!(b2.contains("status 503"), "{table}");
    assert!(b2.contains("down ("), "{table}");
    let view: dsrctl::view::BackendsView =
        dsrctl(&lab, &["-o", "json", "backend", "list", "web"]).json();
    let b1 = view.backends.iter().find(|b| b.name == "b1").unwrap();
    let c = b1.last_check.as_ref().expect("b1 was probed");
    assert_eq!((c.result.as_str(), c.reason.as_str()), ("up", ""));
    assert!(c.latency_us > 0);
    let m = scrape(&lab.nodes()[0]).expect("metrics");
    let web_b2 = [("farm", "web"), ("backend", "b2")];
    assert_eq!(m.get("dsrlb_backend_healthy", &web_b2), 0.0);
    assert_eq!(m.get("dsrlb_backend_mac_known", &web_b2), 1.0);
    assert_eq!(
        m.get(
            "dsrlb_backend_admin_state",
            &[("farm", "web"), ("backend", "b2"), ("state", "up")]
        ),
        1.0
    );
    let down = m.get(
        "dsrlb_health_checks_total",
        &[("farm", "web"), ("backend", "b2"), ("result", "down")],
    );
    assert!(down >= f64::from(FALL), "{down} down probes of b2");
    assert!(m.get("dsrlb_health_check_duration_seconds_count", &web_b2) > down);
    *servers[1].answer.status.lock().unwrap() = (200, "ok".into());
    let took = wait_state(&lab, &node, "web", "b2", 1.0);
    eprintln!("http 200: b2 back after {took:?} (rise {RISE} × {INTERVAL_MS} ms)");

    // Body mismatch: 200 without the expected text.
    *servers[0].answer.status.lock().unwrap() = (200, "degraded".into());
    let took = wait_state(&lab, &node, "web", "b1", 0.0);
    eprintln!("body mismatch: b1 out after {took:?}");
    let table = dsrctl(&lab, &["backend", "list", "web"]).stdout;
    let b1 = table
        .lines()
        .find(|l| l.starts_with("b1"))
        .expect("a b1 row");
    assert!(b1.contains("body mismatch"), "{table}");
    // https on the same server (self-signed, no CA file) follows the same answers.
    wait_state(&lab, &node, "tls", "b1", 1.0);
    *servers[0].answer.status.lock().unwrap() = (500, "ok".into());
    let took = wait_state(&lab, &node, "tls", "b1", 0.0);
    eprintln!("https 500: b1 out after {took:?}");
    *servers[0].answer.status.lock().unwrap() = (200, "ok".into());
    wait_state(&lab, &node, "web", "b1", 1.0);
    wait_state(&lab, &node, "tls", "b1", 1.0);

    // udp: the service stops replying (the socket stays bound: no ICMP, a timeout).
    servers[1]
        .answer
        .udp_replies
        .store(false, Ordering::Relaxed);
    let took = wait_state(&lab, &node, "dns", "b2", 0.0);
    eprintln!("udp silent: b2 out after {took:?}");
    let table = dsrctl(&lab, &["backend", "list", "dns"]).stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("b2") && l.contains("timeout")),
        "{table}"
    );
    assert_eq!(backend_up(&lab, "dns", "b1"), 1.0);
    servers[1].answer.udp_replies.store(true, Ordering::Relaxed);
    wait_state(&lab, &node, "dns", "b2", 1.0);

    // exec: non-zero is down, a hanging program is killed at the timeout (with its child).
    std::fs::write(state_of("b1"), "fail").unwrap();
    std::fs::write(state_of("b2"), "hang").unwrap();
    let took = wait_state(&lab, &node, "ex", "b1", 0.0);
    eprintln!("exec exit 1: b1 out after {took:?}");
    let took = wait_state(&lab, &node, "ex", "b2", 0.0);
    eprintln!("exec hanging: b2 out after {took:?}");
    let hung = std::fs::read_to_string(lab.dir().join("hung-b2")).unwrap();
    std::fs::write(state_of("b2"), "ok").unwrap();
    std::fs::write(state_of("b1"), "ok").unwrap();
    wait_state(&lab, &node, "ex", "b1", 1.0);
    wait_state(&lab, &node, "ex", "b2", 1.0);
    let stat = format!("/proc/{}/stat", hung.trim());
    let alive = std::fs::read_to_string(&stat)
        .map(|s| s.split(' ').nth(2) != Some("Z"))
        .unwrap_or(false);
    assert!(!alive, "the hanging check's child {} survived", hung.trim());

    drop(node);
    drop(servers);
}
