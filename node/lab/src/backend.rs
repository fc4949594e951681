//! The lab's backend server (`dsrlb lab-backend`): HTTP/1.1 with keep-alive on a TCP port
//! and a UDP echo, both answering with the backend's name so clients can tell who served
//! them. It binds 0.0.0.0, so it also answers on a VIP held on `lo` (DSR), and UDP replies
//! leave from the address the request was sent to. A UDP sink on [`UDP_SINK_PORT`] counts
//! datagrams and bytes without answering (`GET /udp-sink` reads the counts), so benchmarks
//! can measure delivered UDP throughput. Where the host has IPv6 (a lab built with
//! `LabSpec::ipv6`), the TCP port is dual-stack and a second UDP echo serves IPv6.

use std::convert::Infallible;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use socket2::{Domain, Socket, Type};

use super::pattern::{CHUNK, pattern_slice, verify};
use super::{Host, LabError};

/// Arguments of `dsrlb lab-backend`.
#[derive(clap::Args, Debug, Clone)]
pub struct BackendArgs {
    /// Name put in every answer (`backend=<name>`).
    #[arg(long)]
    pub name: String,
    /// HTTP port (on every local address, the VIP on `lo` included).
    #[arg(long, default_value_t = 80)]
    pub tcp_port: u16,
    /// UDP echo port.
    #[arg(long, default_value_t = 5353)]
    pub udp_port: u16,
}

/// How often the UDP thread looks at its stop flag.
const UDP_POLL: Duration = Duration::from_millis(100);
/// The HTTP sockets' send buffer: the kernel doubles it, so a killed backend's orphaned
/// sockets deliver at most ~256 KiB more, a quarter second of a chaos stream.
const SEND_BUFFER: usize = 128 << 10;
/// Big enough for any UDP payload.
const UDP_MAX: usize = 65_536;

/// The UDP port of the counting sink. A fixed port rather than a `BackendArgs` field, so
/// code that builds `BackendArgs` by hand keeps compiling; the sink is on in every backend.
pub const UDP_SINK_PORT: u16 = 9000;
/// The response header of `GET /bytes/<n>` that names the backend (`x-backend: b2`).
pub const BACKEND_HEADER: &str = "x-backend";
/// Datagrams the sink takes per `recvmmsg`: one syscall per batch, not per datagram, so
/// the sink costs the backend little CPU under a flood.
const SINK_BATCH: usize = 64;
/// Bytes kept of each datagram; longer ones are counted at full length (MSG_TRUNC).
const SINK_SLOT: usize = 2048;
/// A socket buffer deep enough to ride out scheduling gaps on a busy machine.
const SINK_RCVBUF: usize = 8 << 20;

/// What the UDP sink has received since the backend started.
#[derive(Debug, Default)]
pub struct SinkCounts {
    datagrams: AtomicU64,
    bytes: AtomicU64,
}

impl SinkCounts {
    /// `(datagrams, bytes)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.datagrams.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// The body of `GET /udp-sink`: `datagrams=<n> bytes=<n>`.
    pub fn render(&self) -> String {
        let (d, b) = self.get();
        format!("datagrams={d} bytes={b}\n")
    }

    /// Parses a `GET /udp-sink` body back into `(datagrams, bytes)`.
    pub fn parse(body: &str) -> Option<(u64, u64)> {
        let mut datagrams = None;
        let mut bytes = None;
        for field in body.split_whitespace() {
            match field.split_once('=') {
                Some(("datagrams", v)) => datagrams = v.parse().ok(),
                Some(("bytes", v)) => bytes = v.parse().ok(),
                _ => {}
            }
        }
        Some((datagrams?, bytes?))
    }
}

