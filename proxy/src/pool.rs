//! Server connection pools, one per (server, database, user).
//!
//! A pool hands out whole [`ServerConn`]s: the session that checks one out
//! owns it until it gives it back clean ([`Pool::checkin`], at
//! ReadyForQuery 'I') or throws it away ([`Pool::discard`]). Waiting clients
//! queue in FIFO order, bounded by `queue_limit` and `checkout_timeout`; a
//! returned connection goes straight to the first waiter. Checkout prefers
//! the idle connection the same client used last (affinity: its settings
//! and prepared statements are already there), else the most recently used.
//!
//! ```text
//!   checkout ──▶ idle? ──yes──▶ take it (expired ones are closed on the way)
//!                 │no
//!                 ▼
//!           total < size? ──yes──▶ reserve a slot, connect outside the lock
//!                 │no
//!                 ▼
//!           queue (oneshot) ◀── checkin hands over a connection,
//!                               discard hands over a free slot
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, ArcSwapOption};
use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::backend::{BackendError, LoginParams, ServerConn};
use crate::config::PoolConfig;
use crate::error::ClientError;

/// Why no server connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no server connection available within {0:?}")]
    Timeout(std::time::Duration),
    #[error("too many clients waiting for a server connection")]
    QueueFull,
    #[error("pool is closed")]
    Closed,
    #[error(transparent)]
    Connect(#[from] BackendError),
}

impl ClientError for PoolError {
    fn sqlstate(&self) -> SqlState {
        match self {
            PoolError::Timeout(_) | PoolError::QueueFull => SqlState::TOO_MANY_CONNECTIONS,
            PoolError::Closed => SqlState::ADMIN_SHUTDOWN,
            PoolError::Connect(e) => e.sqlstate(),
        }
    }

    fn client_message(&self) -> String {
        match self {
            PoolError::Timeout(d) => format!("no server connection available within {} ms", d.as_millis()),
            PoolError::QueueFull => "too many clients waiting for a server connection".into(),
            PoolError::Closed => "the connection pool is shutting down".into(),
            PoolError::Connect(e) => e.client_message(),
        }
    }
}

/// What identifies a pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: String,
    pub database: String,
    pub user: String,
}

/// Idle connections older than this are checked for a close by the server
/// before they are handed out; younger ones are handed out unchecked, so a
/// busy pool pays no system call for it.
const STALE_CHECK_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

enum Handoff {
    Conn(Box<ServerConn>),
    /// A slot was freed: the waiter may open a new connection.
    Slot,
}

#[derive(Default)]
struct State {
    /// Idle connections, in the order they came back (most recent last).
    /// Boxed on purpose: they are handed out and back whole at every
    /// transaction, and a box moves as one pointer.
    #[allow(clippy::vec_box)]
    idle: Vec<Box<ServerConn>>,
    /// Connections that exist or are being opened (idle + checked out + connecting).
    total: usize,
    waiters: VecDeque<oneshot::Sender<Handoff>>,
    closed: bool,
}

/// Counters for admin views and metrics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub checkouts: AtomicU64,
    pub waits: AtomicU64,
    pub wait_micros: AtomicU64,
    pub timeouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_errors: AtomicU64,
    pub discards: AtomicU64,
}

pub struct Pool {
    pub key: PoolKey,
    password: ArcSwap<Option<String>>,
    config: ArcSwap<PoolConfig>,
    /// ParameterStatus of a fresh connection: what a client logging in while
    /// every connection is busy is told, before its settings are applied.
    welcome: ArcSwapOption<BTreeMap<String, String>>,
    state: Mutex<State>,
    pub stats: PoolStats,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("key", &self.key).finish_non_exhaustive()
    }
}

/// A snapshot of a pool's occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Occupancy {
    pub total: usize,
    pub idle: usize,
    pub waiting: usize,
}

impl Pool {
    pub fn new(key: PoolKey, password: Option<String>, config: Arc<PoolConfig>) -> Pool {
        Pool {
            key,
            password: ArcSwap::from_pointee(password),
            config: ArcSwap::new(config),
            welcome: ArcSwapOption::empty(),
            state: Mutex::new(State::default()),
            stats: PoolStats::default(),
        }
    }

    pub fn occupancy(&self) -> Occupancy {
        let st = self.state.lock();
        Occupancy { total: st.total, idle: st.idle.len(), waiting: st.waiters.len() }
    }

