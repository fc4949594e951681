//! Turns the raw TOML schema into typed, checked values. Every rejection names the key
//! (`farm[web].backend[b1].ip`) and the reason, so an operator can fix the file in one go.
//!
//! A farm comes out in its replicated form, [`cluster::Farm`], with no intermediate shape
//! (the admin API validates its farms here too), and the canonical spelling of a replicated
//! farm as a [`RawFarm`] is here as well: both directions between the file and the cluster
//! state live in this one place.

use super::ConfigError;
use super::raw::{RawBackend, RawCheck, RawConfig, RawFarm};
use cluster::{
    Backend, BackendState, CheckKind, Farm, HealthCheck, HttpCheck, Persistence, Protocol,
    Scheduler,
};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

pub use proto::listener::Limits;

/// A validated node configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: String,
    pub cluster: ClusterConfig,
    pub admin_listen: SocketAddr,
    /// File holding the admin bearer token (required: every admin RPC is authenticated).
    pub admin_token_file: String,
    /// `None`: the admin listener is plaintext.
    pub admin_tls: Option<super::AdminTls>,
    pub datapath: DatapathSettings,
    /// `None` when metrics are disabled (`listen = ""`).
    pub metrics_listen: Option<SocketAddr>,
    pub metrics: MetricsSettings,
    /// What the admin port admits (docs/design.md#listeners).
    pub admin_limits: Limits,
    /// The bootstrap farms, already in their replicated form.
    pub farms: Vec<Farm>,
}

/// What `dsrlb witness` runs on: no datapath, no admin listener, no farms.
#[derive(Debug, Clone)]
pub struct WitnessConfig {
    pub node_id: u64,
    pub data_dir: String,
    pub cluster: ClusterConfig,
    /// `None` when metrics are disabled (`listen = ""`).
    pub metrics_listen: Option<SocketAddr>,
    pub metrics: MetricsSettings,
}

/// The metrics listener's limits and optional bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub limits: Limits,
    /// `Some`: `/metrics` requires this file's token.
    pub token_file: Option<String>,
}

impl Config {
    /// What is valid but most likely a mistake, one line each: `check-config` prints them as
    /// `warning: …` and `run` logs them. A farm whose backends all have weight 0 takes no new
    /// flows: a warning, not an error, since draining every backend is a legitimate state
    /// (the admin API may set it, and the file must accept what the API exports).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.cluster.no_failover() {
            out.push(why);
        }
        for f in &self.farms {
            if !f.backends.is_empty() && f.backends.iter().all(|b| b.weight == 0) {
                out.push(format!(
                    "farm[{}]: every backend has weight 0: the farm takes no new flows",
                    f.name
                ));
            }
        }
        out
    }
}

impl ClusterConfig {
    /// Why this cluster cannot fail over, if it cannot (see [`failover`]).
    pub fn no_failover(&self) -> Option<String> {
        if self.segment.is_some() {
            // The segment arbitrates the pair (docs/design.md#pair-segment).
            return None;
        }
        failover(self.members.len().max(1)).err()
    }
}

/// What the loss of members does to a cluster of `voters` voters (docs/design.md#pairs): a
/// majority must remain for anyone to be elected. `Ok("survives N failure(s)")`, or
/// `Err` saying why it never fails over.
pub fn failover(voters: usize) -> std::result::Result<String, String> {
    match voters {
        0 | 1 => Err("no failover: a cluster of one".into()),
        2 => Err("no failover: 2 voters, no witness".into()),
        n => {
            let tolerated = n - (n / 2 + 1);
            let s = if tolerated == 1 { "" } else { "s" };
            Ok(format!("survives {tolerated} failure{s}"))
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub advertise: SocketAddr,
    pub members: Vec<(u64, SocketAddr)>,
    pub token_file: Option<String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    pub lease: Duration,
    pub witness: bool,
    /// `Some`: `pair_arbiter = "segment"` (docs/design.md#pair-segment).
    pub segment: Option<SegmentArbiter>,
    /// `[cluster] allow_no_failover`: a pair without a witness was accepted on purpose.
    pub allow_no_failover: bool,
    /// `None`: the peer service is plaintext (the token is required either way).
    pub tls: Option<cluster::PeerTls>,
    /// Written into the log by the bootstrap (the log's value rules afterwards).
    pub shared: cluster::SharedSettings,
    /// What the peer port admits (docs/design.md#listeners).
    pub peer_limits: Limits,
}

/// How the segment arbiter of a pair probes the datapath segment for the VIPs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentArbiter {
    /// Between two probe rounds (every VIP asked once per round).
    pub probe_interval: Duration,
    /// Unanswered rounds before a survivor takes over.
    pub probe_count: u32,
}

#[derive(Debug, Clone)]
pub struct DatapathSettings {
    pub interface: String,
    pub workers: usize,
    pub io: datapath::IoMode,
    pub fast_path: datapath::FastPathMode,
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// `None`: no announcements after the takeover burst.
    pub garp_refresh: Option<Duration>,
    pub ring_slots: usize,
    pub flow_capacity: usize,
    pub flow_idle: Duration,
    /// `tcp_strict`'s grace after this node becomes owner.
    pub tcp_strict_grace: Duration,
}

/// Highest accepted backend weight; keeps Maglev's weighted fill well inside u32 arithmetic.
pub const MAX_WEIGHT: u32 = 65535;

type Result<T> = std::result::Result<T, ConfigError>;

fn socket_addr(key: &str, value: &str) -> Result<SocketAddr> {
    value.parse().map_err(|_| {
        ConfigError::invalid(key, format!("{:?} is not an address:port", shown(value)))
    })
}

/// A duration string, zero allowed (for keys where "0s" means off).
fn duration_or_zero(key: &str, value: &str) -> Result<Duration> {
    humantime::parse_duration(value).map_err(|e| {
        ConfigError::invalid(
            key,
            format!(
                "{:?} is not a duration with a unit such as \"500ms\" or \"60s\" ({e})",
                shown(value)
            ),
        )
    })
}

/// A duration from `min` to `max` (both shown in the error as `range`, e.g. "100ms-1h").
fn duration_in(
    key: &str,
    value: &str,
    min: Duration,
    max: Duration,
    range: &str,
) -> Result<Duration> {
    let d = duration_or_zero(key, value)?;
    if d < min || d > max {
        return Err(ConfigError::invalid(
            key,
            format!("{:?} is out of range: must be {range}", shown(value)),
        ));
    }
    Ok(d)
}

/// A value as an error may show it: at most 64 characters, so an error never echoes
/// unbounded input.
pub(crate) fn shown(value: &str) -> String {
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_string(),
    }
}