/// Runs the backend until SIGTERM or SIGINT. Blocking; builds its own tokio runtime.
pub fn run_backend(args: BackendArgs) -> anyhow::Result<()> {
    let server = BackendServer::start(&args)?;
    tracing::info!(name = %args.name, tcp = %server.tcp_addr(), udp = %server.udp_addr(),
        "lab backend listening");
    // Said on stdout too: the lab's log file is how a person sees a backend came up.
    println!(
        "lab-backend {} listening on tcp {} udp {}",
        args.name,
        server.tcp_addr(),
        server.udp_addr()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            r = tokio::signal::ctrl_c() => r?,
        }
        anyhow::Ok(())
    })?;
    server.stop()?;
    Ok(())
}

/// A backend running on threads of this process: sockets are bound in the network namespace
/// of the thread that calls [`BackendServer::start`]. Stopped on drop.
#[derive(Debug)]
pub struct BackendServer {
    tcp_addr: SocketAddr,
    udp_addr: SocketAddr,
    sink_addr: SocketAddr,
    sink: Arc<SinkCounts>,
    stop_tcp: Option<tokio::sync::oneshot::Sender<()>>,
    stop_udp: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), LabError>>>,
}

impl BackendServer {
    /// Binds both ports in the current thread's network namespace and starts serving.
    pub fn start(args: &BackendArgs) -> Result<BackendServer, LabError> {
        let any = Ipv4Addr::UNSPECIFIED;
        let ipv6 = ipv6_enabled();
        // Dual stack where the host has IPv6: one listener takes both families.
        let (tcp, tcp_addr) = if ipv6 {
            let t = Socket::new(Domain::IPV6, Type::STREAM, None)
                .and_then(|t| t.set_only_v6(false).map(|()| t))
                .map_err(|e| LabError::io("tcp socket", e))?;
            let a = SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::UNSPECIFIED,
                args.tcp_port,
                0,
                0,
            ));
            (t, a)
        } else {
            let t = Socket::new(Domain::IPV4, Type::STREAM, None)
                .map_err(|e| LabError::io("tcp socket", e))?;
            (t, SocketAddr::V4(SocketAddrV4::new(any, args.tcp_port)))
        };
        // SO_REUSEADDR: a restarted backend must not wait for its old TIME_WAITs.
        // A bounded send buffer (accepted sockets inherit it): when the process is killed,
        // the kernel still delivers what its orphaned sockets had queued, and an autotuned
        // queue of megabytes let a chaos stream to a killed backend run on as if it lived.
        tcp.set_reuse_address(true)
            .and_then(|()| tcp.set_send_buffer_size(SEND_BUFFER))
            .and_then(|()| tcp.bind(&tcp_addr.into()))
            .and_then(|()| tcp.listen(1024))
            .and_then(|()| tcp.set_nonblocking(true))
            .map_err(|e| LabError::io(format!("listen on tcp {tcp_addr}"), e))?;
        let tcp: std::net::TcpListener = tcp.into();
        let udp = UdpSocket::bind(SocketAddrV4::new(any, args.udp_port))
            .map_err(|e| LabError::io(format!("bind udp port {}", args.udp_port), e))?;
        setsockopt(&udp, sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| LabError::io("set IP_PKTINFO", e.into()))?;
        udp.set_read_timeout(Some(UDP_POLL))
            .map_err(|e| LabError::io("set udp timeout", e))?;
        let tcp_addr = tcp
            .local_addr()
            .map_err(|e| LabError::io("tcp local addr", e))?;
        let udp_addr = udp
            .local_addr()
            .map_err(|e| LabError::io("udp local addr", e))?;
        let sink_sock = sink_socket(ipv6)?;
        let sink_addr = sink_sock
            .local_addr()
            .map_err(|e| LabError::io("udp sink local addr", e))?;
        let sink = Arc::new(SinkCounts::default());

        let name: Arc<str> = Arc::from(args.name.as_str());
        let stop_udp = Arc::new(AtomicBool::new(false));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let mut threads = Vec::new();
        let app = router(Arc::clone(&name), Arc::clone(&sink));
        threads.push(spawn(format!("{name}-http"), move || {
            serve_http(tcp, app, stop_rx)
        })?);
        let (flag, n) = (Arc::clone(&stop_udp), Arc::clone(&name));
        threads.push(spawn(format!("{name}-udp"), move || {
            udp_echo(udp, &n, &flag)
        })?);
        if ipv6 {
            let a6 = SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::UNSPECIFIED,
                args.udp_port,
                0,
                0,
            ));
            // V6ONLY: the IPv4 echo holds the port for IPv4.
            let udp6: UdpSocket = Socket::new(Domain::IPV6, Type::DGRAM, None)
                .and_then(|u| u.set_only_v6(true).map(|()| u))
                .and_then(|u| u.bind(&a6.into()).map(|()| u))
                .map_err(|e| LabError::io(format!("bind udp6 port {}", args.udp_port), e))?
                .into();
            setsockopt(&udp6, sockopt::Ipv6RecvPacketInfo, &true)
                .map_err(|e| LabError::io("set IPV6_RECVPKTINFO", e.into()))?;
            udp6.set_read_timeout(Some(UDP_POLL))
                .map_err(|e| LabError::io("set udp6 timeout", e))?;
            let (flag, n) = (Arc::clone(&stop_udp), Arc::clone(&name));
            threads.push(spawn(format!("{name}-udp6"), move || {
                udp_echo(udp6, &n, &flag)
            })?);
        }
        let (flag, counts) = (Arc::clone(&stop_udp), Arc::clone(&sink));
        threads.push(spawn(format!("{name}-sink"), move || {
            udp_sink(&sink_sock, &counts, &flag)
        })?);
        Ok(BackendServer {
            tcp_addr,
            udp_addr,
            sink_addr,
            sink,
            stop_tcp: Some(stop_tx),
            stop_udp,
            threads,
        })
    }

    /// Starts a backend inside `host` (a thread of this process, in its namespace).
    pub fn start_in(host: &Host, args: &BackendArgs) -> Result<BackendServer, LabError> {
        host.try_run(|| BackendServer::start(args))?
    }

    /// The bound TCP address (0.0.0.0:port).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound UDP address (0.0.0.0:port).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound address of the counting UDP sink (0.0.0.0:[`UDP_SINK_PORT`]).
    pub fn sink_addr(&self) -> SocketAddr {
        self.sink_addr
    }

    /// What the UDP sink has counted so far.
    pub fn sink_counts(&self) -> (u64, u64) {
        self.sink.get()
    }

    /// Stops every server and reports the first error any of them hit.
    pub fn stop(mut self) -> Result<(), LabError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), LabError> {
        if let Some(tx) = self.stop_tcp.take() {
            // An Err means the HTTP thread already ended; its result is collected below.
            if tx.send(()).is_err() {
                tracing::debug!("http server already stopped");
            }
        }
        self.stop_udp.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for t in self.threads.drain(..) {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(LabError::Spec("backend thread panicked".into())));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for BackendServer {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            eprintln!("lab backend: {e}");
        }
    }
}

