//! What a failover does to PostgreSQL, one function per step, over plain
//! tokio-postgres connections (simple queries only; never on the data
//! path). The runtime on the Raft leader calls these in the order the
//! [`FailoverMachine`](crate::FailoverMachine) decides:
//!
//! - [`probe`]: recovery state, WAL positions, WAL receiver and timeline;
//! - [`stop_wal_receiver`]: clear `primary_conninfo` and reload, then wait
//!   until the WAL receiver is gone, so a primary that is only cut off can
//!   no longer get a synchronous commit acknowledged and the replica's
//!   position stops moving (DESIGN §5, step 2);
//! - [`promote`]: `pg_promote(wait => true)`;
//! - [`follow`]: point a replica at a new primary (`primary_conninfo` and
//!   reload; `recovery_target_timeline = 'latest'` follows the promotion);
//! - [`set_synchronous_standbys`]: `synchronous_standby_names = 'ANY k
//!   (...)'` on a primary, for `durability = 'sync'`;
//! - [`checkpoint`]: so a just-promoted primary's `pg_control` names its
//!   new timeline (what `pg_rewind` reads);
//! - [`receiver`]: whether a replica streams, and from where (used after
//!   [`LocalServer::rejoin`](crate::local::LocalServer::rejoin)).
//!
//! [`PgError`] is the crate's error type, also for the operations on a
//! server of this host in [`crate::local`] (its `Local*` variants).
//!
//! `ALTER SYSTEM` needs a superuser: [`Target`] carries the control-plane
//! credentials.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::types::Lsn;

/// How often a step that waits for PostgreSQL checks again.
const POLL: Duration = Duration::from_millis(20);

/// A PostgreSQL server and how the control plane logs in to it.
#[derive(Clone)]
pub struct Target {
    /// `host:port`.
    pub address: String,
    pub user: String,
    pub password: Option<String>,
    pub database: String,
    /// Bounds the connection and each step's wait.
    pub timeout: Duration,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("address", &self.address)
            .field("user", &self.user)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub in_recovery: bool,
    /// A primary's current WAL position (`None` on a replica).
    pub current_lsn: Option<Lsn>,
    /// A replica's last WAL received and flushed (`None` on a primary, or
    /// before it received anything).
    pub receive_lsn: Option<Lsn>,
    /// A replica's last WAL replayed.
    pub replay_lsn: Option<Lsn>,
    /// A replica's WAL receiver is running (streaming or starting).
    pub wal_receiver: bool,
    /// A primary's current timeline; a replica's (received, or of its last
    /// checkpoint).
    pub timeline: u32,
}

impl ServerState {
    /// How far this server's WAL reaches: a primary's current position, a
    /// replica's received (or replayed, if further) position.
    pub fn wal_position(&self) -> Option<Lsn> {
        match self.current_lsn {
            Some(lsn) => Some(lsn),
            None => self.receive_lsn.max(self.replay_lsn),
        }
    }
}

/// A step that did not happen. Every variant names the server.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("connecting to {address} timed out")]
    ConnectTimeout { address: String },
    #[error("{address}: {what} failed: {source}")]
    Query {
        address: String,
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{address}: {what} did not finish within {timeout:?}")]
    Timeout { address: String, what: &'static str, timeout: Duration },
    #[error("{address}: {what}")]
    Unexpected { address: String, what: String },
    /// A PostgreSQL tool run on this host ([`crate::local`]) failed;
    /// `output` is the tail of what it printed (and of the server log for
    /// `pg_ctl start`).
    #[error("{node} ({}): {command} failed ({status}): {output}", .data_dir.display())]
    LocalCommand { node: String, data_dir: PathBuf, command: String, status: String, output: String },
    /// A tool or a wait on this host did not finish in time.
    #[error("{node} ({}): {what} did not finish within {timeout:?}{}", .data_dir.display(), tail_suffix(.output))]
    LocalTimeout { node: String, data_dir: PathBuf, what: String, timeout: Duration, output: String },
    /// A file, process or signal operation on this host failed.
    #[error("{node} ({}): {action}: {source}", .data_dir.display())]
    LocalIo {
        node: String,
        data_dir: PathBuf,
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// The server on this host is not in a state the operation can work
    /// with (no data directory, owned by root, not streaming, ...).
    #[error("{node} ({}): {reason}", .data_dir.display())]
    LocalState { node: String, data_dir: PathBuf, reason: String },
    /// A step of an operation on this host that talks to another server
    /// (the rewind source) failed.
    #[error("{node} ({}): {what}: {source}", .data_dir.display())]
    LocalStep {
        node: String,
        data_dir: PathBuf,
        what: String,
        #[source]
        source: Box<PgError>,
    },
    /// No directory with the PostgreSQL server tools was found.
    #[error("no PostgreSQL binaries found ({tried})")]
    BinDirNotFound { tried: String },
}

/// `": <output>"`, or nothing when there is no output.
fn tail_suffix(output: &str) -> String {
    if output.is_empty() { String::new() } else { format!(": {output}") }
}

/// A connection to `t`, its driver task spawned (it ends with the client).
async fn connect(t: &Target) -> Result<Client, PgError> {
    let (host, port) = t.address.rsplit_once(':').unwrap_or((&t.address, "5432"));
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port.parse().unwrap_or(5432))
        .user(&t.user)
        .dbname(&t.database)
        .application_name("meridian-failover")
        .connect_timeout(t.timeout);
    if let Some(password) = &t.password {
        config.password(password);
    }
    let (client, connection) = tokio::time::timeout(t.timeout, config.connect(NoTls))
        .await
        .map_err(|_| PgError::ConnectTimeout { address: t.address.clone() })?
        .map_err(|source| PgError::Connect { address: t.address.clone(), source })?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error here is a lost
        // connection, which the step's own query reports.
        let _ = connection.await;
    });
    Ok(client)
}

