//! A cluster of Meridian nodes as separate `meridian serve` processes, in
//! front of one real PostgreSQL cluster, for the issue-3 tests in
//! `tests/cluster.rs` and the multi-node failover tests in
//! `tests/cluster_failover.rs`.
//!
//! [`MeridianCluster::start`] starts PostgreSQL (a primary and, by default,
//! one streaming replica), writes one config per member (`[cluster]` with
//! every initial member as a peer, the PostgreSQL servers as the seed
//! `[topology]`) and one users file shared by all, starts the processes and
//! waits until a write goes through every node. Each process logs to
//! `m<id>.log` in the cluster's temp dir (one file across restarts, with a
//! `==== harness:` line before every start). Dropping the cluster kills
//! every process it started, also on a panic, and prints the tail of each
//! log unless the test called [`MeridianCluster::passed`].
//!
//! # Cutting a member off
//!
//! The Raft membership holds one address per member and every member uses
//! it, so a relay per destination can cut a node off only from what is
//! sent *to* it: its own requests would still reach the others (and their
//! answers come back on the same connections), which is a one-way partition
//! in which the cut-off node can still campaign. With
//! [`ClusterSpec::relays`], every member's advertised Raft address is a
//! [`RaftRelay`] of this process in front of its real Raft port, and the
//! relays know which member opened each connection (the connecting socket's
//! inode in `/proc/net/tcp`, looked up among the members' open files in
//! `/proc/<pid>/fd`). [`MeridianCluster::isolate`] then stalls every
//! connection to *or from* the member, in both directions, including the
//! connections already open: nothing gets through, and what either side
//! sends is swallowed (so a connection its opener gave up on is freed).
//! [`MeridianCluster::heal`] closes the stalled connections (as TCP would
//! after a long partition) so the members reconnect on fresh ones; no stale
//! request is ever delivered late.
//!
//! ```text
//!  m1 ──▶ relay(m2) ──▶ m2:raft_listen      m1 isolated: every connection m1 opened, and every
//!  m3 ──▶ relay(m2) ──▶ m2:raft_listen      connection to relay(m1), stalls; m3 → relay(m2) flows
//!  m2 ──▶ relay(m1) ──▶ m1:raft_listen
//! ```
//!
//! Client connections (PostgreSQL protocol, admin console, HTTP) go straight
//! to each node: a cut-off node still answers its clients and still reaches
//! PostgreSQL, as a proxy cut off from its peers would.
//!
//! # Failover
//!
//! Every node probes every PostgreSQL server as the app user (a superuser
//! with a backend password in the users file, so the control loop can also
//! stop WAL receivers and promote). With [`ClusterSpec::sync_replication`]
//! the shard is `durability = 'sync'` over `ANY 1` synchronous standbys;
//! [`ClusterSpec::failure_timeout`] and [`ClusterSpec::probe_interval`] set
//! how fast a dead primary is noticed. [`MeridianCluster::kill_pg`] and
//! [`MeridianCluster::pause_pg`] are the faults; [`MeridianCluster::shard_view`],
//! [`MeridianCluster::wait_new_primary`] and
//! [`MeridianCluster::failover_events`] read what the nodes made of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use harness::{ClusterSpec as PgSpec, PgCluster, PgServer};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{APP_PASSWORD, APP_USER, PATIENCE};

/// The table every write probe and load generator inserts into; created
/// on the primary before the nodes start.
pub const PROBE_TABLE: &str = "meridian_probe";

/// The one shard of the seed topology.
pub const SHARD: &str = "s1";

/// How long a starting process may take to accept client connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a SIGTERM'd process may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Log lines printed per node when a test fails.
const LOG_TAIL: usize = 120;

/// How a [`MeridianCluster`] is set up.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Initial Raft members (ids 1..=members), all peers of each other.
    pub members: usize,
    /// Streaming replicas behind the one PostgreSQL primary.
    pub replicas: usize,
    /// Put a [`RaftRelay`] in front of every member's Raft port, so that
    /// members can be cut off ([`MeridianCluster::isolate`]).
    pub relays: bool,
    pub heartbeat_interval: Duration,
    pub election_timeout: Duration,
    pub write_lease: Duration,
    pub write_hold: Duration,
    /// `[health] probe_interval`: how often every node probes every
    /// PostgreSQL server (and reports what changed through Raft).
    pub probe_interval: Duration,
    /// `cluster.failure_timeout`; `None` leaves Meridian's default.
    pub failure_timeout: Option<Duration>,
    /// Synchronous replication for shard `s1`: the primary gets
    /// `synchronous_standby_names = 'ANY 1 (<every replica>)'` before the
    /// nodes start (the replicas' `application_name`s are their node
    /// names), and once they run the shard is set to `durability = 'sync'`
    /// through the admin console, which every node sees before
    /// [`MeridianCluster::start`] returns. Needs `replicas >= 1`.
    pub sync_replication: bool,
    /// `MERIDIAN_LOG` for the processes.
    pub log_filter: String,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec {
            members: 3,
            replicas: 1,
            relays: false,
            heartbeat_interval: Duration::from_millis(250),
            election_timeout: Duration::from_secs(1),
            write_lease: Duration::from_secs(1),
            write_hold: Duration::from_secs(5),
            probe_interval: Duration::from_millis(100),
            failure_timeout: None,
            sync_replication: false,
            log_filter:
                "info,openraft=warn,openraft::replication=off,openraft::engine::handler::replication_handler=off".into(),
        }
    }
}

