//! A PostgreSQL server on this host, acted on directly: kill it (a crash,
//! for DR drills), stop and start it, and bring a fenced former primary
//! back as a streaming replica of the new primary with `pg_rewind`
//! (`REJOIN NODE`).
//!
//! ```text
//!   kill     SIGSTOP postmaster ─▶ list its children ─▶ SIGKILL postmaster
//!            ─▶ SIGCONT children ─▶ wait: postmaster gone, children exit on
//!            their own (SIGKILL stragglers after a grace)
//!   stop     SIGCONT all ─▶ pg_ctl stop -m fast ─(timeout)▶ -m immediate ─▶ kill
//!   start    clear a stale postmaster.pid ─▶ pg_ctl start -w (daemonizes)
//!   rejoin   CHECKPOINT on the source ─▶ stop ─▶ keep our *.conf files
//!            ─▶ pg_rewind -R ─▶ put them back,
//!            primary_conninfo with application_name=<node>, standby.signal
//!            ─▶ start ─▶ wait until it streams from the source
//! ```
//!
//! Requirements:
//!
//! - Same host: the data directory, the binaries and the postmaster's
//!   process are local. Meridian must run as root or as the data
//!   directory's owner. As root, every PostgreSQL tool runs as the data
//!   directory's owner (PostgreSQL refuses to run as root).
//! - `pg_rewind` needs `wal_log_hints = on` or data checksums on the old
//!   primary (its target), and `full_page_writes = on` on the source.
//! - The rewind source (the new primary) must be reachable with a
//!   superuser, or a role granted what `pg_rewind` needs (`pg_ls_dir`,
//!   `pg_stat_file`, `pg_read_binary_file(text, bigint, bigint, boolean)`),
//!   and accept replication connections from that role (the replica
//!   streams with the same credentials). `rejoin` runs `CHECKPOINT` on the
//!   source first (superuser or `pg_checkpoint`).
//! - The data directory's top-level `*.conf` files (other than
//!   `postgresql.auto.conf`) are this server's own: `pg_rewind` copies the
//!   source's, so `rejoin` puts ours back. `postgresql.auto.conf` comes
//!   from the source, with `primary_conninfo` replaced.
//!
//! Operations on one server must not overlap: the caller runs one at a
//! time per node. Nothing here blocks a tokio worker for long: tools run
//! through `tokio::process`, directory scans in `spawn_blocking`; `pid`
//! reads two small files.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, Uid, User};
use tokio::process::Command;
use tokio::time::Instant;

use crate::postgres::{self, PgError, Target, Upstream, conninfo_value};

/// How often a wait on a process or a server checks again.
const POLL: Duration = Duration::from_millis(20);
/// How long a SIGKILLed postmaster may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How long the children of a killed postmaster get to notice and exit
/// before they are SIGKILLed too (a backend busy in a long query only
/// notices at its next wait).
const CHILD_GRACE: Duration = Duration::from_secs(5);
/// The bound on the immediate shutdown tried after a fast one failed.
const IMMEDIATE_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a tool gets beyond its own `-t` before we give up on it.
const TOOL_MARGIN: Duration = Duration::from_secs(5);
/// Lines of a tool's output (or the server log) kept in errors.
const TAIL_LINES: usize = 20;
/// How much of the end of the pg_ctl log `rejoin` carries across the
/// rewind when the log lives in the data directory.
const LOG_KEEP_BYTES: u64 = 1 << 20;
/// The pg_ctl log's name in the data directory, unless set otherwise.
pub const LOG_FILE: &str = "meridian-postgres.log";

/// Environment variables that would redirect a PostgreSQL tool to another
/// server or data directory than the ones we pass.
const SCRUBBED_ENV: &[&str] = &[
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
    "PGSSLMODE",
    "PGAPPNAME",
    "PGTARGETSESSIONATTRS",
];

/// A PostgreSQL server whose data directory is on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalServer {
    /// The node's name in the topology: named in errors, and the
    /// `application_name` it streams with after [`rejoin`](Self::rejoin)
    /// (what `synchronous_standby_names` lists).
    pub node: String,
    /// PGDATA (absolute).
    pub data_dir: PathBuf,
    /// Where `pg_ctl`, `pg_rewind` and `postgres` are ([`find_bin_dir`]
    /// when the configuration does not say).
    pub bin_dir: PathBuf,
    /// `pg_ctl start -l`: the server's stderr when `logging_collector` is
    /// off. Default: [`LOG_FILE`] in the data directory.
    pub log_file: PathBuf,
}

