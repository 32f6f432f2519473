//! The real `meridian` binary: `serve --config` with files on disk, the
//! process signals (SIGHUP reloads, SIGTERM drains, SIGINT stops now),
//! config validation at start, and `meridian passwd`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use harness::{ClusterSpec, PgCluster};
use integration_tests::{APP_PASSWORD, APP_USER, RawConn, app_startup, eventually, patiently, sqlstate};
use nix::sys::signal::Signal;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

/// How long a starting node may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// `meridian passwd --user <user> [--method <method>]` with `stdin`.
async fn passwd(user: &str, method: Option<&str>, stdin: &str) -> anyhow::Result<std::process::Output> {
    let mut cmd = tokio::process::Command::new(integration_tests::fresh_meridian_bin()?);
    cmd.args(["passwd", "--user", user]);
    if let Some(m) = method {
        cmd.args(["--method", m]);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let mut child = cmd.spawn().context("spawning meridian passwd")?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    Ok(patiently("meridian passwd", child.wait_with_output()).await??)
}

/// The secret `meridian passwd` prints for `password`.
async fn secret_for(user: &str, password: &str) -> anyhow::Result<String> {
    let out = passwd(user, None, &format!("{password}\n")).await?;
    anyhow::ensure!(out.status.success(), "meridian passwd failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// A `[[user]]` entry whose secret comes from `meridian passwd`.
async fn user_entry(name: &str, password: &str) -> anyhow::Result<String> {
    let secret = secret_for(name, password).await?;
    Ok(format!(
        "[[user]]\nname = \"{name}\"\nauth = \"scram-sha-256\"\nsecret = \"{secret}\"\nbackend_password = \"{password}\"\n\n"
    ))
}

fn config_text(listen: SocketAddr, backend: SocketAddr, extra: &str) -> String {
    node_config_text(listen, backend, "", extra)
}

/// [`config_text`] with `node_keys` added to `[node]`.
fn node_config_text(listen: SocketAddr, backend: SocketAddr, node_keys: &str, extra: &str) -> String {
    format!(
        "[node]\nname = \"process-test\"\n{node_keys}\n[listen]\naddress = \"{listen}\"\n\n[auth]\nusers_file = \"users.toml\"\n\n\
         [backend]\naddress = \"{backend}\"\n\n{extra}"
    )
}

/// A `meridian serve` process, killed when dropped.
struct Served {
    child: tokio::process::Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Served {
    /// Write `meridian.toml` (with a free port) and `users.toml` into a new
    /// directory, start `meridian serve` and wait until the port accepts.
    async fn start(backend: SocketAddr, users: &str, extra_config: &str) -> anyhow::Result<Served> {
        Served::start_node(backend, users, "", extra_config).await
    }

    /// [`Served::start`] with `node_keys` added to `[node]`.
    async fn start_node(
        backend: SocketAddr,
        users: &str,
        node_keys: &str,
        extra_config: &str,
    ) -> anyhow::Result<Served> {
        let bin = integration_tests::fresh_meridian_bin()?;
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("users.toml"), users)?;
        let log = dir.path().join("meridian.log");
        let mut last_log = String::new();
        // Another process may take the free port before we bind it: retry.
        for _ in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], harness::free_port()?));
            let config = dir.path().join("meridian.toml");
            std::fs::write(&config, node_config_text(addr, backend, node_keys, extra_config))?;
            let logfile = std::fs::File::create(&log)?;
            let mut child = tokio::process::Command::new(&bin)
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .env("MERIDIAN_LOG", "info")
                .stdin(Stdio::null())
                .stdout(logfile.try_clone()?)
                .stderr(logfile)
                .kill_on_drop(true)
                .spawn()
                .context("spawning meridian serve")?;
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(status) = child.try_wait()? {
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    if last_log.contains("in use") {
                        break;
                    }
                    anyhow::bail!("meridian serve exited with {status} while starting:\n{last_log}");
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Ok(Served { child, addr, dir, log });
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "meridian serve did not accept connections within {START_TIMEOUT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        anyhow::bail!("could not find a free port for meridian serve:\n{last_log}")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = self.child.id().context("meridian already exited")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)?;
        Ok(())
    }

    /// Wait for the process to exit, at most `timeout`.
    async fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => anyhow::bail!("meridian did not exit within {timeout:?}; log:\n{}", self.log()),
        }
    }

    fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(user)
            .password(password)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// Connect through the node; the connection task's end is returned too.
    async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<
        (tokio_postgres::Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>),
        tokio_postgres::Error,
    > {
        let (client, conn) = self.config(user, password).connect(tokio_postgres::NoTls).await?;
        Ok((client, tokio::spawn(conn)))
    }

    /// Log in and run a query; the current user on success.
    async fn whoami(&self, user: &str, password: &str) -> anyhow::Result<String> {
        let (client, _conn) = patiently("connect", self.connect(user, password)).await??;
        let row = patiently("query", client.query_one("SELECT current_user::text", &[])).await??;
        Ok(row.get(0))
    }
}

