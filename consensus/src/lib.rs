//! Consensus for Meridian: the Raft-replicated topology (regions,
//! PostgreSQL nodes, shards with their fencing epochs and policies,
//! sharding rules, event and audit logs), with openraft 0.9 kept inside.
//!
//! What is built (the storage layer of issue 3):
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
//!
//! Not built yet: the Raft node itself (startup, bootstrap from config,
//! timings), node-to-node RPC over HTTP with mutual TLS, membership
//! changes, forwarding to the leader, linearizable reads, the write lease,
//! the `propose` / `read` / `subscribe` facade the other crates will use,
//! users and admin roles in the topology, and the admin SQL that proposes
//! commands. Nothing in the proxy uses this crate yet: a node still takes
//! its topology from its configuration file.

mod error;
pub mod state;
pub mod store;
pub mod types;

pub use error::Error;
pub use state::{Applied, CommandError, TopologyState};
pub use types::{Change, Command, Epoch, Member, MemberId, Response, UnixMillis};
