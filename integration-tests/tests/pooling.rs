//! Pool behaviour end to end: many clients on few server connections,
//! checkout timeouts, server connections killed or restarted under the
//! pool, and graceful shutdown.

use std::time::Duration;

use anyhow::Context;
use integration_tests::{APP_USER, BedSpec, TestBed, eventually, patiently, sqlstate};
use tokio_postgres::NoTls;

async fn bed_with(extra: &str) -> anyhow::Result<TestBed> {
    TestBed::start_with(BedSpec { extra_config: extra.to_owned(), ..BedSpec::default() }).await
}

/// Server connections of the app user that PostgreSQL has right now.
async fn app_backends(bed: &TestBed) -> anyhow::Result<i64> {
    let n = bed
        .direct_value(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{APP_USER}'"))
        .await?
        .context("no count")?;
    Ok(n.parse()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_connection_serves_many_clients() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 1\ncheckout_timeout = \"60s\"\n").await?;
    let setup = bed.connect().await?;
    setup
        .batch_execute(
            "CREATE TABLE many_t (client int, n int); CREATE TABLE counter (v int); INSERT INTO counter VALUES (0)",
        )
        .await?;
    let mut tasks = Vec::new();
    for c in 0..10i32 {
        let config = bed.config();
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = config.connect(NoTls).await?;
            tokio::spawn(conn);
            for n in 0..50i32 {
                let tx = client.transaction().await?;
                tx.execute("INSERT INTO many_t VALUES ($1, $2)", &[&c, &n]).await?;
                tx.execute("UPDATE counter SET v = v + 1", &[]).await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        }));
    }
    let watcher = async {
        let mut most = 0;
        for _ in 0..20 {
            most = most.max(app_backends(&bed).await?);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::Ok(most)
    };
    let most = watcher.await?;
    for t in tasks {
        patiently("client task", t).await???;
    }
    assert!(most <= 1, "pool size 1 but PostgreSQL saw {most} app connections");
    let row = setup
        .query_one("SELECT count(*), count(DISTINCT (client, n)), (SELECT v FROM counter) FROM many_t", &[])
        .await?;
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1), row.get::<_, i32>(2)), (500, 500, 500));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_timeout_is_53300() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 1\ncheckout_timeout = \"500ms\"\n").await?;
    let waiter = bed.connect().await?;
    let mut holder = bed.connect().await?;
    let tx = holder.transaction().await?;
    tx.execute("SELECT 1", &[]).await?;
    // A logged-in client that needs a server connection.
    let e = waiter.query_one("SELECT 1", &[]).await.err().context("query ran while the only connection was held")?;
    assert_eq!(sqlstate(&e), Some("53300"), "{e}");
    // A client logging in meanwhile is let in (login does not wait for
    // another client's transaction), and its first statement waits too.
    let late = bed.connect().await?;
    let e = late.query_one("SELECT 1", &[]).await.err().context("query ran while the only connection was held")?;
    assert_eq!(sqlstate(&e), Some("53300"), "{e}");
    // The holder is unaffected, and once it is done others are served.
    tx.execute("SELECT 2", &[]).await?;
    tx.commit().await?;
    let fresh = bed.connect().await?;
    assert_eq!(fresh.query_one("SELECT 3::int8", &[]).await?.get::<_, i64>(0), 3);
    assert_eq!(holder.query_one("SELECT 4::int8", &[]).await?.get::<_, i64>(0), 4);
    Ok(())
}

/// A server connection terminated by PostgreSQL while its client is in a
/// transaction: that client gets an error, everyone else carries on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connection_killed_under_a_client() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 2\n").await?;
    let bystander = bed.connect().await?;
    let mut victim = bed.connect().await?;
    let tx = victim.transaction().await?;
    let pid: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    bed.cluster.primary().execute(&format!("SELECT pg_terminate_backend({pid})")).await?;
    let e = patiently("the victim's next statement", tx.query_one("SELECT 1", &[])).await?;
    let e = e.err().context("a statement ran on a terminated server connection")?;
    if let Some(code) = sqlstate(&e) {
        assert!(["57P01", "08006", "08003"].contains(&code), "{e}");
    }
    drop(tx);
    // The victim's own session is over or usable, but never wedged.
    let _ = patiently("the victim's connection", victim.simple_query("SELECT 1")).await?;
    // Everyone else is served.
    for i in 0..10i64 {
        assert_eq!(bystander.query_one("SELECT $1::int8", &[&i]).await?.get::<_, i64>(0), i);
    }
    for _ in 0..3 {
        let c = bed.connect().await?;
        c.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
    }
    Ok(())
}

