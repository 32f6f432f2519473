//! Automatic failover on a real cluster: a Meridian cluster node (a
//! one-member Raft group, so its own verdict is the majority) in front of a
//! primary and two streaming replicas. The primary is killed with SIGKILL
//! under a continuous write load through Meridian; the leader fences the
//! shard, stops the replicas' WAL receivers, waits out the write lease,
//! promotes the most advanced replica and re-points the other.

use std::sync::Arc;
use std::time::Duration;

use harness::ClusterSpec;
use integration_tests::{BedSpec, TestBed, eventually};
use parking_lot::Mutex;
use tokio::time::Instant;

fn cluster_section(dir: &std::path::Path) -> anyhow::Result<String> {
    let port = harness::free_port()?;
    Ok(format!(
        "[cluster]\nmember_id = 1\nraft_listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\nfailure_timeout = \"1s\"\n\
         write_hold = \"10s\"\n\n[[cluster.peer]]\nid = 1\nname = \"test\"\nregion = \"local\"\n\
         raft_addr = \"http://127.0.0.1:{port}\"\nclient_addr = \"127.0.0.1:1\"\n",
        dir.join("raft").display()
    ))
}

async fn admin_rows(bed: &TestBed, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_primary_under_writes_and_lose_nothing() -> anyhow::Result<()> {
    let raft_dir = tempfile::tempdir()?;
    let spec = BedSpec {
        cluster: ClusterSpec::default().with_replicas(2),
        routed: true,
        extra_config: cluster_section(raft_dir.path())?,
        ..BedSpec::default()
    };
    let bed = TestBed::start_with(spec).await?;
    let primary = bed.cluster.primary();
    let replicas: Vec<String> = bed.cluster.replicas().iter().map(|r| r.name().to_owned()).collect();
    // Synchronous replication to both standbys, and the shard says so: the
    // failover must then promote a standby that has every acknowledged row.
    primary
        .execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 ({})'",
            replicas.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", ")
        ))
        .await?;
    primary.execute("SELECT pg_reload_conf()").await?;
    eventually("the node to hold its lease and route writes", || async {
        let c = bed.connect().await?;
        c.batch_execute("CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)").await?;
        Ok(true)
    })
    .await?;
    admin_rows(&bed, "ALTER SHARD s1 SET (durability = 'sync', rpo_target = '0s')").await?;

    // Continuous autocommit writes; every acknowledged id is remembered.
    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let errors: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let writer = {
        let (acked, errors, stop, config) = (acked.clone(), errors.clone(), stop.clone(), bed.config());
        tokio::spawn(async move {
            let mut next = 1i64;
            let mut client: Option<tokio_postgres::Client> = None;
            while !stop.is_cancelled() {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    let connecting =
                        tokio::time::timeout(Duration::from_secs(5), config.connect(tokio_postgres::NoTls));
                    let Ok(connected) = connecting.await else {
                        eprintln!("connect timed out");
                        continue;
                    };
                    match connected {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            client = Some(c);
                        }
                        Err(e) => {
                            if errors.lock().len() < 30 {
                                eprintln!("connect error: {e}");
                            }
                            errors.lock().push(e.to_string());
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let c = client.as_ref().expect("connected above");
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&next];
                let insert = c.execute("INSERT INTO acked VALUES ($1)", &params);
                let Ok(inserted) = tokio::time::timeout(Duration::from_secs(15), insert).await else {
                    eprintln!("insert {next} timed out; reconnecting");
                    client = None;
                    continue;
                };
                match inserted {
                    Ok(_) => acked.lock().push((next, Instant::now())),
                    Err(e) => {
                        let text = format!(
                            "{:?}: {}",
                            e.code().map(|c| c.code().to_owned()),
                            e.as_db_error().map_or(e.to_string(), |d| d.message().to_owned())
                        );
                        if errors.lock().last() != Some(&text) {
                            eprintln!("write error: {text}");
                        }
                        errors.lock().push(text);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                next += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acked.lock().len();
    anyhow::ensure!(before > 10, "the load runs before the kill ({before} writes)");

    let killed_at = Instant::now();
    primary.kill().await?;
    eprintln!("killed the primary after {before} writes");
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_primary = loop {
        let rows = admin_rows(&bed, "SHOW SHARDS").await?;
        let primary_now = rows.first().and_then(|r| r[2].clone());
        if let Some(p) = primary_now.filter(|p| p != primary.name()) {
            break p;
        }
        anyhow::ensure!(Instant::now() < deadline, "no new primary within 30 s: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("new primary {new_primary} shown {:?} after the kill", killed_at.elapsed());
    let count_at_switch = acked.lock().len();
    eventually("writes acknowledged by the new primary", || async { Ok(acked.lock().len() > count_at_switch + 5) })
        .await?;
    stop.cancel();
    writer.await?;
    // The client-visible write outage: the longest gap between two
    // acknowledged writes around the kill.
    let times: Vec<Instant> = acked.lock().iter().map(|(_, t)| *t).collect();
    let outage = times.windows(2).map(|w| w[1].duration_since(w[0])).max().unwrap_or_default();
    let first_after = times.iter().find(|t| **t > killed_at).map(|t| t.duration_since(killed_at));
    let errors = errors.lock().clone();
    eprintln!(
        "failover: new primary {new_primary}; {} writes acknowledged; write outage {outage:?} \
         (first acknowledged write {first_after:?} after the kill); {} errors (first: {:?})",
        times.len(),
        errors.len(),
        errors.first(),
    );

    // Every acknowledged row is on the new primary.
    let server = bed.cluster.server(&new_primary).expect("the new primary is one of ours");
    let rows = server.query("SELECT id FROM acked").await?;
    let present: std::collections::HashSet<i64> =
        rows.iter().filter_map(|r| r[0].as_deref().and_then(|v| v.parse().ok())).collect();
    let lost: Vec<i64> = acked.lock().iter().map(|(id, _)| *id).filter(|id| !present.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    // Nothing failed except with the retryable write-gate code or a lost
    // connection to the dead primary (08006 from Meridian, or the socket
    // closed under an in-flight statement).
    for e in &errors {
        let expected = e.starts_with("Some(\"40001\")")
            || e.starts_with("Some(\"08006\")")
            || e.starts_with("Some(\"57P")
            || e == "None: connection closed";
        assert!(expected, "unexpected error: {e}");
    }
    let events = admin_rows(&bed, "SHOW EVENTS").await?;
    // Columns: id, at, actor, kind, shard, node, summary, phases.
    let report = events.iter().find(|r| r[3].as_deref() == Some("failover"));
    let summary = report.and_then(|r| r[6].clone()).unwrap_or_default();
    assert!(summary.contains(&format!("{new_primary} promoted")), "{events:?}");
    let phases = report.and_then(|r| r[7].clone()).unwrap_or_default();
    for phase in ["detect", "fence", "stop_receivers", "lease_expired", "promote", "re-route", "repoint"] {
        assert!(phases.contains(phase), "phase {phase} missing from {phases}");
    }
    eprintln!("failover report: {summary}; phases {phases}");
    let nodes = admin_rows(&bed, "SHOW NODES").await?;
    eprintln!("nodes after the failover: {nodes:?}");
    Ok(())
}
