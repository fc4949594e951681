//! A UDP request/response loop through the VIP: one datagram to the echo farm, wait a short
//! time for the backend's answer (which comes straight from the backend, DSR), count it lost
//! otherwise, and go on.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// How long one request waits for its answer before it counts as lost.
const ANSWER_TIMEOUT: Duration = Duration::from_millis(100);
/// Between two requests.
const PACE: Duration = Duration::from_millis(15);

/// What the loop saw.
#[derive(Clone, Debug, Default)]
pub struct UdpReport {
    pub sent: u64,
    pub answered: u64,
    /// When each lost request was sent.
    pub lost_at: Vec<Instant>,
    /// When each answer arrived.
    pub answered_at: Vec<Instant>,
    pub window: Option<(Instant, Instant)>,
}

impl UdpReport {
    pub fn lost(&self) -> u64 {
        self.sent - self.answered
    }

    /// The longest time without an answer.
    pub fn longest_gap(&self) -> Duration {
        match self.window {
            Some((start, end)) => super::longest_gap(start, end, &self.answered_at),
            None => Duration::ZERO,
        }
    }
}

/// Runs the loop against `addr` until `stop` or `deadline` (call it inside the client host).
pub fn run(addr: SocketAddr, stop: &AtomicBool, deadline: Instant) -> UdpReport {
    let mut r = UdpReport::default();
    let start = Instant::now();
    for seq in 0..1_000_000u32 {
        if !super::pause(PACE, stop, deadline) {
            break;
        }
        let at = Instant::now();
        r.sent += 1;
        let payload = format!("chaos {seq}");
        match lab::udp_request(addr, payload.as_bytes(), ANSWER_TIMEOUT) {
            // The echo names the backend and repeats the payload: a stale answer to an
            // earlier request (another socket, another port) cannot arrive here.
            Ok(answer) if answer.ends_with(&payload) => {
                r.answered += 1;
                r.answered_at.push(Instant::now());
            }
            _ => r.lost_at.push(at),
        }
    }
    r.window = Some((start, Instant::now()));
    r
}
