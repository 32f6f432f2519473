//! This node as a member of the Raft group that holds the topology
//! (`[cluster]` in its config): the [`consensus::ConsensusNode`] it runs, the
//! task that turns every committed topology into the router's
//! [`Topology`] and publishes it to the data path, the one-time bootstrap of
//! a new cluster from the config's topology, and the write gate that holds
//! and then refuses writes while this node has no write lease.
//!
//! ```text
//!  admin console ──propose──▶ ConsensusNode ──(Raft: commit on a quorum)──▶ every member
//!                                  │ watch<TopologyState>
//!                                  ▼
//!                      publish: translate::to_router ──▶ Shared.topology (watch) ──▶ sessions
//!                                                                       ▲
//!   sessions' writes ──▶ WriteGate: lease valid and shard writable? ────┘ (hold, then 40001)
//! ```
//!
//! The data path never awaits consensus: it reads the published topology
//! and a lock-free lease handle. Only a write that finds no lease (or no
//! writable primary) waits, at most `cluster.write_hold`, polling both.

pub mod gate;
pub mod translate;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consensus::{
    Applied, Change, Command, CommandError, ConsensusNode, LeaseState, Member, MemberId, ProposeError, RequestError,
    Status, Timings, TopologyState,
};
use router::topology::Topology;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Users;
use crate::config::ClusterConfig;
use crate::node::Shared;
pub use gate::WriteGate;

/// Who the audit log names for the bootstrap.
const BOOTSTRAP_ACTOR: &str = "bootstrap";
/// Pause between bootstrap attempts while no leader is known.
const BOOTSTRAP_RETRY: Duration = Duration::from_millis(200);

/// Why the cluster side of a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster: {0}")]
    Start(#[from] consensus::StartError),
}

/// This node's membership in the Raft group.
pub struct Cluster {
    node: ConsensusNode,
    gate: WriteGate,
    /// The node's own users file, under the cluster's users (see
    /// [`Users::with_cluster_users`]).
    file_users: arc_swap::ArcSwap<Users>,
}

impl Cluster {
    /// Open the Raft log in `cluster.data_dir`, start the member and its
    /// Raft endpoint. A new cluster is initialised by the lowest id among
    /// `cluster.peer`; a restarted member comes back from its log.
    pub async fn start(
        node_name: &str,
        region: &str,
        c: &ClusterConfig,
        file_users: Users,
    ) -> Result<Cluster, ClusterError> {
        let member = Member {
            id: c.member_id,
            name: node_name.to_owned(),
            region: region.to_owned(),
            raft_addr: c.raft_advertise.clone(),
            client_addr: c.client_advertise.clone(),
        };
        let initial_members = c
            .peers
            .iter()
            .map(|p| {
                if p.id == c.member_id {
                    member.clone()
                } else {
                    Member {
                        id: p.id,
                        name: p.name.clone(),
                        region: p.region.clone(),
                        raft_addr: p.raft_addr.clone(),
                        client_addr: p.client_addr.clone(),
                    }
                }
            })
            .collect();
        let timings = Timings {
            heartbeat_interval: c.heartbeat_interval,
            election_timeout_min: c.election_timeout,
            election_timeout_max: c.election_timeout * 2,
            write_lease: c.write_lease,
            ..Timings::default()
        };
        let node = ConsensusNode::start(consensus::Config {
            member,
            listen: c.raft_listen,
            data_dir: c.data_dir.clone(),
            initial_members,
            timings,
            tls: c.tls.clone(),
        })
        .await?;
        let gate = WriteGate::new(node.lease_handle(), c.write_hold);
        Ok(Cluster { node, gate, file_users: arc_swap::ArcSwap::from_pointee(file_users) })
    }

    /// This node as the group knows it.
    pub fn member(&self) -> &Member {
        self.node.member()
    }

    /// Where the Raft endpoint listens.
    pub fn raft_addr(&self) -> std::net::SocketAddr {
        self.node.local_addr()
    }

