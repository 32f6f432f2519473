//! The admin console without PostgreSQL: views and EXPLAIN ROUTE over a
//! hand-made snapshot, then the console end to end over TCP with
//! tokio-postgres (the console never talks to a server, so the topology's
//! addresses need not exist).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use router::lsn::Lsn;
use tokio::time::Instant;
use tokio_postgres::SimpleQueryMessage;

use super::command::Topic;
use super::counters::RouteCounters;
use super::explain::explain;
use super::views::{ResultSet, Snapshot};
use crate::clients::{ClientInfo, ClientMode, ClientState, Clients};
use crate::config::Config;
use crate::health::{Health, Probe};
use crate::pool::{Pool, PoolKey};
use crate::session::route::AnalysisCache;

/// Two shards in two regions; `owners` sharded by `owner_id`.
const CONFIG: &str = r#"
    [node]
    name = "m1"
    region = "eu"
    [listen]
    address = "127.0.0.1:0"
    [auth]
    users_file = "users.toml"
    [topology]
    [[topology.shard]]
    name = "s1"
    [[topology.shard]]
    name = "s2"
    [[topology.node]]
    name = "s1-a"
    address = "127.0.0.1:1"
    shard = "s1"
    region = "eu"
    role = "primary"
    [[topology.node]]
    name = "s1-b"
    address = "127.0.0.1:2"
    shard = "s1"
    region = "us"
    role = "replica"
    [[topology.node]]
    name = "s1-c"
    address = "127.0.0.1:3"
    shard = "s1"
    region = "eu"
    role = "replica"
    [[topology.node]]
    name = "s2-a"
    address = "127.0.0.1:4"
    shard = "s2"
    region = "us"
    role = "primary"
    [[topology.node]]
    name = "s2-b"
    address = "127.0.0.1:5"
    shard = "s2"
    region = "eu"
    role = "replica"
    [[topology.table]]
    name = "owners"
    column = "owner_id"
    type = "int"
    hash = ["s1", "s2"]
"#;

fn config() -> Config {
    Config::parse(CONFIG, Path::new(".")).expect("test config")
}

struct Fixture {
    config: Arc<Config>,
    health: Health,
    clients: Arc<Clients>,
    routes: RouteCounters,
    analyses: AnalysisCache,
    pools: Vec<Arc<Pool>>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            config: Arc::new(config()),
            health: Health::default(),
            clients: Arc::new(Clients::default()),
            routes: RouteCounters::default(),
            analyses: AnalysisCache::default(),
            pools: Vec::new(),
        }
    }

    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            topology: Arc::new(self.config.topology.clone()),
            state: None,
            status: None,
            config: self.config.clone(),
            users: Arc::default(),
            health: &self.health,
            pools: self.pools.clone(),
            clients: self.clients.list(),
            routes: &self.routes,
            analyses: &self.analyses,
            uptime: Duration::from_secs(42),
            now: Instant::now(),
        }
    }

    /// Record a probe of `name`: up with `lsn` (a replica when `replica`),
    /// with round trip `rtt_ms`.
    fn probe(&self, name: &str, replica: bool, lsn: u64, rtt_ms: u64) {
        let n = self.config.topology.nodes.iter().find(|n| n.name == name).expect("node");
        let st = self.health.status(&n.name, &n.address);
        st.probe.store(Arc::new(Probe {
            at: Some(Instant::now()),
            reachable: true,
            in_recovery: replica,
            lsn: Some(Lsn(lsn)),
            receive_lsn: replica.then_some(Lsn(lsn)),
            replay_age: None,
            replay_paused: false,
            error: None,
        }));
        st.record_rtt(Duration::from_millis(rtt_ms));
        st.probes.fetch_add(1, Ordering::Relaxed);
    }

    fn probe_failed(&self, name: &str) {
        let n = self.config.topology.nodes.iter().find(|n| n.name == name).expect("node");
        let st = self.health.status(&n.name, &n.address);
        st.probe.store(Arc::new(Probe {
            at: Some(Instant::now()),
            error: Some("connection refused".into()),
            ..Probe::default()
        }));
        st.probes.fetch_add(1, Ordering::Relaxed);
        st.probe_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Every server up; the nearest replica of s1 is s1-c (eu, 1 ms).
    fn all_up(&self) {
        self.probe("s1-a", false, 1000, 2);
        self.probe("s1-b", true, 1000, 80);
        self.probe("s1-c", true, 1000, 1);
        self.probe("s2-a", false, 500, 90);
        self.probe("s2-b", true, 500, 3);
    }
}

