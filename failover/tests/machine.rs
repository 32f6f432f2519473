//! The phase machine: exact actions per event, every abort path, the timeline.

mod common;

use common::*;
use failover::{
    AbortReason, Action, Config, Durability, Epoch, Event, FailoverMachine, Millis, Observation, OperatorReason,
    Options, Outcome, Phase, Record, ShardView, Timeline, WaitReason,
};

const LEASE: u64 = 1_000;

fn machine(view: ShardView) -> FailoverMachine {
    FailoverMachine::new(view, members(), Config { write_lease_ms: LEASE })
}

fn observed(batch: Vec<Observation>) -> Event {
    Event::Observed(batch)
}

fn all_replicas() -> Vec<failover::NodeId> {
    vec![node("r1"), node("r2"), node("r3")]
}

fn record_of(actions: &[Action]) -> &Record {
    match actions {
        [Action::RecordEvent(r)] => r,
        other => panic!("want one RecordEvent, got {other:?}"),
    }
}

/// Drives a machine on `async_view` to Fencing with the lease waited out,
/// the primary last seen at `primary_lsn` and `replicas` observed.
fn to_fence(view: ShardView, primary_lsn: u64, replicas: Vec<Observation>) -> (FailoverMachine, Vec<Action>) {
    let mut m = machine(view);
    let mut batch = primary_dead_at(primary_lsn);
    batch.extend(replicas);
    assert_eq!(m.handle(observed(batch), Millis(TIMEOUT)), vec![Action::CommitFence { epoch: Epoch(8) }]);
    m.handle(Event::FenceCommitted, Millis(TIMEOUT + 100));
    let actions = m.handle(Event::LeaseWaited, Millis(TIMEOUT + 100 + LEASE));
    (m, actions)
}

#[test]
fn happy_path_actions_and_timeline() {
    let mut m = machine(async_view());
    assert_eq!(m.phase(), Phase::Healthy);

    // t=0: all see the primary and the replicas.
    let mut batch: Vec<Observation> = members().iter().map(|mm| primary_up(&mm.0, 1_000)).collect();
    batch.extend(rep_all("r1", 990));
    batch.extend(rep_all("r2", 1_000));
    assert_eq!(m.handle(observed(batch), Millis(0)), vec![]);
    assert_eq!(m.phase(), Phase::Healthy);

    // t=100: m1 and m2 lose the primary.
    assert_eq!(m.handle(observed(vec![primary_down("m1", 100), primary_down("m2", 100)]), Millis(100)), vec![]);
    assert_eq!(m.phase(), Phase::Suspect);

    // Still suspect just before the timeout.
    assert_eq!(m.handle(observed(vec![]), Millis(100 + TIMEOUT - 1)), vec![]);
    assert_eq!(m.phase(), Phase::Suspect);

    // Dead: commit the fence.
    let t_dead = 100 + TIMEOUT;
    assert_eq!(m.handle(observed(vec![]), Millis(t_dead)), vec![Action::CommitFence { epoch: Epoch(8) }]);
    assert_eq!(m.phase(), Phase::Dead);

    // Fence committed: stop WAL receivers and wait out the lease.
    assert_eq!(
        m.handle(Event::FenceCommitted, Millis(t_dead + 50)),
        vec![
            Action::StopWalReceivers { replicas: all_replicas() },
            Action::WaitLease { until: Millis(t_dead + 50 + LEASE) }
        ]
    );
    assert_eq!(m.phase(), Phase::Fencing);
    assert!(m.view().fenced);
    assert_eq!(m.view().epoch, Epoch(8));

    // Lease out: decide (r2 has the highest LSN).
    let t_lease = t_dead + 50 + LEASE;
    assert_eq!(m.handle(Event::LeaseWaited, Millis(t_lease)), vec![Action::Promote(node("r2"))]);
    assert_eq!(m.phase(), Phase::Promoting);

    assert_eq!(
        m.handle(Event::Promoted { ok: true }, Millis(t_lease + 200)),
        vec![Action::CommitPrimary { node: node("r2"), epoch: Epoch(8) }]
    );
    assert_eq!(m.phase(), Phase::Promoting);

    assert_eq!(
        m.handle(Event::PrimaryCommitted, Millis(t_lease + 250)),
        vec![Action::Repoint { primary: node("r2"), replicas: vec![node("r1"), node("r3")] }]
    );
    assert_eq!(m.phase(), Phase::Repointing);

    let actions = m.handle(Event::ReplicasRepointed, Millis(t_lease + 400));
    assert_eq!(m.phase(), Phase::Done);
    let record = record_of(&actions);
    let timeline = Timeline {
        suspected_at: Some(Millis(100)),
        detected_at: Some(Millis(t_dead)),
        fenced_at: Some(Millis(t_dead + 50)),
        lease_waited_at: Some(Millis(t_lease)),
        decided_at: Some(Millis(t_lease)),
        promoted_at: Some(Millis(t_lease + 200)),
        rerouted_at: Some(Millis(t_lease + 250)),
        repointed_at: Some(Millis(t_lease + 400)),
        finished_at: Some(Millis(t_lease + 400)),
    };
    assert_eq!(
        record,
        &Record {
            shard: "s1".into(),
            old_primary: node("p"),
            new_primary: Some(node("r2")),
            epoch: Epoch(8),
            outcome: Outcome::Promoted { repointed: true },
            expected_loss_bytes: Some(0),
            rpo_zero: false,
            forced: false,
            timeline: timeline.clone(),
        }
    );
    assert_eq!(m.timeline(), &timeline);
    assert_eq!(m.record(), Some(record));

    // Done is terminal.
    for e in [Event::Timeout, Event::FenceCommitted, Event::ReplicasRepointed, observed(primary_dead_at(5))] {
        assert_eq!(m.handle(e, Millis(99_999)), vec![]);
        assert_eq!(m.phase(), Phase::Done);
    }
}

