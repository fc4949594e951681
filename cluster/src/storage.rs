//! The Raft log and vote on disk: one redb database file (`<data_dir>/raft.redb`) shared with
//! the state machine's snapshot (`storage_sm.rs`).
//!
//! # What is fsynced when, and why committed entries survive kill -9
//! - `append` writes the entries in one redb transaction committed with
//!   `Durability::Immediate` (redb's default: the commit returns after fsync), and only then
//!   tells openraft the entries are flushed. A follower acknowledges entries to the leader
//!   only after that, and the leader counts an entry as committed only once a quorum has
//!   acknowledged it, so every committed entry is on the disks of a majority before any
//!   client hears "applied".
//! - `save_vote` commits with `Immediate` before returning, so a node can never vote twice
//!   in one term across a crash.
//! - `truncate` (conflicting suffix) and `purge` (prefix covered by a snapshot) are
//!   `Immediate` too; openraft purges only entries that a durable snapshot already covers.
//! - `save_committed` uses `Durability::None`: the committed index is a hint that lets a
//!   restarted node re-apply its log before hearing from a leader. Losing the latest value
//!   only makes the node apply those entries a little later, once the leader re-announces
//!   the commit index; it can never make an uncommitted entry look committed, because the
//!   value written is always one openraft had already established.
//!
//! redb's commit is crash-atomic (copy-on-write pages, a two-slot header), so a kill -9 in
//! the middle of a write leaves the previous committed transaction intact.

// openraft's storage traits fix the error type (`StorageError`, ~224 bytes); boxing it
// here would only add a conversion at every trait boundary.
#![allow(clippy::result_large_err)]

use crate::codec;
use crate::types::{NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Log entries by index, bincode-encoded `Entry<TypeConfig>`.
pub(crate) const LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("logs");
/// Small records: `vote`, `committed`, `last_purged`.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

type StResult<T> = Result<T, StorageError<NodeId>>;

/// Runs blocking redb work off the async runtime, so an fsync never stalls the Raft core's
/// timers or another task on the same worker thread.
pub(crate) async fn blocking<T, F>(f: F) -> StResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageIOError<NodeId>> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::from),
        Err(e) => Err(StorageIOError::write(AnyError::new(&e)).into()),
    }
}

/// Wraps any error as openraft's opaque error type.
pub(crate) fn any<E: std::error::Error + 'static>(e: E) -> AnyError {
    AnyError::new(&e)
}

/// The log store handed to openraft; clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Creates the tables if missing, so later reads never meet "table does not exist".
    pub fn open(db: Arc<Database>) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOGS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(LogStore { db })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        db: &Database,
        key: &str,
    ) -> Result<Option<T>, AnyError> {
        let txn = db.begin_read().map_err(any)?;
        let table = txn.open_table(META).map_err(any)?;
        match table.get(key).map_err(any)? {
            Some(v) => Ok(Some(codec::unseal(v.value()).map_err(any)?)),
            None => Ok(None),
        }
    }

    fn write_meta<T: serde::Serialize>(
        db: &Database,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), AnyError> {
        let bytes = codec::seal(value).map_err(any)?;
        let mut txn = db.begin_write().map_err(any)?;
        txn.set_durability(durability).map_err(any)?;
        {
            let mut table = txn.open_table(META).map_err(any)?;
            table.insert(key, bytes.as_slice()).map_err(any)?;
        }
        txn.commit().map_err(any)
    }

    fn read_range(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<TypeConfig>>, AnyError> {
        let txn = db.begin_read().map_err(any)?;
        let table = txn.open_table(LOGS).map_err(any)?;
        let mut out = Vec::new();
        for row in table.range::<u64>(range).map_err(any)? {
            let (_, v) = row.map_err(any)?;
            out.push(codec::unseal(v.value()).map_err(any)?);
        }
        Ok(out)
    }
}

