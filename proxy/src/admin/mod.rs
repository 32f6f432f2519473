//! The admin console (DESIGN §6): `psql -d meridian` as a user whose
//! users-file entry has `admin = true`, on the node's ordinary port. It
//! answers SQL-shaped commands with ordinary row sets of text columns:
//! views of what this node knows (`SHOW SHARDS`, `SHOW NODES`, ...,
//! `SHOW CLUSTER`, `SHOW AUDIT`, `EXPLAIN ROUTE <sql>`) and, on a node with
//! `[cluster]`, changes of the replicated topology (`CREATE SHARD`,
//! `ADD NODE`, `SHARD TABLE`, `BAN NODE`, `PAUSE`, `ADD MEMBER`, ...), each
//! proposed through Raft as one audited `consensus::Change` naming the admin
//! user and its address. `RELOAD` rereads the config file, as SIGHUP does.
//! `SWITCHOVER`, `FAILOVER`, `REJOIN NODE` and `DRILL` hand an
//! `Operation` to the control runtime (`crate::control::ops::execute`),
//! which does the PostgreSQL side; the console itself never touches a
//! PostgreSQL server, and shows the reports they leave (`SHOW FAILOVERS`,
//! `SHOW DRILLS`, `SHOW DRILL <id>`). Other users get `42501` at login.
//! The reference is `docs/admin-sql.md`.
//!
//! ```text
//!  handshake: auth ─▶ database "meridian"? ─▶ admin user? ─no─▶ FATAL 42501
//!                                                │yes
//!                                                ▼
//!      AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery
//!                                                │
//!   ┌────────────────────────────────────────────▼──────────────────────────┐
//!   │ Query ─▶ split statements ─▶ command::parse ─┬─▶ views / explain      │
//!   │                                              │   (Snapshot per stmt)  │
//!   │                                              └─▶ change::Action ─▶    │
//!   │                Cluster::propose (Raft commit) / add_member / reload   │
//!   │                ─▶ wait until applied here ─▶ one row (version,changed)│
//!   │   Action::Control ─▶ control::ops::execute (until done or hard stop)  │
//!   │                ─▶ one row: the report (or the rejoined node)          │
//!   │          ─▶ RowDescription + DataRow… + CommandComplete (per command) │
//!   │          ─▶ ReadyForQuery 'I'   (the first error stops the rest)      │
//!   │ Parse/Bind/Describe/Execute/Close ─▶ 0A000 once, skip to Sync         │
//!   │ Terminate, EOF ─▶ end;  drain (SIGTERM) or hard stop ─▶ FATAL 57P01   │
//!   └───────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A change is awaited in the session's task (it is the only thing that
//! session does); the data path never waits for it. Every SQLSTATE the
//! console answers is chosen in [`AdminError`]'s `ClientError` impl and
//! `command_sqlstate`.
//!
//! What it deliberately does not do yet: forward membership changes to the
//! leader, show other nodes' views, or speak the extended query protocol.

mod change;
mod cluster_views;
mod command;
mod counters;
mod explain;
mod reports;
mod views;

use std::sync::Arc;
use std::time::Duration;

use consensus::state::ShardMap;
use consensus::{Change, CommandError, ProposeError, RequestError, TopologyState};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::error::SqlState;

use self::change::Action;
use self::views::{ResultSet, Snapshot};
use crate::cancel::CancelHandle;
use crate::clients::{ClientGuard, ClientState};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::control::ops::{ControlError, Done, Drill, Operation};
use crate::error::{ClientError, Error, write_error};
use crate::node::Shared;
use crate::wire::frame::{self, HEADER_LEN, cstr};
use crate::wire::messages::{self, Severity};
pub use counters::{RouteCounters, ServerRoutes};

/// The database name that reaches the admin console.
pub const DATABASE: &str = "meridian";

