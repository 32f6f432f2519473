//! The `SHOW` views: a [`Snapshot`] of what the node knows (topology,
//! probe results, pools, clients, counters) rendered as row sets of text
//! columns. Nothing here does I/O or waits; every view reads the latest
//! values once.
//!
//! PostgreSQL servers are named by their topology node name everywhere,
//! with their region beside them; a pool whose address is no longer in the
//! topology (after a reload) shows its address and no name.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use consensus::{Status, TopologyState};
use router::topology::{Fallback, PgNode, Topology};
use tokio::time::Instant;

use super::command::{HELP, Topic};
use super::counters::RouteCounters;
use crate::clients::ClientEntry;
use crate::config::Config;
use crate::health::Health;
use crate::node::Shared;
use crate::pool::Pool;
use crate::session::route::AnalysisCache;
use crate::wire::messages;

/// Rows of text columns, as a query answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResultSet {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
    /// CommandComplete tag; `SHOW <rows>` when `None`.
    pub tag: Option<&'static str>,
}

impl ResultSet {
    pub(crate) fn new(columns: &[&'static str]) -> ResultSet {
        ResultSet { columns: columns.to_vec(), rows: Vec::new(), tag: None }
    }

    pub(crate) fn push(&mut self, row: Vec<Option<String>>) {
        debug_assert_eq!(row.len(), self.columns.len(), "row width of {:?}", self.columns);
        self.rows.push(row);
    }

    /// RowDescription, DataRows, CommandComplete.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        messages::row_description_text(out, &self.columns);
        for row in &self.rows {
            let values: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
            messages::data_row_text(out, &values);
        }
        match self.tag {
            Some(tag) => messages::command_complete(out, tag),
            None => messages::command_complete(out, &format!("SHOW {}", self.rows.len())),
        }
    }
}

/// What the views read, taken once per admin statement.
pub(crate) struct Snapshot<'a> {
    /// The router's topology. On a cluster node, translated from `state`
    /// (so a change is visible to the next statement even before the data
    /// path's copy is published).
    pub topology: Arc<Topology>,
    /// The replicated topology as applied on this node, on a cluster node.
    pub state: Option<Arc<TopologyState>>,
    /// This member's view of the Raft group; filled in for `SHOW CLUSTER`.
    pub status: Option<Status>,
    pub config: Arc<Config>,
    /// The users this node accepts (its file's, with the cluster's on top).
    pub users: Arc<crate::auth::Users>,
    pub health: &'a Health,
    pub pools: Vec<Arc<Pool>>,
    pub clients: Vec<Arc<ClientEntry>>,
    pub routes: &'a RouteCounters,
    pub analyses: &'a AnalysisCache,
    /// How long the node has been up.
    pub uptime: Duration,
    pub now: Instant,
}

impl<'a> Snapshot<'a> {
    pub(crate) fn of(shared: &'a Shared) -> Snapshot<'a> {
        let mut pools = shared.pools.all();
        pools.sort_by(|a, b| {
            (&a.key.addr, &a.key.database, &a.key.user).cmp(&(&b.key.addr, &b.key.database, &b.key.user))
        });
        let published = shared.topology.borrow().clone();
        let config = shared.config.load_full();
        let state = shared.cluster.as_ref().map(|c| c.state());
        let topology = state
            .as_ref()
            .and_then(|s| {
                crate::cluster::translate::to_router(s, published.version, config.topology.replica_policy.clone())
            })
            .map(Arc::new)
            .unwrap_or(published);
        Snapshot {
            topology,
            state,
            status: None,
            config,
            users: shared.users.load_full(),
            health: &shared.health,
            pools,
            clients: shared.clients.list(),
            routes: &shared.routes,
            analyses: &shared.analyses,
            uptime: shared.started.elapsed(),
            now: Instant::now(),
        }
    }

    pub(crate) fn show(&self, topic: Topic) -> ResultSet {
        match topic {
            Topic::Shards => self.shards(),
            Topic::Nodes => self.nodes(),
            Topic::Pools => self.pools(),
            Topic::Clients => self.clients(),
            Topic::Servers => self.servers(),
            Topic::Stats => self.stats(),
            Topic::Latency => self.latency(),
            Topic::Version => self.version(),
            Topic::Config => self.config(),
            Topic::Help => help(),
            Topic::Cluster => self.cluster(),
            Topic::Regions => self.regions(),
            Topic::Tables => self.tables(),
            Topic::Events => self.events(),
            Topic::Audit => self.audit(),
            Topic::Users => self.users(),
            Topic::Failovers => self.failovers(),
            Topic::Drills => self.drills(),
        }
    }

    /// The topology node at `address`.
    fn node_at(&self, address: &str) -> Option<&PgNode> {
        self.topology.nodes.iter().find(|n| n.address == address)
    }

    /// The topology node a session reported as its server: a node name, or
    /// an address.
    fn resolve(&self, server: &str) -> Option<&PgNode> {
        self.topology.nodes.iter().find(|n| n.name == server).or_else(|| self.node_at(server))
    }

    fn shard_name(&self, node: &PgNode) -> Option<String> {
        self.topology.shards.get(node.shard).map(|s| s.name.clone())
    }

    /// Pool addresses no topology node has.
    fn orphan_addresses(&self) -> Vec<&str> {
        let mut v: Vec<&str> =
            self.pools.iter().map(|p| p.key.addr.as_str()).filter(|a| self.node_at(a).is_none()).collect();
        v.dedup();
        v
    }

    /// Clients attached to each server now, by node name (or the reported
    /// name when no node has it).
    fn attached_counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for c in &self.clients {
            if let Some(s) = c.attached() {
                let key = self.resolve(&s).map(|n| n.name.clone()).unwrap_or_else(|| s.to_string());
                *m.entry(key).or_insert(0) += 1;
            }
        }
        m
    }

