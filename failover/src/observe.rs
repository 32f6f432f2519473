//! Observations: what each Meridian node last reported about each PostgreSQL
//! node, kept as a table the detector and the planner read.
//!
//! ```text
//!   probes (runtime) ──Observation──▶ Observations::record ──▶ table
//!                                                              │
//!              Detector::assess (verdicts) ◀────────────────────┤
//!              plan_failover (candidates, LSNs) ◀───────────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::types::{Lsn, MemberId, Millis, NodeId};

/// One probe result: `observer` looked at `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The Meridian node that probed.
    pub observer: MemberId,
    /// The PostgreSQL node probed.
    pub node: NodeId,
    /// Whether the probe succeeded.
    pub reachable: bool,
    /// Since when the observer has seen `node` in this reachability state.
    /// A flap (unreachable, reachable, unreachable) restarts the clock.
    pub since: Millis,
    /// `pg_is_in_recovery()`, when the probe got that far.
    pub in_recovery: Option<bool>,
    /// `pg_last_wal_receive_lsn()` on a replica (WAL flushed to its disk).
    pub received_lsn: Option<Lsn>,
    /// `pg_last_wal_replay_lsn()` on a replica.
    pub replayed_lsn: Option<Lsn>,
    /// `pg_current_wal_flush_lsn()` on a primary.
    pub flush_lsn: Option<Lsn>,
    /// Round trip of the probe.
    pub rtt_ms: Option<u64>,
}

impl Observation {
    /// A successful probe with no LSNs, for building up observations.
    pub fn reachable(observer: impl Into<MemberId>, node: impl Into<NodeId>, since: Millis) -> Self {
        Observation {
            observer: observer.into(),
            node: node.into(),
            reachable: true,
            since,
            in_recovery: None,
            received_lsn: None,
            replayed_lsn: None,
            flush_lsn: None,
            rtt_ms: None,
        }
    }

    /// A failed probe: `node` unreachable from `observer` since `since`.
    pub fn unreachable(observer: impl Into<MemberId>, node: impl Into<NodeId>, since: Millis) -> Self {
        Observation { reachable: false, ..Observation::reachable(observer, node, since) }
    }
}

impl From<String> for MemberId {
    fn from(s: String) -> Self {
        MemberId(s)
    }
}

impl From<String> for NodeId {
    fn from(s: String) -> Self {
        NodeId(s)
    }
}

#[derive(Debug, Clone)]
struct Entry {
    latest: Observation,
    /// Start of the current unbroken run of failed probes, if failing.
    unreachable_since: Option<Millis>,
    /// Latest `since` of a successful report; a failure cannot start earlier.
    reachable_seen: Option<Millis>,
    /// Last known replica position (max of received and replayed).
    position: Option<Lsn>,
}

/// The latest report of every observer about every node.
#[derive(Debug, Clone, Default)]
pub struct Observations {
    entries: BTreeMap<(MemberId, NodeId), Entry>,
    /// Highest primary flush LSN ever reported per node: the last known
    /// primary position, kept after the node goes dark.
    flush: BTreeMap<NodeId, Lsn>,
}

impl Observations {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a batch in order.
    pub fn record_all(&mut self, batch: impl IntoIterator<Item = Observation>) {
        for obs in batch {
            self.record(obs);
        }
    }

    /// Records one report, replacing the observer's previous one for the node.
    pub fn record(&mut self, obs: Observation) {
        if let Some(lsn) = obs.flush_lsn {
            let known = self.flush.entry(obs.node.clone()).or_default();
            *known = (*known).max(lsn);
        }
        let key = (obs.observer.clone(), obs.node.clone());
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            latest: obs.clone(),
            unreachable_since: None,
            reachable_seen: None,
            position: None,
        });
        if obs.reachable {
            entry.unreachable_since = None;
            entry.reachable_seen = entry.reachable_seen.max(Some(obs.since));
        } else {
            // A failure reported with a `since` older than a success we have
            // already seen is stale or flapping: the run starts no earlier
            // than that success.
            let start = entry.reachable_seen.map_or(obs.since, |seen| seen.max(obs.since));
            entry.unreachable_since = Some(start);
        }
        let position = obs.received_lsn.max(obs.replayed_lsn);
        if position.is_some() {
            entry.position = position;
        }
        entry.latest = obs;
    }

    /// `observer`'s latest report about `node`.
    pub fn latest(&self, observer: &MemberId, node: &NodeId) -> Option<&Observation> {
        self.entries.get(&(observer.clone(), node.clone())).map(|e| &e.latest)
    }

    /// Since when `observer` has failed to reach `node` without a break.
    pub fn unreachable_since(&self, observer: &MemberId, node: &NodeId) -> Option<Millis> {
        self.entries.get(&(observer.clone(), node.clone())).and_then(|e| e.unreachable_since)
    }

    /// Highest flush LSN ever reported for `node` while it was a primary.
    pub fn last_primary_lsn(&self, node: &NodeId) -> Option<Lsn> {
        self.flush.get(node).copied()
    }

    /// Whether some member's latest report says `node` is reachable.
    pub fn reachable_by_any(&self, members: &BTreeSet<MemberId>, node: &NodeId) -> bool {
        members.iter().any(|m| self.latest(m, node).is_some_and(|o| o.reachable))
    }

    /// Whether some member's latest report says `node` is *not* in recovery
    /// (it claims to be a primary).
    pub fn claims_primary(&self, members: &BTreeSet<MemberId>, node: &NodeId) -> bool {
        members.iter().any(|m| self.latest(m, node).is_some_and(|o| o.reachable && o.in_recovery == Some(false)))
    }

    /// Highest known received/replayed position of `node` over members' reports.
    pub fn position(&self, members: &BTreeSet<MemberId>, node: &NodeId) -> Option<Lsn> {
        members.iter().filter_map(|m| self.entries.get(&(m.clone(), node.clone())).and_then(|e| e.position)).max()
    }
}