/// An admin statement that cannot run. Shown to the admin as is, with the
/// SQLSTATE [`ClientError::sqlstate`] gives it (the admin console's choices
/// all live there) and [`AdminError::hint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Not an admin command; names what was given.
    #[error("unrecognized admin command \"{0}\"")]
    Unknown(String),
    /// An admin command written wrong.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// A value that cannot be used (an unknown option, a bad size, a key
    /// value of the wrong type).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    #[error("the admin console does not support the extended query protocol")]
    ExtendedProtocol,
    #[error("the admin console does not support function calls")]
    FunctionCall,
    /// A topology change on a node without `[cluster]`.
    #[error("{0} needs a cluster: this node runs alone from its configuration file")]
    NotClustered(&'static str),
    /// The state machine refused the change; the topology is unchanged.
    #[error("{0}")]
    Rejected(CommandError),
    /// No Raft leader is known: nothing was proposed.
    #[error("no raft leader is known; nothing was changed")]
    NoLeader,
    /// A membership change must run on the leader.
    #[error("this node is not the raft leader; nothing was changed")]
    NotLeader {
        /// The leader's client address, when known.
        leader: Option<String>,
    },
    /// `REMOVE MEMBER` of an id the group does not have.
    #[error("unknown member {0}")]
    UnknownMember(u64),
    /// `ADD MEMBER` of an id the group already has.
    #[error("member {0} already exists")]
    MemberExists(u64),
    /// Raft refused a membership change (another one is under way, ...).
    #[error("raft refused the change: {0}")]
    Refused(String),
    /// The change was sent but no answer came back: it may or may not have
    /// been made.
    #[error("the outcome of {0} is unknown: it may or may not have been committed")]
    OutcomeUnknown(&'static str),
    /// This node's consensus member is stopping.
    #[error("the consensus node is shutting down")]
    ShuttingDown,
    /// `RELOAD` on a node that was not started from a file.
    #[error("RELOAD: this node was not started from a configuration file")]
    NoConfigFile,
    /// `RELOAD` found a broken file; nothing was changed.
    #[error("RELOAD: {0}")]
    Reload(String),
    /// `SHOW DRILL <id>` of a report the cluster does not keep.
    #[error("unknown report {0}")]
    UnknownReport(u64),
    /// `SWITCHOVER`, `FAILOVER`, `REJOIN NODE` or `DRILL` was refused or
    /// stopped: the SQLSTATE `ControlError::sqlstate` chose, its message,
    /// and what to look at (`AdminError::from_control`).
    #[error("{message}")]
    Control { code: SqlState, message: String, hint: Option<String> },
}

impl AdminError {
    /// What the admin can do about it.
    pub fn hint(&self) -> Option<String> {
        let hint = match self {
            AdminError::Unknown(_) | AdminError::Syntax(_) => command::SEE_HELP,
            AdminError::ExtendedProtocol | AdminError::FunctionCall => {
                "Send simple queries (psql does; tokio-postgres: simple_query)."
            }
            AdminError::NotClustered(_) => {
                "Topology changes go through Raft: give the node a [cluster] section (member_id, raft_listen, \
                 data_dir, peers) and restart it. Without one, edit [topology] and RELOAD."
            }
            AdminError::NoLeader => "An election may be under way, or this node is cut off; retry in a few seconds.",
            AdminError::NotLeader { leader: Some(at) } => {
                return Some(format!("Run it on the leader's admin console ({at}); SHOW CLUSTER names the leader."));
            }
            AdminError::NotLeader { leader: None } => "Run it on the leader's admin console; SHOW CLUSTER names it.",
            AdminError::OutcomeUnknown(_) => "Check SHOW AUDIT (and the topology) before retrying.",
            AdminError::Reload(_) => "The running configuration is unchanged.",
            AdminError::Rejected(_) => "The topology is unchanged.",
            AdminError::UnknownReport(_) => {
                return Some(format!(
                    "SHOW FAILOVERS and SHOW DRILLS list the reports the cluster keeps (the newest {}).",
                    consensus::state::REPORT_LIMIT
                ));
            }
            AdminError::Control { hint, .. } => return hint.clone(),
            AdminError::InvalidValue(_)
            | AdminError::UnknownMember(_)
            | AdminError::MemberExists(_)
            | AdminError::Refused(_)
            | AdminError::ShuttingDown
            | AdminError::NoConfigFile => return None,
        };
        Some(hint.to_owned())
    }

    fn from_propose(e: ProposeError, tag: &'static str) -> AdminError {
        match e {
            ProposeError::Rejected(e) => AdminError::Rejected(e),
            ProposeError::NoLeader => AdminError::NoLeader,
            ProposeError::OutcomeUnknown(source) => {
                tracing::warn!(command = tag, error = %source, "admin change: outcome unknown");
                AdminError::OutcomeUnknown(tag)
            }
            ProposeError::ShuttingDown => AdminError::ShuttingDown,
        }
    }

    /// The console's error for an operation that was refused or stopped:
    /// the SQLSTATE is `ControlError::sqlstate`'s; the hint says where to
    /// look and, for a refusal, what would be accepted.
    fn from_control(e: ControlError, op: &Operation, tag: &'static str) -> AdminError {
        const HOW_FAR: &str = "SHOW SHARDS and SHOW EVENTS show how far it got.";
        const UNKNOWN: &str = "SHOW SHARDS, SHOW NODES and SHOW REGIONS list what the cluster has.";
        const BUSY: &str =
            "Another failover or switchover of the shard is under way (SHOW EVENTS follows it); retry once it ended.";
        const FAILED: &str =
            "The message says what state the shard was left in; SHOW SHARDS and SHOW EVENTS show it now.";
        let code = e.sqlstate();
        let (message, hint) = match e {
            ControlError::Unknown(m) => (m, Some(UNKNOWN.to_owned())),
            ControlError::Refused(m) => (m, Some(refused_hint(op).to_owned())),
            ControlError::Busy(m) => (m, Some(BUSY.to_owned())),
            ControlError::Propose(ref p) if ControlError::lost_race(p) => (
                format!("{tag}: another operation changed the shard's epoch first"),
                Some("Look at SHOW SHARDS and SHOW FAILOVERS, then retry.".to_owned()),
            ),
            ControlError::Propose(ProposeError::Rejected(c)) => (format!("{tag}: {c}"), Some(HOW_FAR.to_owned())),
            ControlError::Propose(ProposeError::NoLeader) => (
                format!("{tag}: no raft leader is known"),
                Some(format!(
                    "An election may be under way, or this node is cut off; retry in a few seconds. {HOW_FAR}"
                )),
            ),
            ControlError::Propose(ProposeError::OutcomeUnknown(source)) => {
                tracing::warn!(command = tag, error = %source, "admin operation: outcome of a step unknown");
                (
                    format!("{tag}: the outcome of a step is unknown: it may or may not have been committed"),
                    Some("Check SHOW SHARDS, SHOW EVENTS and SHOW FAILOVERS before retrying.".to_owned()),
                )
            }
            ControlError::Propose(ProposeError::ShuttingDown) => {
                ("the consensus node is shutting down".to_owned(), None)
            }
            ControlError::Failed(m) => (m, Some(FAILED.to_owned())),
            e @ ControlError::CutShort => (e.to_string(), None),
        };
        AdminError::Control { code, message, hint }
    }

    fn from_request(e: RequestError, tag: &'static str) -> AdminError {
        match e {
            RequestError::NoLeader => AdminError::NoLeader,
            RequestError::NotLeader { leader } => AdminError::NotLeader {
                leader: leader.map(|m| if m.client_addr.is_empty() { m.name } else { m.client_addr }),
            },
            RequestError::Unreachable(source) => {
                tracing::warn!(command = tag, error = %source, "admin membership change: outcome unknown");
                AdminError::OutcomeUnknown(tag)
            }
            e @ RequestError::Timeout { .. } => {
                tracing::warn!(command = tag, error = %e, "admin membership change: outcome unknown");
                AdminError::OutcomeUnknown(tag)
            }
            RequestError::Refused(reason) => AdminError::Refused(reason),
            RequestError::ShuttingDown => AdminError::ShuttingDown,
        }
    }
}

/// What to look at when `op` was refused (`ControlError::Refused`).
fn refused_hint(op: &Operation) -> &'static str {
    match op {
        Operation::Failover { force: false, .. } => {
            "SHOW FAILOVERS / SHOW EVENTS say why; FAILOVER SHARD ... FORCE accepts the loss."
        }
        Operation::Failover { force: true, .. } | Operation::Switchover { .. } => {
            "SHOW NODES shows the replicas that could take over (state, lag, banned, priority); SHOW FAILOVERS / \
             SHOW EVENTS say why."
        }
        Operation::Rejoin { .. } => {
            "REJOIN NODE takes a fenced former primary (SHOW NODES: cluster_state fenced) and runs on the Meridian \
             node whose config lists it under [[managed]]."
        }
        Operation::Drill(Drill::Switchover { .. }) => {
            "SHOW NODES shows the replicas that could take over; SHOW DRILLS says why earlier drills stopped."
        }
        Operation::Drill(Drill::Failover { .. } | Drill::RegionOutage { .. }) => {
            "A failover or region drill runs on a Meridian node whose config lists the PostgreSQL servers it stops \
             under [[managed]]; SHOW DRILLS says why earlier drills stopped."
        }
    }
}

