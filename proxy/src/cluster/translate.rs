//! Between the replicated topology (`consensus::TopologyState`, by name)
//! and the router's (`router::topology::Topology`, by index), both ways:
//!
//! - [`seed_changes`]: a config file's topology as the changes that build
//!   it, proposed once as the `Bootstrap` of a new cluster;
//! - [`to_router`]: the committed state as the router routes it. Banned
//!   nodes and fenced former primaries are left out; a fenced shard has no
//!   primary (writes for it wait, then are refused).

use consensus::Change;
use consensus::state::{self, TopologyState};
use router::key::KeyValue;
use router::topology::{self as rt, ReplicaPolicy, Topology};

/// Priority given to the nodes of a seeded topology (the config file has
/// no priorities): all equal, and above 0 (never promoted automatically).
const SEED_PRIORITY: u32 = 100;

/// The changes that build `t` from an empty topology, in an order the state
/// machine accepts: regions, shards, nodes (each shard's primary first),
/// the default shard, sharding rules.
pub fn seed_changes(t: &Topology) -> Vec<Change> {
    let mut changes: Vec<Change> = t.regions.iter().map(|r| Change::AddRegion { name: r.clone() }).collect();
    for s in &t.shards {
        changes.push(Change::CreateShard { name: s.name.clone(), policy: state::ShardPolicy::default() });
    }
    let mut nodes: Vec<&rt::PgNode> = t.nodes.iter().collect();
    nodes.sort_by_key(|n| n.role != rt::Role::Primary);
    for n in nodes {
        changes.push(Change::AddNode {
            name: n.name.clone(),
            address: n.address.clone(),
            shard: t.shards[n.shard].name.clone(),
            region: n.region.clone(),
            role: match n.role {
                rt::Role::Primary => state::Role::Primary,
                rt::Role::Replica => state::Role::Replica,
            },
            priority: SEED_PRIORITY,
        });
    }
    if let Some(default) = t.shards.get(t.default_shard) {
        changes.push(Change::SetDefaultShard { name: default.name.clone() });
    }
    for rule in &t.tables {
        let r = rule_to_state(rule, t);
        changes.push(Change::ShardTable {
            schema: r.schema,
            table: r.table,
            column: r.column,
            key_type: r.key_type,
            map: r.map,
        });
    }
    changes
}

/// A sharding rule of a router topology in the replicated form (shards by
/// name; an index `t` does not know reads `#<index>`).
pub fn rule_to_state(rule: &rt::TableRule, t: &Topology) -> state::TableRule {
    let name = |id: rt::ShardId| t.shards.get(id).map_or_else(|| format!("#{id}"), |s| s.name.clone());
    let map = match &rule.map {
        rt::ShardMap::Hash(ids) => state::ShardMap::Hash(ids.iter().map(|&i| name(i)).collect()),
        rt::ShardMap::Range(parts) => state::ShardMap::Range(
            parts
                .iter()
                .map(|p| state::RangePart {
                    from: p.from.as_ref().map(key_to_state),
                    to: p.to.as_ref().map(key_to_state),
                    shard: name(p.shard),
                })
                .collect(),
        ),
        rt::ShardMap::List { values, default } => state::ShardMap::List {
            values: values.iter().map(|(v, i)| (key_to_state(v), name(*i))).collect(),
            default: default.map(name),
        },
    };
    state::TableRule {
        schema: rule.schema.clone(),
        table: rule.table.clone(),
        column: rule.column.clone(),
        key_type: match rule.key_type {
            router::key::KeyType::Int => state::KeyType::Int,
            router::key::KeyType::Text => state::KeyType::Text,
            router::key::KeyType::Uuid => state::KeyType::Uuid,
        },
        map,
    }
}

fn key_to_state(v: &KeyValue) -> state::KeyValue {
    match v {
        KeyValue::Int(i) => state::KeyValue::Int(*i),
        KeyValue::Text(s) => state::KeyValue::Text(s.clone()),
        KeyValue::Uuid(b) => state::KeyValue::Uuid(u128::from_be_bytes(*b)),
    }
}

