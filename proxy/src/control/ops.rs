//! Operations an administrator starts from the admin console (DESIGN §6,
//! §8): a planned `SWITCHOVER`, a manual `FAILOVER [TO n] [FORCE]`,
//! `REJOIN NODE` and the drills. Each runs on the node whose console
//! received it (its steps are Raft proposals, forwarded to the leader, and
//! PostgreSQL calls), and ends with a [`Report`] recorded through Raft,
//! except `REJOIN NODE`, which records an event.
//!
//! Two operations on one shard never interleave: each starts by committing
//! a fence at the shard's next epoch, which the state machine refuses when
//! another one got there first (`40001`, retry).

use std::sync::Arc;

use consensus::state::{Report, ReportKind};
use consensus::{CommandError, ProposeError};

use super::failover_shard::Request;
use crate::cluster::Cluster;
use crate::node::Shared;

/// What the admin asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Operation {
    /// `SWITCHOVER SHARD s [TO n]`: a planned change of primary; writes
    /// are held (not refused) while it runs and nothing is lost.
    Switchover { shard: String, to: Option<String> },
    /// `FAILOVER SHARD s [TO n] [FORCE]`: replace the primary now, alive or
    /// not. Without `FORCE` it refuses what the automatic failover would
    /// refuse (a loss above `max_lag_on_failover`, a target behind the best
    /// replica, a sync standby missing).
    Failover { shard: String, to: Option<String>, force: bool },
    /// `REJOIN NODE n`: a fenced former primary, rewound, follows the
    /// current primary again. Runs on the node whose config lists `n`
    /// under `[[managed]]`.
    Rejoin { node: String },
    /// `DRILL ...`.
    Drill(Drill),
}

/// A drill: a real fault (or a real switchover) under a small write load
/// that the drill measures itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Drill {
    /// `DRILL SWITCHOVER SHARD s`.
    Switchover { shard: String },
    /// `DRILL FAILOVER SHARD s`: kill -9 the primary (it must be
    /// `[[managed]]` by this node), let the automatic failover act, measure.
    Failover { shard: String },
    /// `DRILL REGION 'r' OUTAGE`: cut off the region's PostgreSQL servers
    /// and Meridian nodes.
    RegionOutage { region: String },
}

/// What an operation produced.
#[derive(Debug, Clone)]
pub(crate) enum Done {
    /// A switchover, failover or drill: its recorded report (with `id`).
    Report(Box<Report>),
    /// `REJOIN NODE`: the node follows `primary` again.
    Rejoined { node: String, primary: String, summary: String },
}

/// Why an operation was refused or stopped. The SQLSTATE each maps to is in
/// [`ControlError::sqlstate`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// An unknown shard, node or region.
    #[error("{0}")]
    Unknown(String),
    /// The topology does not allow it now (no replica, the node is not
    /// fenced, not managed by this node, a target that does not qualify,
    /// a loss above the bound without FORCE, ...). Nothing was changed, or
    /// what was changed was undone; the message says which.
    #[error("{0}")]
    Refused(String),
    /// Another failover or switchover of the shard is under way.
    #[error("{0}")]
    Busy(String),
    /// A Raft proposal failed.
    #[error(transparent)]
    Propose(#[from] ProposeError),
    /// A step against PostgreSQL failed half way; the message says what
    /// state the shard was left in.
    #[error("{0}")]
    Failed(String),
    /// The node shut down before the operation ended: what it committed
    /// so far stands (SHOW SHARDS, SHOW EVENTS), the rest did not happen.
    #[error("the node is shutting down; the operation was cut short: check SHOW SHARDS and SHOW EVENTS")]
    CutShort,
}

impl ControlError {
    /// The SQLSTATE a console client gets.
    pub(crate) fn sqlstate(&self) -> tokio_postgres::error::SqlState {
        use tokio_postgres::error::SqlState;
        match self {
            ControlError::Unknown(_) => SqlState::UNDEFINED_OBJECT,
            ControlError::Refused(_) => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            ControlError::Busy(_) => SqlState::OBJECT_IN_USE,
            ControlError::Propose(ProposeError::Rejected(e)) => crate::admin::command_sqlstate(e),
            ControlError::Propose(ProposeError::NoLeader) => SqlState::CANNOT_CONNECT_NOW,
            ControlError::Propose(ProposeError::OutcomeUnknown(_)) => SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
            ControlError::Propose(ProposeError::ShuttingDown) => SqlState::ADMIN_SHUTDOWN,
            ControlError::Failed(_) => SqlState::SYSTEM_ERROR,
            ControlError::CutShort => SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
        }
    }

    /// A fence refused because another operation raised the epoch first.
    pub(crate) fn lost_race(e: &ProposeError) -> bool {
        matches!(e, ProposeError::Rejected(CommandError::StaleEpoch { .. }))
    }
}

/// Run `op` for an admin (`actor`, connected from `origin`) and wait for it
/// to finish. It ends early only when the node shuts down hard.
pub(crate) async fn execute(
    cluster: &Arc<Cluster>,
    shared: &Arc<Shared>,
    op: Operation,
    actor: &str,
    origin: &str,
) -> Result<Done, ControlError> {
    let write_lease = shared.config.load().cluster.as_ref().map(|c| c.write_lease).unwrap_or_default();
    tracing::info!(?op, actor, origin, "admin operation");
    let stop = shared.hard.clone();
    let report = |r: Report| Done::Report(Box::new(r));
    let run = async {
        match op {
            Operation::Switchover { shard, to } => {
                super::switchover::run(cluster, shared, write_lease, &shard, to.as_deref(), ReportKind::Switchover)
                    .await
                    .map(report)
            }
            Operation::Failover { shard, to, force } => {
                let request = Request {
                    shard,
                    kind: ReportKind::ManualFailover,
                    target: to,
                    force,
                    last_primary_lsn: None,
                    outage_began: None,
                };
                super::failover_shard::run(cluster, shared, write_lease, request).await.map(report)
            }
            Operation::Rejoin { node } => super::rejoin::run(cluster, shared, &node).await,
            Operation::Drill(Drill::Failover { shard }) => {
                super::drill::failover(cluster, shared, &shard, &stop).await.map(report)
            }
            Operation::Drill(Drill::Switchover { shard }) => {
                super::drill::switchover(cluster, shared, write_lease, &shard, &stop).await.map(report)
            }
            Operation::Drill(Drill::RegionOutage { region }) => {
                super::outage::drill(cluster, shared, &region, &stop).await.map(report)
            }
        }
    };
    // cancel safety: an operation cut short leaves what Raft committed (a
    // fence, say), which SHOW SHARDS and SHOW EVENTS show; no report.
    tokio::select! {
        done = run => done,
        _ = stop.cancelled() => Err(ControlError::CutShort),
    }
}
