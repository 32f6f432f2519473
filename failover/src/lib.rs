//! Failover for Meridian: the sans-IO core that turns health observations and
//! time into decisions.
//!
//! What is built here:
//!
//! - [`Observations`]: the latest probe report of every Meridian member about
//!   every PostgreSQL node (reachability and since when, recovery state, LSNs,
//!   RTT), with flapping handled so a failure run restarts after a success.
//! - [`Detector`]: Healthy / Suspect / Dead verdicts. Dead needs a majority of
//!   the Raft membership each failing continuously for `failure_timeout`
//!   (DESIGN §5), so one proxy's own network trouble never causes a failover.
//! - [`plan_failover`]: the candidate choice (LSN, sync standbys, the
//!   primary's region, priority), the `max_lag_on_failover` bound, the
//!   `ANY k (n)` quorum argument for RPO 0 (promote only when n-k+1 standbys
//!   are reachable) and operator targets and FORCE, as a [`Decision`].
//! - [`FailoverMachine`]: the phase machine Healthy → Suspect → Dead →
//!   Fencing → Promoting → Repointing → Done / Aborted, taking [`Event`]s and
//!   returning [`Action`]s, with a phase [`Timeline`] for reports.
//!
//! - [`postgres`]: the PostgreSQL side of each step (probe, stop the WAL
//!   receiver, promote, follow a new primary, synchronous standbys), over
//!   tokio-postgres, tested against real servers.
//! - [`local`]: a PostgreSQL server on this host ([`local::LocalServer`]):
//!   kill it (drills), stop and start it, and bring a former primary back
//!   as a replica with `pg_rewind` (`REJOIN NODE`).
//!
//! The core is pure: no tokio, no I/O, no clock (only [`postgres`] and
//! [`local`] do I/O). Time is a [`Millis`] passed in, so every test is
//! deterministic.
//!
//! What is not built yet (issue 4): the runtime on the Raft leader that runs
//! the probes, feeds the machine and carries out its actions through
//! `consensus` and [`postgres`] (fence and primary commits, then the
//! steps above);
//! admin SQL (`FAILOVER`, `SWITCHOVER`, `REJOIN NODE`, `SHOW FAILOVERS`);
//! drills and their RTO/RPO reports; metrics and a `failover::Config`.

mod health;
pub mod local;
mod machine;
mod observe;
mod plan;
pub mod postgres;
mod types;
mod view;

pub use health::{Detector, Health};
pub use machine::{Action, Config, Event, FailoverMachine, Outcome, Phase, Record, Timeline};
pub use observe::{Observation, Observations};
pub use plan::{AbortReason, Candidate, Decision, OperatorReason, Options, WaitReason, plan_failover, rank_candidates};
pub use types::{Epoch, Lsn, MemberId, Millis, NodeId, RegionId, ShardId};
pub use view::{Durability, Replica, ShardView};
