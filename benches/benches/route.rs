//! Routing decisions on the hot path, as a session makes them:
//!
//! - `uncached/*`: a statement seen for the first time (simple query with
//!   literals): analysis (fast path or sqlparser) plus the decision.
//! - `cached_bind/*`: a prepared statement at Bind: the analysis cache
//!   lookup by text, the Bind message's parameters, the key's hash and the
//!   decision; what every execution of a prepared statement pays.
//!
//! Targets (issue 2): uncached OLTP statement ≤ 10 µs, cached bind ≤ 1 µs.

use criterion::{Criterion, criterion_group, criterion_main};
use proxy::session::route::{AnalysisCache, BindParams};
use router::key::{KeyType, KeyValue};
use router::route::{NoParams, decide};
use router::topology::{Fallback, PgNode, ReplicaPolicy, Role, Shard, ShardMap, TableRule, Topology};

fn topology() -> Topology {
    let node = |name: &str, shard, role| PgNode {
        name: name.into(),
        address: format!("127.0.0.1:{}", 5432 + shard),
        region: "us-east".into(),
        shard,
        role,
    };
    let table = |t: &str, c: &str, ty| TableRule {
        schema: None,
        table: t.into(),
        column: c.into(),
        key_type: ty,
        map: ShardMap::Hash(vec![0, 1]),
    };
    Topology {
        version: 1,
        regions: vec!["us-east".into()],
        shards: vec![
            Shard { name: "s1".into(), primary: Some(0), replicas: vec![1], epoch: 1 },
            Shard { name: "s2".into(), primary: Some(2), replicas: vec![3], epoch: 1 },
        ],
        nodes: vec![
            node("s1-p", 0, Role::Primary),
            node("s1-r", 0, Role::Replica),
            node("s2-p", 1, Role::Primary),
            node("s2-r", 1, Role::Replica),
        ],
        tables: vec![
            table("pgbench_accounts", "aid", KeyType::Int),
            table("owners", "owner_id", KeyType::Int),
            table("accounts", "email", KeyType::Text),
        ],
        default_shard: 0,
        replica_policy: ReplicaPolicy {
            max_lag_bytes: 16 << 20,
            max_lag: std::time::Duration::from_secs(10),
            fallback: Fallback::Primary,
        },
    }
}

/// The part of a Bind body after the portal and statement names: one
/// parameter, in binary (`format` 1) or text (0).
fn bind_body(value: &[u8], format: i16) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&format.to_be_bytes());
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&(value.len() as i32).to_be_bytes());
    b.extend_from_slice(value);
    b.extend_from_slice(&0i16.to_be_bytes());
    b
}

fn bench(c: &mut Criterion) {
    let t = topology();
    let mut g = c.benchmark_group("uncached");
    for (name, sql) in [
        ("select_by_key", "SELECT abalance FROM pgbench_accounts WHERE aid = 4711"),
        ("update_by_key", "UPDATE pgbench_accounts SET abalance = abalance + -123 WHERE aid = 4711"),
        ("insert_values", "INSERT INTO owners (owner_id, name, region) VALUES (42, 'ada', 'eu')"),
        ("begin", "BEGIN"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let a = router::analyze::analyze(std::hint::black_box(sql), &t);
                decide(&a, &NoParams, &t, None)
            })
        });
    }
    g.finish();

    let cache = AnalysisCache::default();
    let mut g = c.benchmark_group("cached_bind");
    let select = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    let binary = bind_body(&4711i64.to_be_bytes(), 1);
    let text = bind_body(b"4711", 0);
    let email = bind_body(b"ada@example.com", 0);
    let by_email = "SELECT balance FROM accounts WHERE email = $1";
    cache.get(select, &t);
    cache.get(by_email, &t);
    for (name, sql, body) in
        [("int8_binary", select, &binary), ("int8_text", select, &text), ("text_key", by_email, &email)]
    {
        g.bench_function(name, |b| {
            b.iter(|| {
                let a = cache.get(std::hint::black_box(sql), &t);
                let params = BindParams::parse(std::hint::black_box(body)).expect("bind");
                decide(&a, &params, &t, None)
            })
        });
    }
    g.finish();
    // Sanity: the decisions are what the benchmark claims to measure.
    let a = cache.get(select, &t);
    let d = decide(&a, &BindParams::parse(&binary).expect("bind"), &t, None);
    let expected = router::hash::hash_remainder(&KeyValue::Int(4711), 2) as usize;
    assert!(matches!(d.action, router::route::Action::Shard { shard, replica_ok: true } if shard == expected), "{d:?}");
}

criterion_group!(benches, bench);
criterion_main!(benches);
