//! A planned switchover (`SWITCHOVER SHARD s [TO n]`): the primary is
//! healthy and hands over to a replica with nothing lost, and clients in
//! autocommit see no error at all, only a pause (DESIGN §5):
//!
//! 1. choose the target (`TO n`, else the most advanced replica: the old
//!    primary's region, then priority, break ties) and check that the old
//!    primary and the target answer;
//! 2. commit `FenceShard` (epoch e+1): every node's write gate now *holds*
//!    new writes for the shard (up to `cluster.write_hold`) instead of
//!    sending them;
//! 3. drain: wait out the write lease (a node that missed the fence has
//!    stopped routing writes by then) and let statements already running
//!    on the old primary finish (bounded by [`DRAIN`]);
//! 4. make the old primary read-only and end sessions still inside a
//!    transaction; its WAL position is now final;
//! 5. wait until the target has replayed up to it (bounded by
//!    [`CATCH_UP`]; if it does not, roll back: the old primary is writable
//!    again under the new epoch, and the report says why);
//! 6. `pg_promote()` the target, commit `SetPrimary` (the held writes go to
//!    it), point the other replicas at it;
//! 7. the old primary becomes a replica of the new one when this node
//!    manages it (`[[managed]]`: pg_rewind and restart), else it stays
//!    fenced until `REJOIN NODE`;
//! 8. a probe commit on the new primary, then the report: the write
//!    outage is from the fence to that commit; nothing is lost by
//!    construction (RPO 0).

use std::time::Duration;

use consensus::state::{Outcome, PgNode, Report, ReportKind, Shard};
use consensus::{Change, TopologyState};
use failover::postgres;
use tokio::time::Instant;

use super::ops::ControlError;
use super::steps::{self, LEASE_MARGIN, Login, Timeline, commit, live_replicas, now_ms, repoint};
use crate::cluster::Cluster;
use crate::node::Shared;

/// How long statements already running on the old primary may take to
/// finish once the lease is out, before their sessions are ended.
const DRAIN: Duration = Duration::from_secs(2);
/// How long the target may take to replay the old primary's last WAL.
const CATCH_UP: Duration = Duration::from_secs(5);

/// Switch `shard` over to `to` (or the best replica), and report it.
pub(super) async fn run(
    cluster: &Cluster,
    shared: &Shared,
    write_lease: Duration,
    shard: &str,
    to: Option<&str>,
    kind: ReportKind,
) -> Result<Report, ControlError> {
    let state = cluster.state();
    let s: Shard =
        state.shards.get(shard).cloned().ok_or_else(|| ControlError::Unknown(format!("unknown shard {shard}")))?;
    if s.fenced {
        return Err(ControlError::Busy(format!("shard {shard} is fenced: a failover or switchover is under way")));
    }
    let old = primary_of(&state, &s)?;
    let login = Login::of(shared)?;
    let target = choose_target(&state, &login, &s, &old, to).await?;
    postgres::probe(&login.target_within(&old.address, Duration::from_secs(2))).await.map_err(|e| {
        ControlError::Refused(format!(
            "the primary {} does not answer ({e}): a switchover needs a live primary; FAILOVER SHARD {shard} replaces \
             a dead one",
            old.name
        ))
    })?;

    let mut timeline = Timeline::default();
    let mut report = Report::new(kind, Some(shard), Some(&s.policy));
    report.old_primary = Some(old.name.clone());
    let epoch = s.epoch + 1;
    commit(cluster, Change::FenceShard { shard: shard.to_owned(), epoch }).await.map_err(|e| match e {
        ControlError::Propose(p) if ControlError::lost_race(&p) => {
            ControlError::Busy(format!("another failover or switchover of shard {shard} is under way"))
        }
        e => e,
    })?;
    report.epoch = epoch;
    let fenced_at = timeline.mark("fence");

    // Drain.
    let lease_over = fenced_at + (write_lease + LEASE_MARGIN).as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(lease_over.saturating_sub(now_ms()))).await;
    timeline.mark("lease_expired");
    let deadline = Instant::now() + DRAIN;
    let old_t = login.target(&old.address);
    while Instant::now() < deadline && postgres::busy_sessions(&old_t).await.is_ok_and(|n| n > 0) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    timeline.mark("drain");

    let final_lsn = match postgres::make_read_only(&old_t).await {
        Ok(lsn) => lsn,
        Err(e) => {
            let why = format!("the old primary could not be made read-only: {e}");
            return roll_back(cluster, &login, report, timeline, &s, &old, why).await;
        }
    };
    timeline.mark("read_only");
    if let Err(e) = postgres::wait_replayed(&login.target_within(&target.address, CATCH_UP), final_lsn).await {
        let why = format!("{} did not catch up with the old primary: {e}", target.name);
        return roll_back(cluster, &login, report, timeline, &s, &old, why).await;
    }
    timeline.mark("caught_up");
    if let Err(e) = postgres::promote(&login.target(&target.address)).await {
        let why = format!("promoting {} failed: {e}", target.name);
        return roll_back(cluster, &login, report, timeline, &s, &old, why).await;
    }
    timeline.mark("promote");
    commit(cluster, Change::SetPrimary { shard: shard.to_owned(), node: target.name.clone(), epoch }).await?;
    timeline.mark("re-route");
    report.new_primary = Some(target.name.clone());
    let others =
        live_replicas(&state, shard, &old.name).into_iter().filter(|r| r.name != target.name).collect::<Vec<_>>();
    repoint(&login, shard, s.policy.durability, &target, &others).await;
    timeline.mark("repoint");
    let first = postgres::commit_probe(&login.target(&target.address)).await;
    let first_commit = timeline.mark("first_commit");

    let rejoined = match super::rejoin::rejoin_if_managed(cluster, shared, &login, &old.name, &target).await {
        Ok(Some(_)) => {
            timeline.mark("rejoin_old");
            format!("; {} rejoined as its replica", old.name)
        }
        Ok(None) => format!("; {} stays fenced until REJOIN NODE {}", old.name, old.name),
        Err(e) => format!("; {} could not rejoin ({e}): REJOIN NODE {} when fixed", old.name, old.name),
    };
    report.rto_ms = first.is_ok().then(|| first_commit.saturating_sub(fenced_at));
    report.rpo_bytes = Some(0);
    report.rpo_commits = Some(0);
    report.rpo_ms = Some(0);
    report.detail = format!("{} → {} at epoch {epoch}; nothing lost{rejoined}", old.name, target.name);
    report.phases = timeline.0;
    tracing::info!(shard, detail = %report.detail, "switchover done");
    steps::record(cluster, report).await
}

