//! The demo process itself (`meridian demo` in the foreground, and the
//! child that `--detach` starts): PostgreSQL, the relays that simulate the
//! regions, one Meridian node served in-process, `demo.json`, and an
//! orderly stop on SIGINT or SIGTERM.
//!
//! ```text
//!   lock DIR/demo.lock ─▶ clean up a previous run ─▶ demo.json "starting"
//!     ─▶ shards s1 and s2 (primary + 2 replicas each, concurrently), app role, demo db, sample data
//!     ─▶ a delaying relay in front of each server ─▶ users.toml + meridian.toml
//!     ─▶ Node::bind + serve ─▶ SELECT 1 through it ─▶ probes have seen every replica
//!     ─▶ demo.json "ready" ─▶ wait for SIGINT/SIGTERM
//!     ─▶ node stops ─▶ relays stop ─▶ PostgreSQL stops ─▶ demo.json "stopped"
//! ```
//!
//! Ownership: this function owns the shards (whose `Drop` stops any server
//! still running, also on a panic), the relays (whose `Drop` resets their
//! connections) and the node's serve task, which it always awaits before
//! returning. A signal during startup abandons it and stops whatever had
//! started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::cluster::{self, Shards};
use super::layout::{MERIDIAN_REGION, SHARDS};
use super::network::Network;
use super::node_config;
use super::state::{DemoState, MeridianNode, Status, now_rfc3339};
use super::{APP_PASSWORD, APP_USER, DATABASE, NODE_ID};
use crate::{Config, Node, NodeHandle};

/// How many times we pick another port when the node's was taken meanwhile.
const BIND_ATTEMPTS: usize = 5;

/// How long the node may take to answer its first query.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long we wait for the node's health probes to reach every replica
/// (the first probe of an ap-south replica takes about 0.8 s). Until then
/// reads go to primaries, so a slow probe only delays "ready" this long,
/// with a warning.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// Runs the demo in `dir` until a signal. `log_file` is where our output
/// goes when detached (recorded in demo.json).
pub async fn run(dir: &Path, log_file: Option<PathBuf>) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    clean_previous_run(dir).await?;

    let mut state = DemoState {
        status: Status::Starting,
        dir: dir.to_path_buf(),
        pid: std::process::id(),
        started_at: now_rfc3339(),
        stopped_at: None,
        error: None,
        app_user: APP_USER.into(),
        app_password: APP_PASSWORD.into(),
        database: DATABASE.into(),
        meridian_nodes: Vec::new(),
        postgres_servers: Vec::new(),
        config_file: None,
        users_file: None,
        log_file,
        extra: Default::default(),
    };
    state.write(dir)?;

    let started = tokio::select! {
        // cancel safety: on a signal the startup future is dropped, which
        // drops the half-started clusters and so stops their servers.
        r = Shards::start(dir) => r,
        name = signals.recv() => Err(anyhow::anyhow!("interrupted by {name} during startup")),
    };
    let shards = match started {
        Ok(shards) => shards,
        Err(e) => return fail(dir, &mut state, None, e).await,
    };
    state.postgres_servers = cluster::describe(&shards, None);
    if let Err(e) = state.write(dir) {
        return fail(dir, &mut state, Some(shards), e).await;
    }

    let network = match Network::start(&shards, MERIDIAN_REGION).await {
        Ok(network) => network,
        Err(e) => return fail(dir, &mut state, Some(shards), e).await,
    };
    state.postgres_servers = cluster::describe(&shards, Some(&network));
    let (node, addr) = match bind_node(dir, &shards, &network).await {
        Ok(bound) => bound,
        Err(e) => return fail(dir, &mut state, Some(shards), e).await,
    };
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());
    let client_url = format!("postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{DATABASE}", addr.ip(), addr.port());

    let checked = tokio::select! {
        // cancel safety: check_url only opens a client connection, and
        // wait_probed only reads the node's health.
        r = async {
            check_url(&client_url, SELF_CHECK_TIMEOUT).await.context("querying through the new Meridian node")?;
            wait_probed(&handle).await;
            anyhow::Ok(())
        } => r,
        name = signals.recv() => Err(anyhow::anyhow!("interrupted by {name} during startup")),
    };
    if let Err(e) = checked {
        stop_node(&handle, serve, &mut signals).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }

    state.status = Status::Ready;
    state.config_file = Some(dir.join(node_config::CONFIG_FILE));
    state.users_file = Some(dir.join(node_config::USERS_FILE));
    state.meridian_nodes = vec![MeridianNode {
        id: NODE_ID.into(),
        region: MERIDIAN_REGION.to_string(),
        admin_url: Some(super::admin_url(&client_url)),
        client_url,
        http_url: None,
        pid: std::process::id(),
        extra: Default::default(),
    }];
    state.postgres_servers = cluster::describe(&shards, Some(&network));
    if let Err(e) = state.write(dir) {
        stop_node(&handle, serve, &mut signals).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }
    tracing::info!(dir = %dir.display(), "demo ready");
    super::print_ready(&state, state.log_file.is_some());

    // Run until a signal (or, should it ever happen, the node stopping).
    let mut serve = serve;
    let name = tokio::select! {
        name = signals.recv() => name,
        r = &mut serve => {
            tracing::error!(result = ?r, "the Meridian node stopped by itself");
            "node exit"
        }
    };
    super::say(&format!("\n{name}: stopping the demo..."));
    state.status = Status::Stopping;
    state.write(dir)?;
    if name == "SIGINT" {
        handle.kill();
    } else {
        handle.shutdown();
    }
    if !serve.is_finished() {
        stop_node(&handle, serve, &mut signals).await;
    }
    network.shutdown().await;
    let stopped = shutdown_cluster(dir, shards, &state).await;
    state.status = Status::Stopped;
    state.stopped_at = Some(now_rfc3339());
    state.write(dir)?;
    stopped?;
    super::say(&format!("Demo stopped. Its files stay in {}.", dir.display()));
    Ok(())
}

