//! Issue 4's multi-node failover on real processes: three `meridian serve`
//! processes (`MeridianCluster`) in front of a PostgreSQL primary and two
//! streaming replicas, shard `s1` with `durability = 'sync'` (`ANY 1`
//! synchronous standbys), `cluster.failure_timeout = 1s`, probes every
//! 100 ms.
//!
//! - the primary killed (`kill -9`) under writes through all three nodes:
//!   no acknowledged write lost, one writable primary afterwards, every
//!   node agrees on it and its epoch, the old primary fenced; the write
//!   outage of each writer is printed;
//! - the Raft leader killed in the middle of that failover (after the
//!   fence): the other two finish it;
//! - a follower cut off from the other two (Raft relays) just before the
//!   primary dies: the other two fail over; the cut-off node refuses writes
//!   with 40001 (its lease gone) even once the old primary is back up, and
//!   after the cut is healed it writes to the new primary.
//!
//! Writers insert rows with unique ids (`RETURNING inet_server_port()`, so
//! each acknowledged row names the server that took it) and remember which
//! inserts were acknowledged; a client may see 40001 (a held write
//! refused), 08006/08007 or a lost connection for the statement in flight,
//! and nothing else; the writers reconnect after a lost connection.
//!
//! Run: `cargo test -p integration-tests --test cluster_failover --
//! --test-threads=1` (three Meridian processes and three PostgreSQL servers
//! per test).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use integration_tests::cluster::{ClusterSpec, MeridianCluster, SHARD, ShardView, connect, rows, shard_view};
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The table the writers insert into.
const TABLE: &str = "failover_acked";

/// Writer `n`'s ids are `n * ID_BLOCK + 1, + 2, ...`.
const ID_BLOCK: i64 = 1_000_000_000;

/// Pause between two inserts of one writer.
const WRITE_PAUSE: Duration = Duration::from_millis(10);

/// A statement with no answer for this long fails the writer.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a failover may take to show on every node, from the kill.
const FAILOVER_WITHIN: Duration = Duration::from_secs(20);

/// `cluster.write_lease` and `cluster.write_hold` of every test.
const LEASE: Duration = Duration::from_secs(1);
const HOLD: Duration = Duration::from_secs(3);

/// Three members, a primary and two synchronous replicas, fast detection.
fn spec(relays: bool) -> ClusterSpec {
    ClusterSpec {
        members: 3,
        replicas: 2,
        relays,
        write_lease: LEASE,
        write_hold: HOLD,
        probe_interval: Duration::from_millis(100),
        failure_timeout: Some(Duration::from_secs(1)),
        sync_replication: true,
        ..ClusterSpec::default()
    }
}

/// Start the cluster and create [`TABLE`] on the primary.
async fn start(relays: bool) -> anyhow::Result<MeridianCluster> {
    let c = MeridianCluster::start(spec(relays)).await?;
    c.pg.primary()
        .execute(&format!(
            "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, node int NOT NULL, \
             at timestamptz NOT NULL DEFAULT clock_timestamp())"
        ))
        .await?;
    Ok(c)
}

// ---------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------

/// An acknowledged insert.
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: i64,
    started: Instant,
    at: Instant,
    /// `inet_server_port()` of the server that took it.
    port: u16,
}

/// A failed insert (or connection attempt).
#[derive(Debug, Clone)]
struct Failure {
    /// The id it tried to insert (0 for a connection attempt).
    id: i64,
    started: Instant,
    at: Instant,
    /// The SQLSTATE, `connection` (lost under the statement), `connect`
    /// (no new connection) or `timeout`.
    kind: String,
    text: String,
}

/// What one writer saw.
#[derive(Default)]
struct Tally {
    acked: Mutex<Vec<Ack>>,
    failed: Mutex<Vec<Failure>>,
}

/// One writer task inserting through one Meridian node.
struct Writer {
    node: u64,
    tally: Arc<Tally>,
    task: JoinHandle<()>,
}

impl Writer {
    fn start(c: &MeridianCluster, node: u64, stop: &CancellationToken) -> Writer {
        let tally = Arc::new(Tally::default());
        let task = tokio::spawn(write_loop(c.app_config(node), node, tally.clone(), stop.clone()));
        Writer { node, tally, task }
    }

