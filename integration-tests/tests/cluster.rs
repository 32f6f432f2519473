//! Issue 3 at the process level: clusters of `meridian serve` processes
//! (three Raft members unless said otherwise) in front of one PostgreSQL
//! primary and one streaming replica, driven through the admin console and
//! the application port of each node.
//!
//! - a change made on any node is visible on every node within 1 s;
//! - the leader killed (`kill -9`): a new leader, admin and app writes work;
//! - a node killed and restarted with its data dir catches up from its log;
//! - a node cut off from the others by the Raft relays (follower, then
//!   leader) refuses writes with 40001 once its lease is gone, still serves
//!   reads, the others go on writing, and it recovers when healed;
//! - membership 3 → 5 → 3 under a light write load;
//! - the whole cluster stopped and restarted in a random (seeded) order.
//!
//! Run: `cargo test -p integration-tests --test cluster -- --test-threads=1`
//! (each test runs up to five Meridian processes and two PostgreSQL
//! servers; on two cores one test at a time keeps the timings honest).
//! `MERIDIAN_TEST_SEED=<n>` replays a restart order. They fail, not skip,
//! without PostgreSQL's binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use integration_tests::PATIENCE;
use integration_tests::cluster::{
    ClusterSpec, MeridianCluster, PROBE_TABLE, Rows, change, col, describe, insert, member_views, names, node_banned,
    rows,
};
use integration_tests::sqlstate;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How soon every node must show a change made on any of them.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// What a change should make visible, and where to look.
enum Expect<'a> {
    Banned(&'a str, bool),
    Shard(&'a str),
}

impl Expect<'_> {
    fn query(&self) -> &'static str {
        match self {
            Expect::Banned(..) => "SHOW NODES",
            Expect::Shard(_) => "SHOW SHARDS",
        }
    }

    fn holds(&self, rows: &Rows) -> anyhow::Result<bool> {
        match self {
            Expect::Banned(node, banned) => Ok(node_banned(rows, node)? == *banned),
            Expect::Shard(name) => Ok(names(rows).contains(*name)),
        }
    }
}

/// Admin connections to `ids`, opened before anything is timed.
async fn admins(c: &MeridianCluster, ids: &[u64]) -> anyhow::Result<BTreeMap<u64, tokio_postgres::Client>> {
    let mut out = BTreeMap::new();
    for &id in ids {
        out.insert(id, c.admin(id).await?);
    }
    Ok(out)
}

