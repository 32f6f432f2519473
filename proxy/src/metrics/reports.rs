//! Failover, switchover and drill metrics, counted at scrape time from the
//! reports in the replicated topology (`TopologyState::reports`).
//!
//! The reports are replicated, so every node of a cluster exports the same
//! values: aggregate them with `max`, not `sum`. The counters count the
//! reports the cluster keeps (the newest `consensus::state::REPORT_LIMIT`);
//! once older reports are dropped a counter can go down, which Prometheus
//! reads as a reset.
//!
//! ```text
//!   meridian_failovers_total{kind, outcome}       kind: failover | manual_failover | switchover
//!   meridian_drills_total{kind, passed}           kind: failover | switchover | region_outage
//!                                                 passed: true | false | unknown
//!   meridian_last_failover_rto_seconds{shard}     newest completed failover or switchover
//! ```

use std::collections::BTreeMap;
use std::fmt;

use consensus::TopologyState;
use consensus::state::{Outcome, ReportKind};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use super::family;

/// `kind` label values of `meridian_failovers_total`.
const FAILOVER_KINDS: [(ReportKind, &str); 3] = [
    (ReportKind::Failover, "failover"),
    (ReportKind::ManualFailover, "manual_failover"),
    (ReportKind::Switchover, "switchover"),
];

/// `kind` label values of `meridian_drills_total`.
const DRILL_KINDS: [(ReportKind, &str); 3] = [
    (ReportKind::DrillFailover, "failover"),
    (ReportKind::DrillSwitchover, "switchover"),
    (ReportKind::DrillRegionOutage, "region_outage"),
];

/// `outcome` label values.
const OUTCOMES: [(Outcome, &str); 3] =
    [(Outcome::Completed, "completed"), (Outcome::Aborted, "aborted"), (Outcome::Stopped, "stopped")];

/// `passed` label values, in the order of [`passed_index`].
const PASSED: [&str; 3] = ["true", "false", "unknown"];

/// What the reports say, counted once per scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportSample {
    /// Per `FAILOVER_KINDS` entry, per `OUTCOMES` entry.
    pub failovers: [[u64; 3]; 3],
    /// Per `DRILL_KINDS` entry, per `PASSED` entry.
    pub drills: [[u64; 3]; 3],
    /// Per shard: the outage of its newest completed failover or switchover
    /// that measured one, in seconds.
    pub last_rto_seconds: BTreeMap<String, f64>,
}

fn passed_index(passed: Option<bool>) -> usize {
    match passed {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    }
}

impl ReportSample {
    pub fn of(state: &TopologyState) -> ReportSample {
        let mut s = ReportSample::default();
        for r in &state.reports {
            if let Some(k) = FAILOVER_KINDS.iter().position(|(kind, _)| *kind == r.kind) {
                let o = OUTCOMES.iter().position(|(o, _)| *o == r.outcome).expect("every outcome has a label");
                s.failovers[k][o] += 1;
                // Oldest first: a newer report replaces an older one.
                if let (Outcome::Completed, Some(shard), Some(rto)) = (r.outcome, &r.shard, r.rto_ms) {
                    s.last_rto_seconds.insert(shard.clone(), rto as f64 / 1000.0);
                }
            } else if let Some(k) = DRILL_KINDS.iter().position(|(kind, _)| *kind == r.kind) {
                s.drills[k][passed_index(r.passed)] += 1;
            }
        }
        s
    }
}

/// Write the three families.
pub(super) fn encode(e: &mut DescriptorEncoder<'_>, s: &ReportSample) -> fmt::Result {
    family(
        e,
        "failovers",
        "Failovers, manual failovers and switchovers by outcome, counted from the reports the cluster keeps \
         (replicated: every node exports the same totals)",
        None,
        MetricType::Counter,
        FAILOVER_KINDS
            .iter()
            .enumerate()
            .flat_map(|(k, (_, kind))| {
                OUTCOMES.iter().enumerate().map(move |(o, (_, outcome))| (k, o, *kind, *outcome))
            })
            .map(|(k, o, kind, outcome)| ([("kind", kind), ("outcome", outcome)], s.failovers[k][o])),
    )?;
    family(
        e,
        "drills",
        "Drills by whether they met the shard's RTO and RPO targets (unknown: not measured), counted from the \
         reports the cluster keeps (replicated: every node exports the same totals)",
        None,
        MetricType::Counter,
        DRILL_KINDS
            .iter()
            .enumerate()
            .flat_map(|(k, (_, kind))| PASSED.iter().enumerate().map(move |(p, passed)| (k, p, *kind, *passed)))
            .map(|(k, p, kind, passed)| ([("kind", kind), ("passed", passed)], s.drills[k][p])),
    )?;
    family(
        e,
        "last_failover_rto",
        "Client-visible write outage of the shard's newest completed failover or switchover \
         (replicated: every node exports the same value)",
        Some(&Unit::Seconds),
        MetricType::Gauge,
        s.last_rto_seconds.iter().map(|(shard, seconds)| ([("shard", shard.as_str())], *seconds)),
    )
}

#[cfg(test)]
mod tests {
    use consensus::state::Report;

    use super::*;

    fn report(kind: ReportKind, shard: &str, outcome: Outcome, rto_ms: Option<u64>, passed: Option<bool>) -> Report {
        let mut r = Report::new(kind, Some(shard), None);
        r.outcome = outcome;
        r.rto_ms = rto_ms;
        r.passed = passed;
        r
    }

    #[test]
    fn counts_and_the_newest_rto_per_shard() {
        let mut st = TopologyState::default();
        st.reports.extend([
            report(ReportKind::Failover, "s1", Outcome::Completed, Some(4000), Some(true)),
            report(ReportKind::Switchover, "s1", Outcome::Completed, Some(250), None),
            report(ReportKind::ManualFailover, "s2", Outcome::Completed, Some(1500), None),
            report(ReportKind::ManualFailover, "s2", Outcome::Aborted, None, Some(false)),
            report(ReportKind::Failover, "s3", Outcome::Stopped, Some(9000), Some(false)),
            report(ReportKind::DrillFailover, "s1", Outcome::Completed, Some(1800), Some(true)),
            report(ReportKind::DrillRegionOutage, "s1", Outcome::Completed, None, None),
            report(ReportKind::DrillSwitchover, "s1", Outcome::Aborted, None, Some(false)),
        ]);
        let s = ReportSample::of(&st);
        assert_eq!(s.failovers, [[1, 0, 1], [1, 1, 0], [1, 0, 0]]);
        assert_eq!(s.drills, [[1, 0, 0], [0, 1, 0], [0, 0, 1]]);
        // s1: the switchover is newer than the failover; s3 never completed;
        // drills are not failovers of their own.
        assert_eq!(s.last_rto_seconds, BTreeMap::from([("s1".to_owned(), 0.25), ("s2".to_owned(), 1.5)]));
    }
}
