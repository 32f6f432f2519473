//! The topology state machine: a plain value that every member builds by
//! applying the same committed [`Command`](crate::Command)s in the same
//! order.
//!
//! [`TopologyState::apply`] is a pure function of the state and the command
//! (no clock, no I/O, no randomness), and it is all or nothing: a refused
//! command returns a [`CommandError`] and leaves the state exactly as it
//! was. The whole value is what a snapshot holds (as JSON) and what the data
//! path receives on the topology `watch` channel.
//!
//! Names are compared exactly; the admin SQL layer folds identifier case
//! before it proposes a command.

mod apply;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::apply::{Applied, CommandError};
use crate::types::{Change, Epoch, UnixMillis};

/// How many entries [`TopologyState::events`] keeps; older ones are dropped.
pub const EVENT_LOG_LIMIT: usize = 1000;
/// How many entries [`TopologyState::audit`] keeps; older ones are dropped.
pub const AUDIT_LOG_LIMIT: usize = 1000;

/// The replicated topology: regions, PostgreSQL nodes, shards with their
/// primaries and epochs, sharding rules, and the event and audit logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyState {
    /// Raised by every command that changes something; the audit entry of
    /// that command carries the same number.
    pub version: u64,
    pub regions: BTreeSet<String>,
    /// By name.
    pub shards: BTreeMap<String, Shard>,
    /// PostgreSQL servers, by name.
    pub nodes: BTreeMap<String, PgNode>,
    /// Sharding rules, by `schema.table` (or `table` for a rule without a
    /// schema).
    pub tables: BTreeMap<String, TableRule>,
    /// Where unsharded tables and utility statements live.
    pub default_shard: Option<String>,
    /// `PAUSE` without a shard: every shard holds new transactions.
    pub paused: bool,
    /// Failovers, fences, health verdicts, drills: the newest
    /// [`EVENT_LOG_LIMIT`].
    pub events: VecDeque<Event>,
    /// Every change, who made it and from where: the newest
    /// [`AUDIT_LOG_LIMIT`].
    pub audit: VecDeque<AuditEntry>,
    /// Id of the next event; ids are never reused, even once dropped.
    pub next_event_id: u64,
    /// Client users every node accepts (on top of its users file), by
    /// name: verifiers, never passwords.
    #[serde(default)]
    pub users: BTreeMap<String, UserRecord>,
    /// What each Meridian member last reported about reaching each
    /// PostgreSQL node: by node name, then member id; `true` = reachable.
    /// The failure detector on the Raft leader reads it (a primary is dead
    /// only when a majority of members cannot reach it for long enough).
    #[serde(default)]
    pub reach: BTreeMap<String, BTreeMap<u64, bool>>,
}

/// A client user as the cluster knows it. The secret is what a users file
/// holds (a SCRAM-SHA-256 verifier or an md5 hash), never a password; how
/// Meridian logs in to PostgreSQL as this user stays in each node's users
/// file.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub auth: UserAuth,
    /// `SCRAM-SHA-256$...` or `md5...`; `None` with `trust`.
    pub secret: Option<String>,
    /// May use the admin console.
    pub admin: bool,
    /// `transaction` or `session`; `None`: the node's default.
    pub pool_mode: Option<String>,
}

impl fmt::Debug for UserRecord {
    /// Without the secret: a verifier is enough to impersonate a server.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("auth", &self.auth)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("admin", &self.admin)
            .field("pool_mode", &self.pool_mode)
            .finish()
    }
}

/// How a client user proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UserAuth {
    ScramSha256,
    Md5,
    Trust,
}

impl fmt::Display for UserAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UserAuth::ScramSha256 => "scram-sha-256",
            UserAuth::Md5 => "md5",
            UserAuth::Trust => "trust",
        })
    }
}

impl TopologyState {
    /// The PostgreSQL nodes of `shard`, by name.
    pub fn nodes_of<'a>(&'a self, shard: &'a str) -> impl Iterator<Item = &'a PgNode> + 'a {
        self.nodes.values().filter(move |node| node.shard == shard)
    }

    /// The node that may take writes for `shard` now: its primary, unless
    /// the shard is fenced. `None` also for an unknown shard.
    pub fn writable_primary(&self, shard: &str) -> Option<&PgNode> {
        let shard = self.shards.get(shard)?;
        if shard.fenced {
            return None;
        }
        self.nodes.get(shard.primary.as_deref()?)
    }

    /// Whether new transactions on `shard` must wait: the cluster or the
    /// shard is paused.
    pub fn is_paused(&self, shard: &str) -> bool {
        self.paused || self.shards.get(shard).is_some_and(|s| s.paused)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub name: String,
    pub policy: ShardPolicy,
    /// The node last made primary. While `fenced`, it is kept here (it is
    /// the node being replaced) but takes no writes.
    pub primary: Option<String>,
    /// Raised on every change of primary and every fence. 0 until the
    /// shard first has a primary.
    pub epoch: Epoch,
    /// No node may take writes for this shard: a failover is under way.
    pub fenced: bool,
    /// `PAUSE SHARD`: new transactions wait.
    pub paused: bool,
}

/// A shard's durability and recovery targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardPolicy {
    pub durability: Durability,
    /// With `async`, refuse an automatic failover that would lose more WAL
    /// than this, in bytes.
    pub max_lag_on_failover: u64,
    /// How long the shard may be without a writable primary, as judged by
    /// drills.
    pub rto_target: Duration,
    /// How much recent work a failover may lose, as judged by drills. Zero
    /// needs `durability = sync`.
    pub rpo_target: Duration,
}

