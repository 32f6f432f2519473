//! `DRILL REGION 'r' OUTAGE`: the region's PostgreSQL servers and Meridian
//! nodes are cut off, for real as far as Meridian is concerned, while a
//! writer per affected shard measures what applications see.
//!
//! The cut is a committed `BeginOutage`: every Meridian node then reports
//! the region's servers unreachable and routes nothing to them (so the
//! failure detector and the automatic failover act on their own, exactly
//! as for a dead data centre), and the region's own Meridian nodes stop
//! talking to the Raft group until the outage's end time (they lose their
//! lease and stop taking writes). The servers themselves keep running,
//! as they would behind a broken link: the drill shows they get no writes.
//!
//! The drill must run on a node outside the region. Once every shard whose
//! primary was in the region has a new primary and its writer got writes
//! through again (or [`RECOVERY_LIMIT`] passed), it commits `EndOutage` and
//! brings the region's servers back as replicas of the new primaries where
//! this node manages them (`[[managed]]`: pg_rewind). The region's Meridian
//! nodes reconnect at the outage's end time at the latest.

use std::time::Duration;

use consensus::Change;
use consensus::state::{Outcome, Phase, Report, ReportKind};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::drill::{self, Writer};
use super::ops::ControlError;
use super::steps::{self, Login, Timeline, commit, now_ms};
use crate::cluster::Cluster;
use crate::node::Shared;

/// How long the region's Meridian nodes stay cut off at most (they cannot
/// hear that the drill ended earlier).
const OUTAGE_LIMIT: Duration = Duration::from_secs(20);
/// How long the affected shards may take to get writes back.
const RECOVERY_LIMIT: Duration = Duration::from_secs(15);
/// How long a region holding no primary stays cut off.
const EMPTY_REGION_OUTAGE: Duration = Duration::from_secs(5);

