//! A cluster of members in one process for the integration tests: free
//! 127.0.0.1 ports, temporary directories, Raft over HTTP.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, bail};
use consensus::{Change, Command, ConsensusNode, Member, MemberId, RaftRole, Timings};
use tempfile::TempDir;
use tokio::time::Instant;

pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub struct Cluster {
    pub members: Vec<Member>,
    listens: Vec<SocketAddr>,
    dirs: Vec<TempDir>,
    pub nodes: Vec<Option<ConsensusNode>>,
    timings: Timings,
}

impl Cluster {
    /// `n` members on free ports with `timings`; client addresses from
    /// `client_port_base` (never listened on here).
    pub async fn start(n: u64, timings: Timings, client_port_base: u16) -> Result<Cluster> {
        let mut cluster =
            Cluster { members: Vec::new(), listens: Vec::new(), dirs: Vec::new(), nodes: Vec::new(), timings };
        for id in 1..=n {
            let port = free_port()?;
            cluster.members.push(Member {
                id,
                name: format!("meridian-{id}"),
                region: ["eu", "us", "ap"][(id as usize - 1) % 3].into(),
                raft_addr: format!("http://127.0.0.1:{port}"),
                client_addr: format!("127.0.0.1:{}", u64::from(client_port_base) + id),
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

    pub async fn start_node(&self, i: usize) -> Result<ConsensusNode> {
        let config = consensus::Config {
            member: self.members[i].clone(),
            listen: self.listens[i],
            data_dir: self.dirs[i].path().to_owned(),
            initial_members: self.members.clone(),
            timings: self.timings,
        };
        Ok(ConsensusNode::start(config).await?)
    }

    pub fn node(&self, id: MemberId) -> &ConsensusNode {
        self.nodes[id as usize - 1].as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &ConsensusNode> {
        self.nodes.iter().flatten()
    }

    pub async fn stop(&mut self, id: MemberId) {
        if let Some(node) = self.nodes[id as usize - 1].take() {
            node.shutdown().await;
        }
    }

    pub async fn restart(&mut self, id: MemberId) -> Result<()> {
        let node = self.start_node(id as usize - 1).await?;
        self.nodes[id as usize - 1] = Some(node);
        Ok(())
    }

    /// Wait until every running member names the same leader, one of them.
    pub async fn leader(&self, within: Duration) -> Result<MemberId> {
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

    pub fn follower_of(&self, leader: MemberId) -> &ConsensusNode {
        self.running().find(|n| n.member().id != leader).expect("a follower runs")
    }

    /// Any running member that says it leads (no agreement needed).
    pub async fn any_leader(&self, within: Duration) -> Result<MemberId> {
        let deadline = Instant::now() + within;
        loop {
            for node in self.running() {
                let status = node.status().await;
                if status.role == RaftRole::Leader {
                    return Ok(status.id);
                }
            }
            if Instant::now() > deadline {
                bail!("no leader within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every running member holds a valid lease; how long it took.
    pub async fn all_leases_valid(&self, within: Duration) -> Result<Duration> {
        let start = Instant::now();
        loop {
            if self.running().all(|n| n.lease().valid) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > within {
                let leases: Vec<_> = self.running().map(|n| (n.member().id, n.lease())).collect();
                bail!("not every lease valid within {within:?}: {leases:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn shutdown(self) {
        for node in self.nodes.into_iter().flatten() {
            node.shutdown().await;
        }
    }
}

/// An audited change that adds a region.
pub fn add_region(name: &str) -> Command {
    Command {
        actor: "dba".into(),
        origin: "127.0.0.1:50000".into(),
        at: 1_700_000_000_000,
        change: Change::AddRegion { name: name.into() },
    }
}
