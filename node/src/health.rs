//! Health checks: one task per checked backend probes it every interval (tcp connect, http or
//! https GET, udp request/reply, or a program) and feeds a rise/fall hysteresis; only verdict
//! changes leave this module, and every probe's outcome is recorded in a [`CheckLog`] for the
//! operator (`dsrctl backend list`, the metrics).
//!
//! The checker runs on the Raft leader only and its verdicts are committed to the log, so
//! every node's table agrees (docs/design.md#inv-same-backend). A new leader resumes from the
//! replicated verdicts; a backend that has none yet gets one from its first probe, so a fresh
//! cluster neither sends traffic to an unverified backend nor waits `rise` intervals for a healthy
//! one.
//!
//! At scale (thousands of backends, docs/design.md#health): each loop starts at its own offset
//! within the interval (a hash of its key), so probes are spread evenly instead of firing
//! together, and a semaphore bounds the probes in flight, hence the sockets and processes the
//! checker holds at once.
//!
//! The hysteresis is a pure state machine ([`Hysteresis`]) so its edges are unit-tested; the
//! async loop around it only does I/O.

use cluster::{CheckKind, HealthCheck, HttpCheck};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

/// Probes in flight at once, over every backend: each holds a socket or a child process,
/// so this bounds the checker's descriptors whatever the number of backends.
pub const MAX_PROBES_IN_FLIGHT: usize = 256;
/// Bytes of an HTTP body read to look for `expect_body`.
const BODY_LIMIT: usize = 64 << 10;

/// Rise/fall counting for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

impl Hysteresis {
    /// Continues from a known verdict.
    pub fn new(up: bool) -> Self {
        Hysteresis { up, streak: 0 }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check result; returns the new verdict when it changed.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed {
            self.up = ok;
            self.streak = 0;
            Some(ok)
        } else {
            None
        }
    }
}

/// Identifies a checked backend: (farm name, backend name).
pub type BackendKey = (String, String);

/// What to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckTarget {
    pub key: BackendKey,
    /// The backend's address and the port probed.
    pub addr: SocketAddr,
    /// The farm's VIP (in the environment of an exec check; the destination of a via_vip
    /// probe).
    pub vip: IpAddr,
    pub check: HealthCheck,
    /// Whether this node probes through the VIP (the check's `via_vip`, or its own choice
    /// when the check leaves it open).
    pub via_vip: bool,
    /// The socket mark that routes to this backend (`via_vip`, [`crate::vippath`]); `None`
    /// when this node has no path: the probe is then not run (this node's fault).
    pub mark: Option<u32>,
    /// The replicated verdict, if there is one.
    pub verdict: Option<bool>,
}

/// A verdict change to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub key: BackendKey,
    pub up: bool,
}

/// Why a probe found a backend down: what `dsrctl backend list` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The connection was refused (nothing listens, or an ICMP port unreachable for udp).
    Refused,
    /// No answer within the timeout.
    Timeout,
    /// The backend's address did not answer ARP (host unreachable).
    Unreachable,
    /// The connection broke before an answer.
    Reset,
    /// An HTTP status outside `expect_status`.
    Status(u16),
    /// The HTTP body or the udp reply lacks the expected text.
    BodyMismatch,
    /// The TLS handshake failed.
    Tls(String),
    /// The answer was not HTTP.
    Protocol(String),
    /// An exec check's program exited non-zero or was killed by a signal.
    Exit(String),
    /// An exec check's program ran past the timeout and was killed.
    Killed,
    /// The probe through the VIP failed while the same probe of the backend's own address
    /// passed: the VIP is not on the backend's `lo`, or the service does not listen on it.
    VipPath(Box<Failure>),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => f.write_str("refused"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Unreachable => f.write_str("unreachable"),
            Failure::Reset => f.write_str("reset"),
            Failure::Status(s) => write!(f, "status {s}"),
            Failure::BodyMismatch => f.write_str("body mismatch"),
            Failure::Tls(e) => write!(f, "tls: {e}"),
            Failure::Protocol(e) => write!(f, "bad answer: {e}"),
            Failure::Exit(e) => write!(f, "exit {e}"),
            Failure::Killed => f.write_str("killed at timeout"),
            Failure::VipPath(inner) => write!(f, "VIP path failed ({inner})"),
        }
    }
}

/// The outcome of one probe.
#[derive(Debug)]
pub enum Probe {
    /// The backend answered as expected.
    Up,
    /// The backend did not.
    Down(Failure),
    /// The probe failed on this node before reaching the backend (out of descriptors,
    /// ports, memory; no route; an exec program missing here): no verdict is taken from it.
    NodeFault(std::io::Error),
}

