//! Our own packet capture (no tcpdump): an AF_PACKET socket on a thread inside a lab
//! namespace records a small summary of every frame on one interface — enough to prove DSR
//! (no VIP→client frame at the node) and ARP ownership (who answers for the VIP).

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::Socket;

use super::host::MacAddr;
use super::{LabError, netns, packet_socket};

/// Default cap on recorded frames; later frames are only counted.
pub const DEFAULT_MAX_FRAMES: usize = 100_000;
/// Only headers are summarised, so this much of each frame is copied.
const SNAPLEN: usize = 256;
/// How often the capture thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);

/// An ARP packet's interesting fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpSummary {
    /// 1 = request, 2 = reply.
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

/// An IPv4 packet's interesting fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Summary {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    /// Ports of the first fragment of a TCP or UDP packet.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// TCP flags byte (SYN = 0x02, RST = 0x04, ACK = 0x10).
    pub tcp_flags: Option<u8>,
}

/// An IPv6 packet's interesting fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Summary {
    pub src: std::net::Ipv6Addr,
    pub dst: std::net::Ipv6Addr,
    /// The Next Header of the fixed header (extension headers are not walked).
    pub next: u8,
    /// For ICMPv6: its type, and for a Neighbor Solicitation or Advertisement its target.
    pub icmp_type: Option<u8>,
    pub nd_target: Option<std::net::Ipv6Addr>,
}

impl Ipv6Summary {
    /// A Neighbor Advertisement (ICMPv6 136) for `target`.
    pub fn is_na_for(&self, target: std::net::Ipv6Addr) -> bool {
        self.icmp_type == Some(136) && self.nd_target == Some(target)
    }
}

/// One captured frame.
#[derive(Clone, Debug)]
pub struct Frame {
    /// When it was read.
    pub at: Instant,
    /// Time since the capture started.
    pub since_start: Duration,
    /// Length on the wire (GRO/TSO frames may exceed the MTU).
    pub len: usize,
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    pub ethertype: u16,
    /// `sll_pkttype`: 0 host, 1 broadcast, 2 multicast, 3 other host, 4 outgoing.
    pub pkttype: u8,
    pub arp: Option<ArpSummary>,
    pub ipv4: Option<Ipv4Summary>,
    pub ipv6: Option<Ipv6Summary>,
}

impl Frame {
    /// Sent by this interface (`PACKET_OUTGOING`) rather than received.
    pub fn outgoing(&self) -> bool {
        self.pkttype == libc::PACKET_OUTGOING
    }
    /// An ARP request asking for `ip`.
    pub fn is_arp_request_for(&self, ip: Ipv4Addr) -> bool {
        self.arp.is_some_and(|a| a.op == 1 && a.target_ip == ip)
    }
    /// An ARP reply claiming `ip`.
    pub fn is_arp_reply_for(&self, ip: Ipv4Addr) -> bool {
        self.arp.is_some_and(|a| a.op == 2 && a.sender_ip == ip)
    }
    /// An IPv4 packet from `src` to `dst`.
    pub fn is_ipv4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.ipv4.is_some_and(|p| p.src == src && p.dst == dst)
    }
}

