//! `Lab`: builds and tears down the whole network-namespace topology — a switch namespace
//! holding a bridge, one namespace per host joined to it by a veth pair — under a per-run
//! prefix, so concurrent labs never collide and `Drop` can remove exactly what was made.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::host::{MacAddr, Role};
use super::netns::{in_netns, ip, netns_exists, pids_in, run_command};
use super::{Host, LabError, LabProcess};

/// The VIP every lab uses unless told otherwise.
pub const DEFAULT_VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The lab's L2 segment: 198.18.0.0/24 (inside the benchmarking range 198.18.0.0/15).
pub const LAB_PREFIX_LEN: u8 = 24;
/// The IPv6 VIP of a lab with [`LabSpec::ipv6`].
pub const DEFAULT_VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);
/// With [`LabSpec::ipv6`], the segment also carries 2001:db8::/64 (documentation range):
/// host `.21` is `2001:db8::21`, read as hex, so the two addresses look alike.
pub const LAB_PREFIX6_LEN: u8 = 64;
/// How many hosts of one role fit in their address decade (.11–.19, .21–.29, .31–.39).
const MAX_PER_ROLE: usize = 9;
/// Extra client source addresses live in .41–.90, below the default VIP.
const MAX_EXTRA_IPS: usize = 50;
/// `deploy/backend-setup.sh`, embedded so the lab also works from an installed binary.
const BACKEND_SETUP: &str = include_str!("../../../deploy/backend-setup.sh");

/// What to build.
#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Load-balancer node hosts (`n1`.., 198.18.0.11..).
    pub nodes: usize,
    /// Backend hosts (`b1`.., 198.18.0.21..), each set up with `backend-setup.sh <vip>`.
    pub backends: usize,
    /// Client hosts (`c1`.., 198.18.0.31..).
    pub clients: usize,
    /// Extra source addresses on client 0 (198.18.0.41..), for persistence tests.
    pub client_extra_ips: usize,
    /// Hosts for another load balancer (`x1`.., 198.18.0.1..), e.g. nftlb in the benchmark.
    /// They start with their cable pulled ([`Lab::set_cable`]), so they never share the
    /// segment with a dsrlb node unless the caller plugs them in.
    pub other_lbs: usize,
    /// The virtual IP; assigned to no node, held on `lo` by the backends.
    pub vip: Ipv4Addr,
    /// Dual stack: every host also gets `2001:db8::<octet>/64` (no duplicate address
    /// detection: the lab assigns unique addresses, and DAD would hold each one back for a
    /// second), and the backends also hold [`LabSpec::vip6`]. Off: IPv6 is disabled in
    /// every namespace, so no router solicitation or MLD report ever reaches a node.
    pub ipv6: bool,
    /// The IPv6 VIP held by the backends when `ipv6` is on.
    pub vip6: Ipv6Addr,
}

impl Default for LabSpec {
    fn default() -> Self {
        LabSpec {
            nodes: 1,
            backends: 2,
            clients: 1,
            client_extra_ips: 0,
            other_lbs: 0,
            vip: DEFAULT_VIP,
            ipv6: false,
            vip6: DEFAULT_VIP6,
        }
    }
}

impl LabSpec {
    /// Rejects specs whose addresses would overlap or leave the lab subnet.
    pub fn validate(&self) -> Result<(), LabError> {
        for (what, n) in [
            ("nodes", self.nodes),
            ("backends", self.backends),
            ("clients", self.clients),
            ("other_lbs", self.other_lbs),
        ] {
            if n > MAX_PER_ROLE {
                return Err(LabError::Spec(format!(
                    "{what} = {n}, at most {MAX_PER_ROLE}"
                )));
            }
        }
        if self.client_extra_ips > MAX_EXTRA_IPS {
            return Err(LabError::Spec(format!(
                "client_extra_ips = {}, at most {MAX_EXTRA_IPS}",
                self.client_extra_ips
            )));
        }
        if self.client_extra_ips > 0 && self.clients == 0 {
            return Err(LabError::Spec(
                "client_extra_ips needs at least one client".into(),
            ));
        }
        let o = self.vip.octets();
        if o[..3] != [198, 18, 0] || o[3] <= 90 || o[3] == 255 {
            return Err(LabError::Spec(format!(
                "vip {} must be in 198.18.0.91-198.18.0.254 (below it are host addresses)",
                self.vip
            )));
        }
        Ok(())
    }
}

