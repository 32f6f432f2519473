//! One failover of one shard: automatic (the Raft leader, once the failure
//! detector has declared the primary dead), resumed (a new leader finding a
//! shard fenced by a leader that died), or manual (`FAILOVER SHARD s [TO n]
//! [FORCE]`, the primary alive or not). DESIGN §5:
//!
//! 1. commit `FenceShard` (epoch e+1): from here no node routes writes to
//!    the shard (the write gate holds them); a manual failover also makes a
//!    reachable old primary read-only;
//! 2. stop the WAL receiver of every reachable replica (`primary_conninfo =
//!    ''`), so a primary that is only cut off can no longer have a commit
//!    acknowledged by them, and their positions stop moving;
//! 3. wait out the write lease: a node that did not learn of the fence has
//!    stopped routing writes by then;
//! 4. decide with the failover core's [`failover::plan_failover`]: the
//!    replica with the highest WAL position (sync standbys, then the old
//!    primary's region, then priority), refusing a loss above
//!    `max_lag_on_failover` (async) or a promotion that cannot prove every
//!    acknowledged commit is kept (sync), unless FORCE;
//! 5. `pg_promote()`;
//! 6. commit `SetPrimary` (epoch e+1): every node routes to it;
//! 7. point the other replicas at it (for `durability = 'sync'`, as its
//!    synchronous standbys);
//! 8. a probe commit on the new primary (first commit), then the report.
//!
//! Refused at step 4, a failover whose old primary is still reachable (a
//! manual one) is rolled back: the replicas follow it again and it takes
//! writes under the new epoch. Otherwise the shard stays fenced for an
//! operator (`FAILOVER SHARD s FORCE`), and the report says why.
//!
//! The old primary stays fenced until `REJOIN NODE`.

use std::time::Duration;

use consensus::state::{Durability, Outcome, PgNode, Report, ReportKind, Shard};
use consensus::{Change, UnixMillis};
use failover::postgres;
use failover::{Decision, Detector, Lsn, MemberId, Millis, NodeId, Observation, Observations, Options, ShardView};

use super::ops::ControlError;
use super::steps::{self, LEASE_MARGIN, Login, Timeline, commit, live_replicas, now_ms, repoint};
use crate::cluster::Cluster;
use crate::node::Shared;

/// What to fail over and how.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) shard: String,
    pub(super) kind: ReportKind,
    /// `TO n`.
    pub(super) target: Option<String>,
    /// `FORCE`.
    pub(super) force: bool,
    /// The old primary's last WAL position this node saw (for the loss).
    pub(super) last_primary_lsn: Option<u64>,
    /// When the outage began as far as we know (the first failed probe of
    /// the primary); `None` for a manual failover: the fence starts it.
    pub(super) outage_began: Option<UnixMillis>,
}

/// The member name the failover core sees for this node's own checks.
const SELF: &str = "self";