/// The last probe of one backend, as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastCheck {
    pub at: SystemTime,
    /// `None` when the probe could not run on this node (the reason says why).
    pub ok: Option<bool>,
    pub latency: Duration,
    /// Why it failed; empty when up.
    pub reason: String,
}

/// Every probe's outcome on this node, for the admin API and the metrics. Written once per
/// probe (at most a few thousand times a second), read at scrape time: a plain mutex.
#[derive(Debug, Default)]
pub struct CheckLog {
    backends: Mutex<BTreeMap<BackendKey, BackendChecks>>,
    /// Probes that could not run because of this node's own resources.
    pub node_faults: AtomicU64,
}

/// One backend's record in the [`CheckLog`].
#[derive(Debug, Clone, Default)]
pub struct BackendChecks {
    pub last: Option<LastCheck>,
    /// Probes by result: up, down, node fault.
    pub up: u64,
    pub down: u64,
    pub error: u64,
    /// Durations of the probes that reached the backend, per [`DURATION_BUCKETS`] bucket
    /// (cumulative counts are made at scrape time), with their sum.
    pub buckets: [u64; DURATION_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
}

/// Upper bounds (seconds) of `dsrlb_health_check_duration_seconds`' buckets.
pub const DURATION_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

impl CheckLog {
    /// Records one probe.
    pub fn record(&self, key: &BackendKey, probe: &Probe, latency: Duration) {
        let (ok, reason) = match probe {
            Probe::Up => (Some(true), String::new()),
            Probe::Down(f) => (Some(false), f.to_string()),
            Probe::NodeFault(e) => {
                self.node_faults.fetch_add(1, Ordering::Relaxed);
                (None, format!("not run: this node's fault: {e}"))
            }
        };
        let mut map = self.backends.lock().unwrap_or_else(|e| e.into_inner());
        let b = map.entry(key.clone()).or_default();
        match ok {
            Some(true) => b.up += 1,
            Some(false) => b.down += 1,
            None => b.error += 1,
        }
        if ok.is_some() {
            let secs = latency.as_secs_f64();
            if let Some(i) = DURATION_BUCKETS.iter().position(|le| secs <= *le) {
                b.buckets[i] += 1;
            }
            b.count += 1;
            b.sum += secs;
        }
        b.last = Some(LastCheck {
            at: SystemTime::now(),
            ok,
            latency,
            reason,
        });
    }

    /// A copy of every backend's record.
    pub fn snapshot(&self) -> BTreeMap<BackendKey, BackendChecks> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops the records of backends no longer checked.
    pub fn retain(&self, keep: impl Fn(&BackendKey) -> bool) {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|k, _| keep(k));
    }
}

/// Runs the check loops until stopped or dropped.
pub struct HealthChecker {
    tasks: JoinSet<()>,
}

impl HealthChecker {
    /// Starts one loop per target; verdict changes are sent on `changes`, every probe is
    /// recorded in `log`.
    pub fn start(
        targets: Vec<CheckTarget>,
        changes: mpsc::UnboundedSender<VerdictChange>,
        log: Arc<CheckLog>,
    ) -> Self {
        let mut tasks = JoinSet::new();
        let permits = Arc::new(Semaphore::new(MAX_PROBES_IN_FLIGHT));
        for target in targets {
            let span = info_span!("health", farm = %target.key.0, backend = %target.key.1);
            let ctx = LoopCtx {
                changes: changes.clone(),
                log: log.clone(),
                permits: permits.clone(),
            };
            tasks.spawn(check_loop(target, ctx).instrument(span));
        }
        HealthChecker { tasks }
    }

