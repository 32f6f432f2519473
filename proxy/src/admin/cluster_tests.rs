//! The admin console of a real one-member cluster, in process: the change
//! commands go through Raft and the views show what was committed. No
//! PostgreSQL is needed (the console never talks to a server; the probes of
//! the made-up addresses just fail).

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

use crate::config::Config;

struct ClusterConsole {
    node: crate::NodeHandle,
    serve: tokio::task::JoinHandle<()>,
    admin: Client,
    /// The admin client's own address, as the audit log records it.
    admin_addr: String,
    /// Where the node listens for clients.
    addr: std::net::SocketAddr,
    /// Where its Raft member listens.
    raft: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

/// A port free now (for the Raft listener, which takes an address, not a
/// listener).
fn free_port() -> u16 {
    harness::free_port().expect("a free port")
}

async fn start() -> ClusterConsole {
    let dir = tempfile::tempdir().unwrap();
    let secret = crate::auth::make_secret("scram-sha-256".parse().unwrap(), "boss", "pw");
    std::fs::write(
        dir.path().join("users.toml"),
        format!("[[user]]\nname = \"boss\"\nsecret = \"{secret}\"\nadmin = true\n"),
    )
    .unwrap();
    let raft = free_port();
    let config = format!(
        r#"
        [node]
        name = "m1"
        region = "eu"
        [listen]
        address = "127.0.0.1:0"
        [auth]
        users_file = "users.toml"
        [backend]
        address = "127.0.0.1:1"
        [cluster]
        member_id = 1
        raft_listen = "127.0.0.1:{raft}"
        data_dir = "raft"
        heartbeat_interval = "50ms"
        election_timeout = "300ms"
        write_lease = "500ms"
        [[cluster.peer]]
        id = 1
        name = "m1"
        region = "eu"
        raft_addr = "http://127.0.0.1:{raft}"
        client_addr = "127.0.0.1:6432"
        "#
    );
    let config = Config::parse(&config, dir.path()).expect("cluster config");
    let node = crate::Node::bind(config).await.expect("bind");
    let addr = node.local_addr().unwrap();
    let handle = node.handle();
    let serve = tokio::spawn(node.serve());
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(addr.ip().to_string()).port(addr.port()).user("boss").password("pw").dbname("meridian");
    let (admin, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("admin login");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // The console lists its own address.
    let me = table(&admin, "SHOW CLIENTS").await;
    let admin_addr = me[0]["address"].clone().expect("client address");
    let raft = std::net::SocketAddr::from(([127, 0, 0, 1], raft));
    ClusterConsole { node: handle, serve, admin, admin_addr, addr, raft, _dir: dir }
}

type Row = HashMap<String, Option<String>>;

/// The rows of one statement, by column name.
async fn table(c: &Client, sql: &str) -> Vec<Row> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                r.columns()
                    .iter()
                    .enumerate()
                    .map(|(i, col)| (col.name().to_owned(), r.get(i).map(str::to_owned)))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

fn find<'a>(rows: &'a [Row], column: &str, value: &str) -> &'a Row {
    rows.iter()
        .find(|r| r.get(column).and_then(|v| v.as_deref()) == Some(value))
        .unwrap_or_else(|| panic!("no row with {column} = {value}: {rows:?}"))
}

fn get<'a>(row: &'a Row, column: &str) -> Option<&'a str> {
    row.get(column).unwrap_or_else(|| panic!("no column {column}: {row:?}")).as_deref()
}

/// Run a change; its one row: (version, changed).
async fn change(c: &Client, sql: &str) -> (Option<String>, String) {
    let rows = table(c, sql).await;
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    (rows[0]["version"].clone(), rows[0]["changed"].clone().expect("changed"))
}

