//! [`LogStore`]: the Raft log, the vote, the committed log id and the last
//! purged log id, in redb.

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DbError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOGS, META, blocking, write};
use crate::types::{MemberId, TypeConfig};

/// The Raft log of one member. Cheap to clone: clones share the database,
/// which is how the log readers handed to replication tasks are made.
///
/// openraft calls the writing methods one at a time and waits for each, so
/// writes reach the disk in the order they were made, as Raft requires.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl fmt::Debug for LogStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

type Result<T> = std::result::Result<T, StorageError<MemberId>>;

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> LogStore {
        LogStore { db }
    }

    /// Run `f` with the database on the blocking pool.
    async fn with_db<T, F>(&self, f: F, io_error: fn(AnyError) -> StorageIOError<MemberId>) -> Result<T>
    where
        F: FnOnce(&Database) -> std::result::Result<T, DbError> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.db.clone();
        blocking(move || f(&db), io_error).await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        self.with_db(move |db| read_entries(db, bounds), StorageIOError::read_logs).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        self.with_db(log_state, StorageIOError::read_logs).await
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<MemberId>) -> Result<()> {
        let vote = *vote;
        self.with_db(move |db| put_meta(db, KEY_VOTE, &vote), StorageIOError::write_vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<MemberId>>> {
        self.with_db(|db| get_meta(db, KEY_VOTE), StorageIOError::read_vote).await
    }

    /// Saved so that a restarted member re-applies everything it knew to
    /// be committed before it hears from a leader: the state machine is
    /// only as durable as the latest snapshot.
    async fn save_committed(&mut self, committed: Option<LogId<MemberId>>) -> Result<()> {
        self.with_db(move |db| put_meta(db, KEY_COMMITTED, &committed), StorageIOError::write).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<MemberId>>> {
        let read = |db: &Database| get_meta::<Option<LogId<MemberId>>>(db, KEY_COMMITTED).map(Option::flatten);
        self.with_db(read, StorageIOError::read).await
    }

    /// Writes and fsyncs the entries before it returns, then reports them
    /// flushed. (openraft allows reporting later; the log here is a
    /// control-plane log of a few entries a second, so the simple order
    /// costs nothing that matters.)
    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        self.with_db(move |db| append_entries(db, &entries), StorageIOError::write_logs).await?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<MemberId>) -> Result<()> {
        tracing::debug!(%log_id, "truncating the raft log from here on");
        let truncate = move |db: &Database| {
            write(db, |txn| {
                txn.open_table(LOGS)?.retain_in(log_id.index.., |_, _| false)?;
                Ok(())
            })
        };
        self.with_db(truncate, StorageIOError::write_logs).await
    }

    /// Records the purge point and drops the entries up to it in one
    /// transaction, so the log never looks as if entries were missing.
    async fn purge(&mut self, log_id: LogId<MemberId>) -> Result<()> {
        tracing::debug!(%log_id, "purging the raft log up to here");
        let purge = move |db: &Database| {
            write(db, |txn| {
                txn.open_table(META)?.insert(KEY_LAST_PURGED, serde_json::to_vec(&log_id)?.as_slice())?;
                txn.open_table(LOGS)?.retain_in(..=log_id.index, |_, _| false)?;
                Ok(())
            })
        };
        self.with_db(purge, StorageIOError::write_logs).await
    }
}

fn read_entries(
    db: &Database,
    bounds: (Bound<u64>, Bound<u64>),
) -> std::result::Result<Vec<Entry<TypeConfig>>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(LOGS)?;
    let mut entries = Vec::new();
    for row in table.range::<u64>(bounds)? {
        let (key, value) = row?;
        entries.push(decode_entry(key.value(), value.value())?);
    }
    Ok(entries)
}

fn decode_entry(key: u64, bytes: &[u8]) -> std::result::Result<Entry<TypeConfig>, DbError> {
    let entry: Entry<TypeConfig> = serde_json::from_slice(bytes)?;
    if entry.log_id.index != key {
        return Err(DbError::Misplaced { key, index: entry.log_id.index });
    }
    Ok(entry)
}

fn log_state(db: &Database) -> std::result::Result<LogState<TypeConfig>, DbError> {
    let txn = db.begin_read()?;
    let last = match txn.open_table(LOGS)?.last()? {
        Some((key, value)) => Some(decode_entry(key.value(), value.value())?.log_id),
        None => None,
    };
    let last_purged: Option<LogId<MemberId>> = match txn.open_table(META)?.get(KEY_LAST_PURGED)? {
        Some(value) => Some(serde_json::from_slice(value.value())?),
        None => None,
    };
    Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
}

fn append_entries(db: &Database, entries: &[Entry<TypeConfig>]) -> std::result::Result<(), DbError> {
    write(db, |txn| {
        let mut table = txn.open_table(LOGS)?;
        for entry in entries {
            table.insert(entry.log_id.index, serde_json::to_vec(entry)?.as_slice())?;
        }
        Ok(())
    })
}

fn get_meta<T: DeserializeOwned>(db: &Database, key: &str) -> std::result::Result<Option<T>, DbError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(META)?;
    let value = table.get(key)?;
    Ok(value.map(|v| serde_json::from_slice(v.value())).transpose()?)
}

fn put_meta<T: Serialize>(db: &Database, key: &str, value: &T) -> std::result::Result<(), DbError> {
    let bytes = serde_json::to_vec(value)?;
    write(db, |txn| {
        txn.open_table(META)?.insert(key, bytes.as_slice())?;
        Ok(())
    })
}