/// The limits of a listener whose `max_connections` key is `key` (1-4096); a quarter of
/// them (at least one) may come from one address, so one client cannot take them all.
fn listener_limits(key: &str, max: usize, idle: Duration) -> Result<Limits> {
    if !(1..=4096).contains(&max) {
        return Err(ConfigError::invalid(
            key,
            format!("{max} is out of range: must be 1-4096"),
        ));
    }
    Ok(Limits {
        max_connections: max,
        per_source: (max / 4).max(1),
        idle,
    })
}

/// Bounds of the durations in the config (docs/design.md#config, #farm-schema).
pub mod bounds {
    use std::time::Duration;
    /// A check interval: below it, checks become a connection flood on the backends.
    pub const CHECK_INTERVAL: (Duration, Duration) =
        (Duration::from_millis(100), Duration::from_secs(3600));
    /// A check timeout (and at most the interval).
    pub const CHECK_TIMEOUT_MIN: Duration = Duration::from_millis(10);
    /// A pin's time to live: a year at most keeps every expiry sum far from overflow.
    pub const PERSISTENCE_TTL: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(365 * 86_400));
    /// How long an unseen flow is remembered.
    pub const FLOW_IDLE: (Duration, Duration) =
        (Duration::from_secs(1), Duration::from_secs(86_400));
}

/// A unicast IPv4 address a host can really hold: not unspecified, broadcast, multicast or
/// loopback.
pub fn unicast_ipv4(key: &str, value: &str) -> Result<Ipv4Addr> {
    let ip: Ipv4Addr = value.parse().map_err(|_| {
        ConfigError::invalid(key, format!("{:?} is not an IPv4 address", shown(value)))
    })?;
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback() {
        return Err(ConfigError::invalid(
            key,
            format!("{ip} is not a unicast address a host can hold"),
        ));
    }
    Ok(ip)
}

/// A farm's VIP: a unicast IPv4 address ([`unicast_ipv4`]) or a global-scope unicast IPv6
/// address — not unspecified, loopback, multicast, link-local (fe80::/10: a VIP is reached
/// through routers, a link-local address never is) or IPv4-mapped (::ffff:0:0/96 is IPv4
/// spelled in IPv6; write the IPv4 address).
pub fn vip_address(key: &str, value: &str) -> Result<IpAddr> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => unicast_ipv4(key, value).map(IpAddr::V4),
        Ok(IpAddr::V6(ip)) => {
            let bad = if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                Some("is not a unicast address a host can hold")
            } else if ip.is_unicast_link_local() {
                Some("is link-local: a VIP must be routable (a global or unique-local address)")
            } else if ip.to_ipv4_mapped().is_some() {
                Some("is IPv4-mapped: write the IPv4 address itself")
            } else {
                None
            };
            match bad {
                Some(why) => Err(ConfigError::invalid(key, format!("{ip} {why}"))),
                None => Ok(IpAddr::V6(ip)),
            }
        }
        Err(_) => Err(ConfigError::invalid(
            key,
            format!("{:?} is not an IPv4 or IPv6 address", shown(value)),
        )),
    }
}

/// A backend's address: as a VIP ([`vip_address`]) but a link-local IPv6 address is
/// allowed (a backend is on the datapath's link, and fe80:: is how it may be known there).
pub fn backend_address(key: &str, value: &str) -> Result<IpAddr> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) if ip.is_unicast_link_local() => Ok(IpAddr::V6(ip)),
        _ => vip_address(key, value),
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
}

/// Names appear in metric labels and CLI arguments, so keep them to a safe alphabet.
pub fn check_name(key: &str, name: &str) -> Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if name.is_empty() || name.len() > 63 || !ok_chars {
        return Err(ConfigError::invalid(
            key,
            format!(
                "{:?} must be 1-63 characters of letters, digits, '-', '_' or '.'",
                shown(name)
            ),
        ));
    }
    Ok(())
}

