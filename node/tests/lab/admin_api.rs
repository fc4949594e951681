//! The admin API against a real 3-node cluster of `dsrlb` processes: every farm, backend,
//! apply/export, status and stats call, through followers and the leader. Writes sent to a
//! follower land on every node; `apply` of an `export` changes nothing; a dry run writes
//! nothing; reads name the node that answered; calls without the right token are refused.

use crate::admin_support::{backend, body, client_with, clients, endpoint, eventually, in_client};
use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use proto::admin::v1 as pb;
use std::time::Duration;
use tonic::Code;

/// Every RPC once with `client`; the status code of each answer.
async fn codes_of_every_rpc(
    client: &mut crate::admin_support::Client,
) -> Vec<(&'static str, Code)> {
    fn code<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Code {
        r.err().map_or(Code::Ok, |s| s.code())
    }
    vec![
        ("status", code(client.status(pb::StatusRequest {}).await)),
        (
            "list_farms",
            code(client.list_farms(pb::ListFarmsRequest {}).await),
        ),
        (
            "get_farm",
            code(
                client
                    .get_farm(pb::GetFarmRequest { name: "web".into() })
                    .await,
            ),
        ),
        (
            "create_farm",
            code(
                client
                    .create_farm(pb::CreateFarmRequest { farm: None })
                    .await,
            ),
        ),
        (
            "update_farm",
            code(client.update_farm(pb::UpdateFarmRequest::default()).await),
        ),
        (
            "delete_farm",
            code(
                client
                    .delete_farm(pb::DeleteFarmRequest { name: "web".into() })
                    .await,
            ),
        ),
        (
            "list_backends",
            code(
                client
                    .list_backends(pb::ListBackendsRequest {
                        farm: "web".into(),
                        ..Default::default()
                    })
                    .await,
            ),
        ),
        (
            "add_backend",
            code(client.add_backend(pb::AddBackendRequest::default()).await),
        ),
        (
            "update_backend",
            code(
                client
                    .update_backend(pb::UpdateBackendRequest::default())
                    .await,
            ),
        ),
        (
            "delete_backend",
            code(
                client
                    .delete_backend(pb::DeleteBackendRequest::default())
                    .await,
            ),
        ),
        (
            "apply",
            code(
                client
                    .apply(pb::ApplyRequest {
                        config: String::new(),
                        dry_run: false,
                        prune: false,
                    })
                    .await,
            ),
        ),
        ("export", code(client.export(pb::ExportRequest {}).await)),
        (
            "list_persistence",
            code(
                client
                    .list_persistence(pb::ListPersistenceRequest {
                        farm: "web".into(),
                        ..Default::default()
                    })
                    .await,
            ),
        ),
        (
            "flush_persistence",
            code(
                client
                    .flush_persistence(pb::FlushPersistenceRequest {
                        farm: "web".into(),
                        backend: None,
                    })
                    .await,
            ),
        ),
        (
            "stats",
            code(client.stats(pb::StatsRequest { node: 0 }).await),
        ),
        (
            "add_member",
            code(client.add_member(pb::AddMemberRequest::default()).await),
        ),
        (
            "remove_member",
            code(
                client
                    .remove_member(pb::RemoveMemberRequest { id: 1 })
                    .await,
            ),
        ),
        (
            "transfer_leader",
            code(
                client
                    .transfer_leader(pb::TransferLeaderRequest { to: 1 })
                    .await,
            ),
        ),
    ]
}

async fn farm_names(c: &mut crate::admin_support::Client) -> Vec<String> {
    let r = c.list_farms(pb::ListFarmsRequest {}).await.expect("list");
    r.into_inner().farms.into_iter().map(|f| f.name).collect()
}

