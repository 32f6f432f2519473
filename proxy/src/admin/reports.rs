//! The failover, switchover and drill reports the cluster keeps
//! (`consensus::state::Report`, the newest `REPORT_LIMIT`): `SHOW
//! FAILOVERS`, `SHOW DRILLS`, `SHOW DRILL <id>`, and the one-row answer of
//! `SWITCHOVER`, `FAILOVER` and `DRILL`.
//!
//! ```text
//!   SHOW FAILOVERS ─▶ reports that are not drills, newest first, one row each
//!   SHOW DRILLS    ─▶ drill reports, newest first (FAILOVERS' columns + region, writes)
//!   SHOW DRILL n   ─▶ report n:  item | value                      (one row per field)
//!                                phase | <name> | at | since_start_ms (one row per phase)
//! ```
//!
//! No rows (and `42704` for any id) on a node without `[cluster]`.

use consensus::state::{Phase, Report};

use super::AdminError;
use super::cluster_views::iso;
use super::views::{ResultSet, Snapshot, flag, text};

/// The columns of `SHOW FAILOVERS` and of the answer to `SWITCHOVER` and
/// `FAILOVER`.
pub(crate) const FAILOVER_COLUMNS: [&str; 17] = [
    "id",
    "at",
    "kind",
    "shard",
    "old_primary",
    "new_primary",
    "epoch",
    "outcome",
    "rto_ms",
    "rpo_commits",
    "rpo_bytes",
    "rpo_ms",
    "rto_target_ms",
    "rpo_target_ms",
    "passed",
    "actor",
    "detail",
];

/// The columns of `SHOW DRILLS` and of the answer to `DRILL`:
/// [`FAILOVER_COLUMNS`] with `region` after `shard` and `writes` after
/// `passed`.
pub(crate) const DRILL_COLUMNS: [&str; 19] = [
    "id",
    "at",
    "kind",
    "shard",
    "region",
    "old_primary",
    "new_primary",
    "epoch",
    "outcome",
    "rto_ms",
    "rpo_commits",
    "rpo_bytes",
    "rpo_ms",
    "rto_target_ms",
    "rpo_target_ms",
    "passed",
    "writes",
    "actor",
    "detail",
];

/// The columns of `SHOW DRILL <id>`.
pub(crate) const REPORT_COLUMNS: [&str; 4] = ["item", "value", "at", "since_start_ms"];

impl Snapshot<'_> {
    /// `SHOW FAILOVERS`: failovers, manual failovers and switchovers, newest
    /// first.
    pub(crate) fn failovers(&self) -> ResultSet {
        self.report_rows(false)
    }

    /// `SHOW DRILLS`: the drills, newest first.
    pub(crate) fn drills(&self) -> ResultSet {
        self.report_rows(true)
    }

    fn report_rows(&self, drills: bool) -> ResultSet {
        let mut rs = ResultSet::new(if drills { &DRILL_COLUMNS } else { &FAILOVER_COLUMNS });
        let Some(st) = &self.state else { return rs };
        for r in st.reports.iter().rev().filter(|r| r.kind.is_drill() == drills) {
            rs.push(row(r, drills));
        }
        rs
    }

    /// `SHOW DRILL <id>`: report `id` of any kind.
    pub(crate) fn report(&self, id: u64) -> Result<ResultSet, AdminError> {
        let report = self.state.as_ref().and_then(|st| st.reports.iter().find(|r| r.id == id));
        match report {
            Some(r) => Ok(vertical(r)),
            None => Err(AdminError::UnknownReport(id)),
        }
    }
}

/// The one row of `SWITCHOVER`, `FAILOVER` (`drill` false) or `DRILL`
/// (`drill` true), tagged `tag`.
pub(crate) fn answer(report: &Report, drill: bool, tag: &'static str) -> ResultSet {
    let mut rs = ResultSet::new(if drill { &DRILL_COLUMNS } else { &FAILOVER_COLUMNS });
    rs.push(row(report, drill));
    rs.tag = Some(tag);
    rs
}

/// One report as a row of [`FAILOVER_COLUMNS`], or of [`DRILL_COLUMNS`]
/// with `drill`.
fn row(r: &Report, drill: bool) -> Vec<Option<String>> {
    let mut row = vec![text(r.id), text(iso(r.at)), text(r.kind), r.shard.clone()];
    if drill {
        row.push(r.region.clone());
    }
    row.extend([
        r.old_primary.clone(),
        r.new_primary.clone(),
        epoch(r),
        text(r.outcome),
        r.rto_ms.map(|v| v.to_string()),
        r.rpo_commits.map(|v| v.to_string()),
        r.rpo_bytes.map(|v| v.to_string()),
        r.rpo_ms.map(|v| v.to_string()),
        text(r.rto_target_ms),
        text(r.rpo_target_ms),
        r.passed.and_then(flag),
    ]);
    if drill {
        row.push(r.writes.map(|v| v.to_string()));
    }
    row.extend([text(&r.actor), (!r.detail.is_empty()).then(|| r.detail.clone())]);
    row
}

/// The epoch the new primary got; NULL when none was committed.
fn epoch(r: &Report) -> Option<String> {
    (r.epoch != 0).then(|| r.epoch.to_string())
}