/// How [`LocalServer::stop`] is asked to shut the server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Roll back open transactions, checkpoint, exit (`pg_ctl -m fast`).
    Fast,
    /// Exit at once; the next start runs crash recovery (`-m immediate`).
    Immediate,
}

/// How the server came to be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// It was not running.
    NotRunning,
    /// A fast shutdown (clean: a checkpoint was written).
    Fast,
    /// An immediate shutdown (crash recovery on the next start).
    Immediate,
    /// Neither shutdown finished; the postmaster was SIGKILLed.
    Killed,
}

/// What [`LocalServer::kill`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    /// The postmaster killed; `None` if the server was not running.
    pub pid: Option<u32>,
    /// Its child processes, which exited once they saw it gone.
    pub children: usize,
    /// Children still there 5 s after the postmaster died, SIGKILLed too.
    pub stragglers: usize,
    /// From the SIGKILL until the last process was gone.
    pub took: Duration,
}

/// What [`LocalServer::start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The running postmaster.
    pub pid: u32,
    /// It was running already; nothing was started.
    pub already_running: bool,
    pub took: Duration,
}

/// What [`LocalServer::rejoin`] did, step by step, for the caller's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejoined {
    pub stopped: StopOutcome,
    pub stop_took: Duration,
    /// `pg_rewind`'s "servers diverged at WAL location … on timeline …";
    /// `None` if it found nothing to rewind.
    pub diverged_at: Option<String>,
    pub rewind_took: Duration,
    /// `pg_ctl start` until it accepted connections.
    pub start_took: Duration,
    /// From the start until its WAL receiver streamed from the source.
    pub catch_up_took: Duration,
    /// The timeline it now receives (the source's).
    pub timeline: u32,
    pub total: Duration,
}

impl LocalServer {
    /// A server of this host; a relative `data_dir` is taken from the
    /// current directory.
    pub fn new(node: impl Into<String>, data_dir: impl Into<PathBuf>, bin_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
        Self { node: node.into(), log_file: data_dir.join(LOG_FILE), data_dir, bin_dir: bin_dir.into() }
    }

