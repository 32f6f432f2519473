//! What travels through the Raft log: the [`Command`] a node proposes, the
//! [`Response`] applying it produces, the [`Member`] record each Meridian
//! node is known by, and [`TypeConfig`], which tells openraft about all of
//! them.
//!
//! Every command is an envelope (who, from where, when) around one
//! [`Change`]. The time is stamped by the proposing node and travels in the
//! log, so every member applies exactly the same thing and the audit log
//! agrees everywhere; applying never reads a clock.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{
    Applied, CommandError, EventKind, KeyType, Phase, PolicyChange, Report, Role, ShardMap, ShardPolicy, UserRecord,
};

/// A Meridian node's id in the Raft group. Chosen by the operator (config),
/// never reused for another node.
pub type MemberId = u64;

/// A shard's fencing epoch: raised on every change of primary and on every
/// fence, so a write lease held under an older epoch is worthless.
pub type Epoch = u64;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

/// A Meridian node as the Raft group knows it: what the membership
/// configuration carries for each voter and learner, so any member can
/// reach any other (and tell clients where to go) without a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    /// The node's name from its config, shown in `SHOW CLUSTER`.
    pub name: String,
    pub region: String,
    /// Base URL of the node's Raft RPC endpoint, `http(s)://host:port`.
    pub raft_addr: String,
    /// `host:port` where PostgreSQL clients and admins connect.
    pub client_addr: String,
}

openraft::declare_raft_types!(
    /// openraft's type configuration for Meridian's topology group. Public
    /// only so the storage conformance suite (and the Raft node built on
    /// this crate) can name it; nothing outside the crate should need it.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = MemberId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One proposed change to the topology, with what the audit log records
/// about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Who asked: the admin role of a console session, or `failover` for
    /// the control loop.
    pub actor: String,
    /// From where: the admin client's address, or the member that decided.
    pub origin: String,
    /// When the proposing node accepted it, Unix milliseconds.
    pub at: UnixMillis,
    pub change: Change,
}