    /// Stops every loop.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

struct LoopCtx {
    changes: mpsc::UnboundedSender<VerdictChange>,
    log: Arc<CheckLog>,
    permits: Arc<Semaphore>,
}

/// Where in its interval a backend's probes fall: a hash of its key, so they are spread
/// evenly over the interval and each backend keeps its slot across restarts of the checker.
pub fn start_offset(key: &BackendKey, interval: Duration) -> Duration {
    let h = xxhash_rust::xxh3::xxh3_64(format!("{}\0{}", key.0, key.1).as_bytes());
    let nanos = interval.as_nanos().max(1) as u64;
    Duration::from_nanos(h % nanos)
}

async fn check_loop(target: CheckTarget, ctx: LoopCtx) {
    let mut state = target.verdict.map(Hysteresis::new);
    let mut own_fault_logged = false;
    let prober = match Prober::new(&target) {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "health check cannot run on this node");
            return;
        }
    };
    // A backend without a verdict is out of the table until its first probe: that one
    // goes first, the others wait for their slot.
    if state.is_some() {
        tokio::time::sleep(start_offset(&target.key, target.check.interval)).await;
    }
    let mut tick = tokio::time::interval(target.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(_permit) = ctx.permits.acquire().await else {
            return;
        };
        let started = Instant::now();
        let probe = prober.probe().await;
        let latency = started.elapsed();
        ctx.log.record(&target.key, &probe, latency);
        let ok = match probe {
            Probe::Up => {
                own_fault_logged = false;
                true
            }
            Probe::Down(_) => {
                own_fault_logged = false;
                false
            }
            // The node could not even try (out of descriptors, ports, memory): the backend
            // is not at fault, so no verdict is taken from it — a node under a descriptor
            // flood must not mark every backend down (issue #17).
            Probe::NodeFault(e) => {
                if !own_fault_logged {
                    warn!(addr = %target.addr, error = %e, "health check not run: this node's own resources");
                    own_fault_logged = true;
                }
                continue;
            }
        };
        let change = match &mut state {
            Some(h) => h.observe(ok, target.check.rise, target.check.fall),
            None => {
                state = Some(Hysteresis::new(ok));
                Some(ok)
            }
        };
        if let Some(up) = change {
            let reason = ctx
                .log
                .snapshot()
                .get(&target.key)
                .and_then(|b| b.last.clone())
                .map(|l| l.reason)
                .unwrap_or_default();
            info!(
                addr = %target.addr,
                verdict = if up { "up" } else { "down" },
                %reason,
                "backend health changed"
            );
            let change = VerdictChange {
                key: target.key.clone(),
                up,
            };
            if ctx.changes.send(change).is_err() {
                return;
            }
        }
    }
}

/// One target's probe, with what it needs prepared once (the TLS client config).
struct Prober {
    target: CheckTarget,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Prober {
    fn new(target: &CheckTarget) -> anyhow::Result<Self> {
        let tls = match &target.check.kind {
            CheckKind::Http(h) if h.tls => Some(tls_connector(h)?),
            _ => None,
        };
        Ok(Prober {
            target: target.clone(),
            tls,
        })
    }

    async fn probe(&self) -> Probe {
        let t = &self.target;
        if !t.via_vip {
            return self.probe_to(Dest::plain(t.addr)).await;
        }
        let Some(mark) = t.mark else {
            return Probe::NodeFault(std::io::Error::other(
                "no VIP path to this backend on this node (via_vip routes not set up)",
            ));
        };
        let via = Dest {
            addr: SocketAddr::new(t.vip, t.addr.port()),
            mark: Some(mark),
            host: t.vip,
        };
        match self.probe_to(via).await {
            // Through the VIP it failed: the backend's own address says whether the backend
            // is down or only its VIP path is broken (what DSR needs and a plain check misses).
            Probe::Down(through_vip) => match self.probe_to(Dest::plain(t.addr)).await {
                Probe::Up => Probe::Down(Failure::VipPath(Box::new(through_vip))),
                other => other,
            },
            other => other,
        }
    }

    async fn probe_to(&self, dest: Dest) -> Probe {
        let t = &self.target;
        let timeout = t.check.timeout;
        let run = async {
            match &t.check.kind {
                CheckKind::Tcp => tcp_probe(dest).await.map(drop),
                CheckKind::Http(h) => http_probe(dest, h, self.tls.as_ref()).await,
                CheckKind::Udp { send, expect } => udp_probe(dest, send, expect).await,
                CheckKind::Exec { .. } => return exec_probe(t).await,
            }
            .map_or_else(|p| p, |()| Probe::Up)
        };
        match &t.check.kind {
            // The exec probe keeps its own clock: it must kill its child at the timeout.
            CheckKind::Exec { .. } => run.await,
            _ => tokio::time::timeout(timeout, run)
                .await
                .unwrap_or(Probe::Down(Failure::Timeout)),
        }
    }
}

/// A probe step's error: the probe's final outcome.
type Step<T> = Result<T, Probe>;

fn io_failure(e: std::io::Error) -> Probe {
    if node_fault(&e) {
        return Probe::NodeFault(e);
    }
    Probe::Down(match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Failure::Refused,
        Some(libc::EHOSTUNREACH) => Failure::Unreachable,
        Some(libc::ETIMEDOUT) => Failure::Timeout,
        _ if e.kind() == std::io::ErrorKind::TimedOut => Failure::Timeout,
        _ => Failure::Reset,
    })
}

