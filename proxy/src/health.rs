//! Health of every PostgreSQL server, as this node sees it: a probe task
//! per server (every `health.probe_interval`) measures reachability, role,
//! WAL positions and round-trip time. The data path reads the latest
//! results without waiting: each server's [`NodeStatus`] is a lock-free
//! snapshot plus counters.
//!
//! Probes are control-plane traffic: they use tokio-postgres, never the
//! client pools.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use router::lsn::Lsn;
use router::replica::Candidate;
use router::topology::{NodeId, Role, Topology};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HealthConfig;

/// One probe's result.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// When the probe finished; `None` before the first.
    pub at: Option<Instant>,
    pub reachable: bool,
    pub in_recovery: bool,
    /// The primary's current WAL position, or the replica's replay position.
    pub lsn: Option<Lsn>,
    /// A replica's received WAL position.
    pub receive_lsn: Option<Lsn>,
    /// A replica: time since the last replayed transaction's commit.
    pub replay_age: Option<Duration>,
    pub replay_paused: bool,
    pub error: Option<String>,
}

/// What this node knows about one PostgreSQL server.
#[derive(Debug, Default)]
pub struct NodeStatus {
    pub probe: ArcSwap<Probe>,
    /// EWMA of probe round trips, in µs; 0 until measured.
    rtt_micros: AtomicU64,
    /// Client requests in flight on this server through this node.
    pub outstanding: AtomicUsize,
    pub probes: AtomicU64,
    pub probe_failures: AtomicU64,
}

impl NodeStatus {
    pub fn rtt(&self) -> Option<Duration> {
        match self.rtt_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Fold a query's round trip (request sent → first answer) into the
    /// EWMA. It includes the query's own time, so one sample may move the
    /// average at most to 4x its value: a long report does not make a
    /// replica look far away, a server that stays slow does.
    pub fn record_query_rtt(&self, sample: Duration) {
        let cap = match self.rtt_micros.load(Ordering::Relaxed) {
            0 => sample,
            us => Duration::from_micros(us.saturating_mul(4)),
        };
        self.record_rtt(sample.min(cap));
    }

    /// Fold one round trip into the EWMA (weight 1/5 for the new sample).
    pub fn record_rtt(&self, sample: Duration) {
        let us = (sample.as_micros() as u64).max(1);
        let old = self.rtt_micros.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { (old * 4 + us) / 5 };
        self.rtt_micros.store(new.max(1), Ordering::Relaxed);
    }
}

/// Every server's status, keyed by server name and address.
#[derive(Default)]
pub struct Health {
    nodes: Mutex<HashMap<(String, String), Arc<NodeStatus>>>,
}

impl Health {
    /// The status of `name` at `address`, created on first use.
    pub fn status(&self, name: &str, address: &str) -> Arc<NodeStatus> {
        self.nodes.lock().entry((name.to_owned(), address.to_owned())).or_default().clone()
    }

    /// Replica candidates of `shard` for [`router::replica::choose`].
    pub fn candidates(&self, topology: &Topology, shard: usize) -> Vec<Candidate> {
        let s = &topology.shards[shard];
        let primary =
            s.primary.map(|p| self.status(&topology.nodes[p].name, &topology.nodes[p].address).probe.load_full());
        let primary_lsn = primary.as_ref().filter(|p| p.reachable && !p.in_recovery).and_then(|p| p.lsn);
        s.replicas
            .iter()
            .map(|&id| {
                let n = &topology.nodes[id];
                let st = self.status(&n.name, &n.address);
                let p = st.probe.load();
                candidate(id, &st, &p, primary_lsn)
            })
            .collect()
    }
}

fn candidate(node: NodeId, st: &NodeStatus, p: &Probe, primary_lsn: Option<Lsn>) -> Candidate {
    let healthy = p.reachable && p.in_recovery;
    // Behind the primary's last known position; with the primary out of
    // reach, behind what the replica itself has received.
    let ahead = primary_lsn.or(p.receive_lsn);
    let lag_bytes = match (ahead, p.lsn) {
        (Some(a), Some(r)) => Some(a.0.saturating_sub(r.0)),
        _ => None,
    };
    let caught_up = lag_bytes == Some(0);
    let lag_time = if caught_up { Some(Duration::ZERO) } else { p.replay_age.or(Some(Duration::ZERO)) };
    Candidate {
        node,
        healthy,
        lag_bytes,
        lag_time,
        replay_lsn: p.lsn,
        rtt: st.rtt(),
        outstanding: st.outstanding.load(Ordering::Relaxed),
    }
}

/// Login for probes.
#[derive(Clone)]
pub struct ProbeLogin {
    pub user: String,
    pub password: Option<String>,
    pub database: String,
}

/// Keeps one probe task per server of the latest topology.
pub struct Monitor {
    health: Arc<Health>,
    tracker: TaskTracker,
    stop: CancellationToken,
    running: Mutex<HashMap<(String, String), CancellationToken>>,
}

impl Monitor {
    pub fn new(health: Arc<Health>, tracker: TaskTracker, stop: CancellationToken) -> Monitor {
        Monitor { health, tracker, stop, running: Mutex::new(HashMap::new()) }
    }

