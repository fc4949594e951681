//! The state machine: the applied [`ClusterState`] in memory, published to the node through a
//! `watch` channel; the persistence [`PinTable`] beside it, mutated in place and mirrored to
//! the node's [`PinSink`] entry by entry; and their snapshot on disk (table `snapshot` of the
//! same redb file as the log, see `storage.rs`).
//!
//! # Durability
//! The applied state itself is not written on every apply: it is a pure function of the log,
//! so after a restart it is rebuilt from the last snapshot plus the log entries after it
//! (openraft re-applies up to the saved committed index at start, and the rest once a leader
//! announces its commit index). A snapshot is committed to redb with `Durability::Immediate`
//! before openraft learns it exists, and openraft purges only log entries a snapshot covers,
//! so at every instant snapshot + log on disk contain every committed entry.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it
// here would only add a conversion at every trait boundary.
#![allow(clippy::result_large_err)]

use crate::codec;
use crate::persist::{PinSink, PinTable};
use crate::state::{ClusterState, Command};
use crate::storage::{any, blocking};
use crate::types::{Applied, Node, NodeId, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{
    Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The current snapshot under key `current`: bincode [`StoredSnapshot`].
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const CURRENT: &str = "current";

/// Version of the snapshot payload layout, checked on install and load.
pub(crate) const SNAPSHOT_FORMAT: u32 = 2;

type StResult<T> = Result<T, StorageError<NodeId>>;

/// The receiver of the applied farm state.
pub type StateWatch = watch::Receiver<Arc<ClusterState>>;

/// The snapshot payload: what a fresh node needs to take over the state.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload {
    format: u32,
    state: ClusterState,
    pins: PinTable,
}

/// The persistence table, shared by the state machine (the only writer) and the node's
/// readers (admin listing, metrics, the batcher). Control plane only: the datapath reads its
/// own mirror, fed through the [`PinSink`].
#[derive(Clone, Default)]
pub struct Pins(Arc<Mutex<PinTable>>);

impl std::fmt::Debug for Pins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pins").finish_non_exhaustive()
    }
}

impl Pins {
    /// The table, locked; hold it briefly (the state machine waits meanwhile).
    pub fn lock(&self) -> MutexGuard<'_, PinTable> {
        // A panic while holding the lock left a table that applying has not finished with;
        // it is still the best view there is.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`SnapshotPayload`] by reference, so encoding copies nothing first (same bytes).
#[derive(Serialize)]
pub(crate) struct SnapshotPayloadRef<'a> {
    pub(crate) format: u32,
    pub(crate) state: &'a ClusterState,
    pub(crate) pins: &'a PinTable,
}

/// A snapshot as stored on disk: openraft's metadata and the payload bytes.
#[derive(Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    pub(crate) meta: SnapshotMeta<NodeId, Node>,
    pub(crate) data: Vec<u8>,
}

/// The state machine handed to openraft.
pub struct StateMachineStore {
    db: Arc<Database>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    state: Arc<ClusterState>,
    pins: Pins,
    sink: Arc<dyn PinSink>,
    publish: watch::Sender<Arc<ClusterState>>,
    /// Distinguishes snapshots built at the same log id (e.g. after a restart).
    builds: u64,
}

/// Builds a snapshot from the payload encoded when openraft asked for the builder (at the
/// applied index of that moment), so applying goes on while the snapshot is written.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    data: Result<Vec<u8>, String>,
    build: u64,
}

pub(crate) fn decode_payload(
    bytes: &[u8],
) -> Result<(ClusterState, PinTable), StorageIOError<NodeId>> {
    let p: SnapshotPayload =
        codec::decode(bytes).map_err(|e| StorageIOError::read_snapshot(None, any(e)))?;
    if p.format != SNAPSHOT_FORMAT {
        return Err(StorageIOError::read_snapshot(
            None,
            openraft::AnyError::error(format!(
                "snapshot format {} is not {SNAPSHOT_FORMAT}",
                p.format
            )),
        ));
    }
    let mut pins = p.pins;
    pins.restore();
    Ok((p.state, pins))
}

fn read_stored(db: &Database) -> Result<Option<StoredSnapshot>, StorageIOError<NodeId>> {
    let r = |e: redb::Error| StorageIOError::read_snapshot(None, any(e));
    let txn = db.begin_read().map_err(|e| r(e.into()))?;
    let table = txn.open_table(SNAPSHOT).map_err(|e| r(e.into()))?;
    let Some(v) = table.get(CURRENT).map_err(|e| r(e.into()))? else {
        return Ok(None);
    };
    let stored =
        codec::unseal(v.value()).map_err(|e| StorageIOError::read_snapshot(None, any(e)))?;
    Ok(Some(stored))
}

