//! [`ConsensusNode`]: one running member of the Raft group, and the facade
//! the rest of Meridian uses (`propose`, `read_linearizable`, `subscribe`,
//! `status`, membership changes, `shutdown`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, ServerState};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Timings};
use crate::error::{ProposeError, RequestError, StartError};
use crate::lease::{self, LeaseHandle, LeaseState};
use crate::network::{self, HttpClient, MembershipReply, MembershipRequest, Network, ProposeReply, ReadIndexReply};
use crate::state::{Applied, TopologyState};
use crate::store::{self, StateMachineStore};
use crate::types::{Command, Member, MemberId, Response, TypeConfig};

/// How long to wait before asking again when the leader is changing.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long `shutdown` lets in-flight HTTP requests finish.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// One member of the Raft group: the store, the Raft node and its HTTP
/// endpoint. Dropping it without [`ConsensusNode::shutdown`] stops serving
/// but leaves openraft's tasks to end on their own.
pub struct ConsensusNode {
    member: Member,
    core: Core,
    local_addr: SocketAddr,
    server: parking_lot::Mutex<Option<JoinHandle<()>>>,
    lease: LeaseHandle,
    lease_task: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

/// What the node's facade and its background tasks (the lease renewal)
/// share.
#[derive(Clone)]
pub(crate) struct Core {
    pub(crate) id: MemberId,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) state_machine: StateMachineStore,
    pub(crate) client: HttpClient,
    pub(crate) timings: Timings,
    pub(crate) shutdown: CancellationToken,
}

/// A member's view of the group, from Raft's metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    pub id: MemberId,
    pub role: RaftRole,
    pub leader: Option<MemberId>,
    pub term: u64,
    /// Index of the last committed entry this member knows of.
    pub commit_index: Option<u64>,
    /// Index of the last entry applied to this member's topology.
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    /// The voters of the effective membership (joint: of every config).
    pub voters: BTreeSet<MemberId>,
    /// Every member, voters and learners.
    pub members: BTreeMap<MemberId, Member>,
    /// This member's write lease.
    pub lease: LeaseState,
}

