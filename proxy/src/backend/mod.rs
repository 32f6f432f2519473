//! Server connections: opening and logging in to a PostgreSQL server, and
//! the per-connection state pools and sessions keep about it.
//!
//! A server connection is opened with a neutral startup packet (user and
//! database only). Each client's own settings (startup parameters and the
//! `SET`s it ran) are applied on checkout by the session, and recorded in
//! [`ServerConn::applied`], so a connection can serve any client of its pool.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;
use tokio_postgres::error::SqlState;

use crate::error::ClientError;
use crate::wire::frame::{self, HEADER_LEN};
use crate::wire::messages::{ErrorFields, parse_error_fields};

mod stream;
pub use stream::{ServerAddr, ServerStream};

/// Largest message accepted from a server during login.
const MAX_LOGIN_MESSAGE: usize = 1 << 20;

static NEXT_SERVER_ID: AtomicU64 = AtomicU64::new(1);

/// Why a server connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to server {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("timed out connecting to server {addr}")]
    Timeout { addr: String },
    /// The server refused the login; its error is passed on to the client.
    #[error("server refused login: {} {}", .0.code, .0.message)]
    Server(ErrorFields),
    #[error("server {addr} asked for a password but none is configured for user \"{user}\"")]
    NoPassword { addr: String, user: String },
    #[error("server authentication failed: {0}")]
    Auth(String),
    #[error("unexpected message from server during login: {0}")]
    Protocol(String),
    #[error("server i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientError for BackendError {
    fn sqlstate(&self) -> SqlState {
        match self {
            BackendError::Server(f) => SqlState::from_code(&f.code),
            BackendError::NoPassword { .. } | BackendError::Auth(_) => SqlState::INVALID_PASSWORD,
            _ => SqlState::CONNECTION_FAILURE,
        }
    }

    fn client_message(&self) -> String {
        match self {
            BackendError::Server(f) => f.message.clone(),
            BackendError::NoPassword { .. } | BackendError::Auth(_) => {
                "Meridian could not log in to the server (see the Meridian log)".into()
            }
            _ => "Meridian could not connect to the server".into(),
        }
    }
}

/// How to log in to a server.
#[derive(Clone)]
pub struct LoginParams<'a> {
    pub addr: &'a str,
    pub user: &'a str,
    pub database: &'a str,
    pub password: Option<&'a str>,
    pub timeout: Duration,
}

/// One logged-in connection to a PostgreSQL server.
#[derive(Debug)]
pub struct ServerConn {
    pub(crate) stream: ServerStream,
    /// Bytes read from the server and not yet processed.
    pub(crate) rbuf: BytesMut,
    /// Unique per process, for logs and admin views.
    pub id: u64,
    /// Where it is connected (and where cancels for it go).
    pub addr: Arc<ServerAddr>,
    /// The server's own (pid, key), the target of forwarded cancels.
    pub backend_pid: i32,
    pub backend_key: i32,
    /// Session state on the server side of this connection.
    pub state: ServerState,
    pub created: Instant,
    pub last_used: Instant,
    /// The client that used it last, for affinity on checkout (0 = none).
    pub last_client: u64,
}

