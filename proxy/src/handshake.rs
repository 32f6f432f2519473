//! From accept to a logged-in session: SSLRequest / direct TLS, GSSENC
//! refusal, CancelRequest, the startup packet, client authentication, and
//! the first server checkout that gives the client its ParameterStatus set.
//!
//! ```text
//! accept ─▶ first byte 0x16? ─yes─▶ TLS ─┐
//!              │no                       │
//!              ▼                         ▼
//!        SSLRequest ─▶ 'S' + TLS ─▶ startup packet ─▶ auth ─▶ checkout ─▶ Session
//!        GSSENCRequest ─▶ 'N' (again)    CancelRequest ─▶ forward, close │
//!                                                         database "meridian"
//!                                                                 ▼
//!                                          admin user? AdminSession : FATAL 42501
//! ```
//!
//! Every logged-in client is listed in [`Shared::clients`] until its
//! session ends.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::admin::AdminSession;
use crate::auth::{AuthError, Credential, PoolMode, ScramExchange, User, md5};
use crate::clients::{ClientGuard, ClientInfo, ClientMode, ClientState};
use crate::config::TlsMode;
use crate::error::{Error, write_error};
use crate::node::Shared;
use crate::pool::PoolKey;
use crate::session::params::{ClientParams, ParamError};
use crate::session::{Session, State};
use crate::unix_stream::UnixConn;
use crate::wire::frame::{self, HEADER_LEN};
use crate::wire::messages::{self, Severity, StartupPacket};

/// Largest startup-phase packet (PostgreSQL allows 10 000 bytes).
const MAX_STARTUP_PACKET: usize = 10_000;
/// Largest message during authentication.
const MAX_AUTH_MESSAGE: usize = 8192;
/// TLS record content type "handshake": the first byte of a direct TLS hello.
const TLS_HANDSHAKE: u8 = 0x16;

/// An accepted client connection.
pub(crate) enum Accepted {
    Tcp(TcpStream),
    /// On the node's Unix-domain socket (`crate::local_socket`).
    Local(UnixConn),
}

/// Serve one accepted client connection to the end.
pub(crate) async fn serve_client(stream: Accepted, shared: Arc<Shared>) {
    let timeout = shared.config.load().listen.startup_timeout;
    let ready = async {
        match stream {
            Accepted::Tcp(tcp) => {
                let peer = tcp.peer_addr().ok();
                negotiate(tcp, peer, shared.clone()).await
            }
            Accepted::Local(unix) => match plain_startup(unix, Transport::Local, None, shared.clone()).await? {
                Plain::LoggedIn(s) => Ok(s.map(Ready::Local)),
                Plain::StartTls(..) => unreachable!("TLS is not offered on the local socket"),
            },
        }
    };
    // Boxed, here and for the admin console below: a task is allocated at
    // the size of its largest state, and an idle client should hold only
    // what a session needs (a few KiB), not the login's or the console's.
    let mut session = match tokio::time::timeout(timeout, Box::pin(ready)).await {
        Ok(Ok(Some(s))) => s,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            log_ended(&e);
            return;
        }
        Err(_) => {
            tracing::info!("startup timed out");
            return;
        }
    };
    if let Err(e) = session.run().await {
        log_ended(&e);
    }
}

fn log_ended(e: &Error) {
    match e {
        Error::Io(_) | Error::ShuttingDown => tracing::debug!(error = %e, "client session ended"),
        Error::AuthFailed(_) | Error::NoUser | Error::TlsRequired | Error::AdminDenied(_) => {
            tracing::info!(error = %e, "login refused")
        }
        _ => tracing::info!(error = %e, "client session ended with an error"),
    }
}

/// A client session ready to run, over plain TCP, TLS or the local socket.
#[allow(clippy::large_enum_variant)] // one per client, moved once
pub(crate) enum Ready {
    Plain(LoggedIn<TcpStream>),
    Tls(Box<LoggedIn<tokio_rustls::server::TlsStream<TcpStream>>>),
    Local(LoggedIn<UnixConn>),
}

