//! A sharded test bed: two shards, each a primary and two streaming
//! replicas, every server behind a [`FaultRelay`] (latency on demand), and
//! one Meridian node with a `[topology]` over them.
//!
//! Tables `owners` and `pets` are sharded by `owner_id` (int, hash over s1
//! and s2), `accounts` by `email` (text, hash); `settings` is unsharded and
//! lives on s1. The schema exists on both shards.

use std::time::Duration;

use anyhow::Context;
use harness::{ClusterSpec, FaultRelay, PgCluster, PgServer};
use proxy::{Config, NodeHandle};
use tokio::task::JoinHandle;

use crate::{APP_PASSWORD, APP_USER};

/// The schema created on every shard.
pub const SCHEMA: &str = "
    CREATE TABLE owners (owner_id bigint PRIMARY KEY, name text NOT NULL, region text);
    CREATE TABLE pets (pet_id bigserial, owner_id bigint NOT NULL, name text NOT NULL, kind text, weight numeric,
                       PRIMARY KEY (owner_id, pet_id));
    CREATE TABLE accounts (email text PRIMARY KEY, balance bigint NOT NULL DEFAULT 0);
    CREATE TABLE settings (k text PRIMARY KEY, v text);
";

/// How to set the bed up.
#[derive(Debug, Clone)]
pub struct ShardedSpec {
    /// Extra lines for `[topology]` (e.g. `max_replica_lag = "64kB"`).
    pub topology: String,
    /// Extra TOML after everything (e.g. `[pool]`).
    pub extra_config: String,
    pub probe_interval: &'static str,
    /// Replicas per shard.
    pub replicas: usize,
}

impl Default for ShardedSpec {
    fn default() -> Self {
        ShardedSpec { topology: String::new(), extra_config: String::new(), probe_interval: "100ms", replicas: 2 }
    }
}

/// One shard: its cluster and a relay in front of each server (primary
/// first, then the replicas in order).
pub struct ShardBed {
    pub name: String,
    pub cluster: PgCluster,
    pub relays: Vec<FaultRelay>,
}

impl ShardBed {
    pub fn primary(&self) -> &PgServer {
        self.cluster.primary()
    }

    pub fn replica(&self, i: usize) -> &PgServer {
        &self.cluster.replicas()[i]
    }

    /// The relay in front of replica `i`.
    pub fn replica_relay(&self, i: usize) -> &FaultRelay {
        &self.relays[i + 1]
    }
}

pub struct ShardedBed {
    pub shards: Vec<ShardBed>,
    pub addr: std::net::SocketAddr,
    pub node: NodeHandle,
    pub dir: tempfile::TempDir,
    serve: Option<JoinHandle<()>>,
}

