//! Routing inside a session (DESIGN §4): which server a client's request
//! goes to, and the session's read consistency.
//!
//! A request is what a client sends up to a point where it waits for an
//! answer: one simple Query, or extended-protocol messages up to Sync (or
//! Flush). Between transactions, [`State::plan`] looks at the next request
//! and picks a server: the primary of the shard its keys name, or for a
//! replica-safe read the nearest fresh replica. Inside a transaction every
//! statement is checked against the transaction's shard
//! ([`State::check_query`], [`State::check_bind`]); a statement for
//! another shard fails like a PostgreSQL error would, with the transaction
//! aborted on the server, by sending in its place a `DO` block that raises
//! the error.
//!
//! `BEGIN` sent alone is answered by us and sent on with the transaction's
//! first statement, so that statement decides the shard and whether a
//! replica may serve a `READ ONLY` transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use parking_lot::Mutex;
use router::analyze::Analysis;
use router::lsn::Lsn;
use router::replica::Choice;
use router::route::{Action, Consistency, Decision, Params, RouteError};
use router::topology::{NodeId, Role, ShardId, Topology};

use super::protocol::State;
use crate::health::{Health, NodeStatus};
use crate::wire::frame::{HEADER_LEN, Messages, cstr};
use crate::wire::messages;

/// SQLSTATE for "no server may answer this read now".
const NO_REPLICA: &str = "57P03";

/// Per-session routing state.
#[derive(Debug, Default)]
pub(crate) struct RouteState {
    pub consistency: Consistency,
    /// Per shard: the WAL position the session's reads must see (its last
    /// commit there).
    causal: HashMap<String, Lsn>,
    /// The shard and position of the session's last commit that wrote.
    last_commit: Option<(String, Lsn)>,
    /// `SET meridian.min_lsn`: a position every read must see.
    min_lsn: Option<Lsn>,
    /// `SET meridian.shard`.
    shard_hint: Option<String>,
    /// A `BEGIN` we answered (its text, and whether READ ONLY), sent on with
    /// the transaction's first statement.
    pub deferred_begin: Option<(String, bool)>,
    /// Where the attached connection is.
    pub attached: Option<Attached>,
    /// The request being sent was routed by [`State::plan`]: no second check.
    pub prechecked: bool,
    /// An error [`State::plan`] decided for the request being sent.
    pub planned_error: Option<RouteError>,
    /// The transaction on the attached primary ran a statement that may
    /// write (`router::route::Decision::writes`, or a function call).
    pub wrote: bool,
    /// Pools of other servers this session used (looked up once).
    pub pools: Mutex<Vec<Arc<crate::pool::Pool>>>,
}

/// The server the session is attached to.
#[derive(Debug, Clone)]
pub(crate) struct Attached {
    pub shard: ShardId,
    pub shard_name: String,
    pub role: Role,
    pub status: Arc<NodeStatus>,
}

/// What to do with the next request.
pub(crate) enum Plan {
    /// The request is not complete yet.
    NeedMore,
    /// Answered by us: drop `consumed` bytes of input, send `reply`.
    Local { consumed: usize, reply: BytesMut },
    /// Attach to this server (of `shard`), then send the request; `begins`
    /// when it runs statements (a held BEGIN goes first), not only
    /// prepares or describes them.
    /// `writes`: it may write on the shard's primary, so it must pass the
    /// write gate of a cluster node first.
    Server { shard: ShardId, node: NodeId, reason: String, begins: bool, writes: bool },
    /// A keyless read of a sharded table: run on every shard and merge.
    /// `extended`: it came as Parse/Bind/Execute (else a simple query).
    Fanout { sql: String, shards: Vec<ShardId>, consumed: usize, extended: Option<ExtendedRead> },
    /// A schema change: every shard's primary.
    EveryPrimary { sql: String, consumed: usize },
}

/// An extended-protocol read to run over several shards: one statement,
/// `[Parse] Bind [Describe portal] Execute Sync`.
#[derive(Debug, Clone)]
pub(crate) struct ExtendedRead {
    /// The Parse body after the statement name of the client's statement
    /// (query text, NUL, parameter types).
    pub parse_rest: Vec<u8>,
    /// The Bind body after the portal and statement names (parameter
    /// formats and values, result formats).
    pub bind_rest: Vec<u8>,
    /// The client sent the Parse in this request (it gets ParseComplete).
    pub parsed: bool,
    /// The client described the portal (it gets RowDescription).
    pub described: bool,
}