/// `SHOW DRILL <id>`: one (`item`, `value`) row per field, then one row per
/// phase: `phase`, its name, when it finished and how long after the first
/// phase.
fn vertical(r: &Report) -> ResultSet {
    let mut rs = ResultSet::new(&REPORT_COLUMNS);
    let num = |v: Option<u64>| v.map(|v| v.to_string());
    let related: Vec<String> = r.related.iter().map(u64::to_string).collect();
    let fields: [(&str, Option<String>); 21] = [
        ("id", text(r.id)),
        ("at", text(iso(r.at))),
        ("kind", text(r.kind)),
        ("shard", r.shard.clone()),
        ("region", r.region.clone()),
        ("old_primary", r.old_primary.clone()),
        ("new_primary", r.new_primary.clone()),
        ("epoch", epoch(r)),
        ("outcome", text(r.outcome)),
        ("passed", r.passed.and_then(flag)),
        ("rto_ms", num(r.rto_ms)),
        ("rto_target_ms", text(r.rto_target_ms)),
        ("rpo_commits", num(r.rpo_commits)),
        ("rpo_bytes", num(r.rpo_bytes)),
        ("rpo_ms", num(r.rpo_ms)),
        ("rpo_target_ms", text(r.rpo_target_ms)),
        ("writes", num(r.writes)),
        ("actor", text(&r.actor)),
        ("version", text(r.version)),
        ("related", (!related.is_empty()).then(|| related.join(", "))),
        ("detail", (!r.detail.is_empty()).then(|| r.detail.clone())),
    ];
    for (item, value) in fields {
        rs.push(vec![text(item), value, None, None]);
    }
    let start = r.phases.first().map_or(r.at, |p| p.at);
    for Phase { name, at } in &r.phases {
        rs.push(vec![text("phase"), text(name), text(iso(*at)), text(at.saturating_sub(start))]);
    }
    rs
}

#[cfg(test)]
mod tests {
    use consensus::state::{Outcome, ReportKind};

    use super::*;

    fn report() -> Report {
        let mut r = Report::new(ReportKind::DrillFailover, Some("s1"), None);
        r.id = 4;
        r.version = 30;
        r.at = 1_764_235_230_042;
        r.actor = "boss".into();
        r.old_primary = Some("pg1".into());
        r.new_primary = Some("pg2".into());
        r.epoch = 3;
        r.outcome = Outcome::Completed;
        r.rto_ms = Some(1800);
        r.rpo_commits = Some(0);
        r.rto_target_ms = 10_000;
        r.passed = Some(true);
        r.writes = Some(412);
        r.related = vec![2, 3];
        r.phases = vec![
            Phase { name: "kill".into(), at: 1_764_235_228_000 },
            Phase { name: "promote".into(), at: 1_764_235_229_500 },
        ];
        r
    }

    fn cell<'a>(rs: &'a ResultSet, row: usize, column: &str) -> Option<&'a str> {
        let i = rs.columns.iter().position(|c| *c == column).unwrap_or_else(|| panic!("no column {column}"));
        rs.rows[row][i].as_deref()
    }

    #[test]
    fn rows_have_their_columns() {
        let r = report();
        let rs = answer(&r, true, "DRILL");
        assert_eq!(rs.rows.len(), 1);
        assert_eq!(rs.tag, Some("DRILL"));
        assert_eq!(cell(&rs, 0, "at"), Some("2025-11-27T09:20:30.042Z"));
        assert_eq!(cell(&rs, 0, "kind"), Some("drill failover"));
        assert_eq!(cell(&rs, 0, "region"), None);
        assert_eq!(cell(&rs, 0, "epoch"), Some("3"));
        assert_eq!(cell(&rs, 0, "rpo_bytes"), None, "not measured");
        assert_eq!(cell(&rs, 0, "rpo_commits"), Some("0"));
        assert_eq!(cell(&rs, 0, "passed"), Some("t"));
        assert_eq!(cell(&rs, 0, "writes"), Some("412"));
        assert_eq!(cell(&rs, 0, "detail"), None);
        let rs = answer(&Report { passed: None, epoch: 0, ..r }, false, "FAILOVER");
        assert_eq!(rs.columns, FAILOVER_COLUMNS);
        assert_eq!(cell(&rs, 0, "passed"), None);
        assert_eq!(cell(&rs, 0, "epoch"), None);
        assert_eq!(cell(&rs, 0, "actor"), Some("boss"));
    }

    #[test]
    fn one_report_reads_down_the_page() {
        let rs = vertical(&report());
        let find = |item: &str| rs.rows.iter().find(|r| r[0].as_deref() == Some(item)).map(|r| r[1].as_deref());
        assert_eq!(find("related"), Some(Some("2, 3")));
        assert_eq!(find("version"), Some(Some("30")));
        assert_eq!(find("rpo_ms"), Some(None));
        let phases: Vec<_> = rs.rows.iter().filter(|r| r[0].as_deref() == Some("phase")).collect();
        assert_eq!(phases.len(), 2);
        assert_eq!(phases[0][1].as_deref(), Some("kill"));
        assert_eq!(phases[0][3].as_deref(), Some("0"));
        assert_eq!(phases[1][2].as_deref(), Some("2025-11-27T09:20:29.500Z"));
        assert_eq!(phases[1][3].as_deref(), Some("1500"));
        assert!(rs.rows.iter().filter(|r| r[0].as_deref() != Some("phase")).all(|r| r[2].is_none()));
    }
}
