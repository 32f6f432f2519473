//! Automatic failover on a real cluster (`integration_tests::failover`):
//! the primary of a `durability = 'sync'` shard is killed with SIGKILL
//! under continuous writes through Meridian; the Raft leader fences the
//! shard, stops the replicas' WAL receivers, waits out the write lease,
//! promotes the most advanced replica and re-points the other. No
//! acknowledged write may be lost, and clients see only retryable errors.
//! (The outage is measured and printed; `benches`' `failover_rto` repeats
//! the run and reports it.)

use std::time::Duration;

use integration_tests::eventually;
use integration_tests::failover::{admin_rows, failover_bed, kill_primary_under_writes};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_primary_under_writes_and_lose_nothing() -> anyhow::Result<()> {
    let run = kill_primary_under_writes(integration_tests::failover::Timings::QUICK).await?;
    eprintln!(
        "failover: {} -> {}; {} writes acknowledged; write outage {:?}; new primary shown {:?} after the kill; \
         {} errors; {}; phases {}",
        run.old_primary,
        run.new_primary,
        run.acknowledged,
        run.outage,
        run.promoted_after,
        run.errors.len(),
        run.summary,
        run.phases
    );
    assert_ne!(run.new_primary, run.old_primary);
    assert!(run.lost.is_empty(), "acknowledged rows lost: {:?}", run.lost);
    // Nothing failed except with the retryable write-gate code, or the
    // insert in flight on the dead primary: its outcome unknown (08007),
    // or an older client path (08006, the socket closed).
    for e in &run.errors {
        let expected = e.starts_with("Some(\"40001\")")
            || e.starts_with("Some(\"08007\")")
            || e.starts_with("Some(\"08006\")")
            || e.starts_with("Some(\"57P")
            || e == "None: connection closed";
        assert!(expected, "unexpected error: {e}");
    }
    assert!(run.summary.contains(&format!("→ {}", run.new_primary)), "{}", run.summary);
    assert!(run.summary.contains("completed, passed"), "RPO 0, within the RTO target: {}", run.summary);
    for phase in ["detect", "fence", "stop_receivers", "lease_expired", "promote", "re-route", "repoint"] {
        assert!(run.phases.contains(phase), "phase {phase} missing from {}", run.phases);
    }
    Ok(())
}

