//! The simulated partition a region outage drill uses
//! (`ConsensusNode::set_partition`): a member cut off loses its lease and
//! its leadership, the other two elect a leader and keep committing, and
//! once the cut ends the member catches up; a member told to stop calling
//! a peer leaves that peer out too.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Result, bail};
mod common;

use common::{Cluster, add_region};
use consensus::{MemberId, Timings};
use tokio::time::Instant;

fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        write_lease: Duration::from_secs(1),
        ..Timings::default()
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Result<Duration> {
    let started = Instant::now();
    while !check() {
        if started.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_cut_off_by_a_drill_loses_its_lease_and_comes_back() -> Result<()> {
    let cluster = Cluster::start(3, timings(), 26532).await?;
    let leader = cluster.any_leader(Duration::from_secs(10)).await?;
    cluster.all_leases_valid(Duration::from_secs(3)).await?;

    // Cut the leader off (the worst case: an election first), and tell the
    // others not to call it, as the control loop does.
    let cut: MemberId = leader;
    let others: Vec<MemberId> = (1..=3).filter(|id| *id != cut).collect();
    let until = Instant::now() + Duration::from_secs(4);
    cluster.node(cut).set_partition(Some(until), BTreeSet::new());
    let cut_addr = cluster.member(cut).raft_addr.clone();
    for id in &others {
        cluster.node(*id).set_partition(None, BTreeSet::from([cut_addr.clone()]));
    }
    let handle = cluster.node(cut).lease_handle();
    let lost =
        wait_for("the cut-off member's lease expires", Duration::from_secs(3), || !handle.is_valid(Instant::now()))
            .await?;
    eprintln!("member {cut} lost its lease {lost:?} after the cut");

    // The other two elect a leader among themselves and commit.
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_leader = loop {
        let mut found = None;
        for id in &others {
            let status = cluster.node(*id).status().await;
            if let Some(l) = status.leader.filter(|l| others.contains(l)) {
                found = Some(l);
            }
        }
        if let Some(l) = found {
            break l;
        }
        if Instant::now() > deadline {
            bail!("no leader among {others:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let applied = cluster.node(new_leader).propose(add_region("during-the-cut")).await?;
    assert!(
        !cluster.node(cut).topology().regions.contains("during-the-cut"),
        "the cut-off member must not hear of it during the cut"
    );

    // The cut ends on its own (its end time), and the others call it again.
    for id in &others {
        cluster.node(*id).set_partition(None, BTreeSet::new());
    }
    let node = cluster.node(cut);
    let back = wait_for("the member catches up after the cut", Duration::from_secs(10), || {
        node.topology().version >= applied.version
    })
    .await?;
    let relet =
        wait_for("its lease is valid again", Duration::from_secs(5), || handle.is_valid(Instant::now())).await?;
    eprintln!(
        "member {cut} caught up {back:?} after the others called it again (its own cut ends at its end time, 4 s after it began); lease valid {relet:?} later"
    );
    cluster.shutdown().await;
    Ok(())
}
