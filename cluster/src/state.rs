//! What the cluster agrees on — farms, backends, health verdicts, settings and the source-IP
//! persistence table — and the commands that change it. Applying a command is a pure,
//! deterministic function of (state, command, log index): every node that applies the same
//! log holds the same state, which is what lets every node build the same forwarding table
//! (docs/design.md#inv-same-backend). Ordered maps only, so snapshots of equal states are equal
//! bytes.
//!
//! These farm types are the node's only farm model: its config validator produces them and
//! its admin API reads them. Their serialized shape (field order, variant order) is the
//! format of the log and snapshots on disk, so it only ever grows at the end.

use crate::persist::PinBatch;
pub use proto::names::{BackendState, Protocol};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// How a farm picks a backend for a new flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheduler {
    /// Weighted Maglev over the live backends, keyed by the 5-tuple.
    #[default]
    Maglev,
    /// Weighted Maglev keyed by the client address alone: all of a client's connections go
    /// to one backend, without pins (appended last: the log's encoding of `Maglev` stays).
    SrcHash,
    /// Each worker of the owner hands new flows to the live backends in turn; weights
    /// aside. Per node: a takeover reshuffles.
    Rr,
    /// As `Rr`, each backend's turn as often as its weight says.
    Wrr,
}

impl Scheduler {
    /// Every scheduler, for error messages and help.
    pub const ALL: [Scheduler; 4] = [
        Scheduler::Maglev,
        Scheduler::SrcHash,
        Scheduler::Wrr,
        Scheduler::Rr,
    ];

    /// The name in config files and the admin API.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Maglev => "maglev",
            Scheduler::SrcHash => "srchash",
            Scheduler::Rr => "rr",
            Scheduler::Wrr => "wrr",
        }
    }

    pub fn from_name(name: &str) -> Option<Scheduler> {
        Scheduler::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Whether a client keeps its backend across flows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Persistence {
    /// Every flow is scheduled on its own.
    #[default]
    None,
    /// A source IP keeps its backend for `ttl` after its last packet.
    SrcIp {
        /// Idle time after which the entry expires.
        ttl: Duration,
    },
}

/// A farm's health check: how each backend is probed and how results become verdicts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Time between two probes of one backend.
    pub interval: Duration,
    /// Time one probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that bring an up backend down.
    pub fall: u32,
    /// What one probe does (appended after the timing fields: their encoding stays).
    pub kind: CheckKind,
    /// The port probed; `None` is the farm's first port (DSR: the virtual port).
    pub port: Option<u16>,
    /// Probe the service through the VIP on the backend (the DSR path), not the backend's
    /// own address; `None`: the node decides (through the VIP for tcp and http(s) checks
    /// when it can set the routes up).
    pub via_vip: Option<bool>,
}

impl HealthCheck {
    /// A TCP connect check on the farm's first port.
    pub fn tcp(interval: Duration, timeout: Duration, rise: u32, fall: u32) -> Self {
        HealthCheck {
            interval,
            timeout,
            rise,
            fall,
            kind: CheckKind::Tcp,
            port: None,
            via_vip: None,
        }
    }
}

/// What one probe of a backend does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// A TCP connect.
    #[default]
    Tcp,
    /// An HTTP (or, with `tls`, HTTPS) GET judged by status and body.
    Http(HttpCheck),
    /// A UDP datagram that must be answered.
    Udp {
        /// The payload sent.
        send: Vec<u8>,
        /// A substring the reply must contain (empty: any reply).
        expect: Vec<u8>,
    },
    /// A program run on the checking node (no shell); exit status 0 is up.
    Exec {
        /// Absolute path of the program; it must exist on every node that may lead.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl CheckKind {
    /// The name in config files and the admin API.
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http(h) if h.tls => "https",
            CheckKind::Http(_) => "http",
            CheckKind::Udp { .. } => "udp",
            CheckKind::Exec { .. } => "exec",
        }
    }
}

