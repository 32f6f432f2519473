//! `plan`: SQL in, shard SQL and merge spec (or the refusal) out.

use super::*;

fn ok(sql: &str) -> FanoutPlan {
    plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> String {
    match plan(sql) {
        Ok(p) => panic!("{sql}: planned as {}", p.shard_sql),
        Err(e) => e.0,
    }
}

fn key(col: ColRef, desc: bool, nulls_first: bool, label: &str) -> SortKey {
    SortKey { col, desc, nulls_first, collation: Collation::Default, label: label.into() }
}

fn agg(role: Role, label: &str) -> AggCol {
    AggCol { role, label: label.into() }
}

#[test]
fn shard_sql_table() {
    let cases = [
        ("SELECT * FROM t", "SELECT * FROM t"),
        ("select a, b from t where c = $1;", "select a, b from t where c = $1"),
        ("SELECT a FROM t LIMIT 10", "SELECT a FROM t LIMIT 10"),
        ("SELECT a FROM t ORDER BY a LIMIT 10 OFFSET 5", "SELECT a FROM t ORDER BY a LIMIT 15"),
        ("SELECT a FROM t ORDER BY a OFFSET 5", "SELECT a FROM t ORDER BY a"),
        ("SELECT a FROM t ORDER BY a OFFSET 5 ROWS FETCH FIRST 3 ROWS ONLY", "SELECT a FROM t ORDER BY a LIMIT 8"),
        ("SELECT a FROM t ORDER BY a FETCH FIRST ROW ONLY", "SELECT a FROM t ORDER BY a LIMIT 1"),
        ("SELECT a FROM t ORDER BY a LIMIT ALL", "SELECT a FROM t ORDER BY a"),
        ("SELECT a FROM t ORDER BY b DESC", "SELECT a, b AS \"__meridian_1\" FROM t ORDER BY b DESC"),
        (
            "SELECT a -- the key\nFROM t ORDER BY lower(b) LIMIT 3",
            "SELECT a, lower(b) AS \"__meridian_1\" -- the key\nFROM t ORDER BY lower(b) LIMIT 3",
        ),
        ("SELECT count(*) FROM t LIMIT 1", "SELECT count(*) FROM t"),
        (
            "SELECT avg(x) AS m FROM t",
            "SELECT avg(x) AS m, pg_catalog.sum(x) AS \"__meridian_1\", pg_catalog.count(x) AS \"__meridian_2\" FROM t",
        ),
        (
            "SELECT count(*) FROM t GROUP BY g ORDER BY 1 DESC LIMIT 5",
            "SELECT count(*), g AS \"__meridian_1\" FROM t GROUP BY g ORDER BY 1 DESC",
        ),
        ("SELECT DISTINCT a FROM t ORDER BY a LIMIT 2", "SELECT DISTINCT a FROM t ORDER BY a"),
        ("SELECT FROM t ORDER BY a", "SELECT a AS \"__meridian_1\" FROM t ORDER BY a"),
    ];
    for (sql, want) in cases {
        assert_eq!(ok(sql).shard_sql, want, "{sql}");
    }
}

#[test]
fn concat_specs() {
    let p = ok("SELECT a, b AS bee FROM t ORDER BY 2, bee DESC, a NULLS FIRST, t.a DESC NULLS LAST LIMIT 4 OFFSET 1");
    assert_eq!(p.spec.mode, Mode::Concat);
    assert_eq!((p.spec.offset, p.spec.limit, p.spec.hidden), (1, Some(4), 0));
    assert_eq!(
        p.spec.order,
        vec![
            key(ColRef::Visible(1), false, false, "2"),
            key(ColRef::Visible(1), true, true, "bee"),
            key(ColRef::Visible(0), false, true, "a"),
            key(ColRef::Visible(0), true, false, "t.a"),
        ]
    );
    // An output name wins over the input column of the same name.
    let p = ok("SELECT x AS y, y AS x FROM t ORDER BY y, x");
    assert_eq!(p.spec.order[0].col, ColRef::Visible(0));
    assert_eq!(p.spec.order[1].col, ColRef::Visible(1));
    // A cast is named after its operand: ORDER BY y sorts by y::int.
    let p = ok("SELECT y::int FROM t ORDER BY y");
    assert_eq!(p.spec.order[0].col, ColRef::Visible(0));
    assert_eq!(p.spec.hidden, 0);
    // Derived names: count(*) is "count".
    let p = ok("SELECT g, count(*) FROM t GROUP BY g ORDER BY count DESC");
    assert_eq!(p.spec.order[0].col, ColRef::Visible(1));
    // An expression equal to a select-list expression.
    let p = ok("SELECT a + 1, b FROM t ORDER BY (a + 1) DESC");
    assert_eq!(p.spec.order[0].col, ColRef::Visible(0));
    // After a `*`, positions of named items are unknown: hidden copies.
    let p = ok("SELECT *, a AS z FROM t ORDER BY z, 3");
    assert_eq!(p.shard_sql, "SELECT *, a AS z, a AS \"__meridian_1\" FROM t ORDER BY z, 3");
    assert_eq!(p.spec.order[0].col, ColRef::Hidden(0));
    assert_eq!(p.spec.order[1].col, ColRef::Visible(2));
    let p = ok("SELECT * FROM t ORDER BY id DESC");
    assert_eq!(p.shard_sql, "SELECT *, id AS \"__meridian_1\" FROM t ORDER BY id DESC");
}

#[test]
fn collations() {
    let p = ok("SELECT name FROM t ORDER BY name COLLATE \"C\" DESC");
    assert_eq!(p.spec.order[0].col, ColRef::Visible(0));
    assert_eq!(p.spec.order[0].collation, Collation::C);
    assert_eq!(p.spec.order[0].label, "name COLLATE \"C\"");
    let p = ok("SELECT name COLLATE \"POSIX\" AS n FROM t ORDER BY n");
    assert_eq!(p.spec.order[0].collation, Collation::C);
    let p = ok("SELECT name FROM t ORDER BY name COLLATE \"de_DE\"");
    assert_eq!(p.spec.order[0].collation, Collation::Other);
    let p = ok("SELECT max(name COLLATE \"C\") FROM t");
    assert_eq!(
        p.spec.mode,
        Mode::Aggregate { grouped: false, cols: vec![agg(Role::Max(Collation::C), "max(name COLLATE \"C\")")] }
    );
    // COLLATE makes ORDER BY an expression: `n` is then an input column.
    let p = ok("SELECT x AS n FROM t ORDER BY n COLLATE \"C\"");
    assert_eq!(p.spec.order[0].col, ColRef::Hidden(0));
    assert_eq!(p.shard_sql, "SELECT x AS n, n COLLATE \"C\" AS \"__meridian_1\" FROM t ORDER BY n COLLATE \"C\"");
}

#[test]
fn aggregate_specs() {
    let p = ok("SELECT g, count(*), sum(x), min(x), max(x), avg(x) FROM t GROUP BY g");
    assert_eq!(
        p.spec.mode,
        Mode::Aggregate {
            grouped: true,
            cols: vec![
                agg(Role::Key, "g"),
                agg(Role::Count, "count(*)"),
                agg(Role::Sum, "sum(x)"),
                agg(Role::Min(Collation::Default), "min(x)"),
                agg(Role::Max(Collation::Default), "max(x)"),
                agg(Role::Avg { sum: 6, count: 7 }, "avg(x)"),
                agg(Role::Sum, "pg_catalog.sum(x)"),
                agg(Role::Count, "pg_catalog.count(x)"),
            ]
        }
    );
    // Group keys by position, by equal expression, hidden when not selected.
    let p = ok("SELECT lower(a) AS l, t.b, count(*) FROM t GROUP BY 1, b, c ORDER BY avg(x) DESC, c");
    assert_eq!(
        p.shard_sql,
        "SELECT lower(a) AS l, t.b, count(*), c AS \"__meridian_1\", avg(x) AS \"__meridian_2\", \
         pg_catalog.sum(x) AS \"__meridian_3\", pg_catalog.count(x) AS \"__meridian_4\" \
         FROM t GROUP BY 1, b, c ORDER BY avg(x) DESC, c"
    );
    let Mode::Aggregate { cols, .. } = &p.spec.mode else { panic!("{:?}", p.spec.mode) };
    let roles: Vec<Role> = cols.iter().map(|c| c.role).collect();
    assert_eq!(
        roles,
        [Role::Key, Role::Key, Role::Count, Role::Key, Role::Avg { sum: 5, count: 6 }, Role::Sum, Role::Count]
    );
    assert_eq!(
        p.spec.order,
        vec![key(ColRef::Hidden(1), true, true, "avg(x)"), key(ColRef::Hidden(0), false, false, "c")]
    );
    // A non-key select-list expression rides along with its group.
    let p = ok("SELECT upper(g), count(*) FROM t GROUP BY g");
    let Mode::Aggregate { cols, .. } = &p.spec.mode else { panic!() };
    assert_eq!(cols[0].role, Role::Carry);
    assert_eq!(cols[2].role, Role::Key);
    // GROUP BY alias that is the column itself is fine.
    ok("SELECT t.g AS g, count(*) FROM t GROUP BY g");
    ok("SELECT count(*), sum(x) AS s FROM t WHERE g = $1 ORDER BY s LIMIT 1");
}

#[test]
fn refusals_name_the_construct() {
    let cases = [
        ("SELECT rank() OVER (ORDER BY x) FROM t", "window functions"),
        ("SELECT sum(x) OVER w FROM t WINDOW w AS (PARTITION BY g)", "window functions"),
        ("SELECT DISTINCT ON (a) a, b FROM t", "DISTINCT ON"),
        ("SELECT count(DISTINCT x) FROM t", "DISTINCT"),
        ("SELECT count(*) FILTER (WHERE x > 0) FROM t", "FILTER"),
        ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM t", "WITHIN GROUP"),
        ("SELECT string_agg(a, ',') FROM t", "string_agg()"),
        ("SELECT array_agg(a) FROM t", "array_agg()"),
        ("SELECT g, stddev(x) FROM t GROUP BY g", "stddev()"),
        ("SELECT sum(x ORDER BY y) FROM t", "ORDER BY inside an aggregate"),
        ("SELECT count(*) * 2 FROM t", "expressions over aggregates"),
        ("SELECT coalesce(sum(x), 0) FROM t", "expressions over aggregates"),
        ("SELECT g FROM t GROUP BY g HAVING count(*) > 1", "HAVING"),
        ("SELECT g, count(*) FROM t GROUP BY ROLLUP (g)", "ROLLUP"),
        ("SELECT a FROM t UNION SELECT a FROM u", "UNION"),
        ("SELECT a FROM t INTERSECT SELECT a FROM u", "INTERSECT"),
        ("SELECT a FROM t EXCEPT SELECT a FROM u", "EXCEPT"),
        ("SELECT * FROM (SELECT a FROM t) s", "subqueries"),
        ("SELECT a FROM t WHERE b IN (SELECT b FROM u)", "subqueries"),
        ("SELECT a, (SELECT max(b) FROM u) FROM t", "subqueries"),
        ("WITH s AS (SELECT a FROM t) SELECT a FROM s", "WITH"),
        ("SELECT a FROM t JOIN u USING (id)", "joins"),
        ("SELECT a FROM t, u", "joins"),
        ("SELECT a FROM t FOR UPDATE", "FOR UPDATE"),
        ("SELECT a FROM t LIMIT $1", "LIMIT"),
        ("SELECT a FROM t ORDER BY a OFFSET $2", "OFFSET"),
        ("SELECT a FROM t LIMIT 2 + 3", "LIMIT"),
        ("SELECT a FROM t FETCH FIRST 3 ROWS WITH TIES", "WITH TIES"),
        ("SELECT my_agg(x) FROM t", "function my_agg()"),
        ("SELECT public.lower(x) FROM t", "function public.lower()"),
        ("SELECT DISTINCT count(*) FROM t GROUP BY g", "SELECT DISTINCT with aggregates"),
        ("SELECT * , count(*) FROM t", "SELECT *"),
        ("SELECT date_trunc('day', ts) AS day, count(*) FROM t GROUP BY day", "GROUP BY day is ambiguous"),
        ("SELECT DISTINCT a FROM t ORDER BY b", "DISTINCT"),
        ("SELECT a FROM t ORDER BY a USING <", "USING"),
        ("SELECT extract(year FROM d) FROM t ORDER BY year", "cannot tell whether it names"),
        ("SELECT 1", "without FROM"),
        ("INSERT INTO t VALUES (1)", "single SELECT"),
        ("SELECT a FROM t; SELECT b FROM t", "single SELECT"),
        ("SELECT a AS \"__meridian_1\" FROM t", "reserved"),
        ("SELEC a FROM t", "does not parse"),
        ("SELECT a INTO u FROM t", "SELECT INTO"),
        ("SELECT a FROM t ORDER BY 3", "position 3"),
        ("SELECT a FROM t ORDER BY -1", "ORDER BY -1 is not a select-list position"),
        ("SELECT a FROM t ORDER BY 1.5", "ORDER BY 1.5 is not a select-list position"),
        ("SELECT a, count(*) FROM t GROUP BY 'a'", "GROUP BY a constant"),
        ("SELECT a FROM generate_series(1, 3) a", "functions in FROM"),
        ("VALUES (1)", "VALUES"),
    ];
    for (sql, needle) in cases {
        let msg = refused(sql);
        assert!(msg.contains(needle), "{sql}: {msg:?} does not mention {needle:?}");
    }
}

#[test]
fn display() {
    assert_eq!(
        Unsupported("window functions are not supported".into()).to_string(),
        "cross-shard read: window functions are not supported"
    );
    assert_eq!(MergeError("x".into()).to_string(), "cross-shard read: x");
}

mod fuzz {
    use proptest::prelude::*;

    use super::plan;

    const WORDS: &[&str] = &[
        "SELECT", "FROM", "t", "u", "a", "b", "count", "sum", "avg", "min", "max", "lower", "(", ")", "*", ",",
        "ORDER", "BY", "GROUP", "LIMIT", "OFFSET", "1", "2", "$1", "DISTINCT", "AS", "\"x\"", "COLLATE", "\"C\"",
        "DESC", "NULLS", "FIRST", "WHERE", "=", "+", ";", "--c\n", "/*c*/", "'s'", "FETCH", "ROWS", "ONLY", "OVER",
        "JOIN",
    ];
    const ITEMS: &[&str] = &[
        "a",
        "b AS x",
        "t.a",
        "count(*)",
        "sum(a)",
        "avg(b) AS \"Avg\"",
        "lower(c)",
        "*",
        "a + 1",
        "max(c COLLATE \"C\")",
        "min(a)",
        "$1",
        "'lit'",
    ];
    const GROUPS: &[&str] = &["", " GROUP BY a", " GROUP BY 1", " GROUP BY b, a", " GROUP BY lower(c)"];
    const ORDERS: &[&str] = &[
        "",
        " ORDER BY 1",
        " ORDER BY a DESC",
        " ORDER BY x NULLS FIRST",
        " ORDER BY count(*)",
        " ORDER BY c COLLATE \"C\"",
        " ORDER BY avg(b) DESC, 1",
        " ORDER BY a + 1",
        " /* o */ ORDER BY b",
    ];
    const LIMITS: &[&str] =
        &["", " LIMIT 5", " LIMIT 5 OFFSET 2", " OFFSET 3", " FETCH FIRST 2 ROWS ONLY", " LIMIT ALL", ";"];

    fn shard_sql_parses(sql: &str) -> Result<(), TestCaseError> {
        if let Ok(p) = plan(sql) {
            let parsed = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, &p.shard_sql);
            prop_assert!(parsed.is_ok(), "{sql} -> {}", p.shard_sql);
            let Ok(statements) = parsed else { unreachable!() };
            // The shard statement is the client's with columns appended.
            let Some(sqlparser::ast::Statement::Query(q)) = statements.first() else { unreachable!() };
            let sqlparser::ast::SetExpr::Select(s) = q.body.as_ref() else { unreachable!() };
            let Ok(original) = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            else {
                unreachable!()
            };
            let Some(sqlparser::ast::Statement::Query(oq)) = original.first() else { unreachable!() };
            let sqlparser::ast::SetExpr::Select(os) = oq.body.as_ref() else { unreachable!() };
            prop_assert_eq!(s.projection.len(), os.projection.len() + p.hidden_columns(), "{}", sql);
            prop_assert_eq!(&s.projection[..os.projection.len()], &os.projection[..]);
            prop_assert_eq!(&s.selection, &os.selection);
            prop_assert_eq!(&s.group_by, &os.group_by);
            prop_assert_eq!(&q.order_by, &oq.order_by);
        }
        Ok(())
    }

    proptest! {
        /// Whatever the text, `plan` answers without panicking.
        #[test]
        fn plan_never_panics(words in prop::collection::vec(prop::sample::select(WORDS), 0..24), prefix in any::<bool>()) {
            let mut sql = if prefix { String::from("SELECT ") } else { String::new() };
            sql.push_str(&words.join(" "));
            shard_sql_parses(&sql)?;
        }

        /// Plausible SELECTs: a plan's shard SQL keeps the client's select
        /// list, WHERE, GROUP BY and ORDER BY, with hidden columns appended.
        #[test]
        fn shard_sql_keeps_the_statement(
            distinct in any::<bool>(),
            items in prop::collection::vec(prop::sample::select(ITEMS), 1..4),
            filter in any::<bool>(),
            group in prop::sample::select(GROUPS),
            order in prop::sample::select(ORDERS),
            limit in prop::sample::select(LIMITS),
        ) {
            let sql = format!(
                "SELECT {}{} FROM t{}{group}{order}{limit}",
                if distinct { "DISTINCT " } else { "" },
                items.join(", "),
                if filter { " WHERE a = $1 -- c\n" } else { "" },
            );
            shard_sql_parses(&sql)?;
        }
    }
}
