//! `ListPersistence` and `FlushPersistence`: the admin API's view of the replicated
//! source-IP persistence table (`cluster::PinTable`). Requests are checked field by field
//! before the cluster is asked anything; the farm-level refusals (unknown farm or backend, a
//! farm without persistence) are judged on a replica that has caught up with the leader.
//!
//! Expiry in a listing is by the answering node's log clock ([`crate::persist::LogClock`],
//! the clock expiry itself runs on) against the replicated `seen_ms`, never by its wall
//! clock, which may have been stepped: the table only drops an entry when the leader's next
//! batch applies at or past `seen_ms + ttl`, so an entry may be listed as due
//! (`expires_in_ms = 0`) for a moment.

use super::{AdminContext, cluster_status};
use cluster::{ClusterState, Command, Farm, Persistence};
use proto::admin::v1 as pb;
use std::net::IpAddr;
use std::time::Duration;
use tonic::Status;

// The limits are the API's (dsrctl checks them too). LIST_MAX matters here: the reply is
// built under the table's lock, which the state machine waits for, and must stay well
// inside gRPC's message size.
use proto::admin::{PERSISTENCE_LIST_DEFAULT as LIST_DEFAULT, PERSISTENCE_LIST_MAX as LIST_MAX};

/// A checked `ListPersistenceRequest`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct ListArgs {
    farm: String,
    client: Option<IpAddr>,
    limit: usize,
}

fn farm_field(farm: &str) -> Result<(), Status> {
    if farm.is_empty() {
        return Err(Status::invalid_argument("farm: is required"));
    }
    Ok(())
}

pub(super) fn list_args(req: &pb::ListPersistenceRequest) -> Result<ListArgs, Status> {
    farm_field(&req.farm)?;
    let client = match &req.client {
        None => None,
        Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
            Status::invalid_argument(format!(
                "client: {:?} is not an IPv4 or IPv6 address (leave it unset to list every client)",
                crate::config::shown(text)
            ))
        })?),
    };
    let limit = match req.limit {
        0 => LIST_DEFAULT,
        n if n > LIST_MAX => {
            return Err(Status::invalid_argument(format!(
                "limit: {n} is over the maximum of {LIST_MAX}"
            )));
        }
        n => n,
    };
    Ok(ListArgs {
        farm: req.farm.clone(),
        client,
        limit: limit as usize,
    })
}

pub(super) fn flush_args(req: &pb::FlushPersistenceRequest) -> Result<(), Status> {
    farm_field(&req.farm)?;
    if req.backend.as_deref() == Some("") {
        return Err(Status::invalid_argument(
            "backend: is empty (leave it unset to flush every backend's entries)",
        ));
    }
    Ok(())
}

/// `farm` and its TTL, or why it has no persistence table to look at.
fn persistent<'a>(state: &'a ClusterState, farm: &str) -> Result<(&'a Farm, Duration), Status> {
    let f = state.farms.get(farm).ok_or_else(|| {
        Status::not_found(format!(
            "farm {:?} does not exist",
            crate::config::shown(farm)
        ))
    })?;
    match f.persistence {
        Persistence::SrcIp { ttl } => Ok((f, ttl)),
        Persistence::None => Err(Status::failed_precondition(format!(
            "farm {farm:?} has persistence = \"none\", so it keeps no persistence entries; \
             set persistence = \"srcip\" to use them"
        ))),
    }
}

/// Time left at `now_ms` for an entry seen at `seen_ms` with `ttl`; 0 once due.
fn expires_in_ms(seen_ms: u64, ttl: Duration, now_ms: u64) -> u64 {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    seen_ms.saturating_add(ttl_ms).saturating_sub(now_ms)
}

pub(super) async fn list(
    ctx: &AdminContext,
    req: &pb::ListPersistenceRequest,
) -> Result<pb::ListPersistenceReply, Status> {
    let args = list_args(req)?;
    ctx.sync().await?;
    let (_, ttl) = persistent(&ctx.state(), &args.farm)?;
    let (rows, total) = ctx
        .cluster
        .pins()
        .lock()
        .list(&args.farm, args.client, args.limit);
    let now = ctx.log_clock.read();
    Ok(pb::ListPersistenceReply {
        answered_by: ctx.id(),
        truncated: args.client.is_none() && rows.len() < total,
        total: total as u64,
        entries: rows
            .into_iter()
            .map(|r| pb::PersistenceEntry {
                client: r.client.to_string(),
                expires_in_ms: expires_in_ms(r.seen_ms, ttl, now),
                backend: r.backend,
                last_seen_unix_ms: r.seen_ms,
            })
            .collect(),
    })
}