#[test]
fn one_observer_failing_never_starts_a_failover() {
    let mut m = machine(async_view());
    let batch = vec![primary_down("m1", 0), primary_up("m2", 1_000), primary_up("m3", 1_000)];
    assert_eq!(m.handle(observed(batch), Millis(0)), vec![]);
    for t in [TIMEOUT, 10 * TIMEOUT, 100 * TIMEOUT] {
        assert_eq!(m.handle(observed(vec![]), Millis(t)), vec![]);
        assert_eq!(m.phase(), Phase::Suspect);
    }
}

#[test]
fn recovery_returns_to_healthy_and_clears_suspicion() {
    let mut m = machine(async_view());
    m.handle(observed(vec![primary_down("m1", 0), primary_down("m2", 0)]), Millis(0));
    assert_eq!(m.phase(), Phase::Suspect);
    assert_eq!(m.timeline().suspected_at, Some(Millis(0)));
    m.handle(observed(vec![primary_up("m1", 5), primary_up("m2", 5)]), Millis(500));
    assert_eq!(m.phase(), Phase::Healthy);
    assert_eq!(m.timeline().suspected_at, None);
    // A new failure run starts its own clock.
    m.handle(observed(vec![primary_down("m1", 600), primary_down("m2", 600)]), Millis(600));
    assert_eq!(m.handle(observed(vec![]), Millis(TIMEOUT + 500)), vec![]);
    assert_eq!(m.phase(), Phase::Suspect);
    assert_eq!(m.handle(observed(vec![]), Millis(600 + TIMEOUT)), vec![Action::CommitFence { epoch: Epoch(8) }]);
    assert_eq!(m.timeline().suspected_at, Some(Millis(600)));
}

#[test]
fn out_of_phase_events_are_ignored() {
    let mut m = machine(async_view());
    for e in [
        Event::FenceCommitted,
        Event::LeaseWaited,
        Event::Promoted { ok: true },
        Event::PrimaryCommitted,
        Event::ReplicasRepointed,
        Event::Timeout,
    ] {
        assert_eq!(m.handle(e.clone(), Millis(1)), vec![], "{e:?}");
        assert_eq!(m.phase(), Phase::Healthy);
    }
    // In Dead, lease and promotion completions are early.
    m.handle(observed(primary_dead_at(1_000)), Millis(TIMEOUT));
    assert_eq!(m.phase(), Phase::Dead);
    for e in [Event::LeaseWaited, Event::Promoted { ok: true }, Event::PrimaryCommitted] {
        assert_eq!(m.handle(e, Millis(TIMEOUT + 1)), vec![]);
        assert_eq!(m.phase(), Phase::Dead);
    }
    // In Promoting, PrimaryCommitted before Promoted is early; a second LeaseWaited is a duplicate.
    let (mut m, actions) = to_fence(async_view(), 1_000, rep_all("r1", 1_000));
    assert_eq!(actions, vec![Action::Promote(node("r1"))]);
    assert_eq!(m.handle(Event::PrimaryCommitted, Millis(9_000)), vec![]);
    assert_eq!(m.handle(Event::LeaseWaited, Millis(9_000)), vec![]);
    assert_eq!(m.phase(), Phase::Promoting);
    m.handle(Event::Promoted { ok: true }, Millis(9_001));
    assert_eq!(m.handle(Event::Promoted { ok: true }, Millis(9_002)), vec![], "duplicate Promoted");
}

