//! Busy-polling before the runtime sleeps (`node.busy_poll`).
//!
//! A proxy hands every request and every reply on, so a client's round
//! trip through it holds two more hand-overs than one straight to
//! PostgreSQL. When the proxy's CPU has gone idle in between, each
//! hand-over first waits for that CPU to wake up: on a virtual machine,
//! where an idle vCPU halts, that costs 10–20 µs, more than the proxy's
//! own work (docs/benchmarks.md, "c1 and idle CPUs").
//!
//! With a budget set, a runtime thread that runs out of work does not go
//! to sleep at once. For up to the budget it asks the runtime's own epoll
//! instance whether an event is ready (`poll` on the epoll descriptor,
//! which reports without taking events away), yielding the CPU between
//! asks so that anything else runnable on that core (PostgreSQL, a client)
//! runs first. When an event comes the runtime finds it without sleeping.
//!
//! The budget adapts the way KVM's halt-polling does: a sleep that ended
//! within the maximum means a longer poll would have caught it, so the
//! budget doubles (from 10 µs up to the maximum); a longer sleep means the
//! node is idle, and the budget drops to zero until traffic returns. An
//! idle node therefore does not spin; a busy one spends CPU to cut latency.
//!
//! The runtime does not expose its epoll descriptor. It is found at start
//! as the `anon_inode:[eventpoll]` instance that building the runtime added
//! (`/proc/self/fd`), and duplicated through `pidfd_getfd`. If that fails,
//! the node logs why and runs without busy-polling.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec};
use tokio::runtime::{Builder, Runtime};
use tokio::time::Instant;

/// The budget a spin starts from when it grows from zero.
const GROW_START: Duration = Duration::from_micros(10);

/// The largest `node.busy_poll` the configuration accepts.
pub const MAX_BUDGET: Duration = Duration::from_millis(1);

thread_local! {
    /// When this thread went to sleep after a poll that found nothing.
    static SLEPT_AT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The busy-poller of one runtime; see the module docs.
pub struct BusyPoll {
    /// A duplicate of the runtime's epoll descriptor.
    epoll: OwnedFd,
    max: Duration,
    /// The current budget in nanoseconds, shared by the runtime's threads.
    budget_ns: AtomicU64,
    polls: AtomicU64,
    caught: AtomicU64,
}

impl BusyPoll {
    /// A busy-poller over `epoll` with budget `max`.
    pub fn new(epoll: OwnedFd, max: Duration) -> BusyPoll {
        BusyPoll {
            epoll,
            max,
            budget_ns: AtomicU64::new(nanos(max)),
            polls: AtomicU64::new(0),
            caught: AtomicU64::new(0),
        }
    }

    /// The runtime has no work left: poll for an event for up to the
    /// current budget before it sleeps. Called by the runtime's park hook.
    pub fn before_park(&self) {
        let budget = Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed));
        if !budget.is_zero() {
            self.polls.fetch_add(1, Ordering::Relaxed);
            let start = Instant::now();
            loop {
                if self.ready() {
                    self.caught.fetch_add(1, Ordering::Relaxed);
                    SLEPT_AT.set(None);
                    return;
                }
                if start.elapsed() >= budget {
                    break;
                }
                std::thread::yield_now();
            }
        }
        SLEPT_AT.set(Some(Instant::now()));
    }

    /// The runtime woke up: adapt the budget to how long it slept.
    pub fn after_unpark(&self) {
        let Some(at) = SLEPT_AT.take() else { return };
        let next = next_budget(Duration::from_nanos(self.budget_ns.load(Ordering::Relaxed)), at.elapsed(), self.max);
        self.budget_ns.store(nanos(next), Ordering::Relaxed);
    }

    /// Does the runtime's epoll instance hold a ready event?
    fn ready(&self) -> bool {
        let mut fds = [PollFd::new(&self.epoll, PollFlags::IN)];
        let now = Timespec { tv_sec: 0, tv_nsec: 0 };
        matches!(rustix::event::poll(&mut fds, Some(&now)), Ok(n) if n > 0)
    }

    /// (polls that ran, polls that caught an event) since start.
    pub fn counts(&self) -> (u64, u64) {
        (self.polls.load(Ordering::Relaxed), self.caught.load(Ordering::Relaxed))
    }
}

