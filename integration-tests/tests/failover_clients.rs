//! What clients see when a shard's primary dies (SIGKILL) under them, on a
//! cluster node with automatic failover (`integration_tests::failover`):
//!
//! - a transaction open on the dead primary fails with `40001`; the client
//!   is then in an aborted transaction (`25P02`) until its `ROLLBACK`,
//!   which Meridian answers; its connection stays open, and its next
//!   transaction commits on the new primary;
//! - a read in flight fails with `40001`;
//! - a commit in flight (`COMMIT`, an autocommit `INSERT` as a simple query
//!   and with the extended protocol) is reported as `08007`, never as a
//!   success; the client is then idle and carries on.
//!
//! The module doc of `proxy`'s `session/lost.rs` has the whole rule.

use std::time::Duration;

use integration_tests::failover::{admin_rows, failover_bed, make_sync};
use integration_tests::{TestBed, eventually, patiently, sqlstate};
use tokio::time::Instant;

/// Wait (30 s at most) until `SHOW SHARDS` names a primary other than `old`.
async fn new_primary(bed: &TestBed, old: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = admin_rows(bed, "SHOW SHARDS").await?;
        // Columns: name, epoch, primary, ...
        if let Some(p) = rows.first().and_then(|r| r[2].clone()).filter(|p| p != old) {
            return Ok(p);
        }
        anyhow::ensure!(Instant::now() < deadline, "no new primary within 30 s: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Kill the primary like a machine that dies: the postmaster frozen
/// first, then its children killed, then the postmaster itself. Killed the
/// other way round (`PgServer::kill` signals the postmaster first), a
/// backend idle in a transaction may see its postmaster gone before its
/// own SIGKILL and end its connection with a FATAL of its own
/// ("terminating connection due to unexpected postmaster exit", `57P01`),
/// which Meridian relays as PostgreSQL sent it and which ends that
/// client's session: not the case tested here.
async fn crash_primary(bed: &TestBed) -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let primary = bed.cluster.primary();
    let pid = primary.pid().ok_or_else(|| anyhow::anyhow!("the primary is not running"))? as i32;
    kill(Pid::from_raw(pid), Signal::SIGSTOP)?;
    for child in children(pid) {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
    primary.kill().await?;
    Ok(())
}

/// The processes whose parent is `pid`.
fn children(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: the comm may hold spaces, so read after ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Wait until `n` sessions on the primary match `condition` (a
/// `pg_stat_activity` predicate).
async fn sessions_on_primary(bed: &TestBed, condition: &str, n: usize) -> anyhow::Result<()> {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE {condition}");
    eventually(&format!("{n} sessions with {condition}"), || async {
        Ok(bed.cluster.primary().query_value(&sql).await?.as_deref() == Some(n.to_string().as_str()))
    })
    .await
}

/// The SQLSTATE of a failed request, or a description of its success.
fn code<T: std::fmt::Debug>(r: &Result<T, tokio_postgres::Error>) -> String {
    match r {
        Ok(v) => format!("success: {v:?}"),
        Err(e) => sqlstate(e).map_or_else(|| format!("no SQLSTATE: {e}"), str::to_owned),
    }
}

async fn ids(bed: &TestBed, node: &str) -> anyhow::Result<Vec<String>> {
    let server = bed.cluster.server(node).ok_or_else(|| anyhow::anyhow!("{node} is not ours"))?;
    let rows = server.query("SELECT id FROM acked ORDER BY id").await?;
    Ok(rows.into_iter().filter_map(|r| r[0].clone()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_the_dead_primary_is_retryable_and_the_client_stays() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    let client = bed.connect().await?;
    client.batch_execute("BEGIN").await?;
    client.batch_execute("INSERT INTO acked VALUES (1, 'never committed')").await?;

    // A read in flight on the primary (replicas would serve it otherwise).
    let reader = bed.connect().await?;
    reader.batch_execute("SET meridian.read_consistency = primary").await?;
    let read = tokio::spawn(async move {
        let r = reader.simple_query("SELECT pg_sleep(30)").await;
        (r, reader)
    });
    sessions_on_primary(&bed, "query = 'SELECT pg_sleep(30)' AND state = 'active'", 1).await?;

    let old = bed.cluster.primary().name().to_owned();
    let killed = Instant::now();
    crash_primary(&bed).await?;

    let (r, reader) = patiently("the read in flight", read).await??;
    assert_eq!(code(&r), "40001");
    assert!(!reader.is_closed(), "the reader's connection was closed");

    // The transaction's next statement finds its server gone.
    let e = client.batch_execute("INSERT INTO acked VALUES (2, 'never run')").await;
    assert_eq!(code(&e), "40001");
    let message = e.expect_err("failed").as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(message.contains("retry"), "{message}");
    // Then an aborted transaction, as PostgreSQL's: until ROLLBACK.
    assert_eq!(code(&client.simple_query("SELECT 1").await), "25P02");
    let prepared = client.prepare("SELECT $1::int8").await;
    assert_eq!(code(&prepared), "25P02");
    client.batch_execute("ROLLBACK").await?;
    eprintln!("the transaction was reported lost and rolled back {:?} after the kill", killed.elapsed());

    let new = new_primary(&bed, &old).await?;
    eprintln!("{new} is the new primary {:?} after the kill", killed.elapsed());
    let mut client = client;
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO acked VALUES (3, 'after the failover')", &[]).await?;
    tx.commit().await?;
    assert_eq!(reader.query_one("SELECT 7::int8", &[]).await?.get::<_, i64>(0), 7);
    assert!(!client.is_closed(), "the client's connection was closed");
    assert_eq!(ids(&bed, &new).await?, ["3"], "the lost transaction must not be there");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_is_reported_unknown_never_success() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    // Synchronous replication with no standby answering: every commit
    // that wrote waits on the primary until it dies. The shard is made
    // sync through Meridian, not only on the server: on an async shard the
    // control loop clears `synchronous_standby_names` within 5 s (CI once
    // caught it doing so here, and no commit waited).
    make_sync(&bed).await?;
    let primary = bed.cluster.primary();
    for r in bed.cluster.replicas() {
        r.execute("ALTER SYSTEM SET primary_conninfo = ''").await?;
        r.execute("SELECT pg_reload_conf()").await?;
    }
    eventually("the WAL receivers to stop", || async {
        Ok(primary.query_value("SELECT count(*) FROM pg_stat_replication").await?.as_deref() == Some("0"))
    })
    .await?;

    // COMMIT of an explicit transaction.
    let committer = bed.connect().await?;
    committer.batch_execute("BEGIN").await?;
    committer.batch_execute("INSERT INTO acked VALUES (10, 'explicit')").await?;
    let commit = tokio::spawn(async move {
        let r = committer.batch_execute("COMMIT").await;
        (r, committer)
    });
    // An autocommit INSERT as a simple query.
    let simple = bed.connect().await?;
    let simple_insert = tokio::spawn(async move {
        let r = simple.batch_execute("INSERT INTO acked VALUES (20, 'simple')").await;
        (r, simple)
    });
    // And one with the extended protocol (Parse/Describe/Sync, then
    // Bind/Execute/Sync: the commit waits at the second Sync).
    let extended = bed.connect().await?;
    let extended_insert = tokio::spawn(async move {
        let r = extended.execute("INSERT INTO acked VALUES ($1, 'extended')", &[&30i64]).await;
        (r, extended)
    });
    sessions_on_primary(&bed, "wait_event = 'SyncRep'", 3).await?;

    let old = primary.name().to_owned();
    crash_primary(&bed).await?;
    let (r, committer) = patiently("the COMMIT in flight", commit).await??;
    assert_eq!(code(&r), "08007");
    let (r, simple) = patiently("the simple INSERT in flight", simple_insert).await??;
    assert_eq!(code(&r), "08007");
    let (r, extended) = patiently("the extended INSERT in flight", extended_insert).await??;
    assert_eq!(code(&r), "08007");

    // Each client is idle, its connection open, and carries on once the
    // failover has a new primary.
    let new = new_primary(&bed, &old).await?;
    committer.batch_execute("INSERT INTO acked VALUES (11, 'after')").await?;
    simple.batch_execute("INSERT INTO acked VALUES (21, 'after')").await?;
    extended.execute("INSERT INTO acked VALUES ($1, 'after')", &[&31i64]).await?;
    let mut committer = committer;
    let tx = committer.transaction().await?;
    tx.execute("INSERT INTO acked VALUES (12, 'after')", &[]).await?;
    tx.commit().await?;
    for c in [&committer, &simple, &extended] {
        assert!(!c.is_closed(), "a client's connection was closed");
    }
    // The commits in flight never reached a standby: gone with the old
    // primary (which is why they could not be reported as committed).
    assert_eq!(ids(&bed, &new).await?, ["11", "12", "21", "31"]);
    Ok(())
}

/// A write whose primary cannot be reached, on a node where nothing fails
/// over (`auto_failover = false`): it waits `write_hold`, is refused with
/// `40001` (nothing was sent), and the session carries on; inside a held
/// `BEGIN` the transaction is aborted until `ROLLBACK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_primary_is_gone_is_refused_and_the_session_stays() -> anyhow::Result<()> {
    use integration_tests::failover::{Timings, failover_bed_with};
    let (bed, _raft) = failover_bed_with("1s", "local", Timings::MANUAL).await?;
    let c = bed.connect().await?;
    c.batch_execute("INSERT INTO acked VALUES (1)").await?;
    // Reads go to a replica once the probes have seen one replay that
    // insert (read-your-writes); until then they would go to the primary,
    // which is about to die (CI once ran the read below that early).
    eventually("a read served by a replica", || async {
        let rows = c.simple_query("SELECT pg_is_in_recovery()").await?;
        Ok(rows.iter().any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(r) if r.get(0) == Some("t"))))
    })
    .await?;
    bed.cluster.primary().kill().await?;

    let started = Instant::now();
    let e = c.batch_execute("INSERT INTO acked VALUES (2)").await.expect_err("no primary");
    assert_eq!(sqlstate(&e), Some("40001"), "{e}");
    eprintln!("refused after {:?}: {e}", started.elapsed());
    assert!(!c.is_closed(), "the session stays");
    let e = c.execute("INSERT INTO acked VALUES ($1)", &[&3i64]).await.expect_err("no primary");
    assert_eq!(sqlstate(&e), Some("40001"), "extended protocol: {e}");
    // Reads still work (the replicas are up).
    c.simple_query("SELECT 1").await?;
    // In a transaction: BEGIN is held by Meridian, the write fails, the
    // transaction is aborted until ROLLBACK.
    c.batch_execute("BEGIN").await?;
    let e = c.batch_execute("INSERT INTO acked VALUES (4)").await.expect_err("no primary");
    assert_eq!(sqlstate(&e), Some("40001"), "{e}");
    let e = c.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK").await?;
    c.simple_query("SELECT 1").await?;
    Ok(())
}
