//! A primary and its streaming replicas, started together and stopped
//! together.
//!
//! ```text
//!   PgCluster::start(spec)
//!     ├─ template::data_dir_for   initdb once, cached across processes
//!     ├─ cp -a template → <base>/pg-primary/data, write pg_hba.conf
//!     ├─ launch primary           meridian.conf with a free port, pg_ctl start -w
//!     ├─ ALTER ROLE <superuser> PASSWORD …   (hashed per HostAuth)
//!     └─ for each replica
//!          ├─ pg_basebackup -R -X stream from the primary's socket
//!          ├─ launch replica      its own port and socket dir
//!          └─ wait until pg_stat_wal_receiver says "streaming"
//! ```
//!
//! A cluster that fails halfway stops whatever it had started: servers are
//! added to the cluster as soon as they run, and the cluster's `Drop` stops
//! them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tempfile::TempDir;

use crate::binaries::PgBinaries;
use crate::command;
use crate::conf;
use crate::error::{Error, IoContext, Result};
use crate::os_user::OsUser;
use crate::postmaster;
use crate::scratch;
use crate::server::{PgServer, Role, ServerInfo, ServerSetup};
use crate::template;

/// The superuser password when the spec does not set one. Test clusters
/// listen on 127.0.0.1 only and are thrown away, so a fixed, well-known
/// password is fine and makes failures easy to reproduce by hand.
pub const DEFAULT_PASSWORD: &str = "meridian-test-password";

/// Replicas per cluster: each holds a WAL sender, and `pg_basebackup -X
/// stream` needs two more while it runs, out of `max_wal_senders = 10`.
const MAX_REPLICAS: usize = 8;

/// How long a new replica may take to start streaming.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(30);

/// How long replicas may take to replay a change made by a helper.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `pg_basebackup` may take.
const BASEBACKUP_TIMEOUT: Duration = Duration::from_secs(120);

/// How long `Drop` waits for an immediate shutdown before SIGKILL.
const DROP_TIMEOUT: Duration = Duration::from_secs(10);

/// Authentication required on TCP connections. Unix-socket connections
/// always use `trust`: the socket directory is private to the cluster and is
/// how the harness itself connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HostAuth {
    /// No password needed.
    Trust,
    /// MD5 challenge; passwords are stored as MD5 hashes
    /// (`password_encryption = md5`), so the server really uses MD5 rather
    /// than upgrading to SCRAM.
    Md5,
    /// SCRAM-SHA-256, PostgreSQL's default.
    #[default]
    ScramSha256,
}

/// A role name and its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The role name.
    pub user: String,
    /// Its password in clear text.
    pub password: String,
}

/// What to start. Build with [`Default`] and the `with_*` methods:
///
/// ```
/// use harness::{ClusterSpec, HostAuth};
/// let spec = ClusterSpec::default()
///     .with_replicas(1)
///     .with_host_auth(HostAuth::Md5)
///     .with_conf("log_statement = 'all'");
/// assert_eq!(spec.replicas, 1);
/// ```
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of streaming replicas (default 0).
    pub replicas: usize,
    /// The bootstrap superuser's name (default `postgres`); letters, digits
    /// and `_` only.
    pub superuser: String,
    /// Its password (default [`DEFAULT_PASSWORD`]).
    pub password: String,
    /// Authentication on TCP connections (default SCRAM-SHA-256).
    pub host_auth: HostAuth,
    /// Extra `postgresql.conf` lines, applied to every server after ours.
    pub conf: Vec<String>,
    /// `None` (default): a fresh temporary directory (in `/dev/shm` when
    /// available, see [`TMPDIR_ENV`](crate::TMPDIR_ENV)), removed when the
    /// cluster is dropped. `Some(dir)`: a persistent directory (created if
    /// missing) that must not already hold servers of the same names.
    pub base_dir: Option<PathBuf>,
    /// Server names are `<prefix>-primary`, `<prefix>-replica-<n>`
    /// (default `pg`).
    pub name_prefix: String,
    /// Binaries to use; `None` (default) means [`PgBinaries::find`].
    pub binaries: Option<PgBinaries>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            replicas: 0,
            superuser: "postgres".into(),
            password: DEFAULT_PASSWORD.into(),
            host_auth: HostAuth::default(),
            conf: Vec::new(),
            base_dir: None,
            name_prefix: "pg".into(),
            binaries: None,
        }
    }
}

impl ClusterSpec {
    /// Sets the number of streaming replicas.
    pub fn with_replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the superuser's name and password.
    pub fn with_superuser(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.superuser = user.into();
        self.password = password.into();
        self
    }

