//! The client side of one outage measurement: probers that open short TCP connections to the
//! VIP (connect with a short timeout, one `GET /`, retry at once) from the moment the owner is
//! signalled until one is answered by a backend through a node other than the old owner.
//!
//! "Through another node" is read from the client's own ARP cache: the MAC it held for the
//! VIP before and after the attempt. Neither may be the old owner's, so a request the old
//! owner forwarded in its last instant (a SIGTERM'd owner releases within milliseconds, not
//! at once) never counts as recovery.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lab::MacAddr;
use lab::client::backend_of;
use socket2::{Domain, Protocol, Socket, Type};

/// Granularity of the read loop: how soon an attempt notices it should give up.
const READ_SLICE: Duration = Duration::from_millis(5);
/// How often a prober waiting for the signal looks at the trigger.
const FIRE_POLL: Duration = Duration::from_micros(200);
/// How long a prober waits for the signal before giving up (the main thread failed).
const FIRE_WAIT: Duration = Duration::from_secs(60);
/// Bounds one prober's attempts, whatever the timeouts.
const MAX_ATTEMPTS: usize = 20_000;
/// An answer larger than this is not the lab backend's.
const MAX_REPLY: usize = 4096;

/// Why an attempt did not produce an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// No SYN-ACK within the connect timeout (the SYN went nowhere).
    ConnectTimeout,
    /// The connect failed at once (refused, unreachable).
    ConnectError,
    /// Connected, but no complete answer within the request timeout.
    RequestTimeout,
    /// Connected, then reset or another I/O error.
    RequestError,
    /// An answer that is not `200` with `backend=<name>`.
    BadReply,
}

impl Failure {
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::ConnectTimeout => "connect_timeout",
            Failure::ConnectError => "connect_error",
            Failure::RequestTimeout => "request_timeout",
            Failure::RequestError => "request_error",
            Failure::BadReply => "bad_reply",
        }
    }
}

/// What one attempt came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A backend answered; its name.
    Answered(String),
    Failed(Failure),
    /// Given up because another prober already succeeded (or the run was cancelled).
    Abandoned,
}

/// Connects to `addr` within `connect`, sends one `GET /` (connection: close) and reads the
/// answer within `request`; gives up early when `abandon()` turns true.
pub fn attempt(
    addr: SocketAddr,
    connect: Duration,
    request: Duration,
    abandon: &dyn Fn() -> bool,
) -> Outcome {
    let Ok(sock) = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)) else {
        return Outcome::Failed(Failure::ConnectError);
    };
    if let Err(e) = sock.connect_timeout(&addr.into(), connect) {
        let kind = if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            Failure::ConnectTimeout
        } else {
            Failure::ConnectError
        };
        return Outcome::Failed(kind);
    }
    let deadline = Instant::now() + request;
    let mut stream: std::net::TcpStream = sock.into();
    let setup = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_read_timeout(Some(READ_SLICE)))
        .and_then(|()| stream.set_write_timeout(Some(request)));
    if setup.is_err() {
        return Outcome::Failed(Failure::RequestError);
    }
    let head = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return Outcome::Failed(Failure::RequestError);
    }
    let mut buf = [0u8; MAX_REPLY];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Outcome::Failed(Failure::BadReply);
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if abandon() {
                    return Outcome::Abandoned;
                }
                if Instant::now() >= deadline {
                    return Outcome::Failed(Failure::RequestTimeout);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Outcome::Failed(Failure::RequestError),
        }
    }
    let text = String::from_utf8_lossy(&buf[..len]);
    match (text.starts_with("HTTP/1.1 200"), backend_of(&text)) {
        (true, Some(name)) => Outcome::Answered(name.to_owned()),
        _ => Outcome::Failed(Failure::BadReply),
    }
}