/// A running lab. Dropping it kills every process in its namespaces and deletes them,
/// which also removes their veths and the bridge, then deletes its temp dir.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    spec: LabSpec,
    dir: Arc<PathBuf>,
    switch_ns: String,
    bridge: String,
    nodes: Vec<Host>,
    pub(super) backends: Vec<Host>,
    clients: Vec<Host>,
    other_lbs: Vec<Host>,
    extra_ips: Vec<Ipv4Addr>,
    extra_ips6: Vec<Ipv6Addr>,
    /// Every namespace we created, switch first, so teardown can undo a half-built lab.
    created: Vec<String>,
    dir_created: bool,
    pub(super) backend_procs: Vec<Option<LabProcess>>,
}

/// Distinguishes labs built by one process in the same nanosecond-ish window.
static LAB_SEQ: AtomicU32 = AtomicU32::new(0);

fn prefix_candidate(attempt: u32) -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seq = LAB_SEQ.fetch_add(1, Ordering::Relaxed);
    let mixed = xorshift(
        (std::process::id() as u64) << 32 ^ nanos as u64 ^ (seq as u64) << 20 ^ attempt as u64,
    );
    (mixed & 0xf_ffff) as u32
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// Reads a decimal octet as two hex nibbles, so `.21` gets a MAC ending in `:21`.
fn bcd(octet: u8) -> u8 {
    ((octet / 10) << 4) | (octet % 10)
}

impl Lab {
    /// Builds the topology described by `spec`. On error everything made so far is removed.
    pub fn build(spec: &LabSpec) -> Result<Lab, LabError> {
        spec.validate()?;
        let (prefix, n) = claim_prefix()?;
        let dir = std::env::temp_dir().join(format!("dsrlb-lab-{prefix}"));
        let mut lab = Lab {
            switch_ns: format!("{prefix}-sw"),
            bridge: format!("{prefix}br"),
            prefix,
            spec: spec.clone(),
            dir: Arc::new(dir),
            nodes: Vec::new(),
            backends: Vec::new(),
            clients: Vec::new(),
            other_lbs: Vec::new(),
            extra_ips: Vec::new(),
            extra_ips6: Vec::new(),
            created: Vec::new(),
            dir_created: false,
            backend_procs: Vec::new(),
        };
        lab.created.push(lab.switch_ns.clone());
        lab.populate(n)?;
        Ok(lab)
    }

    fn populate(&mut self, n: u32) -> Result<(), LabError> {
        std::fs::create_dir(&*self.dir).map_err(|source| LabError::File {
            what: "create lab dir",
            path: (*self.dir).clone(),
            source,
        })?;
        self.dir_created = true;
        let script = self.setup_script();
        std::fs::write(&script, BACKEND_SETUP).map_err(|source| LabError::File {
            what: "write",
            path: script.clone(),
            source,
        })?;

        let sw = self.switch_ns.clone();
        quiet_namespace(&sw, false)?;
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", &self.bridge, "type", "bridge"])?;
        // A switch forwards frames without looking at IP headers. With br_netfilter loaded
        // on the machine (Docker loads it), the bridge would validate IPv4 and drop malformed
        // frames itself, hiding them from the node. These sysctls belong to the switch
        // namespace (per-netns since Linux 5.3), not to the machine.
        in_netns(&sw, || {
            for table in ["iptables", "ip6tables", "arptables"] {
                let path = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
                if std::path::Path::new(&path).exists() {
                    std::fs::write(&path, "0")
                        .map_err(|e| LabError::io(format!("write {path}"), e))?;
                }
            }
            Ok::<(), LabError>(())
        })??;
        ip(&["-n", &sw, "link", "set", &self.bridge, "up"])?;

        let spec = self.spec.clone();
        let mac_base = [0x02, (n >> 16) as u8, (n >> 8) as u8, n as u8, 0x00];
        for (role, count, letter, first) in [
            (Role::Node, spec.nodes, 'n', 11u8),
            (Role::Backend, spec.backends, 'b', 21),
            (Role::Client, spec.clients, 'c', 31),
            (Role::OtherLb, spec.other_lbs, 'x', 1),
        ] {
            for i in 0..count {
                let octet = first + i as u8;
                let mut mac = [0u8; 6];
                mac[..5].copy_from_slice(&mac_base);
                mac[5] = bcd(octet);
                let host = self.add_host(
                    role,
                    format!("{letter}{}", i + 1),
                    Ipv4Addr::new(198, 18, 0, octet),
                    MacAddr(mac),
                )?;
                match role {
                    Role::Node => self.nodes.push(host),
                    Role::Backend => self.backends.push(host),
                    Role::Client => self.clients.push(host),
                    Role::OtherLb => {
                        self.set_cable(&host, false)?;
                        self.other_lbs.push(host);
                    }
                }
            }
        }
        for k in 0..spec.client_extra_ips {
            let extra = Ipv4Addr::new(198, 18, 0, 41 + k as u8);
            let c0 = &self.clients[0];
            c0.ip(&[
                "addr",
                "add",
                &format!("{extra}/{LAB_PREFIX_LEN}"),
                "dev",
                "eth0",
            ])?;
            self.extra_ips.push(extra);
            if spec.ipv6 {
                let extra6 = lab_ipv6(41 + k as u8);
                c0.ip(&[
                    "addr",
                    "add",
                    &format!("{extra6}/{LAB_PREFIX6_LEN}"),
                    "dev",
                    "eth0",
                    "nodad",
                ])?;
                self.extra_ips6.push(extra6);
            }
        }
        for b in self.backends.clone() {
            self.run_backend_setup(&b, &[])?;
            if self.spec.ipv6 {
                self.run_backend_setup_for(&b, &self.spec.vip6.to_string(), &[])?;
            }
        }
        self.backend_procs = (0..self.backends.len()).map(|_| None).collect();
        Ok(())
    }

