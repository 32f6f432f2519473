//! [`TopologyState::apply`]: one handler per [`Change`], each of which
//! checks everything first and only then mutates, so a refused command
//! leaves no trace.

use serde::{Deserialize, Serialize};

use super::{
    AUDIT_LOG_LIMIT, AuditEntry, Durability, EVENT_LOG_LIMIT, Event, EventKind, KeyType, KeyValue, NodeState, PgNode,
    Phase, PolicyChange, REPORT_LIMIT, RangePart, Report, Role, Shard, ShardMap, ShardPolicy, TopologyState, UserAuth,
    UserRecord,
};
use crate::types::{Change, Command, Epoch, qualified};

/// Longest name accepted for a shard, node, region, table or column: what
/// PostgreSQL allows for an identifier (NAMEDATALEN - 1).
const MAX_NAME_BYTES: usize = 63;

/// What a valid command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The topology version after the command.
    pub version: u64,
    /// False when there was nothing to do (banning a banned node, a retried
    /// `SetPrimary`): the version did not move and nothing was audited.
    pub changed: bool,
}

/// Why a command was refused. The topology is unchanged.
///
/// ```
/// use consensus::CommandError;
///
/// fn is_retryable_later(e: &CommandError) -> bool {
///     // Another change (a switchover, emptying a shard) must come first.
///     matches!(e, CommandError::NodeIsPrimary { .. } | CommandError::ShardHasNodes { .. })
/// }
/// # assert!(!is_retryable_later(&CommandError::UnknownShard("s".into())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName { kind: String, name: String, reason: String },
    #[error("invalid address {address:?} for node {node}: expected host:port")]
    InvalidAddress { node: String, address: String },
    #[error("unknown region {0}")]
    UnknownRegion(String),
    #[error("region {region} still has node {node}")]
    RegionInUse { region: String, node: String },
    #[error("unknown shard {0}")]
    UnknownShard(String),
    #[error("shard {0} already exists")]
    ShardExists(String),
    #[error("shard {shard} still has node {node}")]
    ShardHasNodes { shard: String, node: String },
    #[error("shard {shard} still holds table {table}")]
    ShardHasTables { shard: String, table: String },
    #[error("shard {0} is the default shard")]
    ShardIsDefault(String),
    #[error("invalid policy for shard {shard}: {reason}")]
    InvalidPolicy { shard: String, reason: String },
    #[error("shard {shard} already has primary {primary}")]
    ShardHasPrimary { shard: String, primary: String },
    #[error("epoch {epoch} for shard {shard} is stale: the shard is at epoch {current}")]
    StaleEpoch { shard: String, epoch: Epoch, current: Epoch },
    #[error("unknown node {0}")]
    UnknownNode(String),
    #[error("node {0} already exists")]
    NodeExists(String),
    #[error("address {address} is already used by node {node}")]
    AddressInUse { address: String, node: String },
    #[error("node {node} belongs to shard {actual}, not {shard}")]
    NodeNotInShard { node: String, shard: String, actual: String },
    #[error("node {node} is the primary of shard {shard}")]
    NodeIsPrimary { node: String, shard: String },
    #[error("node {0} is banned")]
    NodeBanned(String),
    #[error("node {0} is down")]
    NodeDown(String),
    #[error("node {0} is fenced")]
    NodeFenced(String),
    #[error("node {0} is not fenced")]
    NodeNotFenced(String),
    #[error("table {0} is already sharded")]
    TableAlreadySharded(String),
    #[error("table {0} is not sharded")]
    UnknownTable(String),
    #[error("invalid shard map for table {table}: {reason}")]
    InvalidShardMap { table: String, reason: String },
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("unknown user {0}")]
    UnknownUser(String),
    #[error("invalid user {user}: {reason}")]
    InvalidUser { user: String, reason: String },
    #[error("the topology is already initialised (version {version})")]
    AlreadyBootstrapped { version: u64 },
    #[error("bootstrap change {index} ({change}): {source}")]
    InvalidBootstrap { index: usize, change: String, source: Box<CommandError> },
}

/// What a handler decided, before the bookkeeping every change shares.
enum Effect {
    Unchanged,
    Changed(Option<EventDraft>),
}

struct EventDraft {
    kind: EventKind,
    shard: Option<String>,
    node: Option<String>,
    summary: String,
    phases: Vec<Phase>,
}

