//! The demo's Meridian nodes: one per region ([`MERIDIAN_NODES`]), each a
//! child process `meridian serve --config DIR/nodes/<name>/meridian.toml`
//! with its output in `DIR/nodes/<name>/meridian.log`, all three members
//! of one Raft group.
//!
//! ```text
//!   ports (client, http, raft) ─▶ a Raft switch per node ─▶ meridian.toml ×3 (validated)
//!     ─▶ spawn ×3 (own process group) ─▶ pids to the switches
//!     ─▶ ready: per node, concurrently: SELECT 1 ─▶ a write per shard (lease held)
//!                                       ─▶ its probes see every replica (SHOW NODES)
//! ```
//!
//! Ownership: [`Nodes`] owns the children. [`Nodes::stop`] signals and
//! reaps them; dropping it SIGKILLs any still running, so a failed or
//! abandoned start leaves no node behind. A node that exits while the demo
//! runs (a drill killed it) is logged and left down.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::cluster::Shards;
use super::layout::{MERIDIAN_NODES, MeridianPlace, SHARDS};
use super::network::Network;
use super::node_config::{self, NodePorts};
use super::state::MeridianNode;
use super::{APP_PASSWORD, APP_USER, DATABASE};
use crate::Config;

/// How long a node may take to accept its first client.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a node may take to hold its write lease (an election takes 1
/// to 2 s, then the seed topology is committed once).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long we wait for a node's health probes to reach every replica
/// (the first probe of a replica 150 ms away takes about 0.8 s). Until then
/// its reads go to primaries, so a slow probe only delays "ready" this
/// long, with a warning.
const PROBE_WAIT: Duration = Duration::from_secs(10);

/// How long a node may take to exit after SIGTERM (its shutdown grace is
/// 5 s) before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The running nodes, in [`MERIDIAN_NODES`] order.
pub struct Nodes {
    nodes: Vec<NodeProcess>,
}

/// One node and its child process.
pub struct NodeProcess {
    pub place: &'static MeridianPlace,
    pub ports: NodePorts,
    pub config_file: PathBuf,
    pub log_file: PathBuf,
    /// Kept after the process is reaped (demo.json records it).
    pub pid: u32,
    child: Child,
    /// Set once the process has been reaped.
    exited: Option<ExitStatus>,
}

impl Nodes {
    /// Picks the ports, starts a switch in front of every node's Raft
    /// endpoint, writes and checks every config, then starts every node.
    pub async fn start(dir: &Path, shards: &Shards, network: &mut Network) -> anyhow::Result<Nodes> {
        let mut ports = Vec::new();
        for node in &MERIDIAN_NODES {
            let raft_listen = local(harness::free_port()?);
            let raft_switch = network.add_raft(node, raft_listen).await?;
            ports.push(NodePorts {
                client: local(harness::free_port()?),
                http: local(harness::free_port()?),
                raft_listen,
                raft_switch,
            });
        }
        let mut configs = Vec::new();
        for index in 0..MERIDIAN_NODES.len() {
            let path = node_config::write_config(dir, index, &ports, shards, network)?;
            Config::load(&path).with_context(|| format!("checking the generated {}", path.display()))?;
            configs.push(path);
        }
        let mut nodes = Nodes { nodes: Vec::new() };
        for ((index, place), (config_file, ports)) in
            MERIDIAN_NODES.iter().enumerate().zip(configs.into_iter().zip(ports))
        {
            let log_file = node_config::node_dir(dir, place).join(node_config::NODE_LOG_FILE);
            let child = spawn(&config_file, &log_file).with_context(|| format!("starting {}", place.name))?;
            let pid = child.id().context("a child that was just started has a pid")?;
            network.set_node_pid(index, Some(pid));
            tracing::info!(node = place.name, pid, client = %ports.client, "Meridian node started");
            nodes.nodes.push(NodeProcess { place, ports, config_file, log_file, pid, child, exited: None });
        }
        Ok(nodes)
    }

    /// demo.json's entries.
    pub fn describe(&self) -> Vec<MeridianNode> {
        self.nodes
            .iter()
            .map(|n| {
                let client_url = client_url(&n.ports);
                MeridianNode {
                    id: n.place.name.into(),
                    region: n.place.region.to_string(),
                    admin_url: Some(super::admin_url(&client_url)),
                    client_url,
                    http_url: Some(format!("http://{}", n.ports.http)),
                    pid: n.pid,
                    member_id: Some(n.place.member_id),
                    raft_url: Some(format!("http://{}", n.ports.raft_switch)),
                    raft_listen: Some(format!("http://{}", n.ports.raft_listen)),
                    config_file: Some(n.config_file.clone()),
                    log_file: Some(n.log_file.clone()),
                    data_dir: n.config_file.parent().map(|d| d.join(node_config::RAFT_DIR)),
                    extra: Default::default(),
                }
            })
            .collect()
    }

    /// The pids of the nodes still running.
    pub fn running_pids(&self) -> Vec<u32> {
        self.nodes.iter().filter(|n| n.exited.is_none()).map(|n| n.pid).collect()
    }

    /// The first node's config file.
    pub fn first_config(&self) -> Option<PathBuf> {
        self.nodes.first().map(|n| n.config_file.clone())
    }