#[test]
fn already_fenced_view_skips_the_fence_commit() {
    let mut view = async_view();
    view.fenced = true;
    view.epoch = Epoch(8);
    let mut m = machine(view);
    let mut batch = primary_dead_at(1_000);
    batch.extend(rep_all("r1", 1_000));
    assert_eq!(
        m.handle(observed(batch), Millis(TIMEOUT)),
        vec![
            Action::StopWalReceivers { replicas: all_replicas() },
            Action::WaitLease { until: Millis(TIMEOUT + LEASE) }
        ]
    );
    assert_eq!(m.phase(), Phase::Fencing);
    assert_eq!(m.handle(Event::LeaseWaited, Millis(TIMEOUT + LEASE)), vec![Action::Promote(node("r1"))]);
    assert_eq!(
        m.handle(Event::Promoted { ok: true }, Millis(TIMEOUT + LEASE + 1)),
        vec![Action::CommitPrimary { node: node("r1"), epoch: Epoch(8) }]
    );
}

#[test]
fn operator_failover_of_a_healthy_primary() {
    let mut m = machine(async_view());
    let mut batch: Vec<Observation> = members().iter().map(|mm| primary_up(&mm.0, 1_000)).collect();
    batch.extend(rep_all("r1", 1_000));
    batch.extend(rep_all("r2", 1_000));
    m.handle(observed(batch), Millis(0));
    let opts = Options { forced: false, target: Some(node("r2")) };
    assert_eq!(m.handle(Event::Operator(opts), Millis(10)), vec![Action::CommitFence { epoch: Epoch(8) }]);
    assert_eq!(m.timeline().detected_at, Some(Millis(10)));
    m.handle(Event::FenceCommitted, Millis(20));
    assert_eq!(m.handle(Event::LeaseWaited, Millis(20 + LEASE)), vec![Action::Promote(node("r2"))]);
}

// ---------------------------------------------------------------- waiting and operator paths

#[test]
fn wait_then_new_observations_decide() {
    let view = view_with(
        Durability::Sync { k: 1 },
        vec![replica("s1", "eu", 1, true), replica("s2", "us", 1, true), replica("r3", "ap", 1, false)],
    );
    let (mut m, actions) = to_fence(view, 1_000, rep_all("s1", 1_000));
    assert_eq!(actions, vec![]);
    assert_eq!(m.phase(), Phase::Fencing);
    assert_eq!(m.waiting(), Some(&WaitReason::QuorumNotMet { reachable: 1, needed: 2 }));
    // s2 comes back (its WAL receiver stopped): quorum met, s1 has every ack.
    assert_eq!(m.handle(observed(rep_all("s2", 990)), Millis(5_000)), vec![Action::Promote(node("s1"))]);
    assert_eq!(m.waiting(), None);
    m.handle(Event::Promoted { ok: true }, Millis(5_100));
    m.handle(Event::PrimaryCommitted, Millis(5_200));
    let record = record_of(&m.handle(Event::ReplicasRepointed, Millis(5_300))).clone();
    assert!(record.rpo_zero);
    assert_eq!(record.timeline.decided_at, Some(Millis(5_000)));
}

#[test]
fn needs_operator_then_force() {
    let (mut m, actions) = to_fence(async_view(), 1_000 + MAX_LAG + 500, rep_all("r1", 1_000));
    let reason =
        OperatorReason::LossExceedsBound { candidate: node("r1"), loss_bytes: MAX_LAG + 500, max_bytes: MAX_LAG };
    assert_eq!(actions, vec![Action::NotifyOperator(reason.clone())]);
    assert_eq!(m.phase(), Phase::Fencing);
    assert_eq!(m.needs_operator(), Some(&reason));
    // The same reason on the next batch is not re-notified.
    assert_eq!(m.handle(observed(rep_all("r1", 1_000)), Millis(5_000)), vec![]);
    // FAILOVER ... FORCE.
    let forced = Options { forced: true, target: None };
    assert_eq!(m.handle(Event::Operator(forced), Millis(6_000)), vec![Action::Promote(node("r1"))]);
    m.handle(Event::Promoted { ok: true }, Millis(6_100));
    m.handle(Event::PrimaryCommitted, Millis(6_200));
    let record = record_of(&m.handle(Event::ReplicasRepointed, Millis(6_300))).clone();
    assert!(record.forced);
    assert_eq!(record.expected_loss_bytes, Some(MAX_LAG + 500));
    assert!(!record.rpo_zero);
}

// ---------------------------------------------------------------- abort paths

