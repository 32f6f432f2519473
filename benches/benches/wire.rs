//! Micro-benchmarks of the proxy's per-message CPU work.
//!
//! `cargo bench -p benches --bench wire` (about half a minute);
//! `cargo bench -p benches --bench wire -- frame/` for one group.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use benches::{
    TPCB_SIMPLE, client_extended_batch, client_prepared_batch, libpq_startup_packet, server_select_batch,
    startup_packet,
};
use bytes::BytesMut;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use proxy::session::params::ClientParams;
use proxy::wire::frame::{HEADER_LEN, Messages};
use proxy::wire::messages::{self, Severity};

/// Transactions per framed batch: about what one 64 KiB read holds.
const BATCH: usize = 100;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
}

/// Walk every message as the session does (header, then the tag and body).
fn frame_all(buf: &[u8]) -> usize {
    let mut it = Messages::new(buf, 256 << 20);
    let mut acc = 0usize;
    for m in it.by_ref() {
        let (at, h) = m.expect("valid batch");
        acc = acc.wrapping_add(h.tag as usize).wrapping_add(buf[at + HEADER_LEN..at + h.total].len());
    }
    acc.wrapping_add(it.consumed())
}

fn framer(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    let batches = [
        ("client_prepared_bind_execute_sync", client_prepared_batch(BATCH), 4),
        ("client_extended_parse_bind_execute_sync", client_extended_batch(BATCH), 5),
        ("server_select_datarow_complete_ready", server_select_batch(BATCH), 6),
    ];
    for (name, buf, per_txn) in &batches {
        g.throughput(Throughput::Elements((BATCH * per_txn) as u64));
        g.bench_function(*name, |b| b.iter(|| frame_all(black_box(buf))));
    }
    g.finish();
}

fn startup(c: &mut Criterion) {
    let mut g = c.benchmark_group("startup");
    let libpq = libpq_startup_packet();
    let minimal = startup_packet(&[("user", "app"), ("database", "app")]);
    g.bench_function("parse_libpq_6_params", |b| b.iter(|| messages::parse_startup(black_box(&libpq)).expect("valid")));
    g.bench_function("parse_minimal", |b| b.iter(|| messages::parse_startup(black_box(&minimal)).expect("valid")));
    g.finish();
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let mut buf = BytesMut::with_capacity(1024);
    g.bench_function("error_response", |b| {
        b.iter(|| {
            buf.clear();
            messages::error_response(
                &mut buf,
                Severity::Error,
                black_box("42P05"),
                black_box("prepared statement \"P0_1\" already exists"),
                None,
            );
            buf.len()
        })
    });
    g.bench_function("ready_for_query", |b| {
        b.iter(|| {
            buf.clear();
            messages::ready_for_query(&mut buf, black_box(b'I'));
            buf.len()
        })
    });
    g.bench_function("login_tail_params_key_ready", |b| {
        // What a login writes after AuthenticationOk.
        let reported = [
            ("application_name", "pgbench"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("integer_datetimes", "on"),
            ("IntervalStyle", "postgres"),
            ("is_superuser", "off"),
            ("server_encoding", "UTF8"),
            ("server_version", "15.18"),
            ("session_authorization", "app_user"),
            ("standard_conforming_strings", "on"),
            ("TimeZone", "Etc/UTC"),
        ];
        b.iter(|| {
            buf.clear();
            for (k, v) in &reported {
                messages::parameter_status(&mut buf, k, v);
            }
            messages::backend_key_data(&mut buf, 12345, -98765);
            messages::ready_for_query(&mut buf, b'I');
            buf.len()
        })
    });
    g.finish();
}

/// Typical OLTP statements (named for the report).
const STATEMENTS: &[(&str, &str)] = &[
    ("select_by_pk", "SELECT abalance FROM pgbench_accounts WHERE aid = 812345"),
    ("update", "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 812345"),
    (
        "insert",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (37, 4, 812345, -4321, CURRENT_TIMESTAMP)",
    ),
    (
        "select_join",
        "SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id \
         WHERE o.created_at > now() - interval '1 day' AND c.region = 'eu-west' ORDER BY o.total DESC LIMIT 50",
    ),
    ("begin", "BEGIN"),
    ("set_search_path", "SET search_path TO app, public"),
];

fn router(c: &mut Criterion) {
    let mut g = c.benchmark_group("router");
    for (name, sql) in STATEMENTS {
        g.bench_with_input(BenchmarkId::new("session_effect", name), sql, |b, sql| {
            b.iter(|| router::session_effect(black_box(sql)))
        });
    }
    // The session's cheap pre-check before any lexing (on every Query,
    // Parse and Bind). Note that `UPDATE ... SET` passes it.
    for (name, sql) in STATEMENTS {
        g.bench_with_input(BenchmarkId::new("may_affect_session", name), sql, |b, sql| {
            b.iter(|| router::may_affect_session(black_box(sql.as_bytes())))
        });
    }
    for (name, sql) in STATEMENTS.iter().filter(|(n, _)| matches!(*n, "select_by_pk" | "select_join")) {
        g.bench_with_input(BenchmarkId::new("split_statements", name), sql, |b, sql| {
            b.iter(|| router::lex::split_statements(black_box(sql)))
        });
    }
    let tpcb = TPCB_SIMPLE.join(" ");
    g.bench_function("split_statements/tpcb_7_statements", |b| {
        b.iter(|| router::lex::split_statements(black_box(&tpcb)))
    });
    // What the session does for every simple Query ('Q') when no settings
    // change is being tracked (`protocol.rs`, `b'Q'`): the pre-check, and for
    // text that passes it (all UPDATEs: they contain SET) a lossy UTF-8
    // decode, a split, and a classification of each statement.
    g.bench_function("simple_query_path/tpcb_script", |b| {
        let bodies: Vec<&[u8]> = TPCB_SIMPLE.iter().map(|s| s.as_bytes()).collect();
        b.iter(|| {
            let mut pins = 0usize;
            for body in &bodies {
                if router::may_affect_session(black_box(body)) {
                    let text = String::from_utf8_lossy(body);
                    for stmt in router::lex::split_statements(&text) {
                        if matches!(router::session_effect(stmt), router::SessionEffect::Pin(_)) {
                            pins += 1;
                        }
                    }
                }
            }
            pins
        })
    });
    g.finish();
}

fn params(c: &mut Criterion) {
    let mut g = c.benchmark_group("params");
    let to_params = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
    let pgbench = ClientParams::from_startup(&to_params(&[
        ("user", "app_user"),
        ("database", "appdb"),
        ("application_name", "pgbench"),
    ]))
    .expect("valid");
    let rich = ClientParams::from_startup(&to_params(&[
        ("user", "app_user"),
        ("database", "appdb"),
        ("application_name", "orders-service"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
        ("extra_float_digits", "3"),
        ("options", "-c search_path=app,public -c statement_timeout=5s"),
    ]))
    .expect("valid");
    for (name, p) in [("pgbench_1_setting", &pgbench), ("driver_7_settings", &rich)] {
        let applied: BTreeMap<String, String> = p.desired().clone();
        g.bench_function(BenchmarkId::new("sync_sql_equal", name), |b| {
            b.iter(|| black_box(p).sync_sql(black_box(&applied)))
        });
    }
    let empty = BTreeMap::new();
    g.bench_function("sync_sql_from_fresh_connection/driver_7_settings", |b| {
        b.iter(|| black_box(&rich).sync_sql(black_box(&empty)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = framer, startup, encode, router, params
}
criterion_main!(benches);
