//! One automatic failover of one shard, run by the Raft leader once the
//! failure detector has declared its primary dead (DESIGN §5):
//!
//! 1. commit `FenceShard` (epoch e+1): from here no node routes writes to
//!    the shard (the write gate holds them);
//! 2. stop the WAL receiver of every reachable replica (`primary_conninfo =
//!    ''`), so a primary that is only cut off can no longer have a commit
//!    acknowledged by them, and their positions stop moving;
//! 3. wait out the write lease: a node that did not learn of the fence has
//!    stopped routing writes by then;
//! 4. choose the replica with the highest WAL position (then the old
//!    primary's region, then priority); refuse, leaving the shard fenced for
//!    an operator, when it may lose more than `max_lag_on_failover` (async)
//!    or when not every synchronous standby could be stopped (sync: RPO 0
//!    needs the standby that holds every acknowledged commit);
//! 5. `pg_promote()`;
//! 6. commit `SetPrimary` (epoch e+1): every node routes to it;
//! 7. point the other replicas at it (and, for `durability = 'sync'`, make
//!    them its synchronous standbys);
//! 8. record the event with its phase timeline.
//!
//! The old primary stays fenced until `REJOIN NODE`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use consensus::state::{Durability, EventKind, NodeState, PgNode, Phase, Role};
use consensus::{Change, ProposeError};
use failover::postgres::{self, Target, Upstream};

use super::ACTOR;
use crate::cluster::Cluster;
use crate::node::Shared;

/// Added to the write lease before promoting: clock-rate drift between
/// machines, and the time a node takes to notice its lease ran out.
const LEASE_MARGIN: Duration = Duration::from_millis(200);
/// Bounds each PostgreSQL step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The phases so far, for the event.
struct Timeline(Vec<Phase>);

impl Timeline {
    fn mark(&mut self, name: &str) {
        self.0.push(Phase { name: name.to_owned(), at: now_ms() });
    }
}