/// The SQLSTATE of a refused change: what PostgreSQL answers for the like.
pub(crate) fn command_sqlstate(e: &CommandError) -> SqlState {
    use CommandError as E;
    match e {
        E::InvalidName { .. }
        | E::InvalidAddress { .. }
        | E::InvalidPolicy { .. }
        | E::InvalidShardMap { .. }
        | E::InvalidEvent(_)
        | E::InvalidUser { .. } => SqlState::INVALID_PARAMETER_VALUE,
        E::UnknownRegion(_) | E::UnknownShard(_) | E::UnknownNode(_) | E::UnknownTable(_) | E::UnknownUser(_) => {
            SqlState::UNDEFINED_OBJECT
        }
        E::ShardExists(_) | E::NodeExists(_) | E::AddressInUse { .. } | E::TableAlreadySharded(_) => {
            SqlState::DUPLICATE_OBJECT
        }
        E::RegionInUse { .. }
        | E::ShardHasNodes { .. }
        | E::ShardHasTables { .. }
        | E::ShardIsDefault(_)
        | E::NodeIsPrimary { .. } => SqlState::OBJECT_IN_USE,
        E::ShardHasPrimary { .. }
        | E::NodeNotInShard { .. }
        | E::NodeBanned(_)
        | E::NodeDown(_)
        | E::NodeFenced(_)
        | E::NodeNotFenced(_)
        | E::AlreadyBootstrapped { .. } => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
        E::StaleEpoch { .. } => SqlState::T_R_SERIALIZATION_FAILURE,
        E::InvalidBootstrap { source, .. } => command_sqlstate(source),
    }
}