    /// Sets the authentication method for TCP connections.
    pub fn with_host_auth(mut self, host_auth: HostAuth) -> Self {
        self.host_auth = host_auth;
        self
    }

    /// Adds one `postgresql.conf` line, such as `"log_statement = 'all'"`.
    pub fn with_conf(mut self, line: impl Into<String>) -> Self {
        self.conf.push(line.into());
        self
    }

    /// Uses a persistent base directory instead of a temporary one.
    pub fn with_base_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.base_dir = Some(dir.into());
        self
    }

    /// Sets the prefix of server names.
    pub fn with_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// Uses these binaries instead of searching.
    pub fn with_binaries(mut self, binaries: PgBinaries) -> Self {
        self.binaries = Some(binaries);
        self
    }

    fn validate(&self) -> Result<()> {
        let plain = |s: &str, extra: &[char]| {
            !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(&c))
        };
        if !plain(&self.superuser, &[]) {
            return Err(Error::InvalidSpec(format!(
                "superuser {:?} must be non-empty letters, digits and _",
                self.superuser
            )));
        }
        if !plain(&self.name_prefix, &['-']) {
            return Err(Error::InvalidSpec(format!(
                "name prefix {:?} must be non-empty letters, digits, _ and -",
                self.name_prefix
            )));
        }
        if self.replicas > MAX_REPLICAS {
            return Err(Error::InvalidSpec(format!(
                "{} replicas requested, at most {MAX_REPLICAS} are supported (max_wal_senders = 10)",
                self.replicas
            )));
        }
        if self.password.is_empty() {
            return Err(Error::InvalidSpec(
                "superuser password must not be empty (PostgreSQL treats it as no password)".into(),
            ));
        }
        Ok(())
    }
}

/// A running primary plus replicas.
///
/// Dropping it stops every server it started (immediate shutdown, SIGKILL
/// after 10 s; it blocks the thread meanwhile and never panics) and removes
/// a temporary base directory. That also happens when a test panics. Use
/// [`detach`](Self::detach) to leave the servers running.
#[derive(Debug)]
pub struct PgCluster {
    /// The primary first, then replicas in order.
    servers: Vec<PgServer>,
    superuser: Credentials,
    base_dir: PathBuf,
    /// Set for a throwaway cluster; dropped (removing the directory) only
    /// after the servers have stopped, which field order guarantees.
    temp_dir: Option<TempDir>,
    /// Every data directory created so far, in creation order. `Drop`
    /// stops whatever runs in them, which also covers a server whose launch
    /// was cut short (say, the `start` future was dropped by a timeout)
    /// before it could join `servers`.
    data_dirs: Vec<PathBuf>,
    /// Set by `detach`: `Drop` leaves servers and files alone.
    detached: bool,
}

impl PgCluster {
    /// Starts a cluster as described by `spec` (see the module docs for the
    /// steps). Returns once every replica is streaming.
    pub async fn start(spec: ClusterSpec) -> Result<PgCluster> {
        spec.validate()?;
        let started = tokio::time::Instant::now();
        let binaries = match &spec.binaries {
            Some(binaries) => binaries.clone(),
            None => PgBinaries::find()?,
        };
        let os_user = OsUser::for_postgres()?;
        postmaster::adopt_orphans();
        let (base_dir, temp_dir) = prepare_base_dir(spec.base_dir.as_deref(), &os_user)?;
        let mut cluster = PgCluster {
            servers: Vec::with_capacity(spec.replicas + 1),
            superuser: Credentials { user: spec.superuser.clone(), password: spec.password.clone() },
            base_dir,
            temp_dir,
            data_dirs: Vec::with_capacity(spec.replicas + 1),
            detached: false,
        };
        let base_dir = cluster.base_dir.clone();
        let superuser = cluster.superuser.clone();
        let setup = |name: String, role: Role| ServerSetup {
            dir: base_dir.join(&name),
            name,
            role,
            binaries: binaries.clone(),
            os_user: os_user.clone(),
            superuser: superuser.clone(),
            auth: spec.host_auth,
            extra_conf: spec.conf.clone(),
        };

        let template = template::data_dir_for(&binaries, &os_user, &spec.superuser).await?;
        let primary = setup(format!("{}-primary", spec.name_prefix), Role::Primary);
        primary.create_dirs()?;
        cluster.data_dirs.push(primary.data_dir());
        template::copy(&template, &primary.data_dir(), &os_user).await?;
        conf::write_hba(&primary.data_dir(), spec.host_auth)?;
        os_user.chown(&primary.data_dir().join("pg_hba.conf"))?;
        let replicas: Vec<ServerSetup> =
            (1..=spec.replicas).map(|n| setup(format!("{}-replica-{n}", spec.name_prefix), Role::Replica)).collect();
        tracing::debug!(elapsed = ?started.elapsed(), "template copied");
        cluster.servers.push(primary.launch().await?);
        tracing::debug!(elapsed = ?started.elapsed(), "primary started");

        // initdb stored no password; hash it now under this cluster's
        // password_encryption so MD5 really means MD5.
        cluster
            .primary()
            .execute(&format!("ALTER ROLE {} PASSWORD {}", quote_ident(&spec.superuser), quote_literal(&spec.password)))
            .await?;

        for replica in replicas {
            replica.create_dirs()?;
            cluster.data_dirs.push(replica.data_dir());
            base_backup(cluster.primary(), &replica).await?;
            tracing::debug!(server = %replica.name, elapsed = ?started.elapsed(), "base backup taken");
            cluster.servers.push(replica.launch().await?);
        }
        for replica in cluster.replicas() {
            replica.wait_streaming(STREAMING_TIMEOUT).await?;
        }
        tracing::info!(
            base_dir = %cluster.base_dir.display(),
            servers = cluster.servers.len(),
            elapsed = ?started.elapsed(),
            "cluster started"
        );
        Ok(cluster)
    }

