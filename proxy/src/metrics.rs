//! The node's Prometheus metrics: the one piece of state only metrics need
//! (statement latency histograms, [`StatementLatency`]), and the
//! exposition of everything else the node already counts, read at scrape
//! time ([`Sample`], [`encode`]).
//!
//! ```text
//!   session ──record (per round trip)──▶ StatementLatency (hdrhistogram per shard, role, stripe)
//!                                                  │
//!   GET /metrics ──▶ Sample::of(shared, raft status) ◀── Clients, Pools' PoolStats,
//!                          │                             RouteCounters, topology, lease
//!                          ▼
//!                    encode: prometheus-client registry + one collector ──▶ OpenMetrics text
//! ```
//!
//! Nothing here keeps a second copy of a counter the admin console reads:
//! client states come from [`crate::clients::Clients`], pool occupancy and
//! waits from each pool's [`crate::pool::PoolStats`], routes from
//! [`crate::admin::RouteCounters`]. The data path's only cost is
//! [`StatementLatency::record`]: a look-up in a small thread-local list of
//! shards and an uncontended mutex (each runtime thread has its own of
//! [`STRIPES`] histograms per shard and role); it allocates and takes the
//! shared map's lock only at a thread's first statement for a shard.
//!
//! Metric names are `meridian_proxy_*` (this node's data path),
//! `meridian_consensus_*` (its Raft member, on cluster nodes) and, on
//! cluster nodes, `meridian_failovers_total`, `meridian_drills_total` and
//! `meridian_last_failover_rto_seconds` (the cluster's reports, the same on
//! every node: `reports.rs`); labels take
//! values from fixed sets or from the topology (shard and server names),
//! never SQL text or user names. docs/operations.md lists every metric.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use consensus::{LeaseState, RaftRole, Status};
use hdrhistogram::Histogram;
use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use router::topology::Role;

use crate::clients::ClientState;
use crate::node::Shared;

mod reports;
pub use reports::ReportSample;

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histograms per (shard, role), each behind its own mutex: a thread always
/// records into the same one, so that with up to this many runtime threads
/// no two threads share a lock or a cache line.
pub const STRIPES: usize = 4;

/// Shard lookups a thread remembers (per [`StatementLatency`]); past this
/// the memory is cleared and refilled.
const THREAD_CACHE: usize = 32;

/// Latencies are recorded in microseconds, from 1 µs to this (60 s); a
/// longer one counts as 60 s in the buckets (its exact value still goes
/// into `_sum`).
const LATENCY_MAX_MICROS: u64 = 60_000_000;

/// Two significant digits: bucket edges are exact to 1%.
const LATENCY_SIGFIG: u8 = 2;

/// Upper bounds (seconds) of the exported `statement_latency` buckets,
/// `+Inf` last.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    f64::INFINITY,
];

/// What only metrics keep; one per node, in [`Shared`].
#[derive(Debug, Default)]
pub struct Metrics {
    pub latency: StatementLatency,
}

/// Statement latency per shard and role of the server: from sending a
/// request to a routed server to the first byte of its answer (the round
/// trip the session also feeds to replica choice).
#[derive(Debug)]
pub struct StatementLatency {
    /// Tells apart the nodes of one process in the threads' caches.
    owner: u64,
    shards: RwLock<HashMap<Box<str>, Arc<ShardLatency>>>,
}

impl Default for StatementLatency {
    fn default() -> StatementLatency {
        static NEXT_OWNER: AtomicU64 = AtomicU64::new(0);
        StatementLatency { owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed), shards: RwLock::default() }
    }
}

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe.
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
    /// The shards this thread has recorded for, so that a record touches
    /// no memory another thread writes (the shared map's lock would).
    static SHARDS: RefCell<Vec<CachedShard>> = const { RefCell::new(Vec::new()) };
}

struct CachedShard {
    owner: u64,
    shard: Box<str>,
    cells: Arc<ShardLatency>,
}

#[derive(Debug)]
struct ShardLatency {
    primary: [Stripe; STRIPES],
    replica: [Stripe; STRIPES],
}

/// One mutex-guarded histogram on its own cache line.
#[derive(Debug)]
#[repr(align(64))]
struct Stripe(Mutex<Cell>);