fn spawn<F>(name: String, f: F) -> Result<JoinHandle<Result<(), LabError>>, LabError>
where
    F: FnOnce() -> Result<(), LabError> + Send + 'static,
{
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .map_err(|e| LabError::io(format!("spawn thread {name}"), e))
}

fn router(name: Arc<str>, sink: Arc<SinkCounts>) -> Router {
    Router::new()
        .route("/", get(root))
        .route("/udp-sink", get(sink_counts).with_state(sink))
        .route("/bytes/{n}", get(pattern_bytes))
        .route("/upload", post(upload))
        .layer(DefaultBodyLimit::disable())
        .with_state(name)
}

/// Serves HTTP until `stop` fires, then drops every connection (a test backend needs no
/// graceful drain; chaos tests kill it harder than that anyway).
fn serve_http(
    listener: std::net::TcpListener,
    app: Router,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), LabError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| LabError::io("build tokio runtime", e))?;
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|e| LabError::io("register listener", e))?;
        tokio::select! {
            r = axum::serve(listener, app) => r.map_err(|e| LabError::io("serve http", e)),
            _ = stop => Ok(()),
        }
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    result
}

async fn root(State(name): State<Arc<str>>) -> String {
    format!("backend={name}\n")
}

async fn sink_counts(State(sink): State<Arc<SinkCounts>>) -> String {
    sink.render()
}