/// Where one probe goes: the backend's own address, or the VIP with the mark that routes it
/// to the backend.
#[derive(Debug, Clone, Copy)]
struct Dest {
    addr: SocketAddr,
    mark: Option<u32>,
    /// The default `Host` and TLS server name: the address the service is reached at.
    host: IpAddr,
}

impl Dest {
    fn plain(addr: SocketAddr) -> Self {
        Dest {
            addr,
            mark: None,
            host: addr.ip(),
        }
    }
}

/// Sets the routing mark of a probe socket (`via_vip`).
fn mark_socket(sock: socket2::SockRef<'_>, mark: Option<u32>) -> Step<()> {
    match mark {
        Some(m) => sock.set_mark(m).map_err(Probe::NodeFault),
        None => Ok(()),
    }
}

async fn tcp_probe(dest: Dest) -> Step<tokio::net::TcpStream> {
    let sock = if dest.addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(io_failure)?;
    mark_socket(socket2::SockRef::from(&sock), dest.mark)?;
    sock.connect(dest.addr).await.map_err(io_failure)
}

async fn http_probe(
    dest: Dest,
    h: &HttpCheck,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Step<()> {
    let stream = tcp_probe(dest).await?;
    let host = h.host.clone().unwrap_or_else(|| dest.host.to_string());
    match tls {
        None => http_exchange(stream, h, &host).await,
        Some(connector) => {
            let name = match &h.host {
                Some(n) => rustls::pki_types::ServerName::try_from(n.clone())
                    .map_err(|e| Probe::Down(Failure::Tls(e.to_string())))?,
                None => rustls::pki_types::ServerName::IpAddress(dest.host.into()),
            };
            let stream = connector
                .connect(name, stream)
                .await
                .map_err(|e| Probe::Down(Failure::Tls(e.to_string())))?;
            http_exchange(stream, h, &host).await
        }
    }
}

/// One GET on a fresh connection (`Connection: close`), judged by status and body.
async fn http_exchange<S>(stream: S, h: &HttpCheck, host: &str) -> Step<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| Probe::Down(Failure::Protocol(e.to_string())))?;
    let req = hyper::Request::get(h.path.as_str())
        .header(hyper::header::HOST, host)
        .header(hyper::header::CONNECTION, "close")
        .header(hyper::header::USER_AGENT, "dsrlb-health-check")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Probe::Down(Failure::Protocol(e.to_string())))?;
    let exchange = async {
        let resp = sender.send_request(req).await.map_err(hyper_failure)?;
        let status = resp.status().as_u16();
        if status < h.status.0 || status > h.status.1 {
            return Err(Probe::Down(Failure::Status(status)));
        }
        let Some(want) = &h.body else {
            return Ok(());
        };
        let mut body = resp.into_body();
        let mut seen = Vec::new();
        while seen.len() < BODY_LIMIT {
            match body.frame().await {
                None => break,
                Some(Err(e)) => return Err(hyper_failure(e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        seen.extend_from_slice(&data);
                    }
                }
            }
            if contains(&seen, want.as_bytes()) {
                return Ok(());
            }
        }
        if contains(&seen, want.as_bytes()) {
            Ok(())
        } else {
            Err(Probe::Down(Failure::BodyMismatch))
        }
    };
    // The connection future is driven alongside the exchange, not spawned: when the probe
    // ends or times out both are dropped and the socket with them.
    // A connection that ends cleanly (`Connection: close`) has delivered the whole answer:
    // the exchange then finishes from what it buffered.
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        r = &mut exchange => r,
        r = conn => match r {
            Err(e) => Err(hyper_failure(e)),
            Ok(()) => exchange.await,
        },
    }
}