impl EventDraft {
    fn new(kind: EventKind, shard: &str, node: Option<&str>, summary: String) -> EventDraft {
        EventDraft { kind, shard: Some(shard.to_owned()), node: node.map(str::to_owned), summary, phases: Vec::new() }
    }
}

impl TopologyState {
    /// Apply one committed command. Pure and all or nothing: on `Err` the
    /// state is exactly as before.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, CommandError> {
        let effect = match &cmd.change {
            Change::AddRegion { name } => self.add_region(name),
            Change::RemoveRegion { name } => self.remove_region(name),
            Change::CreateShard { name, policy } => self.create_shard(name, *policy),
            Change::DropShard { name } => self.drop_shard(name),
            Change::AlterShard { name, change } => self.alter_shard(name, change),
            Change::SetDefaultShard { name } => self.set_default_shard(name),
            Change::AddNode { name, address, shard, region, role, priority } => {
                self.add_node(name, address, shard, region, *role, *priority)
            }
            Change::RemoveNode { name } => self.remove_node(name),
            Change::BanNode { name } => self.ban_node(name, true),
            Change::UnbanNode { name } => self.ban_node(name, false),
            Change::MarkNodeDown { name } => self.mark_node(name, NodeState::Down),
            Change::MarkNodeUp { name } => self.mark_node(name, NodeState::Up),
            Change::RejoinNode { name } => self.rejoin_node(name),
            Change::SetPrimary { shard, node, epoch } => self.set_primary(shard, node, *epoch),
            Change::FenceShard { shard, epoch } => self.fence_shard(shard, *epoch),
            Change::ShardTable { schema, table, column, key_type, map } => {
                self.shard_table(schema.as_deref(), table, column, *key_type, map)
            }
            Change::UnshardTable { schema, table } => self.unshard_table(schema.as_deref(), table),
            Change::Pause { shard } => self.pause(shard.as_deref(), true),
            Change::Resume { shard } => self.pause(shard.as_deref(), false),
            Change::AppendEvent { kind, shard, node, summary, phases } => {
                append_event(*kind, shard.clone(), node.clone(), summary, phases)
            }
            Change::Bootstrap { changes } => self.bootstrap(cmd, changes),
            Change::PutUser { user } => self.put_user(user),
            Change::ReportReach { member, node, reachable } => self.report_reach(*member, node, *reachable),
            Change::DropUser { name } => self.drop_user(name),
            Change::RecordReport { report } => check_report(report),
            Change::BeginOutage { region, until } => self.begin_outage(cmd, region, *until),
            Change::EndOutage => Ok(match self.outage.take() {
                Some(o) => Effect::Changed(Some(EventDraft {
                    kind: EventKind::Drill,
                    shard: None,
                    node: None,
                    summary: format!("region {} is back (outage drill over)", o.region),
                    phases: Vec::new(),
                })),
                None => Effect::Unchanged,
            }),
        }?;
        let Effect::Changed(event) = effect else {
            return Ok(Applied { version: self.version, changed: false });
        };
        self.version += 1;
        if let Some(draft) = event {
            self.record_event(cmd, draft);
        }
        if let Change::RecordReport { report } = &cmd.change {
            self.record_report(cmd, report);
        }
        if !matches!(cmd.change, Change::AppendEvent { .. } | Change::ReportReach { .. } | Change::RecordReport { .. })
        {
            push_bounded(
                &mut self.audit,
                AuditEntry {
                    version: self.version,
                    at: cmd.at,
                    actor: cmd.actor.clone(),
                    origin: cmd.origin.clone(),
                    change: cmd.change.clone(),
                },
                AUDIT_LOG_LIMIT,
            );
        }
        Ok(Applied { version: self.version, changed: true })
    }

    fn record_event(&mut self, cmd: &Command, draft: EventDraft) {
        let event = Event {
            id: self.next_event_id,
            at: cmd.at,
            actor: cmd.actor.clone(),
            kind: draft.kind,
            shard: draft.shard,
            node: draft.node,
            summary: draft.summary,
            phases: draft.phases,
        };
        self.next_event_id += 1;
        push_bounded(&mut self.events, event, EVENT_LOG_LIMIT);
    }

    fn begin_outage(&mut self, cmd: &Command, region: &str, until: u64) -> Result<Effect, CommandError> {
        if !self.regions.contains(region) {
            return Err(CommandError::UnknownRegion(region.to_owned()));
        }
        if let Some(o) = &self.outage {
            return Err(CommandError::InvalidEvent(format!("region {} is already cut off by a drill", o.region)));
        }
        if until <= cmd.at {
            return Err(CommandError::InvalidEvent("an outage must end after it begins".into()));
        }
        self.outage = Some(super::Outage { region: region.to_owned(), began: cmd.at, until });
        Ok(Effect::Changed(Some(EventDraft {
            kind: EventKind::Drill,
            shard: None,
            node: None,
            summary: format!("region {region} cut off for a drill (until {until} at the latest)"),
            phases: Vec::new(),
        })))
    }

    fn record_report(&mut self, cmd: &Command, report: &Report) {
        let mut report = report.clone();
        report.id = self.next_report_id;
        report.version = self.version;
        report.at = cmd.at;
        report.actor = cmd.actor.clone();
        self.next_report_id += 1;
        push_bounded(&mut self.reports, report, REPORT_LIMIT);
    }

    fn shard(&self, name: &str) -> Result<&Shard, CommandError> {
        self.shards.get(name).ok_or_else(|| CommandError::UnknownShard(name.to_owned()))
    }

    fn node(&self, name: &str) -> Result<&PgNode, CommandError> {
        self.nodes.get(name).ok_or_else(|| CommandError::UnknownNode(name.to_owned()))
    }

    /// For handlers that have already looked the shard up.
    fn shard_mut(&mut self, name: &str) -> &mut Shard {
        self.shards.get_mut(name).expect("the handler checked that the shard exists")
    }

    /// For handlers that have already looked the node up.
    fn node_mut(&mut self, name: &str) -> &mut PgNode {
        self.nodes.get_mut(name).expect("the handler checked that the node exists")
    }

    /// Apply `changes` to a copy (each audited on its own) and keep the
    /// copy only if every one was valid. The bootstrap itself then takes
    /// one more version, so its audit entry is the newest.
    fn bootstrap(&mut self, cmd: &Command, changes: &[Change]) -> Result<Effect, CommandError> {
        if !self.shards.is_empty() || !self.nodes.is_empty() {
            return Err(CommandError::AlreadyBootstrapped { version: self.version });
        }
        let mut next = self.clone();
        for (index, change) in changes.iter().enumerate() {
            let invalid = |source: CommandError| CommandError::InvalidBootstrap {
                index,
                change: change.to_string(),
                source: Box::new(source),
            };
            if matches!(change, Change::Bootstrap { .. }) {
                return Err(invalid(CommandError::InvalidEvent("a bootstrap cannot nest another".into())));
            }
            let step = Command { change: change.clone(), ..cmd.clone() };
            next.apply(&step).map_err(invalid)?;
        }
        *self = next;
        Ok(Effect::Changed(None))
    }

    fn add_region(&mut self, name: &str) -> Result<Effect, CommandError> {
        valid_name("region", name)?;
        if !self.regions.insert(name.to_owned()) {
            return Ok(Effect::Unchanged);
        }
        Ok(Effect::Changed(None))
    }

    fn remove_region(&mut self, name: &str) -> Result<Effect, CommandError> {
        if !self.regions.contains(name) {
            return Err(CommandError::UnknownRegion(name.to_owned()));
        }
        if let Some(node) = self.nodes.values().find(|node| node.region == name) {
            return Err(CommandError::RegionInUse { region: name.to_owned(), node: node.name.clone() });
        }
        self.regions.remove(name);
        Ok(Effect::Changed(None))
    }

    fn create_shard(&mut self, name: &str, policy: ShardPolicy) -> Result<Effect, CommandError> {
        valid_name("shard", name)?;
        if self.shards.contains_key(name) {
            return Err(CommandError::ShardExists(name.to_owned()));
        }
        valid_policy(name, &policy)?;
        let shard = Shard { name: name.to_owned(), policy, primary: None, epoch: 0, fenced: false, paused: false };
        self.shards.insert(name.to_owned(), shard);
        if self.default_shard.is_none() {
            self.default_shard = Some(name.to_owned());
        }
        Ok(Effect::Changed(None))
    }

    fn drop_shard(&mut self, name: &str) -> Result<Effect, CommandError> {
        self.shard(name)?;
        if let Some(node) = self.nodes_of(name).next() {
            return Err(CommandError::ShardHasNodes { shard: name.to_owned(), node: node.name.clone() });
        }
        if let Some((table, _)) = self.tables.iter().find(|(_, rule)| rule.map.shards().contains(name)) {
            return Err(CommandError::ShardHasTables { shard: name.to_owned(), table: table.clone() });
        }
        let is_default = self.default_shard.as_deref() == Some(name);
        if is_default && self.shards.len() > 1 {
            return Err(CommandError::ShardIsDefault(name.to_owned()));
        }
        self.shards.remove(name);
        if is_default {
            self.default_shard = None;
        }
        Ok(Effect::Changed(None))
    }

    fn alter_shard(&mut self, name: &str, change: &PolicyChange) -> Result<Effect, CommandError> {
        let current = self.shard(name)?.policy;
        let policy = change.applied_to(current);
        valid_policy(name, &policy)?;
        if policy == current {
            return Ok(Effect::Unchanged);
        }
        self.shard_mut(name).policy = policy;
        Ok(Effect::Changed(None))
    }

    fn set_default_shard(&mut self, name: &str) -> Result<Effect, CommandError> {
        self.shard(name)?;
        if self.default_shard.as_deref() == Some(name) {
            return Ok(Effect::Unchanged);
        }
        self.default_shard = Some(name.to_owned());
        Ok(Effect::Changed(None))
    }

    fn add_node(
        &mut self,
        name: &str,
        address: &str,
        shard: &str,
        region: &str,
        role: Role,
        priority: u32,
    ) -> Result<Effect, CommandError> {
        valid_name("node", name)?;
        valid_address(name, address)?;
        valid_name("region", region)?;
        if self.nodes.contains_key(name) {
            return Err(CommandError::NodeExists(name.to_owned()));
        }
        if let Some(other) = self.nodes.values().find(|node| node.address == address) {
            return Err(CommandError::AddressInUse { address: address.to_owned(), node: other.name.clone() });
        }
        let current = self.shard(shard)?;
        if let (Role::Primary, Some(primary)) = (role, &current.primary) {
            return Err(CommandError::ShardHasPrimary { shard: shard.to_owned(), primary: primary.clone() });
        }
        let event = (role == Role::Primary).then(|| {
            let epoch = current.epoch + 1;
            EventDraft::new(
                EventKind::Promotion,
                shard,
                Some(name),
                format!("{name} is the first primary of shard {shard}, epoch {epoch}"),
            )
        });

        self.regions.insert(region.to_owned());
        if role == Role::Primary {
            let shard = self.shard_mut(shard);
            shard.primary = Some(name.to_owned());
            shard.epoch += 1;
            shard.fenced = false;
        }
        let node = PgNode {
            name: name.to_owned(),
            address: address.to_owned(),
            region: region.to_owned(),
            shard: shard.to_owned(),
            role,
            state: NodeState::Up,
            priority,
            banned: false,
        };
        self.nodes.insert(name.to_owned(), node);
        Ok(Effect::Changed(event))
    }

    /// The shard whose recorded primary (fenced or not) is `node`.
    fn primary_of(&self, node: &PgNode) -> Option<&Shard> {
        self.shards.get(&node.shard).filter(|shard| shard.primary.as_deref() == Some(node.name.as_str()))
    }

    fn remove_node(&mut self, name: &str) -> Result<Effect, CommandError> {
        let node = self.node(name)?;
        if let Some(shard) = self.primary_of(node) {
            return Err(CommandError::NodeIsPrimary { node: name.to_owned(), shard: shard.name.clone() });
        }
        self.nodes.remove(name);
        self.reach.remove(name);
        Ok(Effect::Changed(None))
    }

    fn ban_node(&mut self, name: &str, banned: bool) -> Result<Effect, CommandError> {
        let node = self.node(name)?;
        if node.banned == banned {
            return Ok(Effect::Unchanged);
        }
        if banned && let Some(shard) = self.primary_of(node).filter(|shard| !shard.fenced) {
            return Err(CommandError::NodeIsPrimary { node: name.to_owned(), shard: shard.name.clone() });
        }
        self.node_mut(name).banned = banned;
        Ok(Effect::Changed(None))
    }

    fn mark_node(&mut self, name: &str, state: NodeState) -> Result<Effect, CommandError> {
        let node = self.node(name)?;
        match node.state {
            NodeState::Fenced => return Err(CommandError::NodeFenced(name.to_owned())),
            current if current == state => return Ok(Effect::Unchanged),
            _ => {}
        }
        let (kind, summary) = match state {
            NodeState::Down => (EventKind::NodeDown, format!("{name} is down")),
            _ => (EventKind::NodeUp, format!("{name} is up")),
        };
        let event = EventDraft::new(kind, &node.shard, Some(name), summary);
        self.node_mut(name).state = state;
        Ok(Effect::Changed(Some(event)))
    }

    fn rejoin_node(&mut self, name: &str) -> Result<Effect, CommandError> {
        let node = self.node(name)?;
        if node.state != NodeState::Fenced {
            return Err(CommandError::NodeNotFenced(name.to_owned()));
        }
        if let Some(shard) = self.primary_of(node) {
            return Err(CommandError::NodeIsPrimary { node: name.to_owned(), shard: shard.name.clone() });
        }
        let event =
            EventDraft::new(EventKind::Rejoin, &node.shard, Some(name), format!("{name} rejoined as a replica"));
        let node = self.node_mut(name);
        node.role = Role::Replica;
        node.state = NodeState::Up;
        Ok(Effect::Changed(Some(event)))
    }

    fn set_primary(&mut self, shard_name: &str, name: &str, epoch: Epoch) -> Result<Effect, CommandError> {
        let shard = self.shard(shard_name)?;
        let node = self.node(name)?;
        if node.shard != shard_name {
            return Err(CommandError::NodeNotInShard {
                node: name.to_owned(),
                shard: shard_name.to_owned(),
                actual: node.shard.clone(),
            });
        }
        let is_current = shard.primary.as_deref() == Some(name);
        if is_current && !shard.fenced && epoch == shard.epoch {
            // The same decision committed twice (a retried proposal).
            return Ok(Effect::Unchanged);
        }
        let completes_fence = shard.fenced && epoch == shard.epoch;
        if epoch <= shard.epoch && !completes_fence {
            return Err(CommandError::StaleEpoch { shard: shard_name.to_owned(), epoch, current: shard.epoch });
        }
        if node.banned {
            return Err(CommandError::NodeBanned(name.to_owned()));
        }
        match node.state {
            NodeState::Down => return Err(CommandError::NodeDown(name.to_owned())),
            NodeState::Fenced if !is_current => return Err(CommandError::NodeFenced(name.to_owned())),
            _ => {}
        }

        let previous = shard.primary.clone().filter(|previous| previous != name);
        let summary = match &previous {
            Some(previous) => format!("{name} is primary of shard {shard_name} at epoch {epoch}, replacing {previous}"),
            None => format!("{name} is primary of shard {shard_name} at epoch {epoch}"),
        };
        if let Some(previous) = &previous {
            // Whatever happened to it, it must not take writes again before
            // it has been rewound and rejoined.
            let previous = self.node_mut(previous);
            previous.role = Role::Replica;
            previous.state = NodeState::Fenced;
        }
        let node = self.node_mut(name);
        node.role = Role::Primary;
        node.state = NodeState::Up;
        let shard = self.shard_mut(shard_name);
        shard.primary = Some(name.to_owned());
        shard.epoch = epoch;
        shard.fenced = false;
        Ok(Effect::Changed(Some(EventDraft::new(EventKind::Promotion, shard_name, Some(name), summary))))
    }

    fn fence_shard(&mut self, shard_name: &str, epoch: Epoch) -> Result<Effect, CommandError> {
        let shard = self.shard(shard_name)?;
        if shard.fenced && epoch == shard.epoch {
            return Ok(Effect::Unchanged);
        }
        if epoch <= shard.epoch {
            return Err(CommandError::StaleEpoch { shard: shard_name.to_owned(), epoch, current: shard.epoch });
        }
        let primary = shard.primary.clone();
        let summary = match &primary {
            Some(primary) => format!("shard {shard_name} fenced at epoch {epoch}, primary {primary} cut off"),
            None => format!("shard {shard_name} fenced at epoch {epoch}"),
        };
        if let Some(primary) = &primary {
            self.node_mut(primary).state = NodeState::Fenced;
        }
        let shard = self.shard_mut(shard_name);
        shard.epoch = epoch;
        shard.fenced = true;
        Ok(Effect::Changed(Some(EventDraft::new(EventKind::Fence, shard_name, primary.as_deref(), summary))))
    }

    fn shard_table(
        &mut self,
        schema: Option<&str>,
        table: &str,
        column: &str,
        key_type: KeyType,
        map: &ShardMap,
    ) -> Result<Effect, CommandError> {
        if let Some(schema) = schema {
            valid_name("schema", schema)?;
        }
        valid_name("table", table)?;
        valid_name("column", column)?;
        let key = qualified(schema, table);
        if self.tables.contains_key(&key) {
            return Err(CommandError::TableAlreadySharded(key));
        }
        let invalid = |reason: String| CommandError::InvalidShardMap { table: key.clone(), reason };
        if let Some(shard) = map.shards().into_iter().find(|shard| !self.shards.contains_key(*shard)) {
            return Err(invalid(format!("unknown shard {shard}")));
        }
        valid_map(key_type, map).map_err(invalid)?;
        let rule = super::TableRule {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
            column: column.to_owned(),
            key_type,
            map: map.clone(),
        };
        self.tables.insert(key, rule);
        Ok(Effect::Changed(None))
    }

    fn unshard_table(&mut self, schema: Option<&str>, table: &str) -> Result<Effect, CommandError> {
        let key = qualified(schema, table);
        if self.tables.remove(&key).is_none() {
            return Err(CommandError::UnknownTable(key));
        }
        Ok(Effect::Changed(None))
    }

    fn report_reach(&mut self, member: u64, node: &str, reachable: bool) -> Result<Effect, CommandError> {
        self.node(node)?;
        let reports = self.reach.entry(node.to_owned()).or_default();
        if reports.get(&member) == Some(&reachable) {
            return Ok(Effect::Unchanged);
        }
        reports.insert(member, reachable);
        Ok(Effect::Changed(None))
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<Effect, CommandError> {
        valid_name("user", &user.name)?;
        let invalid = |reason: &str| CommandError::InvalidUser { user: user.name.clone(), reason: reason.to_owned() };
        match (user.auth, user.secret.as_deref()) {
            (UserAuth::Trust, None) => {}
            (UserAuth::Trust, Some(_)) => return Err(invalid("trust takes no secret")),
            (UserAuth::ScramSha256, Some(s)) if s.starts_with("SCRAM-SHA-256$") => {}
            (UserAuth::ScramSha256, _) => return Err(invalid("scram-sha-256 needs a SCRAM-SHA-256 verifier")),
            (UserAuth::Md5, Some(s))
                if s.len() == 35
                    && s.starts_with("md5")
                    && s[3..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {}
            (UserAuth::Md5, _) => return Err(invalid("md5 needs \"md5\" and 32 lowercase hex digits")),
        }
        if let Some(mode) = &user.pool_mode
            && mode != "transaction"
            && mode != "session"
        {
            return Err(invalid("pool_mode is transaction or session"));
        }
        if self.users.get(&user.name) == Some(user) {
            return Ok(Effect::Unchanged);
        }
        self.users.insert(user.name.clone(), user.clone());
        Ok(Effect::Changed(None))
    }

    fn drop_user(&mut self, name: &str) -> Result<Effect, CommandError> {
        if self.users.remove(name).is_none() {
            return Err(CommandError::UnknownUser(name.to_owned()));
        }
        Ok(Effect::Changed(None))
    }

    fn pause(&mut self, shard: Option<&str>, paused: bool) -> Result<Effect, CommandError> {
        let flag = match shard {
            None => &mut self.paused,
            Some(name) => {
                self.shard(name)?;
                &mut self.shard_mut(name).paused
            }
        };
        if *flag == paused {
            return Ok(Effect::Unchanged);
        }
        *flag = paused;
        Ok(Effect::Changed(None))
    }
}

fn append_event(
    kind: EventKind,
    shard: Option<String>,
    node: Option<String>,
    summary: &str,
    phases: &[Phase],
) -> Result<Effect, CommandError> {
    if summary.trim().is_empty() {
        return Err(CommandError::InvalidEvent("the summary is empty".into()));
    }
    if phases.windows(2).any(|pair| pair[1].at < pair[0].at) {
        return Err(CommandError::InvalidEvent("phases are not in time order".into()));
    }
    Ok(Effect::Changed(Some(EventDraft { kind, shard, node, summary: summary.to_owned(), phases: phases.to_vec() })))
}

fn check_report(report: &Report) -> Result<Effect, CommandError> {
    if report.phases.windows(2).any(|pair| pair[1].at < pair[0].at) {
        return Err(CommandError::InvalidEvent("the report's phases are not in time order".into()));
    }
    let what = match (&report.shard, &report.region) {
        (Some(shard), _) => format!("shard {shard}"),
        (None, Some(region)) => format!("region {region}"),
        (None, None) => "the cluster".to_owned(),
    };
    let verdict = match report.passed {
        Some(true) => "passed",
        Some(false) => "failed",
        None => "not judged",
    };
    let summary = format!("{} of {what}: {}, {verdict}. {}", report.kind, report.outcome, report.detail);
    Ok(Effect::Changed(Some(EventDraft {
        kind: report.kind.event_kind(),
        shard: report.shard.clone(),
        node: report.new_primary.clone().or_else(|| report.old_primary.clone()),
        summary: summary.trim_end().to_owned(),
        phases: report.phases.clone(),
    })))
}

fn push_bounded<T>(log: &mut std::collections::VecDeque<T>, item: T, limit: usize) {
    log.push_back(item);
    while log.len() > limit {
        log.pop_front();
    }
}

fn valid_name(kind: &str, name: &str) -> Result<(), CommandError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name.len() > MAX_NAME_BYTES {
        "longer than 63 bytes"
    } else if name.trim() != name {
        "leading or trailing whitespace"
    } else if name.chars().any(char::is_control) {
        "control characters"
    } else {
        return Ok(());
    };
    Err(CommandError::InvalidName { kind: kind.to_owned(), name: name.to_owned(), reason: reason.to_owned() })
}

