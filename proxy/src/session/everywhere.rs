//! Requests that run on several shards at once: a schema change on every
//! shard's primary, and a keyless read of a sharded table on every shard,
//! merged ([`router::fanout`]). Both are simple queries outside a
//! transaction block; the client gets one answer, as from one server.

use bytes::{BufMut, BytesMut};
use router::lsn::Lsn;
use router::route::RouteError;
use router::topology::{ShardId, Topology};
use tokio::io::{AsyncRead, AsyncWrite};

use super::route::ExtendedRead;
use super::{Session, checkout_synced, connect_timeout};
use crate::backend::Collected;
use crate::error::Error;
use crate::wire::frame::cstr;
use crate::wire::messages::{self, Severity};

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    /// Send `request` to server `node`, keeping every answer. A
    /// connection left inside a transaction is not reused.
    /// With `want_lsn`, the primary's WAL position after it (for
    /// read-your-writes) comes back too.
    async fn collect_on(
        &self,
        t: &Topology,
        node: usize,
        request: &[u8],
        want_lsn: bool,
    ) -> Result<(Collected, Option<Lsn>), Error> {
        let pool = self.st.pool_for(&t.nodes[node].address);
        let mut conn = checkout_synced(&pool, self.st.id, &self.st.params, connect_timeout(&self.st)).await?;
        match conn.send_collect(request).await {
            Ok(c) => {
                if c.status != b'I' {
                    pool.discard(conn);
                    return Ok((c, None));
                }
                let mut lsn = None;
                if want_lsn && c.error.is_none() {
                    match conn.query_value("SELECT pg_current_wal_lsn()::text", connect_timeout(&self.st)).await {
                        Ok(v) => lsn = Some(v.as_deref().and_then(Lsn::parse).unwrap_or(Lsn(u64::MAX))),
                        Err(_) => {
                            pool.discard(conn);
                            return Ok((c, Some(Lsn(u64::MAX))));
                        }
                    }
                }
                pool.checkin(conn);
                Ok((c, lsn))
            }
            Err(e) => {
                pool.discard(conn);
                Err(e.into())
            }
        }
    }

    /// A schema change: the default shard's primary first (its answer is
    /// the client's), then every other shard's. When some shard fails the
    /// client gets an error naming, shard by shard, where it applied.
    pub(super) async fn everywhere(&mut self, t: &Topology, sql: &str) -> Result<BytesMut, Error> {
        let mut order: Vec<ShardId> = vec![t.default_shard];
        order.extend((0..t.shards.len()).filter(|s| *s != t.default_shard));
        let mut out = BytesMut::new();
        let mut applied: Vec<&str> = Vec::new();
        let mut failed: Vec<String> = Vec::new();
        let mut first: Option<Collected> = None;
        for shard in order {
            let name = t.shards[shard].name.as_str();
            let primary = t.shards[shard].primary.unwrap_or_default();
            let want_lsn = !t.shards[shard].replicas.is_empty()
                && self.st.route.consistency == router::route::Consistency::ReadYourWrites;
            let mut query = BytesMut::new();
            messages::query(&mut query, sql);
            let result = self.collect_on(t, primary, &query, want_lsn).await;
            if let Ok((_, Some(lsn))) = &result {
                self.st.committed(name, *lsn);
            }
            match result.map(|(c, _)| c) {
                Ok(c) if c.error.is_none() && c.status == b'I' => {
                    applied.push(name);
                    first.get_or_insert(c);
                }
                Ok(c) if first.is_none() && applied.is_empty() && failed.is_empty() => {
                    // The default shard refused it: that is the client's
                    // answer (a syntax error, a missing table...), and no
                    // other shard runs it.
                    for (tag, body) in &c.messages {
                        put_message(&mut out, *tag, body);
                    }
                    if c.status != b'I' {
                        messages::error_response(
                            &mut out,
                            Severity::Error,
                            "0A000",
                            "a schema change on a sharded cluster must not leave a transaction open",
                            None,
                        );
                    }
                    messages::ready_for_query(&mut out, b'I');
                    return Ok(out);
                }
                Ok(c) => failed.push(match c.error {
                    Some(e) => format!("{name}: {} ({})", e.message, e.code),
                    None => format!("{name}: left a transaction open"),
                }),
                Err(e) => failed.push(format!("{name}: {e}")),
            }
        }
        if failed.is_empty() {
            let c = first.unwrap_or_default();
            for (tag, body) in &c.messages {
                put_message(&mut out, *tag, body);
            }
        } else {
            let message = format!(
                "schema change failed on shard{} {}; it was applied on {}",
                if failed.len() > 1 { "s" } else { "" },
                failed.join("; "),
                if applied.is_empty() { "no shard".to_owned() } else { format!("shards {}", applied.join(", ")) },
            );
            messages::error_response(
                &mut out,
                Severity::Error,
                "XX000",
                &message,
                Some(
                    "fix the failing shards and run the statement again there with a shard hint (/* meridian: shard=NAME */)",
                ),
            );
        }
        messages::ready_for_query(&mut out, b'I');
        Ok(out)
    }

    /// A keyless read over `shards`, merged.
    /// `extended`: the client's Parse/Bind (the same statement with its
    /// parameters runs on every shard), else `sql` is a simple query.
    pub(super) async fn fanout(
        &mut self,
        t: &Topology,
        sql: &str,
        shards: &[ShardId],
        extended: Option<&ExtendedRead>,
    ) -> Result<BytesMut, Error> {
        let mut out = BytesMut::new();
        let plan = match router::fanout::plan(sql) {
            Ok(p) => p,
            Err(e) => {
                refuse(&mut out, &RouteError { code: router::route::FEATURE_NOT_SUPPORTED, message: e.to_string() });
                return Ok(out);
            }
        };
        let mut nodes = Vec::with_capacity(shards.len());
        for &shard in shards {
            let (node, _, err) = self.st.pick_node(t, shard, true, String::new());
            if let Some(e) = err {
                refuse(&mut out, &e);
                return Ok(out);
            }
            nodes.push(node);
        }
        let mut request = BytesMut::new();
        match extended {
            None => messages::query(&mut request, &plan.shard_sql),
            Some(x) => {
                let Some(bind) = with_hidden_formats(&x.bind_rest, plan.hidden_columns()) else {
                    return Err(Error::Protocol("malformed Bind message".into()));
                };
                let types = cstr(&x.parse_rest).map(|(_, rest)| rest).unwrap_or(&[0, 0]);
                let mut parse_rest = plan.shard_sql.as_bytes().to_vec();
                parse_rest.push(0);
                parse_rest.extend_from_slice(types);
                messages::parse_renamed(&mut request, "", &parse_rest);
                messages::bind_renamed(&mut request, b"", "", &bind);
                messages::describe_portal(&mut request);
                messages::execute(&mut request);
                messages::sync(&mut request);
            }
        }
        let runs = nodes.iter().map(|&node| self.collect_on(t, node, &request, false));
        let results = futures_util::future::join_all(runs).await;
        let mut per_shard_fields: Vec<Vec<router::fanout::Field>> = Vec::with_capacity(results.len());
        let mut rows_per_shard = Vec::with_capacity(results.len());
        for r in results {
            let (c, _) = r?;
            if c.error.is_some() || c.status != b'I' {
                // The first shard error is the client's answer.
                for (tag, body) in c.messages.iter().filter(|(tag, _)| *tag == b'E' || *tag == b'N') {
                    put_message(&mut out, *tag, body);
                }
                messages::ready_for_query(&mut out, b'I');
                return Ok(out);
            }
            let mut rows = Vec::new();
            let mut fields = None;
            for (tag, body) in &c.messages {
                match tag {
                    b'T' if fields.is_none() => fields = Some(decode_fields(body).ok_or_else(bad_answer)?),
                    b'D' => rows.push(decode_row(body).ok_or_else(bad_answer)?),
                    b'N' => put_message(&mut out, *tag, body),
                    _ => {}
                }
            }
            rows_per_shard.push(rows);
            per_shard_fields.push(fields.ok_or_else(bad_answer)?);
        }
        let merged = router::fanout::common_fields(&per_shard_fields).and_then(|fields| {
            if !iso_dates(&self.st.params) && fields.iter().any(|f| DATE_TIME_OIDS.contains(&f.type_oid)) {
                return Err(router::fanout::MergeError(
                    "dates and times are merged in DateStyle ISO only: SET DateStyle = ISO for this read".into(),
                ));
            }
            let out = plan.output_fields(fields)?;
            Ok((out, plan.merge(fields, rows_per_shard)?))
        });
        match merged {
            Ok((out_fields, rows)) => {
                if extended.is_some_and(|x| x.parsed) {
                    messages::parse_complete(&mut out);
                }
                if extended.is_some() {
                    messages::bind_complete(&mut out);
                }
                if extended.is_none_or(|x| x.described) {
                    encode_fields(&mut out, &out_fields);
                }
                for row in &rows {
                    encode_row(&mut out, row);
                }
                messages::command_complete(&mut out, &format!("SELECT {}", rows.len()));
                messages::ready_for_query(&mut out, b'I');
            }
            Err(e) => {
                refuse(&mut out, &RouteError { code: router::route::FEATURE_NOT_SUPPORTED, message: e.to_string() })
            }
        }
        Ok(out)
    }
}

