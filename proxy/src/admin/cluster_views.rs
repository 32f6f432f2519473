//! The views of what the cluster has agreed: `SHOW CLUSTER`, `REGIONS`,
//! `TABLES`, `EVENTS`, `AUDIT`, and the replicated facts `SHOW SHARDS` and
//! `SHOW NODES` add at the end of their rows.
//!
//! On a node without `[cluster]` they answer from what exists: `REGIONS`
//! and `TABLES` from the config's topology, no rows for `CLUSTER`,
//! `EVENTS` and `AUDIT`, and NULL for the replicated facts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use consensus::RaftRole;
use consensus::state::{KeyValue, ShardMap, TableRule};
use router::topology as rt;

use super::views::{ResultSet, Snapshot, duration, flag, size, text};

/// Columns `SHOW SHARDS` adds after its own.
pub(crate) const SHARD_FACTS: [&str; 6] =
    ["fenced", "paused", "durability", "max_lag_on_failover", "rto_target", "rpo_target"];
/// Columns `SHOW NODES` adds after its own.
pub(crate) const NODE_FACTS: [&str; 3] = ["cluster_state", "banned", "priority"];

impl Snapshot<'_> {
    /// The replicated facts of shard `name`: NULL without a cluster.
    pub(crate) fn shard_facts(&self, name: &str) -> [Option<String>; 6] {
        let Some((st, s)) = self.state.as_ref().and_then(|st| Some((st, st.shards.get(name)?))) else {
            return Default::default();
        };
        [
            flag(s.fenced),
            flag(st.is_paused(name)),
            text(s.policy.durability),
            text(size(s.policy.max_lag_on_failover)),
            text(duration(s.policy.rto_target)),
            text(duration(s.policy.rpo_target)),
        ]
    }

    /// The replicated facts of node `name`: NULL without a cluster.
    pub(crate) fn node_facts(&self, name: &str) -> [Option<String>; 3] {
        match self.state.as_ref().and_then(|st| st.nodes.get(name)) {
            Some(n) => [text(n.state), flag(n.banned), text(n.priority)],
            None => Default::default(),
        }
    }

    /// Rows for the nodes of the replicated topology that the router does
    /// not route to (banned nodes, fenced former primaries), with no probe
    /// columns.
    pub(crate) fn unrouted_nodes(&self, rs: &mut ResultSet) {
        let Some(st) = &self.state else { return };
        for n in st.nodes.values() {
            if self.topology.nodes.iter().any(|r| r.name == n.name) {
                continue;
            }
            let primary = st.shards.get(&n.shard).and_then(|s| s.primary.as_deref()) == Some(n.name.as_str());
            let mut row = vec![
                text(&n.name),
                text(&n.shard),
                text(if primary { "primary" } else { "replica" }),
                text(&n.region),
                text(&n.address),
            ];
            row.resize(rs.columns.len() - NODE_FACTS.len(), None);
            row.extend(self.node_facts(&n.name));
            rs.push(row);
        }
    }

    /// One row per Raft member; this node's own row carries its view of the
    /// group. No rows without `[cluster]`.
    pub(crate) fn cluster(&self) -> ResultSet {
        let mut rs = ResultSet::new(&[
            "id",
            "name",
            "region",
            "raft_addr",
            "client_addr",
            "voter",
            "leader",
            "self",
            "term",
            "commit_index",
            "applied_index",
            "lease",
            "lease_expires_ms",
            "role",
        ]);
        let Some(status) = &self.status else { return rs };
        for m in status.members.values() {
            let me = m.id == status.id;
            let own = |v: Option<String>| if me { v } else { None };
            rs.push(vec![
                text(m.id),
                text(&m.name),
                text(&m.region),
                text(&m.raft_addr),
                (!m.client_addr.is_empty()).then(|| m.client_addr.clone()),
                flag(status.voters.contains(&m.id)),
                flag(status.leader == Some(m.id)),
                flag(me),
                own(text(status.term)),
                own(status.commit_index.map(|i| i.to_string())),
                own(status.applied_index.map(|i| i.to_string())),
                own(text(if status.lease.valid { "valid" } else { "expired" })),
                own(status.lease.expires_in.map(|d| d.as_millis().to_string())),
                own(text(role(status.role))),
            ]);
        }
        rs
    }

    /// Regions with their PostgreSQL nodes, the shards they hold and the
    /// primaries among them.
    pub(crate) fn regions(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["name", "nodes", "shards", "primaries"]);
        // (region, node, shard, is primary)
        let mut regions: BTreeSet<String>;
        let mut nodes: Vec<(String, String, String, bool)> = Vec::new();
        match &self.state {
            Some(st) => {
                regions = st.regions.clone();
                for n in st.nodes.values() {
                    let primary = st.shards.get(&n.shard).and_then(|s| s.primary.as_deref()) == Some(n.name.as_str());
                    nodes.push((n.region.clone(), n.name.clone(), n.shard.clone(), primary));
                }
            }
            None => {
                let t = &self.topology;
                regions = t.regions.iter().cloned().collect();
                for n in &t.nodes {
                    let shard = t.shards.get(n.shard).map(|s| s.name.clone()).unwrap_or_default();
                    nodes.push((n.region.clone(), n.name.clone(), shard, n.role == rt::Role::Primary));
                }
            }
        }
        regions.extend(nodes.iter().map(|n| n.0.clone()));
        for r in regions {
            let here: Vec<&(String, String, String, bool)> = nodes.iter().filter(|n| n.0 == r).collect();
            let shards: BTreeSet<&str> = here.iter().map(|n| n.2.as_str()).collect();
            let primaries: Vec<&str> = here.iter().filter(|n| n.3).map(|n| n.1.as_str()).collect();
            rs.push(vec![
                text(&r),
                text(here.len()),
                text(shards.into_iter().collect::<Vec<_>>().join(", ")),
                text(primaries.join(", ")),
            ]);
        }
        rs
    }

    /// Sharded tables: key, type, method, shards and the map as `USING`
    /// writes it.
    pub(crate) fn tables(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["table", "column", "type", "method", "shards", "map"]);
        let rules: Vec<TableRule> = match &self.state {
            Some(st) => st.tables.values().cloned().collect(),
            None => self
                .topology
                .tables
                .iter()
                .map(|r| crate::cluster::translate::rule_to_state(r, &self.topology))
                .collect(),
        };
        for r in rules {
            let name = match &r.schema {
                Some(s) => format!("{s}.{}", r.table),
                None => r.table.clone(),
            };
            let method = match r.map {
                ShardMap::Hash(_) => "hash",
                ShardMap::Range(_) => "range",
                ShardMap::List { .. } => "list",
            };
            let mut shards: Vec<&str> = Vec::new();
            for s in map_shards(&r.map) {
                if !shards.contains(&s) {
                    shards.push(s);
                }
            }
            rs.push(vec![
                text(name),
                text(&r.column),
                text(r.key_type),
                text(method),
                text(shards.join(", ")),
                text(render_map(&r.map)),
            ]);
        }
        rs
    }

    /// The cluster's event log, oldest first.
    pub(crate) fn events(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["id", "at", "actor", "kind", "shard", "node", "summary", "phases"]);
        let Some(st) = &self.state else { return rs };
        for e in &st.events {
            // Each phase after the first one's time (a failover's detection):
            // the timeline reads as the outage grew.
            let start = e.phases.first().map_or(e.at, |p| p.at);
            let phases: Vec<String> =
                e.phases.iter().map(|p| format!("{} +{}ms", p.name, p.at.saturating_sub(start))).collect();
            rs.push(vec![
                text(e.id),
                text(iso(e.at)),
                text(&e.actor),
                text(e.kind),
                e.shard.clone(),
                e.node.clone(),
                text(&e.summary),
                text(phases.join(", ")),
            ]);
        }
        rs
    }

    /// Every audited change, oldest first.
    /// Every user this node accepts. `source`: `cluster` (replicated,
    /// `CREATE USER`) or `file` (this node's users file only).
    pub(crate) fn users(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["name", "auth", "admin", "pool_mode", "source", "backend_password"]);
        let cluster = self.state.as_ref().map(|s| &s.users);
        for u in self.users.iter() {
            let source = if cluster.is_some_and(|c| c.contains_key(&u.name)) { "cluster" } else { "file" };
            let pool_mode = u.pool_mode.map(|m| match m {
                crate::auth::PoolMode::Transaction => "transaction",
                crate::auth::PoolMode::Session => "session",
            });
            rs.push(vec![
                text(&u.name),
                text(u.credential.method()),
                text(if u.admin { "t" } else { "f" }),
                pool_mode.map(text).unwrap_or(None),
                text(source),
                text(if u.backend_password.is_some() { "set" } else { "none" }),
            ]);
        }
        rs
    }

    pub(crate) fn audit(&self) -> ResultSet {
        let mut rs = ResultSet::new(&["version", "at", "actor", "origin", "change"]);
        let Some(st) = &self.state else { return rs };
        for a in &st.audit {
            rs.push(vec![text(a.version), text(iso(a.at)), text(&a.actor), text(&a.origin), text(&a.change)]);
        }
        rs
    }
}

