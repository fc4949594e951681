//! Lab clients: a small blocking HTTP/1.1 client (keep-alive, Content-Length and chunked
//! bodies) over std sockets, pattern download/upload with every byte checked, and a UDP
//! request. Run them inside a host with `Host::run` so they use that host's sockets.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::LabError;
use super::pattern::{CHUNK, pattern_slice, verify};

/// How long a TCP connect may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bodies read into memory (`get`) are capped; big transfers use `download`. A node's
/// `/metrics` with 2,000 farms (lab_scale) is several MiB.
const MAX_TEXT_BODY: usize = 32 << 20;
/// Bounds on a response head, so a broken peer cannot make us read forever.
const MAX_HEAD_LINES: usize = 100;
const MAX_LINE: usize = 8 << 10;
/// `read_exact_into` length meaning "a body delimited by the connection's end".
const UNTIL_EOF: u64 = u64::MAX;

/// One HTTP answer whose body was read as text.
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// Body (lossy UTF-8).
    pub body: String,
    /// Our side of the connection (shows which source address was used).
    pub local: SocketAddr,
}

impl HttpReply {
    /// The `<name>` of a `backend=<name>` body, if the body has one.
    pub fn backend(&self) -> Option<&str> {
        backend_of(&self.body)
    }
}

/// Extracts `<name>` from `backend=<name>` anywhere in `text`.
pub fn backend_of(text: &str) -> Option<&str> {
    let rest = &text[text.find("backend=")? + "backend=".len()..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ')')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// What a response head said about its body.
struct Head {
    status: u16,
    length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// A client connection; requests on it use keep-alive unless told otherwise.
#[derive(Debug)]
pub struct HttpConn {
    addr: SocketAddr,
    local: SocketAddr,
    stream: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl HttpConn {
    /// Connects to `addr` from the host's default source address.
    pub fn connect(addr: SocketAddr) -> Result<HttpConn, LabError> {
        HttpConn::connect_from(None, addr, CONNECT_TIMEOUT)
    }

    /// Connects from source address `src` (e.g. one of the lab's extra client IPs).
    pub fn connect_from(
        src: Option<Ipv4Addr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<HttpConn, LabError> {
        HttpConn::connect_from_ip(src.map(Into::into), addr, timeout)
    }

    /// [`HttpConn::connect_from`] for a source of either family.
    pub fn connect_from_ip(
        src: Option<std::net::IpAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<HttpConn, LabError> {
        let io = |what: &str, e| LabError::io(format!("{what} {addr}"), e);
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| io("socket for", e))?;
        if let Some(src) = src {
            sock.bind(&SocketAddr::new(src, 0).into())
                .map_err(|e| io(&format!("bind {src} to reach"), e))?;
        }
        sock.connect_timeout(&addr.into(), timeout)
            .map_err(|e| io("connect", e))?;
        let stream: TcpStream = sock.into();
        // Requests are written in pieces (head, then body); Nagle would delay the second.
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| io("configure socket to", e))?;
        let local = stream.local_addr().map_err(|e| io("local addr to", e))?;
        Ok(HttpConn {
            addr,
            local,
            stream: BufReader::with_capacity(CHUNK, stream),
            buf: Vec::new(),
        })
    }

    /// Our side of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How long one read or write may block from now on (default [`IO_TIMEOUT`]): a client
    /// that measures an outage gives up on a request long before the default would.
    pub fn set_io_timeout(&mut self, timeout: Duration) -> Result<(), LabError> {
        let t = Some(timeout.max(Duration::from_millis(1)));
        let stream = self.stream.get_ref();
        stream
            .set_read_timeout(t)
            .and_then(|()| stream.set_write_timeout(t))
            .map_err(|e| LabError::io(format!("set timeouts to {}", self.addr), e))
    }

    /// `GET path`, body read as text. With `keep_alive == false` the request says
    /// `Connection: close` and waits for the server to close first, so TIME_WAIT lands on the
    /// server and a long load run cannot exhaust the client's ports.
    pub fn get(&mut self, path: &str, keep_alive: bool) -> Result<HttpReply, LabError> {
        let conn = if keep_alive { "keep-alive" } else { "close" };
        self.send_head(&format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: {conn}\r\n\r\n",
            self.addr
        ))?;
        let head = self.read_head()?;
        let mut body = Vec::new();
        let addr = self.addr;
        self.read_body(&head, |chunk, _| {
            if body.len() + chunk.len() > MAX_TEXT_BODY {
                return Err(LabError::Http {
                    addr,
                    what: format!("text body over {MAX_TEXT_BODY} bytes"),
                });
            }
            body.extend_from_slice(chunk);
            Ok(())
        })?;
        if !keep_alive || head.close {
            self.drain_to_eof();
        }
        Ok(HttpReply {
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
            local: self.local,
        })
    }

    /// `GET /bytes/n`, checking every byte against the pattern; returns the byte count.
    pub fn download(&mut self, n: u64) -> Result<u64, LabError> {
        self.send_head(&format!(
            "GET /bytes/{n} HTTP/1.1\r\nHost: {}\r\n\r\n",
            self.addr
        ))?;
        let head = self.read_head()?;
        if head.status != 200 {
            return Err(self.status_error(&head));
        }
        let addr = self.addr;
        let got = self.read_body(&head, |chunk, offset| {
            verify(offset, chunk).map_err(|(offset, expected, got)| LabError::Corrupt {
                addr,
                offset,
                expected,
                got,
            })
        })?;
        if got != n {
            return Err(LabError::Short {
                addr,
                expected: n,
                got,
            });
        }
        Ok(got)
    }

    /// `POST /upload` of `n` pattern bytes; returns the server's `ok <n> backend=<name>`.
    pub fn upload(&mut self, n: u64) -> Result<String, LabError> {
        self.send_head(&format!(
            "POST /upload HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {n}\r\n\r\n",
            self.addr
        ))?;
        let mut sent = 0u64;
        let mut write_err = None;
        while sent < n {
            let max = usize::try_from(n - sent).unwrap_or(CHUNK).min(CHUNK);
            let chunk = pattern_slice(sent, max);
            if let Err(e) = self.stream.get_mut().write_all(chunk) {
                // The server may have answered and closed early; its answer says more.
                write_err = Some(LabError::io(
                    format!("upload to {} at {sent}", self.addr),
                    e,
                ));
                break;
            }
            sent += chunk.len() as u64;
        }
        let head = match self.read_head() {
            Ok(head) => head,
            Err(e) => return Err(write_err.unwrap_or(e)),
        };
        let body = self.text_body(&head)?;
        if head.status != 200 {
            return Err(LabError::Status {
                addr: self.addr,
                status: head.status,
                body,
            });
        }
        match write_err {
            Some(e) => Err(e),
            None => Ok(body),
        }
    }

    fn send_head(&mut self, head: &str) -> Result<(), LabError> {
        self.stream
            .get_mut()
            .write_all(head.as_bytes())
            .map_err(|e| LabError::io(format!("send request to {}", self.addr), e))
    }

    fn read_line(&mut self) -> Result<&str, LabError> {
        self.buf.clear();
        let n = (&mut self.stream)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.buf)
            .map_err(|e| LabError::io(format!("read from {}", self.addr), e))?;
        if n == 0 {
            return Err(LabError::io(
                format!("read from {}", self.addr),
                ErrorKind::UnexpectedEof.into(),
            ));
        }
        if self.buf.last() != Some(&b'\n') {
            return Err(self.http_err("header line too long"));
        }
        std::str::from_utf8(&self.buf)
            .map(str::trim_end)
            .map_err(|_| LabError::Http {
                addr: self.addr,
                what: "header is not UTF-8".into(),
            })
    }

    fn read_head(&mut self) -> Result<Head, LabError> {
        let status_line = self.read_line()?.to_owned();
        let mut parts = status_line.split_whitespace();
        let status = match (parts.next(), parts.next().map(str::parse::<u16>)) {
            (Some(v), Some(Ok(code))) if v.starts_with("HTTP/1.") => code,
            _ => return Err(self.http_err(&format!("bad status line {status_line:?}"))),
        };
        let mut head = Head {
            status,
            length: None,
            chunked: false,
            close: status_line.starts_with("HTTP/1.0"),
        };
        for _ in 0..MAX_HEAD_LINES {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(head);
            }
            let Some((name, value)) = line.split_once(':') else {
                let what = format!("bad header {line:?}");
                return Err(self.http_err(&what));
            };
            let value = value.trim().to_ascii_lowercase();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => match value.parse() {
                    Ok(n) => head.length = Some(n),
                    Err(_) => return Err(self.http_err("bad Content-Length")),
                },
                "transfer-encoding" => head.chunked = value.contains("chunked"),
                "connection" => head.close = value.contains("close"),
                _ => {}
            }
        }
        Err(self.http_err("too many header lines"))
    }

    /// Feeds the body to `sink(chunk, offset)` without collecting it; returns its length.
    fn read_body<F>(&mut self, head: &Head, mut sink: F) -> Result<u64, LabError>
    where
        F: FnMut(&[u8], u64) -> Result<(), LabError>,
    {
        if head.chunked {
            let mut total = 0u64;
            loop {
                let size_line = self.read_line()?;
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let size =
                    u64::from_str_radix(hex, 16).map_err(|_| self.http_err("bad chunk size"))?;
                if size == 0 {
                    // Trailers, if any, end with an empty line.
                    while !self.read_line()?.is_empty() {}
                    return Ok(total);
                }
                self.read_exact_into(size, total, &mut sink)?;
                total += size;
                if !self.read_line()?.is_empty() {
                    return Err(self.http_err("chunk not followed by CRLF"));
                }
            }
        }
        match head.length {
            Some(n) => self.read_exact_into(n, 0, &mut sink),
            None if head.status == 204 || head.status == 304 => Ok(0),
            None => self.read_exact_into(UNTIL_EOF, 0, &mut sink),
        }
    }

    /// Passes exactly `n` bytes (or everything up to EOF if `n == UNTIL_EOF`) to `sink`;
    /// returns how many.
    fn read_exact_into<F>(&mut self, n: u64, base: u64, sink: &mut F) -> Result<u64, LabError>
    where
        F: FnMut(&[u8], u64) -> Result<(), LabError>,
    {
        let mut got = 0u64;
        while got < n {
            let avail = self
                .stream
                .fill_buf()
                .map_err(|e| LabError::io(format!("read body from {}", self.addr), e))?;
            if avail.is_empty() {
                if n == UNTIL_EOF {
                    return Ok(got);
                }
                return Err(LabError::Short {
                    addr: self.addr,
                    expected: n,
                    got,
                });
            }
            let take = avail
                .len()
                .min(usize::try_from(n - got).unwrap_or(usize::MAX));
            sink(&avail[..take], base + got)?;
            self.stream.consume(take);
            got += take as u64;
        }
        Ok(got)
    }

    fn text_body(&mut self, head: &Head) -> Result<String, LabError> {
        let mut body = Vec::new();
        self.read_body(head, |chunk, _| {
            body.extend_from_slice(&chunk[..chunk.len().min(MAX_TEXT_BODY - body.len())]);
            Ok(())
        })?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    fn status_error(&mut self, head: &Head) -> LabError {
        let body = self.text_body(head).unwrap_or_default();
        LabError::Status {
            addr: self.addr,
            status: head.status,
            body,
        }
    }

    /// Waits (bounded by the read timeout) for the server to close the connection.
    fn drain_to_eof(&mut self) {
        let mut sink = [0u8; 512];
        for _ in 0..64 {
            match self.stream.read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    fn http_err(&self, what: &str) -> LabError {
        LabError::Http {
            addr: self.addr,
            what: what.to_owned(),
        }
    }
}

/// One `GET path` on a fresh connection.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpReply, LabError> {
    HttpConn::connect(addr)?.get(path, false)
}

/// Downloads `n` pattern bytes from `addr`, verifying each; returns the byte count.
pub fn download(addr: SocketAddr, n: u64) -> Result<u64, LabError> {
    HttpConn::connect(addr)?.download(n)
}

/// Uploads `n` pattern bytes to `addr`; returns the server's `ok <n> backend=<name>`.
pub fn upload(addr: SocketAddr, n: u64) -> Result<String, LabError> {
    HttpConn::connect(addr)?.upload(n)
}

/// Sends one UDP datagram and waits up to `timeout` for the answer (the socket is
/// connected, so only an answer from `addr` itself counts).
pub fn udp_request(
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<String, LabError> {
    udp_request_from(None, addr, payload, timeout)
}

/// [`udp_request`] from source address `src`.
pub fn udp_request_from(
    src: Option<Ipv4Addr>,
    addr: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> Result<String, LabError> {
    let io = |what: &str, e| LabError::io(format!("udp {what} {addr}"), e);
    let any: SocketAddr = match (src, addr) {
        (Some(src), _) => SocketAddrV4::new(src, 0).into(),
        (None, SocketAddr::V6(_)) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        (None, SocketAddr::V4(_)) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any).map_err(|e| io("bind to reach", e))?;
    sock.connect(addr).map_err(|e| io("connect", e))?;
    sock.set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(|e| io("timeout for", e))?;
    sock.send(payload).map_err(|e| io("send to", e))?;
    let mut buf = vec![0u8; 65_536];
    let n = sock.recv(&mut buf).map_err(|e| io("recv from", e))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}