/// date, time, timetz, timestamp, timestamptz.
const DATE_TIME_OIDS: [u32; 5] = [1082, 1083, 1266, 1114, 1184];

/// Does the client's DateStyle print dates in ISO form (the default)?
fn iso_dates(params: &crate::session::params::ClientParams) -> bool {
    params.desired().get("datestyle").is_none_or(|sql| sql.to_ascii_lowercase().contains("iso"))
}

/// A Bind body (after the names) asking for `hidden` more result columns:
/// a per-column format list grows by text formats; none or one format
/// already covers them.
fn with_hidden_formats(bind_rest: &[u8], hidden: usize) -> Option<Vec<u8>> {
    let i16_at = |at: usize| bind_rest.get(at..at + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let mut at = 0;
    let nf = i16_at(at)?.max(0) as usize;
    at += 2 + 2 * nf;
    let np = i16_at(at)?.max(0) as usize;
    at += 2;
    for _ in 0..np {
        let len = bind_rest.get(at..at + 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))?;
        at += 4 + len.max(0) as usize;
    }
    let nr = i16_at(at)?.max(0) as usize;
    if nr <= 1 || hidden == 0 {
        return Some(bind_rest.to_vec());
    }
    let mut out = bind_rest[..at].to_vec();
    out.extend_from_slice(&((nr + hidden) as i16).to_be_bytes());
    out.extend_from_slice(bind_rest.get(at + 2..at + 2 + 2 * nr)?);
    out.extend(std::iter::repeat_n(0u8, 2 * hidden));
    Some(out)
}

