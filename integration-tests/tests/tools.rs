//! PostgreSQL's own client tools through Meridian (transaction pooling, the
//! default): psql, pgbench in all three query modes, pg_dump and pg_restore.
//! The tools must be on PATH (PostgreSQL 15); a missing tool fails the test.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use integration_tests::{TestBed, run_tool};

/// Far above what any tool run needs here, even on a loaded machine.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// Find `name` on PATH, failing loudly when it is not there.
fn find_tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH: these tests need the PostgreSQL 15 client tools"))
}

/// A command for a PostgreSQL client tool with an environment that cannot
/// change what it connects to or how.
fn tool(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(find_tool(name));
    for var in [
        "PGHOST",
        "PGHOSTADDR",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGPASSFILE",
        "PGDATABASE",
        "PGOPTIONS",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGSSLMODE",
        "PGAPPNAME",
        "PGCLIENTENCODING",
        "PGTZ",
        "PGDATESTYLE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGCONNECT_TIMEOUT", "30").env("PGPASSFILE", "/dev/null");
    cmd
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run and require success; returns the output.
async fn run_ok(cmd: tokio::process::Command, what: &str) -> anyhow::Result<Output> {
    let out = run_tool(cmd, TOOL_TIMEOUT).await.with_context(|| what.to_owned())?;
    anyhow::ensure!(out.status.success(), "{what} failed: {}", show(&out));
    Ok(out)
}

/// `psql -X -v ON_ERROR_STOP=1 -d <conninfo>` followed by `args`.
fn psql(conninfo: &str, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tool("psql");
    cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo]).args(args);
    cmd
}

