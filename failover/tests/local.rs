//! A PostgreSQL server on this host, acted on through `LocalServer`: a
//! crashed primary and a diverged one are rewound and follow the new
//! primary; a frozen server is stopped; broken data directories give clear
//! errors. Real servers from the harness (`full_page_writes = on`, which
//! pg_rewind needs on its source; the harness turns it off for speed).

use std::time::Duration;

use failover::local::{LocalServer, StopMode, StopOutcome};
use failover::postgres::{self, Target, Upstream};
use harness::{ClusterSpec, PgBinaries, PgCluster, PgServer};

const STEP: Duration = Duration::from_secs(30);

fn spec() -> ClusterSpec {
    ClusterSpec::default().with_replicas(1).with_conf("full_page_writes = on")
}

/// The server as a `LocalServer`, logging where the harness logs it. The
/// binaries must be installed: `PgBinaries::find` fails loudly otherwise.
fn local(server: &PgServer) -> LocalServer {
    let binaries = PgBinaries::find().expect("PostgreSQL binaries are required for these tests");
    LocalServer {
        log_file: server.log_file().to_path_buf(),
        ..LocalServer::new(server.name(), server.data_dir(), binaries.bindir())
    }
}

fn target(server: &PgServer) -> Target {
    Target {
        address: server.addr().to_string(),
        user: server.superuser().user.clone(),
        password: Some(server.superuser().password.clone()),
        database: "postgres".into(),
        timeout: Duration::from_secs(10),
    }
}

/// `source` as the upstream to rewind from and stream from. The
/// application name is deliberately wrong: `rejoin` uses the node's name.
fn upstream(source: &PgServer) -> Upstream {
    Upstream {
        address: source.addr().to_string(),
        user: source.superuser().user.clone(),
        password: Some(source.superuser().password.clone()),
        application_name: "not-the-node-name".into(),
    }
}

async fn values(server: &PgServer) -> anyhow::Result<Vec<String>> {
    let rows = server.query("SELECT v FROM t ORDER BY v").await?;
    Ok(rows.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect())
}