/// The budget after a sleep of `slept` that followed a poll of `budget`
/// that caught nothing.
fn next_budget(budget: Duration, slept: Duration, max: Duration) -> Duration {
    if slept <= max { (budget * 2).clamp(GROW_START.min(max), max) } else { Duration::ZERO }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The busy-poller of the node's runtime, once [`runtime`] installed one.
static INSTALLED: OnceLock<Arc<BusyPoll>> = OnceLock::new();

/// The node's busy-poller, if `node.busy_poll` is on and it was installed.
pub fn installed() -> Option<&'static BusyPoll> {
    INSTALLED.get().map(|p| &**p)
}

/// The node's runtime: `workers` threads (1: a single-threaded runtime),
/// busy-polling for up to `budget` before they sleep (zero: never).
pub fn runtime(workers: usize, budget: Duration) -> std::io::Result<Runtime> {
    let mut builder = if workers == 1 {
        Builder::new_current_thread()
    } else {
        let mut b = Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    };
    builder.enable_all();
    if budget.is_zero() {
        return builder.build();
    }
    let slot: Arc<OnceLock<Arc<BusyPoll>>> = Arc::default();
    let (park, unpark) = (slot.clone(), slot.clone());
    builder.on_thread_park(move || {
        if let Some(p) = park.get() {
            p.before_park();
        }
    });
    builder.on_thread_unpark(move || {
        if let Some(p) = unpark.get() {
            p.after_unpark();
        }
    });
    let before = epoll_fds();
    let runtime = builder.build()?;
    let found = before.and_then(|b| Ok((b, epoll_fds()?))).map_err(|e| e.to_string());
    match found.and_then(|(before, after)| runtime_epoll(&before, &after)) {
        Ok(epoll) => {
            let poller = Arc::new(BusyPoll::new(epoll, budget));
            let _ = slot.set(poller.clone());
            let _ = INSTALLED.set(poller);
            tracing::info!(budget = ?budget, "busy-polling before the runtime sleeps");
        }
        Err(why) => {
            tracing::warn!(%why, "node.busy_poll is set, but the runtime's epoll instance was not found; running without busy-polling")
        }
    }
    Ok(runtime)
}

/// The process's epoll descriptors (`anon_inode:[eventpoll]` in
/// `/proc/self/fd`).
pub fn epoll_fds() -> std::io::Result<BTreeSet<i32>> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let is_epoll = std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]");
        if let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok())
            && is_epoll
        {
            out.insert(fd);
        }
    }
    Ok(out)
}

/// The epoll instance building a runtime added: the descriptors in `after`
/// and not in `before`, which must all be one instance (mio keeps a
/// duplicate of its descriptor for its registry), duplicated once more
/// for this process's own use.
pub fn runtime_epoll(before: &BTreeSet<i32>, after: &BTreeSet<i32>) -> Result<OwnedFd, String> {
    let added: Vec<i32> = after.difference(before).copied().collect();
    let Some(&fd) = added.first() else {
        return Err("building the runtime added no epoll descriptor".into());
    };
    let registered = registrations(fd);
    if registered.is_empty() || added.iter().any(|&other| registrations(other) != registered) {
        return Err(format!("building the runtime added {} epoll descriptors that are not one instance", added.len()));
    }
    let me = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty())
        .map_err(|e| format!("pidfd_open: {e}"))?;
    rustix::process::pidfd_getfd(&me, fd, rustix::process::PidfdGetfdFlags::empty())
        .map_err(|e| format!("pidfd_getfd({fd}): {e}"))
}

