//! The TOML schema as written by operators, one struct per table. Defaults live here so that
//! the file documents itself; meaning and checks live in `validate`.

use serde::{Deserialize, Serialize};

/// The whole node config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// `[node]`: who this node is and where it keeps state.
    pub node: RawNode,
    /// `[cluster]`: peers and Raft timing.
    pub cluster: RawCluster,
    /// `[admin]`: the admin gRPC listener.
    pub admin: RawAdmin,
    /// `[datapath]`: the interface and the packet workers.
    pub datapath: RawDatapath,
    /// `[metrics]`: the Prometheus listener.
    pub metrics: RawMetrics,
    /// `[[farm]]`: farms applied when the node bootstraps.
    pub farm: Vec<RawFarm>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawNode {
    /// This node's id, unique in the cluster, ≥ 1. Required.
    pub id: Option<u64>,
    /// Directory for durable state (Raft log, snapshots).
    pub data_dir: String,
    /// A connection to the peer, admin or metrics port that sends nothing for this long is
    /// closed (peers ping every 5 s, so only a stuck or idle client is).
    pub idle_timeout: String,
}

impl Default for RawNode {
    fn default() -> Self {
        RawNode {
            id: None,
            data_dir: "/var/lib/dsrlb".into(),
            idle_timeout: "60s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCluster {
    /// Address the peer gRPC service listens on.
    pub listen: String,
    /// Address peers use to reach this node (defaults to `listen`).
    pub advertise: Option<String>,
    /// All voters as `"id=host:port"`; empty means a cluster of one.
    pub members: Vec<String>,
    /// File holding the shared cluster token.
    pub token_file: Option<String>,
    /// Leader heartbeat period.
    pub heartbeat_ms: u64,
    /// Election timeout range `[min, max]`.
    pub election_timeout_ms: Vec<u64>,
    /// How long after the last quorum ack the leader may still own VIPs.
    pub lease_ms: u64,
    /// A witness votes but never owns a VIP (`dsrlb witness` runs one without a datapath).
    pub witness: bool,
    /// Who may grant VIP ownership besides a Raft quorum: `"none"` (only the quorum) or
    /// `"segment"` (a two-node cluster whose survivor takes over when the peer is silent on
    /// the control plane and no one answers ARP for the VIPs on the datapath segment).
    pub pair_arbiter: String,
    /// `pair_arbiter = "segment"`: time between two ARP probe rounds for the VIPs.
    pub segment_probe_interval_ms: u64,
    /// `pair_arbiter = "segment"`: unanswered probe rounds before the survivor takes over.
    pub segment_probe_count: u32,
    /// Accept a cluster in which one failure leaves no majority (two voters, no witness):
    /// it then never fails over. For a maintenance window, not for production.
    pub allow_no_failover: bool,
    /// PEM certificate (chain) of this node for the peer service; with `tls_key` and
    /// `tls_ca` it turns on mutual TLS between peers. Needs an IP SAN of `advertise`.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM CA every peer's certificate must chain to (both directions).
    pub tls_ca: Option<String>,
    /// How often the leader commits new and refreshed persistence entries (bootstrap value:
    /// the bootstrapping node writes it into the log, which rules afterwards).
    pub persistence_batch_ms: u64,
    /// Persistence entries per farm beyond which new clients get none (bootstrap value).
    pub persistence_max_entries: u64,
    /// Open connections the peer port admits at once (a quarter of them from one address).
    pub max_connections: usize,
}

impl Default for RawCluster {
    fn default() -> Self {
        RawCluster {
            listen: "0.0.0.0:7100".into(),
            advertise: None,
            members: Vec::new(),
            token_file: None,
            heartbeat_ms: 15,
            election_timeout_ms: vec![100, 120],
            lease_ms: 80,
            witness: false,
            pair_arbiter: "none".into(),
            segment_probe_interval_ms: 50,
            segment_probe_count: 3,
            allow_no_failover: false,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            persistence_batch_ms: 50,
            max_connections: 64,
            persistence_max_entries: 1 << 20,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Address the admin gRPC service listens on.
    pub listen: String,
    /// File holding the admin bearer token.
    pub token_file: Option<String>,
    /// PEM certificate (chain) of the admin listener; with `tls_key` the listener serves
    /// TLS only. Needs an IP SAN of every address clients and other nodes dial.
    pub tls_cert: Option<String>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<String>,
    /// PEM CA this node trusts when it calls another node's admin service (Stats).
    pub tls_ca: Option<String>,
    /// PEM CA admin clients' certificates must chain to; set: client certificates required.
    pub tls_client_ca: Option<String>,
    /// Open connections the admin port admits at once (a quarter of them from one address).
    pub max_connections: usize,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "0.0.0.0:7101".into(),
            token_file: None,
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_client_ca: None,
            max_connections: 64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawDatapath {
    /// The L2 interface that carries VIP traffic (client side and backends: one segment).
    pub interface: String,
    /// Packet worker threads; 0 = one per CPU.
    pub workers: usize,
    /// The I/O backend: "auto" (AF_XDP where the interface takes native XDP, else
    /// AF_PACKET), "af_packet" or "af_xdp".
    pub io: String,
    /// The kernel fast path in front of the AF_PACKET workers: "auto" (where the kernel
    /// takes it), "on" (required) or "off".
    pub fast_path: String,
    /// Gratuitous ARPs sent per VIP when this node becomes the owner.
    pub garp_count: u32,
    /// Gap between those gratuitous ARPs.
    pub garp_interval_ms: u64,
    /// While owning, every VIP is announced again this often (duration string); "0s": off.
    pub garp_refresh: String,
    /// Receive ring slots per worker (each holds one frame of up to 64 KiB).
    pub ring_slots: usize,
    /// Flow table entries per worker.
    pub flow_capacity: usize,
    /// A flow unseen this long is forgotten (duration string).
    pub flow_idle: String,
    /// After this node becomes owner, `tcp_strict` farms drop nothing for this long
    /// (duration string); absent: `flow_idle`.
    pub tcp_strict_grace: Option<String>,
    /// No longer a node setting: each farm has its own `maglev_table_size`. Read only to
    /// say so, rather than "unknown field".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u64>,
}

impl Default for RawDatapath {
    fn default() -> Self {
        RawDatapath {
            interface: "eth0".into(),
            workers: 0,
            io: "auto".into(),
            fast_path: "auto".into(),
            garp_count: 3,
            garp_interval_ms: 100,
            garp_refresh: "0s".into(),
            ring_slots: 256,
            flow_capacity: 65536,
            flow_idle: "300s".into(),
            tcp_strict_grace: None,
            maglev_table_size: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawMetrics {
    /// Address of the Prometheus `/metrics` endpoint; empty disables it.
    pub listen: String,
    /// Open connections the metrics port admits at once (a quarter of them from one address).
    pub max_connections: usize,
    /// File holding a bearer token `/metrics` then requires (`/healthz` and `/readyz` stay
    /// open: probes carry no credentials).
    pub token_file: Option<String>,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: "0.0.0.0:7102".into(),
            max_connections: 16,
            token_file: None,
        }
    }
}

/// A file of `[[farm]]` tables and nothing else: what `dsrctl apply` sends and `export`
/// returns. Same farm schema as the node config.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFarms {
    /// `[[farm]]` tables.
    pub farm: Vec<RawFarm>,
}

/// One `[[farm]]` table.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawFarm {
    /// Unique farm name: letters, digits, `-`, `_`, `.`; 1–63 characters.
    pub name: String,
    /// The virtual IPv4 address.
    pub vip: String,
    /// The virtual (= backend) port; or use `ports`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A port range `"a-b"`, instead of `port`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<String>,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `maglev` (default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler: Option<String>,
    /// `none` (default) or `srcip`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<String>,
    /// Lifetime of a persistence entry (duration string, default `60s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence_ttl: Option<String>,
    /// New flows per second per source address (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_rate_limit: Option<u32>,
    /// Burst of `new_rate_limit` (default: one second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_rate_limit_burst: Option<u32>,
    /// New flows per second of the whole farm (absent: no limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_rate_limit_farm: Option<u32>,
    /// Burst of `new_rate_limit_farm` (default: one second's worth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_rate_limit_farm_burst: Option<u32>,
    /// Established flows per backend on the owner beyond which it takes no new flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    /// Drop TCP packets other than SYNs of flows the owner does not know (default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_strict: Option<bool>,
    /// Slots of the farm's Maglev table: a prime from 251 to 1048573, at least the number of
    /// backends. Absent: kept as it is for an existing farm; for a new farm the smallest
    /// prime ≥ 100 × its backends (at least 251).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
    /// Health check; absent means backends are always considered healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<RawCheck>,
    /// `[[farm.backend]]` tables.
    pub backend: Vec<RawBackend>,
}

/// `[farm.check]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCheck {
    /// `tcp` (connect), `http`, `https`, `udp`, `exec` or `none`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Time between checks of one backend.
    pub interval: String,
    /// How long one check may take.
    pub timeout: String,
    /// Successes in a row that bring a down backend up.
    pub rise: u32,
    /// Failures in a row that take an up backend down.
    pub fall: u32,
    /// The port probed (default: the farm's first port); required for a tcp/http(s) check
    /// of a UDP farm and a udp check of a TCP farm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// http/https: the request path (default `/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// http/https: the `Host` header and TLS server name (default: the backend's address).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// http/https: accepted status codes, `"200"` or `"200-399"` (default `"200-399"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_status: Option<String>,
    /// http/https: a substring the body must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect_body: Option<String>,
    /// https: PEM file of the CA that signs the backends' certificates (default: any
    /// certificate is accepted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// udp: the payload sent (default empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// udp: a substring the reply must contain (default: any reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// exec: absolute path of the program, run without a shell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// exec: the program's arguments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// tcp/http/https/udp: probe through the VIP on the backend (default: yes for tcp,
    /// http and https when the node can, no for udp).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via_vip: Option<bool>,
}

impl Default for RawCheck {
    fn default() -> Self {
        RawCheck {
            kind: "tcp".into(),
            interval: "2s".into(),
            timeout: "1s".into(),
            rise: 2,
            fall: 3,
            port: None,
            path: None,
            host: None,
            expect_status: None,
            expect_body: None,
            ca_file: None,
            send: None,
            expect: None,
            program: None,
            args: None,
            via_vip: None,
        }
    }
}

/// One `[[farm.backend]]` table.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBackend {
    /// Backend name, unique in its farm; same rules as farm names.
    pub name: String,
    /// The backend's IPv4 address on the datapath interface's subnet.
    pub ip: String,
    /// A pinned MAC; otherwise learned by ARP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Relative weight, 0–65535 (default 1; 0 takes no new flows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// `up` (default), `drain` or `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Backup tier: the lowest priority with a live backend serves (default 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
}