/// Idle server connections terminated by PostgreSQL are noticed and
/// replaced: the next clients do not get them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_killed_by_postgres_are_replaced() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 3\n").await?;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(bed.connect().await?);
    }
    {
        // Open three server connections and leave them idle in the pool.
        let mut txs = Vec::new();
        for c in &mut clients {
            let tx = c.transaction().await?;
            tx.query_one("SELECT 1", &[]).await?;
            txs.push(tx);
        }
        for tx in txs {
            tx.commit().await?;
        }
    }
    assert_eq!(app_backends(&bed).await?, 3);
    bed.cluster
        .primary()
        .execute(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{APP_USER}' AND pid <> pg_backend_pid()"
        ))
        .await?;
    eventually("terminated backends gone", || async { Ok(app_backends(&bed).await? == 0) }).await?;
    // As after any real restart, the dead connections sit in the pool a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (i, c) in clients.iter().enumerate() {
        for j in 0..5i64 {
            let got = c.query_one("SELECT $1::int8", &[&j]).await;
            let got = got.with_context(|| format!("client {i}, query {j}: got a dead server connection"))?;
            assert_eq!(got.get::<_, i64>(0), j);
        }
    }
    let fresh = bed.connect().await?;
    fresh.batch_execute("SELECT 1").await?;
    Ok(())
}

/// PostgreSQL restarts under the pool: clients get an error while it is
/// down, and are served again once it is back, over new connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_restart() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 2\nconnect_timeout = \"2s\"\n").await?;
    let client = bed.connect().await?;
    client.batch_execute("CREATE TABLE restart_t (id int); INSERT INTO restart_t VALUES (1)").await?;
    bed.cluster.primary().stop().await?;
    // A client is refused at login or at its first statement.
    let down = async {
        let (c, conn) = bed.config().connect(NoTls).await?;
        tokio::spawn(conn);
        c.query_one("SELECT 1", &[]).await?;
        anyhow::Ok(())
    };
    let e =
        patiently("a client while PostgreSQL is down", down).await?.err().context("served while PostgreSQL is down")?;
    let e = e.downcast_ref::<tokio_postgres::Error>().with_context(|| format!("not a driver error: {e}"))?;
    assert!(e.as_db_error().is_some() || e.is_closed(), "expected an error from the node, got {e}");
    bed.cluster.primary().start().await?;
    eventually("a client served after the restart", || async {
        match bed.config().connect(NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                Ok(c.query_one("SELECT count(*) FROM restart_t", &[]).await.is_ok())
            }
            Err(_) => Ok(false),
        }
    })
    .await?;
    // The client from before is served too (possibly after one error).
    let mut served = false;
    for _ in 0..3 {
        if let Ok(row) = client.query_one("SELECT count(*) FROM restart_t", &[]).await {
            assert_eq!(row.get::<_, i64>(0), 1);
            served = true;
            break;
        }
    }
    assert!(served || client.is_closed(), "an old client is neither served nor told it is disconnected");
    Ok(())
}