/// The changes the topology state machine knows. Each variant's doc says
/// what it is refused for; a refused change leaves the topology untouched.
///
/// Several changes are idempotent (a retried proposal must not fail because
/// its first attempt was committed after all): they answer
/// `Applied { changed: false }` when there is nothing to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Declare a region. Idempotent. `AddNode` declares unknown regions
    /// itself, so this is only needed for a region without nodes yet.
    AddRegion { name: String },
    /// Refused while a PostgreSQL node is in the region.
    RemoveRegion { name: String },

    /// A new shard without nodes. The first shard becomes the default shard
    /// (where unsharded tables live). Refused for a taken name or a policy
    /// that cannot hold (an RPO target of zero needs `durability = sync`).
    CreateShard { name: String, policy: ShardPolicy },
    /// Refused while nodes or sharded tables use the shard, or while it is
    /// the default shard and other shards exist.
    DropShard { name: String },
    /// Change some of a shard's policy; fields left `None` keep their value.
    AlterShard { name: String, change: PolicyChange },
    /// Where unsharded tables and utility statements go.
    SetDefaultShard { name: String },

    /// A PostgreSQL server joins a shard. As `Primary` only while the shard
    /// has no primary; that raises the shard's epoch. Refused for a taken
    /// name or address and an unknown shard.
    AddNode { name: String, address: String, shard: String, region: String, role: Role, priority: u32 },
    /// Refused for the shard's primary (switch over first).
    RemoveNode { name: String },
    /// Keep a node out of routing and promotion. Idempotent. Refused for
    /// the shard's writable primary (switch over first).
    BanNode { name: String },
    /// Idempotent.
    UnbanNode { name: String },
    /// The failure verdict of a majority of Meridian nodes. Idempotent.
    /// Refused for a fenced node.
    MarkNodeDown { name: String },
    /// Idempotent. Refused for a fenced node (that takes `RejoinNode`).
    MarkNodeUp { name: String },
    /// A fenced former primary has been rewound and follows the current
    /// primary again: it becomes an up replica. Refused unless fenced, and
    /// for the node still recorded as the shard's (fenced) primary.
    RejoinNode { name: String },

    /// `node` is the shard's writable primary under `epoch`. The epoch must
    /// be above the shard's, or equal to it while the shard is fenced at
    /// that epoch (the last step of a failover). The previous primary, if
    /// another node, becomes a fenced replica until `RejoinNode`. Refused
    /// for a node of another shard, a banned or down node, and a fenced
    /// node other than the shard's own primary.
    SetPrimary { shard: String, node: String, epoch: Epoch },
    /// No writes to the shard from now on: the epoch rises to `epoch`
    /// (which must be above the current one) and the primary is fenced.
    FenceShard { shard: String, epoch: Epoch },

    /// Route `table` by `column`. Refused for a table already sharded, a
    /// map naming unknown shards, and a map whose values do not have the
    /// key's type (or ranges that overlap, or lists that repeat a value).
    ShardTable { schema: Option<String>, table: String, column: String, key_type: KeyType, map: ShardMap },
    /// Forget a table's sharding rule.
    UnshardTable { schema: Option<String>, table: String },

    /// Hold new transactions, on one shard or (`None`) everywhere.
    /// Idempotent.
    Pause { shard: Option<String> },
    /// Idempotent.
    Resume { shard: Option<String> },

    /// Member `member` can (or cannot) reach PostgreSQL node `node` now.
    /// Idempotent; not audited (it is observation, not a decision). Refused
    /// for an unknown node.
    ReportReach { member: MemberId, node: String, reachable: bool },

    /// Create or replace a client user. Idempotent. Refused for an invalid
    /// name, a secret that does not fit its method (a SCRAM-SHA-256
    /// verifier, an md5 hash, none for trust), and an unknown pool mode.
    PutUser { user: UserRecord },
    /// Refused for an unknown user.
    DropUser { name: String },

    /// The initial topology of a new cluster, from the bootstrapping
    /// node's configuration: its changes applied in order, all or nothing.
    /// Refused once the topology has any shard or node (a cluster is
    /// initialised once; a second node proposing its own config's topology
    /// loses harmlessly), and for a nested `Bootstrap`.
    Bootstrap { changes: Vec<Change> },

    /// Record an event (a failover's phase timeline, a drill report) in the
    /// event log. Not itself audited.
    AppendEvent { kind: EventKind, shard: Option<String>, node: Option<String>, summary: String, phases: Vec<Phase> },
    /// Record a failover's, switchover's or drill's report (and an event
    /// with its summary). Not itself audited. Refused for phases out of
    /// time order.
    RecordReport { report: Box<Report> },
    /// A drill cuts `region` off until `until` (Unix ms). Refused for an
    /// unknown region, while another outage lasts, and for an `until` not
    /// after the command's time.
    BeginOutage { region: String, until: UnixMillis },
    /// The outage drill is over. Idempotent.
    EndOutage,
}

/// What applying one Raft log entry produced, as handed back to whoever
/// proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The entry was openraft's own (a leader's blank entry or a membership
    /// change); no command ran.
    Internal,
    /// The command was valid; see [`Applied::changed`].
    Applied(Applied),
    /// The command was refused; the topology is as it was.
    Rejected(CommandError),
}