impl RawConfig {
    /// Checks every key and builds the typed config.
    pub fn validate(self) -> Result<Config> {
        let node_id = self.validate_node()?;
        let cluster = self.validate_cluster(node_id)?;
        let admin_listen = socket_addr("admin.listen", &self.admin.listen)?;
        // docs/design.md#inv-authenticated: no admin RPC goes unauthenticated, so there is no
        // token-less mode to fall back to.
        let admin_token_file = match &self.admin.token_file {
            Some(f) if !f.is_empty() => f.clone(),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "admin.token_file",
                    "must not be empty",
                ));
            }
            None => {
                return Err(ConfigError::invalid(
                    "admin.token_file",
                    "is required (every admin RPC needs the admin token)",
                ));
            }
        };
        let (metrics_listen, metrics) = self.validate_metrics()?;
        let admin_limits = listener_limits(
            "admin.max_connections",
            self.admin.max_connections,
            self.idle_timeout()?,
        )?;
        let admin_tls = super::tls::admin_tls(&self.admin)?;
        let datapath = self.validate_datapath()?;
        let farms = validate_farms(&self.farm)?;
        nodes_are_not_farm_addresses(node_id, &cluster, &farms)?;
        Ok(Config {
            node_id,
            data_dir: self.node.data_dir,
            cluster,
            admin_listen,
            admin_token_file,
            admin_tls,
            datapath,
            metrics_listen,
            metrics,
            admin_limits,
            farms,
        })
    }

    /// The keys `dsrlb witness` reads: `[node]`, `[cluster]` (with `witness` forced on)
    /// and `[metrics]`; everything else is for nodes with a datapath.
    pub fn validate_witness(mut self) -> Result<WitnessConfig> {
        self.cluster.witness = true;
        let node_id = self.validate_node()?;
        let cluster = self.validate_cluster(node_id)?;
        let (metrics_listen, metrics) = self.validate_metrics()?;
        Ok(WitnessConfig {
            node_id,
            data_dir: self.node.data_dir,
            cluster,
            metrics_listen,
            metrics,
        })
    }

    fn validate_node(&self) -> Result<u64> {
        let node_id = match self.node.id {
            None => return Err(ConfigError::invalid("node.id", "is required")),
            Some(0) => return Err(ConfigError::invalid("node.id", "must be at least 1")),
            Some(id) => id,
        };
        if self.node.data_dir.is_empty() {
            return Err(ConfigError::invalid("node.data_dir", "must not be empty"));
        }
        Ok(node_id)
    }

    fn validate_metrics(&self) -> Result<(Option<SocketAddr>, MetricsSettings)> {
        let listen = if self.metrics.listen.is_empty() {
            None
        } else {
            Some(socket_addr("metrics.listen", &self.metrics.listen)?)
        };
        if self.metrics.token_file.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "metrics.token_file",
                "must not be empty (leave it out for an open /metrics)",
            ));
        }
        let limits = listener_limits(
            "metrics.max_connections",
            self.metrics.max_connections,
            self.idle_timeout()?,
        )?;
        Ok((
            listen,
            MetricsSettings {
                limits,
                token_file: self.metrics.token_file.clone(),
            },
        ))
    }

    /// `node.idle_timeout`, shared by the three listeners.
    fn idle_timeout(&self) -> Result<Duration> {
        duration_in(
            "node.idle_timeout",
            &self.node.idle_timeout,
            Duration::from_secs(1),
            Duration::from_secs(3600),
            "1s-1h",
        )
    }

    fn validate_cluster(&self, node_id: u64) -> Result<ClusterConfig> {
        let c = &self.cluster;
        let listen = socket_addr("cluster.listen", &c.listen)?;
        let advertise = match &c.advertise {
            Some(a) => socket_addr("cluster.advertise", a)?,
            None => listen,
        };
        let mut members = Vec::new();
        for (i, m) in c.members.iter().enumerate() {
            let key = format!("cluster.members[{i}]");
            let (id, addr) = m.split_once('=').ok_or_else(|| {
                ConfigError::invalid(&key, format!("{m:?} is not \"id=host:port\""))
            })?;
            let id: u64 = id.trim().parse().ok().filter(|id| *id > 0).ok_or_else(|| {
                ConfigError::invalid(&key, format!("{id:?} is not a node id ≥ 1"))
            })?;
            if members.iter().any(|(other, _)| *other == id) {
                return Err(ConfigError::invalid(
                    &key,
                    format!("node id {id} is listed twice"),
                ));
            }
            let addr = socket_addr(&key, addr.trim())?;
            if let Some((other, _)) = members.iter().find(|(_, a)| *a == addr) {
                return Err(ConfigError::invalid(
                    &key,
                    format!("{addr} is also node {other}'s address"),
                ));
            }
            members.push((id, addr));
        }
        if !members.is_empty() && !members.iter().any(|(id, _)| *id == node_id) {
            return Err(ConfigError::invalid(
                "cluster.members",
                format!("does not list this node (node.id = {node_id})"),
            ));
        }
        // docs/design.md#pairs: two voters have no majority once either is down, so the
        // survivor can never be elected and the VIP stays dead. Refused unless asked for.
        // A pair arbitrated by the segment fails over without a quorum
        // (docs/design.md#pair-segment).
        let segment = pair_arbiter(c, &members)?;
        if members.len() == 2 && !c.allow_no_failover && segment.is_none() {
            return Err(ConfigError::invalid(
                "cluster.members",
                "lists two voters and no witness: after either node fails the other has no \
                 majority and never takes the VIP over. Add a witness as a third member (run \
                 `dsrlb witness` on any other host; it needs no datapath and no root), or let \
                 the datapath segment arbitrate (cluster.pair_arbiter = \"segment\": the \
                 survivor takes over when no one answers ARP for the VIPs; split brain while \
                 the segment itself is split), or set cluster.allow_no_failover = true to run \
                 without failover",
            ));
        }
        if c.witness {
            // Only the lowest id commits the `[[farm]]` tables when the cluster is created
            // (docs/design.md#bootstrap); a witness has none to commit.
            if members.iter().map(|(id, _)| *id).min() == Some(node_id) && members.len() > 1 {
                return Err(ConfigError::invalid(
                    "node.id",
                    format!(
                        "{node_id} is the lowest id in cluster.members, and the lowest id \
                         creates the cluster with its farms; a witness has none: give the \
                         witness a higher id than every load-balancer node"
                    ),
                ));
            }
        }
        if members.iter().any(|(id, _)| *id != node_id) && c.token_file.is_none() {
            return Err(ConfigError::invalid(
                "cluster.token_file",
                "is required when cluster.members lists other nodes (every peer call is authenticated)",
            ));
        }
        if !(1..=1000).contains(&c.heartbeat_ms) {
            return Err(ConfigError::invalid(
                "cluster.heartbeat_ms",
                format!("{} must be between 1 and 1000", c.heartbeat_ms),
            ));
        }
        // A list in TOML; a fixed-size array would let serde drop a third value silently.
        let &[min, max] = c.election_timeout_ms.as_slice() else {
            return Err(ConfigError::invalid(
                "cluster.election_timeout_ms",
                format!(
                    "must be exactly two values [min, max], not {}",
                    c.election_timeout_ms.len()
                ),
            ));
        };
        if min <= c.heartbeat_ms || max <= min || max > 60_000 {
            return Err(ConfigError::invalid(
                "cluster.election_timeout_ms",
                format!(
                    "[{min}, {max}] must satisfy heartbeat_ms ({}) < min < max ≤ 60000",
                    c.heartbeat_ms
                ),
            ));
        }
        // docs/design.md#vip-ownership: the old owner's lease must end before any voter can
        // grant a vote (openraft's leader lease, the election timeout max), and last several
        // real heartbeats so that one late heartbeat does not drop ownership.
        let (shortest, longest) = cluster::lease_bounds(
            Duration::from_millis(c.heartbeat_ms),
            Duration::from_millis(max),
        );
        let lease = Duration::from_millis(c.lease_ms);
        if lease < shortest {
            return Err(ConfigError::invalid(
                "cluster.lease_ms",
                format!(
                    "{} is below 3 real heartbeat intervals ({} ms: openraft sends one every \
                     1.5 × heartbeat_ms = {} ms); one late heartbeat would drop ownership",
                    c.lease_ms,
                    shortest.as_millis(),
                    cluster::real_heartbeat(Duration::from_millis(c.heartbeat_ms)).as_millis()
                ),
            ));
        }
        if lease > longest {
            return Err(ConfigError::invalid(
                "cluster.lease_ms",
                format!(
                    "{} must be at most election_timeout_ms max ({max}) less {} ms = {} ms: \
                     a voter may grant a vote that soon after the owner's last heartbeat",
                    c.lease_ms,
                    cluster::LEASE_MARGIN.as_millis(),
                    longest.as_millis()
                ),
            ));
        }
        if !(5..=1000).contains(&c.persistence_batch_ms) {
            return Err(ConfigError::invalid(
                "cluster.persistence_batch_ms",
                format!(
                    "{} must be between 5 and 1000 (a batch per few tens of ms is the point)",
                    c.persistence_batch_ms
                ),
            ));
        }
        if !(1..=1 << 26).contains(&c.persistence_max_entries) {
            return Err(ConfigError::invalid(
                "cluster.persistence_max_entries",
                format!(
                    "{} must be between 1 and 67108864",
                    c.persistence_max_entries
                ),
            ));
        }
        Ok(ClusterConfig {
            listen,
            advertise,
            members,
            token_file: c.token_file.clone(),
            heartbeat: Duration::from_millis(c.heartbeat_ms),
            election_timeout: (Duration::from_millis(min), Duration::from_millis(max)),
            lease: Duration::from_millis(c.lease_ms),
            witness: c.witness,
            segment,
            allow_no_failover: c.allow_no_failover,
            tls: super::tls::peer_tls(c)?,
            shared: cluster::SharedSettings {
                persistence_batch: Duration::from_millis(c.persistence_batch_ms),
                persistence_max_entries: c.persistence_max_entries,
            },
            peer_limits: listener_limits(
                "cluster.max_connections",
                c.max_connections,
                self.idle_timeout()?,
            )?,
        })
    }

    fn validate_datapath(&self) -> Result<DatapathSettings> {
        let d = &self.datapath;
        if d.interface.is_empty() || d.interface.len() > 15 || d.interface.contains('/') {
            return Err(ConfigError::invalid(
                "datapath.interface",
                format!(
                    "{:?} is not an interface name (1-15 characters)",
                    d.interface
                ),
            ));
        }
        if d.workers > 256 {
            return Err(ConfigError::invalid(
                "datapath.workers",
                "must be at most 256",
            ));
        }
        let io = datapath::IoMode::parse(&d.io).ok_or_else(|| {
            ConfigError::invalid(
                "datapath.io",
                format!("{:?} must be \"auto\", \"af_packet\" or \"af_xdp\"", d.io),
            )
        })?;
        let fast_path = datapath::FastPathMode::parse(&d.fast_path).ok_or_else(|| {
            ConfigError::invalid(
                "datapath.fast_path",
                format!("{:?} must be \"auto\", \"on\" or \"off\"", d.fast_path),
            )
        })?;
        // The fast path sits at tc ingress, behind XDP: with AF_XDP it would see nothing.
        if fast_path == datapath::FastPathMode::On && io == datapath::IoMode::AfXdp {
            return Err(ConfigError::invalid(
                "datapath.fast_path",
                "\"on\" needs io = \"af_packet\" or \"auto\" (AF_XDP takes the frames before tc)",
            ));
        }
        if d.garp_count == 0 || d.garp_count > 100 {
            return Err(ConfigError::invalid("datapath.garp_count", "must be 1-100"));
        }
        if d.garp_interval_ms == 0 || d.garp_interval_ms > 10_000 {
            return Err(ConfigError::invalid(
                "datapath.garp_interval_ms",
                "must be 1-10000",
            ));
        }
        let garp_refresh = duration_or_zero("datapath.garp_refresh", &d.garp_refresh)?;
        // Below a second it only adds traffic (fast re-announcing is the burst's job);
        // past an hour it outlasts the ARP caches and switch MAC tables it is meant to keep
        // warm (they age in minutes), so it would keep nothing.
        if !garp_refresh.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&garp_refresh)
        {
            return Err(ConfigError::invalid(
                "datapath.garp_refresh",
                format!(
                    "{:?} must be \"0s\" (off) or from \"1s\" to \"1h\"",
                    d.garp_refresh
                ),
            ));
        }
        // The datapath's own limit, so check-config refuses what `run` would refuse after
        // becoming leader (a node never starts half-configured).
        if !(8..=datapath::MAX_RING_SLOTS).contains(&d.ring_slots)
            || !d.ring_slots.is_power_of_two()
        {
            return Err(ConfigError::invalid(
                "datapath.ring_slots",
                format!(
                    "{} must be a power of two from 8 to {}",
                    d.ring_slots,
                    datapath::MAX_RING_SLOTS
                ),
            ));
        }
        if !(1024..=16_777_216).contains(&d.flow_capacity) {
            return Err(ConfigError::invalid(
                "datapath.flow_capacity",
                "must be 1024-16777216",
            ));
        }
        let flow_idle = duration_in(
            "datapath.flow_idle",
            &d.flow_idle,
            bounds::FLOW_IDLE.0,
            bounds::FLOW_IDLE.1,
            "from \"1s\" to \"1day\"",
        )?;
        let tcp_strict_grace = match &d.tcp_strict_grace {
            None => flow_idle,
            Some(g) => duration_in(
                "datapath.tcp_strict_grace",
                g,
                Duration::ZERO,
                bounds::FLOW_IDLE.1,
                "from \"0s\" to \"1day\"",
            )?,
        };
        if d.maglev_table_size.is_some() {
            return Err(ConfigError::invalid(
                "datapath.maglev_table_size",
                "is a farm setting now: set `maglev_table_size` in a [[farm]] (absent: \
                 chosen from its backends when the farm is created, docs/design.md#scale)",
            ));
        }
        Ok(DatapathSettings {
            interface: d.interface.clone(),
            workers: d.workers,
            io,
            fast_path,
            garp_count: d.garp_count,
            garp_interval: Duration::from_millis(d.garp_interval_ms),
            garp_refresh: (!garp_refresh.is_zero()).then_some(garp_refresh),
            ring_slots: d.ring_slots,
            flow_capacity: d.flow_capacity,
            flow_idle,
            tcp_strict_grace,
        })
    }
}

