//! The admin console (database `meridian`) on real clusters, with psql and
//! tokio-postgres: every SHOW view, EXPLAIN ROUTE on a sharded cluster
//! (2 shards × primary + 2 replicas), the permission check for users
//! without `admin = true`, and the extended protocol refused cleanly.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use integration_tests::sharded::{ShardedBed, ShardedSpec};
use integration_tests::{APP_PASSWORD, APP_USER, BedSpec, RawConn, TestBed, eventually, fe, run_tool, sqlstate};
use tokio_postgres::SimpleQueryMessage;

/// A result set as column name → values, row by row.
type Rows = Vec<BTreeMap<String, Option<String>>>;

/// The rows of the last row set `sql` answered.
async fn show(client: &tokio_postgres::Client, sql: &str) -> anyhow::Result<Rows> {
    let msgs = client.simple_query(sql).await.with_context(|| format!("running {sql}"))?;
    let mut rows = Rows::new();
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => rows.push(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (c.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            SimpleQueryMessage::RowDescription(_) => rows.clear(),
            _ => {}
        }
    }
    Ok(rows)
}

fn get<'a>(row: &'a BTreeMap<String, Option<String>>, column: &str) -> &'a str {
    row.get(column).unwrap_or_else(|| panic!("no column {column} in {row:?}")).as_deref().unwrap_or("")
}

/// The row whose `column` is `value`.
fn find<'a>(rows: &'a Rows, column: &str, value: &str) -> &'a BTreeMap<String, Option<String>> {
    rows.iter().find(|r| get(r, column) == value).unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
}

fn admin_config(addr: std::net::SocketAddr, user: &str, password: &str) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(addr.ip().to_string())
        .port(addr.port())
        .user(user)
        .password(password)
        .dbname("meridian")
        .connect_timeout(Duration::from_secs(10));
    c
}

async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn conninfo(addr: std::net::SocketAddr, user: &str, password: &str) -> String {
    format!("host={} port={} user={user} password={password} dbname=meridian", addr.ip(), addr.port())
}