#[derive(Debug)]
struct Cell {
    hist: Histogram<u64>,
    /// Exact sum of the recorded latencies, in microseconds.
    sum_micros: u64,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, LATENCY_SIGFIG).expect("constant bounds are valid")
}

impl ShardLatency {
    fn new() -> ShardLatency {
        let stripe = || Stripe(Mutex::new(Cell { hist: new_histogram(), sum_micros: 0 }));
        ShardLatency { primary: std::array::from_fn(|_| stripe()), replica: std::array::from_fn(|_| stripe()) }
    }

    fn role(&self, role: Role) -> &[Stripe; STRIPES] {
        match role {
            Role::Primary => &self.primary,
            Role::Replica => &self.replica,
        }
    }

    fn record(&self, role: Role, stripe: usize, micros: u64) {
        let mut cell = self.role(role)[stripe].0.lock();
        cell.hist.saturating_record(micros.max(1));
        cell.sum_micros = cell.sum_micros.saturating_add(micros);
    }
}

/// One (shard, role)'s latencies, merged over stripes, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencySample {
    pub shard: String,
    pub role: Role,
    /// Per bound of [`LATENCY_BUCKETS`]: how many fell in that bucket (not
    /// cumulative).
    pub buckets: Vec<(f64, u64)>,
    pub sum_seconds: f64,
    pub count: u64,
}

impl StatementLatency {
    /// Record one round trip to a server of `shard` in `role`.
    pub fn record(&self, shard: &str, role: Role, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let stripe = STRIPE.with(|s| *s);
        let recorded = SHARDS.with_borrow(|cache| {
            let hit = cache.iter().find(|c| c.owner == self.owner && *c.shard == *shard);
            hit.map(|c| c.cells.record(role, stripe, micros)).is_some()
        });
        if recorded {
            return;
        }
        // First statement of this thread for this shard.
        let cells = self.shards.write().entry(shard.into()).or_insert_with(|| Arc::new(ShardLatency::new())).clone();
        cells.record(role, stripe, micros);
        SHARDS.with_borrow_mut(|cache| {
            if cache.len() >= THREAD_CACHE {
                cache.clear();
            }
            cache.push(CachedShard { owner: self.owner, shard: shard.into(), cells });
        });
    }

    /// Every (shard, role) that has recorded something, by shard name then
    /// role.
    pub fn samples(&self) -> Vec<LatencySample> {
        let mut shards: Vec<(String, Arc<ShardLatency>)> =
            self.shards.read().iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        shards.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::new();
        for (name, s) in shards {
            for role in [Role::Primary, Role::Replica] {
                let mut merged = new_histogram();
                let mut sum_micros = 0u64;
                for stripe in s.role(role) {
                    let cell = stripe.0.lock();
                    // Same bounds: adding cannot fail.
                    let _ = merged.add(&cell.hist);
                    sum_micros = sum_micros.saturating_add(cell.sum_micros);
                }
                if merged.is_empty() {
                    continue;
                }
                out.push(LatencySample {
                    shard: name.clone(),
                    role,
                    buckets: buckets(&merged),
                    sum_seconds: sum_micros as f64 / 1e6,
                    count: merged.len(),
                });
            }
        }
        out
    }
}

/// Per bound of [`LATENCY_BUCKETS`], the values of `hist` in that bucket. A
/// histogram slot counts under the bound its lowest value falls under.
fn buckets(hist: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut counts = vec![0u64; LATENCY_BUCKETS.len()];
    for v in hist.iter_recorded() {
        let seconds = hist.lowest_equivalent(v.value_iterated_to()) as f64 / 1e6;
        let i = LATENCY_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(LATENCY_BUCKETS.len() - 1);
        counts[i] += v.count_at_value();
    }
    LATENCY_BUCKETS.iter().copied().zip(counts).collect()
}

/// Connections and counters of one PostgreSQL server, over all its pools
/// (one per database and user).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerSample {
    /// The topology node name, or the address for a pool no node has.
    pub server: String,
    pub idle: u64,
    pub busy: u64,
    pub waiting: u64,
    pub checkouts: u64,
    pub waits: u64,
    pub wait_seconds: f64,
    pub timeouts: u64,
    pub connects: u64,
    pub connect_errors: u64,
    pub discards: u64,
    /// Requests routed here while it was a primary / a replica.
    pub routed_primary: u64,
    pub routed_replica: u64,
}

