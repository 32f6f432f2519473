//! Three members in one process, on 127.0.0.1 ports and temporary
//! directories, talking Raft over HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
mod common;

use common::{Cluster, add_region};
use consensus::{Change, Command, ConsensusNode, Timings, TopologyState};

/// Shorter than the cross-region defaults so the tests run quickly.
fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..Timings::default()
    }
}

/// Wait until `node`'s published topology has `region`.
async fn sees_region(node: &ConsensusNode, region: &str, within: Duration) -> Result<Arc<TopologyState>> {
    let mut topology = node.subscribe();
    let seen = tokio::time::timeout(within, topology.wait_for(|t| t.regions.contains(region))).await;
    match seen {
        Ok(Ok(t)) => Ok(t.clone()),
        _ => bail!("member {} does not see region {region} within {within:?}", node.member().id),
    }
}

#[tokio::test]
async fn a_proposal_on_a_follower_is_applied_everywhere_within_a_second() -> Result<()> {
    let cluster = Cluster::start(3, timings(), 16432).await?;
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let status = cluster.node(leader).status().await;
    assert_eq!(status.voters.len(), 3);
    assert_eq!(status.members.len(), 3);

    let follower = cluster.follower_of(leader);
    let applied = follower.propose(add_region("eu-west")).await.context("propose on a follower")?;
    assert!(applied.changed);
    for node in cluster.running() {
        let topology = sees_region(node, "eu-west", Duration::from_secs(1)).await?;
        assert_eq!(topology.version, applied.version);
    }

    // A refused command comes back as such, from the follower too.
    let refused =
        follower.propose(Command { change: Change::RemoveRegion { name: "nowhere".into() }, ..add_region("x") });
    assert!(matches!(refused.await, Err(consensus::ProposeError::Rejected(_))));

    // Linearizable reads on a follower see what was just committed.
    follower.propose(add_region("us-east")).await?;
    for node in cluster.running() {
        let topology = node.read_linearizable().await?;
        assert!(topology.regions.contains("us-east"), "member {}", node.member().id);
    }
    let status = follower.status().await;
    assert_eq!(status.leader, Some(leader));
    assert!(status.applied_index.is_some());
    assert!(status.commit_index >= status.applied_index, "{status:?}");
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_new_leader_takes_over_when_the_leader_stops() -> Result<()> {
    let mut cluster = Cluster::start(3, timings(), 16432).await?;
    let old = cluster.leader(Duration::from_secs(10)).await?;
    cluster.node(old).propose(add_region("before")).await?;

    cluster.stop(old).await;
    let new = cluster.leader(Duration::from_secs(10)).await?;
    assert_ne!(new, old);

    let follower = cluster.follower_of(new);
    follower.propose(add_region("after")).await.context("propose after failover")?;
    for node in cluster.running() {
        let topology = sees_region(node, "after", Duration::from_secs(1)).await?;
        assert!(topology.regions.contains("before"));
    }
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_restarted_member_catches_up_from_its_disk() -> Result<()> {
    let mut cluster = Cluster::start(3, timings(), 16432).await?;
    cluster.leader(Duration::from_secs(10)).await?;
    cluster.node(2).propose(add_region("one")).await?;
    sees_region(cluster.node(1), "one", Duration::from_secs(1)).await?;

    // Member 1 bootstrapped the group: it must come back without
    // initialising it again.
    cluster.stop(1).await;
    let survivor = cluster.running().next().expect("two run");
    survivor.propose(add_region("two")).await.context("propose while member 1 is down")?;
    survivor.propose(add_region("three")).await?;

    cluster.restart(1).await.context("restart member 1")?;
    let restarted = cluster.node(1);
    // What it had before stopping it has again, from its own log.
    sees_region(restarted, "one", Duration::from_secs(2)).await?;
    // What it missed it gets from the leader.
    let topology = sees_region(restarted, "three", Duration::from_secs(5)).await?;
    assert!(topology.regions.contains("two"));
    let leader = cluster.leader(Duration::from_secs(10)).await?;
    let expected = cluster.node(leader).topology();
    assert_eq!(cluster.node(1).topology().version, expected.version);
    for node in cluster.nodes.into_iter().flatten() {
        node.shutdown().await;
    }
    Ok(())
}