/// An HTTP(S) check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCheck {
    /// HTTPS rather than plain HTTP.
    pub tls: bool,
    /// The request path, starting with `/`.
    pub path: String,
    /// The `Host` header (and TLS server name); `None` is the backend's address.
    pub host: Option<String>,
    /// Accepted status codes, inclusive.
    pub status: (u16, u16),
    /// A substring the body must contain.
    pub body: Option<String>,
    /// PEM file of the CA that signs the backends' certificates; `None` accepts any
    /// certificate (the check proves the service answers, not who it is). A path on the
    /// checking node: every node that may lead needs it.
    pub ca_file: Option<String>,
}

/// One real server behind a farm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Unique within its farm.
    pub name: String,
    /// Address on the load balancer's L2 segment, of the farm's VIP's family.
    pub ip: IpAddr,
    /// Pinned MAC address; `None` means learned by ARP.
    pub mac: Option<[u8; 6]>,
    /// Relative share of new flows.
    pub weight: u32,
    /// Administrative state.
    pub state: BackendState,
    /// Lower serves first; a higher tier serves only when no lower one has a live backend.
    pub priority: u32,
}

/// A virtual service: VIP, ports, protocol and the backends behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farm {
    /// Unique farm name; the key of the farm in the state.
    pub name: String,
    /// The virtual IP (IPv4 or IPv6).
    pub vip: IpAddr,
    /// First port of the range (equal to `port_last` for a single port).
    pub port_first: u16,
    /// Last port of the range, inclusive.
    pub port_last: u16,
    /// Transport protocol.
    pub protocol: Protocol,
    /// Backend choice for new flows.
    pub scheduler: Scheduler,
    /// Source-IP stickiness.
    pub persistence: Persistence,
    /// Health check; `None` means every backend counts as healthy.
    pub check: Option<HealthCheck>,
    /// The backends, in configuration order.
    pub backends: Vec<Backend>,
    /// Limits on new flows and `tcp_strict`.
    pub limits: FarmLimits,
    /// Slots of the farm's Maglev table (a prime, ≥ its backends), chosen once when the farm
    /// is created; changing it moves flows (docs/design.md#scale). Last: the fields before
    /// keep their encoding.
    pub maglev_table_size: u32,
}

/// A rate of new flows with its burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    /// Flows per second, ≥ 1.
    pub per_sec: u32,
    /// Flows that may pass at once, ≥ 1.
    pub burst: u32,
}

/// A farm's limits on new flows (docs/design.md#limits); the default limits nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmLimits {
    /// `new_rate_limit`: new flows per source address.
    pub per_source: Option<RateLimit>,
    /// `new_rate_limit_farm`: new flows of the whole farm.
    pub per_farm: Option<RateLimit>,
    /// `max_flows`: established flows per backend on the owner; 0 = no limit.
    pub max_flows: u32,
    /// `tcp_strict`: drop TCP packets other than SYNs of unknown flows after the grace.
    pub tcp_strict: bool,
}

/// Cluster-wide settings that live in the log rather than in each node's config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedSettings {
    /// How often the leader commits new and refreshed persistence entries.
    pub persistence_batch: Duration,
    /// Upper bound on persistence entries per farm: new clients beyond it get no entry.
    pub persistence_max_entries: u64,
}

impl Default for SharedSettings {
    fn default() -> Self {
        SharedSettings {
            persistence_batch: Duration::from_millis(50),
            persistence_max_entries: 1 << 20,
        }
    }
}

/// The replicated state as every node sees it once it has applied the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Set by the first `Bootstrap`; later ones are ignored.
    pub bootstrapped: bool,
    /// Farms by name. Each behind an `Arc`: applying an entry copies the state (the node
    /// holds the last one published), and a copy then shares every farm it does not change
    /// instead of cloning thousands of them (docs/design.md#scale). Serialized as `Farm`.
    pub farms: BTreeMap<String, Arc<Farm>>,
    /// Health verdicts: farm → backend → up. A backend without a verdict is down when its
    /// farm has a check (the checker commits the first verdict), up otherwise.
    pub health: BTreeMap<String, BTreeMap<String, bool>>,
    /// Cluster-wide settings.
    pub settings: SharedSettings,
}

