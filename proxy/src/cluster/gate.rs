//! The write gate: a write may go to a primary only while this node holds
//! its write lease (it confirmed the committed topology with the Raft
//! quorum within `cluster.write_lease`) and the shard has a writable
//! (unfenced) primary in the topology it routes by.
//!
//! A write that finds the gate closed at the start of its transaction waits
//! up to `cluster.write_hold`, checking every [`POLL`], and then goes on
//! (re-routed on the topology of that moment) or is refused with
//! [`SQLSTATE`] `40001`, which applications and drivers already retry: the
//! statement was not sent, so retrying it cannot apply it twice. A
//! statement inside a transaction is not held (the transaction holds locks
//! on its primary); it is refused at once, and the refusal aborts the
//! transaction as a PostgreSQL error would.
//!
//! The gate also carries `PAUSE`: a new transaction for a paused shard (or
//! any shard, after a cluster-wide `PAUSE`) waits until `RESUME`, however
//! long that takes (transactions already running finish normally); only
//! the node's shutdown ends the wait.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use consensus::{LeaseHandle, TopologyState};
use router::route::RouteError;
use router::topology::Topology;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a held write checks the lease and the topology again.
pub const POLL: Duration = Duration::from_millis(10);

/// SQLSTATE of a refused write: `serialization_failure`, the code clients
/// retry a transaction on.
pub const SQLSTATE: &str = "40001";

/// Whether writes may go to primaries now.
#[derive(Debug, Clone)]
pub struct WriteGate {
    lease: LeaseHandle,
    hold: Duration,
    paused: Arc<ArcSwap<Paused>>,
}

/// What `PAUSE` holds, as last committed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Paused {
    all: bool,
    shards: BTreeSet<String>,
}

/// Why the gate is closed for a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// This node has not confirmed the topology with a quorum recently.
    NoLease,
    /// The shard has no writable primary (fenced for a failover, or none
    /// yet).
    NoPrimary,
}

impl WriteGate {
    pub fn new(lease: LeaseHandle, hold: Duration) -> WriteGate {
        WriteGate { lease, hold, paused: Arc::default() }
    }

    /// Take `PAUSE`/`RESUME` from a committed topology.
    pub fn set_paused(&self, state: &TopologyState) {
        let next = Paused {
            all: state.paused,
            shards: state.shards.values().filter(|s| s.paused).map(|s| s.name.clone()).collect(),
        };
        if **self.paused.load() != next {
            tracing::info!(all = next.all, shards = ?next.shards, "pause state changed");
            self.paused.store(Arc::new(next));
        }
    }

    /// Whether new transactions for `shard` must wait.
    pub fn is_paused(&self, shard: &str) -> bool {
        let p = self.paused.load();
        p.all || p.shards.contains(shard)
    }

    /// Wait until `shard` is resumed. Returns false if `stop` ended the
    /// wait first.
    pub async fn wait_resumed(&self, shard: &str, stop: &tokio_util::sync::CancellationToken) -> bool {
        while self.is_paused(shard) {
            // cancel safety: sleep and cancelled() are cancel safe.
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.cancelled() => return false,
            }
        }
        true
    }

    /// Why writes to `shard` of `t` may not go now; `None` when they may.
    pub fn check(&self, t: &Topology, shard: usize) -> Option<Closed> {
        if !self.lease.is_valid(Instant::now()) {
            return Some(Closed::NoLease);
        }
        if t.shards.get(shard).is_none_or(|s| s.primary.is_none()) {
            return Some(Closed::NoPrimary);
        }
        None
    }

    /// Wait, at most the hold time, until writes to the shard named
    /// `shard` may go on the latest published topology. `Err` is the error
    /// for the client when they still may not.
    pub async fn hold(&self, topology: &watch::Sender<Arc<Topology>>, shard: &str) -> Result<(), RouteError> {
        let deadline = Instant::now() + self.hold;
        let mut why;
        loop {
            let t = topology.borrow().clone();
            let closed = match t.shards.iter().position(|s| s.name == shard) {
                Some(id) => self.check(&t, id),
                None => Some(Closed::NoPrimary),
            };
            match closed {
                None => return Ok(()),
                Some(closed) => why = closed,
            }
            if Instant::now() + POLL > deadline {
                return Err(refusal(why, shard));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The error a client gets for a write the gate refused.
pub fn refusal(why: Closed, shard: &str) -> RouteError {
    let message = match why {
        Closed::NoLease => format!(
            "meridian: this node cannot confirm the cluster topology with a quorum (write lease expired); \
             the write for shard {shard} was not sent: retry the transaction, here or on another node"
        ),
        Closed::NoPrimary => format!(
            "meridian: shard {shard} has no writable primary now (a failover may be under way); \
             the write was not sent: retry the transaction"
        ),
    };
    RouteError { code: SQLSTATE, message }
}