impl ServerConn {
    /// Open a connection and log in; the connection is idle ('I') on return.
    /// Boxed: a connection moves between the pool and sessions at every
    /// transaction, and a pointer moves for free where the struct would be
    /// copied a dozen times.
    pub async fn connect(p: LoginParams<'_>) -> Result<Box<ServerConn>, BackendError> {
        let addr = p.addr.to_owned();
        match tokio::time::timeout(p.timeout, Self::connect_inner(&p)).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout { addr }),
        }
    }

    async fn connect_inner(p: &LoginParams<'_>) -> Result<Box<ServerConn>, BackendError> {
        let connect_error = |source| BackendError::Connect { addr: p.addr.to_owned(), source };
        let addr = ServerAddr::parse(p.addr)
            .map_err(|e| connect_error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        let stream = addr.connect().await.map_err(connect_error)?;
        let mut conn = Box::new(ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            id: NEXT_SERVER_ID.fetch_add(1, Ordering::Relaxed),
            addr: Arc::new(addr),
            backend_pid: 0,
            backend_key: 0,
            state: ServerState::default(),
            created: Instant::now(),
            last_used: Instant::now(),
            last_client: 0,
        });
        let mut out = BytesMut::new();
        frontend::startup_message([("user", p.user), ("database", p.database)], &mut out)?;
        conn.stream.write_all(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, body) = conn.read_login_message().await?;
            match tag {
                b'R' => {
                    if body.len() < 4 {
                        return Err(BackendError::Protocol("short authentication request".into()));
                    }
                    let kind = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let data = &body[4..];
                    out.clear();
                    let password = || {
                        p.password.ok_or_else(|| BackendError::NoPassword { addr: p.addr.into(), user: p.user.into() })
                    };
                    match kind {
                        0 => continue,
                        3 => frontend::password_message(password()?.as_bytes(), &mut out)?,
                        5 => {
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| BackendError::Protocol("short md5 salt".into()))?;
                            let hash = postgres_protocol::authentication::md5_hash(
                                p.user.as_bytes(),
                                password()?.as_bytes(),
                                salt,
                            );
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let mechanisms = data.split(|b| *b == 0).collect::<Vec<_>>();
                            if !mechanisms.contains(&&b"SCRAM-SHA-256"[..]) {
                                return Err(BackendError::Auth("server offers no SCRAM-SHA-256".into()));
                            }
                            let s = ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let mut s = scram
                                .take()
                                .ok_or_else(|| BackendError::Protocol("SASL continue without start".into()))?;
                            // Thousands of SHA-256 rounds: keep them off the
                            // runtime's worker threads.
                            let data = data.to_vec();
                            let s = tokio::task::spawn_blocking(move || s.update(&data).map(|()| s))
                                .await
                                .map_err(|e| BackendError::Auth(e.to_string()))?
                                .map_err(|e| BackendError::Auth(e.to_string()))?;
                            frontend::sasl_response(s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        12 => {
                            let mut s = scram
                                .take()
                                .ok_or_else(|| BackendError::Protocol("SASL final without start".into()))?;
                            s.finish(data).map_err(|e| BackendError::Auth(e.to_string()))?;
                            continue;
                        }
                        k => return Err(BackendError::Auth(format!("unsupported authentication request {k}"))),
                    }
                    conn.stream.write_all(&out).await?;
                }
                b'E' => return Err(BackendError::Server(parse_error_fields(&body))),
                b'S' => conn.state.note_parameter(&body),
                b'K' if body.len() == 8 => {
                    conn.backend_pid = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    conn.backend_key = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                }
                b'Z' => return Ok(conn),
                b'N' | b'v' => {}
                t => return Err(BackendError::Protocol(format!("message type {:?}", t as char))),
            }
        }
    }

    async fn read_login_message(&mut self) -> Result<(u8, Vec<u8>), BackendError> {
        self.read_message(MAX_LOGIN_MESSAGE).await
    }

    async fn read_message(&mut self, limit: usize) -> Result<(u8, Vec<u8>), BackendError> {
        loop {
            match frame::complete(&self.rbuf, limit) {
                Ok(Some(h)) => {
                    let body = self.rbuf[HEADER_LEN..h.total].to_vec();
                    self.rbuf.advance(h.total);
                    return Ok((h.tag, body));
                }
                Ok(None) => {}
                Err(e) => return Err(BackendError::Protocol(e.to_string())),
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Run `sql` as a simple query of our own and swallow its responses;
    /// returns the first error the server reported.
    pub async fn run_quiet(&mut self, sql: &str, timeout: Duration) -> Result<(), BackendError> {
        self.query_value(sql, timeout).await.map(drop)
    }

    /// Run `sql` and return the first column of its first row (as text),
    /// if any.
    pub async fn query_value(&mut self, sql: &str, timeout: Duration) -> Result<Option<String>, BackendError> {
        let mut out = BytesMut::new();
        crate::wire::messages::query(&mut out, sql);
        let work = async {
            self.stream.write_all(&out).await?;
            let mut first_error = None;
            let mut value = None;
            loop {
                let (tag, body) = self.read_login_message().await?;
                match tag {
                    b'E' if first_error.is_none() => first_error = Some(parse_error_fields(&body)),
                    b'S' => self.state.note_parameter(&body),
                    b'D' if value.is_none() => value = first_column(&body),
                    b'Z' => return first_error.map_or(Ok(value), |f| Err(BackendError::Server(f))),
                    _ => {}
                }
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout { addr: self.addr.to_string() }),
        }
    }
}

/// Everything a server answered to one simple query, up to ReadyForQuery.
#[derive(Debug, Default)]
pub struct Collected {
    /// Messages before ReadyForQuery, as (tag, body).
    pub messages: Vec<(u8, Vec<u8>)>,
    /// ReadyForQuery's transaction status.
    pub status: u8,
    pub error: Option<crate::wire::messages::ErrorFields>,
}

impl ServerConn {
    /// Has the server not closed this idle connection (restart,
    /// `pg_terminate_backend`, `idle_session_timeout`)? An idle connection
    /// has nothing to read: readable means closed or dying.
    pub fn idle_and_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Run `sql` (no time limit: a schema change or a large read may take
    /// long) and keep every answer.
    pub async fn run_collect(&mut self, sql: &str) -> Result<Collected, BackendError> {
        let mut out = BytesMut::new();
        crate::wire::messages::query(&mut out, sql);
        self.send_collect(&out).await
    }

    /// Send `request` (messages ending in a Query or a Sync) and keep every
    /// answer up to ReadyForQuery.
    pub async fn send_collect(&mut self, request: &[u8]) -> Result<Collected, BackendError> {
        self.stream.write_all(request).await?;
        let mut c = Collected::default();
        loop {
            let (tag, body) = self.read_message(1 << 30).await?;
            match tag {
                b'Z' => {
                    c.status = body.first().copied().unwrap_or(b'I');
                    return Ok(c);
                }
                b'S' => self.state.note_parameter(&body),
                b'E' if c.error.is_none() => c.error = Some(parse_error_fields(&body)),
                _ => {}
            }
            c.messages.push((tag, body));
        }
    }
}

/// The first column of a DataRow body, as text; `None` for NULL or none.
fn first_column(body: &[u8]) -> Option<String> {
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    if n < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    Some(String::from_utf8_lossy(body.get(6..6 + len)?).into_owned())
}

/// What a server connection's session holds, as far as the proxy tracks it.
#[derive(Debug, Default)]
pub struct ServerState {
    /// Session settings applied for clients: parameter name → SQL that sets it.
    pub applied: BTreeMap<String, String>,
    /// Values the server reported in ParameterStatus messages.
    pub reported: BTreeMap<String, String>,
    /// Ids of the prepared statements that exist on this connection
    /// (looked up at every Bind under transaction pooling).
    pub prepared: HashSet<u64, BuildHasherDefault<IdHasher>>,
    /// `applied` equals the settings of the client params with this stamp
    /// (`ClientParams::generation`; 0: unknown). Whoever changes `applied`
    /// sets it, or resets it to 0.
    pub synced: u64,
}

/// Hasher for statement ids ([`crate::session::prepared::Statement::id`]):
/// they are small sequential numbers we hand out, not input an attacker
/// picks, so a multiplicative mix is enough and SipHash's cost is not.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads sequential ids over the high bits,
        // which hashbrown uses for its control bytes.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

impl ServerState {
    /// Record a ParameterStatus body (`name\0value\0`).
    pub fn note_parameter(&mut self, body: &[u8]) {
        if let Some((k, rest)) = frame::cstr(body)
            && let Some((v, _)) = frame::cstr(rest)
        {
            let k = String::from_utf8_lossy(k).into_owned();
            let v = String::from_utf8_lossy(v).into_owned();
            self.reported.insert(k, v);
        }
    }
}
