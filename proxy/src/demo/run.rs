//! The demo process itself (`meridian demo` in the foreground, and the
//! child that `--detach` starts): PostgreSQL, the relays that simulate the
//! regions, three Meridian nodes (child processes, one Raft group),
//! `demo.json`, and an orderly stop on SIGINT or SIGTERM.
//!
//! ```text
//!   lock DIR/demo.lock ─▶ clean up a previous run ─▶ demo.json "starting"
//!     ─▶ shards s1 and s2 (primary + 2 replicas each, concurrently), app role, demo db, sample data
//!     ─▶ a switch + relays in front of each server ─▶ users.toml
//!     ─▶ nodes: meridian.toml ×3 ─▶ meridian serve ×3 ─▶ demo.json (their pids)
//!     ─▶ every node: SELECT 1, a write per shard, probes ─▶ demo.json "ready"
//!     ─▶ wait for SIGINT/SIGTERM (a node that exits meanwhile stays down)
//!     ─▶ nodes stop ─▶ relays stop ─▶ PostgreSQL stops ─▶ demo.json "stopped"
//! ```
//!
//! Ownership: this function owns the shards (whose `Drop` stops any server
//! still running, also on a panic), the network (whose `Drop` resets its
//! connections) and the nodes (whose `Drop` kills any still running); it
//! stops the nodes before returning. A signal during startup abandons it
//! and stops whatever had started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal as Sig;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::cluster::{self, Shards};
use super::network::Network;
use super::node_config::{self, nodes_dir};
use super::nodes::{self, Nodes};
use super::state::{DemoState, Status, is_node_process, now_rfc3339};
use super::{APP_PASSWORD, APP_USER, DATABASE};

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

    let mut network = match Network::start(&shards).await {
        Ok(network) => network,
        Err(e) => return fail(dir, &mut state, Some(shards), e).await,
    };
    state.postgres_servers = cluster::describe(&shards, Some(&network));
    let nodes = match node_config::write_users(dir) {
        Ok(_) => Nodes::start(dir, &shards, &mut network).await,
        Err(e) => Err(e),
    };
    let mut nodes = match nodes {
        Ok(nodes) => nodes,
        Err(e) => return fail(dir, &mut state, Some(shards), e).await,
    };
    // Recorded now, so `demo stop` finds the nodes even if we die starting.
    state.meridian_nodes = nodes.describe();
    state.config_file = nodes.first_config();
    state.users_file = Some(dir.join(node_config::USERS_FILE));
    if let Err(e) = state.write(dir) {
        nodes.stop(Sig::SIGINT).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }

    let checked = tokio::select! {
        // cancel safety: wait_ready only opens client connections and
        // polls the children.
        r = nodes.wait_ready() => r,
        name = signals.recv() => Err(anyhow::anyhow!("interrupted by {name} during startup")),
    };
    if let Err(e) = checked {
        nodes.stop(Sig::SIGINT).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }
    if let Err(e) = make_shards_sync(&state).await {
        nodes.stop(Sig::SIGINT).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }

    state.status = Status::Ready;
    state.postgres_servers = cluster::describe(&shards, Some(&network));
    if let Err(e) = state.write(dir) {
        nodes.stop(Sig::SIGINT).await;
        return fail(dir, &mut state, Some(shards), e).await;
    }
    tracing::info!(dir = %dir.display(), "demo ready");
    super::print_ready(&state, state.log_file.is_some());

    // Run until a signal. A node that exits (a drill may kill one) stays
    // down; the others keep serving. Servers a node killed or restarted (a
    // drill, REJOIN NODE) are ours to reap (we adopted them).
    let mut reap = tokio::time::interval(Duration::from_millis(200));
    let name = loop {
        tokio::select! {
            name = signals.recv() => break name,
            _ = reap.tick() => harness::reap_exited_servers(),
            (node, status, log) = nodes.next_exit() => {
                tracing::warn!(node, %status, log = %log.display(), "a Meridian node exited; the demo keeps running without it");
            }
        }
    };
    super::say(&format!("\n{name}: stopping the demo..."));
    state.status = Status::Stopping;
    state.write(dir)?;
    stop_nodes(&mut nodes, if name == "SIGINT" { Sig::SIGINT } else { Sig::SIGTERM }, &mut signals).await;
    network.shutdown().await;
    let stopped = shutdown_cluster(dir, shards, &state).await;
    state.status = Status::Stopped;
    state.stopped_at = Some(now_rfc3339());
    state.write(dir)?;
    stopped?;
    super::say(&format!("Demo stopped. Its files stay in {}.", dir.display()));
    Ok(())
}

/// Stops the nodes with `first`; a further signal meanwhile closes every
/// session at once (SIGINT to the nodes).
async fn stop_nodes(nodes: &mut Nodes, first: Sig, signals: &mut Signals) {
    let pids = nodes.running_pids();
    let stop = nodes.stop(first);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            name = signals.recv() => {
                tracing::info!("{name} again: closing every session now");
                for pid in &pids {
                    nodes::send(*pid, Sig::SIGINT);
                }
            }
        }
    }
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
    let (servers, meridian_nodes) = previous.map(|s| (s.postgres_servers, s.meridian_nodes)).unwrap_or_default();
    let orphans: Vec<u32> = meridian_nodes.iter().map(|n| n.pid).filter(|pid| is_node_process(*pid, dir)).collect();
    if !orphans.is_empty() {
        tracing::warn!(?orphans, "stopping Meridian nodes left running by a previous demo in this directory");
        super::stop::stop_nodes(dir, &orphans).await?;
    }
    if servers.iter().any(|s| s.pid.is_some_and(super::state::is_alive)) || !cluster::leftover_servers(dir).is_empty() {
        tracing::warn!("stopping PostgreSQL servers left running by a previous demo in this directory");
    }
    let errors = cluster::stop_servers(dir, &servers).await;
    if let Some(e) = errors.into_iter().next() {
        return Err(e.context("cannot stop the servers of a previous demo in this directory"));
    }
    // PostgreSQL data and the nodes' Raft logs: a new cluster each time.
    for old in [cluster::pg_dir(dir), nodes_dir(dir)] {
        match std::fs::remove_dir_all(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing the previous demo's {}", old.display())),
        }
    }
    Ok(())
}

/// Both shards synchronous with an RPO target of zero, through the first
/// node's admin console: a failover (or a drill) loses no acknowledged
/// commit. Meridian then keeps each primary's `synchronous_standby_names`
/// at `ANY 1` of its replicas.
async fn make_shards_sync(state: &DemoState) -> anyhow::Result<()> {
    let node = state.meridian_nodes.first().context("no Meridian node")?;
    let url = node.admin_url.clone().unwrap_or_else(|| super::admin_url(&node.client_url));
    let mut config: tokio_postgres::Config = url.parse().context("parsing the admin URL")?;
    config.connect_timeout(Duration::from_secs(5)).application_name("meridian-demo-setup");
    let (client, connection) =
        config.connect(tokio_postgres::NoTls).await.context("connecting to the admin console")?;
    let driver = tokio::spawn(connection);
    for shard in super::layout::SHARDS {
        let sql = format!("ALTER SHARD {} SET (durability = 'sync', rpo_target = '0s')", shard.name);
        client.simple_query(&sql).await.with_context(|| sql.clone())?;
    }
    drop(client);
    let _ = driver.await;
    Ok(())
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
