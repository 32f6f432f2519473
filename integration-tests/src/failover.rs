//! One automatic failover, measured: a Meridian cluster node (a one-member
//! Raft group, so its own verdict is the majority) in front of a primary
//! and two streaming replicas with synchronous replication (`ANY 1`) and a
//! shard with `durability = 'sync'`. A writer inserts through Meridian
//! without pause; the primary is killed with SIGKILL; the run ends once the
//! new primary has acknowledged writes. Used by `tests/failover.rs` (one
//! run, with assertions) and by `benches`' `failover_rto` (many runs,
//! reported).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use harness::ClusterSpec;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{BedSpec, TestBed, eventually};

/// What one run measured.
#[derive(Debug, Clone)]
pub struct KillRun {
    pub old_primary: String,
    pub new_primary: String,
    /// Writes acknowledged through Meridian, in total.
    pub acknowledged: usize,
    /// Acknowledged writes missing on the new primary: RPO in commits.
    pub lost: Vec<i64>,
    /// The client-visible write outage: the longest gap between two
    /// acknowledged writes.
    pub outage: Duration,
    /// From the kill to the new primary shown by `SHOW SHARDS`.
    pub promoted_after: Duration,
    /// Errors the writer saw, in order (`Some("40001"): message`, or
    /// `None: connection closed`).
    pub errors: Vec<String>,
    /// The failover event: summary and phase timeline (`SHOW EVENTS`).
    pub summary: String,
    pub phases: String,
}

/// How fast failures are noticed.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// `health.probe_interval`.
    pub probe_interval: &'static str,
    /// `cluster.failure_timeout`.
    pub failure_timeout: &'static str,
    /// `cluster.auto_failover`.
    pub auto_failover: bool,
}

impl Timings {
    /// What the tests use: fast detection.
    pub const QUICK: Timings = Timings { probe_interval: "100ms", failure_timeout: "1s", auto_failover: true };
    /// Meridian's defaults (docs/config.md).
    pub const DEFAULT: Timings = Timings { probe_interval: "500ms", failure_timeout: "2s", auto_failover: true };
    /// Quick, and nothing fails over on its own.
    pub const MANUAL: Timings = Timings { auto_failover: false, ..Timings::QUICK };
}

/// The `[cluster]` section of a one-member group.
fn cluster_section(dir: &std::path::Path, write_hold: &str, timings: Timings) -> anyhow::Result<String> {
    let port = harness::free_port()?;
    Ok(format!(
        "[cluster]\nmember_id = 1\nraft_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nfailure_timeout = \"{}\"\n\
         auto_failover = {}\n\
         write_hold = \"{write_hold}\"\n\n[[cluster.peer]]\nid = 1\nname = \"test\"\nregion = \"local\"\n\
         raft_addr = \"http://127.0.0.1:{port}\"\nclient_addr = \"127.0.0.1:1\"\n",
        dir.join("raft").display(),
        timings.failure_timeout,
        timings.auto_failover
    ))
}

/// A primary and two replicas behind a one-member Meridian cluster node
/// (its Raft directory is kept with the bed), once the node routes writes
/// and table `acked` exists.
pub async fn failover_bed(write_hold: &str) -> anyhow::Result<(TestBed, tempfile::TempDir)> {
    failover_bed_with(write_hold, "local", Timings::QUICK).await
}

/// [`failover_bed`] with the primary in `primary_region` (the node and the
/// replicas are in `local`).
pub async fn failover_bed_in(
    write_hold: &str,
    primary_region: &'static str,
) -> anyhow::Result<(TestBed, tempfile::TempDir)> {
    failover_bed_with(write_hold, primary_region, Timings::QUICK).await
}

/// [`failover_bed_in`] with `timings`.
pub async fn failover_bed_with(
    write_hold: &str,
    primary_region: &'static str,
    timings: Timings,
) -> anyhow::Result<(TestBed, tempfile::TempDir)> {
    let raft_dir = tempfile::tempdir()?;
    let spec = BedSpec {
        primary_region,
        probe_interval: timings.probe_interval,
        cluster: ClusterSpec::default().with_replicas(2),
        routed: true,
        managed: true,
        extra_config: cluster_section(raft_dir.path(), write_hold, timings)?,
        ..BedSpec::default()
    };
    let bed = TestBed::start_with(spec).await?;
    eventually("the node to hold its lease and route writes", || async {
        let c = bed.connect().await?;
        c.batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY, pad text)").await?;
        Ok(true)
    })
    .await?;
    Ok((bed, raft_dir))
}

/// The rows of an admin statement (database `meridian`).
pub async fn admin_rows(bed: &TestBed, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    let mut config = bed.config();
    config.dbname("meridian");
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let mut rows = Vec::new();
    for m in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
        }
    }
    Ok(rows)
}

/// Make shard `s1` synchronous (`ANY 1` of both replicas, RPO target 0).
pub async fn make_sync(bed: &TestBed) -> anyhow::Result<()> {
    // The shard first: Meridian then keeps the names in step (and would
    // clear them on an async shard); setting them here too means commits
    // are synchronous from now on, whatever the control loop's timing.
    admin_rows(bed, "ALTER SHARD s1 SET (durability = 'sync', rpo_target = '0s')").await?;
    let primary = bed.cluster.primary();
    let standbys: Vec<String> = bed.cluster.replicas().iter().map(|r| format!("\"{}\"", r.name())).collect();
    primary.execute(&format!("ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({})'", standbys.join(", "))).await?;
    primary.execute("SELECT pg_reload_conf()").await?;
    Ok(())
}

