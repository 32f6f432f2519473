//! Choosing the new primary: observations + time + options → [`Decision`].
//!
//! ```text
//!   primary Dead (or view fenced, or forced)?  no ─▶ Wait(PrimaryNotDead)
//!   operator target qualifies?                 no ─▶ Abort(reason)
//!   any reachable, unbanned, known-LSN replica? no ─▶ Wait(NoCandidate)
//!   rank: LSN ↓, sync standby, primary's region, priority ↓, name
//!   sync:  ≥ n-k+1 standbys reachable and best ≥ their max LSN? no ─▶ Wait / forced Promote
//!   async: loss ≤ max_lag_on_failover?                         no ─▶ NeedsOperator / forced Promote
//!   ─▶ Promote { candidate, expected_loss_bytes, fence_epoch }
//! ```

use std::cmp::Reverse;
use std::collections::BTreeSet;

use crate::health::{Detector, Health};
use crate::observe::Observations;
use crate::types::{Epoch, Lsn, MemberId, Millis, NodeId};
use crate::view::{Durability, Replica, ShardView};

/// What the operator asked for (`FAILOVER SHARD s [TO n] [FORCE]`); the
/// automatic path uses the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Accept a possible loss: skip the liveness check, the loss bound and
    /// the sync quorum, and report what may be lost.
    pub forced: bool,
    /// Promote exactly this replica.
    pub target: Option<NodeId>,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not now; ask again with newer observations.
    Wait(WaitReason),
    /// Promote `candidate` under `fence_epoch`.
    Promote {
        /// The replica to promote.
        candidate: NodeId,
        /// Last known primary LSN minus the candidate's; `None` when the
        /// primary's LSN was never seen.
        expected_loss_bytes: Option<u64>,
        /// True when the sync quorum argument proves no acknowledged commit
        /// is lost (RPO 0).
        rpo_zero: bool,
        /// The epoch the new primary is committed under.
        fence_epoch: Epoch,
    },
    /// This request cannot succeed as asked.
    Abort(AbortReason),
    /// Only a human (with FORCE) may go on.
    NeedsOperator(OperatorReason),
}

/// Why the planner waits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitReason {
    /// The primary is not (yet) dead by majority verdict.
    #[error("primary {node} is {health}, not dead")]
    PrimaryNotDead {
        /// The primary.
        node: NodeId,
        /// Its current verdict name.
        health: &'static str,
    },
    /// No replica is reachable, unbanned and has a known position.
    #[error("no reachable replica with a known position")]
    NoCandidate,
    /// Fewer than n-k+1 sync standbys are reachable.
    #[error("sync quorum not met: {reachable} of {needed} synchronous standbys reachable")]
    QuorumNotMet {
        /// Reachable sync standbys with a known position.
        reachable: usize,
        /// n - k + 1.
        needed: usize,
    },
    /// The best promotable replica is behind the most advanced reachable
    /// sync standby (which is banned or not promotable).
    #[error("best candidate {candidate} is {behind_bytes} bytes behind the synchronous quorum")]
    CandidateBehindQuorum {
        /// The best promotable replica.
        candidate: NodeId,
        /// How far behind.
        behind_bytes: u64,
    },
}

/// Why a request is refused outright.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AbortReason {
    /// The target is not a replica of this shard.
    #[error("target {0} is not a replica of this shard")]
    TargetNotReplica(NodeId),
    /// The target is banned.
    #[error("target {0} is banned")]
    TargetBanned(NodeId),
    /// No member reaches the target.
    #[error("target {0} is unreachable")]
    TargetUnreachable(NodeId),
    /// The target reports it is not in recovery.
    #[error("target {0} is not in recovery")]
    TargetNotInRecovery(NodeId),
    /// The target's position was never reported.
    #[error("target {0} has no known wal position")]
    TargetPositionUnknown(NodeId),
    /// The target is behind the best candidate; FORCE to accept.
    #[error("target {target} is {behind_bytes} bytes behind {best}")]
    TargetBehind {
        /// The operator's target.
        target: NodeId,
        /// The best candidate.
        best: NodeId,
        /// How far behind.
        behind_bytes: u64,
    },
    /// `ANY k` with k = 0 or k greater than the number of sync standbys.
    #[error("invalid durability: any {k} of {n} synchronous standbys")]
    InvalidQuorum {
        /// k.
        k: usize,
        /// n.
        n: usize,
    },
}

/// Why a human must decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperatorReason {
    /// Promoting would lose more than `max_lag_on_failover`.
    #[error("promoting {candidate} would lose {loss_bytes} bytes, above max_lag_on_failover {max_bytes}")]
    LossExceedsBound {
        /// The best candidate.
        candidate: NodeId,
        /// Expected loss.
        loss_bytes: u64,
        /// The bound.
        max_bytes: u64,
    },
    /// The primary's last position was never seen, so the loss is unknown.
    #[error("last primary lsn unknown, loss of promoting {candidate} cannot be bounded")]
    LossUnknown {
        /// The best candidate.
        candidate: NodeId,
    },
}

/// A promotable replica and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The replica.
    pub replica: Replica,
    /// Its highest known received/replayed LSN.
    pub lsn: Lsn,
}

