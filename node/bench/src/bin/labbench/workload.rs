//! The workloads of `dsrlb-labbench` and the counters read around them. Everything here
//! runs on the calling thread's network namespace: the caller wraps each call in
//! `Host::run`, so the sockets belong to the client (or the node) host of the lab.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lab::backend::SinkCounts;
use lab::{HttpConn, LoadSpec, http_get, load_with};

/// Datagrams per `sendmmsg`: one syscall per batch, so the sender is not the bottleneck
/// because of syscall overhead alone.
const SEND_BATCH: usize = 64;
/// A sender stops after this many `sendmmsg` calls even if its time is not up.
const MAX_SEND_CALLS: u64 = 50_000_000;
/// Bytes per HTTP upload; a run repeats uploads on one connection until its time is up.
const UPLOAD_BYTES: u64 = 32 << 20;
/// A run never makes more uploads than this, whatever the speed.
const MAX_UPLOADS: u32 = 1024;
/// A socket write blocks at most this long, so a sender sees its deadline.
const SEND_TIMEOUT: Duration = Duration::from_millis(100);

/// One HTTP load run.
#[derive(Clone, Debug, Default)]
pub struct HttpRun {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub first_error: Option<String>,
}

/// `GET /` from `concurrency` threads for `dur`, keep-alive or a new connection each time.
pub fn http(addr: SocketAddr, concurrency: usize, dur: Duration, keepalive: bool) -> HttpRun {
    let r = load_with(&LoadSpec::new(addr, concurrency, dur, keepalive));
    // Every answer must come from the one backend: anything else means the lab is wrong.
    let foreign: u64 = r
        .per_backend
        .iter()
        .filter(|(name, _)| name.as_str() != "b1")
        .map(|(_, n)| n)
        .sum();
    HttpRun {
        rps: r.rps(),
        p50_us: r.p50.as_secs_f64() * 1e6,
        p99_us: r.p99.as_secs_f64() * 1e6,
        errors: r.errors + foreign,
        first_error: r.first_error.or_else(|| {
            (foreign > 0).then(|| format!("{foreign} answers not from b1: {:?}", r.per_backend))
        }),
    }
}

/// One upload run: repeated `POST /upload`s of pattern bytes on one connection.
#[derive(Clone, Debug, Default)]
pub struct UploadRun {
    pub gbps: f64,
    pub bytes: u64,
    pub uploads: u32,
    pub error: Option<String>,
}

/// Uploads [`UPLOAD_BYTES`] at a time until `dur` has passed; each upload is verified byte
/// by byte by the backend, which answers `ok <n> backend=b1`.
pub fn upload(addr: SocketAddr, dur: Duration) -> UploadRun {
    let start = Instant::now();
    let mut run = UploadRun::default();
    let want = format!("ok {UPLOAD_BYTES} backend=b1");
    let mut conn = match HttpConn::connect(addr) {
        Ok(c) => c,
        Err(e) => {
            run.error = Some(e.to_string());
            return run;
        }
    };
    while start.elapsed() < dur && run.uploads < MAX_UPLOADS {
        match conn.upload(UPLOAD_BYTES) {
            Ok(reply) if reply.trim() == want => {
                run.bytes += UPLOAD_BYTES;
                run.uploads += 1;
            }
            Ok(reply) => {
                run.error = Some(format!("backend answered {:?}", reply.trim()));
                break;
            }
            Err(e) => {
                run.error = Some(e.to_string());
                break;
            }
        }
    }
    run.gbps = gbits(run.bytes, start.elapsed());
    run
}

/// What UDP senders pushed into their sockets.
#[derive(Clone, Debug, Default)]
pub struct SendRun {
    pub datagrams: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

/// Sends `payload`-byte datagrams to `dst` from `threads` threads for `dur`, each thread
/// cycling over `flows` connected sockets (distinct source ports, so distinct flows); as
/// fast as they can, or paced to `rate` datagrams per second in all.
pub fn udp_send(
    dst: SocketAddr,
    payload: usize,
    threads: usize,
    flows: usize,
    dur: Duration,
    rate: Option<f64>,
) -> SendRun {
    let start = Instant::now();
    let deadline = start + dur;
    let mut total = SendRun::default();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                let per_thread = rate.map(|r| r / threads.max(1) as f64);
                scope.spawn(move || sender(dst, payload, flows.max(1), deadline, per_thread))
            })
            .collect();
        for h in handles {
            let part = h.join().unwrap_or_else(|_| SendRun {
                errors: 1,
                first_error: Some("udp sender panicked".into()),
                ..SendRun::default()
            });
            total.datagrams += part.datagrams;
            total.bytes += part.bytes;
            total.errors += part.errors;
            if total.first_error.is_none() {
                total.first_error = part.first_error;
            }
        }
    });
    total.elapsed = start.elapsed();
    total
}