fn row<'a>(rs: &'a ResultSet, key: &str) -> Vec<Option<&'a str>> {
    let r = rs.rows.iter().find(|r| r[0].as_deref() == Some(key)).unwrap_or_else(|| panic!("no row {key}: {rs:?}"));
    r.iter().map(Option::as_deref).collect()
}

fn cell<'a>(rs: &'a ResultSet, key: &str, column: &str) -> Option<&'a str> {
    let i = rs.columns.iter().position(|c| *c == column).unwrap_or_else(|| panic!("no column {column}"));
    row(rs, key)[i]
}

#[test]
fn shards_show_primaries_replicas_and_regions() {
    let f = Fixture::new();
    let rs = f.snapshot().show(Topic::Shards);
    assert_eq!(
        rs.columns,
        [
            "name",
            "epoch",
            "primary",
            "primary_region",
            "replicas",
            "default",
            "fenced",
            "paused",
            "durability",
            "max_lag_on_failover",
            "rto_target",
            "rpo_target"
        ]
    );
    assert_eq!(
        row(&rs, "s1")[..6],
        [Some("s1"), Some("1"), Some("s1-a"), Some("eu"), Some("s1-b (us), s1-c (eu)"), Some("t")]
    );
    assert_eq!(row(&rs, "s2")[..6], [Some("s2"), Some("1"), Some("s2-a"), Some("us"), Some("s2-b (eu)"), Some("f")]);
    // Without a cluster there are no replicated facts.
    assert!(row(&rs, "s1")[6..].iter().all(Option::is_none));
}

#[test]
fn standalone_cluster_views_answer_from_what_exists() {
    let f = Fixture::new();
    let snap = f.snapshot();
    assert!(snap.show(Topic::Cluster).rows.is_empty());
    assert!(snap.show(Topic::Events).rows.is_empty());
    assert!(snap.show(Topic::Audit).rows.is_empty());
    let rs = snap.show(Topic::Failovers);
    assert!(rs.rows.is_empty());
    assert_eq!(rs.columns, super::reports::FAILOVER_COLUMNS);
    let rs = snap.show(Topic::Drills);
    assert!(rs.rows.is_empty());
    assert_eq!(rs.columns, super::reports::DRILL_COLUMNS);
    assert_eq!(snap.report(0), Err(super::AdminError::UnknownReport(0)));
    let rs = snap.show(Topic::Regions);
    assert_eq!(row(&rs, "eu"), [Some("eu"), Some("3"), Some("s1, s2"), Some("s1-a")]);
    assert_eq!(row(&rs, "us"), [Some("us"), Some("2"), Some("s1, s2"), Some("s2-a")]);
    let rs = snap.show(Topic::Tables);
    assert_eq!(
        row(&rs, "owners"),
        [Some("owners"), Some("owner_id"), Some("int"), Some("hash"), Some("s1, s2"), Some("HASH (s1, s2)")]
    );
    let rs = snap.show(Topic::Nodes);
    assert_eq!(cell(&rs, "s1-a", "banned"), None);
    assert_eq!(rs.columns.len(), 17);
}

