//! The shard as the failover core sees it: a read-only copy of the committed
//! topology for one shard, built by the runtime from a consensus snapshot.

use crate::types::{Epoch, NodeId, RegionId, ShardId};

/// How commits on the shard's primary are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Asynchronous replication: a failover may lose up to
    /// `max_lag_on_failover` bytes, and reports what it lost.
    Async,
    /// `synchronous_standby_names = 'ANY k (s1..sn)'` where `s1..sn` are the
    /// replicas flagged `sync_standby`. Every acknowledged commit is on at
    /// least `k` of them.
    Sync {
        /// The `k` of `ANY k (...)`.
        k: usize,
    },
}

/// One replica of the shard, as registered in the topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// The PostgreSQL node.
    pub node: NodeId,
    /// Where it runs; a replica in the primary's region wins ties.
    pub region: RegionId,
    /// Operator preference; higher wins ties after LSN, sync and region.
    pub priority: u32,
    /// Listed in the primary's `synchronous_standby_names`.
    pub sync_standby: bool,
    /// `BAN NODE`: never promoted (its position still counts for the quorum).
    pub banned: bool,
}

/// What the failover core needs to know about one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    /// The shard.
    pub shard: ShardId,
    /// The committed epoch. When `fenced` is true this is already the fence
    /// epoch (the fence commit bumped it), and the new primary takes it as is.
    pub epoch: Epoch,
    /// The primary of the epoch before any fence.
    pub primary: NodeId,
    /// The primary's region, preferred for the new primary on ties.
    pub primary_region: RegionId,
    /// Candidate replicas.
    pub replicas: Vec<Replica>,
    /// Sync (with its `ANY k`) or async.
    pub durability: Durability,
    /// Largest WAL loss in bytes a failover may accept without an operator.
    pub max_lag_on_failover: u64,
    /// How long a majority of members must fail to reach the primary.
    pub failure_timeout_ms: u64,
    /// The old primary is already fenced (a fence for `epoch` is committed).
    pub fenced: bool,
}

impl ShardView {
    /// The epoch the new primary will be committed under.
    pub fn fence_epoch(&self) -> Epoch {
        if self.fenced { self.epoch } else { self.epoch.next() }
    }

    /// The replica registered under `node`, if any.
    pub fn replica(&self, node: &NodeId) -> Option<&Replica> {
        self.replicas.iter().find(|r| &r.node == node)
    }
}
