//! [`StateMachineStore`]: the topology applied so far, kept in memory and
//! published on a `watch` channel, with its latest snapshot kept in redb.

use std::fmt;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableTable};
use tokio::sync::watch;

use super::{DbError, KEY_SNAPSHOT_DATA, KEY_SNAPSHOT_META, SNAPSHOT, SnapshotFile, StoredSnapshot, blocking, write};
use crate::state::TopologyState;
use crate::types::{Member, MemberId, Response, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<MemberId>>;
type Meta = SnapshotMeta<MemberId, Member>;

/// The topology state machine of one member. Cheap to clone: clones share
/// one state, which is how openraft's snapshot builder gets its view.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    applied: RwLock<AppliedState>,
    /// The latest snapshot, as also kept in the database: what
    /// `get_current_snapshot` hands to a follower that is too far behind.
    snapshot: Mutex<Option<CurrentSnapshot>>,
    /// Every apply that changes the topology, and every installed snapshot,
    /// publishes the new value here; the data path reads it without
    /// waiting.
    topology: watch::Sender<Arc<TopologyState>>,
    /// Makes snapshot ids unique among those built by this process.
    snapshot_seq: AtomicU64,
}

struct AppliedState {
    last_applied: Option<LogId<MemberId>>,
    membership: StoredMembership<MemberId, Member>,
    /// Copy on write: applying clones it only while readers hold the
    /// published value.
    topology: Arc<TopologyState>,
}

#[derive(Clone)]
struct CurrentSnapshot {
    meta: Meta,
    data: Vec<u8>,
}

/// Whether a snapshot being saved replaces a newer one already saved.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Replace {
    /// A snapshot built here: a newer one (installed from the leader
    /// meanwhile) wins.
    IfNewer,
    /// A snapshot installed from the leader: it replaces whatever is there.
    Always,
}

impl fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let applied = self.inner.applied.read();
        f.debug_struct("StateMachineStore")
            .field("last_applied", &applied.last_applied)
            .field("version", &applied.topology.version)
            .finish_non_exhaustive()
    }
}

impl StateMachineStore {
    /// Whether this is the last handle on the store: no other clone of the
    /// state machine, no log store, and no storage task still holds the
    /// database. Once it is, dropping this handle closes the database file
    /// (so it can be opened again).
    pub(crate) fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.inner) == 1 && Arc::strong_count(&self.inner.db) == 1
    }

    pub(super) fn new(db: Arc<Database>, snapshot: Option<StoredSnapshot>) -> StateMachineStore {
        let (applied, current) = match snapshot {
            Some(StoredSnapshot { meta, data, state }) => (
                AppliedState {
                    last_applied: meta.last_log_id,
                    membership: meta.last_membership.clone(),
                    topology: Arc::new(state),
                },
                Some(CurrentSnapshot { meta, data }),
            ),
            None => (
                AppliedState {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    topology: Arc::new(TopologyState::default()),
                },
                None,
            ),
        };
        let (topology, _) = watch::channel(applied.topology.clone());
        StateMachineStore {
            inner: Arc::new(Inner {
                db,
                applied: RwLock::new(applied),
                snapshot: Mutex::new(current),
                topology,
                snapshot_seq: AtomicU64::new(0),
            }),
        }
    }

    /// The topology as applied so far, and every later one as it is
    /// applied. The channel never closes while this store exists.
    ///
    /// After a restart it starts at the snapshot's topology, which may be
    /// older than what had been committed, and catches up as openraft
    /// re-applies the log. Whether the topology is current is for the
    /// write lease to say, not this channel.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopologyState>> {
        self.inner.topology.subscribe()
    }

    /// The topology as applied so far.
    pub fn topology(&self) -> Arc<TopologyState> {
        self.inner.applied.read().topology.clone()
    }

    /// Index of the last log entry applied (or covered by the snapshot the
    /// state came from); `None` before anything was.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.inner.applied.read().last_applied.map(|id| id.index)
    }

    /// Keep `meta`/`data` as the current snapshot in memory, under the same
    /// rule as on disk.
    fn set_current(&self, meta: Meta, data: Vec<u8>, replace: Replace) {
        let mut current = self.inner.snapshot.lock();
        if replace == Replace::IfNewer && current.as_ref().is_some_and(|c| c.meta.last_log_id > meta.last_log_id) {
            return;
        }
        *current = Some(CurrentSnapshot { meta, data });
    }
}

/// Save a snapshot, durably, in one transaction. Answers whether it was
/// saved (false: a newer one is there and `replace` said to keep it).
fn save_snapshot(db: &Database, meta: &Meta, data: &[u8], replace: Replace) -> std::result::Result<bool, DbError> {
    let meta_json = serde_json::to_vec(meta)?;
    write(db, |txn| {
        let mut table = txn.open_table(SNAPSHOT)?;
        if replace == Replace::IfNewer {
            let saved = table.get(KEY_SNAPSHOT_META)?.map(|v| serde_json::from_slice::<Meta>(v.value())).transpose()?;
            if saved.is_some_and(|saved| saved.last_log_id > meta.last_log_id) {
                return Ok(false);
            }
        }
        table.insert(KEY_SNAPSHOT_META, meta_json.as_slice())?;
        table.insert(KEY_SNAPSHOT_DATA, data)?;
        Ok(true)
    })
}