fn sender(
    dst: SocketAddr,
    payload: usize,
    flows: usize,
    deadline: Instant,
    rate: Option<f64>,
) -> SendRun {
    let start = Instant::now();
    let mut run = SendRun::default();
    let socks: Result<Vec<UdpSocket>, std::io::Error> = (0..flows)
        .map(|_| {
            let s = UdpSocket::bind(if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" })?;
            s.connect(dst)?;
            s.set_write_timeout(Some(SEND_TIMEOUT))?;
            Ok(s)
        })
        .collect();
    let socks = match socks {
        Ok(s) => s,
        Err(e) => {
            run.errors = 1;
            run.first_error = Some(format!("udp socket to {dst}: {e}"));
            return run;
        }
    };
    let data = vec![0xa5u8; payload];
    // The kernel only reads the payload, so every message may point at the same iovec.
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..SEND_BATCH)
        // SAFETY: `mmsghdr` is plain C data for which all-zero bytes are valid (null
        // pointers, zero lengths).
        .map(|_| unsafe { std::mem::zeroed::<libc::mmsghdr>() })
        .collect();
    let iov_ptr: *mut libc::iovec = &mut iov;
    for m in &mut msgs {
        m.msg_hdr.msg_iov = iov_ptr;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut calls = 0u64;
    'run: while Instant::now() < deadline && calls < MAX_SEND_CALLS {
        for s in &socks {
            calls += 1;
            // Paced: sleep until the datagrams sent so far are due (batches of 64 at a
            // steady average rate; the sleeps are what keeps the offered load below
            // capacity).
            if let Some(r) = rate.filter(|r| *r > 0.0) {
                let due = start + Duration::from_secs_f64(run.datagrams as f64 / r);
                let now = Instant::now();
                if due >= deadline {
                    break 'run;
                }
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            // SAFETY: `msgs` holds SEND_BATCH headers with no address (the socket is
            // connected) whose iovec points at `data`; `msgs`, `iov` and `data` outlive
            // the call and nothing else touches them during it.
            let n = unsafe {
                libc::sendmmsg(
                    s.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    SEND_BATCH as libc::c_uint,
                    0,
                )
            };
            if n >= 0 {
                let n = n as u64;
                run.datagrams += n;
                run.bytes += n * payload as u64;
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // Back-pressure from a full queue: the datagrams were not sent; go on.
                Some(libc::EAGAIN | libc::ENOBUFS | libc::EINTR) => {}
                // An earlier datagram drew an ICMP error; this batch was not sent.
                Some(libc::ECONNREFUSED) => {
                    run.errors += 1;
                    run.first_error
                        .get_or_insert_with(|| format!("sendmmsg to {dst}: {e}"));
                }
                _ => {
                    run.errors += 1;
                    run.first_error = Some(format!("sendmmsg to {dst}: {e}"));
                    break 'run;
                }
            }
        }
    }
    drop(msgs);
    drop(data);
    run
}

/// The UDP sink's `(datagrams, bytes)` of the backend whose HTTP port is `http`.
pub fn sink_counts(http: SocketAddr) -> anyhow::Result<(u64, u64)> {
    let reply = http_get(http, "/udp-sink").with_context(|| format!("GET {http}/udp-sink"))?;
    if reply.status == 404 {
        bail!(
            "the backend at {http} has no UDP sink: the dsrlb binary is older than this \
             benchmark; rebuild it with cargo build --release -p node"
        );
    }
    if reply.status != 200 {
        bail!(
            "GET {http}/udp-sink answered {}: {}",
            reply.status,
            reply.body
        );
    }
    SinkCounts::parse(&reply.body)
        .with_context(|| format!("GET {http}/udp-sink answered {:?}", reply.body))
}

/// Packet counters of one interface, from `/proc/thread-self/net/dev`: the calling
/// thread's network namespace (not the process's, which `/proc/net` would show).
#[derive(Clone, Copy, Debug, Default)]
pub struct IfCounters {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
}

/// Reads `ifname`'s counters in the calling thread's network namespace.
pub fn if_counters(ifname: &str) -> anyhow::Result<IfCounters> {
    let path = "/proc/thread-self/net/dev";
    let text = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    parse_net_dev(&text, ifname).with_context(|| format!("no line for {ifname} in {path}"))
}

fn parse_net_dev(text: &str, ifname: &str) -> Option<IfCounters> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(ifname)?.strip_prefix(':'))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    Some(IfCounters {
        rx_packets: *f.get(1)?,
        rx_dropped: *f.get(3)?,
        tx_packets: *f.get(9)?,
    })
}