/// Fail `shard` over. `Err` says why it stopped; the shard may then stay
/// fenced (no writes) until an operator acts, which the event log says.
/// `last_primary_lsn`: the old primary's last WAL position this node saw.
pub(super) async fn run(
    cluster: &Cluster,
    shared: &Shared,
    shard: &str,
    write_lease: Duration,
    last_primary_lsn: Option<u64>,
) -> Result<(), String> {
    let mut timeline = Timeline(Vec::new());
    timeline.mark("detect");
    let state = cluster.state();
    let s = state.shards.get(shard).ok_or("the shard is gone")?.clone();
    let old_name = s.primary.clone().ok_or("the shard has no primary")?;
    let old = state.nodes.get(&old_name).ok_or("the primary is not a known node")?.clone();
    let epoch = s.epoch + 1;
    commit(cluster, Change::FenceShard { shard: shard.to_owned(), epoch }).await?;
    timeline.mark("fence");

    let login = control_login(shared)?;
    let replicas: Vec<PgNode> = state
        .nodes_of(shard)
        .filter(|n| n.name != old.name && n.role == Role::Replica && n.state != NodeState::Fenced)
        .cloned()
        .collect();
    let stops = futures_util::future::join_all(replicas.iter().map(|r| {
        let t = login.target(&r.address);
        async move { (r, postgres::stop_wal_receiver(&t).await) }
    }))
    .await;
    let mut stopped = Vec::new();
    for (r, result) in stops {
        match result {
            Ok(st) => stopped.push((r.clone(), st.wal_position().map_or(0, |l| l.0))),
            Err(e) => tracing::warn!(shard, node = %r.name, error = %e, "replica not stopped; not a candidate"),
        }
    }
    timeline.mark("stop_receivers");
    tokio::time::sleep(write_lease + LEASE_MARGIN).await;
    timeline.mark("lease_expired");

    if s.policy.durability == Durability::Sync && stopped.len() < replicas.len() {
        let why = format!(
            "{} of {} synchronous standbys could be stopped: promoting could lose acknowledged commits; \
             the shard stays fenced for an operator",
            stopped.len(),
            replicas.len()
        );
        return give_up(cluster, shard, &old.name, why, timeline).await;
    }
    let Some((candidate, position)) = stopped
        .iter()
        .filter(|(r, _)| !r.banned && r.priority > 0)
        .max_by_key(|(r, pos)| (*pos, r.region == old.region, r.priority, std::cmp::Reverse(r.name.clone())))
        .cloned()
    else {
        return give_up(cluster, shard, &old.name, "no replica can be promoted".into(), timeline).await;
    };
    let loss = last_primary_lsn.map(|p| p.saturating_sub(position));
    if s.policy.durability == Durability::Async && loss.is_some_and(|l| l > s.policy.max_lag_on_failover) {
        let why = format!(
            "the best replica {} is {} bytes behind the primary's last known position (max_lag_on_failover {}): \
             the shard stays fenced for an operator",
            candidate.name,
            loss.unwrap_or_default(),
            s.policy.max_lag_on_failover
        );
        return give_up(cluster, shard, &old.name, why, timeline).await;
    }

    postgres::promote(&login.target(&candidate.address)).await.map_err(|e| e.to_string())?;
    timeline.mark("promote");
    commit(cluster, Change::SetPrimary { shard: shard.to_owned(), node: candidate.name.clone(), epoch }).await?;
    timeline.mark("re-route");

    let others: Vec<&PgNode> = stopped.iter().map(|(r, _)| r).filter(|r| r.name != candidate.name).collect();
    for r in &others {
        let upstream = Upstream {
            address: candidate.address.clone(),
            user: login.user.clone(),
            password: login.password.clone(),
            application_name: r.name.clone(),
        };
        if let Err(e) = postgres::follow(&login.target(&r.address), &upstream).await {
            tracing::warn!(shard, node = %r.name, error = %e, "replica not re-pointed");
        }
    }
    if s.policy.durability == Durability::Sync {
        let names: Vec<String> = others.iter().map(|r| r.name.clone()).collect();
        if let Err(e) = postgres::set_synchronous_standbys(&login.target(&candidate.address), 1, &names).await {
            tracing::warn!(shard, error = %e, "synchronous standbys not set on the new primary");
        }
    }
    timeline.mark("repoint");
    let summary = format!(
        "primary {} failed; {} promoted at epoch {epoch}; possible loss {}",
        old.name,
        candidate.name,
        match loss {
            Some(bytes) => format!("{bytes} bytes"),
            None => "unknown (the primary's position was never seen)".into(),
        }
    );
    tracing::warn!(shard, %summary, "failover done");
    record(cluster, shard, Some(&candidate.name), summary, timeline).await;
    Ok(())
}

/// How the control plane logs in to PostgreSQL: the `[health]` user with
/// its backend password from the users file.
struct Login {
    user: String,
    password: Option<String>,
    database: String,
}

impl Login {
    fn target(&self, address: &str) -> Target {
        Target {
            address: address.to_owned(),
            user: self.user.clone(),
            password: self.password.clone(),
            database: self.database.clone(),
            timeout: STEP_TIMEOUT,
        }
    }
}

fn control_login(shared: &Shared) -> Result<Login, String> {
    let config = shared.config.load();
    let user = config.health.user.clone().ok_or("health.user is not set: the control plane cannot log in")?;
    let password =
        shared.users.load().get(&user).and_then(|u| u.backend_password.as_ref()).map(|s| s.expose().to_owned());
    Ok(Login { user, password, database: config.health.database.clone() })
}

async fn commit(cluster: &Cluster, change: Change) -> Result<(), String> {
    let what = change.to_string();
    match cluster.propose(ACTOR, &cluster.member().name, change).await {
        Ok(_) => Ok(()),
        Err(ProposeError::Rejected(e)) => Err(format!("{what}: refused: {e}")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

async fn give_up(cluster: &Cluster, shard: &str, old: &str, why: String, timeline: Timeline) -> Result<(), String> {
    record(cluster, shard, Some(old), format!("failover stopped: {why}"), timeline).await;
    Err(why)
}

async fn record(cluster: &Cluster, shard: &str, node: Option<&str>, summary: String, timeline: Timeline) {
    let event = Change::AppendEvent {
        kind: EventKind::Failover,
        shard: Some(shard.to_owned()),
        node: node.map(str::to_owned),
        summary,
        phases: timeline.0,
    };
    if let Err(e) = commit(cluster, event).await {
        tracing::warn!(shard, error = %e, "failover event not recorded");
    }
}
