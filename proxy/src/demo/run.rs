//! The demo process itself (`meridian demo` in the foreground, and the
//! child that `--detach` starts): PostgreSQL, one Meridian node served
//! in-process, `demo.json`, and an orderly stop on SIGINT or SIGTERM.
//!
//! ```text
//!   lock DIR/demo.lock ─▶ clean up a previous run ─▶ demo.json "starting"
//!     ─▶ PostgreSQL s1 (primary + replica), app role, demo db, sample data
//!     ─▶ meridian.toml + users.toml ─▶ Node::bind + serve ─▶ SELECT 1 through it
//!     ─▶ demo.json "ready" ─▶ wait for SIGINT/SIGTERM
//!     ─▶ node stops ─▶ PostgreSQL stops ─▶ demo.json "stopped"
//! ```
//!
//! Ownership: this function owns the cluster (whose `Drop` stops any server
//! still running, also on a panic) and the node's serve task, which it
//! always awaits before returning. A signal during startup abandons it and
//! stops whatever had started.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use harness::PgCluster;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::task::JoinHandle;

use super::state::{DemoState, MeridianNode, Status, now_rfc3339};
use super::{APP_PASSWORD, APP_USER, DATABASE, NODE_ID, REGION, cluster};
use crate::{Config, Node, NodeHandle};

/// How many times we pick another port when the node's was taken meanwhile.
const BIND_ATTEMPTS: usize = 5;

/// How long the node may take to answer its first query.
const SELF_CHECK_TIMEOUT: Duration = Duration::from_secs(15);

/// How long sessions may finish their transaction on SIGTERM; well below
/// the 15 s `meridian demo stop` waits before SIGKILL.
const SHUTDOWN_GRACE: &str = "5s";

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
        // drops the half-started cluster and so stops its servers.
        r = cluster::start(dir) => r,
        name = signals.recv() => Err(anyhow::anyhow!("interrupted by {name} during startup")),
    };
    let cluster = match started {
        Ok(cluster) => cluster,
        Err(e) => return fail(dir, &mut state, None, e).await,
    };
    state.postgres_servers = cluster::describe(&cluster);
    if let Err(e) = state.write(dir) {
        return fail(dir, &mut state, Some(cluster), e).await;
    }

    let (node, addr) = match bind_node(dir, &cluster).await {
        Ok(bound) => bound,
        Err(e) => return fail(dir, &mut state, Some(cluster), e).await,
    };
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());
    let client_url = format!("postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{DATABASE}", addr.ip(), addr.port());

    let checked = tokio::select! {
        // cancel safety: check_url only opens a client connection.
        r = check_url(&client_url, SELF_CHECK_TIMEOUT) => r.context("querying through the new Meridian node"),
        name = signals.recv() => Err(anyhow::anyhow!("interrupted by {name} during startup")),
    };
    if let Err(e) = checked {
        stop_node(&handle, serve, &mut signals).await;
        return fail(dir, &mut state, Some(cluster), e).await;
    }

    state.status = Status::Ready;
    state.config_file = Some(dir.join("meridian.toml"));
    state.users_file = Some(dir.join("users.toml"));
    state.meridian_nodes = vec![MeridianNode {
        id: NODE_ID.into(),
        region: REGION.into(),
        client_url,
        admin_url: None,
        http_url: None,
        pid: std::process::id(),
        extra: Default::default(),
    }];
    state.postgres_servers = cluster::describe(&cluster);
    if let Err(e) = state.write(dir) {
        stop_node(&handle, serve, &mut signals).await;
        return fail(dir, &mut state, Some(cluster), e).await;
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
    let stopped = shutdown_cluster(dir, cluster, &state).await;
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

/// Writes meridian.toml and users.toml and binds the node on a free port.
async fn bind_node(dir: &Path, cluster: &PgCluster) -> anyhow::Result<(Node, SocketAddr)> {
    use std::os::unix::fs::PermissionsExt;
    let secret = crate::auth::make_secret(crate::auth::SecretKind::ScramSha256, APP_USER, APP_PASSWORD);
    let users_file = dir.join("users.toml");
    let users = format!(
        "# Written by `meridian demo`.\n[[user]]\nname = \"{APP_USER}\"\nauth = \"scram-sha-256\"\nsecret = \"{secret}\"\nbackend_password = \"{APP_PASSWORD}\"\nadmin = true\n"
    );
    std::fs::write(&users_file, users).with_context(|| format!("writing {}", users_file.display()))?;
    std::fs::set_permissions(&users_file, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", users_file.display()))?;

    let config_file = dir.join("meridian.toml");
    let mut last_error = None;
    for _ in 0..BIND_ATTEMPTS {
        let port = harness::free_port()?;
        let text = format!(
            "# Written by `meridian demo`; `meridian serve --config {config}` runs the same node.\n\
             [node]\nname = \"{NODE_ID}\"\nregion = \"{REGION}\"\n\n\
             [listen]\naddress = \"127.0.0.1:{port}\"\n\n\
             [auth]\nusers_file = \"users.toml\"\n\n\
             [backend]\naddress = \"{backend}\"\n\n\
             [shutdown]\ngrace = \"{SHUTDOWN_GRACE}\"\n",
            config = config_file.display(),
            backend = cluster.primary().addr(),
        );
        std::fs::write(&config_file, text).with_context(|| format!("writing {}", config_file.display()))?;
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

/// Fast-stops every server of the cluster, then anything else found
/// running in `DIR/pg`.
async fn shutdown_cluster(dir: &Path, cluster: PgCluster, state: &DemoState) -> anyhow::Result<()> {
    let result = cluster.stop().await.context("stopping PostgreSQL");
    // Dropping the cluster stops (immediately) whatever `stop` missed.
    drop(cluster);
    let errors = cluster::stop_servers(dir, &state.postgres_servers).await;
    result?;
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    Ok(())
}

/// Startup failed: stop what started, record the error, return it.
async fn fail(
    dir: &Path,
    state: &mut DemoState,
    cluster: Option<PgCluster>,
    error: anyhow::Error,
) -> anyhow::Result<()> {
    tracing::error!(error = %format!("{error:#}"), "demo startup failed; stopping what had started");
    let stopped = match cluster {
        Some(cluster) => shutdown_cluster(dir, cluster, state).await,
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