    /// The running postmaster's pid: the first line of `postmaster.pid`,
    /// if that process is alive (not a zombie), is PostgreSQL, and serves
    /// this data directory (its working directory or command line says so;
    /// a stale file may name a pid reused by another process).
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        let pid = text.lines().next()?.trim().parse::<i32>().ok().filter(|pid| *pid > 1)?;
        let pid = Pid::from_raw(pid);
        (is_postgres_alive(pid) && serves(pid, &self.data_dir)).then_some(pid.as_raw().unsigned_abs())
    }

    /// Whether the postmaster runs (it may be frozen).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Crash the server: SIGKILL the postmaster only, as a crash of it
    /// would, then wait until it is gone and its children have exited
    /// (they notice the postmaster's death), so that a following
    /// [`start`](Self::start) or `pg_rewind` finds neither its shared
    /// memory nor its port in use. Children still running after
    /// 5 s are SIGKILLed too. Not running is not an error.
    pub async fn kill(&self) -> Result<Killed, PgError> {
        self.check_data_dir()?;
        let Some(pid) = self.pid() else {
            return Ok(Killed { pid: None, children: 0, stragglers: 0, took: Duration::ZERO });
        };
        let postmaster = Pid::from_raw(pid.cast_signed());
        // Frozen, it forks no child we would miss in the listing; SIGKILL
        // works on a stopped process.
        self.signal(postmaster, Signal::SIGSTOP)?;
        let children = descendants(postmaster).await;
        let started = Instant::now();
        self.signal(postmaster, Signal::SIGKILL)?;
        // A frozen server's children could not notice otherwise.
        for child in &children {
            self.signal(*child, Signal::SIGCONT)?;
        }
        if !wait_gone(&[postmaster], KILL_WAIT).await {
            return Err(self.timeout(format!("SIGKILLed postmaster {pid} to exit"), KILL_WAIT, String::new()));
        }
        let mut stragglers = 0;
        if !wait_gone(&children, CHILD_GRACE).await {
            let left: Vec<Pid> = children.iter().copied().filter(|c| is_postgres_alive(*c)).collect();
            stragglers = left.len();
            tracing::warn!(node = %self.node, pid, stragglers, "children of the killed postmaster still run; killing them");
            for child in &left {
                self.signal(*child, Signal::SIGKILL)?;
            }
            if !wait_gone(&left, KILL_WAIT).await {
                return Err(self.timeout(
                    format!("children of killed postmaster {pid} to exit"),
                    CHILD_GRACE + KILL_WAIT,
                    String::new(),
                ));
            }
        }
        let took = started.elapsed();
        tracing::info!(node = %self.node, pid, children = children.len(), stragglers, ?took, "postgres killed");
        Ok(Killed { pid: Some(pid), children: children.len(), stragglers, took })
    }

    /// Shut the server down: `pg_ctl stop -m <mode> -w -t <timeout>`. A
    /// frozen (SIGSTOPped) server is woken first so it can act on the
    /// request; if the fast shutdown does not finish in time, an immediate
    /// one is tried, then SIGKILL ([`kill`](Self::kill)). Not running is
    /// not an error.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome, PgError> {
        self.check_data_dir()?;
        let Some(pid) = self.pid() else {
            return Ok(StopOutcome::NotRunning);
        };
        // A missing tool is a setup error, never a reason to kill.
        self.tool("pg_ctl")?;
        let postmaster = Pid::from_raw(pid.cast_signed());
        let tree = descendants(postmaster).await;
        for child in &tree {
            self.signal(*child, Signal::SIGCONT)?;
        }
        self.signal(postmaster, Signal::SIGCONT)?;
        if mode == StopMode::Fast {
            match self.pg_ctl_stop("fast", timeout).await {
                Ok(()) => return Ok(self.stopped(StopOutcome::Fast)),
                Err(e) if escalate(&e) => {
                    tracing::warn!(node = %self.node, error = %e, "fast shutdown failed; trying immediate");
                }
                Err(e) => return Err(e),
            }
        }
        let immediate = if mode == StopMode::Immediate { timeout } else { IMMEDIATE_TIMEOUT.min(timeout) };
        match self.pg_ctl_stop("immediate", immediate).await {
            Ok(()) => return Ok(self.stopped(StopOutcome::Immediate)),
            Err(e) if escalate(&e) => {
                tracing::warn!(node = %self.node, error = %e, "immediate shutdown failed; killing the postmaster");
            }
            Err(e) => return Err(e),
        }
        if !self.is_running() {
            return Ok(self.stopped(StopOutcome::Immediate));
        }
        self.kill().await?;
        Ok(self.stopped(StopOutcome::Killed))
    }

    fn stopped(&self, outcome: StopOutcome) -> StopOutcome {
        tracing::info!(node = %self.node, ?outcome, "postgres stopped");
        outcome
    }

    async fn pg_ctl_stop(&self, mode: &str, timeout: Duration) -> Result<(), PgError> {
        let mut pg_ctl = self.tool("pg_ctl")?;
        pg_ctl
            .arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t"])
            .arg(whole_seconds(timeout).to_string());
        self.run(pg_ctl, timeout + TOOL_MARGIN, None).await.map(drop)
    }

    /// Start the server: `pg_ctl start -D <data_dir> -l <log_file> -w -t
    /// <timeout>`. `pg_ctl` daemonizes the postmaster (its own session,
    /// not our child), so it outlives Meridian. Returns once it accepts
    /// connections (a standby: once it is consistent). Already running is
    /// not an error. On failure the error carries the log's tail; a server
    /// that is still starting when the time is up is left running.
    pub async fn start(&self, timeout: Duration) -> Result<Started, PgError> {
        self.check_data_dir()?;
        let started = Instant::now();
        if let Some(pid) = self.pid() {
            return Ok(Started { pid, already_running: true, took: Duration::ZERO });
        }
        self.clear_stale_pidfile()?;
        let log_offset = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let mut pg_ctl = self.tool("pg_ctl")?;
        pg_ctl
            .arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t"])
            .arg(whole_seconds(timeout).to_string());
        self.run(pg_ctl, timeout + TOOL_MARGIN, Some(log_offset)).await?;
        let pid = self.pid().ok_or_else(|| PgError::LocalState {
            node: self.node.clone(),
            data_dir: self.data_dir.clone(),
            reason: format!(
                "pg_ctl start reported success but no postmaster runs: {}",
                tail(&read_from(&self.log_file, log_offset), TAIL_LINES)
            ),
        })?;
        let took = started.elapsed();
        tracing::info!(node = %self.node, pid, ?took, "postgres started");
        Ok(Started { pid, already_running: false, took })
    }

    /// Bring this server (a fenced former primary, or a replica of an old
    /// timeline) back as a streaming replica of `source`, the new primary:
    ///
    /// 1. `CHECKPOINT` on `source` (a just-promoted primary's `pg_control`
    ///    names its new timeline only after one; the role needs superuser or
    ///    `pg_checkpoint`); an unreachable source leaves this server alone;
    /// 2. stop it if it runs ([`stop`](Self::stop), fast, falling back), then
    ///    `pg_rewind --target-pgdata=<data_dir> --source-server=<source> -R`
    ///    (PostgreSQL 13+ runs crash recovery first when the server was
    ///    not shut down cleanly; `-R` writes `standby.signal` and
    ///    `primary_conninfo`), keeping this server's own `*.conf` files;
    /// 3. set `primary_conninfo` to `source` with `application_name =
    ///    <node>` (whatever `source.application_name` says), so
    ///    `synchronous_standby_names` entries, which use node names, match;
    /// 4. start it and wait until it is in recovery and its WAL receiver
    ///    streams from `source`, checked through `local` (this server's
    ///    address and the control plane's login).
    ///
    /// `timeout` bounds each step (stop, rewind, start, catch-up).
    pub async fn rejoin(&self, source: &Upstream, local: &Target, timeout: Duration) -> Result<Rejoined, PgError> {
        self.check_data_dir()?;
        let began = Instant::now();
        let source = Upstream { application_name: self.node.clone(), ..source.clone() };
        tracing::info!(node = %self.node, source = %source.address, "rejoining as a replica");

        // A just-promoted source names its new timeline in pg_control only
        // after a checkpoint; without one pg_rewind sees the old timeline
        // and finds "no rewind required". First, so that an unreachable
        // source leaves this server as it was.
        let source_target = Target {
            address: source.address.clone(),
            user: source.user.clone(),
            password: source.password.clone(),
            database: "postgres".into(),
            timeout: local.timeout,
        };
        postgres::checkpoint(&source_target).await.map_err(|e| PgError::LocalStep {
            node: self.node.clone(),
            data_dir: self.data_dir.clone(),
            what: format!("CHECKPOINT on the rewind source {}", source.address),
            source: Box::new(e),
        })?;

        let step = Instant::now();
        let stopped = self.stop(StopMode::Fast, timeout).await?;
        let stop_took = step.elapsed();

        let step = Instant::now();
        let kept = self.keep_own_files().await?;
        let rewound = self.pg_rewind(&source, timeout).await;
        // Our files go back even when the rewind failed halfway: the data
        // directory is then the source's mix, which must not start with
        // the source's port and paths.
        let restored = self.restore(kept).await;
        if let (Err(_), Err(e)) = (&rewound, &restored) {
            tracing::error!(node = %self.node, error = %e, "configuration files not restored after a failed rewind");
        }
        let output = rewound?;
        restored?;
        let diverged_at = diverged_at(&output);
        self.make_standby(&source).await?;
        let rewind_took = step.elapsed();
        tracing::info!(node = %self.node, diverged_at = diverged_at.as_deref().unwrap_or("-"), ?rewind_took, "rewound");

        let step = Instant::now();
        self.start(timeout).await?;
        let start_took = step.elapsed();

        let step = Instant::now();
        let deadline = step + timeout;
        let receiver = loop {
            let last = postgres::receiver(local).await;
            if let Ok(r) = &last
                && r.streams_from(&source.address)
            {
                break r.clone();
            }
            if Instant::now() >= deadline {
                let seen = match last {
                    Ok(r) => format!("{r:?}"),
                    Err(e) => e.to_string(),
                };
                return Err(self.timeout(
                    format!("streaming from {} (last seen: {seen})", source.address),
                    timeout,
                    tail(&String::from_utf8_lossy(&read_end(&self.log_file, 64 << 10).unwrap_or_default()), TAIL_LINES),
                ));
            }
            tokio::time::sleep(POLL * 5).await;
        };
        let report = Rejoined {
            stopped,
            stop_took,
            diverged_at,
            rewind_took,
            start_took,
            catch_up_took: step.elapsed(),
            timeline: receiver.timeline.unwrap_or(0),
            total: began.elapsed(),
        };
        tracing::info!(node = %self.node, source = %source.address, ?report, "rejoined as a replica");
        Ok(report)
    }

    async fn pg_rewind(&self, source: &Upstream, timeout: Duration) -> Result<String, PgError> {
        // The password goes through the environment, not the command line
        // (visible in ps); -R writes it into primary_conninfo, which
        // make_standby replaces anyway.
        let conninfo = format!(
            "{} dbname=postgres connect_timeout={}",
            Upstream { password: None, ..source.clone() }.conninfo(),
            conninfo_value(&whole_seconds(timeout).to_string()),
        );
        let mut rewind = self.tool("pg_rewind")?;
        let mut target = OsString::from("--target-pgdata=");
        target.push(&self.data_dir);
        rewind.arg(target).arg(format!("--source-server={conninfo}")).arg("-R");
        if let Some(password) = &source.password {
            rewind.env("PGPASSWORD", password);
        }
        self.run(rewind, timeout, None).await
    }

    /// The top-level `*.conf` files (not `postgresql.auto.conf`) and the end
    /// of a pg_ctl log kept in the data directory, which `pg_rewind` would
    /// replace with the source's (or delete).
    async fn keep_own_files(&self) -> Result<Vec<(PathBuf, Vec<u8>)>, PgError> {
        let data_dir = self.data_dir.clone();
        let log_file = self.log_file.clone();
        let kept = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
            let mut kept = Vec::new();
            for entry in std::fs::read_dir(&data_dir)? {
                let entry = entry?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if name.ends_with(".conf") && name != "postgresql.auto.conf" && entry.file_type()?.is_file() {
                    kept.push((entry.path(), std::fs::read(entry.path())?));
                }
            }
            if log_file.parent() == Some(data_dir.as_path()) {
                kept.push((log_file.clone(), read_end(&log_file, LOG_KEEP_BYTES)?));
            }
            Ok(kept)
        })
        .await
        .map_err(|e| self.io("reading the configuration files", std::io::Error::other(e)))?;
        kept.map_err(|e| self.io("reading the configuration files", e))
    }

    /// Writes back what [`keep_own_files`](Self::keep_own_files) read.
    async fn restore(&self, kept: Vec<(PathBuf, Vec<u8>)>) -> Result<(), PgError> {
        let owner = self.owner()?;
        for (path, contents) in kept {
            let action = format!("restoring {}", path.display());
            blocking(move || write_owned(&path, &contents, owner)).await.map_err(|e| self.io(action, e))?;
        }
        Ok(())
    }

    /// `standby.signal`, and `primary_conninfo` in `postgresql.auto.conf`
    /// set to `source` (which names this node as `application_name`).
    async fn make_standby(&self, source: &Upstream) -> Result<(), PgError> {
        let owner = self.owner()?;
        let auto = self.data_dir.join("postgresql.auto.conf");
        let signal = self.data_dir.join("standby.signal");
        let conninfo = source.conninfo();
        blocking(move || {
            let text = match std::fs::read_to_string(&auto) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => return Err(e),
            };
            write_owned(&auto, with_primary_conninfo(&text, &conninfo).as_bytes(), owner)?;
            if !signal.exists() {
                write_owned(&signal, b"", owner)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| self.io("writing primary_conninfo and standby.signal", e))
    }

    /// Removes `postmaster.pid` when the process it names is gone or a
    /// zombie: PostgreSQL probes the pid with `kill(pid, 0)`, which
    /// succeeds on a zombie nobody reaped, and would refuse to start.
    fn clear_stale_pidfile(&self) -> Result<(), PgError> {
        let path = self.data_dir.join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        let pid = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok()).filter(|pid| *pid > 1);
        if pid.is_some_and(|pid| is_postgres_alive(Pid::from_raw(pid))) {
            return Ok(());
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(format!("removing stale {}", path.display()), e)),
        }
    }

    /// The data directory exists and holds a cluster (`PG_VERSION`).
    fn check_data_dir(&self) -> Result<(), PgError> {
        let state = |reason: &str| PgError::LocalState {
            node: self.node.clone(),
            data_dir: self.data_dir.clone(),
            reason: reason.to_owned(),
        };
        match std::fs::metadata(&self.data_dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(state("the data directory is not a directory")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(state("the data directory does not exist"));
            }
            Err(e) => return Err(self.io("reading the data directory", e)),
        }
        if !self.data_dir.join("PG_VERSION").is_file() {
            return Err(state("not a PostgreSQL data directory (no PG_VERSION)"));
        }
        Ok(())
    }

    /// `Some((uid, gid))` of the data directory's owner when we are root
    /// (tools run as that account); `None` when we are not (tools run as
    /// us).
    fn owner(&self) -> Result<Option<(u32, u32)>, PgError> {
        if !Uid::effective().is_root() {
            return Ok(None);
        }
        let meta = std::fs::metadata(&self.data_dir).map_err(|e| self.io("reading the data directory's owner", e))?;
        if meta.uid() == 0 {
            return Err(PgError::LocalState {
                node: self.node.clone(),
                data_dir: self.data_dir.clone(),
                reason: "the data directory is owned by root; PostgreSQL does not run as root".into(),
            });
        }
        Ok(Some((meta.uid(), meta.gid())))
    }

    /// A command for `bin_dir/<name>`, run as the data directory's owner
    /// when we are root, with a scrubbed environment and `/` as its
    /// working directory (one it can enter).
    fn tool(&self, name: &str) -> Result<Command, PgError> {
        let program = self.bin_dir.join(name);
        if !program.is_file() {
            return Err(PgError::LocalState {
                node: self.node.clone(),
                data_dir: self.data_dir.clone(),
                reason: format!("{name} not found in {}", self.bin_dir.display()),
            });
        }
        let mut command = Command::new(program);
        for var in SCRUBBED_ENV {
            command.env_remove(var);
        }
        command.env("LC_ALL", "C").current_dir("/").stdin(Stdio::null()).kill_on_drop(true);
        if let Some((uid, gid)) = self.owner()? {
            let home = User::from_uid(Uid::from_raw(uid)).ok().flatten().map_or_else(|| PathBuf::from("/"), |u| u.dir);
            command.uid(uid).gid(gid).env("HOME", home);
        }
        Ok(command)
    }

    /// Runs `command` within `timeout`; its stdout and stderr on success.
    /// With `log_offset`, errors also carry the server log written since.
    async fn run(&self, mut command: Command, timeout: Duration, log_offset: Option<u64>) -> Result<String, PgError> {
        let line = describe(&command);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let log = |output: &str| match log_offset {
            Some(offset) => {
                let log = tail(&read_from(&self.log_file, offset), TAIL_LINES);
                if log.is_empty() {
                    output.to_owned()
                } else {
                    format!("{output}\nserver log {}:\n{log}", self.log_file.display())
                }
            }
            None => output.to_owned(),
        };
        let output = match tokio::time::timeout(timeout, command.output()).await {
            Err(_) => return Err(self.timeout(line, timeout, log(""))),
            Ok(Err(e)) => return Err(self.io(format!("running {line}"), e)),
            Ok(Ok(output)) => output,
        };
        let mut text = String::from_utf8_lossy(&output.stdout).trim_end().to_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(stderr.trim_end());
        }
        if output.status.success() {
            return Ok(text);
        }
        Err(PgError::LocalCommand {
            node: self.node.clone(),
            data_dir: self.data_dir.clone(),
            command: line,
            status: output.status.to_string(),
            output: log(&tail(&text, TAIL_LINES)),
        })
    }

    fn signal(&self, pid: Pid, sig: Signal) -> Result<(), PgError> {
        match signal::kill(pid, sig) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(self.io(format!("sending {} to {pid}", sig.as_str()), errno.into())),
        }
    }

    fn io(&self, action: impl Into<String>, source: std::io::Error) -> PgError {
        PgError::LocalIo { node: self.node.clone(), data_dir: self.data_dir.clone(), action: action.into(), source }
    }

    fn timeout(&self, what: impl Into<String>, timeout: Duration, output: String) -> PgError {
        PgError::LocalTimeout {
            node: self.node.clone(),
            data_dir: self.data_dir.clone(),
            what: what.into(),
            timeout,
            output,
        }
    }
}

