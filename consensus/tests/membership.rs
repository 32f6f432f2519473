//! Membership 3 → 5 → 3 while proposals keep coming: three founders, a
//! load of `AddRegion` proposals (one new region each, round robin over the
//! founders), members 4 and 5 added through followers (the change is
//! forwarded to the leader), then removed again (4 through itself). At the
//! end, on every remaining member: each acknowledged proposal is in the
//! topology and in the Raft log exactly once, each proposal whose outcome
//! was unknown is either everywhere or nowhere, the voters are {1, 2, 3},
//! and the removed members are no longer contacted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
mod common;

use common::{Cluster, add_region};
use consensus::types::TypeConfig;
use consensus::{Applied, Change, ConsensusNode, MemberId, ProposeError, RaftRole, Timings, TopologyState};
use openraft::{EntryPayload, RaftLogReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..Timings::default()
    }
}

/// Pause between two proposals of the load.
const LOAD_PAUSE: Duration = Duration::from_millis(5);

/// What became of each proposal of the load, by region name.
#[derive(Debug, Default)]
struct Outcomes {
    ok: Vec<(String, Applied)>,
    no_leader: Vec<String>,
    unknown: Vec<(String, String)>,
    other: Vec<(String, String)>,
}

/// Propose a new region after another through member `via` until `stop`.
async fn load(cluster: &Cluster, via: MemberId, stop: &CancellationToken) -> Outcomes {
    let mut outcomes = Outcomes::default();
    let mut n = 0usize;
    while !stop.is_cancelled() {
        let name = format!("r{via}-{n:05}");
        let node = cluster.node(via);
        n += 1;
        match node.propose(add_region(&name)).await {
            Ok(applied) => outcomes.ok.push((name, applied)),
            Err(ProposeError::NoLeader) => outcomes.no_leader.push(name),
            Err(e @ ProposeError::OutcomeUnknown(_)) => outcomes.unknown.push((name, format!("{e:#}: {:?}", e))),
            Err(e) => outcomes.other.push((name, e.to_string())),
        }
        tokio::time::sleep(LOAD_PAUSE).await;
    }
    outcomes
}