/// `psql -X -A -t -F '|' -d <conninfo> -c <sql>...`, with an environment
/// that cannot change where it connects.
async fn psql(conninfo: &str, commands: &[&str]) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new("psql");
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGOPTIONS", "PGSERVICE", "PGSSLMODE"] {
        cmd.env_remove(var);
    }
    cmd.env("PGCONNECT_TIMEOUT", "30").env("PGPASSFILE", "/dev/null");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "|", "-d", conninfo]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    run_tool(cmd, Duration::from_secs(120)).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_console_on_a_sharded_cluster() -> anyhow::Result<()> {
    let mut bed = ShardedBed::start(ShardedSpec::default()).await?;
    let admin = connect(&admin_config(bed.addr, APP_USER, APP_PASSWORD)).await?;
    let names = |shard: usize| {
        let c = &bed.shards[shard].cluster;
        (c.primary().name().to_owned(), c.replicas().iter().map(|r| r.name().to_owned()).collect::<Vec<_>>())
    };
    let (s1_primary, s1_replicas) = names(0);
    let (s2_primary, s2_replicas) = names(1);

    // SHOW SHARDS: primaries, replicas, regions.
    let shards = show(&admin, "SHOW SHARDS").await?;
    assert_eq!(shards.len(), 2);
    let s1 = find(&shards, "name", "s1");
    assert_eq!(get(s1, "primary"), s1_primary);
    assert_eq!(get(s1, "primary_region"), "local");
    assert_eq!(get(s1, "replicas"), format!("{} (local), {} (local)", s1_replicas[0], s1_replicas[1]));
    assert_eq!(get(s1, "default"), "t");
    assert_eq!(get(find(&shards, "name", "s2"), "default"), "f");

    // SHOW NODES / LATENCY: every server probed, up, with its role and an RTT.
    eventually("every server up with an RTT", || async {
        let nodes = show(&admin, "SHOW NODES").await?;
        Ok(nodes.len() == 6 && nodes.iter().all(|n| get(n, "state") == "up" && !get(n, "rtt_ms").is_empty()))
    })
    .await?;
    let nodes = show(&admin, "show nodes;").await?;
    let p = find(&nodes, "name", &s2_primary);
    assert_eq!((get(p, "shard"), get(p, "role"), get(p, "in_recovery")), ("s2", "primary", "f"));
    let r = find(&nodes, "name", &s2_replicas[1]);
    assert_eq!((get(r, "role"), get(r, "region"), get(r, "in_recovery")), ("replica", "local", "t"));
    assert!(!get(r, "lsn").is_empty() && !get(r, "lag_bytes").is_empty(), "{r:?}");
    let latency = show(&admin, "SHOW LATENCY").await?;
    assert_eq!(latency.len(), 6);
    for row in &latency {
        assert!(get(row, "rtt_ms").parse::<f64>()? > 0.0, "{row:?}");
        assert!(get(row, "probes").parse::<u64>()? > 0, "{row:?}");
        assert_eq!(get(row, "region"), "local");
    }

    // An application session: listed in SHOW CLIENTS, its pool in SHOW POOLS.
    let app = bed.connect().await?;
    app.simple_query("SELECT name FROM owners WHERE owner_id = 1").await?;
    let clients = show(&admin, "SHOW CLIENTS").await?;
    assert_eq!(clients.len(), 2, "{clients:?}");
    let me = find(&clients, "database", "meridian");
    assert_eq!((get(me, "user"), get(me, "pool_mode"), get(me, "state")), (APP_USER, "admin", "active"));
    let other = find(&clients, "database", "postgres");
    assert_eq!(get(other, "pool_mode"), "transaction");
    assert!(get(other, "address").starts_with("127.0.0.1:"), "{other:?}");
    assert!(get(other, "connected_at").ends_with(" UTC"), "{other:?}");
    let pools = show(&admin, "SHOW POOLS").await?;
    let owner_shard = if ShardedBed::shard_of(1) == "s1" { &s1_replicas } else { &s2_replicas };
    let pool = pools
        .iter()
        .find(|p| owner_shard.iter().any(|r| r == get(p, "server")))
        .with_context(|| format!("a pool to a replica of owner 1's shard: {pools:?}"))?;
    assert_eq!((get(pool, "region"), get(pool, "database"), get(pool, "user")), ("local", "postgres", APP_USER));
    assert!(get(pool, "checkouts").parse::<u64>()? >= 1);
    let servers = show(&admin, "SHOW SERVERS").await?;
    assert_eq!(servers.len(), 6, "{servers:?}");
    assert_eq!(get(find(&servers, "server", &s1_primary), "role"), "primary");
    let stats = show(&admin, "SHOW STATS").await?;
    let node = find(&stats, "scope", "node");
    assert_eq!((get(node, "name"), get(node, "clients")), ("test", "2"));
    assert!(!get(node, "uptime_s").is_empty());
    assert_eq!(stats.iter().filter(|r| get(r, "scope") == "server").count(), 6);
    assert!(get(&show(&admin, "SHOW VERSION").await?[0], "version").starts_with("Meridian "));
    let config = show(&admin, "SHOW CONFIG").await?;
    assert_eq!(get(find(&config, "name", "health.probe_interval"), "value"), "100ms");
    assert!(show(&admin, "HELP").await?.len() >= 10);

    // EXPLAIN ROUTE, as a fresh session with default settings would route.
    let explain = |sql: String| {
        let admin = &admin;
        async move {
            let rows = show(admin, &format!("EXPLAIN ROUTE {sql}")).await?;
            anyhow::ensure!(rows.len() == 1, "one statement, one row: {rows:?}");
            Ok::<_, anyhow::Error>(rows.into_iter().next().unwrap_or_default())
        }
    };
    let (key_shard, key_primary, key_replicas) = match ShardedBed::shard_of(7) {
        "s1" => ("s1", &s1_primary, &s1_replicas),
        _ => ("s2", &s2_primary, &s2_replicas),
    };
    let read = explain("SELECT name FROM owners WHERE owner_id = 7".into()).await?;
    assert_eq!((get(&read, "class"), get(&read, "action")), ("read", "shard"));
    assert_eq!((get(&read, "shards"), get(&read, "role"), get(&read, "region")), (key_shard, "replica", "local"));
    assert!(key_replicas.iter().any(|r| r == get(&read, "node")), "{read:?}");
    assert!(get(&read, "reason").contains("owners.owner_id key"), "{read:?}");
    let write = explain("UPDATE owners SET name = 'x' WHERE owner_id = 7".into()).await?;
    assert_eq!((get(&write, "class"), get(&write, "action")), ("write", "shard"));
    assert_eq!(
        (get(&write, "shards"), get(&write, "role"), get(&write, "node")),
        (key_shard, "primary", &**key_primary)
    );
    let fanout = explain("SELECT count(*) FROM owners".into()).await?;
    assert_eq!((get(&fanout, "action"), get(&fanout, "shards")), ("fanout", "s1, s2"));
    let ddl = explain("CREATE TABLE t (a int)".into()).await?;
    assert_eq!(
        (get(&ddl, "class"), get(&ddl, "action"), get(&ddl, "role")),
        ("ddl", "every primary", "primary, primary")
    );
    assert_eq!(get(&ddl, "node"), format!("{s1_primary}, {s2_primary}"));
    let reject = explain("UPDATE owners SET name = 'x'".into()).await?;
    assert_eq!((get(&reject, "action"), get(&reject, "node")), ("reject", ""));
    assert!(get(&reject, "reason").contains("without its shard key"), "{reject:?}");
    // A quoted string of several statements: a row each, then the whole
    // (one place for the whole string: here the default shard s1's primary).
    let s1_key = (1..100).find(|k| ShardedBed::shard_of(*k) == "s1").context("a key on s1")?;
    let multi = show(
        &admin,
        &format!("EXPLAIN ROUTE $$BEGIN; UPDATE owners SET name = 'y' WHERE owner_id = {s1_key}; COMMIT$$"),
    )
    .await?;
    assert_eq!(multi.len(), 4, "{multi:?}");
    assert_eq!((get(&multi[3], "statement"), get(&multi[3], "node")), ("(whole query)", s1_primary.as_str()));

    // Errors: 42601 naming the command; 0A000 for the extended protocol;
    // the session goes on after both.
    let Err(e) = admin.simple_query("SHOW WHATEVER").await else { anyhow::bail!("SHOW WHATEVER ran") };
    let db = e.as_db_error().context("a server error")?;
    assert_eq!(db.code().code(), "42601");
    assert!(db.message().contains("SHOW WHATEVER") && db.hint().is_some_and(|h| h.contains("SHOW HELP")), "{db:?}");
    let Err(e) = admin.query("SHOW SHARDS", &[]).await else { anyhow::bail!("the extended protocol ran") };
    assert_eq!(sqlstate(&e), Some("0A000"));
    assert_eq!(show(&admin, "SHOW SHARDS").await?.len(), 2);

    // psql: every command, in one run.
    let ci = conninfo(bed.addr, APP_USER, APP_PASSWORD);
    let out = psql(
        &ci,
        &[
            "SHOW SHARDS",
            "SHOW NODES",
            "SHOW POOLS",
            "SHOW CLIENTS",
            "SHOW SERVERS",
            "SHOW STATS",
            "SHOW LATENCY",
            "SHOW VERSION",
            "SHOW CONFIG",
            "SHOW HELP",
            "EXPLAIN ROUTE SELECT * FROM owners WHERE owner_id = 7",
            "EXPLAIN ROUTE CREATE TABLE t (a int)",
        ],
    )
    .await?;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "psql failed: {}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains(&format!("s1|1|{s1_primary}|local|")), "{stdout}");
    assert!(
        stdout.contains(&format!("|ddl|every primary|s1, s2|primary, primary|{s1_primary}, {s2_primary}|")),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("SELECT * FROM owners WHERE owner_id = 7|read|shard|")), "{stdout}");
    let out = psql(&ci, &["SHOW NONSENSE"]).await?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("unrecognized admin command \"SHOW NONSENSE\""), "{}", text(&out.stderr));

    // Shutdown ends the idle console.
    bed.shutdown().await;
    assert!(admin.simple_query("SHOW VERSION").await.is_err());
    Ok(())
}