/// The directory holding the PostgreSQL server tools, for a configuration
/// that does not name one: `pg_config --bindir` if it has `pg_ctl` (on
/// Debian `pg_config` may come from a client-only package), else the
/// newest `/usr/lib/postgresql/<major>/bin` that has it. Runs `pg_config`
/// (a short blocking call).
pub fn find_bin_dir() -> Result<PathBuf, PgError> {
    let mut tried = Vec::new();
    match std::process::Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
            tried.push(format!("pg_config --bindir: {} has no pg_ctl", dir.display()));
        }
        Ok(out) => tried.push(format!("pg_config --bindir exited with {}", out.status)),
        Err(e) => tried.push(format!("pg_config: {e}")),
    }
    let mut majors: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
                .collect()
        })
        .unwrap_or_default();
    majors.sort();
    match majors.into_iter().rev().find(|(_, dir)| dir.join("pg_ctl").is_file()) {
        Some((_, dir)) => Ok(dir),
        None => {
            tried.push("no /usr/lib/postgresql/*/bin with pg_ctl".into());
            Err(PgError::BinDirNotFound { tried: tried.join("; ") })
        }
    }
}

/// Whether a failed `pg_ctl stop` calls for the next, harsher way: it ran
/// and gave up or did not finish (not: it could not be run at all).
fn escalate(e: &PgError) -> bool {
    matches!(e, PgError::LocalCommand { .. } | PgError::LocalTimeout { .. })
}