/// The MAC this thread's network namespace has resolved `vip` to, if the entry is complete.
/// `/proc/thread-self` (not `/proc/self`): the calling thread entered the client namespace,
/// the process as a whole did not.
pub fn vip_mac(vip: Ipv4Addr) -> Option<MacAddr> {
    let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    parse_arp(&table, vip)
}

/// Finds `vip` in `/proc/net/arp` text; only complete entries (flag 0x2) count.
fn parse_arp(table: &str, vip: Ipv4Addr) -> Option<MacAddr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (ip, flags, mac) = (f.first()?, f.get(2)?, f.get(3)?);
        let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok()?;
        (ip.parse::<Ipv4Addr>().ok()? == vip && flags & 0x2 != 0)
            .then(|| mac.parse().ok())
            .flatten()
    })
}

/// One attempt of a window, timed from the signal to the owner.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub started: Duration,
    pub took: Duration,
    pub outcome: Outcome,
    pub mac_before: Option<MacAddr>,
    pub mac_after: Option<MacAddr>,
}

impl Attempt {
    pub fn ended(&self) -> Duration {
        self.started + self.took
    }

    /// Answered, and neither ARP reading names the old owner.
    pub fn recovered(&self, old_mac: MacAddr) -> bool {
        matches!(self.outcome, Outcome::Answered(_))
            && self.mac_before != Some(old_mac)
            && self.mac_after != Some(old_mac)
    }
}

/// Shared by the main thread, which signals the owner and then fires, and the probers.
pub struct Trigger {
    epoch: Instant,
    /// Nanoseconds from `epoch` to the signal; `u64::MAX` until fired.
    fired_ns: AtomicU64,
    ready: AtomicUsize,
    recovered: AtomicBool,
    cancelled: AtomicBool,
}

impl Trigger {
    pub fn new() -> Trigger {
        Trigger {
            epoch: Instant::now(),
            fired_ns: AtomicU64::new(u64::MAX),
            ready: AtomicUsize::new(0),
            recovered: AtomicBool::new(false),
            cancelled: AtomicBool::new(false),
        }
    }

    /// Probers waiting for the signal.
    pub fn ready(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    /// Starts the probers; `at` is when the owner was signalled (taken just before).
    pub fn fire(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.epoch).as_nanos();
        self.fired_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX - 1), Ordering::Release);
    }

    /// Stops every prober (the run failed or was interrupted).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    fn fired_at(&self) -> Option<Instant> {
        match self.fired_ns.load(Ordering::Acquire) {
            u64::MAX => None,
            ns => Some(self.epoch + Duration::from_nanos(ns)),
        }
    }

    fn done(&self) -> bool {
        self.recovered.load(Ordering::Acquire) || self.cancelled.load(Ordering::Acquire)
    }
}

/// What a window probes and for how long.
#[derive(Clone, Debug)]
pub struct WindowSpec {
    pub addr: SocketAddr,
    pub old_mac: MacAddr,
    pub probers: usize,
    pub connect: Duration,
    pub request: Duration,
    /// Probing stops this long after the signal if nothing recovered.
    pub limit: Duration,
}

/// Every attempt of a window, in no particular order.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub attempts: Vec<Attempt>,
}

impl Window {
    /// The recovering attempt that ended first.
    pub fn first_recovery(&self, old_mac: MacAddr) -> Option<&Attempt> {
        self.attempts
            .iter()
            .filter(|a| a.recovered(old_mac))
            .min_by_key(|a| a.ended())
    }
}