    /// Start probes for new servers, stop those for removed ones.
    pub fn reconcile(&self, topology: &Topology, config: &HealthConfig, login: Option<ProbeLogin>) {
        let mut running = self.running.lock();
        let Some(login) = login else {
            for (_, t) in running.drain() {
                t.cancel();
            }
            return;
        };
        let wanted: Vec<(String, String, Role)> =
            topology.nodes.iter().map(|n| (n.name.clone(), n.address.clone(), n.role)).collect();
        running.retain(|k, t| {
            let keep = wanted.iter().any(|(n, a, _)| (n, a) == (&k.0, &k.1));
            if !keep {
                t.cancel();
            }
            keep
        });
        for (name, address, _) in wanted {
            let key = (name.clone(), address.clone());
            if running.contains_key(&key) {
                continue;
            }
            let token = self.stop.child_token();
            running.insert(key, token.clone());
            let status = self.health.status(&name, &address);
            self.tracker.spawn(probe_loop(address, status, config.clone(), login.clone(), token));
        }
    }
}

const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
     pg_last_wal_receive_lsn()::text, \
     extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, \
     CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END";

async fn probe_loop(
    address: String,
    status: Arc<NodeStatus>,
    config: HealthConfig,
    login: ProbeLogin,
    stop: CancellationToken,
) {
    let mut client: Option<(tokio_postgres::Client, tokio_postgres::Statement)> = None;
    let mut tick = tokio::time::interval(config.probe_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // cancel safety: tick() and cancelled() are cancel safe.
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let result = tokio::select! {
            r = tokio::time::timeout(config.probe_timeout, probe_once(&address, &login, &mut client)) => r,
            _ = stop.cancelled() => return,
        };
        status.probes.fetch_add(1, Ordering::Relaxed);
        let probe = match result {
            Ok(Ok((rtt, mut p))) => {
                status.record_rtt(rtt);
                p.at = Some(Instant::now());
                p
            }
            Ok(Err(e)) => failed(&status, &mut client, e),
            Err(_) => failed(&status, &mut client, "probe timed out".into()),
        };
        status.probe.store(Arc::new(probe));
    }
}

fn failed(
    status: &NodeStatus,
    client: &mut Option<(tokio_postgres::Client, tokio_postgres::Statement)>,
    error: String,
) -> Probe {
    status.probe_failures.fetch_add(1, Ordering::Relaxed);
    *client = None;
    Probe { at: Some(Instant::now()), error: Some(error), ..Probe::default() }
}

async fn probe_once(
    address: &str,
    login: &ProbeLogin,
    client: &mut Option<(tokio_postgres::Client, tokio_postgres::Statement)>,
) -> Result<(Duration, Probe), String> {
    if client.is_none() {
        let (host, port) = address.rsplit_once(':').ok_or("bad address")?;
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(host)
            .port(port.parse().map_err(|_| "bad port")?)
            .user(&login.user)
            .dbname(&login.database)
            .application_name("meridian-probe");
        if let Some(p) = &login.password {
            cfg.password(p);
        }
        let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
        // The connection task ends when the client is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        // Prepared once: each probe is then one round trip, the RTT sample.
        let stmt = c.prepare(PROBE_SQL).await.map_err(|e| e.to_string())?;
        *client = Some((c, stmt));
    }
    let (c, stmt) = client.as_ref().ok_or("no client")?;
    let started = Instant::now();
    let row = c.query_one(stmt, &[]).await.map_err(|e| e.to_string())?;
    let rtt = started.elapsed();
    let lsn = |i: usize| row.get::<_, Option<String>>(i).as_deref().and_then(Lsn::parse);
    Ok((
        rtt,
        Probe {
            at: None,
            reachable: true,
            in_recovery: row.get(0),
            lsn: lsn(1),
            receive_lsn: lsn(2),
            replay_age: row.get::<_, Option<f64>>(3).filter(|s| *s >= 0.0).map(Duration::from_secs_f64),
            replay_paused: row.get(4),
            error: None,
        },
    ))
}