/// A bounded cache of statement analyses, by topology version and SQL
/// text: a prepared statement (or a repeated query text) is parsed once.
#[derive(Default)]
pub struct AnalysisCache {
    map: Mutex<CacheMap>,
}

/// The topology version the entries were made for, and the entries.
type CacheMap = (u64, HashMap<Box<str>, Arc<Analysis>>);

/// Entries kept before the cache starts over.
const CACHE_LIMIT: usize = 10_000;

impl AnalysisCache {
    pub fn get(&self, sql: &str, topology: &Topology) -> Arc<Analysis> {
        {
            let m = self.map.lock();
            if m.0 == topology.version
                && let Some(a) = m.1.get(sql)
            {
                return a.clone();
            }
        }
        let a = Arc::new(router::analyze::analyze(sql, topology));
        let mut m = self.map.lock();
        if m.0 != topology.version || m.1.len() >= CACHE_LIMIT {
            m.1.clear();
            m.0 = topology.version;
        }
        m.1.insert(sql.into(), a.clone());
        a
    }
}

/// Bind parameters read from a Bind message body.
pub struct BindParams<'a> {
    formats: Vec<i16>,
    values: Vec<Option<&'a [u8]>>,
}

impl<'a> BindParams<'a> {
    /// From a Bind body after the portal and statement names.
    pub fn parse(after_names: &'a [u8]) -> Option<BindParams<'a>> {
        let mut at = 0;
        let i16_at = |at: &mut usize| -> Option<i16> {
            let v = after_names.get(*at..*at + 2)?;
            *at += 2;
            Some(i16::from_be_bytes([v[0], v[1]]))
        };
        let nf = i16_at(&mut at)?.max(0) as usize;
        let mut formats = Vec::with_capacity(nf);
        for _ in 0..nf {
            formats.push(i16_at(&mut at)?);
        }
        let np = i16_at(&mut at)?.max(0) as usize;
        let mut values = Vec::with_capacity(np);
        for _ in 0..np {
            let v = after_names.get(at..at + 4)?;
            at += 4;
            let len = i32::from_be_bytes([v[0], v[1], v[2], v[3]]);
            if len < 0 {
                values.push(None);
            } else {
                let len = len as usize;
                values.push(Some(after_names.get(at..at + len)?));
                at += len;
            }
        }
        Some(BindParams { formats, values })
    }
}

impl Params for BindParams<'_> {
    fn get(&self, i: usize) -> Option<(Option<&[u8]>, bool)> {
        let v = *self.values.get(i)?;
        let binary = match self.formats.len() {
            0 => false,
            1 => self.formats[0] == 1,
            _ => self.formats.get(i).copied() == Some(1),
        };
        Some((v, binary))
    }
}

/// Does this topology need routing at all? One shard without replicas
/// does not: every statement goes to its primary.
pub(crate) fn routing_needed(t: &Topology) -> bool {
    t.shards.len() > 1 || t.shards.iter().any(|s| !s.replicas.is_empty())
}

/// A simple Query that raises `e` on the server, so that a refused
/// statement fails (and aborts an open transaction) as PostgreSQL's own
/// errors do.
pub(crate) fn raise_sql(e: &RouteError) -> String {
    let msg = e.message.replace('\'', "''").replace("$meridian$", "$ meridian $");
    let code: String = e.code.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("DO $meridian$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{msg}'; END$meridian$")
}

/// The server of `shard` for a statement: its primary, or for a
/// replica-safe read the replica [`router::replica::choose`] picks. An
/// error comes with the primary when the policy says reads must fail.
pub(crate) fn pick_node(
    health: &Health,
    t: &Topology,
    shard: ShardId,
    replica_ok: bool,
    consistency: Consistency,
    min_lsn: Option<Lsn>,
    reason: String,
) -> (NodeId, String, Option<RouteError>) {
    let Some(primary) = t.shards[shard].primary else {
        return no_primary(health, t, shard, replica_ok && consistency != Consistency::Primary, min_lsn, reason);
    };
    if !replica_ok || consistency == Consistency::Primary || t.shards[shard].replicas.is_empty() {
        return (primary, reason, None);
    }
    let candidates = health.candidates(t, shard);
    match router::replica::choose(&t.replica_policy, &candidates, min_lsn) {
        Choice::Replica { node, reason } => (node, reason, None),
        Choice::Primary { reason } => (primary, reason, None),
        Choice::Fail { reason } => {
            let e = error(NO_REPLICA, format!("no replica may serve this read: {reason}"));
            (primary, reason, Some(e))
        }
    }
}

