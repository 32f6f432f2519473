//! Operations a DBA runs from the admin console, on a real primary and two
//! synchronous replicas behind a Meridian cluster node that manages them
//! (`[[managed]]`): a planned switchover under autocommit writes (no client
//! error), a manual failover to a named replica, the refusals, `REJOIN
//! NODE` of a former primary, and the drills with their reports.

use integration_tests::failover::{LoadRun, admin_rows, failover_bed, failover_bed_in, make_sync};
use integration_tests::{TestBed, eventually};

/// `SHOW SHARDS`' primary of `s1` (columns: name, epoch, primary, ...).
async fn primary_of_s1(bed: &TestBed) -> anyhow::Result<String> {
    let rows = admin_rows(bed, "SHOW SHARDS").await?;
    Ok(rows.first().and_then(|r| r[2].clone()).unwrap_or_default())
}

/// The SQLSTATE an admin statement fails with.
async fn admin_error(bed: &TestBed, sql: &str) -> String {
    match admin_rows(bed, sql).await {
        Ok(rows) => panic!("{sql}: expected an error, got {rows:?}"),
        Err(e) => e
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .map_or_else(|| format!("no SQLSTATE: {e:#}"), |c| c.code().to_owned()),
    }
}

/// Whether `name` is in recovery and streaming (a replica following).
async fn is_streaming_replica(bed: &TestBed, name: &str) -> anyhow::Result<bool> {
    let server = bed.cluster.server(name).ok_or_else(|| anyhow::anyhow!("no server {name}"))?;
    let rows = server
        .query("SELECT pg_is_in_recovery()::text, (SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming')::text")
        .await?;
    Ok(rows.first().is_some_and(|r| r[0].as_deref() == Some("true") && r[1].as_deref() == Some("1")))
}

