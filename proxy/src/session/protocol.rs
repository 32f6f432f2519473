//! The sans-IO core of a session: what each client message means for the
//! server connection, and what each server message means for the client.
//!
//! Every request sent to the server that will be answered is recorded in
//! order ([`Expect`]), so the session knows when the server has answered
//! everything (the connection may go back to the pool), and can answer some
//! messages itself in the right place of the stream: a `Parse` of a
//! statement the connection already has, or a `Close` of a client's
//! statement name, gets its ParseComplete/CloseComplete from us.
//!
//! ```text
//!  client ──Q/P/B/D/E/C/S──▶ on_client ──▶ bytes for the server (+ Expect entries)
//!                                     └──▶ our own answers, once at the front
//!  server ──1/2/C/E/Z/...──▶ on_server ──▶ Forward | Drop, Expect entries popped,
//!                                          settings committed (params)
//! ```

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use router::{PinReason, SessionEffect};
use tokio_postgres::error::SqlState;

use super::lost::{self, Ends};
use super::params::{ClientParams, Effect};
use super::prepared::{self, ClientStatements};
use crate::backend::ServerState;
use crate::cancel::CancelHandle;
use crate::error::Error;
use crate::node::Shared;
use crate::pool::Pool;
use crate::wire::frame::{HEADER_LEN, Messages, cstr};
use crate::wire::messages::{self, Severity};

/// A response the server owes, in the order the requests were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// A client Parse; `register` is the statement id the connection gets,
    /// `named` says a client statement name waits on it.
    Parse {
        register: Option<u64>,
        named: bool,
    },
    /// A Parse we added so that a client's Bind/Describe finds its
    /// statement: its ParseComplete is ours, not the client's.
    InjectedParse {
        register: u64,
    },
    /// A Parse the connection did not need: we owe the client ParseComplete.
    FakeParse,
    /// A client Close of its statement name: we owe the client CloseComplete.
    FakeClose,
    /// An error we owe the client (statement name in use), then skip to Sync.
    FakeDuplicate,
    Bind,
    Describe,
    /// `tracked`: its statement's [`Effect`] waits in `effects`.
    Execute {
        tracked: bool,
    },
    Close,
    /// `ends`: what the batch it closes may do to the transaction, should
    /// the server die before answering ([`lost`]).
    Sync {
        ends: Ends,
    },
    /// A simple query, function call or unknown message: answered up to
    /// ReadyForQuery. `tracked`: its statements' effects wait in `effects`.
    Query {
        tracked: bool,
        ends: Ends,
    },
    /// The client ended a COPY IN (CopyDone/CopyFail): no answer of its own.
    CopyEnd,
    /// A query we sent for the client (a held `BEGIN`): its CommandComplete
    /// and ReadyForQuery are ours.
    InjectedQuery,
    /// The Parse and Bind of a statement we sent to raise a routing error
    /// in place of the client's: their answers are ours.
    RaiseParse,
    RaiseBind,
}

/// What the session does with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Forward,
    Drop,
    /// Forward a ReadyForQuery with this status instead.
    ReadyAs(u8),
}

/// Per-client state that is not a socket.
pub(crate) struct State {
    pub id: u64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) pool: Arc<Pool>,
    /// Transaction pooling: statement names are rewritten and the server
    /// connection is given back at the end of each transaction.
    pub(crate) transaction_mode: bool,
    pub(crate) pinned: Option<PinReason>,
    pub(crate) max_message: usize,
    pub(crate) params: ClientParams,
    /// Settings must be re-applied on the attached connection (after a RESET).
    pub(crate) resync: bool,
    stmts: ClientStatements,
    /// SQL of the last unnamed Parse (buffer reused), for its Bind's effect.
    unnamed_sql: String,
    /// [`router::may_affect_session`] of `unnamed_sql`.
    unnamed_affects: bool,
    pub(crate) pending: VecDeque<Expect>,
    /// Effects of tracked requests, one list per tracked Query/Execute, in order.
    effects: VecDeque<VecDeque<Effect>>,
    /// Effect of the statement bound last, for the next Execute.
    bound_effect: Option<Effect>,
    /// Client statement names whose Parse is in flight, with the statement id.
    parse_names: VecDeque<(Bytes, u64)>,
    /// The ErrorResponses owed for [`Expect::FakeDuplicate`]s, in order.
    fake_errors: VecDeque<BytesMut>,
    skip_until_sync: bool,
    /// Extended-protocol messages went out since the last Sync: the server
    /// holds an implicit transaction (or an unnamed statement) for them.
    unsynced: bool,
    /// The server is in COPY FROM STDIN started by an Execute; it ignores
    /// the Syncs that arrive meanwhile.
    copy_in: bool,
    /// [`lost::ends`] of the unnamed statement, of the statement bound
    /// last, and of the Executes since the last Sync.
    unnamed_ends: Ends,
    bound_ends: Ends,
    batch_ends: Ends,
    /// The server sent a FATAL error: the connection ends by its word,
    /// and so does the session (the error is relayed as it came).
    server_fatal: bool,
    /// The server connection died under a transaction that we now play
    /// until the client ends it ([`lost::Aborted`]); no server attached.
    pub(crate) lost: Option<lost::Aborted>,
    pub(crate) tx_status: u8,
    pub(crate) cancel: CancelHandle,
    pub(crate) route: super::route::RouteState,
    /// This client's entry in the node's client list (admin `SHOW CLIENTS`).
    pub(crate) client: Option<Arc<crate::clients::ClientEntry>>,
}