/// Reads every record of the log and meta tables, checking each checksum and decoding it,
/// so a damaged store is refused at start with the record named, not met mid-operation.
pub(crate) fn verify(db: &Database) -> Result<(), String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    // A store created but never written (a crash right after creating it) has no tables.
    if let Some(meta) = optional(txn.open_table(META))? {
        for key in [VOTE, COMMITTED, LAST_PURGED] {
            let Some(v) = meta.get(key).map_err(|e| e.to_string())? else {
                continue;
            };
            let bytes = v.value();
            let checked = match key {
                VOTE => codec::unseal::<Vote<NodeId>>(bytes).map(drop),
                COMMITTED => codec::unseal::<Option<LogId<NodeId>>>(bytes).map(drop),
                _ => codec::unseal::<LogId<NodeId>>(bytes).map(drop),
            };
            checked.map_err(|e| format!("record `{key}`: {e}"))?;
        }
    }
    if let Some(logs) = optional(txn.open_table(LOGS))? {
        for row in logs.iter().map_err(|e| e.to_string())? {
            let (k, v) = row.map_err(|e| e.to_string())?;
            let e: Entry<TypeConfig> =
                codec::unseal(v.value()).map_err(|e| format!("log entry {}: {e}", k.value()))?;
            if e.log_id.index != k.value() {
                return Err(format!(
                    "log entry {} holds the entry of index {}",
                    k.value(),
                    e.log_id.index
                ));
            }
        }
    }
    Ok(())
}

/// A table that may not exist yet: `None` then, an error for any other failure.
pub(crate) fn optional<T>(r: Result<T, redb::TableError>) -> Result<Option<T>, String> {
    match r {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

fn w_logs<E: std::error::Error + 'static>(e: E) -> StorageIOError<NodeId> {
    StorageIOError::write_logs(any(e))
}

fn r_logs<E: std::error::Error + 'static>(e: E) -> StorageIOError<NodeId> {
    StorageIOError::read_logs(any(e))
}

fn owned_bounds<RB: RangeBounds<u64>>(r: &RB) -> (Bound<u64>, Bound<u64>) {
    (r.start_bound().cloned(), r.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> StResult<Vec<Entry<TypeConfig>>> {
        let db = self.db.clone();
        let bounds = owned_bounds(&range);
        blocking(move || Self::read_range(&db, bounds).map_err(StorageIOError::read_logs)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> StResult<LogState<TypeConfig>> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId<NodeId>> =
                Self::read_meta(&db, LAST_PURGED).map_err(StorageIOError::read_logs)?;
            let txn = db.begin_read().map_err(r_logs)?;
            let table = txn.open_table(LOGS).map_err(r_logs)?;
            let last = match table.last().map_err(r_logs)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = codec::unseal(v.value()).map_err(r_logs)?;
                    Some(e.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StResult<()> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || {
            Self::write_meta(&db, VOTE, &vote, Durability::Immediate)
                .map_err(StorageIOError::write_vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> StResult<Option<Vote<NodeId>>> {
        let db = self.db.clone();
        blocking(move || Self::read_meta(&db, VOTE).map_err(StorageIOError::read_vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StResult<()> {
        let db = self.db.clone();
        blocking(move || {
            Self::write_meta(&db, COMMITTED, &committed, Durability::None)
                .map_err(StorageIOError::write_logs)
        })
        .await
    }

    async fn read_committed(&mut self) -> StResult<Option<LogId<NodeId>>> {
        let db = self.db.clone();
        blocking(move || {
            let c: Option<Option<LogId<NodeId>>> =
                Self::read_meta(&db, COMMITTED).map_err(StorageIOError::read_logs)?;
            Ok(c.flatten())
        })
        .await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + Send,
        I::IntoIter: Send,
    {
        let db = self.db.clone();
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let res = blocking(move || {
            let txn = db.begin_write().map_err(w_logs)?;
            {
                let mut table = txn.open_table(LOGS).map_err(w_logs)?;
                for e in &entries {
                    let bytes = codec::seal(e).map_err(w_logs)?;
                    table
                        .insert(e.log_id.index, bytes.as_slice())
                        .map_err(w_logs)?;
                }
            }
            txn.commit().map_err(w_logs)
        })
        .await;
        // openraft must hear about a failed flush too, or it would wait for it forever.
        match &res {
            Ok(()) => callback.log_io_completed(Ok(())),
            Err(e) => callback.log_io_completed(Err(std::io::Error::other(e.to_string()))),
        }
        res
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let txn = db.begin_write().map_err(w_logs)?;
            {
                let mut table = txn.open_table(LOGS).map_err(w_logs)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(w_logs)?;
            }
            txn.commit().map_err(w_logs)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StResult<()> {
        let db = self.db.clone();
        blocking(move || {
            let bytes = codec::seal(&log_id).map_err(w_logs)?;
            let txn = db.begin_write().map_err(w_logs)?;
            {
                let mut meta = txn.open_table(META).map_err(w_logs)?;
                meta.insert(LAST_PURGED, bytes.as_slice()).map_err(w_logs)?;
                let mut table = txn.open_table(LOGS).map_err(w_logs)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(w_logs)?;
            }
            txn.commit().map_err(w_logs)
        })
        .await
    }
}