/// Summarises a frame; `None` for anything shorter than an Ethernet header. Never panics.
pub fn parse_frame(
    data: &[u8],
    len: usize,
    pkttype: u8,
    at: Instant,
    start: Instant,
) -> Option<Frame> {
    let mac = |o: usize| -> Option<MacAddr> { Some(MacAddr(data.get(o..o + 6)?.try_into().ok()?)) };
    let u16_at = |b: &[u8], o: usize| -> Option<u16> {
        Some(u16::from_be_bytes(b.get(o..o + 2)?.try_into().ok()?))
    };
    let ip_at = |b: &[u8], o: usize| -> Option<Ipv4Addr> {
        let q: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(q))
    };
    let ethertype = u16_at(data, 12)?;
    let payload = data.get(14..)?;
    let mut frame = Frame {
        at,
        since_start: at.saturating_duration_since(start),
        len,
        dst_mac: mac(0)?,
        src_mac: mac(6)?,
        ethertype,
        pkttype,
        arp: None,
        ipv4: None,
        ipv6: None,
    };
    match ethertype {
        0x0806 => {
            let p = payload;
            let m =
                |o: usize| -> Option<MacAddr> { Some(MacAddr(p.get(o..o + 6)?.try_into().ok()?)) };
            frame.arp = (|| {
                Some(ArpSummary {
                    op: u16_at(p, 6)?,
                    sender_mac: m(8)?,
                    sender_ip: ip_at(p, 14)?,
                    target_mac: m(18)?,
                    target_ip: ip_at(p, 24)?,
                })
            })();
        }
        0x0800 => {
            let p = payload;
            frame.ipv4 = (|| {
                let ihl = usize::from(*p.first()? & 0x0f) * 4;
                let proto = *p.get(9)?;
                let first_fragment = u16_at(p, 6)? & 0x1fff == 0;
                let l4 = p
                    .get(ihl..)
                    .filter(|_| first_fragment && (proto == 6 || proto == 17));
                Some(Ipv4Summary {
                    src: ip_at(p, 12)?,
                    dst: ip_at(p, 16)?,
                    proto,
                    src_port: l4.and_then(|l| u16_at(l, 0)),
                    dst_port: l4.and_then(|l| u16_at(l, 2)),
                    tcp_flags: l4.filter(|_| proto == 6).and_then(|l| l.get(13).copied()),
                })
            })();
        }
        0x86dd => {
            let p = payload;
            let v6 = |o: usize| -> Option<std::net::Ipv6Addr> {
                let q: [u8; 16] = p.get(o..o + 16)?.try_into().ok()?;
                Some(q.into())
            };
            frame.ipv6 = (|| {
                let next = *p.get(6)?;
                let icmp_type = (next == 58).then(|| p.get(40).copied()).flatten();
                let nd_target = icmp_type
                    .filter(|t| matches!(t, 135 | 136))
                    .and_then(|_| v6(48));
                Some(Ipv6Summary {
                    src: v6(8)?,
                    dst: v6(24)?,
                    next,
                    icmp_type,
                    nd_target,
                })
            })();
        }
        _ => {}
    }
    Some(frame)
}

/// A running capture. Stop it with [`Capture::stop`]; dropping it stops it too.
#[derive(Debug)]
pub struct Capture {
    stop: Arc<AtomicBool>,
    frames: Arc<Mutex<Vec<Frame>>>,
    overflow: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<(), LabError>>>,
}

impl Capture {
    /// Starts capturing on `ifname` inside `netns` (promiscuous, both directions). Returns
    /// once the socket is bound: every frame after that is seen.
    pub fn start(netns: &str, ifname: &str) -> Result<Capture, LabError> {
        Capture::start_with_limit(netns, ifname, DEFAULT_MAX_FRAMES)
    }

    /// [`Capture::start`] recording at most `max_frames` frames.
    pub fn start_with_limit(
        netns: &str,
        ifname: &str,
        max_frames: usize,
    ) -> Result<Capture, LabError> {
        Capture::start_filtered(netns, ifname, max_frames, |_| true)
    }

    /// [`Capture::start_with_limit`] recording only the frames `keep` accepts (the others are
    /// neither recorded nor counted), so a long capture under bulk traffic can keep what it
    /// is about — e.g. ARP and frames to a VIP, not the backends' replies.
    pub fn start_filtered(
        netns: &str,
        ifname: &str,
        max_frames: usize,
        keep: impl Fn(&Frame) -> bool + Send + 'static,
    ) -> Result<Capture, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(Mutex::new(Vec::new()));
        let overflow = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let (ns, ifname) = (netns.to_owned(), ifname.to_owned());
        let (s, f, o) = (
            Arc::clone(&stop),
            Arc::clone(&frames),
            Arc::clone(&overflow),
        );
        let thread = std::thread::Builder::new()
            .name(format!("capture-{ifname}"))
            .spawn(move || {
                let sock = match netns::enter(&ns).and_then(|()| open(&ifname)) {
                    Ok(sock) => sock,
                    Err(e) => {
                        let msg = e.to_string();
                        // The receiver only goes away if start() itself is gone.
                        if ready_tx.send(Err(e)).is_err() {
                            eprintln!("capture: {msg}");
                        }
                        return Ok(());
                    }
                };
                if ready_tx.send(Ok(())).is_err() {
                    return Ok(());
                }
                record(&sock.0, sock.1, &s, &f, &o, max_frames, &keep)
            })
            .map_err(|e| LabError::io("spawn capture thread", e))?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(LabError::Spec("capture thread died".into())));
        let capture = Capture {
            stop,
            frames,
            overflow,
            thread: Some(thread),
        };
        started.map(|()| capture)
    }

    /// The frames recorded so far (a copy; the capture goes on).
    pub fn snapshot(&self) -> Vec<Frame> {
        self.frames
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Frames seen after the record cap was reached (not recorded).
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Stops and returns every recorded frame.
    pub fn stop(mut self) -> Result<Vec<Frame>, LabError> {
        self.finish()?;
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(std::mem::take(&mut *frames))
    }

    fn finish(&mut self) -> Result<(), LabError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(LabError::Spec("capture thread panicked".into())),
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("capture: {e}");
        }
    }
}