/// Node-wide routing counters, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSample {
    pub primary: u64,
    pub replica: u64,
    pub fanout: u64,
    pub every_primary: u64,
    pub rejected: u64,
}

/// What this node's Raft member reports.
#[derive(Debug, Clone, PartialEq)]
pub struct RaftSample {
    pub role: RaftRole,
    pub term: u64,
    pub leader: Option<u64>,
    pub is_leader: bool,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub voters: u64,
    pub members: u64,
}

impl From<&Status> for RaftSample {
    fn from(s: &Status) -> RaftSample {
        RaftSample {
            role: s.role,
            term: s.term,
            leader: s.leader,
            is_leader: s.role == RaftRole::Leader,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_log_index: s.last_log_index,
            voters: s.voters.len() as u64,
            members: s.members.len() as u64,
        }
    }
}

/// Everything one scrape exports, read once.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub version: &'static str,
    pub uptime: Duration,
    /// The same judgement as `/readyz`.
    pub ready: bool,
    /// Logged-in clients by state: idle, active, in_transaction,
    /// failed_transaction.
    pub clients: [u64; 4],
    pub servers: Vec<ServerSample>,
    pub routes: RouteSample,
    pub latency: Vec<LatencySample>,
    pub topology_version: u64,
    pub topology_shards: u64,
    /// With `node.busy_poll` on: (polls run, polls that caught an event).
    pub busy_polls: Option<(u64, u64)>,
    /// On a cluster node whose Raft member answered.
    pub raft: Option<RaftSample>,
    /// On a cluster node.
    pub lease: Option<LeaseState>,
    /// On a cluster node: what the replicated reports say.
    pub reports: Option<ReportSample>,
}

/// Label values of [`Sample::clients`], in order.
const CLIENT_STATES: [&str; 4] = ["idle", "active", "in_transaction", "failed_transaction"];

impl Sample {
    /// Read the node's counters now. `raft`: the member's status, fetched
    /// by the caller (it is the one value that needs an await).
    pub(crate) fn of(shared: &Shared, raft: Option<&Status>, ready: bool) -> Sample {
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut clients = [0u64; 4];
        for c in shared.clients.list() {
            let i = match c.state() {
                ClientState::Idle => 0,
                ClientState::Active => 1,
                ClientState::InTransaction => 2,
                ClientState::FailedTransaction => 3,
            };
            clients[i] += 1;
        }
        let topology = shared.topology.borrow().clone();
        let mut servers: Vec<ServerSample> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut slot = |name: &str, servers: &mut Vec<ServerSample>| -> usize {
            *index.entry(name.to_owned()).or_insert_with(|| {
                servers.push(ServerSample { server: name.to_owned(), ..ServerSample::default() });
                servers.len() - 1
            })
        };
        for n in &topology.nodes {
            let i = slot(&n.name, &mut servers);
            if let Some(r) = shared.routes.get(&n.name) {
                servers[i].routed_primary = load(&r.primary);
                servers[i].routed_replica = load(&r.replica);
            }
        }
        for p in shared.pools.all() {
            let name = topology.nodes.iter().find(|n| n.address == p.key.addr).map_or(p.key.addr.as_str(), |n| &n.name);
            let i = slot(name, &mut servers);
            let s = &mut servers[i];
            let o = p.occupancy();
            s.idle += o.idle as u64;
            s.busy += o.total.saturating_sub(o.idle) as u64;
            s.waiting += o.waiting as u64;
            s.checkouts += load(&p.stats.checkouts);
            s.waits += load(&p.stats.waits);
            s.wait_seconds += load(&p.stats.wait_micros) as f64 / 1e6;
            s.timeouts += load(&p.stats.timeouts);
            s.connects += load(&p.stats.connects);
            s.connect_errors += load(&p.stats.connect_errors);
            s.discards += load(&p.stats.discards);
        }
        let r = &shared.routes;
        Sample {
            version: env!("CARGO_PKG_VERSION"),
            uptime: shared.started.elapsed(),
            ready,
            clients,
            servers,
            routes: RouteSample {
                primary: load(&r.primary),
                replica: load(&r.replica),
                fanout: load(&r.fanout),
                every_primary: load(&r.every_primary),
                rejected: load(&r.rejected),
            },
            latency: shared.metrics.latency.samples(),
            topology_version: topology.version,
            topology_shards: topology.shards.len() as u64,
            busy_polls: crate::busy_poll::installed().map(|p| p.counts()),
            raft: raft.map(RaftSample::from),
            lease: shared.cluster.as_ref().map(|c| raft.map_or_else(|| c.lease(), |s| s.lease)),
            reports: shared.cluster.as_ref().map(|c| ReportSample::of(&c.state())),
        }
    }
}