/// Wait until `f` holds, at most `secs` seconds.
async fn until<F, Fut>(what: &str, secs: u64, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await.unwrap_or(false) {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `replica` streams from `primary` under its node name.
async fn assert_follows(primary: &PgServer, replica: &PgServer) -> anyhow::Result<()> {
    let r = postgres::receiver(&target(replica)).await?;
    assert!(r.streams_from(&primary.addr().to_string()), "{r:?}");
    let sql = format!(
        "SELECT state FROM pg_stat_replication WHERE application_name = '{}'",
        replica.name().replace('\'', "''")
    );
    until("the new primary to list the rejoined node by name", 20, || async {
        Ok(primary.query_value(&sql).await?.as_deref() == Some("streaming"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_rejoins_as_a_replica_of_the_promoted_one() -> anyhow::Result<()> {
    let cluster = PgCluster::start(spec()).await?;
    let old = cluster.primary();
    let new = &cluster.replicas()[0];
    old.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before')").await?;
    cluster.wait_replicas_caught_up().await?;

    let server = local(old);
    let pid = server.pid().expect("the primary runs");
    assert_eq!(Some(pid), old.pid(), "postmaster.pid names the harness's postmaster");
    let killed = server.kill().await?;
    assert_eq!(killed.pid, Some(pid));
    assert!(killed.children > 0, "{killed:?}");
    assert_eq!(killed.stragglers, 0, "children exit on their own once the postmaster is gone: {killed:?}");
    assert!(!server.is_running() && !old.is_running());
    assert_eq!(server.kill().await?.pid, None, "killing a stopped server is a no-op");

    let promoted = postgres::promote(&target(new)).await?;
    new.execute("INSERT INTO t VALUES ('after')").await?;

    let report = server.rejoin(&upstream(new), &target(old), STEP).await?;
    assert_eq!(report.stopped, StopOutcome::NotRunning);
    assert_eq!(report.timeline, promoted.timeline, "{report:?}");
    assert!(report.total < STEP * 2, "{report:?}");
    let state = postgres::probe(&target(old)).await?;
    assert!(state.in_recovery && state.wal_receiver, "{state:?}");
    assert_follows(new, old).await?;
    until("the rejoined node to have the new row", 20, || async { Ok(values(old).await? == ["after", "before"]) })
        .await?;
    // Its own settings survived the rewind: the harness still reaches it
    // on its own socket and port.
    assert_eq!(old.query_value("SHOW cluster_name").await?.as_deref(), Some(old.name()));
    assert_eq!(old.query_value("SHOW wal_log_hints").await?.as_deref(), Some("on"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_primary_is_stopped_rewound_and_follows() -> anyhow::Result<()> {
    let cluster = PgCluster::start(spec()).await?;
    let old = cluster.primary();
    let new = &cluster.replicas()[0];
    old.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('common')").await?;
    cluster.wait_replicas_caught_up().await?;

    // Split brain: the replica is promoted while the old primary still
    // runs and takes a write the new one never sees.
    postgres::promote(&target(new)).await?;
    old.execute("INSERT INTO t VALUES ('lost on the old primary'); CHECKPOINT").await?;
    new.execute("INSERT INTO t VALUES ('new primary')").await?;
    assert_eq!(values(old).await?, ["common", "lost on the old primary"]);

    let server = local(old);
    let report = server.rejoin(&upstream(new), &target(old), STEP).await?;
    assert_eq!(report.stopped, StopOutcome::Fast, "{report:?}");
    assert!(report.diverged_at.as_deref().is_some_and(|d| d.contains("on timeline 1")), "{report:?}");
    assert_follows(new, old).await?;
    until("the rejoined node to match the new primary", 20, || async {
        Ok(values(old).await? == ["common", "new primary"])
    })
    .await?;
    let auto = std::fs::read_to_string(old.data_dir().join("postgresql.auto.conf"))?;
    assert_eq!(auto.matches("primary_conninfo").count(), 1, "{auto}");
    assert!(auto.contains(&format!("application_name={}", old.name())), "{auto}");
    assert!(old.data_dir().join("standby.signal").is_file());

    // Rejoining again is harmless: stopped cleanly, nothing to rewind.
    let again = server.rejoin(&upstream(new), &target(old), STEP).await?;
    assert_eq!((again.stopped, again.diverged_at), (StopOutcome::Fast, None));
    assert_follows(new, old).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_server_is_stopped_and_starts_again() -> anyhow::Result<()> {
    let cluster = PgCluster::start(ClusterSpec::default()).await?;
    let pg = cluster.primary();
    pg.execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('kept')").await?;
    let server = local(pg);

    pg.pause()?;
    let outcome = server.stop(StopMode::Fast, Duration::from_secs(10)).await?;
    assert_eq!(outcome, StopOutcome::Fast, "woken up, it shuts down cleanly");
    assert!(!server.is_running());
    assert_eq!(server.stop(StopMode::Fast, STEP).await?, StopOutcome::NotRunning);

    let started = server.start(STEP).await?;
    assert!(!started.already_running);
    assert_eq!(server.pid(), Some(started.pid));
    assert_eq!(values(pg).await?, ["kept"]);
    assert!(server.start(STEP).await?.already_running);

    // A crash, then a start that runs crash recovery.
    pg.execute("INSERT INTO t VALUES ('committed before the crash')").await?;
    server.kill().await?;
    server.start(STEP).await?;
    assert_eq!(values(pg).await?, ["committed before the crash", "kept"]);
    assert_eq!(server.stop(StopMode::Immediate, STEP).await?, StopOutcome::Immediate);

    // A frozen server can be killed too: its children, woken, notice.
    server.start(STEP).await?;
    pg.pause()?;
    let killed = server.kill().await?;
    assert!(killed.pid.is_some() && killed.stragglers == 0, "{killed:?}");
    server.start(STEP).await?;
    assert_eq!(values(pg).await?, ["committed before the crash", "kept"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_shutdown_that_hangs_falls_back_to_immediate() -> anyhow::Result<()> {
    let cluster = PgCluster::start(spec()).await?;
    let primary = cluster.primary();
    // A frozen standby never confirms the shutdown checkpoint, so the
    // primary's WAL sender (and its fast shutdown) waits for
    // wal_sender_timeout (60 s).
    cluster.replicas()[0].pause()?;
    let server = local(primary);
    let began = tokio::time::Instant::now();
    let outcome = server.stop(StopMode::Fast, Duration::from_secs(2)).await?;
    assert_eq!(outcome, StopOutcome::Immediate);
    assert!(began.elapsed() < Duration::from_secs(20), "{:?}", began.elapsed());
    assert!(!server.is_running());
    cluster.replicas()[0].resume()?;
    Ok(())
}

#[tokio::test]
async fn broken_setups_fail_clearly() -> anyhow::Result<()> {
    let bin_dir = failover::local::find_bin_dir()?;
    assert!(bin_dir.join("pg_ctl").is_file() && bin_dir.join("pg_rewind").is_file(), "{}", bin_dir.display());

    let missing = LocalServer::new("pg-gone", "/nonexistent/meridian/data", &bin_dir);
    assert_eq!(missing.pid(), None);
    let errors = [
        missing.start(STEP).await.expect_err("no data directory").to_string(),
        missing.stop(StopMode::Fast, STEP).await.expect_err("no data directory").to_string(),
        missing.kill().await.expect_err("no data directory").to_string(),
    ];
    for e in errors {
        assert!(e.contains("pg-gone") && e.contains("/nonexistent/meridian/data"), "{e}");
        assert!(e.contains("does not exist"), "{e}");
    }

    let empty = tempfile::tempdir()?;
    let not_pg = LocalServer::new("pg-empty", empty.path(), &bin_dir);
    let e = not_pg.start(STEP).await.expect_err("no PG_VERSION").to_string();
    assert!(e.contains("pg-empty") && e.contains("PG_VERSION"), "{e}");

    // A real data directory, the wrong binaries, then a failing tool.
    let cluster = PgCluster::start(ClusterSpec::default()).await?;
    let pg = cluster.primary();
    let wrong_bin = LocalServer { bin_dir: empty.path().to_path_buf(), ..local(pg) };
    let e = wrong_bin.stop(StopMode::Fast, STEP).await.expect_err("no pg_ctl").to_string();
    assert!(e.contains("pg_ctl not found"), "{e}");
    let server = local(pg);
    let unreachable = Upstream { address: "127.0.0.1:1".into(), ..upstream(pg) };
    let e = server.rejoin(&unreachable, &target(pg), STEP).await.expect_err("nothing listens on port 1").to_string();
    assert!(e.contains(pg.name()) && e.contains("CHECKPOINT") && e.contains("127.0.0.1:1"), "{e}");
    assert!(server.is_running(), "nothing was done before the source answered");
    // Its own source: reachable for the CHECKPOINT, gone once stopped for
    // the rewind. pg_rewind's complaint is in the message.
    let e = server.rejoin(&upstream(pg), &target(pg), STEP).await.expect_err("the source is down").to_string();
    assert!(e.contains(pg.name()) && e.contains(&pg.data_dir().display().to_string()), "{e}");
    assert!(e.contains("pg_rewind --target-pgdata=") && e.contains("Connection refused"), "{e}");
    assert!(!e.contains(&pg.superuser().password), "no password in messages: {e}");
    // The data directory is untouched and starts again as it was.
    server.start(STEP).await?;
    assert_eq!(pg.query_value("SELECT pg_is_in_recovery()").await?.as_deref(), Some("f"));
    Ok(())
}
