//! A member that stops and starts again finds everything it had: the vote,
//! the log (purged head and truncated tail included), the committed index,
//! the snapshot, and, once openraft has re-applied the committed log on top
//! of the snapshot, the whole topology.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use consensus::state::{Role, ShardPolicy};
use consensus::store::{self, LogStore, StateMachineStore};
use consensus::types::TypeConfig;
use consensus::{Applied, Change, Command, CommandError, Member, Response, TopologyState};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, RaftSnapshotBuilder, StorageHelper, Vote,
};
use tempfile::TempDir;

mod common;
use common::add_node;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn command(change: Change) -> Command {
    Command { actor: "dba".into(), origin: "127.0.0.1:40001".into(), at: 1_700_000_000_000, change }
}

fn normal(index: u64, change: Change) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, index), payload: EntryPayload::Normal(command(change)) }
}

fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("meridian-{id}"),
        region: ["eu", "us", "ap"][(id as usize) % 3].into(),
        raft_addr: format!("http://127.0.0.1:{}", 7000 + id),
        client_addr: format!("127.0.0.1:{}", 6432 + id),
    }
}

fn membership() -> Membership<u64, Member> {
    let nodes: BTreeMap<u64, Member> = (1..=3).map(|id| (id, member(id))).collect();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

/// Index 1 blank, 2 membership, 3..=7 commands (7 is refused).
fn entries() -> Vec<Entry<TypeConfig>> {
    vec![
        Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
        Entry { log_id: log_id(1, 2), payload: EntryPayload::Membership(membership()) },
        normal(3, Change::CreateShard { name: "s1".into(), policy: ShardPolicy::default() }),
        normal(4, add_node("pg1", 5433, Role::Primary)),
        normal(5, add_node("pg2", 5434, Role::Replica)),
        normal(6, Change::FenceShard { shard: "s1".into(), epoch: 2 }),
        normal(7, add_node("pg1", 5435, Role::Replica)),
    ]
}

/// The topology after applying the commands of `entries()[..upto]` directly.
fn expected(upto: usize) -> TopologyState {
    let mut state = TopologyState::default();
    for entry in &entries()[..upto] {
        if let EntryPayload::Normal(cmd) = &entry.payload {
            let _ = state.apply(cmd);
        }
    }
    state
}

async fn open(dir: &TempDir) -> (LogStore, StateMachineStore) {
    store::open(dir.path()).await.expect("the store opens")
}

#[tokio::test]
async fn a_restarted_member_finds_everything() {
    let dir = TempDir::new().unwrap();
    let (mut log, mut sm) = open(&dir).await;
    let mut topology = sm.subscribe();
    let vote = Vote::new_committed(1, 1);

    // Before the stop: vote, seven entries, five applied with a snapshot
    // after four, the first two purged, committed up to seven.
    log.save_vote(&vote).await.unwrap();
    log.blocking_append(entries()).await.unwrap();
    let responses = sm.apply(entries()[..4].to_vec()).await.unwrap();
    assert_eq!(responses[..2], [Response::Internal, Response::Internal]);
    assert!(matches!(responses[3], Response::Applied(Applied { version: 2, changed: true })));
    let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, 4)));
    sm.apply(entries()[4..5].to_vec()).await.unwrap();
    log.purge(log_id(1, 2)).await.unwrap();
    log.save_committed(Some(log_id(1, 7))).await.unwrap();

    assert!(topology.has_changed().unwrap());
    assert_eq!(**topology.borrow_and_update(), expected(5));
    drop((log, sm, topology));

    // After the restart.
    let (mut log, mut sm) = open(&dir).await;
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 2)), Some(log_id(1, 7))));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries()[2..]);
    assert_eq!(log.try_get_log_entries(4..6).await.unwrap(), entries()[3..5]);

    // The state machine starts from the snapshot ...
    let (applied, stored_membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(stored_membership.log_id(), &Some(log_id(1, 2)));
    assert_eq!(stored_membership.membership(), &membership());
    assert_eq!(*sm.topology(), expected(4));
    let current = sm.get_current_snapshot().await.unwrap().expect("the snapshot survived");
    assert_eq!(current.meta, snapshot.meta);

    // ... and openraft's start-up re-applies the committed log on top.
    let mut topology = sm.subscribe();
    StorageHelper::new(&mut log, &mut sm).get_initial_state().await.unwrap();
    assert_eq!(sm.last_applied_index(), Some(7));
    assert_eq!(*sm.topology(), expected(7));
    assert_eq!(**topology.borrow_and_update(), expected(7));
    let s1 = &sm.topology().shards["s1"];
    assert_eq!((s1.epoch, s1.fenced), (2, true));
}

