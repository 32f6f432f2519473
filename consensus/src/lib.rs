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
//! - [`network`]: node-to-node RPC over HTTP/1.1 (axum server,
//!   hyper-util client) with JSON bodies: openraft's append, vote and
//!   snapshot messages, plus `/raft/propose` (a follower forwards a
//!   proposal to the leader), `/raft/read_index` (a follower's
//!   linearizable read) and `/raft/membership` (a membership change made
//!   on any member, run on the leader). Every call has a deadline derived
//!   from [`Timings`].
//! - Optional mutual TLS on that endpoint ([`Config::tls`], [`RaftTls`]:
//!   the group's CA, the member's certificate and key, PEM): rustls with
//!   the aws-lc-rs provider; the server requires a client certificate
//!   signed by the CA (refused in the handshake otherwise, handshakes run
//!   beside the accept loop with a deadline), the client presents the
//!   member's certificate and checks the server's against the CA and the
//!   host of its `https://` address. Any holder of a certificate from the
//!   CA is trusted as a member.
//! - [`ConsensusNode`]: one running member. [`ConsensusNode::start`] opens
//!   the store, starts Raft, serves the Raft routes on its own listener
//!   and bootstraps a new group (only the lowest id of
//!   [`Config::initial_members`] initialises, and only with an empty log; a
//!   restarted member comes back from disk; a member started with no
//!   initial members waits to be added). [`ConsensusNode::shutdown`] stops
//!   it and returns once every task has let go of the store, so the data
//!   directory can be opened again in the same process. The facade:
//!   [`propose`](ConsensusNode::propose) (on the leader, or forwarded to
//!   it; a proposal that reached a leader but got no answer in time is
//!   [`ProposeError::OutcomeUnknown`], never a failure),
//!   [`read_linearizable`](ConsensusNode::read_linearizable),
//!   [`subscribe`](ConsensusNode::subscribe), [`status`](ConsensusNode::status)
//!   (with the leader's replication progress per member),
//!   [`add_member`](ConsensusNode::add_member) and
//!   [`remove_member`](ConsensusNode::remove_member) (decided on the leader
//!   from its own membership, forwarded from any member; a member may
//!   remove itself, the leader included),
//!   [`add_learner`](ConsensusNode::add_learner),
//!   [`change_membership`](ConsensusNode::change_membership), and
//!   [`compact_log`](ConsensusNode::compact_log) (snapshot and purge now;
//!   openraft also does it every 5000 entries). [`Timings`] default to
//!   cross-region values (heartbeat 250 ms, election timeout 1–2 s).
//! - The write lease: a task owned by each [`ConsensusNode`] renews it
//!   every third of [`Timings::write_lease`] (default 1 s) by confirming
//!   the committed topology with the quorum (as
//!   [`read_linearizable`](ConsensusNode::read_linearizable) does); it is
//!   valid until the start of the last successful confirmation plus
//!   `write_lease`, on the monotonic clock, and revoked on shutdown.
//!   [`ConsensusNode::lease`] gives a [`LeaseState`] (also in [`Status`]);
//!   [`ConsensusNode::lease_handle`] a lock-free [`LeaseHandle`] for the
//!   data path, which must never await consensus.
//!
//! Tested in process over real HTTP on 127.0.0.1 (`tests/`): proposals,
//! failover and catch-up (`cluster`), the lease (`lease`), membership
//! 3 → 5 → 3 under a continuous load with the leader removed and re-added
//! on the way (`membership`), the whole group restarted in a random seeded
//! order and members coming back from a compacted log, their own or the
//! leader's snapshot (`cluster_restart`), mutual TLS and a stranger with
//! another CA's certificate (`tls`), plus the store against openraft's
//! conformance suite (`suite`, `restart`).
//!
//! Not built yet (in this crate):
//!
//! - Deduplication of a proposal retried after
//!   [`ProposeError::OutcomeUnknown`]: the idempotent changes make most
//!   retries harmless, not all. Read the topology (or the audit log)
//!   before retrying.
//! - A removed member is not told it was removed. Nobody contacts it any
//!   more and its write lease runs out, but one that never received the
//!   entry removing it still believes it votes and calls elections (in
//!   vain: the members refuse votes while they hear from their leader)
//!   until it is shut down, which is the operator's job after
//!   `remove_member`.
//! - Metrics of the Raft group, and a deterministic (turmoil) simulation;
//!   the tests above run on real sockets and timers.
//! - Certificate reload: the TLS files are read once, at start.
//!
//! The proxy side (the write gate on the lease, admin SQL, `/metrics`,
//! `/healthz`, `/readyz`) lives in the `proxy` crate.

mod config;
mod error;
mod lease;
pub mod network;
mod node;
pub mod state;
pub mod store;
mod tls;
pub mod types;

pub use config::{Config, RaftTls, Timings};
pub use error::{Error, ProposeError, RequestError, StartError};
pub use lease::{LeaseHandle, LeaseState};
pub use node::{ConsensusNode, RaftRole, Status};
pub use state::{Applied, CommandError, TopologyState};
pub use types::{Change, Command, Epoch, Member, MemberId, Response, UnixMillis};