impl State {
    pub(crate) fn new(
        id: u64,
        shared: Arc<Shared>,
        pool: Arc<Pool>,
        transaction_mode: bool,
        params: ClientParams,
        cancel: CancelHandle,
    ) -> State {
        let max_message = shared.config.load().listen.max_message_size;
        let client = shared.clients.get(id);
        State {
            id,
            shared,
            pool,
            transaction_mode,
            pinned: None,
            max_message,
            params,
            resync: false,
            stmts: ClientStatements::default(),
            unnamed_sql: String::new(),
            unnamed_affects: false,
            pending: VecDeque::new(),
            effects: VecDeque::new(),
            bound_effect: None,
            parse_names: VecDeque::new(),
            fake_errors: VecDeque::new(),
            skip_until_sync: false,
            unsynced: false,
            copy_in: false,
            unnamed_ends: Ends::Nothing,
            bound_ends: Ends::Nothing,
            batch_ends: Ends::Nothing,
            server_fatal: false,
            lost: None,
            tx_status: b'I',
            cancel,
            route: Default::default(),
            client,
        }
    }

    /// A query was put in front of the client's for it (a held `BEGIN`).
    pub(crate) fn push_injected_query(&mut self) {
        self.pending.push_back(Expect::InjectedQuery);
    }

    /// The pool for the server at `address`, for this client's database and user.
    pub(crate) fn pool_for(&self, address: &str) -> Arc<Pool> {
        if self.pool.key.addr == address {
            return self.pool.clone();
        }
        let mut known = self.route.pools.lock();
        if let Some(p) = known.iter().find(|p| p.key.addr == address) {
            return p.clone();
        }
        let key = crate::pool::PoolKey {
            addr: address.to_owned(),
            database: self.pool.key.database.clone(),
            user: self.pool.key.user.clone(),
        };
        let users = self.shared.users.load();
        let password = users.get(&key.user).and_then(|u| u.backend_password.as_ref()).map(|s| s.expose());
        let pool = self.shared.pools.get(&key, password, &self.shared.pool_config.load_full());
        known.push(pool.clone());
        pool
    }

    /// SQL of the last unnamed Parse.
    pub(crate) fn unnamed_sql(&self) -> &str {
        &self.unnamed_sql
    }

    /// The Parse body (after the name) of the client's named statement.
    pub(crate) fn statement_parse_rest(&self, name: &[u8]) -> Option<Vec<u8>> {
        if name.is_empty() {
            return None;
        }
        self.stmts.get(name).map(|s| s.parse_rest.to_vec())
    }

    /// The client's unnamed statement is now `sql` (its Parse was answered
    /// by us).
    pub(crate) fn set_unnamed_sql(&mut self, sql: &str) {
        self.unnamed_sql.clear();
        self.unnamed_sql.push_str(sql);
        self.unnamed_affects = router::may_affect_session(sql.as_bytes());
        self.unnamed_ends = lost::ends(sql.as_bytes());
    }

    /// SQL of the client's named statement `name`, if it has one.
    pub(crate) fn statement_sql(&self, name: &[u8]) -> Option<String> {
        let stmt = self.stmts.get(name)?;
        let sql = cstr(&stmt.parse_rest).map(|(s, _)| s).unwrap_or_default();
        Some(String::from_utf8_lossy(sql).into_owned())
    }

    /// A request (a Query, or messages up to Sync) is on its way and not
    /// answered yet.
    fn request_in_flight(&self) -> bool {
        self.pending.iter().any(|e| matches!(e, Expect::Sync { .. } | Expect::Query { .. } | Expect::InjectedQuery))
    }

    /// May the server connection go back to the pool now?
    pub(crate) fn releasable(&self) -> bool {
        self.transaction_mode
            && self.pinned.is_none()
            && self.pending.is_empty()
            && self.tx_status == b'I'
            && !self.unsynced
            && !self.copy_in
    }

