//! The admin fuzz target's way in (`node/fuzz`, docs/design.md#fuzzing): each request the
//! admin service validates, judged on a fixed replica with the functions the handlers run,
//! and the invariants every outcome keeps. Not an API: those functions are private to
//! `admin`.

use super::check::NetFacts;
use super::persist::{flush_args, list_args};
use super::service::{
    add_backend_change, apply_farms, apply_plan, create_change, delete_backend_change, farm_of,
    update_backend_change, update_farm_change,
};
use super::wire::raw_from_pb;
use crate::config::{RawFarms, validate_farms};
use cluster::{ClusterState, Command};
use proto::admin::v1 as pb;
use std::net::Ipv4Addr;
use tonic::Status;

/// An error message longer than this echoes (part of) the request back: names are at most
/// 63 bytes and values are shown cut to 64 characters (`config::shown`), so no honest
/// message comes near it.
const MAX_MESSAGE: usize = 2048;

/// The farms of the replica: persistence, a check, two farms on one VIP, verdicts.
const FARMS: &str = r#"
[[farm]]
name = "web"
vip = "198.18.0.100"
port = 80
protocol = "tcp"
persistence = "srcip"
[farm.check]
type = "tcp"
[[farm.backend]]
name = "b1"
ip = "198.18.1.1"
[[farm.backend]]
name = "b2"
ip = "198.18.1.2"
mac = "02:00:00:00:01:02"
weight = 3

[[farm]]
name = "dns"
vip = "198.18.0.100"
port = 53
protocol = "udp"
scheduler = "srchash"
[[farm.backend]]
name = "d1"
ip = "198.18.1.3"
"#;

/// A replica and the node's network that requests are judged against.
#[derive(Debug)]
pub struct Replica {
    state: ClusterState,
    net: NetFacts,
}

impl Replica {
    /// Two farms and a health verdict on a node at 198.18.0.1 of 198.18.0.0/16.
    pub fn sample() -> Replica {
        let raw: RawFarms = toml::from_str(FARMS).expect("the sample farms parse");
        let farms = validate_farms(&raw.farm).expect("the sample farms are valid");
        let mut state = ClusterState::default();
        state.apply(
            &Command::Bootstrap {
                farms,
                settings: Default::default(),
            },
            1,
        );
        state.apply(
            &Command::SetHealth {
                farm: "web".into(),
                backend: "b1".into(),
                up: true,
            },
            2,
        );
        Replica {
            state,
            net: NetFacts {
                node_addrs: vec![Ipv4Addr::new(198, 18, 0, 1).into()],
                subnets: vec![(Ipv4Addr::new(198, 18, 0, 0).into(), 16)],
            },
        }
    }

    /// `CreateFarm`.
    pub fn create_farm(&self, req: &pb::CreateFarmRequest) {
        if let Some(f) = &req.farm {
            self.judge(create_change(&self.state, &self.net, &raw_from_pb(f)));
        }
    }

    /// `UpdateFarm`.
    pub fn update_farm(&self, req: &pb::UpdateFarmRequest) {
        if let Some(f) = &req.farm {
            self.judge(update_farm_change(
                &self.state,
                &self.net,
                f,
                req.replace_backends,
            ));
        }
    }

    /// `GetFarm` and `DeleteFarm`: the name check and lookup before anything else.
    pub fn farm_by_name(&self, name: &str) {
        self.judge(farm_of(&self.state, "name", name).map(|_| None));
    }

    /// `AddBackend`.
    pub fn add_backend(&self, req: &pb::AddBackendRequest) {
        if let Some(b) = &req.backend {
            self.judge(add_backend_change(&self.state, &self.net, &req.farm, b));
        }
    }

    /// `UpdateBackend`.
    pub fn update_backend(&self, req: &pb::UpdateBackendRequest) {
        self.judge(update_backend_change(&self.state, &self.net, req));
    }

    /// `DeleteBackend`.
    pub fn delete_backend(&self, req: &pb::DeleteBackendRequest) {
        self.judge(delete_backend_change(&self.state, req));
    }

    /// `Apply`, as a dry run and for real.
    pub fn apply(&self, req: &pb::ApplyRequest) {
        let planned = apply_farms(&req.config, &self.net).and_then(|(farms, desired)| {
            apply_plan(&self.state, &self.net, &farms, &desired, req.prune, false)
                .map(|p| p.command)
        });
        self.judge(planned);
    }

    /// `ListPersistence` and `FlushPersistence`: the field checks.
    pub fn persistence(
        &self,
        list: &pb::ListPersistenceRequest,
        flush: &pb::FlushPersistenceRequest,
    ) {
        self.judge(list_args(list).map(|_| None));
        self.judge(flush_args(flush).map(|_| None));
    }

    /// What every outcome keeps: a command passes the state machine's own check and changes
    /// the replica it was built on (the admin path never writes what the log would refuse,
    /// nor a no-op); an error stays short whatever the request held.
    fn judge(&self, outcome: Result<Option<Command>, Status>) {
        match outcome {
            Ok(Some(cmd)) => {
                if let Err(e) = cmd.validate() {
                    panic!("the admin path built a command the cluster refuses: {e}");
                }
                assert!(
                    self.state.clone().apply(&cmd, 3),
                    "the admin path built a command that changes nothing: {cmd:?}"
                );
            }
            Ok(None) => {}
            Err(s) => assert!(
                s.message().len() <= MAX_MESSAGE,
                "a {}-byte error message: {:?}…",
                s.message().len(),
                s.message().chars().take(200).collect::<String>()
            ),
        }
    }
}
