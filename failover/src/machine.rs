//! The failover phase machine for one shard: events in, actions out.
//!
//! ```text
//!  Healthy ◀──▶ Suspect ──Dead verdict / operator──▶ Dead ──FenceCommitted──▶ Fencing
//!                                          (CommitFence{e+1})      (StopWalReceivers, WaitLease)
//!                                                                        │ LeaseWaited: plan_failover
//!                                       Wait / NeedsOperator: stay ◀─────┤ (re-planned on each batch)
//!                                                                        ▼ Promote(node)
//!  Done ◀──ReplicasRepointed── Repointing ◀──PrimaryCommitted── Promoting ◀┘
//!         (RecordEvent)        (Repoint)      (CommitPrimary after Promoted{ok})
//!
//!  Abort from the plan, Promoted{ok: false}, or Timeout before the primary
//!  is committed ──▶ Aborted (RecordEvent); the shard stays fenced.
//! ```
//!
//! The machine never reads a clock and never performs I/O: the runtime
//! passes `now` with every event and carries out the returned actions, then
//! reports their completion as events.

use crate::health::{Detector, Health};
use crate::observe::{Observation, Observations};
use crate::plan::{AbortReason, Decision, OperatorReason, Options, WaitReason, plan_failover};
use crate::types::{Epoch, MemberId, Millis, NodeId, ShardId};
use crate::view::ShardView;

/// Timings the machine needs that are not part of the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// After the fence commits, wait this long before promoting: no node can
    /// still route writes under the old epoch after its lease runs out.
    pub write_lease_ms: u64,
}

/// Where the failover of a shard stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The primary is reachable by every reporting member.
    Healthy,
    /// Some member cannot reach the primary.
    Suspect,
    /// Majority verdict (or operator request); the fence commit is under way.
    Dead,
    /// Fence committed; stopping WAL receivers, waiting out the lease, deciding.
    Fencing,
    /// `pg_promote()` and then the primary commit are under way.
    Promoting,
    /// New primary committed; other replicas being re-pointed.
    Repointing,
    /// The failover finished.
    Done,
    /// The failover stopped without a committed new primary.
    Aborted,
}

/// Inputs to the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A batch of probe results.
    Observed(Vec<Observation>),
    /// `FAILOVER SHARD s [TO n] [FORCE]`: start now (the operator's word
    /// stands in for the Dead verdict), or, while deciding, replace the options.
    Operator(Options),
    /// The fence (epoch e+1, shard fenced) is committed in consensus.
    FenceCommitted,
    /// The write lease has run out since the fence commit.
    LeaseWaited,
    /// `pg_promote()` finished.
    Promoted {
        /// Whether it succeeded.
        ok: bool,
    },
    /// The new primary is committed in consensus.
    PrimaryCommitted,
    /// The other replicas follow the new primary.
    ReplicasRepointed,
    /// The current phase took too long.
    Timeout,
}

/// Work for the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Commit "shard fenced, epoch" in consensus, then send `FenceCommitted`.
    CommitFence {
        /// The fence epoch.
        epoch: Epoch,
    },
    /// Clear `primary_conninfo` and reload on these replicas.
    StopWalReceivers {
        /// Every replica of the shard (unreachable ones are best effort).
        replicas: Vec<NodeId>,
    },
    /// Send `LeaseWaited` at `until`.
    WaitLease {
        /// When the last lease under the old epoch has run out.
        until: Millis,
    },
    /// Run `pg_promote()` on the node, then send `Promoted`.
    Promote(NodeId),
    /// Commit "primary = node, epoch" in consensus, then send `PrimaryCommitted`.
    CommitPrimary {
        /// The new primary.
        node: NodeId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// Point these replicas at `primary`, then send `ReplicasRepointed`.
    Repoint {
        /// The new primary.
        primary: NodeId,
        /// The replicas to re-point (not the old primary, which stays fenced).
        replicas: Vec<NodeId>,
    },
    /// A human must decide; tell them why.
    NotifyOperator(OperatorReason),
    /// Store the failover record (SHOW FAILOVERS, drill reports).
    RecordEvent(Box<Record>),
}

/// When each phase happened, as the machine learned of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Timeline {
    /// First member failed to reach the primary (current run).
    pub suspected_at: Option<Millis>,
    /// Dead verdict or operator request: detect.
    pub detected_at: Option<Millis>,
    /// Fence committed.
    pub fenced_at: Option<Millis>,
    /// Write lease waited out.
    pub lease_waited_at: Option<Millis>,
    /// Candidate chosen: decide.
    pub decided_at: Option<Millis>,
    /// `pg_promote()` succeeded.
    pub promoted_at: Option<Millis>,
    /// New primary committed: re-route (proxies follow the next snapshot).
    pub rerouted_at: Option<Millis>,
    /// Other replicas re-pointed.
    pub repointed_at: Option<Millis>,
    /// Done or aborted.
    pub finished_at: Option<Millis>,
}