/// A shard without a writable primary (fenced during a failover): a
/// replica-safe read may still use a replica; anything else is refused with
/// the write gate's retryable error, raised on one of the shard's replicas
/// (so that a transaction aborts as usual).
fn no_primary(
    health: &Health,
    t: &Topology,
    shard: ShardId,
    replica_ok: bool,
    min_lsn: Option<Lsn>,
    reason: String,
) -> (NodeId, String, Option<RouteError>) {
    if replica_ok
        && let Choice::Replica { node, reason } =
            router::replica::choose(&t.replica_policy, &health.candidates(t, shard), min_lsn)
    {
        return (node, reason, None);
    }
    tracing::debug!(version = t.version, shard = %t.shards[shard].name, "no writable primary");
    let e = crate::cluster::gate::refusal(crate::cluster::gate::Closed::NoPrimary, &t.shards[shard].name);
    let node = t.shards[shard].replicas.first().copied().unwrap_or_default();
    (node, reason, Some(e))
}

/// A statement that pins the client to its connection (a WITH HOLD cursor,
/// LISTEN, ...) keeps the client there for the rest of its session: that
/// connection must be the primary's, never a replica's.
fn keep_pins_on_primary(mut d: Decision, sql: &str) -> Decision {
    if let Action::Shard { replica_ok, .. } = &mut d.action
        && *replica_ok
        && router::may_affect_session(sql.as_bytes())
        && router::lex::split_statements(sql)
            .iter()
            .any(|s| matches!(router::session_effect(s), router::SessionEffect::Pin(_)))
    {
        *replica_ok = false;
    }
    d
}

/// A `meridian.*` command's tag and, for SHOW, its (name, value) row.
type SettingReply = (String, Option<(String, String)>);

/// Check `meridian.*` startup settings before login.
pub(crate) fn validate_startup(settings: &[(String, String)], t: &Topology) -> Result<(), String> {
    for (k, v) in settings {
        let ok = match k.as_str() {
            "meridian.read_consistency" => Consistency::parse(v).is_some(),
            "meridian.min_lsn" => Lsn::parse(v).is_some(),
            "meridian.shard" => t.shards.iter().any(|s| s.name == *v),
            _ => return Err(format!("unrecognized configuration parameter \"{k}\"")),
        };
        if !ok {
            return Err(format!("invalid value for parameter \"{k}\": \"{v}\""));
        }
    }
    Ok(())
}

/// Does `sql` commit a transaction (`COMMIT`, `END`, `COMMIT PREPARED`,
/// `PREPARE TRANSACTION`)? A writing transaction's commit passes the write
/// gate like its writes; a `ROLLBACK` always goes through.
fn is_commit(sql: &str) -> bool {
    let mut words = router::lex::Lexer::new(sql);
    match words.next() {
        Some(w) if w.is_keyword("COMMIT") || w.is_keyword("END") => true,
        Some(w) if w.is_keyword("PREPARE") => words.next().is_some_and(|w| w.is_keyword("TRANSACTION")),
        _ => false,
    }
}

fn error(code: &'static str, message: String) -> RouteError {
    RouteError { code, message }
}

impl State {
    pub(crate) fn topology(&self) -> Arc<Topology> {
        self.shared.topology.borrow().clone()
    }

    /// Is routing in force for this session now? Always on a cluster
    /// node: every write passes the write gate, and the primary can move.
    pub(crate) fn routing(&self, t: &Topology) -> bool {
        self.transaction_mode && self.pinned.is_none() && (routing_needed(t) || self.shared.cluster.is_some())
    }

    fn hint(&self, sql: &str, t: &Topology) -> Result<Option<ShardId>, RouteError> {
        let name = router::route::comment_hint(sql).or(self.route.shard_hint.as_deref());
        match name {
            None => Ok(None),
            Some(n) => t.shards.iter().position(|s| s.name == n).map(Some).ok_or_else(|| {
                error(router::route::INVALID_PARAMETER_VALUE, format!("shard hint: no shard named {n:?}"))
            }),
        }
    }

