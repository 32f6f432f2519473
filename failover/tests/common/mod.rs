//! Builders shared by the failover tests.
#![allow(dead_code)]

use failover::{Durability, Epoch, Lsn, MemberId, Millis, NodeId, Observation, RegionId, Replica, ShardId, ShardView};

pub const TIMEOUT: u64 = 2_000;
pub const MAX_LAG: u64 = 1_000;

pub fn members() -> Vec<MemberId> {
    ["m1", "m2", "m3"].into_iter().map(MemberId::from).collect()
}

pub fn node(n: &str) -> NodeId {
    NodeId::from(n)
}

pub fn replica(name: &str, region: &str, priority: u32, sync: bool) -> Replica {
    Replica { node: node(name), region: RegionId::from(region), priority, sync_standby: sync, banned: false }
}

/// Primary `p` in `eu`; replicas as given.
pub fn view_with(durability: Durability, replicas: Vec<Replica>) -> ShardView {
    ShardView {
        shard: ShardId::from("s1"),
        epoch: Epoch(7),
        primary: node("p"),
        primary_region: RegionId::from("eu"),
        replicas,
        durability,
        max_lag_on_failover: MAX_LAG,
        failure_timeout_ms: TIMEOUT,
        fenced: false,
    }
}

/// Async shard: r1 (eu, prio 1), r2 (us, prio 1), r3 (ap, prio 1).
pub fn async_view() -> ShardView {
    view_with(
        Durability::Async,
        vec![replica("r1", "eu", 1, false), replica("r2", "us", 1, false), replica("r3", "ap", 1, false)],
    )
}

/// `observer` reaches replica `n` at position `lsn`.
pub fn rep(observer: &str, n: &str, lsn: u64) -> Observation {
    Observation {
        in_recovery: Some(true),
        received_lsn: Some(Lsn(lsn)),
        replayed_lsn: Some(Lsn(lsn.saturating_sub(10))),
        rtt_ms: Some(1),
        ..Observation::reachable(observer, n, Millis(0))
    }
}

/// Every member reaches replica `n` at `lsn`.
pub fn rep_all(n: &str, lsn: u64) -> Vec<Observation> {
    members().iter().map(|m| rep(&m.0, n, lsn)).collect()
}

/// Every member fails to reach replica `n`.
pub fn down_all(n: &str) -> Vec<Observation> {
    members().iter().map(|m| Observation::unreachable(m.0.clone(), n, Millis(0))).collect()
}

/// `observer` sees the primary up with flush LSN `lsn`.
pub fn primary_up(observer: &str, lsn: u64) -> Observation {
    Observation {
        in_recovery: Some(false),
        flush_lsn: Some(Lsn(lsn)),
        ..Observation::reachable(observer, "p", Millis(0))
    }
}

/// `observer` has failed to reach the primary since `since`.
pub fn primary_down(observer: &str, since: u64) -> Observation {
    Observation::unreachable(observer, "p", Millis(since))
}

/// The primary was last seen by all at `lsn` and is now down for all since 0.
pub fn primary_dead_at(lsn: u64) -> Vec<Observation> {
    let mut v: Vec<Observation> = members().iter().map(|m| primary_up(&m.0, lsn)).collect();
    v.extend(members().iter().map(|m| primary_down(&m.0, 0)));
    v
}
