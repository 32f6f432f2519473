//! Real PostgreSQL clusters: replication, restarts, faults, teardown.

// Helpers outside #[test] fns panic on failure too; that is the report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use harness::{ClusterInfo, ClusterSpec, Error, FaultRelay, HostAuth, PgBinaries, PgCluster, Role};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

/// Shows the harness's logs with `RUST_LOG=harness=debug cargo test -- --nocapture`.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
            !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X'))
        })
        .unwrap_or(false)
}

/// Connects with `config` and drives the connection in a task that ends
/// with the client.
async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test]
async fn replica_sees_writes_made_on_the_primary() {
    init_tracing();
    let started = tokio::time::Instant::now();
    let cluster = PgCluster::start(ClusterSpec::default().with_replicas(1)).await.unwrap();
    eprintln!("1 primary + 1 replica started in {:?}", started.elapsed());

    let primary = cluster.primary();
    let [replica] = cluster.replicas() else { panic!("one replica expected") };
    assert_eq!(primary.name(), "pg-primary");
    assert_eq!(replica.name(), "pg-replica-1");
    assert_eq!(replica.role(), Role::Replica);
    assert_ne!(primary.port(), replica.port());
    assert_eq!(replica.query_value("SELECT pg_is_in_recovery()").await.unwrap().as_deref(), Some("t"));
    let senders = primary.query_value("SELECT application_name FROM pg_stat_replication").await.unwrap();
    assert_eq!(senders.as_deref(), Some("pg-replica-1"));
    // Our settings are in force on both (the replica got its own copy).
    for server in cluster.servers() {
        let dsm = server.query_value("SHOW dynamic_shared_memory_type").await.unwrap();
        assert_eq!(dsm.as_deref(), Some("mmap"), "{}", server.name());
        let port = server.query_value("SHOW port").await.unwrap();
        assert_eq!(port, Some(server.port().to_string()));
    }

    primary
        .execute("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one'), (2, NULL)")
        .await
        .unwrap();
    cluster.wait_replicas_caught_up().await.unwrap();
    let rows = replica.query("SELECT id, v FROM t ORDER BY id").await.unwrap();
    assert_eq!(rows, vec![vec![Some("1".to_owned()), Some("one".to_owned())], vec![Some("2".to_owned()), None]]);
    let err = replica.execute("INSERT INTO t VALUES (3, 'x')").await.unwrap_err();
    assert!(err.to_string().contains("read-only"), "{err}");

    // Clients under test use TCP with the password (SCRAM by default).
    let su = connect(&primary.tcp_config()).await.unwrap();
    let row = su.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");

    // Roles and databases made on the primary are usable on the replica.
    cluster.create_user("app", "app-secret", false).await.unwrap();
    cluster.create_database("appdb", "app").await.unwrap();
    let mut config = replica.tcp_config();
    config.user("app").password("app-secret").dbname("appdb");
    let app = connect(&config).await.unwrap();
    let row = app.query_one("SELECT current_user, current_database()", &[]).await.unwrap();
    assert_eq!((row.get::<_, String>(0), row.get::<_, String>(1)), ("app".into(), "appdb".into()));
    config.password("wrong");
    let err = connect(&config).await.unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");

    // Failover by hand: the promoted replica takes writes.
    primary.stop().await.unwrap();
    replica.promote().await.unwrap();
    assert_eq!(replica.role(), Role::Primary);
    replica.execute("INSERT INTO t VALUES (3, 'three')").await.unwrap();
}

