//! Drills (DESIGN §8): a real fault, or a real switchover, under a small
//! write load that the drill measures itself, ending in a report judged
//! against the shard's `rto_target` and `rpo_target`.
//!
//! The load is a [`Writer`]: one client of this very node, connected to
//! its client listener like an application (the `[health]` user with its
//! backend password, `SET meridian.shard` to the drilled shard), inserting
//! one numbered row into `meridian_drill` every [`WRITE_EVERY`] and noting
//! which inserts were acknowledged and when. From that:
//!
//! - **RTO** is the longest gap between two acknowledged inserts around the
//!   fault: what an application writing to the shard saw;
//! - **RPO** is the acknowledged inserts missing on the new primary
//!   afterwards (commits), the age of the oldest one at the fault (time),
//!   and the failover's WAL estimate (bytes).
//!
//! `DRILL FAILOVER SHARD s` kills the primary with SIGKILL (it must be
//! `[[managed]]` by this node) and lets the automatic failover act; once
//! writes are back it rejoins the old primary as a replica, so the shard
//! is at full strength for the next drill. `DRILL SWITCHOVER SHARD s` runs
//! [`super::switchover`] under the load.

use std::sync::Arc;
use std::time::Duration;

use consensus::state::{Outcome, Phase, Report, ReportKind};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ops::ControlError;
use super::steps::{self, Login, Timeline, now_ms};
use crate::cluster::Cluster;
use crate::node::Shared;

/// How often the drill's writer inserts.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Acknowledged writes needed before the fault: the path works.
pub(super) const WARM_UP_WRITES: usize = 10;
/// How long writes may take to come back after the fault before the drill
/// gives up (the report then fails).
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// Writing goes on this long after the first write on the new primary.
pub(super) const COOL_DOWN: Duration = Duration::from_millis(500);

