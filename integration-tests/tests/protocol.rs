//! The PostgreSQL protocol through Meridian with real clients: tokio-postgres
//! (simple and extended protocol, COPY, cancel, LISTEN/NOTIFY, notices,
//! errors, ParameterStatus) and hand-built messages where a driver cannot
//! produce the exact sequence, against a real PostgreSQL primary.
//!
//! Most tests run in transaction pooling mode (the default) with a small
//! pool, so consecutive transactions of one client land on different server
//! connections and Meridian's settings replay and statement renaming are
//! exercised.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use futures_util::{SinkExt, TryStreamExt};
use integration_tests::{
    APP_PASSWORD, APP_USER, BedSpec, RawConn, TestBed, app_startup, cancel_a_running_sleep, eventually, fe, patiently,
    sqlstate,
};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

/// A bed in transaction mode with `size` server connections.
async fn pooled(size: usize) -> anyhow::Result<TestBed> {
    TestBed::start_with(BedSpec { extra_config: format!("[pool]\nsize = {size}\n"), ..BedSpec::default() }).await
}

/// The values of a simple query's rows, first column.
fn first_column(msgs: &[SimpleQueryMessage]) -> Vec<Option<String>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .collect()
}

/// The backend pid serving one statement.
async fn backend_pid(client: &tokio_postgres::Client) -> anyhow::Result<i32> {
    Ok(client.query_one("SELECT pg_backend_pid()", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_and_batch_execute() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let client = bed.connect().await?;
    client
        .batch_execute(
            "CREATE TABLE simple_t (id int PRIMARY KEY, name text);
             INSERT INTO simple_t VALUES (1, 'one'), (2, 'two'), (3, NULL);",
        )
        .await?;
    let msgs = client.simple_query("SELECT name FROM simple_t ORDER BY id").await?;
    assert_eq!(first_column(&msgs), vec![Some("one".into()), Some("two".into()), None]);
    assert!(matches!(msgs.last(), Some(SimpleQueryMessage::CommandComplete(3))), "{msgs:?}");

    // Several statements in one Query: every result comes back, in order.
    let msgs = client.simple_query("SELECT 1; SELECT 'a' UNION ALL SELECT 'b'; UPDATE simple_t SET name = 'x'").await?;
    assert_eq!(first_column(&msgs), vec![Some("1".into()), Some("a".into()), Some("b".into())]);
    let completes: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(completes, vec![1, 2, 3]);

    // An empty query string is answered too.
    let msgs = client.simple_query("").await?;
    assert!(first_column(&msgs).is_empty());
    assert_eq!(client.simple_query("SELECT count(*) FROM simple_t").await?.len(), 3, "row description, row, complete");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_with_parameters() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let client = bed.connect().await?;
    client.batch_execute("CREATE TABLE ext_t (id int8 PRIMARY KEY, name text, score float8)").await?;
    for i in 0..20i64 {
        let name = (i % 3 != 0).then(|| format!("name-{i}"));
        let n = client.execute("INSERT INTO ext_t VALUES ($1, $2, $3)", &[&i, &name, &(i as f64 / 4.0)]).await?;
        assert_eq!(n, 1);
    }
    let rows =
        client.query("SELECT id, name FROM ext_t WHERE id >= $1 AND id < $2 ORDER BY id", &[&5i64, &8i64]).await?;
    let got: Vec<(i64, Option<String>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, vec![(5, Some("name-5".into())), (6, None), (7, Some("name-7".into()))]);
    let row = client.query_one("SELECT count(*), sum(score) FROM ext_t WHERE name IS NULL", &[]).await?;
    assert_eq!(row.get::<_, i64>(0), 7);
    assert_eq!(row.get::<_, f64>(1), (0..20).filter(|i| i % 3 == 0).map(|i| i as f64 / 4.0).sum::<f64>());
    assert!(client.query_opt("SELECT 1 FROM ext_t WHERE id = $1", &[&1000i64]).await?.is_none());
    let updated = client.execute("UPDATE ext_t SET name = $1 WHERE id % $2 = 0", &[&"even", &2i64]).await?;
    assert_eq!(updated, 10);
    // A portal fetched in pieces (Execute with a row limit, PortalSuspended).
    let mut client = client;
    let tx = client.transaction().await?;
    let stmt = tx.prepare("SELECT id FROM ext_t ORDER BY id").await?;
    let portal = tx.bind(&stmt, &[]).await?;
    let mut seen = Vec::new();
    loop {
        let chunk = tx.query_portal(&portal, 6).await?;
        if chunk.is_empty() {
            break;
        }
        seen.extend(chunk.iter().map(|r| r.get::<_, i64>(0)));
    }
    tx.commit().await?;
    assert_eq!(seen, (0..20).collect::<Vec<i64>>());
    Ok(())
}

/// Many clients, two server connections: each client's prepared statements
/// must follow it onto whichever connection serves each transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_follow_clients_across_server_connections() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let setup = bed.connect().await?;
    setup.batch_execute("CREATE TABLE prep_t (client int, n int8)").await?;
    let mut tasks = Vec::new();
    for c in 0..8i32 {
        let config = bed.config();
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = config.connect(NoTls).await?;
            tokio::spawn(conn);
            // The same text in every client, and a text only this client uses.
            let shared = client.prepare("SELECT $1::int8 * 2").await?;
            let own = client.prepare(&format!("SELECT $1::int8 + {c}, {c}::text")).await?;
            let insert = client.prepare("INSERT INTO prep_t VALUES ($1, $2)").await?;
            let mut pids = std::collections::BTreeSet::new();
            for i in 0..40i64 {
                if i % 2 == 0 {
                    let doubled: i64 = client.query_one(&shared, &[&i]).await?.get(0);
                    anyhow::ensure!(doubled == 2 * i, "client {c}: {doubled} != 2 * {i}");
                    let row = client.query_one(&own, &[&i]).await?;
                    anyhow::ensure!(row.get::<_, i64>(0) == i + c as i64, "client {c} got another client's statement");
                    anyhow::ensure!(row.get::<_, String>(1) == c.to_string());
                    client.execute(&insert, &[&c, &i]).await?;
                } else {
                    let tx = client.transaction().await?;
                    let row = tx.query_one(&own, &[&i]).await?;
                    anyhow::ensure!(row.get::<_, i64>(0) == i + c as i64, "client {c} got another client's statement");
                    tx.execute(&insert, &[&c, &i]).await?;
                    pids.insert(tx.query_one("SELECT pg_backend_pid()", &[]).await?.get::<_, i32>(0));
                    tx.commit().await?;
                }
            }
            anyhow::Ok(pids)
        }));
    }
    let mut all_pids = std::collections::BTreeSet::new();
    for t in tasks {
        all_pids.extend(patiently("client task", t).await???);
    }
    assert!(all_pids.len() <= 2, "pool size 2 but {} backends served: {all_pids:?}", all_pids.len());
    let row = setup.query_one("SELECT count(*), count(DISTINCT (client, n)) FROM prep_t", &[]).await?;
    assert_eq!(row.get::<_, i64>(0), 8 * 40);
    assert_eq!(row.get::<_, i64>(1), 8 * 40);
    Ok(())
}

