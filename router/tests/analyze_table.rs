//! Table-driven test of `router::analyze::analyze`: SQL in, class,
//! replica safety and targeting out. Every failing row is printed with
//! what differs; the test fails once, at the end, with the count.
//!
//! Topology: owners (0), pets (1), watch_sessions (2) by owner_id (int,
//! hash over two shards); accounts (3) by email (text); app.events (4) by
//! tenant_id (int, same map); settings and everything else unsharded.

use std::time::Duration;

use router::analyze::{Analysis, Class, KeySource, Targeting, TxStatement, analyze};
use router::key::{KeyType, Literal};
use router::topology::{Fallback, ReplicaPolicy, ShardMap, TableRule, Topology};

const OWNERS: usize = 0;
const PETS: usize = 1;
const WATCH: usize = 2;
const ACCOUNTS: usize = 3;
const EVENTS: usize = 4;

fn topology() -> Topology {
    let rule = |schema: Option<&str>, table: &str, column: &str, key_type| TableRule {
        schema: schema.map(str::to_owned),
        table: table.to_owned(),
        column: column.to_owned(),
        key_type,
        map: ShardMap::Hash(vec![0, 1]),
    };
    Topology {
        version: 1,
        regions: vec!["eu".into()],
        shards: vec![],
        nodes: vec![],
        tables: vec![
            rule(None, "owners", "owner_id", KeyType::Int),
            rule(None, "pets", "owner_id", KeyType::Int),
            rule(None, "watch_sessions", "owner_id", KeyType::Int),
            rule(None, "accounts", "email", KeyType::Text),
            rule(Some("app"), "events", "tenant_id", KeyType::Int),
        ],
        default_shard: 0,
        replica_policy: ReplicaPolicy {
            max_lag_bytes: 1 << 20,
            max_lag: Duration::from_secs(5),
            fallback: Fallback::Primary,
        },
    }
}