fn primary_of(state: &TopologyState, s: &Shard) -> Result<PgNode, ControlError> {
    s.primary
        .as_ref()
        .and_then(|p| state.nodes.get(p))
        .cloned()
        .ok_or_else(|| ControlError::Refused(format!("shard {} has no primary", s.name)))
}

/// `TO n` checked, or the most advanced reachable replica.
async fn choose_target(
    state: &TopologyState,
    login: &Login,
    s: &Shard,
    old: &PgNode,
    to: Option<&str>,
) -> Result<PgNode, ControlError> {
    let replicas = live_replicas(state, &s.name, &old.name);
    if let Some(to) = to {
        let node = state.nodes.get(to).ok_or_else(|| ControlError::Unknown(format!("unknown node {to}")))?;
        if node.name == old.name {
            return Err(ControlError::Refused(format!("{to} is already the primary of shard {}", s.name)));
        }
        let r = replicas.iter().find(|r| r.name == to).ok_or_else(|| {
            ControlError::Refused(format!("{to} is not a live replica of shard {} (fenced, or another shard)", s.name))
        })?;
        if r.banned {
            return Err(ControlError::Refused(format!("{to} is banned")));
        }
        let quick = login.target_within(&r.address, Duration::from_secs(2));
        match postgres::probe(&quick).await {
            Ok(st) if st.in_recovery => return Ok(r.clone()),
            Ok(_) => return Err(ControlError::Refused(format!("{to} is not in recovery: not a replica"))),
            Err(e) => return Err(ControlError::Refused(format!("{to} does not answer: {e}"))),
        }
    }
    let probes = futures_util::future::join_all(replicas.iter().filter(|r| !r.banned && r.priority > 0).map(|r| {
        let t = login.target_within(&r.address, Duration::from_secs(2));
        async move { (r, postgres::probe(&t).await) }
    }))
    .await;
    probes
        .into_iter()
        .filter_map(|(r, st)| st.ok().filter(|st| st.in_recovery).map(|st| (r, st.wal_position())))
        .max_by_key(|(r, pos)| (*pos, r.region == old.region, r.priority, std::cmp::Reverse(r.name.clone())))
        .map(|(r, _)| r.clone())
        .ok_or_else(|| {
            ControlError::Refused(format!("shard {} has no replica that answers and may be promoted", s.name))
        })
}

/// The switchover stops before the promotion: the old primary takes writes
/// again under the new epoch.
async fn roll_back(
    cluster: &Cluster,
    login: &Login,
    mut report: Report,
    mut timeline: Timeline,
    s: &Shard,
    old: &PgNode,
    why: String,
) -> Result<Report, ControlError> {
    let writable = postgres::make_writable(&login.target(&old.address)).await;
    let restored =
        commit(cluster, Change::SetPrimary { shard: s.name.clone(), node: old.name.clone(), epoch: report.epoch })
            .await
            .is_ok();
    timeline.mark("rolled_back");
    report.outcome = Outcome::Aborted;
    report.detail = match (writable, restored) {
        (Ok(()), true) => format!("not switched over: {why}; {} still serves (epoch {})", old.name, report.epoch),
        _ => format!("not switched over: {why}; restoring {} failed: the shard may stay fenced", old.name),
    };
    report.phases = timeline.0;
    tracing::error!(shard = %s.name, detail = %report.detail, "switchover did not complete");
    let stored = steps::record(cluster, report).await?;
    Err(ControlError::Refused(format!("report {}: {}", stored.id, stored.detail)))
}