/// `DRILL FAILOVER SHARD shard`.
pub(super) async fn failover(
    cluster: &Cluster,
    shared: &Shared,
    shard: &str,
    stop: &CancellationToken,
) -> Result<Report, ControlError> {
    let state = cluster.state();
    let s = state.shards.get(shard).cloned().ok_or_else(|| ControlError::Unknown(format!("unknown shard {shard}")))?;
    let config = shared.config.load();
    if !config.cluster.as_ref().is_some_and(|c| c.auto_failover) {
        return Err(ControlError::Refused(
            "cluster.auto_failover is off: a killed primary would not be replaced; turn it on for the drill".into(),
        ));
    }
    let old = s
        .primary
        .clone()
        .filter(|_| !s.fenced)
        .ok_or_else(|| ControlError::Refused(format!("shard {shard} has no writable primary")))?;
    let local = steps::managed(shared, &old).ok_or_else(|| {
        ControlError::Refused(format!(
            "DRILL FAILOVER kills the primary {old} for real: run it on the Meridian node whose config lists {old} \
             under [[managed]] (same host as its data directory)"
        ))
    })?;
    drop(config);
    let login = Login::of(shared)?;
    let mut timeline = Timeline::default();
    let mut report = Report::new(ReportKind::DrillFailover, Some(shard), Some(&s.policy));
    report.old_primary = Some(old.clone());

    let writer = Writer::start(shared, &login, shard, stop).await?;
    writer.wait_for(WARM_UP_WRITES, Duration::from_secs(10)).await.map_err(ControlError::Refused)?;
    timeline.mark("warm_up");

    let killed = local.kill().await.map_err(|e| ControlError::Failed(format!("killing {old}: {e}")))?;
    let fault_at = timeline.mark("fault");
    tracing::warn!(shard, node = %old, pid = ?killed.pid, "drill: primary killed");

    // Writes come back once some node committed a new primary and this
    // node's writer got an insert through.
    let deadline = Instant::now() + RECOVERY_LIMIT;
    let mut rx = cluster.subscribe();
    let new_primary = loop {
        let st = rx.borrow_and_update().clone();
        let current = st.shards.get(shard).filter(|x| !x.fenced && x.epoch > s.epoch).and_then(|x| x.primary.clone());
        if let Some(p) = current
            && writer.acked_after(fault_at)
        {
            break Some(p);
        }
        if Instant::now() >= deadline || stop.is_cancelled() {
            break None;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    };
    let Some(new_primary) = new_primary else {
        let result = writer.stop().await;
        report.outcome = Outcome::Stopped;
        report.writes = Some(result.acked.len() as u64);
        report.rto_ms = None;
        report.detail = format!(
            "writes did not come back within {} s of killing {old} (SHOW FAILOVERS and SHOW EVENTS say why)",
            RECOVERY_LIMIT.as_secs()
        );
        report.phases = timeline.0;
        let stored = steps::record(cluster, report).await?;
        return Err(ControlError::Failed(format!("report {}: {}", stored.id, stored.detail)));
    };
    let back_at = writer.first_ack_after(fault_at).unwrap_or_else(now_ms);
    timeline.mark_at("writes_back", back_at);
    tokio::time::sleep(COOL_DOWN).await;
    let result = writer.stop().await;

    // The failover's own report: the leader records it after its probe
    // commit, which may come a moment after our first write.
    let failover_report = wait_report(cluster, shard, s.epoch, Duration::from_secs(5)).await;
    let state = cluster.state();
    let primary = state.nodes.get(&new_primary).cloned();
    let lost = match &primary {
        Some(p) => missing(&login, &p.address, result.drill, &result.acked).await,
        None => Err("the new primary is not a known node".into()),
    };
    report.new_primary = Some(new_primary.clone());
    report.epoch = state.shards.get(shard).map_or(0, |x| x.epoch);
    report.writes = Some(result.acked.len() as u64);
    report.rto_ms = Some(result.longest_gap_around(fault_at));
    report.rpo_bytes = failover_report.as_ref().and_then(|r| r.rpo_bytes);
    let mut lost_note = String::new();
    match &lost {
        Ok(lost) => {
            report.rpo_commits = Some(lost.len() as u64);
            report.rpo_ms = Some(lost.iter().map(|(_, at)| fault_at.saturating_sub(*at)).max().unwrap_or(0));
        }
        Err(e) => lost_note = format!("; lost writes not counted: {e}"),
    }
    if let Some(f) = &failover_report {
        report.related.push(f.id);
        for p in &f.phases {
            timeline.0.push(Phase { name: format!("failover:{}", p.name), at: p.at });
        }
    }

    // Back to full strength: the old primary follows the new one.
    let rejoin_note = match primary.as_ref() {
        Some(p) => match super::rejoin::rejoin_if_managed(cluster, shared, &login, &old, p).await {
            Ok(Some(_)) => {
                timeline.mark("rejoin");
                format!("; {old} rejoined as a replica")
            }
            Ok(None) => format!("; {old} stays fenced until REJOIN NODE {old}"),
            Err(e) => format!("; {old} could not rejoin ({e})"),
        },
        None => String::new(),
    };
    timeline.0.sort_by_key(|p| p.at);
    report.phases = timeline.0;
    report.detail = format!(
        "killed {old} (SIGKILL); {new_primary} took over; {} writes acknowledged, {} lost, {} errors seen by the \
         writer{lost_note}{rejoin_note}",
        result.acked.len(),
        report.rpo_commits.map_or("?".into(), |n| n.to_string()),
        result.errors
    );
    steps::record(cluster, report).await
}

/// `DRILL SWITCHOVER SHARD shard`.
pub(super) async fn switchover(
    cluster: &Cluster,
    shared: &Shared,
    write_lease: Duration,
    shard: &str,
    stop: &CancellationToken,
) -> Result<Report, ControlError> {
    let s = cluster
        .state()
        .shards
        .get(shard)
        .cloned()
        .ok_or_else(|| ControlError::Unknown(format!("unknown shard {shard}")))?;
    let login = Login::of(shared)?;
    let mut timeline = Timeline::default();
    let mut report = Report::new(ReportKind::DrillSwitchover, Some(shard), Some(&s.policy));
    report.old_primary = s.primary.clone();
    let writer = Writer::start(shared, &login, shard, stop).await?;
    writer.wait_for(WARM_UP_WRITES, Duration::from_secs(10)).await.map_err(ControlError::Refused)?;
    let fault_at = timeline.mark("warm_up");
    let switched = super::switchover::run(cluster, shared, write_lease, shard, None, ReportKind::Switchover).await;
    tokio::time::sleep(COOL_DOWN).await;
    let result = writer.stop().await;
    let switched = match switched {
        Ok(r) => r,
        Err(e) => {
            report.outcome = Outcome::Aborted;
            report.writes = Some(result.acked.len() as u64);
            report.detail = format!("the switchover did not happen: {e}; {} writer errors", result.errors);
            report.phases = timeline.0;
            let stored = steps::record(cluster, report).await?;
            return Err(ControlError::Refused(format!("report {}: {}", stored.id, stored.detail)));
        }
    };
    let new_primary = switched.new_primary.clone().unwrap_or_default();
    let lost = match cluster.state().nodes.get(&new_primary) {
        Some(p) => missing(&login, &p.address, result.drill, &result.acked).await,
        None => Err("the new primary is not a known node".into()),
    };
    for p in &switched.phases {
        timeline.0.push(Phase { name: format!("switchover:{}", p.name), at: p.at });
    }
    timeline.0.sort_by_key(|p| p.at);
    report.related.push(switched.id);
    report.new_primary = Some(new_primary.clone());
    report.epoch = switched.epoch;
    report.writes = Some(result.acked.len() as u64);
    report.rto_ms = Some(result.longest_gap_around(fault_at));
    report.rpo_bytes = Some(0);
    if let Ok(lost) = &lost {
        report.rpo_commits = Some(lost.len() as u64);
        report.rpo_ms = Some(lost.iter().map(|(_, at)| now_ms().saturating_sub(*at)).max().unwrap_or(0));
    }
    report.phases = timeline.0;
    report.detail = format!(
        "{} → {new_primary}; {} writes acknowledged, {} lost, {} errors seen by the writer (a switchover should show \
         none)",
        switched.old_primary.unwrap_or_default(),
        result.acked.len(),
        report.rpo_commits.map_or("?".into(), |n| n.to_string()),
        result.errors
    );
    if let Some(first) = result.first_error {
        report.detail.push_str(&format!("; first error: {first}"));
    }
    steps::record(cluster, report).await
}

/// The newest report of a failover of `shard` above `epoch`, once recorded.
async fn wait_report(cluster: &Cluster, shard: &str, epoch: u64, within: Duration) -> Option<Report> {
    let deadline = Instant::now() + within;
    loop {
        let found = cluster
            .state()
            .reports
            .iter()
            .rev()
            .find(|r| r.kind == ReportKind::Failover && r.shard.as_deref() == Some(shard) && r.epoch > epoch)
            .cloned();
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The acknowledged writes (seq, when) that `address` does not have.
pub(super) async fn missing(
    login: &Login,
    address: &str,
    drill: i64,
    acked: &[(i64, u64)],
) -> Result<Vec<(i64, u64)>, String> {
    let t = login.target(address);
    let (host, port) = address.rsplit_once(':').ok_or("bad address")?;
    let mut config = tokio_postgres::Config::new();
    config.host(host).port(port.parse().map_err(|_| "bad port")?).user(&t.user).dbname(&t.database);
    if let Some(p) = &t.password {
        config.password(p);
    }
    config.connect_timeout(t.timeout);
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let rows =
        client.query("SELECT seq FROM meridian_drill WHERE drill = $1", &[&drill]).await.map_err(|e| e.to_string());
    drop(client);
    let _ = conn.await;
    let present: std::collections::HashSet<i64> = rows?.iter().map(|r| r.get(0)).collect();
    Ok(acked.iter().filter(|(seq, _)| !present.contains(seq)).copied().collect())
}

/// What the writer saw.
#[derive(Debug, Default)]
struct Seen {
    /// (seq, acknowledged at, Unix ms), in order.
    acked: Vec<(i64, u64)>,
    errors: usize,
    first_error: Option<String>,
}

/// The drill's write load: see the module docs.
pub(super) struct Writer {
    drill: i64,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// What a stopped writer measured.
pub(super) struct WriterResult {
    pub(super) drill: i64,
    pub(super) acked: Vec<(i64, u64)>,
    pub(super) errors: usize,
    pub(super) first_error: Option<String>,
}

impl WriterResult {
    /// The longest gap between two acknowledged writes, counting only gaps
    /// that end after `from` (the fault), in milliseconds.
    pub(super) fn longest_gap_around(&self, from: u64) -> u64 {
        self.acked.windows(2).filter(|w| w[1].1 >= from).map(|w| w[1].1 - w[0].1).max().unwrap_or(0)
    }
}

impl Writer {
    /// Connect through this node's client listener, make the table, and
    /// start inserting.
    pub(super) async fn start(
        shared: &Shared,
        login: &Login,
        shard: &str,
        stop: &CancellationToken,
    ) -> Result<Writer, ControlError> {
        let mut config = tokio_postgres::Config::new();
        let addr = shared.client_addr;
        let host = if addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { addr.ip().to_string() };
        config
            .host(&host)
            .port(addr.port())
            .user(&login.user)
            .dbname(&shared.config.load().health.database)
            .application_name("meridian-drill")
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = &login.password {
            config.password(p);
        }
        let setup = format!(
            "SET meridian.shard = '{}'; CREATE TABLE IF NOT EXISTS meridian_drill (drill bigint NOT NULL, seq bigint \
             NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), PRIMARY KEY (drill, seq))",
            shard.replace('\'', "''")
        );
        let first = connect(&config, &setup).await.map_err(|e| {
            ControlError::Refused(format!(
                "the drill's writer cannot write through this node as the [health] user: {e} (it connects to {addr} \
                 like an application, with the user's backend password)"
            ))
        })?;
        let drill = now_ms() as i64;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = stop.child_token();
        let task = tokio::spawn(write_loop(config, setup, first, drill, seen.clone(), stop.clone()));
        Ok(Writer { drill, seen, stop, task })
    }

    pub(super) async fn wait_for(&self, writes: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        while self.seen.lock().acked.len() < writes {
            if Instant::now() >= deadline {
                let seen = self.seen.lock();
                return Err(format!(
                    "the drill's writer got {} of {writes} warm-up writes through in {within:?} (first error: {})",
                    seen.acked.len(),
                    seen.first_error.clone().unwrap_or_default()
                ));
            }
            tokio::time::sleep(WRITE_EVERY).await;
        }
        Ok(())
    }

    pub(super) fn acked_after(&self, at: u64) -> bool {
        self.seen.lock().acked.last().is_some_and(|(_, t)| *t > at)
    }

    pub(super) fn first_ack_after(&self, at: u64) -> Option<u64> {
        self.seen.lock().acked.iter().map(|(_, t)| *t).find(|t| *t > at)
    }

    pub(super) async fn stop(self) -> WriterResult {
        self.stop.cancel();
        let _ = self.task.await;
        let seen = std::mem::take(&mut *self.seen.lock());
        WriterResult { drill: self.drill, acked: seen.acked, errors: seen.errors, first_error: seen.first_error }
    }
}

async fn connect(
    config: &tokio_postgres::Config,
    setup: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.batch_execute(setup).await?;
    Ok(client)
}

async fn write_loop(
    config: tokio_postgres::Config,
    setup: String,
    first: tokio_postgres::Client,
    drill: i64,
    seen: Arc<Mutex<Seen>>,
    stop: CancellationToken,
) {
    let mut client = Some(first);
    let mut seq: i64 = 0;
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // cancel safety: tick() and cancelled() are cancel safe.
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let c = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => match connect(&config, &setup).await {
                Ok(c) => c,
                Err(e) => {
                    note_error(&seen, &e);
                    continue;
                }
            },
        };
        seq += 1;
        let sql = format!("INSERT INTO meridian_drill (drill, seq) VALUES ({drill}, {seq})");
        // A write in flight when the drill ends is not counted either way.
        let result = tokio::select! {
            r = c.simple_query(&sql) => r,
            _ = stop.cancelled() => return,
        };
        match result {
            Ok(_) => seen.lock().acked.push((seq, now_ms())),
            Err(e) => note_error(&seen, &e),
        }
        client = Some(c);
    }
}

fn note_error(seen: &Mutex<Seen>, e: &tokio_postgres::Error) {
    let mut seen = seen.lock();
    seen.errors += 1;
    if seen.first_error.is_none() {
        let code = e.code().map_or("no SQLSTATE".to_owned(), |c| c.code().to_owned());
        seen.first_error =
            Some(format!("{code}: {}", e.as_db_error().map_or(e.to_string(), |d| d.message().to_owned())));
    }
}
