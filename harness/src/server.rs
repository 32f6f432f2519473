//! One PostgreSQL server: its directories, its process, and SQL access to it.
//!
//! Each server lives in its own directory under the cluster's base:
//!
//! ```text
//!   <base>/<name>/            owned by the PostgreSQL OS user, mode 0755
//!       data/                 PGDATA (0700); our settings in data/meridian.conf
//!       socket/               unix_socket_directories, private to this server
//!       postgres.log          pg_ctl -l; kept beside PGDATA so pg_basebackup
//!                             does not copy the primary's log into replicas
//! ```
//!
//! The harness talks to a server over its Unix socket, where `pg_hba.conf`
//! always trusts, so checks keep working whatever TCP authentication a test
//! chose. Clients under test use TCP on `127.0.0.1:<port>`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio_postgres::{NoTls, SimpleQueryMessage};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use crate::binaries::PgBinaries;
use crate::cluster::{Credentials, HostAuth};
use crate::command;
use crate::conf::ServerConf;
use crate::error::{Error, Result};
use crate::os_user::OsUser;
use crate::port::free_port;
use crate::postmaster::{Postmaster, ShutdownMode};

/// The address every server listens on.
pub const HOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// How long `pg_ctl start -w` may wait for a server to accept connections
/// (a replica replaying a lot of WAL, or crash recovery after `kill`).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a fast shutdown may take before we SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound on a harness query, so a paused or wedged server fails a test
/// instead of hanging it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports we try when another process grabs the one we picked.
const PORT_ATTEMPTS: usize = 5;

/// What a server is in its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Accepts writes; replicas stream from it.
    Primary,
    /// A hot standby streaming from the primary.
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

/// A serialisable description of a server, for `meridian demo` to record
/// in its state file and for [`stop_server`](crate::stop_server) to use from
/// another process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Such as `pg-primary`.
    pub name: String,
    /// Its role when the description was taken.
    pub role: Role,
    /// Always 127.0.0.1.
    pub host: IpAddr,
    /// The TCP port.
    pub port: u16,
    /// PGDATA.
    pub data_dir: PathBuf,
    /// Where its Unix socket lives.
    pub socket_dir: PathBuf,
    /// The server log.
    pub log_file: PathBuf,
    /// The postmaster's pid, if it was running.
    pub pid: Option<u32>,
}

/// Everything needed to bring up a server whose data directory has been
/// filled (by copying the template or by `pg_basebackup`).
#[derive(Debug, Clone)]
pub(crate) struct ServerSetup {
    pub(crate) name: String,
    pub(crate) role: Role,
    /// `<base>/<name>`.
    pub(crate) dir: PathBuf,
    pub(crate) binaries: PgBinaries,
    pub(crate) os_user: OsUser,
    pub(crate) superuser: Credentials,
    pub(crate) auth: HostAuth,
    pub(crate) extra_conf: Vec<String>,
}

impl ServerSetup {
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Creates the server directory and its socket directory for the
    /// PostgreSQL OS user. Refuses to reuse an existing directory.
    pub(crate) fn create_dirs(&self) -> Result<()> {
        if self.dir.exists() {
            return Err(Error::AlreadyExists(self.dir.clone()));
        }
        // The socket path must fit in sockaddr_un.sun_path (108 bytes).
        let socket_file = self.socket_dir().join(".s.PGSQL.65535");
        if socket_file.as_os_str().len() > 107 {
            return Err(Error::InvalidSpec(format!(
                "socket path {} is too long for a Unix socket; use a shorter base directory",
                socket_file.display()
            )));
        }
        self.os_user.create_dir(&self.dir, 0o755)?;
        self.os_user.create_dir(&self.socket_dir(), 0o755)
    }

    /// Picks a port, writes `meridian.conf` and starts the server, trying
    /// another port if the chosen one was taken in the meantime.
    pub(crate) async fn launch(self) -> Result<PgServer> {
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            let server = PgServer::new(&self, port);
            ServerConf {
                name: &self.name,
                port,
                socket_dir: &server.socket_dir,
                auth: self.auth,
                extra: &self.extra_conf,
            }
            .write(&server.data_dir)?;
            self.os_user.chown(&server.data_dir.join(crate::conf::INCLUDED_FILE))?;
            match server.start_process().await {
                Ok(()) => return Ok(server),
                Err(StartError::AddressInUse(e)) => {
                    tracing::debug!(server = %self.name, port, "port taken, trying another");
                    last_error = Some(e);
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::InvalidSpec("no port attempts made".into())))
    }
}

/// Why a start attempt failed; "address in use" is worth retrying.
enum StartError {
    AddressInUse(Error),
    Other(Error),
}