/// What epoll descriptor `fd` watches (its `tfd:` lines in
/// `/proc/self/fdinfo`): equal for two descriptors of one instance.
fn registrations(fd: i32) -> Vec<String> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap_or_default();
    let mut lines: Vec<String> = info.lines().filter(|l| l.starts_with("tfd:")).map(str::to_owned).collect();
    lines.sort();
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::buffer::spare_capacity;
    use rustix::event::epoll;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn the_budget_grows_after_short_sleeps_and_drops_after_long_ones() {
        let max = us(50);
        assert_eq!(next_budget(Duration::ZERO, us(5), max), us(10), "grows from zero");
        assert_eq!(next_budget(us(10), us(30), max), us(20));
        assert_eq!(next_budget(us(40), us(50), max), max, "never above the maximum");
        assert_eq!(next_budget(max, us(51), max), Duration::ZERO, "a long sleep: the node is idle");
        assert_eq!(next_budget(Duration::ZERO, us(1), us(4)), us(4), "a maximum below the start");
    }

    /// An edge-triggered epoll instance with a socket in it, as a runtime
    /// has: the poll sees a ready event without taking it away, and the
    /// budget adapts to the sleeps that follow.
    #[test]
    fn a_poll_sees_a_ready_event_without_taking_it() {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let (a, b) = UnixStream::pair().expect("pair");
        let flags = epoll::EventFlags::IN | epoll::EventFlags::ET;
        epoll::add(&ep, &b, epoll::EventData::new_u64(7), flags).expect("add");
        let mut events: Vec<epoll::Event> = Vec::with_capacity(4);
        let now = Timespec { tv_sec: 0, tv_nsec: 0 };
        epoll::wait(&ep, spare_capacity(&mut events), Some(&now)).expect("wait");
        assert_eq!(events.len(), 0);
        let poller = BusyPoll::new(rustix::io::dup(&ep).expect("dup"), us(200));

        (&a).write_all(b"x").expect("write");
        poller.before_park();
        assert_eq!(poller.counts(), (1, 1), "the poll caught the event");
        assert!(SLEPT_AT.get().is_none(), "no sleep to measure after a catch");
        epoll::wait(&ep, spare_capacity(&mut events), Some(&now)).expect("wait");
        assert_eq!(events.iter().map(|e| e.data.u64()).collect::<Vec<_>>(), [7], "the event is still there");

        // Nothing ready (the edge was taken): the poll runs out its budget,
        // then the sleep is measured; a long one drops the budget to zero.
        poller.before_park();
        assert_eq!(poller.counts(), (2, 1));
        std::thread::sleep(Duration::from_millis(2));
        poller.after_unpark();
        assert_eq!(poller.budget_ns.load(Ordering::Relaxed), 0);
        // With no budget it does not poll at all; a short sleep grows it.
        poller.before_park();
        assert_eq!(poller.counts(), (2, 1));
        poller.after_unpark();
        assert_eq!(poller.budget_ns.load(Ordering::Relaxed), nanos(GROW_START));
    }

    #[test]
    fn the_new_runtime_epoll_is_the_one_added() {
        let none = BTreeSet::new();
        let err = runtime_epoll(&none, &none).expect_err("nothing added");
        assert!(err.contains("no epoll"), "{err}");
        let (a, _b) = UnixStream::pair().expect("pair");
        let watch =
            |ep: &OwnedFd| epoll::add(ep, &a, epoll::EventData::new_u64(1), epoll::EventFlags::IN).expect("add");
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        let raw = |fd: &OwnedFd| std::os::fd::AsRawFd::as_raw_fd(fd);
        assert!(epoll_fds().expect("fds").contains(&raw(&ep)));
        let err = runtime_epoll(&none, &BTreeSet::from([raw(&ep)])).expect_err("watches nothing");
        assert!(err.contains("not one instance"), "{err}");
        watch(&ep);
        // Two descriptors of one instance (as mio keeps): taken.
        let twin = rustix::io::dup(&ep).expect("dup");
        let dup = runtime_epoll(&none, &BTreeSet::from([raw(&ep), raw(&twin)])).expect("one instance");
        assert!(raw(&dup) != raw(&ep) && raw(&dup) != raw(&twin));
        // Two instances: refused.
        let other = epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll");
        epoll::add(&other, &_b, epoll::EventData::new_u64(2), epoll::EventFlags::IN).expect("add");
        let err = runtime_epoll(&none, &BTreeSet::from([raw(&ep), raw(&other)])).expect_err("two instances");
        assert!(err.contains("not one instance"), "{err}");
    }
}