/// Every replica lags the primary by more than `max_lag_on_failover` (their
/// WAL receivers were stopped, then the primary wrote on): the leader
/// fences the shard but does not promote anyone, records why, and writes
/// are refused with the retryable 40001 until an operator acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_are_not_promoted_silently() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("1s").await?;
    admin_rows(&bed, "ALTER SHARD s1 SET (max_lag_on_failover = '64kB')").await?;
    for r in bed.cluster.replicas() {
        r.execute("ALTER SYSTEM SET primary_conninfo = ''").await?;
        r.execute("SELECT pg_reload_conf()").await?;
    }
    // The WAL receivers stop a moment after the reload: only then does
    // the primary's next write leave the replicas behind.
    for r in bed.cluster.replicas() {
        eventually("the replica's WAL receiver stopped", || async {
            Ok(r.query_value("SELECT count(*)::text FROM pg_stat_wal_receiver").await?.as_deref() == Some("0"))
        })
        .await?;
    }
    let app = bed.connect().await?;
    app.batch_execute("INSERT INTO acked SELECT g, repeat('x', 1000) FROM generate_series(1, 2000) g").await?;
    // Meridian's probes (every 100 ms) see the primary's new position:
    // SHOW NODES (column 7, lsn) shows what they saw.
    let lsn = |text: &str| {
        text.split_once('/')
            .and_then(|(hi, lo)| Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?))
    };
    let written = bed.cluster.primary().query_value("SELECT pg_current_wal_lsn()::text").await?.unwrap_or_default();
    let written = lsn(&written).expect("an LSN");
    let primary_name = bed.cluster.primary().name().to_owned();
    eventually("Meridian's probes see the primary's position after the insert", || async {
        let nodes = admin_rows(&bed, "SHOW NODES").await?;
        let seen = nodes.iter().find(|n| n[0].as_deref() == Some(primary_name.as_str())).and_then(|n| n[7].clone());
        Ok(seen.as_deref().and_then(lsn).is_some_and(|l| l >= written))
    })
    .await?;
    // And the control loop (same interval) has noted it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old = bed.cluster.primary().name().to_owned();
    bed.cluster.primary().kill().await?;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let summary = loop {
        let events = admin_rows(&bed, "SHOW EVENTS").await?;
        if let Some(r) = events.iter().find(|r| r[3].as_deref() == Some("failover")) {
            break r[6].clone().unwrap_or_default();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no failover event: {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(summary.contains("stopped") && summary.contains("max_lag_on_failover"), "{summary}");
    // Columns: name, epoch, primary, primary_region, replicas, default,
    // fenced, ...: fenced, with no writable primary, and the old one kept out.
    let shards = admin_rows(&bed, "SHOW SHARDS").await?;
    assert_eq!((shards[0][2].as_deref(), shards[0][6].as_deref()), (None, Some("t")), "{shards:?}");
    let nodes = admin_rows(&bed, "SHOW NODES").await?;
    // Columns ..., 14: cluster_state.
    let old_row = nodes.iter().find(|n| n[0].as_deref() == Some(old.as_str()));
    assert_eq!(old_row.and_then(|n| n[14].as_deref()), Some("fenced"), "{nodes:?}");
    for r in bed.cluster.replicas() {
        let in_recovery = r.query("SELECT pg_is_in_recovery()").await?;
        assert_eq!(in_recovery[0][0].as_deref(), Some("t"), "{} was promoted", r.name());
    }
    let e = bed.connect().await?.batch_execute("INSERT INTO acked VALUES (-1, 'after')").await.expect_err("fenced");
    assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e}");
    Ok(())
}

/// The primary is frozen (SIGSTOP), so every probe times out: the leader
/// fails the shard over. Once the new primary is up the old one is thawed
/// (SIGCONT): it still believes it is a primary, but Meridian never sends it
/// another write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_thawed_after_the_failover_gets_no_more_writes() -> anyhow::Result<()> {
    let (bed, _raft) = failover_bed("10s").await?;
    let app = bed.connect().await?;
    app.batch_execute("INSERT INTO acked SELECT g, 'before' FROM generate_series(1, 100) g").await?;
    bed.cluster.wait_replicas_caught_up().await?;
    let old = bed.cluster.primary();
    let family = server_processes(old.pid().expect("running"));
    let signal_all = |sig| -> anyhow::Result<()> {
        for &pid in &family {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)?;
        }
        Ok(())
    };
    signal_all(nix::sys::signal::Signal::SIGSTOP)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let new_primary = loop {
        let shards = admin_rows(&bed, "SHOW SHARDS").await?;
        if let Some(p) = shards[0][2].clone().filter(|p| p != old.name()) {
            break p;
        }
        if tokio::time::Instant::now() > deadline {
            signal_all(nix::sys::signal::Signal::SIGCONT)?;
            anyhow::bail!("no failover within 30 s: {shards:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    signal_all(nix::sys::signal::Signal::SIGCONT)?;
    let count = |rows: Vec<Vec<Option<String>>>| rows[0][0].clone().unwrap_or_default();
    let before = count(old.query("SELECT count(*) FROM acked").await?);
    // New sessions and new transactions all go to the new primary.
    for i in 0..50 {
        let c = bed.connect().await?;
        c.batch_execute(&format!("INSERT INTO acked VALUES ({}, 'after')", 1000 + i)).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(old.query("SELECT count(*) FROM acked").await?), before, "the old primary got a write");
    let server = bed.cluster.server(&new_primary).expect("ours");
    assert_eq!(count(server.query("SELECT count(*) FROM acked WHERE pad = 'after'").await?), "50");
    Ok(())
}

/// The postmaster `pid` and every process it started (backends, WAL
/// writer, ...): freezing only the postmaster would leave its open
/// connections answering.
fn server_processes(pid: u32) -> Vec<i32> {
    let mut family = vec![pid as i32];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: the comm may hold spaces, so read after ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(pid) {
            family.push(child);
        }
    }
    family
}