impl From<Error> for StartError {
    fn from(e: Error) -> Self {
        StartError::Other(e)
    }
}

/// One PostgreSQL server process (a postmaster and its children).
///
/// Owned by a [`PgCluster`](crate::PgCluster), which stops it when dropped.
/// All methods take `&self`, so tests can stop, restart, kill or pause a
/// server they borrowed from the cluster; start/stop/kill are serialised
/// internally.
#[derive(Debug)]
pub struct PgServer {
    name: String,
    role: Mutex<Role>,
    port: u16,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_file: PathBuf,
    superuser: Credentials,
    binaries: PgBinaries,
    os_user: OsUser,
    /// The running postmaster; `None` once stopped or killed.
    postmaster: Mutex<Option<Postmaster>>,
    /// Held across a start, stop or kill so two callers cannot interleave.
    lifecycle: tokio::sync::Mutex<()>,
    /// Owns the tasks driving clients handed out by [`connect`](Self::connect).
    connections: TaskTracker,
    /// Cancelled when the server is dropped, ending those tasks.
    cancel: CancellationToken,
    _cancel_on_drop: DropGuard,
}

impl PgServer {
    fn new(setup: &ServerSetup, port: u16) -> Self {
        let cancel = CancellationToken::new();
        Self {
            name: setup.name.clone(),
            role: Mutex::new(setup.role),
            port,
            data_dir: setup.data_dir(),
            socket_dir: setup.socket_dir(),
            log_file: setup.log_file(),
            superuser: setup.superuser.clone(),
            binaries: setup.binaries.clone(),
            os_user: setup.os_user.clone(),
            postmaster: Mutex::new(None),
            lifecycle: tokio::sync::Mutex::new(()),
            connections: TaskTracker::new(),
            _cancel_on_drop: cancel.clone().drop_guard(),
            cancel,
        }
    }

    /// Such as `pg-primary` or `pg-replica-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role the harness gave it (updated by [`promote`](Self::promote)).
    pub fn role(&self) -> Role {
        *self.role.lock()
    }

    /// Always 127.0.0.1.
    pub fn host(&self) -> IpAddr {
        HOST
    }

