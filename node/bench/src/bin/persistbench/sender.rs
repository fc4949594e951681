//! The load of `dsrlb-persistbench`: two UDP datagrams of one flow per new (farm, client)
//! pair (a UDP client is pinned from its second datagram: docs/design.md#inv-pins-from-real-clients),
//! each pair from a spoofed source address, written as raw Ethernet frames from the client's namespace
//! through one AF_PACKET socket with `sendmmsg`, paced per millisecond to a target rate.
//!
//! The kernel's own UDP stack cannot send from addresses the client does not hold, and a
//! million addresses on an interface would cost more than the measurement; a raw frame
//! needs only the VIP owner's MAC. Frames are built into one preallocated buffer; per frame
//! only the source address, the ports and the IPv4 checksum change.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lab::MacAddr;
use socket2::{Domain, Protocol, Socket, Type};

/// 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 = 60 bytes, a minimum-size frame without FCS.
const FRAME_LEN: usize = 60;
const IP_LEN: u16 = 46;
const UDP_LEN: u16 = 26;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;
/// Pacing tick: each tick sends what the schedule owes by then.
const TICK: Duration = Duration::from_millis(1);
/// Consecutive failed `sendmmsg` calls after which a run gives up (each followed by a
/// tick's pause), so a broken socket cannot spin for the whole run.
const MAX_ERRORS_IN_A_ROW: u32 = 1000;

/// Spoofed client addresses: every address of 198.19.0.0/16, then 198.18.1.0 to
/// 198.18.255.255 — the benchmarking range 198.18.0.0/15 less the lab's own 198.18.0.0/24,
/// so no spoofed address is a lab host (nobody ARPs for them, no reply goes anywhere).
pub const POOL: usize = 65_536 + 255 * 256;

/// The `i`-th address of the pool.
pub fn pool_addr(i: usize) -> Ipv4Addr {
    let i = (i % POOL) as u32;
    if i < 65_536 {
        Ipv4Addr::from_bits(0xc613_0000 | i)
    } else {
        Ipv4Addr::from_bits(0xc612_0000 | (i - 65_536 + 256))
    }
}

/// Where the frames go and how they look.
#[derive(Clone, Debug)]
pub struct Target {
    pub dst_mac: MacAddr,
    pub src_mac: MacAddr,
    pub vip: Ipv4Addr,
    /// The farms' UDP ports; pair `k` goes to `ports[k % len]` from `pool_addr(k / len)`.
    pub ports: Vec<u16>,
}

/// One paced run: pairs `first..first + count` at `rate` per second, from source port
/// `sport` (a pair sent again from another port is a new flow on the node).
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub first: usize,
    pub count: usize,
    pub rate: u64,
    pub sport: u16,
}

/// What a run sent.
#[derive(Clone, Debug, Default)]
pub struct Sent {
    /// Pairs sent, both datagrams.
    pub frames: u64,
    pub elapsed: Duration,
    /// Frames the kernel refused (counted once per refused frame).
    pub errors: u64,
    pub first_error: Option<String>,
    /// Most the sender fell behind its schedule (a sender slower than the rate asked).
    pub max_behind: Duration,
    /// The run was stopped early (Ctrl-C).
    pub stopped: bool,
}

impl Sent {
    /// The rate actually offered, pairs per second.
    pub fn rate(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

/// An AF_PACKET socket bound to the client's interface, with its frame buffer.
pub struct RawSender {
    sock: OwnedFd,
    addr: libc::sockaddr_ll,
    frames: Box<[[u8; FRAME_LEN]; BATCH]>,
}

impl RawSender {
    /// Opens the socket on `ifname`; call it inside the client's namespace (the socket stays
    /// there whatever thread uses it later).
    pub fn open(ifname: &str) -> anyhow::Result<RawSender> {
        // Protocol 0: a send-only socket, so the kernel never queues received frames to it.
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .context("AF_PACKET socket (needs root)")?;
        let ifindex = nix::net::if_::if_nametoindex(ifname)
            .with_context(|| format!("ifindex of {ifname}"))?;
        let mut addr = sockaddr_ll(i32::try_from(ifindex).context("ifindex")?);
        // SAFETY: valid fd; the pointer and length describe `addr`, alive for the call.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error()).context("bind the AF_PACKET socket");
        }
        // The frames carry IPv4; the kernel takes the protocol from the address it is given.
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        let one: libc::c_int = 1;
        // SAFETY: valid fd; the option value is a c_int of the given size. Bypassing the
        // qdisc only skips a queue the veth does not need; failure would only cost speed.
        let _ = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(RawSender {
            sock: sock.into(),
            addr,
            frames: Box::new([[0u8; FRAME_LEN]; BATCH]),
        })
    }

    /// Sends `run` paced to its rate, checking `stop` every tick; never longer than the
    /// schedule plus `grace` (a sender that cannot keep up stops there and says so).
    pub fn send(
        &mut self,
        t: &Target,
        run: Run,
        stop: &dyn Fn() -> bool,
        grace: Duration,
    ) -> anyhow::Result<Sent> {
        if t.ports.is_empty() || run.rate == 0 {
            bail!("a run needs at least one port and a rate above 0");
        }
        for f in self.frames.iter_mut() {
            template(f, t);
        }
        // Datagrams, two per pair, back to back.
        let (count, rate) = (run.count * 2, run.rate * 2);
        let schedule = Duration::from_secs_f64(count as f64 / rate as f64);
        let start = Instant::now();
        let deadline = start + schedule + grace;
        let mut sent = Sent::default();
        let mut next = 0usize;
        let mut datagrams = 0u64;
        let mut errors_in_a_row = 0u32;
        while next < count {
            if stop() {
                sent.stopped = true;
                break;
            }
            let now = Instant::now();
            if now > deadline {
                break;
            }
            let el = now - start;
            let due = ((el.as_secs_f64() * rate as f64) as usize).min(count);
            if due > next {
                // How far behind: the time the oldest owed frame was due.
                let owed_since = Duration::from_secs_f64(next as f64 / rate as f64);
                sent.max_behind = sent.max_behind.max(el.saturating_sub(owed_since));
            }
            while next < due {
                let n = (due - next).min(BATCH);
                for (j, f) in self.frames[..n].iter_mut().enumerate() {
                    let k = run.first + (next + j) / 2;
                    let port = t.ports[k % t.ports.len()];
                    fill(f, pool_addr(k / t.ports.len()), run.sport, port);
                }
                match self.sendmmsg(n) {
                    Ok(done) => {
                        next += done;
                        datagrams += done as u64;
                        errors_in_a_row = 0;
                        if done < n {
                            // The rest waits for the next tick.
                            break;
                        }
                    }
                    Err(e) => {
                        sent.errors += 1;
                        sent.first_error.get_or_insert_with(|| e.to_string());
                        errors_in_a_row += 1;
                        if errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                            bail!("sendmmsg failed {errors_in_a_row} times in a row: {e}");
                        }
                        // The frames are owed still; try again next tick.
                        break;
                    }
                }
            }
            let tick_end = start + TICK * ((el.as_micros() / TICK.as_micros()) as u32 + 1);
            let now = Instant::now();
            if next < count && tick_end > now {
                std::thread::sleep(tick_end - now);
            }
        }
        sent.frames = datagrams / 2;
        sent.elapsed = start.elapsed();
        Ok(sent)
    }