/// A fresh cluster with the app superuser.
async fn cluster() -> anyhow::Result<PgCluster> {
    integration_tests::init_tracing();
    let cluster = PgCluster::start(ClusterSpec::default()).await?;
    cluster.create_user(APP_USER, APP_PASSWORD, true).await?;
    Ok(cluster)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_config_file_relays_queries() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let users = user_entry(APP_USER, APP_PASSWORD).await?;
    let node = Served::start(cluster.primary().addr(), &users, "").await?;

    let (client, _conn) = node.connect(APP_USER, APP_PASSWORD).await?;
    let row = client
        .query_one("SELECT current_user::text, 40 + $1::int, current_setting('server_version')", &[&2i32])
        .await?;
    assert_eq!(row.get::<_, String>(0), APP_USER);
    assert_eq!(row.get::<_, i32>(1), 42);
    assert!(row.get::<_, String>(2).starts_with("15."));

    // A wrong password is refused like PostgreSQL refuses it.
    let err = node.connect(APP_USER, "not the password").await.err().context("wrong password accepted")?;
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    Ok(())
}

/// `node.busy_poll`: the node finds its runtime's epoll instance, serves
/// clients as usual, and counts polls that caught an event in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_serves_clients_and_counts_its_polls() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let users = user_entry(APP_USER, APP_PASSWORD).await?;
    let http = SocketAddr::from(([127, 0, 0, 1], harness::free_port()?));
    let node = Served::start_node(
        cluster.primary().addr(),
        &users,
        "busy_poll = \"200us\"\n",
        &format!("[http]\nlisten = \"{http}\"\n"),
    )
    .await?;
    assert!(node.log().contains("busy-polling before the runtime sleeps"), "{}", node.log());

    let (client, _conn) = node.connect(APP_USER, APP_PASSWORD).await?;
    let caught = |metrics: &str, outcome: &str| -> Option<u64> {
        let key = format!("meridian_proxy_busy_polls_total{{outcome=\"{outcome}\"}} ");
        metrics.lines().find_map(|l| l.strip_prefix(key.as_str())).and_then(|v| v.trim().parse().ok())
    };
    let mut i = 0i32;
    // Back-to-back queries leave the node idle for less than the budget
    // between a request and its reply: some polls catch the reply.
    eventually("a busy poll that caught an event", || {
        let client = &client;
        i += 100;
        let start = i;
        async move {
            for n in start..start + 100 {
                let row = client.query_one("SELECT $1::int + 1", &[&n]).await?;
                anyhow::ensure!(row.get::<_, i32>(0) == n + 1, "wrong answer");
            }
            let (status, body) = integration_tests::cluster::http_get(http, "/metrics").await?;
            anyhow::ensure!(status == 200, "/metrics answered {status}");
            caught(&body, "slept").context("no busy-poll counter for sleeps in /metrics")?;
            Ok(caught(&body, "caught").context("no busy-poll counter for catches in /metrics")? > 0)
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_and_keeps_serving_on_a_broken_config() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    cluster.create_user("bob", "bob-secret", false).await?;
    let app = user_entry(APP_USER, APP_PASSWORD).await?;
    let bob = user_entry("bob", "bob-secret").await?;
    let node = &Served::start(cluster.primary().addr(), &app, "").await?;
    let (held, _held_conn) = node.connect(APP_USER, APP_PASSWORD).await?;

    // bob is not in the users file yet.
    let err = node.connect("bob", "bob-secret").await.err().context("bob logged in before he was added")?;
    assert_eq!(sqlstate(&err), Some("28P01"), "{err}");

    // Add bob, reload: he can log in; the open session is unaffected.
    std::fs::write(node.path("users.toml"), format!("{app}{bob}"))?;
    node.signal(Signal::SIGHUP)?;
    eventually("bob can log in after SIGHUP", || async move { Ok(node.whoami("bob", "bob-secret").await? == "bob") })
        .await?;
    held.simple_query("SELECT 1").await.context("a session open across the reload")?;

    // A broken config file: the reload fails, the node keeps serving with
    // the configuration it has.
    let good_config = std::fs::read_to_string(node.path("meridian.toml"))?;
    std::fs::write(node.path("meridian.toml"), format!("{good_config}\n[pool]\nsise = 3\n"))?;
    node.signal(Signal::SIGHUP)?;
    eventually("the failed reload is logged", || async move { Ok(node.log().matches("reload failed").count() >= 1) })
        .await?;
    assert_eq!(node.whoami(APP_USER, APP_PASSWORD).await?, APP_USER);
    assert_eq!(node.whoami("bob", "bob-secret").await?, "bob");
    held.simple_query("SELECT 1").await.context("a session open across the failed reload")?;

    // Not TOML at all.
    std::fs::write(node.path("meridian.toml"), "[node\nname = ")?;
    node.signal(Signal::SIGHUP)?;
    eventually(
        "the second failed reload is logged",
        || async move { Ok(node.log().matches("reload failed").count() >= 2) },
    )
    .await?;
    assert_eq!(node.whoami("bob", "bob-secret").await?, "bob");

    // A good config with a broken users file: refused as a whole too.
    std::fs::write(node.path("meridian.toml"), &good_config)?;
    std::fs::write(node.path("users.toml"), format!("{app}[[user]]\nname = \"eve\"\nsecret = \"not a verifier\"\n"))?;
    node.signal(Signal::SIGHUP)?;
    eventually(
        "the third failed reload is logged",
        || async move { Ok(node.log().matches("reload failed").count() >= 3) },
    )
    .await?;
    assert_eq!(node.whoami("bob", "bob-secret").await?, "bob", "the old users must stay in force");

    // Removing bob takes effect on the next good reload.
    std::fs::write(node.path("users.toml"), &app)?;
    node.signal(Signal::SIGHUP)?;
    eventually("bob is refused after being removed", || async move {
        Ok(matches!(node.connect("bob", "bob-secret").await, Err(e) if sqlstate(&e) == Some("28P01")))
    })
    .await?;
    assert_eq!(node.whoami(APP_USER, APP_PASSWORD).await?, APP_USER);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_idle_clients_and_lets_open_transactions_commit() -> anyhow::Result<()> {
    // Long enough that an exit before it is the drain finishing, not the
    // grace period running out.
    let grace = Duration::from_secs(120);
    let cluster = cluster().await?;
    cluster.primary().execute("CREATE TABLE drained (id int PRIMARY KEY)").await?;
    let users = user_entry(APP_USER, APP_PASSWORD).await?;
    let mut node = Served::start(cluster.primary().addr(), &users, "[shutdown]\ngrace = \"120s\"\n").await?;

    // An idle client, driven by hand to see exactly what it is sent.
    let mut idle = RawConn::connect(node.addr).await?;
    idle.login(&app_startup(), APP_PASSWORD).await?;
    idle.simple_query("SELECT 1").await?;
    // An idle tokio-postgres client too: its connection must end with 57P01.
    let (_idle_client, idle_conn) = node.connect(APP_USER, APP_PASSWORD).await?;
    // A client inside a transaction.
    let (tx, tx_conn) = node.connect(APP_USER, APP_PASSWORD).await?;
    tx.batch_execute("BEGIN; INSERT INTO drained VALUES (1)").await?;

    let sent = Instant::now();
    node.signal(Signal::SIGTERM)?;

    let msg = idle.recv().await?.context("the idle client was disconnected without a message")?;
    let err = msg.error().with_context(|| format!("expected an ErrorResponse, got tag {:?}", msg.tag as char))?;
    assert_eq!((err.severity.as_str(), err.code.as_str()), ("FATAL", "57P01"), "{err}");
    assert!(idle.recv().await?.is_none(), "the idle connection must be closed after the FATAL");
    let ended = patiently("the idle tokio-postgres connection ends", idle_conn).await??;
    let e = ended.err().context("the idle tokio-postgres connection ended without an error")?;
    assert_eq!(sqlstate(&e), Some("57P01"), "{e}");

    // New clients are no longer accepted.
    eventually("the listener is closed", || async move {
        Ok(match tokio::net::TcpStream::connect(node.addr).await {
            Err(_) => true,
            Ok(s) => {
                let mut raw = RawConn::new(s);
                raw.login(&app_startup(), APP_PASSWORD).await.is_err()
            }
        })
    })
    .await?;

    // The transaction goes on and commits.
    tx.batch_execute("INSERT INTO drained VALUES (2)").await.context("a statement inside the draining transaction")?;
    tx.batch_execute("COMMIT").await.context("COMMIT while draining")?;
    let status = node.wait_exit(grace).await?;
    let took = sent.elapsed();
    assert!(status.success(), "meridian exited with {status} after SIGTERM; log:\n{}", node.log());
    assert!(took < grace, "exit took {took:?}, past the grace period: the transaction should have ended the drain");
    // Its session ends after the transaction (and the process is gone).
    let _ = patiently("the drained client's connection ends", tx_conn).await??;

    let rows = cluster.primary().query_value("SELECT string_agg(id::text, ',' ORDER BY id) FROM drained").await?;
    assert_eq!(rows.as_deref(), Some("1,2"), "the drained transaction must be committed");
    Ok(())
}

/// An idle client that keeps its server connection between transactions
/// (session pooling, or transaction pooling once pinned by a temporary
/// table) must be ended by SIGTERM like any idle client, not kept until the
/// grace period runs out.
async fn idle_attached_client_gets_57p01(pool_mode: &str, pin_sql: &str) -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let users = user_entry(APP_USER, APP_PASSWORD).await?;
    let extra = format!("[pool]\nmode = \"{pool_mode}\"\n\n[shutdown]\ngrace = \"10m\"\n");
    let mut node = Served::start(cluster.primary().addr(), &users, &extra).await?;
    let mut idle = RawConn::connect(node.addr).await?;
    idle.login(&app_startup(), APP_PASSWORD).await?;
    let out = idle.simple_query(pin_sql).await?;
    assert!(out.errors.is_empty() && out.status == b'I', "{pin_sql}: {:?}", out.errors);

    node.signal(Signal::SIGTERM)?;
    // Far less than the 10 minute grace period.
    let msg = idle.recv_within(Duration::from_secs(60)).await.with_context(|| {
        format!("{pool_mode} pooling, after {pin_sql:?}: an idle client was not ended by SIGTERM (it would be cut only when shutdown.grace runs out)")
    })?;
    let msg = msg.context("the idle client was disconnected without a message")?;
    let err = msg.error().with_context(|| format!("expected an ErrorResponse, got tag {:?}", msg.tag as char))?;
    assert_eq!((err.severity.as_str(), err.code.as_str()), ("FATAL", "57P01"), "{err}");
    let status = node.wait_exit(Duration::from_secs(60)).await?;
    assert!(status.success(), "meridian exited with {status}; log:\n{}", node.log());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_idle_session_pooled_clients() -> anyhow::Result<()> {
    idle_attached_client_gets_57p01("session", "SELECT 1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_idle_pinned_clients() -> anyhow::Result<()> {
    idle_attached_client_gets_57p01("transaction", "CREATE TEMP TABLE pin_me (x int)").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_at_once_even_with_a_transaction_open() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    cluster.primary().execute("CREATE TABLE interrupted (id int)").await?;
    let users = user_entry(APP_USER, APP_PASSWORD).await?;
    // A grace period far longer than the test's patience: SIGINT must not wait for it.
    let mut node = Served::start(cluster.primary().addr(), &users, "[shutdown]\ngrace = \"1h\"\n").await?;
    let (tx, tx_conn) = node.connect(APP_USER, APP_PASSWORD).await?;
    tx.batch_execute("BEGIN; INSERT INTO interrupted VALUES (1)").await?;
    let (_idle, _idle_conn) = node.connect(APP_USER, APP_PASSWORD).await?;

    node.signal(Signal::SIGINT)?;
    let status = node.wait_exit(Duration::from_secs(60)).await?;
    assert!(status.success(), "meridian exited with {status} after SIGINT; log:\n{}", node.log());

    patiently("the transaction's connection ends", tx_conn).await??.ok();
    assert!(tx.batch_execute("COMMIT").await.is_err(), "the cut transaction must not commit");
    // The server side of the cut transaction goes away and rolls back.
    let primary = cluster.primary();
    eventually("the open transaction is gone on the server", || async move {
        let n = primary
            .query_value(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND state LIKE 'idle in transaction%'",
            )
            .await?;
        Ok(n.as_deref() == Some("0"))
    })
    .await?;
    assert_eq!(primary.query_value("SELECT count(*) FROM interrupted").await?.as_deref(), Some("0"));
    Ok(())
}

/// Run `serve` with `config` (and a valid users file) and expect it to fail.
async fn serve_must_fail(config: &str) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("users.toml"), user_entry(APP_USER, APP_PASSWORD).await?)?;
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, config)?;
    serve_output(&path).await
}

async fn serve_output(path: &Path) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new(integration_tests::fresh_meridian_bin()?);
    cmd.arg("serve").arg("--config").arg(path).stdin(Stdio::null());
    let out = integration_tests::run_tool(cmd, Duration::from_secs(60)).await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    anyhow::ensure!(!out.status.success(), "serve accepted a bad config and exited with {}:\n{text}", out.status);
    Ok(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_invalid_config_naming_the_key() -> anyhow::Result<()> {
    let listen = SocketAddr::from(([127, 0, 0, 1], harness::free_port()?));
    let backend: SocketAddr = "127.0.0.1:5".parse()?;
    let good = config_text(listen, backend, "");

    let text = serve_must_fail(&format!("{good}[pool]\nsise = 3\n")).await?;
    assert!(text.contains("sise"), "the message must name the unknown key:\n{text}");

    let text = serve_must_fail(&good.replace("[listen]\n", "[listen]\nmax_client_conections = 5\n")).await?;
    assert!(text.contains("max_client_conections"), "{text}");

    let text = serve_must_fail(&format!("{good}[pool]\ncheckout_timeout = \"5 parsecs\"\n")).await?;
    assert!(text.contains("pool.checkout_timeout"), "a bad value must name its key:\n{text}");

    let text = serve_must_fail(&good.replace("[node]\n", "[node]\nbusy_poll = \"2ms\"\n")).await?;
    assert!(text.contains("node.busy_poll") && text.contains("at most 1000us"), "{text}");

    let text = serve_output(Path::new("/nonexistent/meridian.toml")).await?;
    assert!(text.contains("/nonexistent/meridian.toml"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwd_prints_a_scram_verifier_postgresql_accepts() -> anyhow::Result<()> {
    use base64::Engine;
    let cluster = cluster().await?;
    let primary = cluster.primary();

    // An ASCII password, and one that SASLprep changes (U+00AA folds to
    // "a", U+00A0 becomes a space): the verifier must be computed from the
    // normalized form, as PostgreSQL and libpq do.
    for (role, password) in [("carol", "correct horse battery staple"), ("dave", "p\u{00AA}ss\u{00A0}w\u{00F6}rd")] {
        let verifier = secret_for(role, password).await?;
        let (head, keys) = verifier
            .strip_prefix("SCRAM-SHA-256$")
            .and_then(|v| v.split_once('$'))
            .with_context(|| format!("not a SCRAM verifier: {verifier:?}"))?;
        let (iterations, salt) = head.split_once(':').context("no salt")?;
        let (stored, server) = keys.split_once(':').context("no server key")?;
        assert!(iterations.parse::<u32>()? >= 4096, "{verifier}");
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(salt)?.len(), 16, "{verifier}");
        assert_eq!(b64.decode(stored)?.len(), 32, "{verifier}");
        assert_eq!(b64.decode(server)?.len(), 32, "{verifier}");

        primary.execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{verifier}'")).await?;
        // Stored as given: PostgreSQL recognised it as a verifier rather than
        // hashing it as a password.
        let stored_secret =
            primary.query_value(&format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'")).await?;
        assert_eq!(stored_secret.as_deref(), Some(verifier.as_str()));

        // Log in directly (pg_hba: scram-sha-256 over TCP) with the password.
        let mut config = primary.tcp_config();
        config.user(role).password(password);
        let (client, conn) = config.connect(tokio_postgres::NoTls).await.with_context(|| {
            format!("PostgreSQL refused the password of {role} with the verifier from meridian passwd")
        })?;
        tokio::spawn(conn);
        let who: String = client.query_one("SELECT current_user::text", &[]).await?.get(0);
        assert_eq!(who, role);
        config.password("wrong");
        let err = config.connect(tokio_postgres::NoTls).await.err().context("a wrong password was accepted")?;
        assert_eq!(sqlstate(&err), Some("28P01"), "{err}");
    }

    // md5: PostgreSQL's own md5 secret.
    let out = passwd("erin", Some("md5"), "md5 password\n").await?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md5 = String::from_utf8(out.stdout)?.trim().to_owned();
    let expected = primary.query_value("SELECT 'md5' || md5('md5 password' || 'erin')").await?;
    assert_eq!(Some(md5), expected);

    // No password: refused.
    let out = passwd("frank", None, "").await?;
    assert!(!out.status.success(), "an empty password must be refused");
    Ok(())
}