    /// Is the server connection idle between transactions (nothing owed,
    /// nothing half-sent)?
    pub(crate) fn idle(&self) -> bool {
        self.pending.is_empty() && self.tx_status == b'I' && !self.unsynced && !self.copy_in
    }

    /// Must statements' effects be collected? Only while settings wait for
    /// a transaction's outcome, or when the text may change them.
    fn tracking(&self) -> bool {
        self.params.tracking() || !self.effects.is_empty()
    }

    fn pin_statements(&mut self, sql: &str) {
        for stmt in router::lex::split_statements(sql) {
            if let SessionEffect::Pin(reason) = router::session_effect(stmt)
                && self.transaction_mode
                && self.pinned.is_none()
            {
                tracing::debug!(client = self.id, reason = reason.as_str(), "client pinned to its server connection");
                self.pinned = Some(reason);
            }
        }
    }

    fn pop(&mut self) -> Option<Expect> {
        let e = self.pending.pop_front();
        while self.pending.front() == Some(&Expect::CopyEnd) {
            self.pending.pop_front();
        }
        e
    }

    /// Handle one server message.
    pub(crate) fn on_server(&mut self, tag: u8, body: &[u8], server: &mut ServerState) -> Verdict {
        match (self.pending.front(), tag) {
            (Some(Expect::InjectedQuery), b'Z') => {
                self.pop();
                self.tx_status = body.first().copied().unwrap_or(b'I');
                return Verdict::Drop;
            }
            (Some(Expect::InjectedQuery), b'C') => return Verdict::Drop,
            (Some(Expect::RaiseParse), b'1') | (Some(Expect::RaiseBind), b'2') => {
                self.pop();
                return Verdict::Drop;
            }
            _ => {}
        }
        match tag {
            b'1' => match self.pop() {
                Some(Expect::InjectedParse { .. }) => return Verdict::Drop,
                Some(Expect::Parse { named: true, .. }) => {
                    self.parse_names.pop_front();
                }
                _ => {}
            },
            b'2' | b'3' | b'n' => {
                self.pop();
            }
            b's' => {
                if let Some(Expect::Execute { tracked: true }) = self.pop() {
                    self.effects.pop_front();
                }
            }
            b'T' if self.pending.front() == Some(&Expect::Describe) => {
                self.pop();
            }
            b'G' => {
                if let Some(Expect::Execute { .. }) = self.pending.front() {
                    // COPY FROM STDIN via Execute: the server ignores Syncs
                    // until the copy ends, so none of those is answered.
                    self.copy_in = true;
                    let end = self.pending.iter().position(|e| *e == Expect::CopyEnd).unwrap_or(self.pending.len());
                    let mut i = 1;
                    let mut end = end;
                    while i < end {
                        if matches!(self.pending[i], Expect::Sync { .. }) {
                            self.pending.remove(i);
                            end -= 1;
                        } else {
                            i += 1;
                        }
                    }
                }
            }
            b'C' | b'I' => {
                let command = if tag == b'C' { cstr(body).map(|(t, _)| t).unwrap_or_default() } else { &[][..] };
                if command == b"DISCARD ALL" || command == b"DEALLOCATE ALL" {
                    server.prepared.clear();
                    self.stmts.clear();
                }
                self.copy_in = false;
                let effect = match self.pending.front() {
                    Some(Expect::Execute { tracked }) => {
                        let tracked = *tracked;
                        self.pop();
                        if tracked { self.effects.pop_front().and_then(|mut l| l.pop_front()) } else { None }
                    }
                    Some(Expect::Query { tracked: true, .. }) => self.effects.front_mut().and_then(VecDeque::pop_front),
                    _ => None,
                };
                if let Some(effect) = effect {
                    self.params.on_complete(effect, command, server);
                }
            }
            b'E' => {
                if is_fatal(body) && is_server_crash(body) && self.transaction_mode && self.pinned.is_none() {
                    // The server is going down under us (its postmaster
                    // died or restarts after a crash): what the client
                    // learns is decided by the loss of the connection that
                    // follows ([`lost`]), as if it had vanished silently.
                    return Verdict::Drop;
                }
                self.params.on_error();
                self.copy_in = false;
                if is_fatal(body) {
                    self.server_fatal = true;
                }
                match self.pending.front() {
                    Some(Expect::Query { .. }) | None => {}
                    _ => self.discard_until_sync(server),
                }
            }
            b'Z' => {
                if let Some(Expect::Query { tracked: true, .. }) = self.pop() {
                    self.effects.pop_front();
                }
                let status = body.first().copied().unwrap_or(b'I');
                self.tx_status = status;
                if self.route.deferred_begin.is_some() && status == b'I' {
                    // A statement prepared while our held BEGIN waits: the
                    // server is idle, the client is in its transaction.
                    return Verdict::ReadyAs(b'T');
                }
                if self.params.on_ready(status, server) {
                    // After a RESET the server is back at its defaults while
                    // the client expects its startup values.
                    self.resync = server.applied != *self.params.desired();
                }
            }
            b'S' => server.note_parameter(body),
            _ => {}
        }
        Verdict::Forward
    }

