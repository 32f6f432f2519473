//! Which server answers a read: the nearest replica that is healthy, fresh
//! enough and (for read-your-writes) caught up with the session's last
//! commit; else the primary, or an error, as the policy says.

use std::time::Duration;

use crate::lsn::Lsn;
use crate::topology::{Fallback, NodeId, ReplicaPolicy};

/// What the node knows about one replica right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub node: NodeId,
    /// The last probe reached it and it is in recovery.
    pub healthy: bool,
    /// Its primary's WAL position minus its replay position.
    pub lag_bytes: Option<u64>,
    /// How long its replay has been behind (zero when caught up).
    pub lag_time: Option<Duration>,
    pub replay_lsn: Option<Lsn>,
    /// EWMA of probe and query round trips.
    pub rtt: Option<Duration>,
    /// Requests this node has in flight on it.
    pub outstanding: usize,
}

/// Where a read goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Replica { node: NodeId, reason: String },
    Primary { reason: String },
    Fail { reason: String },
}

/// Pick the replica for a read. `min_lsn` is the position the session must
/// see (read-your-writes, `meridian.min_lsn`).
pub fn choose(policy: &ReplicaPolicy, candidates: &[Candidate], min_lsn: Option<Lsn>) -> Choice {
    let mut best: Option<&Candidate> = None;
    let mut excluded: Vec<&'static str> = Vec::new();
    for c in candidates {
        let why_not = if !c.healthy {
            Some("unhealthy")
        } else if c.lag_bytes.is_none_or(|b| b > policy.max_lag_bytes) {
            Some("lag bytes")
        } else if c.lag_time.is_none_or(|t| t > policy.max_lag) {
            Some("lag time")
        } else if let Some(min) = min_lsn
            && c.replay_lsn.is_none_or(|r| r < min)
        {
            Some("behind the session's last commit")
        } else {
            None
        };
        if let Some(w) = why_not {
            if !excluded.contains(&w) {
                excluded.push(w);
            }
            continue;
        }
        best = match best {
            None => Some(c),
            Some(b) if closer(c, b) => Some(c),
            keep => keep,
        };
    }
    match best {
        Some(c) => Choice::Replica {
            node: c.node,
            reason: match c.rtt {
                Some(rtt) => format!("nearest fresh replica (rtt {:.1} ms)", rtt.as_secs_f64() * 1000.0),
                None => "fresh replica".into(),
            },
        },
        None => {
            let reason = if candidates.is_empty() {
                "no replicas".to_owned()
            } else {
                format!("no replica qualifies ({})", excluded.join(", "))
            };
            match policy.fallback {
                Fallback::Primary => Choice::Primary { reason },
                Fallback::Fail => Choice::Fail { reason },
            }
        }
    }
}

/// Lower RTT wins (an unmeasured one loses); ties (within 10%) go to the one
/// with fewer requests in flight.
fn closer(a: &Candidate, b: &Candidate) -> bool {
    match (a.rtt, b.rtt) {
        (Some(x), Some(y)) => {
            let (lo, hi) = if x <= y { (x, y) } else { (y, x) };
            if hi.as_nanos() * 10 > lo.as_nanos() * 11 { x < y } else { a.outstanding < b.outstanding }
        }
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => a.outstanding < b.outstanding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(fallback: Fallback) -> ReplicaPolicy {
        ReplicaPolicy { max_lag_bytes: 1000, max_lag: Duration::from_secs(5), fallback }
    }

    fn cand(node: NodeId, rtt_ms: u64, lag: u64, outstanding: usize) -> Candidate {
        Candidate {
            node,
            healthy: true,
            lag_bytes: Some(lag),
            lag_time: Some(Duration::ZERO),
            replay_lsn: Some(Lsn(10_000)),
            rtt: Some(Duration::from_millis(rtt_ms)),
            outstanding,
        }
    }

    fn node(c: Choice) -> Option<NodeId> {
        match c {
            Choice::Replica { node, .. } => Some(node),
            _ => None,
        }
    }

    #[test]
    fn nearest_wins() {
        let c = [cand(1, 40, 0, 0), cand(2, 1, 0, 5), cand(3, 150, 0, 0)];
        assert_eq!(node(choose(&policy(Fallback::Primary), &c, None)), Some(2));
    }

    #[test]
    fn ties_go_to_fewer_outstanding() {
        let c = [cand(1, 10, 0, 4), cand(2, 10, 0, 1)];
        assert_eq!(node(choose(&policy(Fallback::Primary), &c, None)), Some(2));
    }

    #[test]
    fn lagging_and_unhealthy_replicas_are_skipped() {
        let mut sick = cand(1, 1, 0, 0);
        sick.healthy = false;
        let mut slow = cand(2, 1, 0, 0);
        slow.lag_time = Some(Duration::from_secs(6));
        let c = [sick, cand(3, 1, 5000, 0), slow, cand(4, 90, 10, 0)];
        assert_eq!(node(choose(&policy(Fallback::Primary), &c, None)), Some(4));
    }

    #[test]
    fn read_your_writes_needs_the_commit() {
        let c = [cand(1, 1, 0, 0)];
        assert_eq!(node(choose(&policy(Fallback::Primary), &c, Some(Lsn(10_000)))), Some(1));
        assert!(matches!(choose(&policy(Fallback::Primary), &c, Some(Lsn(10_001))), Choice::Primary { .. }));
    }

    #[test]
    fn fallback_is_configurable() {
        let c = [cand(1, 1, 5000, 0)];
        assert!(matches!(choose(&policy(Fallback::Primary), &c, None), Choice::Primary { .. }));
        let Choice::Fail { reason } = choose(&policy(Fallback::Fail), &c, None) else { panic!() };
        assert!(reason.contains("lag bytes"), "{reason}");
        assert!(matches!(choose(&policy(Fallback::Primary), &[], None), Choice::Primary { .. }));
    }
}
