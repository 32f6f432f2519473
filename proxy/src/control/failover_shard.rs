//! One failover of one shard: automatic (the Raft leader, once the failure
//! detector has declared the primary dead), resumed (a new leader finding a
//! shard fenced by a leader that died), or manual (`FAILOVER SHARD s [TO n]
//! [FORCE]`, the primary alive or not). DESIGN §5. The sequence and its
//! decisions are the failover core's [`FailoverMachine`] (which asks
//! [`failover::plan_failover`] whom to promote); this module carries out
//! its actions against Raft and PostgreSQL:
//!
//! 1. commit `FenceShard` (epoch e+1): from here no node routes writes to
//!    the shard (the write gate holds them); a manual failover also makes a
//!    reachable old primary read-only;
//! 2. stop the WAL receiver of every reachable replica (`primary_conninfo =
//!    ''`), so a primary that is only cut off can no longer have a commit
//!    acknowledged by them, and their positions stop moving;
//! 3. wait out the write lease: a node that did not learn of the fence has
//!    stopped routing writes by then (not needed, and skipped, on a sync
//!    shard whose standbys have all stopped receiving: the old primary can
//!    acknowledge no commit any more);
//! 4. decide (the core's plan): the replica with the highest WAL position (sync standbys, then the old
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

use std::collections::VecDeque;

