//! The write lease: whether this member has confirmed the committed
//! topology with the Raft quorum recently enough to go on routing writes.
//!
//! A background task owned by the [`ConsensusNode`](crate::ConsensusNode)
//! renews it every third of [`Timings::write_lease`](crate::Timings): on the
//! leader by confirming its leadership with a quorum
//! (`ensure_linearizable`), on a follower or learner by a read-index round
//! trip to the leader and applying the log up to that index. Both are what
//! [`ConsensusNode::read_linearizable`](crate::ConsensusNode::read_linearizable)
//! does. A confirmation that *started* at `t` makes the lease valid until
//! `t + write_lease`, on the monotonic clock ([`tokio::time::Instant`]).
//!
//! Why this fences: say the leader commits "shard S fenced, epoch e+1" at
//! time `f`. A member whose last confirmation started after `f` has
//! applied the fence (a read index covers everything committed before the
//! request). One whose last confirmation started before `f` holds a lease
//! that ends before `f + write_lease`. So once `write_lease` (plus a margin
//! for clock-rate drift between machines) has passed since the fence was
//! committed, no member routes writes under epoch `e`. Only durations are
//! compared, never wall clocks of different machines.
//!
//! The data path reads the lease through a [`LeaseHandle`]: a clone of an
//! `Arc` of two atomics, checked without locks and without awaiting
//! anything.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::node::Core;

/// A snapshot of this member's write lease, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LeaseState {
    /// The lease has not run out: this member may route writes.
    pub valid: bool,
    /// How long it stays valid without another confirmation (`None` when
    /// it is not valid).
    pub expires_in: Option<Duration>,
    /// The topology version this member had applied when it last
    /// confirmed it with the quorum (0: never confirmed).
    pub epoch_view: u64,
}

/// A cheap, lock-free view of one member's write lease, for the data path:
/// clone it freely, check [`LeaseHandle::is_valid`] per statement. It stays
/// readable after the node is shut down, and then reads as not valid.
#[derive(Debug, Clone)]
pub struct LeaseHandle {
    cell: Arc<LeaseCell>,
}

#[derive(Debug)]
struct LeaseCell {
    /// Node-local origin of the microsecond counts below.
    origin: Instant,
    /// End of the lease, in microseconds since `origin`; 0: no lease.
    expiry_us: AtomicU64,
    epoch_view: AtomicU64,
}

impl LeaseHandle {
    pub(crate) fn new() -> LeaseHandle {
        LeaseHandle {
            cell: Arc::new(LeaseCell {
                origin: Instant::now(),
                expiry_us: AtomicU64::new(0),
                epoch_view: AtomicU64::new(0),
            }),
        }
    }

    /// Whether the lease is valid at `now` (normally `Instant::now()`).
    pub fn is_valid(&self, now: Instant) -> bool {
        self.micros(now) < self.cell.expiry_us.load(Ordering::Acquire)
    }

    /// How long the lease stays valid after `now`, if it is valid.
    pub fn expires_in(&self, now: Instant) -> Option<Duration> {
        let expiry = self.cell.expiry_us.load(Ordering::Acquire);
        let now = self.micros(now);
        (now < expiry).then(|| Duration::from_micros(expiry - now))
    }

    /// The topology version confirmed by the last successful renewal.
    pub fn epoch_view(&self) -> u64 {
        self.cell.epoch_view.load(Ordering::Acquire)
    }

    /// The lease at `now`.
    pub fn state(&self, now: Instant) -> LeaseState {
        let expires_in = self.expires_in(now);
        LeaseState { valid: expires_in.is_some(), expires_in, epoch_view: self.epoch_view() }
    }

    /// A confirmation that started at `started` succeeded with topology
    /// `version` applied: the lease runs until `started + write_lease`
    /// (never shortened by an older confirmation finishing late).
    pub(crate) fn extend(&self, started: Instant, write_lease: Duration, version: u64) {
        let lease = u64::try_from(write_lease.as_micros()).unwrap_or(u64::MAX);
        let expiry = self.micros(started).saturating_add(lease).max(1);
        self.cell.epoch_view.fetch_max(version, Ordering::AcqRel);
        self.cell.expiry_us.fetch_max(expiry, Ordering::AcqRel);
    }

    /// End the lease now (the node is shutting down).
    pub(crate) fn revoke(&self) {
        self.cell.expiry_us.store(0, Ordering::Release);
    }

    /// Microseconds from the origin to `t`, rounded down (an instant
    /// before the origin counts as the origin).
    fn micros(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.cell.origin).as_micros()).unwrap_or(u64::MAX)
    }
}

/// Renew `lease` every third of the write lease until `core.shutdown` is
/// cancelled, then revoke it.
pub(crate) async fn renew(core: Core, lease: LeaseHandle) {
    let write_lease = core.timings.write_lease;
    let every = write_lease / 3;
    let mut valid = false;
    loop {
        let started = Instant::now();
        let confirmed = tokio::select! {
            () = core.shutdown.cancelled() => break,
            confirmed = tokio::time::timeout(write_lease, core.read_linearizable()) => confirmed,
        };
        match confirmed {
            Ok(Ok(topology)) => lease.extend(started, write_lease, topology.version),
            Ok(Err(e)) => tracing::debug!(member = core.id, error = %e, "write lease not renewed"),
            Err(_) => tracing::debug!(member = core.id, "write lease not renewed: no quorum answer in time"),
        }
        let now_valid = lease.is_valid(Instant::now());
        if now_valid != valid {
            valid = now_valid;
            if valid {
                tracing::info!(member = core.id, epoch_view = lease.epoch_view(), "write lease valid");
            } else {
                tracing::warn!(member = core.id, "write lease expired: this member must not route writes");
            }
        }
        tokio::select! {
            () = core.shutdown.cancelled() => break,
            () = tokio::time::sleep_until(started + every) => {}
        }
    }
    lease.revoke();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lease_runs_from_the_start_of_its_confirmation() {
        let lease = LeaseHandle::new();
        let t0 = Instant::now();
        assert!(!lease.is_valid(t0));
        assert_eq!(lease.state(t0), LeaseState { valid: false, expires_in: None, epoch_view: 0 });

        let started = t0 + Duration::from_millis(10);
        lease.extend(started, Duration::from_secs(1), 7);
        let now = t0 + Duration::from_millis(500);
        assert!(lease.is_valid(now));
        assert_eq!(lease.expires_in(now), Some(Duration::from_millis(510)));
        assert_eq!(lease.epoch_view(), 7);
        assert!(!lease.is_valid(started + Duration::from_secs(1)));

        // An older confirmation finishing late does not shorten it.
        lease.extend(t0, Duration::from_secs(1), 6);
        assert!(lease.is_valid(t0 + Duration::from_millis(1005)));
        assert_eq!(lease.epoch_view(), 7);

        let reader = lease.clone();
        lease.revoke();
        assert!(!reader.is_valid(now));
    }
}