/// `text` (a `postgresql.auto.conf`) with every `primary_conninfo` line
/// replaced by one naming `conninfo`, at the end.
fn with_primary_conninfo(text: &str, conninfo: &str) -> String {
    let mut out: String = text
        .lines()
        .filter(|line| line.split('=').next().is_none_or(|key| key.trim() != "primary_conninfo"))
        .flat_map(|line| [line, "\n"])
        .collect();
    let escaped = conninfo.replace('\\', "\\\\").replace('\'', "''");
    out.push_str(&format!("primary_conninfo = '{escaped}'\n"));
    out
}

/// `0/3000060 on timeline 1` from pg_rewind's "servers diverged at WAL
/// location 0/3000060 on timeline 1".
fn diverged_at(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|line| line.split_once("servers diverged at WAL location "))
        .map(|(_, rest)| rest.trim().to_owned())
}

/// Whether `pid` is a live PostgreSQL process (not exited, not a zombie, not
/// another program that reused the pid).
fn is_postgres_alive(pid: Pid) -> bool {
    ProcStat::read(pid)
        .is_some_and(|s| !matches!(s.state, 'Z' | 'X' | 'x') && matches!(s.comm.as_str(), "postgres" | "postmaster"))
}

/// Whether the postmaster `pid` serves `data_dir`: its working directory
/// (the postmaster changes into PGDATA) or its command line (`-D`).
fn serves(pid: Pid, data_dir: &Path) -> bool {
    let canonical = std::fs::canonicalize(data_dir).ok();
    if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
        return Some(&cwd) == canonical.as_ref() || cwd == data_dir;
    }
    let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let wanted = data_dir.as_os_str().as_encoded_bytes();
    raw.split(|b| *b == 0)
        .any(|arg| arg == wanted || canonical.as_ref().is_some_and(|c| arg == c.as_os_str().as_encoded_bytes()))
}