    fn acked(&self) -> Vec<Ack> {
        self.tally.acked.lock().clone()
    }

    fn failed(&self) -> Vec<Failure> {
        self.tally.failed.lock().clone()
    }

    /// Acknowledged inserts that started after `t`.
    fn acked_since(&self, t: Instant) -> usize {
        self.tally.acked.lock().iter().filter(|a| a.started >= t).count()
    }

    /// The longest time between two acknowledged writes (the write
    /// outage this client saw), ending at the ack that closed it.
    fn outage(&self) -> (Duration, Option<Instant>) {
        let acked = self.acked();
        acked
            .windows(2)
            .map(|w| (w[1].at.duration_since(w[0].at), Some(w[1].at)))
            .max_by_key(|(d, _)| *d)
            .unwrap_or_default()
    }

    /// The longest time between two acknowledged writes both within
    /// `from..to`, or from `from` to the first ack after it.
    fn longest_gap_within(&self, from: Instant, to: Instant) -> Duration {
        let mut last = from;
        let mut gap = Duration::ZERO;
        for a in self.acked().iter().filter(|a| a.at >= from && a.at < to) {
            gap = gap.max(a.at.duration_since(last));
            last = a.at;
        }
        gap
    }

    /// Failures by kind.
    fn failure_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for f in self.failed() {
            *out.entry(f.kind).or_default() += 1;
        }
        out
    }
}