impl ShardedBed {
    pub async fn start(spec: ShardedSpec) -> anyhow::Result<ShardedBed> {
        crate::init_tracing();
        let mk = |name: &str| {
            ClusterSpec::default()
                .with_replicas(spec.replicas)
                .with_name_prefix(name)
                .with_conf("wal_receiver_status_interval = 1s")
        };
        let (a, b) = tokio::join!(PgCluster::start(mk("s1")), PgCluster::start(mk("s2")));
        let clusters = [a.context("starting shard s1")?, b.context("starting shard s2")?];
        let mut shards = Vec::new();
        let mut nodes = String::new();
        for (i, cluster) in clusters.into_iter().enumerate() {
            let name = format!("s{}", i + 1);
            cluster.create_user(APP_USER, APP_PASSWORD, true).await?;
            let client = cluster.primary().connect().await?;
            client.batch_execute(&format!("SET ROLE {APP_USER}; {SCHEMA}")).await?;
            cluster.wait_replicas_caught_up().await?;
            let mut relays = Vec::new();
            for server in cluster.servers() {
                let relay = FaultRelay::start(server.addr()).await?;
                let role = if server.name() == cluster.primary().name() { "primary" } else { "replica" };
                nodes.push_str(&format!(
                    "[[topology.node]]\nname = \"{}\"\naddress = \"{}\"\nshard = \"{name}\"\nregion = \"local\"\nrole = \"{role}\"\n\n",
                    server.name(),
                    relay.local_addr()
                ));
                relays.push(relay);
            }
            shards.push(ShardBed { name, cluster, relays });
        }
        let dir = tempfile::tempdir()?;
        let secret = proxy::auth::make_secret("scram-sha-256".parse()?, APP_USER, APP_PASSWORD);
        std::fs::write(
            dir.path().join("users.toml"),
            format!(
                "[[user]]\nname = \"{APP_USER}\"\nauth = \"scram-sha-256\"\nsecret = \"{secret}\"\nbackend_password = \"{APP_PASSWORD}\"\nadmin = true\n"
            ),
        )?;
        let config = format!(
            "[node]\nname = \"test\"\n\n[listen]\naddress = \"127.0.0.1:0\"\n\n[auth]\nusers_file = \"users.toml\"\n\n\
             [health]\nuser = \"{APP_USER}\"\nprobe_interval = \"{}\"\n\n\
             [topology]\n{}\n\n[[topology.shard]]\nname = \"s1\"\n\n[[topology.shard]]\nname = \"s2\"\n\n{nodes}\
             [[topology.table]]\nname = \"owners\"\ncolumn = \"owner_id\"\ntype = \"int\"\nhash = [\"s1\", \"s2\"]\n\n\
             [[topology.table]]\nname = \"pets\"\ncolumn = \"owner_id\"\ntype = \"int\"\nhash = [\"s1\", \"s2\"]\n\n\
             [[topology.table]]\nname = \"accounts\"\ncolumn = \"email\"\ntype = \"text\"\nhash = [\"s1\", \"s2\"]\n\n{}",
            spec.probe_interval, spec.topology, spec.extra_config
        );
        std::fs::write(dir.path().join("meridian.toml"), &config)?;
        let config = Config::load(&dir.path().join("meridian.toml"))?;
        let node = proxy::Node::bind(config).await?;
        let addr = node.local_addr()?;
        let handle = node.handle();
        let serve = tokio::spawn(node.serve());
        let bed = ShardedBed { shards, addr, node: handle, dir, serve: Some(serve) };
        bed.wait_probed().await?;
        Ok(bed)
    }

    /// Wait until probes have seen every replica (so reads may use them).
    async fn wait_probed(&self) -> anyhow::Result<()> {
        let want = self.shards.iter().map(|s| s.cluster.replicas().len()).sum::<usize>();
        crate::eventually("every replica probed", || async { Ok(self.node.replicas_probed() >= want) }).await
    }

    pub fn config(&self) -> tokio_postgres::Config {
        crate::app_config(self.addr)
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.config()).await
    }

    /// The shard (`s1`/`s2`) PostgreSQL's hash partitioning puts `owner_id` on.
    pub fn shard_of(owner_id: i64) -> &'static str {
        match router::hash::hash_remainder(&router::key::KeyValue::Int(owner_id), 2) {
            0 => "s1",
            _ => "s2",
        }
    }

    /// The shard name and server name that own the backend on `port`.
    pub fn server_at(&self, port: u16) -> Option<(&str, &str)> {
        self.shards.iter().find_map(|s| {
            s.cluster.servers().iter().find(|srv| srv.port() == port).map(|srv| (s.name.as_str(), srv.name()))
        })
    }

    pub async fn shutdown(&mut self) {
        self.node.shutdown();
        if let Some(serve) = self.serve.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), serve).await;
        }
    }
}

impl Drop for ShardedBed {
    fn drop(&mut self) {
        self.node.kill();
    }
}

/// Connect with `config`; the connection task ends with the client.
pub async fn connect(config: &tokio_postgres::Config) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}
