//! The failure detector: majority verdicts over the observations table.
//!
//! ```text
//!   Healthy ──any member fails──▶ Suspect ──majority failing ≥ failure_timeout──▶ Dead
//!      ▲                              │
//!      └──────all members reach it────┘
//! ```
//!
//! A single member that cannot reach a primary only makes it Suspect: one
//! proxy's own network trouble never causes a failover.

use std::collections::BTreeSet;

use crate::observe::Observations;
use crate::types::{MemberId, Millis, NodeId};

/// The detector's verdict on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every member that reported reaches it.
    Healthy,
    /// Some member fails to reach it, but not yet a majority for long enough.
    Suspect {
        /// Members whose latest report is a failure.
        failing: Vec<MemberId>,
        /// Earliest start of a current failure run among them.
        since: Millis,
    },
    /// A majority of members each failed to reach it for `failure_timeout`.
    Dead {
        /// Members that have failed continuously for `failure_timeout`.
        confirmed_by: Vec<MemberId>,
        /// When the majority was reached (the majority-th member's timeout).
        since: Millis,
    },
}

impl Health {
    /// A short lowercase name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Suspect { .. } => "suspect",
            Health::Dead { .. } => "dead",
        }
    }
}

/// Majority failure detection over the current Meridian membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detector {
    members: BTreeSet<MemberId>,
}

impl Detector {
    /// A detector over the given Raft membership. Reports from observers
    /// outside it are ignored.
    pub fn new(members: impl IntoIterator<Item = MemberId>) -> Self {
        Detector { members: members.into_iter().collect() }
    }

    /// The members.
    pub fn members(&self) -> &BTreeSet<MemberId> {
        &self.members
    }

    /// How many members make a majority.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// The verdict on `node` at `now`.
    pub fn assess(&self, observations: &Observations, node: &NodeId, failure_timeout_ms: u64, now: Millis) -> Health {
        let failing: Vec<(MemberId, Millis)> = self
            .members
            .iter()
            .filter_map(|m| observations.unreachable_since(m, node).map(|s| (m.clone(), s)))
            .collect();
        if failing.is_empty() {
            return Health::Healthy;
        }
        let mut confirmed: Vec<(MemberId, Millis)> = failing
            .iter()
            .filter(|(_, since)| now.since(*since) >= failure_timeout_ms)
            .map(|(m, since)| (m.clone(), since.plus(failure_timeout_ms)))
            .collect();
        if !self.members.is_empty() && confirmed.len() >= self.majority() {
            confirmed.sort_by_key(|(_, at)| *at);
            let since = confirmed[self.majority() - 1].1;
            return Health::Dead { confirmed_by: confirmed.into_iter().map(|(m, _)| m).collect(), since };
        }
        let since = failing.iter().map(|(_, s)| *s).min().expect("failing is not empty");
        Health::Suspect { failing: failing.into_iter().map(|(m, _)| m).collect(), since }
    }
}
