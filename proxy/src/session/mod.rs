//! A logged-in client: relaying its messages to a server connection and
//! the server's answers back, under transaction or session pooling.
//!
//! ```text
//!          ┌──────── no server ────────┐
//!          │ wait for a client message │◀──────────────┐
//!          └─────────────┬─────────────┘               │
//!                        │ checkout, sync settings     │ ReadyForQuery 'I',
//!                        ▼                             │ nothing pending,
//!          ┌──────── attached ─────────┐               │ not pinned
//!          │ client msgs → server      │───────────────┘ (transaction mode)
//!          │ server msgs → client      │
//!          └───────────────────────────┘
//! ```
//!
//! This module does the I/O; [`protocol`] decides what each message means.

mod everywhere;
mod lost;
pub mod params;
pub mod prepared;
mod protocol;
pub mod route;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::backend::ServerConn;
use crate::cancel::CancelTarget;
use crate::error::{Error, write_error};
use crate::pool::Pool;
use crate::wire::frame::{HEADER_LEN, Messages};
use crate::wire::messages::Severity;
use params::ClientParams;
pub(crate) use protocol::State;
use protocol::Verdict;
use route::Plan;

/// Largest message accepted from a server (PostgreSQL's own limit).
const MAX_SERVER_MESSAGE: usize = 1 << 30;

