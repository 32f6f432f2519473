//! Hostile and broken clients, with raw sockets and hand-built bytes:
//! oversized and malformed messages, garbage startup packets, silent and
//! vanishing clients, connection limits, idle transactions, unknown message
//! types. After each, other clients must still be served and the pool must
//! hand out clean server connections.

use std::time::Duration;

use anyhow::Context;
use integration_tests::{
    APP_PASSWORD, BedExtras, BedSpec, Outcome, RawConn, TestBed, app_startup, eventually, fe, patiently, sqlstate,
};

/// A bed with extra `[listen]` keys and extra config.
async fn bed(listen: &str, extra: &str) -> anyhow::Result<TestBed> {
    TestBed::start_custom(
        BedSpec { extra_config: extra.to_owned(), ..BedSpec::default() },
        BedExtras { listen: listen.to_owned(), ..BedExtras::default() },
    )
    .await
}

/// One server connection, so whatever a bad client leaves on it is what the
/// next client gets.
const ONE_CONN: &str = "[pool]\nsize = 1\ncheckout_timeout = \"20s\"\n";

async fn logged_in(bed: &TestBed) -> anyhow::Result<RawConn> {
    let mut c = RawConn::connect(bed.addr).await?;
    c.login(&app_startup(), APP_PASSWORD).await?;
    Ok(c)
}

/// The codes of the ErrorResponses in `msgs`.
fn error_codes(msgs: &[integration_tests::BackendMsg]) -> Vec<String> {
    msgs.iter().filter_map(|m| m.error()).map(|e| e.code).collect()
}

fn ok(out: &Outcome) -> anyhow::Result<()> {
    anyhow::ensure!(out.errors.is_empty(), "errors: {:?}", out.errors);
    Ok(())
}

/// Fresh clients are served, and the server connection they get carries
/// nothing from earlier clients: no open transaction, no temp table, no
/// settings, no advisory lock.
async fn assert_pool_clean(bed: &TestBed) -> anyhow::Result<()> {
    let default_work_mem = bed.direct_value("SELECT current_setting('work_mem')").await?;
    for round in 0..3 {
        let client = patiently("connecting a fresh client", bed.connect()).await??;
        // A simple query: its transaction starts with its statement.
        let msgs = patiently(
            "query of a fresh client",
            client.simple_query(
                "SELECT now() = statement_timestamp(), pg_current_xact_id_if_assigned() IS NULL, \
                 to_regclass('pg_temp.vanished_tmp') IS NULL, current_setting('application_name'), \
                 current_setting('work_mem')",
            ),
        )
        .await??;
        let row = msgs
            .iter()
            .find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .context("no row")?;
        assert_eq!(row.get(0), Some("t"), "round {round}: a fresh client is inside an older transaction");
        assert_eq!(row.get(1), Some("t"), "round {round}: a fresh client's transaction already has an xid");
        assert_eq!(row.get(2), Some("t"), "round {round}: a vanished client's temp table is visible");
        assert_eq!(row.get(3), Some(""), "round {round}: a vanished client's application_name");
        assert_eq!(row.get(4), default_work_mem.as_deref(), "round {round}: a vanished client's work_mem");
        // A transaction of its own works and commits.
        let mut client = client;
        let tx = client.transaction().await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS clean_t (round int)").await?;
        tx.execute("INSERT INTO clean_t VALUES ($1)", &[&round]).await?;
        tx.commit().await?;
    }
    eventually("the vanished client's advisory lock is free", || async {
        let got = bed.direct_value("SELECT pg_try_advisory_lock(99)").await?;
        if got.as_deref() == Some("t") {
            bed.direct_value("SELECT pg_advisory_unlock(99)").await?;
        }
        Ok(got.as_deref() == Some("t"))
    })
    .await?;
    Ok(())
}