#[tokio::test]
async fn servers_stop_start_kill_and_pause() {
    let cluster = PgCluster::start(ClusterSpec::default().with_name_prefix("life")).await.unwrap();
    let server = cluster.primary();
    server.execute("CREATE TABLE kept (id int); INSERT INTO kept VALUES (7)").await.unwrap();

    // Clean stop and start on the same port.
    let pid = server.pid().unwrap();
    server.stop().await.unwrap();
    assert!(!alive(pid));
    assert_eq!(server.pid(), None);
    assert!(tokio::net::TcpStream::connect(server.addr()).await.is_err());
    assert!(matches!(server.pause(), Err(Error::NotRunning(_))));
    server.start().await.unwrap();
    assert_eq!(server.query_value("SELECT id FROM kept").await.unwrap().as_deref(), Some("7"));

    // SIGKILL takes down the whole tree; restart runs crash recovery.
    let pid = server.pid().unwrap();
    let client = server.connect().await.unwrap();
    server.kill().await.unwrap();
    assert!(!alive(pid));
    assert!(client.simple_query("SELECT 1").await.is_err());
    server.start().await.unwrap();
    assert_ne!(server.pid(), Some(pid));
    assert_eq!(server.query_value("SELECT id FROM kept").await.unwrap().as_deref(), Some("7"));

    // A paused server keeps connections open but answers nothing.
    let client = server.connect().await.unwrap();
    server.pause().unwrap();
    let stalled = tokio::time::timeout(Duration::from_millis(300), client.simple_query("SELECT 1")).await;
    assert!(stalled.is_err(), "a paused server answered");
    server.resume().unwrap();
    server.wait_ready(Duration::from_secs(5)).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();

    // Restarting while something else briefly holds the port retries on
    // the same port (clients keep their connection strings).
    server.stop().await.unwrap();
    let squatter = std::net::TcpListener::bind(server.addr()).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(squatter);
    });
    server.start().await.unwrap();
    release.await.unwrap();
    assert!(server.log_tail(100).contains("Address already in use"));
    server.execute("SELECT 1").await.unwrap();

    // Stopping a paused server works too.
    server.pause().unwrap();
    server.stop().await.unwrap();
    assert_eq!(server.pid(), None);
}

#[tokio::test]
async fn dropping_the_cluster_stops_its_processes_and_removes_its_files() {
    let cluster = PgCluster::start(ClusterSpec::default().with_replicas(1)).await.unwrap();
    let pids: Vec<u32> = cluster.servers().iter().map(|s| s.pid().unwrap()).collect();
    let base = cluster.base_dir().to_path_buf();
    assert!(pids.iter().all(|pid| alive(*pid)));
    // A killed primary leaves its SysV interlock segment behind; drop must
    // free it since nothing will restart that data directory.
    let pidfile = std::fs::read_to_string(cluster.primary().data_dir().join("postmaster.pid")).unwrap();
    let shmid = pidfile.lines().nth(6).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    cluster.primary().kill().await.unwrap();
    cluster.replicas()[0].pause().unwrap();
    drop(cluster);
    let segments = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    assert!(
        !segments.lines().skip(1).any(|row| row.split_whitespace().nth(1) == Some(shmid.as_str())),
        "shared memory segment {shmid} survived drop"
    );
    for pid in pids {
        assert!(!alive(pid), "postmaster {pid} survived drop");
    }
    assert!(!base.exists(), "{} survived drop", base.display());
}

#[test]
fn a_panicking_test_still_stops_its_cluster() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async move {
            let cluster = PgCluster::start(ClusterSpec::default()).await.unwrap();
            tx.send(cluster.primary().pid().unwrap()).unwrap();
            panic!("simulated test failure");
        })
    })
    .join();
    assert!(outcome.is_err(), "the thread should have panicked");
    let pid = rx.recv().unwrap();
    assert!(!alive(pid), "postmaster {pid} survived the panic");
}

#[tokio::test]
async fn detached_servers_run_until_stopped_from_elsewhere() {
    let dir = tempfile::Builder::new().prefix("meridian-demo-test").tempdir().unwrap();
    let base = dir.path().join("demo");
    let spec = ClusterSpec::default().with_base_dir(&base).with_name_prefix("demo");
    let info = PgCluster::start(spec.clone()).await.unwrap().detach();
    let pid = info.servers[0].pid.unwrap();
    assert!(alive(pid), "detach must leave the server running");

    // A second cluster in the same directory would clobber the first.
    assert!(matches!(PgCluster::start(spec).await, Err(Error::AlreadyExists(_))));

    // What `meridian demo` writes to its state file, read back by `demo stop`.
    let json = serde_json::to_string_pretty(&info).unwrap();
    let recorded: ClusterInfo = serde_json::from_str(&json).unwrap();
    let mut config = tokio_postgres::Config::new();
    config
        .host(recorded.servers[0].host.to_string())
        .port(recorded.servers[0].port)
        .user(&recorded.superuser.user)
        .password(&recorded.superuser.password);
    let client = connect(&config).await.unwrap();

    // A live postgres process that is not the data directory's postmaster
    // (here a backend) is refused, not signalled.
    let backend: i32 = client.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let wrong = harness::stop_server(&recorded.servers[0].data_dir, backend as u32).await;
    assert!(matches!(wrong, Err(Error::NotOurServer { .. })), "{wrong:?}");
    // A pid that is not postgres at all counts as already stopped.
    harness::stop_server(&recorded.servers[0].data_dir, std::process::id()).await.unwrap();
    assert!(alive(pid));

    recorded.stop().await.unwrap();
    assert!(!alive(pid));
    // Stopping again is harmless.
    recorded.stop().await.unwrap();
}