/// The SQLSTATE, message and hint of a failing statement.
async fn error(c: &Client, sql: &str) -> (String, String, Option<String>) {
    let e = c.simple_query(sql).await.err().unwrap_or_else(|| panic!("{sql} succeeded"));
    let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: not a server error: {e:?}"));
    (db.code().code().to_owned(), db.message().to_owned(), db.hint().map(str::to_owned))
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn changes_go_through_raft_and_show_up() {
    let c = start().await;
    let admin = &c.admin;

    // The config's [backend] seeds the new cluster once.
    eventually("the bootstrap", || async { table(admin, "SHOW SHARDS").await.len() == 1 }).await;
    eventually("a valid lease", || async {
        let rows = table(admin, "SHOW CLUSTER").await;
        rows.len() == 1 && get(&rows[0], "lease") == Some("valid")
    })
    .await;
    let rows = table(admin, "SHOW CLUSTER").await;
    let me = &rows[0];
    assert_eq!(
        [get(me, "id"), get(me, "name"), get(me, "region"), get(me, "voter"), get(me, "leader"), get(me, "self")],
        [Some("1"), Some("m1"), Some("eu"), Some("t"), Some("t"), Some("t")]
    );
    assert!(get(me, "raft_addr").is_some_and(|a| a.starts_with("http://127.0.0.1:")));
    assert_eq!(get(me, "role"), Some("leader"));
    assert!(get(me, "term").is_some() && get(me, "applied_index").is_some());
    let shards = table(admin, "SHOW SHARDS").await;
    let default = find(&shards, "name", "default");
    assert_eq!(get(default, "primary"), Some("primary"));
    assert_eq!(get(default, "durability"), Some("async"));
    assert_eq!(get(default, "fenced"), Some("f"));

    // CREATE SHARD with a policy; the name folds to lower case.
    let (version, changed) =
        change(admin, "CREATE SHARD S2 WITH (durability = 'sync', max_lag_on_failover = '1MB', rpo_target = '0s')")
            .await;
    assert_eq!(changed, "t");
    let v1: u64 = version.expect("a version").parse().unwrap();
    // The CommandComplete tag names the command.
    let msgs = admin.simple_query("ALTER SHARD s2 SET (rto_target = '5s')").await.unwrap();
    assert!(msgs.iter().any(|m| matches!(m, SimpleQueryMessage::CommandComplete(_))));
    let shards = table(admin, "SHOW SHARDS").await;
    let s2 = find(&shards, "name", "s2");
    assert_eq!(
        [get(s2, "durability"), get(s2, "max_lag_on_failover"), get(s2, "rto_target"), get(s2, "rpo_target")],
        [Some("sync"), Some("1MB"), Some("5s"), Some("0s")]
    );
    assert_eq!(get(s2, "primary"), None);
    assert_eq!(get(s2, "epoch"), Some("0"));
    let (code, msg, _) = error(admin, "CREATE SHARD s2").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42710", "shard s2 already exists"));
    let (code, _, _) = error(admin, "CREATE SHARD s9 WITH (durability = 'async', rpo_target = '0s')").await;
    assert_eq!(code, "22023", "RPO 0 needs sync");

    // Nodes.
    let (version, changed) =
        change(admin, "ADD NODE PG2 '127.0.0.1:2' TO SHARD s2 REGION 'us' AS PRIMARY PRIORITY 50").await;
    assert_eq!(changed, "t");
    assert!(version.expect("a version").parse::<u64>().unwrap() > v1);
    change(admin, "ADD NODE pg3 '127.0.0.1:3' TO SHARD s2 REGION 'us'").await;
    let (code, _, _) = error(admin, "ADD NODE pg4 '127.0.0.1:2' TO SHARD s2 REGION 'us'").await;
    assert_eq!(code, "42710", "address taken");
    let (code, msg, _) = error(admin, "ADD NODE pg4 '127.0.0.1:4' TO SHARD nope REGION 'us'").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42704", "unknown shard nope"));
    let (code, _, _) = error(admin, "ADD NODE pg4 'no-port' TO SHARD s2 REGION 'us'").await;
    assert_eq!(code, "22023");
    let nodes = table(admin, "SHOW NODES").await;
    let pg2 = find(&nodes, "name", "pg2");
    assert_eq!(
        [get(pg2, "shard"), get(pg2, "role"), get(pg2, "region"), get(pg2, "priority"), get(pg2, "banned")],
        [Some("s2"), Some("primary"), Some("us"), Some("50"), Some("f")]
    );
    assert_eq!(get(find(&nodes, "name", "pg3"), "priority"), Some("100"));
    assert_eq!(get(find(&table(admin, "SHOW SHARDS").await, "name", "s2"), "epoch"), Some("1"));

    // Ban: idempotent; refused for the primary; the banned node is still listed.
    assert_eq!(change(admin, "BAN NODE pg3").await.1, "t");
    assert_eq!(change(admin, "BAN NODE pg3").await.1, "f", "nothing to do the second time");
    let (code, _, _) = error(admin, "BAN NODE pg2").await;
    assert_eq!(code, "55006");
    let nodes = table(admin, "SHOW NODES").await;
    let pg3 = find(&nodes, "name", "pg3");
    assert_eq!([get(pg3, "banned"), get(pg3, "cluster_state"), get(pg3, "state")], [Some("t"), Some("up"), None]);
    // A change and a view in one query: the view sees the change.
    let msgs = admin.simple_query("UNBAN NODE pg3; SHOW NODES").await.unwrap();
    let banned: Vec<String> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) if r.try_get("name").ok().flatten() == Some("pg3") => {
                r.get("banned").map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    assert_eq!(banned, ["f"]);

    // Tables: default hash over every shard in name order; LIST; RANGE.
    change(admin, "SHARD TABLE Owners BY Owner_Id").await;
    change(admin, "SHARD TABLE app.events BY region TYPE text USING LIST (s2 VALUES ('us', 'ca'), DEFAULT default)")
        .await;
    change(admin, "SHARD TABLE ledger BY id USING RANGE (default TO 1000, s2 FROM 1000)").await;
    let (code, _, _) = error(admin, "SHARD TABLE owners BY id").await;
    assert_eq!(code, "42710");
    let (code, _, _) = error(admin, "SHARD TABLE t BY id USING HASH (s2, nope)").await;
    assert!(code == "42704" || code == "22023", "{code}");
    let tables = table(admin, "SHOW TABLES").await;
    let owners = find(&tables, "table", "owners");
    assert_eq!(
        [get(owners, "column"), get(owners, "type"), get(owners, "method"), get(owners, "map")],
        [Some("owner_id"), Some("int"), Some("hash"), Some("HASH (default, s2)")]
    );
    let events = find(&tables, "table", "app.events");
    assert_eq!(get(events, "map"), Some("LIST (s2 VALUES ('us', 'ca'), DEFAULT default)"));
    assert_eq!(get(events, "shards"), Some("s2, default"));
    assert_eq!(get(find(&tables, "table", "ledger"), "map"), Some("RANGE (default TO 1000, s2 FROM 1000)"));
    change(admin, "UNSHARD TABLE ledger").await;
    let (code, _, _) = error(admin, "UNSHARD TABLE ledger").await;
    assert_eq!(code, "42704");

    // In use: a shard with nodes and tables cannot go.
    let (code, _, _) = error(admin, "DROP SHARD s2").await;
    assert_eq!(code, "55006");

    // Pause and resume, one shard and everything.
    change(admin, "PAUSE SHARD s2").await;
    let shards = table(admin, "SHOW SHARDS").await;
    assert_eq!(get(find(&shards, "name", "s2"), "paused"), Some("t"));
    assert_eq!(get(find(&shards, "name", "default"), "paused"), Some("f"));
    change(admin, "PAUSE").await;
    assert_eq!(get(find(&table(admin, "SHOW SHARDS").await, "name", "default"), "paused"), Some("t"));
    change(admin, "RESUME").await;
    change(admin, "RESUME SHARD s2").await;
    assert!(table(admin, "SHOW SHARDS").await.iter().all(|r| get(r, "paused") == Some("f")));
    let (code, _, _) = error(admin, "PAUSE SHARD nope").await;
    assert_eq!(code, "42704");

    // Regions.
    let regions = table(admin, "SHOW REGIONS").await;
    assert_eq!(get(find(&regions, "name", "us"), "primaries"), Some("pg2"));
    assert_eq!(get(find(&regions, "name", "eu"), "primaries"), Some("primary"));

    // The audit log names the admin and where it connected from.
    let audit = table(admin, "SHOW AUDIT").await;
    assert_eq!(get(&audit[0], "actor"), Some("bootstrap"));
    let create = find(&audit, "change", &audit_text(&audit, "create shard s2"));
    assert_eq!(get(create, "actor"), Some("boss"));
    assert_eq!(get(create, "origin"), Some(c.admin_addr.as_str()));
    assert!(get(create, "at").is_some_and(|t| t.ends_with('Z') && t.contains('T')));
    assert!(audit.iter().any(|r| get(r, "change") == Some("ban node pg3")));
    // Versions rise with every change.
    let versions: Vec<u64> = audit.iter().map(|r| get(r, "version").unwrap().parse().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    // Events: whatever the state machine recorded, well formed.
    for e in table(admin, "SHOW EVENTS").await {
        assert!(get(&e, "at").is_some_and(|t| t.ends_with('Z')));
    }

    // Syntax errors name what was expected; the session goes on.
    let (code, msg, _) = error(admin, "ADD NODE pg5 '127.0.0.1:5' TO s2").await;
    assert_eq!(code, "42601");
    assert!(msg.contains("expected SHARD"), "{msg}");
    // Members: an unknown one cannot go, a known id cannot come again.
    let (code, msg, _) = error(admin, "REMOVE MEMBER 9").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42704", "unknown member 9"));
    let (code, _, _) = error(admin, "ADD MEMBER 1 'http://127.0.0.1:1' REGION 'eu'").await;
    assert_eq!(code, "42710");
    // RELOAD: this node was built in memory, not from a file.
    let (code, _, _) = error(admin, "RELOAD").await;
    assert_eq!(code, "55000");
    assert_eq!(table(admin, "SHOW SHARDS").await.len(), 2);

    c.node.shutdown();
    tokio::time::timeout(Duration::from_secs(20), c.serve).await.expect("node stopped").unwrap();
}

/// The full text of the audit entry that starts with `prefix`.
fn audit_text(audit: &[Row], prefix: &str) -> String {
    audit
        .iter()
        .filter_map(|r| get(r, "change"))
        .find(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no audit entry {prefix}: {audit:?}"))
        .to_owned()
}

/// Log in to the admin console of `c` as `user` with `password`.
async fn login(c: &ClusterConsole, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(c.addr.ip().to_string()).port(c.addr.port()).user(user).password(password).dbname("meridian");
    let (client, conn) = cfg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

#[tokio::test]
async fn users_created_through_the_console_log_in_on_the_cluster() {
    let c = start().await;
    let admin = &c.admin;
    let (version, changed) = change(admin, "CREATE USER ops PASSWORD 'ops-pw' ADMIN POOL_MODE session").await;
    assert_eq!(changed, "t");
    assert!(version.is_some());
    change(admin, "CREATE USER reader PASSWORD 'r-pw' MD5").await;
    // The cluster's users reach the data path's users through the publish
    // task: wait for the login to work.
    eventually("ops can log in", || async { login(&c, "ops", "ops-pw").await.is_ok() }).await;
    let ops = login(&c, "ops", "ops-pw").await.expect("ops logs in");
    let users = table(&ops, "SHOW USERS").await;
    let row = find(&users, "name", "ops");
    assert_eq!(
        (get(row, "auth"), get(row, "admin"), get(row, "source")),
        (Some("scram-sha-256"), Some("t"), Some("cluster"))
    );
    assert_eq!(get(row, "pool_mode"), Some("session"));
    assert_eq!(get(find(&users, "name", "reader"), "auth"), Some("md5"));
    assert_eq!(get(find(&users, "name", "boss"), "source"), Some("file"));
    // A wrong password fails as for any user; the password is nowhere in
    // the audit log.
    let e = login(&c, "ops", "nope").await.expect_err("wrong password");
    assert_eq!(e.code().map(|s| s.code()), Some("28P01"));
    let audit = table(admin, "SHOW AUDIT").await;
    let text = audit_text(&audit, "put user ops");
    assert_eq!(text, "put user ops (scram-sha-256, admin) pool_mode session");
    assert!(audit.iter().all(|r| r.values().all(|v| !v.as_deref().unwrap_or_default().contains("ops-pw"))));
    // A non-admin cluster user cannot use the console.
    let e = login(&c, "reader", "r-pw").await.expect_err("not an admin");
    assert_eq!(e.code().map(|s| s.code()), Some("42501"));
    // Dropped: the login fails again.
    change(admin, "DROP USER ops").await;
    eventually("ops is gone", || async { login(&c, "ops", "ops-pw").await.is_err() }).await;
    let (code, _, _) = error(admin, "DROP USER ops").await;
    assert_eq!(code, "42704");
    let (code, _, _) = error(admin, "CREATE USER bad PASSWORD ''").await;
    assert_eq!(code, "22023");

    c.node.shutdown();
    tokio::time::timeout(Duration::from_secs(20), c.serve).await.expect("node stopped").unwrap();
}

/// Record `report` the way the failover runtime does (`Change::RecordReport`
/// from `actor`), through the member's Raft route `/raft/propose`, the one a
/// follower forwards proposals with: the tests have no handle on the node's
/// `Cluster`. The member must be the leader.
pub(crate) async fn record_report(raft: std::net::SocketAddr, actor: &str, report: consensus::state::Report) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let cmd = consensus::Command {
        actor: actor.into(),
        origin: "test".into(),
        at,
        change: consensus::Change::RecordReport { report: Box::new(report) },
    };
    let body = serde_json::to_string(&cmd).unwrap();
    let mut s = tokio::net::TcpStream::connect(raft).await.unwrap();
    let request = format!(
        "POST /raft/propose HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("\"Applied\""), "{answer}");
}

/// The column names of one statement's rows, in order.
async fn columns(c: &Client, sql: &str) -> Vec<String> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.columns().iter().map(|c| c.name().to_owned()).collect()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{sql}: no rows"))
}

#[tokio::test]
async fn reports_show_up_in_their_views() {
    use consensus::state::{Outcome, Phase, Report, ReportKind};

    let c = start().await;
    let admin = &c.admin;
    eventually("a valid lease", || async {
        let rows = table(admin, "SHOW CLUSTER").await;
        rows.len() == 1 && get(&rows[0], "lease") == Some("valid")
    })
    .await;
    assert!(table(admin, "SHOW FAILOVERS").await.is_empty());
    assert!(table(admin, "SHOW DRILLS").await.is_empty());
    let (code, msg, hint) = error(admin, "SHOW DRILL 0").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42704", "unknown report 0"));
    assert!(hint.is_some_and(|h| h.contains("SHOW FAILOVERS")));

    let t = 1_795_000_000_000;
    let mut failover = Report::new(ReportKind::Failover, Some("default"), None);
    failover.old_primary = Some("primary".into());
    failover.new_primary = Some("pg9".into());
    failover.epoch = 2;
    failover.rto_ms = Some(3200);
    failover.rpo_bytes = Some(0);
    failover.rto_target_ms = 10_000;
    failover.passed = Some(true);
    failover.detail = "primary unreachable from 1 of 1 members".into();
    failover.phases = vec![
        Phase { name: "detect".into(), at: t },
        Phase { name: "fence".into(), at: t + 5 },
        Phase { name: "promote".into(), at: t + 3200 },
    ];
    record_report(c.raft, "failover", failover).await;
    let mut switchover = Report::new(ReportKind::Switchover, Some("default"), None);
    switchover.old_primary = Some("pg9".into());
    switchover.new_primary = Some("primary".into());
    switchover.epoch = 3;
    switchover.rto_ms = Some(180);
    switchover.rpo_commits = Some(0);
    record_report(c.raft, "boss", switchover).await;
    let mut drill = Report::new(ReportKind::DrillFailover, Some("default"), None);
    drill.rto_ms = Some(2100);
    drill.rpo_commits = Some(0);
    drill.writes = Some(412);
    drill.passed = Some(true);
    drill.related = vec![0];
    drill.phases = vec![Phase { name: "kill".into(), at: t }, Phase { name: "writes back".into(), at: t + 2100 }];
    record_report(c.raft, "boss", drill).await;
    let mut outage = Report::new(ReportKind::DrillRegionOutage, None, None);
    outage.region = Some("eu".into());
    outage.outcome = Outcome::Aborted;
    outage.passed = Some(false);
    outage.detail = "no other region has a replica".into();
    record_report(c.raft, "boss", outage).await;

    // Failovers and switchovers, newest first.
    eventually("the reports", || async { table(admin, "SHOW DRILLS").await.len() == 2 }).await;
    assert_eq!(columns(admin, "SHOW FAILOVERS").await, super::reports::FAILOVER_COLUMNS);
    let rows = table(admin, "SHOW FAILOVERS").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ids: Vec<_> = rows.iter().map(|r| get(r, "id")).collect();
    assert_eq!(ids, [Some("1"), Some("0")]);
    let f = &rows[1];
    assert_eq!(
        [get(f, "kind"), get(f, "shard"), get(f, "old_primary"), get(f, "new_primary"), get(f, "epoch")],
        [Some("failover"), Some("default"), Some("primary"), Some("pg9"), Some("2")]
    );
    assert_eq!(
        [get(f, "outcome"), get(f, "rto_ms"), get(f, "rpo_bytes"), get(f, "rpo_commits"), get(f, "rto_target_ms")],
        [Some("completed"), Some("3200"), Some("0"), None, Some("10000")]
    );
    assert_eq!([get(f, "passed"), get(f, "actor")], [Some("t"), Some("failover")]);
    assert!(get(f, "at").is_some_and(|t| t.ends_with('Z')));
    assert_eq!(get(f, "detail"), Some("primary unreachable from 1 of 1 members"));
    assert_eq!(
        [get(&rows[0], "kind"), get(&rows[0], "passed"), get(&rows[0], "actor")],
        [Some("switchover"), None, Some("boss")]
    );

    // Drills, newest first, with their region and writes.
    assert_eq!(columns(admin, "SHOW DRILLS").await, super::reports::DRILL_COLUMNS);
    let rows = table(admin, "SHOW DRILLS").await;
    assert_eq!(
        [get(&rows[0], "id"), get(&rows[0], "kind"), get(&rows[0], "region"), get(&rows[0], "shard")],
        [Some("3"), Some("drill region outage"), Some("eu"), None]
    );
    assert_eq!([get(&rows[0], "outcome"), get(&rows[0], "passed")], [Some("aborted"), Some("f")]);
    assert_eq!([get(&rows[1], "kind"), get(&rows[1], "writes")], [Some("drill failover"), Some("412")]);

    // One report, down the page: fields, then phases.
    let msgs = admin.simple_query("SHOW DRILL 2").await.unwrap();
    let lines: Vec<[Option<String>; 4]> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(std::array::from_fn(|i| r.get(i).map(str::to_owned))),
            _ => None,
        })
        .collect();
    assert_eq!(columns(admin, "SHOW DRILL 2").await, ["item", "value", "at", "since_start_ms"]);
    let field = |item: &str| {
        lines.iter().find(|l| l[0].as_deref() == Some(item)).unwrap_or_else(|| panic!("no {item}"))[1].clone()
    };
    assert_eq!(field("kind").as_deref(), Some("drill failover"));
    assert_eq!(field("writes").as_deref(), Some("412"));
    assert_eq!(field("related").as_deref(), Some("0"));
    assert_eq!(field("rpo_bytes"), None);
    let phases: Vec<_> = lines.iter().filter(|l| l[0].as_deref() == Some("phase")).collect();
    assert_eq!(phases.len(), 2);
    assert_eq!([phases[1][1].as_deref(), phases[1][3].as_deref()], [Some("writes back"), Some("2100")]);
    assert!(phases[1][2].as_deref().is_some_and(|t| t.ends_with('Z')));
    // Any report by any of the two names.
    let again = table(admin, "SHOW FAILOVER 0").await;
    assert!(again.iter().any(|r| get(r, "item") == Some("kind") && get(r, "value") == Some("failover")));
    let (code, _, _) = error(admin, "SHOW DRILL 4").await;
    assert_eq!(code, "42704");
    // Each report is also an event.
    let events = table(admin, "SHOW EVENTS").await;
    assert!(events.iter().any(|e| get(e, "kind") == Some("drill")));
    assert!(events.iter().any(|e| get(e, "kind") == Some("switchover")));

    c.node.shutdown();
    tokio::time::timeout(Duration::from_secs(20), c.serve).await.expect("node stopped").unwrap();
}

