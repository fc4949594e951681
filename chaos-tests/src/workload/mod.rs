//! Client traffic that runs through the VIP for a whole scenario, each on its own thread in
//! the client host: verified long-lived streams ([`streams`]), a loop of short TCP requests
//! ([`requests`]), a UDP request/response loop ([`udp`]) and a loop of admin writes
//! ([`writes`]). Each stops on request and always by its own deadline, and reports what it saw.

pub mod requests;
pub mod streams;
pub mod udp;
pub mod writes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lab::Host;

/// A loop running on its own thread inside a lab host. Dropping it stops and joins it, so a
/// failing scenario leaves no thread behind in a namespace it is about to delete.
pub struct Worker<T: Send + 'static> {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<T, lab::LabError>>>,
}

impl<T: Send + 'static> Worker<T> {
    /// Runs `f(stop, deadline)` inside `host`; `f` must return soon after `stop` is set or
    /// `deadline` (now + `limit`) passes.
    pub fn spawn(
        host: &Host,
        name: &str,
        limit: Duration,
        f: impl FnOnce(&AtomicBool, Instant) -> T + Send + 'static,
    ) -> Worker<T> {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, host) = (stop.clone(), host.clone());
        let deadline = Instant::now() + limit;
        let thread = std::thread::Builder::new()
            .name(format!("chaos-{name}"))
            .spawn(move || host.try_run(move || f(&flag, deadline)))
            .ok();
        Worker {
            name: name.to_owned(),
            stop,
            thread,
        }
    }

    /// Stops the loop and returns its report.
    pub fn finish(mut self) -> Result<T, String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Err(format!("{}: thread could not be started", self.name)),
            Some(Err(_)) => Err(format!("{}: thread panicked", self.name)),
            Some(Ok(Err(e))) => Err(format!("{}: {e}", self.name)),
            Some(Ok(Ok(report))) => Ok(report),
        }
    }
}

impl<T: Send + 'static> Drop for Worker<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            eprintln!("chaos {}: thread panicked", self.name);
        }
    }
}

/// Sleeps `d`, or less if `stop` is set or `deadline` comes first; whether to go on.
pub(crate) fn pause(d: Duration, stop: &AtomicBool, deadline: Instant) -> bool {
    let until = (Instant::now() + d).min(deadline);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return now < deadline;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// The longest stretch of `[start, end]` with no instant of `hits` in it (`hits` sorted).
pub fn longest_gap(start: Instant, end: Instant, hits: &[Instant]) -> Duration {
    let mut last = start;
    let mut longest = Duration::ZERO;
    for &t in hits.iter().filter(|t| **t >= start && **t <= end) {
        longest = longest.max(t - last);
        last = t;
    }
    longest.max(end.saturating_duration_since(last))
}