/// One Meridian process of the cluster (running or not).
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    /// `node.name`: `m<id>`.
    pub name: String,
    pub region: String,
    /// Where clients and admins connect.
    pub client_addr: SocketAddr,
    /// Where its Raft endpoint listens.
    pub raft_listen: SocketAddr,
    /// The URL the other members call (a relay's when relays are on).
    pub raft_addr: String,
    /// `[http] listen`.
    pub http_addr: SocketAddr,
    /// Its directory: `meridian.toml` and `data/` (the Raft log).
    pub dir: PathBuf,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<std::process::Child>,
    /// How many times it has been started.
    pub starts: u32,
}

impl Member {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }
}

/// A row of `SHOW CLUSTER`, as one node sees the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: u64,
    pub name: String,
    pub voter: bool,
    pub leader: bool,
    pub is_self: bool,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub lease_valid: bool,
}

/// A result set as column name → value, row by row.
pub type Rows = Vec<BTreeMap<String, Option<String>>>;

/// A PostgreSQL cluster and N `meridian serve` processes in front of it.
pub struct MeridianCluster {
    pub pg: PgCluster,
    pub spec: ClusterSpec,
    dir: tempfile::TempDir,
    bin: PathBuf,
    users_file: PathBuf,
    seed_topology: String,
    members: BTreeMap<u64, Member>,
    relays: Option<RaftRelays>,
    passed: bool,
}