/// How a failover ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new primary is committed.
    Promoted {
        /// False when re-pointing timed out (the replicas must be re-pointed later).
        repointed: bool,
    },
    /// The plan refused the request.
    Refused(AbortReason),
    /// `pg_promote()` failed on the candidate.
    PromoteFailed(NodeId),
    /// A phase timed out.
    TimedOut {
        /// The phase that timed out.
        phase: Phase,
        /// The last wait reason, when the plan was waiting.
        waiting: Option<WaitReason>,
        /// The last operator reason, when the plan needed one.
        needs_operator: Option<OperatorReason>,
    },
}

/// The record of one failover, for `SHOW FAILOVERS` and drill reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The shard.
    pub shard: ShardId,
    /// The primary that was failed over from.
    pub old_primary: NodeId,
    /// The promoted replica, if one was chosen.
    pub new_primary: Option<NodeId>,
    /// The fence epoch.
    pub epoch: Epoch,
    /// How it ended.
    pub outcome: Outcome,
    /// Expected loss in bytes, from the decision.
    pub expected_loss_bytes: Option<u64>,
    /// Whether the sync quorum argument proved RPO 0.
    pub rpo_zero: bool,
    /// Whether FORCE was given.
    pub forced: bool,
    /// Phase timestamps.
    pub timeline: Timeline,
}

#[derive(Debug, Clone)]
struct Chosen {
    node: NodeId,
    expected_loss_bytes: Option<u64>,
    rpo_zero: bool,
    promoted: bool,
}

/// One shard's failover, from the first suspicion to the record.
#[derive(Debug, Clone)]
pub struct FailoverMachine {
    config: Config,
    view: ShardView,
    detector: Detector,
    observations: Observations,
    options: Options,
    phase: Phase,
    lease_waited: bool,
    chosen: Option<Chosen>,
    waiting: Option<WaitReason>,
    needs_operator: Option<OperatorReason>,
    timeline: Timeline,
    record: Option<Record>,
}