/// Two clients using the same statement name for different queries over one
/// server connection: each keeps its own meaning; duplicate names, Close and
/// re-Parse behave as on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_names_are_private_to_each_client() -> anyhow::Result<()> {
    let bed = pooled(1).await?;
    let mut a = RawConn::connect(bed.addr).await?;
    a.login(&app_startup(), APP_PASSWORD).await?;
    let mut b = RawConn::connect(bed.addr).await?;
    b.login(&app_startup(), APP_PASSWORD).await?;

    let run = |name: &str| [fe::bind("", name, &[]), fe::execute(""), fe::sync()].concat();
    a.send(&[fe::parse("stmt", "SELECT 'from a'"), fe::sync()].concat()).await?;
    assert!(a.until_ready().await?.errors.is_empty());
    b.send(&[fe::parse("stmt", "SELECT 'from b'"), fe::sync()].concat()).await?;
    assert!(b.until_ready().await?.errors.is_empty());
    for _ in 0..5 {
        a.send(&run("stmt")).await?;
        let out = a.until_ready().await?;
        assert_eq!(out.value(), Some("from a"), "{:?}", out.errors);
        b.send(&run("stmt")).await?;
        let out = b.until_ready().await?;
        assert_eq!(out.value(), Some("from b"), "{:?}", out.errors);
    }
    // Re-using a name without closing it is PostgreSQL's 42P05.
    a.send(&[fe::parse("stmt", "SELECT 'again'"), fe::sync()].concat()).await?;
    let out = a.until_ready().await?;
    assert_eq!(out.errors.first().map(|e| e.code.as_str()), Some("42P05"), "{out:?}");
    // Close forgets the name: using it fails (26000), parsing it again works.
    a.send(&[fe::close_statement("stmt"), fe::sync()].concat()).await?;
    let out = a.until_ready().await?;
    assert_eq!(out.tags(), "3Z");
    a.send(&run("stmt")).await?;
    let out = a.until_ready().await?;
    assert_eq!(out.errors.first().map(|e| e.code.as_str()), Some("26000"), "{out:?}");
    a.send(&[fe::parse("stmt", "SELECT 'a again'"), fe::sync()].concat()).await?;
    assert!(a.until_ready().await?.errors.is_empty());
    a.send(&run("stmt")).await?;
    assert_eq!(a.until_ready().await?.value(), Some("a again"));
    // b is unaffected throughout.
    b.send(&run("stmt")).await?;
    assert_eq!(b.until_ready().await?.value(), Some("from b"));
    Ok(())
}

/// A Parse that fails creates no statement, so the client may use the name
/// again (drivers retry with corrected SQL under the same name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_parse_does_not_reserve_the_statement_name() -> anyhow::Result<()> {
    let bed = pooled(1).await?;
    let mut c = RawConn::connect(bed.addr).await?;
    c.login(&app_startup(), APP_PASSWORD).await?;
    c.send(&[fe::parse("retry", "SELEKT 1"), fe::sync()].concat()).await?;
    let out = c.until_ready().await?;
    assert_eq!(out.errors.first().map(|e| e.code.as_str()), Some("42601"), "{out:?}");
    c.send(&[fe::parse("retry", "SELECT 'fixed'"), fe::sync()].concat()).await?;
    let out = c.until_ready().await?;
    assert!(out.errors.is_empty(), "re-parsing a name whose Parse failed: {:?}", out.errors);
    c.send(&[fe::bind("", "retry", &[]), fe::execute(""), fe::sync()].concat()).await?;
    assert_eq!(c.until_ready().await?.value(), Some("fixed"));
    // A Parse skipped because an earlier message in the batch failed: the
    // client may send it again.
    c.send(&[fe::parse("first", "SELEKT 1"), fe::parse("second", "SELECT 'second'"), fe::sync()].concat()).await?;
    let out = c.until_ready().await?;
    assert_eq!(out.errors.len(), 1, "{out:?}");
    c.send(
        &[fe::parse("second", "SELECT 'second'"), fe::bind("", "second", &[]), fe::execute(""), fe::sync()].concat(),
    )
    .await?;
    let out = c.until_ready().await?;
    assert!(out.errors.is_empty(), "re-sending a Parse that PostgreSQL skipped: {:?}", out.errors);
    assert_eq!(out.value(), Some("second"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_parameters_and_results() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let client = bed.connect().await?;
    for v in [0i64, 1, -1, i64::MAX, i64::MIN] {
        let got: i64 = client.query_one("SELECT $1::int8", &[&v]).await?.get(0);
        assert_eq!(got, v);
    }
    for v in [0.0f64, -0.0, 1.5, f64::MAX, f64::MIN_POSITIVE, f64::INFINITY, f64::NEG_INFINITY] {
        let got: f64 = client.query_one("SELECT $1::float8", &[&v]).await?.get(0);
        assert_eq!(got.to_bits(), v.to_bits());
    }
    let nan: f64 = client.query_one("SELECT $1::float8", &[&f64::NAN]).await?.get(0);
    assert!(nan.is_nan());
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let row = client.query_one("SELECT $1::bytea, length($1::bytea)", &[&bytes]).await?;
    assert_eq!(row.get::<_, Vec<u8>>(0), bytes);
    assert_eq!(row.get::<_, i32>(1), 512);
    let big = vec![0xa5u8; 300_000];
    let got: Vec<u8> = client.query_one("SELECT $1::bytea", &[&big]).await?.get(0);
    assert_eq!(got, big);
    let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
    let row = client.query_one("SELECT $1::timestamptz, $1::timestamptz + interval '1 day'", &[&t]).await?;
    assert_eq!(row.get::<_, SystemTime>(0), t);
    assert_eq!(row.get::<_, SystemTime>(1), t + Duration::from_secs(86_400));
    let n = "12345678901234567890.123456789";
    let doubled: String = client.query_one("SELECT ($1::text::numeric * 2)::text", &[&n]).await?.get(0);
    assert_eq!(doubled, "24691357802469135780.246913578");
    let ints = vec![1i64, -2, i64::MAX];
    let got: Vec<i64> = client.query_one("SELECT $1::int8[]", &[&ints]).await?.get(0);
    assert_eq!(got, ints);
    let texts = vec![Some("a".to_owned()), None, Some("ü\"{},".to_owned())];
    let got: Vec<Option<String>> = client.query_one("SELECT $1::text[]", &[&texts]).await?.get(0);
    assert_eq!(got, texts);
    let got: Vec<i32> = client.query_one("SELECT ARRAY[3, 1, 2]::int4[]", &[]).await?.get(0);
    assert_eq!(got, vec![3, 1, 2]);
    let row = client.query_one("SELECT $1::bool, $2::text, NULL::int8", &[&true, &"x"]).await?;
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, Option<i64>>(2), None);
    Ok(())
}