/// User plus system CPU time of process `pid` (all its threads), in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("parse {path}"))?;
    Ok(ticks as f64 / clock_ticks()?)
}

/// Voluntary context switches of every thread of process `pid`: for a datapath worker,
/// each one is a sleep in `poll` and a wake-up when frames arrive.
pub fn voluntary_switches(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for task in std::fs::read_dir(&dir).with_context(|| format!("list {dir}"))? {
        let path = task
            .with_context(|| format!("list {dir}"))?
            .path()
            .join("status");
        // A thread may exit between the listing and the read; it no longer counts.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .with_context(|| format!("no voluntary_ctxt_switches in {}", path.display()))?;
    }
    Ok(total)
}

/// Machine-wide CPU time from `/proc/stat`, in seconds summed over every CPU.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq + steal.
    pub busy: f64,
    /// softirq alone: where an in-kernel forwarder (nftlb) and the veth hand-offs run.
    pub softirq: f64,
}

impl std::ops::Sub for MachineCpu {
    type Output = MachineCpu;
    fn sub(self, o: MachineCpu) -> MachineCpu {
        MachineCpu {
            busy: self.busy - o.busy,
            softirq: self.softirq - o.softirq,
        }
    }
}

/// Reads the machine's CPU times (all namespaces share them).
pub fn machine_cpu() -> anyhow::Result<MachineCpu> {
    let text = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let hz = clock_ticks()?;
    parse_proc_stat(&text, hz).context("parse /proc/stat")
}

fn parse_proc_stat(text: &str, hz: f64) -> Option<MachineCpu> {
    let line = text.lines().find_map(|l| l.strip_prefix("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7)?;
    Some(MachineCpu {
        busy: busy as f64 / hz,
        softirq: *f.get(6)? as f64 / hz,
    })
}

fn clock_ticks() -> anyhow::Result<f64> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .context("sysconf(_SC_CLK_TCK)")?
        .filter(|&hz| hz > 0)
        .context("sysconf(_SC_CLK_TCK) has no value")?;
    Ok(hz as f64)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name may
/// hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Bits per second in Gbit/s for `bytes` moved in `elapsed`.
pub fn gbits(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        bytes as f64 * 8.0 / secs / 1e9
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "4242 (dsr (lb) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    731 269 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(1000));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn net_dev_line_is_found_by_exact_name() {
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame \
                    compressed multicast|bytes packets errs drop fifo colls carrier compressed\n\
                    \x20   lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n\
                    \x20eth0: 1000 10 0 3 0 0 0 0 2000 20 0 0 0 0 0 0\n\
                    eth0x: 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n";
        let c = parse_net_dev(text, "eth0").expect("eth0 found");
        assert_eq!((c.rx_packets, c.rx_dropped, c.tx_packets), (10, 3, 20));
        assert!(parse_net_dev(text, "eth1").is_none());
    }

    #[test]
    fn proc_stat_busy_and_softirq() {
        let text = "cpu  100 5 50 1000 7 3 40 2 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        let c = parse_proc_stat(text, 100.0).expect("parses");
        assert!(
            (c.busy - 2.0).abs() < 1e-9,
            "100+5+50+3+40+2 ticks at 100 Hz"
        );
        assert!((c.softirq - 0.4).abs() < 1e-9);
        assert!(parse_proc_stat("intr 1 2\n", 100.0).is_none());
    }

    #[test]
    fn gbits_of_a_second() {
        assert_eq!(gbits(125_000_000, Duration::from_secs(1)), 1.0);
        assert_eq!(gbits(1, Duration::ZERO), 0.0);
    }
}