/// Fail `req.shard` over and record the report. `Err` when it was refused
/// before anything changed (unknown shard, another operation got there
/// first); every other ending is a report (completed, aborted or stopped).
pub(super) async fn run(
    cluster: &Cluster,
    shared: &Shared,
    write_lease: Duration,
    req: Request,
) -> Result<Report, ControlError> {
    let mut timeline = Timeline::default();
    if let Some(at) = req.outage_began {
        timeline.mark_at("down", at);
    }
    timeline.mark("detect");
    let state = cluster.state();
    let s: Shard =
        state.shards.get(&req.shard).cloned().ok_or_else(|| ControlError::Unknown(format!("unknown shard {}", req.shard)))?;
    let old_name = s.primary.clone().ok_or_else(|| ControlError::Refused(format!("shard {} has no primary", s.name)))?;
    let old = state
        .nodes
        .get(&old_name)
        .cloned()
        .ok_or_else(|| ControlError::Refused(format!("the primary {old_name} is not a known node")))?;
    if let Some(t) = &req.target {
        match state.nodes.get(t) {
            None => return Err(ControlError::Unknown(format!("unknown node {t}"))),
            Some(n) if n.shard != s.name => {
                return Err(ControlError::Refused(format!("{t} is a node of shard {}, not of {}", n.shard, s.name)));
            }
            Some(_) if *t == old_name => {
                return Err(ControlError::Refused(format!("{t} is already the primary of shard {}", s.name)));
            }
            Some(_) => {}
        }
    }
    let login = Login::of(shared)?;
    let mut report = Report::new(req.kind, Some(&s.name), Some(&s.policy));
    report.old_primary = Some(old.name.clone());

    // 1. Fence (a resumed failover finds the fence already committed).
    let epoch = if s.fenced {
        s.epoch
    } else {
        let epoch = s.epoch + 1;
        commit(cluster, Change::FenceShard { shard: s.name.clone(), epoch }).await.map_err(|e| match e {
            ControlError::Propose(p) if ControlError::lost_race(&p) => {
                ControlError::Busy(format!("another failover or switchover of shard {} is under way", s.name))
            }
            e => e,
        })?;
        epoch
    };
    report.epoch = epoch;
    let fenced_at = timeline.mark("fence");
    let mut last_primary_lsn = req.last_primary_lsn;
    let mut old_alive = false;
    if req.kind != ReportKind::Failover {
        // A manual failover may find the old primary alive: stop its writes
        // at the source too, and learn its exact position.
        let quick = login.target_within(&old.address, Duration::from_secs(2));
        if let Ok(lsn) = postgres::make_read_only(&quick).await {
            old_alive = true;
            last_primary_lsn = Some(last_primary_lsn.unwrap_or(0).max(lsn.0));
        }
    }

    // 2. Stop the replicas' WAL receivers.
    let replicas = live_replicas(&state, &s.name, &old.name);
    let stops = futures_util::future::join_all(replicas.iter().map(|r| {
        let t = login.target(&r.address);
        async move { (r, postgres::stop_wal_receiver(&t).await) }
    }))
    .await;
    let mut observations = Observations::new();
    let origin = Millis(0);
    let mut stopped = Vec::new();
    for (r, result) in stops {
        match result {
            Ok(st) => {
                stopped.push(r.clone());
                observations.record(Observation {
                    in_recovery: Some(st.in_recovery),
                    received_lsn: st.receive_lsn,
                    replayed_lsn: st.replay_lsn,
                    ..Observation::reachable(SELF.to_owned(), r.name.clone(), origin)
                });
            }
            Err(e) => {
                tracing::warn!(shard = %s.name, node = %r.name, error = %e, "replica not stopped; not a candidate");
                observations.record(Observation::unreachable(SELF.to_owned(), r.name.clone(), origin));
            }
        }
    }
    if let Some(lsn) = last_primary_lsn {
        observations.record(Observation {
            flush_lsn: Some(Lsn(lsn)),
            ..Observation::unreachable(SELF.to_owned(), old.name.clone(), origin)
        });
    }
    timeline.mark("stop_receivers");

    // 3. Wait out the write lease (from the fence).
    let lease_over = fenced_at + (write_lease + LEASE_MARGIN).as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(lease_over.saturating_sub(now_ms()))).await;
    timeline.mark("lease_expired");

    // 4. Decide.
    let view = shard_view(&s, &old, &replicas, epoch);
    let detector = Detector::new([MemberId(SELF.to_owned())]);
    let options = Options { forced: req.force, target: req.target.clone().map(NodeId) };
    let decision = failover::plan_failover(&view, &detector, &observations, origin, &options);
    timeline.mark("decide");
    let (candidate, loss, rpo_zero) = match decision {
        Decision::Promote { candidate, expected_loss_bytes, rpo_zero, .. } => {
            let node = replicas.iter().find(|r| r.name == candidate.0).cloned().expect("candidates are replicas");
            (node, expected_loss_bytes, rpo_zero)
        }
        refusal => {
            let why = match refusal {
                Decision::Wait(w) => w.to_string(),
                Decision::Abort(a) => a.to_string(),
                Decision::NeedsOperator(o) => format!("{o}; FAILOVER SHARD {} FORCE accepts the loss", s.name),
                Decision::Promote { .. } => unreachable!("handled above"),
            };
            return refuse(cluster, &login, report, timeline, &s, &old, &stopped, old_alive, why).await;
        }
    };

    // 5-7. Promote, re-route, re-point.
    if let Err(e) = postgres::promote(&login.target(&candidate.address)).await {
        let why = format!("promoting {} failed: {e}", candidate.name);
        return refuse(cluster, &login, report, timeline, &s, &old, &stopped, old_alive, why).await;
    }
    timeline.mark("promote");
    commit(cluster, Change::SetPrimary { shard: s.name.clone(), node: candidate.name.clone(), epoch }).await?;
    timeline.mark("re-route");
    report.new_primary = Some(candidate.name.clone());
    let others: Vec<PgNode> = stopped.iter().filter(|r| r.name != candidate.name).cloned().collect();
    repoint(&login, &s.name, s.policy.durability, &candidate, &others).await;
    timeline.mark("repoint");

    // 8. First commit, report.
    let first = postgres::commit_probe(&login.target(&candidate.address)).await;
    let first_commit = timeline.mark("first_commit");
    if let Err(e) = &first {
        tracing::warn!(shard = %s.name, error = %e, "the probe commit on the new primary failed");
    }
    let began = req.outage_began.unwrap_or(fenced_at);
    report.rto_ms = first.is_ok().then(|| first_commit.saturating_sub(began));
    report.rpo_bytes = loss.or(rpo_zero.then_some(0));
    if rpo_zero {
        report.rpo_commits = Some(0);
        report.rpo_ms = Some(0);
    }
    report.detail = format!(
        "{} → {} at epoch {epoch}; {}{}",
        old.name,
        candidate.name,
        match (rpo_zero, loss) {
            (true, _) => "no acknowledged commit lost (a synchronous standby was promoted)".to_owned(),
            (false, Some(bytes)) => format!("up to {bytes} bytes of WAL lost"),
            (false, None) => "loss unknown (the old primary's position was never seen)".to_owned(),
        },
        if req.force { "; forced" } else { "" }
    );
    report.phases = timeline.0;
    tracing::warn!(shard = %s.name, detail = %report.detail, "failover done");
    steps::record(cluster, report).await
}

