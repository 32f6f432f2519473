//! Local PostgreSQL clusters and a TCP fault relay, for `meridian demo` and
//! the integration tests.
//!
//! # What it does
//!
//! - [`PgBinaries::find`] locates the PostgreSQL server binaries
//!   (`$MERIDIAN_PG_BINDIR`, then `pg_config --bindir`, then the highest
//!   `/usr/lib/postgresql/*/bin`) and fails loudly if they are missing; tests
//!   never skip silently.
//! - [`PgCluster::start`] brings up a primary and `n` streaming replicas
//!   described by a [`ClusterSpec`]: on free ports of 127.0.0.1, each with a
//!   private Unix socket directory, tuned for speed (`fsync = off`, data in
//!   `/dev/shm` when available, see [`TMPDIR_ENV`]). `initdb` runs once per
//!   superuser name and the result is cached (across processes) and copied
//!   with `cp -a`. Replicas are made with `pg_basebackup -R -X stream` and
//!   `start` returns once they stream. A primary plus one replica starts in
//!   0.5–1 s once the template exists (about 0.7 s more the first time).
//! - [`PgServer`] is one server: addresses and config helpers for clients
//!   under test ([`PgServer::tcp_config`], [`PgServer::connection_string`]),
//!   superuser SQL over the socket ([`PgServer::execute`],
//!   [`PgServer::query`]), and the faults a test needs: [`PgServer::stop`],
//!   [`PgServer::start`], [`PgServer::kill`] (SIGKILL the whole process
//!   tree), [`PgServer::pause`] / [`PgServer::resume`] (SIGSTOP/SIGCONT).
//! - Dropping a [`PgCluster`] stops its servers, also when a test panics,
//!   and removes its temporary directory. [`PgCluster::detach`] hands the
//!   running servers over as a serialisable [`ClusterInfo`] instead, and
//!   [`ClusterInfo::stop`] / [`stop_server`] stop them from another process
//!   (`meridian demo stop`).
//! - [`FaultRelay`] sits between a client and a server and injects delay,
//!   blackholes (stalls), refused connects and resets, controlled at any time
//!   through a cloneable [`FaultControl`].
//! - [`free_port`] picks an unused TCP port.
//!
//! ```no_run
//! # async fn demo() -> harness::Result<()> {
//! use harness::{ClusterSpec, FaultRelay, PgCluster};
//! use std::time::Duration;
//!
//! let cluster = PgCluster::start(ClusterSpec::default().with_replicas(1)).await?;
//! cluster.primary().execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await?;
//! cluster.wait_replicas_caught_up().await?;
//! let count = cluster.replicas()[0].query_value("SELECT count(*) FROM t").await?;
//! assert_eq!(count.as_deref(), Some("1"));
//!
//! let relay = FaultRelay::start(cluster.primary().addr()).await?;
//! relay.set_delay(Duration::from_millis(20));
//! // point the code under test at relay.local_addr() ...
//! # Ok(()) }
//! ```
//!
//! # Running as root
//!
//! `initdb` and `postgres` refuse to run as root. When the effective uid is
//! 0, every PostgreSQL tool runs as the `postgres` OS user and the
//! directories it writes are handed to that user; a persistent base
//! directory must be reachable by it (the error says which parent is not).
//! As any other user, the tools run as that user.
//!
//! # Processes
//!
//! `pg_ctl` leaves each postmaster orphaned. So that stopped servers do not
//! linger as zombies under an init that never reaps (common in containers),
//! the process makes itself a child subreaper (`PR_SET_CHILD_SUBREAPER`)
//! when it starts its first cluster and reaps the postmasters it stops.
//! Servers are stopped by signalling the postmaster directly (what `pg_ctl
//! stop` does), so no binaries are needed to stop them.
//!
//! # What it does not do
//!
//! It does not install PostgreSQL, manage TLS certificates, run a
//! connection pooler, or decide anything about failover: a promoted replica
//! is still listed by [`PgCluster::replicas`]; callers track topology. It
//! cannot stop servers if the test process is SIGKILLed (nothing runs then);
//! such servers are found by `pgrep -u postgres postgres` and their base
//! directories are named `meridian-pg-*` (in `/dev/shm`, see [`TMPDIR_ENV`]).

mod binaries;
mod cluster;
mod command;
mod conf;
mod error;
mod os_user;
mod port;
mod postmaster;
mod relay;
mod scratch;
mod server;
mod template;

pub use binaries::{BINDIR_ENV, PgBinaries};
pub use cluster::{ClusterInfo, ClusterSpec, Credentials, DEFAULT_PASSWORD, HostAuth, PgCluster};
pub use error::{Error, Result};
pub use port::free_port;
pub use postmaster::{reap_exited_servers, stop_server};
pub use relay::{FaultControl, FaultRelay, Faults};
pub use scratch::TMPDIR_ENV;
pub use server::{HOST, PgServer, Role, ServerInfo};