pub(super) async fn flush(
    ctx: &AdminContext,
    req: pb::FlushPersistenceRequest,
) -> Result<pb::WriteReply, Status> {
    ctx.writable()?;
    flush_args(&req)?;
    // Judged on a caught-up replica, like every write: a farm made persistent a moment ago
    // through another node is not refused.
    ctx.sync().await?;
    let state = ctx.state();
    let (farm, _) = persistent(&state, &req.farm)?;
    if let Some(b) = &req.backend
        && !farm.backends.iter().any(|x| &x.name == b)
    {
        return Err(Status::not_found(format!(
            "farm {:?} has no backend {:?}",
            crate::config::shown(&req.farm),
            crate::config::shown(b)
        )));
    }
    tracing::info!(farm = %req.farm, backend = ?req.backend, "flushing persistence entries");
    // Not a conditional write: a flush has nothing to lose to a concurrent change (a farm
    // that stopped being persistent meanwhile has no entries left to flush), and an empty
    // table is a flush that changed nothing, not a lost race to retry.
    let applied = ctx
        .cluster
        .write(Command::FlushPins {
            farm: req.farm,
            backend: req.backend,
        })
        .await
        .map_err(cluster_status)?;
    ctx.caught_up(applied.index).await;
    Ok(pb::WriteReply {
        applied_index: applied.index,
        answered_by: ctx.id(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use tonic::Code;

    fn field_of(s: &Status) -> (Code, &str) {
        (s.code(), s.message().split(": ").next().unwrap_or(""))
    }

    #[test]
    fn list_requests_are_checked_field_by_field() {
        let req = |farm: &str, client: Option<&str>, limit: u32| pb::ListPersistenceRequest {
            farm: farm.into(),
            client: client.map(str::to_owned),
            limit,
        };
        assert_eq!(
            list_args(&req("web", None, 0)).expect("defaults"),
            ListArgs {
                farm: "web".into(),
                client: None,
                limit: LIST_DEFAULT as usize
            }
        );
        assert_eq!(
            list_args(&req("web", Some("198.18.0.41"), LIST_MAX)).expect("max"),
            ListArgs {
                farm: "web".into(),
                client: Some(Ipv4Addr::new(198, 18, 0, 41).into()),
                limit: LIST_MAX as usize
            }
        );
        assert_eq!(
            list_args(&req("web", Some(" 2001:db8::41 "), 1))
                .expect("IPv6")
                .client,
            Some("2001:db8::41".parse().unwrap())
        );
        for (r, field) in [
            (req("", None, 0), "farm"),
            (req("web", Some(""), 0), "client"),
            (req("web", Some("198.18.0"), 0), "client"),
            (req("web", Some("2001:db8::1::2"), 0), "client"),
            (req("web", None, LIST_MAX + 1), "limit"),
        ] {
            let e = list_args(&r).expect_err(&format!("{r:?}"));
            assert_eq!(field_of(&e), (Code::InvalidArgument, field), "{e:?}");
        }
    }

    #[test]
    fn flush_requests_are_checked_field_by_field() {
        let ok = pb::FlushPersistenceRequest {
            farm: "web".into(),
            backend: Some("b1".into()),
        };
        assert!(flush_args(&ok).is_ok());
        let e = flush_args(&pb::FlushPersistenceRequest {
            farm: String::new(),
            backend: None,
        })
        .expect_err("no farm");
        assert_eq!(field_of(&e), (Code::InvalidArgument, "farm"));
        let e = flush_args(&pb::FlushPersistenceRequest {
            backend: Some(String::new()),
            ..ok
        })
        .expect_err("empty backend");
        assert_eq!(field_of(&e), (Code::InvalidArgument, "backend"));
    }

    #[test]
    fn expiry_counts_down_to_zero() {
        let ttl = Duration::from_secs(60);
        assert_eq!(expires_in_ms(1_000, ttl, 1_000), 60_000);
        assert_eq!(expires_in_ms(1_000, ttl, 31_000), 30_000);
        assert_eq!(expires_in_ms(1_000, ttl, 61_000), 0);
        assert_eq!(expires_in_ms(1_000, ttl, 99_000), 0);
        assert_eq!(expires_in_ms(u64::MAX, ttl, 0), u64::MAX);
    }

    #[test]
    fn farms_without_persistence_are_a_failed_precondition() {
        let mut state = ClusterState::default();
        let farm = |name: &str, persistence| cluster::Farm {
            name: name.into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port_first: 80,
            port_last: 80,
            protocol: cluster::Protocol::Tcp,
            scheduler: cluster::Scheduler::Maglev,
            limits: Default::default(),
            maglev_table_size: 307,
            persistence,
            check: None,
            backends: Vec::new(),
        };
        let ttl = Duration::from_secs(30);
        state
            .farms
            .insert("web".into(), farm("web", Persistence::SrcIp { ttl }).into());
        state
            .farms
            .insert("dns".into(), farm("dns", Persistence::None).into());
        assert_eq!(persistent(&state, "web").expect("srcip").1, ttl);
        let e = persistent(&state, "dns").expect_err("none");
        assert_eq!(e.code(), Code::FailedPrecondition);
        assert!(e.message().contains("persistence = \"none\""), "{e:?}");
        assert_eq!(
            persistent(&state, "nope").expect_err("unknown").code(),
            Code::NotFound
        );
    }
}