/// Encode `sample` as OpenMetrics text (ends with `# EOF`).
pub fn encode(sample: Sample) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("meridian");
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// A [`Sample`] as a prometheus-client collector: it writes the values it
/// was made with.
#[derive(Debug)]
struct SampleCollector(Sample);

/// Write one unlabelled gauge.
fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: impl EncodeGaugeValue,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// Write a gauge or counter family: one value per label set.
fn family<L: EncodeLabelSet, V: EncodeGaugeValue + EncodeCounterValue>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    let mut m: MetricEncoder<'_> = enc.encode_descriptor(name, help, unit, kind)?;
    for (labels, v) in rows {
        let row = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(row)?,
            _ => ConstGauge::new(v).encode(row)?,
        }
    }
    Ok(())
}

/// One row per server of a family labelled `server`.
fn per_server<V>(
    servers: &[ServerSample],
    f: impl Fn(&ServerSample) -> V,
) -> impl Iterator<Item = ([(&'static str, &str); 1], V)> {
    servers.iter().map(move |x| ([("server", x.server.as_str())], f(x)))
}

impl Collector for SampleCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let s = &self.0;
        let e = &mut enc;
        {
            let info = prometheus_client::metrics::info::Info::new([("version", s.version)]);
            info.encode(e.encode_descriptor("proxy_build", "Meridian's version", None, info.metric_type())?)?;
        }
        gauge(e, "proxy_uptime", "Time since the node started", Some(&Unit::Seconds), s.uptime.as_secs_f64())?;
        gauge(e, "proxy_ready", "1 when /readyz answers 200", None, u64::from(s.ready))?;
        family(
            e,
            "proxy_client_connections",
            "Logged-in client sessions by state",
            None,
            MetricType::Gauge,
            CLIENT_STATES.iter().zip(s.clients).map(|(st, n)| ([("state", *st)], n)),
        )?;
        family(
            e,
            "proxy_server_connections",
            "Server connections open in this node's pools, by server and state",
            None,
            MetricType::Gauge,
            s.servers.iter().flat_map(|x| {
                [
                    ([("server", x.server.as_str()), ("state", "idle")], x.idle),
                    ([("server", x.server.as_str()), ("state", "busy")], x.busy),
                ]
            }),
        )?;
        family(
            e,
            "proxy_pool_waiting_clients",
            "Clients queued for a server connection now",
            None,
            MetricType::Gauge,
            per_server(&s.servers, |x| x.waiting),
        )?;
        family(
            e,
            "proxy_pool_checkouts",
            "Server connection checkouts",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.checkouts),
        )?;
        family(
            e,
            "proxy_pool_waits",
            "Checkouts that had to wait for a server connection",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.waits),
        )?;
        family(
            e,
            "proxy_pool_wait",
            "Time checkouts spent waiting for a server connection",
            Some(&Unit::Seconds),
            MetricType::Counter,
            per_server(&s.servers, |x| x.wait_seconds),
        )?;
        family(
            e,
            "proxy_pool_timeouts",
            "Checkouts that gave up after pool.checkout_timeout",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.timeouts),
        )?;
        family(
            e,
            "proxy_server_connects",
            "Server connections opened (attempts)",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.connects),
        )?;
        family(
            e,
            "proxy_server_connect_errors",
            "Server connections that failed to open or log in",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.connect_errors),
        )?;
        family(
            e,
            "proxy_server_discards",
            "Server connections thrown away instead of returned to the pool",
            None,
            MetricType::Counter,
            per_server(&s.servers, |x| x.discards),
        )?;
        let r = &s.routes;
        family(
            e,
            "proxy_routes",
            "Requests routed, by kind",
            None,
            MetricType::Counter,
            [
                ("primary", r.primary),
                ("replica", r.replica),
                ("fanout", r.fanout),
                ("every_primary", r.every_primary),
                ("rejected", r.rejected),
            ]
            .map(|(k, n)| ([("kind", k)], n)),
        )?;
        family(
            e,
            "proxy_server_routes",
            "Requests routed to one server, by the role it had then",
            None,
            MetricType::Counter,
            s.servers.iter().flat_map(|x| {
                [
                    ([("server", x.server.as_str()), ("role", "primary")], x.routed_primary),
                    ([("server", x.server.as_str()), ("role", "replica")], x.routed_replica),
                ]
            }),
        )?;
        {
            let mut m = e.encode_descriptor(
                "proxy_statement_latency",
                "Request round trip to a routed server (send to first answer byte), per shard and server role",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for l in &s.latency {
                let labels = [("shard", l.shard.as_str()), ("role", l.role.as_str())];
                m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(l.sum_seconds, l.count, &l.buckets, None)?;
            }
        }
        gauge(e, "proxy_topology_version", "Version of the topology this node routes by", None, s.topology_version)?;
        gauge(e, "proxy_topology_shards", "Shards in the topology this node routes by", None, s.topology_shards)?;
        if let Some((polls, caught)) = s.busy_polls {
            family(
                e,
                "proxy_busy_polls",
                "Polls for events before the runtime slept (node.busy_poll), by whether one came (caught) or the thread slept",
                None,
                MetricType::Counter,
                [([("outcome", "caught")], caught), ([("outcome", "slept")], polls.saturating_sub(caught))],
            )?;
        }
        if let Some(raft) = &s.raft {
            family(
                e,
                "consensus_role",
                "This member's Raft role (1 for the current one)",
                None,
                MetricType::Gauge,
                [RaftRole::Leader, RaftRole::Follower, RaftRole::Candidate, RaftRole::Learner, RaftRole::Shutdown]
                    .map(|r| ([("role", raft_role(r))], u64::from(r == raft.role))),
            )?;
            gauge(e, "consensus_term", "Current Raft term", None, raft.term)?;
            gauge(e, "consensus_is_leader", "1 on the Raft leader", None, u64::from(raft.is_leader))?;
            if let Some(leader) = raft.leader {
                gauge(e, "consensus_leader_id", "Member id of the Raft leader this member knows", None, leader)?;
            }
            let indexes = [
                ("consensus_commit_index", "Index of the last committed log entry", raft.commit_index),
                ("consensus_applied_index", "Index of the last entry applied to the topology", raft.applied_index),
                ("consensus_last_log_index", "Index of the last entry in this member's log", raft.last_log_index),
            ];
            for (name, help, v) in indexes {
                if let Some(v) = v {
                    gauge(e, name, help, None, v)?;
                }
            }
            gauge(e, "consensus_voters", "Voting members", None, raft.voters)?;
            gauge(e, "consensus_members", "Members, voters and learners", None, raft.members)?;
        }
        if let Some(lease) = &s.lease {
            gauge(
                e,
                "consensus_lease_valid",
                "1 while this node holds a valid write lease",
                None,
                u64::from(lease.valid),
            )?;
            gauge(
                e,
                "consensus_lease_remaining",
                "How long the write lease stays valid without another confirmation",
                Some(&Unit::Seconds),
                lease.expires_in.unwrap_or_default().as_secs_f64(),
            )?;
            gauge(
                e,
                "consensus_lease_epoch_view",
                "Topology version confirmed with the quorum at the last lease renewal",
                None,
                lease.epoch_view,
            )?;
        }
        if let Some(r) = &s.reports {
            reports::encode(e, r)?;
        }
        Ok(())
    }
}

fn raft_role(r: RaftRole) -> &'static str {
    match r {
        RaftRole::Leader => "leader",
        RaftRole::Follower => "follower",
        RaftRole::Candidate => "candidate",
        RaftRole::Learner => "learner",
        RaftRole::Shutdown => "shutdown",
    }
}

#[cfg(test)]
pub(crate) mod tests;