#[test]
fn every_call_through_leader_and_followers() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let (f1, f2) = ((owner + 1) % 3, (owner + 2) % 3);
    let owner_id = owner as u64 + 1;
    let endpoints: Vec<String> = (0..3).map(|i| endpoint(&c.lab, i)).collect();
    let token = c.lab.admin_token().expect("admin token");
    let vip = c.lab.vip().to_string();
    let ips: Vec<String> = c.lab.backends().iter().map(|b| b.ip.to_string()).collect();

    let calls =
        in_client(&c.lab, || async move {
            // Without the token, or with a wrong one, nothing gets through, on any node.
            for e in [&endpoints[owner], &endpoints[f1]] {
                for bad in [None, Some("not-the-admin-token".to_string())] {
                    let mut cl = client_with(e.clone(), bad.clone()).await;
                    for (rpc, code) in codes_of_every_rpc(&mut cl).await {
                        assert_eq!(code, Code::Unauthenticated, "{rpc} at {e} with {bad:?}");
                    }
                }
            }
            let mut cl = clients(&endpoints, &token).await;

            // Status: the leader knows everyone's progress; a follower names the same leader.
            let st = cl[owner]
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (st.answered_by, st.leader, st.vip_owner),
                (owner_id, owner_id, owner_id)
            );
            assert!(st.term >= 1 && st.applied_index >= 1, "{st:?}");
            assert_eq!(st.members.len(), 3, "{st:?}");
            for m in &st.members {
                assert!(m.reachable, "{m:?}");
                assert_eq!(m.role, if m.id == owner_id { "leader" } else { "voter" });
                assert!(m.last_log_index >= 1, "{m:?}");
            }
            assert_eq!(
                st.vips,
                vec![pb::VipOwner {
                    vip: vip.clone(),
                    owner: owner_id
                }]
            );
            let sf = cl[f1]
                .status(pb::StatusRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                (sf.answered_by, sf.leader, sf.vip_owner),
                (f1 as u64 + 1, owner_id, owner_id)
            );
            assert_eq!(sf.lease_age_ms, 0);

            // Reads name the node that answered.
            for (i, client) in cl.iter_mut().enumerate() {
                let r = client
                    .list_farms(pb::ListFarmsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.answered_by, i as u64 + 1);
                let names: Vec<&str> = r.farms.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(names, vec!["echo", "web"]);
            }
            let web = cl[f2]
                .get_farm(pb::GetFarmRequest { name: "web".into() })
                .await
                .unwrap();
            let web = web.into_inner().farm.expect("farm");
            assert_eq!((web.ports.as_str(), web.protocol.as_str()), ("80", "tcp"));
            assert_eq!(web.backends.len(), 2);
            assert!(web.backends.iter().all(|b| b.healthy && b.state == "up"));

            // Issue #17: a 3 MiB name is refused naming the field, never echoed back.
            let huge = cl[f2]
                .get_farm(pb::GetFarmRequest {
                    name: "x".repeat(3 << 20),
                })
                .await
                .expect_err("a 3 MiB name");
            assert_eq!(huge.code(), tonic::Code::InvalidArgument, "{huge:?}");
            assert!(huge.message().starts_with("name: "), "{}", huge.message());
            assert!(
                huge.message().len() < 200,
                "a {} byte message",
                huge.message().len()
            );

            // A farm created through a follower lands on every node.
            let api = pb::Farm {
                name: "api".into(),
                vip: vip.clone(),
                ports: "8080-8081".into(),
                protocol: "tcp".into(),
                backends: vec![backend("a1", &ips[0], 1)],
                ..Default::default()
            };
            let w = cl[f1]
                .create_farm(pb::CreateFarmRequest {
                    farm: Some(api.clone()),
                })
                .await
                .expect("create through a follower")
                .into_inner();
            assert_eq!(w.answered_by, f1 as u64 + 1);
            assert!(w.applied_index >= 1);
            for (i, node) in cl.iter().enumerate() {
                let seen = eventually(Duration::from_secs(3), || {
                    let mut client = node.clone();
                    async move {
                        farm_names(&mut client)
                            .await
                            .contains(&"api".to_string())
                            .then_some(())
                    }
                })
                .await;
                assert!(seen.is_some(), "node {i} never saw farm api");
            }
            let again = cl[f2]
                .create_farm(pb::CreateFarmRequest {
                    farm: Some(api.clone()),
                })
                .await;
            assert_eq!(again.unwrap_err().code(), Code::AlreadyExists);

            // Update the farm (backends kept), then its backends one by one.
            let mut moved = api.clone();
            moved.ports = "8090".into();
            moved.backends.clear();
            cl[f2]
                .update_farm(pb::UpdateFarmRequest {
                    farm: Some(moved),
                    replace_backends: false,
                })
                .await
                .expect("update farm");
            cl[f1]
                .add_backend(pb::AddBackendRequest {
                    farm: "api".into(),
                    backend: Some(backend("a2", &ips[1], 2)),
                })
                .await
                .expect("add backend");
            cl[f2]
                .update_backend(pb::UpdateBackendRequest {
                    farm: "api".into(),
                    name: "a2".into(),
                    weight: Some(5),
                    state: Some("drain".into()),
                    priority: Some(3),
                    ..Default::default()
                })
                .await
                .expect("update backend");
            let got = cl[f2]
                .get_farm(pb::GetFarmRequest { name: "api".into() })
                .await
                .unwrap();
            let got = got.into_inner().farm.unwrap();
            assert_eq!(got.ports, "8090");
            assert_eq!(got.backends.len(), 2);
            let a2 = &got.backends[1];
            assert_eq!((a2.weight, a2.state.as_str(), a2.priority), (5, "drain", 3));
            let bl = cl[owner]
                .list_backends(pb::ListBackendsRequest {
                    farm: "api".into(),
                    ..Default::default()
                })
                .await;
            let bl = bl.unwrap().into_inner();
            assert_eq!(
                bl.backends.len(),
                2,
                "the leader has what the follower wrote"
            );
            cl[f1]
                .delete_backend(pb::DeleteBackendRequest {
                    farm: "api".into(),
                    name: "a1".into(),
                })
                .await
                .expect("delete backend");
            let err = cl[f1]
                .delete_backend(pb::DeleteBackendRequest {
                    farm: "api".into(),
                    name: "a1".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound);

            // Two read-modify-writes of one farm at once, through different followers: both
            // land (a conditional write that loses the race is re-read and retried).
            let (mut x, mut y) = (cl[f1].clone(), cl[f2].clone());
            let set_weight = |c: &mut crate::admin_support::Client, name: &str, weight: u32| {
                let mut c = c.clone();
                let name = name.to_string();
                async move {
                    c.update_backend(pb::UpdateBackendRequest {
                        farm: "web".into(),
                        name,
                        weight: Some(weight),
                        ..Default::default()
                    })
                    .await
                }
            };
            let (rx, ry) = tokio::join!(set_weight(&mut x, "b1", 7), set_weight(&mut y, "b2", 9));
            rx.expect("b1 weight");
            ry.expect("b2 weight");
            let both = eventually(Duration::from_secs(3), || {
                let mut client = cl[owner].clone();
                async move {
                    let f = client
                        .get_farm(pb::GetFarmRequest { name: "web".into() })
                        .await
                        .ok()?
                        .into_inner()
                        .farm?;
                    let w: Vec<u32> = f.backends.iter().map(|b| b.weight).collect();
                    (w == vec![7, 9]).then_some(())
                }
            })
            .await;
            assert!(both.is_some(), "a concurrent backend update was lost");

            // Export -> apply is a no-op; exports agree across nodes.
            let export = cl[f1]
                .export(pb::ExportRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(export.answered_by, f1 as u64 + 1);
            let noop = cl[f2]
                .apply(pb::ApplyRequest {
                    config: export.config.clone(),
                    dry_run: false,
                    prune: false,
                })
                .await
                .expect("apply of an export")
                .into_inner();
            assert!(noop.changes.is_empty() && !noop.applied, "{noop:?}");
            let export2 = cl[owner]
                .export(pb::ExportRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(body(&export2.config), body(&export.config));

            // Dry run of a file without `api` and with a heavier backend: a diff, no write.
            let edited = export.config.replacen("weight = 1", "weight = 4", 1);
            let mut file: toml::Table = toml::from_str(&edited).unwrap();
            let farms = file.get_mut("farm").unwrap().as_array_mut().unwrap();
            farms.retain(|f| f.get("name").and_then(|n| n.as_str()) != Some("api"));
            let edited = toml::to_string(&file).unwrap();
            let dry = cl[f1]
                .apply(pb::ApplyRequest {
                    config: edited.clone(),
                    dry_run: true,
                    prune: true,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(!dry.applied);
            let actions: Vec<(&str, &str)> = dry
                .changes
                .iter()
                .map(|c| (c.action.as_str(), c.farm.as_str()))
                .collect();
            assert_eq!(actions.len(), 2, "{:?}", dry.changes);
            assert!(actions.contains(&("delete", "api")), "{actions:?}");
            assert!(
                dry.changes.iter().any(|c| c.action == "update"
                    && c.details.iter().any(|d| d.contains("weight 1 -> 4"))),
                "{:?}",
                dry.changes
            );
            let after_dry = cl[owner]
                .export(pb::ExportRequest {})
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                body(&after_dry.config),
                body(&export.config),
                "the dry run wrote"
            );

            // The real apply, through a follower: one change everywhere.
            let real = cl[f1]
                .apply(pb::ApplyRequest {
                    config: edited.clone(),
                    dry_run: false,
                    prune: true,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(real.applied && real.changes.len() == 2, "{real:?}");
            for (i, node) in cl.iter().enumerate() {
                let gone = eventually(Duration::from_secs(3), || {
                    let mut client = node.clone();
                    async move {
                        (!farm_names(&mut client).await.contains(&"api".to_string())).then_some(())
                    }
                })
                .await;
                assert!(gone.is_some(), "node {i} still has api");
            }
            let again = cl[f2]
                .apply(pb::ApplyRequest {
                    config: edited,
                    dry_run: false,
                    prune: true,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(again.changes.is_empty() && !again.applied, "{again:?}");

            // Delete, then NOT_FOUND.
            cl[f2]
                .delete_farm(pb::DeleteFarmRequest {
                    name: "echo".into(),
                })
                .await
                .expect("delete");
            let err = eventually(Duration::from_secs(3), || {
                let mut client = cl[f1].clone();
                async move {
                    let r = client
                        .delete_farm(pb::DeleteFarmRequest {
                            name: "echo".into(),
                        })
                        .await;
                    r.err().filter(|e| e.code() == Code::NotFound)
                }
            })
            .await;
            assert_eq!(err.map(|e| e.code()), Some(Code::NotFound));

            // Stats: the owner's counters, whoever is asked; or one node's own.
            let s = cl[f1]
                .stats(pb::StatsRequest { node: 0 })
                .await
                .expect("stats")
                .into_inner();
            assert_eq!(
                (s.node, s.vip_owner, s.answered_by),
                (owner_id, true, f1 as u64 + 1)
            );
            assert_eq!(
                s.farms.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
                vec!["web"]
            );
            let own = cl[f1]
                .stats(pb::StatsRequest {
                    node: f2 as u64 + 1,
                })
                .await
                .expect("stats of one node")
                .into_inner();
            assert_eq!((own.node, own.vip_owner), (f2 as u64 + 1, false));
            let err = cl[f1]
                .stats(pb::StatsRequest { node: 9 })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound);

            // Membership refusals that change nothing (the real changes: admin_membership).
            let err = cl[f1]
                .add_member(pb::AddMemberRequest {
                    id: owner_id,
                    address: "198.18.0.250:7100".into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::AlreadyExists);
            let err = cl[f1]
                .remove_member(pb::RemoveMemberRequest { id: 9 })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::NotFound);
            let err = cl[f1]
                .transfer_leader(pb::TransferLeaderRequest { to: 9 })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::FailedPrecondition);
            st.members.len() + sf.members.len()
        });
    // Both statuses came back whole: the closure really ran to its end.
    assert_eq!(calls, 6);

    // The refusals were logged without the token.
    for p in c.procs.iter().flatten() {
        let log = p.read_log();
        assert!(
            !log.contains("not-the-admin-token"),
            "a node logged a presented token"
        );
    }
    let log = c.procs[owner].as_ref().unwrap().read_log();
    assert!(log.contains("refused an admin call"), "no refusal logged");
}