/// The pattern body names its backend in an `x-backend` header: a verified stream through
/// the VIP learns which backend carries it without a byte of the body changing.
async fn pattern_bytes(State(name): State<Arc<str>>, Path(n): Path<u64>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::HeaderName::from_static(BACKEND_HEADER),
                name.to_string(),
            ),
        ],
        Body::new(PatternBody { sent: 0, len: n }),
    )
        .into_response()
}

async fn upload(State(name): State<Arc<str>>, mut body: Body) -> (StatusCode, String) {
    use http_body::Body as _;
    let mut len = 0u64;
    let mut first_bad = None;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let data = match frame {
            None => break,
            Some(Err(e)) => return (StatusCode::BAD_REQUEST, format!("body error: {e}\n")),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
        };
        // Keep reading after a bad byte so the client gets the answer, not a reset.
        if first_bad.is_none() {
            first_bad = verify(len, &data).err();
        }
        len += data.len() as u64;
    }
    match first_bad {
        None => (StatusCode::OK, format!("ok {len} backend={name}")),
        Some((offset, want, got)) => (
            StatusCode::BAD_REQUEST,
            format!(
                "bad byte at offset {offset}: expected {want}, got {got} (len {len} backend={name})\n"
            ),
        ),
    }
}

/// Streams `len` pattern bytes as static slices: no allocation per chunk, whatever `len`.
struct PatternBody {
    sent: u64,
    len: u64,
}

impl http_body::Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let left = self.len - self.sent;
        if left == 0 {
            return Poll::Ready(None);
        }
        let max = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
        let chunk = pattern_slice(self.sent, max);
        self.sent += chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

/// Echoes `backend=<name> <payload>` from the address the request was sent to (IP_PKTINFO,
/// IPV6_PKTINFO): a reply from the host's own address would be dropped by a client that sent
/// to the VIP. One loop for either family's socket.
fn udp_echo(sock: UdpSocket, name: &str, stop: &AtomicBool) -> Result<(), LabError> {
    /// Where a request was sent, as its family's packet-info message gives it.
    enum Dst {
        V4(libc::in_addr),
        V6(libc::in6_addr),
    }
    let prefix = format!("backend={name} ");
    let mut buf = vec![0u8; UDP_MAX];
    let mut reply = Vec::with_capacity(prefix.len() + UDP_MAX);
    // Room for the larger of the two messages.
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let fd = sock.as_raw_fd();
    while !stop.load(Ordering::Relaxed) {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = match recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        {
            Ok(msg) => msg,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(LabError::io("udp recvmsg", e.into())),
        };
        let (n, from) = (msg.bytes, msg.address);
        let mut dst = None;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::Ipv4PacketInfo(info) => dst = Some(Dst::V4(info.ipi_addr)),
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        dst = Some(Dst::V6(info.ipi6_addr))
                    }
                    _ => {}
                }
            }
        }
        let Some(from) = from else { continue };
        reply.clear();
        reply.extend_from_slice(prefix.as_bytes());
        reply.extend_from_slice(&buf[..n]);
        let (info4, info6);
        let used: Vec<ControlMessage> = match dst {
            Some(Dst::V4(a)) => {
                info4 = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: a,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                vec![ControlMessage::Ipv4PacketInfo(&info4)]
            }
            Some(Dst::V6(a)) => {
                info6 = libc::in6_pktinfo {
                    ipi6_addr: a,
                    ipi6_ifindex: 0,
                };
                vec![ControlMessage::Ipv6PacketInfo(&info6)]
            }
            None => Vec::new(),
        };
        match sendmsg(
            fd,
            &[IoSlice::new(&reply)],
            &used,
            MsgFlags::empty(),
            Some(&from),
        ) {
            // A full socket buffer or an unreachable client loses one datagram; UDP allows it.
            Ok(_) | Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::ECONNREFUSED) => {}
            Err(e) => return Err(LabError::io(format!("udp reply to {from}"), e.into())),
        }
    }
    Ok(())
}

