//! Micro-benchmarks of `router::analyze::analyze`: one routing decision for
//! an uncached statement (the target is 10 µs for typical OLTP statements).
//!
//! `cargo bench -p benches --bench analyze -- --warm-up-time 1 --measurement-time 3`;
//! `cargo bench -p benches --bench analyze -- analyze/oltp` for one group.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use router::analyze::analyze;
use router::key::KeyType;
use router::topology::{Fallback, ReplicaPolicy, ShardMap, TableRule, Topology};

/// pgbench's accounts by aid and the pets schema by owner_id, two shards.
fn topology() -> Topology {
    let rule = |table: &str, column: &str| TableRule {
        schema: None,
        table: table.to_owned(),
        column: column.to_owned(),
        key_type: KeyType::Int,
        map: ShardMap::Hash(vec![0, 1]),
    };
    Topology {
        version: 1,
        regions: vec!["eu".into()],
        shards: vec![],
        nodes: vec![],
        tables: vec![
            rule("pgbench_accounts", "aid"),
            rule("pgbench_tellers", "tid"),
            rule("pgbench_branches", "bid"),
            rule("owners", "owner_id"),
            rule("pets", "owner_id"),
            rule("watch_sessions", "owner_id"),
        ],
        default_shard: 0,
        replica_policy: ReplicaPolicy {
            max_lag_bytes: 16 << 20,
            max_lag: Duration::from_secs(5),
            fallback: Fallback::Primary,
        },
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}

fn oltp(c: &mut Criterion) {
    let topo = topology();
    let mut g = c.benchmark_group("analyze/oltp");
    let cases = [
        ("select_pgbench", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711"),
        ("update_pgbench", "UPDATE pgbench_accounts SET abalance = abalance + -123 WHERE aid = 4711"),
        ("insert_params", "INSERT INTO owners (owner_id, name) VALUES ($1, $2)"),
        ("select_param", "SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
        (
            "insert_history",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 4711, -123, CURRENT_TIMESTAMP)",
        ),
    ];
    for (name, sql) in cases {
        g.bench_function(name, |b| b.iter(|| analyze(black_box(sql), black_box(&topo))));
    }
    g.finish();
}

fn fast_path(c: &mut Criterion) {
    let topo = topology();
    let mut g = c.benchmark_group("analyze/fast");
    let cases = [
        ("begin", "BEGIN"),
        ("commit", "COMMIT"),
        ("set", "SET application_name = 'app'"),
        ("comment_then_rollback", "/* app=web */ -- tx\nROLLBACK"),
        ("create_table", "CREATE TABLE t (a int PRIMARY KEY, b text)"),
    ];
    for (name, sql) in cases {
        g.bench_function(name, |b| b.iter(|| analyze(black_box(sql), black_box(&topo))));
    }
    g.finish();
}

fn complex(c: &mut Criterion) {
    let topo = topology();
    let mut g = c.benchmark_group("analyze/complex");
    let cases = [
        (
            "join_3_keyed",
            "SELECT o.name, p.name, w.started_at FROM owners o JOIN pets p ON p.owner_id = o.owner_id \
             LEFT JOIN watch_sessions w ON w.owner_id = p.owner_id AND w.started_at > now() - interval '1 day' \
             WHERE o.owner_id = $1 ORDER BY w.started_at DESC LIMIT 20",
        ),
        (
            "cte_subquery",
            "WITH recent AS (SELECT owner_id, count(*) AS n FROM watch_sessions WHERE owner_id = ANY($1) \
             GROUP BY owner_id) SELECT o.*, r.n FROM owners o JOIN recent r ON r.owner_id = o.owner_id \
             WHERE o.owner_id = ANY($1) AND EXISTS (SELECT 1 FROM pets p WHERE p.owner_id = o.owner_id)",
        ),
        (
            "insert_10_rows",
            "INSERT INTO owners (owner_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e'), \
             (6, 'f'), (7, 'g'), (8, 'h'), (9, 'i'), (10, 'j') ON CONFLICT (owner_id) DO UPDATE SET name = excluded.name",
        ),
    ];
    for (name, sql) in cases {
        g.bench_function(name, |b| b.iter(|| analyze(black_box(sql), black_box(&topo))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = oltp, fast_path, complex
}
criterion_main!(benches);