impl ClientError for AdminError {
    fn sqlstate(&self) -> SqlState {
        match self {
            AdminError::Unknown(_) | AdminError::Syntax(_) => SqlState::SYNTAX_ERROR,
            AdminError::InvalidValue(_) => SqlState::INVALID_PARAMETER_VALUE,
            AdminError::ExtendedProtocol | AdminError::FunctionCall => SqlState::FEATURE_NOT_SUPPORTED,
            AdminError::NotClustered(_) | AdminError::NoConfigFile | AdminError::Refused(_) => {
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
            }
            AdminError::NotLeader { .. } => SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            AdminError::Rejected(e) => command_sqlstate(e),
            AdminError::UnknownMember(_) | AdminError::UnknownReport(_) => SqlState::UNDEFINED_OBJECT,
            AdminError::Control { code, .. } => code.clone(),
            AdminError::MemberExists(_) => SqlState::DUPLICATE_OBJECT,
            AdminError::NoLeader => SqlState::CANNOT_CONNECT_NOW,
            AdminError::OutcomeUnknown(_) => SqlState::TRANSACTION_RESOLUTION_UNKNOWN,
            AdminError::ShuttingDown => SqlState::ADMIN_SHUTDOWN,
            AdminError::Reload(_) => SqlState::CONFIG_FILE_ERROR,
        }
    }

    fn client_message(&self) -> String {
        self.to_string()
    }
}

