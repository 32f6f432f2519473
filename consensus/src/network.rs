//! Node-to-node RPC over HTTP/1.1 (optionally mutual TLS) with JSON bodies.
//!
//! The server side is an axum [`Router`] with one POST route per message:
//!
//! | route | body | reply |
//! | --- | --- | --- |
//! | `/raft/append` | openraft `AppendEntriesRequest` | `Result<AppendEntriesResponse, RaftError>` |
//! | `/raft/vote` | openraft `VoteRequest` | `Result<VoteResponse, RaftError>` |
//! | `/raft/snapshot` | openraft `InstallSnapshotRequest` (one chunk) | `Result<InstallSnapshotResponse, RaftError>` |
//! | `/raft/propose` | [`Command`] | `ProposeReply` |
//! | `/raft/read_index` | `()` | `ReadIndexReply` |
//! | `/raft/membership` | `MembershipRequest` | `MembershipReply` |
//!
//! The first three are openraft's own messages, served as in openraft's
//! `raft-kv-memstore` example; the last three are how a follower forwards a
//! proposal to the leader, asks it for a linearizable read index, and
//! forwards a membership change (`ADD MEMBER` typed on any node).
//!
//! The client side is `Network`, openraft's `RaftNetworkFactory`, over
//! hyper-util's pooled client. Every request has a deadline: openraft's own
//! (`RPCOption::hard_ttl`, derived from the heartbeat interval, the election
//! timeout and the snapshot timeout in [`Timings`](crate::Timings), which
//! are what is tuned for cross-region round trips), or the forwarding
//! timeout for `/raft/propose` and `/raft/read_index`.
//!
//! With [`Config::tls`](crate::Config) set, every connection is mutual
//! TLS (see the `tls` module): the server requires a client certificate
//! signed by the group's CA, the client checks the server's. Without it,
//! everything travels in plain HTTP: keep the Raft port on a private
//! network then.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{LogId, Raft, RaftNetwork, RaftNetworkFactory};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::RequestError;
use crate::tls::Connector;
use crate::types::{Command, Member, MemberId, Response, TypeConfig};

/// The Raft HTTP routes of one member, served by [`ConsensusNode`](crate::ConsensusNode).
pub(crate) fn router(raft: Raft<TypeConfig>, timings: crate::Timings, partition: Partition) -> Router {
    // A forwarded change must end (done or timed out) before the caller
    // gives up on the request, which it does after `membership_timeout`
    // counted from before it found the leader: leave it one forwarding
    // timeout for that and the round trip.
    let membership_timeout = crate::node::membership_timeout(&timings).saturating_sub(timings.forward_timeout);
    let served = Served { raft, membership_timeout };
    Router::new()
        .route("/raft/append", post(append))
        .route("/raft/vote", post(vote))
        .route("/raft/snapshot", post(snapshot))
        .route("/raft/propose", post(propose))
        .route("/raft/read_index", post(read_index))
        .route("/raft/membership", post(membership))
        .with_state(served)
        .layer(axum::middleware::from_fn(move |req: axum::extract::Request, next: axum::middleware::Next| {
            let cut_off = partition.isolated();
            async move {
                if cut_off {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                next.run(req).await
            }
        }))
}

/// What the routes share: the Raft node (what most of them need, see the
/// `FromRef`) and how long a forwarded membership change may take.
#[derive(Clone)]
struct Served {
    raft: Raft<TypeConfig>,
    membership_timeout: Duration,
}

impl FromRef<Served> for Raft<TypeConfig> {
    fn from_ref(served: &Served) -> Raft<TypeConfig> {
        served.raft.clone()
    }
}

async fn append(
    State(raft): State<Raft<TypeConfig>>,
    Json(req): Json<AppendEntriesRequest<TypeConfig>>,
) -> Json<Result<AppendEntriesResponse<MemberId>, RaftError<MemberId>>> {
    Json(raft.append_entries(req).await)
}

async fn vote(
    State(raft): State<Raft<TypeConfig>>,
    Json(req): Json<VoteRequest<MemberId>>,
) -> Json<Result<VoteResponse<MemberId>, RaftError<MemberId>>> {
    Json(raft.vote(req).await)
}

async fn snapshot(
    State(raft): State<Raft<TypeConfig>>,
    Json(req): Json<InstallSnapshotRequest<TypeConfig>>,
) -> Json<Result<InstallSnapshotResponse<MemberId>, RaftError<MemberId, InstallSnapshotError>>> {
    Json(raft.install_snapshot(req).await)
}

/// What the leader answers a forwarded proposal.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ProposeReply {
    /// Committed and applied on the leader.
    Done(Response),
    /// The receiver is not the leader (any more); try this one.
    NotLeader { leader: Option<MemberId> },
    /// Raft itself failed (the receiver is shutting down, ...).
    Failed(String),
}