/// A VIP on any member's address would be claimed by two hosts; a backend on this node's
/// own address would have it forward to itself (docs/design.md#packet-walk). A backend may
/// share another member's address: a witness may run on a backend's host.
fn nodes_are_not_farm_addresses(
    node_id: u64,
    cluster: &ClusterConfig,
    farms: &[Farm],
) -> Result<()> {
    let v4 = |a: SocketAddr| Some(a.ip()).filter(|ip| !ip.is_unspecified());
    let mut nodes: Vec<(String, IpAddr, bool)> = cluster
        .members
        .iter()
        .filter_map(|(id, a)| v4(*a).map(|ip| (format!("node {id}"), ip, *id == node_id)))
        .collect();
    for (what, a) in [
        ("cluster.listen", cluster.listen),
        ("cluster.advertise", cluster.advertise),
    ] {
        if let Some(ip) = v4(a) {
            nodes.push((what.to_string(), ip, true));
        }
    }
    let node_of = |ip: IpAddr, own_only: bool| {
        nodes
            .iter()
            .find(|(_, n, own)| *n == ip && (*own || !own_only))
            .map(|(w, _, _)| w.clone())
    };
    for (i, farm) in farms.iter().enumerate() {
        let keys = Keys::File { index: i };
        if let Some(who) = node_of(farm.vip, false) {
            return Err(ConfigError::invalid(
                keys.farm(&farm.name, "vip"),
                format!("{} is the address of {who}", farm.vip),
            ));
        }
        for (j, b) in farm.backends.iter().enumerate() {
            if let Some(who) = node_of(b.ip, true) {
                return Err(ConfigError::invalid(
                    keys.backend(&farm.name, j, &b.name, "ip"),
                    format!("{} is the address of {who}", b.ip),
                ));
            }
        }
    }
    Ok(())
}