/// `host:port` (or `[v6]:port`) with a non-zero port.
fn valid_address(node: &str, address: &str) -> Result<(), CommandError> {
    let ok = address.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.chars().any(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if ok { Ok(()) } else { Err(CommandError::InvalidAddress { node: node.to_owned(), address: address.to_owned() }) }
}

fn valid_policy(shard: &str, policy: &ShardPolicy) -> Result<(), CommandError> {
    let reason = if policy.rto_target.is_zero() {
        "rto_target must be above zero"
    } else if policy.rpo_target.is_zero() && policy.durability != Durability::Sync {
        "rpo_target 0 needs durability sync"
    } else {
        return Ok(());
    };
    Err(CommandError::InvalidPolicy { shard: shard.to_owned(), reason: reason.to_owned() })
}

/// The map's own consistency (the shards it names are checked by the
/// caller).
fn valid_map(key_type: KeyType, map: &ShardMap) -> Result<(), String> {
    let typed = |value: &KeyValue| {
        if value.key_type() == key_type {
            Ok(())
        } else {
            Err(format!("value {value:?} is not of the key type {key_type}"))
        }
    };
    match map {
        ShardMap::Hash(shards) if shards.is_empty() => Err("a hash map needs at least one shard".into()),
        ShardMap::Hash(_) => Ok(()),
        ShardMap::Range(parts) => {
            if parts.is_empty() {
                return Err("a range map needs at least one range".into());
            }
            for part in parts {
                part.from.iter().chain(&part.to).try_for_each(typed)?;
                if let (Some(from), Some(to)) = (&part.from, &part.to)
                    && from >= to
                {
                    return Err(format!("range [{from:?}, {to:?}) is empty"));
                }
            }
            // Sorted by lower bound (unbounded first), each range must end
            // at or before the next one starts.
            let mut sorted: Vec<&RangePart> = parts.iter().collect();
            sorted.sort_by(|a, b| a.from.cmp(&b.from));
            for pair in sorted.windows(2) {
                let disjoint = matches!((&pair[0].to, &pair[1].from), (Some(end), Some(start)) if end <= start);
                if !disjoint {
                    return Err(format!("ranges for shards {} and {} overlap", pair[0].shard, pair[1].shard));
                }
            }
            Ok(())
        }
        ShardMap::List { values, default } => {
            if values.is_empty() && default.is_none() {
                return Err("a list map needs values or a default".into());
            }
            let mut seen = std::collections::BTreeSet::new();
            for (value, _) in values {
                typed(value)?;
                if !seen.insert(value) {
                    return Err(format!("value {value:?} is listed twice"));
                }
            }
            Ok(())
        }
    }
}
