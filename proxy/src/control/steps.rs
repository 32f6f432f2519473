//! Steps every failover, switchover and drill shares: how the control plane
//! logs in to PostgreSQL, committing changes, the phase timeline,
//! re-pointing replicas, the probe commit, and recording the report.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consensus::state::{Durability, NodeState, PgNode, Phase, Report, Role, TopologyState};
use consensus::{Change, UnixMillis};
use failover::postgres::{self, Target, Upstream};

use super::ACTOR;
use super::ops::ControlError;
use crate::cluster::Cluster;
use crate::node::Shared;

/// Added to the write lease before promoting: clock-rate drift between
/// machines, and the time a node takes to notice its lease ran out.
pub(super) const LEASE_MARGIN: Duration = Duration::from_millis(200);
/// Bounds each PostgreSQL step.
pub(super) const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) fn now_ms() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The phases so far.
#[derive(Debug, Default)]
pub(super) struct Timeline(pub(super) Vec<Phase>);

impl Timeline {
    pub(super) fn mark(&mut self, name: &str) -> UnixMillis {
        self.mark_at(name, now_ms())
    }

    /// A phase that finished at `at` (no earlier than the last one).
    pub(super) fn mark_at(&mut self, name: &str, at: UnixMillis) -> UnixMillis {
        let at = self.0.last().map_or(at, |last| at.max(last.at));
        self.0.push(Phase { name: name.to_owned(), at });
        at
    }
}

/// How the control plane logs in to PostgreSQL: the `[health]` user with
/// its backend password from the users file.
#[derive(Clone)]
pub(super) struct Login {
    pub(super) user: String,
    pub(super) password: Option<String>,
    database: String,
}

impl Login {
    pub(super) fn of(shared: &Shared) -> Result<Login, ControlError> {
        let config = shared.config.load();
        let user = config.health.user.clone().ok_or_else(|| {
            ControlError::Refused("health.user is not set: the control plane cannot log in to PostgreSQL".into())
        })?;
        let password =
            shared.users.load().get(&user).and_then(|u| u.backend_password.as_ref()).map(|s| s.expose().to_owned());
        Ok(Login { user, password, database: config.health.database.clone() })
    }

    pub(super) fn target(&self, address: &str) -> Target {
        self.target_within(address, STEP_TIMEOUT)
    }

    pub(super) fn target_within(&self, address: &str, timeout: Duration) -> Target {
        Target {
            address: address.to_owned(),
            user: self.user.clone(),
            password: self.password.clone(),
            database: self.database.clone(),
            timeout,
        }
    }

    /// How `replica` streams from the server at `primary`.
    pub(super) fn upstream(&self, primary: &str, replica: &str) -> Upstream {
        Upstream {
            address: primary.to_owned(),
            user: self.user.clone(),
            password: self.password.clone(),
            application_name: replica.to_owned(),
        }
    }
}

/// Propose `change` as the control loop.
pub(super) async fn commit(cluster: &Cluster, change: Change) -> Result<consensus::Applied, ControlError> {
    Ok(cluster.propose(ACTOR, &cluster.member().name, change).await?)
}

/// The replicas of `shard` that may stream and be promoted: not the
/// fenced former primaries, not those in a region an outage drill cut off.
pub(super) fn live_replicas(state: &TopologyState, shard: &str, except: &str) -> Vec<PgNode> {
    state
        .nodes_of(shard)
        .filter(|n| n.name != except && n.role == Role::Replica && n.state != NodeState::Fenced && !state.cut_off(n))
        .cloned()
        .collect()
}

/// Point `replicas` at `primary` (best effort: a replica that cannot be
/// reached is logged and left; REJOIN or the next failover deals with it)
/// and, for a sync shard, make them its synchronous standbys. Returns the
/// replicas that were re-pointed.
pub(super) async fn repoint(
    login: &Login,
    shard: &str,
    durability: Durability,
    primary: &PgNode,
    replicas: &[PgNode],
) -> Vec<String> {
    let results = futures_util::future::join_all(replicas.iter().map(|r| {
        let t = login.target(&r.address);
        let up = login.upstream(&primary.address, &r.name);
        async move { (r, postgres::follow(&t, &up).await) }
    }))
    .await;
    let mut followed = Vec::new();
    for (r, result) in results {
        match result {
            Ok(()) => followed.push(r.name.clone()),
            Err(e) => tracing::warn!(shard, node = %r.name, error = %e, "replica not re-pointed"),
        }
    }
    if durability == Durability::Sync {
        let names: Vec<String> = replicas.iter().map(|r| r.name.clone()).collect();
        if let Err(e) = postgres::set_synchronous_standbys(&login.target(&primary.address), 1, &names).await {
            tracing::warn!(shard, error = %e, "synchronous standbys not set on the primary");
        }
    }
    followed
}

/// Record `report` (judged against its targets) and return it as stored.
pub(super) async fn record(cluster: &Cluster, mut report: Report) -> Result<Report, ControlError> {
    report.passed = report.judge();
    let applied = commit(cluster, Change::RecordReport { report: Box::new(report.clone()) }).await?;
    // A follower applies the entry a moment after the leader answered.
    let mut rx = cluster.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| s.version >= applied.version)).await;
    let stored = cluster.state().reports.iter().rev().find(|r| r.version == applied.version).cloned();
    Ok(stored.unwrap_or(report))
}

/// The PostgreSQL server `node` if this node's config manages it
/// (`[[managed]]`).
pub(super) fn managed(shared: &Shared, node: &str) -> Option<failover::local::LocalServer> {
    shared.config.load().local_server(node)
}