impl ClusterState {
    /// Whether `backend` of `farm` counts as healthy.
    pub fn is_healthy(&self, farm: &str, backend: &str) -> bool {
        let Some(f) = self.farms.get(farm) else {
            return false;
        };
        if f.check.is_none() {
            return true;
        }
        self.health
            .get(farm)
            .and_then(|m| m.get(backend))
            .copied()
            .unwrap_or(false)
    }
}

/// A change to the replicated state, proposed through the leader.
// A command lives for one write or one apply, never in bulk, so the two farms of
// `PutFarmIf` next to a small `SetHealth` cost nothing worth a box (which would also change
// every constructor of the log's format type).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Creates or replaces a farm; verdicts of backends it no longer has are dropped.
    PutFarm(Farm),
    /// Removes a farm with its verdicts and persistence entries.
    DeleteFarm {
        /// Farm name.
        name: String,
    },
    /// Records a health verdict (the leader's checker commits transitions only).
    SetHealth {
        /// Farm name.
        farm: String,
        /// Backend name.
        backend: String,
        /// The verdict.
        up: bool,
    },
    /// The farms and settings of the bootstrapping node's config; applied once, ignored
    /// afterwards.
    Bootstrap {
        /// Farms to start with.
        farms: Vec<Farm>,
        /// Cluster-wide settings to start with.
        settings: SharedSettings,
    },
    /// Replaces the cluster-wide settings.
    SetSettings(SharedSettings),
    /// Puts `farm` only if the farm of that name is exactly `expected` right now (`None`:
    /// no such farm) and no other farm holds one of its ports on the same VIP and protocol.
    /// The admin API's read-modify-write: a change committed in between turns it into a
    /// no-op (`changed = false`) instead of being silently overwritten; the caller re-reads.
    PutFarmIf {
        /// The farm as the writer read it.
        expected: Option<Farm>,
        /// The farm as it should be.
        farm: Farm,
    },
    /// Makes the farm set exactly `farms` if it is exactly `expected` right now (farms in
    /// name order): a whole `apply` in one entry, so a half-applied file never exists.
    ReplaceFarms {
        /// Every farm as the writer read them, in name order.
        expected: Vec<Farm>,
        /// The desired farms.
        farms: Vec<Farm>,
    },
    /// New and refreshed persistence entries from the leader's batcher, and expiry at the
    /// batch's time (applied to the `PinTable`, not to this state).
    Pin(PinBatch),
    /// Removes the persistence entries of `farm` (only those to `backend` if given).
    FlushPins {
        /// Farm name.
        farm: String,
        /// Backend name; `None` flushes the whole farm.
        backend: Option<String>,
    },
    /// Several health verdicts in one entry (the leader's checker batches the transitions of
    /// one moment, so a thousand backends failing together cost one log entry, not a
    /// thousand); each is applied as [`Command::SetHealth`] would.
    SetHealthMany(Vec<Verdict>),
}

/// One health verdict of [`Command::SetHealthMany`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Farm name.
    pub farm: String,
    /// Backend name.
    pub backend: String,
    /// The verdict.
    pub up: bool,
}

/// Why a command was refused before it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum InvalidCommand {
    /// A farm field is out of range.
    #[error("farm {farm:?}: {reason}")]
    Farm {
        /// The farm at fault.
        farm: String,
        /// What is wrong.
        reason: String,
    },
    /// Two farms of one bootstrap share a name.
    #[error("bootstrap lists farm {0:?} twice")]
    DuplicateFarm(String),
    /// Two farms of one command claim a common port on the same VIP and protocol.
    #[error("farms {0:?} and {1:?} overlap on the same VIP, protocol and ports")]
    Overlap(String, String),
}

