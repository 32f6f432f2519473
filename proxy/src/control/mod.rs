//! The control loop every cluster node runs (DESIGN §5):
//!
//! - **report**: each node tells the cluster, through Raft, whether it can
//!   reach each PostgreSQL server (a `ReportReach` change whenever its own
//!   probes flip), so every member's view is known to the leader;
//! - **detect** (on the Raft leader): feed those reports to the failover
//!   core's [`failover::Detector`]; a primary is dead only when a majority
//!   of the voters have failed to reach it for `cluster.failure_timeout`
//!   (timed by the leader's own clock from when it learned of each report,
//!   so a new leader starts counting afresh);
//! - **fail over** (on the leader, one shard at a time): [`failover_shard`].
//!
//! ```text
//!   probes ─▶ report ─(Raft)─▶ reach table ─▶ leader: Detector ─Dead─▶ failover_shard
//!   fence (epoch+1) ─▶ stop WAL receivers ─▶ wait out the write lease ─▶ choose
//!   ─▶ pg_promote ─▶ SetPrimary (epoch+1) ─▶ re-point the others ─▶ event
//! ```

mod drill;
mod failover_shard;
pub(crate) mod ops;
mod outage;
mod rejoin;
mod steps;
mod switchover;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use consensus::state::{Durability, ReportKind};
use consensus::{Change, RaftRole};
use failover::{Detector, Health, Millis, NodeId, Observation, Observations};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::Cluster;
use crate::node::Shared;

/// Who the audit and event logs name for the control loop's changes.
pub(crate) const ACTOR: &str = "failover";

/// Run the control loop until `stop`: report every probe interval and, on
/// the leader, detect and fail over, resume a failover a previous leader
/// left half done, and keep each primary's synchronous standbys in step
/// with its shard's durability. Failovers run on `tracker`.
pub(crate) async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, tracker: TaskTracker, stop: CancellationToken) {
    let origin = Instant::now();
    let mut reported: HashMap<String, bool> = HashMap::new();
    // (member, node) → (reachable, when this node learned it).
    let mut seen: HashMap<(u64, String), (bool, Millis)> = HashMap::new();
    // Fenced shards → when this leader first saw them fenced.
    let mut fenced_seen: HashMap<String, Millis> = HashMap::new();
    let failing_over: Arc<parking_lot::Mutex<BTreeSet<String>>> = Arc::default();
    let syncing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut last_sync_check = Millis(0);
    let mut synced_version = 0;
    // The last WAL position this node saw on each primary: what a failover
    // measures its possible loss against once the primary is gone.
    let mut primary_positions: HashMap<String, u64> = HashMap::new();
    loop {
        let interval = shared.config.load().health.probe_interval;
        // cancel safety: sleep and cancelled() are cancel safe.
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
        let status = cluster.status().await;
        apply_outage(&cluster, &status);
        report(&cluster, &shared, &mut reported).await;
        remember_primary_positions(&shared, &mut primary_positions);
        let Some(c) = shared.config.load().cluster.clone() else { return };
        if status.role != RaftRole::Leader {
            seen.clear();
            fenced_seen.clear();
            continue;
        }
        let now = Millis(origin.elapsed().as_millis() as u64);
        let state = cluster.state();
        // Every few seconds, and at once after a topology change (a
        // durability change, a new replica, a ban, a rejoin).
        let due = now.since(last_sync_check) >= SYNC_CHECK_EVERY.as_millis() as u64 || state.version != synced_version;
        if due && !syncing.swap(true, std::sync::atomic::Ordering::AcqRel) {
            last_sync_check = now;
            synced_version = state.version;
            let (shared, state, flag) = (shared.clone(), state.clone(), syncing.clone());
            tracker.spawn(async move {
                keep_standbys_in_step(&shared, &state).await;
                flag.store(false, std::sync::atomic::Ordering::Release);
            });
        }
        if !c.auto_failover {
            continue;
        }
        let mut observations = Observations::new();
        for (node, reports) in &state.reach {
            for (&member, &reachable) in reports {
                let since = seen
                    .entry((member, node.clone()))
                    .and_modify(|(r, at)| {
                        if *r != reachable {
                            *r = reachable;
                            *at = now;
                        }
                    })
                    .or_insert((reachable, now))
                    .1;
                let observer = member.to_string();
                observations.record(if reachable {
                    Observation::reachable(observer, node.clone(), since)
                } else {
                    Observation::unreachable(observer, node.clone(), since)
                });
            }
        }
        let detector = Detector::new(status.voters.iter().map(|v| failover::MemberId(v.to_string())));
        let timeout_ms = c.failure_timeout.as_millis() as u64;
        fenced_seen.retain(|shard, _| state.shards.get(shard).is_some_and(|s| s.fenced));
        for shard in state.shards.values() {
            let Some(primary) = shard.primary.as_deref() else { continue };
            if failing_over.lock().contains(&shard.name) {
                continue;
            }
            let Health::Dead { since, .. } =
                detector.assess(&observations, &NodeId(primary.to_owned()), timeout_ms, now)
            else {
                continue;
            };
            if shard.fenced {
                // Fenced by a failover that did not finish (its leader
                // died), or by an operation running on another node: take
                // it over only once that one has had time to finish.
                let first = *fenced_seen.entry(shard.name.clone()).or_insert(now);
                if now.since(first) < (c.write_lease + RESUME_AFTER).as_millis() as u64 {
                    continue;
                }
                tracing::warn!(shard = %shard.name, %primary, "resuming a failover left fenced");
            } else {
                tracing::warn!(shard = %shard.name, %primary, "primary declared dead by a majority; failing over");
            }
            failing_over.lock().insert(shard.name.clone());
            // The outage began when the first member's probe failed: the
            // verdict came `failure_timeout` after a majority had failed.
            let began_ago = now.since(since) + timeout_ms;
            let request = failover_shard::Request {
                shard: shard.name.clone(),
                kind: ReportKind::Failover,
                target: None,
                force: false,
                last_primary_lsn: primary_positions.get(primary).copied(),
                outage_began: Some(steps::now_ms().saturating_sub(began_ago)),
            };
            let (cluster, shared, busy, lease) = (cluster.clone(), shared.clone(), failing_over.clone(), c.write_lease);
            tracker.spawn(async move {
                let name = request.shard.clone();
                if let Err(e) = failover_shard::run(&cluster, &shared, lease, request).await {
                    tracing::error!(shard = %name, error = %e, "failover did not complete");
                }
                busy.lock().remove(&name);
            });
        }
    }
}