/// `Client::prepare` and dropping the statement (Close) many times: nothing
/// piles up on the server connection and the client keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_and_drop_many_times() -> anyhow::Result<()> {
    let bed = pooled(1).await?;
    let client = bed.connect().await?;
    for i in 0..100i64 {
        let stmt = client.prepare("SELECT $1::int8 + 1").await?;
        let got: i64 = client.query_one(&stmt, &[&i]).await?.get(0);
        assert_eq!(got, i + 1);
        drop(stmt);
    }
    let msgs = client.simple_query("SELECT count(*) FROM pg_prepared_statements").await?;
    let count: i64 = first_column(&msgs)[0].as_deref().context("no count")?.parse()?;
    assert!(count <= 5, "{count} prepared statements left on the only server connection");
    // Still usable afterwards, with a statement prepared and kept.
    let kept = client.prepare("SELECT $1::text || '!'").await?;
    for _ in 0..3 {
        let got: String = client.query_one(&kept, &[&"hi"]).await?.get(0);
        assert_eq!(got, "hi!");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_roll_back() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut client = bed.connect().await?;
    client.batch_execute("CREATE TABLE tx_t (id int PRIMARY KEY)").await?;
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tx_t VALUES (1), (2)", &[]).await?;
    tx.rollback().await?;
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tx_t VALUES (3)", &[]).await?;
    tx.commit().await?;
    // A failed transaction: later statements are refused (25P02) until ROLLBACK.
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tx_t VALUES (4)", &[]).await?;
    let dup = tx.execute("INSERT INTO tx_t VALUES (3)", &[]).await.err().context("duplicate key accepted")?;
    assert_eq!(sqlstate(&dup), Some("23505"));
    let aborted = tx.query("SELECT 1", &[]).await.err().context("statement ran in a failed transaction")?;
    assert_eq!(sqlstate(&aborted), Some("25P02"));
    tx.rollback().await?;
    // Simple-protocol transactions, including COMMIT of a failed one.
    client.batch_execute("BEGIN; INSERT INTO tx_t VALUES (5); COMMIT").await?;
    client.batch_execute("BEGIN").await?;
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    client.batch_execute("COMMIT").await?;
    let ids: Vec<i32> = client.query("SELECT id FROM tx_t ORDER BY id", &[]).await?.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![3, 5]);
    // Savepoints.
    let tx = client.transaction().await?;
    tx.execute("INSERT INTO tx_t VALUES (6)", &[]).await?;
    tx.batch_execute("SAVEPOINT s; INSERT INTO tx_t VALUES (7); ROLLBACK TO SAVEPOINT s").await?;
    tx.commit().await?;
    let ids: Vec<i32> = client.query("SELECT id FROM tx_t ORDER BY id", &[]).await?.iter().map(|r| r.get(0)).collect();
    assert_eq!(ids, vec![3, 5, 6]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let client = bed.connect().await?;
    client.batch_execute("CREATE TABLE copy_t (id int8, label text, data bytea)").await?;
    let rows = 5000i64;
    let mut text = String::new();
    for i in 0..rows {
        let label = if i % 7 == 0 { "\\N".to_owned() } else { format!("row\\t{i}") };
        text.push_str(&format!("{i}\t{label}\t\\\\x{:02x}ff\n", i % 256));
    }
    let sink = client.copy_in("COPY copy_t FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    for chunk in text.as_bytes().chunks(7000) {
        sink.send(bytes::Bytes::copy_from_slice(chunk)).await?;
    }
    let n = sink.as_mut().finish().await?;
    assert_eq!(n, rows as u64);
    let row = client
        .query_one("SELECT count(*), sum(id)::int8, count(label), sum(get_byte(data, 0))::int8 FROM copy_t", &[])
        .await?;
    assert_eq!(row.get::<_, i64>(0), rows);
    assert_eq!(row.get::<_, i64>(1), (0..rows).sum::<i64>());
    assert_eq!(row.get::<_, i64>(3), (0..rows).map(|i| i % 256).sum::<i64>());
    assert_eq!(row.get::<_, i64>(2), (0..rows).filter(|i| i % 7 != 0).count() as i64);
    // The connection goes on working after COPY IN, in the extended protocol too.
    let got: i64 = client.query_one("SELECT $1::int8", &[&42i64]).await?.get(0);
    assert_eq!(got, 42);

    let stream = client.copy_out("COPY (SELECT * FROM copy_t ORDER BY id) TO STDOUT").await?;
    let chunks: Vec<bytes::Bytes> = patiently("COPY OUT", stream.try_collect()).await??;
    let out: Vec<u8> = chunks.concat();
    assert_eq!(String::from_utf8(out)?, text);
    let got: i64 = client.query_one("SELECT count(*) FROM copy_t", &[]).await?.get(0);
    assert_eq!(got, rows);
    Ok(())
}

