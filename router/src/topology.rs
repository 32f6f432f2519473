//! The cluster as the router sees it: regions, shards, PostgreSQL nodes
//! and sharding rules. Built from the config file today and from Raft
//! later; published to the data path as one immutable snapshot.

use std::time::Duration;

use crate::key::{KeyType, KeyValue};

/// Index of a shard in [`Topology::shards`].
pub type ShardId = usize;
/// Index of a PostgreSQL node in [`Topology::nodes`].
pub type NodeId = usize;

/// One immutable snapshot of the topology.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Bumped on every change; shown in admin views.
    pub version: u64,
    pub regions: Vec<String>,
    pub shards: Vec<Shard>,
    pub nodes: Vec<PgNode>,
    pub tables: Vec<TableRule>,
    /// Where unsharded tables and utility statements live.
    pub default_shard: ShardId,
    pub replica_policy: ReplicaPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    pub name: String,
    pub primary: Option<NodeId>,
    pub replicas: Vec<NodeId>,
    /// Raised on every change of primary (issue 4).
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// A PostgreSQL server.
#[derive(Debug, Clone, PartialEq)]
pub struct PgNode {
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub region: String,
    pub shard: ShardId,
    pub role: Role,
}

/// A sharded table: which column is the key and how keys map to shards.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRule {
    /// Lower-case schema, when the rule names one; `None` matches the table
    /// in any schema.
    pub schema: Option<String>,
    /// Lower-case table name.
    pub table: String,
    /// Lower-case key column.
    pub column: String,
    pub key_type: KeyType,
    pub map: ShardMap,
}

/// How key values map to shards.
#[derive(Debug, Clone, PartialEq)]
pub enum ShardMap {
    /// PostgreSQL's `PARTITION BY HASH`: the key whose partition hash has
    /// remainder `i` modulo `len()` lives on `shards[i]`.
    Hash(Vec<ShardId>),
    /// Ranges `[from, to)`; `None` is unbounded.
    Range(Vec<RangePart>),
    /// Listed values; others go to `default`, or are an error without one.
    List { values: Vec<(KeyValue, ShardId)>, default: Option<ShardId> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RangePart {
    pub from: Option<KeyValue>,
    pub to: Option<KeyValue>,
    pub shard: ShardId,
}

/// Which replicas may serve reads, and what happens when none may.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaPolicy {
    /// A replica further behind its primary's WAL than this is not used.
    pub max_lag_bytes: u64,
    /// A replica whose last replayed transaction is older than this (while
    /// its primary has moved on) is not used.
    pub max_lag: Duration,
    pub fallback: Fallback,
}

/// What a read does when no replica qualifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Read from the primary.
    Primary,
    /// Fail with a clear error.
    Fail,
}
