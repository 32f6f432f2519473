//! A logged-in client: relaying its messages to a server connection and
//! the server's answers back, under transaction or session pooling.
//!
//! ```text
//!          ┌──────── no server ────────┐
//!          │ wait for a client message │◀──────────────┐
//!          └─────────────┬─────────────┘               │
//!                        │ checkout, sync settings     │ ReadyForQuery 'I',
//!                        ▼                             │ nothing pending,
//!          ┌──────── attached ─────────┐               │ not pinned
//!          │ client msgs → server      │───────────────┘ (transaction mode)
//!          │ server msgs → client      │
//!          └───────────────────────────┘
//! ```
//!
//! Every message sent to the server that will be answered is recorded in
//! order ([`Expect`]), so the session knows when the server has answered
//! everything (the connection may go back to the pool), and can answer some
//! messages itself in the right place in the stream: a `Parse` of a
//! statement the connection already has, or a `Close` of a client's
//! statement name, gets its ParseComplete/CloseComplete from us.

pub mod params;
pub mod prepared;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use router::{PinReason, SessionEffect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::backend::{ServerConn, ServerState};
use crate::cancel::{CancelHandle, CancelTarget};
use crate::error::{Error, write_error};
use crate::node::Shared;
use crate::pool::Pool;
use crate::wire::frame::{HEADER_LEN, Messages, cstr};
use crate::wire::messages::{self, Severity};
use params::ClientParams;
use prepared::ClientStatements;

/// Largest message accepted from a server (PostgreSQL's own limit).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// A response the server owes us, in the order the requests were sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A client Parse; `register` is the statement id to remember on success.
    Parse {
        register: Option<u64>,
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
    /// An error we owe the client (duplicate statement name), then skip to Sync.
    FakeDuplicate,
    Bind,
    Describe,
    Execute,
    Close,
    Sync,
    /// A simple query or function call: answered up to ReadyForQuery.
    Query,
}

/// What the session does with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Forward,
    Drop,
}

/// Per-client state that is not a socket.
pub(crate) struct State {
    pub id: u64,
    shared: Arc<Shared>,
    pool: Arc<Pool>,
    /// Transaction pooling: statement names are rewritten and the server
    /// connection is given back at the end of each transaction.
    transaction_mode: bool,
    pinned: Option<PinReason>,
    max_message: usize,
    params: ClientParams,
    /// Set when settings must be re-applied on the attached connection
    /// (after a RESET).
    resync: bool,
    stmts: ClientStatements,
    /// SQL of the last unnamed Parse, when it changes session settings.
    unnamed_sets: Option<String>,
    pending: VecDeque<Expect>,
    /// The ErrorResponses owed for [`Expect::FakeDuplicate`]s, in order.
    fake_errors: VecDeque<BytesMut>,
    skip_until_sync: bool,
    tx_status: u8,
    failed: bool,
    rolled_back: bool,
    cancel: CancelHandle,
}