use consensus::state::{Durability, Outcome, PgNode, Phase, Report, ReportKind, Shard};
use consensus::{Change, UnixMillis};
use failover::postgres;
use failover::{
    Action, Config as MachineConfig, Event, FailoverMachine, Lsn, MemberId, Millis, NodeId, Observation, Options,
    Outcome as MachineOutcome, ShardView, Timeline as MachineTimeline,
};

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
/// first), or when it ended without a new primary (the report, recorded
/// too, says why).
///
/// The steps are the failover core's: this function is the runtime of a
/// [`FailoverMachine`], carrying out each [`Action`] it returns and
/// feeding back the [`Event`] that reports its completion.
pub(super) async fn run(
    cluster: &Cluster,
    shared: &Shared,
    write_lease: Duration,
    req: Request,
) -> Result<Report, ControlError> {
    let state = cluster.state();
    let s: Shard = state
        .shards
        .get(&req.shard)
        .cloned()
        .ok_or_else(|| ControlError::Unknown(format!("unknown shard {}", req.shard)))?;
    let old_name =
        s.primary.clone().ok_or_else(|| ControlError::Refused(format!("shard {} has no primary", s.name)))?;
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
    let replicas = live_replicas(&state, &s.name, &old.name);
    let mut report = Report::new(req.kind, Some(&s.name), Some(&s.policy));
    report.old_primary = Some(old.name.clone());
    // Phases the core does not time: the first failed probe, the WAL
    // receivers stopped, the probe commit.
    let mut extra = Timeline::default();
    if let Some(at) = req.outage_began {
        extra.mark_at("down", at);
    }

    let config = MachineConfig { write_lease_ms: (write_lease + LEASE_MARGIN).as_millis() as u64 };
    let mut machine = FailoverMachine::new(shard_view(&s, &old, &replicas), [MemberId(SELF.to_owned())], config);
    // The leader's detector has declared the primary dead (or an operator
    // asked): that verdict starts the machine.
    let options = Options { forced: req.force, target: req.target.clone().map(NodeId) };
    let mut actions: VecDeque<Action> = machine.handle(Event::Operator(options), clock()).into();
    let mut old_alive = false;
    let mut stopped: Vec<PgNode> = Vec::new();
    let mut operator_reason: Option<String> = None;
    let record = loop {
        let Some(action) = actions.pop_front() else {
            // Nothing to do: the plan waits (for a quorum of standbys, say)
            // or needs an operator. No newer observation will come in this
            // run: end it, leaving the shard as the record says.
            actions.extend(machine.handle(Event::Timeout, clock()));
            if actions.is_empty() {
                return Err(ControlError::Failed(format!("the failover of shard {} stalled", s.name)));
            }
            continue;
        };
        match action {
            Action::CommitFence { epoch } => {
                commit(cluster, Change::FenceShard { shard: s.name.clone(), epoch: epoch.0 }).await.map_err(
                    |e| match e {
                        ControlError::Propose(p) if ControlError::lost_race(&p) => ControlError::Busy(format!(
                            "another failover or switchover of shard {} is under way",
                            s.name
                        )),
                        e => e,
                    },
                )?;
                report.epoch = epoch.0;
                actions.extend(machine.handle(Event::FenceCommitted, clock()));
            }
            Action::StopWalReceivers { .. } => {
                report.epoch = machine.view().epoch.0;
                let mut batch = Vec::new();
                if req.kind != ReportKind::Failover {
                    // A manual failover may find the old primary alive: stop
                    // its writes at the source too, and learn its position.
                    let quick = login.target_within(&old.address, Duration::from_secs(2));
                    if let Ok(lsn) = postgres::make_read_only(&quick).await {
                        old_alive = true;
                        batch.push(Observation {
                            flush_lsn: Some(lsn),
                            ..Observation::unreachable(SELF.to_owned(), old.name.clone(), Millis(0))
                        });
                    }
                }
                if let Some(lsn) = req.last_primary_lsn {
                    batch.push(Observation {
                        flush_lsn: Some(Lsn(lsn)),
                        ..Observation::unreachable(SELF.to_owned(), old.name.clone(), Millis(0))
                    });
                }
                let (observed, ok) = stop_receivers(&login, &s.name, &replicas).await;
                batch.extend(observed);
                stopped = ok;
                extra.mark("stop_receivers");
                actions.extend(machine.handle(Event::Observed(batch), clock()));
            }
            Action::WaitLease { until } => {
                // The lease wait makes sure no node still routes writes to
                // the old primary that it could acknowledge. On a sync
                // shard whose standbys have all stopped receiving, it can
                // acknowledge no commit any more (each needs a standby's
                // flush): nothing to wait for. FORCE keeps the wait.
                let all_stopped = !replicas.is_empty() && stopped.len() == replicas.len();
                if s.policy.durability == Durability::Sync && all_stopped && !req.force {
                    extra.mark("lease_not_needed");
                } else {
                    tokio::time::sleep(Duration::from_millis(until.0.saturating_sub(now_ms()))).await;
                }
                actions.extend(machine.handle(Event::LeaseWaited, clock()));
            }
            Action::NotifyOperator(reason) => {
                tracing::error!(shard = %s.name, %reason, "failover needs an operator");
                operator_reason = Some(format!("{reason}; FAILOVER SHARD {} FORCE accepts the loss", s.name));
            }
            Action::Promote(node) => {
                let ok = match replicas.iter().find(|r| r.name == node.0) {
                    Some(r) => match postgres::promote(&login.target(&r.address)).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::error!(shard = %s.name, node = %node.0, error = %e, "promotion failed");
                            false
                        }
                    },
                    None => false,
                };
                actions.extend(machine.handle(Event::Promoted { ok }, clock()));
            }
            Action::CommitPrimary { node, epoch } => {
                commit(cluster, Change::SetPrimary { shard: s.name.clone(), node: node.0.clone(), epoch: epoch.0 })
                    .await?;
                actions.extend(machine.handle(Event::PrimaryCommitted, clock()));
            }
            Action::Repoint { primary, .. } => {
                let new =
                    replicas.iter().find(|r| r.name == primary.0).cloned().expect("the machine promotes replicas");
                let others: Vec<PgNode> = stopped.iter().filter(|r| r.name != new.name).cloned().collect();
                repoint(&login, &s.name, s.policy.durability, &new, &others).await;
                actions.extend(machine.handle(Event::ReplicasRepointed, clock()));
            }
            Action::RecordEvent(record) => break record,
        }
    };

    let promoted = match &record.outcome {
        MachineOutcome::Promoted { .. } => {
            record.new_primary.as_ref().and_then(|n| replicas.iter().find(|r| r.name == n.0))
        }
        _ => None,
    };
    let Some(new) = promoted.cloned() else {
        let why = match &record.outcome {
            MachineOutcome::Refused(reason) => reason.to_string(),
            MachineOutcome::PromoteFailed(node) => format!("promoting {} failed", node.0),
            MachineOutcome::TimedOut { waiting: Some(w), .. } => w.to_string(),
            MachineOutcome::TimedOut { needs_operator: Some(o), .. } => {
                operator_reason.unwrap_or_else(|| o.to_string())
            }
            MachineOutcome::TimedOut { phase, .. } => format!("timed out while {phase:?}"),
            MachineOutcome::Promoted { .. } => "the promoted node is not a replica of the shard".into(),
        };
        let timeline = phases(&record.timeline, extra);
        return refuse(cluster, &login, report, timeline, &s, &old, &stopped, old_alive, why).await;
    };

    let first = postgres::commit_probe(&login.target(&new.address)).await;
    let first_commit = extra.mark("first_commit");
    if let Err(e) = &first {
        tracing::warn!(shard = %s.name, error = %e, "the probe commit on the new primary failed");
    }
    let began = req.outage_began.or(record.timeline.fenced_at.map(|m| m.0)).unwrap_or(first_commit);
    let (loss, rpo_zero) = (record.expected_loss_bytes, record.rpo_zero);
    report.new_primary = Some(new.name.clone());
    report.epoch = record.epoch.0;
    report.rto_ms = first.is_ok().then(|| first_commit.saturating_sub(began));
    report.rpo_bytes = loss.or(rpo_zero.then_some(0));
    if rpo_zero {
        report.rpo_commits = Some(0);
        report.rpo_ms = Some(0);
    }
    report.detail = format!(
        "{} → {} at epoch {}; {}{}",
        old.name,
        new.name,
        record.epoch.0,
        match (rpo_zero, loss) {
            (true, _) => "no acknowledged commit lost (a synchronous standby was promoted)".to_owned(),
            (false, Some(bytes)) => format!("up to {bytes} bytes of WAL lost"),
            (false, None) => "loss unknown (the old primary's position was never seen)".to_owned(),
        },
        if req.force { "; forced" } else { "" }
    );
    report.phases = phases(&record.timeline, extra).0;
    tracing::warn!(shard = %s.name, detail = %report.detail, "failover done");
    steps::record(cluster, report).await
}