/// Checks a list of `[[farm]]` tables (a node config's or an `apply` file's): each farm,
/// unique names, no two farms on a common port of one VIP and protocol.
pub fn validate_farms(raw: &[RawFarm]) -> Result<Vec<Farm>> {
    let mut farms: Vec<Farm> = Vec::with_capacity(raw.len());
    let mut names = HashSet::new();
    for (i, raw) in raw.iter().enumerate() {
        let farm = validate_farm(Keys::File { index: i }, raw)?;
        if !names.insert(farm.name.clone()) {
            return Err(ConfigError::invalid(
                format!("farm[{i}].name"),
                format!("{:?} is used by another farm", farm.name),
            ));
        }
        if let Some(other) = farms.iter().find(|f| f.overlaps(&farm)) {
            return Err(ConfigError::invalid(
                format!("farm[{}].port", farm.name),
                format!(
                    "ports {}-{} overlap farm {:?} on the same VIP and protocol",
                    farm.port_first, farm.port_last, other.name
                ),
            ));
        }
        farms.push(farm);
    }
    Ok(farms)
}

/// How error keys are spelled. A config file names farms and backends by name (by position
/// until the name itself is known good): `farm[web].backend[b1].ip`. An API request holds one
/// farm, so its keys are paths into the request by position: `farm.backend[1].ip`. One
/// validator serves both, so the file and the API accept exactly the same farms.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// A `[[farm]]` table of a file, at this position among the farms.
    File { index: usize },
    /// The `farm` field of an API request.
    Api,
}

impl Keys {
    /// The key of `field` of farm `name`.
    pub fn farm(self, name: &str, field: &str) -> String {
        match self {
            Keys::File { index } if field == "name" => format!("farm[{index}].name"),
            Keys::File { .. } => format!("farm[{name}].{field}"),
            // The API has one `ports` field for both spellings.
            Keys::Api if field == "port" => "farm.ports".into(),
            Keys::Api => format!("farm.{field}"),
        }
    }

    /// The key of `field` of backend `name`, at `index` in farm `farm`.
    pub fn backend(self, farm: &str, index: usize, name: &str, field: &str) -> String {
        match self {
            Keys::File { .. } if field == "name" => format!("farm[{farm}].backend[{index}].name"),
            Keys::File { .. } => format!("farm[{farm}].backend[{name}].{field}"),
            Keys::Api => format!("farm.backend[{index}].{field}"),
        }
    }
}

/// Checks one farm and builds it in its replicated form; `keys` decides how the error names
/// the field at fault.
pub fn validate_farm(keys: Keys, raw: &RawFarm) -> Result<Farm> {
    check_name(&keys.farm(&raw.name, "name"), &raw.name)?;
    let k = |field: &str| keys.farm(&raw.name, field);
    let vip = vip_address(&k("vip"), &raw.vip)?;
    let ports = match (raw.port, &raw.ports) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                k("ports"),
                "give either `port` or `ports`, not both",
            ));
        }
        (None, None) => return Err(ConfigError::invalid(k("port"), "is required (or `ports`)")),
        (Some(0), None) => return Err(ConfigError::invalid(k("port"), "must be 1-65535")),
        (Some(p), None) => p..=p,
        (None, Some(range)) => parse_port_range(&k("ports"), range)?,
    };
    let protocol = Protocol::from_name(&raw.protocol).ok_or_else(|| {
        ConfigError::invalid(
            k("protocol"),
            format!("{:?} is not tcp or udp", raw.protocol),
        )
    })?;
    let scheduler = match raw.scheduler.as_deref() {
        None => Scheduler::Maglev,
        Some(name) => Scheduler::from_name(name).ok_or_else(|| {
            ConfigError::invalid(
                k("scheduler"),
                format!("{name:?} is not a known scheduler (maglev, srchash, wrr, rr)"),
            )
        })?,
    };
    let ttl = match &raw.persistence_ttl {
        Some(t) => duration_in(
            &k("persistence_ttl"),
            t,
            bounds::PERSISTENCE_TTL.0,
            bounds::PERSISTENCE_TTL.1,
            "from \"1s\" to \"365d\"",
        )?,
        None => Duration::from_secs(60),
    };
    let persistence = match raw.persistence.as_deref().unwrap_or("none") {
        "none" => Persistence::None,
        "srcip" => Persistence::SrcIp { ttl },
        other => {
            return Err(ConfigError::invalid(
                k("persistence"),
                format!("{other:?} is not none or srcip"),
            ));
        }
    };
    let check = match &raw.check {
        None => None,
        Some(c) => validate_check(&k("check"), c, protocol)?,
    };
    let mut farm = Farm {
        name: raw.name.clone(),
        vip,
        port_first: *ports.start(),
        port_last: *ports.end(),
        protocol,
        scheduler,
        persistence,
        check,
        backends: Vec::with_capacity(raw.backend.len()),
        limits: super::limits::validate_limits(&k, raw)?,
        maglev_table_size: match raw.maglev_table_size {
            Some(n) if MAGLEV_SIZES.contains(&n) && datapath::is_prime(n as usize) => n,
            Some(n) => {
                return Err(ConfigError::invalid(
                    k("maglev_table_size"),
                    format!(
                        "{n} must be a prime from {} to {}",
                        MAGLEV_SIZES.start(),
                        MAGLEV_SIZES.end()
                    ),
                ));
            }
            None => default_maglev_size(raw.backend.len()),
        },
    };
    for (i, b) in raw.backend.iter().enumerate() {
        farm.backends.push(validate_backend(keys, &raw.name, i, b)?);
        backend_fits(keys, &farm, i)?;
    }
    Ok(farm)
}

/// Maglev table sizes a farm may have (primes among them): from the default floor, where
/// shares stay within a point of the weights, to 2^20.
pub const MAGLEV_SIZES: std::ops::RangeInclusive<u32> = 251..=1_048_573;

/// A new farm's Maglev table size: the smallest prime ≥ 100 × its backends, at least 251.
pub fn default_maglev_size(backends: usize) -> u32 {
    datapath::maglev_default_size(backends).min(*MAGLEV_SIZES.end() as usize) as u32
}

/// A farm written over `current` keeps `current`'s Maglev table size unless its source
/// (`asked`) gives one: the size is chosen once, and changing it moves flows.
pub fn keep_maglev_size(
    keys: Keys,
    farm: &mut Farm,
    asked: Option<u32>,
    current: Option<&Farm>,
) -> Result<()> {
    if let (None, Some(c)) = (asked, current) {
        farm.maglev_table_size = c.maglev_table_size;
    }
    check_backends(keys, farm)
}

/// Checks a farm's backends among each other and against its VIP, as [`validate_farm`]
/// does, for backends that are valid one by one but were put together elsewhere: an API
/// update that keeps a farm's replicated backends, adds one or changes one.
pub fn check_backends(keys: Keys, farm: &Farm) -> Result<()> {
    (0..farm.backends.len()).try_for_each(|i| backend_fits(keys, farm, i))
}

