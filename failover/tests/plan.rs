//! Candidate choice, loss bound, sync quorum and operator targets.

mod common;

use common::*;
use failover::{
    AbortReason, Decision, Detector, Durability, Epoch, Lsn, Millis, NodeId, Observation, Observations, OperatorReason,
    Options, Replica, ShardView, WaitReason, plan_failover, rank_candidates,
};

const NOW: u64 = 10_000;

fn plan(view: &ShardView, batch: Vec<Observation>, options: Options) -> Decision {
    let mut obs = Observations::new();
    obs.record_all(batch);
    plan_failover(view, &Detector::new(members()), &obs, Millis(NOW), &options)
}

fn promote(candidate: &str, loss: Option<u64>, rpo_zero: bool, epoch: u64) -> Decision {
    Decision::Promote { candidate: node(candidate), expected_loss_bytes: loss, rpo_zero, fence_epoch: Epoch(epoch) }
}

fn forced() -> Options {
    Options { forced: true, target: None }
}

fn target(n: &str, forced: bool) -> Options {
    Options { forced, target: Some(node(n)) }
}

fn obs_of(parts: Vec<Vec<Observation>>) -> Vec<Observation> {
    parts.into_iter().flatten().collect()
}

// ---------------------------------------------------------------- ranking

#[test]
fn candidate_ordering_table() {
    // (case, replicas, positions, expected order)
    type Case = (&'static str, Vec<Replica>, Vec<(&'static str, u64)>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "highest lsn wins over sync, region and priority",
            vec![replica("a", "us", 1, false), replica("b", "eu", 9, true)],
            vec![("a", 200), ("b", 100)],
            vec!["a", "b"],
        ),
        (
            "equal lsn: sync standby first, even out of region",
            vec![replica("a", "eu", 9, false), replica("b", "us", 1, true)],
            vec![("a", 100), ("b", 100)],
            vec!["b", "a"],
        ),
        (
            "equal lsn and sync: primary's region first, over priority",
            vec![replica("a", "us", 9, false), replica("b", "eu", 1, false)],
            vec![("a", 100), ("b", 100)],
            vec!["b", "a"],
        ),
        (
            "equal lsn, sync, region: higher priority first",
            vec![replica("a", "eu", 1, true), replica("b", "eu", 5, true)],
            vec![("a", 100), ("b", 100)],
            vec!["b", "a"],
        ),
        (
            "all equal: by name",
            vec![replica("b", "eu", 1, false), replica("a", "eu", 1, false)],
            vec![("a", 100), ("b", 100)],
            vec!["a", "b"],
        ),
        (
            "unknown position is not a candidate",
            vec![replica("a", "eu", 1, false), replica("b", "eu", 1, false)],
            vec![("a", 100)],
            vec!["a"],
        ),
    ];
    for (name, replicas, positions, want) in cases {
        let view = view_with(Durability::Async, replicas);
        let mut obs = Observations::new();
        for (n, lsn) in &positions {
            obs.record_all(rep_all(n, *lsn));
        }
        for r in &view.replicas {
            if !positions.iter().any(|(n, _)| *n == r.node.0) {
                obs.record_all(
                    members().iter().map(|m| Observation::reachable(m.0.clone(), r.node.0.clone(), Millis(0))),
                );
            }
        }
        let got: Vec<String> = rank_candidates(&view, &obs, Detector::new(members()).members())
            .into_iter()
            .map(|c| c.replica.node.0)
            .collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn excluded_replicas() {
    let mut view = async_view();
    view.replicas[1].banned = true; // r2
    view.replicas.push(replica("p", "eu", 1, false)); // the primary listed as a replica is never a candidate
    view.replicas.push(replica("r4", "eu", 1, false));
    let mut not_in_recovery = rep("m1", "r4", 900);
    not_in_recovery.in_recovery = Some(false);
    let batch = obs_of(vec![
        rep_all("r1", 100),
        rep_all("r2", 999),
        down_all("r3"),
        vec![rep("m2", "r3", 999)],
        down_all("r3"),
        vec![not_in_recovery, rep("m1", "p", 999)],
    ]);
    let mut obs = Observations::new();
    obs.record_all(batch);
    let got: Vec<String> = rank_candidates(&view, &obs, Detector::new(members()).members())
        .into_iter()
        .map(|c| c.replica.node.0)
        .collect();
    assert_eq!(got, vec!["r1"], "banned r2, unreachable r3, promoted r4 and the primary are skipped");
}

#[test]
fn one_member_reaching_a_replica_is_enough() {
    let view = async_view();
    let batch = obs_of(vec![primary_dead_at(1_000), down_all("r1"), vec![rep("m3", "r1", 990)]]);
    assert_eq!(plan(&view, batch, Options::default()), promote("r1", Some(10), false, 8));
}

#[test]
fn position_is_max_of_received_and_replayed_over_members() {
    let view = async_view();
    let mut replayed_ahead = rep("m2", "r2", 0);
    replayed_ahead.received_lsn = None;
    replayed_ahead.replayed_lsn = Some(Lsn(995));
    let batch = obs_of(vec![primary_dead_at(1_000), vec![rep("m1", "r1", 990), replayed_ahead]]);
    assert_eq!(plan(&view, batch, Options::default()), promote("r2", Some(5), false, 8));
}

// ---------------------------------------------------------------- async: liveness and loss bound

#[test]
fn async_decision_table() {
    let alive = |lsn| obs_of(vec![members().iter().map(|m| primary_up(&m.0, lsn)).collect()]);
    let one_down = vec![primary_up("m1", 1_000), primary_up("m2", 1_000), primary_down("m3", 0)];
    let mut fenced = async_view();
    fenced.fenced = true;
    fenced.epoch = Epoch(8);
    // (case, view, observations, options, expected)
    let cases: Vec<(&str, ShardView, Vec<Observation>, Options, Decision)> = vec![
        (
            "primary healthy: wait",
            async_view(),
            obs_of(vec![alive(1_000), rep_all("r1", 1_000)]),
            Options::default(),
            Decision::Wait(WaitReason::PrimaryNotDead { node: node("p"), health: "healthy" }),
        ),
        (
            "primary suspect (1 of 3): wait",
            async_view(),
            obs_of(vec![one_down, rep_all("r1", 1_000)]),
            Options::default(),
            Decision::Wait(WaitReason::PrimaryNotDead { node: node("p"), health: "suspect" }),
        ),
        (
            "dead, no loss",
            async_view(),
            obs_of(vec![primary_dead_at(1_000), rep_all("r1", 1_000), rep_all("r2", 900)]),
            Options::default(),
            promote("r1", Some(0), false, 8),
        ),
        (
            "dead, loss exactly at the bound",
            async_view(),
            obs_of(vec![primary_dead_at(1_000 + MAX_LAG), rep_all("r2", 1_000)]),
            Options::default(),
            promote("r2", Some(MAX_LAG), false, 8),
        ),
        (
            "dead, loss above the bound: operator",
            async_view(),
            obs_of(vec![primary_dead_at(1_001 + MAX_LAG), rep_all("r2", 1_000)]),
            Options::default(),
            Decision::NeedsOperator(OperatorReason::LossExceedsBound {
                candidate: node("r2"),
                loss_bytes: MAX_LAG + 1,
                max_bytes: MAX_LAG,
            }),
        ),
        (
            "dead, loss above the bound, forced",
            async_view(),
            obs_of(vec![primary_dead_at(5_000), rep_all("r2", 1_000)]),
            forced(),
            promote("r2", Some(4_000), false, 8),
        ),
        (
            "primary lsn never seen: operator",
            async_view(),
            obs_of(vec![members().iter().map(|m| primary_down(&m.0, 0)).collect(), rep_all("r1", 10)]),
            Options::default(),
            Decision::NeedsOperator(OperatorReason::LossUnknown { candidate: node("r1") }),
        ),
        (
            "primary lsn never seen, forced",
            async_view(),
            obs_of(vec![rep_all("r1", 10)]),
            forced(),
            promote("r1", None, false, 8),
        ),
        (
            "no reachable replica: wait",
            async_view(),
            obs_of(vec![primary_dead_at(1_000), down_all("r1"), down_all("r2"), down_all("r3")]),
            Options::default(),
            Decision::Wait(WaitReason::NoCandidate),
        ),
        (
            "no reachable replica, forced: still wait",
            async_view(),
            obs_of(vec![primary_dead_at(1_000)]),
            forced(),
            Decision::Wait(WaitReason::NoCandidate),
        ),
        (
            "forced skips the liveness check",
            async_view(),
            obs_of(vec![alive(1_000), rep_all("r3", 1_000)]),
            forced(),
            promote("r3", Some(0), false, 8),
        ),
        (
            "already fenced: no liveness check, epoch kept",
            fenced,
            obs_of(vec![alive(1_000), rep_all("r1", 1_000)]),
            Options::default(),
            promote("r1", Some(0), false, 8),
        ),
    ];
    for (name, view, batch, options, want) in cases {
        assert_eq!(plan(&view, batch, options), want, "{name}");
    }
}

// ---------------------------------------------------------------- sync: ANY k of n

fn sync_view(k: usize) -> ShardView {
    view_with(
        Durability::Sync { k },
        vec![
            replica("s1", "eu", 1, true),
            replica("s2", "us", 1, true),
            replica("s3", "ap", 1, true),
            replica("a1", "eu", 1, false),
        ],
    )
}

#[test]
fn sync_quorum_table() {
    // (case, k, reachable standbys with positions, extra, options, expected)
    type Case = (&'static str, usize, Vec<(&'static str, u64)>, Vec<Observation>, Options, Decision);
    let cases: Vec<Case> = vec![
        (
            "k=1 n=3: all 3 reachable",
            1,
            vec![("s1", 900), ("s2", 1_000), ("s3", 950)],
            vec![],
            Options::default(),
            promote("s2", Some(0), true, 8),
        ),
        (
            "k=1 n=3: 2 reachable is not enough",
            1,
            vec![("s1", 900), ("s2", 1_000)],
            vec![],
            Options::default(),
            Decision::Wait(WaitReason::QuorumNotMet { reachable: 2, needed: 3 }),
        ),
        (
            "k=1 n=3: 2 reachable, forced",
            1,
            vec![("s1", 900), ("s2", 1_000)],
            vec![],
            forced(),
            promote("s2", Some(0), false, 8),
        ),
        (
            "k=2 n=3: 2 reachable",
            2,
            vec![("s1", 900), ("s3", 950)],
            vec![],
            Options::default(),
            promote("s3", Some(50), true, 8),
        ),
        (
            "k=2 n=3: 1 reachable",
            2,
            vec![("s1", 900)],
            vec![],
            Options::default(),
            Decision::Wait(WaitReason::QuorumNotMet { reachable: 1, needed: 2 }),
        ),
        ("k=3 n=3: 1 reachable", 3, vec![("s3", 800)], vec![], Options::default(), promote("s3", Some(200), true, 8)),
        (
            "k=3 n=3: none reachable, only async",
            3,
            vec![],
            rep_all("a1", 1_000),
            Options::default(),
            Decision::Wait(WaitReason::QuorumNotMet { reachable: 0, needed: 1 }),
        ),
        (
            "quorum met, an async replica is further ahead: promote it (it has every ack)",
            2,
            vec![("s1", 900), ("s2", 950)],
            rep_all("a1", 990),
            Options::default(),
            promote("a1", Some(10), true, 8),
        ),
        (
            "quorum met, loss above max_lag: the quorum governs, not the bound",
            3,
            vec![("s1", 10)],
            vec![],
            Options::default(),
            promote("s1", Some(990), true, 8),
        ),
        (
            "k=0 is invalid",
            0,
            vec![("s1", 900)],
            vec![],
            Options::default(),
            Decision::Abort(AbortReason::InvalidQuorum { k: 0, n: 3 }),
        ),
        (
            "k>n is invalid",
            4,
            vec![("s1", 900)],
            vec![],
            Options::default(),
            Decision::Abort(AbortReason::InvalidQuorum { k: 4, n: 3 }),
        ),
    ];
    for (name, k, standbys, extra, options, want) in cases {
        let mut batch = primary_dead_at(1_000);
        for (n, lsn) in standbys {
            batch.extend(rep_all(n, lsn));
        }
        batch.extend(extra);
        assert_eq!(plan(&sync_view(k), batch, options), want, "{name}");
    }
}