/// COPY OUT alone, through the extended protocol (tokio-postgres).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_of_thousands_of_rows() -> anyhow::Result<()> {
    let bed = pooled(1).await?;
    let client = bed.connect().await?;
    let stream =
        client.copy_out("COPY (SELECT g, 'label ' || g, g % 3 = 0 FROM generate_series(1, 4000) g) TO STDOUT").await?;
    let chunks: Vec<bytes::Bytes> = patiently("COPY OUT", stream.try_collect()).await??;
    let text = String::from_utf8(chunks.concat())?;
    let expected: String =
        (1..=4000).map(|g| format!("{g}\tlabel {g}\t{}\n", if g % 3 == 0 { "t" } else { "f" })).collect();
    assert_eq!(text, expected);
    // Another client gets the only server connection afterwards.
    let other = bed.connect().await?;
    assert_eq!(other.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(client.query_one("SELECT 2::int8", &[]).await?.get::<_, i64>(0), 2);
    Ok(())
}

/// COPY FROM STDIN and TO STDOUT in the simple protocol, as psql does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_through_the_simple_protocol() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n".into(),
        ..BedSpec::default()
    })
    .await?;
    let mut c = RawConn::connect(bed.addr).await?;
    c.login(&app_startup(), APP_PASSWORD).await?;
    assert!(c.simple_query("CREATE TABLE simple_copy_t (id int, name text)").await?.errors.is_empty());
    c.send(&fe::query("COPY simple_copy_t FROM STDIN")).await?;
    let m = c.recv().await?.context("closed")?;
    assert_eq!(m.tag, b'G', "expected CopyInResponse, got {:?}", m.error());
    let data: String = (0..3000).map(|i| format!("{i}\tname {i}\n")).collect();
    for chunk in data.as_bytes().chunks(4096) {
        c.send(&fe::copy_data(chunk)).await?;
    }
    c.send(&fe::copy_done()).await?;
    let out = c.until_ready().await?;
    assert!(out.errors.is_empty(), "{:?}", out.errors);
    assert_eq!(out.status, b'I');
    // A failed COPY (CopyFail) is rolled back and the session goes on.
    c.send(&fe::query("COPY simple_copy_t FROM STDIN")).await?;
    assert_eq!(c.recv().await?.context("closed")?.tag, b'G');
    c.send(&fe::copy_data(b"99999\tnever\n")).await?;
    c.send(&fe::msg(b'f', b"client gave up\0")).await?;
    let out = c.until_ready().await?;
    assert_eq!(out.errors.first().map(|e| e.code.as_str()), Some("57014"), "{out:?}");
    // COPY OUT.
    let out = c.simple_query("COPY (SELECT * FROM simple_copy_t ORDER BY id) TO STDOUT").await?;
    let copied: Vec<u8> = out.messages.iter().filter(|m| m.tag == b'd').flat_map(|m| m.body.to_vec()).collect();
    assert_eq!(String::from_utf8(copied)?, data);
    // The server connection went back to the pool.
    let other = bed.connect().await?;
    let n: i64 = other.query_one("SELECT count(*) FROM simple_copy_t", &[]).await?.get(0);
    assert_eq!(n, 3000);
    Ok(())
}