impl MeridianCluster {
    /// Start PostgreSQL, write the configs, start `spec.members` processes
    /// and wait until a write goes through every one of them.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<MeridianCluster> {
        crate::init_tracing();
        let bin = crate::fresh_meridian_bin()?;
        let started = Instant::now();
        let pg = PgCluster::start(PgSpec::default().with_replicas(spec.replicas))
            .await
            .context("starting PostgreSQL (the server binaries must be installed)")?;
        pg.create_user(APP_USER, APP_PASSWORD, true).await?;
        if spec.sync_replication {
            make_replication_synchronous(&pg).await?;
        }
        pg.primary()
            .execute(&format!(
                "CREATE TABLE {PROBE_TABLE} (id bigserial PRIMARY KEY, node int NOT NULL, note text NOT NULL, \
                 at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ))
            .await?;
        pg.wait_replicas_caught_up().await?;
        let pg_up = started.elapsed();
        let dir = tempfile::tempdir()?;
        let users_file = dir.path().join("users.toml");
        // trust: the test clients reconnect often, and SCRAM in a debug build
        // costs more than the changes the tests time.
        std::fs::write(
            &users_file,
            format!(
                "[[user]]\nname = \"{APP_USER}\"\nauth = \"trust\"\nbackend_password = \"{APP_PASSWORD}\"\nadmin = true\n"
            ),
        )?;
        let seed_topology = seed_topology(&pg, spec.probe_interval);
        let relays = if spec.relays { Some(RaftRelays::new()) } else { None };
        let mut cluster = MeridianCluster {
            pg,
            spec: spec.clone(),
            dir,
            bin,
            users_file,
            seed_topology,
            members: BTreeMap::new(),
            relays,
            passed: false,
        };
        for id in 1..=spec.members as u64 {
            cluster.add_slot(id).await?;
        }
        let initial: Vec<u64> = cluster.members.keys().copied().collect();
        for &id in &initial {
            cluster.write_config(id, &initial, true)?;
        }
        for &id in &initial {
            cluster.spawn(id)?;
        }
        for &id in &initial {
            cluster.wait_listening(id).await?;
        }
        let listening = started.elapsed();
        for &id in &initial {
            cluster.wait_writable(id).await.with_context(|| format!("m{id} never accepted a write"))?;
        }
        if spec.sync_replication {
            cluster.make_shard_sync(&initial).await?;
        }
        eprintln!(
            "harness: PostgreSQL up after {pg_up:?}, {} members listening after {listening:?}, all writable after {:?} \
             (logs in {})",
            initial.len(),
            started.elapsed(),
            cluster.dir.path().display()
        );
        Ok(cluster)
    }

    /// The test succeeded: do not print the logs on drop.
    pub fn passed(&mut self) {
        self.passed = true;
    }

    /// The ids of every member this harness has created.
    pub fn ids(&self) -> Vec<u64> {
        self.members.keys().copied().collect()
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members.get(&id).unwrap_or_else(|| panic!("no member m{id}"))
    }

    /// The first replica's name in the topology.
    pub fn replica_name(&self) -> String {
        self.pg.replicas().first().map(|r| r.name().to_owned()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Allocate ports (and a relay) for member `id`.
    async fn add_slot(&mut self, id: u64) -> anyhow::Result<()> {
        let port = || -> anyhow::Result<SocketAddr> { Ok(SocketAddr::from(([127, 0, 0, 1], harness::free_port()?))) };
        let client_addr = port()?;
        let raft_listen = port()?;
        let http_addr = port()?;
        let raft_addr = match &mut self.relays {
            Some(relays) => format!("http://{}", relays.add(id, raft_listen).await?),
            None => format!("http://{raft_listen}"),
        };
        let dir = self.dir.path().join(format!("m{id}"));
        std::fs::create_dir_all(&dir)?;
        let member = Member {
            id,
            name: format!("m{id}"),
            region: "local".into(),
            client_addr,
            raft_listen,
            raft_addr,
            http_addr,
            config: dir.join("meridian.toml"),
            log: self.dir.path().join(format!("m{id}.log")),
            dir,
            child: None,
            starts: 0,
        };
        self.members.insert(id, member);
        Ok(())
    }

    /// Write `meridian.toml` for `id`, with `peers` as the initial members
    /// (none: the node waits to be added) and the seed topology if `seed`.
    fn write_config(&self, id: u64, peers: &[u64], seed: bool) -> anyhow::Result<()> {
        let m = self.member(id);
        let s = &self.spec;
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        let mut text = format!(
            "[node]\nname = \"{}\"\nregion = \"{}\"\n\n[listen]\naddress = \"{}\"\n\n[auth]\nusers_file = \"{}\"\n\n\
             [http]\nlisten = \"{}\"\n\n",
            m.name,
            m.region,
            m.client_addr,
            self.users_file.display(),
            m.http_addr
        );
        if seed {
            text.push_str(&self.seed_topology);
        }
        text.push_str(&format!(
            "[cluster]\nmember_id = {id}\nraft_listen = \"{}\"\nraft_advertise = \"{}\"\nclient_advertise = \"{}\"\n\
             data_dir = \"{}\"\nheartbeat_interval = \"{}\"\nelection_timeout = \"{}\"\nwrite_lease = \"{}\"\n\
             write_hold = \"{}\"\n{}\n",
            m.raft_listen,
            m.raft_addr,
            m.client_addr,
            m.dir.join("data").display(),
            ms(s.heartbeat_interval),
            ms(s.election_timeout),
            ms(s.write_lease),
            ms(s.write_hold),
            s.failure_timeout.map(|d| format!("failure_timeout = \"{}\"\n", ms(d))).unwrap_or_default(),
        ));
        for p in peers {
            let p = self.member(*p);
            text.push_str(&format!(
                "[[cluster.peer]]\nid = {}\nname = \"{}\"\nregion = \"{}\"\nraft_addr = \"{}\"\nclient_addr = \"{}\"\n\n",
                p.id, p.name, p.region, p.raft_addr, p.client_addr
            ));
        }
        std::fs::write(&m.config, text)?;
        Ok(())
    }

    /// Start member `id`'s process (its config must exist); output is
    /// appended to its log.
    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let filter = self.spec.log_filter.clone();
        let m = self.members.get_mut(&id).with_context(|| format!("no member m{id}"))?;
        ensure!(m.child.is_none(), "m{id} is already running");
        m.starts += 1;
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&m.log)?;
        writeln!(log, "==== harness: start #{} of m{id} ====", m.starts)?;
        let child = std::process::Command::new(&bin)
            .arg("serve")
            .arg("--config")
            .arg(&m.config)
            .env("MERIDIAN_LOG", &filter)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let pid = child.id();
        m.child = Some(child);
        if let Some(relays) = &self.relays {
            relays.set_pid(id, pid);
        }
        Ok(())
    }

    /// Wait until member `id` accepts TCP connections on its client port.
    pub async fn wait_listening(&mut self, id: u64) -> anyhow::Result<()> {
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        let addr = self.member(id).client_addr;
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            let m = self.members.get_mut(&id).with_context(|| format!("no member m{id}"))?;
            if let Some(child) = m.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                m.child = None;
                bail!("m{id} exited with {status} before listening:\n{}", tail(&m.log, 40));
            }
            if Instant::now() > deadline {
                bail!("m{id} not listening on {addr} after {LISTEN_TIMEOUT:?}:\n{}", tail(&self.member(id).log, 40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Start a stopped member again with the same config and data dir, and
    /// wait until it listens.
    pub async fn restart(&mut self, id: u64) -> anyhow::Result<()> {
        self.spawn(id)?;
        self.wait_listening(id).await
    }

    /// A new member `id` (the next free id) whose config lists no peers:
    /// it starts empty and waits to be added with `ADD MEMBER`.
    pub async fn start_joiner(&mut self) -> anyhow::Result<u64> {
        let id = self.members.keys().next_back().copied().unwrap_or(0) + 1;
        self.add_slot(id).await?;
        self.write_config(id, &[], false)?;
        self.spawn(id)?;
        self.wait_listening(id).await?;
        Ok(id)
    }

    fn signal(&self, id: u64, signal: Signal) -> anyhow::Result<()> {
        let pid = self.member(id).pid().with_context(|| format!("m{id} is not running"))?;
        kill(Pid::from_raw(pid as i32), signal).with_context(|| format!("sending {signal} to m{id}"))?;
        Ok(())
    }

    /// `kill -9` member `id` and reap it.
    pub async fn kill(&mut self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGKILL)?;
        self.reap(id, STOP_TIMEOUT).await.map(|_| ())
    }

    /// SIGTERM member `id` and wait for it to exit (SIGKILL after
    /// [`STOP_TIMEOUT`]); returns whether it exited by itself.
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<bool> {
        self.signal(id, Signal::SIGTERM)?;
        if self.reap(id, STOP_TIMEOUT).await.is_ok() {
            return Ok(true);
        }
        self.signal(id, Signal::SIGKILL)?;
        self.reap(id, STOP_TIMEOUT).await?;
        Ok(false)
    }

    /// SIGSTOP member `id` (frozen, its sockets open).
    pub fn pause(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGSTOP)
    }

    /// SIGCONT member `id`.
    pub fn resume(&self, id: u64) -> anyhow::Result<()> {
        self.signal(id, Signal::SIGCONT)
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.member(id).child.is_some()
    }

    async fn reap(&mut self, id: u64, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            let m = self.members.get_mut(&id).with_context(|| format!("no member m{id}"))?;
            let child = m.child.as_mut().with_context(|| format!("m{id} is not running"))?;
            if let Some(status) = child.try_wait()? {
                m.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("m{id} still running {within:?} after the signal");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Cut member `id` off from every other member (both directions). See
    /// the module docs.
    pub fn isolate(&self, id: u64) -> anyhow::Result<()> {
        let relays = self.relays.as_ref().context("isolate needs ClusterSpec::relays")?;
        relays.isolated.send_modify(|s| {
            s.insert(id);
        });
        Ok(())
    }

    /// End every isolation; stalled connections are closed.
    pub fn heal(&self) {
        if let Some(relays) = &self.relays {
            relays.isolated.send_modify(BTreeSet::clear);
        }
    }

    /// `(connections relayed, connections whose opener was found among the
    /// members)`; the second counts only connections opened by members.
    pub fn relay_stats(&self) -> (u64, u64) {
        self.relays.as_ref().map_or((0, 0), |r| {
            (r.shared.connections.load(Ordering::Relaxed), r.shared.attributed.load(Ordering::Relaxed))
        })
    }

    // -----------------------------------------------------------------
    // Clients
    // -----------------------------------------------------------------

    fn client_config(&self, id: u64, dbname: &str) -> tokio_postgres::Config {
        let addr = self.member(id).client_addr;
        let mut c = tokio_postgres::Config::new();
        c.host(addr.ip().to_string())
            .port(addr.port())
            .user(APP_USER)
            .password(APP_PASSWORD)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(5));
        c
    }

    /// The application user's connection settings for member `id`
    /// (database `postgres`).
    pub fn app_config(&self, id: u64) -> tokio_postgres::Config {
        self.client_config(id, "postgres")
    }

    /// An application connection through member `id` (database `postgres`).
    pub async fn app(&self, id: u64) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.client_config(id, "postgres")).await.with_context(|| format!("app connection to m{id}"))
    }

    /// An admin console connection to member `id` (database `meridian`).
    pub async fn admin(&self, id: u64) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.client_config(id, "meridian")).await.with_context(|| format!("admin connection to m{id}"))
    }

    /// Run an admin statement on member `id` (a new connection) and return
    /// the rows of its last row set.
    pub async fn show(&self, id: u64, sql: &str) -> anyhow::Result<Rows> {
        let admin = self.admin(id).await?;
        let rows = tokio::time::timeout(PATIENCE, rows(&admin, sql))
            .await
            .with_context(|| format!("{sql} on m{id}: no answer within {PATIENCE:?}"))??;
        Ok(rows)
    }

    /// A topology change through member `id`'s admin console: the
    /// `version` it answered.
    pub async fn change(&self, id: u64, sql: &str) -> anyhow::Result<u64> {
        let admin = self.admin(id).await?;
        change(&admin, sql).await.with_context(|| format!("{sql} on m{id}"))
    }

    /// `SHOW CLUSTER` on member `id`.
    pub async fn cluster_view(&self, id: u64) -> anyhow::Result<Vec<MemberView>> {
        member_views(&self.show(id, "SHOW CLUSTER").await?)
    }

    /// Wait until every member in `among` names the same leader, itself one
    /// of `among`, in `SHOW CLUSTER`; returns it.
    pub async fn wait_leader(&self, among: &[u64]) -> anyhow::Result<u64> {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::new();
        loop {
            let mut seen = BTreeSet::new();
            let mut complete = true;
            for &id in among {
                match self.cluster_view(id).await {
                    Ok(view) => match view.iter().find(|v| v.leader) {
                        Some(l) => {
                            seen.insert(l.id);
                        }
                        None => {
                            complete = false;
                            last = format!("m{id} knows no leader");
                        }
                    },
                    Err(e) => {
                        complete = false;
                        last = format!("m{id}: {e:#}");
                    }
                }
            }
            if complete && seen.len() == 1 {
                let leader = *seen.iter().next().expect("one element");
                if among.contains(&leader) {
                    return Ok(leader);
                }
                last = format!("the leader m{leader} is not among {among:?}");
            } else if complete {
                last = format!("members disagree on the leader: {seen:?}");
            }
            if Instant::now() > deadline {
                bail!("no agreed leader among {among:?} within {PATIENCE:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// One write through member `id` (a new connection): a row in
    /// [`PROBE_TABLE`].
    pub async fn write(&self, id: u64, note: &str) -> Result<(), WriteError> {
        let client = self.app(id).await.map_err(WriteError::Connect)?;
        insert(&client, id, note).await.map_err(WriteError::Statement)
    }

    /// Wait until a write through member `id` succeeds.
    pub async fn wait_writable(&self, id: u64) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let deadline = started + PATIENCE;
        loop {
            let last = match self.write(id, "ready").await {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) => e,
            };
            if Instant::now() > deadline {
                bail!("no write through m{id} succeeded within {PATIENCE:?} (last: {last})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET `path` from member `id`'s HTTP endpoint: the status code and the
    /// body (HTTP/1.0, no keep-alive).
    pub async fn http_get(&self, id: u64, path: &str) -> anyhow::Result<(u16, String)> {
        http_get(self.member(id).http_addr, path).await
    }

    /// Member `id`'s whole log (every start).
    pub fn log_text(&self, id: u64) -> String {
        std::fs::read_to_string(&self.member(id).log).unwrap_or_default()
    }

    /// What member `id` logged since its latest start.
    pub fn log_of_last_start(&self, id: u64) -> String {
        let text = self.log_text(id);
        match text.rfind("==== harness: start #") {
            Some(at) => text[at..].to_owned(),
            None => text,
        }
    }

    /// Count rows of [`PROBE_TABLE`] with `note`, on the primary directly.
    pub async fn count_notes(&self, note: &str) -> anyhow::Result<i64> {
        let v = self
            .pg
            .primary()
            .query_value(&format!("SELECT count(*) FROM {PROBE_TABLE} WHERE note = '{note}'"))
            .await?
            .context("count(*) returned NULL")?;
        Ok(v.parse()?)
    }
}

/// Failover: the PostgreSQL servers, and what the nodes say about them.
impl MeridianCluster {
    /// The ids of the members whose process is running.
    pub fn running(&self) -> Vec<u64> {
        self.members.values().filter(|m| m.child.is_some()).map(|m| m.id).collect()
    }

    /// The Raft leader the running members agree on.
    pub async fn leader(&self) -> anyhow::Result<u64> {
        self.wait_leader(&self.running()).await
    }

    /// The PostgreSQL server named `name` (such as `pg-replica-1`).
    pub fn pg_server(&self, name: &str) -> anyhow::Result<&PgServer> {
        self.pg.server(name).with_context(|| format!("no PostgreSQL server {name}"))
    }

    /// `kill -9` PostgreSQL server `name` (the postmaster and every child
    /// at once) and wait until its processes are gone.
    pub async fn kill_pg(&self, name: &str) -> anyhow::Result<()> {
        self.pg_server(name)?.kill().await.with_context(|| format!("killing {name}"))
    }

    /// SIGSTOP every process of PostgreSQL server `name`; undo with
    /// [`resume_pg`](Self::resume_pg).
    pub fn pause_pg(&self, name: &str) -> anyhow::Result<()> {
        self.pg_server(name)?.pause().with_context(|| format!("pausing {name}"))
    }

    /// SIGCONT every process of PostgreSQL server `name`.
    pub fn resume_pg(&self, name: &str) -> anyhow::Result<()> {
        self.pg_server(name)?.resume().with_context(|| format!("resuming {name}"))
    }

    /// Every running PostgreSQL server with whether it is in recovery
    /// (asked over its Unix socket, not through Meridian).
    pub async fn pg_in_recovery(&self) -> anyhow::Result<BTreeMap<String, bool>> {
        let mut out = BTreeMap::new();
        for server in self.pg.servers().iter().filter(|s| s.is_running()) {
            let v = server
                .query_value("SELECT pg_is_in_recovery()")
                .await
                .with_context(|| format!("asking {} whether it is in recovery", server.name()))?;
            out.insert(server.name().to_owned(), v.as_deref() == Some("t"));
        }
        Ok(out)
    }

    /// Shard `shard` as member `id` shows it (`SHOW SHARDS`).
    pub async fn shard_view(&self, id: u64, shard: &str) -> anyhow::Result<ShardView> {
        shard_view(&self.show(id, "SHOW SHARDS").await?, shard).with_context(|| format!("on m{id}"))
    }

    /// Poll every member of `among` (every 20 ms) until shard `shard`
    /// satisfies `done` on each, for at most `within`: what each showed
    /// then. `what` names the condition in the error.
    pub async fn wait_shard(
        &self,
        among: &[u64],
        shard: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&ShardView) -> bool,
    ) -> anyhow::Result<BTreeMap<u64, ShardView>> {
        let deadline = Instant::now() + within;
        let mut last = BTreeMap::new();
        loop {
            let mut views = BTreeMap::new();
            for &id in among {
                match self.shard_view(id, shard).await {
                    Ok(v) => {
                        views.insert(id, v);
                    }
                    Err(e) => {
                        last.insert(id, format!("{e:#}"));
                    }
                }
            }
            if views.len() == among.len() && views.values().all(&done) {
                return Ok(views);
            }
            for (id, v) in &views {
                last.insert(*id, format!("{v:?}"));
            }
            if Instant::now() > deadline {
                bail!("shard {shard}: not {what} on every one of {among:?} within {within:?} (last: {last:?})");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait (at most `within`) until every member of `among` shows the
    /// same unfenced primary of `shard`, other than `old`, at the same
    /// epoch: the end of a failover as the nodes see it.
    pub async fn wait_new_primary(
        &self,
        among: &[u64],
        shard: &str,
        old: &str,
        within: Duration,
    ) -> anyhow::Result<ShardView> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let views = self
                .wait_shard(among, shard, &format!("failed over from {old}"), left, |v| {
                    !v.fenced && v.primary.as_deref().is_some_and(|p| p != old)
                })
                .await?;
            let first = views.values().next().cloned().context("no members to ask")?;
            if views.values().all(|v| v.primary == first.primary && v.epoch == first.epoch) {
                return Ok(first);
            }
            ensure!(Instant::now() < deadline, "members disagree on shard {shard}: {views:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The `failover` events of `SHOW EVENTS` on member `id`, oldest first.
    pub async fn failover_events(&self, id: u64) -> anyhow::Result<Vec<EventView>> {
        let rows = self.show(id, "SHOW EVENTS").await?;
        let mut out = Vec::new();
        for r in &rows {
            if col(r, "kind")? != "failover" {
                continue;
            }
            out.push(EventView {
                id: col(r, "id")?.parse().with_context(|| format!("event id in {r:?}"))?,
                shard: col(r, "shard")?.to_owned(),
                node: col(r, "node")?.to_owned(),
                summary: col(r, "summary")?.to_owned(),
                phases: col(r, "phases")?.to_owned(),
            });
        }
        out.sort_by_key(|e| e.id);
        Ok(out)
    }

    /// `cluster_state` of PostgreSQL node `node` in member `id`'s
    /// `SHOW NODES` (`fenced` for a failed-over primary).
    pub async fn node_cluster_state(&self, id: u64, node: &str) -> anyhow::Result<String> {
        let rows = self.show(id, "SHOW NODES").await?;
        let row = rows
            .iter()
            .find(|r| r.get("name").and_then(|v| v.as_deref()) == Some(node))
            .with_context(|| format!("no node {node} in SHOW NODES on m{id}: {rows:?}"))?;
        Ok(col(row, "cluster_state")?.to_owned())
    }

    /// Set shard [`SHARD`] to `durability = 'sync'` and wait until every
    /// member of `ids` shows it.
    async fn make_shard_sync(&self, ids: &[u64]) -> anyhow::Result<()> {
        let first = *ids.first().context("no members")?;
        let admin = self.admin(first).await?;
        tokio::time::timeout(
            PATIENCE,
            rows(&admin, &format!("ALTER SHARD {SHARD} SET (durability = 'sync', rpo_target = '0s')")),
        )
        .await
        .context("ALTER SHARD: no answer")??;
        self.wait_shard(ids, SHARD, "durability = 'sync'", PATIENCE, |v| v.durability == "sync").await?;
        Ok(())
    }
}

/// A row of `SHOW SHARDS`, as one node sees the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardView {
    pub name: String,
    pub epoch: u64,
    /// The writable primary the node routes to: `None` while fenced.
    pub primary: Option<String>,
    pub fenced: bool,
    /// `async` or `sync`.
    pub durability: String,
}

/// Shard `shard`'s row of `SHOW SHARDS` rows.
/// GET `path` from a node's HTTP endpoint at `addr`: the status code and
/// the body (HTTP/1.0, no keep-alive).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = tokio::time::timeout(Duration::from_secs(5), exchange).await.context("HTTP timed out")??;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP answer: {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

pub fn shard_view(rows: &Rows, shard: &str) -> anyhow::Result<ShardView> {
    let r = rows
        .iter()
        .find(|r| r.get("name").and_then(|v| v.as_deref()) == Some(shard))
        .with_context(|| format!("no shard {shard} in SHOW SHARDS: {rows:?}"))?;
    let epoch = col(r, "epoch")?;
    Ok(ShardView {
        name: shard.to_owned(),
        epoch: epoch.parse().with_context(|| format!("epoch {epoch:?} of {shard}"))?,
        primary: Some(col(r, "primary")?.to_owned()).filter(|p| !p.is_empty()),
        fenced: truthy(col(r, "fenced")?),
        durability: col(r, "durability")?.to_owned(),
    })
}

/// A `failover` row of `SHOW EVENTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    pub id: u64,
    pub shard: String,
    /// The promoted node (or the old primary when the failover stopped).
    pub node: String,
    pub summary: String,
    /// The phase timeline.
    pub phases: String,
}

/// `synchronous_standby_names = 'ANY 1 (<every replica>)'` on the primary,
/// as Meridian's failover sets it on a new one, then wait until every
/// replica is a quorum standby.
async fn make_replication_synchronous(pg: &PgCluster) -> anyhow::Result<()> {
    let names: Vec<String> = pg.replicas().iter().map(|r| format!("\"{}\"", r.name())).collect();
    ensure!(!names.is_empty(), "sync_replication needs at least one replica");
    let primary = pg.primary();
    primary.execute(&format!("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({})'", names.join(", "))).await?;
    primary.execute("SELECT pg_reload_conf()").await?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let quorum =
            primary.query_value("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'").await?;
        if quorum.as_deref() == Some(names.len().to_string().as_str()) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the replicas did not become quorum standbys within {PATIENCE:?} ({quorum:?} of {})",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for MeridianCluster {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            if let Some(mut child) = m.child.take() {
                let pid = Pid::from_raw(child.id() as i32);
                let _ = kill(pid, Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(relays) = &self.relays {
            relays.cancel.cancel();
        }
        if !self.passed {
            for m in self.members.values() {
                eprintln!("---- m{} ({} starts): last {LOG_TAIL} lines of {} ----", m.id, m.starts, m.log.display());
                eprintln!("{}", tail(&m.log, LOG_TAIL));
            }
        }
    }
}

/// Why a write probe failed.
#[derive(Debug)]
pub enum WriteError {
    Connect(anyhow::Error),
    Statement(tokio_postgres::Error),
}

impl WriteError {
    /// The SQLSTATE the statement failed with, if any.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            WriteError::Statement(e) => crate::sqlstate(e),
            WriteError::Connect(_) => None,
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Connect(e) => write!(f, "connect: {e:#}"),
            WriteError::Statement(e) => match e.as_db_error() {
                Some(db) => write!(f, "{}: {}", db.code().code(), db.message()),
                None => write!(f, "{e}"),
            },
        }
    }
}

impl std::error::Error for WriteError {}

/// Insert one row into [`PROBE_TABLE`] through `client`.
pub async fn insert(client: &tokio_postgres::Client, node: u64, note: &str) -> Result<(), tokio_postgres::Error> {
    client
        .execute(&format!("INSERT INTO {PROBE_TABLE} (node, note) VALUES ($1, $2)"), &[&(node as i32), &note])
        .await
        .map(|_| ())
}

/// Connect with `config`; the connection task is detached.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio::time::timeout(PATIENCE, config.connect(tokio_postgres::NoTls))
        .await
        .context("connecting: no answer")??;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The rows of the last row set `sql` answered (simple protocol).
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Rows> {
    let msgs = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => bail!("running {sql}: {}", describe(&e)),
    };
    let mut out = Rows::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => out.push(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            SimpleQueryMessage::RowDescription(_) => out.clear(),
            _ => {}
        }
    }
    Ok(out)
}

/// A tokio-postgres error on one line: SQLSTATE, message, detail and hint
/// of a server error, else the driver's text.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} {}", db.code().code(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => format!("{e:#}"),
    }
}