impl Farm {
    /// Checks what the state machine relies on; the node's config check says more to users.
    pub fn validate(&self) -> Result<(), InvalidCommand> {
        let bad = |reason: &str| {
            Err(InvalidCommand::Farm {
                farm: self.name.clone(),
                reason: reason.to_string(),
            })
        };
        if self.name.is_empty() {
            return bad("empty name");
        }
        if self.port_first == 0 || self.port_first > self.port_last {
            return bad("port range must be 1..=65535 with first <= last");
        }
        if (self.maglev_table_size as usize) < self.backends.len().max(2) {
            return bad("maglev_table_size must be at least 2 and the number of backends");
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.name.is_empty() {
                return bad("a backend has an empty name");
            }
            if self.backends[..i].iter().any(|o| o.name == b.name) {
                return bad(&format!("backend {:?} listed twice", b.name));
            }
        }
        if let Some(c) = &self.check
            && (c.interval.is_zero() || c.timeout.is_zero() || c.rise == 0 || c.fall == 0)
        {
            return bad("check interval, timeout, rise and fall must be non-zero");
        }
        Ok(())
    }
}

impl Farm {
    /// The ports the farm serves.
    pub fn ports(&self) -> RangeInclusive<u16> {
        self.port_first..=self.port_last
    }

    /// Whether `self` and `other` claim a common port on the same VIP and protocol.
    pub fn overlaps(&self, other: &Farm) -> bool {
        self.vip == other.vip
            && self.protocol == other.protocol
            && self.port_first <= other.port_last
            && other.port_first <= self.port_last
    }
}

/// Refuses a farm list that names a farm twice (a set, not a comparison per pair: a
/// bootstrap carries every farm).
fn unique_names(farms: &[Farm]) -> Result<(), InvalidCommand> {
    let mut seen = std::collections::HashSet::with_capacity(farms.len());
    match farms.iter().find(|f| !seen.insert(f.name.as_str())) {
        Some(f) => Err(InvalidCommand::DuplicateFarm(f.name.clone())),
        None => Ok(()),
    }
}

impl Command {
    /// Refuses commands that would put an inconsistent farm into the state.
    pub fn validate(&self) -> Result<(), InvalidCommand> {
        match self {
            Command::PutFarm(f) => f.validate(),
            Command::PutFarmIf { farm, expected } => {
                if let Some(e) = expected
                    && e.name != farm.name
                {
                    return Err(InvalidCommand::Farm {
                        farm: farm.name.clone(),
                        reason: format!("expected farm is {:?}", e.name),
                    });
                }
                farm.validate()
            }
            Command::ReplaceFarms { farms, .. } => {
                for f in farms {
                    f.validate()?;
                }
                unique_names(farms)?;
                // Sorted by place, a farm overlaps an earlier one exactly when it overlaps
                // the one before it that reaches furthest; while none overlaps, that is
                // simply the one before it (O(n log n), not a comparison per pair).
                let mut by_place: Vec<&Farm> = farms.iter().collect();
                by_place.sort_by_key(|f| (f.vip, f.protocol as u8, f.port_first));
                match by_place.windows(2).find(|w| w[0].overlaps(w[1])) {
                    Some(w) => Err(InvalidCommand::Overlap(
                        w[0].name.clone(),
                        w[1].name.clone(),
                    )),
                    None => Ok(()),
                }
            }
            Command::Bootstrap { farms, .. } => {
                for f in farms {
                    f.validate()?;
                }
                unique_names(farms)
            }
            Command::DeleteFarm { .. }
            | Command::SetHealth { .. }
            | Command::SetHealthMany(_)
            | Command::SetSettings(_)
            | Command::Pin(_)
            | Command::FlushPins { .. } => Ok(()),
        }
    }
}