/// How often the leader checks every primary's synchronous standbys.
const SYNC_CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long (beyond the write lease) a shard must have been fenced, its
/// primary dead, before a leader takes its failover over.
const RESUME_AFTER: Duration = Duration::from_secs(2);

/// Make each writable primary's `synchronous_standby_names` what its
/// shard's durability says: `ANY 1 (its live, unbanned replicas)` for
/// `sync`, empty for `async`. Outside failovers this is what keeps an
/// `ALTER SHARD ... SET (durability = ...)`, an added or removed replica,
/// a ban or a rejoin in effect.
async fn keep_standbys_in_step(shared: &Shared, state: &consensus::TopologyState) {
    let Ok(login) = steps::Login::of(shared) else { return };
    for shard in state.shards.values() {
        let Some(primary) = state.writable_primary(&shard.name) else { continue };
        let want = match shard.policy.durability {
            Durability::Sync => {
                let names: Vec<String> = steps::live_replicas(state, &shard.name, &primary.name)
                    .into_iter()
                    .filter(|r| !r.banned)
                    .map(|r| r.name)
                    .collect();
                failover::postgres::synchronous_standby_names(1, &names)
            }
            Durability::Async => String::new(),
        };
        let t = login.target_within(&primary.address, Duration::from_secs(2));
        if shard.policy.durability == Durability::Sync && !want.is_empty() {
            warn_if_no_standby_streams(&t, &shard.name, &primary.name, &want).await;
        }
        match failover::postgres::setting(&t, "synchronous_standby_names").await {
            Ok(have) if have == want => {}
            Ok(have) => {
                let names: Vec<String> = if want.is_empty() {
                    Vec::new()
                } else {
                    steps::live_replicas(state, &shard.name, &primary.name)
                        .into_iter()
                        .filter(|r| !r.banned)
                        .map(|r| r.name)
                        .collect()
                };
                match failover::postgres::set_synchronous_standbys(&t, 1, &names).await {
                    Ok(()) => tracing::info!(shard = %shard.name, primary = %primary.name, from = %have, to = %want,
                        "synchronous standbys brought in step with the shard's durability"),
                    Err(e) => tracing::warn!(shard = %shard.name, error = %e, "synchronous standbys not updated"),
                }
            }
            Err(e) => tracing::debug!(shard = %shard.name, error = %e, "synchronous standbys not checked"),
        }
    }
}