/// tokio-postgres sends Bind/Execute/Sync before the COPY data and CopyDone/
/// Sync after it; PostgreSQL ignores the first Sync while copying and answers
/// one ReadyForQuery. The server connection must still go back to the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_gives_the_server_connection_back() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nsize = 1\ncheckout_timeout = \"3s\"\n".into(),
        ..BedSpec::default()
    })
    .await?;
    let a = bed.connect().await?;
    a.batch_execute("CREATE TABLE copy_pool_t (id int)").await?;
    let sink = a.copy_in("COPY copy_pool_t FROM STDIN").await?;
    let mut sink = std::pin::pin!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n3\n")).await?;
    assert_eq!(sink.as_mut().finish().await?, 3);
    // `a` is idle and outside a transaction: another client must get the
    // only server connection.
    let b = bed.connect().await?;
    let got = patiently("query of a second client", b.query_one("SELECT count(*) FROM copy_pool_t", &[])).await?;
    let count: i64 = got.context("second client could not get the server connection after a's COPY")?.get(0);
    assert_eq!(count, 3);
    // And `a` still works afterwards, prepared statements included.
    let stmt = a.prepare("SELECT $1::int8 * 3").await?;
    for i in 0..3i64 {
        assert_eq!(a.query_one(&stmt, &[&i]).await?.get::<_, i64>(0), 3 * i);
        assert_eq!(b.query_one("SELECT $1::int8", &[&i]).await?.get::<_, i64>(0), i);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_reaches_the_running_query() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let client = bed.connect().await?;
    let other = bed.connect().await?;
    // Runs the sleep, waits until it is running on the server, cancels,
    // requires 57014.
    let client = cancel_a_running_sleep(client, bed.cluster.primary(), "cancel-me").await?;
    // Both clients go on working; the cancel hit only the right query.
    assert_eq!(client.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(other.query_one("SELECT 2::int8", &[]).await?.get::<_, i64>(0), 2);
    // A cancel while nothing runs is harmless.
    client.cancel_token().cancel_query(NoTls).await?;
    assert_eq!(client.query_one("SELECT 3::int8", &[]).await?.get::<_, i64>(0), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_delivery() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut listener = bed.connect_pumped(&bed.config()).await?;
    listener.client.batch_execute("LISTEN meridian_events").await?;
    // LISTEN pins the listener's server connection: it must stay attached
    // while other clients run transactions.
    let notifier = bed.connect().await?;
    for i in 0..3 {
        notifier.batch_execute(&format!("NOTIFY meridian_events, 'payload-{i}'")).await?;
    }
    notifier.query("SELECT pg_notify('meridian_events', $1)", &[&"from-extended"]).await?;
    notifier.batch_execute("BEGIN; NOTIFY meridian_events, 'in-tx'; COMMIT").await?;
    let mut payloads = Vec::new();
    while payloads.len() < 5 {
        match listener.next_message().await? {
            AsyncMessage::Notification(n) => {
                assert_eq!(n.channel(), "meridian_events");
                payloads.push(n.payload().to_owned());
            }
            other => anyhow::bail!("unexpected async message {other:?}"),
        }
    }
    assert_eq!(payloads, ["payload-0", "payload-1", "payload-2", "from-extended", "in-tx"]);
    // The listener can still query, and a notification sent while it is
    // idle arrives without it sending anything.
    assert_eq!(listener.client.query_one("SELECT 7::int8", &[]).await?.get::<_, i64>(0), 7);
    notifier.batch_execute("NOTIFY meridian_events, 'late'").await?;
    match listener.next_message().await? {
        AsyncMessage::Notification(n) => assert_eq!(n.payload(), "late"),
        other => anyhow::bail!("unexpected async message {other:?}"),
    }
    // UNLISTEN: no more deliveries.
    listener.client.batch_execute("UNLISTEN meridian_events").await?;
    notifier.batch_execute("NOTIFY meridian_events, 'after-unlisten'").await?;
    listener.client.batch_execute("SELECT 1").await?;
    assert!(listener.messages.try_recv().is_err(), "notification delivered after UNLISTEN");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_are_relayed() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut c = bed.connect_pumped(&bed.config()).await?;
    c.client.batch_execute("DO $$BEGIN RAISE NOTICE 'hi'; END$$").await?;
    match c.next_message().await? {
        AsyncMessage::Notice(n) => {
            assert_eq!(n.message(), "hi");
            assert_eq!(n.severity(), "NOTICE");
            assert_eq!(n.code().code(), "00000");
        }
        other => anyhow::bail!("unexpected async message {other:?}"),
    }
    // A warning with its own SQLSTATE, through the extended protocol.
    c.client.execute("DO $$BEGIN RAISE WARNING 'careful' USING ERRCODE = '01000', DETAIL = 'd'; END$$", &[]).await?;
    match c.next_message().await? {
        AsyncMessage::Notice(n) => {
            assert_eq!((n.severity(), n.message(), n.detail()), ("WARNING", "careful", Some("d")));
        }
        other => anyhow::bail!("unexpected async message {other:?}"),
    }
    // A notice from the server itself (not from RAISE).
    c.client.batch_execute("DROP TABLE IF EXISTS no_such_table_for_notice").await?;
    match c.next_message().await? {
        AsyncMessage::Notice(n) => assert!(n.message().contains("does not exist"), "{}", n.message()),
        other => anyhow::bail!("unexpected async message {other:?}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_sqlstate_and_the_connection_stays_usable() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let client = bed.connect().await?;
    client.batch_execute("CREATE TABLE err_t (id int PRIMARY KEY)").await?;
    let cases: &[(&str, &str)] = &[
        ("SELECT 1/0", "22012"),
        ("SELECT * FROM no_such_table", "42P01"),
        ("SELEKT 1", "42601"),
        ("INSERT INTO err_t VALUES (1), (1)", "23505"),
        ("SELECT no_such_column FROM err_t", "42703"),
        ("SELECT 'x'::int", "22P02"),
    ];
    for (sql, code) in cases {
        // Simple protocol.
        let e = client.batch_execute(sql).await.err().with_context(|| format!("{sql} succeeded"))?;
        assert_eq!(sqlstate(&e), Some(*code), "{sql}: {e}");
        assert_eq!(client.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
        // Extended protocol (an error at Parse or at Execute).
        let e = client.query(*sql, &[]).await.err().with_context(|| format!("{sql} succeeded"))?;
        assert_eq!(sqlstate(&e), Some(*code), "{sql}: {e}");
        assert_eq!(client.query_one("SELECT $1::int8", &[&2i64]).await?.get::<_, i64>(0), 2);
    }
    let e = client.query_one("SELECT $1::int8 / 0", &[&1i64]).await.err().context("division by zero succeeded")?;
    let db = e.as_db_error().context("not a server error")?;
    assert_eq!((db.severity(), db.code().code()), ("ERROR", "22012"));
    assert_eq!(db.message(), "division by zero");
    // An error in the middle of a multi-statement query stops it there.
    let e = client.batch_execute("INSERT INTO err_t VALUES (5); SELECT 1/0; INSERT INTO err_t VALUES (6)").await;
    assert_eq!(e.err().as_ref().and_then(sqlstate), Some("22012"));
    let n: i64 = client.query_one("SELECT count(*) FROM err_t WHERE id IN (5, 6)", &[]).await?.get(0);
    assert_eq!(n, 0, "a failed implicit transaction was partly committed");
    Ok(())
}

/// A `SET` is reported (ParameterStatus) and stays in force on later
/// transactions, also when they run on another server connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_is_reported_and_follows_the_client() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let a = bed.connect_pumped(&bed.config()).await?;
    let msgs = a.client.simple_query("SET application_name = 'renamed by set'; SELECT pg_backend_pid()").await?;
    let first_pid = first_column(&msgs)[0].clone().context("no pid")?;
    assert_eq!(a.parameter("application_name").as_deref(), Some("renamed by set"));
    // Another client takes the connection `a` used and keeps it.
    let mut b = bed.connect().await?;
    let hold = b.transaction().await?;
    let b_pid: i32 = hold.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
    assert_eq!(b_pid.to_string(), first_pid, "b should have been given the only idle connection");
    // So `a` now runs on a second connection, which must look like its own.
    let row = a.client.query_one("SELECT current_setting('application_name'), pg_backend_pid()", &[]).await?;
    assert_ne!(row.get::<_, i32>(1).to_string(), first_pid);
    assert_eq!(row.get::<_, String>(0), "renamed by set");
    let msgs = a.client.simple_query("SHOW application_name").await?;
    assert_eq!(first_column(&msgs), vec![Some("renamed by set".to_owned())]);
    // And `b`, on the connection that `a` changed, still has its own name.
    let name: String = hold.query_one("SELECT current_setting('application_name')", &[]).await?.get(0);
    assert_eq!(name, "", "b sees a's application_name");
    hold.commit().await?;
    let name: String = b.query_one("SELECT current_setting('application_name')", &[]).await?.get(0);
    assert_eq!(name, "");
    // SET TIME ZONE and RESET are reported as well.
    a.client.batch_execute("SET TIME ZONE 'Asia/Tokyo'").await?;
    assert_eq!(a.parameter("TimeZone").as_deref(), Some("Asia/Tokyo"));
    a.client.batch_execute("RESET application_name").await?;
    let name: String = a.client.query_one("SELECT current_setting('application_name')", &[]).await?.get(0);
    assert_eq!(name, "");
    Ok(())
}

/// Startup parameters (as real startup parameters and in `options`) are in
/// force for every transaction, with one server connection shared by
/// clients that all want something different.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_parameters_apply_to_every_transaction() -> anyhow::Result<()> {
    let bed = pooled(1).await?;
    struct Want {
        params: Vec<(&'static str, &'static str)>,
        datestyle: &'static str,
        timezone: &'static str,
        search_path: &'static str,
        statement_timeout: &'static str,
        app: &'static str,
        float_digits: &'static str,
        date_text: &'static str,
    }
    let wants = vec![
        Want {
            params: vec![
                ("DateStyle", "SQL, DMY"),
                ("TimeZone", "Asia/Tokyo"),
                ("application_name", "client-one"),
                ("extra_float_digits", "0"),
                ("options", "-c search_path=one_schema,public -c statement_timeout=1234"),
            ],
            datestyle: "SQL, DMY",
            timezone: "Asia/Tokyo",
            search_path: "one_schema,public",
            statement_timeout: "1234ms",
            app: "client-one",
            float_digits: "0",
            date_text: "02/01/2024",
        },
        Want {
            params: vec![
                ("DateStyle", "German"),
                ("TimeZone", "America/New_York"),
                ("application_name", "client-two"),
                ("extra_float_digits", "-3"),
                ("options", "--search_path=two_schema -cstatement_timeout=5s"),
            ],
            datestyle: "German, DMY",
            timezone: "America/New_York",
            search_path: "two_schema",
            statement_timeout: "5s",
            app: "client-two",
            float_digits: "-3",
            date_text: "02.01.2024",
        },
        Want {
            params: vec![],
            datestyle: "ISO, MDY",
            timezone: "",
            search_path: "\"$user\", public",
            statement_timeout: "0",
            app: "",
            float_digits: "1",
            date_text: "2024-01-02",
        },
    ];
    let default_tz = bed.direct_value("SHOW TimeZone").await?.context("no TimeZone")?;
    let mut conns = Vec::new();
    for w in &wants {
        let mut c = RawConn::connect(bed.addr).await?;
        let mut params = app_startup();
        params.extend(w.params.iter().copied());
        let info = c.login(&params, APP_PASSWORD).await?;
        // What the client is told at login matches what it asked for.
        assert_eq!(info.parameters.get("DateStyle").map(String::as_str), Some(w.datestyle), "{info:?}");
        let tz = if w.timezone.is_empty() { default_tz.as_str() } else { w.timezone };
        assert_eq!(info.parameters.get("TimeZone").map(String::as_str), Some(tz), "{info:?}");
        assert_eq!(info.parameters.get("application_name").map(String::as_str), Some(w.app), "{info:?}");
        conns.push(c);
    }
    let check = "SELECT current_setting('DateStyle'), current_setting('TimeZone'), current_setting('search_path'), \
                 current_setting('statement_timeout'), current_setting('application_name'), \
                 current_setting('extra_float_digits'), '2024-01-02'::date::text";
    for round in 0..5 {
        for (c, w) in conns.iter_mut().zip(&wants) {
            // Alternate simple and extended protocol.
            let out = if round % 2 == 0 {
                c.simple_query(check).await?
            } else {
                c.send(&[fe::parse("", check), fe::bind("", "", &[]), fe::execute(""), fe::sync()].concat()).await?;
                c.until_ready().await?
            };
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            let row = out.rows.first().context("no row")?;
            let tz = if w.timezone.is_empty() { default_tz.as_str() } else { w.timezone };
            let want = [w.datestyle, tz, w.search_path, w.statement_timeout, w.app, w.float_digits, w.date_text];
            let got: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
            assert_eq!(got, want, "round {round}");
        }
    }
    // statement_timeout from `options` really applies.
    let out = conns[0].simple_query("SELECT pg_sleep(10)").await?;
    assert_eq!(out.errors.first().map(|e| e.code.as_str()), Some("57014"), "{out:?}");
    let out = conns[2].simple_query("SELECT pg_sleep(0.1)").await?;
    assert!(out.errors.is_empty());
    // tokio-postgres' own options and application_name, on the same connection.
    let mut config = bed.config();
    config.application_name("from-driver").options("-c statement_timeout=777 -c work_mem=1234kB");
    let d = config.connect(NoTls).await?;
    tokio::spawn(d.1);
    for _ in 0..3 {
        let row =
            d.0.query_one(
                "SELECT current_setting('application_name'), current_setting('statement_timeout'), \
                 current_setting('work_mem')",
                &[],
            )
            .await?;
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2)),
            ("from-driver".into(), "777ms".into(), "1234kB".into())
        );
        let out =
            conns[1].simple_query("SELECT current_setting('work_mem'), current_setting('application_name')").await?;
        assert_eq!(out.rows[0][1].as_deref(), Some("client-two"));
        assert_eq!(out.rows[0][0], bed.direct_value("SELECT current_setting('work_mem')").await?);
    }
    Ok(())
}

