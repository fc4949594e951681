//! Every validation error of the admin API, table-driven against a real 3-node cluster: the
//! status code, the field the message starts with, and the state unchanged afterwards (same
//! export on the leader, no new log entry). Requests go to a follower, which validates
//! before forwarding anything.

use crate::admin_support::{Client, backend, body, clients, endpoint, in_client};
use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use proto::admin::v1 as pb;
use tonic::Code;

/// One request of the table.
enum Call {
    Create(pb::Farm),
    Update(pb::Farm),
    AddBackend(&'static str, pb::Backend),
    UpdateBackend(pb::UpdateBackendRequest),
    DeleteBackend(&'static str, &'static str),
    Apply(String),
    AddMember(u64, &'static str),
    Transfer(u64),
}

async fn send(c: &mut Client, call: Call) -> Result<(), tonic::Status> {
    match call {
        Call::Create(f) => c
            .create_farm(pb::CreateFarmRequest { farm: Some(f) })
            .await
            .map(drop),
        Call::Update(f) => c
            .update_farm(pb::UpdateFarmRequest {
                farm: Some(f),
                replace_backends: true,
            })
            .await
            .map(drop),
        Call::AddBackend(farm, b) => c
            .add_backend(pb::AddBackendRequest {
                farm: farm.into(),
                backend: Some(b),
            })
            .await
            .map(drop),
        Call::UpdateBackend(r) => c.update_backend(r).await.map(drop),
        Call::DeleteBackend(farm, name) => c
            .delete_backend(pb::DeleteBackendRequest {
                farm: farm.into(),
                name: name.into(),
            })
            .await
            .map(drop),
        Call::Apply(config) => c
            .apply(pb::ApplyRequest {
                config,
                dry_run: false,
                prune: false,
            })
            .await
            .map(drop),
        Call::AddMember(id, address) => c
            .add_member(pb::AddMemberRequest {
                id,
                address: address.into(),
            })
            .await
            .map(drop),
        Call::Transfer(to) => c
            .transfer_leader(pb::TransferLeaderRequest { to })
            .await
            .map(drop),
    }
}

#[test]
fn every_refusal_names_its_field_and_changes_nothing() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let follower = (owner + 1) % 3;
    let endpoints: Vec<String> = (0..3).map(|i| endpoint(&c.lab, i)).collect();
    let token = c.lab.admin_token().expect("admin token");
    let vip = c.lab.vip().to_string();
    let ips: Vec<String> = c.lab.backends().iter().map(|b| b.ip.to_string()).collect();
    let node_ip = c.lab.nodes()[follower].ip.to_string();
    let other_node_ip = c.lab.nodes()[owner].ip.to_string();

    let good = pb::Farm {
        name: "v".into(),
        vip: vip.clone(),
        ports: "8080".into(),
        protocol: "tcp".into(),
        backends: vec![backend("x1", &ips[0], 1)],
        ..Default::default()
    };
    let with = |edit: &dyn Fn(&mut pb::Farm)| {
        let mut f = good.clone();
        edit(&mut f);
        f
    };
    let update = |edit: &dyn Fn(&mut pb::UpdateBackendRequest)| {
        let mut r = pb::UpdateBackendRequest {
            farm: "web".into(),
            name: "b1".into(),
            ..Default::default()
        };
        edit(&mut r);
        Call::UpdateBackend(r)
    };
    let farm_file = |vip: &str| {
        format!(
            "[[farm]]\nname = \"web\"\nvip = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\n\
             [[farm.backend]]\nname = \"b1\"\nip = \"{}\"\n",
            ips[0]
        )
    };
    // (what, the call, the code, the field the message starts with)
    let cases: Vec<(&str, Call, Code, &str)> = vec![
        (
            "bad farm name",
            Call::Create(with(&|f| f.name = "we b".into())),
            Code::InvalidArgument,
            "farm.name",
        ),
        (
            "VIP not an address",
            Call::Create(with(&|f| f.vip = "vip".into())),
            Code::InvalidArgument,
            "farm.vip",
        ),
        (
            "multicast VIP",
            Call::Create(with(&|f| f.vip = "224.0.0.1".into())),
            Code::InvalidArgument,
            "farm.vip",
        ),
        (
            "VIP of a node",
            Call::Create(with(&|f| f.vip = other_node_ip.clone())),
            Code::InvalidArgument,
            "farm.vip",
        ),
        (
            "VIP of a backend",
            Call::Create(with(&|f| f.vip = ips[1].clone())),
            Code::InvalidArgument,
            "farm.vip",
        ),
        (
            "backend off the subnet",
            Call::Create(with(&|f| f.backends[0].ip = "198.19.7.7".into())),
            Code::InvalidArgument,
            "farm.backend[0].ip",
        ),
        (
            "backend is a node",
            Call::Create(with(&|f| f.backends[0].ip = node_ip.clone())),
            Code::InvalidArgument,
            "farm.backend[0].ip",
        ),
        (
            "backend is the VIP",
            Call::Create(with(&|f| f.backends[0].ip = vip.clone())),
            Code::InvalidArgument,
            "farm.backend[0].ip",
        ),
        (
            "port 0",
            Call::Create(with(&|f| f.ports = "0".into())),
            Code::InvalidArgument,
            "farm.ports",
        ),
        (
            "port too big",
            Call::Create(with(&|f| f.ports = "70000".into())),
            Code::InvalidArgument,
            "farm.ports",
        ),
        (
            "reversed range",
            Call::Create(with(&|f| f.ports = "90-80".into())),
            Code::InvalidArgument,
            "farm.ports",
        ),
        (
            "overlaps web",
            Call::Create(with(&|f| f.ports = "79-81".into())),
            Code::InvalidArgument,
            "farm.ports",
        ),
        (
            "unknown protocol",
            Call::Create(with(&|f| f.protocol = "sctp".into())),
            Code::InvalidArgument,
            "farm.protocol",
        ),
        (
            "a burst without its rate",
            Call::Create(with(&|f| f.new_rate_limit_burst = 5)),
            Code::InvalidArgument,
            "farm.new_rate_limit_burst",
        ),
        (
            "farm rate above the maximum",
            Call::Create(with(&|f| f.new_rate_limit_farm = 20_000_000)),
            Code::InvalidArgument,
            "farm.new_rate_limit_farm",
        ),
        (
            "max_flows above the maximum",
            Call::Create(with(&|f| f.max_flows = 2_000_000_000)),
            Code::InvalidArgument,
            "farm.max_flows",
        ),
        (
            "unknown scheduler",
            Call::Create(with(&|f| f.scheduler = "roundrobin".into())),
            Code::InvalidArgument,
            "farm.scheduler",
        ),
        (
            "unknown persistence",
            Call::Create(with(&|f| f.persistence = "cookie".into())),
            Code::InvalidArgument,
            "farm.persistence",
        ),
        (
            "bad ttl",
            Call::Create(with(&|f| {
                f.persistence = "srcip".into();
                f.persistence_ttl = "soon".into()
            })),
            Code::InvalidArgument,
            "farm.persistence_ttl",
        ),
        (
            "unknown check",
            Call::Create(with(&|f| {
                f.check = Some(pb::Check {
                    r#type: "gopher".into(),
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "farm.check.type",
        ),
        (
            "a key of another check type",
            Call::Create(with(&|f| {
                f.check = Some(pb::Check {
                    r#type: "http".into(),
                    program: "/bin/true".into(),
                    ..Default::default()
                })
            })),
            Code::InvalidArgument,
            "farm.check.program",
        ),
        (
            "weight too big",
            Call::Create(with(&|f| f.backends[0].weight = 70000)),
            Code::InvalidArgument,
            "farm.backend[0].weight",
        ),
        (
            "unknown state",
            Call::Create(with(&|f| f.backends[0].state = "maintenance".into())),
            Code::InvalidArgument,
            "farm.backend[0].state",
        ),
        (
            "priority too big",
            Call::Create(with(&|f| f.backends[0].priority = 1000)),
            Code::InvalidArgument,
            "farm.backend[0].priority",
        ),
        (
            "bad MAC",
            Call::Create(with(&|f| f.backends[0].mac = "01:00:5e:00:00:01".into())),
            Code::InvalidArgument,
            "farm.backend[0].mac",
        ),
        (
            "bad backend name",
            Call::Create(with(&|f| f.backends[0].name = "x/1".into())),
            Code::InvalidArgument,
            "farm.backend[0].name",
        ),
        (
            "duplicate backend",
            Call::Create(with(&|f| f.backends.push(backend("x1", &ips[1], 1)))),
            Code::InvalidArgument,
            "farm.backend[1].name",
        ),
        (
            "existing farm",
            Call::Create(with(&|f| {
                f.name = "web".into();
                f.ports = "80".into()
            })),
            Code::AlreadyExists,
            "",
        ),
        (
            "update unknown farm",
            Call::Update(good.clone()),
            Code::NotFound,
            "",
        ),
        (
            "update web onto echo's VIP+port",
            Call::Update(with(&|f| {
                f.name = "echo".into();
                f.protocol = "tcp".into();
                f.ports = "80".into()
            })),
            Code::InvalidArgument,
            "farm.ports",
        ),
        (
            "add to unknown farm",
            Call::AddBackend("nope", backend("z", &ips[1], 1)),
            Code::NotFound,
            "",
        ),
        (
            "add existing backend",
            Call::AddBackend("web", backend("b1", &ips[1], 1)),
            Code::AlreadyExists,
            "",
        ),
        (
            "add with a used IP",
            Call::AddBackend("web", backend("z", &ips[0], 1)),
            Code::InvalidArgument,
            "backend.ip",
        ),
        (
            "add too heavy",
            Call::AddBackend("web", backend("z", "198.18.0.77", 70000)),
            Code::InvalidArgument,
            "backend.weight",
        ),
        (
            "set unknown state",
            update(&|r| r.state = Some("maint".into())),
            Code::InvalidArgument,
            "backend.state",
        ),
        (
            "set priority 0",
            update(&|r| r.priority = Some(0)),
            Code::InvalidArgument,
            "backend.priority",
        ),
        (
            "set IP off the subnet",
            update(&|r| r.ip = Some("198.19.7.7".into())),
            Code::InvalidArgument,
            "backend.ip",
        ),
        (
            "set unknown backend",
            update(&|r| r.name = "zz".into()),
            Code::NotFound,
            "",
        ),
        (
            "delete unknown backend",
            Call::DeleteBackend("web", "zz"),
            Code::NotFound,
            "",
        ),
        (
            "apply: unknown key",
            Call::Apply("node = 1\n".into()),
            Code::InvalidArgument,
            "config",
        ),
        (
            "apply: bad VIP",
            Call::Apply(farm_file("300.1.1.1")),
            Code::InvalidArgument,
            "farm[web].vip",
        ),
        (
            "apply: VIP of a node",
            Call::Apply(farm_file(&other_node_ip)),
            Code::InvalidArgument,
            "farm[web].vip",
        ),
        (
            "member id 0",
            Call::AddMember(0, "198.18.0.250:7100"),
            Code::InvalidArgument,
            "id",
        ),
        (
            "member address",
            Call::AddMember(7, "nowhere"),
            Code::InvalidArgument,
            "address",
        ),
        (
            "transfer to a stranger",
            Call::Transfer(42),
            Code::FailedPrecondition,
            "",
        ),
    ];

    let failures = in_client(&c.lab, || async move {
        let mut cl = clients(&endpoints, &token).await;
        let export = |cl: &mut Vec<Client>| {
            let mut leader = cl[owner].clone();
            async move {
                let e = leader.export(pb::ExportRequest {}).await.expect("export");
                body(&e.into_inner().config)
            }
        };
        let log_index = |cl: &mut Vec<Client>| {
            let mut leader = cl[owner].clone();
            async move {
                let s = leader.status(pb::StatusRequest {}).await.expect("status");
                s.into_inner().last_log_index
            }
        };
        let before = export(&mut cl).await;
        let index_before = log_index(&mut cl).await;
        let mut failures = Vec::new();
        for (what, call, code, field) in cases {
            let got = send(&mut cl[follower], call).await;
            match got {
                Ok(()) => failures.push(format!("{what}: accepted")),
                Err(s) => {
                    if s.code() != code {
                        failures.push(format!(
                            "{what}: {:?} {:?}, wanted {code:?}",
                            s.code(),
                            s.message()
                        ));
                    } else if !field.is_empty() && !s.message().starts_with(&format!("{field}: ")) {
                        failures.push(format!(
                            "{what}: message {:?} does not start with {field:?}",
                            s.message()
                        ));
                    }
                }
            }
            let now = export(&mut cl).await;
            if now != before {
                failures.push(format!("{what}: the state changed:\n{now}"));
            }
        }
        let index_after = log_index(&mut cl).await;
        if index_after != index_before {
            failures.push(format!("log grew from {index_before} to {index_after}"));
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
