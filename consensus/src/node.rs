//! [`ConsensusNode`]: one running member of the Raft group, and the facade
//! the rest of Meridian uses (`propose`, `read_linearizable`, `subscribe`,
//! `status`, membership changes, `shutdown`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Raft, ServerState};
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
use crate::tls;
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
    partition: network::Partition,
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
    /// On the leader only (empty elsewhere): every member it replicates to
    /// (itself excluded), with the index of the last entry that member is
    /// known to hold. A member removed from the group leaves this map once
    /// the change is committed: the leader stops contacting it.
    pub replication: BTreeMap<MemberId, Option<u64>>,
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
        let tls = config.tls.as_ref().map(tls::load).transpose()?;
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        let setting = if tls.is_some() { "configured" } else { "not configured" };
        for member in std::iter::once(&config.member).chain(&config.initial_members) {
            if !member.raft_addr.starts_with(scheme) {
                return Err(StartError::Tls(format!(
                    "raft_addr {} (member {}) must start with {scheme} when raft tls is {setting}",
                    member.raft_addr, member.id
                )));
            }
        }
        let (log, state_machine) = store::open(&config.data_dir).await?;
        let partition = network::Partition::default();
        let client = HttpClient::new(tls.as_ref().map(|t| t.client.clone()), partition.clone());
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
        let app = network::router(raft.clone(), config.timings, partition.clone());
        let server = match &tls {
            Some(tls) => {
                let listener = tls::TlsListener::new(listener, tls.server.clone());
                tokio::spawn(serve_raft(listener, app, shutdown.clone()))
            }
            None => tokio::spawn(serve_raft(listener, app, shutdown.clone())),
        };
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
            partition,
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

    /// Simulate a network partition for a drill: cut this member off from
    /// the group until `until` (`None`: not cut off) and never call the
    /// members whose Raft addresses are in `peers`. Openraft sees the calls
    /// fail as if the network did.
    pub fn set_partition(&self, until: Option<tokio::time::Instant>, peers: std::collections::BTreeSet<String>) {
        self.partition.set(until, peers);
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
                // A leader that stops leading (removed from the group, cut
                // off) may never answer an entry it appended: give up at
                // the deadline, outcome unknown.
                let until = deadline.max(Instant::now() + RETRY_PAUSE);
                let written = match tokio::time::timeout_at(until, self.core.raft.client_write(cmd.clone())).await {
                    Ok(written) => written,
                    Err(_) => {
                        return Err(ProposeError::OutcomeUnknown("raft did not commit the proposal in time".into()));
                    }
                };
                match written {
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
            replication: metrics
                .replication
                .iter()
                .flatten()
                .filter(|(member, _)| **member != metrics.id)
                .map(|(member, matched)| (*member, matched.map(|id| id.index)))
                .collect(),
            lease: self.lease(),
        }
    }

    /// Compact this member's log now: build a snapshot of the applied
    /// topology and drop the log entries it covers. Returns the index of
    /// the last entry in the snapshot (`None`: nothing applied yet, nothing
    /// to compact). openraft does this on its own every 5000 entries
    /// (keeping the last 1000); this is for operators and tests.
    ///
    /// A leader may hold the purge back while a follower is still being
    /// sent those entries; a follower that lags behind the purged log gets
    /// the snapshot instead.
    pub async fn compact_log(&self, within: Duration) -> Result<Option<u64>, RequestError> {
        let Some(applied) = self.core.raft.metrics().borrow().last_applied else {
            return Ok(None);
        };
        let fatal = |_| RequestError::ShuttingDown;
        self.core.raft.trigger().snapshot().await.map_err(fatal)?;
        let wait = self.core.raft.wait(Some(within));
        wait.metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied.index), "snapshot built")
            .await
            .map_err(|_| RequestError::Timeout { what: "building the snapshot", within })?;
        self.core.raft.trigger().purge_log(applied.index).await.map_err(fatal)?;
        wait.metrics(|m| m.purged.is_some_and(|p| p.index >= applied.index), "log purged")
            .await
            .map_err(|_| RequestError::Timeout { what: "purging the log", within })?;
        Ok(Some(applied.index))
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
    /// voter. Adding a member that already votes changes nothing. Decided
    /// on the leader (forwarded to it), from the leader's membership, so a
    /// follower's stale view cannot drop another member.
    ///
    /// A member that does not catch up in time (unreachable, or refused by
    /// mutual TLS) stays a learner, which the leader keeps trying to reach:
    /// [`remove_member`](ConsensusNode::remove_member) it.
    pub async fn add_member(&self, member: Member) -> Result<(), RequestError> {
        self.membership(MembershipRequest::AddMember(member)).await
    }

    /// `REMOVE MEMBER`: `id` stops voting and leaves the group. Refused
    /// for a member not in the group and for the last voter. Decided on
    /// the leader (forwarded to it). A member may remove itself; the
    /// leader may be removed (it steps down once the change is committed,
    /// and the others elect a new one).
    ///
    /// The removed member's process keeps running until it is shut down,
    /// but nobody contacts it any more: it no longer receives the log, and
    /// as it is not a voter in the last membership it saw, it never calls
    /// an election.
    pub async fn remove_member(&self, id: MemberId) -> Result<(), RequestError> {
        self.membership(MembershipRequest::RemoveMember(id)).await
    }

    /// Run a membership change on the leader: here when this member leads,
    /// otherwise over HTTP (waiting out an election for up to the
    /// forwarding timeout).
    async fn membership(&self, req: MembershipRequest) -> Result<(), RequestError> {
        // Adding a learner waits for it to catch up: allow longer than a
        // proposal.
        let deadline = Instant::now() + membership_timeout(&self.core.timings);
        loop {
            let leader = self.core.wait_for_leader(deadline).await.ok_or(RequestError::NoLeader)?;
            if leader.id == self.member.id {
                let within = deadline.saturating_duration_since(Instant::now());
                match change_membership_here(&self.core.raft, req.clone(), within).await {
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
        // openraft's shutdown returns before all its tasks have ended (the
        // state machine worker, replication streams, storage calls on the
        // blocking pool): each still holds the database until it does. Wait
        // for them, so a restart in the same process can open it again.
        let deadline = Instant::now() + SERVER_DRAIN;
        while !self.core.state_machine.is_last_handle() {
            if Instant::now() >= deadline {
                tracing::warn!(member = self.member.id, "raft tasks still hold the store after shutdown");
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
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
                let until = deadline.max(Instant::now() + RETRY_PAUSE);
                match tokio::time::timeout_at(until, self.raft.ensure_linearizable()).await {
                    Ok(Ok(_)) => return Ok(self.state_machine.topology()),
                    Ok(Err(RaftError::APIError(e))) => last_error = Some(RequestError::Refused(e.to_string())),
                    Ok(Err(RaftError::Fatal(_))) => return Err(RequestError::ShuttingDown),
                    Err(_) => {
                        let within = self.timings.forward_timeout;
                        last_error =
                            Some(RequestError::Timeout { what: "confirming leadership with a quorum", within });
                    }
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

/// How long a membership change may take, learner catch-up included.
pub(crate) fn membership_timeout(timings: &Timings) -> Duration {
    timings.forward_timeout * 4
}

/// Make a membership change on this member, which should be the leader
/// ([`RequestError::NotLeader`] if it is not, or stops being it): what
/// `/raft/membership` and a leader's own membership calls run. Read-modify
/// steps (is it a voter already? the last one?) read the leader's own
/// membership, never a follower's.
pub(crate) async fn change_membership_here(
    raft: &Raft<TypeConfig>,
    req: MembershipRequest,
    within: Duration,
) -> Result<(), RequestError> {
    // A change waits for its commit, which never comes on a leader cut off
    // from the quorum: give up after `within` (the change may still be
    // committed later).
    // The learner's catch-up gets three quarters of it, so that its own,
    // more telling, timeout comes first.
    let catch_up = within - within / 4;
    match tokio::time::timeout(within, change_membership_unbounded(raft, req, catch_up)).await {
        Ok(result) => result,
        Err(_) => Err(RequestError::Timeout { what: "the membership change (it may still be committed)", within }),
    }
}

async fn change_membership_unbounded(
    raft: &Raft<TypeConfig>,
    req: MembershipRequest,
    catch_up: Duration,
) -> Result<(), RequestError> {
    let membership = || raft.metrics().borrow().membership_config.membership().clone();
    match req {
        MembershipRequest::AddLearner(member) => add_learner_here(raft, member, catch_up).await,
        MembershipRequest::ChangeVoters(voters) => {
            raft.change_membership(voters, false).await.map(|_| ()).map_err(membership_error)
        }
        MembershipRequest::AddMember(member) => {
            let id = member.id;
            if membership().voter_ids().any(|v| v == id) {
                return Ok(());
            }
            add_learner_here(raft, member, catch_up).await?;
            let add = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
            raft.change_membership(add, false).await.map(|_| ()).map_err(membership_error)
        }
        MembershipRequest::RemoveMember(id) => {
            let current = membership();
            if current.get_node(&id).is_none() {
                return Err(RequestError::Refused(format!("member {id} is not in the group")));
            }
            let voters: BTreeSet<MemberId> = current.voter_ids().collect();
            if voters.contains(&id) {
                if voters.len() == 1 {
                    return Err(RequestError::Refused(format!("member {id} is the last voter")));
                }
                // Not retained as a learner: it leaves the group at once.
                let remove = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
                raft.change_membership(remove, false).await.map_err(membership_error)?;
            }
            if membership().get_node(&id).is_some() {
                let remove = ChangeMembers::RemoveNodes(BTreeSet::from([id]));
                raft.change_membership(remove, false).await.map_err(membership_error)?;
            }
            Ok(())
        }
    }
}

/// Add `member` as a learner and wait (up to `within`) until the leader
/// has replicated to it the membership entry that added it.
async fn add_learner_here(raft: &Raft<TypeConfig>, member: Member, within: Duration) -> Result<(), RequestError> {
    let id = member.id;
    let added = raft.add_learner(id, member, false).await.map_err(membership_error)?;
    let target = added.log_id.index;
    let caught_up = raft
        .wait(Some(within))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
                m.state != ServerState::Leader || matched.is_some_and(|l| l.index >= target)
            },
            "learner caught up",
        )
        .await
        .map_err(|_| RequestError::Timeout { what: "the new member catching up", within })?;
    if caught_up.state != ServerState::Leader {
        return Err(RequestError::NotLeader { leader: None });
    }
    Ok(())
}

/// Serve the Raft HTTP routes until `shutdown` is cancelled.
async fn serve_raft<L>(listener: L, app: axum::Router, shutdown: CancellationToken)
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let addr = listener.local_addr().ok();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(?addr, error = %e, "raft http server failed");
    }
}