/// Puts `a` on a different server connection than the one it last used:
/// `b` takes the only idle connection and holds it in a transaction.
async fn with_other_connection<F, Fut, T>(bed: &TestBed, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut b = bed.connect().await?;
    let hold = b.transaction().await?;
    hold.query_one("SELECT 1", &[]).await?;
    let r = f().await;
    hold.rollback().await?;
    r
}

async fn app_name(c: &tokio_postgres::Client) -> anyhow::Result<String> {
    Ok(c.query_one("SELECT current_setting('application_name')", &[]).await?.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_in_a_rolled_back_transaction_is_not_replayed() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut config = bed.config();
    config.application_name("original");
    let (a, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    a.batch_execute("BEGIN").await?;
    a.batch_execute("SET application_name = 'rolled back'").await?;
    a.batch_execute("ROLLBACK").await?;
    assert_eq!(app_name(&a).await?, "original");
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "original");
    // Same through the extended protocol and an error-aborted transaction.
    a.batch_execute("BEGIN").await?;
    a.execute("SET application_name = 'aborted'", &[]).await?;
    assert!(a.batch_execute("SELECT 1/0").await.is_err());
    a.batch_execute("COMMIT").await?;
    assert_eq!(app_name(&a).await?, "original");
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "original");
    // A committed one is replayed.
    a.batch_execute("BEGIN").await?;
    a.batch_execute("SET application_name = 'committed'").await?;
    a.batch_execute("COMMIT").await?;
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "committed");
    // SET LOCAL never outlives its transaction.
    a.batch_execute("BEGIN; SET LOCAL application_name = 'local'; COMMIT").await?;
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "committed");
    Ok(())
}

