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
/// How many [`Report`]s [`TopologyState::reports`] keeps; older ones are
/// dropped.
pub const REPORT_LIMIT: usize = 500;

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
    /// Failover, switchover and drill reports (`SHOW FAILOVERS`, `SHOW
    /// DRILLS`): the newest [`REPORT_LIMIT`].
    #[serde(default)]
    pub reports: VecDeque<Report>,
    /// Id of the next report; ids are never reused.
    #[serde(default)]
    pub next_report_id: u64,
    /// A region cut off by `DRILL REGION 'r' OUTAGE`, while it lasts.
    #[serde(default)]
    pub outage: Option<Outage>,
}

/// A simulated region outage (a drill): every Meridian node treats the
/// region's PostgreSQL servers as unreachable and routes nothing to them,
/// and the region's own Meridian nodes cut themselves off from the Raft
/// group until `until` (they cannot hear that it ended before: they are
/// cut off).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outage {
    pub region: String,
    /// When it was committed.
    pub began: UnixMillis,
    /// When the region's Meridian nodes reconnect at the latest.
    pub until: UnixMillis,
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

    /// Whether `node` is in a region cut off by a drill's outage.
    pub fn cut_off(&self, node: &PgNode) -> bool {
        self.outage.as_ref().is_some_and(|o| o.region == node.region)
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

/// What one failover, switchover or drill did and how it measured up
/// against its shard's targets. Recorded with [`Change::RecordReport`]; the
/// state machine fills in `id`, `version`, `at` and `actor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub id: u64,
    /// The topology version the report was recorded at: how its proposer
    /// finds it.
    pub version: u64,
    /// When it was recorded.
    pub at: UnixMillis,
    /// Who ran it: `failover` for the control loop, else the admin role.
    pub actor: String,
    pub kind: ReportKind,
    pub shard: Option<String>,
    /// The region a region-outage drill cut off.
    pub region: Option<String>,
    pub old_primary: Option<String>,
    pub new_primary: Option<String>,
    /// The epoch the new primary was committed under (0: none).
    pub epoch: Epoch,
    pub outcome: Outcome,
    /// What happened, in a sentence or two (why it stopped, what was lost).
    pub detail: String,
    /// Each step and when it finished, in order.
    pub phases: Vec<Phase>,
    /// The client-visible write outage in milliseconds: for a drill, the
    /// longest gap between two writes its own writer had acknowledged; for
    /// a failover, from the first failed probe of the primary to the first
    /// commit on the new one; for a switchover, from the fence to the
    /// first commit. `None`: not measured.
    pub rto_ms: Option<u64>,
    /// WAL bytes the old primary had that the new one never got (`None`:
    /// unknown, the old primary's position was never seen).
    pub rpo_bytes: Option<u64>,
    /// Acknowledged commits missing on the new primary (drills count their
    /// own writes; `None`: not counted).
    pub rpo_commits: Option<u64>,
    /// The age of the oldest lost commit when the fault struck, in
    /// milliseconds (0 when nothing was lost; `None`: unknown).
    pub rpo_ms: Option<u64>,
    /// The shard's targets when it ran.
    pub rto_target_ms: u64,
    pub rpo_target_ms: u64,
    /// Whether it met both targets (`None`: not enough was measured to
    /// say). See [`Report::judge`].
    pub passed: Option<bool>,
    /// Writes the drill's writer had acknowledged.
    pub writes: Option<u64>,
    /// Other reports this one includes (the failovers of a drill).
    pub related: Vec<u64>,
}

impl Report {
    /// A report of `kind` for `shard`, with nothing measured yet.
    pub fn new(kind: ReportKind, shard: Option<&str>, policy: Option<&ShardPolicy>) -> Report {
        Report {
            id: 0,
            version: 0,
            at: 0,
            actor: String::new(),
            kind,
            shard: shard.map(str::to_owned),
            region: None,
            old_primary: None,
            new_primary: None,
            epoch: 0,
            outcome: Outcome::Completed,
            detail: String::new(),
            phases: Vec::new(),
            rto_ms: None,
            rpo_bytes: None,
            rpo_commits: None,
            rpo_ms: None,
            rto_target_ms: policy.map_or(0, |p| p.rto_target.as_millis() as u64),
            rpo_target_ms: policy.map_or(0, |p| p.rpo_target.as_millis() as u64),
            passed: None,
            writes: None,
            related: Vec::new(),
        }
    }

    /// Pass or fail against the targets: it must have completed, its
    /// outage must be within `rto_target`, and its loss within
    /// `rpo_target` (a zero target allows no lost commit and no lost
    /// byte). `None` when the outage or the loss was not measured.
    pub fn judge(&self) -> Option<bool> {
        if self.outcome != Outcome::Completed {
            return Some(false);
        }
        let rto_ok = self.rto_ms? <= self.rto_target_ms;
        // Counted acknowledged commits are the truth; bytes only when the
        // commits were not counted (a WAL difference may be unacknowledged
        // work).
        let lost = match (self.rpo_commits, self.rpo_bytes) {
            (Some(commits), _) => commits > 0,
            (None, Some(bytes)) => bytes > 0,
            (None, None) => return None,
        };
        let rpo_ok = if !lost {
            true
        } else if self.rpo_target_ms == 0 {
            false
        } else {
            self.rpo_ms? <= self.rpo_target_ms
        };
        Some(rto_ok && rpo_ok)
    }

    /// When the phase `name` finished, if it did.
    pub fn phase(&self, name: &str) -> Option<UnixMillis> {
        self.phases.iter().find(|p| p.name == name).map(|p| p.at)
    }
}

/// What a [`Report`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The control loop replaced a dead primary.
    Failover,
    /// `FAILOVER SHARD`: an operator replaced the primary, alive or not.
    ManualFailover,
    /// `SWITCHOVER SHARD`: a planned change of primary, nothing lost.
    Switchover,
    /// `DRILL FAILOVER SHARD`: the primary killed for real, under load.
    DrillFailover,
    /// `DRILL SWITCHOVER SHARD`: a switchover under load.
    DrillSwitchover,
    /// `DRILL REGION 'r' OUTAGE`: a region's servers and nodes cut off.
    DrillRegionOutage,
}

impl ReportKind {
    pub fn is_drill(self) -> bool {
        matches!(self, ReportKind::DrillFailover | ReportKind::DrillSwitchover | ReportKind::DrillRegionOutage)
    }

    /// The event log entry kind this report also appears as.
    pub fn event_kind(self) -> EventKind {
        match self {
            ReportKind::Failover | ReportKind::ManualFailover => EventKind::Failover,
            ReportKind::Switchover => EventKind::Switchover,
            _ => EventKind::Drill,
        }
    }
}

impl fmt::Display for ReportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReportKind::Failover => "failover",
            ReportKind::ManualFailover => "manual failover",
            ReportKind::Switchover => "switchover",
            ReportKind::DrillFailover => "drill failover",
            ReportKind::DrillSwitchover => "drill switchover",
            ReportKind::DrillRegionOutage => "drill region outage",
        })
    }
}

/// How a failover, switchover or drill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The shard has its new primary (for a drill: and writes came back).
    Completed,
    /// Refused before anything changed, or stopped and rolled back: the
    /// old primary still serves.
    Aborted,
    /// Stopped half way: the shard stays fenced for an operator (FAILOVER
    /// SHARD ... FORCE, or fix and retry).
    Stopped,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Completed => "completed",
            Outcome::Aborted => "aborted",
            Outcome::Stopped => "stopped",
        })
    }
}