#[tokio::test]
async fn md5_clusters_hash_passwords_with_md5() {
    let cluster = PgCluster::start(
        ClusterSpec::default()
            .with_host_auth(HostAuth::Md5)
            .with_superuser("admin", "s3cret")
            .with_conf("log_min_duration_statement = -1"),
    )
    .await
    .unwrap();
    let primary = cluster.primary();
    let stored =
        primary.query_value("SELECT rolpassword FROM pg_authid WHERE rolname = 'admin'").await.unwrap().unwrap();
    assert!(stored.starts_with("md5"), "{stored}");
    let client = connect(&primary.tcp_config()).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    assert!(primary.connection_string().contains("user='admin' password='s3cret'"));

    // The harness's own socket connection never needs the password.
    assert_eq!(primary.query_value("SELECT current_user").await.unwrap().as_deref(), Some("admin"));
}

#[tokio::test]
async fn a_relay_in_front_of_postgres_delays_and_resets_sessions() {
    let cluster = PgCluster::start(ClusterSpec::default().with_host_auth(HostAuth::Trust)).await.unwrap();
    let relay = FaultRelay::start(cluster.primary().addr()).await.unwrap();
    let config = cluster.primary().tcp_config_via(relay.local_addr());
    let client = connect(&config).await.unwrap();

    relay.set_delay(Duration::from_millis(50));
    let started = tokio::time::Instant::now();
    client.simple_query("SELECT 1").await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());

    relay.reset_all();
    assert!(client.simple_query("SELECT 1").await.is_err());
    relay.heal();
    connect(&config).await.unwrap().simple_query("SELECT 1").await.unwrap();
    relay.shutdown().await;
}

#[test]
fn missing_binaries_fail_loudly() {
    let err = PgBinaries::from_dir("/nonexistent/bin").unwrap_err();
    assert!(matches!(err, Error::BinariesNotFound { .. }));
    assert!(err.to_string().contains("missing initdb, pg_ctl, postgres, pg_basebackup"), "{err}");
}

/// Every pid whose command line mentions `dir`.
fn processes_mentioning(dir: &std::path::Path) -> Vec<u32> {
    let wanted = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.windows(wanted.len()).any(|w| w == wanted))
        })
        .collect()
}

#[tokio::test]
async fn a_start_cut_short_leaves_nothing_running() {
    let dir = tempfile::Builder::new().prefix("meridian-cut").tempdir().unwrap();
    for (i, millis) in [50u64, 120, 200, 300, 400].into_iter().enumerate() {
        let base = dir.path().join(i.to_string());
        let spec = ClusterSpec::default().with_replicas(1).with_base_dir(&base);
        let outcome = tokio::time::timeout(Duration::from_millis(millis), PgCluster::start(spec)).await;
        drop(outcome);
        // Helpers killed on drop (cp, pg_basebackup) may take a moment to
        // exit; servers must not survive.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<String> = processes_mentioning(&base)
                .into_iter()
                .map(|pid| {
                    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    format!("{pid} {}", stat.split(')').next().unwrap_or_default())
                })
                .collect();
            if left.is_empty() {
                break;
            }
            eprintln!("start cut after {millis} ms: still running {left:?}");
            assert!(tokio::time::Instant::now() < deadline, "start cut after {millis} ms left {left:?} running");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