impl Default for ShardPolicy {
    /// `async`, 16 MiB, RTO 10 s, RPO 10 s: what `CREATE SHARD` without
    /// `WITH` gets.
    fn default() -> Self {
        ShardPolicy {
            durability: Durability::Async,
            max_lag_on_failover: 16 * 1024 * 1024,
            rto_target: Duration::from_secs(10),
            rpo_target: Duration::from_secs(10),
        }
    }
}

/// `ALTER SHARD ... SET (...)`: the fields to change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub durability: Option<Durability>,
    pub max_lag_on_failover: Option<u64>,
    pub rto_target: Option<Duration>,
    pub rpo_target: Option<Duration>,
}

impl PolicyChange {
    /// `policy` with these changes made.
    pub fn applied_to(&self, policy: ShardPolicy) -> ShardPolicy {
        ShardPolicy {
            durability: self.durability.unwrap_or(policy.durability),
            max_lag_on_failover: self.max_lag_on_failover.unwrap_or(policy.max_lag_on_failover),
            rto_target: self.rto_target.unwrap_or(policy.rto_target),
            rpo_target: self.rpo_target.unwrap_or(policy.rpo_target),
        }
    }
}

/// How commits on a shard's primary are acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// `synchronous_standby_names = 'ANY 1 (...)'`: every acknowledged
    /// commit is on a standby, so a failover loses nothing.
    Sync,
    /// Standbys may lag; a failover may lose up to `max_lag_on_failover`.
    Async,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::Sync => "sync",
            Durability::Async => "async",
        })
    }
}

/// A PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgNode {
    pub name: String,
    /// `host:port`.
    pub address: String,
    pub region: String,
    pub shard: String,
    pub role: Role,
    pub state: NodeState,
    /// Higher is preferred when choosing whom to promote; 0 is never chosen
    /// automatically (an operator may still name it).
    pub priority: u32,
    /// `BAN NODE`: not routed to and not promoted.
    pub banned: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        })
    }
}

/// What the cluster has agreed about a node (not what one probe saw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Up,
    /// A majority of Meridian nodes could not reach it.
    Down,
    /// A former primary, cut off from writes until it is rewound and
    /// rejoined (`RejoinNode`).
    Fenced,
}

impl fmt::Display for NodeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Fenced => "fenced",
        })
    }
}

/// A sharded table: which column is the key and how keys map to shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRule {
    /// `None` matches the table in any schema.
    pub schema: Option<String>,
    pub table: String,
    pub column: String,
    pub key_type: KeyType,
    pub map: ShardMap,
}

/// The type of a shard key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    /// `int2`, `int4`, `int8`.
    Int,
    Text,
    Uuid,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Int => "int",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        })
    }
}

/// A shard key value in a range bound or a list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyValue {
    Int(i64),
    Text(String),
    /// The uuid's 16 bytes, big-endian, which is also PostgreSQL's order.
    Uuid(u128),
}

impl KeyValue {
    pub fn key_type(&self) -> KeyType {
        match self {
            KeyValue::Int(_) => KeyType::Int,
            KeyValue::Text(_) => KeyType::Text,
            KeyValue::Uuid(_) => KeyType::Uuid,
        }
    }
}

/// How key values map to shards (named here; the proxy turns names into the
/// router's indexes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardMap {
    /// PostgreSQL's `PARTITION BY HASH`: the key whose partition hash has
    /// remainder `i` modulo `len()` lives on `shards[i]`.
    Hash(Vec<String>),
    /// Ranges `[from, to)`; `None` is unbounded. Ranges may not overlap.
    Range(Vec<RangePart>),
    /// Listed values; others go to `default`, or are an error without one.
    List { values: Vec<(KeyValue, String)>, default: Option<String> },
}

impl ShardMap {
    /// Every shard the map names, each once.
    pub fn shards(&self) -> BTreeSet<&str> {
        match self {
            ShardMap::Hash(shards) => shards.iter().map(String::as_str).collect(),
            ShardMap::Range(parts) => parts.iter().map(|part| part.shard.as_str()).collect(),
            ShardMap::List { values, default } => {
                values.iter().map(|(_, shard)| shard.as_str()).chain(default.as_deref()).collect()
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangePart {
    pub from: Option<KeyValue>,
    pub to: Option<KeyValue>,
    pub shard: String,
}

/// Something that happened to the cluster, for `SHOW EVENTS` and drill
/// reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    pub at: UnixMillis,
    pub actor: String,
    pub kind: EventKind,
    pub shard: Option<String>,
    pub node: Option<String>,
    pub summary: String,
    /// A failover's or drill's phases with their times, in order.
    pub phases: Vec<Phase>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A shard was fenced.
    Fence,
    /// A shard got a new primary.
    Promotion,
    /// A failover's report (the failover runtime records it).
    Failover,
    /// A planned switchover's report.
    Switchover,
    /// A drill's report.
    Drill,
    NodeDown,
    NodeUp,
    /// A fenced former primary came back as a replica.
    Rejoin,
    /// Anything else worth keeping.
    Note,
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EventKind::Fence => "fence",
            EventKind::Promotion => "promotion",
            EventKind::Failover => "failover",
            EventKind::Switchover => "switchover",
            EventKind::Drill => "drill",
            EventKind::NodeDown => "node_down",
            EventKind::NodeUp => "node_up",
            EventKind::Rejoin => "rejoin",
            EventKind::Note => "note",
        })
    }
}

/// One step of a failover or drill and when it finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub at: UnixMillis,
}

/// One change as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The topology version this change produced.
    pub version: u64,
    pub at: UnixMillis,
    pub actor: String,
    pub origin: String,
    pub change: Change,
}
