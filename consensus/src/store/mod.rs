//! Durable storage for one member, in a single redb file
//! (`<data_dir>/raft.redb`): openraft's v2 storage API, implemented twice
//! over the same database.
//!
//! ```text
//!                 openraft (RaftCore, replication, snapshot tasks)
//!                   │                                  │
//!   RaftLogStorage + RaftLogReader        RaftStateMachine + RaftSnapshotBuilder
//!                   │                                  │
//!               LogStore                       StateMachineStore ──watch──▶ data path
//!          (entries, vote, committed,     (TopologyState in memory;     Arc<TopologyState>
//!           last purged: every write       the latest snapshot, as JSON,
//!           committed durably)             kept in redb)
//!                   └──────────── raft.redb ───────────┘
//! ```
//!
//! Every redb call runs on tokio's blocking pool (`spawn_blocking`), so an
//! fsync never stalls an async worker. Every write transaction commits with
//! `Durability::Immediate` before the call returns (for `append`, before the
//! flush callback fires), which is what Raft's safety rests on.
//!
//! The state machine itself is not written on apply. A restarted member
//! loads the latest snapshot and openraft re-applies the log from there up
//! to the saved committed index (`save_committed` is implemented for that),
//! so a node comes back with its topology before it hears from a leader.

mod log;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, SnapshotMeta, StorageError, StorageIOError};
use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

pub use self::log::LogStore;
pub use self::state_machine::StateMachineStore;
use crate::Error;
use crate::state::TopologyState;
use crate::types::{Member, MemberId};

/// Log entries by index, each openraft `Entry` as JSON.
const LOGS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
/// Vote, committed log id and last purged log id, as JSON, by the keys
/// below.
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
/// The latest snapshot: its metadata (JSON) and its data, by the keys
/// below. Written in one transaction, so they always belong together.
const SNAPSHOT: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("snapshot");

const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
const KEY_SNAPSHOT_META: &str = "meta";
const KEY_SNAPSHOT_DATA: &str = "data";

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "raft.redb";

/// Open (or create) the member's store in `dir`: the log store and the
/// state machine, which shares the same database and starts from the latest
/// snapshot on disk.
///
/// redb allows one open handle per file and process: drop every clone of
/// both halves (and the Raft node that owns them) before opening again.
pub async fn open(dir: impl AsRef<Path>) -> Result<(LogStore, StateMachineStore), Error> {
    let dir = dir.as_ref().to_owned();
    let (db, snapshot) = tokio::task::spawn_blocking(move || open_blocking(&dir)).await??;
    let db = Arc::new(db);
    Ok((LogStore::new(db.clone()), StateMachineStore::new(db, snapshot)))
}

fn open_blocking(dir: &Path) -> Result<(Database, Option<StoredSnapshot>), Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir { path: dir.to_owned(), source })?;
    let path = dir.join(DB_FILE);
    let open = || -> Result<_, DbError> {
        let db = Database::create(&path).map_err(redb::Error::from)?;
        // Create the tables up front: a read transaction cannot open a
        // table that was never written.
        write(&db, |txn| {
            txn.open_table(LOGS)?;
            txn.open_table(META)?;
            txn.open_table(SNAPSHOT)?;
            Ok(())
        })?;
        let snapshot = read_snapshot(&db)?;
        Ok((db, snapshot))
    };
    open().map_err(|e| Error::Open { path: path.clone(), source: Box::new(e) })
}

/// The snapshot kept in the database, if there is one.
fn read_snapshot(db: &Database) -> Result<Option<StoredSnapshot>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(SNAPSHOT)?;
    let (Some(meta), Some(data)) = (table.get(KEY_SNAPSHOT_META)?, table.get(KEY_SNAPSHOT_DATA)?) else {
        return Ok(None);
    };
    let meta: SnapshotMeta<MemberId, Member> = serde_json::from_slice(meta.value())?;
    let data = data.value().to_vec();
    let state = SnapshotFile::decode(&data)?;
    Ok(Some(StoredSnapshot { meta, data, state }))
}

/// A snapshot as kept in memory: what openraft sees (meta, bytes) plus the
/// decoded state, so opening does not decode twice.
#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<MemberId, Member>,
    data: Vec<u8>,
    state: TopologyState,
}

/// The JSON document a snapshot's data holds. Versioned, so a later
/// release can read an older snapshot (or refuse it clearly).
#[derive(Serialize, Deserialize)]
struct SnapshotFile<S> {
    format: u32,
    topology: S,
}

/// The snapshot format this release writes and reads.
const SNAPSHOT_FORMAT: u32 = 1;

impl SnapshotFile<TopologyState> {
    fn encode(state: &TopologyState) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&SnapshotFile { format: SNAPSHOT_FORMAT, topology: state })
    }

    fn decode(data: &[u8]) -> Result<TopologyState, SnapshotDecodeError> {
        // The format first, so a newer layout is reported as such rather
        // than as whatever field it happens to trip over.
        #[derive(Deserialize)]
        struct Header {
            format: u32,
        }
        let Header { format } = serde_json::from_slice(data)?;
        if format != SNAPSHOT_FORMAT {
            return Err(SnapshotDecodeError::Format(format));
        }
        let file: SnapshotFile<TopologyState> = serde_json::from_slice(data)?;
        Ok(file.topology)
    }
}

#[derive(Debug, thiserror::Error)]
enum SnapshotDecodeError {
    #[error("snapshot is not valid JSON of the topology: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snapshot format {0} is not known to this release (it reads format {SNAPSHOT_FORMAT})")]
    Format(u32),
}

/// What a blocking storage call can fail with, before it is turned into
/// openraft's error with the subject (log, vote, snapshot) it concerns.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error(transparent)]
    Redb(#[from] redb::Error),
    #[error("cannot encode or decode a stored value: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Snapshot(#[from] SnapshotDecodeError),
    #[error("the log entry stored at index {key} has index {index}")]
    Misplaced { key: u64, index: u64 },
}

macro_rules! redb_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for DbError {
            fn from(e: $ty) -> Self {
                DbError::Redb(e.into())
            }
        }
    )*};
}
redb_errors!(redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError, redb::SetDurabilityError);

/// Run `f` in a write transaction that is durable on disk when this
/// returns. If `f` fails, the transaction is dropped, which aborts it.
fn write<T>(db: &Database, f: impl FnOnce(&redb::WriteTransaction) -> Result<T, DbError>) -> Result<T, DbError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::Immediate)?;
    let out = f(&txn)?;
    txn.commit()?;
    Ok(out)
}

/// Run `f` on the blocking pool and wait for it; a failure becomes
/// openraft's error through `io_error`, which names what failed (the log,
/// the vote, a snapshot).
async fn blocking<T, F>(
    f: F,
    io_error: impl FnOnce(AnyError) -> StorageIOError<MemberId>,
) -> Result<T, StorageError<MemberId>>
where
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
    T: Send + 'static,
{
    let cause = match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(e)) => AnyError::new(&e),
        Err(e) => AnyError::new(&e),
    };
    Err(io_error(cause).into())
}