    /// Sends the first `n` frames of the buffer; returns how many the kernel took.
    fn sendmmsg(&mut self, n: usize) -> std::io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data for which all-zero is a valid (empty) value.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: self.frames[i].as_mut_ptr().cast::<libc::c_void>(),
                iov_len: FRAME_LEN,
            };
            let h = &mut msgs[i].msg_hdr;
            h.msg_name = (&raw mut self.addr).cast::<libc::c_void>();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            h.msg_iov = &raw mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: valid fd; `msgs[..n]` point to `iov[..n]`, the frames and `addr`, all of
        // which outlive the call; the kernel only reads them (and writes msg_len).
        let rc = unsafe {
            libc::sendmmsg(
                self.sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

fn sockaddr_ll(ifindex: i32) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: 0,
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    }
}

/// The parts of a frame that never change within a run.
fn template(f: &mut [u8; FRAME_LEN], t: &Target) {
    f.fill(0);
    f[0..6].copy_from_slice(&t.dst_mac.0);
    f[6..12].copy_from_slice(&t.src_mac.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&IP_LEN.to_be_bytes());
    ip[6] = 0x40; // DF: one datagram, never fragmented
    ip[8] = 64;
    ip[9] = 17;
    ip[16..20].copy_from_slice(&t.vip.octets());
    f[38..40].copy_from_slice(&UDP_LEN.to_be_bytes());
    // UDP checksum 0: none, which IPv4 allows.
}

/// Sets a frame's source address, ports and IPv4 checksum.
fn fill(f: &mut [u8; FRAME_LEN], src: Ipv4Addr, sport: u16, dport: u16) {
    f[26..30].copy_from_slice(&src.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[24..26].fill(0);
    let sum = ipv4_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_stays_in_the_benchmarking_range_and_off_the_lab_subnet() {
        assert_eq!(pool_addr(0), Ipv4Addr::new(198, 19, 0, 0));
        assert_eq!(pool_addr(65_535), Ipv4Addr::new(198, 19, 255, 255));
        assert_eq!(pool_addr(65_536), Ipv4Addr::new(198, 18, 1, 0));
        assert_eq!(pool_addr(POOL - 1), Ipv4Addr::new(198, 18, 255, 255));
        let mut seen = std::collections::HashSet::new();
        for i in 0..POOL {
            let a = pool_addr(i);
            let o = a.octets();
            assert!(o[0] == 198 && (o[1] == 18 || o[1] == 19), "{a}");
            assert!(!(o[1] == 18 && o[2] == 0), "{a} is in the lab subnet");
            assert!(seen.insert(a), "{a} twice");
        }
    }

    #[test]
    fn frames_parse_as_the_node_sees_them() {
        let t = Target {
            dst_mac: MacAddr([2, 0, 0, 0, 0, 0x11]),
            src_mac: MacAddr([2, 0, 0, 0, 0, 0x31]),
            vip: Ipv4Addr::new(198, 18, 0, 100),
            ports: vec![9101],
        };
        let mut f = [0u8; FRAME_LEN];
        template(&mut f, &t);
        fill(&mut f, Ipv4Addr::new(198, 19, 3, 4), 4000, 9101);
        let p = etherparse::SlicedPacket::from_ethernet(&f).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
            panic!("not IPv4");
        };
        let h = ip.header();
        assert_eq!(h.source_addr(), Ipv4Addr::new(198, 19, 3, 4));
        assert_eq!(h.destination_addr(), t.vip);
        assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
        let Some(etherparse::TransportSlice::Udp(u)) = p.transport else {
            panic!("not UDP");
        };
        assert_eq!((u.source_port(), u.destination_port()), (4000, 9101));
        assert_eq!(u.length(), UDP_LEN);
    }
}