/// Reads the stored snapshot, if any, checking its checksum and decoding its payload (see
/// `storage::verify`).
pub(crate) fn verify(db: &Database) -> Result<(), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let Some(table) = crate::storage::optional(txn.open_table(SNAPSHOT))? else {
        return Ok(());
    };
    let Some(v) = table.get(CURRENT).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let s: StoredSnapshot = codec::unseal(v.value()).map_err(|e| format!("snapshot: {e}"))?;
    decode_payload(&s.data).map_err(|e| format!("snapshot payload: {e}"))?;
    Ok(())
}

fn write_stored(db: &Database, stored: &StoredSnapshot) -> Result<(), StorageIOError<NodeId>> {
    let sig = Some(stored.meta.signature());
    let w = |e: redb::Error| StorageIOError::write_snapshot(sig.clone(), any(e));
    let bytes =
        codec::seal(stored).map_err(|e| StorageIOError::write_snapshot(sig.clone(), any(e)))?;
    // Default durability is Immediate: the snapshot is on disk before openraft may purge.
    let txn = db.begin_write().map_err(|e| w(e.into()))?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(|e| w(e.into()))?;
        table
            .insert(CURRENT, bytes.as_slice())
            .map_err(|e| w(e.into()))?;
    }
    txn.commit().map_err(|e| w(e.into()))
}

impl StateMachineStore {
    /// Loads the last snapshot (if any) as the starting state; openraft re-applies the log
    /// after it. Returns the store, the receiver the node watches and the persistence table.
    pub fn open(db: Arc<Database>, sink: Arc<dyn PinSink>) -> StResult<(Self, StateWatch, Pins)> {
        {
            let w = |e: redb::Error| StorageIOError::write_snapshot(None, any(e));
            let txn = db.begin_write().map_err(|e| w(e.into()))?;
            txn.open_table(SNAPSHOT).map_err(|e| w(e.into()))?;
            txn.commit().map_err(|e| w(e.into()))?;
        }
        let (last_applied, membership, (state, table)) = match read_stored(&db)? {
            Some(s) => (
                s.meta.last_log_id,
                s.meta.last_membership.clone(),
                decode_payload(&s.data)?,
            ),
            None => (
                None,
                StoredMembership::default(),
                (ClusterState::default(), PinTable::default()),
            ),
        };
        sink.reset(&table);
        let pins = Pins(Arc::new(Mutex::new(table)));
        let state = Arc::new(state);
        let (publish, rx) = watch::channel(state.clone());
        Ok((
            StateMachineStore {
                db,
                last_applied,
                membership,
                state,
                pins: pins.clone(),
                sink,
                publish,
                builds: 0,
            },
            rx,
            pins,
        ))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StResult<Snapshot<TypeConfig>> {
        let data = std::mem::replace(&mut self.data, Ok(Vec::new()))
            .map_err(|e| StorageIOError::write_snapshot(None, openraft::AnyError::error(e)))?;
        let snapshot_id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.build),
            None => format!("0-0-{}", self.build),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        let stored = blocking(move || write_stored(&db, &stored).map(|()| stored)).await?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = stored.data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let mut replies = Vec::new();
        let mut any_change = false;
        for entry in entries {
            let index = entry.log_id.index;
            self.last_applied = Some(entry.log_id);
            let changed = match entry.payload {
                EntryPayload::Blank => false,
                EntryPayload::Normal(Command::Pin(batch)) => {
                    self.pins
                        .lock()
                        .apply_batch(&self.state, &batch, &*self.sink)
                }
                EntryPayload::Normal(Command::FlushPins { farm, backend }) => self
                    .pins
                    .lock()
                    .flush(&farm, backend.as_deref(), &*self.sink),
                EntryPayload::Normal(cmd) => {
                    let changed = Arc::make_mut(&mut self.state).apply(&cmd, index);
                    if changed {
                        self.pins.lock().reconcile(&self.state, &*self.sink);
                    }
                    any_change |= changed;
                    changed
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    false
                }
            };
            replies.push(Applied { index, changed });
        }
        if any_change {
            // The node rebuilds its tables from this; one publish per batch is enough.
            self.publish.send_replace(self.state.clone());
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builds += 1;
        // Encoded here, between two applies: the pins are mutated in place, so this is the
        // only moment they match `last_applied`. (Tens of ms for a million pins.)
        let data = {
            let pins = self.pins.lock();
            codec::encode(&SnapshotPayloadRef {
                format: SNAPSHOT_FORMAT,
                state: &self.state,
                pins: &pins,
            })
            .map_err(|e| e.to_string())
        };
        SnapshotBuilder {
            db: self.db.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            data,
            build: self.builds,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StResult<()> {
        let data = snapshot.into_inner();
        let (state, table) = decode_payload(&data)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.db.clone();
        blocking(move || write_stored(&db, &stored)).await?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.state = Arc::new(state);
        {
            let mut pins = self.pins.lock();
            *pins = table;
            self.sink.reset(&pins);
        }
        self.publish.send_replace(self.state.clone());
        tracing::info!(snapshot = %meta.snapshot_id, "snapshot installed");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StResult<Option<Snapshot<TypeConfig>>> {
        let db = self.db.clone();
        let stored = blocking(move || read_stored(&db)).await?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
