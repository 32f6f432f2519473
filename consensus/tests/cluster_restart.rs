//! Whole-cluster restarts in one process: every member stopped, then
//! started again one at a time in a random (seeded) order with random
//! pauses, comes back with exactly the topology it had; and members whose
//! log was compacted into a snapshot (their own, or the leader's while they
//! were away) come back with the topology too.
//!
//! The seed is printed; `MERIDIAN_SEED=<n> cargo test -p consensus --test
//! cluster_restart` replays a run.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
mod common;

use common::{Cluster, add_node, add_region};
use consensus::state::{Role, ShardPolicy};
use consensus::{Change, Command, ConsensusNode, MemberId, Timings, TopologyState};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use tokio::time::Instant;

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..Timings::default()
    }
}

/// splitmix64: enough randomness for an order and some pauses, and
/// reproducible from the printed seed without another dependency.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("MERIDIAN_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        eprintln!("MERIDIAN_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

fn command(change: Change) -> Command {
    Command { actor: "dba".into(), origin: "127.0.0.1:50000".into(), at: 1_700_000_000_000, change }
}

/// A topology with a bit of everything, proposed through every member.
async fn some_changes(cluster: &Cluster) -> Result<()> {
    let changes = [
        Change::CreateShard { name: "s1".into(), policy: ShardPolicy::default() },
        add_node("pg1", 5433, Role::Primary),
        add_node("pg2", 5434, Role::Replica),
        add_node("pg3", 5435, Role::Replica),
        Change::BanNode { name: "pg3".into() },
        Change::FenceShard { shard: "s1".into(), epoch: 5 },
        Change::SetPrimary { shard: "s1".into(), node: "pg2".into(), epoch: 5 },
        Change::Pause { shard: None },
    ];
    for (i, change) in changes.into_iter().enumerate() {
        let via = cluster.node(i as u64 % 3 + 1);
        via.propose(command(change.clone())).await.with_context(|| format!("propose {change:?}"))?;
    }
    for i in 0..20 {
        cluster.node(i % 3 + 1).propose(add_region(&format!("region-{i}"))).await?;
    }
    Ok(())
}