/// `BEGIN; SET ...; ROLLBACK; SELECT 1` in one Query: the last command is not
/// the ROLLBACK, but the SET was still undone by PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_rolled_back_inside_one_query_string_is_not_replayed() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut config = bed.config();
    config.application_name("original");
    let (a, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    a.batch_execute("BEGIN; SET application_name = 'rolled back'; ROLLBACK; SELECT 1").await?;
    assert_eq!(app_name(&a).await?, "original");
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "original");
    Ok(())
}

/// `ROLLBACK TO SAVEPOINT` undoes a SET made after the savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_rolled_back_to_a_savepoint_is_not_replayed() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut config = bed.config();
    config.application_name("original");
    let (a, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    for sql in ["BEGIN", "SAVEPOINT s", "SET application_name = 'undone'", "ROLLBACK TO SAVEPOINT s", "COMMIT"] {
        a.batch_execute(sql).await?;
    }
    assert_eq!(app_name(&a).await?, "original");
    assert_eq!(with_other_connection(&bed, || app_name(&a)).await?, "original");
    Ok(())
}

/// Session pooling from `[pool] mode = "session"`: one backend per client
/// for its whole session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_keeps_one_backend() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nmode = \"session\"\nsize = 3\n".into(),
        ..BedSpec::default()
    })
    .await?;
    let a = bed.connect().await?;
    let b = bed.connect().await?;
    let pid_a = backend_pid(&a).await?;
    let pid_b = backend_pid(&b).await?;
    assert_ne!(pid_a, pid_b);
    for _ in 0..10 {
        assert_eq!(backend_pid(&a).await?, pid_a);
        a.batch_execute("BEGIN; SELECT 1; COMMIT").await?;
        assert_eq!(backend_pid(&b).await?, pid_b);
    }
    // Session state lives on as on a direct connection.
    a.batch_execute("SET work_mem = '3MB'; PREPARE sql_prep AS SELECT 41 + 1; CREATE TEMP TABLE sess_tmp (x int)")
        .await?;
    let msgs = a.simple_query("EXECUTE sql_prep").await?;
    assert_eq!(first_column(&msgs), vec![Some("42".to_owned())]);
    let wm: String = a.query_one("SELECT current_setting('work_mem')", &[]).await?.get(0);
    assert_eq!(wm, "3MB");
    a.execute("INSERT INTO sess_tmp VALUES (1)", &[]).await?;
    assert_eq!(backend_pid(&a).await?, pid_a);
    Ok(())
}

/// Session pooling for one user (`pool_mode = "session"` in the users file)
/// while the node default is transaction pooling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_pooling_per_user() -> anyhow::Result<()> {
    let (bed, config) = TestBed::with_session_user("[pool]\nsize = 2\n").await?;
    let (s, conn) = config.connect(NoTls).await?;
    tokio::spawn(conn);
    let pid = backend_pid(&s).await?;
    // Meanwhile an app-user (transaction mode) client churns.
    let app = bed.connect().await?;
    for _ in 0..10 {
        app.batch_execute("SELECT 1").await?;
        assert_eq!(backend_pid(&s).await?, pid);
    }
    let user: String = s.query_one("SELECT current_user::text", &[]).await?.get(0);
    assert_eq!(user, "sess");
    let user: String = app.query_one("SELECT current_user::text", &[]).await?.get(0);
    assert_eq!(user, APP_USER);
    Ok(())
}

/// A session-mode server connection goes back to the pool when its client
/// leaves; the next client must not inherit the previous session's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_does_not_leak_to_the_next_session() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nmode = \"session\"\nsize = 1\n".into(),
        ..BedSpec::default()
    })
    .await?;
    let first = bed.connect().await?;
    let first_pid = backend_pid(&first).await?;
    first
        .batch_execute(
            "PREPARE leaked_stmt AS SELECT 1;
             CREATE TEMP TABLE leaked_tmp (x int);
             SELECT pg_advisory_lock(4242);
             SET work_mem = '7MB';
             DECLARE leaked_cur CURSOR WITH HOLD FOR SELECT 1;
             LISTEN leaked_channel;",
        )
        .await?;
    drop(first);
    let second = bed.connect().await?;
    let reused = backend_pid(&second).await? == first_pid;
    let mut leaks = Vec::new();
    if second.batch_execute("PREPARE leaked_stmt AS SELECT 2").await.is_err() {
        leaks.push("prepared statement");
    }
    let tmp: Option<String> = second.query_one("SELECT to_regclass('pg_temp.leaked_tmp')::text", &[]).await?.get(0);
    if tmp.is_some() {
        leaks.push("temp table");
    }
    let wm: String = second.query_one("SELECT current_setting('work_mem')", &[]).await?.get(0);
    if wm == "7MB" {
        leaks.push("SET work_mem");
    }
    let cursors: i64 = second.query_one("SELECT count(*) FROM pg_cursors WHERE name = 'leaked_cur'", &[]).await?.get(0);
    if cursors > 0 {
        leaks.push("WITH HOLD cursor");
    }
    let listening: i64 = second.query_one("SELECT count(*) FROM pg_listening_channels()", &[]).await?.get(0);
    if listening > 0 {
        leaks.push("LISTEN");
    }
    let locked = bed.direct_value("SELECT pg_try_advisory_lock(4242)").await?;
    if locked.as_deref() != Some("t") {
        leaks.push("advisory lock");
    }
    assert!(leaks.is_empty(), "session state left by a previous client (backend reused: {reused}): {leaks:?}");
    Ok(())
}