/// SIGINT, SIGTERM and SIGHUP (the terminal went away; treated like
/// SIGTERM), installed before anything starts.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next signal's name. Cancel safe: `Signal::recv` is.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Stops what a previous demo in `dir` left running (its process was
/// killed) and removes its PostgreSQL directories so names can be reused.
async fn clean_previous_run(dir: &Path) -> anyhow::Result<()> {
    let previous = match DemoState::read(dir) {
        Ok(state) => state,
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "ignoring an unreadable demo.json from a previous run");
            None
        }
    };
    let servers = previous.map(|s| s.postgres_servers).unwrap_or_default();
    if servers.iter().any(|s| s.pid.is_some_and(super::state::is_alive)) || !cluster::leftover_servers(dir).is_empty() {
        tracing::warn!("stopping PostgreSQL servers left running by a previous demo in this directory");
    }
    let errors = cluster::stop_servers(dir, &servers).await;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("cannot stop the servers of a previous demo in this directory"));
    }
    let pg = cluster::pg_dir(dir);
    match std::fs::remove_dir_all(&pg) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing the previous demo's {}", pg.display())),
    }
}

/// Writes users.toml and meridian.toml and binds the node on a free port.
async fn bind_node(dir: &Path, shards: &Shards, network: &Network) -> anyhow::Result<(Node, SocketAddr)> {
    node_config::write_users(dir)?;
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let port = harness::free_port()?;
        let config_file = node_config::write_config(dir, port, MERIDIAN_REGION, shards, network)?;
        let config = Config::load(&config_file)?;
        match Node::bind(config).await {
            Ok(node) => {
                let addr = node.local_addr()?;
                return Ok((node, addr));
            }
            Err(crate::Error::Io(e)) if e.kind() == std::io::ErrorKind::AddrInUse => {
                tracing::debug!(port, "port taken, trying another");
                last_error = Some(e);
            }
            Err(e) => return Err(e).context("starting the Meridian node"),
        }
    }
    Err(anyhow::anyhow!("no free port for the Meridian node: {last_error:?}"))
}

/// Waits until the node's health probes have found every replica up and
/// in recovery, so that the first reads can already go to replicas. Gives
/// up after [`PROBE_WAIT`] with a warning: reads then go to the primaries
/// until the probes succeed.
async fn wait_probed(handle: &NodeHandle) {
    let want: usize = SHARDS.iter().map(|shard| shard.replicas.len()).sum();
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    loop {
        let probed = handle.replicas_probed();
        if probed >= want {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                probed,
                want,
                "not every replica answered a health probe yet; reads use primaries until then"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Connects to `url` and runs `SELECT 1`, retrying until `timeout`.
pub async fn check_url(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let mut config: tokio_postgres::Config = url.parse().context("parsing the client URL")?;
    config.connect_timeout(Duration::from_secs(5)).application_name("meridian-demo-check");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = async {
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(connection);
            let result = client.simple_query("SELECT 1").await;
            drop(client);
            let _ = driver.await;
            result.map(|_| ())
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if tokio::time::Instant::now() >= deadline => return Err(e.into()),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                anyhow::bail!("SELECT 1 timed out")
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Asks the node to stop (if not asked yet) and waits for its serve task;
/// a further signal cuts every session at once.
async fn stop_node(handle: &NodeHandle, mut serve: JoinHandle<()>, signals: &mut Signals) {
    handle.shutdown();
    loop {
        tokio::select! {
            r = &mut serve => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "the Meridian node's task failed");
                }
                return;
            }
            name = signals.recv() => {
                tracing::info!("{name} again: closing every session now");
                handle.kill();
            }
        }
    }
}

/// Fast-stops every server of the shards, then anything else found
/// running in `DIR/pg`.
async fn shutdown_cluster(dir: &Path, shards: Shards, state: &DemoState) -> anyhow::Result<()> {
    let result = shards.stop().await;
    // Dropping the clusters stops (immediately) whatever `stop` missed.
    drop(shards);
    let errors = cluster::stop_servers(dir, &state.postgres_servers).await;
    result?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(())
}

/// Startup failed: stop what started, record the error, return it.
async fn fail(dir: &Path, state: &mut DemoState, shards: Option<Shards>, error: anyhow::Error) -> anyhow::Result<()> {
    tracing::error!(error = %format!("{error:#}"), "demo startup failed; stopping what had started");
    let stopped = match shards {
        Some(shards) => shutdown_cluster(dir, shards, state).await,
        None => match cluster::stop_servers(dir, &state.postgres_servers).await.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        },
    };
    if let Err(e) = stopped {
        tracing::error!(error = %format!("{e:#}"), "stopping PostgreSQL after the failed startup");
    }
    state.status = Status::Failed;
    state.error = Some(format!("{error:#}"));
    state.stopped_at = Some(now_rfc3339());
    if let Err(e) = state.write(dir) {
        tracing::error!(error = %format!("{e:#}"), "recording the failure in demo.json");
    }
    Err(error)
}