/// Wait until every running member has applied everything the leader has
/// in its log, and return the (then common) topology.
async fn settled(cluster: &Cluster, within: Duration) -> Result<Arc<TopologyState>> {
    let leader = cluster.leader(within).await?;
    let last = cluster.node(leader).status().await.last_log_index;
    let deadline = Instant::now() + within;
    for node in cluster.running() {
        while node.status().await.applied_index < last {
            ensure!(Instant::now() < deadline, "member {} did not apply up to {last:?}", node.member().id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // One more heartbeat, so every follower has also stored the commit
    // index (it learns it on the next AppendEntries).
    tokio::time::sleep(timings().heartbeat_interval * 3).await;
    let topology = cluster.node(leader).topology();
    for node in cluster.running() {
        ensure!(*node.topology() == *topology, "member {} differs", node.member().id);
    }
    Ok(topology)
}

async fn wait_for_topology(node: &ConsensusNode, expected: &TopologyState, within: Duration) -> Result<()> {
    let mut topology = node.subscribe();
    let seen = tokio::time::timeout(within, topology.wait_for(|t| **t == *expected)).await;
    ensure!(
        matches!(seen, Ok(Ok(_))),
        "member {} does not reach the expected topology (version {}) within {within:?}: it has version {}",
        node.member().id,
        expected.version,
        node.topology().version
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_cluster_restarts_in_a_random_order() -> Result<()> {
    let test_started = Instant::now();
    let mut rng = Rng::from_env_or_clock();
    let mut cluster = Cluster::start(3, timings(), 46432).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    some_changes(&cluster).await?;
    let before = settled(&cluster, Duration::from_secs(10)).await?;
    assert_eq!(before.shards["s1"].epoch, 5);
    assert_eq!(before.shards["s1"].primary.as_deref(), Some("pg2"));
    assert_eq!(before.audit.len() as u64, before.version);

    let mut order: Vec<MemberId> = vec![1, 2, 3];
    rng.shuffle(&mut order);
    eprintln!("stopping in the order {order:?}");
    for id in &order {
        cluster.stop(*id).await;
    }

    rng.shuffle(&mut order);
    for (i, id) in order.iter().enumerate() {
        if i > 0 {
            // Up to two election timeouts: sometimes a member waits alone
            // (no quorum), sometimes the next one comes at once.
            let pause = Duration::from_millis(rng.below(2000));
            eprintln!("pause {pause:?}");
            tokio::time::sleep(pause).await;
        }
        eprintln!("starting member {id}");
        cluster.restart(*id).await.with_context(|| format!("restart member {id}"))?;
        // Straight from its disk: the snapshot-less log re-applied up to
        // the commit index it stored.
        let node = cluster.node(*id);
        ensure!(*node.topology() == *before, "member {id} restarted with version {}", node.topology().version);
    }

    let leader = cluster.leader(Duration::from_secs(10)).await?;
    eprintln!("member {leader} leads after the restart");
    for node in cluster.running() {
        let topology = node.read_linearizable().await?;
        assert_eq!(topology.version, before.version, "member {}", node.member().id);
        assert_eq!(topology.shards, before.shards);
        assert_eq!(topology.audit, before.audit);
        assert_eq!(*topology, *before);
    }

    let follower = cluster.follower_of(leader);
    let applied = follower.propose(add_region("after-restart")).await.context("propose after the restart")?;
    assert!(applied.changed && applied.version == before.version + 1, "{applied:?}");
    let after = settled(&cluster, Duration::from_secs(10)).await?;
    assert!(after.regions.contains("after-restart"));
    cluster.shutdown().await;
    eprintln!("whole-cluster restart took {:?}", test_started.elapsed());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_come_back_from_a_compacted_log() -> Result<()> {
    let test_started = Instant::now();
    let mut cluster = Cluster::start(3, timings(), 46532).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    some_changes(&cluster).await?;
    let before = settled(&cluster, Duration::from_secs(10)).await?;

    // A follower compacts its own log, stops, and comes back from the
    // snapshot (and nothing else: its log is empty up to the snapshot).
    let follower = cluster.follower_of(leader).member().id;
    let compacted = cluster.node(follower).compact_log(Duration::from_secs(10)).await?.expect("something was applied");
    eprintln!("member {follower} compacted its log up to {compacted}");
    cluster.stop(follower).await;
    {
        let (mut log, mut sm) = consensus::store::open(cluster.data_dir(follower)).await?;
        let state = log.get_log_state().await?;
        let purged = state.last_purged_log_id.map(|id| id.index);
        ensure!(purged >= Some(compacted), "member {follower}'s log purged up to {purged:?}, not {compacted}");
        let snapshot = sm.get_current_snapshot().await?.context("a snapshot is stored")?;
        ensure!(snapshot.meta.last_log_id.map(|id| id.index) >= Some(compacted));
    }
    cluster.restart(follower).await?;
    ensure!(*cluster.node(follower).topology() == *before, "member {follower} came back without the topology");

    // Another member is away while the others go on and compact their
    // logs: it can only catch up from the leader's snapshot.
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let away = (1..=3).find(|id| *id != leader && *id != follower).expect("three members");
    cluster.stop(away).await;
    for i in 0..20 {
        cluster.node(leader).propose(add_region(&format!("while-away-{i}"))).await?;
    }
    let mut compacted_at = 0;
    for id in [leader, follower] {
        let upto = cluster.node(id).compact_log(Duration::from_secs(10)).await?.expect("something was applied");
        eprintln!("member {id} compacted its log up to {upto} while member {away} is away");
        compacted_at = compacted_at.max(upto);
    }
    cluster.node(follower).propose(add_region("after-compaction")).await?;
    cluster.restart(away).await?;
    let expected = settled(&cluster, Duration::from_secs(15)).await?;
    assert!(expected.regions.contains("while-away-19") && expected.regions.contains("after-compaction"));
    wait_for_topology(cluster.node(away), &expected, Duration::from_secs(5)).await?;

    // It did get the leader's snapshot, and keeps it across a restart.
    cluster.stop(away).await;
    {
        let (_log, mut sm) = consensus::store::open(cluster.data_dir(away)).await?;
        let snapshot = sm.get_current_snapshot().await?.context("member got a snapshot")?;
        let at = snapshot.meta.last_log_id.map(|id| id.index);
        ensure!(at >= Some(compacted_at), "member {away}'s snapshot is at {at:?}, not {compacted_at}");
    }
    cluster.restart(away).await?;
    wait_for_topology(cluster.node(away), &expected, Duration::from_secs(5)).await?;
    cluster.node(away).propose(add_region("last")).await?;
    let last = settled(&cluster, Duration::from_secs(10)).await?;
    assert!(last.regions.contains("last"));
    cluster.shutdown().await;
    eprintln!("compaction test took {:?}", test_started.elapsed());
    Ok(())
}
