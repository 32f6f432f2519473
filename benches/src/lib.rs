//! Benchmarks for Meridian.
//!
//! - `benches/wire.rs` (Criterion, `cargo bench -p benches`): the hot
//!   pure-CPU pieces of the data path: the framer, startup-packet parsing,
//!   encoding of the messages the proxy writes itself, statement
//!   classification (`router`) and the settings check done on every checkout.
//! - `src/bin/pgbench_compare.rs`: end-to-end pgbench runs against
//!   PostgreSQL directly, through Meridian and through PgBouncer, side by
//!   side on one machine (see that file for how to run it).
//!
//! This library holds the builders for typical pgbench wire traffic that the
//! micro-benchmarks share.

use bytes::{BufMut, BytesMut};

/// The statement `pgbench -S` runs.
pub const SELECT_ONLY_SQL: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1;";

/// The statements of pgbench's built-in tpcb-like script, as sent with
/// `-M simple` (parameters interpolated).
pub const TPCB_SIMPLE: &[&str] = &[
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 812345;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 812345;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + -4321 WHERE tid = 37;",
    "UPDATE pgbench_branches SET bbalance = bbalance + -4321 WHERE bid = 4;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (37, 4, 812345, -4321, CURRENT_TIMESTAMP);",
    "END;",
];

/// Start a tagged message in `buf`; returns where its length goes.
fn begin(buf: &mut BytesMut, tag: u8) -> usize {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    at
}

fn finish(buf: &mut BytesMut, at: usize) {
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, s: &[u8]) {
    buf.put_slice(s);
    buf.put_u8(0);
}

/// A Parse message.
pub fn parse(buf: &mut BytesMut, name: &str, sql: &str) {
    let at = begin(buf, b'P');
    cstr(buf, name.as_bytes());
    cstr(buf, sql.as_bytes());
    buf.put_i16(0);
    finish(buf, at);
}

/// A Bind message with text parameters, as libpq sends it.
pub fn bind(buf: &mut BytesMut, stmt: &str, params: &[&str]) {
    let at = begin(buf, b'B');
    cstr(buf, b"");
    cstr(buf, stmt.as_bytes());
    buf.put_i16(0);
    buf.put_i16(params.len() as i16);
    for p in params {
        buf.put_i32(p.len() as i32);
        buf.put_slice(p.as_bytes());
    }
    buf.put_i16(0);
    finish(buf, at);
}

/// Describe of the unnamed portal.
pub fn describe_portal(buf: &mut BytesMut) {
    let at = begin(buf, b'D');
    buf.put_u8(b'P');
    cstr(buf, b"");
    finish(buf, at);
}

/// Execute of the unnamed portal, no row limit.
pub fn execute(buf: &mut BytesMut) {
    let at = begin(buf, b'E');
    cstr(buf, b"");
    buf.put_i32(0);
    finish(buf, at);
}

pub fn sync(buf: &mut BytesMut) {
    buf.put_slice(&[b'S', 0, 0, 0, 4]);
}

/// A simple Query message.
pub fn query(buf: &mut BytesMut, sql: &str) {
    let at = begin(buf, b'Q');
    cstr(buf, sql.as_bytes());
    finish(buf, at);
}

/// The client side of `n` `pgbench -S -M prepared` transactions:
/// Bind/Describe/Execute/Sync each.
pub fn client_prepared_batch(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n {
        let aid = (i * 7919 % 1_000_000 + 1).to_string();
        bind(&mut buf, "P0_1", &[&aid]);
        describe_portal(&mut buf);
        execute(&mut buf);
        sync(&mut buf);
    }
    buf
}

/// The client side of `n` `pgbench -S -M extended` transactions:
/// Parse/Bind/Describe/Execute/Sync each.
pub fn client_extended_batch(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n {
        let aid = (i * 7919 % 1_000_000 + 1).to_string();
        parse(&mut buf, "", SELECT_ONLY_SQL);
        bind(&mut buf, "", &[&aid]);
        describe_portal(&mut buf);
        execute(&mut buf);
        sync(&mut buf);
    }
    buf
}

/// The server side of `n` select-only transactions in extended mode:
/// ParseComplete, BindComplete, RowDescription, DataRow, CommandComplete,
/// ReadyForQuery each.
pub fn server_select_batch(n: usize) -> BytesMut {
    let mut buf = BytesMut::new();
    for i in 0..n {
        buf.put_slice(&[b'1', 0, 0, 0, 4]);
        buf.put_slice(&[b'2', 0, 0, 0, 4]);
        // RowDescription: one int4 column "abalance".
        let at = begin(&mut buf, b'T');
        buf.put_i16(1);
        cstr(&mut buf, b"abalance");
        buf.put_i32(16_397); // table oid
        buf.put_i16(3); // column number
        buf.put_i32(23); // int4
        buf.put_i16(4);
        buf.put_i32(-1);
        buf.put_i16(0);
        finish(&mut buf, at);
        // DataRow.
        let value = ((i as i64 * 37) % 10_000 - 5_000).to_string();
        let at = begin(&mut buf, b'D');
        buf.put_i16(1);
        buf.put_i32(value.len() as i32);
        buf.put_slice(value.as_bytes());
        finish(&mut buf, at);
        let at = begin(&mut buf, b'C');
        cstr(&mut buf, b"SELECT 1");
        finish(&mut buf, at);
        buf.put_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    }
    buf
}

/// A startup packet as libpq (pgbench, psql) sends it.
pub fn libpq_startup_packet() -> Vec<u8> {
    let params: &[(&str, &str)] = &[
        ("user", "app_user"),
        ("database", "appdb"),
        ("application_name", "pgbench"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO"),
        ("options", "-c search_path=app,public"),
    ];
    startup_packet(params)
}

/// A protocol 3.0 startup packet with the given parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196_608i32.to_be_bytes());
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_frame_cleanly() {
        for (buf, per_txn) in
            [(client_prepared_batch(10), 4), (client_extended_batch(10), 5), (server_select_batch(10), 6)]
        {
            let mut it = proxy::wire::frame::Messages::new(&buf, 1 << 20);
            let mut n = 0;
            for m in it.by_ref() {
                m.expect("valid");
                n += 1;
            }
            assert_eq!(n, 10 * per_txn);
            assert_eq!(it.consumed(), buf.len());
        }
    }

    #[test]
    fn startup_parses() {
        let p = libpq_startup_packet();
        assert!(matches!(
            proxy::wire::messages::parse_startup(&p),
            Ok(proxy::wire::messages::StartupPacket::Startup { .. })
        ));
    }
}
