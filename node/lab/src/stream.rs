//! A long-lived TCP stream through the lab: a throttled download whose every byte is checked
//! against the pattern, running on its own thread inside a host. Takeover demos and chaos
//! tests watch its progress while they kill nodes; a reset, a gap or a corrupted byte ends
//! it with an error that says where.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::backend::BACKEND_HEADER;
use super::pattern::verify;
use super::{Host, LabError};

/// How long one read may block before the stream counts as broken.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The stream's socket receive buffer (the kernel doubles it for bookkeeping).
const RECV_BUFFER: usize = 64 << 10;

/// A running verified download.
pub struct Stream {
    shared: Arc<Shared>,
    total: u64,
    thread: Option<JoinHandle<Result<u64, LabError>>>,
}

/// What the stream's thread and its owner share.
#[derive(Default)]
struct Shared {
    received: AtomicU64,
    stop: AtomicBool,
    backend: OnceLock<String>,
}

impl Stream {
    /// Starts downloading `total` pattern bytes from `addr` (the lab backend's `/bytes/<n>`)
    /// inside `host`, at about `rate` bytes per second.
    pub fn start(host: &Host, addr: SocketAddr, total: u64, rate: u64) -> Stream {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let host = host.clone();
        let thread = std::thread::spawn(move || {
            host.try_run(move || {
                run(
                    addr,
                    total,
                    rate.max(1),
                    &theirs.received,
                    &theirs.stop,
                    &theirs.backend,
                )
            })?
        });
        Stream {
            shared,
            total,
            thread: Some(thread),
        }
    }

    /// Bytes received and verified so far.
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// The backend that serves the stream (its `x-backend` header), once the head is read.
    pub fn backend(&self) -> Option<&str> {
        self.shared.backend.get().map(String::as_str)
    }

    /// Asks the stream to end before `total`: after its next read it closes the connection,
    /// and [`Stream::join`] returns the bytes verified so far (an error if one was wrong, the
    /// connection broke or no data came for the read timeout). How a test ends a stream
    /// sized "longer than the run" once the run is over.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// The size asked for.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Waits for the end: the byte count, or why the stream broke.
    pub fn join(mut self) -> Result<u64, LabError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(LabError::Spec("stream thread panicked".into())),
        }
    }
}

/// The download of [`Stream::start`] on the calling thread, in whatever network namespace it
/// is in (for a process that already runs inside its host, such as `dsrlb lab-stream` in a
/// container); progress goes to `progress`. Returns the verified byte count.
pub fn download_paced(
    addr: SocketAddr,
    total: u64,
    rate: u64,
    progress: &AtomicU64,
) -> Result<u64, LabError> {
    run(
        addr,
        total,
        rate.max(1),
        progress,
        &AtomicBool::new(false),
        &OnceLock::new(),
    )
}

fn run(
    addr: SocketAddr,
    total: u64,
    rate: u64,
    progress: &AtomicU64,
    stop: &AtomicBool,
    backend: &OnceLock<String>,
) -> Result<u64, LabError> {
    let io = |what: &str, e| LabError::io(format!("stream from {addr}: {what}"), e);
    // A small receive buffer, set before the handshake fixes the window scale, keeps the
    // backend's sending tied to our reading pace. Without it the kernels buffered megabytes
    // ahead of a paced reader, so a stream whose backend was killed went on delivering the
    // dead server's queued bytes past the end of a chaos scenario instead of breaking.
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(|e| io("socket", e))?;
    sock.set_recv_buffer_size(RECV_BUFFER)
        .map_err(|e| io("receive buffer", e))?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(2))
        .map_err(|e| io("connect", e))?;
    let mut tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(READ_TIMEOUT))
        .map_err(|e| io("timeout", e))?;
    let request =
        format!("GET /bytes/{total} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .map_err(|e| io("request", e))?;
    let mut reader = BufReader::with_capacity(16 << 10, tcp);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| io("status line", e))?;
    if !line.starts_with("HTTP/1.1 200") {
        return Err(LabError::Http {
            addr,
            what: format!("status line {line:?}"),
        });
    }
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| io("header", e))?;
        if n == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case(BACKEND_HEADER)
        {
            // Set once: a head has one such line, and a second would change nothing.
            let _ = backend.set(value.trim().to_owned());
        }
    }
    let start = Instant::now();
    let mut got = 0u64;
    let mut buf = vec![0u8; 16 << 10];
    while got < total && !stop.load(Ordering::Relaxed) {
        let want = buf
            .len()
            .min(usize::try_from(total - got).unwrap_or(buf.len()));
        let n = reader
            .read(&mut buf[..want])
            .map_err(|e| io(&format!("read at byte {got}"), e))?;
        if n == 0 {
            return Err(LabError::Short {
                addr,
                expected: total,
                got,
            });
        }
        if let Err((at, expected, found)) = verify(got, &buf[..n]) {
            return Err(LabError::Corrupt {
                addr,
                offset: at,
                expected,
                got: found,
            });
        }
        got += n as u64;
        progress.store(got, Ordering::Relaxed);
        // Pace to `rate`: sleep while ahead of schedule.
        let due = Duration::from_secs_f64(got as f64 / rate as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    Ok(got)
}