/// Poll `check` on `node`'s status until it holds.
async fn until_status(
    node: &ConsensusNode,
    what: &str,
    within: Duration,
    check: impl Fn(&consensus::Status) -> bool,
) -> Result<consensus::Status> {
    let deadline = Instant::now() + within;
    loop {
        let status = node.status().await;
        if check(&status) {
            return Ok(status);
        }
        if Instant::now() > deadline {
            bail!("member {}: {what} not within {within:?}: {status:?}", node.member().id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The current leader among `ids`, as that member itself says.
async fn leader_among(cluster: &Cluster, ids: &[MemberId], within: Duration) -> Result<MemberId> {
    let deadline = Instant::now() + within;
    loop {
        for id in ids {
            if cluster.node(*id).status().await.role == RaftRole::Leader {
                return Ok(*id);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader among {ids:?} within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the removal of members 4 and 5 left behind, for the report.
#[derive(Debug)]
struct Removal {
    /// How `remove_member(4)` called on member 4 itself ended.
    self_removal: String,
    /// Member 4's and 5's status right after their removal, and three
    /// seconds of load later.
    after: BTreeMap<MemberId, (consensus::Status, consensus::Status)>,
}

/// 3 → 5 → 3 through followers (and 4 through itself).
async fn change_membership(cluster: &Cluster) -> Result<Removal> {
    let founders = [1, 2, 3];
    tokio::time::sleep(Duration::from_millis(300)).await;

    let leader = leader_among(cluster, &founders, Duration::from_secs(5)).await?;
    let followers: Vec<MemberId> = founders.into_iter().filter(|id| *id != leader).collect();
    let started = Instant::now();
    cluster.node(followers[0]).add_member(cluster.member(4).clone()).await.context("add member 4 via a follower")?;
    eprintln!("member 4 added via follower {} in {:?}", followers[0], started.elapsed());
    let started = Instant::now();
    cluster.node(followers[1]).add_member(cluster.member(5).clone()).await.context("add member 5 via a follower")?;
    eprintln!("member 5 added via follower {} in {:?}", followers[1], started.elapsed());
    // Adding again changes nothing.
    cluster.node(followers[1]).add_member(cluster.member(5).clone()).await.context("add member 5 again")?;

    let five: BTreeSet<MemberId> = (1..=5).collect();
    for id in 1..=5 {
        until_status(cluster.node(id), "five voters", Duration::from_secs(5), |s| s.voters == five).await?;
    }
    // The joiners vote and follow the log: they see the load.
    for id in [4, 5] {
        let applied = cluster.node(id).status().await.applied_index;
        until_status(cluster.node(id), "applying the load", Duration::from_secs(5), |s| s.applied_index > applied)
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The leader (a founder) leaves and comes back, to have an election
    // under load while five members vote: it steps down once its removal
    // is committed, the other four elect a new leader, and it is added
    // again (with the log it kept) through a follower.
    let old_leader = leader_among(cluster, &founders, Duration::from_secs(5)).await?;
    let via = founders.into_iter().find(|id| *id != old_leader).expect("three founders");
    let started = Instant::now();
    cluster.node(via).remove_member(old_leader).await.context("remove the leader")?;
    eprintln!("leader {old_leader} removed via {via} in {:?}", started.elapsed());
    let others: Vec<MemberId> = (1..=5).filter(|id| *id != old_leader).collect();
    let new_leader = leader_among(cluster, &others, Duration::from_secs(10)).await?;
    eprintln!("member {new_leader} leads {:?} after the removal", started.elapsed());
    let started = Instant::now();
    cluster.node(via).add_member(cluster.member(old_leader).clone()).await.context("add the old leader again")?;
    eprintln!("member {old_leader} added again via {via} in {:?}", started.elapsed());
    for id in 1..=5 {
        until_status(cluster.node(id), "five voters again", Duration::from_secs(5), |s| s.voters == five).await?;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Member 4 asks for its own removal: forwarded to the leader like any
    // other membership change (or run here, if member 4 was elected).
    eprintln!("member 4 is {:?} when it removes itself", cluster.node(4).status().await.role);
    let started = Instant::now();
    let self_removal = match cluster.node(4).remove_member(4).await {
        Ok(()) => format!("ok in {:?}", started.elapsed()),
        Err(e) => format!("refused after {:?}: {e}", started.elapsed()),
    };
    eprintln!("remove_member(4) on member 4: {self_removal}");
    let follower = leader_among(cluster, &[1, 2, 3, 4, 5], Duration::from_secs(5))
        .await
        .map(|leader| founders.into_iter().find(|id| *id != leader).expect("three founders"))?;
    // If the self-removal failed, remove 4 through a follower instead.
    if !self_removal.starts_with("ok") {
        cluster.node(follower).remove_member(4).await.context("remove member 4 via a follower")?;
    }
    let started = Instant::now();
    cluster.node(follower).remove_member(5).await.context("remove member 5 via a follower")?;
    eprintln!("member 5 removed via follower {follower} in {:?}", started.elapsed());
    // Removing a member that is gone is refused, and says why.
    let again = cluster.node(follower).remove_member(5).await;
    ensure!(again.is_err(), "removing member 5 twice: {again:?}");

    let three: BTreeSet<MemberId> = founders.into_iter().collect();
    for id in founders {
        until_status(cluster.node(id), "voters back to {1, 2, 3}", Duration::from_secs(5), |s| {
            s.voters == three && s.members.keys().copied().collect::<BTreeSet<_>>() == three
        })
        .await?;
    }
    // The leader replicates to the two other founders only.
    let leader = leader_among(cluster, &founders, Duration::from_secs(5)).await?;
    let others: BTreeSet<MemberId> = three.iter().copied().filter(|id| *id != leader).collect();
    until_status(cluster.node(leader), "replicating to the founders only", Duration::from_secs(5), |s| {
        s.replication.keys().copied().collect::<BTreeSet<_>>() == others
    })
    .await?;

    // The removed members are no longer contacted: while the load goes on,
    // their log does not grow, and their write lease runs out (they cannot
    // apply what the leader's read index asks for). A removed member that
    // never received the entry removing it still thinks it votes and calls
    // elections (its term rises) until it is shut down, but the founders
    // refuse those votes while they hear from their leader: their term does
    // not move.
    let term = cluster.node(leader).status().await.term;
    let mut before = BTreeMap::new();
    for id in [4, 5] {
        before.insert(id, cluster.node(id).status().await);
    }
    let applied = cluster.node(leader).status().await.applied_index;
    // Several election timeouts: a removed member that still thought it
    // votes would have called an election by then.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader_status = cluster.node(leader).status().await;
    ensure!(leader_status.applied_index > applied, "the load went on: {leader_status:?}");
    ensure!(leader_status.term == term, "the founders' term moved: {term} → {}", leader_status.term);
    let mut after = BTreeMap::new();
    for (id, was) in before {
        let now = cluster.node(id).status().await;
        ensure!(now.last_log_index == was.last_log_index, "member {id} still receives entries: {was:?} → {now:?}");
        ensure!(now.role != RaftRole::Leader, "member {id}: {now:?}");
        ensure!(!now.lease.valid, "member {id} still holds a write lease: {now:?}");
        after.insert(id, (was, now));
    }
    Ok(Removal { self_removal, after })
}

/// How many times each region's `AddRegion` is in member `id`'s Raft log
/// (read from its database once it has stopped).
async fn regions_in_log(cluster: &Cluster, id: MemberId) -> Result<BTreeMap<String, usize>> {
    let (mut log, _sm) = consensus::store::open(cluster.data_dir(id)).await?;
    let entries: Vec<openraft::Entry<TypeConfig>> = log.try_get_log_entries(..).await?;
    ensure!(entries.first().is_some_and(|e| e.log_id.index <= 1), "member {id}'s log was purged");
    let mut counts = BTreeMap::new();
    for entry in entries {
        if let EntryPayload::Normal(cmd) = entry.payload
            && let Change::AddRegion { name } = cmd.change
        {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    Ok(counts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_3_to_5_to_3_under_load() -> Result<()> {
    let test_started = Instant::now();
    let mut cluster = Cluster::start(3, timings(), 36432).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    // 4 and 5 start with no initial members: they wait to be contacted.
    assert_eq!(cluster.start_joiner().await?, 4);
    assert_eq!(cluster.start_joiner().await?, 5);
    for id in [4, 5] {
        let status = cluster.node(id).status().await;
        assert!(status.voters.is_empty() && status.leader.is_none(), "{status:?}");
    }

    let stop = CancellationToken::new();
    // One stream of proposals through each founder.
    let (one, two, three, removal) =
        tokio::join!(load(&cluster, 1, &stop), load(&cluster, 2, &stop), load(&cluster, 3, &stop), async {
            let removal = change_membership(&cluster).await;
            stop.cancel();
            removal
        });
    let removal = removal?;
    // Each acknowledged proposal added its region (a second application
    // would have answered `changed: false`), in the order of its stream.
    for stream in [&one, &two, &three] {
        let mut last_version = 0;
        for (name, applied) in &stream.ok {
            assert!(applied.changed, "{name} was applied before: {applied:?}");
            assert!(applied.version > last_version, "{name}: version {} after {last_version}", applied.version);
            last_version = applied.version;
        }
    }
    let mut outcomes = Outcomes::default();
    for stream in [one, two, three] {
        outcomes.ok.extend(stream.ok);
        outcomes.no_leader.extend(stream.no_leader);
        outcomes.unknown.extend(stream.unknown);
        outcomes.other.extend(stream.other);
    }

    eprintln!(
        "load: {} ok, {} no leader, {} outcome unknown, {} other; self-removal of 4: {}",
        outcomes.ok.len(),
        outcomes.no_leader.len(),
        outcomes.unknown.len(),
        outcomes.other.len(),
        removal.self_removal,
    );
    for (id, (was, now)) in &removal.after {
        eprintln!(
            "removed member {id}: {:?} log {:?} term {} voters {:?} → {:?} log {:?} term {} voters {:?}",
            was.role, was.last_log_index, was.term, was.voters, now.role, now.last_log_index, now.term, now.voters
        );
    }
    for (name, e) in &outcomes.unknown {
        eprintln!("outcome unknown: {name}: {e}");
    }
    assert!(outcomes.other.is_empty(), "{:?}", outcomes.other);
    assert!(outcomes.ok.len() > 50, "the load ran: {} proposals acknowledged", outcomes.ok.len());

    // The removed members go; a new proposal still commits.
    cluster.stop(4).await;
    cluster.stop(5).await;
    cluster.node(2).propose(add_region("after-removal")).await.context("propose after the removals")?;

    // Every founder ends with the same topology.
    let mut topologies: Vec<Arc<TopologyState>> = Vec::new();
    for id in 1..=3 {
        topologies.push(cluster.node(id).read_linearizable().await?);
    }
    let topology = topologies[0].clone();
    for (i, other) in topologies.iter().enumerate() {
        assert_eq!(**other, *topology, "member {} differs from member 1", i + 1);
    }
    assert!(topology.regions.contains("after-removal"));
    for (name, _) in &outcomes.ok {
        assert!(topology.regions.contains(name), "acknowledged {name} is missing");
    }
    for name in &outcomes.no_leader {
        assert!(!topology.regions.contains(name), "{name} failed with NoLeader but was applied");
    }
    let unknown_applied: Vec<&String> =
        outcomes.unknown.iter().map(|(name, _)| name).filter(|name| topology.regions.contains(*name)).collect();
    eprintln!(
        "outcome unknown resolved: {} applied, {} not",
        unknown_applied.len(),
        outcomes.unknown.len() - unknown_applied.len()
    );
    // The audit log (newest entries) names each change once, in version
    // order.
    let mut audited = BTreeSet::new();
    let mut version = 0;
    for entry in &topology.audit {
        assert!(entry.version > version, "audit out of order: {entry:?}");
        version = entry.version;
        if let Change::AddRegion { name } = &entry.change {
            assert!(audited.insert(name.clone()), "{name} audited twice");
        }
    }
    assert_eq!(version, topology.version);

    // Stop everything and read the Raft logs: every region proposed once
    // is in each founder's log once, acknowledged ones certainly.
    let expected_regions = topology.regions.clone();
    cluster.stop(1).await;
    cluster.stop(2).await;
    cluster.stop(3).await;
    for id in 1..=3 {
        let counts = regions_in_log(&cluster, id).await?;
        for (name, count) in &counts {
            assert_eq!(*count, 1, "member {id}: {name} is in the log {count} times");
        }
        let logged: BTreeSet<String> = counts.into_keys().collect();
        assert_eq!(logged, expected_regions, "member {id}: the log and the topology disagree");
    }
    eprintln!("membership test took {:?}", test_started.elapsed());
    Ok(())
}