    /// The TCP port; stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, e.g. for [`FaultRelay::start`](crate::FaultRelay::start).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(HOST, self.port)
    }

    /// PGDATA.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding this server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The server log (`pg_ctl -l`).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_file, 0, lines)
    }

    /// The superuser's name and password.
    pub fn superuser(&self) -> &Credentials {
        &self.superuser
    }

    /// The postmaster's pid while it is running.
    pub fn pid(&self) -> Option<u32> {
        self.postmaster.lock().filter(|postmaster| postmaster.is_alive()).map(|postmaster| postmaster.pid())
    }

    /// Whether the postmaster is alive (it may be paused).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    pub(crate) fn postmaster(&self) -> Option<Postmaster> {
        *self.postmaster.lock()
    }

    /// A snapshot for recording in a file.
    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            name: self.name.clone(),
            role: self.role(),
            host: HOST,
            port: self.port,
            data_dir: self.data_dir.clone(),
            socket_dir: self.socket_dir.clone(),
            log_file: self.log_file.clone(),
            pid: self.pid(),
        }
    }

    /// A libpq connection string for the superuser over TCP, e.g.
    /// `host=127.0.0.1 port=5433 user='postgres' password='…' dbname=postgres`.
    pub fn connection_string(&self) -> String {
        format!(
            "host={HOST} port={} user={} password={} dbname=postgres",
            self.port,
            conninfo_quote(&self.superuser.user),
            conninfo_quote(&self.superuser.password),
        )
    }

    /// A driver config for the superuser over TCP, subject to the cluster's
    /// [`HostAuth`]. Change `user`/`password`/`dbname` for other roles.
    pub fn tcp_config(&self) -> tokio_postgres::Config {
        self.tcp_config_via(self.addr())
    }

    /// [`tcp_config`](Self::tcp_config), but connecting to `addr`, such as a
    /// [`FaultRelay`](crate::FaultRelay) in front of this server. (Calling
    /// `host`/`port` on a config adds a host rather than replacing it.)
    pub fn tcp_config_via(&self, addr: SocketAddr) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(addr.ip().to_string())
            .port(addr.port())
            .user(&self.superuser.user)
            .password(&self.superuser.password)
            .dbname("postgres")
            .application_name("meridian-harness")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A driver config for the superuser over the Unix socket, where
    /// authentication is always `trust`.
    pub fn socket_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.socket_dir)
            .port(self.port)
            .user(&self.superuser.user)
            .dbname("postgres")
            .application_name("meridian-harness")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Connects as the superuser over the socket. The connection is driven
    /// by a task owned by this server; it ends when the client is dropped,
    /// the connection fails, or the server object is dropped.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) =
            self.bounded("connecting", QUERY_TIMEOUT, self.socket_config().connect(NoTls)).await?;
        let cancel = self.cancel.clone();
        let name = self.name.clone();
        self.connections.spawn(async move {
            // Both futures are only dropped after this select, never
            // resumed, so cancel safety does not matter here.
            tokio::select! {
                () = cancel.cancelled() => {}
                result = connection => {
                    if let Err(e) = result {
                        tracing::debug!(server = %name, error = %e, "harness connection ended");
                    }
                }
            }
        });
        Ok(client)
    }

    /// Runs one or more SQL statements as the superuser over the socket.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        self.on_socket("executing SQL", QUERY_TIMEOUT, async |client| client.batch_execute(sql).await).await
    }

    /// Runs SQL as the superuser over the socket and returns every row of
    /// the last statement as text (`None` for NULL), like `psql -At`.
    pub async fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.query_within(sql, QUERY_TIMEOUT).await
    }

    /// The first column of the first row of [`query`](Self::query), or
    /// `None` if there is no row or the value is NULL.
    pub async fn query_value(&self, sql: &str) -> Result<Option<String>> {
        Ok(self.query(sql).await?.into_iter().next().and_then(|row| row.into_iter().next().flatten()))
    }

    async fn query_within(&self, sql: &str, timeout: Duration) -> Result<Vec<Vec<Option<String>>>> {
        let messages = self.on_socket("querying", timeout, async |client| client.simple_query(sql).await).await?;
        let mut rows = Vec::new();
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(_) => rows.clear(),
                SimpleQueryMessage::Row(row) => {
                    rows.push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                }
                _ => {}
            }
        }
        Ok(rows)
    }

    /// Polls `SELECT 1` over the socket until it succeeds.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_until("accepting queries", timeout, async || {
            self.query_within("SELECT 1", Duration::from_secs(2)).await.map(|_| true)
        })
        .await
    }

    /// Waits until this replica is in recovery and its WAL receiver is
    /// streaming from the primary.
    pub async fn wait_streaming(&self, timeout: Duration) -> Result<()> {
        self.wait_until("streaming replication", timeout, async || {
            let status = self
                .query_within(
                    "SELECT pg_is_in_recovery()::text, \
                     (SELECT status FROM pg_stat_wal_receiver)",
                    Duration::from_secs(2),
                )
                .await?;
            let row = status.into_iter().next().unwrap_or_default();
            Ok(row.first().cloned().flatten().as_deref() == Some("true")
                && row.get(1).cloned().flatten().as_deref() == Some("streaming"))
        })
        .await
    }

    /// Waits until this replica has replayed WAL up to `lsn` (text form, as
    /// returned by `pg_current_wal_lsn()`).
    pub async fn wait_replayed(&self, lsn: &str, timeout: Duration) -> Result<()> {
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{}'::pg_lsn", lsn.replace('\'', "''"));
        self.wait_until(&format!("replay up to {lsn}"), timeout, async || {
            let value = self.query_within(&sql, Duration::from_secs(2)).await?;
            Ok(value.first().and_then(|row| row.first()).cloned().flatten().as_deref() == Some("t"))
        })
        .await
    }

    /// Promotes this replica to a primary and waits for it to accept writes.
    pub async fn promote(&self) -> Result<()> {
        self.execute("SELECT pg_promote(true, 60)").await?;
        *self.role.lock() = Role::Primary;
        Ok(())
    }

    /// Starts the server again after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), on the same port. A no-op if it is running.
    pub async fn start(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        if self.is_running() {
            return Ok(());
        }
        let mut last_error = None;
        for attempt in 0..PORT_ATTEMPTS {
            match self.start_process().await {
                Ok(()) => return Ok(()),
                // Our port is taken (likely briefly, by a client's
                // ephemeral port); wait and retry on the same port, since
                // tests hold connection strings naming it.
                Err(StartError::AddressInUse(e)) => {
                    last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
                }
                Err(StartError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NotRunning(self.name.clone())))
    }

    /// Fast shutdown (`pg_ctl stop -m fast`): waits for the postmaster to
    /// exit, SIGKILLing it after 30 s. A no-op if it is not running; works
    /// on a paused server.
    pub async fn stop(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let Some(postmaster) = self.postmaster() else {
            return Ok(());
        };
        postmaster.shutdown(ShutdownMode::Fast, STOP_TIMEOUT).await?;
        *self.postmaster.lock() = None;
        tracing::info!(server = %self.name, "stopped");
        Ok(())
    }

    /// SIGKILLs the postmaster and all its children at once, like a machine
    /// crash, and waits until they are gone. The next
    /// [`start`](Self::start) runs crash recovery.
    pub async fn kill(&self) -> Result<()> {
        let _lifecycle = self.lifecycle.lock().await;
        let Some(postmaster) = self.postmaster() else {
            return Ok(());
        };
        postmaster.kill().await?;
        *self.postmaster.lock() = None;
        tracing::info!(server = %self.name, "killed");
        Ok(())
    }

    /// SIGSTOPs every process of the server: connections stay open, nothing
    /// answers, like a hung machine. Undo with [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        let postmaster = self.postmaster().ok_or_else(|| Error::NotRunning(self.name.clone()))?;
        postmaster.pause()
    }

    /// SIGCONTs every process of the server.
    pub fn resume(&self) -> Result<()> {
        let postmaster = self.postmaster().ok_or_else(|| Error::NotRunning(self.name.clone()))?;
        postmaster.resume()
    }

    /// `pg_ctl start -w`, recording the postmaster. On failure, makes sure
    /// no half-started postmaster is left running.
    async fn start_process(&self) -> Result<(), StartError> {
        let log_offset = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        Postmaster::clear_stale_pidfile(&self.data_dir)?;
        let mut pg_ctl = self.os_user.command(self.binaries.tool("pg_ctl"));
        pg_ctl
            .arg("start")
            .arg("--pgdata")
            .arg(&self.data_dir)
            .arg("--log")
            .arg(&self.log_file)
            .args(["--wait", "--silent", "--timeout"])
            .arg(START_TIMEOUT.as_secs().to_string());
        let result = command::run(pg_ctl, START_TIMEOUT + Duration::from_secs(10)).await;
        let postmaster = Postmaster::running_in(&self.data_dir);
        match (result, postmaster) {
            (Ok(_), Some(postmaster)) => {
                *self.postmaster.lock() = Some(postmaster);
                tracing::info!(server = %self.name, port = self.port, pid = postmaster.pid(), "started");
                Ok(())
            }
            (result, leftover) => {
                if let Some(postmaster) = leftover {
                    postmaster.kill().await?;
                }
                let log_tail = tail(&self.log_file, log_offset, 40);
                let reason = match result {
                    Ok(_) => "pg_ctl reported success but no postmaster is running".to_owned(),
                    Err(e) => e.to_string(),
                };
                let error = Error::StartFailed {
                    server: self.name.clone(),
                    reason,
                    log: self.log_file.clone(),
                    log_tail: log_tail.clone(),
                };
                if log_tail.contains("Address already in use") {
                    Err(StartError::AddressInUse(error))
                } else {
                    Err(StartError::Other(error))
                }
            }
        }
    }

    /// Connects over the socket and runs `work` on the client, driving the
    /// connection in this task (no spawned task outlives the call).
    async fn on_socket<T>(
        &self,
        action: &str,
        timeout: Duration,
        work: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T> {
        self.bounded(action, timeout, async {
            let (client, connection) = self.socket_config().connect(NoTls).await?;
            let work = work(&client);
            tokio::pin!(connection, work);
            // Both arms are polled to completion or dropped together at the
            // end of this call, so cancel safety does not matter.
            tokio::select! {
                result = &mut work => result,
                result = &mut connection => match result {
                    Err(e) => Err(e),
                    // Closed by the server: `work` now fails promptly.
                    Ok(()) => work.await,
                },
            }
        })
        .await
    }

    /// Applies `timeout` to a driver future and names the server in errors.
    async fn bounded<T>(
        &self,
        action: &str,
        timeout: Duration,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(Error::postgres(&self.name, action, source)),
            Err(_) => Err(Error::Timeout { server: self.name.clone(), what: action.to_owned(), timeout }),
        }
    }

    /// Polls `check` every 50 ms until it returns `Ok(true)`. Errors count
    /// as "not yet" (the server may still be starting); the last one is
    /// reported on timeout.
    async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl AsyncFnMut() -> Result<bool>,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match check().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => last_error = Some(e),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout {
                    server: self.name.clone(),
                    what: match last_error {
                        Some(e) => format!("{what} (last error: {e})"),
                        None => what.to_owned(),
                    },
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The last `lines` lines written to `path` after byte `offset`.
fn tail(path: &Path, offset: u64, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[start..]);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Quotes a libpq connection-string value.
fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_conninfo_values() {
        assert_eq!(conninfo_quote(r"it's a \ test"), r"'it\'s a \\ test'");
    }

    #[test]
    fn tails_after_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "old\nnew1\nnew2\nnew3\n").unwrap();
        assert_eq!(tail(&path, 4, 2), "new2\nnew3");
        assert_eq!(tail(&path, 1000, 2), "");
        assert_eq!(tail(&dir.path().join("missing"), 0, 2), "");
    }
}