fn role(r: RaftRole) -> &'static str {
    match r {
        RaftRole::Leader => "leader",
        RaftRole::Follower => "follower",
        RaftRole::Candidate => "candidate",
        RaftRole::Learner => "learner",
        RaftRole::Shutdown => "shutdown",
    }
}

/// Unix milliseconds as ISO 8601 UTC: `2026-11-27T11:42:51.123Z`.
pub(crate) fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (year, month, day, h, m, s) = crate::civil_time::utc_parts(secs);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}

/// Every shard a map names, in the map's order (with repeats).
fn map_shards(map: &ShardMap) -> Vec<&str> {
    match map {
        ShardMap::Hash(shards) => shards.iter().map(String::as_str).collect(),
        ShardMap::Range(parts) => parts.iter().map(|p| p.shard.as_str()).collect(),
        ShardMap::List { values, default } => {
            values.iter().map(|(_, s)| s.as_str()).chain(default.as_deref()).collect()
        }
    }
}

/// A shard map the way `SHARD TABLE ... USING` writes it:
/// `HASH (s1, s2)`, `RANGE (s1 TO 100, s2 FROM 100)`,
/// `LIST (s1 VALUES ('eu', 'uk'), DEFAULT s2)`.
pub(crate) fn render_map(map: &ShardMap) -> String {
    match map {
        ShardMap::Hash(shards) => format!("HASH ({})", shards.join(", ")),
        ShardMap::Range(parts) => {
            let parts: Vec<String> = parts
                .iter()
                .map(|p| {
                    let mut s = p.shard.clone();
                    if let Some(from) = &p.from {
                        let _ = write!(s, " FROM {}", render_value(from));
                    }
                    if let Some(to) = &p.to {
                        let _ = write!(s, " TO {}", render_value(to));
                    }
                    s
                })
                .collect();
            format!("RANGE ({})", parts.join(", "))
        }
        ShardMap::List { values, default } => {
            // Values grouped by shard, shards in order of first appearance.
            let mut order: Vec<&str> = Vec::new();
            let mut by_shard: BTreeMap<&str, Vec<String>> = BTreeMap::new();
            for (v, s) in values {
                if !order.contains(&s.as_str()) {
                    order.push(s);
                }
                by_shard.entry(s).or_default().push(render_value(v));
            }
            let mut parts: Vec<String> =
                order.iter().map(|s| format!("{s} VALUES ({})", by_shard[s].join(", "))).collect();
            if let Some(d) = default {
                parts.push(format!("DEFAULT {d}"));
            }
            format!("LIST ({})", parts.join(", "))
        }
    }
}