    /// Waits until every node accepts clients, takes a write for each
    /// shard (so it holds its write lease and knows each primary) and has
    /// probed every replica. Fails as soon as a node exits.
    pub async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let urls: Vec<(&'static str, String)> =
            self.nodes.iter().map(|n| (n.place.name, client_url(&n.ports))).collect();
        let checks = futures_util::future::try_join_all(urls.iter().map(|(name, url)| async move {
            ready(url).await.with_context(|| format!("{name} ({url}) is not ready"))
        }));
        tokio::select! {
            // cancel safety: the checks only open client connections.
            r = checks => r.map(|_| ()),
            (name, status, log) = self.next_exit() => {
                Err(anyhow::anyhow!("{name} exited during startup ({status}); the end of {}:\n{}",
                    log.display(), super::log_tail(&log, 20)))
            }
        }
    }

    /// The next node to exit: its name, status and log. Pending forever
    /// once every node has exited. Cancel safe: it only polls.
    pub async fn next_exit(&mut self) -> (&'static str, ExitStatus, PathBuf) {
        loop {
            for n in &mut self.nodes {
                if n.exited.is_some() {
                    continue;
                }
                if let Ok(Some(status)) = n.child.try_wait() {
                    n.exited = Some(status);
                    return (n.place.name, status, n.log_file.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Sends `signal` to every node still running (SIGTERM: let
    /// transactions finish; SIGINT: close every session now), waits for
    /// them, and kills those still running after [`STOP_TIMEOUT`].
    pub async fn stop(&mut self, signal: Signal) {
        for pid in self.running_pids() {
            send(pid, signal);
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for n in &mut self.nodes {
            if n.exited.is_some() {
                continue;
            }
            let status = match tokio::time::timeout_at(deadline, n.child.wait()).await {
                Ok(status) => status.ok(),
                Err(_) => {
                    tracing::warn!(node = n.place.name, "did not stop in time; killing it");
                    let _ = n.child.kill().await;
                    n.child.wait().await.ok()
                }
            };
            tracing::info!(node = n.place.name, ?status, "Meridian node stopped");
            n.exited = status;
        }
    }
}

impl Drop for Nodes {
    /// Kills every node still running: a start that failed or was
    /// abandoned leaves none behind.
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if n.exited.is_none() && matches!(n.child.try_wait(), Ok(None)) {
                let _ = n.child.start_kill();
            }
        }
    }
}

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port))
}

/// `meridian serve --config FILE` (this very binary), output to `log`, in
/// its own process group (the terminal's Ctrl-C reaches the demo process,
/// which stops the nodes in order).
fn spawn(config_file: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut cmd = Command::from(super::self_command());
    let child = cmd
        .arg("serve")
        .arg("--config")
        .arg(config_file)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .process_group(0)
        .spawn()
        .context("running meridian serve")?;
    Ok(child)
}

pub fn send(pid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
    }
}

fn client_url(ports: &NodePorts) -> String {
    format!("postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{DATABASE}", ports.client.ip(), ports.client.port())
}

/// One node's readiness: `SELECT 1`, then a write that changes nothing on
/// each shard (the node refuses writes until it holds its write lease and
/// routes by the committed topology), then its probes.
async fn ready(url: &str) -> anyhow::Result<()> {
    super::run::check_url(url, CONNECT_TIMEOUT).await.context("SELECT 1")?;
    let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
    // The shards at once: each write's first server login crosses regions.
    let writes = super::example_owners().into_iter().map(|(owner, shard)| async move {
        // session_id 0 never exists (identities start at 1001): no row changes.
        let sql = format!("DELETE FROM watch_sessions WHERE owner_id = {owner} AND session_id = 0");
        loop {
            match simple_query(url, &sql).await {
                Ok(_) => return anyhow::Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e.context(format!("a write on {shard} within {WRITE_TIMEOUT:?}")));
                }
                Err(e) => {
                    tracing::debug!(url, shard, error = %format!("{e:#}"), "write not accepted yet; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    futures_util::future::try_join_all(writes).await?;
    wait_probed(url).await;
    Ok(())
}

/// Waits until the node's `SHOW NODES` has every replica reachable and in
/// recovery, so its first reads already go to replicas; gives up after
/// [`PROBE_WAIT`] with a warning.
async fn wait_probed(url: &str) {
    let want: usize = SHARDS.iter().map(|shard| shard.replicas.len()).sum();
    let admin = super::admin_url(url);
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    loop {
        let probed = match simple_query(&admin, "SHOW NODES").await {
            Ok(rows) => rows
                .iter()
                .filter(|row| row.get("role") == Some("replica") && row.get("in_recovery") == Some("t"))
                .count(),
            Err(_) => 0,
        };
        if probed >= want {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(url = %admin, probed, want, "not every replica answered a health probe yet; reads use primaries until then");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `sql` over a new connection; the rows it returned.
async fn simple_query(url: &str, sql: &str) -> anyhow::Result<Vec<tokio_postgres::SimpleQueryRow>> {
    let mut config: tokio_postgres::Config = url.parse().context("parsing the URL")?;
    config.connect_timeout(Duration::from_secs(5)).application_name("meridian-demo-check");
    let attempt = async {
        let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(connection);
        let result = client.simple_query(sql).await;
        drop(client);
        let _ = driver.await;
        result
    };
    let messages = tokio::time::timeout(Duration::from_secs(15), attempt).await.context("timed out")??;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        })
        .collect())
}
