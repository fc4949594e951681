//! The entry point of the peer-message fuzz target (`node/fuzz`, docs/design.md#fuzzing):
//! every shape this crate decodes from a peer or from its store, decoded from arbitrary bytes
//! with the crate's own codec, and the commands among them validated and applied as the state
//! machine would. Not an API: the wire types are crate-private, so the decoding has to
//! happen in here.

use crate::codec;
use crate::elector::{PreVote, PreVoteReply};
use crate::forward::{Forward, ForwardReply, Refused};
use crate::persist::{NoSink, PinTable};
use crate::state::{ClusterState, Command};
use crate::storage_sm::{StoredSnapshot, decode_payload};
use crate::types::{NodeId, TypeConfig};
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{Entry, EntryPayload, LogId, Vote};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `bytes[1..]` as the message `bytes[0]` selects; must never panic, whatever the
/// bytes. A decoded value must encode, and what it encodes to must decode and encode to the
/// same bytes again (the codec is a function of the value).
pub fn peer_message(bytes: &[u8]) {
    let Some((&kind, data)) = bytes.split_first() else {
        return;
    };
    match kind % 14 {
        // What the peer service decodes from a request (`server.rs`).
        0 => {
            roundtrip::<VoteRequest<NodeId>>(data);
        }
        1 => {
            if let Some(req) = roundtrip::<AppendEntriesRequest<TypeConfig>>(data) {
                replay(&req.entries);
            }
        }
        2 => {
            if let Some(req) = roundtrip::<InstallSnapshotRequest<TypeConfig>>(data) {
                snapshot_payload(&req.data);
            }
        }
        3 => {
            roundtrip::<PreVote>(data);
        }
        4 => {
            if let Some(Forward::Write(cmd)) = roundtrip::<Forward>(data) {
                replay_commands(std::slice::from_ref(&*cmd));
            }
        }
        // What a node decodes from a peer's reply (`network.rs`, `elector.rs`, `forward.rs`).
        5 => {
            roundtrip::<Result<VoteResponse<NodeId>, RaftError<NodeId>>>(data);
        }
        6 => {
            roundtrip::<Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>>(data);
        }
        7 => {
            roundtrip::<
                Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
            >(data);
        }
        8 => {
            roundtrip::<PreVoteReply>(data);
        }
        9 => {
            roundtrip::<Result<ForwardReply, Refused>>(data);
        }
        // What the store holds (`storage.rs`, `storage_sm.rs`), sealed or not.
        10 => {
            if let Ok(e) = codec::unseal::<Entry<TypeConfig>>(data) {
                replay(std::slice::from_ref(&e));
            }
            if let Some(e) = roundtrip::<Entry<TypeConfig>>(data) {
                replay(std::slice::from_ref(&e));
            }
        }
        11 => {
            let _vote = codec::unseal::<Vote<NodeId>>(data);
            let _committed = codec::unseal::<Option<LogId<NodeId>>>(data);
            roundtrip::<Vote<NodeId>>(data);
        }
        12 => {
            if let Ok(s) = codec::unseal::<StoredSnapshot>(data) {
                snapshot_payload(&s.data);
            }
        }
        _ => snapshot_payload(data),
    }
}

/// Decodes `data` as a `T`; if it decodes, checks that encoding is a function of the value.
fn roundtrip<T: Serialize + DeserializeOwned>(data: &[u8]) -> Option<T> {
    let value: T = codec::decode(data).ok()?;
    let once = codec::encode(&value).expect("a decoded value encodes");
    let again: T = codec::decode(&once).expect("an encoded value decodes");
    let twice = codec::encode(&again).expect("a decoded value encodes");
    assert_eq!(
        once, twice,
        "encode(decode(encode(v))) differs from encode(v)"
    );
    Some(value)
}

/// A snapshot payload as an installing node reads it, its pins reconciled with its farms.
fn snapshot_payload(data: &[u8]) {
    if let Ok((state, mut pins)) = decode_payload(data) {
        pins.reconcile(&state, &NoSink);
    }
}