/// A conninfo string with another database.
fn with_db(conninfo: &str, db: &str) -> String {
    assert!(conninfo.contains("dbname=postgres"), "{conninfo}");
    conninfo.replace("dbname=postgres", &format!("dbname={db}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first line where two texts differ, with a little context.
fn first_difference(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    for i in 0..la.len().max(lb.len()) {
        if la.get(i) != lb.get(i) {
            let from = i.saturating_sub(3);
            let ctx = |l: &[&str]| l[from.min(l.len())..(i + 4).min(l.len())].join("\n");
            return format!("first difference at line {}:\n--- left\n{}\n--- right\n{}", i + 1, ctx(&la), ctx(&lb));
        }
    }
    "no line differs (line endings or trailing newline?)".into()
}

// ---------------------------------------------------------------------------
// psql
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_commands_errors_and_settings() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let ci = bed.conninfo();

    let out = run_ok(psql(&ci, &["-At", "-c", "SELECT 1 + 1"]), "psql -c").await?;
    assert_eq!(stdout(&out).trim(), "2");

    // Several -c in one session: a SET must survive the transaction
    // boundaries that give the server connection back to the pool.
    let out = run_ok(
        psql(
            &ci,
            &[
                "-q",
                "-At",
                "-c",
                "SET application_name = 'psql via meridian'",
                "-c",
                "SET search_path = pg_catalog",
                "-c",
                "SELECT current_setting('application_name'), current_setting('search_path'), current_user",
            ],
        ),
        "psql with settings",
    )
    .await?;
    assert_eq!(stdout(&out).trim(), "psql via meridian|pg_catalog|app");

    // An error: exit status 1 with ON_ERROR_STOP, the message on stderr.
    let out = run_tool(psql(&ci, &["-c", "SELECT 1/0"]), TOOL_TIMEOUT).await?;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("division by zero"), "{}", show(&out));

    // A failed transaction is rolled back and the server connection stays usable.
    let out = run_tool(
        psql(
            &ci,
            &[
                "-c",
                "CREATE TABLE psql_t (id int PRIMARY KEY)",
                "-c",
                "BEGIN; INSERT INTO psql_t VALUES (1); INSERT INTO psql_t VALUES (1); COMMIT;",
            ],
        ),
        TOOL_TIMEOUT,
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("duplicate key value violates unique constraint"), "{}", show(&out));
    let out = run_ok(psql(&ci, &["-At", "-c", "SELECT count(*) FROM psql_t"]), "count after rollback").await?;
    assert_eq!(stdout(&out).trim(), "0");
    Ok(())
}

/// The script for [`psql_script_same_through_meridian_and_direct`]; `@IN@`
/// and `@OUT@` are replaced by file paths.
const SCRIPT: &str = r#"
DROP TABLE IF EXISTS items;
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2));
\copy items FROM '@IN@' WITH (FORMAT csv, HEADER true)
SELECT count(*) AS n, sum(price) AS total FROM items \gset
\echo loaded :n rows, total :total
-- A transaction with a savepoint.
BEGIN;
UPDATE items SET price = price * 2 WHERE id <= 10;
SAVEPOINT s1;
DELETE FROM items WHERE id = 1;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO items VALUES (1001, 'late, "quoted"', 1.50);
COMMIT;
SELECT count(*) AS n2, sum(price) AS total2 FROM items \gset
\echo after the transaction: :n2 rows, total :total2
BEGIN;
INSERT INTO items VALUES (2001, 'rolled back', 0);
ROLLBACK;
-- Errors that do not stop the script.
\set ON_ERROR_STOP 0
SELECT 1/0;
INSERT INTO items VALUES (1, 'duplicate', 0);
BEGIN;
SELECT no_such_column FROM items;
SELECT 1;
ROLLBACK;
\set ON_ERROR_STOP 1
SELECT count(*) AS rolled_back_rows FROM items WHERE id = 2001;
SELECT name FROM items WHERE id = 1001 \gset item_
\echo item 1001 is :item_name
SET datestyle = 'German';
SELECT date '2024-02-29' AS d;
\copy (SELECT id, name, price FROM items ORDER BY id) TO '@OUT@' WITH (FORMAT csv, HEADER true)
COPY (SELECT id, name FROM items WHERE id % 100 = 0 ORDER BY id) TO STDOUT WITH (FORMAT csv);
SELECT id, name, price FROM items WHERE id IN (1, 2, 10, 11, 1001) ORDER BY id;
DROP TABLE items;
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_script_same_through_meridian_and_direct() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let tmp = tempfile::tempdir()?;

    // 500 rows, names with commas, quotes and non-ASCII to exercise CSV.
    let mut csv = String::from("id,name,price\n");
    for i in 1..=500 {
        csv.push_str(&format!("{i},\"item {i}, \"\"size\"\" {}\",{}.{:02}\n", ["S", "M", "Ł"][i % 3], i % 97, i % 100));
    }
    let input = tmp.path().join("in.csv");
    std::fs::write(&input, &csv)?;

    let mut runs = Vec::new();
    for (label, ci) in [("direct", bed.direct_conninfo()), ("meridian", bed.conninfo())] {
        let out_csv = tmp.path().join(format!("out-{label}.csv"));
        // Same script text (and so same error line numbers) for both runs:
        // only the output file differs, and it is written to the same path.
        let shared_out = tmp.path().join("out.csv");
        let script = SCRIPT.replace("@IN@", &input.to_string_lossy()).replace("@OUT@", &shared_out.to_string_lossy());
        let script_path = tmp.path().join("script.sql");
        std::fs::write(&script_path, script)?;
        let out = run_ok(psql(&ci, &["-f", &script_path.to_string_lossy()]), &format!("psql script ({label})")).await?;
        std::fs::rename(&shared_out, &out_csv)?;
        runs.push((label, out, std::fs::read_to_string(&out_csv)?));
    }

    let (_, direct, direct_csv) = &runs[0];
    let (_, meridian, meridian_csv) = &runs[1];
    let (ds, ms) = (stdout(direct), stdout(meridian));
    assert_eq!(ds, ms, "stdout differs:\n{}", first_difference(&ds, &ms));
    let (de, me) = (stderr(direct), stderr(meridian));
    assert_eq!(de, me, "stderr differs:\n{}", first_difference(&de, &me));
    assert_eq!(direct_csv, meridian_csv, "\\copy out differs:\n{}", first_difference(direct_csv, meridian_csv));

    // And it is what the script should have done.
    assert!(ms.contains("loaded 500 rows"), "{ms}");
    assert!(ms.contains("after the transaction: 501 rows"), "{ms}");
    assert!(ms.contains("item 1001 is late, \"quoted\""), "{ms}");
    assert!(ms.contains("29.02.2024"), "SET datestyle must apply to the next statement: {ms}");
    for needle in [
        "division by zero",
        "duplicate key value violates unique constraint",
        "column \"no_such_column\" does not exist",
        "current transaction is aborted",
    ] {
        assert!(me.contains(needle), "missing {needle:?} in stderr:\n{me}");
    }
    let rolled_back = ms.lines().skip_while(|l| !l.contains("rolled_back_rows")).nth(2).unwrap_or_default();
    assert_eq!(rolled_back.trim(), "0", "{ms}");
    // \copy out: the input rows, doubled prices for ids 1..=10, plus 1001.
    let mut lines = meridian_csv.lines();
    assert_eq!(lines.next(), Some("id,name,price"));
    assert_eq!(meridian_csv.lines().count(), 1 + 501);
    let row10 = meridian_csv.lines().find(|l| l.starts_with("10,")).context("row 10")?;
    assert!(row10.ends_with(",20.20"), "price of id 10 must be doubled (10.10 * 2): {row10}");
    let row11 = meridian_csv.lines().find(|l| l.starts_with("11,")).context("row 11")?;
    assert!(row11.ends_with(",11.11"), "{row11}");
    Ok(())
}