impl ClusterState {
    /// Records one verdict; a verdict for a backend the state no longer has is a no-op.
    fn set_health(&mut self, farm: &str, backend: &str, up: bool) -> bool {
        let known = self
            .farms
            .get(farm)
            .is_some_and(|f| f.backends.iter().any(|b| b.name == backend));
        if !known {
            return false;
        }
        let slot = self.health.entry(farm.to_string()).or_default();
        slot.insert(backend.to_string(), up) != Some(up)
    }

    /// Applies `cmd` committed at log index `index`; returns whether the state changed.
    /// Never fails: a command that no longer makes sense (a verdict for a deleted backend)
    /// is a no-op, identically on every node.
    // The log index is part of the signature so that time-like data could be measured in the
    // log; persistence carries the leader's clock in its batches instead (see `persist`).
    pub fn apply(&mut self, cmd: &Command, _index: u64) -> bool {
        match cmd {
            Command::PutFarm(farm) => self.put_farm(farm.clone()),
            Command::DeleteFarm { name } => self.delete_farm(name),
            Command::SetHealth { farm, backend, up } => self.set_health(farm, backend, *up),
            Command::SetHealthMany(verdicts) => verdicts.iter().fold(false, |changed, v| {
                self.set_health(&v.farm, &v.backend, v.up) | changed
            }),
            Command::Bootstrap { farms, settings } => {
                if self.bootstrapped {
                    return false;
                }
                self.bootstrapped = true;
                self.settings = settings.clone();
                for f in farms {
                    self.put_farm(f.clone());
                }
                true
            }
            Command::SetSettings(s) => {
                let changed = &self.settings != s;
                self.settings = s.clone();
                changed
            }
            Command::PutFarmIf { expected, farm } => {
                let current = self.farms.get(&farm.name).map(|f| &**f);
                // A farm that keeps its VIP, protocol and ports cannot come to overlap
                // another: only a new place is compared with every farm (a backend's state
                // change at ten thousand farms then costs what it touches).
                let same_place = current.is_some_and(|c| {
                    c.vip == farm.vip && c.protocol == farm.protocol && c.ports() == farm.ports()
                });
                let overlap = !same_place
                    && self
                        .farms
                        .values()
                        .any(|o| o.name != farm.name && o.overlaps(farm));
                if current != expected.as_ref() || overlap || farm.validate().is_err() {
                    return false;
                }
                self.put_farm(farm.clone())
            }
            Command::ReplaceFarms { expected, farms } => {
                if !self.farms.values().map(|f| &**f).eq(expected.iter()) {
                    return false;
                }
                let keep: Vec<&String> = farms.iter().map(|f| &f.name).collect();
                let gone: Vec<String> = self
                    .farms
                    .keys()
                    .filter(|n| !keep.contains(n))
                    .cloned()
                    .collect();
                let mut changed = false;
                for name in gone {
                    changed |= self.delete_farm(&name);
                }
                for f in farms {
                    changed |= self.put_farm(f.clone());
                }
                changed
            }
            // The state machine applies these to its `PinTable`.
            Command::Pin(_) | Command::FlushPins { .. } => false,
        }
    }

    fn delete_farm(&mut self, name: &str) -> bool {
        let existed = self.farms.remove(name).is_some();
        self.health.remove(name);
        existed
    }

