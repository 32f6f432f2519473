//! `REJOIN NODE n`: a fenced former primary comes back as a replica of its
//! shard's current primary. Its data directory must be on this host and
//! listed under `[[managed]]` in this node's config: Meridian stops it
//! (whatever state it is in: crashed, frozen, still running read-only),
//! rewinds it with `pg_rewind` to where its timeline left the new
//! primary's, starts it streaming from the new primary, waits until it
//! streams, commits `RejoinNode` (it is routed to again) and, for a sync
//! shard, lists it among the primary's synchronous standbys again.

use std::time::Duration;

use consensus::Change;
use consensus::state::{Durability, NodeState, PgNode};
use failover::local::Rejoined;
use failover::postgres;

use super::ops::{ControlError, Done};
use super::steps::{Login, commit, live_replicas};
use crate::cluster::Cluster;
use crate::node::Shared;

/// Bounds each step of a rejoin (stop, rewind, start, catch-up).
const REJOIN_STEP: Duration = Duration::from_secs(30);

/// `REJOIN NODE name`.
pub(super) async fn run(cluster: &Cluster, shared: &Shared, name: &str) -> Result<Done, ControlError> {
    let state = cluster.state();
    let node = state.nodes.get(name).ok_or_else(|| ControlError::Unknown(format!("unknown node {name}")))?;
    if node.state != NodeState::Fenced {
        return Err(ControlError::Refused(format!(
            "{name} is {}: only a fenced former primary rejoins (it already follows the primary)",
            node.state
        )));
    }
    let shard =
        state.shards.get(&node.shard).ok_or_else(|| ControlError::Unknown(format!("unknown shard {}", node.shard)))?;
    let primary = state
        .writable_primary(&shard.name)
        .cloned()
        .ok_or_else(|| ControlError::Refused(format!("shard {} has no writable primary to follow yet", shard.name)))?;
    if primary.name == name {
        return Err(ControlError::Refused(format!("{name} is the primary of shard {}", shard.name)));
    }
    let login = Login::of(shared)?;
    let rejoined = rejoin_if_managed(cluster, shared, &login, name, &primary).await?.ok_or_else(|| {
        ControlError::Refused(format!(
            "{name} is not managed by this Meridian node: run REJOIN NODE {name} on the node whose config lists it \
             under [[managed]] (same host as its data directory)"
        ))
    })?;
    let summary = format!(
        "{name} follows {} on timeline {} ({}rewound in {} ms, streaming {} ms after the start; {} ms in all)",
        primary.name,
        rejoined.timeline,
        rejoined.diverged_at.as_ref().map_or(String::new(), |at| format!("diverged at {at}; ")),
        rejoined.rewind_took.as_millis(),
        rejoined.catch_up_took.as_millis(),
        rejoined.total.as_millis()
    );
    Ok(Done::Rejoined { node: name.to_owned(), primary: primary.name.clone(), summary })
}

/// Rejoin the fenced former primary `name` to `primary` if this node
/// manages it; `Ok(None)` if it does not.
pub(super) async fn rejoin_if_managed(
    cluster: &Cluster,
    shared: &Shared,
    login: &Login,
    name: &str,
    primary: &PgNode,
) -> Result<Option<Rejoined>, ControlError> {
    let Some(local) = super::steps::managed(shared, name) else { return Ok(None) };
    let rejoined = rewind(cluster, login, &local, name, primary).await?;
    Ok(Some(rejoined))
}

/// Bring any server of a shard (a fenced former primary, or a replica
/// that followed it) back as a replica of `primary`, if this node manages
/// it; `Ok(false)` if it does not.
pub(super) async fn rejoin_any_if_managed(
    cluster: &Cluster,
    shared: &Shared,
    login: &Login,
    name: &str,
    primary: &PgNode,
) -> Result<bool, ControlError> {
    let Some(local) = super::steps::managed(shared, name) else { return Ok(false) };
    rewind(cluster, login, &local, name, primary).await?;
    Ok(true)
}

/// Stop, rewind and restart `name` as a replica of `primary`; commit
/// `RejoinNode` if it was fenced; make it a synchronous standby again on a
/// sync shard.
async fn rewind(
    cluster: &Cluster,
    login: &Login,
    local: &failover::local::LocalServer,
    name: &str,
    primary: &PgNode,
) -> Result<Rejoined, ControlError> {
    let node = cluster
        .state()
        .nodes
        .get(name)
        .cloned()
        .ok_or_else(|| ControlError::Unknown(format!("unknown node {name}")))?;
    let upstream = login.upstream(&primary.address, name);
    let rejoined = local
        .rejoin(&upstream, &login.target_within(&node.address, REJOIN_STEP), REJOIN_STEP)
        .await
        .map_err(|e| ControlError::Failed(format!("rejoining {name}: {e}")))?;
    if node.state == NodeState::Fenced {
        commit(cluster, Change::RejoinNode { name: name.to_owned() }).await?;
    }
    let state = cluster.state();
    if let Some(shard) = state.shards.get(&node.shard)
        && shard.policy.durability == Durability::Sync
    {
        let mut standbys: Vec<String> =
            live_replicas(&state, &shard.name, &primary.name).into_iter().map(|r| r.name).collect();
        if !standbys.iter().any(|s| s == name) {
            standbys.push(name.to_owned());
        }
        if let Err(e) = postgres::set_synchronous_standbys(&login.target(&primary.address), 1, &standbys).await {
            tracing::warn!(node = name, error = %e, "synchronous standbys not updated after the rejoin");
        }
    }
    tracing::info!(node = name, primary = %primary.name, took_ms = rejoined.total.as_millis() as u64, "rejoined");
    Ok(rejoined)
}