/// A user without `admin = true`, with a SCRAM secret.
const VIEWER: &str = "viewer";
const VIEWER_PASSWORD: &str = "viewer-pw";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_get_the_console() -> anyhow::Result<()> {
    let secret = proxy::auth::make_secret("scram-sha-256".parse()?, VIEWER, VIEWER_PASSWORD);
    let mut bed = TestBed::start_with(BedSpec {
        extra_users: format!(
            "[[user]]\nname = \"{VIEWER}\"\nauth = \"scram-sha-256\"\nsecret = \"{secret}\"\nbackend_password = \"{VIEWER_PASSWORD}\"\n"
        ),
        ..BedSpec::default()
    })
    .await?;

    // tokio-postgres: 42501 after a correct password; a wrong one is 28P01.
    let Err(e) = connect(&admin_config(bed.addr, VIEWER, VIEWER_PASSWORD)).await else {
        anyhow::bail!("a non-admin user reached the admin console");
    };
    assert_eq!(sqlstate(&e), Some("42501"), "{e}");
    let message = e.as_db_error().map(|d| d.message().to_owned()).unwrap_or_default();
    assert!(message.contains("permission denied for the admin console"), "{e:?}");
    let Err(e) = connect(&admin_config(bed.addr, VIEWER, "wrong")).await else {
        anyhow::bail!("a wrong password got in");
    };
    assert_eq!(sqlstate(&e), Some("28P01"), "{e}");
    // psql says the same.
    let out = psql(&conninfo(bed.addr, VIEWER, VIEWER_PASSWORD), &["SHOW VERSION"]).await?;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("permission denied for the admin console"), "{}", text(&out.stderr));

    // The admin, on a one-shard cluster: no routing to explain.
    let admin = connect(&admin_config(bed.addr, APP_USER, APP_PASSWORD)).await?;
    let shards = show(&admin, "SHOW SHARDS").await?;
    assert_eq!((get(&shards[0], "name"), get(&shards[0], "default")), ("default", "t"));
    let rows = show(&admin, "EXPLAIN ROUTE SELECT 1").await?;
    assert_eq!((get(&rows[0], "action"), get(&rows[0], "role")), ("shard", "primary"));
    assert!(get(&rows[0], "reason").contains("no routing"), "{rows:?}");

    // Extended protocol by hand: one 0A000 for the whole batch, then
    // ReadyForQuery at Sync; the session still answers simple queries.
    let mut raw = RawConn::connect(bed.addr).await?;
    let info = raw.login(&[("user", APP_USER), ("database", "meridian")], APP_PASSWORD).await?;
    assert!(info.parameters.get("server_version").is_some_and(|v| v.starts_with("15.0 (Meridian")), "{info:?}");
    assert_eq!(info.parameters.get("client_encoding").map(String::as_str), Some("UTF8"));
    assert_eq!(info.parameters.get("DateStyle").map(String::as_str), Some("ISO, MDY"));
    let mut batch = fe::parse("", "SHOW SHARDS");
    batch.extend(fe::bind("", "", &[]));
    batch.extend(fe::execute(""));
    batch.extend(fe::sync());
    raw.send(&batch).await?;
    let out = raw.until_ready().await?;
    assert_eq!(out.tags(), "EZ");
    assert_eq!(out.errors[0].code, "0A000");
    let out = raw.simple_query("SHOW VERSION; SHOW SHARDS").await?;
    assert_eq!(out.tags(), "TDCTDCZ");
    let out = raw.simple_query("").await?;
    assert_eq!(out.tags(), "IZ");
    raw.send(&fe::terminate()).await?;
    assert!(raw.until_closed().await?.is_empty());

    bed.shutdown().await;
    Ok(())
}