/// Every descendant of `root` (children first, then theirs), found through
/// `/proc/<pid>/stat` parent links (PostgreSQL's children do not share a
/// process group with the postmaster).
async fn descendants(root: Pid) -> Vec<Pid> {
    tokio::task::spawn_blocking(move || {
        let mut children: std::collections::HashMap<i32, Vec<i32>> = std::collections::HashMap::new();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.filter_map(Result::ok) {
                let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Some(stat) = ProcStat::read(Pid::from_raw(pid)) {
                    children.entry(stat.ppid).or_default().push(pid);
                }
            }
        }
        let mut tree = vec![root];
        let mut next = 0;
        while next < tree.len() {
            if let Some(kids) = children.get(&tree[next].as_raw()) {
                tree.extend(kids.iter().map(|k| Pid::from_raw(*k)));
            }
            next += 1;
        }
        tree.remove(0);
        tree
    })
    .await
    .unwrap_or_default()
}

/// Waits until every process of `pids` is gone (or a zombie, which it
/// reaps if it is our child: a process that made itself a child subreaper
/// inherits orphaned postmasters). `false` if some remain after `timeout`.
async fn wait_gone(pids: &[Pid], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    for pid in pids {
        loop {
            let _ = nix::sys::wait::waitpid(*pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
            if !is_postgres_alive(*pid) {
                break;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }
    true
}

/// The fields of `/proc/<pid>/stat` we need.
struct ProcStat {
    comm: String,
    state: char,
    ppid: i32,
}

impl ProcStat {
    fn read(pid: Pid) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parens.
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_owned();
        let mut rest = text.get(close + 1..)?.split_whitespace();
        let state = rest.next()?.chars().next()?;
        let ppid = rest.next()?.parse().ok()?;
        Some(Self { comm, state, ppid })
    }
}

/// Runs blocking file work off the runtime's workers.
async fn blocking(f: impl FnOnce() -> std::io::Result<()> + Send + 'static) -> std::io::Result<()> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

/// Writes `contents` to `path` and, when we are root, hands a file we
/// created to the data directory's owner (an existing file keeps its
/// owner).
fn write_owned(path: &Path, contents: &[u8], owner: Option<(u32, u32)>) -> std::io::Result<()> {
    let existed = path.exists();
    std::fs::write(path, contents)?;
    if let (false, Some((uid, gid))) = (existed, owner) {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// The last `limit` bytes of `path` (empty if it does not exist).
fn read_end(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(limit)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// What was written to `path` after byte `offset` (empty if unreadable).
fn read_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `pg_ctl -t` takes whole seconds; at least one.
fn whole_seconds(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The program and its arguments, for messages (no secrets: passwords go
/// through the environment).
fn describe(command: &Command) -> String {
    let std = command.as_std();
    std::iter::once(std.get_program())
        .chain(std.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_conninfo_is_replaced_not_duplicated() {
        let auto = "# Do not edit this file manually!\n\
                    synchronous_standby_names = 'ANY 1 (\"a\")'\n\
                    primary_conninfo = ''\n\
                    primary_conninfo = 'user=postgres host=x'\n";
        let out = with_primary_conninfo(auto, "host=h user=u application_name=pg-1 password='it\\'s'");
        assert_eq!(
            out,
            "# Do not edit this file manually!\n\
             synchronous_standby_names = 'ANY 1 (\"a\")'\n\
             primary_conninfo = 'host=h user=u application_name=pg-1 password=''it\\\\''s'''\n"
        );
        assert_eq!(with_primary_conninfo("", "host=h"), "primary_conninfo = 'host=h'\n");
    }

    #[test]
    fn reads_pg_rewind_divergence() {
        let out = "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1\n\
                   pg_rewind: rewinding from last common checkpoint at 0/2000060 on timeline 1\n\
                   pg_rewind: Done!";
        assert_eq!(diverged_at(out).as_deref(), Some("0/3000060 on timeline 1"));
        assert_eq!(diverged_at("pg_rewind: no rewind required"), None);
    }

    #[test]
    fn pg_ctl_timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
    }

    #[test]
    fn relative_data_dirs_become_absolute() {
        let s = LocalServer::new("pg-1", "data", "/usr/lib/postgresql/15/bin");
        assert!(s.data_dir.is_absolute());
        assert_eq!(s.log_file, s.data_dir.join(LOG_FILE));
    }

    #[test]
    fn our_own_process_is_not_a_postmaster() {
        assert!(!is_postgres_alive(Pid::this()));
        let s = LocalServer::new("pg-1", "/nonexistent/meridian-test", "/nonexistent");
        assert_eq!(s.pid(), None);
    }
}
