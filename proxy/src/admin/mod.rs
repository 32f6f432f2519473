//! The admin console (DESIGN §6): `psql -d meridian` as a user whose
//! users-file entry has `admin = true`, on the node's ordinary port. It
//! answers SQL-shaped commands (`SHOW SHARDS`, `SHOW NODES`, ...,
//! `EXPLAIN ROUTE <sql>`) with ordinary row sets of text columns, from what
//! this node knows; it never touches a PostgreSQL server. Other users get
//! `42501` at login. The reference is `docs/admin-sql.md`.
//!
//! ```text
//!  handshake: auth ─▶ database "meridian"? ─▶ admin user? ─no─▶ FATAL 42501
//!                                                │yes
//!                                                ▼
//!      AuthenticationOk, ParameterStatus…, BackendKeyData, ReadyForQuery
//!                                                │
//!   ┌────────────────────────────────────────────▼─────────────────────────┐
//!   │ Query ─▶ split statements ─▶ command::parse ─▶ views / explain        │
//!   │          ─▶ RowDescription + DataRow… + CommandComplete (per command)│
//!   │          ─▶ ReadyForQuery 'I'   (the first error stops the rest)     │
//!   │ Parse/Bind/Describe/Execute/Close ─▶ 0A000 once, skip to Sync        │
//!   │ Terminate, EOF ─▶ end;  drain (SIGTERM) or hard stop ─▶ FATAL 57P01  │
//!   └──────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! What it deliberately does not do yet: change anything (no `PAUSE`,
//! `RELOAD`, topology commands), show other nodes' views, or speak the
//! extended query protocol.

mod command;
mod counters;
mod explain;
mod views;

use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::error::SqlState;

use crate::cancel::CancelHandle;
use crate::clients::{ClientGuard, ClientState};
use crate::error::{ClientError, Error, write_error};
use crate::node::Shared;
use crate::wire::frame::{self, HEADER_LEN, cstr};
use crate::wire::messages::{self, Severity};
pub use counters::{RouteCounters, ServerRoutes};

/// The database name that reaches the admin console.
pub const DATABASE: &str = "meridian";

/// An admin statement that cannot run. Shown to the admin as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Not an admin command; names what was given.
    #[error("unrecognized admin command \"{0}\"")]
    Unknown(String),
    /// An admin command written wrong.
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("the admin console does not support the extended query protocol")]
    ExtendedProtocol,
    #[error("the admin console does not support function calls")]
    FunctionCall,
}

impl AdminError {
    /// What the admin can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            AdminError::Unknown(_) | AdminError::Syntax(_) => command::SEE_HELP,
            AdminError::ExtendedProtocol | AdminError::FunctionCall => {
                "Send simple queries (psql does; tokio-postgres: simple_query)."
            }
        }
    }
}

impl ClientError for AdminError {
    fn sqlstate(&self) -> SqlState {
        match self {
            AdminError::Unknown(_) | AdminError::Syntax(_) => SqlState::SYNTAX_ERROR,
            AdminError::ExtendedProtocol | AdminError::FunctionCall => SqlState::FEATURE_NOT_SUPPORTED,
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
    for (kind, value) in
        [(b'S', "ERROR"), (b'V', "ERROR"), (b'C', e.sqlstate().code()), (b'M', &e.client_message()), (b'H', e.hint())]
    {
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
    pub(crate) async fn run(mut self) -> Result<(), Error> {
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
                if !self.handle(h.tag, &msg)? {
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
    fn handle(&mut self, tag: u8, body: &[u8]) -> Result<bool, Error> {
        match tag {
            b'Q' => {
                let sql = String::from_utf8_lossy(cstr(body).map(|(s, _)| s).unwrap_or_default()).into_owned();
                self.client.set_state(ClientState::Active);
                self.query(&sql);
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
    fn query(&mut self, sql: &str) {
        let stmts = router::lex::split_statements(sql);
        if stmts.is_empty() {
            // EmptyQueryResponse.
            self.out.put_slice(&[b'I', 0, 0, 0, 4]);
            return;
        }
        let snap = views::Snapshot::of(&self.shared);
        for stmt in stmts {
            let result = match command::parse(stmt) {
                Ok(command::Command::Show(topic)) => snap.show(topic),
                Ok(command::Command::ExplainRoute(sql)) => explain::explain(&snap, &sql),
                Err(e) => {
                    write_admin_error(&mut self.out, &e);
                    return;
                }
            };
            result.encode(&mut self.out);
        }
    }
}

#[cfg(test)]
mod tests;