// ---------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------

/// What a pgbench run reported.
#[derive(Debug)]
struct BenchResult {
    processed: u64,
    failed: u64,
    text: String,
}

async fn pgbench(conninfo: &str, args: &[&str]) -> anyhow::Result<BenchResult> {
    let mut cmd = tool("pgbench");
    cmd.args(args).arg(conninfo);
    let what = format!("pgbench {}", args.join(" "));
    let out = run_ok(cmd, &what).await?;
    let text = format!("{}\n{}", stdout(&out), stderr(&out));
    // "number of transactions actually processed: 1600/1600"
    let processed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split('/').next())
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{what}: no processed count in:\n{text}"))?;
    // "number of failed transactions: 0 (0.000%)"
    let failed = text
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("{what}: no failed count in:\n{text}"))?;
    Ok(BenchResult { processed, failed, text })
}

/// sum(abalance), sum(bbalance), sum(tbalance), sum(delta), count(history),
/// read on the primary directly.
async fn tpcb_sums(bed: &TestBed) -> anyhow::Result<[i64; 5]> {
    let rows = bed
        .cluster
        .primary()
        .query(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts),
                    (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),
                    (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers),
                    (SELECT coalesce(sum(delta), 0) FROM pgbench_history),
                    (SELECT count(*) FROM pgbench_history)",
        )
        .await?;
    let row = rows.first().context("no row")?;
    let mut out = [0i64; 5];
    for (i, v) in row.iter().enumerate().take(5) {
        out[i] = v.as_deref().context("NULL sum")?.parse()?;
    }
    Ok(out)
}

const CLIENTS: &str = "8";
const THREADS: &str = "2";
const TPCB_PER_CLIENT: u64 = 200;
const SELECT_PER_CLIENT: u64 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_in_all_query_modes_keeps_the_invariant() -> anyhow::Result<()> {
    tpcb_in_all_query_modes(&TestBed::start().await?).await
}

/// [`pgbench_tpcb_in_all_query_modes_keeps_the_invariant`] through routing: reads on two streaming replicas,
/// read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_tpcb_in_all_query_modes_keeps_the_invariant_routed() -> anyhow::Result<()> {
    tpcb_in_all_query_modes(&routed_bed().await?).await
}