/// The machine's clock: Unix milliseconds.
fn clock() -> Millis {
    Millis(now_ms())
}

/// Stop the WAL receivers of `replicas`; what each one's position is now
/// (unreachable ones as unreachable), and the ones stopped.
async fn stop_receivers(login: &Login, shard: &str, replicas: &[PgNode]) -> (Vec<Observation>, Vec<PgNode>) {
    let stops = futures_util::future::join_all(replicas.iter().map(|r| {
        let t = login.target(&r.address);
        async move { (r, postgres::stop_wal_receiver(&t).await) }
    }))
    .await;
    let (mut observed, mut stopped) = (Vec::new(), Vec::new());
    for (r, result) in stops {
        match result {
            Ok(st) => {
                stopped.push(r.clone());
                observed.push(Observation {
                    in_recovery: Some(st.in_recovery),
                    received_lsn: st.receive_lsn,
                    replayed_lsn: st.replay_lsn,
                    ..Observation::reachable(SELF.to_owned(), r.name.clone(), Millis(0))
                });
            }
            Err(e) => {
                tracing::warn!(shard, node = %r.name, error = %e, "replica not stopped; not a candidate");
                observed.push(Observation::unreachable(SELF.to_owned(), r.name.clone(), Millis(0)));
            }
        }
    }
    (observed, stopped)
}

/// The report's phases: the core's timeline and ours, in time order.
fn phases(t: &MachineTimeline, extra: Timeline) -> Timeline {
    let mut all = extra.0;
    let named = [
        ("detect", t.detected_at),
        ("fence", t.fenced_at),
        ("lease_expired", t.lease_waited_at),
        ("decide", t.decided_at),
        ("promote", t.promoted_at),
        ("re-route", t.rerouted_at),
        ("repoint", t.repointed_at),
    ];
    all.extend(named.into_iter().filter_map(|(name, at)| at.map(|at| Phase { name: name.to_owned(), at: at.0 })));
    all.sort_by_key(|p| p.at);
    Timeline(all)
}

/// The shard as the failover core sees it.
fn shard_view(s: &Shard, old: &PgNode, replicas: &[PgNode]) -> ShardView {
    let sync = s.policy.durability == Durability::Sync;
    ShardView {
        shard: failover::ShardId(s.name.clone()),
        epoch: failover::Epoch(s.epoch),
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
        fenced: s.fenced,
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