async fn propose(State(raft): State<Raft<TypeConfig>>, Json(cmd): Json<Command>) -> Json<ProposeReply> {
    Json(match raft.client_write(cmd).await {
        Ok(written) => ProposeReply::Done(written.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            ProposeReply::NotLeader { leader: f.leader_id }
        }
        Err(e) => ProposeReply::Failed(e.to_string()),
    })
}

/// What the leader answers a follower's linearizable read.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ReadIndexReply {
    /// The leader confirmed its leadership with a quorum; a read that sees
    /// every entry up to `read_log_id` is linearizable.
    Ok {
        read_log_id: Option<LogId<MemberId>>,
    },
    NotLeader {
        leader: Option<MemberId>,
    },
    Failed(String),
}

async fn read_index(State(raft): State<Raft<TypeConfig>>) -> Json<ReadIndexReply> {
    Json(match raft.ensure_linearizable().await {
        Ok(read_log_id) => ReadIndexReply::Ok { read_log_id },
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            ReadIndexReply::NotLeader { leader: f.leader_id }
        }
        Err(e) => ReadIndexReply::Failed(e.to_string()),
    })
}

/// A membership change forwarded to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MembershipRequest {
    /// Add a learner and wait until it has caught up.
    AddLearner(Member),
    /// Make exactly these members the voters.
    ChangeVoters(std::collections::BTreeSet<MemberId>),
    /// Add a learner, wait until it has caught up, make it a voter.
    AddMember(Member),
    /// Remove a voter or learner from the group.
    RemoveMember(MemberId),
}

/// What the leader answers a forwarded membership change.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum MembershipReply {
    Done,
    NotLeader { leader: Option<MemberId> },
    Failed(String),
}

async fn membership(State(served): State<Served>, Json(req): Json<MembershipRequest>) -> Json<MembershipReply> {
    Json(match crate::node::change_membership_here(&served.raft, req, served.membership_timeout).await {
        Ok(()) => MembershipReply::Done,
        Err(RequestError::NotLeader { leader }) => MembershipReply::NotLeader { leader: leader.map(|m| m.id) },
        Err(RequestError::Refused(reason)) => MembershipReply::Failed(reason),
        Err(e) => MembershipReply::Failed(e.to_string()),
    })
}

/// Why an HTTP call to another member failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// No connection could be made: the request was certainly not
    /// delivered.
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The request may have been delivered (and acted on); no usable answer
    /// came back.
    #[error("request to {url} failed")]
    Request {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered HTTP {status}: {body}")]
    Status { url: String, status: u16, body: String },
    /// A drill's simulated partition stopped the call before it left.
    #[error("{url} is cut off (region outage drill)")]
    Partitioned { url: String },
    #[error("invalid request to {url}")]
    Invalid {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl TransportError {
    /// Whether the request certainly never reached the peer (so retrying
    /// it elsewhere cannot apply it twice).
    pub(crate) fn not_delivered(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. } | TransportError::Invalid { .. } | TransportError::Partitioned { .. }
        )
    }
}

/// A simulated network partition (`DRILL REGION ... OUTAGE`): while this
/// member is cut off it neither sends nor answers Raft RPCs, and it never
/// calls the peers listed as cut off. Cheap to clone; shared by the client
/// and the server side.
#[derive(Clone, Default)]
pub(crate) struct Partition(Arc<parking_lot::RwLock<Cut>>);