    /// The server started as primary (still this one after a replica is
    /// promoted).
    pub fn primary(&self) -> &PgServer {
        self.servers.first().expect("a PgCluster is only handed out once its primary runs")
    }

    /// The replicas, in creation order.
    pub fn replicas(&self) -> &[PgServer] {
        self.servers.get(1..).unwrap_or_default()
    }

    /// The primary followed by the replicas.
    pub fn servers(&self) -> &[PgServer] {
        &self.servers
    }

    /// The server called `name`, such as `pg-replica-1`.
    pub fn server(&self, name: &str) -> Option<&PgServer> {
        self.servers.iter().find(|server| server.name() == name)
    }

    /// The superuser's name and password.
    pub fn superuser(&self) -> &Credentials {
        &self.superuser
    }

    /// The directory holding one sub-directory per server.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Creates a login role on the primary and waits until running replicas
    /// have it, so a test can connect anywhere right away.
    pub async fn create_user(&self, name: &str, password: &str, superuser: bool) -> Result<()> {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}{}",
            quote_ident(name),
            quote_literal(password),
            if superuser { " SUPERUSER" } else { "" }
        );
        self.primary().execute(&sql).await?;
        self.wait_replicas_caught_up().await
    }

    /// Creates a database owned by `owner` on the primary and waits until
    /// running replicas have it.
    pub async fn create_database(&self, name: &str, owner: &str) -> Result<()> {
        let sql = format!("CREATE DATABASE {} OWNER {}", quote_ident(name), quote_ident(owner));
        self.primary().execute(&sql).await?;
        self.wait_replicas_caught_up().await
    }

    /// Waits until every running replica has replayed all WAL the primary
    /// had written when this was called. Stopped replicas are skipped; a
    /// paused one makes this time out after 30 s.
    pub async fn wait_replicas_caught_up(&self) -> Result<()> {
        let lsn = self
            .primary()
            .query_value("SELECT pg_current_wal_lsn()")
            .await?
            .ok_or_else(|| Error::NotRunning(self.primary().name().to_owned()))?;
        for replica in self.replicas().iter().filter(|r| r.is_running()) {
            replica.wait_replayed(&lsn, CATCH_UP_TIMEOUT).await?;
        }
        Ok(())
    }

    /// Fast-stops every server, replicas first. They can be started again
    /// one by one with [`PgServer::start`].
    pub async fn stop(&self) -> Result<()> {
        for server in self.servers.iter().rev() {
            server.stop().await?;
        }
        Ok(())
    }

    /// A serialisable description of the cluster.
    pub fn info(&self) -> ClusterInfo {
        ClusterInfo {
            base_dir: self.base_dir.clone(),
            superuser: self.superuser.clone(),
            servers: self.servers.iter().map(PgServer::info).collect(),
        }
    }

    /// Gives up ownership: the servers keep running and the base directory
    /// stays, even if it was temporary. For `meridian demo`, which records
    /// the returned description and later stops the servers with
    /// [`ClusterInfo::stop`] or [`stop_server`](crate::stop_server).
    pub fn detach(mut self) -> ClusterInfo {
        self.detached = true;
        if let Some(temp_dir) = self.temp_dir.take() {
            let _kept = temp_dir.keep();
        }
        self.info()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.detached {
            return;
        }
        // Replicas first, so they do not log a lost primary.
        let data_dirs: Vec<&Path> = self.data_dirs.iter().rev().map(PathBuf::as_path).collect();
        postmaster::stop_all_in_blocking(&data_dirs, DROP_TIMEOUT);
    }
}

