//! The demo's PostgreSQL side: one cluster per shard of
//! [`layout::SHARDS`] (a primary and two streaming replicas each) under
//! `DIR/pg`, the app role and database on each, and the sample data.
//!
//! ```text
//!   Shards::start ─┬─ s1: PgCluster (primary + 2 replicas) ─▶ app role, demo db ─▶ sample::load(s1)
//!                  └─ s2: PgCluster (primary + 2 replicas) ─▶ app role, demo db ─▶ sample::load(s2)
//!                     (concurrently; initdb's template is cached by the harness)
//! ```
//!
//! The harness names data directories by creation order
//! (`DIR/pg/s1-replica-1/data`); Meridian and demo.json name servers by
//! region (`s1-replica-eu-west`, see [`layout::ShardLayout::placements`]).

use std::path::{Path, PathBuf};

use anyhow::Context;
use harness::{ClusterSpec, PgBinaries, PgCluster, PgServer};

use super::layout::{Placement, SHARDS};
use super::network::Network;
use super::state::PostgresServer;
use super::{APP_PASSWORD, APP_USER, DATABASE, sample};

/// The harness base directory inside the demo directory.
pub fn pg_dir(dir: &Path) -> PathBuf {
    dir.join("pg")
}

/// Every shard's cluster, in [`SHARDS`] order. Dropping it stops every
/// server (the clusters' `Drop`), also on a panic.
pub struct Shards {
    clusters: Vec<PgCluster>,
    /// The binaries every server runs, named by the nodes' `[[managed]]`
    /// entries.
    binaries: PgBinaries,
}

/// One server and its place in the layout.
pub struct Server<'a> {
    pub place: Placement,
    pub pg: &'a PgServer,
}

impl Shards {
    /// Starts every shard concurrently, creates the app role and database
    /// on each and loads its part of the sample data. If anything fails,
    /// the servers already started are stopped (the clusters' `Drop`, also
    /// for a shard whose start is abandoned halfway).
    pub async fn start(dir: &Path) -> anyhow::Result<Shards> {
        let binaries = PgBinaries::find().context("finding the PostgreSQL binaries")?;
        let binaries = &binaries;
        let starts = SHARDS.iter().enumerate().map(|(index, shard)| async move {
            start_shard(dir, index, binaries).await.with_context(|| format!("starting shard {}", shard.name))
        });
        let clusters = futures_util::future::try_join_all(starts).await?;
        let shards = Shards { clusters, binaries: binaries.clone() };
        shards.stream_under_topology_names().await?;
        Ok(shards)
    }

    /// Each replica streams with `application_name` = its name in the
    /// topology (`s1-replica-eu-west`, not the harness's `s1-replica-1`):
    /// the name `synchronous_standby_names` lists, which Meridian keeps at
    /// `ANY 1 (...)` of the replicas' topology names for a sync shard.
    async fn stream_under_topology_names(&self) -> anyhow::Result<()> {
        for Server { place, pg } in self.servers() {
            if pg.role() != harness::Role::Replica {
                continue;
            }
            let conninfo = pg.query_value("SELECT current_setting('primary_conninfo')").await?.unwrap_or_default();
            let renamed: Vec<String> = conninfo
                .split_whitespace()
                .filter(|kv| !kv.starts_with("application_name="))
                .map(str::to_owned)
                .chain(std::iter::once(format!("application_name={}", place.name)))
                .collect();
            let sql = format!("ALTER SYSTEM SET primary_conninfo = '{}'", renamed.join(" ").replace('\'', "''"));
            pg.execute(&sql).await.with_context(|| format!("renaming {}'s stream", place.name))?;
            pg.execute("SELECT pg_reload_conf()").await?;
        }
        Ok(())
    }

    /// Where `pg_ctl`, `pg_rewind` and `postgres` are.
    pub fn bin_dir(&self) -> &Path {
        self.binaries.bindir()
    }

    /// Every server: shard by shard, each primary first, then its replicas.
    pub fn servers(&self) -> Vec<Server<'_>> {
        SHARDS
            .iter()
            .zip(&self.clusters)
            .flat_map(|(shard, cluster)| {
                shard.placements().into_iter().zip(cluster.servers()).map(|(place, pg)| Server { place, pg })
            })
            .collect()
    }

    /// Fast-stops every server, the shards concurrently (replicas first
    /// within each). Stops as many as it can; returns the first error.
    pub async fn stop(&self) -> anyhow::Result<()> {
        let stops = self.clusters.iter().map(PgCluster::stop);
        let results = futures_util::future::join_all(stops).await;
        results.into_iter().collect::<Result<Vec<()>, _>>().context("stopping PostgreSQL")?;
        Ok(())
    }
}