async fn tpcb_in_all_query_modes(bed: &TestBed) -> anyhow::Result<()> {
    let ci = bed.conninfo();
    let per_client = TPCB_PER_CLIENT.to_string();
    let expected = TPCB_PER_CLIENT * CLIENTS.parse::<u64>()?;
    for mode in ["simple", "extended", "prepared"] {
        // Fresh tables for each mode (pgbench would truncate the history anyway).
        let init = run_ok(
            {
                let mut c = tool("pgbench");
                c.args(["-i", "-s", "1", "-q"]).arg(&ci);
                c
            },
            "pgbench -i",
        )
        .await?;
        assert!(stderr(&init).contains("done"), "{}", show(&init));
        assert_eq!(tpcb_sums(bed).await?, [0; 5], "fresh tables");

        let r = pgbench(&ci, &["-M", mode, "-c", CLIENTS, "-j", THREADS, "-t", &per_client]).await?;
        assert_eq!(r.failed, 0, "-M {mode}: failed transactions:\n{}", r.text);
        assert_eq!(r.processed, expected, "-M {mode}:\n{}", r.text);
        let [a, b, t, h, n] = tpcb_sums(bed).await?;
        assert_eq!(n, expected as i64, "-M {mode}: one history row per transaction");
        assert!(
            a == b && b == t && t == h,
            "-M {mode}: tpcb invariant broken: accounts {a}, branches {b}, tellers {t}, history {h}"
        );
        eprintln!("pgbench -M {mode}: {expected} transactions, balances {a}");
    }
    Ok(())
}

/// A bed routing through a one-shard topology of a primary and two
/// streaming replicas.
async fn routed_bed() -> anyhow::Result<TestBed> {
    TestBed::start_with(integration_tests::BedSpec {
        cluster: harness::ClusterSpec::default().with_replicas(2),
        routed: true,
        ..Default::default()
    })
    .await
}

/// `pgbench -i -s 1` through `conninfo`.
async fn pgbench_init(conninfo: &str) -> anyhow::Result<()> {
    let mut c = tool("pgbench");
    c.args(["-i", "-s", "1", "-q"]).arg(conninfo);
    run_ok(c, "pgbench -i").await?;
    Ok(())
}

/// Serializable transactions (set through the startup packet's `options`)
/// fail with 40001 under contention; pgbench retries them only if the
/// SQLSTATE reaches it intact and the retried transaction starts clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_serializable_retries_keep_the_invariant() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let ci = bed.conninfo();
    for mode in ["simple", "prepared"] {
        pgbench_init(&ci).await?;
        let mut cmd = tool("pgbench");
        cmd.env("PGOPTIONS", "-c default_transaction_isolation=serializable")
            .args(["-M", mode, "--max-tries=1000", "-c", CLIENTS, "-j", THREADS, "-t", "100"])
            .arg(&ci);
        let out = run_ok(cmd, &format!("pgbench serializable -M {mode}")).await?;
        let text = format!("{}\n{}", stdout(&out), stderr(&out));
        assert!(text.contains("number of failed transactions: 0 "), "-M {mode}:\n{text}");
        assert!(text.contains("number of transactions actually processed: 800/800"), "-M {mode}:\n{text}");
        let [a, b, t, h, n] = tpcb_sums(&bed).await?;
        assert_eq!(n, 800, "-M {mode}");
        assert!(a == b && b == t && t == h, "-M {mode}: tpcb invariant broken: {a} {b} {t} {h}");
        let retried = text.lines().find(|l| l.starts_with("number of transactions retried")).unwrap_or("none");
        eprintln!("pgbench serializable -M {mode}: {retried}");
    }
    Ok(())
}