/// Run a topology change on an admin connection: the `version` of its
/// one-row answer (`version, changed`), 0 when it is NULL (membership).
pub async fn change(admin: &tokio_postgres::Client, sql: &str) -> anyhow::Result<u64> {
    let answer = tokio::time::timeout(PATIENCE, rows(admin, sql)).await.context("no answer")??;
    let row = answer.first().with_context(|| format!("{sql}: no row in the answer"))?;
    ensure!(row.contains_key("changed"), "{sql}: no changed column in {row:?}");
    // Membership changes are not topology versions: NULL.
    let Some(version) = row.get("version").with_context(|| format!("{sql}: no version in {row:?}"))? else {
        return Ok(0);
    };
    version.parse().with_context(|| format!("{sql}: version {version:?}"))
}

/// A column of a row, `""` for NULL; an error names the row.
pub fn col<'a>(row: &'a BTreeMap<String, Option<String>>, name: &str) -> anyhow::Result<&'a str> {
    Ok(row.get(name).with_context(|| format!("no column {name} in {row:?}"))?.as_deref().unwrap_or(""))
}

/// `t`, `true`, `yes`, `on`, `1` (any case).
pub fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "t" | "true" | "yes" | "on" | "1" | "y")
}

/// `SHOW CLUSTER` rows, parsed.
pub fn member_views(rows: &Rows) -> anyhow::Result<Vec<MemberView>> {
    rows.iter()
        .map(|r| {
            let num = |name: &str| -> anyhow::Result<u64> {
                let v = col(r, name)?;
                if v.is_empty() { Ok(0) } else { v.parse().with_context(|| format!("{name} = {v:?}")) }
            };
            Ok(MemberView {
                id: num("id")?,
                name: col(r, "name")?.to_owned(),
                voter: truthy(col(r, "voter")?),
                leader: truthy(col(r, "leader")?),
                is_self: truthy(col(r, "self")?),
                term: num("term")?,
                commit_index: num("commit_index")?,
                applied_index: num("applied_index")?,
                lease_valid: col(r, "lease")?.eq_ignore_ascii_case("valid"),
            })
        })
        .collect()
}