#[test]
fn banned_standby_ahead_blocks_rpo_zero() {
    let mut view = sync_view(2);
    view.replicas[0].banned = true; // s1 holds the latest acks but may not be promoted
    let batch = obs_of(vec![primary_dead_at(1_000), rep_all("s1", 1_000), rep_all("s2", 900)]);
    assert_eq!(
        plan(&view, batch.clone(), Options::default()),
        Decision::Wait(WaitReason::CandidateBehindQuorum { candidate: node("s2"), behind_bytes: 100 })
    );
    assert_eq!(plan(&view, batch, forced()), promote("s2", Some(100), false, 8));
}

#[test]
fn unreachable_standbys_do_not_count() {
    let batch = obs_of(vec![primary_dead_at(1_000), rep_all("s1", 1_000), rep_all("s2", 1_000), down_all("s3")]);
    assert_eq!(
        plan(&sync_view(1), batch, Options::default()),
        Decision::Wait(WaitReason::QuorumNotMet { reachable: 2, needed: 3 })
    );
}

// ---------------------------------------------------------------- operator target

#[test]
fn target_table() {
    let mut view = async_view();
    view.replicas[2].banned = true; // r3
    view.replicas.push(replica("r4", "eu", 1, false)); // unreachable
    view.replicas.push(replica("r5", "eu", 1, false)); // not in recovery
    view.replicas.push(replica("r6", "eu", 1, false)); // no position
    let mut r5 = rep("m1", "r5", 1_000);
    r5.in_recovery = Some(false);
    let base = obs_of(vec![
        primary_dead_at(1_000),
        rep_all("r1", 1_000),
        rep_all("r2", 990),
        rep_all("r3", 1_000),
        down_all("r4"),
        vec![r5],
        members().iter().map(|m| Observation::reachable(m.0.clone(), "r6", Millis(0))).collect(),
    ]);
    let abort = |r: AbortReason| Decision::Abort(r);
    let cases: Vec<(&str, Options, Decision)> = vec![
        ("unknown node", target("zz", false), abort(AbortReason::TargetNotReplica(node("zz")))),
        ("the primary", target("p", false), abort(AbortReason::TargetNotReplica(node("p")))),
        ("banned", target("r3", false), abort(AbortReason::TargetBanned(node("r3")))),
        ("banned, forced", target("r3", true), abort(AbortReason::TargetBanned(node("r3")))),
        ("unreachable", target("r4", false), abort(AbortReason::TargetUnreachable(node("r4")))),
        ("not in recovery", target("r5", false), abort(AbortReason::TargetNotInRecovery(node("r5")))),
        ("no position", target("r6", false), abort(AbortReason::TargetPositionUnknown(node("r6")))),
        (
            "behind the best",
            target("r2", false),
            abort(AbortReason::TargetBehind { target: node("r2"), best: node("r1"), behind_bytes: 10 }),
        ),
        ("behind the best, forced", target("r2", true), promote("r2", Some(10), false, 8)),
        ("the best", target("r1", false), promote("r1", Some(0), false, 8)),
    ];
    for (name, options, want) in cases {
        assert_eq!(plan(&view, base.clone(), options), want, "{name}");
    }
}