    /// Cut this node off from the Raft group until `until`, and never call
    /// `peers` (Raft addresses): a region outage drill.
    pub fn set_partition(&self, until: Option<tokio::time::Instant>, peers: std::collections::BTreeSet<String>) {
        self.node.set_partition(until, peers);
    }

    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    /// Commit a change through Raft, audited as made by `actor` from
    /// `origin` now.
    pub async fn propose(&self, actor: &str, origin: &str, change: Change) -> Result<Applied, ProposeError> {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        self.node.propose(Command { actor: actor.to_owned(), origin: origin.to_owned(), at, change }).await
    }

    /// The topology as applied here (what the data path routes by).
    pub fn state(&self) -> Arc<TopologyState> {
        self.node.topology()
    }

    /// The topology with every change committed anywhere before this call.
    pub async fn read_linearizable(&self) -> Result<Arc<TopologyState>, RequestError> {
        self.node.read_linearizable().await
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<TopologyState>> {
        self.node.subscribe()
    }

    pub async fn status(&self) -> Status {
        self.node.status().await
    }

    pub fn lease(&self) -> LeaseState {
        self.node.lease()
    }

    /// `ADD MEMBER`: a new Meridian node joins as a learner, catches up and
    /// becomes a voter.
    pub async fn add_member(&self, member: Member) -> Result<(), RequestError> {
        self.node.add_member(member).await
    }

    /// `REMOVE MEMBER`.
    pub async fn remove_member(&self, id: MemberId) -> Result<(), RequestError> {
        self.node.remove_member(id).await
    }

    /// The users this node accepts: its users file (`file`, when it was
    /// just reloaded) under the cluster's users.
    pub fn users(&self, file: Option<Users>) -> Users {
        if let Some(file) = file {
            self.file_users.store(Arc::new(file));
        }
        self.file_users.load().with_cluster_users(&self.state().users)
    }

    /// Stop the Raft member (revoking the lease first).
    pub async fn shutdown(&self) {
        self.node.shutdown().await;
    }
}

/// Publish every committed topology to the data path, translated for the
/// router with this node's current replica policy, until `stop`.
pub(crate) async fn publish(cluster: Arc<Cluster>, shared: Arc<Shared>, stop: CancellationToken) {
    let mut rx = cluster.subscribe();
    loop {
        let state = rx.borrow_and_update().clone();
        cluster.gate.set_paused(&state);
        let users = cluster.file_users.load().with_cluster_users(&state.users);
        if **shared.users.load() != users {
            shared.users.store(Arc::new(users));
        }
        let policy = shared.config.load().topology.replica_policy.clone();
        shared.topology.send_if_modified(|current| {
            let Some(mut next) = translate::to_router(&state, current.version, policy.clone()) else {
                return false;
            };
            if **current == next {
                return false;
            }
            next.version = current.version + 1;
            tracing::debug!(version = next.version, raft_version = state.version, "topology published");
            *current = Arc::new(next);
            true
        });
        // cancel safety: changed() and cancelled() are cancel safe.
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Seed a new cluster with `seed` (the config file's topology), once: as
/// soon as a leader is known, while the replicated topology is still empty.
/// Any member may try; the state machine takes only the first.
pub(crate) async fn bootstrap(cluster: Arc<Cluster>, seed: Topology, stop: CancellationToken) {
    if seed.shards.is_empty() {
        return;
    }
    let changes = translate::seed_changes(&seed);
    loop {
        if !cluster.state().shards.is_empty() || stop.is_cancelled() {
            return;
        }
        let origin = cluster.member().name.clone();
        match cluster.propose(BOOTSTRAP_ACTOR, &origin, Change::Bootstrap { changes: changes.clone() }).await {
            Ok(applied) => {
                tracing::info!(version = applied.version, "cluster topology initialised from the config file");
                return;
            }
            Err(ProposeError::Rejected(CommandError::AlreadyBootstrapped { .. })) => return,
            Err(ProposeError::Rejected(e)) => {
                tracing::error!(error = %e, "the config's topology cannot seed the cluster");
                return;
            }
            Err(ProposeError::ShuttingDown) => return,
            Err(e) => tracing::debug!(error = %e, "cluster bootstrap not done yet; retrying"),
        }
        // cancel safety: sleep and cancelled() are cancel safe.
        tokio::select! {
            _ = tokio::time::sleep(BOOTSTRAP_RETRY) => {}
            _ = stop.cancelled() => return,
        }
    }
}