/// Whether this host (the calling thread's namespace) has IPv6 on.
fn ipv6_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6")
        .is_ok_and(|v| v.trim() == "0")
}

/// The sink's socket: 0.0.0.0:[`UDP_SINK_PORT`] (`[::]`, dual-stack, where the host has
/// IPv6: it counts both families) with a deep receive buffer and a read timeout, so the
/// thread sees its stop flag.
fn sink_socket(ipv6: bool) -> Result<UdpSocket, LabError> {
    let err = |e| LabError::io(format!("bind udp sink port {UDP_SINK_PORT}"), e);
    let sock: UdpSocket = if ipv6 {
        let a = SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::UNSPECIFIED,
            UDP_SINK_PORT,
            0,
            0,
        ));
        Socket::new(Domain::IPV6, Type::DGRAM, None)
            .and_then(|u| u.set_only_v6(false).map(|()| u))
            .and_then(|u| u.bind(&a.into()).map(|()| u))
            .map_err(err)?
            .into()
    } else {
        UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, UDP_SINK_PORT)).map_err(err)?
    };
    // The forced size ignores net.core.rmem_max (we are root in the lab); if it is refused
    // the kernel's default buffer still works, only with more loss under a flood.
    if let Err(e) = setsockopt(&sock, sockopt::RcvBufForce, &SINK_RCVBUF) {
        tracing::debug!(error = %e, "SO_RCVBUFFORCE refused; using the default buffer");
    }
    sock.set_read_timeout(Some(UDP_POLL))
        .map_err(|e| LabError::io("set udp sink timeout", e))?;
    Ok(sock)
}

/// Counts every datagram that reaches the sink, [`SINK_BATCH`] per `recvmmsg`.
fn udp_sink(sock: &UdpSocket, counts: &SinkCounts, stop: &AtomicBool) -> Result<(), LabError> {
    let mut buf = vec![0u8; SINK_BATCH * SINK_SLOT];
    let base = buf.as_mut_ptr();
    let mut iovs: Vec<libc::iovec> = (0..SINK_BATCH)
        .map(|i| libc::iovec {
            // `wrapping_add` keeps this safe code; `i * SINK_SLOT` stays inside `buf`.
            iov_base: base.wrapping_add(i * SINK_SLOT).cast(),
            iov_len: SINK_SLOT,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = (0..SINK_BATCH)
        // SAFETY: `mmsghdr` is plain C data for which all-zero bytes are valid (null
        // pointers, zero lengths).
        .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
        .collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let fd = sock.as_raw_fd();
    // WAITFORONE: block (up to the read timeout) for the first datagram only, then take
    // what is queued. TRUNC: report a long datagram's full length, not the slot's.
    let flags = libc::MSG_WAITFORONE | libc::MSG_TRUNC;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: `msgs` holds SINK_BATCH headers whose single iovecs point at disjoint
        // SINK_SLOT-byte slots of `buf`; `msgs`, `iovs` and `buf` outlive the call and are
        // not moved or otherwise borrowed during it.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                SINK_BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                _ => return Err(LabError::io("udp sink recvmmsg", e)),
            }
        }
        let got = usize::try_from(n).unwrap_or(0).min(SINK_BATCH);
        let bytes: u64 = msgs[..got].iter().map(|m| u64::from(m.msg_len)).sum();
        counts.datagrams.fetch_add(got as u64, Ordering::Relaxed);
        counts.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    // Keep the buffers provably alive until the last syscall above has returned.
    drop(iovs);
    drop(buf);
    Ok(())
}