/// Whether backend `index` of `farm` differs from the backends before it (name and address)
/// and from the farm's VIP.
fn backend_fits(keys: Keys, farm: &Farm, index: usize) -> Result<()> {
    if index + 1 > farm.maglev_table_size as usize {
        return Err(ConfigError::invalid(
            keys.farm(&farm.name, "maglev_table_size"),
            format!(
                "{} slots cannot hold {} backends: set a larger prime (it moves flows)",
                farm.maglev_table_size,
                index + 1
            ),
        ));
    }
    let backend = &farm.backends[index];
    let earlier = &farm.backends[..index];
    let bk = |field: &str| keys.backend(&farm.name, index, &backend.name, field);
    if earlier.iter().any(|o| o.name == backend.name) {
        return Err(ConfigError::invalid(
            bk("name"),
            format!("{:?} is used by another backend of this farm", backend.name),
        ));
    }
    if earlier.iter().any(|o| o.ip == backend.ip) {
        return Err(ConfigError::invalid(
            bk("ip"),
            format!("{} is used by another backend of this farm", backend.ip),
        ));
    }
    if backend.ip == farm.vip {
        return Err(ConfigError::invalid(
            bk("ip"),
            "must not equal the farm's VIP",
        ));
    }
    // DSR hands the client's datagram to the backend unchanged, so a farm is one family.
    if backend.ip.is_ipv4() != farm.vip.is_ipv4() {
        return Err(ConfigError::invalid(
            bk("ip"),
            format!(
                "{} is {} but the farm's VIP {} is {}: a farm's backends are of its VIP's \
                 family (make a second farm for the other family)",
                backend.ip,
                family(backend.ip),
                farm.vip,
                family(farm.vip)
            ),
        ));
    }
    Ok(())
}

fn parse_port_range(key: &str, range: &str) -> Result<RangeInclusive<u16>> {
    let bad = || {
        ConfigError::invalid(
            key,
            format!("{range:?} is not a port range \"a-b\" with 1 ≤ a ≤ b ≤ 65535"),
        )
    };
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

fn validate_check(key: &str, c: &RawCheck, protocol: Protocol) -> Result<Option<HealthCheck>> {
    let field = |f: &str| format!("{key}.{f}");
    // Keys that belong to other kinds are refused rather than ignored: a `path` on a tcp
    // check is a typo for an http check, and silently probing something else hides it.
    let given: [(&str, bool); 11] = [
        ("path", c.path.is_some()),
        ("host", c.host.is_some()),
        ("expect_status", c.expect_status.is_some()),
        ("expect_body", c.expect_body.is_some()),
        ("ca_file", c.ca_file.is_some()),
        ("send", c.send.is_some()),
        ("expect", c.expect.is_some()),
        ("program", c.program.is_some()),
        ("args", c.args.is_some()),
        ("port", c.port.is_some()),
        ("via_vip", c.via_vip.is_some()),
    ];
    let allowed: &[&str] = match c.kind.as_str() {
        "none" => &[],
        "tcp" => &["port", "via_vip"],
        "http" => &[
            "port",
            "path",
            "host",
            "expect_status",
            "expect_body",
            "via_vip",
        ],
        "https" => &[
            "port",
            "path",
            "host",
            "expect_status",
            "expect_body",
            "ca_file",
            "via_vip",
        ],
        "udp" => &["port", "send", "expect", "via_vip"],
        "exec" => &["port", "program", "args"],
        other => {
            return Err(ConfigError::invalid(
                field("type"),
                format!("{other:?} is not tcp, http, https, udp, exec or none"),
            ));
        }
    };
    if let Some((name, _)) = given.iter().find(|(n, set)| *set && !allowed.contains(n)) {
        return Err(ConfigError::invalid(
            field(name),
            format!("does not apply to a check of type {:?}", c.kind),
        ));
    }
    if c.kind == "none" {
        return Ok(None);
    }
    let interval = duration_in(
        &field("interval"),
        &c.interval,
        bounds::CHECK_INTERVAL.0,
        bounds::CHECK_INTERVAL.1,
        "from \"100ms\" to \"1h\"",
    )?;
    let timeout = duration_in(
        &field("timeout"),
        &c.timeout,
        bounds::CHECK_TIMEOUT_MIN,
        bounds::CHECK_INTERVAL.1,
        "from \"10ms\" to the interval",
    )?;
    if timeout > interval {
        return Err(ConfigError::invalid(
            field("timeout"),
            "must not exceed the interval",
        ));
    }
    for (name, v) in [("rise", c.rise), ("fall", c.fall)] {
        if !(1..=100).contains(&v) {
            return Err(ConfigError::invalid(field(name), "must be 1-100"));
        }
    }
    if c.port == Some(0) {
        return Err(ConfigError::invalid(field("port"), "must be 1-65535"));
    }
    // The farm's port speaks the farm's protocol: probing it with the other one tests
    // nothing the clients use, so a probe of the other protocol must say where it goes.
    let probe_protocol = match c.kind.as_str() {
        "udp" => Some(Protocol::Udp),
        "exec" => None,
        _ => Some(Protocol::Tcp),
    };
    if let Some(p) = probe_protocol
        && p != protocol
        && c.port.is_none()
    {
        return Err(ConfigError::invalid(
            field("port"),
            format!(
                "is required: a {} check of a {} farm needs the port to probe (or type = {:?})",
                c.kind,
                protocol.as_str(),
                protocol.as_str()
            ),
        ));
    }
    let kind = match c.kind.as_str() {
        "tcp" => CheckKind::Tcp,
        "http" | "https" => {
            let path = c.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|ch| ch.is_control() || ch == ' ') {
                return Err(ConfigError::invalid(
                    field("path"),
                    format!("{path:?} must start with / and hold no spaces or control characters"),
                ));
            }
            if let Some(h) = &c.host
                && (h.is_empty() || h.chars().any(|ch| ch.is_control() || ch == ' '))
            {
                return Err(ConfigError::invalid(
                    field("host"),
                    format!("{h:?} is not a host name"),
                ));
            }
            let status = match &c.expect_status {
                None => (200, 399),
                Some(s) => parse_status_range(&field("expect_status"), s)?,
            };
            if let Some(ca) = &c.ca_file {
                super::tls::read_certs(&field("ca_file"), ca)?;
            }
            CheckKind::Http(HttpCheck {
                tls: c.kind == "https",
                path,
                host: c.host.clone(),
                status,
                body: c.expect_body.clone().filter(|b| !b.is_empty()),
                ca_file: c.ca_file.clone(),
            })
        }
        "udp" => CheckKind::Udp {
            send: c.send.clone().unwrap_or_default().into_bytes(),
            expect: c.expect.clone().unwrap_or_default().into_bytes(),
        },
        "exec" => {
            let program = c.program.clone().ok_or_else(|| {
                ConfigError::invalid(field("program"), "is required for a check of type \"exec\"")
            })?;
            if !program.starts_with('/') {
                return Err(ConfigError::invalid(
                    field("program"),
                    format!("{program:?} must be an absolute path (it is run without a shell)"),
                ));
            }
            CheckKind::Exec {
                program,
                args: c.args.clone().unwrap_or_default(),
            }
        }
        _ => unreachable!("kinds are matched above"),
    };
    Ok(Some(HealthCheck {
        interval,
        timeout,
        rise: c.rise,
        fall: c.fall,
        kind,
        port: c.port,
        via_vip: c.via_vip,
    }))
}