/// The shard as the failover core sees it, fenced at `epoch`.
fn shard_view(s: &Shard, old: &PgNode, replicas: &[PgNode], epoch: u64) -> ShardView {
    let sync = s.policy.durability == Durability::Sync;
    ShardView {
        shard: failover::ShardId(s.name.clone()),
        epoch: failover::Epoch(epoch),
        primary: NodeId(old.name.clone()),
        primary_region: failover::RegionId(old.region.clone()),
        replicas: replicas
            .iter()
            .map(|r| failover::Replica {
                node: NodeId(r.name.clone()),
                region: failover::RegionId(r.region.clone()),
                priority: r.priority,
                sync_standby: sync,
                banned: r.banned || r.priority == 0,
            })
            .collect(),
        durability: if sync { failover::Durability::Sync { k: 1 } } else { failover::Durability::Async },
        max_lag_on_failover: s.policy.max_lag_on_failover,
        failure_timeout_ms: 0,
        fenced: true,
    }
}

/// The failover will not promote anyone: roll back to a reachable old
/// primary, or leave the shard fenced; record the report either way.
#[allow(clippy::too_many_arguments)]
async fn refuse(
    cluster: &Cluster,
    login: &Login,
    mut report: Report,
    mut timeline: Timeline,
    s: &Shard,
    old: &PgNode,
    stopped: &[PgNode],
    old_alive: bool,
    why: String,
) -> Result<Report, ControlError> {
    let rolled_back = old_alive && rollback(cluster, login, s, old, stopped, report.epoch).await;
    if rolled_back {
        timeline.mark("rolled_back");
        report.outcome = Outcome::Aborted;
        report.new_primary = Some(old.name.clone());
        report.detail = format!("not failed over: {why}; {} still serves (epoch {})", old.name, report.epoch);
    } else {
        report.outcome = Outcome::Stopped;
        report.detail = format!("stopped: {why}; the shard stays fenced (no writes) for an operator");
    }
    tracing::error!(shard = %s.name, detail = %report.detail, "failover did not complete");
    report.phases = timeline.0;
    let stored = steps::record(cluster, report).await?;
    Err(ControlError::Refused(format!("report {}: {}", stored.id, stored.detail)))
}

/// Give the shard back to its old primary: writable again, the stopped
/// replicas following it, committed as primary under the fence epoch.
async fn rollback(cluster: &Cluster, login: &Login, s: &Shard, old: &PgNode, stopped: &[PgNode], epoch: u64) -> bool {
    if let Err(e) = postgres::make_writable(&login.target(&old.address)).await {
        tracing::error!(shard = %s.name, error = %e, "the old primary could not be made writable again");
        return false;
    }
    repoint(login, &s.name, s.policy.durability, old, stopped).await;
    commit(cluster, Change::SetPrimary { shard: s.name.clone(), node: old.name.clone(), epoch }).await.is_ok()
}
