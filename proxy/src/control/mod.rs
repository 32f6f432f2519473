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

mod failover_shard;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

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
/// the leader, detect and fail over. Failovers run on `tracker`.
pub(crate) async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, tracker: TaskTracker, stop: CancellationToken) {
    let origin = Instant::now();
    let mut reported: HashMap<String, bool> = HashMap::new();
    // (member, node) → (reachable, when this node learned it).
    let mut seen: HashMap<(u64, String), (bool, Millis)> = HashMap::new();
    let failing_over: Arc<parking_lot::Mutex<BTreeSet<String>>> = Arc::default();
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
        report(&cluster, &shared, &mut reported).await;
        remember_primary_positions(&shared, &mut primary_positions);
        let Some(c) = shared.config.load().cluster.clone() else { return };
        if !c.auto_failover {
            continue;
        }
        let status = cluster.status().await;
        if status.role != RaftRole::Leader {
            seen.clear();
            continue;
        }
        let now = Millis(origin.elapsed().as_millis() as u64);
        let state = cluster.state();
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
        for shard in state.shards.values() {
            let Some(primary) = shard.primary.as_deref().filter(|_| !shard.fenced) else { continue };
            if failing_over.lock().contains(&shard.name) {
                continue;
            }
            let verdict = detector.assess(&observations, &NodeId(primary.to_owned()), timeout_ms, now);
            if let Health::Dead { .. } = verdict {
                tracing::warn!(shard = %shard.name, %primary, "primary declared dead by a majority; failing over");
                failing_over.lock().insert(shard.name.clone());
                let (cluster, shared, name, busy) =
                    (cluster.clone(), shared.clone(), shard.name.clone(), failing_over.clone());
                let lease = c.write_lease;
                let last_lsn = primary_positions.get(primary).copied();
                tracker.spawn(async move {
                    if let Err(e) = failover_shard::run(&cluster, &shared, &name, lease, last_lsn).await {
                        tracing::error!(shard = %name, error = %e, "failover did not complete");
                    }
                    busy.lock().remove(&name);
                });
            }
        }
    }
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
    let t = shared.topology.borrow().clone();
    let state = cluster.state();
    for n in &t.nodes {
        let probe = shared.health.status(&n.name, &n.address).probe.load_full();
        if probe.at.is_none() {
            continue;
        }
        let known = state.reach.get(&n.name).and_then(|r| r.get(&me)).copied();
        if known == Some(probe.reachable) {
            reported.insert(n.name.clone(), probe.reachable);
            continue;
        }
        let change = Change::ReportReach { member: me, node: n.name.clone(), reachable: probe.reachable };
        match tokio::time::timeout(Duration::from_secs(2), cluster.propose(ACTOR, &cluster.member().name, change)).await
        {
            Ok(Ok(_)) => {
                if reported.insert(n.name.clone(), probe.reachable) != Some(probe.reachable) {
                    tracing::info!(node = %n.name, reachable = probe.reachable, "reachability reported");
                }
            }
            Ok(Err(e)) => tracing::debug!(node = %n.name, error = %e, "reachability report not committed"),
            Err(_) => tracing::debug!(node = %n.name, "reachability report timed out"),
        }
    }
}
