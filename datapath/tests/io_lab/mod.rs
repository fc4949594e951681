//! The lab shared by the `io_*` tests: a throwaway set of network namespaces (a bridge
//! in a "switch" namespace; client, node and backend hanging off it by veth pairs,
//! 198.18.0.0/24) and a node running the datapath. Every namespace carries a per-run
//! prefix and is deleted by a guard on drop, panics included; every wait has a deadline.

#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use datapath::{
    BackendSpec, BackendState, Datapath, DatapathConfig, DropReason, FarmSpec, ForwardingTable,
    InterfaceInfo, IoMode, MacAddr, Protocol, Shared, resolve_workers,
};
use socket2::{Domain, SockFilter, Socket, Type};

pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
pub const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
pub const UDP_PORT: u16 = 5353;
pub const TCP_PORT: u16 = 8080;
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether these namespace tests can run (root). Without root they skip, saying so — unless
/// `DSRLB_REQUIRE_LAB=1` (CI, as root), where a skip would hide a broken run: then they fail.
/// (The `lab` crate has the same rule; it depends on `datapath`, so it cannot be used here.)
pub fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("DSRLB_REQUIRE_LAB").as_deref() != Ok("1"),
        "DSRLB_REQUIRE_LAB=1 but the datapath's namespace tests need root"
    );
    eprintln!("SKIPPED: network namespaces need root (DSRLB_REQUIRE_LAB=1 makes this a failure)");
    false
}

/// Runs `f` on a thread inside namespace `ns`; sockets it creates stay in `ns`, and
/// threads it spawns start there.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).expect("namespace file");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    })
}

pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespaces of one lab; deleting them removes every link and address in them.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            let ok = Command::new("ip")
                .args(["netns", "del", &ns])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("could not delete namespace {ns}");
            }
        }
    }
}