#[derive(Default)]
struct Cut {
    /// This member is cut off until then.
    until: Option<tokio::time::Instant>,
    /// Raft addresses of peers cut off.
    peers: std::collections::BTreeSet<String>,
}

impl Partition {
    pub(crate) fn set(&self, until: Option<tokio::time::Instant>, peers: std::collections::BTreeSet<String>) {
        let mut cut = self.0.write();
        if cut.until != until || cut.peers != peers {
            tracing::warn!(cut_off_until = ?until, peers = ?peers, "raft partition (drill) changed");
        }
        *cut = Cut { until, peers };
    }

    /// Whether this member is cut off now.
    pub(crate) fn isolated(&self) -> bool {
        self.0.read().until.is_some_and(|u| tokio::time::Instant::now() < u)
    }

    /// Whether a call to `base` may not go out.
    fn blocks(&self, base: &str) -> bool {
        self.isolated() || self.0.read().peers.contains(base)
    }
}

/// A pooled HTTP/1.1 client for Raft RPCs, over TLS when configured.
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpClient {
    client: Client<Connector, Full<Bytes>>,
    partition: Partition,
}

impl HttpClient {
    /// `tls`: this member's client side of mutual TLS (then only `https://`
    /// peers can be called), or `None` (only `http://` ones).
    pub(crate) fn new(tls: Option<Arc<rustls::ClientConfig>>, partition: Partition) -> HttpClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(Connector::new(connector, tls));
        HttpClient { client, partition }
    }

    /// POST `req` as JSON to `base` + `path` and decode the JSON answer,
    /// all within `timeout`.
    pub(crate) async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, TransportError> {
        let url = format!("{}{path}", base.trim_end_matches('/'));
        if self.partition.blocks(base) {
            return Err(TransportError::Partitioned { url });
        }
        let invalid =
            |source: Box<dyn std::error::Error + Send + Sync>| TransportError::Invalid { url: url.clone(), source };
        let body = serde_json::to_vec(req).map_err(|e| invalid(e.into()))?;
        let request = hyper::Request::post(url.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(e.into()))?;
        let call = async {
            let response = self.client.request(request).await.map_err(|source| {
                if source.is_connect() {
                    TransportError::Connect { url: url.clone(), source }
                } else {
                    TransportError::Request { url: url.clone(), source: source.into() }
                }
            })?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::Request { url: url.clone(), source: e.into() })?
                .to_bytes();
            if !status.is_success() {
                let body = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
                return Err(TransportError::Status { url: url.clone(), status: status.as_u16(), body });
            }
            serde_json::from_slice(&bytes).map_err(|e| TransportError::Request { url: url.clone(), source: e.into() })
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout { url: url.clone(), timeout }),
        }
    }
}

/// openraft's network factory: one [`Connection`] per peer, all sharing one
/// connection pool.
#[derive(Clone)]
pub(crate) struct Network {
    client: HttpClient,
}

impl Network {
    pub(crate) fn new(client: HttpClient) -> Network {
        Network { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: MemberId, node: &Member) -> Connection {
        Connection { client: self.client.clone(), target, node: node.clone() }
    }
}

/// The way to one peer.
pub(crate) struct Connection {
    client: HttpClient,
    target: MemberId,
    node: Member,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<MemberId, Member, RaftError<MemberId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply: Result<Resp, RaftError<MemberId, E>> =
            self.client.post(&self.node.raft_addr, path, req, option.hard_ttl()).await.map_err(|e| match e {
                TransportError::Connect { .. } | TransportError::Partitioned { .. } => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        reply.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.node.clone(), e)))
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>> {
        self.call("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId, InstallSnapshotError>>>
    {
        self.call("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MemberId>,
        option: RPCOption,
    ) -> Result<VoteResponse<MemberId>, RPCError<MemberId, Member, RaftError<MemberId>>> {
        self.call("/raft/vote", &rpc, &option).await
    }
}