    fn put_farm(&mut self, farm: Farm) -> bool {
        let name = farm.name.clone();
        if let Some(verdicts) = self.health.get_mut(&name) {
            verdicts.retain(|b, _| farm.backends.iter().any(|fb| &fb.name == b));
        }
        if self.farms.get(&name).is_some_and(|f| **f == farm) {
            return false;
        }
        self.farms.insert(name, Arc::new(farm));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    pub(crate) fn farm(name: &str, backends: &[&str]) -> Farm {
        Farm {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port_first: 80,
            port_last: 80,
            protocol: Protocol::Tcp,
            scheduler: Scheduler::Maglev,
            limits: Default::default(),
            maglev_table_size: 307,
            persistence: Persistence::None,
            check: Some(HealthCheck::tcp(
                Duration::from_secs(1),
                Duration::from_millis(500),
                2,
                3,
            )),
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, n)| Backend {
                    name: (*n).into(),
                    ip: Ipv4Addr::new(198, 18, 0, 10 + i as u8).into(),
                    mac: None,
                    weight: 1,
                    state: BackendState::Up,
                    priority: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn bootstrap_applies_once() {
        let mut s = ClusterState::default();
        assert!(s.apply(
            &Command::Bootstrap {
                farms: vec![farm("web", &["a"])],
                settings: SharedSettings::default(),
            },
            1
        ));
        assert!(!s.apply(
            &Command::Bootstrap {
                farms: vec![farm("other", &["b"])],
                settings: SharedSettings::default(),
            },
            2
        ));
        assert_eq!(s.farms.keys().collect::<Vec<_>>(), vec!["web"]);
    }

    #[test]
    fn health_for_unknown_backend_is_ignored_and_pruned_on_replace() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutFarm(farm("web", &["a", "b"])), 1);
        let set = |b: &str| Command::SetHealth {
            farm: "web".into(),
            backend: b.into(),
            up: true,
        };
        assert!(!s.apply(&set("zz"), 2));
        assert!(s.apply(&set("b"), 3));
        assert!(!s.apply(&set("b"), 4), "same verdict twice changes nothing");
        assert!(s.is_healthy("web", "b"));
        assert!(
            !s.is_healthy("web", "a"),
            "no verdict under a check is down"
        );
        s.apply(&Command::PutFarm(farm("web", &["a"])), 5);
        assert!(!s.health["web"].contains_key("b"));
        assert!(s.apply(&Command::DeleteFarm { name: "web".into() }, 6));
        assert!(s.health.is_empty() && s.farms.is_empty());
    }

    #[test]
    fn a_batch_of_verdicts_applies_each_and_skips_unknown_backends() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutFarm(farm("web", &["a", "b"])), 1);
        let v = |b: &str, up| Verdict {
            farm: "web".into(),
            backend: b.into(),
            up,
        };
        let batch = Command::SetHealthMany(vec![v("a", true), v("zz", true), v("b", false)]);
        assert!(s.apply(&batch, 2));
        assert!(s.is_healthy("web", "a") && !s.is_healthy("web", "b"));
        assert!(!s.health["web"].contains_key("zz"));
        assert!(!s.apply(&batch, 3), "the same batch again changes nothing");
    }

    #[test]
    fn same_commands_give_same_bytes() {
        let cmds = [
            Command::PutFarm(farm("b", &["x", "y"])),
            Command::PutFarm(farm("a", &["z"])),
            Command::SetHealth {
                farm: "b".into(),
                backend: "y".into(),
                up: true,
            },
        ];
        let run = || {
            let mut s = ClusterState::default();
            for (i, c) in cmds.iter().enumerate() {
                s.apply(c, i as u64 + 1);
            }
            crate::codec::encode(&s).expect("encodes")
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn validation_refuses_bad_farms() {
        let mut f = farm("web", &["a", "a"]);
        assert!(Command::PutFarm(f.clone()).validate().is_err());
        f.backends.pop();
        assert!(Command::PutFarm(f.clone()).validate().is_ok());
        f.port_first = 90;
        assert!(Command::PutFarm(f.clone()).validate().is_err());
        let dup = Command::Bootstrap {
            farms: vec![farm("w", &[]), farm("w", &[])],
            settings: SharedSettings::default(),
        };
        assert_eq!(
            dup.validate(),
            Err(InvalidCommand::DuplicateFarm("w".into()))
        );
        // A replacement list: overlaps are found wherever the two farms sit in the list
        // (a range farm between them, other VIPs around), and neighbours that only touch
        // are fine.
        let at = |name: &str, vip: u8, first: u16, last: u16| {
            let mut f = farm(name, &[]);
            f.vip = Ipv4Addr::new(198, 18, 0, vip).into();
            (f.port_first, f.port_last) = (first, last);
            f
        };
        let replace = |farms: Vec<Farm>| Command::ReplaceFarms {
            expected: Vec::new(),
            farms,
        };
        let fine = vec![at("a", 1, 80, 90), at("b", 2, 85, 85), at("c", 1, 91, 100)];
        assert_eq!(replace(fine).validate(), Ok(()));
        let wide = vec![at("x", 1, 1, 1000), at("y", 2, 5, 5), at("z", 1, 700, 700)];
        assert_eq!(
            replace(wide).validate(),
            Err(InvalidCommand::Overlap("x".into(), "z".into()))
        );
        let mut udp = at("u", 1, 80, 90);
        udp.protocol = Protocol::Udp;
        assert_eq!(replace(vec![at("t", 1, 80, 90), udp]).validate(), Ok(()));
    }

    #[test]
    fn conditional_puts_refuse_a_stale_read_and_overlaps() {
        let mut s = ClusterState::default();
        let a = farm("web", &["a"]);
        let put = |expected: Option<&Farm>, farm: &Farm| Command::PutFarmIf {
            expected: expected.cloned(),
            farm: farm.clone(),
        };
        assert!(s.apply(&put(None, &a), 1));
        assert!(!s.apply(&put(None, &a), 2), "create of an existing farm");
        let ab = farm("web", &["a", "b"]);
        let ac = farm("web", &["a", "c"]);
        assert!(s.apply(&put(Some(&a), &ab), 3));
        assert!(
            !s.apply(&put(Some(&a), &ac), 4),
            "a write based on a stale read must not overwrite b"
        );
        assert_eq!(*s.farms["web"], ab);
        let mut other = farm("other", &["x"]);
        assert!(!s.apply(&put(None, &other), 5), "same VIP, protocol, port");
        other.port_first = 81;
        other.port_last = 81;
        assert!(s.apply(&put(None, &other), 6));
    }

    #[test]
    fn replace_farms_is_all_or_nothing() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutFarm(farm("a", &["x"])), 1);
        let expected: Vec<Farm> = s.farms.values().map(|f| Farm::clone(f)).collect();
        let mut b = farm("b", &["y"]);
        b.port_first = 90;
        b.port_last = 90;
        let cmd = Command::ReplaceFarms {
            expected: expected.clone(),
            farms: vec![b.clone()],
        };
        assert!(s.apply(&cmd, 2));
        assert_eq!(s.farms.keys().collect::<Vec<_>>(), vec!["b"]);
        assert!(!s.apply(&cmd, 3), "the state moved on: nothing happens");
        let same = Command::ReplaceFarms {
            expected: vec![b.clone()],
            farms: vec![b],
        };
        assert!(
            !s.apply(&same, 4),
            "replacing with the same set changes nothing"
        );
    }

    #[test]
    fn enum_names_round_trip_and_variant_order_is_the_disk_format() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_name(p.as_str()), Some(p));
        }
        for s in BackendState::ALL {
            assert_eq!(BackendState::from_name(s.as_str()), Some(s));
        }
        assert_eq!(Protocol::from_name("sctp"), None);
        // A variant's index is its encoding in the log: new variants go last.
        assert_eq!(
            crate::codec::encode(&Protocol::ALL).expect("encodes"),
            [0, 1]
        );
        assert_eq!(
            crate::codec::encode(&BackendState::ALL).expect("encodes"),
            [0, 1, 2]
        );
    }

    #[test]
    fn state_round_trips_through_the_codec() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutFarm(farm("web", &["a"])), 1);
        let bytes = crate::codec::encode(&s).expect("encodes");
        let back: ClusterState = crate::codec::decode(&bytes).expect("decodes");
        assert_eq!(back, s);
    }
}