    fn shards(&self) -> ResultSet {
        let t = &self.topology;
        let mut columns = vec!["name", "epoch", "primary", "primary_region", "replicas", "default"];
        columns.extend(super::cluster_views::SHARD_FACTS);
        let mut rs = ResultSet::new(&columns);
        for (i, s) in t.shards.iter().enumerate() {
            let primary = s.primary.and_then(|p| t.nodes.get(p));
            let replicas: Vec<String> = s
                .replicas
                .iter()
                .filter_map(|r| t.nodes.get(*r))
                .map(|n| format!("{} ({})", n.name, n.region))
                .collect();
            let mut row = vec![
                text(&s.name),
                text(s.epoch),
                primary.map(|n| n.name.clone()),
                primary.map(|n| n.region.clone()),
                text(replicas.join(", ")),
                flag(i == t.default_shard),
            ];
            row.extend(self.shard_facts(&s.name));
            rs.push(row);
        }
        rs
    }

    fn nodes(&self) -> ResultSet {
        let t = &self.topology;
        let mut columns = vec![
            "name",
            "shard",
            "role",
            "region",
            "address",
            "state",
            "in_recovery",
            "lsn",
            "lag_bytes",
            "lag_ms",
            "rtt_ms",
            "outstanding",
            "last_probe_ms_ago",
            "error",
        ];
        columns.extend(super::cluster_views::NODE_FACTS);
        let mut rs = ResultSet::new(&columns);
        // Lag as replica choice sees it.
        let mut lag = HashMap::new();
        for shard in 0..t.shards.len() {
            for c in self.health.candidates(t, shard) {
                lag.insert(c.node, (c.lag_bytes, c.lag_time));
            }
        }
        for (id, n) in t.nodes.iter().enumerate() {
            let st = self.health.status(&n.name, &n.address);
            let p = st.probe.load_full();
            let up = p.at.is_some() && p.reachable;
            let (lag_bytes, lag_time) = match lag.get(&id) {
                Some(l) if up => *l,
                _ => (None, None),
            };
            let mut row = vec![
                text(&n.name),
                self.shard_name(n),
                text(n.role.as_str()),
                text(&n.region),
                text(&n.address),
                text(probe_state(p.at, p.reachable)),
                up.then(|| flag(p.in_recovery)).flatten(),
                p.lsn.filter(|_| up).map(|l| l.to_string()),
                lag_bytes.map(|b| b.to_string()),
                lag_time.map(|d| d.as_millis().to_string()),
                st.rtt().map(ms),
                text(st.outstanding.load(Ordering::Relaxed)),
                p.at.map(|at| self.now.saturating_duration_since(at).as_millis().to_string()),
                p.error.clone(),
            ];
            row.extend(self.node_facts(&n.name));
            rs.push(row);
        }
        // Banned nodes and fenced former primaries: not routed, not probed.
        self.unrouted_nodes(&mut rs);
        rs
    }