    /// The server skips the rest of an extended batch after an error: so do
    /// our expectations, up to the Sync.
    fn discard_until_sync(&mut self, server: &mut ServerState) {
        while let Some(e) = self.pending.front().copied() {
            match e {
                Expect::Sync { .. } => break,
                Expect::Parse { register, named } => {
                    if let Some(id) = register {
                        server.prepared.remove(&id);
                    }
                    if named {
                        self.forget_failed_parse();
                    }
                }
                Expect::InjectedParse { register } => {
                    server.prepared.remove(&register);
                }
                Expect::FakeParse => self.forget_failed_parse(),
                Expect::FakeDuplicate => {
                    self.fake_errors.pop_front();
                }
                Expect::Execute { tracked: true } => {
                    self.effects.pop_front();
                }
                _ => {}
            }
            self.pending.pop_front();
        }
    }

    /// A named Parse failed or was skipped: the client's name is free again.
    fn forget_failed_parse(&mut self) {
        if let Some((name, id)) = self.parse_names.pop_front()
            && self.stmts.get(&name).is_some_and(|s| s.id == id)
        {
            self.stmts.remove(&name);
        }
    }

    /// Answer the requests at the front of the queue that are ours to answer.
    pub(crate) fn emit_fakes(&mut self, out: &mut BytesMut, server: &mut ServerState) {
        while let Some(e) = self.pending.front() {
            match e {
                Expect::FakeParse => {
                    messages::parse_complete(out);
                    self.parse_names.pop_front();
                }
                Expect::FakeClose => messages::close_complete(out),
                Expect::FakeDuplicate => {
                    // PostgreSQL's answer to re-using a statement name; the
                    // messages up to the next Sync are skipped, as it would.
                    if let Some(err) = self.fake_errors.pop_front() {
                        out.extend_from_slice(&err);
                    }
                    self.params.on_error();
                    self.pop();
                    self.discard_until_sync(server);
                    continue;
                }
                _ => return,
            }
            self.pop();
        }
    }

    pub(crate) fn front_is_fake(&self) -> bool {
        matches!(self.pending.front(), Some(Expect::FakeParse | Expect::FakeClose | Expect::FakeDuplicate))
    }

    /// Make sure `stmt` exists on the serving connection, preparing it first
    /// if needed.
    fn ensure_prepared(&mut self, stmt: &prepared::Statement, server: &mut ServerState, sout: &mut BytesMut) {
        if server.prepared.insert(stmt.id) {
            messages::parse_renamed(sout, &stmt.server_name, &stmt.parse_rest);
            self.pending.push_back(Expect::InjectedParse { register: stmt.id });
        }
    }