    /// Take a server connection for `client_id`, waiting for one if needed.
    pub async fn checkout(&self, client_id: u64) -> Result<Box<ServerConn>, PoolError> {
        self.checkout_inner(client_id, true).await.expect("a waiting checkout always answers")
    }

    /// Take a server connection for `client_id` if one is idle or may be
    /// opened; `None` if it would have to wait for another client.
    pub async fn checkout_now(&self, client_id: u64) -> Option<Result<Box<ServerConn>, PoolError>> {
        self.checkout_inner(client_id, false).await
    }

    /// What a new server connection of this pool reported at login
    /// (ParameterStatus), once one has been opened.
    pub fn welcome(&self) -> Option<Arc<BTreeMap<String, String>>> {
        self.welcome.load_full()
    }

    async fn checkout_inner(&self, client_id: u64, wait: bool) -> Option<Result<Box<ServerConn>, PoolError>> {
        let cfg = self.config.load_full();
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut st = self.state.lock();
            if st.closed {
                return Some(Err(PoolError::Closed));
            }
            if let Some(conn) = take_idle(&mut st, client_id, &cfg) {
                return Some(Ok(conn));
            }
            if st.total < cfg.size {
                st.total += 1;
                None
            } else if !wait {
                return None;
            } else if st.waiters.len() >= cfg.queue_limit {
                return Some(Err(PoolError::QueueFull));
            } else {
                let (tx, rx) = oneshot::channel();
                st.waiters.push_back(tx);
                Some(rx)
            }
        };
        let Some(rx) = rx else { return Some(self.open(&cfg).await) };
        self.stats.waits.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let got = tokio::time::timeout_at(started + cfg.checkout_timeout, rx).await;
        self.stats.wait_micros.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        Some(match got {
            Ok(Ok(Handoff::Conn(conn))) => Ok(conn),
            Ok(Ok(Handoff::Slot)) => self.open(&cfg).await,
            Ok(Err(_)) => Err(PoolError::Closed),
            Err(_) => {
                // Our sender stays queued; a later handoff finds the receiver
                // gone and moves on to the next waiter.
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(PoolError::Timeout(cfg.checkout_timeout))
            }
        })
    }

    /// Open a new connection into a slot already counted in `total`.
    async fn open(&self, cfg: &PoolConfig) -> Result<Box<ServerConn>, PoolError> {
        let password = self.password.load_full();
        let params = LoginParams {
            addr: &self.key.addr,
            user: &self.key.user,
            database: &self.key.database,
            password: password.as_deref(),
            timeout: cfg.connect_timeout,
        };
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        match ServerConn::connect(params).await {
            Ok(conn) => {
                if self.welcome.load().is_none() {
                    self.welcome.store(Some(Arc::new(conn.state.reported.clone())));
                }
                Ok(conn)
            }
            Err(e) => {
                self.stats.connect_errors.fetch_add(1, Ordering::Relaxed);
                self.release_slot();
                Err(e.into())
            }
        }
    }

    /// Give back a clean, idle connection.
    pub fn checkin(&self, mut conn: Box<ServerConn>) {
        let cfg = self.config.load();
        let now = Instant::now();
        conn.last_used = now;
        if now.duration_since(conn.created) >= cfg.max_lifetime {
            return self.discard(conn);
        }
        let mut st = self.state.lock();
        if st.closed {
            drop(st);
            return self.discard(conn);
        }
        let mut handoff = Handoff::Conn(conn);
        while let Some(tx) = st.waiters.pop_front() {
            match tx.send(handoff) {
                Ok(()) => return,
                Err(back) => handoff = back,
            }
        }
        if let Handoff::Conn(conn) = handoff {
            st.idle.push(conn);
        }
    }

    /// Throw away a connection that is broken or not clean.
    pub fn discard(&self, conn: Box<ServerConn>) {
        self.stats.discards.fetch_add(1, Ordering::Relaxed);
        terminate(conn);
        self.release_slot();
    }

    /// A slot is free: give it to a waiter or forget it.
    fn release_slot(&self) {
        let mut st = self.state.lock();
        while let Some(tx) = st.waiters.pop_front() {
            if tx.send(Handoff::Slot).is_ok() {
                return;
            }
        }
        st.total -= 1;
    }

    /// Close idle connections past `idle_timeout` (above `min_idle`) or past
    /// `max_lifetime`; returns how many connections to open to reach `min_idle`.
    pub fn reap(&self) -> usize {
        let cfg = self.config.load();
        let mut closed = Vec::new();
        let mut st = self.state.lock();
        let now = Instant::now();
        let mut keep = Vec::with_capacity(st.idle.len());
        let idle = std::mem::take(&mut st.idle);
        let mut idle_count = idle.len();
        // Oldest-used first, so the least useful go first.
        for conn in idle {
            let expired = now.duration_since(conn.created) >= cfg.max_lifetime;
            let stale = now.duration_since(conn.last_used) >= cfg.idle_timeout && idle_count > cfg.min_idle;
            if expired || stale {
                idle_count -= 1;
                closed.push(conn);
            } else {
                keep.push(conn);
            }
        }
        st.idle = keep;
        st.total -= closed.len();
        let missing = if st.closed { 0 } else { cfg.min_idle.saturating_sub(st.idle.len()).min(cfg.size - st.total) };
        st.total += missing;
        drop(st);
        closed.into_iter().for_each(terminate);
        missing
    }

    /// Open `n` connections reserved by [`Pool::reap`] and park them idle.
    pub async fn fill(&self, n: usize) {
        let cfg = self.config.load_full();
        for _ in 0..n {
            match self.open(&cfg).await {
                Ok(conn) => self.checkin(conn),
                Err(e) => {
                    tracing::warn!(pool = ?self.key, error = %e, "cannot open min_idle connection");
                    break;
                }
            }
        }
    }

    /// Close every idle connection and refuse new checkouts.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        let idle = std::mem::take(&mut st.idle);
        st.total -= idle.len();
        st.waiters.clear();
        drop(st);
        idle.into_iter().for_each(terminate);
    }

    /// Close every idle connection; the pool stays open.
    pub fn close_idle(&self) {
        let mut st = self.state.lock();
        let idle = std::mem::take(&mut st.idle);
        st.total -= idle.len();
        drop(st);
        idle.into_iter().for_each(terminate);
    }

    /// Apply new settings (reload).
    pub fn reconfigure(&self, config: Arc<PoolConfig>, password: Option<String>) {
        self.config.store(config);
        self.password.store(Arc::new(password));
    }
}