#[test]
fn target_tied_with_best_is_accepted() {
    // r2 (us) ties r1 (eu) on LSN; the operator's choice beats the region preference.
    let batch = obs_of(vec![primary_dead_at(1_000), rep_all("r1", 1_000), rep_all("r2", 1_000)]);
    assert_eq!(plan(&async_view(), batch, target("r2", false)), promote("r2", Some(0), false, 8));
}

#[test]
fn target_still_bound_by_loss() {
    let batch = obs_of(vec![primary_dead_at(5_000), rep_all("r1", 1_000)]);
    assert_eq!(
        plan(&async_view(), batch.clone(), target("r1", false)),
        Decision::NeedsOperator(OperatorReason::LossExceedsBound {
            candidate: node("r1"),
            loss_bytes: 4_000,
            max_bytes: MAX_LAG
        })
    );
    assert_eq!(plan(&async_view(), batch, target("r1", true)), promote("r1", Some(4_000), false, 8));
}

#[test]
fn target_in_sync_shard_needs_quorum() {
    let batch = obs_of(vec![primary_dead_at(1_000), rep_all("s1", 1_000), rep_all("s2", 1_000)]);
    assert_eq!(
        plan(&sync_view(1), batch.clone(), target("s2", false)),
        Decision::Wait(WaitReason::QuorumNotMet { reachable: 2, needed: 3 })
    );
    assert_eq!(plan(&sync_view(2), batch, target("s2", false)), promote("s2", Some(0), true, 8));
}

#[test]
fn reasons_display_lowercase() {
    let texts = [
        WaitReason::QuorumNotMet { reachable: 1, needed: 2 }.to_string(),
        AbortReason::TargetBanned(NodeId::from("r3")).to_string(),
        OperatorReason::LossUnknown { candidate: NodeId::from("r1") }.to_string(),
    ];
    for t in texts {
        assert!(t.chars().next().is_some_and(|c| c.is_lowercase()), "{t}");
        assert!(!t.ends_with('.'), "{t}");
    }
}