impl Ready {
    async fn run(&mut self) -> Result<(), Error> {
        match self {
            Ready::Plain(s) => s.run().await,
            // Boxed: a TLS or local-socket session is not inline in every
            // client's task (see `serve_client`).
            Ready::Tls(s) => Box::pin(s.run()).await,
            Ready::Local(s) => Box::pin(s.run()).await,
        }
    }
}

/// A logged-in client: an ordinary session, listed in [`Shared::clients`]
/// while the guard lives, or the admin console.
#[allow(clippy::large_enum_variant)] // one per client, moved once
pub(crate) enum LoggedIn<S> {
    Session(Session<S>, ClientGuard),
    Admin(AdminSession<S>),
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> LoggedIn<S> {
    async fn run(&mut self) -> Result<(), Error> {
        match self {
            LoggedIn::Session(s, _listed) => s.run().await,
            LoggedIn::Admin(s) => Box::pin(s.run()).await,
        }
    }
}

/// What login found the client to be.
#[allow(clippy::large_enum_variant)] // one per client, moved once
enum Admitted {
    Session { server: Option<Box<crate::backend::ServerConn>>, state: State, client: ClientGuard },
    Admin { client: ClientGuard, cancel: crate::cancel::CancelHandle },
}

async fn negotiate(tcp: TcpStream, peer: Option<SocketAddr>, shared: Arc<Shared>) -> Result<Option<Ready>, Error> {
    let tls = shared.tls.load_full();
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] == TLS_HANDSHAKE {
        // PostgreSQL 17 direct TLS: no SSLRequest, ALPN "postgresql" required.
        let Some(acceptor) = tls.as_ref() else {
            return Err(Error::Protocol("direct TLS connection but TLS is not enabled".into()));
        };
        let stream = acceptor.accept(tcp).await.map_err(Error::TlsHandshake)?;
        if stream.get_ref().1.alpn_protocol() != Some(crate::tls::ALPN_POSTGRESQL) {
            return Err(Error::Protocol("direct TLS connection without ALPN \"postgresql\"".into()));
        }
        return after_tls(stream, peer, shared).await.map(|s| s.map(|s| Ready::Tls(Box::new(s))));
    }
    match plain_startup(tcp, Transport::Tcp(tls.as_ref().as_ref()), peer, shared.clone()).await? {
        Plain::LoggedIn(s) => Ok(s.map(Ready::Plain)),
        Plain::StartTls(tcp, acceptor) => {
            let stream = acceptor.accept(tcp).await.map_err(Error::TlsHandshake)?;
            after_tls(stream, peer, shared).await.map(|s| s.map(|s| Ready::Tls(Box::new(s))))
        }
    }
}

/// How the unencrypted start of a connection ended.
#[allow(clippy::large_enum_variant)] // one per client, moved once
enum Plain<S> {
    LoggedIn(Option<LoggedIn<S>>),
    /// The client asked for TLS and was told yes ('S'): the handshake is next.
    StartTls(S, tokio_rustls::TlsAcceptor),
}

/// What an unencrypted connection came over.
#[derive(Clone, Copy)]
enum Transport<'a> {
    /// TCP, with the TLS acceptor when TLS is enabled.
    Tcp(Option<&'a tokio_rustls::TlsAcceptor>),
    /// The node's Unix-domain socket: no TLS, and `tls.mode = 'require'`
    /// does not apply.
    Local,
}

/// The startup packets of an unencrypted connection: SSLRequest (answered
/// 'S' when TLS is offered, else 'N'), GSSENCRequest ('N'),
/// CancelRequest, then StartupMessage and login.
async fn plain_startup<S>(
    mut stream: S,
    transport: Transport<'_>,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
) -> Result<Plain<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (tls, local) = match transport {
        Transport::Tcp(tls) => (tls, false),
        Transport::Local => (None, true),
    };
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        let packet = match read_startup(&mut stream, &mut buf).await {
            Ok(p) => p,
            Err(e) => {
                fail(&mut stream, &e).await;
                return Err(e);
            }
        };
        match packet {
            None => return Ok(Plain::LoggedIn(None)),
            Some(StartupPacket::SslRequest) => {
                let Some(acceptor) = tls else {
                    stream.write_all(b"N").await?;
                    continue;
                };
                if !buf.is_empty() {
                    // Bytes sent before the TLS handshake could be injected
                    // by a man in the middle (CVE-2021-23222).
                    return Err(Error::Protocol("unencrypted data after SSL request".into()));
                }
                stream.write_all(b"S").await?;
                return Ok(Plain::StartTls(stream, acceptor.clone()));
            }
            Some(StartupPacket::GssEncRequest) => stream.write_all(b"N").await?,
            Some(StartupPacket::Cancel { pid, key }) => {
                cancel(&shared, pid, key).await;
                return Ok(Plain::LoggedIn(None));
            }
            Some(StartupPacket::Startup { params, .. }) => {
                if !local && shared.config.load().tls.mode == TlsMode::Require {
                    fail(&mut stream, &Error::TlsRequired).await;
                    return Err(Error::TlsRequired);
                }
                return login(stream, buf, params, Peer { addr: peer, tls: false }, shared).await.map(Plain::LoggedIn);
            }
        }
    }
}