/// `shutdown()`: idle clients get 57P01 at once; a client in a transaction
/// may finish it (COMMIT works) and is then disconnected; no new logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown() -> anyhow::Result<()> {
    let mut bed = bed_with("[pool]\nsize = 3\n[shutdown]\ngrace = \"60s\"\n").await?;
    let setup = bed.connect().await?;
    setup.batch_execute("CREATE TABLE shutdown_t (id int)").await?;
    drop(setup);
    let mut idle = bed.connect_pumped(&bed.config()).await?;
    let (busy, conn) = bed.config().connect(NoTls).await?;
    let busy_conn = tokio::spawn(conn);
    busy.batch_execute("BEGIN; INSERT INTO shutdown_t VALUES (1)").await?;
    let config = bed.config();

    let clients = async {
        // The idle client is told the node is going away.
        let ended = patiently("the idle client to be disconnected", &mut idle.ended).await??;
        let e = ended.err().context("idle client's connection ended without an error")?;
        assert_eq!(sqlstate(&e), Some("57P01"), "{e}");
        // New clients are not admitted.
        assert!(config.connect(NoTls).await.is_err(), "a client logged in during shutdown");
        // The busy client finishes its transaction.
        busy.execute("INSERT INTO shutdown_t VALUES ($1)", &[&2i32]).await?;
        busy.batch_execute("COMMIT").await?;
        // ... and is then disconnected.
        let after = patiently("the busy client's next statement", busy.simple_query("SELECT 1")).await?;
        assert!(after.is_err(), "a client was served after its transaction during shutdown");
        let _ = patiently("the busy client's connection to end", busy_conn).await?;
        anyhow::Ok(())
    };
    let (_, checked) = tokio::join!(
        async {
            // Let the clients' future start waiting first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            bed.shutdown().await;
        },
        clients
    );
    checked?;
    let n = bed.direct_value("SELECT count(*) FROM shutdown_t").await?;
    assert_eq!(n.as_deref(), Some("2"), "the transaction finished during shutdown was lost");
    Ok(())
}

/// Clients that hold a server connection between transactions (session
/// pooling, or pinned by LISTEN) are idle too: shutdown must end them with
/// 57P01 without waiting for the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_idle_session_and_pinned_clients() -> anyhow::Result<()> {
    let (bed, session_config) = TestBed::with_session_user("[pool]\nsize = 3\n[shutdown]\ngrace = \"300s\"\n").await?;
    let mut session = bed.connect_pumped(&session_config).await?;
    session.client.batch_execute("SELECT 1").await?;
    let mut pinned = bed.connect_pumped(&bed.config()).await?;
    pinned.client.batch_execute("LISTEN shutdown_channel").await?;
    bed.node.shutdown();
    let (a, b) = tokio::join!(
        ended_with_57p01("session-mode client", &mut session.ended),
        ended_with_57p01("LISTEN-pinned client", &mut pinned.ended)
    );
    let outcome: Vec<String> = a.into_iter().chain(b).collect();
    // Do not wait for the grace period in the test's drop.
    bed.node.kill();
    assert!(outcome.is_empty(), "{outcome:?}");
    Ok(())
}

/// `None` if the connection ends with 57P01 within 30 s, else what happened.
async fn ended_with_57p01(
    what: &str,
    ended: &mut tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
) -> Option<String> {
    match tokio::time::timeout(Duration::from_secs(30), ended).await {
        Ok(Ok(Err(e))) if sqlstate(&e) == Some("57P01") => None,
        Ok(Ok(Err(e))) => Some(format!("{what} ended with {e}")),
        Ok(Ok(Ok(()))) => Some(format!("{what}: connection ended without an error")),
        Ok(Err(e)) => Some(format!("{what}: {e}")),
        Err(_) => Some(format!("{what} still connected 30 s after shutdown (grace is 300 s)")),
    }
}

/// `DROP DATABASE` through Meridian succeeds although Meridian itself holds
/// idle pooled connections to that database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_database_is_not_blocked_by_idle_pooled_connections() -> anyhow::Result<()> {
    let bed = bed_with("[pool]\nsize = 4\n").await?;
    let admin = bed.connect().await?;
    admin.batch_execute("CREATE DATABASE dropme").await?;
    let mut config = bed.config();
    config.dbname("dropme");
    let (user, conn) = config.connect(NoTls).await?;
    let driver = tokio::spawn(conn);
    user.batch_execute("CREATE TABLE t (a int); INSERT INTO t VALUES (1)").await?;
    drop(user);
    let _ = driver.await;
    // Meridian keeps the server connection to "dropme" idle in its pool.
    let n = bed.direct_value("SELECT count(*) FROM pg_stat_activity WHERE datname = 'dropme'").await?;
    assert_eq!(n.as_deref(), Some("1"), "test premise: an idle pooled connection to dropme");
    admin.batch_execute("DROP DATABASE dropme").await?;
    Ok(())
}