/// What [`PgCluster::detach`] leaves behind, serialisable for a state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The directory holding one sub-directory per server.
    pub base_dir: PathBuf,
    /// The superuser's name and password.
    pub superuser: Credentials,
    /// The primary first, then the replicas.
    pub servers: Vec<ServerInfo>,
}

impl ClusterInfo {
    /// Fast-stops every recorded server, replicas first, from any process.
    /// Servers already gone are skipped. Stops as many as it can and
    /// returns the first error.
    pub async fn stop(&self) -> Result<()> {
        let mut first_error = None;
        for server in self.servers.iter().rev() {
            let Some(pid) = server.pid else { continue };
            if let Err(e) = postmaster::stop_server(&server.data_dir, pid).await {
                tracing::warn!(server = %server.name, error = %e, "stopping failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Creates the base directory: a temporary one handed to the PostgreSQL
/// user, or the persistent one the caller chose (made absolute, because
/// PostgreSQL tools run with `/` as working directory).
fn prepare_base_dir(chosen: Option<&Path>, os_user: &OsUser) -> Result<(PathBuf, Option<TempDir>)> {
    use std::os::unix::fs::PermissionsExt;
    match chosen {
        None => {
            let temp = tempfile::Builder::new()
                .prefix("meridian-pg-")
                .tempdir_in(scratch::root())
                .io_context(|| "creating a temporary cluster directory".into())?;
            // Root-created temp dirs are 0700; the PostgreSQL user must be
            // able to enter it to reach its own sub-directories.
            std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o755))
                .io_context(|| format!("chmod 0755 {}", temp.path().display()))?;
            os_user.check_reachable(temp.path())?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).io_context(|| format!("creating {}", dir.display()))?;
            let dir = std::fs::canonicalize(dir).io_context(|| format!("resolving {}", dir.display()))?;
            os_user.check_reachable(&dir)?;
            Ok((dir, None))
        }
    }
}

/// Copies the primary into the replica's data directory over the primary's
/// socket, writing `standby.signal` and `primary_conninfo` (`-R`).
async fn base_backup(primary: &PgServer, replica: &ServerSetup) -> Result<()> {
    let conninfo = format!(
        "host={} port={} user={} application_name={}",
        primary.socket_dir().display(),
        primary.port(),
        primary.superuser().user,
        replica.name
    );
    let mut pg_basebackup = replica.os_user.command(replica.binaries.tool("pg_basebackup"));
    pg_basebackup.arg("--pgdata").arg(replica.data_dir()).arg("--dbname").arg(conninfo).args([
        "--write-recovery-conf",
        "--wal-method=stream",
        "--checkpoint=fast",
        "--no-sync",
        "--no-password",
    ]);
    command::run(pg_basebackup, BASEBACKUP_TIMEOUT).await?;
    Ok(())
}

/// A double-quoted SQL identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A single-quoted SQL string (standard_conforming_strings is on).
pub(crate) fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_sql() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn validates_specs() {
        assert!(ClusterSpec::default().validate().is_ok());
        for bad in [
            ClusterSpec::default().with_superuser("", "x"),
            ClusterSpec::default().with_superuser("bob; drop", "x"),
            ClusterSpec::default().with_superuser("bob", ""),
            ClusterSpec::default().with_name_prefix("a/b"),
            ClusterSpec::default().with_replicas(9),
        ] {
            assert!(matches!(bad.validate(), Err(Error::InvalidSpec(_))), "{bad:?}");
        }
    }

    #[test]
    fn cluster_info_round_trips_through_json() {
        let info = ClusterInfo {
            base_dir: "/tmp/x".into(),
            superuser: Credentials { user: "postgres".into(), password: DEFAULT_PASSWORD.into() },
            servers: vec![ServerInfo {
                name: "pg-primary".into(),
                role: Role::Primary,
                host: crate::server::HOST,
                port: 5432,
                data_dir: "/tmp/x/pg-primary/data".into(),
                socket_dir: "/tmp/x/pg-primary/socket".into(),
                log_file: "/tmp/x/pg-primary/postgres.log".into(),
                pid: Some(42),
            }],
        };
        let json = serde_json::to_string(&info).unwrap();
        assert!(json.contains("\"role\":\"primary\""), "{json}");
        assert_eq!(serde_json::from_str::<ClusterInfo>(&json).unwrap(), info);
    }
}
