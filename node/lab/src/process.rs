//! `LabProcess`: a program running inside a lab host, with its output in a log file, that
//! chaos scenarios can kill, freeze and resume, and that never outlives its owner.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::LabError;

/// How often `wait_timeout` looks at the child; short enough for tests, cheap enough.
const POLL: Duration = Duration::from_millis(10);

/// A child process started by [`super::Host::spawn`]. Dropping it kills (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct LabProcess {
    name: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl LabProcess {
    pub(crate) fn new(name: String, child: Child, log: PathBuf) -> Self {
        LabProcess {
            name,
            child,
            log,
            exited: None,
        }
    }

    /// A human name, `host/program`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id (`ip netns exec` execs the program, so this is the program itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file that receives the process's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (lossy UTF-8); empty if it cannot be read.
    pub fn read_log(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => format!("<cannot read {}: {e}>", self.log.display()),
        }
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.read_log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends `sig` (e.g. SIGTERM, SIGSTOP, SIGCONT). Does nothing once the process was reaped,
    /// so a signal can never reach a recycled pid.
    pub fn signal(&self, sig: Signal) -> Result<(), LabError> {
        if self.exited.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id())
            .map_err(|_| LabError::Spec(format!("pid {} out of range", self.child.id())))?;
        match kill(Pid::from_raw(pid), sig) {
            // Already dead but not reaped yet: nothing left to signal.
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(errno) => Err(LabError::io(
                format!("send {sig} to {}", self.name),
                errno.into(),
            )),
        }
    }

    /// SIGKILL, then reap. Safe to call on a process that already exited.
    pub fn kill(&mut self) -> Result<ExitStatus, LabError> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        self.signal(Signal::SIGKILL)?;
        let status = self
            .child
            .wait()
            .map_err(|e| LabError::io(format!("wait for {}", self.name), e))?;
        self.exited = Some(status);
        Ok(status)
    }

    /// Has it exited? Reaps it if so.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, LabError> {
        if self.exited.is_none() {
            self.exited = self
                .child
                .try_wait()
                .map_err(|e| LabError::io(format!("poll {}", self.name), e))?;
        }
        Ok(self.exited)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill() {
            eprintln!("dsrlb lab: cannot kill {}: {e}", self.name);
        }
    }
}