/// Insert rows with this writer's ids through `config` until `stop`,
/// reconnecting whenever the connection is gone.
async fn write_loop(config: tokio_postgres::Config, node: u64, tally: Arc<Tally>, stop: CancellationToken) {
    let sql = format!("INSERT INTO {TABLE} (id, node) VALUES ($1, $2) RETURNING inet_server_port()");
    let mut client: Option<tokio_postgres::Client> = None;
    let mut n = 0i64;
    while !stop.is_cancelled() {
        let c = match &client {
            Some(c) if !c.is_closed() => c,
            _ => {
                let started = Instant::now();
                match connect(&config).await {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        let text = format!("{e:#}");
                        tally.failed.lock().push(Failure {
                            id: 0,
                            started,
                            at: Instant::now(),
                            kind: "connect".into(),
                            text,
                        });
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        n += 1;
        let id = node as i64 * ID_BLOCK + n;
        let started = Instant::now();
        let answer = tokio::time::timeout(STATEMENT_TIMEOUT, c.query_one(&sql, &[&id, &(node as i32)])).await;
        let at = Instant::now();
        match answer {
            Ok(Ok(row)) => {
                let port: i32 = row.get(0);
                tally.acked.lock().push(Ack { id, started, at, port: port as u16 });
            }
            Ok(Err(e)) => {
                let kind = match e.as_db_error() {
                    Some(db) if db.code().code() == "57P01" && db.message().contains("postmaster exit") => {
                        POSTMASTER_EXIT.to_owned()
                    }
                    Some(db) => db.code().code().to_owned(),
                    None => "connection".to_owned(),
                };
                if kind == "connection" {
                    client = None;
                }
                let text = integration_tests::cluster::describe(&e);
                tally.failed.lock().push(Failure { id, started, at, kind, text });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tally.failed.lock().push(Failure {
                    id,
                    started,
                    at,
                    kind: "timeout".into(),
                    text: format!("no answer within {STATEMENT_TIMEOUT:?}"),
                });
                client = None;
            }
        }
        tokio::time::sleep(WRITE_PAUSE).await;
    }
}

/// Stop every writer and wait for them.
async fn stop_all(stop: &CancellationToken, writers: &mut [Writer]) -> anyhow::Result<()> {
    stop.cancel();
    for w in writers.iter_mut() {
        (&mut w.task).await.with_context(|| format!("writer through m{}", w.node))?;
    }
    Ok(())
}

/// Wait until every writer has had `n` inserts acknowledged that started
/// after `since`.
async fn wait_acked_since(writers: &[&Writer], since: Instant, n: usize, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let counts: Vec<(u64, usize)> = writers.iter().map(|w| (w.node, w.acked_since(since))).collect();
        if counts.iter().all(|(_, c)| *c >= n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let last: Vec<String> = writers
                .iter()
                .map(|w| format!("m{}: {:?}", w.node, w.failed().last().map(|f| (f.kind.clone(), f.text.clone()))))
                .collect();
            bail!("not every writer had {n} writes acknowledged within {within:?}: {counts:?}; last errors {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The kind of a `57P01` FATAL that the dying primary's own backend sent
/// ("terminating connection due to unexpected postmaster exit"), had it
/// reached the client: Meridian treats it as the server vanishing and
/// answers the write in flight with 08007 (`session/lost.rs`), so a client
/// never sees it. Counted apart, and not allowed.
const POSTMASTER_EXIT: &str = "57P01 (postmaster exit)";

/// Allowed failures: a held write refused (40001), the statement in
/// flight when its server died (08006, 08007, or the connection closed),
/// and a reconnect that did not get through.
fn allowed(kind: &str) -> bool {
    matches!(kind, "40001" | "08006" | "08007" | "connection" | "connect")
}

/// Print what each writer saw: acks, outage, failures by kind.
fn report(writers: &[Writer], t0: Instant) {
    for w in writers {
        let (outage, ended) = w.outage();
        eprintln!(
            "  writer via m{}: {} acknowledged, longest gap between acks {outage:?} (ended {:?} after the fault), \
             failures {:?}",
            w.node,
            w.acked().len(),
            ended.map(|e| e.saturating_duration_since(t0)),
            w.failure_counts()
        );
    }
}

/// Every failure of a kind [`allowed`] does not accept, as text.
fn unexpected_failures(writers: &[Writer]) -> Vec<String> {
    writers
        .iter()
        .flat_map(|w| w.failed().into_iter().map(move |f| (w.node, f)))
        .filter(|(_, f)| !allowed(&f.kind))
        .map(|(node, f)| format!("m{node} id {}: {} {}", f.id, f.kind, f.text))
        .collect()
}

/// The ids in [`TABLE`] on PostgreSQL server `name` (over its socket).
async fn ids_on(c: &MeridianCluster, name: &str) -> anyhow::Result<BTreeSet<i64>> {
    let rows = c.pg_server(name)?.query(&format!("SELECT id FROM {TABLE}")).await?;
    rows.iter()
        .map(|r| r.first().cloned().flatten().context("NULL id")?.parse::<i64>().context("id is not a number"))
        .collect()
}

/// Acknowledged ids missing on `name`.
async fn lost_on(c: &MeridianCluster, name: &str, writers: &[Writer]) -> anyhow::Result<(usize, Vec<i64>)> {
    let present = ids_on(c, name).await?;
    let acked: Vec<i64> = writers.iter().flat_map(|w| w.acked().into_iter().map(|a| a.id)).collect();
    let lost = acked.iter().copied().filter(|id| !present.contains(id)).collect();
    Ok((acked.len(), lost))
}

/// The "one writable primary per epoch" checks after a failover from `old`
/// to `view.primary` as `among` see it: every one shows the same primary
/// and epoch (above `epoch_before`), and the old primary is fenced.
async fn check_agreement(
    c: &MeridianCluster,
    among: &[u64],
    old: &str,
    view: &ShardView,
    epoch_before: u64,
) -> anyhow::Result<()> {
    for &id in among {
        let v = c.shard_view(id, SHARD).await?;
        ensure!(
            (&v.primary, v.epoch, v.fenced) == (&view.primary, view.epoch, false),
            "m{id} shows {v:?}, others {view:?}"
        );
        let state = c.node_cluster_state(id, old).await?;
        ensure!(state == "fenced", "m{id} shows the old primary {old} as {state:?}, not fenced");
    }
    ensure!(view.epoch > epoch_before, "the epoch did not move: {} -> {}", epoch_before, view.epoch);
    Ok(())
}

/// Exactly one running PostgreSQL server is not in recovery, and it is
/// `primary`.
async fn check_one_writable(c: &MeridianCluster, primary: &str) -> anyhow::Result<()> {
    let roles = c.pg_in_recovery().await?;
    let writable: Vec<&String> = roles.iter().filter(|(_, in_recovery)| !**in_recovery).map(|(n, _)| n).collect();
    eprintln!("  PostgreSQL servers up (name: in recovery): {roles:?}");
    ensure!(writable == [primary], "servers up and not in recovery: {writable:?}, expected only {primary}");
    Ok(())
}

/// The last failover event on member `id`, printed; it must name `new`.
async fn check_event(c: &MeridianCluster, id: u64, new: &str) -> anyhow::Result<()> {
    let events = c.failover_events(id).await?;
    let e = events.last().with_context(|| format!("no failover event on m{id}"))?;
    eprintln!("  event: {} | phases {}", e.summary, e.phases);
    // The event names the promoted node; a failover that stopped names
    // the old primary instead.
    ensure!(
        e.node == new && e.summary.contains(new) && !e.summary.contains("stopped"),
        "the last failover event does not promote {new}: {e:?}"
    );
    Ok(())
}

/// `synchronous_standby_names` of the new primary names the replica left.
async fn check_sync_standbys(c: &MeridianCluster, new: &str, old: &str) -> anyhow::Result<()> {
    let names = c.pg_server(new)?.query_value("SHOW synchronous_standby_names").await?.unwrap_or_default();
    eprintln!("  synchronous_standby_names on {new}: {names:?}");
    for s in c.pg.servers() {
        if s.name() != new && s.name() != old {
            ensure!(names.contains(s.name()), "{new}'s synchronous_standby_names {names:?} lacks {}", s.name());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 1. The primary killed under writes through every node
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_under_writes_through_every_node_loses_nothing() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = start(false).await?;
    let ids = c.ids();
    let old = c.pg.primary().name().to_owned();
    let old_port = c.pg.primary().port();
    let leader = c.leader().await?;
    let before = c.shard_view(leader, SHARD).await?;
    ensure!(before.primary.as_deref() == Some(old.as_str()) && before.durability == "sync", "{before:?}");

    let stop = CancellationToken::new();
    let mut writers: Vec<Writer> = ids.iter().map(|&id| Writer::start(&c, id, &stop)).collect();
    let warm = Instant::now();
    wait_acked_since(&writers.iter().collect::<Vec<_>>(), warm, 10, Duration::from_secs(10)).await?;

    let killed_at = Instant::now();
    c.kill_pg(&old).await?;
    let kill_done = Instant::now();
    let view = c.wait_new_primary(&ids, SHARD, &old, FAILOVER_WITHIN).await?;
    let shown_after = killed_at.elapsed();
    let new = view.primary.clone().context("a new primary")?;
    let new_port = c.pg_server(&new)?.port();
    let switched = Instant::now();
    wait_acked_since(&writers.iter().collect::<Vec<_>>(), switched, 10, Duration::from_secs(20))
        .await
        .context("writes through every node after the failover")?;
    stop_all(&stop, &mut writers).await?;

    eprintln!(
        "failover under writes: leader m{leader}, {old} killed; {new} shown as primary (epoch {} -> {}) by every \
         node {shown_after:?} after the kill",
        before.epoch, view.epoch
    );
    report(&writers, killed_at);
    let (acked, lost) = lost_on(&c, &new, &writers).await?;
    eprintln!("  {acked} writes acknowledged, {} missing on {new}", lost.len());
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // Each acknowledged write came from the old primary before it died or
    // from the new one: never from anything else, never from the old one
    // after the kill.
    for w in &writers {
        for a in w.acked() {
            let fine = (a.port == old_port && a.at <= kill_done) || a.port == new_port;
            ensure!(
                fine,
                "m{}: id {} acknowledged by port {} ({old} {old_port}, {new} {new_port})",
                w.node,
                a.id,
                a.port
            );
        }
    }
    let bad = unexpected_failures(&writers);
    ensure!(bad.is_empty(), "unexpected client errors: {bad:?}");
    check_one_writable(&c, &new).await?;
    check_agreement(&c, &ids, &old, &view, before.epoch).await?;
    check_event(&c, leader, &new).await?;
    check_sync_standbys(&c, &new, &old).await?;
    eprintln!("test took {:?}", test_start.elapsed());
    c.passed();
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. The Raft leader killed during the failover
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_finish_a_failover_whose_leader_was_killed_midway() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = start(false).await?;
    let ids = c.ids();
    let old = c.pg.primary().name().to_owned();
    let leader = c.leader().await?;
    let rest: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    let watcher = rest[0];
    let before = c.shard_view(leader, SHARD).await?;
    let watch = c.admin(watcher).await?;

    let stop = CancellationToken::new();
    let mut writers: Vec<Writer> = ids.iter().map(|&id| Writer::start(&c, id, &stop)).collect();
    let warm = Instant::now();
    wait_acked_since(&writers.iter().collect::<Vec<_>>(), warm, 10, Duration::from_secs(10)).await?;

    let killed_at = Instant::now();
    c.kill_pg(&old).await?;
    // The leader fences the shard first; kill it as soon as a follower
    // sees the fence. On a sync shard the leader skips the lease wait, so
    // the fence is followed by the promotion within about 100 ms: poll
    // without pause on an open admin connection.
    let fenced = loop {
        let v = shard_view(&rows(&watch, "SHOW SHARDS").await?, SHARD)?;
        if v.fenced {
            break v;
        }
        ensure!(killed_at.elapsed() < FAILOVER_WITHIN, "m{watcher} never saw the shard fenced: {v:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let fenced_after = killed_at.elapsed();
    c.kill(leader).await?;
    let leader_killed = Instant::now();
    let promoted_before_kill: Vec<String> =
        c.pg_in_recovery().await?.into_iter().filter(|(_, r)| !r).map(|(n, _)| n).collect();
    let after_kill = c.shard_view(watcher, SHARD).await?;
    eprintln!(
        "leader m{leader} killed {:?} after {old} was killed ({fenced_after:?} to the fence on m{watcher}: \
         {fenced:?}); then m{watcher} shows {after_kill:?}; servers already promoted: {promoted_before_kill:?}",
        leader_killed.duration_since(killed_at)
    );
    ensure!(
        after_kill.fenced && after_kill.primary.is_none(),
        "the failover had finished before the leader died, so nothing was interrupted: {after_kill:?}"
    );

    let new_leader = c.wait_leader(&rest).await?;
    let waited = c.wait_new_primary(&rest, SHARD, &old, FAILOVER_WITHIN).await;
    let view = match waited {
        Ok(v) => v,
        Err(e) => {
            let now = c.shard_view(new_leader, SHARD).await.map_or_else(|e| format!("{e:#}"), |v| format!("{v:?}"));
            let roles = c.pg_in_recovery().await.map_or_else(|e| format!("{e:#}"), |r| format!("{r:?}"));
            let events = c.failover_events(new_leader).await.unwrap_or_default();
            stop_all(&stop, &mut writers).await?;
            report(&writers, killed_at);
            bail!(
                "the failover interrupted by m{leader}'s death did not finish under the new leader m{new_leader} \
                 within {FAILOVER_WITHIN:?}: {e:#}\n  shard now {now}; servers (in recovery) {roles}; failover events \
                 {events:?}"
            );
        }
    };
    let shown_after = killed_at.elapsed();
    let new = view.primary.clone().context("a new primary")?;
    let switched = Instant::now();
    let survivors: Vec<&Writer> = writers.iter().filter(|w| w.node != leader).collect();
    wait_acked_since(&survivors, switched, 10, Duration::from_secs(20))
        .await
        .context("writes through the remaining nodes")?;
    stop_all(&stop, &mut writers).await?;

    eprintln!(
        "finished by m{new_leader}: {new} primary (epoch {} -> {}) on m{rest:?} {shown_after:?} after the kill of \
         {old}",
        before.epoch, view.epoch
    );
    report(&writers, killed_at);
    let (acked, lost) = lost_on(&c, &new, &writers).await?;
    eprintln!("  {acked} writes acknowledged, {} missing on {new}", lost.len());
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let bad = unexpected_failures(&writers);
    ensure!(bad.is_empty(), "unexpected client errors: {bad:?}");
    check_one_writable(&c, &new).await?;
    check_agreement(&c, &rest, &old, &view, before.epoch).await?;
    check_event(&c, new_leader, &new).await?;
    eprintln!("test took {:?}", test_start.elapsed());
    c.passed();
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. A node cut off during the failover
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_during_the_failover_refuses_writes_then_follows_the_new_primary() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = start(true).await?;
    let ids = c.ids();
    let old = c.pg.primary().name().to_owned();
    let old_port = c.pg.primary().port();
    let leader = c.leader().await?;
    let target = *ids.iter().find(|&&i| i != leader).expect("three members");
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
    let before = c.shard_view(leader, SHARD).await?;

    let stop = CancellationToken::new();
    let mut writers: Vec<Writer> = ids.iter().map(|&id| Writer::start(&c, id, &stop)).collect();
    let warm = Instant::now();
    wait_acked_since(&writers.iter().collect::<Vec<_>>(), warm, 10, Duration::from_secs(10)).await?;

    c.isolate(target)?;
    let cut = Instant::now();
    c.kill_pg(&old).await?;
    let view = c.wait_new_primary(&others, SHARD, &old, FAILOVER_WITHIN).await?;
    let shown_after = cut.elapsed();
    let new = view.primary.clone().context("a new primary")?;
    let new_port = c.pg_server(&new)?.port();
    let stale = c.shard_view(target, SHARD).await?;
    eprintln!(
        "m{target} cut off, then {old} killed: {new} primary (epoch {} -> {}) on m{others:?} {shown_after:?} after \
         the cut; cut-off m{target} still shows {stale:?}",
        before.epoch, view.epoch
    );
    ensure!(
        stale.epoch == before.epoch && stale.primary.as_deref() == Some(old.as_str()),
        "cut-off m{target} learned of the failover: {stale:?}"
    );

    // The old primary comes back (crash recovery), with no synchronous
    // standbys, so that a write sent to it would succeed: the cut-off node
    // still takes it for the primary. Only once that node's lease has
    // certainly run out: before, the failover relies on the old primary
    // needing a (stopped) synchronous standby for every commit, which this
    // reset takes away.
    tokio::time::sleep_until(cut + LEASE + Duration::from_millis(500)).await;
    let old_server = c.pg_server(&old)?;
    old_server.start().await?;
    old_server.execute("ALTER SYSTEM RESET synchronous_standby_names").await?;
    old_server.execute("SELECT pg_reload_conf()").await?;
    let old_back = Instant::now();
    let old_rows_back = ids_on(&c, &old).await?.len();
    let target_writer = writers.iter().find(|w| w.node == target).expect("a writer per node");
    // Two refusals that started once the old primary was back.
    let deadline = Instant::now() + 2 * HOLD + Duration::from_secs(10);
    loop {
        let refused = target_writer.failed().iter().filter(|f| f.kind == "40001" && f.started >= old_back).count();
        if refused >= 2 {
            break;
        }
        ensure!(Instant::now() < deadline, "cut-off m{target} did not refuse writes: {:?}", target_writer.failed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused_at_old_back = target_writer.failed().iter().filter(|f| f.started >= old_back).count();

    c.heal();
    let healed = Instant::now();
    let healed_view = c.wait_new_primary(&ids, SHARD, &old, FAILOVER_WITHIN).await?;
    let learned_after = healed.elapsed();
    let target_writer = writers.iter().find(|w| w.node == target).expect("a writer per node");
    wait_acked_since(&[target_writer], healed, 10, Duration::from_secs(20))
        .await
        .with_context(|| format!("writes through m{target} after the heal"))?;
    let heal_settled = Instant::now();
    stop_all(&stop, &mut writers).await?;
    let old_rows_end = ids_on(&c, &old).await?.len();
    // What the heal cost the others (the healed member rejoining may
    // disturb the leader).
    let heal_gaps: Vec<String> = writers
        .iter()
        .filter(|w| w.node != target)
        .map(|w| format!("m{}: {:?}", w.node, w.longest_gap_within(healed, heal_settled)))
        .collect();

    eprintln!(
        "healed: m{target} shows {healed_view:?} {learned_after:?} after the heal; {refused_at_old_back} writes \
         through it failed while the old primary was back; longest gap between the others' acks after the heal \
         {heal_gaps:?}"
    );
    report(&writers, cut);
    let target_writer = writers.iter().find(|w| w.node == target).expect("a writer per node");
    let since_cut = |t: Instant| t.saturating_duration_since(cut);
    let timeline: Vec<String> = target_writer
        .failed()
        .iter()
        .filter(|f| f.at >= cut && f.started < healed)
        .map(|f| format!("{} {:?}..{:?}", f.kind, since_cut(f.started), since_cut(f.at)))
        .collect();
    let last_ack = target_writer.acked().iter().rev().find(|a| a.at < healed).map(|a| since_cut(a.at));
    eprintln!(
        "  m{target}'s writer while cut off (since the cut): last ack before the heal {last_ack:?}; failures          {timeline:?}; old primary back {:?}, healed {:?}",
        since_cut(old_back),
        since_cut(healed)
    );
    // While cut off, past its lease, the node sent no write anywhere:
    // it acknowledged nothing then, and its failures then were refusals.
    // (A write held when the cut is healed goes on to the new primary,
    // checked below with the writes after the heal.)
    let dark_from = cut + LEASE + Duration::from_millis(300);
    let acked_dark: Vec<Ack> =
        target_writer.acked().into_iter().filter(|a| a.at >= dark_from && a.at < healed).collect();
    ensure!(acked_dark.is_empty(), "cut-off m{target} acknowledged writes after its lease: {acked_dark:?}");
    // Reconnects that failed (id 0) sent no write; they are counted apart.
    let (reconnects_dark, failed_dark): (Vec<Failure>, Vec<Failure>) =
        target_writer.failed().into_iter().filter(|f| f.started >= dark_from && f.at < healed).partition(|f| f.id == 0);
    let first_refusal = failed_dark.iter().find(|f| f.kind == "40001").map(|f| f.at.duration_since(cut));
    let other_dark: Vec<&Failure> = failed_dark.iter().filter(|f| f.kind != "40001").collect();
    eprintln!(
        "  cut-off m{target}: {} writes failed past its lease ({} refused with 40001, first refusal {first_refusal:?} \
         after the cut; lease {LEASE:?}, hold {HOLD:?}); others {other_dark:?}; {} reconnects failed",
        failed_dark.len(),
        failed_dark.len() - other_dark.len(),
        reconnects_dark.len()
    );
    ensure!(other_dark.is_empty(), "cut-off m{target} failed writes with something else than 40001: {other_dark:?}");
    ensure!(first_refusal.is_some(), "cut-off m{target} never refused a write");
    let dark_ids: Vec<i64> = failed_dark.iter().map(|f| f.id).collect();
    for server in [&old, &new] {
        let present = ids_on(&c, server).await?;
        let landed: Vec<i64> = dark_ids.iter().copied().filter(|id| present.contains(id)).collect();
        ensure!(landed.is_empty(), "writes m{target} refused while cut off are on {server}: {landed:?}");
    }
    ensure!(
        old_rows_end == old_rows_back,
        "the old primary {old} took {} rows after it came back",
        old_rows_end as i64 - old_rows_back as i64
    );
    // After the heal it writes to the new primary only (a write held
    // across the heal included).
    let after_heal: Vec<Ack> = target_writer.acked().into_iter().filter(|a| a.at >= healed).collect();
    let held_across = after_heal.iter().filter(|a| a.started < healed).count();
    let elsewhere: Vec<&Ack> = after_heal.iter().filter(|a| a.port != new_port).collect();
    eprintln!(
        "  after the heal m{target} had {} writes acknowledged ({held_across} held across the heal), {} by {new} \
         (port {new_port}; old {old_port})",
        after_heal.len(),
        after_heal.len() - elsewhere.len()
    );
    ensure!(elsewhere.is_empty(), "m{target} wrote elsewhere than {new} after the heal: {elsewhere:?}");
    let (acked, lost) = lost_on(&c, &new, &writers).await?;
    eprintln!("  {acked} writes acknowledged, {} missing on {new}", lost.len());
    ensure!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let bad = unexpected_failures(&writers);
    ensure!(bad.is_empty(), "unexpected client errors: {bad:?}");
    check_agreement(&c, &ids, &old, &healed_view, before.epoch).await?;
    check_event(&c, target, &new).await?;
    eprintln!("test took {:?}", test_start.elapsed());
    c.passed();
    Ok(())
}