#[tokio::test]
async fn a_truncated_tail_stays_truncated() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = open(&dir).await;
    log.blocking_append(entries()).await.unwrap();
    log.truncate(log_id(1, 5)).await.unwrap();
    drop((log, sm));

    let (mut log, _sm) = open(&dir).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(log_id(1, 4))));
    assert_eq!(log.try_get_log_entries(..).await.unwrap(), entries()[..4]);
}

#[tokio::test]
async fn everything_purged_still_knows_the_last_log_id() {
    let dir = TempDir::new().unwrap();
    let (mut log, sm) = open(&dir).await;
    log.blocking_append(entries()).await.unwrap();
    log.purge(log_id(1, 7)).await.unwrap();
    drop((log, sm));

    let (mut log, _sm) = open(&dir).await;
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 7)), Some(log_id(1, 7))));
    assert!(log.try_get_log_entries(..).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_installed_snapshot_replaces_the_state_and_survives_a_restart() {
    // Build a snapshot on a "leader" ...
    let leader_dir = TempDir::new().unwrap();
    let (_leader_log, mut leader) = open(&leader_dir).await;
    leader.apply(entries()).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();

    // ... and install it on a "follower" that had something else.
    let dir = TempDir::new().unwrap();
    let (log, mut sm) = open(&dir).await;
    sm.apply(vec![normal(1, Change::CreateShard { name: "other".into(), policy: ShardPolicy::default() })])
        .await
        .unwrap();
    let mut topology = sm.subscribe();
    let mut receiving = sm.begin_receiving_snapshot().await.unwrap();
    *receiving = *snapshot.snapshot;
    sm.install_snapshot(&snapshot.meta, receiving).await.unwrap();
    assert_eq!(**topology.borrow_and_update(), expected(7));
    assert_eq!(sm.last_applied_index(), Some(7));

    drop((log, sm, topology));
    let (_log, mut sm) = open(&dir).await;
    assert_eq!(*sm.topology(), expected(7));
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, snapshot.meta);
    assert_eq!(sm.applied_state().await.unwrap().1.membership(), &membership());
}

#[tokio::test]
async fn refused_commands_come_back_as_rejections() {
    let dir = TempDir::new().unwrap();
    let (_log, mut sm) = open(&dir).await;
    let mut topology = sm.subscribe();
    let responses = sm.apply(entries()).await.unwrap();
    assert_eq!(responses.len(), 7);
    assert_eq!(responses[6], Response::Rejected(CommandError::NodeExists("pg1".into())));
    // One publication for the batch, with the final state.
    assert!(topology.has_changed().unwrap());
    assert_eq!(**topology.borrow_and_update(), expected(7));

    // A batch that changes nothing publishes nothing.
    let responses = sm.apply(vec![normal(8, add_node("pg1", 5436, Role::Replica))]).await.unwrap();
    assert!(matches!(responses[0], Response::Rejected(_)));
    assert!(!topology.has_changed().unwrap());
    tokio::time::timeout(Duration::from_millis(50), topology.changed()).await.expect_err("nothing was published");
}

#[tokio::test]
async fn a_store_open_twice_is_refused() {
    let dir = TempDir::new().unwrap();
    let _first = open(&dir).await;
    let err = store::open(dir.path()).await.expect_err("redb allows one handle per file");
    assert!(matches!(err, consensus::Error::Open { .. }), "{err}");
}
