//! The crate's one error type.
//!
//! Every variant names the thing that failed (a path, a server, a command) so
//! that a failing integration test prints enough to act on without rerunning.
//! Variants that wrap a PostgreSQL log carry its tail, because "pg_ctl: could
//! not start server" alone says nothing.
//!
//! ```
//! # fn check(result: harness::Result<()>) {
//! match result {
//!     Err(harness::Error::BinariesNotFound { tried }) => eprintln!("install PostgreSQL: {tried}"),
//!     Err(other) => eprintln!("{other}"),
//!     Ok(()) => {}
//! }
//! # }
//! ```

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while running local PostgreSQL servers or the
/// fault relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No directory holds all of `initdb`, `pg_ctl`, `postgres` and
    /// `pg_basebackup`. Tests fail on this rather than skip, so a machine
    /// without PostgreSQL cannot pass CI by accident.
    #[error("postgresql server binaries not found (need initdb, pg_ctl, postgres, pg_basebackup); tried: {tried}")]
    BinariesNotFound {
        /// Each candidate directory and why it was rejected.
        tried: String,
    },

    /// The OS account that must own PostgreSQL processes does not exist.
    #[error("os user `{name}` not found (needed because initdb and postgres refuse to run as root)")]
    UserNotFound {
        /// The account looked up, normally `postgres`.
        name: String,
    },

    /// The account running PostgreSQL cannot reach a directory we would put
    /// its data in.
    #[error(
        "os user `{user}` cannot reach {path}: {reason}; choose a directory under /tmp or make its parents searchable (chmod o+x)"
    )]
    NotAccessible {
        /// The directory that blocks access.
        path: PathBuf,
        /// The account that needs access.
        user: String,
        /// Which permission is missing.
        reason: String,
    },

    /// A [`ClusterSpec`](crate::ClusterSpec) that cannot be started as given.
    #[error("invalid cluster spec: {0}")]
    InvalidSpec(String),

    /// A server directory already exists in a persistent base directory;
    /// we never reuse or overwrite one.
    #[error("{0} already exists; remove it or choose another base directory")]
    AlreadyExists(PathBuf),

    /// A file-system or socket operation failed.
    #[error("{action}: {source}")]
    Io {
        /// What we were doing, including the path or address involved.
        action: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A PostgreSQL tool (or `cp`) exited unsuccessfully.
    #[error("{command} failed ({status}): {output}")]
    Command {
        /// The command line, for copy-and-paste debugging.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its stdout and stderr.
        output: String,
    },

    /// A server process did not come up.
    #[error("{server} failed to start: {reason}\n--- {log} (tail) ---\n{log_tail}")]
    StartFailed {
        /// The server's name, such as `pg-replica-1`.
        server: String,
        /// The short reason.
        reason: String,
        /// Path of the server log.
        log: PathBuf,
        /// The last lines that start attempt wrote to the log.
        log_tail: String,
    },

    /// Something we wait for (readiness, replication, shutdown) did not
    /// happen in time.
    #[error("{server}: timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// The server's name.
        server: String,
        /// What we waited for.
        what: String,
        /// How long we waited.
        timeout: Duration,
    },

    /// A SQL statement or connection to a server failed.
    #[error("{server}: {action}: {detail}")]
    Postgres {
        /// The server's name.
        server: String,
        /// What we were doing.
        action: String,
        /// The server's message and SQLSTATE, or the driver's reason
        /// (`tokio_postgres::Error` alone displays only "db error").
        detail: String,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// The operation needs a running server.
    #[error("{0} is not running")]
    NotRunning(String),

    /// Sending a signal to a server process failed.
    #[error("sending {signal} to pid {pid}: {source}")]
    Signal {
        /// The target process.
        pid: u32,
        /// The signal's name.
        signal: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },

    /// [`stop_server`](crate::stop_server) was given a pid that does not run
    /// the given data directory, so stopping it could hit an unrelated
    /// process that reused the pid.
    #[error("pid {pid} is not the postmaster of {data_dir}")]
    NotOurServer {
        /// The pid we were asked to stop.
        pid: u32,
        /// The data directory it should be serving.
        data_dir: PathBuf,
    },
}

impl Error {
    /// Wraps a driver error, keeping the server's message in the display.
    pub(crate) fn postgres(server: &str, action: &str, source: tokio_postgres::Error) -> Self {
        let detail = match source.as_db_error() {
            Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
            None => match std::error::Error::source(&source) {
                Some(cause) => format!("{source}: {cause}"),
                None => source.to_string(),
            },
        };
        Error::Postgres { server: server.to_owned(), action: action.to_owned(), detail, source }
    }
}

/// Attaches a description of the operation to an [`io::Error`].
pub(crate) trait IoContext<T> {
    /// Wraps the error as [`Error::Io`], computing the description lazily.
    fn io_context(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_context(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io { action: action(), source })
    }
}