/// A sync shard whose primary has no standby streaming under a listed name
/// takes no commit: say so loudly (a replica streaming under another
/// `application_name` than its node name is the usual cause).
async fn warn_if_no_standby_streams(t: &failover::postgres::Target, shard: &str, primary: &str, want: &str) {
    let Ok(streaming) = failover::postgres::streaming_standbys(t).await else { return };
    if !streaming.iter().any(|name| want.contains(&format!("\"{}\"", name.replace('"', "\"\"")))) {
        tracing::error!(
            shard,
            primary,
            standbys = %want,
            streaming = ?streaming,
            "no synchronous standby streams from the primary under its node name: commits wait; check each \
             replica's primary_conninfo application_name"
        );
    }
}

/// Carry out a region outage drill's partition as the committed topology
/// says: a member in the region cuts itself off until the outage's end
/// time; the others stop calling it. Lifted when the drill ends (or, on
/// a member cut off, which cannot hear that, at the end time).
fn apply_outage(cluster: &Cluster, status: &consensus::Status) {
    let state = cluster.state();
    let now = steps::now_ms();
    let (until, peers) = match &state.outage {
        Some(o) if now < o.until => {
            let me = cluster.member();
            let until = (me.region == o.region)
                .then(|| tokio::time::Instant::now() + Duration::from_millis(o.until.saturating_sub(now)));
            let peers = status
                .members
                .values()
                .filter(|m| m.region == o.region && m.id != me.id)
                .map(|m| m.raft_addr.clone())
                .collect();
            (until, peers)
        }
        _ => (None, BTreeSet::new()),
    };
    cluster.set_partition(until, peers);
}

/// Note the current WAL position of every primary this node reaches.
fn remember_primary_positions(shared: &Shared, positions: &mut HashMap<String, u64>) {
    let t = shared.topology.borrow().clone();
    for s in &t.shards {
        let Some(p) = s.primary.map(|p| &t.nodes[p]) else { continue };
        let probe = shared.health.status(&p.name, &p.address).probe.load_full();
        if let (true, false, Some(lsn)) = (probe.reachable, probe.in_recovery, probe.lsn) {
            positions.insert(p.name.clone(), lsn.0);
        }
    }
}

/// Propose a `ReportReach` for every server whose reachability (as this
/// node's probes see it) differs from what the cluster last heard from it.
async fn report(cluster: &Cluster, shared: &Shared, reported: &mut HashMap<String, bool>) {
    let me = cluster.member().id;
    let state = cluster.state();
    for n in state.nodes.values() {
        // A region cut off by an outage drill is unreachable, whatever the
        // probe says (it is not routed to, so not probed either).
        let reachable = if state.cut_off(n) {
            false
        } else {
            let probe = shared.health.status(&n.name, &n.address).probe.load_full();
            if probe.at.is_none() {
                continue;
            }
            probe.reachable
        };
        let known = state.reach.get(&n.name).and_then(|r| r.get(&me)).copied();
        if known == Some(reachable) {
            reported.insert(n.name.clone(), reachable);
            continue;
        }
        let change = Change::ReportReach { member: me, node: n.name.clone(), reachable };
        match tokio::time::timeout(Duration::from_secs(2), cluster.propose(ACTOR, &cluster.member().name, change)).await
        {
            Ok(Ok(_)) => {
                if reported.insert(n.name.clone(), reachable) != Some(reachable) {
                    tracing::info!(node = %n.name, reachable, "reachability reported");
                }
            }
            Ok(Err(e)) => tracing::debug!(node = %n.name, error = %e, "reachability report not committed"),
            Err(_) => tracing::debug!(node = %n.name, "reachability report timed out"),
        }
    }
}