    /// Handle the client's complete messages in `cbuf`, queueing what goes to
    /// the server in `sout` and our own answers in `cout`. Returns `false` when
    /// the client said Terminate.
    pub(crate) fn on_client(
        &mut self,
        cbuf: &mut BytesMut,
        server: &mut ServerState,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<bool, Error> {
        let mut it = Messages::new(cbuf, self.max_message);
        let mut goodbye = false;
        // With routing, one request at a time between transactions: the
        // next one may belong on another server.
        // Worked out only when it matters (a second request behind one in
        // flight), not for every batch: it reads the topology.
        let mut one_request = None;
        let mut done = 0;
        for m in it.by_ref() {
            let (at, h) = m?;
            if self.tx_status == b'I'
                && !matches!(h.tag, b'd' | b'c' | b'f' | b'H')
                && self.request_in_flight()
                && *one_request.get_or_insert_with(|| self.routing(&self.topology()))
            {
                break;
            }
            done = at + h.total;
            let raw = &cbuf[at..at + h.total];
            let body = &raw[HEADER_LEN..];
            if self.skip_until_sync && h.tag != b'S' && h.tag != b'X' {
                continue;
            }
            match h.tag {
                b'Q' => {
                    let sql = cstr(body).map(|(s, _)| s).unwrap_or_default();
                    let refused = self.check_query(sql);
                    self.request_sent();
                    if let Some(e) = refused {
                        messages::query(sout, &super::route::raise_sql(&e));
                        self.pending.push_back(Expect::Query { tracked: false, ends: Ends::Nothing });
                        continue;
                    }
                    if starts_with_word(sql, b"drop") {
                        self.before_drop_database(sql);
                    }
                    let affects = router::may_affect_session(sql);
                    let tracked = affects || self.tracking();
                    if affects || tracked {
                        let sql = String::from_utf8_lossy(sql);
                        if affects {
                            self.pin_statements(&sql);
                        }
                        if tracked {
                            self.effects.push_back(Effect::of_query(&sql));
                        }
                    }
                    self.pending.push_back(Expect::Query { tracked, ends: lost::ends(sql) });
                    sout.extend_from_slice(raw);
                }
                b'P' => {
                    self.unsynced = true;
                    self.on_parse(raw, body, server, sout)?;
                }
                b'B' => {
                    self.unsynced = true;
                    let (portal, rest) = cstr(body).ok_or_else(|| malformed("Bind"))?;
                    let (name, after) = cstr(rest).ok_or_else(|| malformed("Bind"))?;
                    let refused = if self.route.prechecked {
                        self.route.planned_error.take()
                    } else if self.route.attached.is_some() {
                        let sql =
                            if name.is_empty() { Some(self.unnamed_sql.clone()) } else { self.statement_sql(name) };
                        sql.and_then(|sql| self.check_bind(&sql, after))
                    } else {
                        None
                    };
                    if let Some(e) = refused {
                        // Our own statement fails in its place; the server
                        // then skips the rest of the batch, up to Sync.
                        messages::parse_renamed(sout, "", format!("{}\0\0\0", super::route::raise_sql(&e)).as_bytes());
                        self.pending.push_back(Expect::RaiseParse);
                        messages::bind_renamed(sout, b"", "", &[0, 0, 0, 0, 0, 0]);
                        self.pending.push_back(Expect::RaiseBind);
                        self.bound_ends = Ends::Nothing;
                        messages::execute(sout);
                        self.pending.push_back(Expect::Execute { tracked: false });
                        self.skip_until_sync = true;
                        continue;
                    }
                    let tracking = self.tracking();
                    match self.named(name).cloned() {
                        Some(stmt) => {
                            self.ensure_prepared(&stmt, server, sout);
                            messages::bind_renamed(sout, portal, &stmt.server_name, after);
                            self.bound_ends = stmt.ends;
                            self.bound_effect = (tracking || stmt.may_affect_session).then(|| {
                                let sql = cstr(&stmt.parse_rest).map(|(s, _)| s).unwrap_or_default();
                                Effect::of(&String::from_utf8_lossy(sql))
                            });
                        }
                        None => {
                            // A name we do not rewrite (session mode): unknown.
                            self.bound_ends = if name.is_empty() { self.unnamed_ends } else { Ends::MayCommit };
                            self.bound_effect = if name.is_empty() && (tracking || self.unnamed_affects) {
                                Some(Effect::of(&self.unnamed_sql))
                            } else {
                                None
                            };
                            sout.extend_from_slice(raw);
                        }
                    }
                    self.pending.push_back(Expect::Bind);
                }
                b'D' => {
                    self.unsynced = true;
                    let kind = body.first().copied();
                    let name = cstr(body.get(1..).unwrap_or_default()).map(|(n, _)| n).unwrap_or_default();
                    match (kind, self.named(name).cloned()) {
                        (Some(b'S'), Some(stmt)) => {
                            self.ensure_prepared(&stmt, server, sout);
                            messages::describe_statement(sout, &stmt.server_name);
                        }
                        _ => sout.extend_from_slice(raw),
                    }
                    self.pending.push_back(Expect::Describe);
                }
                b'C' => {
                    self.unsynced = true;
                    let kind = body.first().copied();
                    let name = cstr(body.get(1..).unwrap_or_default()).map(|(n, _)| n).unwrap_or_default();
                    if kind == Some(b'S') && self.named(name).is_some() {
                        self.stmts.remove(name);
                        self.pending.push_back(Expect::FakeClose);
                    } else {
                        sout.extend_from_slice(raw);
                        self.pending.push_back(Expect::Close);
                    }
                }
                b'E' => {
                    self.unsynced = true;
                    let effect = self.bound_effect.take().filter(|e| *e != Effect::None);
                    let tracked = effect.is_some();
                    if let Some(e) = effect {
                        self.effects.push_back(VecDeque::from([e]));
                    }
                    self.batch_ends = self.batch_ends.max(self.bound_ends);
                    sout.extend_from_slice(raw);
                    self.pending.push_back(Expect::Execute { tracked });
                }
                b'S' => {
                    self.skip_until_sync = false;
                    self.request_sent();
                    sout.extend_from_slice(raw);
                    if !self.copy_in {
                        self.unsynced = false;
                        let ends = std::mem::take(&mut self.batch_ends);
                        self.pending.push_back(Expect::Sync { ends });
                    }
                }
                b'H' | b'd' => sout.extend_from_slice(raw),
                b'c' | b'f' => {
                    sout.extend_from_slice(raw);
                    self.copy_in = false;
                    if !self.pending.is_empty() {
                        self.pending.push_back(Expect::CopyEnd);
                    }
                }
                b'X' => {
                    goodbye = true;
                    break;
                }
                // FunctionCall, and anything we do not know: the server
                // answers (ReadyForQuery, or an error and a closed connection),
                // and the connection stays with us until it has.
                _ => {
                    // A function call may write (lo_write...): read-your-writes
                    // must wait for it, as for any statement that may.
                    if self.route.attached.as_ref().is_some_and(|a| a.role == router::topology::Role::Primary) {
                        self.route.wrote = true;
                    }
                    sout.extend_from_slice(raw);
                    self.pending.push_back(Expect::Query { tracked: false, ends: Ends::Nothing });
                }
            }
            if self.front_is_fake() {
                self.emit_fakes(cout, server);
            }
        }
        let n = if goodbye { it.consumed() } else { done };
        cbuf.advance(n);
        Ok(!goodbye)
    }

    /// A client statement name we rewrite, if it is one.
    fn named(&self, name: &[u8]) -> Option<&Arc<prepared::Statement>> {
        if name.is_empty() || !self.transaction_mode { None } else { self.stmts.get(name) }
    }

    fn on_parse(
        &mut self,
        raw: &[u8],
        body: &[u8],
        server: &mut ServerState,
        sout: &mut BytesMut,
    ) -> Result<(), Error> {
        let (name, rest) = cstr(body).ok_or_else(|| malformed("Parse"))?;
        let (sql, _) = cstr(rest).ok_or_else(|| malformed("Parse"))?;
        // A client that re-parses the same unnamed statement (`-M extended`,
        // most drivers' unprepared queries) gets the pre-checks of last time:
        // they depend on the text alone.
        let same_unnamed = name.is_empty() && self.unnamed_sql.as_bytes() == sql;
        let affects = if same_unnamed { self.unnamed_affects } else { router::may_affect_session(sql) };
        if affects {
            // Pins count at Parse; settings when executed (Bind/Execute).
            self.pin_statements(&String::from_utf8_lossy(sql));
        }
        if name.is_empty() && !same_unnamed {
            self.unnamed_sql.clear();
            self.unnamed_sql.push_str(&String::from_utf8_lossy(sql));
            self.unnamed_affects = affects;
            self.unnamed_ends = lost::ends(sql);
        }
        if name.is_empty() || !self.transaction_mode {
            sout.extend_from_slice(raw);
            self.pending.push_back(Expect::Parse { register: None, named: false });
            return Ok(());
        }
        if self.stmts.contains(name) {
            let mut err = BytesMut::new();
            messages::error_response(
                &mut err,
                Severity::Error,
                SqlState::DUPLICATE_PSTATEMENT.code(),
                &format!("prepared statement \"{}\" already exists", String::from_utf8_lossy(name)),
                None,
            );
            self.fake_errors.push_back(err);
            self.pending.push_back(Expect::FakeDuplicate);
            self.skip_until_sync = true;
            return Ok(());
        }
        let stmt = prepared::intern(rest);
        self.stmts.insert(name, stmt.clone());
        self.parse_names.push_back((Bytes::copy_from_slice(name), stmt.id));
        if server.prepared.insert(stmt.id) {
            messages::parse_renamed(sout, &stmt.server_name, rest);
            self.pending.push_back(Expect::Parse { register: Some(stmt.id), named: true });
        } else {
            self.pending.push_back(Expect::FakeParse);
        }
        Ok(())
    }
}

impl State {
    /// Can the session outlive its server connection? Only when nothing of
    /// its own lives there (transaction pooling, not pinned), and the
    /// server did not end the connection with a FATAL of its own (that
    /// error was relayed; the session ends as PostgreSQL's would).
    pub(crate) fn survives_server_loss(&self) -> bool {
        self.transaction_mode && self.pinned.is_none() && !self.server_fatal
    }

