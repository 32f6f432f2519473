//! Majority failure detection.

mod common;

use common::*;
use failover::{Detector, Health, MemberId, Millis, Observation, Observations};

fn assess(batch: Vec<Observation>, now: u64) -> Health {
    let mut obs = Observations::new();
    obs.record_all(batch);
    Detector::new(members()).assess(&obs, &node("p"), TIMEOUT, Millis(now))
}

#[test]
fn majority_table() {
    // (case, reports, now, expected verdict name)
    let cases: Vec<(&str, Vec<Observation>, u64, &str)> = vec![
        ("no reports", vec![], 10_000, "healthy"),
        ("all reach", vec![primary_up("m1", 5), primary_up("m2", 5), primary_up("m3", 5)], 10_000, "healthy"),
        ("1 of 3 fails long", vec![primary_down("m1", 0), primary_up("m2", 5), primary_up("m3", 5)], 10_000, "suspect"),
        ("1 of 3 fails, others silent", vec![primary_down("m1", 0)], 10_000, "suspect"),
        ("2 of 3 fail, before timeout", vec![primary_down("m1", 0), primary_down("m2", 0)], TIMEOUT - 1, "suspect"),
        ("2 of 3 fail, at timeout", vec![primary_down("m1", 0), primary_down("m2", 0)], TIMEOUT, "dead"),
        ("2 of 3 fail, one too recent", vec![primary_down("m1", 0), primary_down("m2", 500)], TIMEOUT, "suspect"),
        ("2 of 3 fail, both long enough", vec![primary_down("m1", 0), primary_down("m2", 500)], TIMEOUT + 500, "dead"),
        ("3 of 3 fail", vec![primary_down("m1", 0), primary_down("m2", 0), primary_down("m3", 0)], TIMEOUT, "dead"),
        (
            "non-members do not count",
            vec![primary_down("m1", 0), primary_down("x1", 0), primary_down("x2", 0)],
            10_000,
            "suspect",
        ),
    ];
    for (name, batch, now, want) in cases {
        assert_eq!(assess(batch, now).name(), want, "{name}");
    }
}

#[test]
fn dead_reports_who_and_when() {
    let h = assess(vec![primary_down("m1", 100), primary_down("m2", 300), primary_down("m3", 0)], 5_000);
    let Health::Dead { confirmed_by, since } = h else { panic!("want dead, got {h:?}") };
    assert_eq!(confirmed_by.len(), 3);
    // The majority (2) was reached when the second member's timeout ran out.
    assert_eq!(since, Millis(100 + TIMEOUT));
}

#[test]
fn suspect_reports_failing_members() {
    let h = assess(vec![primary_down("m2", 40), primary_up("m1", 1)], 100);
    assert_eq!(h, Health::Suspect { failing: vec![MemberId::from("m2")], since: Millis(40) });
}

#[test]
fn recovery_before_timeout_is_healthy() {
    let mut obs = Observations::new();
    let d = Detector::new(members());
    obs.record_all([primary_down("m1", 0), primary_down("m2", 0)]);
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(1_000)).name(), "suspect");
    obs.record_all([
        Observation::reachable("m1", "p", Millis(1_500)),
        Observation::reachable("m2", "p", Millis(1_500)),
    ]);
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(1_600)), Health::Healthy);
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(99_000)), Health::Healthy);
}

#[test]
fn flapping_resets_the_timer() {
    let mut obs = Observations::new();
    let d = Detector::new(members());
    obs.record_all([primary_down("m1", 0), primary_down("m2", 0)]);
    // m2 briefly reaches the primary at 1500, then loses it again at 1600.
    obs.record(Observation::reachable("m2", "p", Millis(1_500)));
    obs.record(primary_down("m2", 1_600));
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(TIMEOUT)).name(), "suspect");
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(1_600 + TIMEOUT - 1)).name(), "suspect");
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(1_600 + TIMEOUT)).name(), "dead");
}

#[test]
fn stale_failure_cannot_predate_a_seen_success() {
    let mut obs = Observations::new();
    let d = Detector::new(members());
    obs.record_all([primary_down("m1", 0), Observation::reachable("m2", "p", Millis(1_800))]);
    // A failure from m2 that claims to have started before its own success.
    obs.record(primary_down("m2", 0));
    assert_eq!(obs.unreachable_since(&MemberId::from("m2"), &node("p")), Some(Millis(1_800)));
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(TIMEOUT)).name(), "suspect");
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(1_800 + TIMEOUT)).name(), "dead");
}

#[test]
fn majority_sizes() {
    for (n, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)] {
        let d = Detector::new((0..n).map(|i| MemberId(format!("m{i}"))));
        assert_eq!(d.majority(), want, "{n} members");
    }
}

#[test]
fn five_members_need_three() {
    let d = Detector::new((1..=5).map(|i| MemberId(format!("m{i}"))));
    let mut obs = Observations::new();
    obs.record_all([primary_down("m1", 0), primary_down("m2", 0)]);
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(10_000)).name(), "suspect");
    obs.record(primary_down("m5", 0));
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(10_000)).name(), "dead");
}

#[test]
fn single_member_cluster_decides_alone() {
    let d = Detector::new([MemberId::from("m1")]);
    let mut obs = Observations::new();
    obs.record(primary_down("m1", 0));
    assert_eq!(d.assess(&obs, &node("p"), TIMEOUT, Millis(TIMEOUT)).name(), "dead");
}