/// A logged-in client and, at times, the server connection serving it.
pub(crate) struct Session<S> {
    client: S,
    /// Bytes from the client not yet handled.
    cbuf: BytesMut,
    /// Bytes for the client not yet written.
    cout: BytesMut,
    /// Bytes for the server not yet written.
    sout: BytesMut,
    server: Option<Box<ServerConn>>,
    st: State,
    /// When bytes last went to a routed server with no answer yet: the
    /// first answer's delay is a query round trip for the server's RTT.
    sent_at: Option<Instant>,
    /// The last read from the client while attached filled all the room it
    /// had: read in large chunks (COPY IN, pipelines) until one does not.
    client_bulk: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Session<S> {
    pub(crate) fn new(client: S, cbuf: BytesMut, server: Option<Box<ServerConn>>, st: State) -> Self {
        // Buffers grow on first use: most clients are idle most of the time.
        Session {
            client,
            cbuf,
            cout: BytesMut::new(),
            sout: BytesMut::new(),
            server,
            st,
            sent_at: None,
            client_bulk: false,
        }
    }

    /// Serve the client until it leaves, fails, or shutdown ends the
    /// session. By reference, like the layers above it: each client's task
    /// is allocated at the size of its largest state, and a session moved
    /// into every layer's future would be stored once per layer.
    pub(crate) async fn run(&mut self) -> Result<(), Error> {
        let result = self.serve().await;
        if let Err(e) = &result {
            self.cout.clear();
            let severity = Severity::Fatal;
            write_error(&mut self.cout, severity, e);
            let _ = self.client.write_all(&self.cout).await;
        }
        self.finish().await;
        let _ = self.client.shutdown().await;
        result
    }

    /// Give the server connection back, or throw it away if it is not clean.
    /// A connection that held one client's session state (session mode, or
    /// pinned) is reset with `DISCARD ALL` first.
    async fn finish(&mut self) {
        let Some(mut conn) = self.server.take() else { return };
        self.st.cancel.set_target(None);
        self.st.detach();
        if !self.st.idle() {
            return self.st.pool.discard(conn);
        }
        if !self.st.transaction_mode || self.st.pinned.is_some() {
            if let Err(e) = conn.run_quiet("DISCARD ALL", connect_timeout(&self.st)).await {
                tracing::debug!(error = %e, "server connection reset failed");
                return self.st.pool.discard(conn);
            }
            conn.state.applied.clear();
            conn.state.synced = 0;
            conn.state.prepared.clear();
        }
        self.st.pool.checkin(conn);
    }

    async fn serve(&mut self) -> Result<(), Error> {
        let drain_token = self.st.shared.drain.clone();
        let hard_token = self.st.shared.hard.clone();
        // Registered with the shared tokens once, not on every loop turn.
        let drain = drain_token.cancelled();
        let hard = hard_token.cancelled();
        tokio::pin!(drain, hard);
        let idle_tx_timeout = self.st.shared.config.load().listen.idle_in_transaction_timeout;
        let mut last_activity = Instant::now();
        loop {
            if self.server.is_none() {
                if drain_token.is_cancelled() {
                    return Err(Error::ShuttingDown);
                }
                let mut need_more = !self.has_complete_message()?;
                if !need_more && self.cbuf[0] == b'X' {
                    return Ok(());
                }
                if !need_more && self.st.lost.is_some() {
                    // A transaction whose server died: answered by us
                    // until the client ends it.
                    let consumed = self.st.answer_lost(&self.cbuf, &mut self.cout)?;
                    self.cbuf.advance(consumed);
                    if !self.cout.is_empty() {
                        self.client.write_all(&self.cout).await?;
                        self.cout.clear();
                    }
                    if consumed > 0 {
                        continue;
                    }
                }
                if !need_more {
                    let t = self.st.topology();
                    if t.nodes.is_empty() {
                        return Err(Error::NoTopology);
                    }
                    if self.st.routing(&t) {
                        match self.st.plan(&self.cbuf)? {
                            Plan::NeedMore => need_more = true,
                            Plan::Local { consumed, reply } => {
                                self.cbuf.advance(consumed);
                                self.client.write_all(&reply).await?;
                                continue;
                            }
                            Plan::Server { shard, node, reason, begins, writes } => {
                                // PAUSE: wait for RESUME, then route on the
                                // topology of that moment.
                                if self.wait_if_paused(&t, &[shard]).await? {
                                    continue;
                                }
                                if writes
                                    && let Some(cluster) = &self.st.shared.cluster
                                    && cluster.gate().check(&t, shard).is_some()
                                {
                                    // Held: routed again on the topology of
                                    // the moment the gate opens, or refused.
                                    match cluster.gate().hold(&self.st.shared.topology, &t.shards[shard].name).await {
                                        Ok(()) => continue,
                                        Err(e) => self.st.route.planned_error = Some(e),
                                    }
                                }
                                tracing::trace!(shard = %t.shards[shard].name, node = %t.nodes[node].name, %reason, "routed");
                                if let Err(e) = self.attach_routed(&t, shard, node, begins).await {
                                    // A cluster node whose primary cannot be
                                    // reached: it may be failing over. Nothing
                                    // was sent; wait (bounded) for the topology
                                    // to move on, then route the request again.
                                    let primary = t.nodes[node].role == router::topology::Role::Primary
                                        && self.st.route.planned_error.is_none()
                                        && self.st.shared.cluster.is_some();
                                    if primary && self.wait_for_new_topology(t.version).await {
                                        continue;
                                    }
                                    if primary && self.st.survives_server_loss() {
                                        // No new primary in time: refuse
                                        // this request (never sent) with
                                        // 40001; the session stays.
                                        tracing::warn!(shard = %t.shards[shard].name, error = %e,
                                            "primary unreachable and no new one published; request refused");
                                        self.st.refuse_unsent(crate::error::ServerGone::Unreachable);
                                        continue;
                                    }
                                    return Err(e);
                                }
                            }
                            Plan::Fanout { sql, shards, consumed, extended } => {
                                if self.wait_if_paused(&t, &shards).await? {
                                    continue;
                                }
                                self.st.shared.routes.fanout();
                                self.cbuf.advance(consumed);
                                let reply = self.fanout(&t, &sql, &shards, extended.as_ref()).await?;
                                self.client.write_all(&reply).await?;
                                continue;
                            }
                            Plan::EveryPrimary { sql, consumed } => {
                                let every: Vec<usize> = (0..t.shards.len()).collect();
                                if self.wait_if_paused(&t, &every).await? {
                                    continue;
                                }
                                self.st.shared.routes.every_primary();
                                self.cbuf.advance(consumed);
                                let reply = self.everywhere(&t, &sql).await?;
                                self.client.write_all(&reply).await?;
                                continue;
                            }
                        }
                    } else {
                        self.attach().await?;
                    }
                }
                if need_more {
                    if let Some(c) = &self.st.client {
                        c.observe(false, self.st.tx_status);
                    }
                    room(&mut self.cbuf, IDLE_READ);
                    // cancel safety: read_buf and cancelled() are cancel safe.
                    let n = tokio::select! {
                        biased;
                        r = self.client.read_buf(&mut self.cbuf) => r?,
                        _ = &mut drain => return Err(Error::ShuttingDown),
                    };
                    if n == 0 {
                        return Ok(());
                    }
                    continue;
                }
            }
            if self.st.resync && self.st.pending.is_empty() {
                self.resync().await?;
            }
            let server = self.server.as_mut().expect("attached above");
            if !self.st.on_client(&mut self.cbuf, &mut server.state, &mut self.sout, &mut self.cout)? {
                return Ok(());
            }
            if !self.sout.is_empty() {
                let sent = server.stream.write_all(&self.sout).await;
                self.sout.clear();
                if let Err(e) = sent {
                    self.server_lost(e.to_string()).await?;
                    continue;
                }
                if self.sent_at.is_none() && self.st.route.attached.is_some() {
                    self.sent_at = Some(Instant::now());
                }
            }
            if !self.cout.is_empty() {
                self.client.write_all(&self.cout).await?;
                self.cout.clear();
            }
            if self.st.releasable() {
                // Everything was answered by us (e.g. only a Close): nothing
                // to wait for from the server.
                self.release().await;
                continue;
            }
            let idle_deadline = match idle_tx_timeout {
                Some(t) if self.st.tx_status != b'I' && self.st.pending.is_empty() => Some(last_activity + t),
                _ => None,
            };
            if let Some(c) = &self.st.client {
                c.observe(!self.st.pending.is_empty(), self.st.tx_status);
            }
            // A client's requests are small: a chunk that fits what an idle
            // client keeps, so the buffer is not given back and allocated
            // again at every transaction; a client whose last read filled
            // its room (COPY IN, big batches) gets the large chunk.
            room(&mut self.cbuf, if self.client_bulk { READ_CHUNK } else { KEEP_IDLE });
            let client_room = self.cbuf.capacity() - self.cbuf.len();
            room(&mut server.rbuf, READ_CHUNK);
            // cancel safety: both reads are read_buf on sockets, the timer
            // and the token are cancel safe.
            tokio::select! {
                r = self.client.read_buf(&mut self.cbuf) => {
                    let n = r?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.client_bulk = n >= client_room;
                    if idle_tx_timeout.is_some() {
                        last_activity = Instant::now();
                    }
                }
                r = server.stream.read_buf(&mut server.rbuf) => {
                    let lost = match r {
                        Ok(0) => Some("server closed the connection".to_owned()),
                        Ok(_) => None,
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(why) = lost {
                        self.server_lost(why).await?;
                        continue;
                    }
                    if idle_tx_timeout.is_some() {
                        last_activity = Instant::now();
                    }
                    if let (Some(sent), Some(a)) = (self.sent_at.take(), &self.st.route.attached) {
                        a.status.record_query_rtt(sent.elapsed());
                        self.st.shared.metrics.latency.record(&a.shard_name, a.role, sent.elapsed());
                    }
                    self.relay_server().await?;
                }
                _ = sleep_until_opt(idle_deadline) => return Err(Error::IdleInTransactionTimeout),
                // Draining: a session that holds its connection (session
                // mode, pinned) ends once it is idle between transactions.
                _ = &mut drain, if self.st.idle() => {
                    return Err(Error::ShuttingDown);
                }
                _ = &mut hard => return Err(Error::ShuttingDown),
            }
        }
    }

    /// The server connection died (read or write failed) while attached.
    /// A session that outlives it ([`State::survives_server_loss`]) gets
    /// the answers [`lost`] decides for what was in flight and stays; any
    /// other ends with a FATAL: `08007` when a commit's outcome is unknown,
    /// else `08006` (after the server's own FATAL, if it sent one).
    async fn server_lost(&mut self, why: String) -> Result<(), Error> {
        if !self.st.survives_server_loss() {
            let unknown = !self.st.server_sent_fatal() && self.st.lost_decision().commit_unknown();
            return Err(if unknown { Error::ServerLostInCommit(why) } else { Error::ServerLost(why) });
        }
        // Decided while the session still knows where it was attached.
        let d = self.st.on_server_lost(&mut self.cout);
        let conn = self.server.take().expect("server_lost runs attached");
        self.st.cancel.set_target(None);
        self.st.detach();
        self.st.pool.discard(conn);
        self.sent_at = None;
        tracing::warn!(
            error = %why,
            commit_unknown = d.commit_unknown(),
            aborted = self.st.lost.is_some(),
            "server connection lost under a client; its transaction reported lost"
        );
        self.client.write_all(&self.cout).await?;
        self.cout.clear();
        Ok(())
    }

    /// Forward what the server sent; give the connection back when the
    /// transaction is over.
    async fn relay_server(&mut self) -> Result<(), Error> {
        let server = self.server.as_mut().expect("relay_server runs attached");
        let buf = &server.rbuf[..];
        let mut it = Messages::new(buf, MAX_SERVER_MESSAGE);
        let mut flushed = 0;
        let mut modified = false;
        for m in it.by_ref() {
            let (at, h) = m.map_err(|e| Error::ServerLost(e.to_string()))?;
            let end = at + h.total;
            match self.st.on_server(h.tag, &buf[at + HEADER_LEN..end], &mut server.state) {
                Verdict::Forward => {}
                Verdict::Drop => {
                    tracing::trace!(tag = %(h.tag as char), "server message answered by us, not forwarded");
                    self.cout.extend_from_slice(&buf[flushed..at]);
                    flushed = end;
                    modified = true;
                }
                Verdict::ReadyAs(status) => {
                    self.cout.extend_from_slice(&buf[flushed..at]);
                    crate::wire::messages::ready_for_query(&mut self.cout, status);
                    flushed = end;
                    modified = true;
                }
            }
            if self.st.front_is_fake() {
                self.cout.extend_from_slice(&buf[flushed..end]);
                flushed = end;
                self.st.emit_fakes(&mut self.cout, &mut server.state);
                modified = true;
            }
        }
        let consumed = it.consumed();
        if modified {
            self.cout.extend_from_slice(&buf[flushed..consumed]);
            server.rbuf.advance(consumed);
            self.client.write_all(&self.cout).await?;
            self.cout.clear();
        } else if consumed > 0 {
            self.client.write_all(&server.rbuf[..consumed]).await?;
            server.rbuf.advance(consumed);
        }
        if self.st.releasable() {
            self.release().await;
        }
        Ok(())
    }

    /// After a transaction that wrote on a primary with replicas, learn the
    /// WAL position its commit reached, for read-your-writes. `false` when
    /// the connection failed (the session then reads from the primary).
    async fn note_commit(&mut self, conn: &mut ServerConn) -> bool {
        let Some(a) = self.st.route.attached.clone().filter(|a| a.role == router::topology::Role::Primary) else {
            return true;
        };
        let t = self.st.topology();
        let has_replicas = t.shards.get(a.shard).is_some_and(|s| !s.replicas.is_empty());
        if !has_replicas || self.st.route.consistency != router::route::Consistency::ReadYourWrites {
            return true;
        }
        match conn.query_value("SELECT pg_current_wal_lsn()::text", connect_timeout(&self.st)).await {
            Ok(Some(v)) if router::lsn::Lsn::parse(&v).is_some() => {
                self.st.committed(&a.shard_name, router::lsn::Lsn::parse(&v).unwrap_or_default());
                true
            }
            r => {
                tracing::debug!(result = ?r.map_err(|e| e.to_string()), "cannot read the commit position");
                self.st.committed(&a.shard_name, router::lsn::Lsn(u64::MAX));
                false
            }
        }
    }

    fn has_complete_message(&self) -> Result<bool, Error> {
        Ok(crate::wire::frame::complete(&self.cbuf, self.st.max_message)?.is_some())
    }

    /// Check out a server connection and make it look like this client's.
    async fn attach(&mut self) -> Result<(), Error> {
        let conn = checkout_synced(&self.st.pool, self.st.id, &self.st.params, connect_timeout(&self.st)).await?;
        self.st.cancel.set_target(Some(CancelTarget {
            addr: conn.addr.clone(),
            pid: conn.backend_pid,
            key: conn.backend_key,
        }));
        self.st.tx_status = b'I';
        self.server = Some(conn);
        if let Some(c) = &self.st.client {
            c.set_attached(Some(&self.st.pool.key.addr));
        }
        Ok(())
    }

    /// Re-apply settings on the attached connection after a RESET.
    async fn resync(&mut self) -> Result<(), Error> {
        self.st.resync = false;
        let timeout = connect_timeout(&self.st);
        let server = self.server.as_mut().expect("resync runs attached");
        if let Some(sql) = self.st.params.sync_sql(&server.state.applied) {
            server.state.synced = 0;
            server.run_quiet(&sql, timeout).await?;
            server.state.applied = self.st.params.desired().clone();
        }
        self.st.params.stamp(&mut server.state);
        Ok(())
    }

    /// On a cluster node, wait up to `cluster.write_hold` for a topology
    /// newer than `version` (a fence, a new primary). True when one came.
    async fn wait_for_new_topology(&self, version: u64) -> bool {
        let Some(hold) = self.st.shared.config.load().cluster.as_ref().map(|c| c.write_hold) else { return false };
        let mut rx = self.st.shared.topology.subscribe();
        let newer = rx.wait_for(|t| t.version != version);
        matches!(tokio::time::timeout(hold, newer).await, Ok(Ok(_)))
    }

    /// On a cluster node, wait while any of `shards` is paused (`PAUSE`).
    /// True when it waited: the request must be routed again.
    async fn wait_if_paused(&self, t: &router::topology::Topology, shards: &[usize]) -> Result<bool, Error> {
        let Some(cluster) = &self.st.shared.cluster else { return Ok(false) };
        let Some(paused) = shards.iter().map(|&s| &t.shards[s].name).find(|s| cluster.gate().is_paused(s)) else {
            return Ok(false);
        };
        if !cluster.gate().wait_resumed(paused, &self.st.shared.drain).await {
            return Err(Error::ShuttingDown);
        }
        Ok(true)
    }

    /// Check out a connection to `node` (of `shard`) for the next request.
    /// `begins`: the request runs statements, so a held BEGIN goes first.
    async fn attach_routed(
        &mut self,
        t: &router::topology::Topology,
        shard: usize,
        node: usize,
        begins: bool,
    ) -> Result<(), Error> {
        let mut node = node;
        let mut pool = self.st.pool_for(&t.nodes[node].address);
        let conn = match self.checkout_routed(&pool).await {
            Ok(c) => c,
            // A replica that fails between probes: the read goes to the primary.
            Err(e) if t.nodes[node].role == router::topology::Role::Replica => {
                tracing::debug!(node = %t.nodes[node].name, error = %e, "replica unavailable; reading from the primary");
                node = t.shards[shard].primary.ok_or(e)?;
                pool = self.st.pool_for(&t.nodes[node].address);
                self.checkout_routed(&pool).await?
            }
            Err(e) => return Err(e),
        };
        self.st.pool = pool;
        self.st.attach_to(t, shard, node);
        self.st.shared.routes.routed(&t.nodes[node], self.st.route.planned_error.is_some());
        if let Some(c) = &self.st.client {
            c.set_attached(Some(&t.nodes[node].name));
        }
        self.st.cancel.set_target(Some(CancelTarget {
            addr: conn.addr.clone(),
            pid: conn.backend_pid,
            key: conn.backend_key,
        }));
        self.st.tx_status = if self.st.route.deferred_begin.is_some() && begins { b'T' } else { b'I' };
        self.server = Some(conn);
        if begins && let Some((begin, _)) = self.st.route.deferred_begin.take() {
            crate::wire::messages::query(&mut self.sout, &begin);
            self.st.push_injected_query();
        }
        Ok(())
    }

    /// A connection of `pool` for a routed request. A pooled connection
    /// the server closed while it sat idle (its primary died a moment ago)
    /// would take the request, and that loss could not be told from one in
    /// flight (`08007` for a write never run). On a cluster node, where
    /// primaries die and move, such a connection is thrown away and another
    /// checked out (a dead server then fails the checkout itself, and the
    /// request is routed again on a newer topology). Elsewhere the pool's
    /// own check of connections idle for a while does.
    async fn checkout_routed(&self, pool: &Pool) -> Result<Box<ServerConn>, Error> {
        let timeout = connect_timeout(&self.st);
        let mut attempt = 1;
        loop {
            let conn = checkout_synced(pool, self.st.id, &self.st.params, timeout).await?;
            if self.st.shared.cluster.is_none() || attempt >= LIVE_ATTEMPTS || conn.idle_and_open() {
                return Ok(conn);
            }
            tracing::debug!(server_pid = conn.backend_pid, "pooled server connection closed by the server");
            pool.discard(conn);
            attempt += 1;
        }
    }

    async fn release(&mut self) {
        if let Some(mut conn) = self.server.take() {
            self.st.cancel.set_target(None);
            if std::mem::take(&mut self.st.route.wrote) && !self.note_commit(&mut conn).await {
                self.st.detach();
                self.st.pool.discard(conn);
                return;
            }
            self.st.detach();
            self.st.pool.checkin(conn);
        }
        shrink(&mut self.cbuf);
        shrink(&mut self.cout);
        shrink(&mut self.sout);
    }
}

/// How many pooled connections closed by their server a routed checkout
/// throws away before it takes the next one as it is.
const LIVE_ATTEMPTS: usize = 32;

/// How many connections a checkout tries when applying settings fails on
/// connections left dirty by other clients.
const SYNC_ATTEMPTS: usize = 3;

/// Check out a server connection for `client_id` and apply its settings.
/// A connection on which that fails is thrown away; if it carried another
/// client's settings, the checkout is tried again, since the failure may be
/// theirs (a setting only a role they assumed may reset). On a clean
/// connection the failure is the client's own, and is returned.
pub(crate) async fn checkout_synced(
    pool: &Pool,
    client_id: u64,
    params: &ClientParams,
    timeout: Duration,
) -> Result<Box<ServerConn>, Error> {
    let conn = pool.checkout(client_id).await?;
    sync_settings(pool, client_id, params, timeout, conn).await
}

/// Apply the client's settings on `conn`, checked out for it; see
/// [`checkout_synced`] for what happens when that fails.
pub(crate) async fn sync_settings(
    pool: &Pool,
    client_id: u64,
    params: &ClientParams,
    timeout: Duration,
    mut conn: Box<ServerConn>,
) -> Result<Box<ServerConn>, Error> {
    let mut attempt = 1;
    loop {
        conn.last_client = client_id;
        if params.synced_on(&conn.state) {
            return Ok(conn);
        }
        let Some(sql) = params.sync_sql(&conn.state.applied) else {
            params.stamp(&mut conn.state);
            return Ok(conn);
        };
        tracing::trace!(client = client_id, server_pid = conn.backend_pid, %sql, "applying the client's settings");
        match conn.run_quiet(&sql, timeout).await {
            Ok(()) => {
                conn.state.applied = params.desired().clone();
                params.stamp(&mut conn.state);
                return Ok(conn);
            }
            Err(e) => {
                let dirty = !conn.state.applied.is_empty();
                tracing::debug!(client = client_id, error = %e, dirty, "cannot apply session settings on server connection");
                pool.discard(conn);
                if !dirty || attempt >= SYNC_ATTEMPTS {
                    return Err(e.into());
                }
            }
        }
        attempt += 1;
        conn = pool.checkout(client_id).await?;
    }
}

fn connect_timeout(st: &State) -> Duration {
    st.shared.pool_config.load().connect_timeout
}

/// Room for one read while a server connection is attached: a system call
/// should take what a typical burst of messages holds.
const READ_CHUNK: usize = 16 * 1024;
/// Room for one read of an idle client: most clients are idle most of the
/// time, and their buffers are most of what an idle client costs.
const IDLE_READ: usize = 512;
/// Buffers above this are given back when the client goes idle.
const KEEP_IDLE: usize = 4 * 1024;

/// Make sure the next read has room for `chunk` bytes, or for the rest of a
/// message whose header has arrived (an empty buffer gets its allocation
/// back rather than a new one).
fn room(buf: &mut BytesMut, chunk: usize) {
    let rest = match crate::wire::frame::header(buf, usize::MAX) {
        Ok(Some(h)) => h.total.saturating_sub(buf.len()).min(MAX_PREALLOC),
        _ => 0,
    };
    let want = rest.max(chunk / 4);
    if buf.capacity() - buf.len() < want {
        buf.reserve(rest.max(chunk));
    }
}

/// A huge message is read in chunks of at most this, not allocated whole up
/// front on the word of its length field.
const MAX_PREALLOC: usize = 1 << 20;

/// Give back buffer memory an idle client does not need.
fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > KEEP_IDLE {
        *buf = BytesMut::new();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