    /// Did the attached server send a FATAL error (it ends the connection)?
    pub(crate) fn server_sent_fatal(&self) -> bool {
        self.server_fatal
    }

    /// What the client must be told now that the server connection died
    /// (see [`lost`]).
    pub(crate) fn lost_decision(&self) -> lost::Decision {
        let requests: Vec<Ends> = self
            .pending
            .iter()
            .filter_map(|e| match e {
                Expect::Query { ends, .. } | Expect::Sync { ends } => Some(*ends),
                _ => None,
            })
            .collect();
        let may_write =
            self.route.attached.as_ref().is_none_or(|a| a.role == router::topology::Role::Primary && self.route.wrote);
        lost::decide(&lost::Facts {
            status: self.tx_status,
            requests: &requests,
            open_batch: self.unsynced.then_some(self.batch_ends),
            may_write,
        })
    }

    /// The server connection died under a session that survives it: answer
    /// what was in flight into `out`, forget what the server owed, and play
    /// the rest of the transaction ([`lost::Aborted`]) if one is left.
    pub(crate) fn on_server_lost(&mut self, out: &mut BytesMut) -> lost::Decision {
        let d = self.lost_decision();
        d.write(out);
        for e in std::mem::take(&mut self.pending) {
            // A named Parse never answered: the name is not the client's.
            if matches!(e, Expect::Parse { named: true, .. } | Expect::FakeParse) {
                self.forget_failed_parse();
            }
        }
        self.effects.clear();
        self.fake_errors.clear();
        self.parse_names.clear();
        self.bound_effect = None;
        self.skip_until_sync = false;
        self.unsynced = false;
        self.copy_in = false;
        self.resync = false;
        self.bound_ends = Ends::Nothing;
        self.batch_ends = Ends::Nothing;
        self.server_fatal = false;
        self.params.on_lost();
        self.route.wrote = false;
        self.request_sent();
        self.tx_status = d.after.as_ref().map_or(b'I', lost::Aborted::status);
        self.lost = d.after.clone();
        d
    }