/// Leave session state behind, then vanish without Terminate.
async fn dirty_and_vanish(mut c: RawConn, last: &[u8]) -> anyhow::Result<()> {
    ok(&c.simple_query("SET application_name = 'vanished'; SET work_mem = '9MB'").await?)?;
    c.send(last).await?;
    // Give the bytes a moment to reach the node, then cut the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_is_refused() -> anyhow::Result<()> {
    let bed = bed("max_message_size = \"1kB\"", ONE_CONN).await?;
    // Under the limit: fine.
    let mut c = logged_in(&bed).await?;
    let sql = format!("SELECT '{}'", "x".repeat(900));
    ok(&c.simple_query(&sql).await?)?;
    // Over it: 08P01, then the connection is closed.
    let big = format!("SELECT '{}'", "x".repeat(2048));
    c.send(&fe::query(&big)).await?;
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["08P01"], "{seen:?}");
    // Announced but never sent: refused on the header alone.
    let mut c = logged_in(&bed).await?;
    c.send(&[b'Q', 0, 1, 0, 0]).await?;
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["08P01"], "{seen:?}");
    // Inside a transaction (the client holds a server connection).
    let mut c = logged_in(&bed).await?;
    ok(&c.simple_query("BEGIN; CREATE TEMP TABLE vanished_tmp (x int); SELECT pg_advisory_lock(99)").await?)?;
    c.send(&fe::query(&big)).await?;
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["08P01"], "{seen:?}");
    // Oversized Parse (extended protocol) too.
    let mut c = logged_in(&bed).await?;
    c.send(&[fe::parse("", &big), fe::sync()].concat()).await?;
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["08P01"], "{seen:?}");
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_length_is_a_protocol_violation() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    for len in [0i32, 2, 3, -1, i32::MIN] {
        let mut c = logged_in(&bed).await?;
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(b"SELECT 1\0");
        c.send(&msg).await?;
        let seen = c.until_closed().await?;
        assert_eq!(error_codes(&seen), ["08P01"], "length {len}: {seen:?}");
    }
    // The same while attached to a server connection in a transaction.
    let mut c = logged_in(&bed).await?;
    ok(&c.simple_query("BEGIN; SET LOCAL work_mem = '9MB'").await?)?;
    c.send(&[b'Q', 0, 0, 0, 1]).await?;
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["08P01"], "{seen:?}");
    // After a complete good message in the same packet.
    let mut c = logged_in(&bed).await?;
    c.send(&[fe::query("SELECT 1"), vec![b'Q', 0, 0, 0, 0]].concat()).await?;
    let seen = c.until_closed().await?;
    assert!(error_codes(&seen).contains(&"08P01".to_owned()), "{seen:?}");
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_startup_packets_are_refused() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let mut unsupported = 16i32.to_be_bytes().to_vec();
    unsupported.extend_from_slice(&0x04d2_162ei32.to_be_bytes());
    unsupported.extend_from_slice(b"user\0app\0");
    let mut no_terminator = fe::startup(&app_startup());
    let n = no_terminator.len();
    no_terminator[n - 1] = b'x';
    let mut not_utf8 = fe::startup(&[("user", "\u{00e9}")]);
    if let Some(b) = not_utf8.iter_mut().rev().find(|b| **b == 0xa9) {
        *b = 0xff;
    }
    let mut too_big = 20_000i32.to_be_bytes().to_vec();
    too_big.extend_from_slice(&196608i32.to_be_bytes());
    too_big.extend(std::iter::repeat_n(b'a', 19_992));
    let mut bad_ssl = 12i32.to_be_bytes().to_vec();
    bad_ssl.extend_from_slice(&80877103i32.to_be_bytes());
    bad_ssl.extend_from_slice(b"abcd");
    let mut version_2 = 17i32.to_be_bytes().to_vec();
    version_2.extend_from_slice(&0x0002_0000i32.to_be_bytes());
    version_2.extend_from_slice(b"user\0app\0\0");
    let mut c = RawConn::connect(bed.addr).await?;
    c.send(&version_2).await?;
    let seen = patiently("protocol 2.0", c.until_closed()).await??;
    assert_eq!(error_codes(&seen), vec!["0A000".to_owned()], "protocol 2.0 gets PostgreSQL's answer");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("length below 8", vec![0, 0, 0, 4, 0, 3, 0, 0]),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0]),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: meridian\r\n\r\n".to_vec()),
        ("unsupported protocol", unsupported),
        ("parameters without terminator", no_terminator),
        ("invalid UTF-8", not_utf8),
        ("over 10000 bytes", too_big),
        ("SSLRequest with a body", bad_ssl),
        ("random bytes", (0..64u8).map(|i| i.wrapping_mul(97).wrapping_add(13)).collect()),
    ];
    for (what, bytes) in cases {
        let mut c = RawConn::connect(bed.addr).await?;
        // A refused client may be cut off before it finished sending.
        let _ = c.send(&bytes).await;
        let seen = patiently(what, c.until_closed()).await?.with_context(|| what.to_owned())?;
        assert!(
            seen.iter().all(|m| m.tag == b'E'),
            "{what}: the node answered more than an error: {:?}",
            seen.iter().map(|m| m.tag as char).collect::<String>()
        );
        for code in error_codes(&seen) {
            assert!(["08P01", "0A000", "22021", "28000"].contains(&code.as_str()), "{what}: {code}");
        }
    }
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_timeout_closes_silent_clients() -> anyhow::Result<()> {
    let bed = bed("startup_timeout = \"1s\"", ONE_CONN).await?;
    // Says nothing at all.
    let mut silent = RawConn::connect(bed.addr).await?;
    // Half a startup packet.
    let mut half = RawConn::connect(bed.addr).await?;
    half.send(&fe::startup(&app_startup())[..10]).await?;
    // Starts, then never answers the SCRAM challenge.
    let mut stalled = RawConn::connect(bed.addr).await?;
    stalled.send(&fe::startup(&app_startup())).await?;
    let m = stalled.recv().await?.context("closed before the challenge")?;
    assert_eq!(m.tag, b'R');
    // SSLRequest answered, nothing after.
    let mut after_ssl = RawConn::connect(bed.addr).await?;
    after_ssl.send(&fe::ssl_request()).await?;
    assert_eq!(after_ssl.recv_byte().await?, b'N');
    for (what, c) in
        [("silent", &mut silent), ("half", &mut half), ("stalled", &mut stalled), ("after SSL", &mut after_ssl)]
    {
        let seen = c.until_closed().await.with_context(|| format!("{what} client was not closed"))?;
        assert!(seen.iter().all(|m| m.tag == b'E'), "{what}: {seen:?}");
    }
    // A client that logs in normally stays connected past the timeout.
    let mut c = logged_in(&bed).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.simple_query("SELECT 1").await?.value(), Some("1"));
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_query() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let c = logged_in(&bed).await?;
    dirty_and_vanish(c, &fe::query("SELECT pg_sleep(2); SELECT pg_advisory_lock(99)")).await?;
    // A query in flight in the extended protocol, too.
    let c = logged_in(&bed).await?;
    dirty_and_vanish(
        c,
        &[fe::parse("", "SELECT pg_sleep(2)"), fe::bind("", "", &[]), fe::execute(""), fe::sync()].concat(),
    )
    .await?;
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    bed.connect().await?.batch_execute("CREATE TABLE vanish_t (id int)").await?;
    let c = logged_in(&bed).await?;
    dirty_and_vanish(
        c,
        &fe::query(
            "BEGIN; INSERT INTO vanish_t VALUES (1); LOCK TABLE vanish_t IN ACCESS EXCLUSIVE MODE; \
             CREATE TEMP TABLE vanished_tmp (x int); SELECT pg_advisory_lock(99)",
        ),
    )
    .await?;
    assert_pool_clean(&bed).await?;
    // The transaction's lock and row are gone with it.
    let client = bed.connect().await?;
    client.batch_execute("SET statement_timeout = '20s'").await?;
    patiently(
        "insert into the table the vanished client locked",
        client.execute("INSERT INTO vanish_t VALUES (2)", &[]),
    )
    .await??;
    let n: i64 = client.query_one("SELECT count(*) FROM vanish_t", &[]).await?.get(0);
    assert_eq!(n, 1, "the vanished client's uncommitted row was committed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_copy() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    bed.connect().await?.batch_execute("CREATE TABLE vanish_copy_t (id int)").await?;
    let mut c = logged_in(&bed).await?;
    ok(&c.simple_query("SET application_name = 'vanished'").await?)?;
    c.send(&fe::query("COPY vanish_copy_t FROM STDIN")).await?;
    let m = c.recv().await?.context("closed")?;
    assert_eq!(m.tag, b'G', "expected CopyInResponse, got {:?}", m.error());
    c.send(&fe::copy_data(b"1\n2\n3\n")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    assert_pool_clean(&bed).await?;
    let client = bed.connect().await?;
    let n: i64 = client.query_one("SELECT count(*) FROM vanish_copy_t", &[]).await?.get(0);
    assert_eq!(n, 0, "rows of an unfinished COPY were committed");
    // The same in the extended protocol.
    let mut c = logged_in(&bed).await?;
    c.send(
        &[fe::parse("", "COPY vanish_copy_t FROM STDIN"), fe::bind("", "", &[]), fe::execute(""), fe::sync()].concat(),
    )
    .await?;
    loop {
        let m = c.recv().await?.context("closed")?;
        anyhow::ensure!(m.tag != b'E', "{:?}", m.error());
        if m.tag == b'G' {
            break;
        }
    }
    c.send(&fe::copy_data(b"4\n5\n")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(c);
    assert_pool_clean(&bed).await?;
    let n: i64 = client.query_one("SELECT count(*) FROM vanish_copy_t", &[]).await?.get(0);
    assert_eq!(n, 0, "rows of an unfinished COPY were committed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_during_auth() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    for _ in 0..5 {
        // After the startup packet.
        let mut c = RawConn::connect(bed.addr).await?;
        c.send(&fe::startup(&app_startup())).await?;
        assert_eq!(c.recv().await?.context("closed")?.tag, b'R');
        drop(c);
        // After the SASL initial response.
        let mut c = RawConn::connect(bed.addr).await?;
        c.send(&fe::startup(&app_startup())).await?;
        assert_eq!(c.recv().await?.context("closed")?.tag, b'R');
        let scram = postgres_protocol::authentication::sasl::ScramSha256::new(
            APP_PASSWORD.as_bytes(),
            postgres_protocol::authentication::sasl::ChannelBinding::unsupported(),
        );
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)?;
        c.send(&out).await?;
        assert_eq!(c.recv().await?.context("closed")?.tag, b'R');
        drop(c);
        // Halfway through a message.
        let mut c = RawConn::connect(bed.addr).await?;
        c.send(&fe::startup(&app_startup())).await?;
        assert_eq!(c.recv().await?.context("closed")?.tag, b'R');
        c.send(&[b'p', 0, 0, 0, 100, b'S', b'C']).await?;
        drop(c);
    }
    assert_pool_clean(&bed).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_connections_refuses_the_next_client() -> anyhow::Result<()> {
    let bed = bed("max_client_connections = 2", "").await?;
    let first = bed.connect().await?;
    let second = bed.connect().await?;
    // The third is told why, then closed.
    let mut third = RawConn::connect(bed.addr).await?;
    let seen = third.until_closed().await?;
    assert_eq!(error_codes(&seen), ["53300"], "{seen:?}");
    assert_eq!(seen[0].error().map(|e| e.severity), Some("FATAL".to_owned()));
    let e = bed.config().connect(tokio_postgres::NoTls).await.err().context("a third client was admitted")?;
    if let Some(code) = sqlstate(&e) {
        assert_eq!(code, "53300", "{e}");
    }
    // The admitted clients are unaffected.
    assert_eq!(first.query_one("SELECT 1::int8", &[]).await?.get::<_, i64>(0), 1);
    assert_eq!(second.query_one("SELECT 2::int8", &[]).await?.get::<_, i64>(0), 2);
    // A place frees up when a client leaves.
    drop(first);
    eventually("a client admitted after another left", || async {
        match bed.config().connect(tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                Ok(c.query_one("SELECT 1", &[]).await.is_ok())
            }
            Err(_) => Ok(false),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_in_transaction_timeout_ends_the_session() -> anyhow::Result<()> {
    let bed = bed("idle_in_transaction_timeout = \"1s\"", ONE_CONN).await?;
    let mut c = logged_in(&bed).await?;
    let out = c.simple_query("BEGIN; CREATE TEMP TABLE vanished_tmp (x int); SELECT pg_advisory_lock(99)").await?;
    assert_eq!(out.status, b'T');
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["25P03"], "{seen:?}");
    // A failed transaction left idle is also ended.
    let mut c = logged_in(&bed).await?;
    let out = c.simple_query("BEGIN; SELECT 1/0").await?;
    assert_eq!(out.status, b'E');
    let seen = c.until_closed().await?;
    assert_eq!(error_codes(&seen), ["25P03"], "{seen:?}");
    // Busy (a long statement) or idle outside a transaction is not idle in one.
    let mut c = logged_in(&bed).await?;
    ok(&c.simple_query("BEGIN").await?)?;
    ok(&c.simple_query("SELECT pg_sleep(3)").await?)?;
    ok(&c.simple_query("COMMIT").await?)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.simple_query("SELECT 1").await?.value(), Some("1"));
    drop(c);
    // tokio-postgres sees the error as the end of its connection.
    let mut p = bed.connect_pumped(&bed.config()).await?;
    p.client.batch_execute("BEGIN").await?;
    let ended = patiently("the idle transaction to be ended", &mut p.ended).await??;
    let e = ended.err().context("connection ended cleanly")?;
    assert_eq!(sqlstate(&e), Some("25P03"), "{e}");
    assert_pool_clean(&bed).await
}

/// A message type Meridian does not know is PostgreSQL's to judge: the
/// client gets PostgreSQL's own error (it ends the connection), and the
/// server connection it broke is not handed to anyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_gets_postgresql_error() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let mut c = logged_in(&bed).await?;
    c.send(&fe::msg(b'y', b"what is this\0")).await?;
    let first = c
        .recv_within(Duration::from_secs(15))
        .await
        .context("no answer to an unknown message type")?
        .context("closed without an answer")?;
    let e = first.error().with_context(|| format!("expected an error, got {:?}", first.tag as char))?;
    assert_eq!(e.code, "08P01", "{e}");
    assert!(e.message.contains("invalid frontend message type"), "{e}");
    let _ = c.until_closed().await?;
    assert_pool_clean(&bed).await
}

/// Inside a transaction the client holds its server connection, so
/// PostgreSQL's answer to an unknown message type reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_inside_a_transaction() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let mut c = logged_in(&bed).await?;
    ok(&c.simple_query("BEGIN; CREATE TEMP TABLE vanished_tmp (x int)").await?)?;
    c.send(&fe::msg(b'y', b"what is this\0")).await?;
    let seen = c.until_closed().await?;
    let codes = error_codes(&seen);
    assert_eq!(codes.first().map(String::as_str), Some("08P01"), "{seen:?}");
    assert!(seen[0].error().is_some_and(|e| e.message.contains("invalid frontend message type")), "{seen:?}");
    assert_pool_clean(&bed).await
}

/// A CancelRequest with the wrong key cancels nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_is_ignored() -> anyhow::Result<()> {
    let bed = bed("", "").await?;
    let mut c = RawConn::connect(bed.addr).await?;
    let info = c.login(&app_startup(), APP_PASSWORD).await?;
    c.send(&fe::query("SELECT pg_sleep(3) /* wrong-key */")).await?;
    eventually("pg_sleep running", || async {
        let n = bed
            .direct_value(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%wrong-key%' \
                 AND pid <> pg_backend_pid()",
            )
            .await?;
        Ok(n.as_deref() == Some("1"))
    })
    .await?;
    for (pid, key) in [(info.pid, info.key.wrapping_add(1)), (info.pid.wrapping_add(1), info.key), (0, 0)] {
        let mut cancel = RawConn::connect(bed.addr).await?;
        let mut packet = 16i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80877102i32.to_be_bytes());
        packet.extend_from_slice(&pid.to_be_bytes());
        packet.extend_from_slice(&key.to_be_bytes());
        cancel.send(&packet).await?;
        let seen = cancel.until_closed().await?;
        assert!(seen.is_empty(), "a cancel request was answered: {seen:?}");
    }
    let out = c.until_ready().await?;
    assert!(out.errors.is_empty(), "a cancel with a wrong key cancelled the query: {:?}", out.errors);
    Ok(())
}

