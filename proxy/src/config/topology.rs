//! The `[topology]` and `[health]` sections: regions, shards, PostgreSQL
//! nodes and sharding rules, validated into a [`router::topology::Topology`].
//!
//! A config with only `[backend] address` is the one-shard case: a shard
//! `default` whose primary is that address.

use std::time::Duration;

use router::key::{KeyType, KeyValue, Literal};
use router::topology::{
    Fallback, PgNode, RangePart, ReplicaPolicy, Role, Shard, ShardId, ShardMap, TableRule, Topology,
};
use serde::Deserialize;

use super::{ConfigError, parse_duration, parse_size};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) struct RawTopology {
    default_shard: Option<String>,
    #[serde(default = "default_max_replica_lag")]
    max_replica_lag: String,
    #[serde(default = "default_max_replica_lag_time")]
    max_replica_lag_time: String,
    #[serde(default)]
    replica_fallback: RawFallback,
    #[serde(default)]
    regions: Vec<String>,
    #[serde(default)]
    shard: Vec<RawShard>,
    #[serde(default)]
    node: Vec<RawNode>,
    #[serde(default)]
    table: Vec<RawTable>,
}

fn default_max_replica_lag() -> String {
    "16MB".into()
}
fn default_max_replica_lag_time() -> String {
    "10s".into()
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawFallback {
    #[default]
    Primary,
    Fail,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawShard {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawNode {
    name: String,
    address: String,
    shard: String,
    region: String,
    role: RawRole,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRole {
    Primary,
    Replica,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawTable {
    /// `table` or `schema.table`.
    name: String,
    column: String,
    #[serde(rename = "type")]
    key_type: RawKeyType,
    hash: Option<Vec<String>>,
    range: Option<Vec<RawRange>>,
    list: Option<Vec<RawList>>,
    list_default: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawKeyType {
    Int,
    Text,
    Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawRange {
    from: Option<toml::Value>,
    to: Option<toml::Value>,
    shard: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawList {
    values: Vec<toml::Value>,
    shard: String,
}

/// `[health]`: how every node probes every PostgreSQL server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) struct RawHealth {
    #[serde(default = "default_probe_interval")]
    probe_interval: String,
    #[serde(default = "default_probe_timeout")]
    probe_timeout: String,
    user: Option<String>,
    #[serde(default = "default_probe_database")]
    database: String,
}

fn default_probe_interval() -> String {
    "500ms".into()
}
fn default_probe_timeout() -> String {
    "1s".into()
}
fn default_probe_database() -> String {
    "postgres".into()
}

impl Default for RawHealth {
    fn default() -> Self {
        RawHealth {
            probe_interval: default_probe_interval(),
            probe_timeout: default_probe_timeout(),
            user: None,
            database: default_probe_database(),
        }
    }
}

/// Validated `[health]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub probe_interval: Duration,
    /// A probe that takes longer counts as a failure.
    pub probe_timeout: Duration,
    /// The user (from the users file, with its backend password) probes log
    /// in as; `None` turns probing off (then replicas are never used).
    pub user: Option<String>,
    pub database: String,
}

impl RawHealth {
    pub(super) fn validate(self) -> Result<HealthConfig, ConfigError> {
        let probe_interval = parse_duration("health.probe_interval", &self.probe_interval)?;
        if probe_interval < Duration::from_millis(10) {
            return Err(invalid("health.probe_interval", "must be at least 10ms"));
        }
        Ok(HealthConfig {
            probe_interval,
            probe_timeout: parse_duration("health.probe_timeout", &self.probe_timeout)?,
            user: self.user.filter(|u| !u.is_empty()),
            database: self.database,
        })
    }
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// The one-shard topology of a config with only `[backend] address`.
pub(super) fn single_primary(address: &str, region: &str) -> Topology {
    Topology {
        version: 1,
        regions: vec![region.to_owned()],
        shards: vec![Shard { name: "default".into(), primary: Some(0), replicas: vec![], epoch: 1 }],
        nodes: vec![PgNode {
            name: "primary".into(),
            address: address.to_owned(),
            region: region.to_owned(),
            shard: 0,
            role: Role::Primary,
        }],
        tables: vec![],
        default_shard: 0,
        replica_policy: ReplicaPolicy {
            max_lag_bytes: 16 << 20,
            max_lag: Duration::from_secs(10),
            fallback: Fallback::Primary,
        },
    }
}

/// No shards at all: a cluster node that has not learned the topology yet
/// (its sessions are refused with `57P03` until it has).
pub(super) fn empty(region: &str) -> Topology {
    Topology {
        version: 0,
        regions: vec![region.to_owned()],
        shards: vec![],
        nodes: vec![],
        tables: vec![],
        default_shard: 0,
        replica_policy: single_primary("127.0.0.1:1", region).replica_policy,
    }
}

impl RawTopology {
    pub(super) fn validate(self) -> Result<Topology, ConfigError> {
        if self.shard.is_empty() {
            return Err(invalid("topology.shard", "at least one [[topology.shard]] is needed"));
        }
        let mut shards: Vec<Shard> = Vec::new();
        for s in &self.shard {
            if s.name.trim().is_empty() {
                return Err(invalid("topology.shard.name", "must not be empty"));
            }
            if shards.iter().any(|x| x.name == s.name) {
                return Err(invalid("topology.shard.name", format!("shard {:?} is defined twice", s.name)));
            }
            shards.push(Shard { name: s.name.clone(), primary: None, replicas: vec![], epoch: 1 });
        }
        let names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
        let shard_id = |key: &'static str, name: &str| -> Result<ShardId, ConfigError> {
            names.iter().position(|s| s == name).ok_or_else(|| invalid(key, format!("no shard named {name:?}")))
        };
        let mut nodes: Vec<PgNode> = Vec::new();
        for n in &self.node {
            if nodes.iter().any(|x| x.name == n.name) {
                return Err(invalid("topology.node.name", format!("node {:?} is defined twice", n.name)));
            }
            if let Err(reason) = crate::backend::ServerAddr::parse(&n.address) {
                return Err(ConfigError::Address { key: "topology.node.address", value: n.address.clone(), reason });
            }
            let role = match n.role {
                RawRole::Primary => Role::Primary,
                RawRole::Replica => Role::Replica,
            };
            nodes.push(PgNode {
                name: n.name.clone(),
                address: n.address.clone(),
                region: n.region.clone(),
                shard: shard_id("topology.node.shard", &n.shard)?,
                role,
            });
        }
        for (id, n) in nodes.iter().enumerate() {
            let shard = &mut shards[n.shard];
            match n.role {
                Role::Primary if shard.primary.is_some() => {
                    return Err(invalid("topology.node.role", format!("shard {:?} has two primaries", shard.name)));
                }
                Role::Primary => shard.primary = Some(id),
                Role::Replica => shard.replicas.push(id),
            }
        }
        if let Some(s) = shards.iter().find(|s| s.primary.is_none()) {
            return Err(invalid("topology.node", format!("shard {:?} has no primary", s.name)));
        }
        let mut regions = self.regions.clone();
        for n in &nodes {
            if !regions.contains(&n.region) {
                if !self.regions.is_empty() {
                    return Err(invalid(
                        "topology.node.region",
                        format!("node {:?} is in region {:?}, which topology.regions does not list", n.name, n.region),
                    ));
                }
                regions.push(n.region.clone());
            }
        }
        let default_shard = match &self.default_shard {
            Some(name) => shard_id("topology.default_shard", name)?,
            None => 0,
        };
        let mut tables: Vec<TableRule> = Vec::new();
        for t in self.table {
            let rule = table_rule(t, &shard_id)?;
            if tables.iter().any(|x| x.schema == rule.schema && x.table == rule.table) {
                return Err(invalid("topology.table.name", format!("table {:?} is sharded twice", rule.table)));
            }
            tables.push(rule);
        }
        let max_lag_bytes = parse_size("topology.max_replica_lag", &self.max_replica_lag)? as u64;
        Ok(Topology {
            version: 1,
            regions,
            shards,
            nodes,
            tables,
            default_shard,
            replica_policy: ReplicaPolicy {
                max_lag_bytes,
                max_lag: parse_duration("topology.max_replica_lag_time", &self.max_replica_lag_time)?,
                fallback: match self.replica_fallback {
                    RawFallback::Primary => Fallback::Primary,
                    RawFallback::Fail => Fallback::Fail,
                },
            },
        })
    }
}

fn table_rule(
    t: RawTable,
    shard_id: &dyn Fn(&'static str, &str) -> Result<ShardId, ConfigError>,
) -> Result<TableRule, ConfigError> {
    let name = t.name.trim().to_ascii_lowercase();
    let (schema, table) = match name.split_once('.') {
        Some((s, t)) => (Some(s.to_owned()), t.to_owned()),
        None => (None, name),
    };
    if table.is_empty() || t.column.trim().is_empty() {
        return Err(invalid("topology.table", "name and column must not be empty"));
    }
    let key_type = match t.key_type {
        RawKeyType::Int => KeyType::Int,
        RawKeyType::Text => KeyType::Text,
        RawKeyType::Uuid => KeyType::Uuid,
    };
    let key = |key: &'static str, v: &toml::Value| -> Result<KeyValue, ConfigError> {
        let lit = match v {
            toml::Value::Integer(i) => Literal::Number(i.to_string()),
            toml::Value::String(s) => Literal::String(s.clone()),
            other => return Err(invalid(key, format!("{other} is not a {} key", key_type.as_str()))),
        };
        KeyValue::from_literal(&lit, key_type).map_err(|e| invalid(key, e.to_string()))
    };
    let maps = [t.hash.is_some(), t.range.is_some(), t.list.is_some()].iter().filter(|x| **x).count();
    if maps != 1 {
        return Err(invalid("topology.table", format!("table {table:?} needs exactly one of hash, range or list")));
    }
    let map = if let Some(hash) = t.hash {
        if hash.is_empty() {
            return Err(invalid("topology.table.hash", "lists no shards"));
        }
        ShardMap::Hash(hash.iter().map(|s| shard_id("topology.table.hash", s)).collect::<Result<_, _>>()?)
    } else if let Some(range) = t.range {
        let mut parts = Vec::new();
        for r in range {
            let from = r.from.as_ref().map(|v| key("topology.table.range.from", v)).transpose()?;
            let to = r.to.as_ref().map(|v| key("topology.table.range.to", v)).transpose()?;
            if let (Some(f), Some(t)) = (&from, &to)
                && f >= t
            {
                return Err(invalid("topology.table.range", format!("empty range from {f} to {t}")));
            }
            parts.push(RangePart { from, to, shard: shard_id("topology.table.range.shard", &r.shard)? });
        }
        ShardMap::Range(parts)
    } else {
        let mut values = Vec::new();
        for l in t.list.unwrap_or_default() {
            let shard = shard_id("topology.table.list.shard", &l.shard)?;
            for v in &l.values {
                values.push((key("topology.table.list.values", v)?, shard));
            }
        }
        let default = t.list_default.as_deref().map(|s| shard_id("topology.table.list_default", s)).transpose()?;
        ShardMap::List { values, default }
    };
    Ok(TableRule { schema, table, column: t.column.trim().to_ascii_lowercase(), key_type, map })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use router::key::KeyValue;
    use router::topology::{Role, ShardMap};

    use crate::config::Config;

    const BASE: &str = r#"
        [node]
        name = "n1"
        [listen]
        address = "127.0.0.1:6432"
        [auth]
        users_file = "users.toml"
        [health]
        user = "app"
        [topology]
        max_replica_lag = "1MB"
        [[topology.shard]]
        name = "s1"
        [[topology.shard]]
        name = "s2"
        [[topology.node]]
        name = "a"
        address = "127.0.0.1:5432"
        shard = "s1"
        region = "us-east"
        role = "primary"
        [[topology.node]]
        name = "b"
        address = "127.0.0.1:5433"
        shard = "s1"
        region = "eu-west"
        role = "replica"
        [[topology.node]]
        name = "c"
        address = "127.0.0.1:5434"
        shard = "s2"
        region = "eu-west"
        role = "primary"
    "#;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}\n{extra}"), Path::new(".")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_topology_parses() {
        let c = parse(
            r#"
            [[topology.table]]
            name = "app.owners"
            column = "Owner_ID"
            type = "int"
            hash = ["s1", "s2"]
            [[topology.table]]
            name = "events"
            column = "region"
            type = "text"
            list = [{ values = ["eu", "uk"], shard = "s2" }]
            list_default = "s1"
            [[topology.table]]
            name = "orders"
            column = "id"
            type = "int"
            range = [{ to = 1000, shard = "s1" }, { from = 1000, shard = "s2" }]
        "#,
        )
        .unwrap();
        let t = &c.topology;
        assert_eq!(t.shards.len(), 2);
        assert_eq!(t.shards[0].primary, Some(0));
        assert_eq!(t.shards[0].replicas, vec![1]);
        assert_eq!(t.nodes[1].role, Role::Replica);
        assert_eq!(t.regions, vec!["us-east", "eu-west"]);
        assert_eq!(t.replica_policy.max_lag_bytes, 1 << 20);
        assert_eq!(t.tables[0].schema.as_deref(), Some("app"));
        assert_eq!(t.tables[0].column, "owner_id");
        assert_eq!(t.tables[0].map, ShardMap::Hash(vec![0, 1]));
        assert_eq!(t.tables[1].map.shard_for(&KeyValue::Text("uk".into())), Some(1));
        assert_eq!(t.tables[1].map.shard_for(&KeyValue::Text("us".into())), Some(0));
        assert_eq!(t.tables[2].map.shard_for(&KeyValue::Int(999)), Some(0));
        assert_eq!(t.tables[2].map.shard_for(&KeyValue::Int(1000)), Some(1));
        assert_eq!(c.health.user.as_deref(), Some("app"));
    }

    #[test]
    fn mistakes_name_their_key() {
        let two_primaries =
            "[[topology.node]]\nname = \"d\"\naddress = \"h:1\"\nshard = \"s2\"\nregion = \"x\"\nrole = \"primary\"";
        assert!(parse(two_primaries).unwrap_err().contains("two primaries"));
        let unknown_shard =
            "[[topology.node]]\nname = \"d\"\naddress = \"h:1\"\nshard = \"s9\"\nregion = \"x\"\nrole = \"replica\"";
        assert!(parse(unknown_shard).unwrap_err().contains("topology.node.shard"));
        let two_maps = "[[topology.table]]\nname = \"t\"\ncolumn = \"k\"\ntype = \"int\"\nhash = [\"s1\"]\nlist_default = \"s1\"\nlist = []";
        assert!(parse(two_maps).unwrap_err().contains("exactly one of hash, range or list"));
        let bad_key = "[[topology.table]]\nname = \"t\"\ncolumn = \"k\"\ntype = \"int\"\nrange = [{ to = \"x\", shard = \"s1\" }]";
        assert!(parse(bad_key).unwrap_err().contains("topology.table.range.to"));
        let both = format!("{BASE}\n[backend]\naddress = \"h:1\"");
        assert!(Config::parse(&both, Path::new(".")).unwrap_err().to_string().contains("not both"));
    }
}