    fn pools(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "server",
            "region",
            "address",
            "database",
            "user",
            "total",
            "idle",
            "busy",
            "waiting",
            "checkouts",
            "waits",
            "timeouts",
            "connects",
            "connect_errors",
            "discards",
        ]);
        let mut rows: Vec<(Option<&PgNode>, &Arc<Pool>)> =
            self.pools.iter().map(|p| (self.node_at(&p.key.addr), p)).collect();
        // Named servers first, then addresses no node has.
        rows.sort_by_key(|(n, p)| (n.is_none(), n.map(|n| n.name.clone()), p.key.database.clone(), p.key.user.clone()));
        for (node, p) in rows {
            let o = p.occupancy();
            let s = &p.stats;
            rs.push(vec![
                node.map(|n| n.name.clone()),
                node.map(|n| n.region.clone()),
                text(&p.key.addr),
                text(&p.key.database),
                text(&p.key.user),
                text(o.total),
                text(o.idle),
                text(o.total.saturating_sub(o.idle)),
                text(o.waiting),
                text(s.checkouts.load(Ordering::Relaxed)),
                text(s.waits.load(Ordering::Relaxed)),
                text(s.timeouts.load(Ordering::Relaxed)),
                text(s.connects.load(Ordering::Relaxed)),
                text(s.connect_errors.load(Ordering::Relaxed)),
                text(s.discards.load(Ordering::Relaxed)),
            ]);
        }
        rs
    }

    fn clients(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "id",
            "user",
            "database",
            "address",
            "tls",
            "state",
            "server",
            "region",
            "connected_at",
            "pool_mode",
        ]);
        for c in &self.clients {
            let attached = c.attached();
            let node = attached.as_deref().and_then(|s| self.resolve(s));
            rs.push(vec![
                text(c.info.id),
                text(&c.info.user),
                text(&c.info.database),
                c.info.peer.map(|p| p.to_string()),
                flag(c.info.tls),
                text(c.state().as_str()),
                node.map(|n| n.name.clone()).or_else(|| attached.map(|s| s.to_string())),
                node.map(|n| n.region.clone()),
                text(utc(c.connected_at)),
                text(c.info.mode.as_str()),
            ]);
        }
        rs
    }

    /// One row per PostgreSQL server: the connections this node holds to
    /// it, over all its pools (one per database and user).
    fn servers(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "server", "shard", "role", "region", "address", "state", "pools", "total", "active", "idle", "waiting",
            "clients",
        ]);
        let attached = self.attached_counts();
        let row = |rs: &mut ResultSet, node: Option<&PgNode>, address: &str| {
            let (mut pools, mut total, mut idle, mut waiting) = (0, 0, 0, 0);
            for p in self.pools.iter().filter(|p| p.key.addr == address) {
                let o = p.occupancy();
                pools += 1;
                total += o.total;
                idle += o.idle;
                waiting += o.waiting;
            }
            let state = node.map(|n| {
                let p = self.health.status(&n.name, &n.address).probe.load_full();
                probe_state(p.at, p.reachable).to_owned()
            });
            let key = node.map(|n| n.name.as_str()).unwrap_or(address);
            rs.push(vec![
                node.map(|n| n.name.clone()),
                node.and_then(|n| self.shard_name(n)),
                node.map(|n| n.role.as_str().to_owned()),
                node.map(|n| n.region.clone()),
                text(address),
                state,
                text(pools),
                text(total),
                text(total - idle),
                text(idle),
                text(waiting),
                text(attached.get(key).copied().unwrap_or(0)),
            ]);
        };
        for n in &self.topology.nodes {
            row(&mut rs, Some(n), &n.address);
        }
        for a in self.orphan_addresses() {
            row(&mut rs, None, a);
        }
        rs
    }

    /// Per server: requests routed there and pool totals; then this node's
    /// totals.
    fn stats(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "scope",
            "name",
            "region",
            "routes_primary",
            "routes_replica",
            "routes_fanout",
            "routes_every_primary",
            "routes_rejected",
            "checkouts",
            "waits",
            "avg_wait_ms",
            "timeouts",
            "connect_errors",
            "clients",
            "uptime_s",
        ]);
        let attached = self.attached_counts();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let pool_totals = |address: Option<&str>| {
            let (mut checkouts, mut waits, mut wait_us, mut timeouts, mut errors) = (0, 0, 0, 0, 0);
            for p in self.pools.iter().filter(|p| address.is_none_or(|a| p.key.addr == a)) {
                checkouts += load(&p.stats.checkouts);
                waits += load(&p.stats.waits);
                wait_us += load(&p.stats.wait_micros);
                timeouts += load(&p.stats.timeouts);
                errors += load(&p.stats.connect_errors);
            }
            let avg = if waits == 0 { 0.0 } else { wait_us as f64 / waits as f64 / 1000.0 };
            [text(checkouts), text(waits), text(format!("{avg:.2}")), text(timeouts), text(errors)]
        };
        let mut servers: Vec<(Option<&PgNode>, &str)> =
            self.topology.nodes.iter().map(|n| (Some(n), n.address.as_str())).collect();
        servers.extend(self.orphan_addresses().into_iter().map(|a| (None, a)));
        for (node, address) in servers {
            let routes = node.and_then(|n| self.routes.get(&n.name));
            let mut row = vec![
                text("server"),
                text(node.map(|n| n.name.as_str()).unwrap_or(address)),
                node.map(|n| n.region.clone()),
                text(routes.as_ref().map(|r| load(&r.primary)).unwrap_or(0)),
                text(routes.as_ref().map(|r| load(&r.replica)).unwrap_or(0)),
                None,
                None,
                None,
            ];
            row.extend(pool_totals(Some(address)));
            let key = node.map(|n| n.name.as_str()).unwrap_or(address);
            row.push(text(attached.get(key).copied().unwrap_or(0)));
            row.push(None);
            rs.push(row);
        }
        let r = self.routes;
        let mut row = vec![
            text("node"),
            text(&self.config.node.name),
            text(&self.config.node.region),
            text(load(&r.primary)),
            text(load(&r.replica)),
            text(load(&r.fanout)),
            text(load(&r.every_primary)),
            text(load(&r.rejected)),
        ];
        row.extend(pool_totals(None));
        row.push(text(self.clients.len()));
        row.push(text(self.uptime.as_secs()));
        rs.push(row);
        rs
    }

    fn latency(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "name",
            "shard",
            "role",
            "region",
            "address",
            "rtt_ms",
            "probes",
            "probe_failures",
            "last_probe_ms_ago",
            "last_error",
        ]);
        for n in &self.topology.nodes {
            let st = self.health.status(&n.name, &n.address);
            let p = st.probe.load_full();
            rs.push(vec![
                text(&n.name),
                self.shard_name(n),
                text(n.role.as_str()),
                text(&n.region),
                text(&n.address),
                st.rtt().map(ms),
                text(st.probes.load(Ordering::Relaxed)),
                text(st.probe_failures.load(Ordering::Relaxed)),
                p.at.map(|at| self.now.saturating_duration_since(at).as_millis().to_string()),
                p.error.clone(),
            ]);
        }
        rs
    }

    fn version(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["version", "node", "region"]);
        rs.push(vec![text(version()), text(&self.config.node.name), text(&self.config.node.region)]);
        rs
    }

    /// Key settings; never secrets (no passwords, verifiers or key files).
    fn config(&self) -> ResultSet {
        let c = &self.config;
        let t = &self.topology;
        let mut rs = ResultSet::new(&["name", "value", "changes_on"]);
        let reload = "reload";
        let restart = "restart";
        let rows: Vec<(&str, String, &str)> = vec![
            ("node.name", c.node.name.clone(), restart),
            ("node.region", c.node.region.clone(), restart),
            ("node.worker_threads", c.node.worker_threads.to_string(), restart),
            ("node.busy_poll", duration(c.node.busy_poll), restart),
            ("listen.address", c.listen.address.to_string(), restart),
            ("listen.max_client_connections", c.listen.max_client_connections.to_string(), restart),
            ("listen.startup_timeout", duration(c.listen.startup_timeout), reload),
            (
                "listen.idle_in_transaction_timeout",
                c.listen.idle_in_transaction_timeout.map(duration).unwrap_or_else(|| "off".into()),
                reload,
            ),
            ("listen.max_message_size", size(c.listen.max_message_size as u64), restart),
            ("tls.mode", format!("{:?}", c.tls.mode).to_ascii_lowercase(), reload),
            ("pool.mode", c.pool.mode.to_string(), reload),
            ("pool.size", c.pool.size.to_string(), reload),
            ("pool.min_idle", c.pool.min_idle.to_string(), reload),
            ("pool.checkout_timeout", duration(c.pool.checkout_timeout), reload),
            ("pool.queue_limit", c.pool.queue_limit.to_string(), reload),
            ("pool.idle_timeout", duration(c.pool.idle_timeout), reload),
            ("pool.max_lifetime", duration(c.pool.max_lifetime), reload),
            ("pool.connect_timeout", duration(c.pool.connect_timeout), reload),
            ("health.probe_interval", duration(c.health.probe_interval), restart),
            ("health.probe_timeout", duration(c.health.probe_timeout), restart),
            ("health.user", c.health.user.clone().unwrap_or_else(|| "(probes off)".into()), restart),
            ("health.database", c.health.database.clone(), restart),
            ("topology.version", t.version.to_string(), reload),
            (
                "topology.default_shard",
                t.shards.get(t.default_shard).map(|s| s.name.clone()).unwrap_or_default(),
                reload,
            ),
            ("topology.max_replica_lag", size(t.replica_policy.max_lag_bytes), reload),
            ("topology.max_replica_lag_time", duration(t.replica_policy.max_lag), reload),
            (
                "topology.replica_fallback",
                match t.replica_policy.fallback {
                    Fallback::Primary => "primary".into(),
                    Fallback::Fail => "fail".into(),
                },
                reload,
            ),
            ("shutdown.grace", duration(c.shutdown_grace), reload),
        ];
        for (name, value, changes) in rows {
            rs.push(vec![text(name), text(value), text(changes)]);
        }
        rs
    }
}