    /// The next request, not sent, is answered with `gone` by us
    /// ([`lost::Aborted::refusing`]); inside a transaction block (a held
    /// BEGIN) the transaction is aborted.
    pub(crate) fn refuse_unsent(&mut self, gone: crate::error::ServerGone) {
        let block = self.tx_status != b'I';
        if block {
            self.route.deferred_begin = None;
            self.params.on_lost();
        }
        let aborted = lost::Aborted::refusing(gone, block);
        self.tx_status = aborted.status();
        self.lost = Some(aborted);
    }

    /// Answer the complete messages at the front of `cbuf` while a lost
    /// transaction is played; returns the bytes consumed. Stops before a
    /// Terminate and after the message that ends the state (what follows
    /// goes to a server).
    pub(crate) fn answer_lost(&mut self, cbuf: &[u8], out: &mut BytesMut) -> Result<usize, Error> {
        let mut it = Messages::new(cbuf, self.max_message);
        let mut done = 0;
        for m in it.by_ref() {
            let (at, h) = m?;
            if h.tag == b'X' || self.lost.is_none() {
                break;
            }
            let msg = self.lost_message(h.tag, &cbuf[at + HEADER_LEN..at + h.total]);
            done = at + h.total;
            let aborted = self.lost.as_mut().expect("checked above");
            let goes_on = aborted.on_message(msg, out);
            self.tx_status = aborted.status();
            if !goes_on {
                self.lost = None;
                self.tx_status = b'I';
                break;
            }
        }
        Ok(done)
    }

    /// A client message for [`lost::Aborted`]. A Parse of a transaction end
    /// is answered, so its statement name becomes the client's.
    fn lost_message<'a>(&mut self, tag: u8, body: &'a [u8]) -> lost::Msg<'a> {
        let sql_of = |rest: &[u8]| String::from_utf8_lossy(cstr(rest).map(|(s, _)| s).unwrap_or_default()).into_owned();
        let stmt = |st: &Self, name: &[u8]| match name.is_empty() {
            true => lost::Stmt::Unnamed,
            false => lost::Stmt::Named(st.stmts.get(name).and_then(|s| lost::tx_end(&sql_of(&s.parse_rest)))),
        };
        match tag {
            b'Q' => lost::Msg::Query(std::str::from_utf8(cstr(body).map(|(s, _)| s).unwrap_or_default()).unwrap_or("")),
            b'P' => {
                let (name, rest) = cstr(body).unwrap_or_default();
                let sql = sql_of(rest);
                let end = lost::tx_end(&sql);
                if end.is_none() {
                    return lost::Msg::Parse(None, name.is_empty());
                }
                if name.is_empty() {
                    self.set_unnamed_sql(&sql);
                } else if !self.transaction_mode || self.stmts.contains(name) {
                    return lost::Msg::Parse(None, false);
                } else {
                    self.stmts.insert(name, prepared::intern(rest));
                }
                lost::Msg::Parse(end, name.is_empty())
            }
            b'B' => {
                let (_, rest) = cstr(body).unwrap_or_default();
                let (name, _) = cstr(rest).unwrap_or_default();
                lost::Msg::Bind(stmt(self, name))
            }
            b'D' => {
                let name = cstr(body.get(1..).unwrap_or_default()).map(|(n, _)| n).unwrap_or_default();
                match body.first() {
                    Some(b'S') => lost::Msg::DescribeStatement(stmt(self, name)),
                    _ => lost::Msg::DescribePortal,
                }
            }
            b'E' => lost::Msg::Execute,
            b'C' => {
                let name = cstr(body.get(1..).unwrap_or_default()).map(|(n, _)| n).unwrap_or_default();
                if body.first() == Some(&b'S') && !name.is_empty() {
                    self.stmts.remove(name);
                }
                lost::Msg::Close
            }
            b'S' => lost::Msg::Sync,
            b'H' | b'd' | b'c' | b'f' => lost::Msg::Quiet,
            _ => lost::Msg::Other,
        }
    }
}