impl FailoverMachine {
    /// A machine for `view`, judged by the given Raft membership.
    pub fn new(view: ShardView, members: impl IntoIterator<Item = MemberId>, config: Config) -> Self {
        FailoverMachine {
            config,
            view,
            detector: Detector::new(members),
            observations: Observations::new(),
            options: Options::default(),
            phase: Phase::Healthy,
            lease_waited: false,
            chosen: None,
            waiting: None,
            needs_operator: None,
            timeline: Timeline::default(),
            record: None,
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The phase timestamps so far.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The observations seen so far.
    pub fn observations(&self) -> &Observations {
        &self.observations
    }

    /// The shard as the machine now sees it (fenced after `FenceCommitted`).
    pub fn view(&self) -> &ShardView {
        &self.view
    }

    /// Why the plan is waiting, while it is.
    pub fn waiting(&self) -> Option<&WaitReason> {
        self.waiting.as_ref()
    }

    /// Why the plan needs an operator, while it does.
    pub fn needs_operator(&self) -> Option<&OperatorReason> {
        self.needs_operator.as_ref()
    }

    /// The final record, once Done or Aborted.
    pub fn record(&self) -> Option<&Record> {
        self.record.as_ref()
    }

    /// Applies one event at `now` and returns what the runtime must do.
    /// Events that do not fit the phase (late or duplicate completions) are
    /// ignored and return no actions.
    pub fn handle(&mut self, event: Event, now: Millis) -> Vec<Action> {
        match event {
            Event::Observed(batch) => {
                self.observations.record_all(batch);
                match self.phase {
                    Phase::Healthy | Phase::Suspect => self.detect(now),
                    Phase::Fencing if self.lease_waited => self.decide(now),
                    _ => Vec::new(),
                }
            }
            Event::Operator(options) => match self.phase {
                Phase::Healthy | Phase::Suspect => {
                    self.options = options;
                    self.begin(now)
                }
                Phase::Dead => {
                    self.options = options;
                    Vec::new()
                }
                Phase::Fencing => {
                    self.options = options;
                    if self.lease_waited { self.decide(now) } else { Vec::new() }
                }
                _ => Vec::new(),
            },
            Event::FenceCommitted if self.phase == Phase::Dead => self.fenced(now),
            Event::LeaseWaited if self.phase == Phase::Fencing && !self.lease_waited => {
                self.lease_waited = true;
                self.timeline.lease_waited_at = Some(now);
                self.decide(now)
            }
            Event::Promoted { ok } if self.phase == Phase::Promoting => {
                let Some(chosen) = self.chosen.as_mut().filter(|c| !c.promoted) else { return Vec::new() };
                let node = chosen.node.clone();
                if ok {
                    chosen.promoted = true;
                    self.timeline.promoted_at = Some(now);
                    vec![Action::CommitPrimary { node, epoch: self.view.fence_epoch() }]
                } else {
                    self.finish(Outcome::PromoteFailed(node), Phase::Aborted, now)
                }
            }
            Event::PrimaryCommitted if self.phase == Phase::Promoting => {
                let Some(chosen) = self.chosen.as_ref().filter(|c| c.promoted) else { return Vec::new() };
                let primary = chosen.node.clone();
                self.timeline.rerouted_at = Some(now);
                self.phase = Phase::Repointing;
                let replicas = self
                    .view
                    .replicas
                    .iter()
                    .map(|r| r.node.clone())
                    .filter(|n| n != &primary && n != &self.view.primary);
                vec![Action::Repoint { primary: primary.clone(), replicas: replicas.collect() }]
            }
            Event::ReplicasRepointed if self.phase == Phase::Repointing => {
                self.timeline.repointed_at = Some(now);
                self.finish(Outcome::Promoted { repointed: true }, Phase::Done, now)
            }
            Event::Timeout => match self.phase {
                Phase::Dead | Phase::Fencing | Phase::Promoting => {
                    let outcome = Outcome::TimedOut {
                        phase: self.phase,
                        waiting: self.waiting.clone(),
                        needs_operator: self.needs_operator.clone(),
                    };
                    self.finish(outcome, Phase::Aborted, now)
                }
                Phase::Repointing => self.finish(Outcome::Promoted { repointed: false }, Phase::Done, now),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    fn detect(&mut self, now: Millis) -> Vec<Action> {
        match self.detector.assess(&self.observations, &self.view.primary, self.view.failure_timeout_ms, now) {
            Health::Healthy => {
                self.phase = Phase::Healthy;
                self.timeline.suspected_at = None;
                Vec::new()
            }
            Health::Suspect { .. } => {
                self.phase = Phase::Suspect;
                self.timeline.suspected_at.get_or_insert(now);
                Vec::new()
            }
            Health::Dead { .. } => {
                self.timeline.suspected_at.get_or_insert(now);
                self.begin(now)
            }
        }
    }

    fn begin(&mut self, now: Millis) -> Vec<Action> {
        self.timeline.detected_at = Some(now);
        self.phase = Phase::Dead;
        if self.view.fenced {
            // A fence for this epoch is already committed (an earlier,
            // aborted failover): go straight on.
            return self.fenced(now);
        }
        vec![Action::CommitFence { epoch: self.view.fence_epoch() }]
    }

    fn fenced(&mut self, now: Millis) -> Vec<Action> {
        self.view.epoch = self.view.fence_epoch();
        self.view.fenced = true;
        self.timeline.fenced_at = Some(now);
        self.phase = Phase::Fencing;
        vec![
            Action::StopWalReceivers { replicas: self.view.replicas.iter().map(|r| r.node.clone()).collect() },
            Action::WaitLease { until: now.plus(self.config.write_lease_ms) },
        ]
    }

    fn decide(&mut self, now: Millis) -> Vec<Action> {
        match plan_failover(&self.view, &self.detector, &self.observations, now, &self.options) {
            Decision::Wait(reason) => {
                self.waiting = Some(reason);
                self.needs_operator = None;
                Vec::new()
            }
            Decision::NeedsOperator(reason) => {
                self.waiting = None;
                let fresh = self.needs_operator.as_ref() != Some(&reason);
                self.needs_operator = Some(reason.clone());
                if fresh { vec![Action::NotifyOperator(reason)] } else { Vec::new() }
            }
            Decision::Abort(reason) => self.finish(Outcome::Refused(reason), Phase::Aborted, now),
            Decision::Promote { candidate, expected_loss_bytes, rpo_zero, fence_epoch: _ } => {
                self.waiting = None;
                self.needs_operator = None;
                self.timeline.decided_at = Some(now);
                self.phase = Phase::Promoting;
                self.chosen = Some(Chosen { node: candidate.clone(), expected_loss_bytes, rpo_zero, promoted: false });
                vec![Action::Promote(candidate)]
            }
        }
    }

    fn finish(&mut self, outcome: Outcome, phase: Phase, now: Millis) -> Vec<Action> {
        self.phase = phase;
        self.timeline.finished_at = Some(now);
        let record = Record {
            shard: self.view.shard.clone(),
            old_primary: self.view.primary.clone(),
            new_primary: self.chosen.as_ref().map(|c| c.node.clone()),
            epoch: self.view.fence_epoch(),
            outcome,
            expected_loss_bytes: self.chosen.as_ref().and_then(|c| c.expected_loss_bytes),
            rpo_zero: self.chosen.as_ref().is_some_and(|c| c.rpo_zero),
            forced: self.options.forced,
            timeline: self.timeline.clone(),
        };
        self.record = Some(record.clone());
        vec![Action::RecordEvent(Box::new(record))]
    }
}