fn take_idle(st: &mut State, client_id: u64, cfg: &PoolConfig) -> Option<Box<ServerConn>> {
    if st.idle.is_empty() {
        return None;
    }
    let now = Instant::now();
    loop {
        // The client's own last connection if it is idle (its settings,
        // statements and sequence state are there); else the one idle the
        // longest, whose last client is the least likely to want it back.
        let pos = st.idle.iter().rposition(|c| c.last_client == client_id).unwrap_or(0);
        if st.idle.is_empty() {
            return None;
        }
        let conn = st.idle.remove(pos);
        if now.duration_since(conn.created) < cfg.max_lifetime && still_open(&conn, now) {
            return Some(conn);
        }
        st.total -= 1;
        terminate(conn);
    }
}

/// Idle for a while? Then make sure the server has not closed it meanwhile.
fn still_open(conn: &ServerConn, now: Instant) -> bool {
    now.duration_since(conn.last_used) < STALE_CHECK_AFTER || conn.idle_and_open()
}

/// Send Terminate without waiting and drop the connection.
fn terminate(conn: Box<ServerConn>) {
    let _ = conn.stream.try_write(&[b'X', 0, 0, 0, 4]);
}

/// Every pool of the node.
#[derive(Default)]
pub struct Pools {
    map: RwLock<HashMap<PoolKey, Arc<Pool>>>,
}

impl Pools {
    /// The pool for `key`, created with `config` and `password` if new.
    pub fn get(&self, key: &PoolKey, password: Option<&str>, config: &Arc<PoolConfig>) -> Arc<Pool> {
        if let Some(p) = self.map.read().get(key) {
            return p.clone();
        }
        self.map
            .write()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Pool::new(key.clone(), password.map(str::to_owned), config.clone())))
            .clone()
    }

    pub fn all(&self) -> Vec<Arc<Pool>> {
        self.map.read().values().cloned().collect()
    }

    /// Close the idle connections to `database` (on every server), so that a
    /// client's `DROP DATABASE` is not refused because of our own pools.
    pub fn close_idle_to(&self, database: &str) {
        for p in self.all().iter().filter(|p| p.key.database == database) {
            p.close_idle();
        }
    }

    pub fn close_all(&self) {
        for p in self.all() {
            p.close();
        }
    }
}