#[tokio::test]
async fn operations_refused_with_their_sqlstate() {
    let c = start().await;
    let admin = &c.admin;
    eventually("the bootstrap", || async { table(admin, "SHOW SHARDS").await.len() == 1 }).await;
    for sql in ["SWITCHOVER SHARD nosuch", "FAILOVER SHARD NoSuch FORCE", "DRILL FAILOVER SHARD nosuch"] {
        let (code, msg, hint) = error(admin, sql).await;
        assert_eq!((code.as_str(), msg.as_str()), ("42704", "unknown shard nosuch"), "{sql}");
        assert!(hint.is_some_and(|h| h.contains("SHOW SHARDS")), "{sql}");
    }
    let (code, msg, _) = error(admin, "REJOIN NODE nosuch").await;
    assert_eq!((code.as_str(), msg.as_str()), ("42704", "unknown node nosuch"));
    // The primary is no fenced former primary.
    let (code, _, hint) = error(admin, "REJOIN NODE primary").await;
    assert_eq!(code, "55000");
    assert!(hint.is_some_and(|h| h.contains("[[managed]]")));
    // Nothing ran, nothing was reported; the session goes on.
    assert!(table(admin, "SHOW FAILOVERS").await.is_empty());
    assert_eq!(table(admin, "SHOW SHARDS").await.len(), 1);

    c.node.shutdown();
    tokio::time::timeout(Duration::from_secs(20), c.serve).await.expect("node stopped").unwrap();
}
