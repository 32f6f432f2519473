//! Consensus for Meridian: the Raft-replicated topology (regions,
//! PostgreSQL nodes, shards with their fencing epochs and policies,
//! sharding rules, event and audit logs), with openraft 0.9 kept inside.
//!
//! What is built:
//!
//! - [`types`]: the [`Command`] a node proposes (an audited [`Change`]:
//!   who, from where, when), the [`Response`] applying it gives back, the
//!   [`Member`] record each Meridian node is known by in the Raft group,
//!   and the openraft type configuration.
//! - [`state`]: [`TopologyState`] and its pure, all-or-nothing
//!   [`TopologyState::apply`], which validates every change (unknown shard,
//!   duplicate node, an epoch that does not rise, ...) and refuses with a
//!   [`CommandError`].
//! - [`store`]: a redb-backed Raft log store and a state machine store
//!   implementing openraft's v2 storage traits, passing openraft's storage
//!   conformance suite. The log, vote and committed index are durable
//!   before they are acknowledged; the topology lives in memory, is
//!   published on a `watch::Receiver<Arc<TopologyState>>` on every change,
//!   and is snapshotted as JSON into the same database, so a restarted
//!   member comes back with it.
//! - [`network`]: node-to-node RPC over plain HTTP/1.1 (axum server,
//!   hyper-util client) with JSON bodies: openraft's append, vote and
//!   snapshot messages, plus `/raft/propose` (a follower forwards a
//!   proposal to the leader) and `/raft/read_index` (a follower's
//!   linearizable read). Every call has a deadline derived from
//!   [`Timings`].
//! - [`ConsensusNode`]: one running member. [`ConsensusNode::start`] opens
//!   the store, starts Raft, serves the Raft routes on its own listener
//!   (stopped by [`ConsensusNode::shutdown`]) and bootstraps a new group
//!   (only the lowest id of [`Config::initial_members`] initialises, and
//!   only with an empty log; a restarted member comes back from disk). The
//!   facade: [`propose`](ConsensusNode::propose) (on the leader, or
//!   forwarded to it), [`read_linearizable`](ConsensusNode::read_linearizable),
//!   [`subscribe`](ConsensusNode::subscribe), [`status`](ConsensusNode::status),
//!   [`add_learner`](ConsensusNode::add_learner),
//!   [`change_membership`](ConsensusNode::change_membership).
//!   [`Timings`] default to cross-region values (heartbeat 250 ms,
//!   election timeout 1–2 s).
//! - The write lease: a task owned by each [`ConsensusNode`] renews it
//!   every third of [`Timings::write_lease`] (default 1 s) by confirming
//!   the committed topology with the quorum (as
//!   [`read_linearizable`](ConsensusNode::read_linearizable) does); it is
//!   valid until the start of the last successful confirmation plus
//!   `write_lease`, on the monotonic clock, and revoked on shutdown.
//!   [`ConsensusNode::lease`] gives a [`LeaseState`];
//!   [`ConsensusNode::lease_handle`] a lock-free [`LeaseHandle`] for the
//!   data path, which must never await consensus.
//!
//! Not built yet: mutual TLS on the Raft port (plain HTTP for now: keep it
//! on a private network), the data path's side of the write lease (hold
//! writes, bounded, while [`LeaseHandle::is_valid`] is false, then refuse
//! them with a clear, retryable error: that belongs in the proxy, which
//! does not use this crate yet), the lease in [`Status`] and metrics,
//! forwarding of membership
//! changes (they must be called on the leader), deduplication of a
//! proposal retried after [`ProposeError::OutcomeUnknown`] (the idempotent
//! changes make most retries harmless, not all), users and admin roles in
//! the topology, the admin SQL that proposes commands, `/metrics`,
//! `/healthz`, `/readyz`, and the proxy integration: nothing in the proxy
//! uses this crate yet, a node still takes its topology from its
//! configuration file.

mod config;
mod error;
mod lease;
pub mod network;
mod node;
pub mod state;
pub mod store;
pub mod types;

pub use config::{Config, Timings};
pub use error::{Error, ProposeError, RequestError, StartError};
pub use lease::{LeaseHandle, LeaseState};
pub use node::{ConsensusNode, RaftRole, Status};
pub use state::{Applied, CommandError, TopologyState};
pub use types::{Change, Command, Epoch, Member, MemberId, Response, UnixMillis};