/// Whether the `SHOW NODES` row of PostgreSQL node `name` says it is banned
/// (a `banned` column, or `state = banned`).
pub fn node_banned(nodes: &Rows, name: &str) -> anyhow::Result<bool> {
    let row = nodes
        .iter()
        .find(|r| r.get("name").and_then(|v| v.as_deref()) == Some(name))
        .with_context(|| format!("no node {name} in SHOW NODES: {nodes:?}"))?;
    if let Some(v) = row.get("banned") {
        return Ok(truthy(v.as_deref().unwrap_or("")));
    }
    Ok(col(row, "state")?.eq_ignore_ascii_case("banned"))
}

/// The names in the `name` column.
pub fn names(rows: &Rows) -> BTreeSet<String> {
    rows.iter().filter_map(|r| r.get("name").and_then(|v| v.clone())).collect()
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A one-shard seed `[topology]` of the PostgreSQL cluster (its primary and
/// replicas, region `local`) with probes as the app user.
fn seed_topology(pg: &PgCluster, probe_interval: Duration) -> String {
    let mut t = format!(
        "[health]\nuser = \"{APP_USER}\"\nprobe_interval = \"{}ms\"\n\n[topology]\n\n[[topology.shard]]\nname = \"s1\"\n\n",
        probe_interval.as_millis()
    );
    for server in pg.servers() {
        let role = if server.name() == pg.primary().name() { "primary" } else { "replica" };
        t.push_str(&format!(
            "[[topology.node]]\nname = \"{}\"\naddress = \"{}\"\nshard = \"s1\"\nregion = \"local\"\nrole = \"{role}\"\n\n",
            server.name(),
            server.addr()
        ));
    }
    t
}

// ---------------------------------------------------------------------------
// Raft relays
// ---------------------------------------------------------------------------

/// One [`RaftRelay`] per member, sharing the set of isolated members and
/// the map from process id to member.
struct RaftRelays {
    shared: Arc<RelayShared>,
    isolated: watch::Sender<BTreeSet<u64>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

struct RelayShared {
    /// Process id → member id, of every member process started.
    pids: Mutex<HashMap<u32, u64>>,
    connections: AtomicU64,
    attributed: AtomicU64,
}

/// A TCP relay in front of one member's Raft port that knows which member
/// opened each connection it relays; see the module docs.
struct RaftRelay {
    /// The member the relay leads to.
    member: u64,
    target: SocketAddr,
}

impl RaftRelays {
    fn new() -> RaftRelays {
        RaftRelays {
            shared: Arc::new(RelayShared {
                pids: Mutex::new(HashMap::new()),
                connections: AtomicU64::new(0),
                attributed: AtomicU64::new(0),
            }),
            isolated: watch::Sender::new(BTreeSet::new()),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    /// Start a relay to member `id`'s Raft port `target`; returns its address.
    async fn add(&mut self, id: u64, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let relay = RaftRelay { member: id, target };
        self.tasks.spawn(relay.accept(
            listener,
            self.shared.clone(),
            self.isolated.clone(),
            self.cancel.clone(),
            self.tasks.clone(),
        ));
        Ok(addr)
    }

    fn set_pid(&self, member: u64, pid: u32) {
        let mut pids = self.shared.pids.lock();
        pids.retain(|_, m| *m != member);
        pids.insert(pid, member);
    }
}

impl Drop for RaftRelays {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tasks.close();
    }
}

impl RaftRelay {
    async fn accept(
        self,
        listener: TcpListener,
        shared: Arc<RelayShared>,
        isolated: watch::Sender<BTreeSet<u64>>,
        cancel: CancellationToken,
        tasks: TaskTracker,
    ) {
        let this = Arc::new(self);
        loop {
            // cancel safety: accept and cancelled are cancel safe.
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = cancel.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, member = this.member, "raft relay: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            shared.connections.fetch_add(1, Ordering::Relaxed);
            let (this, shared, rx, cancel) = (this.clone(), shared.clone(), isolated.subscribe(), cancel.clone());
            tasks.spawn(async move { this.relay(stream, peer, shared, rx, cancel).await });
        }
    }

    async fn relay(
        &self,
        mut client: TcpStream,
        peer: SocketAddr,
        shared: Arc<RelayShared>,
        mut isolated: watch::Receiver<BTreeSet<u64>>,
        cancel: CancellationToken,
    ) {
        let local = client.local_addr().ok();
        let pids: Vec<(u32, u64)> = shared.pids.lock().iter().map(|(p, m)| (*p, *m)).collect();
        // A few tries: /proc may lag a freshly connected socket by a moment.
        let from = tokio::task::spawn_blocking(move || {
            (0..3).find_map(|attempt| {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
                socket_owner(peer, local, &pids)
            })
        })
        .await
        .ok()
        .flatten();
        if from.is_some() {
            shared.attributed.fetch_add(1, Ordering::Relaxed);
        }
        let to = self.member;
        tracing::debug!(?from, to, %peer, "raft relay: connection accepted");
        let blocked = move |s: &BTreeSet<u64>| s.contains(&to) || from.is_some_and(|f| s.contains(&f));
        if !blocked(&isolated.borrow_and_update()) {
            let upstream = match tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(self.target)).await {
                Ok(Ok(s)) => s,
                _ => return,
            };
            let _ = upstream.set_nodelay(true);
            let mut upstream = upstream;
            // cancel safety: copy_bidirectional loses buffered bytes when
            // dropped, but then both streams are dropped too.
            let went_dark = tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => false,
                dark = async { isolated.wait_for(|s| blocked(s)).await.is_ok() } => dark,
                _ = cancel.cancelled() => false,
            };
            if !went_dark {
                tracing::debug!(?from, to, %peer, "raft relay: connection closed");
                return;
            }
            tracing::debug!(?from, to, %peer, "raft relay: connection stalled");
            // Stalled: nothing gets through; what either side sends is
            // swallowed, until both have given up or the cut is healed.
            // cancel safety: wait_for, cancelled and swallow (reads into a
            // scratch buffer) are cancel safe.
            tokio::select! {
                _ = async { isolated.wait_for(|s| !blocked(s)).await.is_ok() } => {}
                _ = cancel.cancelled() => {}
                _ = swallow_both(&mut client, &mut upstream) => {}
            }
            tracing::debug!(?from, to, %peer, "raft relay: stalled connection closed");
            return;
        }
        // Opened while cut off: accepted, then silent until the opener gives
        // up or the cut is healed.
        tokio::select! {
            _ = async { isolated.wait_for(|s| !blocked(s)).await.is_ok() } => {}
            _ = cancel.cancelled() => {}
            _ = swallow(&mut client) => {}
        }
        tracing::debug!(?from, to, %peer, "raft relay: connection opened while cut off closed");
    }
}

/// Read and discard until end of stream or an error.
async fn swallow(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut scratch = [0u8; 4096];
    while let Ok(n) = stream.read(&mut scratch).await {
        if n == 0 {
            return;
        }
    }
}

/// Read and discard from both until `opener` ends (the other side may end
/// first; that is not shown to the opener).
async fn swallow_both(opener: &mut TcpStream, other: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let (mut a, mut b) = ([0u8; 4096], [0u8; 4096]);
    let mut other_open = true;
    loop {
        // cancel safety: read is cancel safe.
        tokio::select! {
            r = opener.read(&mut a) => if !matches!(r, Ok(n) if n > 0) { return },
            r = other.read(&mut b), if other_open => other_open = matches!(r, Ok(n) if n > 0),
        }
    }
}

/// Which member opened the TCP connection whose client end is `peer` (and
/// whose server end is `local`): the socket's inode from `/proc/net/tcp`,
/// looked up among the open files of each member process.
fn socket_owner(peer: SocketAddr, local: Option<SocketAddr>, pids: &[(u32, u64)]) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => Some(format!("{:08X}:{:04X}", u32::from_ne_bytes(v4.ip().octets()), v4.port())),
        SocketAddr::V6(_) => None,
    };
    let want_local = hex(peer)?;
    let want_remote = local.and_then(hex);
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let matches =
            f.get(1) == Some(&want_local.as_str()) && want_remote.as_deref().is_none_or(|r| f.get(2) == Some(&r));
        let inode = f.get(9)?;
        (matches && *inode != "0").then(|| inode.to_string())
    })?;
    let link = format!("socket:[{inode}]");
    for &(pid, member) in pids {
        let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for entry in entries.flatten() {
            if std::fs::read_link(entry.path()).is_ok_and(|l| l.as_os_str() == link.as_str()) {
                return Some(member);
            }
        }
    }
    None
}
