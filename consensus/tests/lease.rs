//! The write lease on a three-member cluster in one process: valid on every
//! member while a quorum answers, expired on a member cut off from the
//! others (here: the others are shut down) within one lease and one renewal
//! interval, valid again once a quorum is back.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
mod common;

use common::{Cluster, add_region};
use consensus::{ConsensusNode, Member, MemberId, Timings};
use tempfile::TempDir;
use tokio::time::Instant;

const WRITE_LEASE: Duration = Duration::from_secs(1);
/// Slack for scheduling on a busy test machine.
const SLACK: Duration = Duration::from_millis(300);

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        write_lease: WRITE_LEASE,
        ..Timings::default()
    }
}

/// Healthy cluster → leases valid and staying valid; `survivor` cut off →
/// its lease expires in time; quorum back → valid again.
async fn lease_follows_the_quorum(survivor_is_leader: bool) -> Result<()> {
    let mut cluster = Cluster::start(3, timings(), 26432).await?;
    let leader = cluster.any_leader(Duration::from_secs(10)).await?;

    // Healthy: valid everywhere within about a second of having a leader.
    let took = cluster.all_leases_valid(WRITE_LEASE + SLACK).await?;
    eprintln!("leases valid {took:?} after the leader was seen");

    // A committed change shows in the confirmed view.
    let applied = cluster.node(leader).propose(add_region("eu-west")).await?;
    tokio::time::sleep(WRITE_LEASE / 3 + SLACK).await;

    // And they stay valid: sample for two seconds.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for node in cluster.running() {
            let lease = node.lease();
            assert!(lease.valid, "member {}: {lease:?}", node.member().id);
            assert!(lease.expires_in.is_some_and(|d| d <= WRITE_LEASE), "{lease:?}");
            assert!(lease.epoch_view >= applied.version, "member {}: {lease:?}", node.member().id);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Cut off the survivor by stopping the other two.
    let survivor = if survivor_is_leader { leader } else { (1..=3).find(|id| *id != leader).expect("a follower") };
    let others: Vec<MemberId> = (1..=3).filter(|id| *id != survivor).collect();
    let handle = cluster.node(survivor).lease_handle();
    cluster.stop(others[0]).await;
    assert!(handle.is_valid(Instant::now()), "one member down leaves a quorum");
    let cut = Instant::now();
    cluster.stop(others[1]).await;
    let expired_within = WRITE_LEASE + WRITE_LEASE / 3 + SLACK;
    loop {
        if !handle.is_valid(Instant::now()) {
            break;
        }
        if cut.elapsed() > expired_within {
            bail!("the cut-off member's lease still valid {expired_within:?} after the cut");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expired_after = cut.elapsed();
    eprintln!("cut-off member {survivor} lost its lease {expired_after:?} after the cut");
    assert!(!cluster.node(survivor).lease().valid);
    assert_eq!(cluster.node(survivor).lease().expires_in, None);
    // It stays expired while alone.
    tokio::time::sleep(WRITE_LEASE).await;
    assert!(!handle.is_valid(Instant::now()));

    // The others come back from their directories: valid again.
    cluster.restart(others[0]).await?;
    cluster.restart(others[1]).await?;
    let took = cluster.all_leases_valid(Duration::from_secs(6)).await?;
    eprintln!("leases valid again {took:?} after the restarts");
    assert!(handle.is_valid(Instant::now()));
    assert!(handle.epoch_view() >= applied.version);

    cluster.shutdown().await;
    assert!(!handle.is_valid(Instant::now()), "a shut-down member holds no lease");
    Ok(())
}

#[tokio::test]
async fn a_cut_off_leader_loses_its_lease_and_gets_it_back() -> Result<()> {
    lease_follows_the_quorum(true).await
}

#[tokio::test]
async fn a_cut_off_follower_loses_its_lease_and_gets_it_back() -> Result<()> {
    lease_follows_the_quorum(false).await
}

#[tokio::test]
async fn a_write_lease_not_longer_than_the_heartbeat_is_refused() -> Result<()> {
    let dir = TempDir::new()?;
    let member = Member {
        id: 1,
        name: "meridian-1".into(),
        region: "eu".into(),
        raft_addr: "http://127.0.0.1:1".into(),
        client_addr: "127.0.0.1:2".into(),
    };
    let config = consensus::Config {
        member: member.clone(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        data_dir: dir.path().to_owned(),
        initial_members: vec![member],
        timings: Timings { write_lease: Duration::from_millis(100), ..timings() },
        tls: None,
    };
    match ConsensusNode::start(config).await {
        Err(consensus::StartError::Timings(reason)) => assert!(reason.contains("write_lease"), "{reason}"),
        Err(e) => bail!("unexpected error: {e}"),
        Ok(_) => bail!("a 100 ms lease with 100 ms heartbeats was accepted"),
    }
    Ok(())
}
