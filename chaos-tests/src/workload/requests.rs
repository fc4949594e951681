//! A loop of short TCP requests through the VIP, as an impatient client makes them: each
//! attempt is a fresh connection with a short connect and I/O timeout, a failed attempt is
//! retried at once, and a request gives up only after [`GIVE_UP`]. It counts attempts that
//! failed (what a client without retries would have seen), requests given up, and the
//! latency of each request, retries included.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use lab::HttpConn;

/// A SYN lost to a dead owner is retried on a new connection after this, rather than after
/// the kernel's 1 s SYN retransmission: the loop measures the takeover, not the kernel.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(200);
/// An established request that gets no answer is abandoned after this.
const IO_TIMEOUT: Duration = Duration::from_secs(1);
/// A request that found no answer for this long counts as given up.
pub const GIVE_UP: Duration = Duration::from_secs(5);
/// Between two requests, so two scenarios on two cores leave room for the nodes.
const PACE: Duration = Duration::from_millis(15);
/// After a failed attempt (an unreachable neighbour fails at once; do not spin).
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Failures kept with their reason, for the report.
const KEEP_FAILURES: usize = 20;

/// What the loop saw.
#[derive(Clone, Debug, Default)]
pub struct RequestReport {
    /// Requests answered (after any number of attempts).
    pub ok: u64,
    /// Requests that found no answer within [`GIVE_UP`].
    pub gave_up: u64,
    /// Connections tried.
    pub attempts: u64,
    /// Attempts that failed (connect, I/O, status, body): retries.
    pub attempts_failed: u64,
    /// When each failed attempt started.
    pub failed_at: Vec<Instant>,
    /// The first failures, with why.
    pub failures: Vec<(Instant, String)>,
    /// When each request was answered.
    pub answered_at: Vec<Instant>,
    /// Latency of each answered request, from its first attempt.
    pub latencies: Vec<Duration>,
    /// Answers per backend name.
    pub per_backend: BTreeMap<String, u64>,
    /// When the loop started and ended.
    pub window: Option<(Instant, Instant)>,
}

impl RequestReport {
    /// The latency at quantile `q` (0..=1) of the answered requests.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        match l.len() {
            0 => Duration::ZERO,
            n => l[((n as f64 * q).ceil() as usize).clamp(1, n) - 1],
        }
    }

    /// The longest time without an answer.
    pub fn longest_gap(&self) -> Duration {
        match self.window {
            Some((start, end)) => super::longest_gap(start, end, &self.answered_at),
            None => Duration::ZERO,
        }
    }

    /// Failed attempts that started in `[from, to)`.
    pub fn failed_between(&self, from: Instant, to: Instant) -> usize {
        self.failed_at
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count()
    }
}

/// One attempt: `GET /` on a fresh connection; the backend that answered.
pub fn attempt(addr: SocketAddr) -> Result<String, String> {
    let mut conn =
        HttpConn::connect_from(None, addr, CONNECT_TIMEOUT).map_err(|e| e.to_string())?;
    conn.set_io_timeout(IO_TIMEOUT).map_err(|e| e.to_string())?;
    let reply = conn.get("/", false).map_err(|e| e.to_string())?;
    if reply.status != 200 {
        return Err(format!("HTTP {}: {}", reply.status, reply.body.trim()));
    }
    reply
        .backend()
        .map(str::to_owned)
        .ok_or_else(|| format!("no backend in {:?}", reply.body))
}

/// Runs the loop against `addr` until `stop` or `deadline` (call it inside the client host).
pub fn run(addr: SocketAddr, stop: &AtomicBool, deadline: Instant) -> RequestReport {
    let mut r = RequestReport::default();
    let start = Instant::now();
    // Bounded by time, and by count in case the clock misbehaves.
    'requests: for _ in 0..1_000_000u32 {
        if !super::pause(PACE, stop, deadline) {
            break;
        }
        let first = Instant::now();
        loop {
            let at = Instant::now();
            r.attempts += 1;
            match attempt(addr) {
                Ok(backend) => {
                    let now = Instant::now();
                    r.ok += 1;
                    r.answered_at.push(now);
                    r.latencies.push(now - first);
                    *r.per_backend.entry(backend).or_default() += 1;
                    break;
                }
                Err(why) => {
                    r.attempts_failed += 1;
                    r.failed_at.push(at);
                    if r.failures.len() < KEEP_FAILURES {
                        r.failures.push((at, why));
                    }
                }
            }
            if first.elapsed() >= GIVE_UP {
                r.gave_up += 1;
                break;
            }
            if !super::pause(RETRY_PAUSE, stop, deadline) {
                break 'requests;
            }
        }
    }
    r.window = Some((start, Instant::now()));
    r
}