async fn after_tls<S>(
    mut stream: S,
    peer: Option<SocketAddr>,
    shared: Arc<Shared>,
) -> Result<Option<LoggedIn<S>>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(1024);
    let packet = match read_startup(&mut stream, &mut buf).await {
        Ok(p) => p,
        Err(e) => {
            fail(&mut stream, &e).await;
            return Err(e);
        }
    };
    match packet {
        None => Ok(None),
        Some(StartupPacket::Startup { params, .. }) => {
            login(stream, buf, params, Peer { addr: peer, tls: true }, shared).await
        }
        Some(StartupPacket::Cancel { pid, key }) => {
            cancel(&shared, pid, key).await;
            Ok(None)
        }
        Some(_) => Err(Error::Protocol("SSL or GSSENC request inside TLS".into())),
    }
}

/// Read one untagged startup-phase packet; `None` if the client left.
async fn read_startup<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Result<Option<StartupPacket>, Error> {
    loop {
        match frame::startup_complete(buf, MAX_STARTUP_PACKET) {
            Ok(Some(len)) => {
                let packet = messages::parse_startup(&buf[..len]);
                buf.advance(len);
                return Ok(Some(packet?));
            }
            Ok(None) => {}
            Err(e) => return Err(e.into()),
        }
        if s.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Read one tagged message during authentication.
async fn read_message<S: AsyncRead + Unpin>(s: &mut S, buf: &mut BytesMut) -> Result<(u8, BytesMut), Error> {
    loop {
        if let Some(h) = frame::complete(buf, MAX_AUTH_MESSAGE)? {
            let mut msg = buf.split_to(h.total);
            msg.advance(HEADER_LEN);
            return Ok((h.tag, msg));
        }
        if s.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

async fn cancel(shared: &Shared, pid: i32, key: i32) {
    match shared.cancels.target(pid, key) {
        Some(target) => {
            if let Err(e) = crate::cancel::forward(&target).await {
                tracing::warn!(server = %target.addr, error = %e, "cannot forward cancel request");
            }
        }
        None => tracing::debug!("cancel request for no running query"),
    }
}

/// Send a FATAL error, best effort.
async fn fail<S: AsyncWrite + Unpin>(s: &mut S, err: &Error) {
    let mut out = BytesMut::new();
    write_error(&mut out, Severity::Fatal, err);
    let _ = s.write_all(&out).await;
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Where a client connected from, for [`Shared::clients`].
#[derive(Debug, Clone, Copy)]
struct Peer {
    addr: Option<SocketAddr>,
    tls: bool,
}

/// A logged-in client's identities: its (pid, key) for cancels, its
/// session id, and its entry in the node's client list.
fn admit(
    shared: &Arc<Shared>,
    span: &tracing::Span,
    user: &str,
    database: String,
    peer: Peer,
    mode: ClientMode,
) -> (crate::cancel::CancelHandle, u64, ClientGuard) {
    let cancel = shared.cancels.register();
    let id = shared.next_client_id();
    span.record("session_id", id);
    let client = shared.clients.register(ClientInfo {
        id,
        user: user.to_owned(),
        database,
        peer: peer.addr,
        tls: peer.tls,
        mode,
    });
    (cancel, id, client)
}

async fn login<S>(
    mut stream: S,
    mut buf: BytesMut,
    params: Vec<(String, String)>,
    peer: Peer,
    shared: Arc<Shared>,
) -> Result<Option<LoggedIn<S>>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let result = login_inner(&mut stream, &mut buf, &params, peer, &shared).await;
    match result {
        Ok(Admitted::Session { server, state, client }) => {
            Ok(Some(LoggedIn::Session(Session::new(stream, buf, server, state), client)))
        }
        Ok(Admitted::Admin { client, cancel }) => {
            Ok(Some(LoggedIn::Admin(AdminSession::new(stream, buf, shared, client, cancel))))
        }
        Err(e) => {
            fail(&mut stream, &e).await;
            Err(e)
        }
    }
}

async fn login_inner<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    params: &[(String, String)],
    peer: Peer,
    shared: &Arc<Shared>,
) -> Result<Admitted, Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let user_name = param(params, "user").filter(|u| !u.is_empty()).ok_or(Error::NoUser)?.to_owned();
    let database = param(params, "database").filter(|d| !d.is_empty()).unwrap_or(&user_name).to_owned();
    let span = tracing::Span::current();
    span.record("user", user_name.as_str());
    span.record("db", database.as_str());
    let mut client_params = ClientParams::from_startup(params).map_err(|e| match e {
        ParamError::Replication => Error::ReplicationUnsupported,
        e @ ParamError::BadOption(_) => Error::BadStartupOption(e.to_string()),
    })?;
    crate::session::route::validate_startup(&client_params.meridian, &shared.topology.borrow())
        .map_err(Error::BadStartupOption)?;
    let users = shared.users.load_full();
    let user = users.get(&user_name);
    authenticate(stream, buf, &user_name, user, shared).await?;
    let user = user.ok_or_else(|| Error::AuthFailed(user_name.clone()))?;

    let mut out = BytesMut::new();
    messages::auth_ok(&mut out);
    stream.write_all(&out).await?;
    out.clear();

    if database == crate::admin::DATABASE {
        // The admin console: no pool, no server; only admins.
        if !user.admin {
            return Err(Error::AdminDenied(user_name));
        }
        let (cancel, _, client) = admit(shared, &span, &user_name, database, peer, ClientMode::Admin);
        crate::admin::greeting(&mut out, params, &user_name, cancel.pid, cancel.key());
        stream.write_all(&out).await?;
        tracing::debug!("admin logged in");
        return Ok(Admitted::Admin { client, cancel });
    }

    let pool_config = shared.pool_config.load_full();
    let topology = shared.topology.borrow().clone();
    let Some(default) = topology.shards.get(topology.default_shard) else {
        return Err(Error::NoTopology);
    };
    // The default shard's primary; while it has none (a failover), a replica
    // tells the client what its server looks like.
    let home = default.primary.or(default.replicas.first().copied()).map(|p| topology.nodes[p].address.clone());
    let key = PoolKey { addr: home.unwrap_or_default(), database: database.clone(), user: user_name.clone() };
    let password = user.backend_password.as_ref().map(|s| s.expose());
    let pool = shared.pools.get(&key, password, &pool_config);
    let transaction_mode = user.pool_mode.unwrap_or(pool_config.mode) == PoolMode::Transaction;
    let mode = if transaction_mode { ClientMode::Transaction } else { ClientMode::Session };
    let (cancel, id, client) = admit(shared, &span, &user_name, database, peer, mode);
    client.set_state(ClientState::Active);

    // The first checkout tells the client what its server looks like. When
    // every connection is busy (and one was seen before), the client is told
    // what a fresh connection reported with its own startup values on top,
    // and its settings are applied at its first statement: a login never
    // waits for another client's transaction.
    let timeout = pool_config.connect_timeout;
    let first = match pool.welcome() {
        Some(welcome) if transaction_mode => match pool.checkout_now(id).await {
            Some(Ok(conn)) => Ok(crate::session::sync_settings(&pool, id, &client_params, timeout, conn).await?),
            // Busy, or the server is down (a failover may be under way): the
            // login does not depend on it; the first statement is routed
            // on the topology of that moment.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "home server unavailable at login; using its last welcome");
                Err(welcome)
            }
            None => Err(welcome),
        },
        _ => Ok(crate::session::checkout_synced(&pool, id, &client_params, timeout).await?),
    };
    let conn = match first {
        Ok(conn) => {
            for (k, v) in &conn.state.reported {
                messages::parameter_status(&mut out, k, v);
            }
            Some(conn)
        }
        Err(welcome) => {
            for (k, v) in welcome.iter() {
                let own = params.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v);
                messages::parameter_status(&mut out, k, own.unwrap_or(v));
            }
            None
        }
    };
    messages::backend_key_data(&mut out, cancel.pid, cancel.key());
    messages::ready_for_query(&mut out, b'I');
    let server = match conn {
        Some(conn) if transaction_mode => {
            pool.checkin(conn);
            None
        }
        Some(conn) => {
            cancel.set_target(Some(crate::cancel::CancelTarget {
                addr: conn.addr.clone(),
                pid: conn.backend_pid,
                key: conn.backend_key,
            }));
            Some(conn)
        }
        None => None,
    };
    if server.is_some() {
        // Session pooling: the first connection stays with the client.
        let node = topology.nodes.iter().find(|n| n.address == pool.key.addr);
        client.set_attached(Some(node.map_or(pool.key.addr.as_str(), |n| n.name.as_str())));
    }
    client.set_state(ClientState::Idle);
    stream.write_all(&out).await?;
    tracing::debug!(transaction_mode, "client logged in");
    let meridian_settings = std::mem::take(&mut client_params.meridian);
    let mut state = State::new(id, shared.clone(), pool, transaction_mode, client_params, cancel);
    // Validated before login: cannot fail here.
    let _ = state.apply_startup_settings(&meridian_settings);
    Ok(Admitted::Session { server, state, client })
}