/// The rows of a simple query, as text.
async fn rows(client: &Client, t: &Target, what: &'static str, sql: &str) -> Result<Vec<Vec<Option<String>>>, PgError> {
    let messages =
        client.simple_query(sql).await.map_err(|source| PgError::Query { address: t.address.clone(), what, source })?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect())
}

fn lsn(cell: &Option<String>) -> Option<Lsn> {
    cell.as_deref().and_then(|s| s.parse::<u64>().ok()).map(Lsn)
}

const PROBE_SQL: &str = "SELECT pg_is_in_recovery(), \
     CASE WHEN pg_is_in_recovery() THEN NULL ELSE (pg_current_wal_lsn() - '0/0')::text END, \
     (pg_last_wal_receive_lsn() - '0/0')::text, \
     (pg_last_wal_replay_lsn() - '0/0')::text, \
     (SELECT count(*) FROM pg_stat_wal_receiver)::text, \
     (CASE WHEN pg_is_in_recovery() \
        THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver LIMIT 1), \
                      (SELECT timeline_id FROM pg_control_checkpoint())) \
        ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END)::text";

/// Probe `t` once.
pub async fn probe(t: &Target) -> Result<ServerState, PgError> {
    let client = connect(t).await?;
    probe_on(&client, t).await
}

async fn probe_on(client: &Client, t: &Target) -> Result<ServerState, PgError> {
    let rows = rows(client, t, "probe", PROBE_SQL).await?;
    let row = rows
        .first()
        .ok_or_else(|| PgError::Unexpected { address: t.address.clone(), what: "probe returned no row".into() })?;
    Ok(ServerState {
        in_recovery: row[0].as_deref() == Some("t"),
        current_lsn: lsn(&row[1]),
        receive_lsn: lsn(&row[2]),
        replay_lsn: lsn(&row[3]),
        wal_receiver: row[4].as_deref().is_some_and(|n| n != "0"),
        timeline: row[5].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
    })
}

/// A server's recovery state and WAL receiver, as `pg_stat_wal_receiver`
/// shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub in_recovery: bool,
    /// `streaming`, `starting`, `waiting`, ...; `None` when no WAL receiver
    /// runs.
    pub status: Option<String>,
    /// `host:port` the receiver is connected to.
    pub sender: Option<String>,
    /// The timeline it receives.
    pub timeline: Option<u32>,
}

impl Receiver {
    /// In recovery and streaming from `address` (`host:port`).
    pub fn streams_from(&self, address: &str) -> bool {
        self.in_recovery && self.status.as_deref() == Some("streaming") && self.sender.as_deref() == Some(address)
    }
}

const RECEIVER_SQL: &str = "SELECT pg_is_in_recovery(), r.status, r.sender_host || ':' || r.sender_port, \
     r.received_tli::text FROM (SELECT 1) AS one LEFT JOIN pg_stat_wal_receiver AS r ON true";

/// `t`'s WAL receiver: whether it streams, and from where.
pub async fn receiver(t: &Target) -> Result<Receiver, PgError> {
    let client = connect(t).await?;
    let rows = rows(&client, t, "reading pg_stat_wal_receiver", RECEIVER_SQL).await?;
    let row = rows.first().ok_or_else(|| PgError::Unexpected {
        address: t.address.clone(),
        what: "pg_stat_wal_receiver query returned no row".into(),
    })?;
    Ok(Receiver {
        in_recovery: row[0].as_deref() == Some("t"),
        status: row[1].clone(),
        sender: row[2].clone(),
        timeline: row[3].as_deref().and_then(|s| s.parse().ok()),
    })
}