/// In transaction mode, statements that create session state pin the client
/// to its server connection, so the state works across statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_state_pins_in_transaction_mode() -> anyhow::Result<()> {
    // Four pinned clients at once plus two that churn.
    let bed = pooled(6).await?;
    // Other clients keep connections busy in turn.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut churn = Vec::new();
    for _ in 0..2 {
        let c = bed.connect().await?;
        let stop = stop.clone();
        churn.push(tokio::spawn(async move {
            while !stop.is_cancelled() {
                c.batch_execute("BEGIN; SELECT pg_sleep(0.01); COMMIT").await?;
            }
            anyhow::Ok(())
        }));
    }

    let temp = bed.connect().await?;
    temp.batch_execute("CREATE TEMP TABLE pinned_tmp (x int)").await?;
    let temp_pid = backend_pid(&temp).await?;
    for i in 0..20 {
        temp.execute("INSERT INTO pinned_tmp VALUES ($1)", &[&i]).await?;
        assert_eq!(backend_pid(&temp).await?, temp_pid);
    }
    let n: i64 = temp.query_one("SELECT count(*) FROM pinned_tmp", &[]).await?.get(0);
    assert_eq!(n, 20);

    let lock = bed.connect().await?;
    lock.query_one("SELECT pg_advisory_lock(777)", &[]).await?;
    for _ in 0..10 {
        lock.batch_execute("SELECT 1").await?;
    }
    assert_eq!(bed.direct_value("SELECT pg_try_advisory_lock(777)").await?.as_deref(), Some("f"));
    lock.query_one("SELECT pg_advisory_unlock(777)", &[]).await?;
    assert_eq!(bed.direct_value("SELECT pg_try_advisory_lock(777)").await?.as_deref(), Some("t"));
    bed.direct_value("SELECT pg_advisory_unlock(777)").await?;

    let cursor = bed.connect().await?;
    cursor.batch_execute("DECLARE held CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 30) g").await?;
    let mut got = Vec::new();
    for _ in 0..3 {
        let msgs = cursor.simple_query("FETCH 10 FROM held").await?;
        got.extend(first_column(&msgs).into_iter().flatten());
        cursor.batch_execute("SELECT 1").await?;
    }
    cursor.batch_execute("CLOSE held").await?;
    assert_eq!(got, (1..=30).map(|i| i.to_string()).collect::<Vec<_>>());

    let prepared = bed.connect().await?;
    prepared.batch_execute("PREPARE by_sql (int) AS SELECT $1 * 10").await?;
    for i in 0..5 {
        let msgs = prepared.simple_query(&format!("EXECUTE by_sql({i})")).await?;
        assert_eq!(first_column(&msgs), vec![Some((i * 10).to_string())]);
    }

    // When a pinned client leaves, its state goes with its server connection.
    drop(temp);
    drop(lock);
    drop(cursor);
    drop(prepared);
    stop.cancel();
    for t in churn {
        patiently("churn task", t).await???;
    }
    let fresh = bed.connect().await?;
    for _ in 0..5 {
        let tmp: Option<String> = fresh.query_one("SELECT to_regclass('pg_temp.pinned_tmp')::text", &[]).await?.get(0);
        assert_eq!(tmp, None);
        let cursors: i64 = fresh.query_one("SELECT count(*) FROM pg_cursors WHERE name = 'held'", &[]).await?.get(0);
        assert_eq!(cursors, 0);
    }
    Ok(())
}

/// A Parse answered after a Flush, with Bind/Execute/Sync still to come: the
/// server connection is in the middle of an extended-protocol exchange and
/// must not serve anyone else until the Sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_before_sync_keeps_the_server_connection() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        extra_config: "[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n".into(),
        ..BedSpec::default()
    })
    .await?;
    let mut a = RawConn::connect(bed.addr).await?;
    a.login(&app_startup(), APP_PASSWORD).await?;
    a.send(&[fe::parse("", "SELECT 'unnamed of a'"), fe::flush()].concat()).await?;
    let m = a.recv().await?.context("closed")?;
    assert_eq!(m.tag, b'1', "expected ParseComplete, got {:?}", m.error());
    // Another client wants the only server connection meanwhile.
    let b = bed.connect().await?;
    let other = tokio::spawn(async move { b.simple_query("SELECT 'b'").await.map(|_| ()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.send(&[fe::bind("", "", &[]), fe::execute(""), fe::sync()].concat()).await?;
    let out = a.until_ready().await?;
    assert!(out.errors.is_empty(), "a's unnamed statement was lost: {:?}", out.errors);
    assert_eq!(out.value(), Some("unnamed of a"));
    patiently("second client", other).await???;
    Ok(())
}

/// The proxy's own checks do not mistake a client for another: many clients
/// interleaving statements with distinct startup settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_see_only_their_own_settings() -> anyhow::Result<()> {
    let bed = pooled(2).await?;
    let mut tasks = Vec::new();
    for c in 0..6 {
        let mut config = bed.config();
        config.application_name(format!("client-{c}"));
        tasks.push(tokio::spawn(async move {
            let (client, conn) = config.connect(NoTls).await?;
            tokio::spawn(conn);
            client.batch_execute(&format!("SET work_mem = '{}kB'", 1000 + c)).await?;
            for _ in 0..30 {
                let row = client
                    .query_one("SELECT current_setting('application_name'), current_setting('work_mem')", &[])
                    .await?;
                anyhow::ensure!(row.get::<_, String>(0) == format!("client-{c}"));
                anyhow::ensure!(row.get::<_, String>(1) == format!("{}kB", 1000 + c));
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        patiently("client task", t).await???;
    }
    Ok(())
}

/// Servers given by their Unix-domain socket (`/socket/dir:port`): queries,
/// the extended protocol, a cancel, and the health probes that make the
/// replica serve reads all go over the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_over_unix_sockets() -> anyhow::Result<()> {
    let bed = TestBed::start_with(BedSpec {
        cluster: harness::ClusterSpec::default().with_replicas(1),
        routed: true,
        over_unix: true,
        ..BedSpec::default()
    })
    .await?;
    let client = bed.connect().await?;
    client.batch_execute("CREATE TABLE over_unix (id int8 PRIMARY KEY)").await?;
    // Far more than a socket buffer, both ways.
    let big = "y".repeat(2_000_000);
    let echoed: String = client.query_one("SELECT $1::text", &[&big]).await?.get(0);
    assert!(echoed == big, "a large value came back changed");
    client.execute("INSERT INTO over_unix VALUES ($1)", &[&7i64]).await?;
    // A server connection over a Unix socket has no server address.
    let row = client.query_one("SELECT inet_server_addr() IS NULL, pg_is_in_recovery()", &[]).await?;
    assert!(row.get::<_, bool>(0), "the primary's connection is not a Unix socket");
    // The replica is probed over its socket too: once it is known healthy
    // and caught up, reads go there.
    eventually("a read served by the replica", || async {
        let row = client.query_one("SELECT inet_server_addr() IS NULL, pg_is_in_recovery()", &[]).await?;
        Ok(row.get::<_, bool>(0) && row.get::<_, bool>(1))
    })
    .await?;

    let replica = bed.cluster.replicas().first().context("a replica")?;
    let client = cancel_a_running_sleep(client, replica, "cancel-over-unix").await?;
    assert_eq!(client.query_one("SELECT count(*) FROM over_unix", &[]).await?.get::<_, i64>(0), 1);
    Ok(())
}