impl fmt::Display for Change {
    /// The change in the words of the admin console, for `SHOW AUDIT` and
    /// for logs. Long payloads (a shard map, an event's phases) are left
    /// out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddRegion { name } => write!(f, "add region {name}"),
            Change::RemoveRegion { name } => write!(f, "remove region {name}"),
            Change::CreateShard { name, policy } => write!(
                f,
                "create shard {name} (durability {}, max_lag_on_failover {} bytes, rto_target {}, rpo_target {})",
                policy.durability,
                policy.max_lag_on_failover,
                DisplayDuration(policy.rto_target),
                DisplayDuration(policy.rpo_target)
            ),
            Change::DropShard { name } => write!(f, "drop shard {name}"),
            Change::AlterShard { name, change } => {
                write!(f, "alter shard {name} set (")?;
                let mut sep = "";
                if let Some(d) = change.durability {
                    write!(f, "{sep}durability {d}")?;
                    sep = ", ";
                }
                if let Some(lag) = change.max_lag_on_failover {
                    write!(f, "{sep}max_lag_on_failover {lag} bytes")?;
                    sep = ", ";
                }
                if let Some(rto) = change.rto_target {
                    write!(f, "{sep}rto_target {}", DisplayDuration(rto))?;
                    sep = ", ";
                }
                if let Some(rpo) = change.rpo_target {
                    write!(f, "{sep}rpo_target {}", DisplayDuration(rpo))?;
                }
                write!(f, ")")
            }
            Change::SetDefaultShard { name } => write!(f, "set default shard {name}"),
            Change::AddNode { name, address, shard, region, role, priority } => {
                write!(f, "add node {name} {address} to shard {shard} region {region} as {role} priority {priority}")
            }
            Change::RemoveNode { name } => write!(f, "remove node {name}"),
            Change::BanNode { name } => write!(f, "ban node {name}"),
            Change::UnbanNode { name } => write!(f, "unban node {name}"),
            Change::MarkNodeDown { name } => write!(f, "mark node {name} down"),
            Change::MarkNodeUp { name } => write!(f, "mark node {name} up"),
            Change::RejoinNode { name } => write!(f, "rejoin node {name}"),
            Change::SetPrimary { shard, node, epoch } => {
                write!(f, "set primary of shard {shard} to {node} at epoch {epoch}")
            }
            Change::FenceShard { shard, epoch } => write!(f, "fence shard {shard} at epoch {epoch}"),
            Change::ShardTable { schema, table, column, key_type, .. } => {
                write!(f, "shard table {} by {column} ({key_type})", qualified(schema.as_deref(), table))
            }
            Change::UnshardTable { schema, table } => {
                write!(f, "unshard table {}", qualified(schema.as_deref(), table))
            }
            Change::Pause { shard: Some(shard) } => write!(f, "pause shard {shard}"),
            Change::Pause { shard: None } => write!(f, "pause"),
            Change::Resume { shard: Some(shard) } => write!(f, "resume shard {shard}"),
            Change::Resume { shard: None } => write!(f, "resume"),
            Change::ReportReach { member, node, reachable } => {
                write!(f, "member {member} {} node {node}", if *reachable { "reaches" } else { "cannot reach" })
            }
            Change::PutUser { user } => {
                write!(f, "put user {} ({}{})", user.name, user.auth, if user.admin { ", admin" } else { "" })?;
                if let Some(mode) = &user.pool_mode {
                    write!(f, " pool_mode {mode}")?;
                }
                Ok(())
            }
            Change::DropUser { name } => write!(f, "drop user {name}"),
            Change::Bootstrap { changes } => write!(f, "bootstrap the topology ({} changes)", changes.len()),
            Change::AppendEvent { kind, summary, .. } => write!(f, "record {kind} event: {summary}"),
            Change::RecordReport { report } => write!(f, "record {} report: {}", report.kind, report.detail),
            Change::BeginOutage { region, until } => write!(f, "cut region {region} off until {until} (drill)"),
            Change::EndOutage => write!(f, "end the region outage (drill)"),
        }
    }
}

/// `schema.table`, or `table` for a rule that matches any schema. Also the
/// key of [`crate::state::TopologyState::tables`].
pub(crate) fn qualified(schema: Option<&str>, table: &str) -> String {
    match schema {
        Some(schema) => format!("{schema}.{table}"),
        None => table.to_owned(),
    }
}

/// A duration the way the admin console writes them: `10s`, `250ms`.
struct DisplayDuration(Duration);

impl fmt::Display for DisplayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) { write!(f, "{}s", ms / 1000) } else { write!(f, "{ms}ms") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Durability;

    #[test]
    fn change_display_reads_like_admin_sql() {
        let change = Change::AlterShard {
            name: "s1".into(),
            change: PolicyChange {
                durability: Some(Durability::Sync),
                rto_target: Some(Duration::from_millis(2500)),
                ..PolicyChange::default()
            },
        };
        assert_eq!(change.to_string(), "alter shard s1 set (durability sync, rto_target 2500ms)");
        let change = Change::ShardTable {
            schema: Some("app".into()),
            table: "users".into(),
            column: "id".into(),
            key_type: KeyType::Int,
            map: ShardMap::Hash(vec!["s1".into()]),
        };
        assert_eq!(change.to_string(), "shard table app.users by id (int)");
        assert_eq!(Change::Pause { shard: None }.to_string(), "pause");
    }

    #[test]
    fn command_round_trips_through_json() {
        let cmd = Command {
            actor: "dba".into(),
            origin: "10.0.0.7:51234".into(),
            at: 1_700_000_000_000,
            change: Change::SetPrimary { shard: "s1".into(), node: "pg2".into(), epoch: 4 },
        };
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&json).unwrap(), cmd);
    }
}