fn hyper_failure(e: hyper::Error) -> Probe {
    use std::error::Error as _;
    if let Some(io) = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()) {
        return io_failure(std::io::Error::new(io.kind(), io.to_string()));
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return Probe::Down(Failure::Reset);
    }
    Probe::Down(Failure::Protocol(e.to_string()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// A rustls client for https checks: with a CA file, the backend's certificate must chain
/// to it (and name `host`, or the backend's address); without one, any certificate passes —
/// the check then proves the service speaks TLS and answers, which is what self-signed
/// backends can offer.
fn tls_connector(h: &HttpCheck) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let config = match &h.ca_file {
        Some(path) => {
            let pem = proto::pem::read_certs(path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_slice_iter(&pem) {
                roots.add(cert?)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Accepts any server certificate but still checks the handshake's signatures (so the
/// backend holds the key of the certificate it shows).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Sends `send` and waits for a reply containing `expect`. A connected socket, so an ICMP
/// port unreachable comes back as "refused" rather than a timeout.
async fn udp_probe(dest: Dest, send: &[u8], expect: &[u8]) -> Step<()> {
    let any: IpAddr = if dest.addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = tokio::net::UdpSocket::bind((any, 0))
        .await
        .map_err(io_failure)?;
    mark_socket(socket2::SockRef::from(&sock), dest.mark)?;
    sock.connect(dest.addr).await.map_err(io_failure)?;
    sock.send(send).await.map_err(io_failure)?;
    let mut buf = vec![0u8; 65_536];
    let n = sock.recv(&mut buf).await.map_err(io_failure)?;
    if contains(&buf[..n], expect) {
        Ok(())
    } else {
        Err(Probe::Down(Failure::BodyMismatch))
    }
}

/// Runs the program in its own process group with a minimal environment naming the
/// backend; the whole group is killed at the timeout, so a script's children go too.
async fn exec_probe(t: &CheckTarget) -> Probe {
    let CheckKind::Exec { program, args } = &t.check.kind else {
        unreachable!("called for exec checks")
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("DSRLB_FARM", &t.key.0)
        .env("DSRLB_BACKEND", &t.key.1)
        .env("DSRLB_BACKEND_IP", t.addr.ip().to_string())
        .env("DSRLB_BACKEND_PORT", t.addr.port().to_string())
        .env("DSRLB_VIP", t.vip.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        // A program missing or not executable here is this node's setup, not the backend.
        Err(e) => return Probe::NodeFault(e),
    };
    let pid = child.id();
    match tokio::time::timeout(t.check.timeout, child.wait()).await {
        Ok(Ok(status)) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            if status.success() {
                Probe::Up
            } else {
                use std::os::unix::process::ExitStatusExt;
                Probe::Down(Failure::Exit(match (status.code(), status.signal()) {
                    (Some(c), _) => c.to_string(),
                    (None, Some(s)) => format!("signal {s}"),
                    _ => status.to_string(),
                }))
            }
        }
        Ok(Err(e)) => Probe::NodeFault(e),
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.kill().await;
            Probe::Down(Failure::Killed)
        }
    }
}

/// SIGKILL to the process group led by `pid` (what the program left behind included).
fn kill_group(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Whether an error is this node's own shortage or setup rather than anything the backend
/// did: no descriptor (per process or system), no buffer or memory, no local port, no route.
fn node_fault(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EADDRNOTAVAIL
                | libc::ENETUNREACH
                | libc::EPERM
        )
    )
}

/// The address a farm's backends are checked on: the check's `port`, else the farm's first
/// (DSR uses the virtual port on the backend).
pub fn check_addr(ip: IpAddr, first_port: u16, check: &HealthCheck) -> SocketAddr {
    SocketAddr::new(ip, check.port.unwrap_or(first_port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_out_of_descriptors_is_the_nodes_fault_not_the_backends() {
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
            libc::ENETUNREACH,
        ] {
            assert!(
                node_fault(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::ECONNREFUSED, libc::EHOSTUNREACH, libc::ETIMEDOUT] {
            assert!(
                !node_fault(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }

    #[test]
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut h = Hysteresis::new(true);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), Some(false));
        assert!(!h.is_up());
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(true));
        assert!(h.is_up());
    }

    #[test]
    fn a_single_good_result_resets_the_failure_streak() {
        let mut h = Hysteresis::new(true);
        h.observe(false, 2, 3);
        h.observe(false, 2, 3);
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert_eq!(h.observe(false, 2, 3), None);
        assert!(h.is_up(), "two failures after a success are below fall = 3");
    }

    #[test]
    fn start_offsets_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let mut per_tenth = [0u32; 10];
        for i in 0..1000 {
            let off = start_offset(&("f".into(), format!("b{i}")), interval);
            assert!(off < interval);
            per_tenth[(off.as_millis() / 100) as usize] += 1;
        }
        // 100 expected per tenth of the interval; a herd would put them all in one.
        assert!(
            per_tenth.iter().all(|n| (50..=150).contains(n)),
            "{per_tenth:?}"
        );
    }

    fn target(addr: std::net::SocketAddr, kind: CheckKind) -> CheckTarget {
        let mut check =
            HealthCheck::tcp(Duration::from_millis(100), Duration::from_millis(500), 1, 1);
        check.kind = kind;
        CheckTarget {
            key: ("f".into(), "b".into()),
            addr,
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            check,
            via_vip: false,
            mark: None,
            verdict: None,
        }
    }

    async fn probe(t: &CheckTarget) -> Probe {
        Prober::new(t).unwrap().probe().await
    }

    #[tokio::test]
    async fn tcp_probe_sees_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let t = target(addr.into(), CheckKind::Tcp);
        assert!(matches!(probe(&t).await, Probe::Up));
        drop(listener);
        // A port bound without a listener refuses, and, unlike the port just freed, no test
        // running alongside can bind it meanwhile.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let std::net::SocketAddr::V4(addr) = closed.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let t = target(addr.into(), CheckKind::Tcp);
        assert!(matches!(probe(&t).await, Probe::Down(Failure::Refused)));
    }

    /// A one-shot HTTP server answering `status` with `body` to every connection.
    async fn http_server(status: u16, body: &'static str) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        });
        addr.into()
    }

    fn http(status: (u16, u16), body: Option<&str>) -> CheckKind {
        CheckKind::Http(HttpCheck {
            tls: false,
            path: "/health".into(),
            host: None,
            status,
            body: body.map(str::to_string),
            ca_file: None,
        })
    }

    #[tokio::test]
    async fn http_probe_judges_status_and_body() {
        let ok = http_server(200, "all good").await;
        let bad = http_server(503, "overloaded").await;
        assert!(matches!(
            probe(&target(ok, http((200, 399), None))).await,
            Probe::Up
        ));
        assert!(matches!(
            probe(&target(ok, http((200, 399), Some("good")))).await,
            Probe::Up
        ));
        assert!(matches!(
            probe(&target(ok, http((200, 399), Some("fine")))).await,
            Probe::Down(Failure::BodyMismatch)
        ));
        assert!(matches!(
            probe(&target(bad, http((200, 399), None))).await,
            Probe::Down(Failure::Status(503))
        ));
        assert!(matches!(
            probe(&target(bad, http((500, 503), None))).await,
            Probe::Up
        ));
    }

    #[tokio::test]
    async fn udp_probe_needs_a_matching_reply() {
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = server.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = server.recv_from(&mut buf).await {
                let mut reply = b"pong:".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = server.send_to(&reply, from).await;
            }
        });
        let udp = |expect: &str| CheckKind::Udp {
            send: b"ping".to_vec(),
            expect: expect.as_bytes().to_vec(),
        };
        assert!(matches!(
            probe(&target(addr.into(), udp("pong:ping"))).await,
            Probe::Up
        ));
        assert!(matches!(
            probe(&target(addr.into(), udp("nope"))).await,
            Probe::Down(Failure::BodyMismatch)
        ));
        // Nothing bound there any more: the ICMP port unreachable says refused.
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let std::net::SocketAddr::V4(closed) = closed else {
            unreachable!()
        };
        assert!(matches!(
            probe(&target(closed.into(), udp(""))).await,
            Probe::Down(Failure::Refused)
        ));
    }

    #[tokio::test]
    async fn exec_probe_reads_the_exit_status_and_kills_at_the_timeout() {
        let addr = std::net::SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 80);
        let exec = |script: &str| CheckKind::Exec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        };
        assert!(matches!(
            probe(&target(
                addr,
                exec("test \"$DSRLB_BACKEND_IP:$DSRLB_BACKEND_PORT\" = 127.0.0.1:80")
            ))
            .await,
            Probe::Up
        ));
        assert!(matches!(
            probe(&target(addr, exec("exit 3"))).await,
            Probe::Down(Failure::Exit(c)) if c == "3"
        ));
        // A script that leaves a child behind: the whole group goes at the timeout.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        assert!(matches!(
            probe(&target(addr, exec(&script))).await,
            Probe::Down(Failure::Killed)
        ));
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let gone = || {
            std::fs::read_to_string(&stat)
                .map(|s| s.split(' ').nth(2) == Some("Z"))
                .unwrap_or(true)
        };
        for _ in 0..100 {
            if gone() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "the script's child outlived the timeout");
        assert!(matches!(
            probe(&target(
                addr,
                CheckKind::Exec {
                    program: "/nonexistent/check".into(),
                    args: vec![]
                }
            ))
            .await,
            Probe::NodeFault(_)
        ));
    }
}