fn render_value(v: &KeyValue) -> String {
    match v {
        KeyValue::Int(i) => i.to_string(),
        KeyValue::Text(s) => format!("'{}'", s.replace('\'', "''")),
        KeyValue::Uuid(u) => {
            let h = format!("{u:032x}");
            format!("'{}-{}-{}-{}-{}'", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::state::RangePart;

    #[test]
    fn maps_read_like_the_command() {
        assert_eq!(render_map(&ShardMap::Hash(vec!["s1".into(), "s2".into()])), "HASH (s1, s2)");
        let range = ShardMap::Range(vec![
            RangePart { from: None, to: Some(KeyValue::Int(-5)), shard: "s1".into() },
            RangePart { from: Some(KeyValue::Int(-5)), to: None, shard: "s2".into() },
        ]);
        assert_eq!(render_map(&range), "RANGE (s1 TO -5, s2 FROM -5)");
        let list = ShardMap::List {
            values: vec![
                (KeyValue::Text("eu".into()), "s1".into()),
                (KeyValue::Text("o'k".into()), "s2".into()),
                (KeyValue::Text("uk".into()), "s1".into()),
            ],
            default: Some("s3".into()),
        };
        assert_eq!(render_map(&list), "LIST (s1 VALUES ('eu', 'uk'), s2 VALUES ('o''k'), DEFAULT s3)");
        let uuid = ShardMap::List { values: vec![(KeyValue::Uuid(10), "s1".into())], default: None };
        assert_eq!(render_map(&uuid), "LIST (s1 VALUES ('00000000-0000-0000-0000-00000000000a'))");
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_764_235_230_042), "2025-11-27T09:20:30.042Z");
    }
}