/// `DRILL REGION 'region' OUTAGE`.
pub(super) async fn drill(
    cluster: &Cluster,
    shared: &Shared,
    region: &str,
    stop: &CancellationToken,
) -> Result<Report, ControlError> {
    let state = cluster.state();
    if !state.regions.contains(region) {
        return Err(ControlError::Unknown(format!("unknown region {region}")));
    }
    if cluster.member().region == region {
        return Err(ControlError::Refused(format!(
            "this Meridian node is in region {region}: run the drill from a node outside the region it cuts off"
        )));
    }
    if !shared.config.load().cluster.as_ref().is_some_and(|c| c.auto_failover) {
        return Err(ControlError::Refused(
            "cluster.auto_failover is off: nothing would replace the region's primaries".into(),
        ));
    }
    // Shards whose primary is in the region: they fail over.
    let affected: Vec<(String, String, u64)> = state
        .shards
        .values()
        .filter_map(|s| {
            let p = s.primary.as_ref().and_then(|p| state.nodes.get(p))?;
            (p.region == region && !s.fenced).then(|| (s.name.clone(), p.name.clone(), s.epoch))
        })
        .collect();
    let login = Login::of(shared)?;
    let mut timeline = Timeline::default();
    let mut report = Report::new(ReportKind::DrillRegionOutage, None, None);
    report.region = Some(region.to_owned());
    if let [(shard, old, _)] = affected.as_slice() {
        let policy = state.shards.get(shard).map(|s| s.policy);
        report = Report { shard: Some(shard.clone()), old_primary: Some(old.clone()), ..report };
        if let Some(p) = policy {
            report.rto_target_ms = p.rto_target.as_millis() as u64;
            report.rpo_target_ms = p.rpo_target.as_millis() as u64;
        }
    } else {
        // Several shards: the strictest targets.
        for (shard, _, _) in &affected {
            if let Some(p) = state.shards.get(shard).map(|s| s.policy) {
                let (rto, rpo) = (p.rto_target.as_millis() as u64, p.rpo_target.as_millis() as u64);
                report.rto_target_ms = if report.rto_target_ms == 0 { rto } else { report.rto_target_ms.min(rto) };
                report.rpo_target_ms = report.rpo_target_ms.min(rpo);
            }
        }
    }

    let mut writers = Vec::new();
    for (shard, _, _) in &affected {
        writers.push(Writer::start(shared, &login, shard, stop).await?);
    }
    for w in &writers {
        w.wait_for(drill::WARM_UP_WRITES, Duration::from_secs(10)).await.map_err(ControlError::Refused)?;
    }
    timeline.mark("warm_up");

    let window = if affected.is_empty() { EMPTY_REGION_OUTAGE } else { OUTAGE_LIMIT };
    let until = now_ms() + window.as_millis() as u64;
    commit(cluster, Change::BeginOutage { region: region.to_owned(), until }).await?;
    let fault_at = timeline.mark("cut_off");
    tracing::warn!(region, shards = ?affected, "drill: region cut off");

    // Wait for every affected shard to be writable again.
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut rx = cluster.subscribe();
    let recovered = loop {
        let st = rx.borrow_and_update().clone();
        let all_back = affected.iter().zip(&writers).all(|((shard, _, epoch), w)| {
            st.shards.get(shard).is_some_and(|s| !s.fenced && s.epoch > *epoch) && w.acked_after(fault_at)
        });
        if all_back || Instant::now() >= deadline || stop.is_cancelled() {
            break all_back;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    };
    if recovered {
        timeline.mark_at(
            "writes_back",
            writers.iter().filter_map(|w| w.first_ack_after(fault_at)).max().unwrap_or_else(now_ms),
        );
    }
    tokio::time::sleep(drill::COOL_DOWN).await;
    if affected.is_empty() {
        // Nothing fails over: the drill is the region's Meridian nodes
        // being cut off (they lose their lease); it lasts its window.
        tokio::time::sleep(Duration::from_millis(until.saturating_sub(now_ms()))).await;
    }
    let mut results = Vec::new();
    for w in writers {
        results.push(w.stop().await);
    }
    commit(cluster, Change::EndOutage).await?;
    timeline.mark("region_back");

    // Measure each shard.
    let state = cluster.state();
    let (mut lost_total, mut lost_known, mut rto, mut writes, mut errors) = (0u64, true, 0u64, 0u64, 0usize);
    let mut rpo_ms = 0u64;
    let mut new_primaries = Vec::new();
    for ((shard, old, epoch), result) in affected.iter().zip(&results) {
        writes += result.acked.len() as u64;
        errors += result.errors;
        rto = rto.max(result.longest_gap_around(fault_at));
        let Some(primary) = state.writable_primary(shard).filter(|p| p.name != *old).cloned() else { continue };
        new_primaries.push(format!("{shard}: {old} → {}", primary.name));
        match drill::missing(&login, &primary.address, result.drill, &result.acked).await {
            Ok(lost) => {
                lost_total += lost.len() as u64;
                rpo_ms = rpo_ms.max(lost.iter().map(|(_, at)| fault_at.saturating_sub(*at)).max().unwrap_or(0));
            }
            Err(e) => {
                lost_known = false;
                tracing::warn!(shard, error = %e, "drill: lost writes not counted");
            }
        }
        if let Some(f) =
            state.reports.iter().rev().find(|r| {
                r.kind == ReportKind::Failover && r.shard.as_deref() == Some(shard.as_str()) && r.epoch > *epoch
            })
        {
            report.related.push(f.id);
            report.rpo_bytes = Some(report.rpo_bytes.unwrap_or(0) + f.rpo_bytes.unwrap_or(0));
            for p in &f.phases {
                timeline.0.push(Phase { name: format!("{shard}:{}", p.name), at: p.at });
            }
        }
        if affected.len() == 1 {
            report.new_primary = Some(primary.name.clone());
            report.epoch = state.shards.get(shard).map_or(0, |s| s.epoch);
        }
    }

    // The region's servers back as replicas where this node can rewind them.
    let mut rejoined = Vec::new();
    let drilled = |shard: &str| affected.iter().any(|(s, _, _)| s == shard);
    for node in state.nodes.values().filter(|n| n.region == region && drilled(&n.shard)) {
        let Some(primary) = state.writable_primary(&node.shard).filter(|p| p.name != node.name).cloned() else {
            continue;
        };
        match super::rejoin::rejoin_any_if_managed(cluster, shared, &login, &node.name, &primary).await {
            Ok(true) => rejoined.push(node.name.clone()),
            Ok(false) => {}
            Err(e) => tracing::warn!(node = %node.name, error = %e, "drill: not rejoined"),
        }
    }
    if !rejoined.is_empty() {
        timeline.mark("rejoin");
    }
    timeline.0.sort_by_key(|p| p.at);
    report.phases = timeline.0;
    report.writes = Some(writes);
    if recovered {
        report.rto_ms = Some(rto);
        if lost_known {
            report.rpo_commits = Some(lost_total);
            report.rpo_ms = Some(rpo_ms);
        }
    } else {
        report.outcome = Outcome::Stopped;
    }
    report.detail = format!(
        "region {region} cut off{}; {}; {writes} writes acknowledged, {} lost, {errors} errors seen by the writers; \
         rejoined: {}",
        if affected.is_empty() { " (no primary there)" } else { "" },
        if recovered {
            new_primaries.join(", ")
        } else {
            format!("writes did not come back within {} s", RECOVERY_LIMIT.as_secs())
        },
        if lost_known { lost_total.to_string() } else { "?".into() },
        if rejoined.is_empty() { "none (not managed here)".to_owned() } else { rejoined.join(", ") }
    );
    steps::record(cluster, report).await
}