/// Run the user's authentication method; unknown users get a SCRAM exchange
/// that always fails, so they look like a wrong password.
async fn authenticate<S>(
    stream: &mut S,
    buf: &mut BytesMut,
    user_name: &str,
    user: Option<&User>,
    shared: &Shared,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let failed = || Error::AuthFailed(user_name.to_owned());
    let mut out = BytesMut::new();
    match user.map(|u| &u.credential) {
        Some(Credential::Trust) => Ok(()),
        Some(Credential::Md5(stored)) => {
            let salt = md5::random_salt();
            messages::auth_md5(&mut out, salt);
            stream.write_all(&out).await?;
            let (tag, body) = read_message(stream, buf).await?;
            if tag != b'p' {
                return Err(Error::Protocol(format!("expected password response, got message type {:?}", tag as char)));
            }
            let response = body.strip_suffix(b"\0").unwrap_or(&body);
            if md5::verify(stored, salt, response) { Ok(()) } else { Err(failed()) }
        }
        other => {
            let mut exchange = match other {
                Some(Credential::Scram(v)) => ScramExchange::new(v.clone()),
                _ => ScramExchange::mock(user_name, &shared.mock),
            };
            messages::auth_sasl(&mut out, &["SCRAM-SHA-256"]);
            stream.write_all(&out).await?;
            let (tag, body) = read_message(stream, buf).await?;
            if tag != b'p' {
                return Err(Error::Protocol("expected SASL response".into()));
            }
            let (mechanism, rest) =
                frame::cstr(&body).ok_or_else(|| Error::Protocol("malformed SASL response".into()))?;
            if mechanism != b"SCRAM-SHA-256" {
                return Err(Error::Protocol("client selected an invalid SASL authentication mechanism".into()));
            }
            let data = rest.get(4..).ok_or_else(|| Error::Protocol("malformed SASL response".into()))?;
            let scram_err = |e: AuthError| match e {
                AuthError::WrongPassword => failed(),
                e => Error::Scram(e),
            };
            let server_first = exchange.client_first(data).map_err(scram_err)?;
            out.clear();
            messages::auth_sasl_continue(&mut out, &server_first);
            stream.write_all(&out).await?;
            let (tag, body) = read_message(stream, buf).await?;
            if tag != b'p' {
                return Err(Error::Protocol("expected SASL response".into()));
            }
            let server_final = exchange.client_final(&body).map_err(scram_err)?;
            out.clear();
            messages::auth_sasl_final(&mut out, &server_final);
            stream.write_all(&out).await?;
            Ok(())
        }
    }
}
