//! A cluster of members in one process for the integration tests: free
//! 127.0.0.1 ports, temporary directories, Raft over HTTP.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, bail};
use consensus::{Change, Command, ConsensusNode, Member, MemberId, RaftRole, RaftTls, Timings};
use tempfile::TempDir;
use tokio::time::Instant;

/// A port below the ephemeral range, free a moment ago (see `harness::free_port`).
pub fn free_port() -> Result<u16> {
    Ok(harness::free_port()?)
}

pub struct Cluster {
    pub members: Vec<Member>,
    listens: Vec<SocketAddr>,
    dirs: Vec<TempDir>,
    pub nodes: Vec<Option<ConsensusNode>>,
    timings: Timings,
    /// How many of `members` (the first ones) founded the group; the others
    /// joined later and start with no initial members.
    founders: usize,
    client_port_base: u16,
    /// Mutual TLS: the PEM files of member `id` (see `tls_files`); `None`:
    /// plain HTTP.
    tls: Option<PathBuf>,
}

/// Where a TLS test keeps member `id`'s files under `dir`: the CA
/// certificate, the member's certificate and key.
pub fn tls_files(dir: &Path, id: MemberId) -> RaftTls {
    RaftTls {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("member-{id}.pem")),
        key: dir.join(format!("member-{id}.key")),
    }
}

impl Cluster {
    /// `n` members on free ports with `timings`; client addresses from
    /// `client_port_base` (never listened on here).
    pub async fn start(n: u64, timings: Timings, client_port_base: u16) -> Result<Cluster> {
        Cluster::start_with(n, timings, client_port_base, None).await
    }

    /// As [`Cluster::start`], over mutual TLS with the files in `tls_dir`
    /// (see [`tls_files`]): `https://` addresses.
    pub async fn start_with(
        n: u64,
        timings: Timings,
        client_port_base: u16,
        tls_dir: Option<PathBuf>,
    ) -> Result<Cluster> {
        let mut cluster = Cluster {
            members: Vec::new(),
            listens: Vec::new(),
            dirs: Vec::new(),
            nodes: Vec::new(),
            timings,
            founders: n as usize,
            client_port_base,
            tls: tls_dir,
        };
        for _ in 0..n {
            cluster.new_member()?;
        }
        for i in 0..n as usize {
            let node = cluster.start_node(i).await?;
            cluster.nodes.push(Some(node));
        }
        Ok(cluster)
    }

    /// The next member's record, port and directory (not started).
    fn new_member(&mut self) -> Result<MemberId> {
        let id = self.members.len() as u64 + 1;
        let port = free_port()?;
        self.members.push(Member {
            id,
            name: format!("meridian-{id}"),
            region: ["eu", "us", "ap"][(id as usize - 1) % 3].into(),
            raft_addr: format!("{}://127.0.0.1:{port}", if self.tls.is_some() { "https" } else { "http" }),
            client_addr: format!("127.0.0.1:{}", u64::from(self.client_port_base) + id),
        });
        self.listens.push(SocketAddr::from(([127, 0, 0, 1], port)));
        self.dirs.push(TempDir::new()?);
        Ok(id)
    }

    /// Start one more member with no initial members: it waits to be
    /// added (`add_member`) by the group.
    pub async fn start_joiner(&mut self) -> Result<MemberId> {
        let id = self.new_member()?;
        let node = self.start_node(id as usize - 1).await?;
        self.nodes.push(Some(node));
        Ok(id)
    }

    pub async fn start_node(&self, i: usize) -> Result<ConsensusNode> {
        let initial_members = if i < self.founders { self.members[..self.founders].to_vec() } else { Vec::new() };
        let config = consensus::Config {
            member: self.members[i].clone(),
            listen: self.listens[i],
            data_dir: self.dirs[i].path().to_owned(),
            initial_members,
            timings: self.timings,
            tls: self.tls.as_deref().map(|dir| tls_files(dir, i as u64 + 1)),
        };
        Ok(ConsensusNode::start(config).await?)
    }

    pub fn member(&self, id: MemberId) -> &Member {
        &self.members[id as usize - 1]
    }

    /// Where member `id` keeps its Raft database.
    pub fn data_dir(&self, id: MemberId) -> &Path {
        self.dirs[id as usize - 1].path()
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

/// A PostgreSQL node of shard `s1` in region `eu` at 127.0.0.1:`port`.
pub fn add_node(name: &str, port: u16, role: consensus::state::Role) -> Change {
    Change::AddNode {
        name: name.into(),
        address: format!("127.0.0.1:{port}"),
        shard: "s1".into(),
        region: "eu".into(),
        role,
        priority: 10,
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
