//! `ListPersistence` and `FlushPersistence` against a real 3-node cluster of `dsrlb`
//! processes, with no traffic: every refusal, table-driven (code, and the field the message
//! starts with), sent to a follower, with no log entry written; then listing and flushing
//! an empty table through every node. Entries made by real clients are
//! `dsrctl_persistence`'s.

use crate::admin_support::{Client, clients, endpoint, in_client};
use crate::common::{ClusterLab, can_run_lab, web_and_echo};
use proto::admin::v1 as pb;
use tonic::Code;

/// One request of the table.
enum Call {
    List(pb::ListPersistenceRequest),
    Flush(pb::FlushPersistenceRequest),
}

async fn send(c: &mut Client, call: Call) -> Result<(), tonic::Status> {
    match call {
        Call::List(r) => c.list_persistence(r).await.map(drop),
        Call::Flush(r) => c.flush_persistence(r).await.map(drop),
    }
}

fn list(farm: &str, client: Option<&str>, limit: u32) -> Call {
    Call::List(pb::ListPersistenceRequest {
        farm: farm.into(),
        client: client.map(str::to_owned),
        limit,
    })
}

fn flush(farm: &str, backend: Option<&str>) -> Call {
    Call::Flush(pb::FlushPersistenceRequest {
        farm: farm.into(),
        backend: backend.map(str::to_owned),
    })
}

async fn last_log_index(c: &mut Client) -> u64 {
    let s = c.status(pb::StatusRequest {}).await.expect("status");
    s.into_inner().last_log_index
}

#[test]
fn refusals_name_their_field_and_an_empty_table_lists_and_flushes_everywhere() {
    if !can_run_lab() {
        return;
    }
    let c = ClusterLab::start(3, 2, &web_and_echo(2), &[]);
    let owner = c.sole_owner();
    let (f1, f2) = ((owner + 1) % 3, (owner + 2) % 3);
    let id = |i: usize| i as u64 + 1;
    let endpoints: Vec<String> = (0..3).map(|i| endpoint(&c.lab, i)).collect();
    let token = c.lab.admin_token().expect("admin token");

    // (what, the call, the code, the field the message starts with or a phrase it holds)
    let cases: Vec<(&str, Call, Code, &str)> = vec![
        (
            "list: no farm",
            list("", None, 0),
            Code::InvalidArgument,
            "farm: ",
        ),
        (
            "list: empty client",
            list("web", Some(""), 0),
            Code::InvalidArgument,
            "client: ",
        ),
        (
            "list: client not an address",
            list("web", Some("198.18.0.300"), 0),
            Code::InvalidArgument,
            "client: ",
        ),
        (
            "list: client a malformed IPv6 address",
            list("web", Some("2001:db8::1::2"), 0),
            Code::InvalidArgument,
            "client: ",
        ),
        (
            "list: limit over the maximum",
            list("web", None, 100_001),
            Code::InvalidArgument,
            "limit: ",
        ),
        (
            "list: a bad field is judged before the farm is looked up",
            list("nope", Some("x"), 0),
            Code::InvalidArgument,
            "client: ",
        ),
        (
            "list: unknown farm",
            list("nope", None, 0),
            Code::NotFound,
            "\"nope\"",
        ),
        (
            "list: farm without persistence",
            list("echo", None, 0),
            Code::FailedPrecondition,
            "persistence = \"none\"",
        ),
        (
            "flush: no farm",
            flush("", None),
            Code::InvalidArgument,
            "farm: ",
        ),
        (
            "flush: empty backend",
            flush("web", Some("")),
            Code::InvalidArgument,
            "backend: ",
        ),
        (
            "flush: unknown farm",
            flush("nope", None),
            Code::NotFound,
            "\"nope\"",
        ),
        (
            "flush: unknown backend",
            flush("web", Some("zz")),
            Code::NotFound,
            "\"zz\"",
        ),
        (
            "flush: farm without persistence",
            flush("echo", Some("b1")),
            Code::FailedPrecondition,
            "persistence = \"none\"",
        ),
    ];

    let failures = in_client(&c.lab, || async move {
        let mut cl = clients(&endpoints, &token).await;
        let mut failures = Vec::new();

        // web keeps source-IP persistence from here on; echo has none.
        let web = cl[f2]
            .get_farm(pb::GetFarmRequest { name: "web".into() })
            .await
            .expect("get web")
            .into_inner()
            .farm
            .expect("farm");
        cl[f2]
            .update_farm(pb::UpdateFarmRequest {
                farm: Some(pb::Farm {
                    persistence: "srcip".into(),
                    persistence_ttl: "120s".into(),
                    backends: Vec::new(),
                    ..web
                }),
                replace_backends: false,
            })
            .await
            .expect("web becomes persistent");

        let before = last_log_index(&mut cl[owner]).await;
        for (what, call, code, wanted) in cases {
            match send(&mut cl[f1], call).await {
                Ok(()) => failures.push(format!("{what}: accepted")),
                Err(s) if s.code() != code => failures.push(format!(
                    "{what}: {:?} {:?}, wanted {code:?}",
                    s.code(),
                    s.message()
                )),
                Err(s) => {
                    let ok = if wanted.ends_with(": ") {
                        s.message().starts_with(wanted)
                    } else {
                        s.message().contains(wanted)
                    };
                    if !ok {
                        failures.push(format!("{what}: {:?} lacks {wanted:?}", s.message()));
                    }
                }
            }
        }
        let after = last_log_index(&mut cl[owner]).await;
        if after != before {
            failures.push(format!("refusals grew the log from {before} to {after}"));
        }

        // An empty table: every node lists nothing, with or without a client.
        for (i, node) in cl.iter_mut().enumerate() {
            for client in [None, Some("198.18.0.41".to_string())] {
                let r = node
                    .list_persistence(pb::ListPersistenceRequest {
                        farm: "web".into(),
                        client: client.clone(),
                        limit: 0,
                    })
                    .await
                    .expect("list an empty table")
                    .into_inner();
                let want = pb::ListPersistenceReply {
                    answered_by: id(i),
                    entries: Vec::new(),
                    total: 0,
                    truncated: false,
                };
                if r != want {
                    failures.push(format!("node {i} ({client:?}): {r:?}, wanted {want:?}"));
                }
            }
        }

        // Flushing it is a write like the others: taken by a follower, applied by the leader
        // (one log entry each), and it changes nothing.
        for (node, backend) in [(f1, None), (f2, Some("b1".to_string()))] {
            let before = last_log_index(&mut cl[owner]).await;
            let w = cl[node]
                .flush_persistence(pb::FlushPersistenceRequest {
                    farm: "web".into(),
                    backend: backend.clone(),
                })
                .await
                .expect("flush an empty table")
                .into_inner();
            if w.answered_by != id(node) || w.applied_index <= before {
                failures.push(format!(
                    "flush {backend:?} through node {node}: {w:?} (log was at {before})"
                ));
            }
        }
        for (i, node) in cl.iter_mut().enumerate() {
            let r = node
                .list_persistence(pb::ListPersistenceRequest {
                    farm: "web".into(),
                    client: None,
                    limit: 1,
                })
                .await
                .expect("list after the flush")
                .into_inner();
            if !r.entries.is_empty() || r.total != 0 || r.truncated {
                failures.push(format!("node {i} after the flush: {r:?}"));
            }
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