/// Set one server parameter with `ALTER SYSTEM` and reload.
async fn alter_system(client: &Client, t: &Target, what: &'static str, name: &str, value: &str) -> Result<(), PgError> {
    let sql = format!("ALTER SYSTEM SET {name} = {}", quote_literal(value));
    rows(client, t, what, &sql).await?;
    rows(client, t, what, "SELECT pg_reload_conf()").await?;
    Ok(())
}

/// Stop the replica's WAL receiver and keep it stopped (`primary_conninfo
/// = ''`), then wait until it has exited. Returns the replica's state once
/// it has: its received position no longer moves.
pub async fn stop_wal_receiver(t: &Target) -> Result<ServerState, PgError> {
    let client = connect(t).await?;
    alter_system(&client, t, "clearing primary_conninfo", "primary_conninfo", "").await?;
    let deadline = Instant::now() + t.timeout;
    loop {
        let state = probe_on(&client, t).await?;
        if !state.in_recovery {
            return Err(PgError::Unexpected {
                address: t.address.clone(),
                what: "not a replica (not in recovery)".into(),
            });
        }
        if !state.wal_receiver {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            return Err(PgError::Timeout {
                address: t.address.clone(),
                what: "stopping the WAL receiver",
                timeout: t.timeout,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Promote the replica and wait (up to the target's timeout) until it
/// accepts writes.
pub async fn promote(t: &Target) -> Result<ServerState, PgError> {
    let client = connect(t).await?;
    let secs = t.timeout.as_secs().max(1);
    let rows = rows(&client, t, "pg_promote", &format!("SELECT pg_promote(true, {secs})")).await?;
    if rows.first().and_then(|r| r[0].as_deref()) != Some("t") {
        return Err(PgError::Timeout { address: t.address.clone(), what: "promotion", timeout: t.timeout });
    }
    let state = probe_on(&client, t).await?;
    if state.in_recovery {
        return Err(PgError::Unexpected {
            address: t.address.clone(),
            what: "still in recovery after pg_promote".into(),
        });
    }
    // A former primary that a switchover made read-only and that rejoined
    // without a rewind keeps that setting in its postgresql.auto.conf: a
    // primary must take writes.
    alter_system(&client, t, "clearing default_transaction_read_only", "default_transaction_read_only", "off").await?;
    Ok(state)
}

/// Where a replica streams from, and as whom.
#[derive(Clone)]
pub struct Upstream {
    /// `host:port` of the new primary.
    pub address: String,
    pub user: String,
    pub password: Option<String>,
    /// Shown in the primary's `pg_stat_replication` and matched by
    /// `synchronous_standby_names`: the replica's node name.
    pub application_name: String,
}

impl Upstream {
    /// The `primary_conninfo` string.
    pub fn conninfo(&self) -> String {
        let (host, port) = self.address.rsplit_once(':').unwrap_or((&self.address, "5432"));
        let mut s = format!(
            "host={} port={} user={} application_name={}",
            conninfo_value(host),
            conninfo_value(port),
            conninfo_value(&self.user),
            conninfo_value(&self.application_name)
        );
        if let Some(p) = &self.password {
            s.push_str(&format!(" password={}", conninfo_value(p)));
        }
        s
    }
}

/// `CHECKPOINT` (a superuser or `pg_checkpoint`). After a promotion,
/// `pg_control` names the new timeline only once a checkpoint has
/// finished, and `pg_rewind` reads the source's timeline from there.
pub async fn checkpoint(t: &Target) -> Result<(), PgError> {
    let client = connect(t).await?;
    rows(&client, t, "CHECKPOINT", "CHECKPOINT").await.map(drop)
}

/// Point the replica `t` at `upstream` and reload. Its WAL receiver
/// restarts against the new primary (following its new timeline).
pub async fn follow(t: &Target, upstream: &Upstream) -> Result<(), PgError> {
    let client = connect(t).await?;
    alter_system(&client, t, "setting primary_conninfo", "primary_conninfo", &upstream.conninfo()).await
}

/// Make the primary `t` acknowledge a commit only once `k` of `standbys`
/// (application names) have flushed it: `ANY k (...)`. With no standbys,
/// synchronous replication is turned off.
pub async fn set_synchronous_standbys(t: &Target, k: usize, standbys: &[String]) -> Result<(), PgError> {
    let value = synchronous_standby_names(k, standbys);
    let client = connect(t).await?;
    alter_system(&client, t, "setting synchronous_standby_names", "synchronous_standby_names", &value).await
}

/// Wait (up to the target's timeout) until the replica `t` has replayed
/// WAL up to `lsn`. Returns its state then.
pub async fn wait_replayed(t: &Target, lsn: Lsn) -> Result<ServerState, PgError> {
    let client = connect(t).await?;
    let deadline = Instant::now() + t.timeout;
    loop {
        let state = probe_on(&client, t).await?;
        if state.replay_lsn.is_some_and(|r| r >= lsn) || (!state.in_recovery && state.current_lsn >= Some(lsn)) {
            return Ok(state);
        }
        if Instant::now() >= deadline {
            return Err(PgError::Timeout { address: t.address.clone(), what: "catching up", timeout: t.timeout });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How many client sessions on `t` (other than ours) are running a
/// statement or are inside a transaction.
pub async fn busy_sessions(t: &Target) -> Result<u64, PgError> {
    let client = connect(t).await?;
    let sql = "SELECT count(*)::text FROM pg_stat_activity WHERE backend_type = 'client backend' \
               AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'";
    let rows = rows(&client, t, "counting busy sessions", sql).await?;
    Ok(rows.first().and_then(|r| r[0].as_deref()).and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// Make the primary `t` refuse writes from ordinary sessions
/// (`default_transaction_read_only = on`), end every other client session
/// that is still running a statement or inside a transaction (idle ones
/// read the new default at their next statement), and return its WAL
/// position: everything a replica must have before it may take over.
pub async fn make_read_only(t: &Target) -> Result<Lsn, PgError> {
    let client = connect(t).await?;
    alter_system(&client, t, "making the primary read-only", "default_transaction_read_only", "on").await?;
    let sql = "SELECT count(pg_terminate_backend(pid))::text FROM pg_stat_activity \
               WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
               AND state IS DISTINCT FROM 'idle'";
    rows(&client, t, "ending client sessions", sql).await?;
    let state = probe_on(&client, t).await?;
    state.current_lsn.ok_or_else(|| PgError::Unexpected {
        address: t.address.clone(),
        what: "no current WAL position: not a primary".into(),
    })
}

/// Undo [`make_read_only`] (a switchover that did not happen).
pub async fn make_writable(t: &Target) -> Result<(), PgError> {
    let client = connect(t).await?;
    alter_system(&client, t, "making the primary writable", "default_transaction_read_only", "off").await
}

/// Commit one transaction that writes (it takes a transaction id) on the
/// primary `t`: it returns once the commit is acknowledged, which with
/// synchronous standbys means one of them has it.
pub async fn commit_probe(t: &Target) -> Result<(), PgError> {
    let client = connect(t).await?;
    let sql = "SET default_transaction_read_only = off; SELECT txid_current()";
    tokio::time::timeout(t.timeout, rows(&client, t, "a probe commit", sql))
        .await
        .map_err(|_| PgError::Timeout { address: t.address.clone(), what: "a probe commit", timeout: t.timeout })??;
    Ok(())
}

/// The `application_name`s of the standbys streaming from the primary `t`.
pub async fn streaming_standbys(t: &Target) -> Result<Vec<String>, PgError> {
    let client = connect(t).await?;
    let sql = "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'";
    let rows = rows(&client, t, "listing streaming standbys", sql).await?;
    Ok(rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect())
}

/// The value of setting `name` on `t` (`current_setting`).
pub async fn setting(t: &Target, name: &str) -> Result<String, PgError> {
    let client = connect(t).await?;
    let rows =
        rows(&client, t, "reading a setting", &format!("SELECT current_setting({})", quote_literal(name))).await?;
    Ok(rows.first().and_then(|r| r[0].clone()).unwrap_or_default())
}

/// `synchronous_standby_names` for `ANY k` of `standbys` (empty: none,
/// synchronous replication off), as [`set_synchronous_standbys`] sets it.
pub fn synchronous_standby_names(k: usize, standbys: &[String]) -> String {
    if standbys.is_empty() {
        return String::new();
    }
    let names: Vec<String> = standbys.iter().map(|s| format!("\"{}\"", s.replace('"', "\"\""))).collect();
    format!("ANY {} ({})", k.max(1), names.join(", "))
}

/// A single-quoted SQL literal (standard_conforming_strings on).
fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A libpq connection-string value, quoted when it must be.
pub(crate) fn conninfo_value(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conninfo_quotes_what_libpq_needs() {
        let u = Upstream {
            address: "10.0.0.5:5433".into(),
            user: "repl".into(),
            password: Some("it's a secret".into()),
            application_name: "pg-eu-1".into(),
        };
        assert_eq!(
            u.conninfo(),
            "host=10.0.0.5 port=5433 user=repl application_name=pg-eu-1 password='it\\'s a secret'"
        );
        assert_eq!(conninfo_value(""), "''");
        assert_eq!(quote_literal("a'b"), "'a''b'");
    }

    #[test]
    fn target_debug_hides_the_password() {
        let t = Target {
            address: "h:1".into(),
            user: "u".into(),
            password: Some("hunter2".into()),
            database: "postgres".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(!format!("{t:?}").contains("hunter2"));
    }
}