/// `SHOW HELP`.
pub(crate) fn help() -> ResultSet {
    let mut rs = ResultSet::new(&["command", "description"]);
    for (c, d) in HELP {
        rs.push(vec![text(c), text(d)]);
    }
    rs
}

/// What `SHOW VERSION` and the `server_version` parameter say.
pub(crate) fn version() -> String {
    format!("Meridian {}", env!("CARGO_PKG_VERSION"))
}

fn probe_state(at: Option<Instant>, reachable: bool) -> &'static str {
    match at {
        None => "unknown",
        Some(_) if reachable => "up",
        Some(_) => "down",
    }
}

pub(crate) fn text(v: impl std::fmt::Display) -> Option<String> {
    Some(v.to_string())
}

pub(crate) fn flag(b: bool) -> Option<String> {
    text(if b { "t" } else { "f" })
}

/// Milliseconds with two decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A duration as the config file writes it: `30s`, `500ms`, `250us`.
pub(crate) fn duration(d: Duration) -> String {
    if d.is_zero() {
        "0s".into()
    } else if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}us", d.as_micros())
    }
}

/// A byte size as the config file writes it: `16MB`, `64kB`, `100B`.
pub(crate) fn size(n: u64) -> String {
    match n {
        0 => "0B".into(),
        n if n.is_multiple_of(1 << 30) => format!("{}GB", n >> 30),
        n if n.is_multiple_of(1 << 20) => format!("{}MB", n >> 20),
        n if n.is_multiple_of(1 << 10) => format!("{}kB", n >> 10),
        n => format!("{n}B"),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let (year, month, day, h, m, sec) = crate::civil_time::utc_parts(secs);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{sec:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(utc(SystemTime::UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_235_230)), "2025-11-27 09:20:30 UTC");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
        assert_eq!(duration(Duration::from_micros(1500)), "1500us");
        assert_eq!(size(16 << 20), "16MB");
        assert_eq!(size(64 << 10), "64kB");
        assert_eq!(size(1 << 30), "1GB");
        assert_eq!(size(1000), "1000B");
        assert_eq!(ms(Duration::from_micros(1234)), "1.23");
    }

    #[test]
    fn encoded_row_set() {
        let mut rs = ResultSet::new(&["a", "b"]);
        rs.push(vec![text(1), None]);
        let mut out = BytesMut::new();
        rs.encode(&mut out);
        let tags: Vec<u8> = crate::wire::frame::Messages::new(&out, 1 << 20).map(|m| m.unwrap().1.tag).collect();
        assert_eq!(tags, b"TDC");
        assert!(out.ends_with(b"SHOW 1\0"));
    }
}
