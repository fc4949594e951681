//! What `dsrctl` shows, as serde structs: the stable JSON shape of `-o json` and the input of
//! the table renderers. The generated prost types do not derive serde, and their zeros and
//! empty strings ("none", "default") read better as `null` and the defaults they stand for.

use proto::admin::v1 as pb;
use serde::{Deserialize, Serialize};

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

fn nonempty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn or_default(s: String, default: &str) -> String {
    if s.is_empty() { default.to_owned() } else { s }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub answered_by: u64,
    pub leader: Option<u64>,
    pub vip_owner: Option<u64>,
    pub term: u64,
    pub lease_age_ms: u64,
    pub last_log_index: u64,
    pub applied_index: u64,
    /// What grants the answering node its VIP ownership ("quorum", "sole", "segment");
    /// empty when it does not own.
    #[serde(default)]
    pub owner_arbiter: String,
    /// "survives N failure(s)" or "no failover: …" (docs/design.md#pairs).
    pub failover: String,
    /// The answering node's dsrlb version; `None` from a node older than the field.
    #[serde(default)]
    pub version: Option<String>,
    pub members: Vec<MemberView>,
    pub vips: Vec<VipView>,
    /// ARP flux the answering node saw (docs/design.md#arp-flux); empty from an older node.
    #[serde(default)]
    pub vip_conflicts: Vec<ConflictView>,
}

/// A MAC other than the cluster's claiming a VIP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictView {
    pub vip: String,
    pub mac: String,
    /// `farm/backend` of the backends with that MAC; empty for a stranger.
    pub backends: Vec<String>,
    pub claims: u64,
    pub last_seen_ms_ago: u64,
    pub advice: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    pub role: String,
    pub reachable: bool,
    pub last_log_index: u64,
    /// `None`: unknown (a follower answered, or the leader has no progress for it yet).
    pub lag: Option<u64>,
    /// Its dsrlb version; `None` when the answering node could not ask it.
    #[serde(default)]
    pub version: Option<String>,
}

/// `dsrctl version`: this client and every member of the cluster it reached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersionView {
    /// This `dsrctl`: `0.1.0 (1a2b3c4d5e6f, 2026-12-04)`.
    pub client: String,
    /// The node that answered.
    pub answered_by: u64,
    /// Each member, as the answering node learned it.
    pub members: Vec<MemberVersion>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberVersion {
    pub id: u64,
    pub address: String,
    pub role: String,
    /// `None`: it could not be asked (unreachable, or older than the version call).
    pub version: Option<String>,
}