/// A replicated check in the config's spelling (defaults left implicit).
fn raw_check(c: &HealthCheck) -> RawCheck {
    let mut raw = RawCheck {
        kind: c.kind.name().into(),
        interval: duration_text(c.interval),
        timeout: duration_text(c.timeout),
        rise: c.rise,
        fall: c.fall,
        port: c.port,
        via_vip: c.via_vip,
        ..RawCheck::default()
    };
    match &c.kind {
        CheckKind::Tcp => {}
        CheckKind::Http(h) => {
            raw.path = (h.path != "/").then(|| h.path.clone());
            raw.host = h.host.clone();
            raw.expect_status = (h.status != (200, 399)).then(|| match h.status {
                (a, b) if a == b => a.to_string(),
                (a, b) => format!("{a}-{b}"),
            });
            raw.expect_body = h.body.clone();
            raw.ca_file = h.ca_file.clone();
        }
        CheckKind::Udp { send, expect } => {
            raw.send = (!send.is_empty()).then(|| String::from_utf8_lossy(send).into_owned());
            raw.expect = (!expect.is_empty()).then(|| String::from_utf8_lossy(expect).into_owned());
        }
        CheckKind::Exec { program, args } => {
            raw.program = Some(program.clone());
            raw.args = (!args.is_empty()).then(|| args.clone());
        }
    }
    raw
}

/// `"200"` or `"200-399"`, codes 100-599.
fn parse_status_range(key: &str, s: &str) -> Result<(u16, u16)> {
    let bad = || {
        ConfigError::invalid(
            key,
            format!("{s:?} is not a status or a range like \"200-399\""),
        )
    };
    let (a, b) = match s.trim().split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// Checks one backend on its own; its place among the farm's others is
/// [`check_backends`]'s. The `backend_*` field checks are public so that an API update of one
/// field is judged exactly as the file's value would be.
pub fn validate_backend(keys: Keys, farm: &str, index: usize, b: &RawBackend) -> Result<Backend> {
    check_name(&keys.backend(farm, index, &b.name, "name"), &b.name)?;
    let k = |field: &str| keys.backend(farm, index, &b.name, field);
    Ok(Backend {
        name: b.name.clone(),
        ip: backend_address(&k("ip"), &b.ip)?,
        mac: b
            .mac
            .as_deref()
            .map(|m| backend_mac(&k("mac"), m))
            .transpose()?,
        weight: backend_weight(&k("weight"), b.weight.unwrap_or(1))?,
        state: backend_state(&k("state"), b.state.as_deref().unwrap_or("up"))?,
        priority: backend_priority(&k("priority"), b.priority.unwrap_or(1))?,
    })
}

/// A pinned backend MAC: a unicast address, not all zeros.
pub fn backend_mac(key: &str, value: &str) -> Result<[u8; 6]> {
    let mac: datapath::MacAddr = value
        .parse()
        .map_err(|_| ConfigError::invalid(key, format!("{value:?} is not a MAC address")))?;
    if mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
        return Err(ConfigError::invalid(
            key,
            format!("{value} is not a unicast MAC"),
        ));
    }
    Ok(mac.0)
}

/// A backend weight, 0 (no new flows) to [`MAX_WEIGHT`].
pub fn backend_weight(key: &str, weight: u32) -> Result<u32> {
    if weight > MAX_WEIGHT {
        return Err(ConfigError::invalid(
            key,
            format!("{weight} is above {MAX_WEIGHT}"),
        ));
    }
    Ok(weight)
}

/// A backend state by its name.
pub fn backend_state(key: &str, name: &str) -> Result<BackendState> {
    BackendState::from_name(name)
        .ok_or_else(|| ConfigError::invalid(key, format!("{name:?} is not up, drain or off")))
}

/// A backend's priority tier, 1-100.
pub fn backend_priority(key: &str, priority: u32) -> Result<u32> {
    if !(1..=100).contains(&priority) {
        return Err(ConfigError::invalid(key, "must be 1-100"));
    }
    Ok(priority)
}

/// A replicated farm in the config file's canonical spelling: `port` for a single port,
/// `"60s"`-style durations, every backend field written out. What export writes and reads
/// and `apply`'s diff show; [`validate_farm`] takes it back to the same farm, which is what
/// makes `apply` of an export a no-op.
impl From<&Farm> for RawFarm {
    fn from(f: &Farm) -> RawFarm {
        let (port, ports) = if f.port_first == f.port_last {
            (Some(f.port_first), None)
        } else {
            (None, Some(format!("{}-{}", f.port_first, f.port_last)))
        };
        let (persistence, persistence_ttl) = match f.persistence {
            Persistence::None => (None, None),
            Persistence::SrcIp { ttl } => (Some("srcip".to_string()), Some(duration_text(ttl))),
        };
        let mut raw = RawFarm {
            name: f.name.clone(),
            vip: f.vip.to_string(),
            port,
            ports,
            protocol: f.protocol.as_str().into(),
            // The default stays implicit, so an export of a farm that never chose one
            // round-trips to the same text.
            scheduler: (f.scheduler != Scheduler::Maglev).then(|| f.scheduler.name().to_string()),
            persistence,
            persistence_ttl,
            check: f.check.as_ref().map(raw_check),
            backend: f
                .backends
                .iter()
                .map(|b| RawBackend {
                    name: b.name.clone(),
                    ip: b.ip.to_string(),
                    mac: b.mac.map(|m| datapath::MacAddr(m).to_string()),
                    weight: Some(b.weight),
                    state: Some(b.state.as_str().into()),
                    priority: Some(b.priority),
                })
                .collect(),
            // Written when it is not what the farm's backends would get by default, so an
            // export re-applied to a new cluster builds the same tables.
            maglev_table_size: (f.maglev_table_size != default_maglev_size(f.backends.len()))
                .then_some(f.maglev_table_size),
            ..RawFarm::default()
        };
        super::limits::write_limits(&f.limits, &mut raw);
        raw
    }
}