/// Poll every admin connection every 10 ms until `expect` holds there or
/// `limit` has passed since `since`: when each node first showed it.
async fn visible_on(
    admins: &BTreeMap<u64, tokio_postgres::Client>,
    expect: &Expect<'_>,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<BTreeMap<u64, Duration>> {
    let mut seen = BTreeMap::new();
    while seen.len() < admins.len() && since.elapsed() < limit {
        for (id, admin) in admins {
            if seen.contains_key(id) {
                continue;
            }
            if expect.holds(&rows(admin, expect.query()).await?)? {
                seen.insert(*id, since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(seen)
}

/// Run a change through member `id` until it succeeds (retrying while there
/// is no leader), or until `done` says a previous attempt took effect
/// after all (its answer lost with a leader).
async fn change_eventually(c: &MeridianCluster, id: u64, sql: &str, done: &Expect<'_>) -> anyhow::Result<u64> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match c.change(id, sql).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if let Ok(rows) = c.show(id, done.query()).await
            && done.holds(&rows).unwrap_or(false)
        {
            return Ok(0);
        }
        if Instant::now() > deadline {
            bail!("{sql} on m{id} never succeeded: {last:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `expect` holds on member `id`; how long it took.
async fn wait_shows(c: &MeridianCluster, id: u64, expect: &Expect<'_>) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let last = match c.show(id, expect.query()).await {
            Ok(rows) => match expect.holds(&rows) {
                Ok(true) => return Ok(started.elapsed()),
                Ok(false) => format!("{rows:?}"),
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("{e:#}"),
        };
        if started.elapsed() > PATIENCE {
            bail!("m{id}: {} never showed the change (last: {last})", expect.query());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `n` writes in a row through one connection to member `id`, all of
/// which must succeed.
async fn writes_in_a_row(c: &MeridianCluster, id: u64, n: usize, note: &str) -> anyhow::Result<()> {
    let app = c.app(id).await?;
    for i in 0..n {
        insert(&app, id, note).await.with_context(|| format!("write {i} of {n} through m{id}"))?;
    }
    Ok(())
}

/// Rows of `SHOW AUDIT` on `id` whose actor is the bootstrap (one per
/// change the seed topology expanded to).
async fn bootstraps_in_audit(c: &MeridianCluster, id: u64) -> anyhow::Result<usize> {
    let audit = c.show(id, "SHOW AUDIT").await?;
    let mut n = 0;
    for row in &audit {
        if col(row, "actor")? == "bootstrap" {
            n += 1;
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_any_node_is_visible_on_every_node_within_a_second() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = MeridianCluster::start(ClusterSpec::default()).await?;
    let ids = c.ids();
    let leader = c.wait_leader(&ids).await?;
    let followers: Vec<u64> = ids.iter().copied().filter(|&i| i != leader).collect();
    let replica = c.replica_name();
    let admins = admins(&c, &ids).await?;
    eprintln!("cluster up in {:?}, leader m{leader}", test_start.elapsed());

    let steps = [
        (followers[0], format!("BAN NODE \"{replica}\""), Expect::Banned(&replica, true)),
        (followers[1], format!("UNBAN NODE \"{replica}\""), Expect::Banned(&replica, false)),
        (leader, "CREATE SHARD extra".to_owned(), Expect::Shard("extra")),
    ];
    let mut worst = Duration::ZERO;
    for (origin, sql, expect) in &steps {
        let t0 = Instant::now();
        let version = change(&admins[origin], sql).await.with_context(|| format!("{sql} on m{origin}"))?;
        let acked = t0.elapsed();
        let seen = visible_on(&admins, expect, t0, VISIBLE_WITHIN * 5).await?;
        eprintln!("{sql} on m{origin} (version {version}): answered in {acked:?}; visible at {seen:?}");
        ensure!(seen.len() == ids.len(), "{sql} on m{origin} not visible everywhere after 5 s: only {seen:?}");
        worst = worst.max(seen.values().copied().max().unwrap_or_default());
    }
    eprintln!("slowest change visible on all nodes after {worst:?}; test took {:?}", test_start.elapsed());
    ensure!(worst < VISIBLE_WITHIN, "a change took {worst:?} to reach every node (limit {VISIBLE_WITHIN:?})");
    c.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_writes_work_again() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = MeridianCluster::start(ClusterSpec::default()).await?;
    let ids = c.ids();
    let old = c.wait_leader(&ids).await?;
    let term_before = c.cluster_view(old).await?.iter().map(|v| v.term).max().unwrap_or(0);

    c.kill(old).await?;
    let killed = Instant::now();
    let survivors: Vec<u64> = ids.iter().copied().filter(|&i| i != old).collect();
    let new = c.wait_leader(&survivors).await?;
    let elected = killed.elapsed();
    eprintln!("killed leader m{old} (term {term_before}); survivors agree on m{new} after {elected:?}");
    ensure!(new != old);
    ensure!(elected < Duration::from_secs(10), "a new leader took {elected:?}");
    for &s in &survivors {
        let view = c.cluster_view(s).await?;
        let leaders: Vec<u64> = view.iter().filter(|v| v.leader).map(|v| v.id).collect();
        ensure!(leaders == [new], "m{s} sees leaders {leaders:?}, expected [m{new}]: {view:?}");
        let me = view.iter().find(|v| v.is_self).with_context(|| format!("no self row on m{s}: {view:?}"))?;
        ensure!(me.term > term_before, "m{s} still in term {} (was {term_before})", me.term);
    }

    // An admin write through the survivor that is not the leader (it is
    // forwarded), then through the leader.
    let follower = *survivors.iter().find(|&&s| s != new).expect("two survivors");
    let t = Instant::now();
    let shard = Expect::Shard("after_failover");
    let version = change_eventually(&c, follower, "CREATE SHARD after_failover", &shard).await?;
    let admin_after = killed.elapsed();
    eprintln!(
        "admin write through m{follower} done (version {version}) {admin_after:?} after the kill ({:?})",
        t.elapsed()
    );
    for &s in &survivors {
        wait_shows(&c, s, &shard).await?;
    }
    let replica = c.replica_name();
    change_eventually(&c, new, &format!("BAN NODE \"{replica}\""), &Expect::Banned(&replica, true)).await?;

    for &s in &survivors {
        let waited = c.wait_writable(s).await?;
        writes_in_a_row(&c, s, 10, "after-kill").await?;
        eprintln!("app writes through m{s} work {:?} after the kill (waited {waited:?})", killed.elapsed());
    }
    eprintln!("test took {:?}", test_start.elapsed());
    c.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_catches_up_from_its_own_log() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = MeridianCluster::start(ClusterSpec::default()).await?;
    let ids = c.ids();
    // Member 1 is the one that initialised the group: the one that would
    // initialise it again if it forgot its log.
    let victim = 1;
    ensure!(c.log_of_last_start(victim).contains("initialising the raft group"), "m1 did not initialise the group");
    c.wait_leader(&ids).await?;

    let bootstraps_before = bootstraps_in_audit(&c, victim).await?;
    c.kill(victim).await?;
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != victim).collect();
    c.wait_leader(&others).await?;
    let replica = c.replica_name();
    let shard = Expect::Shard("while_down");
    let banned = Expect::Banned(&replica, true);
    change_eventually(&c, others[0], "CREATE SHARD while_down", &shard).await?;
    change_eventually(&c, others[1], &format!("BAN NODE \"{replica}\""), &banned).await?;
    let applied_elsewhere = c.cluster_view(others[0]).await?;

    let t0 = Instant::now();
    c.restart(victim).await?;
    let listening = t0.elapsed();
    wait_shows(&c, victim, &shard).await?;
    let shard_after = t0.elapsed();
    wait_shows(&c, victim, &banned).await?;
    let ban_after = t0.elapsed();
    eprintln!(
        "m{victim} restarted: listening after {listening:?}, shows the new shard after {shard_after:?}, \
         the ban after {ban_after:?}"
    );
    let log = c.log_of_last_start(victim);
    ensure!(log.contains("raft member restarted from its log"), "m{victim} did not restart from its log:\n{log}");
    ensure!(!log.contains("initialising the raft group"), "m{victim} initialised the group again:\n{log}");
    ensure!(!log.contains("waiting to be contacted"), "m{victim} came back empty:\n{log}");
    let n = bootstraps_in_audit(&c, victim).await?;
    ensure!(n == bootstraps_before, "m{victim}'s audit log has {n} bootstrap entries, {bootstraps_before} before");

    // It is a voter again, following the same leader, caught up with it.
    let leader = c.wait_leader(&ids).await?;
    let before = applied_elsewhere.iter().find(|v| v.is_self).map_or(0, |v| v.applied_index);
    let view = c.cluster_view(victim).await?;
    let me = view.iter().find(|v| v.is_self).with_context(|| format!("no self row: {view:?}"))?;
    ensure!(me.voter, "m{victim} is not a voter: {view:?}");
    ensure!(me.applied_index >= before, "m{victim} applied {} < {before}", me.applied_index);
    c.wait_writable(victim).await?;
    eprintln!(
        "leader m{leader}; m{victim} writable {:?} after restart; test took {:?}",
        t0.elapsed(),
        test_start.elapsed()
    );
    c.passed();
    Ok(())
}

/// What a write load saw.
#[derive(Default)]
struct LoadStats {
    ok: AtomicU64,
    refused: AtomicU64,
    other: Mutex<Vec<String>>,
    /// The longest a write took, in milliseconds (held writes included).
    slowest_ms: AtomicU64,
}

/// Insert a row through `config` every 25 ms until `stop`, reconnecting
/// after a lost connection.
async fn load(config: tokio_postgres::Config, node: u64, stop: CancellationToken, stats: Arc<LoadStats>) {
    let mut client: Option<tokio_postgres::Client> = None;
    while !stop.is_cancelled() {
        let c = match &client {
            Some(c) if !c.is_closed() => c,
            _ => match integration_tests::cluster::connect(&config).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    stats.other.lock().push(format!("m{node}: connect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        let t = Instant::now();
        let r = insert(c, node, "load").await;
        stats.slowest_ms.fetch_max(t.elapsed().as_millis() as u64, Ordering::Relaxed);
        match r {
            Ok(()) => {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if sqlstate(&e) == Some("40001") => {
                stats.refused.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => stats.other.lock().push(format!("m{node}: {e:?}")),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Cut `which` off from the other two members; see the two tests below.
async fn cut_off(leader_too: bool) -> anyhow::Result<()> {
    let test_start = Instant::now();
    let spec = ClusterSpec { relays: true, ..ClusterSpec::default() };
    let (lease, hold) = (spec.write_lease, spec.write_hold);
    let mut c = MeridianCluster::start(spec).await?;
    let ids = c.ids();
    let leader = c.wait_leader(&ids).await?;
    let target = if leader_too { leader } else { *ids.iter().find(|&&i| i != leader).expect("three members") };
    let others: Vec<u64> = ids.iter().copied().filter(|&i| i != target).collect();
    let target_app = c.app(target).await?;
    insert(&target_app, target, "before-cut").await?;

    // A light write load through the other two for the whole cut.
    let stop = CancellationToken::new();
    let others_load = Arc::new(LoadStats::default());
    let mut loads = Vec::new();
    for &o in &others {
        loads.push(tokio::spawn(load(c.app_config(o), o, stop.clone(), others_load.clone())));
    }

    c.isolate(target)?;
    let cut = Instant::now();
    // Writes through the cut-off node: fine while its lease lasts, then
    // held and refused with 40001. None that starts after the lease can
    // have run out may succeed.
    let mut late_ok = Vec::new();
    let refused_after = loop {
        let started = cut.elapsed();
        match insert(&target_app, target, "during-cut").await {
            Ok(()) if started > lease + Duration::from_millis(500) => late_ok.push(started),
            Ok(()) => {}
            Err(e) if sqlstate(&e) == Some("40001") => break cut.elapsed(),
            Err(e) => bail!("a write through cut-off m{target} failed with something else than 40001: {e:?}"),
        }
        ensure!(
            cut.elapsed() < lease + hold + Duration::from_secs(5),
            "m{target} still took writes {:?} after the cut",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("cut-off m{target} (leader: {leader_too}) refused a write with 40001 {refused_after:?} after the cut");
    // Each kind of write, now that the lease is gone: refused after the
    // hold, once (not once per protocol message).
    let t = Instant::now();
    let simple =
        target_app.simple_query(&format!("INSERT INTO {PROBE_TABLE} (node, note) VALUES ({target}, 'simple')")).await;
    let simple_after = t.elapsed();
    let t = Instant::now();
    let extended = insert(&target_app, target, "extended").await;
    let extended_after = t.elapsed();
    eprintln!(
        "on cut-off m{target}: simple-protocol write refused after {simple_after:?} ({:?}), extended-protocol write \
         after {extended_after:?} ({:?}); hold {hold:?}",
        simple.as_ref().err().map(describe),
        extended.as_ref().err().map(describe)
    );
    ensure!(late_ok.is_empty(), "writes started at {late_ok:?} after the cut succeeded on m{target} (lease {lease:?})");
    // Timing violations, reported together at the end so that one run
    // shows every number.
    let mut slow = Vec::new();
    for (what, r, after) in [("simple", simple.map(|_| ()), simple_after), ("extended", extended, extended_after)] {
        match r {
            Err(e) if sqlstate(&e) == Some("40001") => {}
            other => bail!("{what}-protocol write on cut-off m{target}: {other:?}"),
        }
        if after > hold + Duration::from_secs(1) {
            slow.push(format!("a {what}-protocol write was refused only after {after:?} (hold {hold:?})"));
        }
    }
    if refused_after > lease + hold + Duration::from_secs(2) {
        slow.push(format!("the first refusal came {refused_after:?} after the cut (lease {lease:?}, hold {hold:?})"));
    }
    let count: i64 = target_app.query_one(&format!("SELECT count(*) FROM {PROBE_TABLE}"), &[]).await?.get(0);
    eprintln!("a read through cut-off m{target} still works ({count} rows)");
    if let Ok(view) = c.cluster_view(target).await {
        let me = view.iter().find(|v| v.is_self).with_context(|| format!("no self row: {view:?}"))?;
        ensure!(!me.lease_valid, "m{target} says its lease is valid while cut off: {view:?}");
    }
    match c.http_get(target, "/readyz").await {
        Ok((status, _)) => {
            eprintln!("/readyz on cut-off m{target}: {status}");
            ensure!(status != 200, "/readyz is 200 on cut-off m{target}");
        }
        Err(e) => eprintln!("/readyz not available on m{target}: {e:#}"),
    }

    // The other two went on (after electing a new leader if they lost theirs).
    let new_leader = c.wait_leader(&others).await?;
    stop.cancel();
    for l in loads {
        l.await?;
    }
    let (ok, refused) = (others_load.ok.load(Ordering::Relaxed), others_load.refused.load(Ordering::Relaxed));
    let slowest = Duration::from_millis(others_load.slowest_ms.load(Ordering::Relaxed));
    let other = others_load.other.lock().clone();
    eprintln!(
        "load through m{others:?} during the cut: {ok} ok, {refused} refused (40001), slowest write {slowest:?}, \
         other errors {other:?}; leader now m{new_leader}"
    );
    ensure!(other.is_empty(), "the others' load saw errors other than 40001: {other:?}");
    ensure!(ok > 20, "the others took only {ok} writes during the cut");
    for &o in &others {
        writes_in_a_row(&c, o, 5, "others-during-cut").await?;
    }
    // Still cut off, still refusing.
    match target_app.simple_query(&format!("INSERT INTO {PROBE_TABLE} (node, note) VALUES ({target}, 'still')")).await {
        Err(e) if sqlstate(&e) == Some("40001") => {}
        other => bail!("cut-off m{target} answered a write with {other:?}"),
    }

    c.heal();
    let healed = Instant::now();
    let waited = c.wait_writable(target).await?;
    writes_in_a_row(&c, target, 5, "after-heal").await?;
    let leader_after = c.wait_leader(&ids).await?;
    eprintln!(
        "healed: m{target} takes writes again after {waited:?}; leader m{leader_after}; relayed connections \
         (total, opened by a member) {:?}; test took {:?}",
        c.relay_stats(),
        test_start.elapsed()
    );
    ensure!(healed.elapsed() < PATIENCE);
    ensure!(slow.is_empty(), "too slow: {}", slow.join("; "));
    c.passed();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_follower_stops_writes_until_healed() -> anyhow::Result<()> {
    cut_off(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_leader_stops_writes_until_healed() -> anyhow::Result<()> {
    cut_off(true).await
}

/// Wait until `SHOW CLUSTER` on every member of `on` lists exactly `want`,
/// all voters.
async fn wait_members(c: &MeridianCluster, on: &[u64], want: &[u64]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let want: BTreeSet<u64> = want.iter().copied().collect();
    loop {
        let mut last = String::new();
        let mut all = true;
        for &id in on {
            match c.cluster_view(id).await {
                Ok(view) => {
                    let voters: BTreeSet<u64> = view.iter().filter(|v| v.voter).map(|v| v.id).collect();
                    let listed: BTreeSet<u64> = view.iter().map(|v| v.id).collect();
                    if voters != want || listed != want {
                        all = false;
                        last = format!("m{id} lists {listed:?}, voters {voters:?}");
                    }
                }
                Err(e) => {
                    all = false;
                    last = format!("m{id}: {e:#}");
                }
            }
        }
        if all {
            return Ok(started.elapsed());
        }
        if started.elapsed() > PATIENCE {
            bail!("members never became {want:?} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_to_five_and_back_to_three_under_load() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let mut c = MeridianCluster::start(ClusterSpec::default()).await?;
    let initial = c.ids();
    c.wait_leader(&initial).await?;
    let stop = CancellationToken::new();
    let stats = Arc::new(LoadStats::default());
    let mut loads = Vec::new();
    for &id in &initial {
        loads.push(tokio::spawn(load(c.app_config(id), id, stop.clone(), stats.clone())));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let j4 = c.start_joiner().await?;
    let j5 = c.start_joiner().await?;
    for j in [j4, j5] {
        let waited = Instant::now();
        while !c.log_of_last_start(j).contains("waiting to be contacted") {
            ensure!(
                waited.elapsed() < Duration::from_secs(10),
                "m{j} did not wait to be added:\n{}",
                c.log_of_last_start(j)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let t = Instant::now();
    for (j, via) in [(j4, initial[1]), (j5, initial[2])] {
        let m = c.member(j);
        let sql = format!(
            "ADD MEMBER {j} '{}' REGION '{}' NAME '{}' CLIENT '{}'",
            m.raft_addr, m.region, m.name, m.client_addr
        );
        let version = c.change(via, &sql).await?;
        eprintln!("{sql} through m{via}: version {version} after {:?}", t.elapsed());
    }
    let all: Vec<u64> = c.ids();
    let grown = wait_members(&c, &all, &all).await?;
    eprintln!("all five list five voters {:?} after the first ADD MEMBER", t.elapsed());
    let joiner_stats = Arc::new(LoadStats::default());
    let joiner_stop = CancellationToken::new();
    let mut joiner_loads = Vec::new();
    for j in [j4, j5] {
        let waited = c.wait_writable(j).await?;
        eprintln!("m{j} takes writes (waited {waited:?})");
        wait_shows(&c, j, &Expect::Shard("s1")).await?;
        joiner_loads.push(tokio::spawn(load(c.app_config(j), j, joiner_stop.clone(), joiner_stats.clone())));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    joiner_stop.cancel();
    for l in joiner_loads {
        l.await?;
    }

    let t = Instant::now();
    for (j, via) in [(j5, initial[2]), (j4, initial[0])] {
        let version = c.change(via, &format!("REMOVE MEMBER {j}")).await?;
        eprintln!("REMOVE MEMBER {j} through m{via}: version {version} after {:?}", t.elapsed());
    }
    let shrunk = wait_members(&c, &initial, &initial).await?;
    let leader = c.wait_leader(&initial).await?;
    eprintln!("back to three voters {:?} after the first REMOVE MEMBER; leader m{leader}", t.elapsed());
    // A removed member is outside the quorum: fencing commits no longer
    // reach it, so it must stop routing writes once its lease runs out.
    let removed = Instant::now();
    let limit = c.spec.write_lease + c.spec.write_hold + Duration::from_secs(3);
    let mut removed_writes = 0;
    let after_removal = loop {
        let started = removed.elapsed();
        match c.write(j4, "removed").await {
            Ok(()) => removed_writes += 1,
            Err(e) => break Some((started, e)),
        }
        if removed.elapsed() > limit {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    match &after_removal {
        Some((at, e)) => {
            eprintln!("removed m{j4}: {removed_writes} writes taken, then a write started at {at:?} failed: {e}")
        }
        None => eprintln!("removed m{j4} still takes writes {limit:?} after its removal ({removed_writes} taken)"),
    }
    c.stop(j4).await?;
    c.stop(j5).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    for l in loads {
        l.await?;
    }

    let (ok, refused) = (stats.ok.load(Ordering::Relaxed), stats.refused.load(Ordering::Relaxed));
    let (jok, jrefused) = (joiner_stats.ok.load(Ordering::Relaxed), joiner_stats.refused.load(Ordering::Relaxed));
    let other = stats.other.lock().clone();
    let jother = joiner_stats.other.lock().clone();
    eprintln!(
        "load through m1..m3: {ok} ok, {refused} refused (40001), {} other; through the joiners: {jok} ok, \
         {jrefused} refused, {} other; grown in {grown:?}, shrunk in {shrunk:?}; test took {:?}",
        other.len(),
        jother.len(),
        test_start.elapsed()
    );
    ensure!(other.is_empty(), "the load saw errors other than 40001: {other:?}");
    ensure!(jother.is_empty(), "the load through the joiners saw errors other than 40001: {jother:?}");
    ensure!(ok > 50, "the load barely ran: {ok} writes");
    ensure!(jok > 0, "no write went through the joiners");
    match after_removal {
        Some((_, e)) if e.sqlstate() == Some("40001") => {}
        Some((_, e)) => bail!("removed m{j4} failed a write with something else than 40001: {e}"),
        None => bail!("removed m{j4} still routed writes {limit:?} after its removal"),
    }
    let stored = c.count_notes("load").await?;
    ensure!(stored == (ok + jok) as i64, "{} writes acknowledged, {stored} stored", ok + jok);
    let view = member_views(&c.show(initial[0], "SHOW CLUSTER").await?)?;
    ensure!(view.iter().filter(|v| v.voter).count() == 3, "final SHOW CLUSTER: {view:?}");
    c.passed();
    Ok(())
}

/// A small seeded generator (SplitMix64), so a failing order can be
/// replayed with `MERIDIAN_TEST_SEED`.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_restarts_in_random_order_with_its_topology() -> anyhow::Result<()> {
    let test_start = Instant::now();
    let seed = match std::env::var("MERIDIAN_TEST_SEED") {
        Ok(s) => s.parse().context("MERIDIAN_TEST_SEED")?,
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos() as u64,
    };
    eprintln!("MERIDIAN_TEST_SEED={seed}");
    let mut rng = SplitMix(seed);
    let mut c = MeridianCluster::start(ClusterSpec::default()).await?;
    let ids = c.ids();
    let leader = c.wait_leader(&ids).await?;
    let follower = *ids.iter().find(|&&i| i != leader).expect("three members");
    let replica = c.replica_name();
    let shard = Expect::Shard("before_stop");
    let banned = Expect::Banned(&replica, true);
    c.change(follower, "CREATE SHARD before_stop").await?;
    c.change(leader, &format!("BAN NODE \"{replica}\"")).await?;
    for &id in &ids {
        wait_shows(&c, id, &shard).await?;
        wait_shows(&c, id, &banned).await?;
    }

    let bootstraps_before = bootstraps_in_audit(&c, leader).await?;
    let mut order = ids.clone();
    rng.shuffle(&mut order);
    let mut how = Vec::new();
    for &id in &order {
        if rng.below(2) == 0 {
            let clean = c.stop(id).await?;
            how.push(format!("m{id} SIGTERM{}", if clean { "" } else { " (then SIGKILL)" }));
        } else {
            c.kill(id).await?;
            how.push(format!("m{id} SIGKILL"));
        }
    }
    eprintln!("stopped: {}", how.join(", "));
    rng.shuffle(&mut order);
    let mut plan = Vec::new();
    let t0 = Instant::now();
    for &id in &order {
        let pause = Duration::from_millis(rng.below(800));
        tokio::time::sleep(pause).await;
        c.restart(id).await?;
        plan.push(format!("m{id} after +{pause:?}"));
    }
    eprintln!("restarted in order: {}", plan.join(", "));

    let leader = c.wait_leader(&ids).await?;
    let elected = t0.elapsed();
    for &id in &ids {
        c.wait_writable(id).await?;
    }
    let writable = t0.elapsed();
    for &id in &ids {
        ensure!(wait_shows(&c, id, &shard).await? < PATIENCE);
        ensure!(wait_shows(&c, id, &banned).await? < PATIENCE);
        let view = c.cluster_view(id).await?;
        let voters: BTreeSet<u64> = view.iter().filter(|v| v.voter).map(|v| v.id).collect();
        ensure!(voters == ids.iter().copied().collect(), "m{id} lists voters {voters:?}");
        let log = c.log_of_last_start(id);
        ensure!(log.contains("raft member restarted from its log"), "m{id} did not restart from its log:\n{log}");
        ensure!(!log.contains("initialising the raft group"), "m{id} initialised the group again:\n{log}");
    }
    let n = bootstraps_in_audit(&c, leader).await?;
    ensure!(n == bootstraps_before, "the audit log has {n} bootstrap entries, {bootstraps_before} before the stop");
    c.change(leader, "CREATE SHARD after_restart").await?;
    for &id in &ids {
        writes_in_a_row(&c, id, 5, "after-restart").await?;
    }
    eprintln!(
        "after the restart: leader m{leader} agreed at {elected:?}, all writable at {writable:?}; test took {:?}",
        test_start.elapsed()
    );
    c.passed();
    Ok(())
}