/// Column `i` of the first row (positions as docs/admin-sql.md lists them).
fn col(rows: &[Vec<Option<String>>], i: usize) -> Option<String> {
    rows.first().and_then(|r| r.get(i).cloned().flatten())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_under_autocommit_writes_shows_no_errors_and_loses_nothing() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    make_sync(&bed).await?;
    let old = primary_of_s1(&bed).await?;
    let load = LoadRun::start(bed.config());
    eventually("the load runs", || async { Ok(load.acknowledged() > 20) }).await?;

    let report = admin_rows(&bed, "SWITCHOVER SHARD s1").await?;
    eprintln!("switchover: {report:?}");
    let at_switch = load.acknowledged();
    eventually("writes on the new primary", || async { Ok(load.acknowledged() > at_switch + 20) }).await?;
    let result = load.stop().await?;

    let new = primary_of_s1(&bed).await?;
    assert_ne!(new, old, "the primary changed");
    assert!(result.errors.is_empty(), "autocommit clients saw no error during a switchover: {:?}", result.errors);
    let server = bed.cluster.server(&new).expect("the new primary is one of ours");
    let missing = result.missing_on(server).await?;
    assert!(missing.is_empty(), "acknowledged writes missing on {new}: {missing:?}");
    eprintln!("switchover {old} → {new}: {} writes, longest pause {:?}, 0 errors", result.acked.len(), result.outage());
    // The old primary is managed by the node: it follows the new one.
    eventually("the old primary streams from the new one", || async { is_streaming_replica(&bed, &old).await }).await?;
    let failovers = admin_rows(&bed, "SHOW FAILOVERS").await?;
    eprintln!("SHOW FAILOVERS: {failovers:?}");
    let row = failovers.first().expect("a report");
    assert!(row.iter().any(|v| v.as_deref() == Some("switchover")), "{row:?}");
    assert!(row.iter().any(|v| v.as_deref() == Some("completed")), "{row:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_to_a_named_replica_then_rejoin_and_refusals() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    make_sync(&bed).await?;
    let old = primary_of_s1(&bed).await?;
    let target = bed.cluster.replicas()[1].name().to_owned();

    assert_eq!(admin_error(&bed, "SWITCHOVER SHARD nosuch").await, "42704");
    assert_eq!(admin_error(&bed, &format!("FAILOVER SHARD s1 TO \"{old}\"")).await, "55000", "the primary itself");
    assert_eq!(admin_error(&bed, "REJOIN NODE nosuch").await, "42704");
    assert_eq!(admin_error(&bed, &format!("REJOIN NODE \"{target}\"")).await, "55000", "not fenced");

    let c = bed.connect().await?;
    c.batch_execute("INSERT INTO acked VALUES (1)").await?;
    let report = admin_rows(&bed, &format!("FAILOVER SHARD s1 TO \"{target}\"")).await?;
    eprintln!("failover: {report:?}");
    assert_eq!(primary_of_s1(&bed).await?, target);
    // Writes go to the new primary; the old one is fenced and read-only.
    eventually("a write through Meridian after the failover", || async {
        let c = bed.connect().await?;
        c.batch_execute("INSERT INTO acked VALUES (2)").await?;
        Ok(true)
    })
    .await?;
    let on_target = bed.cluster.server(&target).unwrap().query("SELECT count(*)::text FROM acked").await?;
    assert_eq!(on_target[0][0].as_deref(), Some("2"), "both rows on the new primary");
    let nodes = admin_rows(&bed, "SHOW NODES").await?;
    eprintln!("SHOW NODES after the failover: {nodes:?}");

    assert_eq!(admin_error(&bed, &format!("SWITCHOVER SHARD s1 TO \"{old}\"")).await, "55000", "a fenced node");
    let rejoined = admin_rows(&bed, &format!("REJOIN NODE \"{old}\"")).await?;
    eprintln!("rejoin: {rejoined:?}");
    assert!(is_streaming_replica(&bed, &old).await?, "{old} streams from {target}");
    let on_old = bed.cluster.server(&old).unwrap();
    eventually("the rejoined node has the new primary's rows", || async {
        Ok(on_old.query("SELECT count(*)::text FROM acked").await?[0][0].as_deref() == Some("2"))
    })
    .await?;
    // And it can take over again: a switchover back to it.
    admin_rows(&bed, &format!("SWITCHOVER SHARD s1 TO \"{old}\"")).await?;
    assert_eq!(primary_of_s1(&bed).await?, old);
    let failovers = admin_rows(&bed, "SHOW FAILOVERS").await?;
    assert!(failovers.len() >= 2, "{failovers:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drills_report_their_outage_and_loss_against_the_targets() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    make_sync(&bed).await?;
    let old = primary_of_s1(&bed).await?;

    let switchover = admin_rows(&bed, "DRILL SWITCHOVER SHARD s1").await?;
    eprintln!("drill switchover: {switchover:?}");
    let after_switch = primary_of_s1(&bed).await?;
    assert_ne!(after_switch, old);

    let failover = admin_rows(&bed, "DRILL FAILOVER SHARD s1").await?;
    eprintln!("drill failover: {failover:?}");
    let after_kill = primary_of_s1(&bed).await?;
    assert_ne!(after_kill, after_switch, "the killed primary was replaced");
    eventually("the killed primary rejoined", || async { is_streaming_replica(&bed, &after_switch).await }).await?;

    let drills = admin_rows(&bed, "SHOW DRILLS").await?;
    eprintln!("SHOW DRILLS: {drills:?}");
    assert_eq!(drills.len(), 2, "{drills:?}");
    for row in &drills {
        assert!(row.iter().any(|v| v.as_deref() == Some("completed")), "{row:?}");
        assert!(row.iter().any(|v| v.as_deref() == Some("t")), "passed against RTO 10 s / RPO 0: {row:?}");
    }
    let id = col(&drills, 0).expect("an id");
    let detail = admin_rows(&bed, &format!("SHOW DRILL {id}")).await?;
    eprintln!("SHOW DRILL {id}: {detail:?}");
    assert!(detail.len() > 5, "fields and phases: {detail:?}");
    // Nothing to drill on a shard that does not exist.
    assert_eq!(admin_error(&bed, "DRILL FAILOVER SHARD nosuch").await, "42704");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outage_drill_fails_the_region_over_and_brings_it_back() -> anyhow::Result<()> {
    // The primary is in region east; the node and both replicas in local.
    let (bed, _raft) = failover_bed_in("10s", "east").await?;
    make_sync(&bed).await?;
    let old = primary_of_s1(&bed).await?;
    // Cutting off the node's own region is refused.
    assert_eq!(admin_error(&bed, "DRILL REGION 'local' OUTAGE").await, "55000");
    assert_eq!(admin_error(&bed, "DRILL REGION 'mars' OUTAGE").await, "42704");

    let report = admin_rows(&bed, "DRILL REGION 'east' OUTAGE").await?;
    eprintln!("drill region outage: {report:?}");
    let new = primary_of_s1(&bed).await?;
    assert_ne!(new, old, "a replica outside the region took over");
    let row = report.first().expect("a report row");
    assert!(row.iter().any(|v| v.as_deref() == Some("completed")), "{row:?}");
    assert!(row.iter().any(|v| v.as_deref() == Some("t")), "passed: {row:?}");
    // The old primary kept running behind the cut, got no writes, and is
    // back as a replica of the new primary.
    eventually("the old primary streams from the new one", || async { is_streaming_replica(&bed, &old).await }).await?;
    let c = bed.connect().await?;
    c.batch_execute("INSERT INTO acked VALUES (424242)").await?;
    let events = admin_rows(&bed, "SHOW EVENTS").await?;
    assert!(
        events.iter().any(|r| r.iter().any(|v| v.as_deref().is_some_and(|v| v.contains("region east is back")))),
        "{events:?}"
    );
    Ok(())
}