fn unix_millis() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Serialises the topology as applied now and saves it before
    /// returning: openraft purges the log up to a snapshot once it has it,
    /// so the snapshot must already be durable.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let (topology, last_applied, membership) = {
            let applied = self.inner.applied.read();
            (applied.topology.clone(), applied.last_applied, applied.membership.clone())
        };
        let seq = self.inner.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}-{seq}", id.leader_id, id.index, unix_millis()),
            None => format!("none-{}-{seq}", unix_millis()),
        };
        let meta = Meta { last_log_id: last_applied, last_membership: membership, snapshot_id };

        let db = self.inner.db.clone();
        let saved_meta = meta.clone();
        let signature = meta.signature();
        let data = blocking(
            move || {
                let data = SnapshotFile::encode(&topology)?;
                save_snapshot(&db, &saved_meta, &data, Replace::IfNewer)?;
                Ok(data)
            },
            |e| StorageIOError::write_snapshot(Some(signature), e),
        )
        .await?;
        tracing::debug!(snapshot = %meta, bytes = data.len(), "built topology snapshot");
        self.set_current(meta.clone(), data.clone(), Replace::IfNewer);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId<MemberId>>, StoredMembership<MemberId, Member>)> {
        let applied = self.inner.applied.read();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    /// Applies each entry to the in-memory topology; a refused command is
    /// answered with [`Response::Rejected`] and changes nothing. The new
    /// topology is published once for the whole batch.
    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut responses = Vec::new();
        let published = {
            let mut guard = self.inner.applied.write();
            let applied = &mut *guard;
            let mut changed = false;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::Internal,
                    EntryPayload::Membership(membership) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Response::Internal
                    }
                    EntryPayload::Normal(cmd) => match Arc::make_mut(&mut applied.topology).apply(&cmd) {
                        Ok(done) => {
                            if done.changed {
                                changed = true;
                                tracing::info!(
                                    version = done.version,
                                    actor = %cmd.actor,
                                    origin = %cmd.origin,
                                    change = %cmd.change,
                                    "topology changed"
                                );
                            }
                            Response::Applied(done)
                        }
                        Err(e) => {
                            tracing::debug!(log_id = %entry.log_id, error = %e, change = %cmd.change, "command refused");
                            Response::Rejected(e)
                        }
                    },
                };
                responses.push(response);
            }
            changed.then(|| applied.topology.clone())
        };
        if let Some(topology) = published {
            self.inner.topology.send_replace(topology);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachineStore {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Saves the leader's snapshot durably, then replaces the topology with
    /// it and publishes it.
    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<Cursor<Vec<u8>>>) -> Result<()> {
        let data = snapshot.into_inner();
        let state =
            SnapshotFile::decode(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;

        let db = self.inner.db.clone();
        let (saved_meta, saved_data) = (meta.clone(), data.clone());
        let signature = meta.signature();
        blocking(
            move || save_snapshot(&db, &saved_meta, &saved_data, Replace::Always),
            |e| StorageIOError::write_snapshot(Some(signature), e),
        )
        .await?;

        let topology = Arc::new(state);
        {
            let mut applied = self.inner.applied.write();
            applied.last_applied = meta.last_log_id;
            applied.membership = meta.last_membership.clone();
            applied.topology = topology.clone();
        }
        self.set_current(meta.clone(), data, Replace::Always);
        tracing::info!(snapshot = %meta, version = topology.version, "installed topology snapshot from the leader");
        self.inner.topology.send_replace(topology);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let current = self.inner.snapshot.lock().clone();
        Ok(current.map(|c| Snapshot { meta: c.meta, snapshot: Box::new(Cursor::new(c.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    fn meta(index: u64) -> Meta {
        Meta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("snap-{index}"),
        }
    }

    fn saved(db: &Database) -> Option<StoredSnapshot> {
        super::super::read_snapshot(db).unwrap()
    }

    #[test]
    fn a_built_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let data = SnapshotFile::encode(&TopologyState::default()).unwrap();

        assert!(save_snapshot(&db, &meta(5), &data, Replace::IfNewer).unwrap());
        // A slow builder that read the state before index 5 was installed.
        assert!(!save_snapshot(&db, &meta(3), &data, Replace::IfNewer).unwrap());
        assert_eq!(saved(&db).unwrap().meta, meta(5));
        assert!(save_snapshot(&db, &meta(5), &data, Replace::IfNewer).unwrap());
        assert!(save_snapshot(&db, &meta(9), &data, Replace::IfNewer).unwrap());
        // The leader's snapshot is installed whatever was there.
        assert!(save_snapshot(&db, &meta(2), &data, Replace::Always).unwrap());
        assert_eq!(saved(&db).unwrap().meta, meta(2));
    }

    #[tokio::test]
    async fn the_in_memory_snapshot_follows_the_same_rule() {
        let dir = tempfile::TempDir::new().unwrap();
        let (_log, mut sm) = crate::store::open(dir.path()).await.unwrap();
        sm.set_current(meta(5), vec![1], Replace::IfNewer);
        sm.set_current(meta(3), vec![2], Replace::IfNewer);
        let current = sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!((current.meta, current.snapshot.into_inner()), (meta(5), vec![1]));
        sm.set_current(meta(3), vec![3], Replace::Always);
        assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, meta(3));
    }
}