/// Runs the probers of one window on the calling thread's namespace (call it inside the
/// client host); returns when one recovered, the limit passed, or the trigger was cancelled.
pub fn run_window(spec: &WindowSpec, trigger: &Trigger) -> Window {
    let stagger = spec.connect / u32::try_from(spec.probers.max(1)).unwrap_or(1);
    let attempts = std::thread::scope(|s| {
        let handles: Vec<_> = (0..spec.probers)
            .map(|k| s.spawn(move || prober(stagger * k as u32, spec, trigger)))
            .collect();
        handles
            .into_iter()
            // A prober that panicked is a bug: passed on, so the sample fails loudly.
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    Window { attempts }
}

fn prober(delay: Duration, spec: &WindowSpec, trigger: &Trigger) -> Vec<Attempt> {
    trigger.ready.fetch_add(1, Ordering::AcqRel);
    let waited = Instant::now();
    let fired = loop {
        if let Some(at) = trigger.fired_at() {
            break at;
        }
        if trigger.done() || waited.elapsed() > FIRE_WAIT {
            return Vec::new();
        }
        std::thread::sleep(FIRE_POLL);
    };
    // Staggered starts spread the probers over one connect timeout, so a new owner is seen
    // within about connect/probers rather than a whole connect timeout.
    std::thread::sleep(delay);
    let mut out = Vec::new();
    while out.len() < MAX_ATTEMPTS && !trigger.done() && fired.elapsed() < spec.limit {
        let mac_before = vip_mac(spec.vip());
        let t = Instant::now();
        let outcome = attempt(spec.addr, spec.connect, spec.request, &|| trigger.done());
        let took = t.elapsed();
        let a = Attempt {
            started: t.saturating_duration_since(fired),
            took,
            outcome,
            mac_before,
            mac_after: vip_mac(spec.vip()),
        };
        if a.recovered(spec.old_mac) {
            trigger.recovered.store(true, Ordering::Release);
        }
        let instant_failure = matches!(a.outcome, Outcome::Failed(_)) && took.as_millis() < 1;
        out.push(a);
        if instant_failure {
            // "Retry at once", but not a busy loop on a fast error.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    out
}

impl WindowSpec {
    fn vip(&self) -> Ipv4Addr {
        match self.addr {
            SocketAddr::V4(a) => *a.ip(),
            SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "IP address       HW type     Flags       HW address            Mask     Device\n\
        198.18.0.21      0x1         0x2         02:01:02:03:00:21     *        eth0\n\
        198.18.0.100     0x1         0x2         02:01:02:03:00:12     *        eth0\n\
        198.18.0.22      0x1         0x0         00:00:00:00:00:00     *        eth0\n";

    #[test]
    fn arp_table_lookup_takes_complete_entries_only() {
        let vip = Ipv4Addr::new(198, 18, 0, 100);
        assert_eq!(
            parse_arp(TABLE, vip),
            Some(MacAddr([0x02, 1, 2, 3, 0, 0x12]))
        );
        assert_eq!(parse_arp(TABLE, Ipv4Addr::new(198, 18, 0, 22)), None);
        assert_eq!(parse_arp(TABLE, Ipv4Addr::new(198, 18, 0, 99)), None);
        assert_eq!(parse_arp("garbage\n1 2\n", vip), None);
    }

    #[test]
    fn recovery_needs_an_answer_away_from_the_old_owner() {
        let old = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let new = MacAddr([2, 0, 0, 0, 0, 0x12]);
        let a = |outcome, before, after, ms| Attempt {
            started: Duration::from_millis(ms),
            took: Duration::from_millis(1),
            outcome,
            mac_before: before,
            mac_after: after,
        };
        let ok = || Outcome::Answered("b1".into());
        let w = Window {
            attempts: vec![
                a(ok(), Some(old), Some(old), 1),
                a(ok(), Some(old), Some(new), 2),
                a(
                    Outcome::Failed(Failure::ConnectTimeout),
                    Some(new),
                    Some(new),
                    3,
                ),
                a(ok(), Some(new), Some(new), 90),
                a(ok(), None, Some(new), 60),
            ],
        };
        let first = w.first_recovery(old).map(|a| a.started);
        assert_eq!(first, Some(Duration::from_millis(60)));
        assert_eq!(
            Window::default().first_recovery(old).map(|a| a.started),
            None
        );
    }
}