/// An ErrorResponse (severity ERROR) for `e`, with its hint.
fn write_admin_error(out: &mut BytesMut, e: &AdminError) {
    out.put_u8(b'E');
    let at = out.len();
    out.put_i32(0);
    let message = e.client_message();
    let hint = e.hint();
    let code = e.sqlstate();
    let mut fields = vec![(b'S', "ERROR"), (b'V', "ERROR"), (b'C', code.code()), (b'M', message.as_str())];
    if let Some(hint) = &hint {
        fields.push((b'H', hint));
    }
    for (kind, value) in fields {
        out.put_u8(kind);
        out.put_slice(value.as_bytes());
        out.put_u8(0);
    }
    out.put_u8(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// What an admin client is told after AuthenticationOk: the parameters
/// psql and drivers look at, its cancel key, ReadyForQuery.
pub(crate) fn greeting(out: &mut BytesMut, params: &[(String, String)], user: &str, pid: i32, key: i32) {
    let application_name = params.iter().find(|(k, _)| k == "application_name").map(|(_, v)| v.as_str());
    let server_version = format!("15.0 ({})", views::version());
    for (name, value) in [
        ("server_version", server_version.as_str()),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("TimeZone", "UTC"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("is_superuser", "off"),
        ("session_authorization", user),
        ("application_name", application_name.unwrap_or("")),
    ] {
        messages::parameter_status(out, name, value);
    }
    messages::backend_key_data(out, pid, key);
    messages::ready_for_query(out, b'I');
}

/// A logged-in admin client.
pub(crate) struct AdminSession<S> {
    stream: S,
    /// Bytes from the client not yet handled.
    buf: BytesMut,
    out: BytesMut,
    shared: Arc<Shared>,
    /// Listed in `SHOW CLIENTS` while the session runs.
    client: ClientGuard,
    /// Keeps the (pid, key) the client was given registered; a cancel has
    /// nothing to cancel here.
    _cancel: CancelHandle,
    /// An extended-protocol message was refused: skip to Sync.
    skip_until_sync: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> AdminSession<S> {
    pub(crate) fn new(
        stream: S,
        buf: BytesMut,
        shared: Arc<Shared>,
        client: ClientGuard,
        cancel: CancelHandle,
    ) -> Self {
        AdminSession { stream, buf, out: BytesMut::new(), shared, client, _cancel: cancel, skip_until_sync: false }
    }

    /// Serve the admin until it leaves, fails, or shutdown ends the session.
    pub(crate) async fn run(&mut self) -> Result<(), Error> {
        let result = self.serve().await;
        if let Err(e) = &result {
            self.out.clear();
            write_error(&mut self.out, Severity::Fatal, e);
            let _ = self.stream.write_all(&self.out).await;
        }
        let _ = self.stream.shutdown().await;
        result
    }

    async fn serve(&mut self) -> Result<(), Error> {
        let drain = self.shared.drain.clone();
        let hard = self.shared.hard.clone();
        let max = self.shared.config.load().listen.max_message_size;
        loop {
            // Between requests, like an idle session: a draining node ends it.
            if drain.is_cancelled() {
                return Err(Error::ShuttingDown);
            }
            if let Some(h) = frame::complete(&self.buf, max)? {
                let mut msg = self.buf.split_to(h.total);
                msg.advance(HEADER_LEN);
                if !self.handle(h.tag, &msg).await? {
                    return Ok(());
                }
                if !self.out.is_empty() {
                    self.stream.write_all(&self.out).await?;
                    self.out.clear();
                }
                continue;
            }
            // cancel safety: read_buf and cancelled() are cancel safe.
            let n = tokio::select! {
                biased;
                r = self.stream.read_buf(&mut self.buf) => r?,
                _ = drain.cancelled() => return Err(Error::ShuttingDown),
                _ = hard.cancelled() => return Err(Error::ShuttingDown),
            };
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Answer one message into `self.out`; `false` ends the session.
    async fn handle(&mut self, tag: u8, body: &[u8]) -> Result<bool, Error> {
        match tag {
            b'Q' => {
                let sql = String::from_utf8_lossy(cstr(body).map(|(s, _)| s).unwrap_or_default()).into_owned();
                self.client.set_state(ClientState::Active);
                self.query(&sql).await;
                self.client.set_state(ClientState::Idle);
                messages::ready_for_query(&mut self.out, b'I');
            }
            b'X' => return Ok(false),
            b'P' | b'B' | b'D' | b'E' | b'C' => {
                if !self.skip_until_sync {
                    self.skip_until_sync = true;
                    write_admin_error(&mut self.out, &AdminError::ExtendedProtocol);
                }
            }
            b'S' => {
                self.skip_until_sync = false;
                messages::ready_for_query(&mut self.out, b'I');
            }
            b'H' => {}
            b'F' => {
                write_admin_error(&mut self.out, &AdminError::FunctionCall);
                messages::ready_for_query(&mut self.out, b'I');
            }
            // CopyData, CopyDone, CopyFail outside COPY: ignored, as PostgreSQL does.
            b'd' | b'c' | b'f' => {}
            t => {
                let shown = if t.is_ascii_graphic() { format!("'{}'", t as char) } else { format!("0x{t:02x}") };
                return Err(Error::Protocol(format!("invalid frontend message type {shown}")));
            }
        }
        Ok(true)
    }

    /// Run every statement of a simple query; the first error ends it.
    /// Each statement sees what the ones before it changed.
    async fn query(&mut self, sql: &str) {
        let stmts = router::lex::split_statements(sql);
        if stmts.is_empty() {
            // EmptyQueryResponse.
            self.out.put_slice(&[b'I', 0, 0, 0, 4]);
            return;
        }
        for stmt in stmts {
            let result = match command::parse(stmt) {
                Ok(command::Command::Show(topic)) => Ok(self.show(topic).await),
                Ok(command::Command::ShowReport(id)) => Snapshot::of(&self.shared).report(id),
                Ok(command::Command::ExplainRoute(sql)) => Ok(explain::explain(&Snapshot::of(&self.shared), &sql)),
                Ok(command::Command::Change(action)) => self.change(action).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(rs) => rs.encode(&mut self.out),
                Err(e) => {
                    write_admin_error(&mut self.out, &e);
                    return;
                }
            }
        }
    }

    async fn show(&self, topic: command::Topic) -> ResultSet {
        // SHOW CLUSTER reads Raft's own view, which takes an await.
        let status = match (&self.shared.cluster, topic) {
            (Some(cluster), command::Topic::Cluster) => Some(cluster.status().await),
            _ => None,
        };
        let mut snap = Snapshot::of(&self.shared);
        snap.status = status;
        snap.show(topic)
    }

    /// Run a change statement: one proposal through Raft (or a membership
    /// change, or a reload), answered with one row (`version`, `changed`).
    async fn change(&self, action: Action) -> Result<ResultSet, AdminError> {
        let tag = action.tag();
        if action == Action::Reload {
            self.reload().await?;
            return Ok(changed(tag, None, true));
        }
        let Some(cluster) = self.shared.cluster.clone() else {
            return Err(AdminError::NotClustered(tag));
        };
        let info = &self.client.entry().info;
        let (actor, origin) =
            (info.user.clone(), info.peer.map_or_else(|| "local socket".to_owned(), |p| p.to_string()));
        match action {
            Action::Propose { change, .. } => {
                let change = complete(change, &cluster.state());
                tracing::info!(actor = %actor, origin = %origin, %change, "admin change");
                let applied = self
                    .bounded(tag, cluster.propose(&actor, &origin, change))
                    .await?
                    .map_err(|e| AdminError::from_propose(e, tag))?;
                wait_applied(&cluster, applied.version).await;
                Ok(changed(tag, Some(applied.version), applied.changed))
            }
            Action::AddMember(member) => {
                if cluster.status().await.members.contains_key(&member.id) {
                    return Err(AdminError::MemberExists(member.id));
                }
                tracing::info!(actor = %actor, origin = %origin, id = member.id, "admin: add member");
                self.bounded(tag, cluster.add_member(member)).await?.map_err(|e| AdminError::from_request(e, tag))?;
                Ok(changed(tag, None, true))
            }
            Action::RemoveMember(id) => {
                if !cluster.status().await.members.contains_key(&id) {
                    return Err(AdminError::UnknownMember(id));
                }
                tracing::info!(actor = %actor, origin = %origin, id, "admin: remove member");
                self.bounded(tag, cluster.remove_member(id)).await?.map_err(|e| AdminError::from_request(e, tag))?;
                Ok(changed(tag, None, true))
            }
            Action::Control(op) => self.control(&cluster, op, tag, &actor, &origin).await,
            Action::Reload => Err(AdminError::Unknown(tag.to_owned())),
        }
    }

    /// Run `SWITCHOVER`, `FAILOVER`, `REJOIN NODE` or `DRILL` until it ends:
    /// not bounded by [`CHANGE_TIMEOUT`] (a drill takes tens of seconds;
    /// each step has its own deadlines), only by the end of the shutdown
    /// grace period, which leaves its outcome unknown. Answers one row: the
    /// report, or the rejoined node.
    async fn control(
        &self,
        cluster: &Arc<Cluster>,
        op: Operation,
        tag: &'static str,
        actor: &str,
        origin: &str,
    ) -> Result<ResultSet, AdminError> {
        // execute() logs the operation and its steps.
        let hard = self.shared.hard.clone();
        let drill = matches!(op, Operation::Drill(_));
        let run = crate::control::ops::execute(cluster, &self.shared, op.clone(), actor, origin);
        // cancel safety: dropping the operation at the hard stop is what
        // "outcome unknown" means; cancelled() is cancel safe.
        let done = tokio::select! {
            r = run => r,
            _ = hard.cancelled() => return Err(AdminError::OutcomeUnknown(tag)),
        };
        match done {
            Ok(Done::Report(report)) => {
                wait_applied(cluster, report.version).await;
                Ok(reports::answer(&report, drill, tag))
            }
            Ok(Done::Rejoined { node, primary, summary }) => {
                let mut rs = ResultSet::new(&["node", "primary", "summary"]);
                rs.push(vec![Some(node), Some(primary), Some(summary)]);
                rs.tag = Some(tag);
                Ok(rs)
            }
            Err(e) => {
                tracing::info!(actor = %actor, command = tag, error = %e, "admin operation refused or stopped");
                Err(AdminError::from_control(e, &op, tag))
            }
        }
    }

    /// Await a change, at most [`CHANGE_TIMEOUT`] and not past the end of
    /// the shutdown grace period; either way its outcome is unknown.
    async fn bounded<T>(&self, tag: &'static str, change: impl Future<Output = T>) -> Result<T, AdminError> {
        let hard = self.shared.hard.clone();
        // cancel safety: dropping the change is what "outcome unknown" means;
        // cancelled() is cancel safe.
        tokio::select! {
            r = tokio::time::timeout(CHANGE_TIMEOUT, change) => r.map_err(|_| AdminError::OutcomeUnknown(tag)),
            _ = hard.cancelled() => Err(AdminError::OutcomeUnknown(tag)),
        }
    }

    /// `RELOAD`: read the file the node was started with and apply it, as
    /// SIGHUP does. A broken file changes nothing.
    async fn reload(&self) -> Result<(), AdminError> {
        let Some(path) = self.shared.config_path.get().cloned() else {
            return Err(AdminError::NoConfigFile);
        };
        let shared = self.shared.clone();
        let user = self.client.entry().info.user.clone();
        tracing::info!(path = %path.display(), user = %user, "RELOAD: reloading configuration");
        // Reading files: off the runtime's threads.
        let result = tokio::task::spawn_blocking(move || Config::load(&path).and_then(|c| shared.reload(c)))
            .await
            .map_err(|e| AdminError::Reload(format!("reload task failed: {e}")))?;
        result.map_err(|e| {
            tracing::error!(error = %e, "RELOAD failed; the running configuration is unchanged");
            AdminError::Reload(e.to_string())
        })
    }
}

/// How long a change may take before its outcome is reported unknown
/// (consensus has its own, shorter deadlines; this is the backstop).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a committed change to be applied on this node, so
/// that the admin's next `SHOW` sees it.
const APPLY_WAIT: Duration = Duration::from_secs(2);

/// The answer to a change: one row.
fn changed(tag: &'static str, version: Option<u64>, changed: bool) -> ResultSet {
    let mut rs = ResultSet::new(&["version", "changed"]);
    rs.push(vec![version.map(|v| v.to_string()), views::flag(changed)]);
    rs.tag = Some(tag);
    rs
}

/// Fill in what the statement left to the topology: `SHARD TABLE` without
/// a shard list hashes over every shard, in name order.
fn complete(change: Change, state: &TopologyState) -> Change {
    match change {
        Change::ShardTable { schema, table, column, key_type, map: ShardMap::Hash(shards) } if shards.is_empty() => {
            Change::ShardTable {
                schema,
                table,
                column,
                key_type,
                map: ShardMap::Hash(state.shards.keys().cloned().collect()),
            }
        }
        change => change,
    }
}

/// Wait (bounded) until this node has applied topology `version`; a
/// follower may be a little behind the leader that answered.
async fn wait_applied(cluster: &Cluster, version: u64) {
    let mut rx = cluster.subscribe();
    let _ = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|s| s.version >= version)).await;
}

#[cfg(test)]
pub(crate) mod cluster_tests;
#[cfg(test)]
mod tests;