/// What a member is doing in the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl ConsensusNode {
    /// Open the store in `config.data_dir`, start Raft, serve the Raft HTTP
    /// routes on `config.listen` and, for a new cluster, bootstrap it: only
    /// the member with the lowest id among `initial_members` initialises,
    /// and only when its log is empty. A restarted member comes back from
    /// its disk and is not initialised again.
    pub async fn start(config: Config) -> Result<ConsensusNode, StartError> {
        let id = config.member.id;
        let initial: BTreeMap<MemberId, Member> = config.initial_members.iter().map(|m| (m.id, m.clone())).collect();
        if !initial.is_empty() && !initial.contains_key(&id) {
            return Err(StartError::NotAnInitialMember(id));
        }
        let raft_config = Arc::new(config.timings.raft_config()?);
        let (log, state_machine) = store::open(&config.data_dir).await?;
        let client = HttpClient::new();
        let raft = Raft::new(id, raft_config, Network::new(client.clone()), log, state_machine.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(source) => {
                let _ = raft.shutdown().await;
                return Err(StartError::Bind { addr: config.listen, source });
            }
        };
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(serve_raft(listener, network::router(raft.clone()), shutdown.clone()));
        let core = Core { id, raft, state_machine, client, timings: config.timings, shutdown };
        let lease = LeaseHandle::new();
        let lease_task = tokio::spawn(lease::renew(core.clone(), lease.clone()));
        let node = ConsensusNode {
            member: config.member,
            core,
            local_addr,
            server: parking_lot::Mutex::new(Some(server)),
            lease,
            lease_task: parking_lot::Mutex::new(Some(lease_task)),
        };

        let initialized = node.core.raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))?;
        let lowest = initial.keys().next().copied();
        if initialized {
            tracing::info!(member = id, "raft member restarted from its log");
        } else if lowest == Some(id) {
            tracing::info!(member = id, members = ?initial.keys().collect::<Vec<_>>(), "initialising the raft group");
            if let Err(e) = node.core.raft.initialize(initial).await {
                node.stop().await;
                return Err(StartError::Raft(e.to_string()));
            }
        } else {
            tracing::info!(member = id, "waiting to be contacted by the raft group");
        }
        Ok(node)
    }

    /// This member.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// The address the Raft HTTP endpoint actually listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Commit `cmd` through Raft and apply it: on this member when it leads,
    /// otherwise forwarded over HTTP to the leader (waiting out an election
    /// for up to the forwarding timeout).
    ///
    /// A command that reached a leader but got no answer is reported as
    /// [`ProposeError::OutcomeUnknown`], never as failed.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ProposeError> {
        let deadline = Instant::now() + self.core.timings.forward_timeout;
        loop {
            let leader = self.core.wait_for_leader(deadline).await.ok_or(ProposeError::NoLeader)?;
            if leader.id == self.member.id {
                match self.core.raft.client_write(cmd.clone()).await {
                    Ok(written) => return applied(written.data),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {}
                    Err(RaftError::APIError(e @ ClientWriteError::ChangeMembershipError(_))) => {
                        return Err(ProposeError::OutcomeUnknown(e.into()));
                    }
                    Err(RaftError::Fatal(_)) => return Err(ProposeError::ShuttingDown),
                }
            } else {
                let timeout = deadline.saturating_duration_since(Instant::now()).max(RETRY_PAUSE);
                match self.core.client.post(&leader.raft_addr, "/raft/propose", &cmd, timeout).await {
                    Ok(ProposeReply::Done(response)) => return applied(response),
                    Ok(ProposeReply::NotLeader { .. }) => {}
                    Ok(ProposeReply::Failed(reason)) => return Err(ProposeError::OutcomeUnknown(reason.into())),
                    Err(e) if e.not_delivered() => {
                        tracing::debug!(leader = leader.id, error = %e, "cannot forward proposal, retrying");
                    }
                    Err(e) => return Err(ProposeError::OutcomeUnknown(e.into())),
                }
            }
            if self.core.shutdown.is_cancelled() {
                return Err(ProposeError::ShuttingDown);
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(ProposeError::NoLeader);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The topology as of now, linearizably: every change committed before
    /// this call (on any member) is in it. On the leader, after confirming
    /// its leadership with a quorum; on a follower, after asking the leader
    /// for its read index and applying the log up to it.
    pub async fn read_linearizable(&self) -> Result<Arc<TopologyState>, RequestError> {
        self.core.read_linearizable().await
    }

    /// This member's write lease now: whether it has confirmed the
    /// committed topology with the quorum within
    /// [`Timings::write_lease`].
    pub fn lease(&self) -> LeaseState {
        self.lease.state(Instant::now())
    }

    /// A cheap, lock-free handle on this member's write lease for the data
    /// path (never awaits consensus).
    pub fn lease_handle(&self) -> LeaseHandle {
        self.lease.clone()
    }

    /// The topology as applied on this member so far, without asking
    /// anyone: what the data path reads.
    pub fn topology(&self) -> Arc<TopologyState> {
        self.core.state_machine.topology()
    }

    /// The applied topology now and on every change. Never closes while
    /// this node exists.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopologyState>> {
        self.core.state_machine.subscribe()
    }

    /// This member's view of the group.
    pub async fn status(&self) -> Status {
        let metrics = self.core.raft.metrics().borrow().clone();
        let commit_index =
            self.core.raft.with_raft_state(|state| state.committed.map(|id| id.index)).await.ok().flatten();
        let membership = metrics.membership_config.membership();
        Status {
            id: metrics.id,
            role: match metrics.state {
                ServerState::Leader => RaftRole::Leader,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Learner => RaftRole::Learner,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            leader: metrics.current_leader,
            term: metrics.current_term,
            commit_index,
            applied_index: metrics.last_applied.map(|id| id.index),
            last_log_index: metrics.last_log_index,
            voters: membership.voter_ids().collect(),
            members: membership.nodes().map(|(id, member)| (*id, member.clone())).collect(),
            lease: self.lease(),
        }
    }

    /// Add `member` as a learner (it receives the log but does not vote)
    /// and wait until it has caught up. On the leader, or forwarded to it.
    pub async fn add_learner(&self, member: Member) -> Result<(), RequestError> {
        self.membership(MembershipRequest::AddLearner(member)).await
    }

    /// Make `voters` the voting members (joint consensus, handled by
    /// openraft). Every id must already be a member (a learner that caught
    /// up); members left out are removed from the group. On the leader, or
    /// forwarded to it.
    pub async fn change_membership(&self, voters: BTreeSet<MemberId>) -> Result<(), RequestError> {
        self.membership(MembershipRequest::ChangeVoters(voters)).await
    }

    /// `ADD MEMBER`: `member` joins as a learner, catches up, and becomes a
    /// voter. Adding a member that already votes changes nothing.
    pub async fn add_member(&self, member: Member) -> Result<(), RequestError> {
        let id = member.id;
        if self.status().await.voters.contains(&id) {
            return Ok(());
        }
        self.add_learner(member).await?;
        let mut voters = self.status().await.voters;
        voters.insert(id);
        self.change_membership(voters).await
    }

    /// `REMOVE MEMBER`: `id` stops voting and leaves the group. Refused
    /// for the last voter.
    pub async fn remove_member(&self, id: MemberId) -> Result<(), RequestError> {
        let status = self.status().await;
        if !status.members.contains_key(&id) {
            return Err(RequestError::Refused(format!("member {id} is not in the group")));
        }
        let mut voters = status.voters;
        voters.remove(&id);
        if voters.is_empty() {
            return Err(RequestError::Refused(format!("member {id} is the last voter")));
        }
        self.change_membership(voters).await
    }

    /// Run a membership change on the leader: here when this member leads,
    /// otherwise over HTTP (waiting out an election for up to the
    /// forwarding timeout).
    async fn membership(&self, req: MembershipRequest) -> Result<(), RequestError> {
        // Adding a learner waits for it to catch up: allow longer than a
        // proposal.
        let deadline = Instant::now() + self.core.timings.forward_timeout * 4;
        loop {
            let leader = self.core.wait_for_leader(deadline).await.ok_or(RequestError::NoLeader)?;
            if leader.id == self.member.id {
                let result = match req.clone() {
                    MembershipRequest::AddLearner(member) => {
                        self.core.raft.add_learner(member.id, member, true).await.map(|_| ())
                    }
                    MembershipRequest::ChangeVoters(voters) => {
                        self.core.raft.change_membership(voters, false).await.map(|_| ())
                    }
                };
                match result.map_err(membership_error) {
                    Err(RequestError::NotLeader { .. }) => {}
                    other => return other,
                }
            } else {
                let timeout = deadline.saturating_duration_since(Instant::now()).max(RETRY_PAUSE);
                match self.core.client.post(&leader.raft_addr, "/raft/membership", &req, timeout).await {
                    Ok(MembershipReply::Done) => return Ok(()),
                    Ok(MembershipReply::NotLeader { .. }) => {}
                    Ok(MembershipReply::Failed(reason)) => return Err(RequestError::Refused(reason)),
                    Err(e) if e.not_delivered() => {}
                    Err(e) => return Err(RequestError::Unreachable(e.into())),
                }
            }
            if self.core.shutdown.is_cancelled() {
                return Err(RequestError::ShuttingDown);
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(RequestError::NoLeader);
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Stop Raft, stop serving, and release the store (the data directory
    /// can be opened again once this returns and the node is dropped).
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        if self.core.shutdown.is_cancelled() {
            return;
        }
        tracing::info!(member = self.member.id, "consensus node shutting down");
        self.stop().await;
    }

    async fn stop(&self) {
        self.core.shutdown.cancel();
        self.lease.revoke();
        let lease_task = self.lease_task.lock().take();
        if let Some(mut lease_task) = lease_task
            && tokio::time::timeout(SERVER_DRAIN, &mut lease_task).await.is_err()
        {
            lease_task.abort();
        }
        if let Err(e) = self.core.raft.shutdown().await {
            tracing::warn!(member = self.member.id, error = %e, "raft did not stop cleanly");
        }
        let server = self.server.lock().take();
        if let Some(mut server) = server
            && tokio::time::timeout(SERVER_DRAIN, &mut server).await.is_err()
        {
            server.abort();
        }
    }
}

impl Core {
    /// The topology as of now, linearizably: every change committed before
    /// this call (on any member) is in it. On the leader, after confirming
    /// its leadership with a quorum; on a follower, after asking the leader
    /// for its read index and applying the log up to it.
    pub(crate) async fn read_linearizable(&self) -> Result<Arc<TopologyState>, RequestError> {
        let deadline = Instant::now() + self.timings.forward_timeout;
        loop {
            let leader = self.wait_for_leader(deadline).await.ok_or(RequestError::NoLeader)?;
            let mut last_error: Option<RequestError> = None;
            if leader.id == self.id {
                match self.raft.ensure_linearizable().await {
                    Ok(_) => return Ok(self.state_machine.topology()),
                    Err(RaftError::APIError(e)) => last_error = Some(RequestError::Refused(e.to_string())),
                    Err(RaftError::Fatal(_)) => return Err(RequestError::ShuttingDown),
                }
            } else {
                let timeout = deadline.saturating_duration_since(Instant::now()).max(RETRY_PAUSE);
                match self.client.post(&leader.raft_addr, "/raft/read_index", &(), timeout).await {
                    Ok(ReadIndexReply::Ok { read_log_id }) => {
                        let index = read_log_id.map(|id| id.index);
                        let wait = deadline.saturating_duration_since(Instant::now());
                        return match self.raft.wait(Some(wait)).applied_index_at_least(index, "read index").await {
                            Ok(_) => Ok(self.state_machine.topology()),
                            Err(e) => Err(RequestError::Unreachable(e.into())),
                        };
                    }
                    Ok(ReadIndexReply::NotLeader { .. }) => {}
                    Ok(ReadIndexReply::Failed(reason)) => last_error = Some(RequestError::Refused(reason)),
                    Err(e) => last_error = Some(RequestError::Unreachable(e.into())),
                }
            }
            if self.shutdown.is_cancelled() {
                return Err(RequestError::ShuttingDown);
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(last_error.unwrap_or(RequestError::NoLeader));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The current leader, waiting for one until `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Option<Member> {
        let mut metrics = self.raft.metrics();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Some(member) = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l)) {
                    return Some(member.clone());
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
    }
}

fn applied(response: Response) -> Result<Applied, ProposeError> {
    match response {
        Response::Applied(applied) => Ok(applied),
        Response::Rejected(e) => Err(ProposeError::Rejected(e)),
        Response::Internal => {
            Err(ProposeError::OutcomeUnknown("raft answered a command with an internal entry".into()))
        }
    }
}

fn membership_error(e: RaftError<MemberId, ClientWriteError<MemberId, Member>>) -> RequestError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RequestError::NotLeader { leader: f.leader_node },
        RaftError::APIError(e) => RequestError::Refused(e.to_string()),
        RaftError::Fatal(_) => RequestError::ShuttingDown,
    }
}

/// Serve the Raft HTTP routes until `shutdown` is cancelled.
async fn serve_raft(listener: tokio::net::TcpListener, app: axum::Router, shutdown: CancellationToken) {
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(?addr, error = %e, "raft http server failed");
    }
}