/// Opens a promiscuous AF_PACKET socket bound to `ifname` in the current namespace.
/// Sends raw Ethernet frames (headers included) out of `ifname` inside `netns` — how tests
/// put malformed or hand-made frames on the wire. Frames go out in order; returns how many
/// the kernel accepted before the first one it refused (buffer full, or shorter than an
/// Ethernet header), so a caller can resend the rest.
pub fn inject(netns: &str, ifname: &str, frames: &[Vec<u8>]) -> Result<usize, LabError> {
    let (ns, ifname) = (netns.to_owned(), ifname.to_owned());
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                netns::enter(&ns)?;
                let (sock, _) = open(&ifname)?;
                Ok(frames.iter().take_while(|f| sock.send(f).is_ok()).count())
            })
            .join()
            .unwrap_or_else(|_| Err(LabError::Spec("inject thread panicked".into())))
    })
}

fn open(ifname: &str) -> Result<(Socket, i32), LabError> {
    let user = format!("capture on {ifname}");
    let io = |what: &str, e| LabError::io(format!("{user}: {what}"), e);
    let (sock, ifindex) = packet_socket::bound(ifname, packet_socket::ALL, &user)?;
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    // SAFETY: valid fd; the option value points to a packet_mreq of the given size. The
    // membership (promiscuous mode) is dropped by the kernel when the socket closes.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&raw const mreq).cast::<libc::c_void>(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io("promiscuous mode", std::io::Error::last_os_error()));
    }
    sock.set_read_timeout(Some(POLL))
        .map_err(|e| io("timeout", e))?;
    Ok((sock, ifindex))
}

fn record(
    sock: &Socket,
    ifindex: i32,
    stop: &AtomicBool,
    frames: &Mutex<Vec<Frame>>,
    overflow: &AtomicU64,
    max_frames: usize,
    keep: &dyn Fn(&Frame) -> bool,
) -> Result<(), LabError> {
    let start = Instant::now();
    let mut buf = [0u8; SNAPLEN];
    while !stop.load(Ordering::Relaxed) {
        let mut sll = packet_socket::sockaddr_ll(0, packet_socket::ALL);
        let mut sll_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: valid fd; `buf` and `sll` are live, writable and as long as stated.
        // MSG_TRUNC makes the kernel return the frame's real length, not the copied part.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut sll).cast::<libc::sockaddr>(),
                &mut sll_len,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => continue,
                _ => return Err(LabError::io("capture recvfrom", e)),
            }
        }
        // Frames from other interfaces can be queued between socket() and bind().
        if sll.sll_ifindex != ifindex {
            continue;
        }
        let len = n as usize;
        let at = Instant::now();
        let Some(frame) = parse_frame(&buf[..len.min(SNAPLEN)], len, sll.sll_pkttype, at, start)
        else {
            continue;
        };
        if !keep(&frame) {
            continue;
        }
        let mut frames = frames.lock().unwrap_or_else(PoisonError::into_inner);
        if frames.len() < max_frames {
            frames.push(frame);
        } else {
            overflow.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_arp_request_and_survives_every_truncation() {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 0x31]);
        f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend([2, 0, 0, 0, 0, 0x31, 198, 18, 0, 31]);
        f.extend([0, 0, 0, 0, 0, 0, 198, 18, 0, 100]);
        let now = Instant::now();
        let frame = parse_frame(&f, f.len(), 1, now, now).expect("parses");
        assert!(frame.is_arp_request_for(Ipv4Addr::new(198, 18, 0, 100)));
        let arp = frame.arp.expect("arp");
        assert_eq!(arp.sender_ip, Ipv4Addr::new(198, 18, 0, 31));
        assert_eq!(arp.sender_mac.to_string(), "02:00:00:00:00:31");
        for cut in 0..f.len() {
            let short = parse_frame(&f[..cut], cut, 0, now, now);
            assert!(
                short.is_none_or(|fr| fr.arp.is_none()),
                "truncated at {cut}"
            );
        }
    }

    #[test]
    fn parses_tcp_ports_and_flags() {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend([198, 18, 0, 31, 198, 18, 0, 100]);
        let tcp = [
            0xc0, 0x00, 0x00, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0,
        ];
        f.extend(ip);
        f.extend(tcp);
        let now = Instant::now();
        let p = parse_frame(&f, f.len(), 4, now, now)
            .and_then(|fr| fr.ipv4)
            .expect("ipv4");
        assert_eq!(
            (p.src_port, p.dst_port, p.tcp_flags),
            (Some(49152), Some(80), Some(0x02))
        );
        assert_eq!(p.dst, Ipv4Addr::new(198, 18, 0, 100));
    }
}