fn key_to_router(v: &state::KeyValue) -> KeyValue {
    match v {
        state::KeyValue::Int(i) => KeyValue::Int(*i),
        state::KeyValue::Text(s) => KeyValue::Text(s.clone()),
        state::KeyValue::Uuid(u) => KeyValue::Uuid(u.to_be_bytes()),
    }
}

/// The committed topology as the router uses it, with this node's replica
/// policy. `version` is the router topology's own (it rises on every
/// publication, whatever its cause). `None` while the cluster has no shard.
pub fn to_router(s: &TopologyState, version: u64, replica_policy: ReplicaPolicy) -> Option<Topology> {
    if s.shards.is_empty() {
        return None;
    }
    let shard_ids: Vec<&str> = s.shards.keys().map(String::as_str).collect();
    let shard_id = |name: &str| shard_ids.iter().position(|s| *s == name);
    let mut shards: Vec<rt::Shard> = s
        .shards
        .values()
        .map(|sh| rt::Shard { name: sh.name.clone(), primary: None, replicas: Vec::new(), epoch: sh.epoch })
        .collect();
    let mut nodes: Vec<rt::PgNode> = Vec::new();
    for n in s.nodes.values() {
        let Some(shard) = shard_id(&n.shard) else { continue };
        // A region cut off by an outage drill is as good as gone.
        if n.banned || n.state == state::NodeState::Fenced || s.cut_off(n) {
            continue;
        }
        let sh = &s.shards[&n.shard];
        let is_primary = sh.primary.as_deref() == Some(n.name.as_str());
        if is_primary && sh.fenced {
            continue;
        }
        let id = nodes.len();
        nodes.push(rt::PgNode {
            name: n.name.clone(),
            address: n.address.clone(),
            region: n.region.clone(),
            shard,
            role: if is_primary { rt::Role::Primary } else { rt::Role::Replica },
        });
        if is_primary {
            shards[shard].primary = Some(id);
        } else {
            shards[shard].replicas.push(id);
        }
    }
    let tables = s
        .tables
        .values()
        .filter_map(|rule| {
            let map = match &rule.map {
                state::ShardMap::Hash(names) => {
                    rt::ShardMap::Hash(names.iter().map(|n| shard_id(n)).collect::<Option<Vec<_>>>()?)
                }
                state::ShardMap::Range(parts) => rt::ShardMap::Range(
                    parts
                        .iter()
                        .map(|p| {
                            Some(rt::RangePart {
                                from: p.from.as_ref().map(key_to_router),
                                to: p.to.as_ref().map(key_to_router),
                                shard: shard_id(&p.shard)?,
                            })
                        })
                        .collect::<Option<Vec<_>>>()?,
                ),
                state::ShardMap::List { values, default } => rt::ShardMap::List {
                    values: values
                        .iter()
                        .map(|(v, n)| Some((key_to_router(v), shard_id(n)?)))
                        .collect::<Option<Vec<_>>>()?,
                    default: match default {
                        Some(n) => Some(shard_id(n)?),
                        None => None,
                    },
                },
            };
            Some(rt::TableRule {
                schema: rule.schema.as_ref().map(|s| s.to_lowercase()),
                table: rule.table.to_lowercase(),
                column: rule.column.to_lowercase(),
                key_type: match rule.key_type {
                    state::KeyType::Int => router::key::KeyType::Int,
                    state::KeyType::Text => router::key::KeyType::Text,
                    state::KeyType::Uuid => router::key::KeyType::Uuid,
                },
                map,
            })
        })
        .collect();
    let default_shard = s.default_shard.as_deref().and_then(shard_id).unwrap_or(0);
    Some(Topology {
        version,
        regions: s.regions.iter().cloned().collect(),
        shards,
        nodes,
        tables,
        default_shard,
        replica_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::Command;

    const CONFIG: &str = r#"
        [node]
        name = "m1"
        [listen]
        address = "127.0.0.1:6432"
        [auth]
        users_file = "users.toml"
        [topology]
        default_shard = "s2"
        [[topology.shard]]
        name = "s1"
        [[topology.shard]]
        name = "s2"
        [[topology.node]]
        name = "a-replica"
        address = "127.0.0.1:5433"
        shard = "s1"
        region = "eu"
        role = "replica"
        [[topology.node]]
        name = "a-primary"
        address = "127.0.0.1:5432"
        shard = "s1"
        region = "us"
        role = "primary"
        [[topology.node]]
        name = "b-primary"
        address = "127.0.0.1:5434"
        shard = "s2"
        region = "us"
        role = "primary"
        [[topology.table]]
        name = "app.accounts"
        column = "owner_id"
        type = "int"
        hash = ["s1", "s2"]
        [[topology.table]]
        name = "events"
        column = "region"
        type = "text"
        list = [{ values = ["eu"], shard = "s1" }]
        list_default = "s2"
        [[topology.table]]
        name = "ledger"
        column = "id"
        type = "int"
        range = [{ to = 1000, shard = "s1" }, { from = 1000, shard = "s2" }]
    "#;

    fn config_topology() -> Topology {
        crate::config::Config::parse(CONFIG, std::path::Path::new(".")).expect("config parses").topology
    }

    #[test]
    fn a_seeded_cluster_routes_like_its_config() {
        let t = config_topology();
        let mut state = TopologyState::default();
        let cmd = Command {
            actor: "bootstrap".into(),
            origin: "test".into(),
            at: 0,
            change: Change::Bootstrap { changes: seed_changes(&t) },
        };
        state.apply(&cmd).expect("the seed applies");
        let routed = to_router(&state, t.version, t.replica_policy.clone()).expect("shards");
        // Same shards, nodes and rules, up to the order of names.
        let names = |t: &Topology| {
            let mut v: Vec<(String, String, String)> = t
                .nodes
                .iter()
                .map(|n| (n.name.clone(), t.shards[n.shard].name.clone(), n.role.as_str().to_owned()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&routed), names(&t));
        assert_eq!(routed.tables.len(), t.tables.len());
        assert_eq!(routed.shards[routed.default_shard].name, t.shards[t.default_shard].name);
        let shard_names = |t: &Topology, map: &rt::ShardMap| -> Vec<String> {
            match map {
                rt::ShardMap::Hash(ids) => ids.iter().map(|&i| t.shards[i].name.clone()).collect(),
                rt::ShardMap::Range(parts) => parts.iter().map(|p| t.shards[p.shard].name.clone()).collect(),
                rt::ShardMap::List { values, default } => {
                    values.iter().map(|(_, i)| *i).chain(*default).map(|i| t.shards[i].name.clone()).collect()
                }
            }
        };
        for rule in &t.tables {
            let other = routed.tables.iter().find(|r| r.table == rule.table).expect("rule kept");
            assert_eq!((&other.schema, &other.column, other.key_type), (&rule.schema, &rule.column, rule.key_type));
            assert_eq!(shard_names(&routed, &other.map), shard_names(&t, &rule.map), "{}", rule.table);
        }
    }

    #[test]
    fn fenced_shards_have_no_primary_and_banned_nodes_are_not_routed() {
        let t = config_topology();
        let mut state = TopologyState::default();
        let at = |change| Command { actor: "dba".into(), origin: "test".into(), at: 0, change };
        state.apply(&at(Change::Bootstrap { changes: seed_changes(&t) })).expect("seed");
        let shard = t.shards[0].name.clone();
        let epoch = state.shards[&shard].epoch + 1;
        state.apply(&at(Change::FenceShard { shard: shard.clone(), epoch })).expect("fence");
        let replica = t.nodes.iter().find(|n| n.role == rt::Role::Replica).expect("a replica").name.clone();
        state.apply(&at(Change::BanNode { name: replica.clone() })).expect("ban");
        let routed = to_router(&state, 2, t.replica_policy.clone()).expect("shards");
        let sid = routed.shards.iter().position(|s| s.name == shard).expect("shard");
        assert_eq!(routed.shards[sid].primary, None);
        assert!(routed.nodes.iter().all(|n| n.name != replica));
        assert_eq!(routed.shards[sid].epoch, epoch);
    }
}