impl From<StatusView> for VersionView {
    fn from(s: StatusView) -> Self {
        VersionView {
            client: buildinfo::LONG_VERSION.to_owned(),
            answered_by: s.answered_by,
            members: s
                .members
                .into_iter()
                .map(|m| MemberVersion {
                    // An answering node older than the member field still names itself.
                    version: m
                        .version
                        .or_else(|| (m.id == s.answered_by).then(|| s.version.clone()).flatten()),
                    id: m.id,
                    address: m.address,
                    role: m.role,
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VipView {
    pub vip: String,
    pub owner: Option<u64>,
}

impl From<pb::StatusReply> for StatusView {
    fn from(r: pb::StatusReply) -> Self {
        StatusView {
            answered_by: r.answered_by,
            leader: nonzero(r.leader),
            vip_owner: nonzero(r.vip_owner),
            term: r.term,
            lease_age_ms: r.lease_age_ms,
            last_log_index: r.last_log_index,
            applied_index: r.applied_index,
            owner_arbiter: r.owner_arbiter,
            failover: r.failover,
            version: nonempty(r.version),
            members: r
                .members
                .into_iter()
                .map(|m| MemberView {
                    id: m.id,
                    address: m.address,
                    role: m.role,
                    reachable: m.reachable,
                    last_log_index: m.last_log_index,
                    lag: m.lag,
                    version: nonempty(m.version),
                })
                .collect(),
            vips: r
                .vips
                .into_iter()
                .map(|v| VipView {
                    vip: v.vip,
                    owner: nonzero(v.owner),
                })
                .collect(),
            vip_conflicts: r
                .vip_conflicts
                .into_iter()
                .map(|c| ConflictView {
                    vip: c.vip,
                    mac: c.mac,
                    backends: c.backends,
                    claims: c.claims,
                    last_seen_ms_ago: c.last_seen_ms_ago,
                    advice: c.advice,
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarmView {
    pub name: String,
    pub vip: String,
    pub ports: String,
    pub protocol: String,
    pub scheduler: String,
    pub persistence: String,
    pub persistence_ttl: Option<String>,
    pub check: Option<CheckView>,
    pub backends: Vec<BackendView>,
    /// 0: no limit (bursts: the default, one second's worth).
    #[serde(default)]
    pub new_rate_limit: u32,
    #[serde(default)]
    pub new_rate_limit_burst: u32,
    #[serde(default)]
    pub new_rate_limit_farm: u32,
    #[serde(default)]
    pub new_rate_limit_farm_burst: u32,
    #[serde(default)]
    pub max_flows: u32,
    #[serde(default)]
    pub tcp_strict: bool,
    /// Slots of the farm's Maglev table.
    #[serde(default)]
    pub maglev_table_size: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckView {
    #[serde(rename = "type")]
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub rise: u32,
    pub fall: u32,
    /// 0: the farm's first port.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub port: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expect_status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expect_body: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ca_file: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub send: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub expect: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub program: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Unset: the node decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_vip: Option<bool>,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendView {
    pub name: String,
    pub ip: String,
    pub mac: Option<String>,
    pub weight: u32,
    pub state: String,
    pub priority: u32,
    pub healthy: bool,
    /// The leader's last probe (`backend list` of a checked farm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check: Option<CheckResultView>,
}

/// One probe's outcome as the checking node saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckResultView {
    /// `up`, `down` or `not run`.
    pub result: String,
    pub latency_us: u64,
    /// Why down or not run; empty when up.
    pub reason: String,
    /// Milliseconds since the probe.
    pub age_ms: u64,
    pub checked_by: u64,
}

impl From<pb::Farm> for FarmView {
    fn from(f: pb::Farm) -> Self {
        FarmView {
            name: f.name,
            vip: f.vip,
            ports: f.ports,
            protocol: f.protocol,
            scheduler: or_default(f.scheduler, "maglev"),
            persistence: or_default(f.persistence, "none"),
            persistence_ttl: nonempty(f.persistence_ttl),
            check: f.check.map(|c| CheckView {
                kind: c.r#type,
                interval: c.interval,
                timeout: c.timeout,
                rise: c.rise,
                fall: c.fall,
                port: c.port,
                path: c.path,
                host: c.host,
                expect_status: c.expect_status,
                expect_body: c.expect_body,
                ca_file: c.ca_file,
                send: c.send,
                expect: c.expect,
                program: c.program,
                args: c.args,
                via_vip: c.via_vip,
            }),
            backends: f.backends.into_iter().map(BackendView::from).collect(),
            new_rate_limit: f.new_rate_limit,
            new_rate_limit_burst: f.new_rate_limit_burst,
            new_rate_limit_farm: f.new_rate_limit_farm,
            new_rate_limit_farm_burst: f.new_rate_limit_farm_burst,
            max_flows: f.max_flows,
            tcp_strict: f.tcp_strict,
            maglev_table_size: f.maglev_table_size,
        }
    }
}

impl From<pb::Backend> for BackendView {
    fn from(b: pb::Backend) -> Self {
        BackendView {
            name: b.name,
            ip: b.ip,
            mac: nonempty(b.mac),
            weight: b.weight,
            state: or_default(b.state, "up"),
            priority: b.priority,
            healthy: b.healthy,
            last_check: b.last_check.map(|c| CheckResultView {
                result: c.result,
                latency_us: c.latency_us,
                reason: c.reason,
                age_ms: c.age_ms,
                checked_by: c.checked_by,
            }),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarmsView {
    pub answered_by: u64,
    pub farms: Vec<FarmView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarmShowView {
    pub answered_by: u64,
    pub farm: FarmView,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendsView {
    pub answered_by: u64,
    pub farm: String,
    pub backends: Vec<BackendView>,
}

/// The answer to a write: what was done, where it was applied and who took the request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WriteView {
    /// E.g. "farm web created".
    pub done: String,
    pub applied_index: u64,
    pub answered_by: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyView {
    pub dry_run: bool,
    pub applied: bool,
    pub applied_index: u64,
    pub answered_by: u64,
    pub changes: Vec<ChangeView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChangeView {
    /// "create", "update" or "delete"; "keep": not in the file, kept (no `--prune`).
    pub action: String,
    pub farm: String,
    pub details: Vec<String>,
}

impl ApplyView {
    pub fn new(r: pb::ApplyReply, dry_run: bool) -> Self {
        ApplyView {
            dry_run,
            applied: r.applied,
            applied_index: r.applied_index,
            answered_by: r.answered_by,
            changes: r
                .changes
                .into_iter()
                .map(|c| ChangeView {
                    action: c.action,
                    farm: c.farm,
                    details: c.details,
                })
                .collect(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportView {
    pub answered_by: u64,
    pub config: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipView {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub answered_by: u64,
}

impl From<pb::MembershipReply> for MembershipView {
    fn from(r: pb::MembershipReply) -> Self {
        MembershipView {
            voters: r.voters,
            learners: r.learners,
            answered_by: r.answered_by,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderView {
    pub leader: Option<u64>,
    pub answered_by: u64,
}

/// Counters of one node, with rates per second since the previous sample when watching.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    pub node: u64,
    pub vip_owner: bool,
    pub answered_by: u64,
    /// Seconds between the previous sample and this one; `None` for the first.
    pub interval_s: Option<f64>,
    pub farms: Vec<FarmStatsView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FarmStatsView {
    pub name: String,
    pub flows_new: u64,
    pub flows_new_per_s: Option<f64>,
    pub backends: Vec<BackendStatsView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendStatsView {
    pub name: String,
    pub state: String,
    pub healthy: bool,
    pub packets: u64,
    pub bytes: u64,
    pub packets_per_s: Option<f64>,
    pub bytes_per_s: Option<f64>,
}

impl From<pb::StatsReply> for StatsView {
    fn from(r: pb::StatsReply) -> Self {
        StatsView {
            node: r.node,
            vip_owner: r.vip_owner,
            answered_by: r.answered_by,
            interval_s: None,
            farms: r
                .farms
                .into_iter()
                .map(|f| FarmStatsView {
                    name: f.name,
                    flows_new: f.flows_new,
                    flows_new_per_s: None,
                    backends: f
                        .backends
                        .into_iter()
                        .map(|b| BackendStatsView {
                            name: b.name,
                            state: or_default(b.state, "up"),
                            healthy: b.healthy,
                            packets: b.packets,
                            bytes: b.bytes,
                            packets_per_s: None,
                            bytes_per_s: None,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// A farm's persistence entries as listed (`persistence list`): the API's raw fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistenceView {
    pub answered_by: u64,
    pub farm: String,
    /// The `--client` asked for, if any.
    pub client: Option<String>,
    /// Entries the farm holds in all.
    pub total: u64,
    /// Whether `--limit` left entries out.
    pub truncated: bool,
    pub entries: Vec<PersistenceEntryView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PersistenceEntryView {
    pub client: String,
    pub backend: String,
    /// Milliseconds since the Unix epoch (the leader's clock).
    pub last_seen_unix_ms: u64,
    /// Time left by the answering node's clock; 0 = due.
    pub expires_in_ms: u64,
}

impl PersistenceView {
    pub fn new(farm: String, client: Option<String>, r: pb::ListPersistenceReply) -> Self {
        PersistenceView {
            answered_by: r.answered_by,
            farm,
            client,
            total: r.total,
            truncated: r.truncated,
            entries: r
                .entries
                .into_iter()
                .map(|e| PersistenceEntryView {
                    client: e.client,
                    backend: e.backend,
                    last_seen_unix_ms: e.last_seen_unix_ms,
                    expires_in_ms: e.expires_in_ms,
                })
                .collect(),
        }
    }
}