#[test]
fn sqlstates_of_admin_errors() {
    use consensus::CommandError as E;
    use tokio_postgres::error::SqlState;

    use super::{AdminError, command_sqlstate};
    use crate::error::ClientError;

    let rejected = |e: E| AdminError::Rejected(e).sqlstate();
    assert_eq!(rejected(E::UnknownShard("s".into())), SqlState::UNDEFINED_OBJECT);
    assert_eq!(rejected(E::UnknownNode("n".into())), SqlState::UNDEFINED_OBJECT);
    assert_eq!(rejected(E::UnknownRegion("r".into())), SqlState::UNDEFINED_OBJECT);
    assert_eq!(rejected(E::UnknownTable("t".into())), SqlState::UNDEFINED_OBJECT);
    assert_eq!(rejected(E::UnknownUser("u".into())), SqlState::UNDEFINED_OBJECT);
    assert_eq!(rejected(E::InvalidUser { user: "u".into(), reason: "r".into() }), SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(rejected(E::ShardExists("s".into())), SqlState::DUPLICATE_OBJECT);
    assert_eq!(rejected(E::NodeExists("n".into())), SqlState::DUPLICATE_OBJECT);
    assert_eq!(rejected(E::AddressInUse { address: "h:1".into(), node: "n".into() }), SqlState::DUPLICATE_OBJECT);
    assert_eq!(rejected(E::TableAlreadySharded("t".into())), SqlState::DUPLICATE_OBJECT);
    assert_eq!(rejected(E::ShardHasNodes { shard: "s".into(), node: "n".into() }), SqlState::OBJECT_IN_USE);
    assert_eq!(rejected(E::ShardHasTables { shard: "s".into(), table: "t".into() }), SqlState::OBJECT_IN_USE);
    assert_eq!(rejected(E::RegionInUse { region: "r".into(), node: "n".into() }), SqlState::OBJECT_IN_USE);
    assert_eq!(rejected(E::ShardIsDefault("s".into())), SqlState::OBJECT_IN_USE);
    assert_eq!(rejected(E::NodeIsPrimary { node: "n".into(), shard: "s".into() }), SqlState::OBJECT_IN_USE);
    assert_eq!(
        rejected(E::ShardHasPrimary { shard: "s".into(), primary: "n".into() }),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    assert_eq!(rejected(E::NodeFenced("n".into())), SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert_eq!(
        rejected(E::InvalidName { kind: "shard".into(), name: "".into(), reason: "empty".into() }),
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        rejected(E::InvalidAddress { node: "n".into(), address: "x".into() }),
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(rejected(E::InvalidPolicy { shard: "s".into(), reason: "r".into() }), SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(
        rejected(E::InvalidShardMap { table: "t".into(), reason: "r".into() }),
        SqlState::INVALID_PARAMETER_VALUE
    );
    assert_eq!(
        rejected(E::StaleEpoch { shard: "s".into(), epoch: 1, current: 2 }),
        SqlState::T_R_SERIALIZATION_FAILURE
    );
    let nested = E::InvalidBootstrap { index: 3, change: "x".into(), source: Box::new(E::UnknownShard("s".into())) };
    assert_eq!(command_sqlstate(&nested), SqlState::UNDEFINED_OBJECT);

    assert_eq!(AdminError::NotClustered("CREATE SHARD").sqlstate(), SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert!(AdminError::NotClustered("CREATE SHARD").hint().is_some_and(|h| h.contains("[cluster]")));
    assert_eq!(AdminError::NoLeader.sqlstate(), SqlState::CANNOT_CONNECT_NOW);
    assert!(AdminError::NoLeader.hint().is_some_and(|h| h.contains("retry")));
    assert_eq!(AdminError::OutcomeUnknown("DROP SHARD").sqlstate(), SqlState::TRANSACTION_RESOLUTION_UNKNOWN);
    assert!(AdminError::OutcomeUnknown("DROP SHARD").hint().is_some_and(|h| h.contains("SHOW AUDIT")));
    assert_eq!(AdminError::ShuttingDown.sqlstate(), SqlState::ADMIN_SHUTDOWN);
    assert_eq!(AdminError::Syntax("x".into()).sqlstate(), SqlState::SYNTAX_ERROR);
    assert_eq!(AdminError::InvalidValue("x".into()).sqlstate(), SqlState::INVALID_PARAMETER_VALUE);
    assert_eq!(AdminError::Reload("x".into()).sqlstate(), SqlState::CONFIG_FILE_ERROR);
    assert_eq!(AdminError::NoConfigFile.sqlstate(), SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert_eq!(AdminError::UnknownMember(9).sqlstate(), SqlState::UNDEFINED_OBJECT);
    assert_eq!(AdminError::MemberExists(1).sqlstate(), SqlState::DUPLICATE_OBJECT);
    let not_leader = AdminError::NotLeader { leader: Some("10.0.0.1:6432".into()) };
    assert_eq!(not_leader.sqlstate(), SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert!(not_leader.hint().is_some_and(|h| h.contains("10.0.0.1:6432")));
    // Propose and membership errors map onto those.
    assert_eq!(
        AdminError::from_propose(consensus::ProposeError::NoLeader, "PAUSE").sqlstate(),
        SqlState::CANNOT_CONNECT_NOW
    );
    assert_eq!(
        AdminError::from_propose(consensus::ProposeError::OutcomeUnknown("lost".into()), "PAUSE").sqlstate(),
        SqlState::TRANSACTION_RESOLUTION_UNKNOWN
    );
    assert_eq!(
        AdminError::from_propose(consensus::ProposeError::ShuttingDown, "PAUSE").sqlstate(),
        SqlState::ADMIN_SHUTDOWN
    );
    assert_eq!(
        AdminError::from_request(consensus::RequestError::Unreachable("x".into()), "ADD MEMBER").sqlstate(),
        SqlState::TRANSACTION_RESOLUTION_UNKNOWN
    );
    assert_eq!(
        AdminError::from_request(consensus::RequestError::Refused("busy".into()), "ADD MEMBER").sqlstate(),
        SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
    );
    assert_eq!(AdminError::UnknownReport(7).sqlstate(), SqlState::UNDEFINED_OBJECT);
    assert!(AdminError::UnknownReport(7).hint().is_some_and(|h| h.contains("SHOW DRILLS")));
}

#[test]
fn operations_keep_their_sqlstate_and_get_a_hint() {
    use consensus::{CommandError, ProposeError};
    use tokio_postgres::error::SqlState;

    use super::AdminError;
    use crate::control::ops::{ControlError, Drill, Operation};
    use crate::error::ClientError;

    let failover = Operation::Failover { shard: "s1".into(), to: None, force: false };
    let run = |e: ControlError, op: &Operation| {
        let tag = super::change::Action::Control(op.clone()).tag();
        let a = AdminError::from_control(e, op, tag);
        (a.sqlstate(), a.client_message(), a.hint().unwrap_or_default())
    };
    let (code, message, hint) = run(ControlError::Refused("would lose 3 MB".into()), &failover);
    assert_eq!((code, message.as_str()), (SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "would lose 3 MB"));
    assert!(hint.contains("FORCE accepts the loss"), "{hint}");
    let forced = Operation::Failover { shard: "s1".into(), to: None, force: true };
    assert!(!run(ControlError::Refused("x".into()), &forced).2.contains("FORCE accepts"));
    let rejoin = Operation::Rejoin { node: "pg1".into() };
    assert!(run(ControlError::Refused("x".into()), &rejoin).2.contains("[[managed]]"));
    let drill = Operation::Drill(Drill::Failover { shard: "s1".into() });
    assert!(run(ControlError::Refused("x".into()), &drill).2.contains("[[managed]]"));
    let (code, message, hint) = run(ControlError::Unknown("unknown shard nosuch".into()), &failover);
    assert_eq!((code, message.as_str()), (SqlState::UNDEFINED_OBJECT, "unknown shard nosuch"));
    assert!(hint.contains("SHOW SHARDS"));
    assert_eq!(run(ControlError::Busy("x".into()), &failover).0, SqlState::OBJECT_IN_USE);
    let stale = ProposeError::Rejected(CommandError::StaleEpoch { shard: "s1".into(), epoch: 3, current: 4 });
    let (code, message, _) = run(ControlError::Propose(stale), &failover);
    assert_eq!(code, SqlState::T_R_SERIALIZATION_FAILURE);
    assert!(message.starts_with("FAILOVER: "), "{message}");
    let (code, message, _) = run(ControlError::Propose(ProposeError::NoLeader), &drill);
    assert_eq!((code, message.as_str()), (SqlState::CANNOT_CONNECT_NOW, "DRILL: no raft leader is known"));
    let unknown = ControlError::Propose(ProposeError::OutcomeUnknown("lost".into()));
    assert_eq!(run(unknown, &rejoin).0, SqlState::TRANSACTION_RESOLUTION_UNKNOWN);
    assert_eq!(run(ControlError::Propose(ProposeError::ShuttingDown), &rejoin).0, SqlState::ADMIN_SHUTDOWN);
    let (code, message, hint) = run(ControlError::Failed("promote failed; the shard stays fenced".into()), &failover);
    assert_eq!((code, message.as_str()), (SqlState::SYSTEM_ERROR, "promote failed; the shard stays fenced"));
    assert!(hint.contains("state the shard was left in"));
}

#[test]
fn nodes_and_latency_follow_the_probes() {
    let f = Fixture::new();
    f.probe("s1-a", false, 5000, 2);
    f.probe("s1-b", true, 4000, 80);
    f.probe_failed("s2-a");
    let snap = f.snapshot();
    let rs = snap.show(Topic::Nodes);
    assert_eq!(cell(&rs, "s1-a", "state"), Some("up"));
    assert_eq!(cell(&rs, "s1-a", "in_recovery"), Some("f"));
    assert_eq!(cell(&rs, "s1-a", "lsn"), Some("0/1388"));
    assert_eq!(cell(&rs, "s1-a", "lag_bytes"), None);
    assert_eq!(cell(&rs, "s1-b", "role"), Some("replica"));
    assert_eq!(cell(&rs, "s1-b", "region"), Some("us"));
    assert_eq!(cell(&rs, "s1-b", "lag_bytes"), Some("1000"));
    assert_eq!(cell(&rs, "s1-b", "rtt_ms"), Some("80.00"));
    assert_eq!(cell(&rs, "s1-c", "state"), Some("unknown"));
    assert_eq!(cell(&rs, "s1-c", "last_probe_ms_ago"), None);
    assert_eq!(cell(&rs, "s2-a", "state"), Some("down"));
    assert_eq!(cell(&rs, "s2-a", "error"), Some("connection refused"));
    assert_eq!(cell(&rs, "s2-a", "in_recovery"), None);
    let rs = snap.show(Topic::Latency);
    assert_eq!(cell(&rs, "s1-b", "rtt_ms"), Some("80.00"));
    assert_eq!(cell(&rs, "s1-b", "shard"), Some("s1"));
    assert_eq!(cell(&rs, "s2-a", "probes"), Some("1"));
    assert_eq!(cell(&rs, "s2-a", "probe_failures"), Some("1"));
    assert_eq!(cell(&rs, "s2-a", "last_error"), Some("connection refused"));
    assert_eq!(cell(&rs, "s2-b", "rtt_ms"), None);
}

#[test]
fn pools_clients_servers_and_stats() {
    let mut f = Fixture::new();
    let pool_config = Arc::new(f.config.pool.clone());
    let key = |addr: &str| PoolKey { addr: addr.into(), database: "app".into(), user: "alice".into() };
    f.pools.push(Arc::new(Pool::new(key("127.0.0.1:1"), None, pool_config.clone())));
    f.pools.push(Arc::new(Pool::new(key("10.0.0.9:5432"), None, pool_config)));
    f.pools[0].stats.checkouts.fetch_add(3, Ordering::Relaxed);
    f.pools[0].stats.waits.fetch_add(2, Ordering::Relaxed);
    f.pools[0].stats.wait_micros.fetch_add(3000, Ordering::Relaxed);
    let info = |id, mode| ClientInfo {
        id,
        user: "alice".into(),
        database: "app".into(),
        peer: Some("10.1.1.1:5000".parse().unwrap()),
        tls: id == 2,
        mode,
    };
    let a = f.clients.register(info(1, ClientMode::Transaction));
    let b = f.clients.register(info(2, ClientMode::Admin));
    a.set_attached(Some("s1-a"));
    a.observe(false, b'T');
    b.set_state(ClientState::Active);
    let topology = f.config.topology.clone();
    f.routes.routed(&topology.nodes[0], false);
    f.routes.routed(&topology.nodes[2], false);
    f.routes.routed(&topology.nodes[2], false);
    f.routes.fanout();
    let snap = f.snapshot();

    let rs = snap.show(Topic::Pools);
    assert_eq!(row(&rs, "s1-a")[..5], [Some("s1-a"), Some("eu"), Some("127.0.0.1:1"), Some("app"), Some("alice")]);
    assert_eq!(cell(&rs, "s1-a", "checkouts"), Some("3"));
    assert_eq!(rs.rows.last().map(|r| (r[0].clone(), r[2].clone())), Some((None, Some("10.0.0.9:5432".into()))));

    let rs = snap.show(Topic::Clients);
    assert_eq!(cell(&rs, "1", "state"), Some("in transaction"));
    assert_eq!(cell(&rs, "1", "server"), Some("s1-a"));
    assert_eq!(cell(&rs, "1", "region"), Some("eu"));
    assert_eq!(cell(&rs, "1", "pool_mode"), Some("transaction"));
    assert_eq!(cell(&rs, "1", "address"), Some("10.1.1.1:5000"));
    assert_eq!(cell(&rs, "2", "state"), Some("active"));
    assert_eq!(cell(&rs, "2", "server"), None);
    assert_eq!(cell(&rs, "2", "tls"), Some("t"));
    assert_eq!(cell(&rs, "2", "pool_mode"), Some("admin"));
    assert!(cell(&rs, "2", "connected_at").is_some_and(|t| t.ends_with(" UTC")));

    let rs = snap.show(Topic::Servers);
    assert_eq!(rs.rows.len(), 6, "five nodes and one address no node has");
    assert_eq!(cell(&rs, "s1-a", "pools"), Some("1"));
    assert_eq!(cell(&rs, "s1-a", "clients"), Some("1"));
    assert_eq!(cell(&rs, "s2-b", "pools"), Some("0"));
    assert_eq!(cell(&rs, "s2-b", "shard"), Some("s2"));

    let rs = snap.show(Topic::Stats);
    let server = |name: &str, col: &str| {
        let i = rs.columns.iter().position(|c| *c == col).unwrap();
        rs.rows.iter().find(|r| r[1].as_deref() == Some(name)).and_then(|r| r[i].clone())
    };
    assert_eq!(server("s1-a", "routes_primary").as_deref(), Some("1"));
    assert_eq!(server("s1-c", "routes_replica").as_deref(), Some("2"));
    assert_eq!(server("s1-a", "avg_wait_ms").as_deref(), Some("1.50"));
    assert_eq!(server("s1-a", "clients").as_deref(), Some("1"));
    assert_eq!(server("m1", "routes_fanout").as_deref(), Some("1"));
    assert_eq!(server("m1", "routes_replica").as_deref(), Some("2"));
    assert_eq!(server("m1", "region").as_deref(), Some("eu"));
    assert_eq!(server("m1", "clients").as_deref(), Some("2"));
    assert_eq!(server("m1", "uptime_s").as_deref(), Some("42"));
    drop((a, b));
}

#[test]
fn version_config_and_help() {
    let f = Fixture::new();
    let snap = f.snapshot();
    let rs = snap.show(Topic::Version);
    assert_eq!(rs.rows[0][1..], [Some("m1".to_owned()), Some("eu".to_owned())]);
    assert!(rs.rows[0][0].as_deref().is_some_and(|v| v.starts_with("Meridian ")));
    let rs = snap.show(Topic::Config);
    assert_eq!(cell(&rs, "node.region", "value"), Some("eu"));
    assert_eq!(cell(&rs, "topology.default_shard", "value"), Some("s1"));
    assert_eq!(cell(&rs, "topology.max_replica_lag", "value"), Some("16MB"));
    assert!(rs.rows.iter().all(|r| !r[0].as_deref().unwrap_or_default().contains("password")));
    let rs = snap.show(Topic::Help);
    assert!(rs.rows.iter().any(|r| r[0].as_deref() == Some("EXPLAIN ROUTE <sql>")));
}

/// EXPLAIN ROUTE of `sql`: the rows as (action, shards, role, node, region, reason).
fn explained(f: &Fixture, sql: &str) -> Vec<[String; 6]> {
    let rs = explain(&f.snapshot(), sql);
    assert_eq!(rs.columns, ["statement", "class", "action", "shards", "role", "node", "region", "reason"]);
    rs.rows.iter().map(|r| std::array::from_fn(|i| r[i + 2].clone().unwrap_or_default())).collect()
}

#[test]
fn explain_route_decisions() {
    let f = Fixture::new();
    f.all_up();
    let s1_key = (1..100).find(|k| router::hash::hash_remainder(&router::key::KeyValue::Int(*k), 2) == 0).unwrap();

    let [r] = &explained(&f, &format!("SELECT * FROM owners WHERE owner_id = {s1_key}"))[..] else { panic!() };
    assert_eq!(r[..5], ["shard", "s1", "replica", "s1-c", "eu"]);
    assert!(r[5].contains("owners.owner_id key → s1") && r[5].contains("nearest fresh replica"), "{}", r[5]);

    let [r] = &explained(&f, &format!("UPDATE owners SET name = 'x' WHERE owner_id = {s1_key}"))[..] else { panic!() };
    assert_eq!(r[..5], ["shard", "s1", "primary", "s1-a", "eu"]);

    let [r] = &explained(&f, "SELECT count(*) FROM owners")[..] else { panic!() };
    assert_eq!(r[..5], ["fanout", "s1, s2", "replica, replica", "s1-c, s2-b", "eu, eu"]);

    let [r] = &explained(&f, "CREATE TABLE t (a int)")[..] else { panic!() };
    assert_eq!(r[..5], ["every primary", "s1, s2", "primary, primary", "s1-a, s2-a", "eu, us"]);

    let [r] = &explained(&f, "UPDATE owners SET name = 'x'")[..] else { panic!() };
    assert_eq!(r[..4], ["reject", "", "", ""]);
    assert!(r[5].contains("without its shard key") && r[5].ends_with("(0A000)"), "{}", r[5]);

    // Several statements: one row each, then the query as a whole.
    let rows = explained(&f, &format!("SELECT 1; SELECT * FROM owners WHERE owner_id = {s1_key}"));
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2][..4], ["shard", "s1", "replica", "s1-c"]);
    let rows = explained(&f, "SELECT count(*) FROM owners; UPDATE owners SET name = 'x' WHERE owner_id = 1");
    assert_eq!(rows[2][0], "reject");

    // Answered by the session itself.
    assert_eq!(explained(&f, "BEGIN")[0][0], "local");
    assert_eq!(explained(&f, "SET meridian.read_consistency = primary")[0][0], "local");
    // A comment hint counts; an unknown shard is refused.
    let [r] = &explained(&f, "/* meridian: shard=s2 */ SELECT 1")[..] else { panic!() };
    assert_eq!(r[..4], ["shard", "s2", "replica", "s2-b"]);
    let [r] = &explained(&f, "/* meridian: shard=s9 */ SELECT 1")[..] else { panic!() };
    assert_eq!(r[0], "reject");
    // Not understood: the default shard's primary.
    let [r] = &explained(&f, "FROBNICATE everything")[..] else { panic!() };
    assert_eq!(r[..4], ["shard", "s1", "primary", "s1-a"]);
}

#[test]
fn explain_without_replicas_says_why_the_primary() {
    let f = Fixture::new();
    // Nothing probed: no replica qualifies.
    let [r] = &explained(&f, "SELECT * FROM owners WHERE owner_id = 1")[..] else { panic!() };
    assert_eq!(r[2], "primary");
    assert!(r[5].contains("no replica qualifies (unhealthy)"), "{}", r[5]);
}

// ---------------------------------------------------------------------------
// End to end over TCP, no PostgreSQL needed.
// ---------------------------------------------------------------------------

struct Console {
    addr: std::net::SocketAddr,
    node: crate::NodeHandle,
    serve: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn console() -> Console {
    let dir = tempfile::tempdir().unwrap();
    let secret = crate::auth::make_secret("scram-sha-256".parse().unwrap(), "boss", "pw");
    std::fs::write(
        dir.path().join("users.toml"),
        format!(
            "[[user]]\nname = \"boss\"\nsecret = \"{secret}\"\nadmin = true\n\n\
             [[user]]\nname = \"app\"\nauth = \"trust\"\n"
        ),
    )
    .unwrap();
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, CONFIG).unwrap();
    let config = Config::load(&path).unwrap();
    let node = crate::Node::bind(config).await.unwrap();
    node.set_config_path(path);
    let addr = node.local_addr().unwrap();
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());
    Console { addr, node: handle, serve, _dir: dir }
}

fn client_config(c: &Console, user: &str) -> tokio_postgres::Config {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(c.addr.ip().to_string()).port(c.addr.port()).user(user).password("pw").dbname("meridian");
    cfg
}

async fn connect(c: &Console, user: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = client_config(c, user).connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn console_end_to_end() {
    let c = console().await;
    let admin = connect(&c, "boss").await.expect("admin login");
    for cmd in [
        "SHOW SHARDS",
        "SHOW NODES",
        "SHOW POOLS",
        "SHOW CLIENTS",
        "SHOW SERVERS",
        "SHOW STATS",
        "SHOW LATENCY",
        "SHOW VERSION",
        "SHOW CONFIG",
        "SHOW HELP",
        "HELP",
        "SHOW CLUSTER",
        "SHOW REGIONS",
        "SHOW TABLES",
        "SHOW EVENTS",
        "SHOW AUDIT",
    ] {
        admin.simple_query(cmd).await.unwrap_or_else(|e| panic!("{cmd}: {e}"));
    }
    // Several commands in one query string, case-insensitive, trailing `;`.
    let msgs = admin.simple_query("show version; show shards;").await.unwrap();
    let tags: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(tags, [1, 2]);
    // The console lists itself.
    let me = rows(&admin.simple_query("SHOW CLIENTS").await.unwrap());
    assert_eq!(me.len(), 1);
    assert_eq!(me[0][1].as_deref(), Some("boss"));
    assert_eq!(me[0][5].as_deref(), Some("active"));
    assert_eq!(me[0][9].as_deref(), Some("admin"));
    let r = rows(&admin.simple_query("EXPLAIN ROUTE CREATE TABLE x (a int)").await.unwrap());
    assert_eq!(r[0][2].as_deref(), Some("every primary"));
    // Empty query.
    let msgs = admin.simple_query(" ; ").await.unwrap();
    assert!(msgs.iter().all(|m| !matches!(m, SimpleQueryMessage::Row(_))));
    // Unknown command: 42601 naming it; the session goes on.
    let e = admin.simple_query("SHOW TABLESPACES").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42601");
    assert!(db.message().contains("SHOW TABLESPACES"), "{}", db.message());
    assert_eq!(db.hint(), Some(super::command::SEE_HELP));
    // Extended protocol: a clean 0A000; the session goes on.
    let e = admin.query("SHOW SHARDS", &[]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("0A000"));
    assert_eq!(rows(&admin.simple_query("SHOW SHARDS").await.unwrap()).len(), 2);

    // A topology change on a node without [cluster]: 55000, the hint names it.
    let e = admin.simple_query("CREATE SHARD s3").await.unwrap_err();
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "55000");
    assert!(db.hint().is_some_and(|h| h.contains("[cluster]")), "{:?}", db.hint());
    // A syntax error is still a syntax error there.
    let e = admin.simple_query("CREATE SHARD").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42601"));
    // So are the operations; no reports without a cluster.
    for sql in ["SWITCHOVER SHARD s1", "FAILOVER SHARD s1 FORCE", "REJOIN NODE \"s1-a\"", "DRILL REGION 'eu' OUTAGE"] {
        let e = admin.simple_query(sql).await.unwrap_err();
        let db = e.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "55000", "{sql}");
        assert!(db.hint().is_some_and(|h| h.contains("[cluster]")), "{sql}: {:?}", db.hint());
    }
    assert!(rows(&admin.simple_query("SHOW FAILOVERS").await.unwrap()).is_empty());
    assert!(rows(&admin.simple_query("SHOW DRILLS").await.unwrap()).is_empty());
    let e = admin.simple_query("SHOW DRILL 1").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("42704"));
    // RELOAD reads the file again: one row (NULL, 't') tagged RELOAD.
    let r = rows(&admin.simple_query("RELOAD").await.unwrap());
    assert_eq!(r, [vec![None, Some("t".to_owned())]]);
    // A broken file: F0000, nothing changes, the session goes on.
    std::fs::write(c._dir.path().join("meridian.toml"), "[node]\nname = ").unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("F0000"));
    assert_eq!(rows(&admin.simple_query("SHOW SHARDS").await.unwrap()).len(), 2);
    // The replicated views answer without a cluster.
    assert!(rows(&admin.simple_query("SHOW CLUSTER").await.unwrap()).is_empty());
    assert!(rows(&admin.simple_query("SHOW AUDIT").await.unwrap()).is_empty());
    assert_eq!(rows(&admin.simple_query("SHOW TABLES").await.unwrap()).len(), 1);

    // Not an admin: 42501 at login.
    let Err(e) = connect(&c, "app").await else { panic!("a non-admin got in") };
    assert_eq!(e.code().map(|c| c.code()), Some("42501"));
    // A wrong password is still a password failure.
    let mut cfg = client_config(&c, "boss");
    cfg.password("nope");
    let Err(e) = cfg.connect(tokio_postgres::NoTls).await else { panic!("a wrong password got in") };
    assert_eq!(e.code().map(|c| c.code()), Some("28P01"));

    // Shutdown ends the idle console with 57P01, and the node stops.
    c.node.shutdown();
    tokio::time::timeout(Duration::from_secs(10), c.serve).await.expect("node stopped").unwrap();
    assert!(admin.simple_query("SHOW SHARDS").await.is_err());
}
