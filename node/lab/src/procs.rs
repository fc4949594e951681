//! Backend processes of a lab: starting `dsrlb lab-backend` in each backend host, waiting
//! until it answers, stopping and restarting it (chaos tests kill backends too).

use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{http_get, udp_request};
use super::{Host, Lab, LabError, LabProcess};

/// How long `Lab::start_backend` waits for a backend to answer.
pub const BACKEND_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Ports `dsrlb lab-backend` listens on by default.
pub const BACKEND_HTTP_PORT: u16 = 80;
pub const BACKEND_UDP_PORT: u16 = 5353;

impl Lab {
    /// Starts `<dsrlb> lab-backend --name bN` in every backend host and waits until each
    /// answers HTTP and UDP on its own address. The processes live as long as the lab.
    pub fn start_backends(&mut self, dsrlb: &Path) -> Result<(), LabError> {
        for i in 0..self.backends.len() {
            self.start_backend(i, dsrlb)?;
        }
        Ok(())
    }

    /// (Re)starts the backend process of backend `i`, killing a previous one.
    pub fn start_backend(&mut self, i: usize, dsrlb: &Path) -> Result<(), LabError> {
        let host = self.backend_host(i)?;
        self.stop_backend(i)?;
        let mut proc = host.spawn(dsrlb, ["lab-backend", "--name", &host.name])?;
        wait_backend_ready(&host, Some(&mut proc), BACKEND_READY_TIMEOUT)?;
        self.backend_procs[i] = Some(proc);
        Ok(())
    }

    /// Kills the backend process of backend `i`, if it runs.
    pub fn stop_backend(&mut self, i: usize) -> Result<(), LabError> {
        self.backend_host(i)?;
        if let Some(mut old) = self.backend_procs[i].take() {
            old.kill()?;
        }
        Ok(())
    }

    /// The process of backend `i` (to freeze it with SIGSTOP, read its log, ...).
    pub fn backend_process(&mut self, i: usize) -> Option<&mut LabProcess> {
        self.backend_procs.get_mut(i)?.as_mut()
    }

    /// Waits until backend `i` answers on the default ports, however it was started (e.g.
    /// an in-process [`super::BackendServer`]).
    pub fn wait_backend_ready(&self, i: usize, timeout: Duration) -> Result<(), LabError> {
        wait_backend_ready(&self.backend_host(i)?, None, timeout)
    }

    fn backend_host(&self, i: usize) -> Result<Host, LabError> {
        self.backends.get(i).cloned().ok_or_else(|| {
            LabError::Spec(format!(
                "no backend {i}: the lab has {}",
                self.backends.len()
            ))
        })
    }
}

/// Polls (from inside the backend's own namespace) until it answers `backend=<name>` over
/// HTTP and UDP; fails early with the log tail if the process exits.
fn wait_backend_ready(
    host: &Host,
    mut proc: Option<&mut LabProcess>,
    timeout: Duration,
) -> Result<(), LabError> {
    let start = Instant::now();
    let expect = format!("backend={}", host.name);
    let mut last = String::from("no answer yet");
    while start.elapsed() < timeout {
        if let Some(p) = proc.as_deref_mut()
            && let Some(status) = p.try_wait()?
        {
            return Err(LabError::NotReady {
                name: p.name().to_owned(),
                waited: start.elapsed(),
                detail: format!("exited with {status}; log:\n{}", p.log_tail(20)),
            });
        }
        let probe = host.try_run(|| -> Result<(), LabError> {
            let reply = http_get(host.addr(BACKEND_HTTP_PORT), "/")?;
            if reply.body.trim_end() != expect {
                return Err(LabError::Spec(format!("http answered {:?}", reply.body)));
            }
            let udp = udp_request(host.addr(BACKEND_UDP_PORT), b"ready?", PROBE_TIMEOUT)?;
            if !udp.starts_with(&format!("{expect} ")) {
                return Err(LabError::Spec(format!("udp answered {udp:?}")));
            }
            Ok(())
        })?;
        match probe {
            Ok(()) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(PROBE_INTERVAL);
    }
    let log = proc.map(|p| p.log_tail(20)).unwrap_or_default();
    Err(LabError::NotReady {
        name: host.name.clone(),
        waited: start.elapsed(),
        detail: format!("{last}\n{log}"),
    })
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(300);
const PROBE_INTERVAL: Duration = Duration::from_millis(50);