    /// The route of a simple query's statements.
    pub(crate) fn decide_query(&self, sql: &str, t: &Topology) -> Decision {
        let hint = match self.hint(sql, t) {
            Ok(h) => h,
            Err(e) => return Decision { reason: e.message.clone(), action: Action::Reject(e), writes: false },
        };
        let stmts = router::lex::split_statements(sql);
        let analyses: Vec<Arc<Analysis>> = stmts.iter().map(|s| self.shared.analyses.get(s, t)).collect();
        let refs: Vec<&Analysis> = analyses.iter().map(|a| &**a).collect();
        keep_pins_on_primary(router::route::decide_statements(&refs, t, hint), sql)
    }

    /// The route of one extended-protocol statement with its parameters.
    pub(crate) fn decide_statement(&self, sql: &str, params: &dyn Params, t: &Topology) -> Decision {
        let hint = match self.hint(sql, t) {
            Ok(h) => h,
            Err(e) => return Decision { reason: e.message.clone(), action: Action::Reject(e), writes: false },
        };
        keep_pins_on_primary(router::route::decide(&self.shared.analyses.get(sql, t), params, t, hint), sql)
    }

    /// Where the next request in `cbuf` goes (called with no server attached).
    pub(crate) fn plan(&mut self, cbuf: &[u8]) -> Result<Plan, crate::error::Error> {
        let t = self.topology();
        self.route.prechecked = false;
        self.route.planned_error = None;
        let mut decisions: Vec<Decision> = Vec::new();
        let mut complete = false;
        let mut begins = false;
        let mut first_sql: Option<(String, usize)> = None;
        let mut consumed_to = 0;
        // The last Parse of this request: (statement name, SQL).
        let mut pending_parse: Option<(Vec<u8>, String)> = None;
        // The shape of an extended request, for a fan-out read: messages
        // seen (tags) and the statement's Parse/Bind bodies.
        let mut shape: Vec<u8> = Vec::new();
        let mut ext_parse: Option<Vec<u8>> = None;
        let mut ext_bind: Option<Vec<u8>> = None;
        let mut ext_ok = true;
        let mut it = Messages::new(cbuf, self.max_message);
        for m in it.by_ref() {
            let (at, h) = m?;
            let body = &cbuf[at + HEADER_LEN..at + h.total];
            match h.tag {
                b'Q' => {
                    let sql = String::from_utf8_lossy(cstr(body).map(|(s, _)| s).unwrap_or_default()).into_owned();
                    if let Some(local) = self.local_query(&sql, at + h.total) {
                        return Ok(local);
                    }
                    decisions.push(self.decide_query(&sql, &t));
                    first_sql = Some((sql, at + h.total));
                    complete = true;
                    begins = true;
                    break;
                }
                b'P' => {
                    let (name, rest) = cstr(body).unwrap_or_default();
                    let sql = String::from_utf8_lossy(cstr(rest).map(|(s, _)| s).unwrap_or_default()).into_owned();
                    pending_parse = Some((name.to_vec(), sql));
                    shape.push(b'P');
                    ext_ok &= name.is_empty();
                    ext_parse = Some(rest.to_vec());
                }
                b'B' => {
                    begins = true;
                    let (_, rest) = cstr(body).unwrap_or_default();
                    let (name, after) = cstr(rest).unwrap_or_default();
                    // The request's own Parse must be the statement bound.
                    ext_ok &= !shape.contains(&b'P') || name.is_empty();
                    shape.push(b'B');
                    ext_bind = Some(after.to_vec());
                    if ext_parse.is_none() {
                        ext_parse = self.statement_parse_rest(name);
                    }
                    let sql = match pending_parse.take() {
                        Some((parsed, sql)) if parsed == name => Some(sql),
                        _ if name.is_empty() => Some(self.unnamed_sql().to_owned()),
                        _ => self.statement_sql(name),
                    };
                    if let (Some(sql), Some(params)) = (sql, BindParams::parse(after)) {
                        decisions.push(self.decide_statement(&sql, &params, &t));
                    }
                }
                b'S' | b'H' => {
                    complete = true;
                    shape.push(h.tag);
                    if h.tag == b'S' {
                        consumed_to = at + h.total;
                    }
                    break;
                }
                b'D' => {
                    shape.push(if body.first() == Some(&b'P') { b'D' } else { b'd' });
                }
                b'C' => shape.push(b'C'),
                b'E' => {
                    begins = true;
                    shape.push(b'E');
                    // A row limit would suspend the portal: not for a merge.
                    ext_ok &= body.ends_with(&[0, 0, 0, 0]);
                }
                // A FunctionCall (or a message we do not know) is a request
                // of its own, answered up to ReadyForQuery: the primary.
                _ => {
                    decisions.push(Decision {
                        action: Action::Shard { shard: t.default_shard, replica_ok: false },
                        reason: "function call".into(),
                        writes: true,
                    });
                    complete = true;
                    begins = true;
                    break;
                }
            }
        }
        if !complete {
            return Ok(Plan::NeedMore);
        }
        // A Parse with no Bind (a prepare): its statement decides.
        if let Some((_, sql)) = pending_parse
            && decisions.is_empty()
        {
            decisions.push(self.decide_statement(&sql, &router::route::NoParams, &t));
        }
        let mut decision = router::route::decide_all(decisions, &t);
        if let (Action::Fanout { shards }, Some((sql, consumed))) = (&decision.action, &first_sql) {
            if self.route.deferred_begin.is_none() {
                return Ok(Plan::Fanout {
                    sql: sql.clone(),
                    shards: shards.clone(),
                    consumed: *consumed,
                    extended: None,
                });
            }
            let e = error(
                router::route::FEATURE_NOT_SUPPORTED,
                "a read over all shards cannot run inside a transaction".into(),
            );
            decision = Decision { reason: e.message.clone(), action: Action::Reject(e), writes: false };
        }
        if let Action::Fanout { shards } = &decision.action {
            // A prepare or describe only: any shard can answer it.
            if !begins {
                decision.action = Action::Shard { shard: t.default_shard, replica_ok: false };
            } else if let (
                true,
                [b'P', b'B', b'E', b'S']
                | [b'B', b'E', b'S']
                | [b'P', b'B', b'D', b'E', b'S']
                | [b'B', b'D', b'E', b'S'],
                Some(parse_rest),
                Some(bind_rest),
            ) = (ext_ok && self.route.deferred_begin.is_none(), shape.as_slice(), ext_parse, ext_bind)
            {
                let sql = String::from_utf8_lossy(cstr(&parse_rest).map(|(s, _)| s).unwrap_or_default()).into_owned();
                if shape[0] == b'P' {
                    self.set_unnamed_sql(&sql);
                }
                let extended =
                    ExtendedRead { parsed: shape[0] == b'P', described: shape.contains(&b'D'), parse_rest, bind_rest };
                return Ok(Plan::Fanout {
                    sql,
                    shards: shards.clone(),
                    consumed: consumed_to,
                    extended: Some(extended),
                });
            } else {
                let e = error(
                    router::route::FEATURE_NOT_SUPPORTED,
                    "a read over all shards runs outside a transaction, one statement per Sync, without a row limit (or give a shard key)".into(),
                );
                decision = Decision { reason: e.message.clone(), action: Action::Reject(e), writes: false };
            }
        }
        if let (Action::EveryPrimary, false) = (&decision.action, begins) {
            decision.action = Action::Shard { shard: t.default_shard, replica_ok: false };
        }
        if let (Action::EveryPrimary, Some((sql, consumed))) = (&decision.action, &first_sql)
            && self.route.deferred_begin.is_none()
        {
            return Ok(Plan::EveryPrimary { sql: sql.clone(), consumed: *consumed });
        }
        if let Action::EveryPrimary = decision.action {
            let e = error(
                router::route::FEATURE_NOT_SUPPORTED,
                "a schema change on a sharded cluster must run alone, outside a transaction block, as a simple query"
                    .into(),
            );
            decision = Decision { reason: e.message.clone(), action: Action::Reject(e), writes: false };
        }
        self.route.prechecked = true;
        // Set for the primary; a replica never reads the flag (no commit
        // position is taken from a replica).
        self.route.wrote |= decision.writes;
        let read_only_tx = self.route.deferred_begin.as_ref().is_some_and(|(_, ro)| *ro);
        let in_rw_tx = self.route.deferred_begin.is_some() && !read_only_tx;
        let (shard, replica_ok) = match decision.action {
            // A request that only prepares or describes (psql's `\gdesc`:
            // Parse+Sync, then Describe+Sync) goes to the primary, as both
            // halves must: an unnamed statement lives on one connection.
            Action::Shard { shard, replica_ok } => (shard, replica_ok && !in_rw_tx && begins),
            Action::Reject(e) => {
                self.route.planned_error = Some(e);
                (t.default_shard, false)
            }
            Action::Fanout { .. } | Action::EveryPrimary => unreachable!("handled above"),
        };
        let (node, reason, err) = self.pick_node(&t, shard, replica_ok, decision.reason);
        // A write for a shard without a writable primary (a failover under
        // way) is held at the write gate rather than refused at once.
        let held = decision.writes && begins && self.shared.cluster.is_some() && t.shards[shard].primary.is_none();
        if err.is_some() && !held {
            self.route.planned_error = err;
        }
        // A batch that only prepares (Parse/Describe/Sync) writes nothing:
        // it is not held; its Bind is, in the batch that runs it.
        let writes = decision.writes && begins && self.route.planned_error.is_none();
        Ok(Plan::Server { shard, node, reason, begins, writes })
    }