    fn add_host(
        &mut self,
        role: Role,
        name: String,
        addr: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<Host, LabError> {
        let netns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &netns])?;
        self.created.push(netns.clone());
        let ipv6 = self.spec.ipv6;
        quiet_namespace(&netns, ipv6)?;
        let ip6 = ipv6.then(|| lab_ipv6(addr.octets()[3]));
        let host = Host {
            name: name.clone(),
            netns: netns.clone(),
            ifname: "eth0".into(),
            ip: addr,
            ip6,
            mac,
            role,
            dir: Arc::clone(&self.dir),
        };
        // Every lab host is an end host, not a router; new namespaces may inherit
        // ip_forward=1 from the machine, and a node must refuse to run with it.
        host.set_sysctl("net/ipv4/ip_forward", "0")?;
        let port = format!("{}-{name}", self.prefix);
        let sw = self.switch_ns.as_str();
        let mac_s = mac.to_string();
        let cidr = format!("{addr}/{LAB_PREFIX_LEN}");
        ip(&[
            "-n", sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])?;
        ip(&["-n", sw, "link", "set", &port, "master", &self.bridge, "up"])?;
        host.ip(&["link", "set", "lo", "up"])?;
        host.ip(&["link", "set", "eth0", "address", &mac_s, "up"])?;
        host.ip(&["addr", "add", &cidr, "dev", "eth0"])?;
        if let Some(a) = ip6 {
            let cidr6 = format!("{a}/{LAB_PREFIX6_LEN}");
            host.ip(&["addr", "add", &cidr6, "dev", "eth0", "nodad"])?;
        }
        Ok(host)
    }

    /// Runs the embedded `backend-setup.sh <vip> [extra]` in `host`, exactly as a user would.
    /// Its state dir is per host because `/run` is shared by all namespaces.
    pub fn run_backend_setup(&self, host: &Host, extra: &[&str]) -> Result<String, LabError> {
        self.run_backend_setup_for(host, &self.spec.vip.to_string(), extra)
    }

    /// [`Lab::run_backend_setup`] for another VIP (the IPv6 one).
    pub fn run_backend_setup_for(
        &self,
        host: &Host,
        vip: &str,
        extra: &[&str],
    ) -> Result<String, LabError> {
        let state = self.dir.join(format!("{}-setup-state", host.name));
        let out = run_command(
            Command::new("ip")
                .args(["netns", "exec", &host.netns, "sh"])
                .arg(self.setup_script())
                .arg(vip)
                .args(extra)
                .env("DSRLB_SETUP_STATE_DIR", state),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Pulls host `host`'s cable (`plugged == false`) or plugs it back: its port on the bridge
    /// goes down or up in the switch namespace. The host's own interface stays
    /// administratively up and only loses carrier, as with a real cable, so the sockets bound
    /// to it (a node's datapath rings) live on and see frames again once it is plugged.
    pub fn set_cable(&self, host: &Host, plugged: bool) -> Result<(), LabError> {
        let port = format!("{}-{}", self.prefix, host.name);
        let state = if plugged { "up" } else { "down" };
        ip(&["-n", &self.switch_ns, "link", "set", &port, state]).map(drop)
    }

    /// The per-run prefix every object of this lab is named with (`d` + 5 hex digits).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// What was built.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }
    /// The virtual IP.
    pub fn vip(&self) -> Ipv4Addr {
        self.spec.vip
    }
    /// The IPv6 virtual IP, in a lab built with [`LabSpec::ipv6`].
    pub fn vip6(&self) -> Option<Ipv6Addr> {
        self.spec.ipv6.then_some(self.spec.vip6)
    }
    /// Node hosts, `n1` first.
    pub fn nodes(&self) -> &[Host] {
        &self.nodes
    }
    /// Backend hosts, `b1` first.
    pub fn backends(&self) -> &[Host] {
        &self.backends
    }
    /// Client hosts, `c1` first.
    pub fn clients(&self) -> &[Host] {
        &self.clients
    }
    /// Hosts for another load balancer, `x1` first (see [`LabSpec::other_lbs`]).
    pub fn other_lbs(&self) -> &[Host] {
        &self.other_lbs
    }
    /// Every host, nodes then backends then clients, then other load balancers.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.nodes
            .iter()
            .chain(&self.backends)
            .chain(&self.clients)
            .chain(&self.other_lbs)
    }
    /// Extra source addresses held by client 0.
    pub fn client_extra_ips(&self) -> &[Ipv4Addr] {
        &self.extra_ips
    }
    /// Their IPv6 twins (2001:db8::41..), in a lab with [`LabSpec::ipv6`].
    pub fn client_extra_ips6(&self) -> &[Ipv6Addr] {
        &self.extra_ips6
    }
    /// The namespace holding the bridge (capture there to see every frame on the segment).
    pub fn switch_ns(&self) -> &str {
        &self.switch_ns
    }
    /// The bridge's name inside [`Lab::switch_ns`].
    pub fn bridge(&self) -> &str {
        &self.bridge
    }
    /// The lab's temp dir (logs, the setup script, per-host state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where the embedded `backend-setup.sh` was written.
    pub fn setup_script(&self) -> PathBuf {
        self.dir.join("backend-setup.sh")
    }
    /// Every namespace of this lab (for leak checks).
    pub fn namespaces(&self) -> &[String] {
        &self.created
    }

    /// Kills whatever runs in `netns` and deletes it; returns a description of what failed.
    fn remove_namespace(ns: &str) -> Result<(), String> {
        if !netns_exists(ns) {
            return Ok(());
        }
        let me = std::process::id() as i32;
        match pids_in(ns) {
            Ok(pids) => {
                for pid in pids.into_iter().filter(|&p| p != me && p > 1) {
                    // ESRCH just means it exited meanwhile.
                    match nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    ) {
                        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                        Err(e) => return Err(format!("kill {pid} in {ns}: {e}")),
                    }
                }
            }
            Err(e) => return Err(e.to_string()),
        }
        ip(&["netns", "del", ns])
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Lab namespaces are IPv4 only: without IPv6, no router solicitations or MLD reports
/// clutter captures and ARP-count assertions.
fn quiet_namespace(ns: &str, ipv6: bool) -> Result<(), LabError> {
    // With IPv6: no DAD (unique addresses; DAD delays each by a second) and no router
    // solicitations (there is no router). Namespace-local sysctls, set before eth0 exists
    // so `default` reaches it.
    let settings: &[(&str, &str)] = if ipv6 {
        &[
            ("disable_ipv6", "0"),
            ("accept_dad", "0"),
            ("router_solicitations", "0"),
        ]
    } else {
        &[("disable_ipv6", "1")]
    };
    for key in ["all", "default"] {
        for (name, value) in settings {
            let path = format!("/proc/sys/net/ipv6/conf/{key}/{name}");
            super::netns::in_netns(ns, || std::fs::write(&path, value))?.map_err(|source| {
                LabError::File {
                    what: "write",
                    path: PathBuf::from(&path),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

/// A lab host's IPv6 address: its IPv4 host octet read as hex in 2001:db8::/64.
fn lab_ipv6(octet: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(bcd(octet)))
}

/// Picks a prefix nobody uses and claims it atomically by creating its switch namespace
/// (`ip netns add` fails if the name exists, even if another process made it a moment ago).
fn claim_prefix() -> Result<(String, u32), LabError> {
    const TRIES: u32 = 32;
    for attempt in 0..TRIES {
        let n = prefix_candidate(attempt);
        let prefix = format!("d{n:05x}");
        let sw = format!("{prefix}-sw");
        if netns_exists(&sw) {
            continue;
        }
        match ip(&["netns", "add", &sw]) {
            Ok(_) => return Ok((prefix, n)),
            Err(_) if netns_exists(&sw) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(LabError::NoFreePrefix { tries: TRIES })
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Our own children first, so they are reaped rather than left as zombies.
        self.backend_procs.clear();
        let mut failures = Vec::new();
        for ns in self.created.iter().rev() {
            if let Err(e) = Lab::remove_namespace(ns) {
                failures.push(e);
            }
        }
        if self.dir_created
            && let Err(e) = std::fs::remove_dir_all(&*self.dir)
        {
            failures.push(format!("remove {}: {e}", self.dir.display()));
        }
        for f in failures {
            eprintln!("dsrlb lab {}: teardown: {f}", self.prefix);
        }
    }
}