/// Starts shard `SHARDS[index]` with `binaries`: its cluster, the app
/// role, the database and the sample rows of the owners it holds.
async fn start_shard(dir: &Path, index: usize, binaries: &PgBinaries) -> anyhow::Result<PgCluster> {
    let shard = &SHARDS[index];
    let spec = ClusterSpec::default()
        .with_replicas(shard.replicas.len())
        .with_base_dir(pg_dir(dir))
        .with_name_prefix(shard.name)
        .with_binaries(binaries.clone())
        // pg_rewind (REJOIN NODE) reads from a primary only with full page
        // writes on; the harness turns them off for speed.
        .with_conf("full_page_writes = on");
    let cluster = PgCluster::start(spec).await.context("starting PostgreSQL (primary and replicas)")?;
    cluster.create_user(APP_USER, APP_PASSWORD, true).await.context("creating the app role")?;
    cluster.create_database(DATABASE, APP_USER).await.context("creating the demo database")?;
    sample::load(cluster.primary(), index).await?;
    cluster.wait_replicas_caught_up().await.context("waiting for the replicas to catch up")?;
    Ok(cluster)
}

/// The JSON description of every server; with the switches and relays
/// once `network` runs.
pub fn describe(shards: &Shards, network: Option<&Network>) -> Vec<PostgresServer> {
    shards
        .servers()
        .into_iter()
        .map(|Server { place, pg }| {
            let switch = network.and_then(|n| n.server(&place.name));
            let first = switch.and_then(|s| s.link(super::NODE_ID));
            let rtt_ms = |delay: std::time::Duration| (delay * 2).as_secs_f64() * 1000.0;
            PostgresServer {
                shard: place.shard.into(),
                region: place.region.to_string(),
                role: pg.role().to_string(),
                host: pg.host().to_string(),
                port: pg.port(),
                pid: pg.pid(),
                data_dir: pg.data_dir().to_path_buf(),
                url: Some(format!("postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{DATABASE}", pg.host(), pg.port())),
                log_file: Some(pg.log_file().to_path_buf()),
                relay_port: switch.map(|s| s.local_addr().port()),
                latency_ms: first.map(|l| rtt_ms(l.delay)),
                latency_ms_by_node: switch
                    .map(|s| s.links().iter().map(|l| (l.from.to_owned(), rtt_ms(l.delay))).collect())
                    .unwrap_or_default(),
                name: place.name,
                extra: Default::default(),
            }
        })
        .collect()
}

/// PostgreSQL servers left running in `DIR/pg`, found through each data
/// directory's `postmaster.pid`: `(data_dir, pid)`.
pub fn leftover_servers(dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(pg_dir(dir)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let data_dir = entry.path().join("data");
        let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
            continue;
        };
        if let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok())
            && super::state::is_alive(pid)
        {
            found.push((data_dir, pid));
        }
    }
    found
}

/// Stops the servers `servers` lists and any other found running in
/// `DIR/pg`. Servers already gone are fine. Returns the errors.
pub async fn stop_servers(dir: &Path, servers: &[PostgresServer]) -> Vec<anyhow::Error> {
    let mut targets: Vec<(PathBuf, u32)> =
        servers.iter().filter_map(|s| s.pid.map(|pid| (s.data_dir.clone(), pid))).collect();
    for leftover in leftover_servers(dir) {
        if !targets.contains(&leftover) {
            targets.push(leftover);
        }
    }
    // Replicas first, like harness does: they would only complain about
    // the lost primary otherwise. Within each group, all at once.
    let (primaries, replicas): (Vec<_>, Vec<_>) = targets.into_iter().partition(|(data_dir, _)| {
        data_dir.parent().and_then(Path::file_name).is_some_and(|name| name.to_string_lossy().ends_with("-primary"))
    });
    let mut errors = Vec::new();
    for group in [replicas, primaries] {
        let stops = group.iter().map(|(data_dir, pid)| async move {
            match harness::stop_server(data_dir, *pid).await {
                Ok(()) => None,
                // The recorded server is gone and its pid now belongs to
                // another PostgreSQL server, which is not ours to stop.
                Err(harness::Error::NotOurServer { .. }) => {
                    tracing::info!(pid, data_dir = %data_dir.display(), "recorded server is gone (pid reused)");
                    None
                }
                Err(e) => Some(anyhow::Error::new(e).context(format!("stopping the server in {}", data_dir.display()))),
            }
        });
        errors.extend(futures_util::future::join_all(stops).await.into_iter().flatten());
    }
    errors
}
