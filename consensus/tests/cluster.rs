//! Three members in one process, on 127.0.0.1 ports and temporary
//! directories, talking Raft over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use consensus::{Change, Command, ConsensusNode, Member, MemberId, RaftRole, Timings, TopologyState};
use tempfile::TempDir;
use tokio::time::Instant;

/// Shorter than the cross-region defaults so the tests run quickly.
fn timings() -> Timings {
    Timings {
        heartbeat_interval: Duration::from_millis(100),
        election_timeout_min: Duration::from_millis(500),
        election_timeout_max: Duration::from_millis(1000),
        ..Timings::default()
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Cluster {
    members: Vec<Member>,
    listens: Vec<SocketAddr>,
    dirs: Vec<TempDir>,
    nodes: Vec<Option<ConsensusNode>>,
}

impl Cluster {
    async fn start(n: u64) -> Result<Cluster> {
        let mut cluster = Cluster { members: Vec::new(), listens: Vec::new(), dirs: Vec::new(), nodes: Vec::new() };
        for id in 1..=n {
            let port = free_port()?;
            cluster.members.push(Member {
                id,
                name: format!("meridian-{id}"),
                region: ["eu", "us", "ap"][(id as usize - 1) % 3].into(),
                raft_addr: format!("http://127.0.0.1:{port}"),
                client_addr: format!("127.0.0.1:{}", 16432 + id),
            });
            cluster.listens.push(SocketAddr::from(([127, 0, 0, 1], port)));
            cluster.dirs.push(TempDir::new()?);
        }
        for i in 0..n as usize {
            let node = cluster.start_node(i).await?;
            cluster.nodes.push(Some(node));
        }
        Ok(cluster)
    }

    async fn start_node(&self, i: usize) -> Result<ConsensusNode> {
        let config = consensus::Config {
            member: self.members[i].clone(),
            listen: self.listens[i],
            data_dir: self.dirs[i].path().to_owned(),
            initial_members: self.members.clone(),
            timings: timings(),
        };
        Ok(ConsensusNode::start(config).await?)
    }

    fn node(&self, id: MemberId) -> &ConsensusNode {
        self.nodes[id as usize - 1].as_ref().expect("node is running")
    }

    fn running(&self) -> impl Iterator<Item = &ConsensusNode> {
        self.nodes.iter().flatten()
    }

    async fn stop(&mut self, id: MemberId) {
        if let Some(node) = self.nodes[id as usize - 1].take() {
            node.shutdown().await;
        }
    }

    async fn restart(&mut self, id: MemberId) -> Result<()> {
        let node = self.start_node(id as usize - 1).await?;
        self.nodes[id as usize - 1] = Some(node);
        Ok(())
    }

    /// Wait until every running member names the same leader, one of them.
    async fn leader(&self, within: Duration) -> Result<MemberId> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for node in self.running() {
                leaders.push(node.status().await.leader);
            }
            if let Some(Some(leader)) = leaders.first().copied() {
                let agreed = leaders.iter().all(|l| *l == Some(leader));
                let running = self.running().any(|n| n.member().id == leader);
                if agreed && running && self.node(leader).status().await.role == RaftRole::Leader {
                    return Ok(leader);
                }
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {within:?}: {leaders:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn follower_of(&self, leader: MemberId) -> &ConsensusNode {
        self.running().find(|n| n.member().id != leader).expect("a follower runs")
    }
}

fn add_region(name: &str) -> Command {
    Command {
        actor: "dba".into(),
        origin: "127.0.0.1:50000".into(),
        at: 1_700_000_000_000,
        change: Change::AddRegion { name: name.into() },
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
    let cluster = Cluster::start(3).await?;
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
    let mut cluster = Cluster::start(3).await?;
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
    let mut cluster = Cluster::start(3).await?;
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