/// Replicas that may be promoted (reachable, unbanned, in recovery, known
/// position), best first: LSN descending, sync standbys first, the primary's
/// region first, priority descending, then name for determinism.
pub fn rank_candidates(view: &ShardView, observations: &Observations, members: &BTreeSet<MemberId>) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = view
        .replicas
        .iter()
        .filter(|r| !r.banned && r.node != view.primary)
        .filter(|r| observations.reachable_by_any(members, &r.node))
        .filter(|r| !observations.claims_primary(members, &r.node))
        .filter_map(|r| observations.position(members, &r.node).map(|lsn| Candidate { replica: r.clone(), lsn }))
        .collect();
    out.sort_by_key(|c| {
        (
            Reverse(c.lsn),
            !c.replica.sync_standby,
            c.replica.region != view.primary_region,
            Reverse(c.replica.priority),
            c.replica.node.clone(),
        )
    });
    out
}

/// Decides whether and whom to promote. Pure: the same inputs always give
/// the same decision.
pub fn plan_failover(
    view: &ShardView,
    detector: &Detector,
    observations: &Observations,
    now: Millis,
    options: &Options,
) -> Decision {
    let members = detector.members();
    if !view.fenced && !options.forced {
        let health = detector.assess(observations, &view.primary, view.failure_timeout_ms, now);
        if !matches!(health, Health::Dead { .. }) {
            return Decision::Wait(WaitReason::PrimaryNotDead { node: view.primary.clone(), health: health.name() });
        }
    }

    let ranked = rank_candidates(view, observations, members);

    let chosen = match &options.target {
        Some(target) => match check_target(view, observations, members, &ranked, target, options.forced) {
            Ok(c) => c,
            Err(reason) => return Decision::Abort(reason),
        },
        None => match ranked.first() {
            Some(c) => c.clone(),
            None => return Decision::Wait(WaitReason::NoCandidate),
        },
    };

    let primary_lsn = observations.last_primary_lsn(&view.primary);
    let loss = primary_lsn.map(|p| p.bytes_after(chosen.lsn));
    let promote = |rpo_zero: bool| Decision::Promote {
        candidate: chosen.replica.node.clone(),
        expected_loss_bytes: loss,
        rpo_zero,
        fence_epoch: view.fence_epoch(),
    };

    match view.durability {
        Durability::Sync { k } => {
            let standbys: Vec<&Replica> = view.replicas.iter().filter(|r| r.sync_standby).collect();
            let n = standbys.len();
            if k == 0 || k > n {
                return Decision::Abort(AbortReason::InvalidQuorum { k, n });
            }
            let needed = n - k + 1;
            // Reachable standbys with a known position, banned or not: a
            // banned one cannot be promoted but still bounds what was acked.
            let positions: Vec<Lsn> = standbys
                .iter()
                .filter(|r| observations.reachable_by_any(members, &r.node))
                .filter_map(|r| observations.position(members, &r.node))
                .collect();
            if positions.len() < needed {
                return if options.forced {
                    promote(false)
                } else {
                    Decision::Wait(WaitReason::QuorumNotMet { reachable: positions.len(), needed })
                };
            }
            let acked = positions.iter().copied().max().expect("needed >= 1 positions");
            if chosen.lsn < acked {
                return if options.forced {
                    promote(false)
                } else {
                    Decision::Wait(WaitReason::CandidateBehindQuorum {
                        candidate: chosen.replica.node.clone(),
                        behind_bytes: acked.bytes_after(chosen.lsn),
                    })
                };
            }
            promote(true)
        }
        Durability::Async => match loss {
            _ if options.forced => promote(false),
            None => Decision::NeedsOperator(OperatorReason::LossUnknown { candidate: chosen.replica.node.clone() }),
            Some(bytes) if bytes > view.max_lag_on_failover => {
                Decision::NeedsOperator(OperatorReason::LossExceedsBound {
                    candidate: chosen.replica.node.clone(),
                    loss_bytes: bytes,
                    max_bytes: view.max_lag_on_failover,
                })
            }
            Some(_) => promote(false),
        },
    }
}

fn check_target(
    view: &ShardView,
    observations: &Observations,
    members: &BTreeSet<MemberId>,
    ranked: &[Candidate],
    target: &NodeId,
    forced: bool,
) -> Result<Candidate, AbortReason> {
    let replica = match view.replica(target) {
        Some(r) if r.node != view.primary => r,
        _ => return Err(AbortReason::TargetNotReplica(target.clone())),
    };
    if replica.banned {
        return Err(AbortReason::TargetBanned(target.clone()));
    }
    if !observations.reachable_by_any(members, target) {
        return Err(AbortReason::TargetUnreachable(target.clone()));
    }
    if observations.claims_primary(members, target) {
        return Err(AbortReason::TargetNotInRecovery(target.clone()));
    }
    let Some(lsn) = observations.position(members, target) else {
        return Err(AbortReason::TargetPositionUnknown(target.clone()));
    };
    if let Some(best) = ranked.first()
        && best.lsn > lsn
        && !forced
    {
        return Err(AbortReason::TargetBehind {
            target: target.clone(),
            best: best.replica.node.clone(),
            behind_bytes: best.lsn.bytes_after(lsn),
        });
    }
    Ok(Candidate { replica: replica.clone(), lsn })
}