    /// The server of `shard` for a statement; see [`pick_node`].
    pub(crate) fn pick_node(
        &self,
        t: &Topology,
        shard: ShardId,
        replica_ok: bool,
        reason: String,
    ) -> (NodeId, String, Option<RouteError>) {
        let min = self.min_lsn_for(&t.shards[shard].name);
        pick_node(&self.shared.health, t, shard, replica_ok, self.route.consistency, min, reason)
    }

    fn min_lsn_for(&self, shard: &str) -> Option<Lsn> {
        let own = match self.route.consistency {
            Consistency::ReadYourWrites => self.route.causal.get(shard).copied(),
            _ => None,
        };
        own.max(self.route.min_lsn)
    }

    /// The server to attach to for a [`Plan::Server`].
    pub(crate) fn attach_to(&mut self, t: &Topology, shard: ShardId, node: NodeId) -> Attached {
        let n = &t.nodes[node];
        let status = self.shared.health.status(&n.name, &n.address);
        status.outstanding.fetch_add(1, Ordering::Relaxed);
        let a = Attached { shard, shard_name: t.shards[shard].name.clone(), role: n.role, status };
        self.route.attached = Some(a.clone());
        a
    }

    /// The connection went back: forget where it was.
    pub(crate) fn detach(&mut self) {
        if let Some(c) = &self.client {
            c.set_attached(None);
        }
        if let Some(a) = self.route.attached.take() {
            a.status.outstanding.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A commit on `shard` reached `lsn`: later reads must see it.
    pub(crate) fn committed(&mut self, shard: &str, lsn: Lsn) {
        self.route.causal.insert(shard.to_owned(), lsn);
        self.route.last_commit = Some((shard.to_owned(), lsn));
    }

    /// Check a simple query sent on the attached connection; `Some` is the
    /// error to raise instead of running it.
    pub(crate) fn check_query(&mut self, sql: &[u8]) -> Option<RouteError> {
        if self.route.prechecked {
            return self.route.planned_error.take();
        }
        let t = self.topology();
        let gated_only = !self.routing(&t);
        if gated_only && !self.gated_while_pinned() {
            return None;
        }
        let sql = String::from_utf8_lossy(sql);
        let d = self.decide_query(&sql, &t);
        let commit = is_commit(&sql);
        if gated_only {
            return self.check_gate(&d, commit);
        }
        self.check_decision(d, commit)
    }

    /// A pinned client of a cluster node is not routed any more, but its
    /// writes still pass the write gate.
    fn gated_while_pinned(&self) -> bool {
        self.shared.cluster.is_some() && self.route.attached.is_some()
    }

    /// Check a Bind of `sql` with its parameters on the attached connection.
    pub(crate) fn check_bind(&mut self, sql: &str, after_names: &[u8]) -> Option<RouteError> {
        if self.route.prechecked {
            return self.route.planned_error.take();
        }
        let t = self.topology();
        let gated_only = !self.routing(&t);
        if gated_only && !self.gated_while_pinned() {
            return None;
        }
        let params = BindParams::parse(after_names)?;
        let d = self.decide_statement(sql, &params, &t);
        if gated_only {
            return self.check_gate(&d, is_commit(sql));
        }
        self.check_decision(d, is_commit(sql))
    }

    /// The write gate for a statement on the attached primary (`commit`:
    /// the statement commits the transaction); notes a write.
    fn check_gate(&mut self, d: &Decision, commit: bool) -> Option<RouteError> {
        let a = self.route.attached.as_ref()?;
        if a.role == Role::Primary
            && (d.writes || (commit && self.route.wrote))
            && let Some(cluster) = &self.shared.cluster
            && let Some(closed) = cluster.gate().check(&self.topology(), a.shard)
        {
            return Some(crate::cluster::gate::refusal(closed, &a.shard_name));
        }
        if d.writes && a.role == Role::Primary {
            self.route.wrote = true;
        }
        None
    }

    /// `commit`: the statement ends the transaction with a COMMIT (or
    /// prepares it for one).
    fn check_decision(&mut self, d: Decision, commit: bool) -> Option<RouteError> {
        if let Some(refused) = self.check_gate(&d, commit) {
            return Some(refused);
        }
        let a = self.route.attached.as_ref()?;
        match d.action {
            Action::Shard { shard, .. } if shard != a.shard => Some(error(
                router::route::FEATURE_NOT_SUPPORTED,
                format!(
                    "this transaction runs on shard {}; the statement is for another shard: a transaction must stay on one shard",
                    a.shard_name
                ),
            )),
            Action::Shard { .. } => None,
            Action::Fanout { .. } => Some(error(
                router::route::FEATURE_NOT_SUPPORTED,
                "a read over all shards cannot run inside a transaction: give the shard key".into(),
            )),
            Action::EveryPrimary => Some(error(
                router::route::FEATURE_NOT_SUPPORTED,
                "a schema change on a sharded cluster cannot run inside a transaction block".into(),
            )),
            Action::Reject(e) => Some(e),
        }
    }

    /// The request has been sent whole: later statements are checked.
    pub(crate) fn request_sent(&mut self) {
        self.route.prechecked = false;
        self.route.planned_error = None;
    }

    /// Statements we answer ourselves between transactions: `meridian.*`
    /// settings, and a `BEGIN` we hold until the first statement.
    fn local_query(&mut self, sql: &str, consumed: usize) -> Option<Plan> {
        let mut reply = BytesMut::new();
        let mentions_meridian = sql.as_bytes().windows(9).any(|w| w.eq_ignore_ascii_case(b"meridian."));
        if let Some(r) = mentions_meridian.then(|| self.meridian_setting(sql)).flatten() {
            match r {
                Ok((tag, row)) => {
                    if let Some((name, value)) = row {
                        messages::row_description_text(&mut reply, &[name.as_str()]);
                        messages::data_row_text(&mut reply, &[Some(value.as_str())]);
                    }
                    messages::command_complete(&mut reply, &tag);
                }
                Err(e) => messages::error_response(&mut reply, messages::Severity::Error, e.code, &e.message, None),
            }
            let status = if self.route.deferred_begin.is_some() { b'T' } else { b'I' };
            messages::ready_for_query(&mut reply, status);
            return Some(Plan::Local { consumed, reply });
        }
        let t = self.topology();
        if !self.routing(&t) {
            return None;
        }
        let first = router::lex::Lexer::new(sql).next();
        let tx_word = ["BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT"];
        if !first.is_some_and(|t| tx_word.iter().any(|w| t.is_keyword(w))) {
            return None;
        }
        let stmts = router::lex::split_statements(sql);
        let [stmt] = stmts.as_slice() else { return None };
        if self.route.deferred_begin.is_none() {
            let read_only = router::session::deferrable_begin(stmt)?;
            self.route.deferred_begin = Some(((*stmt).to_owned(), read_only));
            self.params.on_begin();
            messages::command_complete(&mut reply, "BEGIN");
            messages::ready_for_query(&mut reply, b'T');
            self.tx_status = b'T';
            return Some(Plan::Local { consumed, reply });
        }
        // BEGIN held, nothing run yet: COMMIT or ROLLBACK ends nothing
        // (not `AND CHAIN`, which starts the next transaction at once).
        if router::lex::Lexer::new(stmt).any(|t| t.is_keyword("CHAIN")) {
            return None;
        }
        let tag = match router::transaction_control(stmt)? {
            router::TxControl::Commit => "COMMIT",
            router::TxControl::Rollback => "ROLLBACK",
            _ => return None,
        };
        self.route.deferred_begin = None;
        self.params.on_end_empty();
        messages::command_complete(&mut reply, tag);
        messages::ready_for_query(&mut reply, b'I');
        self.tx_status = b'I';
        Some(Plan::Local { consumed, reply })
    }

    /// `SET`/`SHOW`/`RESET` of a `meridian.*` setting: `Ok((tag, row))`.
    fn meridian_setting(&mut self, sql: &str) -> Option<Result<SettingReply, RouteError>> {
        let stmts = router::lex::split_statements(sql);
        let [stmt] = stmts.as_slice() else { return None };
        let toks: Vec<router::lex::Token<'_>> = router::lex::Lexer::new(stmt).take(8).collect();
        use router::lex::Token;
        let verb = match toks.first() {
            Some(Token::Word(w)) => w.to_ascii_uppercase(),
            _ => return None,
        };
        let mut i = 1;
        if verb == "SET" && toks.get(1).is_some_and(|t| t.is_keyword("SESSION")) {
            i = 2;
        }
        let name = match (toks.get(i), toks.get(i + 1), toks.get(i + 2)) {
            (Some(Token::Word(a)), Some(Token::Punct('.')), Some(Token::Word(b)))
                if a.eq_ignore_ascii_case("meridian") =>
            {
                b.to_ascii_lowercase()
            }
            _ => return None,
        };
        let value = toks.get(i + 4).and_then(|v| match v {
            Token::Word(w) | Token::Number(w) => Some((*w).to_owned()),
            Token::String(s) => Some(s.trim_start_matches(['E', 'e']).trim_matches('\'').replace("''", "'")),
            Token::QuotedIdent(s) => Some((*s).to_owned()),
            _ => None,
        });
        let bad = |m: String| Some(Err(error("22023", m)));
        match verb.as_str() {
            "SHOW" => {
                let v = match name.as_str() {
                    "read_consistency" => self.route.consistency.as_str().to_owned(),
                    "shard" => self.route.shard_hint.clone().unwrap_or_default(),
                    "min_lsn" => self.route.min_lsn.map(|l| l.to_string()).unwrap_or_default(),
                    "last_commit_lsn" => {
                        self.route.last_commit.as_ref().map(|(_, l)| l.to_string()).unwrap_or_default()
                    }
                    "last_commit_shard" => self.route.last_commit.as_ref().map(|(s, _)| s.clone()).unwrap_or_default(),
                    "node" => {
                        let c = self.shared.config.load();
                        format!("{} ({})", c.node.name, c.node.region)
                    }
                    _ => {
                        return Some(Err(error(
                            "42704",
                            format!("unrecognized configuration parameter \"meridian.{name}\""),
                        )));
                    }
                };
                Some(Ok(("SHOW".into(), Some((format!("meridian.{name}"), v)))))
            }
            "SET" | "RESET" => {
                let reset = verb == "RESET" || value.as_deref().is_some_and(|v| v.eq_ignore_ascii_case("default"));
                match name.as_str() {
                    "read_consistency" if reset => self.route.consistency = Consistency::default(),
                    "read_consistency" => match value.as_deref().and_then(Consistency::parse) {
                        Some(c) => self.route.consistency = c,
                        None => {
                            return bad(format!(
                                "invalid value for meridian.read_consistency: {:?} (read_your_writes, nearest or primary)",
                                value.unwrap_or_default()
                            ));
                        }
                    },
                    "shard" if reset => self.route.shard_hint = None,
                    "shard" => {
                        let v = value.unwrap_or_default();
                        if !self.topology().shards.iter().any(|s| s.name == v) {
                            return bad(format!("invalid value for meridian.shard: no shard named {v:?}"));
                        }
                        self.route.shard_hint = Some(v);
                    }
                    "min_lsn" if reset => self.route.min_lsn = None,
                    "min_lsn" => match value.as_deref().and_then(Lsn::parse) {
                        Some(l) => self.route.min_lsn = Some(l),
                        None => {
                            return bad(format!(
                                "invalid value for meridian.min_lsn: {:?} (an LSN such as 0/16B3748)",
                                value.unwrap_or_default()
                            ));
                        }
                    },
                    _ => {
                        return Some(Err(error(
                            "42704",
                            format!("unrecognized configuration parameter \"meridian.{name}\""),
                        )));
                    }
                }
                Some(Ok((verb, None)))
            }
            _ => None,
        }
    }

    /// Apply `meridian.*` startup options (`-c meridian.read_consistency=...`).
    pub(crate) fn apply_startup_settings(&mut self, settings: &[(String, String)]) -> Result<(), String> {
        for (k, v) in settings {
            let sql = format!("SET {k} = '{}'", v.replace('\'', "''"));
            if let Some(Err(e)) = self.meridian_setting(&sql) {
                return Err(e.message);
            }
        }
        Ok(())
    }
}
