//! The PostgreSQL side of a failover, against real servers: stop the
//! replicas' WAL receivers (a cut-off primary's writes no longer reach
//! them), promote the most advanced one, point the other at it, and make it
//! a synchronous primary.

use std::time::Duration;

use failover::postgres::{self, ServerState, Target, Upstream};
use harness::{ClusterSpec, PgCluster, PgServer};

fn target(server: &PgServer) -> Target {
    Target {
        address: server.addr().to_string(),
        user: server.superuser().user.clone(),
        password: Some(server.superuser().password.clone()),
        database: "postgres".into(),
        timeout: Duration::from_secs(20),
    }
}

fn upstream(primary: &PgServer, replica: &PgServer) -> Upstream {
    Upstream {
        address: primary.addr().to_string(),
        user: primary.superuser().user.clone(),
        password: Some(primary.superuser().password.clone()),
        application_name: replica.name().to_owned(),
    }
}

async fn count(server: &PgServer) -> anyhow::Result<i64> {
    let rows = server.query("SELECT count(*) FROM t").await?;
    Ok(rows[0][0].as_deref().unwrap_or("0").parse()?)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_promote_follow_and_synchronous_standbys() -> anyhow::Result<()> {
    let cluster = PgCluster::start(ClusterSpec::default().with_replicas(2)).await?;
    let primary = cluster.primary();
    let [r1, r2] = cluster.replicas() else { anyhow::bail!("two replicas expected") };
    primary.execute("CREATE TABLE t (id int)").await?;
    primary.execute("INSERT INTO t SELECT generate_series(1, 100)").await?;
    cluster.wait_replicas_caught_up().await?;

    let p = postgres::probe(&target(primary)).await?;
    assert!(!p.in_recovery && p.current_lsn.is_some() && p.receive_lsn.is_none(), "{p:?}");
    let s1 = postgres::probe(&target(r1)).await?;
    assert!(s1.in_recovery && s1.wal_receiver, "{s1:?}");
    assert!(s1.wal_position() >= p.current_lsn, "a caught-up replica has the primary's WAL: {s1:?} {p:?}");

    // Cut both replicas off; the primary goes on writing.
    let stopped1: ServerState = postgres::stop_wal_receiver(&target(r1)).await?;
    let stopped2 = postgres::stop_wal_receiver(&target(r2)).await?;
    assert!(!stopped1.wal_receiver && !stopped2.wal_receiver);
    primary.execute("INSERT INTO t SELECT generate_series(101, 200)").await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = postgres::probe(&target(r1)).await?;
    assert_eq!(later.receive_lsn, stopped1.receive_lsn, "a stopped receiver gets no more WAL");
    assert!(!later.wal_receiver, "the receiver stays stopped");
    assert_eq!(count(r1).await?, 100);

    // Promote the first, point the second at it.
    let promoted = postgres::promote(&target(r1)).await?;
    assert!(!promoted.in_recovery);
    assert_eq!(promoted.timeline, s1.timeline + 1, "a promotion starts a new timeline: {promoted:?}");
    r1.execute("INSERT INTO t SELECT generate_series(1001, 1010)").await?;
    postgres::follow(&target(r2), &upstream(r1, r2)).await?;
    until("the second replica to stream from the new primary", 30, || async {
        Ok(postgres::probe(&target(r2)).await?.wal_receiver && count(r2).await? == 110)
    })
    .await?;

    // The new primary acknowledges commits only once r2 has them.
    postgres::set_synchronous_standbys(&target(r1), 1, &[r2.name().to_owned()]).await?;
    let r2_name = r2.name().to_owned();
    until("r2 to be a quorum standby", 30, || {
        let r2_name = r2_name.clone();
        async move {
            let rows = r1
                .query(&format!("SELECT sync_state FROM pg_stat_replication WHERE application_name = '{r2_name}'"))
                .await?;
            Ok(rows.first().and_then(|r| r[0].as_deref()) == Some("quorum"))
        }
    })
    .await?;
    r1.execute("INSERT INTO t VALUES (2000)").await?;
    assert_eq!(count(r2).await?, 111, "a synchronous commit is on the standby when acknowledged");
    let shown = r1.query("SHOW synchronous_standby_names").await?;
    assert_eq!(shown[0][0].as_deref(), Some(format!("ANY 1 (\"{}\")", r2.name()).as_str()));

    // The old primary still believes it is one, and it is not fed by anyone.
    assert!(!postgres::probe(&target(primary)).await?.in_recovery);
    assert_eq!(count(primary).await?, 200);
    Ok(())
}

#[tokio::test]
async fn steps_on_the_wrong_server_fail_clearly() -> anyhow::Result<()> {
    let cluster = PgCluster::start(ClusterSpec::default()).await?;
    let e = postgres::stop_wal_receiver(&target(cluster.primary())).await.expect_err("a primary has no receiver");
    assert!(e.to_string().contains("not a replica"), "{e}");
    let unreachable =
        Target { address: "127.0.0.1:1".into(), timeout: Duration::from_secs(2), ..target(cluster.primary()) };
    let e = postgres::probe(&unreachable).await.expect_err("nothing listens on port 1");
    assert!(e.to_string().contains("127.0.0.1:1"), "{e}");
    Ok(())
}
