//! Long-lived TCP streams through the VIP: the lab's paced download of the `i % 251` pattern,
//! every byte checked by the client (a reset, a gap or a corrupted byte ends it with an
//! error), sized to outlast the scenario and stopped when it is over. A sampler records each
//! stream's progress, so a scenario can tell whether a stream moved after a nemesis and how
//! long its longest stall was.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lab::{Host, Stream};

use super::Worker;

/// Longer than any scenario at any rate the suite uses: a stream ends because it is stopped.
const ENDLESS: u64 = 1 << 40;
/// How often the sampler reads the streams' progress.
const SAMPLE: Duration = Duration::from_millis(20);

/// How one stream ended.
#[derive(Clone, Debug)]
pub struct StreamOutcome {
    /// Where it was opened (the VIP, or a backend's own address).
    pub target: SocketAddr,
    /// The backend that served it (its `x-backend` header), if the head arrived.
    pub backend: Option<String>,
    /// Bytes received and verified.
    pub bytes: u64,
    /// Why it broke: reset, gap, corrupted byte, stall past the read timeout.
    pub error: Option<String>,
    /// The longest time, at the sampler's resolution, in which no byte arrived.
    pub longest_stall: Duration,
    /// `(when, bytes so far)`, every [`SAMPLE`].
    pub samples: Vec<(Instant, u64)>,
}

impl StreamOutcome {
    /// Bytes verified by `at` (the last sample at or before it).
    pub fn bytes_at(&self, at: Instant) -> u64 {
        let i = self.samples.partition_point(|(t, _)| *t <= at);
        i.checked_sub(1).map_or(0, |k| self.samples[k].1)
    }
}

/// `(when, bytes so far)` of each stream.
type Samples = Vec<Vec<(Instant, u64)>>;

/// Streams running from one client host.
pub struct Streams {
    /// Declared first: stopping the sampler comes before the streams are taken back.
    sampler: Option<Worker<Samples>>,
    streams: Arc<Vec<(SocketAddr, Stream)>>,
}

impl Streams {
    /// Opens one stream to each of `targets` from `client`, each paced at `rate` bytes/s;
    /// they run until [`Streams::finish`] (or the sampler's `limit`).
    pub fn start(client: &Host, targets: &[SocketAddr], rate: u64, limit: Duration) -> Streams {
        let streams: Arc<Vec<(SocketAddr, Stream)>> = Arc::new(
            targets
                .iter()
                .map(|&t| (t, Stream::start(client, t, ENDLESS, rate)))
                .collect(),
        );
        let watched = streams.clone();
        let sampler = Worker::spawn(client, "stream-sampler", limit, move |stop, deadline| {
            let mut samples: Samples = vec![Vec::new(); watched.len()];
            while super::pause(SAMPLE, stop, deadline) {
                let now = Instant::now();
                for (k, (_, s)) in watched.iter().enumerate() {
                    samples[k].push((now, s.received()));
                }
            }
            samples
        });
        Streams {
            sampler: Some(sampler),
            streams,
        }
    }

    /// Bytes verified so far by each stream.
    pub fn progress(&self) -> Vec<u64> {
        self.streams.iter().map(|(_, s)| s.received()).collect()
    }

    /// The backend serving each stream, as far as known yet.
    pub fn backends(&self) -> Vec<Option<String>> {
        self.streams
            .iter()
            .map(|(_, s)| s.backend().map(str::to_owned))
            .collect()
    }

    /// Stops every stream and says how each ended.
    pub fn finish(mut self) -> Vec<StreamOutcome> {
        let samples = self
            .sampler
            .take()
            .map(|w| w.finish().unwrap_or_default())
            .unwrap_or_default();
        for (_, s) in self.streams.iter() {
            s.stop();
        }
        // The sampler was the only other owner, and it has been joined.
        let streams = match Arc::try_unwrap(std::mem::take(&mut self.streams)) {
            Ok(v) => v,
            Err(_) => unreachable!("the sampler thread is joined and held the only other clone"),
        };
        streams
            .into_iter()
            .enumerate()
            .map(|(k, (target, stream))| {
                let backend = stream.backend().map(str::to_owned);
                let received = stream.received();
                let samples = samples.get(k).cloned().unwrap_or_default();
                let (bytes, error) = match stream.join() {
                    Ok(n) => (n, None),
                    Err(e) => (received, Some(e.to_string())),
                };
                StreamOutcome {
                    target,
                    backend,
                    bytes,
                    error,
                    longest_stall: longest_stall(&samples),
                    samples,
                }
            })
            .collect()
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        // A scenario that fails before finish(): the streams end at their next read.
        for (_, s) in self.streams.iter() {
            s.stop();
        }
    }
}

impl StreamOutcome {
    /// When the longest stall began (the last sample before it), if there was one.
    pub fn stall_start(&self) -> Option<Instant> {
        stall(&self.samples).1
    }
}

/// The longest run of samples without progress.
fn longest_stall(samples: &[(Instant, u64)]) -> Duration {
    stall(samples).0
}

/// The longest run of samples without progress, and when it began.
fn stall(samples: &[(Instant, u64)]) -> (Duration, Option<Instant>) {
    let mut longest = (Duration::ZERO, None);
    let mut since: Option<(Instant, u64)> = None;
    for &(t, b) in samples {
        match since {
            Some((t0, b0)) if b == b0 => {
                if t - t0 > longest.0 {
                    longest = (t - t0, Some(t0));
                }
            }
            _ => since = Some((t, b)),
        }
    }
    longest
}