fn bad_answer() -> Error {
    Error::ServerLost("malformed answer from a shard".into())
}

fn refuse(out: &mut BytesMut, e: &RouteError) {
    messages::error_response(out, Severity::Error, e.code, &e.message, None);
    messages::ready_for_query(out, b'I');
}

fn put_message(out: &mut BytesMut, tag: u8, body: &[u8]) {
    out.put_u8(tag);
    out.put_i32(body.len() as i32 + 4);
    out.put_slice(body);
}

fn decode_fields(body: &[u8]) -> Option<Vec<router::fanout::Field>> {
    let n = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    let mut at = 2;
    let mut fields = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let end = at + body.get(at..)?.iter().position(|b| *b == 0)?;
        let name = body[at..end].to_vec();
        at = end + 1;
        let b = body.get(at..at + 18)?;
        at += 18;
        fields.push(router::fanout::Field {
            name,
            table_oid: u32::from_be_bytes(b[0..4].try_into().ok()?),
            column: i16::from_be_bytes(b[4..6].try_into().ok()?),
            type_oid: u32::from_be_bytes(b[6..10].try_into().ok()?),
            type_size: i16::from_be_bytes(b[10..12].try_into().ok()?),
            type_modifier: i32::from_be_bytes(b[12..16].try_into().ok()?),
            format: i16::from_be_bytes(b[16..18].try_into().ok()?),
        });
    }
    Some(fields)
}

fn encode_fields(out: &mut BytesMut, fields: &[router::fanout::Field]) {
    let mut body = BytesMut::new();
    body.put_i16(fields.len() as i16);
    for f in fields {
        body.put_slice(&f.name);
        body.put_u8(0);
        body.put_u32(f.table_oid);
        body.put_i16(f.column);
        body.put_u32(f.type_oid);
        body.put_i16(f.type_size);
        body.put_i32(f.type_modifier);
        body.put_i16(f.format);
    }
    put_message(out, b'T', &body);
}

fn decode_row(body: &[u8]) -> Option<router::fanout::Row> {
    let n = i16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    let mut at = 2;
    let mut row = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        at += 4;
        if len < 0 {
            row.push(None);
        } else {
            let len = len as usize;
            row.push(Some(body.get(at..at + len)?.to_vec().into()));
            at += len;
        }
    }
    Some(row)
}

fn encode_row(out: &mut BytesMut, row: &router::fanout::Row) {
    let mut body = BytesMut::new();
    body.put_i16(row.len() as i16);
    for v in row {
        match v {
            Some(v) => {
                body.put_i32(v.len() as i32);
                body.put_slice(v);
            }
            None => body.put_i32(-1),
        }
    }
    put_message(out, b'D', &body);
}