/// The commands of `entries`, as the state machine would apply them.
fn replay(entries: &[Entry<TypeConfig>]) {
    let cmds: Vec<Command> = entries
        .iter()
        .filter_map(|e| match &e.payload {
            EntryPayload::Normal(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    replay_commands(&cmds);
}

/// Applies `cmds` to an empty state and persistence table as `storage_sm` does (a follower
/// applies whatever the leader sent, valid or not). While every command so far passed
/// [`Command::validate`] (every write a node proposes does), two invariants hold: every farm
/// of the state is valid, and every health verdict names a backend its farm has.
fn replay_commands(cmds: &[Command]) {
    let mut state = ClusterState::default();
    let mut pins = PinTable::default();
    let mut all_valid = true;
    for (i, cmd) in cmds.iter().enumerate() {
        all_valid &= cmd.validate().is_ok();
        match cmd {
            Command::Pin(batch) => {
                pins.apply_batch(&state, batch, &NoSink);
            }
            Command::FlushPins { farm, backend } => {
                pins.flush(farm, backend.as_deref(), &NoSink);
            }
            _ => {
                if state.apply(cmd, i as u64) {
                    pins.reconcile(&state, &NoSink);
                }
            }
        }
        if !all_valid {
            continue;
        }
        for f in state.farms.values() {
            assert!(
                f.validate().is_ok(),
                "invalid farm {:?} in the state",
                f.name
            );
        }
        for (farm, verdicts) in &state.health {
            let f = state
                .farms
                .get(farm)
                .expect("a verdict of a farm the state has");
            for b in verdicts.keys() {
                assert!(
                    f.backends.iter().any(|fb| &fb.name == b),
                    "a verdict of a backend farm {farm:?} does not have"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid messages of each shape, prefixed with the byte [`peer_message`] reads them by: the
    /// seed corpus of the fuzz target (`node/fuzz/corpus/peer_message`, written by
    /// `seeds_decode_and_pass` when `DSRLB_FUZZ_SEEDS` names a directory).
    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        use crate::persist::{FarmPinWrites, PinBatch, PinWrite};
        use crate::state::{
            Backend, BackendState, Farm, Persistence, Protocol, Scheduler, Verdict,
        };
        use crate::storage_sm::{SNAPSHOT_FORMAT, SnapshotPayloadRef};
        use openraft::{CommittedLeaderId, Membership, SnapshotMeta, StoredMembership};
        use std::collections::BTreeSet;
        use std::net::Ipv4Addr;
        use std::time::Duration;

        let farm = Farm {
            name: "web".into(),
            vip: Ipv4Addr::new(198, 18, 0, 100).into(),
            port_first: 80,
            port_last: 80,
            protocol: Protocol::Tcp,
            scheduler: Scheduler::Maglev,
            persistence: Persistence::SrcIp {
                ttl: Duration::from_secs(60),
            },
            check: None,
            backends: ["b1", "b2"]
                .iter()
                .zip(1u8..)
                .map(|(n, i)| Backend {
                    name: (*n).into(),
                    ip: Ipv4Addr::new(198, 18, 1, i).into(),
                    mac: Some([2, 0, 0, 0, 1, i]),
                    weight: 1,
                    state: BackendState::Up,
                    priority: 0,
                })
                .collect(),
            limits: Default::default(),
            maglev_table_size: 251,
        };
        let mut narrow = farm.clone();
        narrow.backends.truncate(1);
        let pin = Command::Pin(PinBatch {
            now_ms: 1_000,
            farms: vec![FarmPinWrites {
                farm: "web".into(),
                writes: vec![PinWrite {
                    client: Ipv4Addr::new(198, 18, 2, 1).into(),
                    backend: "b2".into(),
                    seen_ms: 900,
                    new: true,
                }],
            }],
        });
        let commands = [
            Command::Bootstrap {
                farms: vec![farm.clone()],
                settings: Default::default(),
            },
            Command::SetHealthMany(vec![Verdict {
                farm: "web".into(),
                backend: "b1".into(),
                up: true,
            }]),
            pin.clone(),
            Command::PutFarmIf {
                expected: Some(farm.clone()),
                farm: narrow.clone(),
            },
            Command::FlushPins {
                farm: "web".into(),
                backend: Some("b2".into()),
            },
            Command::ReplaceFarms {
                expected: vec![narrow],
                farms: vec![farm.clone()],
            },
            Command::DeleteFarm { name: "web".into() },
        ];
        let log_id = |index| LogId::new(CommittedLeaderId::new(1, 1), index);
        let membership = Membership::new(vec![BTreeSet::from([1u64, 2, 3])], None);
        let mut entries: Vec<Entry<TypeConfig>> = vec![Entry {
            log_id: log_id(1),
            payload: EntryPayload::Membership(membership.clone()),
        }];
        entries.extend(commands.iter().zip(2u64..).map(|(c, i)| Entry {
            log_id: log_id(i),
            payload: EntryPayload::Normal(c.clone()),
        }));
        let vote = Vote::new_committed(1, 1);

        let mut state = ClusterState::default();
        state.apply(&commands[0], 2);
        let mut pins = PinTable::default();
        if let Command::Pin(b) = &pin {
            pins.apply_batch(&state, b, &NoSink);
        }
        let payload = codec::encode(&SnapshotPayloadRef {
            format: SNAPSHOT_FORMAT,
            state: &state,
            pins: &pins,
        })
        .expect("encodes");
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(4)),
            last_membership: StoredMembership::new(Some(log_id(1)), membership),
            snapshot_id: "1-1-4-1".into(),
        };

        let tagged = |kind: u8, body: Vec<u8>| [vec![kind], body].concat();
        let enc = |v: &dyn erased::Encode| v.encode();
        vec![
            (
                "vote",
                tagged(0, enc(&VoteRequest::new(vote, Some(log_id(4))))),
            ),
            (
                "append",
                tagged(
                    1,
                    enc(&AppendEntriesRequest::<TypeConfig> {
                        vote,
                        prev_log_id: None,
                        entries: entries.clone(),
                        leader_commit: Some(log_id(1)),
                    }),
                ),
            ),
            (
                "install",
                tagged(
                    2,
                    enc(&InstallSnapshotRequest::<TypeConfig> {
                        vote,
                        meta: meta.clone(),
                        offset: 0,
                        data: payload.clone(),
                        done: true,
                    }),
                ),
            ),
            (
                "prevote",
                tagged(
                    3,
                    enc(&PreVote {
                        candidate: 2,
                        last_log_id: Some(log_id(4)),
                    }),
                ),
            ),
            (
                "forward",
                tagged(4, enc(&Forward::Write(Box::new(commands[0].clone())))),
            ),
            (
                "sealed-entry",
                tagged(10, codec::seal(&entries[1]).expect("encodes")),
            ),
            (
                "sealed-vote",
                tagged(11, codec::seal(&vote).expect("encodes")),
            ),
            (
                "sealed-snapshot",
                tagged(
                    12,
                    codec::seal(&StoredSnapshot {
                        meta,
                        data: payload.clone(),
                    })
                    .expect("encodes"),
                ),
            ),
            ("snapshot-payload", tagged(13, payload)),
        ]
    }

    /// Encoding behind a `dyn`, so [`seeds`] can list values of different types.
    mod erased {
        pub trait Encode {
            fn encode(&self) -> Vec<u8>;
        }
        impl<T: serde::Serialize> Encode for T {
            fn encode(&self) -> Vec<u8> {
                crate::codec::encode(self).expect("encodes")
            }
        }
    }

    /// Every seed decodes as what it says it is and passes the target; with
    /// `DSRLB_FUZZ_SEEDS=<dir>` they are written there (`seed-<name>`).
    #[test]
    fn seeds_decode_and_pass() {
        let dir = std::env::var_os("DSRLB_FUZZ_SEEDS");
        for (name, bytes) in seeds() {
            peer_message(&bytes);
            let ok = match bytes[0] {
                0 => codec::decode::<VoteRequest<NodeId>>(&bytes[1..]).is_ok(),
                1 => codec::decode::<AppendEntriesRequest<TypeConfig>>(&bytes[1..]).is_ok(),
                2 => codec::decode::<InstallSnapshotRequest<TypeConfig>>(&bytes[1..]).is_ok(),
                3 => codec::decode::<PreVote>(&bytes[1..]).is_ok(),
                4 => codec::decode::<Forward>(&bytes[1..]).is_ok(),
                10 => codec::unseal::<Entry<TypeConfig>>(&bytes[1..]).is_ok(),
                11 => codec::unseal::<Vote<NodeId>>(&bytes[1..]).is_ok(),
                12 => codec::unseal::<StoredSnapshot>(&bytes[1..])
                    .is_ok_and(|s| decode_payload(&s.data).is_ok()),
                _ => decode_payload(&bytes[1..]).is_ok(),
            };
            assert!(ok, "seed {name} does not decode");
            if let Some(d) = &dir {
                std::fs::write(std::path::Path::new(d).join(format!("seed-{name}")), &bytes)
                    .expect("write a seed");
            }
        }
    }
}