/// The tpcb transaction as one pipeline: every statement is sent before the
/// first answer is read, with a single Sync at the end.
const PIPELINED_TPCB: &str = r#"\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
\startpipeline
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
\endpipeline
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_pipeline_mode_keeps_the_invariant() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let ci = bed.conninfo();
    let tmp = tempfile::tempdir()?;
    let script = tmp.path().join("pipelined.sql");
    std::fs::write(&script, PIPELINED_TPCB)?;
    let script = script.to_string_lossy().into_owned();
    for mode in ["extended", "prepared"] {
        pgbench_init(&ci).await?;
        let r = pgbench(&ci, &["-n", "-M", mode, "-f", &script, "-c", CLIENTS, "-j", THREADS, "-t", "100"]).await?;
        assert_eq!(r.failed, 0, "pipeline -M {mode}:\n{}", r.text);
        assert_eq!(r.processed, 800, "pipeline -M {mode}:\n{}", r.text);
        let [a, b, t, h, n] = tpcb_sums(&bed).await?;
        assert_eq!(n, 800, "pipeline -M {mode}");
        assert!(a == b && b == t && t == h, "pipeline -M {mode}: tpcb invariant broken: {a} {b} {t} {h}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_in_all_query_modes() -> anyhow::Result<()> {
    let bed = TestBed::start().await?;
    let ci = bed.conninfo();
    run_ok(
        {
            let mut c = tool("pgbench");
            c.args(["-i", "-s", "1", "-q"]).arg(&ci);
            c
        },
        "pgbench -i",
    )
    .await?;
    let per_client = SELECT_PER_CLIENT.to_string();
    let expected = SELECT_PER_CLIENT * CLIENTS.parse::<u64>()?;
    for mode in ["simple", "extended", "prepared"] {
        let r = pgbench(&ci, &["-S", "-n", "-M", mode, "-c", CLIENTS, "-j", THREADS, "-t", &per_client]).await?;
        assert_eq!(r.failed, 0, "-S -M {mode}:\n{}", r.text);
        assert_eq!(r.processed, expected, "-S -M {mode}:\n{}", r.text);
        assert!(!r.text.contains("ERROR"), "-S -M {mode}:\n{}", r.text);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// pg_dump / pg_restore
// ---------------------------------------------------------------------------

/// A schema with most kinds of objects pg_dump writes.
const SCHEMA: &str = r#"
CREATE SCHEMA shop;
CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped');
CREATE DOMAIN shop.money_amount AS numeric(12,2) CHECK (VALUE >= 0);
CREATE SEQUENCE shop.order_no START 1000;
CREATE TABLE shop.customers (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name text,
    created timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shop.orders (
    id bigint PRIMARY KEY DEFAULT nextval('shop.order_no'),
    customer_id bigint NOT NULL REFERENCES shop.customers (id) ON DELETE CASCADE,
    status shop.status NOT NULL DEFAULT 'new',
    total shop.money_amount NOT NULL,
    placed date NOT NULL,
    notes bytea
);
ALTER SEQUENCE shop.order_no OWNED BY shop.orders.id;
CREATE TABLE shop.order_lines (
    order_id bigint NOT NULL REFERENCES shop.orders (id) ON DELETE CASCADE,
    line int NOT NULL,
    sku text NOT NULL,
    qty int NOT NULL CHECK (qty > 0),
    PRIMARY KEY (order_id, line)
);
CREATE INDEX orders_customer_idx ON shop.orders (customer_id, placed DESC);
CREATE INDEX customers_lower_email_idx ON shop.customers (lower(email));
CREATE INDEX orders_open_idx ON shop.orders (placed) WHERE status <> 'shipped';
CREATE VIEW shop.customer_totals AS
    SELECT c.id, c.email, coalesce(sum(o.total), 0) AS total
    FROM shop.customers c LEFT JOIN shop.orders o ON o.customer_id = c.id
    GROUP BY c.id, c.email;
CREATE MATERIALIZED VIEW shop.daily AS
    SELECT placed, count(*) AS n FROM shop.orders GROUP BY placed;
CREATE FUNCTION shop.order_total(bigint) RETURNS numeric
    LANGUAGE sql STABLE AS $$ SELECT total FROM shop.orders WHERE id = $1 $$;
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.created := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER customers_touch BEFORE INSERT ON shop.customers
    FOR EACH ROW EXECUTE FUNCTION shop.touch();
COMMENT ON TABLE shop.orders IS 'one row per checkout';
COMMENT ON COLUMN shop.orders.total IS 'in EUR';
CREATE TABLE public.kv (k text PRIMARY KEY, v jsonb NOT NULL DEFAULT '{}');
GRANT SELECT ON shop.customer_totals TO PUBLIC;
"#;

/// Data for the schema: thousands of rows, bytea, a large object.
const DATA: &str = r#"
INSERT INTO shop.customers (email, name)
    SELECT 'c' || i || '@example.com', 'Customer ' || i FROM generate_series(1, 2000) i;
INSERT INTO shop.orders (customer_id, status, total, placed, notes)
    SELECT 1 + i % 2000, (ARRAY['new', 'paid', 'shipped'])[1 + i % 3]::shop.status,
           (i % 1000) + 0.99, date '2024-01-01' + i % 365,
           CASE WHEN i % 7 = 0 THEN decode(md5(i::text), 'hex') END
    FROM generate_series(1, 6000) i;
INSERT INTO shop.order_lines
    SELECT o.id, l, 'SKU-' || (o.id * l) % 977, 1 + l % 4
    FROM shop.orders o, generate_series(1, 3) l;
INSERT INTO public.kv SELECT 'key' || i, jsonb_build_object('i', i, 's', repeat('x', i % 50))
    FROM generate_series(1, 1000) i;
REFRESH MATERIALIZED VIEW shop.daily;
SELECT lo_from_bytea(424242, convert_to(repeat('large object payload ', 5000), 'UTF8'));
"#;

/// Create a database through Meridian and run `sql` in it through Meridian.
async fn create_db(bed: &TestBed, name: &str, sql: &str) -> anyhow::Result<()> {
    run_ok(psql(&bed.conninfo(), &["-q", "-c", &format!("CREATE DATABASE {name}")]), "CREATE DATABASE").await?;
    if !sql.is_empty() {
        let tmp = tempfile::NamedTempFile::new()?;
        std::fs::write(tmp.path(), sql)?;
        run_ok(
            psql(&with_db(&bed.conninfo(), name), &["-q", "-f", &tmp.path().to_string_lossy()]),
            &format!("filling {name}"),
        )
        .await?;
    }
    Ok(())
}

async fn pg_dump(conninfo: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut cmd = tool("pg_dump");
    cmd.args(args).args(["-d", conninfo]);
    run_ok(cmd, &format!("pg_dump {}", args.join(" "))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_schema_through_meridian_is_identical_to_direct() -> anyhow::Result<()> {
    dump_schema_identical(&TestBed::start().await?).await
}

/// [`pg_dump_schema_through_meridian_is_identical_to_direct`] through routing: reads on two streaming replicas,
/// read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_schema_through_meridian_is_identical_to_direct_routed() -> anyhow::Result<()> {
    dump_schema_identical(&routed_bed().await?).await
}

async fn dump_schema_identical(bed: &TestBed) -> anyhow::Result<()> {
    create_db(bed, "dumpsrc", &format!("{SCHEMA}\n{DATA}")).await?;

    let via = pg_dump(&with_db(&bed.conninfo(), "dumpsrc"), &["-s"]).await?;
    let direct = pg_dump(&with_db(&bed.direct_conninfo(), "dumpsrc"), &["-s"]).await?;
    assert!(via.stderr.is_empty(), "pg_dump through Meridian warned:\n{}", stderr(&via));
    // pg_dump 15.14+ brackets the script with `\restrict <key>` and
    // `\unrestrict <key>`, a random key per dump: the only lines that differ
    // between two dumps of the same database.
    let unkeyed = |s: &str| {
        s.lines()
            .map(|l| if l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ") { "<restrict key>" } else { l })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (mut v, mut d) = (unkeyed(&stdout(&via)), unkeyed(&stdout(&direct)));
    assert!(v.contains("CREATE MATERIALIZED VIEW shop.daily"), "{v}");
    assert!(v.contains("CREATE TRIGGER customers_touch"), "{v}");
    assert!(v.contains("SET statement_timeout = 0;"), "{v}");
    assert_eq!(v.matches("<restrict key>").count(), 2, "{v}");
    if v != d {
        // Only the version header may legitimately differ.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("-- Dumped from") && !l.starts_with("-- Dumped by"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        (v, d) = (strip(&v), strip(&d));
    }
    assert!(v == d, "pg_dump -s through Meridian differs from direct:\n{}", first_difference(&d, &v));
    Ok(())
}

/// Row count and a checksum of every table, plus large objects and the
/// sequence, read through `conninfo`.
async fn fingerprint(conninfo: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let sql = r#"
SELECT 'shop.customers', count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM shop.customers t
UNION ALL SELECT 'shop.orders', count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM shop.orders t
UNION ALL SELECT 'shop.order_lines', count(*), md5(string_agg(t::text, '|' ORDER BY t.order_id, t.line)) FROM shop.order_lines t
UNION ALL SELECT 'public.kv', count(*), md5(string_agg(t::text, '|' ORDER BY t.k)) FROM public.kv t
UNION ALL SELECT 'shop.daily', count(*), md5(string_agg(t::text, '|' ORDER BY t.placed)) FROM shop.daily t
UNION ALL SELECT 'largeobjects', count(*), md5(string_agg(encode(lo_get(oid), 'hex'), '|' ORDER BY oid)) FROM pg_largeobject_metadata
UNION ALL SELECT 'shop.order_no', last_value, is_called::text FROM shop.order_no
UNION ALL SELECT 'shop.customers_id_seq', last_value, is_called::text FROM shop.customers_id_seq
"#;
    let out = run_ok(psql(conninfo, &["-At", "-F", " ", "-c", sql]), "fingerprint").await?;
    let mut map = BTreeMap::new();
    for line in stdout(&out).lines() {
        let (name, rest) = line.split_once(' ').with_context(|| format!("bad line {line:?}"))?;
        map.insert(name.to_owned(), rest.to_owned());
    }
    anyhow::ensure!(map.len() == 8, "fingerprint: {map:?}");
    Ok(map)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_custom_format_and_pg_restore_through_meridian() -> anyhow::Result<()> {
    dump_and_restore(&TestBed::start().await?).await
}

/// [`pg_dump_custom_format_and_pg_restore_through_meridian`] through routing: reads on two streaming replicas,
/// read-your-writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_custom_format_and_pg_restore_through_meridian_routed() -> anyhow::Result<()> {
    dump_and_restore(&routed_bed().await?).await
}

async fn dump_and_restore(bed: &TestBed) -> anyhow::Result<()> {
    create_db(bed, "dumpdata", &format!("{SCHEMA}\n{DATA}")).await?;
    let source = fingerprint(&with_db(&bed.direct_conninfo(), "dumpdata")).await?;
    assert_eq!(source["shop.orders"].split(' ').next(), Some("6000"));
    assert_eq!(source["largeobjects"].split(' ').next(), Some("1"));

    let tmp = tempfile::tempdir()?;
    let archive = tmp.path().join("dumpdata.dump");
    pg_dump(&with_db(&bed.conninfo(), "dumpdata"), &["-Fc", "-f", &archive.to_string_lossy()]).await?;
    anyhow::ensure!(std::fs::metadata(&archive)?.len() > 10_000, "archive too small");

    // A parallel dump: the workers import the leader's exported snapshot
    // (SET TRANSACTION SNAPSHOT) while the leader's transaction stays open.
    let dir_archive = tmp.path().join("dumpdata.dir");
    pg_dump(&with_db(&bed.conninfo(), "dumpdata"), &["-Fd", "-j", "2", "-f", &dir_archive.to_string_lossy()]).await?;
    create_db(bed, "restored_from_dir", "").await?;
    let mut cmd = tool("pg_restore");
    cmd.args(["--exit-on-error", "--no-owner", "-d", &with_db(&bed.conninfo(), "restored_from_dir")]).arg(&dir_archive);
    run_ok(cmd, "pg_restore of the directory archive").await?;
    let restored = fingerprint(&with_db(&bed.direct_conninfo(), "restored_from_dir")).await?;
    assert_eq!(restored, source, "pg_dump -Fd -j 2 through Meridian: restored data differs from the source");

    // One plain restore and one parallel restore (several connections).
    for (db, extra) in [("restored", &[][..]), ("restored_parallel", &["-j", "2"][..])] {
        create_db(bed, db, "").await?;
        let mut cmd = tool("pg_restore");
        cmd.args(["--exit-on-error", "--no-owner", "-d", &with_db(&bed.conninfo(), db)]).args(extra).arg(&archive);
        let out = run_ok(cmd, &format!("pg_restore into {db}")).await?;
        assert!(out.stderr.is_empty(), "pg_restore into {db} warned:\n{}", stderr(&out));
        let restored = fingerprint(&with_db(&bed.conninfo(), db)).await?;
        assert_eq!(restored, source, "{db}: restored data differs from the source");
    }
    Ok(())
}