/// A running write load (see [`LoadRun::start`]).
pub struct LoadRun {
    load: Arc<Load>,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What a stopped load saw.
pub struct LoadResult {
    /// Acknowledged ids in order, with when.
    pub acked: Vec<(i64, Instant)>,
    /// Errors, in order (`Some("40001"): message`, ...).
    pub errors: Vec<String>,
}

impl LoadResult {
    /// The longest gap between two acknowledged writes.
    pub fn outage(&self) -> Duration {
        self.acked.windows(2).map(|w| w[1].1.duration_since(w[0].1)).max().unwrap_or_default()
    }

    /// The acknowledged ids `server` does not have.
    pub async fn missing_on(&self, server: &harness::PgServer) -> anyhow::Result<Vec<i64>> {
        let present: HashSet<i64> = server
            .query("SELECT id FROM acked")
            .await?
            .iter()
            .filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok()))
            .collect();
        Ok(self.acked.iter().map(|(id, _)| *id).filter(|id| !present.contains(id)).collect())
    }
}

impl LoadRun {
    /// Insert 1, 2, 3, ... into `acked` through `config` (autocommit,
    /// extended protocol), until stopped.
    pub fn start(config: tokio_postgres::Config) -> LoadRun {
        let load: Arc<Load> = Arc::default();
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(write_load(config, load.clone(), stop.clone()));
        LoadRun { load, stop, task }
    }

    pub fn acknowledged(&self) -> usize {
        self.load.acked.lock().len()
    }

    pub async fn stop(self) -> anyhow::Result<LoadResult> {
        self.stop.cancel();
        self.task.await?;
        let acked = self.load.acked.lock().clone();
        let errors = self.load.errors.lock().clone();
        Ok(LoadResult { acked, errors })
    }
}

/// Acknowledged ids with when they were acknowledged, and the errors seen.
#[derive(Default)]
struct Load {
    acked: Mutex<Vec<(i64, Instant)>>,
    errors: Mutex<Vec<String>>,
}

/// Insert 1, 2, 3, ... through `config` until `stop`, reconnecting after
/// errors; every acknowledged id is recorded.
async fn write_load(config: tokio_postgres::Config, load: Arc<Load>, stop: tokio_util::sync::CancellationToken) {
    let mut next = 1i64;
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.is_cancelled() {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match tokio::time::timeout(Duration::from_secs(5), config.connect(tokio_postgres::NoTls)).await {
                Ok(Ok((c, conn))) => {
                    tokio::spawn(conn);
                    client = Some(c);
                }
                Ok(Err(e)) => {
                    load.errors.lock().push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Err(_) => {
                    load.errors.lock().push("connect: timed out".into());
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected above");
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
        let insert = c.execute("INSERT INTO acked VALUES ($1)", &params);
        match tokio::time::timeout(Duration::from_secs(15), insert).await {
            Ok(Ok(_)) => load.acked.lock().push((next, Instant::now())),
            Ok(Err(e)) => {
                let code = e.code().map(|c| c.code().to_owned());
                let text = e.as_db_error().map_or_else(|| e.to_string(), |d| d.message().to_owned());
                load.errors.lock().push(format!("{code:?}: {text}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                load.errors.lock().push(format!("insert {next}: no answer in 15 s"));
                client = None;
            }
        }
        next += 1;
    }
}

/// Start the bed with `timings`, kill its primary under writes, and
/// measure.
pub async fn kill_primary_under_writes(timings: Timings) -> anyhow::Result<KillRun> {
    let (bed, _raft_dir) = failover_bed_with("10s", "local", timings).await?;
    let primary = bed.cluster.primary();
    make_sync(&bed).await?;

    let load = LoadRun::start(bed.config());
    tokio::time::sleep(Duration::from_secs(1)).await;
    anyhow::ensure!(load.acknowledged() > 10, "the load runs before the kill");

    let killed_at = Instant::now();
    primary.kill().await?;
    let deadline = killed_at + Duration::from_secs(30);
    let new_primary = loop {
        let rows = admin_rows(&bed, "SHOW SHARDS").await?;
        // Columns: name, epoch, primary, ...
        if let Some(p) = rows.first().and_then(|r| r[2].clone()).filter(|p| p != primary.name()) {
            break p;
        }
        anyhow::ensure!(Instant::now() < deadline, "no new primary within 30 s: {rows:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let promoted_after = killed_at.elapsed();
    let at_switch = load.acknowledged();
    eventually("writes acknowledged by the new primary", || async { Ok(load.acknowledged() > at_switch + 5) }).await?;
    let result = load.stop().await?;
    let server = bed.cluster.server(&new_primary).ok_or_else(|| anyhow::anyhow!("{new_primary} is not ours"))?;
    let lost = result.missing_on(server).await?;
    // Columns: id, at, actor, kind, shard, node, summary, phases.
    let events = admin_rows(&bed, "SHOW EVENTS").await?;
    let report = events.iter().find(|r| r[3].as_deref() == Some("failover"));
    Ok(KillRun {
        old_primary: primary.name().to_owned(),
        new_primary,
        acknowledged: result.acked.len(),
        lost,
        outage: result.outage(),
        promoted_after,
        errors: result.errors,
        summary: report.and_then(|r| r[6].clone()).unwrap_or_default(),
        phases: report.and_then(|r| r[7].clone()).unwrap_or_default(),
    })
}