/// Expected targeting: exact, or Unsupported with a message containing a
/// substring.
#[derive(Debug)]
enum Tg {
    Is(Targeting),
    Unsupported(&'static str),
}

fn un() -> Tg {
    Tg::Is(Targeting::Unsharded)
}
fn all(rule: usize) -> Tg {
    Tg::Is(Targeting::AllShards { rule })
}
fn keyed(rule: usize, keys: Vec<KeySource>) -> Tg {
    Tg::Is(Targeting::Keyed { rule, keys })
}
fn rows(rule: usize, rows: Vec<KeySource>) -> Tg {
    Tg::Is(Targeting::InsertRows { rule, rows })
}
fn no(msg: &'static str) -> Tg {
    Tg::Unsupported(msg)
}
fn n(v: &str) -> KeySource {
    KeySource::Literal(Literal::Number(v.into()))
}
fn s(v: &str) -> KeySource {
    KeySource::Literal(Literal::String(v.into()))
}
fn null() -> KeySource {
    KeySource::Literal(Literal::Null)
}
fn p(i: usize) -> KeySource {
    KeySource::Param(i)
}
fn pa(i: usize) -> KeySource {
    KeySource::ParamArray(i)
}

const R: Class = Class::Read;
const W: Class = Class::Write;
const DDL: Class = Class::Ddl;
const UTIL: Class = Class::Utility;
const SESSION: Class = Class::Session;
const UNPARSED: Class = Class::Unparsed;
const BEGIN: Class = Class::Transaction(TxStatement::Begin { read_only: false });
const BEGIN_RO: Class = Class::Transaction(TxStatement::Begin { read_only: true });
const COMMIT: Class = Class::Transaction(TxStatement::Commit);
const ROLLBACK: Class = Class::Transaction(TxStatement::Rollback);
const TX_OTHER: Class = Class::Transaction(TxStatement::Other);

type Row = (&'static str, Class, bool, Tg);

fn transactions() -> Vec<Row> {
    vec![
        ("BEGIN", BEGIN, true, un()),
        ("begin read only", BEGIN_RO, true, un()),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", BEGIN_RO, true, un()),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", BEGIN, true, un()),
        ("START TRANSACTION READ ONLY", BEGIN_RO, true, un()),
        ("start transaction read write", BEGIN, true, un()),
        ("BEGIN READ ONLY, READ WRITE", BEGIN, true, un()),
        ("BEGIN WORK", BEGIN, true, un()),
        ("COMMIT", COMMIT, true, un()),
        ("END", COMMIT, true, un()),
        ("commit and chain", COMMIT, true, un()),
        ("COMMIT PREPARED 'tx1'", TX_OTHER, false, un()),
        ("ROLLBACK", ROLLBACK, true, un()),
        ("ABORT", ROLLBACK, true, un()),
        ("ROLLBACK AND NO CHAIN", ROLLBACK, true, un()),
        ("ROLLBACK TO SAVEPOINT s1", TX_OTHER, true, un()),
        ("ROLLBACK WORK TO s1", TX_OTHER, true, un()),
        ("ROLLBACK TRANSACTION TO SAVEPOINT \"S\"", TX_OTHER, true, un()),
        ("ROLLBACK PREPARED 'tx1'", TX_OTHER, false, un()),
        ("SAVEPOINT s1", TX_OTHER, true, un()),
        ("RELEASE SAVEPOINT s1", TX_OTHER, true, un()),
        ("RELEASE s1", TX_OTHER, true, un()),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", TX_OTHER, true, un()),
        ("SET TRANSACTION READ ONLY", TX_OTHER, true, un()),
        ("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", TX_OTHER, false, un()),
        ("PREPARE TRANSACTION 'tx1'", TX_OTHER, false, un()),
        ("/* leading */ BEGIN", BEGIN, true, un()),
        ("-- comment\nCOMMIT", COMMIT, true, un()),
        ("/* outer /* nested */ still comment */ ROLLBACK", ROLLBACK, true, un()),
        ("  \n\t begin  ", BEGIN, true, un()),
    ]
}

fn session_and_utility() -> Vec<Row> {
    vec![
        ("SET search_path TO app, public", SESSION, true, un()),
        ("SET LOCAL work_mem = '64MB'", SESSION, true, un()),
        ("set session timezone = 'UTC'", SESSION, true, un()),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", SESSION, true, un()),
        ("SET ROLE admin", SESSION, true, un()),
        ("SET CONSTRAINTS ALL DEFERRED", SESSION, true, un()),
        ("RESET ALL", SESSION, true, un()),
        ("RESET work_mem", SESSION, true, un()),
        ("SHOW server_version", SESSION, true, un()),
        ("SHOW ALL", SESSION, true, un()),
        ("DISCARD ALL", SESSION, true, un()),
        ("DEALLOCATE ALL", SESSION, true, un()),
        ("DEALLOCATE q1", SESSION, true, un()),
        ("LISTEN chan", SESSION, false, un()),
        ("UNLISTEN *", SESSION, true, un()),
        ("PREPARE q1 (int) AS SELECT * FROM owners WHERE owner_id = $1", SESSION, false, un()),
        ("FETCH 10 FROM c1", SESSION, true, un()),
        ("MOVE NEXT IN c1", SESSION, true, un()),
        ("CLOSE c1", SESSION, true, un()),
        ("NOTIFY chan, 'payload'", W, false, un()),
        ("EXECUTE q1(5)", W, false, un()),
        ("LOCK TABLE settings IN ACCESS EXCLUSIVE MODE", W, false, un()),
        ("LOCK owners", W, false, all(OWNERS)),
        ("LOCK TABLE ONLY settings, pets * NOWAIT", W, false, all(PETS)),
        ("VACUUM", UTIL, false, un()),
        ("VACUUM (VERBOSE) owners", UTIL, false, un()),
        ("VACUUM FULL ANALYZE settings", UTIL, false, un()),
        ("ANALYZE owners", UTIL, false, un()),
        ("analyse", UTIL, false, un()),
        ("CHECKPOINT", UTIL, false, un()),
        ("DO $$ BEGIN PERFORM 1; END $$", UTIL, false, un()),
        ("DO $body$ BEGIN UPDATE owners SET name = 'x'; COMMIT; END $body$ LANGUAGE plpgsql", UTIL, false, un()),
        ("CALL refresh_stats(1)", UTIL, false, un()),
        ("CLUSTER owners USING owners_pkey", UTIL, false, un()),
        ("REINDEX TABLE owners", UTIL, false, un()),
        ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", UTIL, false, un()),
        ("LOAD 'auto_explain'", UTIL, false, un()),
        ("ALTER SYSTEM SET work_mem = '64MB'", UTIL, false, un()),
        ("/* a */ -- b\n /* c /* d */ */ vacuum", UTIL, false, un()),
    ]
}

fn ddl() -> Vec<Row> {
    vec![
        ("CREATE TABLE t (a int)", DDL, false, un()),
        ("create index concurrently on owners (name)", DDL, false, un()),
        ("ALTER TABLE owners ADD COLUMN age int", DDL, false, un()),
        ("ALTER SEQUENCE s RESTART WITH 1", DDL, false, un()),
        ("DROP TABLE IF EXISTS t", DDL, false, un()),
        ("TRUNCATE owners", DDL, false, un()),
        ("TRUNCATE TABLE settings, pets RESTART IDENTITY", DDL, false, un()),
        ("COMMENT ON TABLE owners IS 'people'", DDL, false, un()),
        ("GRANT SELECT ON owners TO reader", DDL, false, un()),
        ("REVOKE ALL ON pets FROM public", DDL, false, un()),
        ("CREATE TEMP TABLE scratch AS SELECT * FROM owners", DDL, false, un()),
        ("CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql", DDL, false, un()),
        ("DROP DATABASE regression", DDL, false, un()),
        ("CREATE SCHEMA app", DDL, false, un()),
        ("SECURITY LABEL ON TABLE owners IS 'x'", DDL, false, un()),
    ]
}

fn copy_declare_table() -> Vec<Row> {
    vec![
        ("COPY owners FROM STDIN", W, false, all(OWNERS)),
        ("COPY owners (owner_id, name) FROM STDIN WITH (FORMAT csv)", W, false, all(OWNERS)),
        ("COPY settings FROM '/tmp/x.csv'", W, false, un()),
        ("COPY settings TO STDOUT", R, false, un()),
        ("COPY pets TO STDOUT (FORMAT binary)", R, false, all(PETS)),
        ("COPY (SELECT * FROM owners WHERE owner_id = 5) TO STDOUT", R, false, keyed(OWNERS, vec![n("5")])),
        ("COPY (SELECT name FROM settings) TO STDOUT WITH CSV HEADER", R, false, un()),
        ("COPY (DELETE FROM settings RETURNING *) TO STDOUT", W, false, un()),
        ("copy app.events from stdin", W, false, all(EVENTS)),
        ("COPY \"Owners\" FROM STDIN", W, false, un()),
        ("DECLARE c1 CURSOR FOR SELECT * FROM owners WHERE owner_id = $1", R, true, keyed(OWNERS, vec![p(0)])),
        ("DECLARE c2 SCROLL CURSOR WITH HOLD FOR SELECT * FROM settings", R, true, un()),
        (
            "DECLARE c3 CURSOR FOR SELECT * FROM owners WHERE owner_id = 1 FOR UPDATE",
            W,
            false,
            keyed(OWNERS, vec![n("1")]),
        ),
        ("TABLE settings", R, true, un()),
        ("TABLE owners", R, true, all(OWNERS)),
    ]
}

fn unparsed() -> Vec<Row> {
    vec![
        ("", UNPARSED, false, un()),
        ("-- only a comment", UNPARSED, false, un()),
        ("FROBNICATE everything", UNPARSED, false, un()),
        ("SELECT * FROM owners WHERE", UNPARSED, false, un()),
        ("SELECT * FROM owners WHERE owner_id = ?", UNPARSED, false, un()),
        ("SELECT * FROM ROWS FROM (generate_series(1, 3))", UNPARSED, false, un()),
        ("INSERT INTO", UNPARSED, false, un()),
        ("START", UNPARSED, false, un()),
        ("SELECT 1; SELECT 2", UNPARSED, false, un()),
        ("UPDATE owners SET", UNPARSED, false, un()),
        ("42", UNPARSED, false, un()),
    ]
}

fn reads() -> Vec<Row> {
    vec![
        ("SELECT 1", R, true, un()),
        ("select now()", R, true, un()),
        ("SELECT * FROM settings", R, true, un()),
        ("SELECT * FROM owners WHERE owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE owner_id = $1", R, true, keyed(OWNERS, vec![p(0)])),
        ("SELECT * FROM owners WHERE owner_id = $1::int8", R, true, keyed(OWNERS, vec![p(0)])),
        ("SELECT * FROM owners WHERE owner_id = CAST($2 AS bigint)", R, true, keyed(OWNERS, vec![p(1)])),
        ("SELECT * FROM owners WHERE owner_id = '42'::text", R, true, keyed(OWNERS, vec![s("42")])),
        ("SELECT * FROM owners WHERE owner_id = -5", R, true, keyed(OWNERS, vec![n("-5")])),
        ("SELECT * FROM owners WHERE owner_id = - 5", R, true, keyed(OWNERS, vec![n("-5")])),
        ("SELECT * FROM owners WHERE 5 = owner_id", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE (owner_id = 5)", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE ((owner_id) = (5))", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE owner_id = 5 AND name = 'x'", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE name = 'x' AND (owner_id = 7 AND age > 3)", R, true, keyed(OWNERS, vec![n("7")])),
        ("SELECT * FROM owners WHERE owner_id = 5 OR name = 'x'", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE NOT owner_id = 5", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE NOT (owner_id <> 5)", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id = 1 OR owner_id = 2", R, true, keyed(OWNERS, vec![n("1"), n("2")])),
        ("SELECT * FROM owners WHERE owner_id IN (1, 2, 3)", R, true, keyed(OWNERS, vec![n("1"), n("2"), n("3")])),
        ("SELECT * FROM owners WHERE owner_id IN ($1, $2)", R, true, keyed(OWNERS, vec![p(0), p(1)])),
        ("SELECT * FROM owners WHERE owner_id NOT IN (1, 2)", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id = ANY($1)", R, true, keyed(OWNERS, vec![pa(0)])),
        ("SELECT * FROM owners WHERE owner_id = ANY($1::int8[])", R, true, keyed(OWNERS, vec![pa(0)])),
        ("SELECT * FROM owners WHERE owner_id = ANY('{1,2}')", R, true, keyed(OWNERS, vec![s("1"), s("2")])),
        ("SELECT * FROM owners WHERE owner_id = ANY(ARRAY[1, 2])", R, true, keyed(OWNERS, vec![n("1"), n("2")])),
        ("SELECT * FROM owners WHERE owner_id <> ALL($1)", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id > 5", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id BETWEEN 1 AND 3", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id = NULL", R, true, keyed(OWNERS, vec![null()])),
        ("SELECT * FROM owners WHERE owner_id IS NULL", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id IS NOT DISTINCT FROM $1", R, true, keyed(OWNERS, vec![p(0)])),
        ("SELECT * FROM owners o WHERE o.owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners o WHERE owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE owners.owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM public.owners WHERE public.owners.owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM OWNERS WHERE Owner_Id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM \"owners\" WHERE \"owner_id\" = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM \"Owners\" WHERE owner_id = 5", R, true, un()),
        ("SELECT * FROM owners WHERE \"OWNER_ID\" = 5", R, true, all(OWNERS)),
        ("SELECT * FROM owners", R, true, all(OWNERS)),
        ("SELECT count(*) FROM owners", R, true, all(OWNERS)),
        ("SELECT name FROM owners ORDER BY name LIMIT 10", R, true, all(OWNERS)),
        ("SELECT * FROM owners LIMIT 5", R, true, all(OWNERS)),
        ("SELECT * FROM accounts WHERE email = 'a@example.com'", R, true, keyed(ACCOUNTS, vec![s("a@example.com")])),
        ("SELECT * FROM accounts WHERE email = E'it\\'s'", R, true, keyed(ACCOUNTS, vec![s("it's")])),
        ("SELECT * FROM accounts WHERE email = 'it''s'", R, true, keyed(ACCOUNTS, vec![s("it's")])),
        ("SELECT * FROM accounts WHERE email = $$x@y$$", R, true, keyed(ACCOUNTS, vec![s("x@y")])),
        ("SELECT * FROM accounts WHERE email = $tag$x@y$tag$", R, true, keyed(ACCOUNTS, vec![s("x@y")])),
        ("SELECT * FROM accounts WHERE email = text 'q'", R, true, keyed(ACCOUNTS, vec![s("q")])),
        ("SELECT * FROM accounts WHERE lower(email) = 'x'", R, true, all(ACCOUNTS)),
        ("SELECT * FROM accounts WHERE email IN ('a', 'b')", R, true, keyed(ACCOUNTS, vec![s("a"), s("b")])),
        (
            "SELECT * FROM accounts WHERE email = ANY('{\"a@x\",\"b@y\"}')",
            R,
            true,
            keyed(ACCOUNTS, vec![s("a@x"), s("b@y")]),
        ),
        ("SELECT * FROM app.events WHERE tenant_id = 9", R, true, keyed(EVENTS, vec![n("9")])),
        ("SELECT * FROM events WHERE tenant_id = 9", R, true, keyed(EVENTS, vec![n("9")])),
        ("SELECT * FROM other.events WHERE tenant_id = 9", R, true, un()),
        ("SELECT * FROM app.events e WHERE e.tenant_id = $3", R, true, keyed(EVENTS, vec![p(2)])),
        ("SELECT * FROM app.events WHERE app.events.tenant_id = 1", R, true, keyed(EVENTS, vec![n("1")])),
        ("SELECT * FROM pg_catalog.pg_class", R, true, un()),
        ("SELECT * FROM pg_stat_activity", R, false, un()),
        ("SELECT * FROM information_schema.tables", R, true, un()),
        ("SELECT relname FROM pg_class c JOIN owners o ON true", R, true, all(OWNERS)),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 4711", R, true, un()),
        ("SELECT 'DELETE FROM owners' AS q", R, true, un()),
        ("SELECT $1::text", R, true, un()),
        ("SELECT * FROM owners WHERE owner_id = $10", R, true, keyed(OWNERS, vec![p(9)])),
        (
            "SELECT * FROM watch_sessions WHERE owner_id = 11 AND started_at > now() - interval '1 day'",
            R,
            true,
            keyed(WATCH, vec![n("11")]),
        ),
        ("SELECT * FROM owners WHERE owner_id = (5)", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE owner_id = 2 + 3", R, true, all(OWNERS)),
        ("SELECT * FROM owners WHERE owner_id = $1 AND owner_id = $2", R, true, keyed(OWNERS, vec![p(0)])),
        (
            "SELECT * FROM owners WHERE owner_id = 1 AND (owner_id = 2 OR name = 'x')",
            R,
            true,
            keyed(OWNERS, vec![n("1")]),
        ),
        (
            "SELECT * FROM owners WHERE (owner_id = 1 OR owner_id = 2) AND name = 'a'",
            R,
            true,
            keyed(OWNERS, vec![n("1"), n("2")]),
        ),
        (
            "SELECT * FROM owners WHERE (owner_id = 1 AND age > 2) OR owner_id IN (3, 1)",
            R,
            true,
            keyed(OWNERS, vec![n("1"), n("3")]),
        ),
        ("SELECT * FROM owners WHERE owner_id IN (1, owner_id)", R, true, all(OWNERS)),
        ("SELECT * FROM   owners\n\tWHERE\n owner_id = 5;", R, true, keyed(OWNERS, vec![n("5")])),
        ("/* hint */ SELECT * FROM owners WHERE owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners WHERE owner_id = 'abc'", R, true, keyed(OWNERS, vec![s("abc")])),
        ("SELECT * FROM owners WHERE owner_id = 1e3", R, true, keyed(OWNERS, vec![n("1e3")])),
        ("SELECT * FROM owners WHERE owner_id = -$1", R, true, all(OWNERS)),
        ("SELECT * FROM ONLY owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("SELECT * FROM owners TABLESAMPLE SYSTEM (10)", R, true, all(OWNERS)),
        ("SELECT x FROM settings WHERE x = ANY($1)", R, true, un()),
        ("SELECT count(*) FILTER (WHERE age > 3) FROM owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY age) FROM owners", R, true, all(OWNERS)),
        ("SELECT jsonb_path_query(data, '$.a') FROM owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("SELECT 1 UNION SELECT 2", R, true, un()),
        ("VALUES (1), (2)", R, true, un()),
        ("values (1, 'a')", R, true, un()),
        ("(SELECT * FROM owners WHERE owner_id = 1)", R, true, keyed(OWNERS, vec![n("1")])),
    ]
}

fn read_safety() -> Vec<Row> {
    vec![
        ("SELECT nextval('s')", R, false, un()),
        ("SELECT NEXTVAL('s')", R, false, un()),
        ("SELECT \"nextval\"('s')", R, false, un()),
        ("SELECT currval('s')", R, false, un()),
        ("SELECT setval('s', 10)", R, false, un()),
        ("SELECT lastval()", R, false, un()),
        ("SELECT pg_advisory_lock(1)", R, false, un()),
        ("SELECT pg_try_advisory_xact_lock(1)", R, false, un()),
        ("SELECT set_config('app.user', 'x', false)", R, false, un()),
        ("SELECT pg_catalog.set_config('a', 'b', false)", R, false, un()),
        ("SELECT pg_export_snapshot()", R, false, un()),
        ("SELECT txid_current()", R, false, un()),
        ("SELECT pg_current_xact_id()", R, false, un()),
        ("SELECT * FROM dblink('host=x', 'select 1') AS t(a int)", R, false, un()),
        ("SELECT lo_import('/tmp/x')", R, false, un()),
        ("SELECT pg_is_in_recovery()", R, true, un()),
        ("SELECT count(*) FROM pg_stat_wal_receiver", R, false, un()),
        ("SELECT * FROM pg_catalog.pg_stat_activity", R, false, un()),
        ("SELECT * FROM pg_locks", R, false, un()),
        ("SELECT * FROM pg_stats", R, true, un()),
        ("SELECT my_func(owner_id) FROM owners WHERE owner_id = 1", R, false, keyed(OWNERS, vec![n("1")])),
        ("SELECT public.lower('X')", R, false, un()),
        ("SELECT * FROM my_srf(1)", R, false, un()),
        ("SELECT (SELECT nextval('s'))", R, false, un()),
        ("SELECT EXISTS (SELECT 1 FROM settings WHERE f(x))", R, false, un()),
        ("SELECT * FROM settings WHERE k IN (SELECT g(v) FROM settings)", R, false, un()),
        ("WITH x AS (SELECT nextval('s')) SELECT * FROM x", R, false, un()),
        ("SELECT pg_catalog.lower('X'), pg_catalog.now()", R, true, un()),
        ("SELECT \"lower\"('X')", R, true, un()),
        ("SELECT \"LOWER\"('X')", R, false, un()),
        ("SELECT pg_sleep(1)", R, true, un()),
        (
            "SELECT count(*), sum(x), avg(x), min(x), max(x), array_agg(x), string_agg(y, ','), bool_and(b) FROM settings",
            R,
            true,
            un(),
        ),
        (
            "SELECT lower(name), upper(name), length(name), substr(name, 1, 2), concat(a, b), coalesce(a, b), \
             nullif(a, b), greatest(1, 2), least(1, 2) FROM settings",
            R,
            true,
            un(),
        ),
        (
            "SELECT now(), current_timestamp, current_date, localtimestamp, date_trunc('day', now()), \
             extract(year from now()), age(now()), to_char(now(), 'YYYY')",
            R,
            true,
            un(),
        ),
        (
            "SELECT data->>'a', data @> '{}', data #>> '{a,b}', jsonb_build_object('a', 1), jsonb_array_elements(data) \
             FROM settings",
            R,
            true,
            un(),
        ),
        ("SELECT * FROM generate_series(1, 10) g", R, true, un()),
        ("SELECT * FROM unnest(ARRAY[1,2]) WITH ORDINALITY", R, true, un()),
        ("SELECT format('%s', 1), md5('x'), gen_random_uuid(), random(), abs(-1), round(1.5)", R, true, un()),
        (
            "SELECT CAST(x AS int), x::text, x IS DISTINCT FROM y, CASE WHEN a THEN 1 ELSE 2 END, ARRAY(SELECT 1), \
             ROW(1, 2) FROM settings",
            R,
            true,
            un(),
        ),
        (
            "SELECT substring(name FROM 1 FOR 2), trim(name), position('a' IN name), overlay(name placing 'x' from 1) \
             FROM settings",
            R,
            true,
            un(),
        ),
        ("SELECT current_user, session_user, current_setting('work_mem'), version()", R, true, un()),
        ("SELECT regexp_replace(name, 'a', 'b'), split_part(name, ',', 1) FROM settings", R, true, un()),
    ]
}

fn locks_into_ctes() -> Vec<Row> {
    vec![
        ("SELECT * FROM owners WHERE owner_id = 5 FOR UPDATE", W, false, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM settings FOR SHARE", W, false, un()),
        ("SELECT * FROM settings FOR NO KEY UPDATE", W, false, un()),
        ("SELECT * FROM settings FOR KEY SHARE SKIP LOCKED", W, false, un()),
        ("SELECT * FROM owners WHERE owner_id = 1 FOR NO KEY UPDATE", W, false, keyed(OWNERS, vec![n("1")])),
        (
            "SELECT * FROM owners WHERE owner_id = 1 FOR UPDATE OF owners SKIP LOCKED",
            W,
            false,
            keyed(OWNERS, vec![n("1")]),
        ),
        (
            "SELECT * FROM owners WHERE owner_id IN (SELECT owner_id FROM pets WHERE owner_id = 5 FOR UPDATE) \
             AND owner_id = 5",
            W,
            false,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("SELECT * FROM (SELECT * FROM settings FOR UPDATE) s", W, false, un()),
        ("SELECT * FROM settings WHERE EXISTS (SELECT 1 FROM settings s2 FOR SHARE)", W, false, un()),
        ("SELECT * FROM owners FOR UPDATE", W, false, all(OWNERS)),
        ("SELECT * FROM settings FOR UPDATE OF settings NOWAIT", W, false, un()),
        ("SELECT * INTO backup FROM settings", W, false, un()),
        ("SELECT * INTO TEMP scratch FROM owners WHERE owner_id = 3", W, false, keyed(OWNERS, vec![n("3")])),
        ("WITH x AS (SELECT * FROM settings) SELECT * FROM x", R, true, un()),
        ("WITH x AS (SELECT * FROM owners WHERE owner_id = 5) SELECT * FROM x", R, true, keyed(OWNERS, vec![n("5")])),
        ("WITH x AS (SELECT * FROM owners) SELECT * FROM x", R, true, no("subquery on sharded table owners")),
        ("WITH d AS (DELETE FROM settings RETURNING *) SELECT * FROM d", W, false, un()),
        (
            "WITH u AS (UPDATE owners SET name = 'x' WHERE owner_id = 5 RETURNING *) SELECT * FROM u",
            W,
            false,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("WITH u AS (UPDATE owners SET name = 'x' RETURNING *) SELECT * FROM u", W, false, no("subquery on sharded")),
        ("WITH i AS (INSERT INTO settings (k) VALUES (1) RETURNING *) SELECT * FROM i", W, false, un()),
        (
            "WITH i AS (INSERT INTO owners (owner_id) VALUES (1) RETURNING *) SELECT * FROM i",
            W,
            false,
            no("INSERT into sharded table owners inside WITH"),
        ),
        ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", R, true, un()),
        ("WITH owners AS (SELECT 1 AS owner_id) SELECT * FROM owners", R, true, un()),
        (
            "WITH x AS (SELECT 1) INSERT INTO owners (owner_id, name) VALUES (1, 'a')",
            W,
            false,
            rows(OWNERS, vec![n("1")]),
        ),
        ("WITH x AS (SELECT 1) UPDATE owners SET name = 'b' WHERE owner_id = 4", W, false, keyed(OWNERS, vec![n("4")])),
        (
            "WITH x AS MATERIALIZED (SELECT * FROM pets WHERE owner_id = 2) SELECT * FROM x JOIN owners o ON \
             o.owner_id = 2",
            R,
            true,
            keyed(PETS, vec![n("2")]),
        ),
        (
            "WITH a AS (SELECT * FROM owners WHERE owner_id = 1), b AS (SELECT * FROM pets WHERE owner_id = 2) \
             SELECT * FROM a, b",
            R,
            true,
            no("different shard keys"),
        ),
        (
            "WITH d AS (DELETE FROM owners WHERE owner_id = $1 RETURNING *) SELECT count(*) FROM d",
            W,
            false,
            keyed(OWNERS, vec![p(0)]),
        ),
    ]
}

fn joins_and_subqueries() -> Vec<Row> {
    vec![
        (
            "SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id WHERE o.owner_id = 5",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        (
            "SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id WHERE p.owner_id = $1",
            R,
            true,
            keyed(PETS, vec![p(0)]),
        ),
        (
            "SELECT * FROM owners o, pets p WHERE p.owner_id = o.owner_id AND o.owner_id = 5",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("SELECT * FROM owners JOIN pets USING (owner_id) WHERE owner_id = 5", R, true, keyed(OWNERS, vec![n("5")])),
        ("SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id", R, true, all(OWNERS)),
        (
            "SELECT * FROM owners o JOIN pets p ON p.name = o.name",
            R,
            true,
            no("join of sharded tables owners and pets"),
        ),
        ("SELECT * FROM owners o, pets p WHERE o.owner_id = 5", R, true, no("join of sharded tables owners and pets")),
        (
            "SELECT * FROM owners o, pets p WHERE o.owner_id = 5 AND p.owner_id = 5",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("SELECT * FROM owners o, pets p WHERE o.owner_id = 5 AND p.owner_id = 6", R, true, no("different shard keys")),
        (
            "SELECT * FROM pets p JOIN settings s ON s.k = p.kind",
            R,
            true,
            no("join of sharded table pets with unsharded table settings"),
        ),
        (
            "SELECT * FROM pets p JOIN settings s ON s.k = p.kind WHERE p.owner_id = 1",
            R,
            true,
            no("unsharded table settings"),
        ),
        (
            "SELECT * FROM owners o LEFT JOIN pets p ON p.owner_id = o.owner_id WHERE o.owner_id = 5",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("SELECT * FROM owners o LEFT JOIN pets p ON p.owner_id = o.owner_id AND p.owner_id = 5", R, true, all(OWNERS)),
        (
            "SELECT * FROM owners o LEFT JOIN pets p ON p.owner_id = o.owner_id WHERE p.owner_id = 5",
            R,
            true,
            keyed(PETS, vec![n("5")]),
        ),
        (
            "SELECT * FROM owners o FULL JOIN pets p ON p.owner_id = o.owner_id WHERE o.owner_id = 2",
            R,
            true,
            keyed(OWNERS, vec![n("2")]),
        ),
        (
            "SELECT * FROM owners o JOIN accounts a ON a.email = o.email WHERE o.owner_id = 1",
            R,
            true,
            no("join of sharded tables owners and accounts"),
        ),
        (
            "SELECT * FROM owners o JOIN accounts a ON a.email = o.email WHERE o.owner_id = 1 AND a.email = 'x'",
            R,
            true,
            no("different shard keys"),
        ),
        (
            "SELECT * FROM owners a JOIN owners b ON a.owner_id = b.owner_id WHERE b.owner_id = 3",
            R,
            true,
            keyed(OWNERS, vec![n("3")]),
        ),
        (
            "SELECT * FROM owners a, owners b WHERE a.owner_id = 3",
            R,
            true,
            no("join of sharded tables owners and owners"),
        ),
        (
            "SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id JOIN watch_sessions w ON w.owner_id = \
             p.owner_id WHERE o.owner_id = 8",
            R,
            true,
            keyed(OWNERS, vec![n("8")]),
        ),
        (
            "SELECT * FROM owners o JOIN generate_series(1, 3) g ON true WHERE o.owner_id = 1",
            R,
            true,
            keyed(OWNERS, vec![n("1")]),
        ),
        (
            "SELECT * FROM owners o CROSS JOIN pets p WHERE o.owner_id = 1 AND p.owner_id = o.owner_id",
            R,
            true,
            keyed(OWNERS, vec![n("1")]),
        ),
        (
            "SELECT * FROM (owners o JOIN pets p ON p.owner_id = o.owner_id) WHERE o.owner_id = 2",
            R,
            true,
            keyed(OWNERS, vec![n("2")]),
        ),
        (
            "SELECT * FROM owners o LEFT JOIN (pets p JOIN watch_sessions w ON w.owner_id = p.owner_id AND \
             p.owner_id = 4) ON p.owner_id = o.owner_id",
            R,
            true,
            all(OWNERS),
        ),
        (
            "SELECT * FROM app.events e JOIN owners o ON o.owner_id = e.tenant_id WHERE e.tenant_id = 1",
            R,
            true,
            keyed(EVENTS, vec![n("1")]),
        ),
        (
            "SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id WHERE o.owner_id = 1 OR p.owner_id = 2",
            R,
            true,
            all(OWNERS),
        ),
        ("SELECT * FROM owners o JOIN pets p ON true WHERE owner_id = 5", R, true, no("join of sharded tables")),
        (
            "SELECT * FROM owners o WHERE o.owner_id = 5 AND EXISTS (SELECT 1 FROM pets p WHERE p.owner_id = \
             o.owner_id)",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        (
            "SELECT * FROM owners o WHERE EXISTS (SELECT 1 FROM pets p WHERE p.owner_id = o.owner_id)",
            R,
            true,
            all(OWNERS),
        ),
        (
            "SELECT * FROM owners o WHERE NOT EXISTS (SELECT 1 FROM pets p WHERE p.owner_id = o.owner_id AND \
             p.owner_id = 5)",
            R,
            true,
            all(OWNERS),
        ),
        ("SELECT * FROM owners WHERE owner_id IN (SELECT owner_id FROM pets)", R, true, all(OWNERS)),
        (
            "SELECT * FROM owners WHERE owner_id = 5 AND owner_id IN (SELECT owner_id FROM pets)",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        (
            "SELECT * FROM owners o WHERE o.owner_id = ANY(SELECT p.owner_id FROM pets p WHERE p.name = 'x')",
            R,
            true,
            all(OWNERS),
        ),
        (
            "SELECT * FROM owners WHERE owner_id NOT IN (SELECT owner_id FROM pets)",
            R,
            true,
            no("join of sharded tables owners and pets"),
        ),
        (
            "SELECT * FROM owners WHERE owner_id IN (SELECT name FROM pets)",
            R,
            true,
            no("join of sharded tables owners and pets"),
        ),
        (
            "SELECT * FROM owners WHERE name IN (SELECT owner_id FROM pets)",
            R,
            true,
            no("join of sharded tables owners and pets"),
        ),
        (
            "SELECT * FROM owners WHERE owner_id IN (SELECT owner_id FROM pets) OR owner_id = 1",
            R,
            true,
            no("join of sharded tables owners and pets"),
        ),
        (
            "SELECT * FROM owners WHERE owner_id = 5 AND name IN (SELECT name FROM pets WHERE owner_id = 5)",
            R,
            true,
            keyed(OWNERS, vec![n("5")]),
        ),
        ("SELECT (SELECT count(*) FROM pets)", R, true, no("subquery on sharded table pets")),
        ("SELECT (SELECT count(*) FROM pets WHERE owner_id = 3)", R, true, keyed(PETS, vec![n("3")])),
        ("SELECT * FROM (SELECT * FROM owners) s", R, true, no("subquery on sharded table owners")),
        ("SELECT * FROM (SELECT * FROM owners WHERE owner_id = 4) s", R, true, keyed(OWNERS, vec![n("4")])),
        (
            "SELECT * FROM settings WHERE k IN (SELECT name FROM owners)",
            R,
            true,
            no("join of sharded table owners with unsharded table settings"),
        ),
        ("SELECT o.*, (SELECT count(*) FROM pets p WHERE p.owner_id = o.owner_id) FROM owners o", R, true, all(OWNERS)),
        (
            "SELECT * FROM owners o, LATERAL (SELECT * FROM pets p WHERE p.owner_id = o.owner_id) x WHERE \
             o.owner_id = 1",
            R,
            true,
            keyed(OWNERS, vec![n("1")]),
        ),
        (
            "SELECT * FROM owners o, LATERAL (SELECT * FROM pets p WHERE p.owner_id = o.owner_id) x",
            R,
            true,
            no("subquery on sharded table"),
        ),
        (
            "SELECT * FROM settings WHERE k = (SELECT max(name) FROM owners WHERE owner_id = 1)",
            R,
            true,
            no("unsharded table settings"),
        ),
        ("SELECT DISTINCT name FROM owners", R, true, all(OWNERS)),
        ("SELECT DISTINCT ON (name) name FROM owners", R, true, no("DISTINCT ON over all shards")),
        ("SELECT DISTINCT name FROM owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("SELECT name, row_number() OVER (ORDER BY name) FROM owners", R, true, no("window function over all shards")),
        (
            "SELECT name, rank() OVER w FROM owners WHERE owner_id = 2 WINDOW w AS (ORDER BY name)",
            R,
            true,
            keyed(OWNERS, vec![n("2")]),
        ),
        (
            "SELECT owner_id FROM owners UNION SELECT owner_id FROM pets",
            R,
            true,
            no("set operation over sharded tables owners and pets"),
        ),
        (
            "SELECT owner_id FROM owners WHERE owner_id = 1 UNION ALL SELECT owner_id FROM pets WHERE owner_id = 1",
            R,
            true,
            keyed(OWNERS, vec![n("1")]),
        ),
        ("SELECT name FROM owners UNION ALL SELECT 'x'", R, true, no("set operation over all shards of owners")),
        ("SELECT name FROM owners EXCEPT SELECT name FROM owners", R, true, no("set operation over sharded tables")),
    ]
}

fn inserts() -> Vec<Row> {
    vec![
        ("INSERT INTO owners (owner_id, name) VALUES ($1, $2)", W, false, rows(OWNERS, vec![p(0)])),
        (
            "INSERT INTO owners (name, owner_id) VALUES ('a', 1), ('b', 2), ('c', -3)",
            W,
            false,
            rows(OWNERS, vec![n("1"), n("2"), n("-3")]),
        ),
        ("INSERT INTO owners VALUES (1, 'a')", W, false, no("INSERT into sharded table owners must name its columns")),
        ("INSERT INTO owners (name) VALUES ('a')", W, false, no("without its key column owner_id")),
        (
            "INSERT INTO owners (owner_id, name) SELECT owner_id, name FROM pets",
            W,
            false,
            no("INSERT ... SELECT into sharded table owners"),
        ),
        ("INSERT INTO owners (owner_id, name) SELECT 1, 'a'", W, false, no("INSERT ... SELECT into sharded table")),
        ("INSERT INTO owners DEFAULT VALUES", W, false, no("must name its columns")),
        ("INSERT INTO owners (owner_id) VALUES (nextval('owner_ids'))", W, false, no("row 1 has no constant owner_id")),
        ("INSERT INTO owners (owner_id) VALUES (1), (DEFAULT)", W, false, no("row 2 has no constant owner_id")),
        (
            "INSERT INTO owners (owner_id, name) VALUES (1, 'a') ON CONFLICT (owner_id) DO UPDATE SET name = \
             excluded.name",
            W,
            false,
            rows(OWNERS, vec![n("1")]),
        ),
        (
            "INSERT INTO owners (owner_id, name) VALUES (1, 'a') ON CONFLICT DO NOTHING",
            W,
            false,
            rows(OWNERS, vec![n("1")]),
        ),
        (
            "INSERT INTO owners (owner_id, email) VALUES (1, 'a') ON CONFLICT (email) DO UPDATE SET owner_id = \
             excluded.owner_id",
            W,
            false,
            no("changing the shard key owners.owner_id"),
        ),
        (
            "INSERT INTO owners (owner_id, name) VALUES (1, 'a') ON CONFLICT (owner_id) DO UPDATE SET owner_id = \
             excluded.owner_id, name = excluded.name",
            W,
            false,
            rows(OWNERS, vec![n("1")]),
        ),
        ("INSERT INTO owners (owner_id, name) VALUES (1, 'a') RETURNING *", W, false, rows(OWNERS, vec![n("1")])),
        (
            "INSERT INTO owners AS o (owner_id, name) VALUES (1, 'x') ON CONFLICT (owner_id) DO UPDATE SET name = \
             o.name || 'y'",
            W,
            false,
            rows(OWNERS, vec![n("1")]),
        ),
        ("INSERT INTO settings (k, v) VALUES ('a', 'b')", W, false, un()),
        ("INSERT INTO settings VALUES ('a', 'b')", W, false, un()),
        ("INSERT INTO settings SELECT * FROM settings", W, false, un()),
        (
            "INSERT INTO settings (k) SELECT name FROM owners WHERE owner_id = 1",
            W,
            false,
            no("write to unsharded table settings reading sharded table owners"),
        ),
        ("INSERT INTO accounts (email, name) VALUES ('a@x', 'A')", W, false, rows(ACCOUNTS, vec![s("a@x")])),
        (
            "INSERT INTO app.events (tenant_id, payload) VALUES ($1, $2), ($3, $4)",
            W,
            false,
            rows(EVENTS, vec![p(0), p(2)]),
        ),
        ("insert into \"owners\" (\"owner_id\") values (7)", W, false, rows(OWNERS, vec![n("7")])),
        (
            "INSERT INTO owners (owner_id, name) VALUES (1, (SELECT v FROM settings))",
            W,
            false,
            no("unsharded table settings"),
        ),
        (
            "INSERT INTO owners (owner_id, name) VALUES (1, (SELECT name FROM pets WHERE owner_id = 1))",
            W,
            false,
            no("INSERT into sharded table owners with a subquery on sharded table pets"),
        ),
        ("INSERT INTO owners (owner_id, name) VALUES (1::int8, 'a')", W, false, rows(OWNERS, vec![n("1")])),
        ("INSERT INTO owners (owner_id, name) VALUES ('1', 'a')", W, false, rows(OWNERS, vec![s("1")])),
        ("INSERT INTO owners (owner_id, name) VALUES (NULL, 'a')", W, false, rows(OWNERS, vec![null()])),
        ("-- c\nINSERT INTO owners (owner_id) VALUES ($1)", W, false, rows(OWNERS, vec![p(0)])),
    ]
}

fn updates_deletes_merges() -> Vec<Row> {
    vec![
        ("UPDATE owners SET name = 'x' WHERE owner_id = 5", W, false, keyed(OWNERS, vec![n("5")])),
        ("UPDATE owners SET name = $1 WHERE owner_id = $2", W, false, keyed(OWNERS, vec![p(1)])),
        ("UPDATE owners SET name = 'x'", W, false, all(OWNERS)),
        ("UPDATE owners SET owner_id = 6 WHERE owner_id = 5", W, false, no("changing the shard key owners.owner_id")),
        ("UPDATE owners SET (owner_id, name) = (6, 'x') WHERE owner_id = 5", W, false, no("changing the shard key")),
        (
            "UPDATE owners o SET name = p.name FROM pets p WHERE p.owner_id = o.owner_id AND o.owner_id = 5",
            W,
            false,
            keyed(OWNERS, vec![n("5")]),
        ),
        (
            "UPDATE owners SET name = 'x' FROM settings s WHERE s.k = owners.name AND owners.owner_id = 1",
            W,
            false,
            no("unsharded table settings"),
        ),
        ("UPDATE settings SET v = 'x' WHERE k = 'a'", W, false, un()),
        (
            "UPDATE settings SET v = (SELECT name FROM owners WHERE owner_id = 1)",
            W,
            false,
            no("write to unsharded table settings reading sharded table owners"),
        ),
        ("UPDATE owners SET name = 'x' WHERE owner_id IN (1, 2)", W, false, keyed(OWNERS, vec![n("1"), n("2")])),
        (
            "UPDATE owners SET visits = visits + 1 WHERE owner_id = ANY($1) RETURNING *",
            W,
            false,
            keyed(OWNERS, vec![pa(0)]),
        ),
        ("UPDATE accounts SET name = 'n' WHERE email = $1", W, false, keyed(ACCOUNTS, vec![p(0)])),
        ("UPDATE accounts SET email = 'n' WHERE email = $1", W, false, no("changing the shard key accounts.email")),
        (
            "UPDATE owners SET name = 'x' WHERE owner_id = 5 OR owner_id = 6",
            W,
            false,
            keyed(OWNERS, vec![n("5"), n("6")]),
        ),
        ("update OWNERS set NAME = 'x' where OWNER_ID = 5", W, false, keyed(OWNERS, vec![n("5")])),
        ("UPDATE owners SET name = nextval('s')::text WHERE owner_id = 5", W, false, keyed(OWNERS, vec![n("5")])),
        ("UPDATE app.events SET payload = '{}' WHERE tenant_id = 2", W, false, keyed(EVENTS, vec![n("2")])),
        ("DELETE FROM owners WHERE owner_id = 5", W, false, keyed(OWNERS, vec![n("5")])),
        ("DELETE FROM owners", W, false, all(OWNERS)),
        (
            "DELETE FROM owners o USING pets p WHERE p.owner_id = o.owner_id AND p.owner_id = 9",
            W,
            false,
            keyed(PETS, vec![n("9")]),
        ),
        ("DELETE FROM settings WHERE k = 'a'", W, false, un()),
        ("DELETE FROM owners WHERE owner_id IN (SELECT owner_id FROM pets WHERE name = 'x')", W, false, all(OWNERS)),
        (
            "DELETE FROM owners WHERE owner_id IN (SELECT owner_id FROM pets WHERE name = 'x') AND owner_id = $1",
            W,
            false,
            keyed(OWNERS, vec![p(0)]),
        ),
        (
            "DELETE FROM owners WHERE name IN (SELECT name FROM pets WHERE owner_id = 2)",
            W,
            false,
            no("join of sharded tables owners and pets"),
        ),
        ("DELETE FROM app.events WHERE tenant_id = 3 RETURNING *", W, false, keyed(EVENTS, vec![n("3")])),
        ("DELETE FROM owners WHERE ctid = '(0,1)'", W, false, all(OWNERS)),
        (
            "MERGE INTO owners o USING pets p ON p.owner_id = o.owner_id AND o.owner_id = 5 WHEN MATCHED THEN UPDATE \
             SET name = p.name",
            W,
            false,
            keyed(OWNERS, vec![n("5")]),
        ),
        (
            "MERGE INTO owners o USING (VALUES (1, 'a')) v(id, name) ON o.owner_id = v.id WHEN NOT MATCHED THEN \
             INSERT (owner_id, name) VALUES (v.id, v.name)",
            W,
            false,
            no("MERGE ... INSERT into sharded table owners"),
        ),
        (
            "MERGE INTO settings s USING (VALUES ('a', 'b')) v(k, v) ON s.k = v.k WHEN MATCHED THEN UPDATE SET v = \
             v.v WHEN NOT MATCHED THEN INSERT (k, v) VALUES (v.k, v.v)",
            W,
            false,
            un(),
        ),
        ("MERGE INTO owners o USING pets p ON p.owner_id = o.owner_id WHEN MATCHED THEN DELETE", W, false, all(OWNERS)),
        (
            "MERGE INTO owners o USING pets p ON p.owner_id = o.owner_id WHEN MATCHED THEN UPDATE SET owner_id = 3",
            W,
            false,
            no("changing the shard key"),
        ),
    ]
}

fn explains() -> Vec<Row> {
    vec![
        ("EXPLAIN SELECT * FROM owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("EXPLAIN ANALYZE SELECT * FROM owners WHERE owner_id = 1", R, true, keyed(OWNERS, vec![n("1")])),
        ("EXPLAIN ANALYZE DELETE FROM owners WHERE owner_id = 1", W, false, keyed(OWNERS, vec![n("1")])),
        ("EXPLAIN (ANALYZE, BUFFERS) UPDATE settings SET v = 1", W, false, un()),
        ("EXPLAIN (ANALYZE false) DELETE FROM settings", R, false, un()),
        ("EXPLAIN DELETE FROM settings", R, false, un()),
        ("EXPLAIN SELECT nextval('s')", R, false, un()),
        ("EXPLAIN (FORMAT JSON) SELECT * FROM settings", R, true, un()),
        ("explain analyze verbose insert into owners (owner_id) values (3)", W, false, rows(OWNERS, vec![n("3")])),
        ("EXPLAIN SELECT * FROM owners FOR UPDATE", R, false, all(OWNERS)),
    ]
}

fn all_rows() -> Vec<Row> {
    [
        transactions(),
        session_and_utility(),
        ddl(),
        copy_declare_table(),
        unparsed(),
        reads(),
        read_safety(),
        locks_into_ctes(),
        joins_and_subqueries(),
        inserts(),
        updates_deletes_merges(),
        explains(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn diff(got: &Analysis, class: &Class, safe: bool, tg: &Tg) -> Vec<String> {
    let mut d = Vec::new();
    if got.class != *class {
        d.push(format!("class: want {class:?}, got {:?}", got.class));
    }
    if got.replica_safe != safe {
        d.push(format!("replica_safe: want {safe}, got {}", got.replica_safe));
    }
    match (tg, &got.targeting) {
        (Tg::Is(want), g) if want == g => {}
        (Tg::Unsupported(sub), Targeting::Unsupported(m)) if m.contains(sub) => {}
        (want, g) => d.push(format!("targeting: want {want:?}, got {g:?}")),
    }
    if got.reason.is_empty() {
        d.push("empty reason".to_owned());
    }
    d
}

#[test]
fn statements() {
    let topo = topology();
    let rows = all_rows();
    assert!(rows.len() >= 220, "only {} rows", rows.len());
    let mut failures = 0;
    for (sql, class, safe, tg) in &rows {
        let got = analyze(sql, &topo);
        let d = diff(&got, class, *safe, tg);
        if !d.is_empty() {
            failures += 1;
            eprintln!("FAIL {sql:?}\n  {}\n  reason: {}", d.join("\n  "), got.reason);
        }
    }
    assert_eq!(failures, 0, "{failures} of {} statements analysed wrongly (see above)", rows.len());
}

#[test]
fn reasons_name_the_cause() {
    let topo = topology();
    let cases = [
        ("SELECT nextval('s')", "calls nextval()"),
        ("SELECT NEXTVAL('s')", "calls nextval()"),
        ("SELECT public.f(1)", "calls public.f()"),
        ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
        ("SELECT * FROM t FOR KEY SHARE", "FOR SHARE"),
        ("SELECT * INTO x FROM t", "SELECT INTO"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "data-modifying WITH"),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 4711", "read"),
        ("SELECT * FROM owners WHERE owner_id = $1", "key owner_id = $1"),
        ("SELECT * FROM owners WHERE owner_id IN (1, 2)", "key owner_id IN (1, 2)"),
        ("SELECT * FROM owners WHERE owner_id = ANY($2)", "key owner_id = ANY($2)"),
        ("SELECT * FROM owners", "all shards of owners"),
        ("SELECT * FROM app.events", "all shards of app.events"),
        ("UPDATE owners SET name = 'x' WHERE owner_id = 4711", "UPDATE; key owner_id = 4711"),
        ("INSERT INTO owners (owner_id) VALUES (1), (2)", "2 rows by owner_id"),
        ("SELECT * FROM owners WHERE", "does not parse"),
        ("SELECT 1; SELECT 2", "several statements"),
        ("BEGIN READ ONLY", "BEGIN READ ONLY"),
        ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN ANALYZE DELETE"),
        ("COPY owners FROM STDIN", "COPY owners FROM"),
    ];
    let mut failures = 0;
    for (sql, want) in cases {
        let got = analyze(sql, &topo).reason;
        if !got.contains(want) {
            failures += 1;
            eprintln!("FAIL {sql:?}: reason {got:?} lacks {want:?}");
        }
    }
    assert_eq!(failures, 0);
}

#[test]
fn no_sharding_rules_means_unsharded() {
    let mut topo = topology();
    topo.tables.clear();
    for sql in [
        "SELECT * FROM owners",
        "INSERT INTO owners VALUES (1)",
        "UPDATE owners SET owner_id = 2",
        "SELECT * FROM owners o JOIN settings s ON true",
    ] {
        assert_eq!(analyze(sql, &topo).targeting, Targeting::Unsharded, "{sql}");
    }
}

/// Every prefix of every statement above, and some noise: the analyzer
/// answers (it never panics), and what it cannot read it leaves unparsed.
#[test]
fn prefixes_never_panic() {
    let topo = topology();
    let mut noise: Vec<String> = vec![
        "COPY (".into(),
        "COPY ((SELECT 1)".into(),
        "DECLARE c CURSOR".into(),
        "TABLE".into(),
        "SELECT $".into(),
        "SELECT '".into(),
        "SELECT $$".into(),
        "/* unterminated".into(),
        "\u{feff}SELECT 1".into(),
        "SELECT \"ö\" FROM \"öwners\" WHERE ö = 'ü'".into(),
        "SELECT * FROM owners WHERE owner_id = ANY('{\"a\\".into(),
        ";;".into(),
    ];
    noise.extend(all_rows().into_iter().map(|r| r.0.to_owned()));
    for sql in &noise {
        for (end, _) in sql.char_indices().chain([(sql.len(), ' ')]) {
            let a = analyze(&sql[..end], &topo);
            assert!(!a.reason.is_empty(), "{:?}", &sql[..end]);
            if a.class == Class::Unparsed {
                assert!(!a.replica_safe && a.targeting == Targeting::Unsharded, "{:?}", &sql[..end]);
            }
        }
    }
}
