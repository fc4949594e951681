//! Opening the store file, `<data_dir>/raft.redb`, before anything reads it: the data dir and
//! file modes, a damaged file refused with an error that names it and says what to do, and
//! every record checked once (docs/design.md#durability).
//!
//! redb panics on some damage (a cut file, a broken header or page), so the open and the
//! check run under `catch_unwind` with the panic message kept out of the log: the node exits
//! with one clear line (exit 1), not a backtrace (exit 101).

use crate::error::ClusterError;
use redb::Database;
use std::cell::Cell;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

/// The store's file name inside `data_dir`.
pub const STORE_FILE: &str = "raft.redb";

/// How long opening retries a database another instance in this process is still closing
/// (a node restarted right after being dropped).
const OPEN_RETRY: Duration = Duration::from_secs(3);

thread_local! {
    /// Set while this thread runs redb under `catch`: its panics are reported as errors.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into its message. The process's panic hook stays silent for
/// this thread meanwhile; every other panic is reported as before.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    r.map_err(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        format!("the store library failed reading it ({what})")
    })
}

fn corrupt(path: &Path, reason: impl Into<String>) -> ClusterError {
    ClusterError::Corrupt {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

fn io(path: &Path, what: &str, e: std::io::Error) -> ClusterError {
    ClusterError::Storage {
        path: path.display().to_string(),
        reason: format!("{what}: {e}"),
    }
}

/// Creates `dir` as 0700 if missing; an existing dir of ours that others may read is
/// narrowed to 0700 (the store holds client addresses). A shared dir (sticky, or not ours,
/// such as /tmp) is left alone: the file's own 0600 protects it there.
fn data_dir(dir: &Path) -> Result<(), ClusterError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io(dir, "cannot create the data dir", e))?;
    let meta = std::fs::metadata(dir).map_err(|e| io(dir, "cannot read the data dir", e))?;
    let mode = meta.mode();
    let ours = meta.uid() == nix::unistd::Uid::effective().as_raw();
    if ours && mode & 0o1000 == 0 && mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(dir, "cannot make the data dir private (0700)", e))?;
        tracing::info!(dir = %dir.display(), from = format!("{:o}", mode & 0o777), "data dir narrowed to 0700");
    }
    Ok(())
}

/// Opens (creating if missing) and checks the store; see the module doc. A file that
/// exists but is empty is damage, not a fresh start: a store is never 0 bytes once created,
/// and starting afresh there would begin a second history of the cluster.
pub(crate) async fn open(dir: &Path) -> Result<Arc<Database>, ClusterError> {
    data_dir(dir)?;
    let path: PathBuf = dir.join(STORE_FILE);
    let fresh = match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.is_file() => return Err(corrupt(&path, "is not a regular file")),
        Ok(m) if m.len() == 0 => {
            return Err(corrupt(
                &path,
                "the file is empty (0 bytes): it was truncated, this is not a new node",
            ));
        }
        Ok(m) => {
            if m.mode() & 0o077 != 0 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(|e| io(&path, "cannot make the store private (0600)", e))?;
            }
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io(&path, "cannot create the store", e))?;
            true
        }
        Err(e) => return Err(io(&path, "cannot read the store's metadata", e)),
    };
    let shown = path.clone();
    tokio::task::spawn_blocking(move || open_blocking(&path, fresh))
        .await
        .map_err(|e| corrupt(&shown, e.to_string()))?
}

fn open_blocking(path: &Path, fresh: bool) -> Result<Arc<Database>, ClusterError> {
    let deadline = Instant::now() + OPEN_RETRY;
    let db = loop {
        match catch(|| Database::create(path)).map_err(|why| corrupt(path, why))? {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e @ redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ClusterError::Storage {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                });
            }
            // redb reports a missing or broken magic number as invalid data.
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(e)))
                if e.kind() != std::io::ErrorKind::InvalidData =>
            {
                return Err(io(path, "cannot open", e));
            }
            Err(e) => return Err(corrupt(path, e.to_string())),
        }
    };
    if !fresh {
        catch(|| crate::storage::verify(&db).and_then(|()| crate::storage_sm::verify(&db)))
            .and_then(|r| r)
            .map_err(|why| corrupt(path, why))?;
    }
    Ok(Arc::new(db))
}
