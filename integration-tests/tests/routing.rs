//! Routing on a real sharded cluster (2 shards × primary + 2 replicas):
//! which server answered each statement, checked with inet_server_port()
//! and pg_is_in_recovery().

use std::time::Duration;

use integration_tests::sharded::{ShardedBed, ShardedSpec};
use integration_tests::{eventually, sqlstate};

/// `(port, in_recovery)` of the server that ran `sql` (which must select
/// `inet_server_port(), pg_is_in_recovery()` first).
async fn who(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<(u16, bool)> {
    let rows = client.simple_query(sql).await?;
    for m in rows {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            let port: u16 = r.get(0).unwrap_or_default().parse()?;
            return Ok((port, r.get(1) == Some("t")));
        }
    }
    anyhow::bail!("no row from {sql}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_statements_reach_their_shard_and_reads_use_replicas() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    let writer = bed.connect().await?;
    for id in 1..=40i64 {
        writer.execute("INSERT INTO owners (owner_id, name) VALUES ($1, $2)", &[&id, &format!("owner {id}")]).await?;
    }
    for s in &bed.shards {
        s.cluster.wait_replicas_caught_up().await?;
    }
    // Every row is on the shard PostgreSQL's hash names, and only there.
    for s in &bed.shards {
        let rows = s.primary().query("SELECT owner_id FROM owners ORDER BY 1").await?;
        let ids: Vec<i64> = rows.iter().map(|r| r[0].as_deref().unwrap_or_default().parse().unwrap_or(-1)).collect();
        let want: Vec<i64> = (1..=40).filter(|id| ShardedBed::shard_of(*id) == s.name).collect();
        assert_eq!(ids, want, "rows on {}", s.name);
    }
    // A session that never wrote reads keyed rows from a replica of the right shard.
    let reader = bed.connect().await?;
    for id in [1i64, 2, 3, 17, 40] {
        let (port, in_recovery) = who(
            &reader,
            &format!("SELECT inet_server_port(), pg_is_in_recovery(), name FROM owners WHERE owner_id = {id}"),
        )
        .await?;
        let (shard, server) = bed.server_at(port).expect("a known server");
        assert_eq!(shard, ShardedBed::shard_of(id), "owner {id} read from {server}");
        assert!(in_recovery, "owner {id} read from {server}, not a replica");
    }
    // Extended protocol with a binary int8 parameter routes by its value.
    for id in [5i64, 6, 7, 8] {
        let row =
            reader.query_one("SELECT inet_server_port()::int, name FROM owners WHERE owner_id = $1", &[&id]).await?;
        let port: i32 = row.get(0);
        let (shard, _) = bed.server_at(port as u16).expect("a known server");
        assert_eq!(shard, ShardedBed::shard_of(id));
        assert_eq!(row.get::<_, String>(1), format!("owner {id}"));
    }
    // Text keys hash too; = ANY with an array parameter reaches the right shard.
    writer.execute("INSERT INTO accounts (email, balance) VALUES ('ada@example.com', 10)", &[]).await?;
    let n: i64 = reader
        .query_one("SELECT count(*) FROM accounts WHERE email = ANY($1)", &[&vec!["ada@example.com".to_owned()]])
        .await?
        .get(0);
    assert_eq!(n, 1);
    // A statement that pins the session (a WITH HOLD cursor) keeps it on a
    // primary, where its later writes can run.
    let pinned = bed.connect().await?;
    pinned.batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT * FROM owners WHERE owner_id = 1").await?;
    let (_, in_recovery) = who(&pinned, "SELECT inet_server_port(), pg_is_in_recovery()").await?;
    assert!(!in_recovery, "a pinned session must sit on a primary");
    // SELECT ... FOR UPDATE, nextval() and unknown functions go to the primary.
    let (_, in_recovery) =
        who(&reader, "SELECT inet_server_port(), pg_is_in_recovery() FROM owners WHERE owner_id = 1 FOR UPDATE")
            .await?;
    assert!(!in_recovery, "FOR UPDATE must run on the primary");
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_mistakes_get_clear_errors() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    let c = bed.connect().await?;
    let (a, b) = {
        let a = 1i64;
        let b = (2..100).find(|id| ShardedBed::shard_of(*id) != ShardedBed::shard_of(a)).expect("two shards");
        (a, b)
    };
    // A transaction stays on the shard its first keyed statement chose.
    c.batch_execute("BEGIN").await?;
    c.execute("INSERT INTO owners (owner_id, name) VALUES ($1, 'a')", &[&a]).await?;
    let e = c.execute("INSERT INTO owners (owner_id, name) VALUES ($1, 'b')", &[&b]).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    assert!(msg(&e).contains("one shard"), "{e:?}");
    // The transaction is aborted, as after any error.
    let e = c.execute("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("25P02"), "{e}");
    c.batch_execute("ROLLBACK").await?;
    // Simple protocol, too, and the held BEGIN is invisible to the client.
    c.batch_execute(&format!("BEGIN; INSERT INTO owners (owner_id, name) VALUES ({a}, 'a'); COMMIT")).await?;
    let e = c
        .batch_execute(&format!("INSERT INTO owners VALUES ({a}, 'x'); INSERT INTO owners VALUES ({b}, 'y')"))
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    // A keyless write to a sharded table is refused, naming the key.
    let e = c.execute("UPDATE owners SET name = 'z'", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    assert!(msg(&e).contains("owner_id"), "{e:?}");
    // A multi-row INSERT over two shards is refused; on one shard it works.
    let e = c
        .batch_execute(&format!("INSERT INTO owners (owner_id, name) VALUES ({}, 'p'), ({}, 'q')", a + 1000, b + 1000))
        .await;
    if ShardedBed::shard_of(a + 1000) != ShardedBed::shard_of(b + 1000) {
        let e = e.unwrap_err();
        assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    }
    // The session is fine afterwards.
    c.batch_execute("SELECT 1").await?;
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_changes_reach_every_shard() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    let c = bed.connect().await?;
    c.batch_execute("CREATE TABLE visits (owner_id bigint, at timestamptz DEFAULT now())").await?;
    for s in &bed.shards {
        let n = s.primary().query_value("SELECT count(*) FROM pg_class WHERE relname = 'visits'").await?;
        assert_eq!(n.as_deref(), Some("1"), "visits on {}", s.name);
    }
    // A failure on the default shard is the client's error; nothing runs elsewhere.
    let e = c.batch_execute("CREATE TABLE visits (x int)").await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("42P07"), "{e}");
    // A failure on another shard only is reported shard by shard.
    bed.shards[1].primary().execute("CREATE TABLE only_s2 (x int)").await?;
    let e = c.batch_execute("CREATE TABLE only_s2 (x int)").await.unwrap_err();
    assert!(msg(&e).contains("s2") && msg(&e).contains("applied on shards s1"), "{e:?}");
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_never_reads_the_past() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec {
        topology: "max_replica_lag = \"1GB\"\nmax_replica_lag_time = \"1h\"".into(),
        ..Default::default()
    })
    .await?;
    // Pause replay on every replica of both shards: they will never see
    // the writes below, yet stay within the (huge) lag bound.
    for s in &bed.shards {
        for r in s.cluster.replicas() {
            r.execute("SELECT pg_wal_replay_pause()").await?;
        }
    }
    let c = bed.connect().await?;
    assert_eq!(
        c.simple_query("SHOW meridian.read_consistency").await?.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        }),
        Some("read_your_writes".to_owned())
    );
    for id in 100..130i64 {
        c.execute("INSERT INTO owners (owner_id, name) VALUES ($1, 'new')", &[&id]).await?;
        let row = c
            .query_opt("SELECT name, pg_is_in_recovery() FROM owners WHERE owner_id = $1", &[&id])
            .await?
            .expect("the session's own write is visible");
        assert!(!row.get::<_, bool>(1), "read after write served by a paused replica");
    }
    // The causal token carries to another connection.
    let lsn = c
        .simple_query("SHOW meridian.last_commit_lsn")
        .await?
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .expect("a commit position");
    assert!(router::lsn::Lsn::parse(&lsn).is_some(), "{lsn}");
    let other = bed.connect().await?;
    let id = 129i64;
    // Without the token, a session that never wrote reads the (stale) replica.
    let stale = other.query_opt("SELECT name FROM owners WHERE owner_id = $1", &[&id]).await?;
    assert!(stale.is_none(), "a paused replica cannot have the row");
    other.batch_execute(&format!("SET meridian.min_lsn = '{lsn}'")).await?;
    let fresh = other.query_opt("SELECT name FROM owners WHERE owner_id = $1", &[&id]).await?;
    assert!(fresh.is_some(), "with meridian.min_lsn the read must see the write");
    for s in &bed.shards {
        for r in s.cluster.replicas() {
            r.execute("SELECT pg_wal_replay_resume()").await?;
        }
    }
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_past_the_lag_bound_is_excluded() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec {
        topology: "max_replica_lag = \"256kB\"\nmax_replica_lag_time = \"1h\"".into(),
        ..Default::default()
    })
    .await?;
    let c = bed.connect().await?;
    for id in 1..=20i64 {
        c.execute("INSERT INTO owners (owner_id, name) VALUES ($1, 'x')", &[&id]).await?;
    }
    bed.shards[0].cluster.wait_replicas_caught_up().await?;
    let s1 = &bed.shards[0];
    let paused = s1.replica(0);
    paused.execute("SELECT pg_wal_replay_pause()").await?;
    // WAL well past the bound on s1.
    s1.primary()
        .execute("CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g")
        .await?;
    c.batch_execute("SET meridian.read_consistency = nearest").await?;
    let id = (1..20).find(|id| ShardedBed::shard_of(*id) == "s1").expect("an s1 key");
    // Once the probes have seen the lag, no read reaches the paused replica.
    eventually("the paused replica is excluded", || async {
        for _ in 0..20 {
            let (port, _) =
                who(&c, &format!("SELECT inet_server_port(), pg_is_in_recovery() FROM owners WHERE owner_id = {id}"))
                    .await?;
            if port == paused.port() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    for _ in 0..50 {
        let (port, _) =
            who(&c, &format!("SELECT inet_server_port(), pg_is_in_recovery() FROM owners WHERE owner_id = {id}"))
                .await?;
        assert_ne!(port, paused.port(), "read served by a replica past the lag bound");
    }
    paused.execute("SELECT pg_wal_replay_resume()").await?;
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nearest_replica_wins() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    // Replica 0 of each shard is "far" (20 ms each way), replica 1 near.
    for s in &bed.shards {
        s.replica_relay(0).set_delay(Duration::from_millis(20));
    }
    let c = bed.connect().await?;
    for id in 1..=30i64 {
        c.execute("INSERT INTO owners (owner_id, name) VALUES ($1, 'x')", &[&id]).await?;
    }
    for s in &bed.shards {
        s.cluster.wait_replicas_caught_up().await?;
    }
    c.batch_execute("SET meridian.read_consistency = nearest").await?;
    // Let the round-trip averages settle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in 1..=30i64 {
        let (port, in_recovery) =
            who(&c, &format!("SELECT inet_server_port(), pg_is_in_recovery() FROM owners WHERE owner_id = {id}"))
                .await?;
        let (shard, server) = bed.server_at(port).expect("a known server");
        let s = bed.shards.iter().find(|s| s.name == shard).expect("shard");
        assert!(in_recovery);
        assert_eq!(port, s.replica(1).port(), "owner {id} read from {server}, not the nearest replica");
    }
    bed.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reads_equal_a_single_node_reference() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    let c = bed.connect().await?;
    // The same data through Meridian (spread over both shards) and into a
    // reference table on one server.
    let reference = bed.shards[0].primary().connect().await?;
    reference.batch_execute("CREATE DATABASE reference").await?;
    let mut rc = bed.shards[0].primary().tcp_config();
    rc.dbname("reference");
    let reference = integration_tests::sharded::connect(&rc).await?;
    reference.batch_execute(integration_tests::sharded::SCHEMA).await?;
    for id in 1..=200i64 {
        let region = ["us", "eu", "ap", "sa"][(id % 4) as usize];
        let name = format!("owner {:03}", (id * 37) % 101);
        let sql = format!("INSERT INTO owners (owner_id, name, region) VALUES ({id}, '{name}', '{region}')");
        c.batch_execute(&sql).await.map_err(|e| anyhow::anyhow!("{sql}: {}", msg(&e)))?;
        reference.batch_execute(&sql).await?;
        for p in 0..(id % 3) {
            let sql = format!(
                "INSERT INTO pets (owner_id, name, kind, weight) VALUES ({id}, 'pet{p}', '{}', {}.{})",
                ["cat", "dog"][(p % 2) as usize],
                id % 17,
                p * 3
            );
            c.batch_execute(&sql).await?;
            reference.batch_execute(&sql).await?;
        }
    }
    let queries = [
        "SELECT count(*) FROM owners",
        "SELECT count(*), sum(owner_id), min(owner_id), max(owner_id), avg(owner_id) FROM owners",
        "SELECT owner_id, name FROM owners ORDER BY owner_id",
        "SELECT owner_id, name FROM owners ORDER BY owner_id DESC LIMIT 7",
        "SELECT owner_id FROM owners ORDER BY owner_id LIMIT 5 OFFSET 10",
        "SELECT region, count(*) FROM owners GROUP BY region ORDER BY region COLLATE \"C\"",
        "SELECT kind, count(*), sum(weight), avg(weight), max(weight) FROM pets GROUP BY kind ORDER BY kind COLLATE \"C\"",
        "SELECT count(*) FROM pets WHERE weight > 5",
        "SELECT owner_id, name FROM owners WHERE owner_id IN (3, 4, 5, 6) ORDER BY owner_id",
    ];
    for q in queries {
        let through = rows(&c, q).await?;
        let direct = rows(&reference, q).await?;
        assert_eq!(through, direct, "{q}");
    }
    // Without ORDER BY the order is unspecified: the same rows, as a set.
    for q in ["SELECT owner_id, name FROM owners", "SELECT region, count(*), sum(owner_id) FROM owners GROUP BY region"]
    {
        let mut through = rows(&c, q).await?;
        let mut direct = rows(&reference, q).await?;
        through.sort();
        direct.sort();
        assert_eq!(through, direct, "{q}");
    }
    // The extended protocol (tokio-postgres prepares, binds and asks for
    // binary results), with parameters.
    let typed =
        |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, String)> { rows.iter().map(|r| (r.get(0), r.get(1))).collect() };
    for (q, bound) in [
        ("SELECT owner_id, name FROM owners WHERE owner_id > $1 ORDER BY owner_id DESC LIMIT 5", 150i64),
        ("SELECT owner_id, name FROM owners WHERE owner_id <= $1 ORDER BY owner_id", 20),
    ] {
        let through = typed(c.query(q, &[&bound]).await.map_err(|e| anyhow::anyhow!("{q}: {}", msg(&e)))?);
        let direct = typed(reference.query(q, &[&bound]).await?);
        assert_eq!(through, direct, "{q}");
    }
    let q = "SELECT count(*), max(owner_id) FROM owners WHERE owner_id < $1";
    let through = c.query_one(q, &[&100i64]).await.map_err(|e| anyhow::anyhow!("{q}: {}", msg(&e)))?;
    let direct = reference.query_one(q, &[&100i64]).await?;
    assert_eq!(
        (through.get::<_, i64>(0), through.get::<_, i64>(1)),
        (direct.get::<_, i64>(0), direct.get::<_, i64>(1))
    );
    // Text ordering across shards needs a collation Meridian can apply.
    let e = c.simple_query("SELECT name FROM owners ORDER BY name").await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e:?}");
    assert!(msg(&e).contains("COLLATE"), "{}", msg(&e));
    // What cannot be merged correctly is refused, naming it.
    let e = c.simple_query("SELECT owner_id, rank() OVER (ORDER BY owner_id) FROM owners").await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    let e = c.simple_query("SELECT o.name, p.name FROM owners o JOIN pets p ON p.name = o.name").await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("0A000"), "{e}");
    bed.shutdown().await;
    Ok(())
}

fn msg(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_else(|| e.to_string())
}

async fn rows(c: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
    Ok(c.simple_query(sql)
        .await
        .map_err(|e| anyhow::anyhow!("{sql}: {}", msg(&e)))?
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}
