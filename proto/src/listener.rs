//! Accepting on the node's three TCP listeners (peer, admin, metrics) so that no client can
//! hold the node's file descriptors: a cap on open connections per listener and per source
//! address, an idle timeout on every connection, and an accept loop that outlives `EMFILE`.
//!
//! Why here: the peer server lives in `cluster` and the admin and metrics servers in the
//! daemon; all three must refuse the same way (docs/design.md#listeners), and `proto` is the
//! crate both ends of every service share. An open descriptor taken by an idle client is one
//! the datapath or a health check cannot have (a check failing with `EMFILE` once marked every
//! backend down).
//!
//! A connection over a cap is accepted and closed at once, not left in the backlog: the
//! client learns at once, and the backlog stays free for the clients the caps admit.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_io_timeout::TimeoutStream;

/// What one listener admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at once, all sources together.
    pub max_connections: usize,
    /// Open connections at once from one source address.
    pub per_source: usize,
    /// A connection that sends nothing for this long is closed (its pending reads and
    /// writes fail with `TimedOut`, which ends the server's connection task).
    pub idle: Duration,
}

/// What an operator graphs for one listener; shared with the metrics exposition.
#[derive(Debug, Default)]
pub struct ListenerStats {
    open: AtomicU64,
    refused: AtomicU64,
}

impl ListenerStats {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted and closed at once because a cap was reached, since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A bound listener with its [`Limits`].
#[derive(Debug)]
pub struct GuardedListener {
    listener: TcpListener,
    limits: Limits,
    name: &'static str,
    slots: Arc<Semaphore>,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    stats: Arc<ListenerStats>,
}

impl GuardedListener {
    /// `name` (`peer`, `admin`, `metrics`) labels the log lines and metrics.
    pub fn new(listener: TcpListener, name: &'static str, limits: Limits) -> Self {
        GuardedListener {
            listener,
            limits,
            name,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            sources: Arc::default(),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<ListenerStats> {
        Arc::clone(&self.stats)
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection the caps admit. Never fails: an accept error (`EMFILE` among
    /// them) is logged and retried after a pause, so a moment without descriptors does not
    /// end the server.
    pub async fn accept(&mut self) -> (GuardedStream, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(listener = self.name, error = %e,
                        "cannot accept a connection; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match self.admit(peer.ip()) {
                Some(slot) => {
                    let _ = stream.set_nodelay(true);
                    let mut io = TimeoutStream::new(stream);
                    io.set_read_timeout(Some(self.limits.idle));
                    io.set_write_timeout(Some(self.limits.idle));
                    return (
                        GuardedStream {
                            io: Box::pin(io),
                            _slot: slot,
                        },
                        peer,
                    );
                }
                None => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(listener = self.name, %peer,
                        "connection refused: connection cap reached");
                    drop(stream);
                }
            }
        }
    }

    fn admit(&self, source: IpAddr) -> Option<Slot> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        let mut sources = lock(&self.sources);
        let n = sources.entry(source).or_default();
        if *n >= self.limits.per_source {
            return None;
        }
        *n += 1;
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Slot {
            _permit: permit,
            source,
            sources: Arc::clone(&self.sources),
            stats: Arc::clone(&self.stats),
        })
    }

    /// The admitted connections as the stream tonic's `serve_with_incoming*` takes.
    pub fn into_incoming(
        self,
    ) -> impl futures_util::Stream<Item = io::Result<GuardedStream>> + Send + 'static {
        futures_util::stream::unfold(self, |mut l| async move {
            let (io, _) = l.accept().await;
            Some((Ok(io), l))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Counts stay consistent if a holder panicked: every update is one statement.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection's place under the caps, given back when the connection goes.
#[derive(Debug)]
struct Slot {
    _permit: OwnedSemaphorePermit,
    source: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    stats: Arc<ListenerStats>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sources = lock(&self.sources);
        if let Some(n) = sources.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                sources.remove(&self.source);
            }
        }
        self.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An admitted connection: the socket with its idle timeout, holding its slot.
#[derive(Debug)]
pub struct GuardedStream {
    io: Pin<Box<TimeoutStream<TcpStream>>>,
    _slot: Slot,
}

impl GuardedStream {
    pub fn tcp(&self) -> &TcpStream {
        self.io.get_ref()
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io.as_mut().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp().connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn bound(limits: Limits) -> GuardedListener {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        GuardedListener::new(l, "test", limits)
    }

    /// Reads until EOF or error; true if the server closed the connection.
    async fn closed(c: &mut TcpStream, within: Duration) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(within, c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn connections_over_the_per_source_cap_are_closed_and_counted() {
        let mut l = bound(Limits {
            max_connections: 10,
            per_source: 2,
            idle: Duration::from_secs(60),
        })
        .await;
        let addr = l.local_addr().unwrap();
        let stats = l.stats();
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await.unwrap());
        }
        let (a, _) = l.accept().await;
        let (b, _) = l.accept().await;
        // The third is refused inside the next accept, which then waits for a fourth.
        let pending = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
        assert!(
            pending.is_err(),
            "a third connection from one source was admitted"
        );
        assert!(closed(&mut clients[2], Duration::from_secs(5)).await);
        assert_eq!((stats.open(), stats.refused()), (2, 1));
        drop(a);
        // A slot given back admits the next connection from that source.
        let mut c4 = TcpStream::connect(addr).await.unwrap();
        let (_d, _) = l.accept().await;
        assert!(!closed(&mut c4, Duration::from_millis(100)).await);
        assert_eq!((stats.open(), stats.refused()), (2, 1));
        drop(b);
        assert_eq!(stats.open(), 1);
    }

    #[tokio::test]
    async fn the_total_cap_holds_across_sources() {
        let mut l = bound(Limits {
            max_connections: 1,
            per_source: 10,
            idle: Duration::from_secs(60),
        })
        .await;
        let addr = l.local_addr().unwrap();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let (_a, _) = l.accept().await;
        let pending = tokio::time::timeout(Duration::from_millis(200), l.accept()).await;
        assert!(pending.is_err());
        assert!(closed(&mut c2, Duration::from_secs(5)).await);
        assert_eq!(l.stats().refused(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_times_out() {
        let mut l = bound(Limits {
            max_connections: 4,
            per_source: 4,
            idle: Duration::from_millis(100),
        })
        .await;
        let _c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (mut s, _) = l.accept().await;
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("the idle timeout ends the read");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
    }
}