/// The unknown message of one client must not end another client's session.
/// (Whether a broken server connection reaches `b` depends on how soon `b`
/// checks one out, so while that bug exists this test can pass by luck; it
/// never fails on a correct node.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_message_type_does_not_hit_other_clients() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let mut a = logged_in(&bed).await?;
    let mut b = logged_in(&bed).await?;
    a.send(&fe::msg(b'y', b"what is this\0")).await?;
    let out = b.simple_query("SELECT 'b is fine'").await?;
    assert!(out.errors.is_empty(), "b got a's error: {:?}", out.errors);
    assert_eq!(out.value(), Some("b is fine"));
    drop(a);
    assert_pool_clean(&bed).await
}

/// Startup parameters PostgreSQL would refuse are refused, with its errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_startup_parameters_are_refused() -> anyhow::Result<()> {
    let bed = bed("", ONE_CONN).await?;
    let cases: &[((&str, &str), Option<&str>)] = &[
        (("DateStyle", "nonsense"), Some("22023")),
        (("no_such_parameter", "1"), Some("42704")),
        (("options", "-c statement_timeout=soon"), Some("22023")),
        (("options", "-x y"), Some("42601")),
        (("replication", "database"), None),
    ];
    for ((k, v), code) in cases {
        let mut c = RawConn::connect(bed.addr).await?;
        let mut params = app_startup();
        params.push((k, v));
        let e = c.login(&params, APP_PASSWORD).await.err().with_context(|| format!("{k}={v} accepted"))?;
        let e = e.downcast_ref::<integration_tests::PgError>().with_context(|| format!("{k}={v}: {e}"))?;
        assert_eq!(e.severity, "FATAL", "{k}={v}: {e}");
        if let Some(code) = code {
            assert_eq!(e.code, *code, "{k}={v}: {e}");
        }
        assert!(c.until_closed().await?.is_empty());
    }
    assert_pool_clean(&bed).await
}
