//! TCP health checks: one task per checked backend connects to `ip:port` every interval and
//! feeds a rise/fall hysteresis; only verdict changes leave this module.
//!
//! The hysteresis is a pure state machine ([`Hysteresis`]) so its edges are unit-tested; the
//! async loop around it only does I/O. Backends start healthy (as HAProxy and LVS do): a
//! node that restarts keeps serving at once, and a dead backend leaves after `fall` checks.

use crate::config::CheckConfig;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span};

/// Rise/fall counting for one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hysteresis {
    up: bool,
    /// Consecutive results that disagree with `up`.
    streak: u32,
}

impl Hysteresis {
    /// A backend not yet checked counts as up.
    pub fn new() -> Self {
        Hysteresis {
            up: true,
            streak: 0,
        }
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

impl Default for Hysteresis {
    fn default() -> Self {
        Self::new()
    }
}

/// Identifies a checked backend: (farm name, backend name).
pub type BackendKey = (String, String);

/// What to check.
#[derive(Debug, Clone)]
pub struct CheckTarget {
    pub key: BackendKey,
    pub addr: SocketAddrV4,
    pub check: CheckConfig,
}

/// Current verdicts, readable by the table builder and the metrics endpoint.
#[derive(Debug, Default)]
pub struct HealthView {
    verdicts: Mutex<BTreeMap<BackendKey, bool>>,
}

impl HealthView {
    /// The verdict for a backend; unchecked backends are healthy.
    pub fn is_up(&self, farm: &str, backend: &str) -> bool {
        let verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        verdicts
            .get(&(farm.to_string(), backend.to_string()))
            .copied()
            .unwrap_or(true)
    }

    /// All checked backends and their verdicts.
    pub fn all(&self) -> Vec<(BackendKey, bool)> {
        let verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        verdicts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn set(&self, key: &BackendKey, up: bool) {
        let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        verdicts.insert(key.clone(), up);
    }
}

/// Runs the check loops until dropped.
pub struct HealthChecker {
    tasks: JoinSet<()>,
    /// Held so the daemon's receiver stays open even when no backend is checked.
    _changed: Arc<watch::Sender<u64>>,
}

impl HealthChecker {
    /// Starts one loop per target; `changed` is bumped on every verdict change.
    pub fn start(
        targets: Vec<CheckTarget>,
        view: Arc<HealthView>,
        changed: watch::Sender<u64>,
    ) -> Self {
        let mut tasks = JoinSet::new();
        let changed = Arc::new(changed);
        for target in targets {
            view.set(&target.key, true);
            let span = info_span!("health", farm = %target.key.0, backend = %target.key.1);
            let view = view.clone();
            let changed = changed.clone();
            tasks.spawn(check_loop(target, view, changed).instrument(span));
        }
        HealthChecker {
            tasks,
            _changed: changed,
        }
    }

    /// Stops every loop.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn check_loop(target: CheckTarget, view: Arc<HealthView>, changed: Arc<watch::Sender<u64>>) {
    let mut state = Hysteresis::new();
    let mut tick = tokio::time::interval(target.check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = probe(target.addr, &target.check).await;
        if let Some(up) = state.observe(ok, target.check.rise, target.check.fall) {
            info!(
                addr = %target.addr,
                verdict = if up { "up" } else { "down" },
                "backend health changed"
            );
            view.set(&target.key, up);
            changed.send_modify(|generation| *generation += 1);
        }
    }
}

async fn probe(addr: SocketAddrV4, check: &CheckConfig) -> bool {
    matches!(
        tokio::time::timeout(check.timeout, tokio::net::TcpStream::connect(addr)).await,
        Ok(Ok(_))
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
    fn goes_down_after_fall_failures_and_up_after_rise_successes() {
        let mut h = Hysteresis::new();
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
        let mut h = Hysteresis::new();
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
        let check = CheckConfig {
            interval: std::time::Duration::from_millis(100),
            timeout: std::time::Duration::from_millis(500),
            rise: 1,
            fall: 1,
        };
        assert!(probe(addr, &check).await);
        drop(listener);
        assert!(!probe(addr, &check).await);
    }
}