impl Lab {
    pub fn new() -> Lab {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // pid and sequence keep concurrent labs apart; `ip netns add` refuses a name that
        // exists, so a collision fails the test instead of touching another lab.
        let prefix = format!("d{:05x}", ((std::process::id() << 6) + seq) & 0xfffff);
        let mut lab = Lab {
            prefix,
            namespaces: Vec::new(),
        };
        for role in ["sw", "cl", "lb", "be"] {
            let ns = lab.ns(role);
            sh(&["ip", "netns", "add", &ns]);
            lab.namespaces.push(ns);
        }
        let p = lab.prefix.clone();
        let (sw, br) = (lab.ns("sw"), format!("{p}br"));
        sh(&["ip", "-n", &sw, "link", "add", &br, "type", "bridge"]);
        sh(&["ip", "-n", &sw, "link", "set", &br, "up"]);
        for (role, ip) in [("cl", CLIENT), ("lb", NODE), ("be", BACKEND)] {
            let (ns, port, dev) = (lab.ns(role), format!("{p}{role}"), lab.dev());
            sh(&[
                "ip", "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", &dev,
                "netns", &ns,
            ]);
            sh(&["ip", "-n", &sw, "link", "set", &port, "master", &br, "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", &dev, "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                &dev,
            ]);
        }
        // The node must not route VIP traffic; the backend holds the VIP as a user would
        // (deploy/backend-setup.sh): on lo, never claimed on the wire.
        sh(&[
            "ip",
            "netns",
            "exec",
            &lab.ns("lb"),
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=0",
        ]);
        let be = lab.ns("be");
        sh(&[
            "ip",
            "-n",
            &be,
            "addr",
            "add",
            &format!("{VIP}/32"),
            "dev",
            "lo",
        ]);
        for key in ["all", "default", "lo", &lab.dev()] {
            sh(&[
                "ip",
                "netns",
                "exec",
                &be,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.arp_ignore=1"),
            ]);
            sh(&[
                "ip",
                "netns",
                "exec",
                &be,
                "sysctl",
                "-qw",
                &format!("net.ipv4.conf.{key}.arp_announce=2"),
            ]);
        }
        lab
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    /// The name of each host's interface (inside its own namespace).
    pub fn dev(&self) -> String {
        format!("{}e", self.prefix)
    }

    pub fn iface(&self, role: &str) -> InterfaceInfo {
        let dev = self.dev();
        in_ns(&self.ns(role), || InterfaceInfo::lookup(&dev)).expect("lookup")
    }
}

/// A node running the datapath with a UDP and a TCP farm on the VIP, one backend.
pub struct Node {
    pub shared: Arc<Shared>,
    pub dp: Datapath,
    pub mac: MacAddr,
}

/// The lab's table: a UDP and a TCP farm on the VIP, one backend.
pub fn lab_table(shared: &Shared, own_mac: MacAddr, backend_mac: MacAddr) -> ForwardingTable {
    let backend = BackendSpec {
        name: "b1".into(),
        ip: BACKEND.into(),
        mac: Some(backend_mac),
        weight: 1,
        state: BackendState::Up,
        healthy: true,
    };
    let farm = |name: &str, protocol, port| FarmSpec {
        name: name.into(),
        vip: VIP.into(),
        protocol,
        ports: port..=port,
        backends: vec![backend.clone()],
        persistence: None,
        hash: datapath::FlowHash::default(),
        limits: datapath::FarmLimits::default(),
        maglev_size: 1021,
    };
    let farms = [
        farm("udp", Protocol::Udp, UDP_PORT),
        farm("tcp", Protocol::Tcp, TCP_PORT),
    ];
    ForwardingTable::build(own_mac, &farms, &shared.counters).expect("table")
}

/// The I/O backend the lab's node runs: `DSRLB_LAB_IO` (`af_packet`, `af_xdp`, `auto`;
/// AF_PACKET when unset), so CI runs these tests once per backend.
pub fn lab_io() -> IoMode {
    match std::env::var("DSRLB_LAB_IO") {
        Ok(v) => {
            IoMode::parse(&v).unwrap_or_else(|| panic!("DSRLB_LAB_IO={v:?} is not an I/O mode"))
        }
        Err(_) => IoMode::AfPacket,
    }
}

pub fn start_node(lab: &Lab, backend_mac: MacAddr) -> Node {
    let iface = lab.iface("lb");
    let workers = resolve_workers(2);
    let shared = Shared::new(workers, iface.mac);
    shared.publish(lab_table(&shared, iface.mac, backend_mac));
    let mut cfg = DatapathConfig::new(lab.dev());
    cfg.workers = workers;
    cfg.io = lab_io();
    let s = shared.clone();
    let dp = in_ns(&lab.ns("lb"), move || Datapath::start(cfg, s)).expect("datapath starts");
    if cfg_io_is_xdp() {
        assert_eq!(dp.backend().as_str(), "af_xdp");
    }
    assert_eq!(dp.workers_alive(), dp.workers_started());
    Node {
        shared,
        dp,
        mac: iface.mac,
    }
}

/// Whether the lab runs AF_XDP (some tests assert what differs, e.g. GSO).
pub fn cfg_io_is_xdp() -> bool {
    lab_io() == IoMode::AfXdp
}

pub fn backend_counts(shared: &Shared, farm: &str) -> (u64, u64) {
    let snap = shared.stats();
    let f = snap.iter().find(|f| f.farm == farm).expect("farm counters");
    f.backends
        .iter()
        .fold((0, 0), |(p, b), s| (p + s.packets, b + s.bytes))
}

pub fn assert_no_io_drops(shared: &Shared) {
    for r in [
        DropReason::TxError,
        DropReason::Truncated,
        DropReason::Oversize,
    ] {
        assert_eq!(shared.drops.get(r), 0, "{r} drops");
    }
}

pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A packet socket bound to `dev` in the current namespace that only takes frames
/// `filter` accepts.
pub fn raw_socket(dev: &str, filter: &[SockFilter]) -> Socket {
    let protocol = socket2::Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
    let sock = Socket::new(Domain::PACKET, Type::RAW, Some(protocol)).expect("packet socket");
    sock.attach_filter(filter).expect("filter");
    // getifaddrs hands out the interface's link address with protocol 0, which binds to
    // the interface and keeps the socket's protocol.
    let link = nix::ifaddrs::getifaddrs()
        .expect("getifaddrs")
        .filter(|a| a.interface_name == dev)
        .find_map(|a| a.address.and_then(|s| s.as_link_addr().cloned()))
        .expect("link address");
    nix::sys::socket::bind(sock.as_raw_fd(), &link).expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    sock
}

/// Accepts frames whose metadata carries VLAN `vid` (the kernel strips tags on receive)
/// and whose inner EtherType is `ethertype`.
pub fn tagged(vid: u32, ethertype: u32) -> Vec<SockFilter> {
    const LD_B_ABS: u16 = 0x30;
    const LD_H_ABS: u16 = 0x28;
    const LD_W_ABS: u16 = 0x20;
    const JEQ: u16 = 0x15;
    const RET: u16 = 0x06;
    let anc = |n: i32| (-0x1000 + n) as u32;
    vec![
        SockFilter::new(LD_B_ABS, 0, 0, anc(48)), // VLAN tag present
        SockFilter::new(JEQ, 0, 5, 1),
        SockFilter::new(LD_W_ABS, 0, 0, anc(44)), // the tag's TCI
        SockFilter::new(JEQ, 0, 3, vid),
        SockFilter::new(LD_H_ABS, 0, 0, 12),
        SockFilter::new(JEQ, 0, 1, ethertype),
        SockFilter::new(RET, 0, 0, u32::MAX),
        SockFilter::new(RET, 0, 0, 0),
    ]
}

pub fn any_ipv4() -> Vec<SockFilter> {
    vec![
        SockFilter::new(0x28, 0, 0, 12),
        SockFilter::new(0x15, 0, 1, 0x0800),
        SockFilter::new(0x06, 0, 0, u32::MAX),
        SockFilter::new(0x06, 0, 0, 0),
    ]
}

/// Reads frames until `pick` returns something or the deadline passes.
pub fn read_until<T>(sock: &Socket, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    let mut buf = vec![0u8; 70_000];
    while Instant::now() < deadline {
        if let Ok(n) = (&*sock).read(&mut buf)
            && let Some(v) = pick(&buf[..n])
        {
            return Some(v);
        }
    }
    None
}

pub fn udp_to_vip(f: &[u8], payload: &[u8]) -> bool {
    f.len() >= 42
        && f[12..14] == [8, 0]
        && f[23] == 17
        && f[30..34] == VIP.octets()
        && f[36..38] == UDP_PORT.to_be_bytes()
        && f.ends_with(payload)
}

pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

pub const FNV_SEED: u64 = 0xcbf2_9ce4_8422_2325;