/// A logged-in client and, at times, the server connection serving it.
pub(crate) struct Session<S> {
    client: S,
    /// Bytes from the client not yet handled.
    cbuf: BytesMut,
    /// Bytes for the client not yet written.
    cout: BytesMut,
    /// Bytes for the server not yet written.
    sout: BytesMut,
    server: Option<ServerConn>,
    st: State,
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
            unnamed_sets: None,
            pending: VecDeque::new(),
            fake_errors: VecDeque::new(),
            skip_until_sync: false,
            tx_status: b'I',
            failed: false,
            rolled_back: false,
            cancel,
        }
    }

    fn releasable(&self) -> bool {
        self.transaction_mode && self.pinned.is_none() && self.pending.is_empty() && self.tx_status == b'I'
    }

    /// Note a statement's effect on session state.
    fn observe_sql(&mut self, sql: &str) {
        for stmt in router::lex::split_statements(sql) {
            self.observe_statement(stmt);
        }
    }

    fn observe_statement(&mut self, stmt: &str) {
        match router::session_effect(stmt) {
            SessionEffect::None | SessionEffect::DeallocateAll => {}
            SessionEffect::Pin(reason) => {
                if self.transaction_mode && self.pinned.is_none() {
                    tracing::debug!(
                        client = self.id,
                        reason = reason.as_str(),
                        "client pinned to its server connection"
                    );
                    self.pinned = Some(reason);
                }
            }
            effect => self.params.observe(&effect),
        }
    }

    /// Handle one server message; see [`Expect`].
    fn on_server(&mut self, tag: u8, body: &[u8], server: &mut ServerState) -> Verdict {
        match tag {
            b'1' => {
                if let Some(Expect::InjectedParse { .. }) = self.pending.pop_front() {
                    return Verdict::Drop;
                }
            }
            b'2' | b'3' | b's' | b'n' => {
                self.pending.pop_front();
            }
            b'T' if self.pending.front() == Some(&Expect::Describe) => {
                self.pending.pop_front();
            }
            b'C' | b'I' => {
                if tag == b'C' {
                    let tag_text = cstr(body).map(|(t, _)| t).unwrap_or_default();
                    self.rolled_back = tag_text == b"ROLLBACK";
                    if tag_text == b"DISCARD ALL" || tag_text == b"DEALLOCATE ALL" {
                        server.prepared.clear();
                        self.stmts.clear();
                    }
                }
                if self.pending.front() == Some(&Expect::Execute) {
                    self.pending.pop_front();
                }
            }
            b'E' => {
                self.failed = true;
                match self.pending.front() {
                    Some(Expect::Query) | None => {}
                    _ => {
                        // The server skips to the next Sync: so do our expectations.
                        while let Some(e) = self.pending.front() {
                            match *e {
                                Expect::Sync => break,
                                Expect::Parse { register: Some(id) } | Expect::InjectedParse { register: id } => {
                                    server.prepared.remove(&id);
                                }
                                _ => {}
                            }
                            self.pending.pop_front();
                        }
                    }
                }
            }
            b'Z' => {
                self.pending.pop_front();
                let status = body.first().copied().unwrap_or(b'I');
                self.tx_status = status;
                if self.params.has_in_flight() {
                    self.params.on_ready(status, self.failed, self.rolled_back, &mut server.applied);
                    // After a RESET the server is back at its defaults while
                    // the client expects its startup values.
                    self.resync = server.applied != *self.params.desired();
                }
                self.failed = false;
                self.rolled_back = false;
            }
            b'S' => server.note_parameter(body),
            _ => {}
        }
        Verdict::Forward
    }

    /// Answer the requests at the front of the queue that are ours to answer.
    fn emit_fakes(&mut self, out: &mut BytesMut) {
        while let Some(e) = self.pending.front() {
            match e {
                Expect::FakeParse => messages::parse_complete(out),
                Expect::FakeClose => messages::close_complete(out),
                Expect::FakeDuplicate => {
                    // PostgreSQL's answer to re-using a statement name; the
                    // messages up to the next Sync are skipped, as it would.
                    if let Some(err) = self.fake_errors.pop_front() {
                        out.extend_from_slice(&err);
                    }
                    self.pending.pop_front();
                    while let Some(e) = self.pending.front() {
                        if *e == Expect::Sync {
                            break;
                        }
                        self.pending.pop_front();
                    }
                    continue;
                }
                _ => return,
            }
            self.pending.pop_front();
        }
    }

    fn front_is_fake(&self) -> bool {
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
    fn on_client(
        &mut self,
        cbuf: &mut BytesMut,
        server: &mut ServerState,
        sout: &mut BytesMut,
        cout: &mut BytesMut,
    ) -> Result<bool, Error> {
        let mut it = Messages::new(cbuf, self.max_message);
        let mut goodbye = false;
        for m in it.by_ref() {
            let (at, h) = m?;
            let raw = &cbuf[at..at + h.total];
            let body = &raw[HEADER_LEN..];
            if self.skip_until_sync && h.tag != b'S' && h.tag != b'X' {
                continue;
            }
            match h.tag {
                b'Q' => {
                    if let Some((sql, _)) = cstr(body)
                        && router::may_affect_session(sql)
                    {
                        self.observe_sql(&String::from_utf8_lossy(sql));
                    }
                    self.pending.push_back(Expect::Query);
                    sout.extend_from_slice(raw);
                }
                b'P' => self.on_parse(raw, body, server, sout)?,
                b'B' => {
                    let (portal, rest) = cstr(body).ok_or_else(|| malformed("Bind"))?;
                    let (name, after) = cstr(rest).ok_or_else(|| malformed("Bind"))?;
                    match self.named(name).cloned() {
                        Some(stmt) => {
                            self.ensure_prepared(&stmt, server, sout);
                            messages::bind_renamed(sout, portal, &stmt.server_name, after);
                            if let Some((sql, _)) = cstr(&stmt.parse_rest)
                                && router::may_affect_session(sql)
                            {
                                self.observe_sql(&String::from_utf8_lossy(sql));
                            }
                        }
                        None => {
                            if name.is_empty()
                                && let Some(sql) = self.unnamed_sets.clone()
                            {
                                self.observe_sql(&sql);
                            }
                            sout.extend_from_slice(raw);
                        }
                    }
                    self.pending.push_back(Expect::Bind);
                }
                b'D' => {
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
                    sout.extend_from_slice(raw);
                    self.pending.push_back(Expect::Execute);
                }
                b'S' => {
                    self.skip_until_sync = false;
                    sout.extend_from_slice(raw);
                    self.pending.push_back(Expect::Sync);
                }
                b'F' => {
                    sout.extend_from_slice(raw);
                    self.pending.push_back(Expect::Query);
                }
                b'X' => {
                    goodbye = true;
                    break;
                }
                // Flush, CopyData, CopyDone, CopyFail and anything we do not
                // know: the server's business.
                _ => sout.extend_from_slice(raw),
            }
            if self.front_is_fake() {
                self.emit_fakes(cout);
            }
        }
        let n = it.consumed();
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
        if router::may_affect_session(sql) {
            let text = String::from_utf8_lossy(sql).into_owned();
            // Pins count at Parse; settings count when executed (Bind).
            let mut sets = false;
            for stmt in router::lex::split_statements(&text) {
                match router::session_effect(stmt) {
                    SessionEffect::Pin(_) => self.observe_statement(stmt),
                    SessionEffect::None | SessionEffect::DeallocateAll => {}
                    _ => sets = true,
                }
            }
            if name.is_empty() {
                self.unnamed_sets = sets.then_some(text);
            }
        } else if name.is_empty() {
            self.unnamed_sets = None;
        }
        if name.is_empty() || !self.transaction_mode {
            sout.extend_from_slice(raw);
            self.pending.push_back(Expect::Parse { register: None });
            return Ok(());
        }
        if self.stmts.contains(name) {
            let mut err = BytesMut::new();
            messages::error_response(
                &mut err,
                Severity::Error,
                tokio_postgres::error::SqlState::DUPLICATE_PSTATEMENT.code(),
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
        if server.prepared.insert(stmt.id) {
            messages::parse_renamed(sout, &stmt.server_name, rest);
            self.pending.push_back(Expect::Parse { register: Some(stmt.id) });
        } else {
            self.pending.push_back(Expect::FakeParse);
        }
        Ok(())
    }
}

fn malformed(what: &str) -> Error {
    Error::Protocol(format!("malformed {what} message"))
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) fn new(client: S, cbuf: BytesMut, server: Option<ServerConn>, st: State) -> Self {
        Session { client, cbuf, cout: BytesMut::with_capacity(8192), sout: BytesMut::with_capacity(8192), server, st }
    }

    /// Serve the client until it leaves, fails, or shutdown ends the session.
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        let result = self.serve().await;
        if let Err(e) = &result {
            self.cout.clear();
            let severity = Severity::Fatal;
            write_error(&mut self.cout, severity, e);
            let _ = self.client.write_all(&self.cout).await;
        }
        self.finish().await;
        let _ = self.client.shutdown().await;
        result
    }

    /// Give the server connection back, or throw it away if it is not clean.
    /// A connection that held one client's session state (session mode, or
    /// pinned) is reset with `DISCARD ALL` first.
    async fn finish(&mut self) {
        let Some(mut conn) = self.server.take() else { return };
        self.st.cancel.set_target(None);
        if !self.st.pending.is_empty() || self.st.tx_status != b'I' {
            return self.st.pool.discard(conn);
        }
        if !self.st.transaction_mode || self.st.pinned.is_some() {
            if let Err(e) = conn.run_quiet("DISCARD ALL", connect_timeout(&self.st)).await {
                tracing::debug!(error = %e, "server connection reset failed");
                return self.st.pool.discard(conn);
            }
            conn.state.applied.clear();
            conn.state.prepared.clear();
        }
        self.st.pool.checkin(conn);
    }

    async fn serve(&mut self) -> Result<(), Error> {
        let drain = self.st.shared.drain.clone();
        let hard = self.st.shared.hard.clone();
        let idle_tx_timeout = self.st.shared.config.load().listen.idle_in_transaction_timeout;
        let mut last_activity = Instant::now();
        loop {
            if self.server.is_none() {
                if drain.is_cancelled() {
                    return Err(Error::ShuttingDown);
                }
                if !self.has_complete_message()? {
                    // cancel safety: read_buf and cancelled() are cancel safe.
                    let n = tokio::select! {
                        biased;
                        r = self.client.read_buf(&mut self.cbuf) => r?,
                        _ = drain.cancelled() => return Err(Error::ShuttingDown),
                    };
                    if n == 0 {
                        return Ok(());
                    }
                    continue;
                }
                if self.cbuf[0] == b'X' {
                    return Ok(());
                }
                self.attach().await?;
            }
            if self.st.resync && self.st.pending.is_empty() {
                self.resync().await?;
            }
            let server = self.server.as_mut().expect("attached above");
            if !self.st.on_client(&mut self.cbuf, &mut server.state, &mut self.sout, &mut self.cout)? {
                return Ok(());
            }
            if !self.sout.is_empty() {
                server.stream.write_all(&self.sout).await.map_err(|e| Error::ServerLost(e.to_string()))?;
                self.sout.clear();
            }
            if !self.cout.is_empty() {
                self.client.write_all(&self.cout).await?;
                self.cout.clear();
            }
            if self.st.releasable() {
                // Everything was answered by us (e.g. only a Close): nothing
                // to wait for from the server.
                self.release();
                continue;
            }
            let idle_deadline = match idle_tx_timeout {
                Some(t) if self.st.tx_status != b'I' && self.st.pending.is_empty() => Some(last_activity + t),
                _ => None,
            };
            // cancel safety: both reads are read_buf on sockets, the timer
            // and the token are cancel safe.
            tokio::select! {
                r = self.client.read_buf(&mut self.cbuf) => {
                    if r? == 0 {
                        return Ok(());
                    }
                    last_activity = Instant::now();
                }
                r = server.stream.read_buf(&mut server.rbuf) => {
                    let n = r.map_err(|e| Error::ServerLost(e.to_string()))?;
                    if n == 0 {
                        return Err(Error::ServerLost("server closed the connection".into()));
                    }
                    if idle_tx_timeout.is_some() {
                        last_activity = Instant::now();
                    }
                    self.relay_server().await?;
                }
                _ = sleep_until_opt(idle_deadline) => return Err(Error::IdleInTransactionTimeout),
                _ = hard.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }

    /// Forward what the server sent; give the connection back when the
    /// transaction is over.
    async fn relay_server(&mut self) -> Result<(), Error> {
        let server = self.server.as_mut().expect("relay_server runs attached");
        let buf = &server.rbuf[..];
        let mut it = Messages::new(buf, MAX_SERVER_MESSAGE);
        let mut flushed = 0;
        let mut modified = false;
        for m in it.by_ref() {
            let (at, h) = m.map_err(|e| Error::ServerLost(e.to_string()))?;
            let end = at + h.total;
            if self.st.on_server(h.tag, &buf[at + HEADER_LEN..end], &mut server.state) == Verdict::Drop {
                self.cout.extend_from_slice(&buf[flushed..at]);
                flushed = end;
                modified = true;
            }
            if self.st.front_is_fake() {
                self.cout.extend_from_slice(&buf[flushed..end]);
                flushed = end;
                self.st.emit_fakes(&mut self.cout);
                modified = true;
            }
        }
        let consumed = it.consumed();
        if modified {
            self.cout.extend_from_slice(&buf[flushed..consumed]);
            server.rbuf.advance(consumed);
            self.client.write_all(&self.cout).await?;
            self.cout.clear();
        } else if consumed > 0 {
            self.client.write_all(&server.rbuf[..consumed]).await?;
            server.rbuf.advance(consumed);
        }
        if self.st.releasable() {
            self.release();
        }
        Ok(())
    }

    fn has_complete_message(&self) -> Result<bool, Error> {
        Ok(crate::wire::frame::complete(&self.cbuf, self.st.max_message)?.is_some())
    }

    /// Check out a server connection and make it look like this client's.
    async fn attach(&mut self) -> Result<(), Error> {
        let mut conn = self.st.pool.checkout(self.st.id).await?;
        conn.last_client = self.st.id;
        if let Some(sql) = self.st.params.sync_sql(&conn.state.applied) {
            let timeout = connect_timeout(&self.st);
            if let Err(e) = conn.run_quiet(&sql, timeout).await {
                tracing::warn!(client = self.st.id, error = %e, "cannot apply session settings on server connection");
                self.st.pool.discard(conn);
                return Err(e.into());
            }
            conn.state.applied = self.st.params.desired().clone();
        }
        self.st.cancel.set_target(Some(CancelTarget { addr: conn.peer, pid: conn.backend_pid, key: conn.backend_key }));
        self.st.tx_status = b'I';
        self.server = Some(conn);
        Ok(())
    }

    /// Re-apply settings on the attached connection after a RESET.
    async fn resync(&mut self) -> Result<(), Error> {
        self.st.resync = false;
        let timeout = connect_timeout(&self.st);
        let server = self.server.as_mut().expect("resync runs attached");
        if let Some(sql) = self.st.params.sync_sql(&server.state.applied) {
            server.run_quiet(&sql, timeout).await?;
            server.state.applied = self.st.params.desired().clone();
        }
        Ok(())
    }

    fn release(&mut self) {
        if let Some(conn) = self.server.take() {
            self.st.cancel.set_target(None);
            self.st.pool.checkin(conn);
        }
    }
}

fn connect_timeout(st: &State) -> Duration {
    st.shared.pool_config.load().connect_timeout
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
