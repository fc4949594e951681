//! A bounded HTTP load generator: N threads issuing `GET /` for a fixed time (and at most a
//! fixed number of requests), counting answers per backend and measuring latency in a
//! fixed-size histogram, so memory does not grow with the run's length.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::client::{CONNECT_TIMEOUT, HttpConn};

/// Hard limits, whatever the caller asks: threads, and requests per run.
const MAX_CONCURRENCY: usize = 256;
const MAX_REQUESTS: u64 = 20_000_000;
/// After a failed request a worker pauses briefly, so a refused connect does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to send (usually `VIP:80`).
    pub addr: SocketAddr,
    /// Worker threads, each with at most one request in flight (capped at 256).
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Reuse connections (`true`) or open one per request (`false`).
    pub keepalive: bool,
    /// Stop after this many requests in total (capped at 20 million).
    pub max_requests: u64,
    /// Source addresses, assigned to workers round-robin; empty = the host's default.
    pub sources: Vec<Ipv4Addr>,
    /// Request path.
    pub path: String,
}

impl LoadSpec {
    /// A spec with the common defaults (`GET /`, no request cap below the hard one).
    pub fn new(addr: SocketAddr, concurrency: usize, duration: Duration, keepalive: bool) -> Self {
        LoadSpec {
            addr,
            concurrency,
            duration,
            keepalive,
            max_requests: MAX_REQUESTS,
            sources: Vec::new(),
            path: "/".into(),
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// Requests answered with 200.
    pub requests: u64,
    /// Requests that failed (connect, I/O, parse, non-200).
    pub errors: u64,
    /// Successful answers per backend name (`backend=<name>`; `?` if the body had none).
    pub per_backend: BTreeMap<String, u64>,
    /// Median latency of successful requests (connect included when not keep-alive).
    pub p50: Duration,
    /// 99th percentile latency of successful requests.
    pub p99: Duration,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The first error seen, for diagnostics.
    pub first_error: Option<String>,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.requests as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs `GET /` against `addr` from `concurrency` threads for `duration`.
pub fn load(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    keepalive: bool,
) -> LoadReport {
    load_with(&LoadSpec::new(addr, concurrency, duration, keepalive))
}

/// Runs the load described by `spec`. Worker threads are created by the calling thread, so
/// inside `Host::run` they all live in that host's namespace.
pub fn load_with(spec: &LoadSpec) -> LoadReport {
    let workers = spec.concurrency.clamp(1, MAX_CONCURRENCY);
    let total = spec.max_requests.min(MAX_REQUESTS);
    // An exact split, so the request cap holds for the run as a whole.
    let share = |w: usize| total / workers as u64 + u64::from((w as u64) < total % workers as u64);
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut report = LoadReport::default();
    let mut hist = Histogram::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let src = (!spec.sources.is_empty()).then(|| spec.sources[w % spec.sources.len()]);
                scope.spawn(move || worker(spec, src, deadline, share(w)))
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(part) => {
                    report.requests += part.requests;
                    report.errors += part.errors;
                    for (k, v) in part.per_backend {
                        *report.per_backend.entry(k).or_default() += v;
                    }
                    if report.first_error.is_none() {
                        report.first_error = part.first_error;
                    }
                    hist.merge(&part.hist);
                }
                Err(_) => {
                    report.errors += 1;
                    report
                        .first_error
                        .get_or_insert_with(|| "load worker panicked".into());
                }
            }
        }
    });
    report.elapsed = start.elapsed();
    report.p50 = hist.quantile(0.50);
    report.p99 = hist.quantile(0.99);
    report
}

struct Part {
    requests: u64,
    errors: u64,
    per_backend: BTreeMap<String, u64>,
    first_error: Option<String>,
    hist: Histogram,
}

fn worker(spec: &LoadSpec, src: Option<Ipv4Addr>, deadline: Instant, budget: u64) -> Part {
    let mut part = Part {
        requests: 0,
        errors: 0,
        per_backend: BTreeMap::new(),
        first_error: None,
        hist: Histogram::new(),
    };
    let mut conn: Option<HttpConn> = None;
    while part.requests + part.errors < budget && Instant::now() < deadline {
        let t0 = Instant::now();
        let result = match conn.take() {
            Some(c) => Ok(c),
            None => HttpConn::connect_from(src, spec.addr, CONNECT_TIMEOUT),
        }
        .and_then(|mut c| c.get(&spec.path, spec.keepalive).map(|reply| (c, reply)));
        match result {
            Ok((c, reply)) if reply.status == 200 => {
                part.hist.record(t0.elapsed());
                part.requests += 1;
                let name = reply.backend().unwrap_or("?");
                match part.per_backend.get_mut(name) {
                    Some(n) => *n += 1,
                    None => {
                        part.per_backend.insert(name.to_owned(), 1);
                    }
                }
                if spec.keepalive {
                    conn = Some(c);
                }
            }
            Ok((_, reply)) => {
                part.errors += 1;
                part.first_error
                    .get_or_insert_with(|| format!("HTTP {}: {}", reply.status, reply.body.trim()));
            }
            Err(e) => {
                part.errors += 1;
                part.first_error.get_or_insert_with(|| e.to_string());
                std::thread::sleep(
                    ERROR_PAUSE.min(deadline.saturating_duration_since(Instant::now())),
                );
            }
        }
    }
    part
}

/// Log-linear latency histogram in microseconds: exact below 2 ms, then 128 buckets per
/// power of two (under 1 % error), up to about 20 minutes. Fixed size, merge by addition.
struct Histogram {
    counts: Vec<u64>,
}

const LINEAR: u64 = 2048;
const SUB: u64 = 128;
const OCTAVES: u64 = 30;

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; (LINEAR + SUB * OCTAVES) as usize],
        }
    }

    fn index(us: u64) -> usize {
        if us < LINEAR {
            return us as usize;
        }
        let log = 63 - u64::from(us.leading_zeros()); // >= 11
        let octave = (log - 11).min(OCTAVES - 1);
        let sub = (us >> (log - 7)) & (SUB - 1);
        (LINEAR + octave * SUB + sub) as usize
    }

    fn lower_bound(index: usize) -> u64 {
        let i = index as u64;
        if i < LINEAR {
            return i;
        }
        let octave = (i - LINEAR) / SUB;
        let sub = (i - LINEAR) % SUB;
        (SUB + sub) << (octave + 4)
    }

    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(us)] += 1;
    }

    fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    fn quantile(&self, q: f64) -> Duration {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Duration::from_micros(Self::lower_bound(i));
            }
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in (0..5_000_000u64).step_by(997) {
            let i = Histogram::index(us);
            assert!(i >= last, "index went down at {us}us");
            last = i;
            let lb = Histogram::lower_bound(i);
            assert!(lb <= us, "lower bound {lb} above {us}");
            assert!(us - lb <= us / 64 + 1, "bucket too wide at {us}: {lb}");
        }
    }

    #[test]
    fn quantiles_come_from_the_samples() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 100));
        }
        let p50 = h.quantile(0.50).as_micros();
        let p99 = h.quantile(0.99).as_micros();
        assert!((4900..=5000).contains(&p50), "p50 {p50}");
        assert!((9800..=9900).contains(&p99), "p99 {p99}");
    }
}