impl State {
    /// Our own idle connections to a database would make its `DROP DATABASE`
    /// fail ("is being accessed by other users"): close them first.
    fn before_drop_database(&self, sql: &[u8]) {
        for stmt in router::lex::split_statements(&String::from_utf8_lossy(sql)) {
            if let Some(db) = router::dropped_database(stmt) {
                self.shared.pools.close_idle_to(&db);
            }
        }
    }
}

/// Does `sql` start (after white space) with `word`, in any case?
fn starts_with_word(sql: &[u8], word: &[u8]) -> bool {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(sql.len());
    sql.get(start..start + word.len()).is_some_and(|w| w.eq_ignore_ascii_case(word))
}

/// Is this ErrorResponse the server going down rather than ending this
/// session: `57P02` (another process crashed; the postmaster restarts
/// every backend), or `57P01` for a postmaster that died ("terminating
/// connection due to unexpected postmaster exit", untranslated servers).
/// An administrator's `57P01` (`pg_terminate_backend`, a shutdown) is not.
fn is_server_crash(body: &[u8]) -> bool {
    let (mut code, mut message, mut rest) = (None, None, body);
    while let Some((&kind, tail)) = rest.split_first() {
        let Some((value, after)) = cstr(tail).filter(|_| kind != 0) else { break };
        match kind {
            b'C' => code = Some(value),
            b'M' => message = Some(value),
            _ => {}
        }
        rest = after;
    }
    match code {
        Some(b"57P02") => true,
        Some(b"57P01") => {
            const POSTMASTER_DIED: &[u8] = b"unexpected postmaster exit";
            message.is_some_and(|m| m.windows(POSTMASTER_DIED.len()).any(|w| w == POSTMASTER_DIED))
        }
        _ => false,
    }
}

/// Is this ErrorResponse body a FATAL (or PANIC) one: the server ends
/// the connection after it?
fn is_fatal(body: &[u8]) -> bool {
    // 'V' is the severity never translated (PostgreSQL 9.6+); 'S' may be.
    let (mut localized, mut rest) = (None, body);
    while let Some((&kind, tail)) = rest.split_first() {
        let Some((value, after)) = cstr(tail).filter(|_| kind != 0) else { break };
        match kind {
            b'V' => return value == b"FATAL" || value == b"PANIC",
            b'S' => localized = Some(value),
            _ => {}
        }
        rest = after;
    }
    localized.is_some_and(|v| v == b"FATAL" || v == b"PANIC")
}

fn malformed(what: &str) -> Error {
    Error::Protocol(format!("malformed {what} message"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_going_down_is_told_apart_from_an_administrator() {
        let err = |code: &str, message: &str| format!("SFATAL\0VFATAL\0C{code}\0M{message}\0\0").into_bytes();
        assert!(is_server_crash(&err("57P01", "terminating connection due to unexpected postmaster exit")));
        assert!(is_server_crash(&err("57P02", "terminating connection because of crash of another server process")));
        assert!(!is_server_crash(&err("57P01", "terminating connection due to administrator command")));
        assert!(!is_server_crash(&err("40001", "could not serialize access")));
        assert!(!is_server_crash(b""));
    }

    #[test]
    fn a_fatal_error_from_the_server_is_told_apart() {
        let body = |severity, code| {
            let mut b = BytesMut::new();
            messages::error_response(&mut b, severity, code, "x", None);
            b.split_off(HEADER_LEN)
        };
        assert!(is_fatal(&body(Severity::Fatal, "57P01")));
        assert!(!is_fatal(&body(Severity::Error, "40001")));
        // A translated 'S' does not hide the 'V' that follows it.
        assert!(is_fatal(b"SFATALER\0VFATAL\0C57P01\0Mx\0\0"));
        assert!(!is_fatal(b"SFEHLER\0VERROR\0C42P01\0Mx\0\0"));
        // No 'V' (PostgreSQL before 9.6): the 'S'.
        assert!(is_fatal(b"SFATAL\0C57P01\0Mx\0\0"));
        assert!(!is_fatal(b""));
    }
}