#[test]
fn abort_when_operator_target_does_not_qualify() {
    let (mut m, actions) = to_fence(async_view(), 1_000 + MAX_LAG + 1, rep_all("r1", 1_000));
    assert!(matches!(actions.as_slice(), [Action::NotifyOperator(_)]));
    let opts = Options { forced: true, target: Some(node("nope")) };
    let actions = m.handle(Event::Operator(opts), Millis(7_000));
    assert_eq!(m.phase(), Phase::Aborted);
    let record = record_of(&actions);
    assert_eq!(record.outcome, Outcome::Refused(AbortReason::TargetNotReplica(node("nope"))));
    assert_eq!(record.new_primary, None);
    assert_eq!(record.timeline.finished_at, Some(Millis(7_000)));
    assert!(m.view().fenced, "the shard stays fenced after an abort");
}

#[test]
fn abort_when_promotion_fails() {
    let (mut m, _) = to_fence(async_view(), 1_000, rep_all("r1", 1_000));
    let actions = m.handle(Event::Promoted { ok: false }, Millis(9_000));
    assert_eq!(m.phase(), Phase::Aborted);
    let record = record_of(&actions);
    assert_eq!(record.outcome, Outcome::PromoteFailed(node("r1")));
    assert_eq!(record.timeline.promoted_at, None);
}

#[test]
fn timeout_table() {
    // (case, events after Healthy start, expected phase at timeout, expected outcome)
    let dead = || vec![observed(primary_dead_at(1_000))];
    let fencing = || {
        let mut v = dead();
        v.push(Event::FenceCommitted);
        v
    };
    let waiting = || {
        let mut v = fencing();
        v.push(Event::LeaseWaited); // no replica observed: NoCandidate
        v
    };
    let promoting = || {
        let mut v = fencing();
        v.push(observed(rep_all("r1", 1_000)));
        v.push(Event::LeaseWaited);
        v
    };
    let committing = || {
        let mut v = promoting();
        v.push(Event::Promoted { ok: true });
        v
    };
    let timed_out = |phase, waiting| Outcome::TimedOut { phase, waiting, needs_operator: None };
    let cases: Vec<(&str, Vec<Event>, Phase, Outcome)> = vec![
        ("fence commit", dead(), Phase::Aborted, timed_out(Phase::Dead, None)),
        ("lease wait", fencing(), Phase::Aborted, timed_out(Phase::Fencing, None)),
        (
            "waiting for a candidate",
            waiting(),
            Phase::Aborted,
            timed_out(Phase::Fencing, Some(WaitReason::NoCandidate)),
        ),
        ("pg_promote", promoting(), Phase::Aborted, timed_out(Phase::Promoting, None)),
        ("primary commit", committing(), Phase::Aborted, timed_out(Phase::Promoting, None)),
    ];
    for (name, events, phase, outcome) in cases {
        let mut m = machine(async_view());
        for (i, e) in events.into_iter().enumerate() {
            m.handle(e, Millis(TIMEOUT + i as u64));
        }
        let actions = m.handle(Event::Timeout, Millis(50_000));
        assert_eq!(m.phase(), phase, "{name}");
        assert_eq!(record_of(&actions).outcome, outcome, "{name}");
        assert_eq!(m.handle(Event::Timeout, Millis(50_001)), vec![], "{name}: aborted is terminal");
    }
}

#[test]
fn timeout_while_needing_operator_records_the_reason() {
    let (mut m, _) = to_fence(async_view(), 9_000, rep_all("r1", 1_000));
    let actions = m.handle(Event::Timeout, Millis(60_000));
    let Outcome::TimedOut { phase, needs_operator, .. } = &record_of(&actions).outcome else { panic!("{actions:?}") };
    assert_eq!(*phase, Phase::Fencing);
    assert!(matches!(needs_operator, Some(OperatorReason::LossExceedsBound { loss_bytes: 8_000, .. })));
}

#[test]
fn timeout_while_repointing_still_succeeds() {
    let (mut m, _) = to_fence(async_view(), 1_000, rep_all("r1", 1_000));
    m.handle(Event::Promoted { ok: true }, Millis(9_000));
    m.handle(Event::PrimaryCommitted, Millis(9_100));
    let actions = m.handle(Event::Timeout, Millis(20_000));
    assert_eq!(m.phase(), Phase::Done);
    let record = record_of(&actions);
    assert_eq!(record.outcome, Outcome::Promoted { repointed: false });
    assert_eq!(record.timeline.rerouted_at, Some(Millis(9_100)));
    assert_eq!(record.timeline.repointed_at, None);
}
