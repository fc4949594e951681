//! TCP health checks: one task per checked backend connects to `ip:port` every interval and
//! feeds a rise/fall hysteresis; only verdict changes leave this module.
//!
//! The checker runs on the Raft leader only and its verdicts are committed to the log, so
//! every node's table agrees (docs/design.md#inv-same-backend). A new leader resumes from the
//! replicated verdicts; a backend that has none yet gets one from its first probe, so a fresh
//! cluster neither sends traffic to an unverified backend nor waits `rise` intervals for a healthy
//! one.
//!
//! The hysteresis is a pure state machine ([`Hysteresis`]) so its edges are unit-tested; the
//! async loop around it only does I/O.

use cluster::TcpCheck;
use std::net::{Ipv4Addr, SocketAddrV4};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};

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
    pub addr: SocketAddrV4,
    pub check: TcpCheck,
    /// The replicated verdict, if there is one.
    pub verdict: Option<bool>,
}

/// A verdict change to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictChange {
    pub key: BackendKey,
    pub up: bool,
}

/// Runs the check loops until stopped or dropped.
pub struct HealthChecker {
    tasks: JoinSet<()>,
}

impl HealthChecker {
    /// Starts one loop per target; verdict changes are sent on `changes`.
    pub fn start(targets: Vec<CheckTarget>, changes: mpsc::UnboundedSender<VerdictChange>) -> Self {
        let mut tasks = JoinSet::new();
        for target in targets {
            let span = info_span!("health", farm = %target.key.0, backend = %target.key.1);
            tasks.spawn(check_loop(target, changes.clone()).instrument(span));
        }
        HealthChecker { tasks }
    }

    /// Stops every loop.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn check_loop(target: CheckTarget, changes: mpsc::UnboundedSender<VerdictChange>) {
    let mut state = target.verdict.map(Hysteresis::new);
    let mut own_fault_logged = false;
    let mut tick = tokio::time::interval(target.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match probe(target.addr, &target.check).await {
            Probe::Answered(ok) => {
                own_fault_logged = false;
                ok
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
            info!(
                addr = %target.addr,
                verdict = if up { "up" } else { "down" },
                "backend health changed"
            );
            let change = VerdictChange {
                key: target.key.clone(),
                up,
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    }
}

/// The outcome of one probe.
enum Probe {
    /// The backend answered (`true`) or did not (`false`: refused, unreachable, timed out).
    Answered(bool),
    /// The connect failed on this node before reaching the backend.
    NodeFault(std::io::Error),
}

async fn probe(addr: SocketAddrV4, check: &TcpCheck) -> Probe {
    match tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Answered(true),
        Ok(Err(e)) if node_fault(&e) => Probe::NodeFault(e),
        Ok(Err(_)) | Err(_) => Probe::Answered(false),
    }
}

/// Whether a connect error is this node's own shortage rather than anything the backend
/// did: no descriptor (per process or system), no buffer or memory, no local port.
fn node_fault(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// The address a farm's backends are checked on: DSR uses the virtual port on the backend,
/// so the first port of the farm's range.
pub fn check_addr(ip: Ipv4Addr, first_port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip, first_port)
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
        ] {
            assert!(
                node_fault(&std::io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
        ] {
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

    #[tokio::test]
    async fn probe_sees_a_listener_and_its_absence() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let std::net::SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to an IPv4 address")
        };
        let check = TcpCheck {
            interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_millis(500),
            rise: 1,
            fall: 1,
        };
        assert!(matches!(probe(addr, &check).await, Probe::Answered(true)));
        drop(listener);
        assert!(matches!(probe(addr, &check).await, Probe::Answered(false)));
    }
}