/// A duration as the config file writes it: whole seconds or milliseconds.
fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// A farm that uses every key, for the round-trip tests here and in the admin API's
/// wire conversions.
/// `[cluster] pair_arbiter` and its probe keys (docs/design.md#pair-segment).
fn pair_arbiter(
    c: &super::raw::RawCluster,
    members: &[(u64, SocketAddr)],
) -> Result<Option<SegmentArbiter>> {
    match c.pair_arbiter.as_str() {
        "none" => return Ok(None),
        "segment" => {}
        other => {
            return Err(ConfigError::invalid(
                "cluster.pair_arbiter",
                format!("{other:?} is not \"none\" or \"segment\""),
            ));
        }
    }
    if members.len() != 2 {
        return Err(ConfigError::invalid(
            "cluster.pair_arbiter",
            format!(
                "\"segment\" arbitrates a pair: cluster.members must list exactly two nodes \
                 (it lists {}); a cluster of three or more has a quorum after any one loss",
                members.len()
            ),
        ));
    }
    if c.witness {
        return Err(ConfigError::invalid(
            "cluster.pair_arbiter",
            "\"segment\" is for two load balancers; a witness never owns a VIP (set witness = false)",
        ));
    }
    if !(10..=1000).contains(&c.segment_probe_interval_ms) {
        return Err(ConfigError::invalid(
            "cluster.segment_probe_interval_ms",
            format!(
                "{} must be between 10 and 1000",
                c.segment_probe_interval_ms
            ),
        ));
    }
    if !(1..=20).contains(&c.segment_probe_count) {
        return Err(ConfigError::invalid(
            "cluster.segment_probe_count",
            format!("{} must be between 1 and 20", c.segment_probe_count),
        ));
    }
    Ok(Some(SegmentArbiter {
        probe_interval: Duration::from_millis(c.segment_probe_interval_ms),
        probe_count: c.segment_probe_count,
    }))
}

#[cfg(test)]
pub(crate) const SAMPLE_FARM: &str = r#"
            [[farm]]
            name = "web"
            vip = "198.18.0.100"
            ports = "8000-8010"
            protocol = "udp"
            persistence = "srcip"
            persistence_ttl = "1500ms"
            new_rate_limit = 20
            new_rate_limit_burst = 40
            new_rate_limit_farm = 5000
            max_flows = 1000
            tcp_strict = true
            [farm.check]
            type = "udp"
            interval = "1s"
            timeout = "300ms"
            send = "ping"
            [[farm.backend]]
            name = "b1"
            ip = "198.18.0.21"
            mac = "02:00:00:00:00:21"
            weight = 0
            state = "drain"
            priority = 2
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_farm_is_its_replicated_farm_field_by_field() {
        let c = crate::config::parse(
            r#"
            [node]
            id = 1
            [admin]
            token_file = "/etc/dsrlb/admin.token"
            [[farm]]
            name = "web"
            vip = "198.18.0.100"
            ports = "8000-8010"
            protocol = "udp"
            persistence = "srcip"
            persistence_ttl = "90s"
            [farm.check]
            type = "udp"
            interval = "1s"
            timeout = "300ms"
            send = "ping"
            [[farm.backend]]
            name = "b1"
            ip = "198.18.0.21"
            mac = "02:00:00:00:00:21"
            weight = 5
            state = "drain"
            priority = 2
            "#,
        )
        .unwrap();
        let f = &c.farms[0];
        assert_eq!((f.port_first, f.port_last), (8000, 8010));
        assert_eq!(f.protocol, Protocol::Udp);
        assert_eq!(
            f.persistence,
            Persistence::SrcIp {
                ttl: Duration::from_secs(90)
            }
        );
        assert_eq!(f.check.as_ref().unwrap().timeout.as_millis(), 300);
        let b = &f.backends[0];
        assert_eq!(b.mac, Some([2, 0, 0, 0, 0, 0x21]));
        assert_eq!((b.weight, b.priority), (5, 2));
        assert_eq!(b.state, BackendState::Drain);
    }

    #[test]
    fn every_check_type_validates_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["b1".into()]).unwrap();
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let checks = [
            ("tcp", "port = 8080\n".to_string()),
            (
                "http",
                "path = \"/health\"\nhost = \"www.example\"\nexpect_status = \"200\"\n\
                 expect_body = \"ok\"\n"
                    .to_string(),
            ),
            (
                "https",
                format!("ca_file = {:?}\n", ca.display().to_string()),
            ),
            ("https", String::new()),
            (
                "udp",
                "port = 53\nsend = \"ping\"\nexpect = \"pong\"\n".to_string(),
            ),
            (
                "exec",
                "program = \"/usr/local/bin/check\"\nargs = [\"-v\", \"x\"]\n".to_string(),
            ),
        ];
        for (kind, extra) in checks {
            let text = format!(
                "[[farm]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\n\
                 protocol = \"tcp\"\n[farm.check]\ntype = {kind:?}\n{extra}"
            );
            let raw: super::super::RawFarms = toml::from_str(&text).unwrap();
            let farm = validate_farm(Keys::Api, &raw.farm[0])
                .unwrap_or_else(|e| panic!("{kind}: {e}\n{text}"));
            let check = farm.check.as_ref().unwrap();
            assert_eq!(check.kind.name(), kind);
            let back = validate_farm(Keys::Api, &RawFarm::from(&farm)).unwrap();
            assert_eq!(back, farm, "{kind} round trip");
        }
        let raw: super::super::RawFarms = toml::from_str(
            "[[farm]]\nname = \"web\"\nvip = \"198.18.0.100\"\nport = 80\nprotocol = \"tcp\"\n\
             [farm.check]\ntype = \"http\"\nexpect_status = \"200-204\"\nexpect_body = \"ok\"\n",
        )
        .unwrap();
        let farm = validate_farm(Keys::Api, &raw.farm[0]).unwrap();
        let CheckKind::Http(h) = &farm.check.as_ref().unwrap().kind else {
            panic!("an http check")
        };
        assert_eq!(
            (h.status, h.body.as_deref(), h.path.as_str()),
            ((200, 204), Some("ok"), "/")
        );
        assert!(!h.tls);
    }

    #[test]
    fn the_canonical_spelling_validates_back_to_the_same_farm() {
        let raw: super::super::RawFarms = toml::from_str(SAMPLE_FARM).unwrap();
        let farm = validate_farm(Keys::Api, &raw.farm[0]).unwrap();
        let back = validate_farm(Keys::Api, &RawFarm::from(&farm)).unwrap();
        assert_eq!(back, farm);
        // A chosen scheduler survives the round trip; the default stays unwritten.
        assert_eq!(RawFarm::from(&farm).scheduler, None);
        let mut raw = raw.farm[0].clone();
        raw.scheduler = Some("srchash".into());
        let farm = validate_farm(Keys::Api, &raw).unwrap();
        assert_eq!(farm.scheduler, Scheduler::SrcHash);
        let back = validate_farm(Keys::Api, &RawFarm::from(&farm)).unwrap();
        assert_eq!(back, farm);
    }
}
