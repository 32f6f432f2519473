//! Shared pieces of Meridian's integration tests: a [`TestBed`] is a real
//! PostgreSQL cluster (from the `harness` crate) with a Meridian node
//! serving it in-process on a free port, torn down on drop.
//!
//! The tests themselves live in `tests/`; each owns its cluster. They need
//! PostgreSQL's server binaries and fail (not skip) without them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use harness::{ClusterSpec, PgCluster};
use proxy::{Config, NodeHandle};
use tokio::task::JoinHandle;

pub mod cluster;
pub mod failover;
pub mod sharded;

/// The application user every test bed creates: a superuser, so suites
/// such as the regression tests can run through Meridian.
pub const APP_USER: &str = "app";
/// Its password, the same for Meridian and PostgreSQL.
pub const APP_PASSWORD: &str = "app-secret";

/// How a test bed is set up.
#[derive(Debug, Clone)]
pub struct BedSpec {
    pub cluster: ClusterSpec,
    /// Extra TOML appended to the generated node config (e.g. a `[pool]`
    /// section); sections the generator writes itself are listed in
    /// [`TestBed::start_with`].
    pub extra_config: String,
    /// Client authentication Meridian asks of the app user.
    pub client_auth: &'static str,
    /// Extra `[[user]]` entries for the users file.
    pub extra_users: String,
    /// Route through a `[topology]` of the cluster's primary and replicas
    /// (reads to replicas, read-your-writes) instead of `[backend]`.
    pub routed: bool,
    /// List every PostgreSQL server under `[[managed]]` (this host's
    /// servers, which the node may kill, stop, start and rewind).
    pub managed: bool,
    /// The region of the primary in a routed topology (the others are in
    /// `local`, like the node).
    pub primary_region: &'static str,
    /// `health.probe_interval` of a routed topology.
    pub probe_interval: &'static str,
    /// Give Meridian each server's Unix-domain socket (`/socket/dir:port`)
    /// instead of its TCP address.
    pub over_unix: bool,
}

impl Default for BedSpec {
    fn default() -> Self {
        BedSpec {
            cluster: ClusterSpec::default(),
            extra_config: String::new(),
            client_auth: "scram-sha-256",
            extra_users: String::new(),
            routed: false,
            managed: false,
            primary_region: "local",
            probe_interval: "100ms",
            over_unix: false,
        }
    }
}

/// A PostgreSQL cluster and one Meridian node in front of its primary.
pub struct TestBed {
    pub cluster: PgCluster,
    pub addr: SocketAddr,
    pub node: NodeHandle,
    pub dir: tempfile::TempDir,
    serve: Option<JoinHandle<()>>,
}

impl TestBed {
    /// A cluster with defaults and a node in transaction pooling mode.
    pub async fn start() -> anyhow::Result<TestBed> {
        Self::start_with(BedSpec::default()).await
    }

    /// Start the cluster, create the app user, write `meridian.toml` and
    /// `users.toml` into a temp dir and serve them. The generated config has
    /// `[node]`, `[listen]`, `[auth]` and `[backend]`; `extra_config` may add
    /// any other section.
    pub async fn start_with(spec: BedSpec) -> anyhow::Result<TestBed> {
        Self::start_custom(spec, BedExtras::default()).await
    }

    /// A tokio-postgres config for the app user through Meridian.
    pub fn config(&self) -> tokio_postgres::Config {
        app_config(self.addr)
    }

    /// Connect through Meridian without TLS; the connection task is detached
    /// and ends when the client is dropped.
    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = self.config().connect(tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// A libpq connection string for the app user through Meridian.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user={APP_USER} password={APP_PASSWORD} dbname=postgres",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// A libpq connection string for the app user straight to the primary.
    pub fn direct_conninfo(&self) -> String {
        let p = self.cluster.primary();
        format!("host={} port={} user={APP_USER} password={APP_PASSWORD} dbname=postgres", p.host(), p.port())
    }

    /// Stop the node gracefully and wait for it.
    pub async fn shutdown(&mut self) {
        self.node.shutdown();
        if let Some(serve) = self.serve.take() {
            let _ = tokio::time::timeout(Duration::from_secs(60), serve).await;
        }
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        self.node.kill();
    }
}

/// A tokio-postgres config for the app user, database `postgres`, at `addr`.
pub fn app_config(addr: SocketAddr) -> tokio_postgres::Config {
    let mut c = tokio_postgres::Config::new();
    c.host(addr.ip().to_string())
        .port(addr.port())
        .user(APP_USER)
        .password(APP_PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    c
}

/// Logs for failing tests: `MERIDIAN_LOG=debug cargo test ...`.
pub fn init_tracing() {
    let filter = std::env::var("MERIDIAN_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// The `meridian` binary of this build, built on demand if the test runner
/// did not build it.
pub fn meridian_bin() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/meridian
    let profile_dir = exe.parent().and_then(Path::parent).context("test binary has no profile dir")?;
    let bin = profile_dir.join("meridian");
    // Missing, or older than this test binary (`cargo test -p
    // integration-tests` does not rebuild other packages' binaries).
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&bin), modified(&exe)) {
        (Some(b), Some(e)) => b < e,
        _ => true,
    };
    if stale {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "proxy", "--bin", "meridian"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().context("running cargo build for the meridian binary")?;
        anyhow::ensure!(status.success(), "cargo build of meridian failed");
    }
    Ok(bin)
}

/// The `meridian` binary, rebuilt once per test process: [`meridian_bin`]
/// alone would use whatever binary an earlier build left behind, which lags
/// behind the proxy sources when only tests were built since.
pub fn fresh_meridian_bin() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let bin = meridian_bin().map_err(|e| format!("{e:#}"))?;
            let release = bin.parent().and_then(Path::file_name).is_some_and(|n| n == "release");
            let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "--quiet", "-p", "proxy", "--bin", "meridian"]);
            if release {
                cmd.arg("--release");
            }
            let status = cmd.status().map_err(|e| format!("running cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build -p proxy --bin meridian failed: {status}"));
            }
            Ok(bin)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// Run a program to completion with a timeout, returning its output.
pub async fn run_tool(mut cmd: tokio::process::Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{cmd:?} timed out after {timeout:?}"))??;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Helpers for the protocol, auth/TLS, bad-input and pooling suites.
// ---------------------------------------------------------------------------

/// How long the helpers below wait for any single answer before failing the
/// test: far above anything a healthy run needs, even on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Extra setup for [`TestBed::start_custom`], beyond what [`BedSpec`] covers.
#[derive(Debug, Clone, Default)]
pub struct BedExtras {
    /// Extra keys for the generated `[listen]` section, one per line, e.g.
    /// `max_message_size = "1kB"`.
    pub listen: String,
    /// Files written into the bed's directory before the node starts
    /// (relative names), e.g. a TLS certificate and key.
    pub files: Vec<(String, Vec<u8>)>,
}

impl TestBed {
    /// [`TestBed::start_with`], plus extra `[listen]` keys and files written
    /// into the bed's directory before the config is loaded.
    pub async fn start_custom(spec: BedSpec, extras: BedExtras) -> anyhow::Result<TestBed> {
        init_tracing();
        let cluster = PgCluster::start(spec.cluster.clone()).await.context("starting PostgreSQL")?;
        cluster.create_user(APP_USER, APP_PASSWORD, true).await?;
        let dir = tempfile::tempdir()?;
        for (name, contents) in &extras.files {
            std::fs::write(dir.path().join(name), contents)?;
        }
        let secret = match spec.client_auth {
            "trust" => String::new(),
            method => format!("secret = \"{}\"\n", proxy::auth::make_secret(method.parse()?, APP_USER, APP_PASSWORD)),
        };
        let users = format!(
            "[[user]]\nname = \"{APP_USER}\"\nauth = \"{}\"\n{secret}backend_password = \"{APP_PASSWORD}\"\nadmin = true\n\n{}",
            spec.client_auth, spec.extra_users
        );
        std::fs::write(dir.path().join("users.toml"), users)?;
        let servers = if spec.routed {
            routed_topology(&cluster, &spec)
        } else {
            format!("[backend]\naddress = \"{}\"\n", server_address(cluster.primary(), spec.over_unix))
        };
        let managed: String = if spec.managed {
            cluster
                .servers()
                .iter()
                .map(|s| format!("[[managed]]\nnode = \"{}\"\ndata_dir = \"{}\"\n\n", s.name(), s.data_dir().display()))
                .collect()
        } else {
            String::new()
        };
        let config_text = format!(
            "[node]\nname = \"test\"\n\n[listen]\naddress = \"127.0.0.1:0\"\n{}\n\n[auth]\nusers_file = \"users.toml\"\n\n{servers}\n{}\n{managed}",
            extras.listen, spec.extra_config
        );
        std::fs::write(dir.path().join("meridian.toml"), &config_text)?;
        let config = Config::load(&dir.path().join("meridian.toml"))?;
        let node = proxy::Node::bind(config).await?;
        let addr = node.local_addr()?;
        let handle = node.handle();
        let serve = tokio::spawn(node.serve());
        Ok(TestBed { cluster, addr, node: handle, dir, serve: Some(serve) })
    }

    /// Connect through Meridian with `config` and drive the connection with
    /// `poll_message`, so notices, notifications and ParameterStatus values
    /// can be observed.
    pub async fn connect_pumped(&self, config: &tokio_postgres::Config) -> anyhow::Result<Pumped> {
        let (client, conn) = config.connect(tokio_postgres::NoTls).await?;
        Ok(Pumped::new(client, conn))
    }

    /// Run `sql` on the primary as the superuser (not through Meridian) and
    /// return the first column of the first row.
    pub async fn direct_value(&self, sql: &str) -> anyhow::Result<Option<String>> {
        Ok(self.cluster.primary().query_value(sql).await?)
    }
}

/// A one-shard `[topology]` of `cluster` (its primary and replicas) with
/// probes as the app user.
fn routed_topology(cluster: &PgCluster, spec: &BedSpec) -> String {
    let probe_interval = spec.probe_interval;
    let mut t = format!(
        "[health]\nuser = \"{APP_USER}\"\nprobe_interval = \"{probe_interval}\"\n\n[topology]\n\n[[topology.shard]]\nname = \"s1\"\n\n"
    );
    for server in cluster.servers() {
        let (role, region) = if server.name() == cluster.primary().name() {
            ("primary", spec.primary_region)
        } else {
            ("replica", "local")
        };
        t.push_str(&format!(
            "[[topology.node]]\nname = \"{}\"\naddress = \"{}\"\nshard = \"s1\"\nregion = \"{region}\"\nrole = \"{role}\"\n\n",
            server.name(),
            server_address(server, spec.over_unix)
        ));
    }
    t
}

/// How Meridian's config names `server`: `host:port`, or its socket
/// directory and port.
fn server_address(server: &harness::PgServer, over_unix: bool) -> String {
    if over_unix { format!("{}:{}", server.socket_dir().display(), server.port()) } else { server.addr().to_string() }
}

/// A tokio-postgres client whose connection is driven by a task that
/// collects its asynchronous messages.
pub struct Pumped {
    pub client: tokio_postgres::Client,
    /// Notices and notifications, in arrival order.
    pub messages: tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
    conn: std::sync::Arc<parking_lot::Mutex<PlainConnection>>,
    /// The connection's end: `Ok` on a clean close, else the error that ended it.
    pub ended: JoinHandle<Result<(), tokio_postgres::Error>>,
}

type PlainConnection = tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>;

impl Pumped {
    fn new(client: tokio_postgres::Client, conn: PlainConnection) -> Pumped {
        let conn = std::sync::Arc::new(parking_lot::Mutex::new(conn));
        let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
        let driven = conn.clone();
        let ended = tokio::spawn(async move {
            loop {
                let next = std::future::poll_fn(|cx| driven.lock().poll_message(cx)).await;
                match next {
                    Some(Ok(m)) => {
                        let _ = tx.send(m);
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Ok(()),
                }
            }
        });
        Pumped { client, messages, conn, ended }
    }

    /// The latest value the server reported for a runtime parameter
    /// (ParameterStatus), as the driver saw it.
    pub fn parameter(&self, name: &str) -> Option<String> {
        self.conn.lock().parameter(name).map(str::to_owned)
    }

    /// The next notice or notification, waiting at most [`PATIENCE`].
    pub async fn next_message(&mut self) -> anyhow::Result<tokio_postgres::AsyncMessage> {
        tokio::time::timeout(PATIENCE, self.messages.recv())
            .await
            .context("no asynchronous message arrived")?
            .context("connection ended before an asynchronous message arrived")
    }
}

/// The SQLSTATE of a tokio-postgres error, if the server (or Meridian) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// `fut`, or an error naming `what` after [`PATIENCE`].
pub async fn patiently<T>(what: &str, fut: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(PATIENCE, fut).await.with_context(|| format!("{what}: no result within {PATIENCE:?}"))
}

/// Retry `f` until it succeeds or [`PATIENCE`] runs out (for conditions that
/// become true asynchronously, such as a backend going away).
pub async fn eventually<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let last = f().await;
        if let Ok(true) = last {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: not true within {PATIENCE:?} (last: {last:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Run `SELECT pg_sleep(60)` on `client`, wait until `server` shows it
/// running, cancel it with the client's cancel token (through whatever
/// `client` is connected to), and require `57014`. Returns the client for
/// more checks. `tag` marks the statement so it can be found in
/// `pg_stat_activity`.
pub async fn cancel_a_running_sleep(
    client: tokio_postgres::Client,
    server: &harness::PgServer,
    tag: &str,
) -> anyhow::Result<tokio_postgres::Client> {
    let token = client.cancel_token();
    let sql = format!("SELECT pg_sleep(60) /* {tag} */");
    let running = tokio::spawn(async move {
        let r = client.simple_query(&sql).await;
        (r.map(drop), client)
    });
    let active = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%{tag}%' \
         AND pid <> pg_backend_pid()"
    );
    eventually("pg_sleep running", || async { Ok(server.query_value(&active).await?.as_deref() == Some("1")) }).await?;
    token.cancel_query(tokio_postgres::NoTls).await?;
    let (result, client) = patiently("the cancelled query (cancel not delivered?)", running).await??;
    let err = result.err().context("the cancelled query succeeded")?;
    anyhow::ensure!(sqlstate(&err) == Some("57014"), "expected 57014, got {err}");
    Ok(client)
}

/// An ErrorResponse or NoticeResponse seen by a [`RawConn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: String,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

impl std::error::Error for PgError {}

/// One backend message: its tag and body (without the length).
#[derive(Debug, Clone)]
pub struct BackendMsg {
    pub tag: u8,
    pub body: bytes::Bytes,
}

impl BackendMsg {
    /// The fields of an ErrorResponse/NoticeResponse.
    pub fn error(&self) -> Option<PgError> {
        if self.tag != b'E' && self.tag != b'N' {
            return None;
        }
        let mut e = PgError { severity: String::new(), code: String::new(), message: String::new() };
        let mut rest = &self.body[..];
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let end = tail.iter().position(|b| *b == 0)?;
            let value = String::from_utf8_lossy(&tail[..end]).into_owned();
            match kind {
                b'S' => e.severity = value,
                b'C' => e.code = value,
                b'M' => e.message = value,
                _ => {}
            }
            rest = &tail[end + 1..];
        }
        Some(e)
    }

    /// The columns of a DataRow, as text.
    pub fn data_row(&self) -> Option<Vec<Option<String>>> {
        if self.tag != b'D' || self.body.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([self.body[0], self.body[1]]) as usize;
        let mut at = 2;
        let mut cols = Vec::with_capacity(n);
        for _ in 0..n {
            let len = i32::from_be_bytes(self.body.get(at..at + 4)?.try_into().ok()?);
            at += 4;
            if len < 0 {
                cols.push(None);
            } else {
                let len = len as usize;
                cols.push(Some(String::from_utf8_lossy(self.body.get(at..at + len)?).into_owned()));
                at += len;
            }
        }
        Some(cols)
    }
}

/// What a [`RawConn`] saw up to a ReadyForQuery.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub rows: Vec<Vec<Option<String>>>,
    pub errors: Vec<PgError>,
    pub notices: Vec<PgError>,
    /// Every message, ReadyForQuery included.
    pub messages: Vec<BackendMsg>,
    /// The ReadyForQuery status: `I`, `T` or `E`.
    pub status: u8,
}

impl Outcome {
    /// The first column of the first row.
    pub fn value(&self) -> Option<&str> {
        self.rows.first().and_then(|r| r.first()).and_then(|v| v.as_deref())
    }

    pub fn tags(&self) -> String {
        self.messages.iter().map(|m| m.tag as char).collect()
    }
}

/// What the server said at the end of a login.
#[derive(Debug, Clone, Default)]
pub struct LoginInfo {
    pub parameters: std::collections::BTreeMap<String, String>,
    pub pid: i32,
    pub key: i32,
}

/// A hand-driven PostgreSQL frontend over any byte stream: for bad input,
/// direct TLS, startup parameters tokio-postgres cannot send, and exact
/// message sequences.
pub struct RawConn<S = tokio::net::TcpStream> {
    pub stream: S,
    buf: bytes::BytesMut,
}

impl RawConn<tokio::net::TcpStream> {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = patiently("connecting", tokio::net::TcpStream::connect(addr)).await??;
        stream.set_nodelay(true)?;
        Ok(RawConn::new(stream))
    }
}

/// Frontend message builders for [`RawConn::send`].
pub mod fe {
    use bytes::{BufMut, BytesMut};

    /// A tagged message with `body`.
    pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(body.len() + 5);
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        b.to_vec()
    }

    fn cstrs(parts: &[&[u8]]) -> Vec<u8> {
        let mut v = Vec::new();
        for p in parts {
            v.extend_from_slice(p);
            v.push(0);
        }
        v
    }

    pub fn query(sql: &str) -> Vec<u8> {
        msg(b'Q', &cstrs(&[sql.as_bytes()]))
    }

    /// Parse with no parameter types.
    pub fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = cstrs(&[name.as_bytes(), sql.as_bytes()]);
        body.extend_from_slice(&0i16.to_be_bytes());
        msg(b'P', &body)
    }

    /// Bind with text parameters and text results.
    pub fn bind(portal: &str, stmt: &str, params: &[Option<&str>]) -> Vec<u8> {
        let mut body = cstrs(&[portal.as_bytes(), stmt.as_bytes()]);
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&(params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        body.extend_from_slice(&0i16.to_be_bytes());
        msg(b'B', &body)
    }

    pub fn describe_statement(name: &str) -> Vec<u8> {
        let mut body = vec![b'S'];
        body.extend_from_slice(&cstrs(&[name.as_bytes()]));
        msg(b'D', &body)
    }

    pub fn execute(portal: &str) -> Vec<u8> {
        let mut body = cstrs(&[portal.as_bytes()]);
        body.extend_from_slice(&0i32.to_be_bytes());
        msg(b'E', &body)
    }

    pub fn close_statement(name: &str) -> Vec<u8> {
        let mut body = vec![b'S'];
        body.extend_from_slice(&cstrs(&[name.as_bytes()]));
        msg(b'C', &body)
    }

    pub fn sync() -> Vec<u8> {
        msg(b'S', &[])
    }

    pub fn flush() -> Vec<u8> {
        msg(b'H', &[])
    }

    pub fn terminate() -> Vec<u8> {
        msg(b'X', &[])
    }

    pub fn copy_data(data: &[u8]) -> Vec<u8> {
        msg(b'd', data)
    }

    pub fn copy_done() -> Vec<u8> {
        msg(b'c', &[])
    }

    /// An untagged startup packet with protocol 3.0 and `params`.
    pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in params {
            body.extend_from_slice(&cstrs(&[k.as_bytes(), v.as_bytes()]));
        }
        body.push(0);
        let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    /// An SSLRequest.
    pub fn ssl_request() -> Vec<u8> {
        let mut out = 8i32.to_be_bytes().to_vec();
        out.extend_from_slice(&80877103i32.to_be_bytes());
        out
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> RawConn<S> {
    pub fn new(stream: S) -> Self {
        RawConn { stream, buf: bytes::BytesMut::with_capacity(8192) }
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        use tokio::io::AsyncWriteExt;
        patiently("sending", async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await??;
        Ok(())
    }

    /// The next message, `None` at end of stream (a reset counts as the end),
    /// failing after `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> anyhow::Result<Option<BackendMsg>> {
        use bytes::Buf;
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                anyhow::ensure!(len >= 4, "bad length {len} from the server");
                let total = len as usize + 1;
                if self.buf.len() >= total {
                    let tag = self.buf[0];
                    self.buf.advance(5);
                    let body = self.buf.split_to(total - 5).freeze();
                    return Ok(Some(BackendMsg { tag, body }));
                }
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf))
                .await
                .with_context(|| format!("no message from the server within {wait:?}"))?;
            match read {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe) => {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The next message, `None` at end of stream, waiting at most [`PATIENCE`].
    pub async fn recv(&mut self) -> anyhow::Result<Option<BackendMsg>> {
        self.recv_within(PATIENCE).await
    }

    /// Single-byte answer to SSLRequest/GSSENCRequest.
    pub async fn recv_byte(&mut self) -> anyhow::Result<u8> {
        use tokio::io::AsyncReadExt;
        anyhow::ensure!(self.buf.is_empty(), "unexpected buffered bytes before a one-byte answer");
        Ok(patiently("one-byte answer", self.stream.read_u8()).await??)
    }

    /// Read until the server closes the connection; returns what it sent.
    pub async fn until_closed(&mut self) -> anyhow::Result<Vec<BackendMsg>> {
        let mut seen = Vec::new();
        while let Some(m) = self.recv().await? {
            seen.push(m);
        }
        Ok(seen)
    }

    /// Read up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> anyhow::Result<Outcome> {
        let mut out = Outcome::default();
        loop {
            let m = self.recv().await?.with_context(|| {
                format!("connection closed before ReadyForQuery (saw {:?}, errors {:?})", out.tags(), out.errors)
            })?;
            match m.tag {
                b'D' => out.rows.push(m.data_row().context("malformed DataRow")?),
                b'E' => out.errors.push(m.error().context("malformed ErrorResponse")?),
                b'N' => out.notices.push(m.error().context("malformed NoticeResponse")?),
                b'Z' => out.status = m.body.first().copied().unwrap_or(0),
                _ => {}
            }
            let done = m.tag == b'Z';
            out.messages.push(m);
            if done {
                return Ok(out);
            }
        }
    }

    /// A simple query, answered up to ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> anyhow::Result<Outcome> {
        self.send(&fe::query(sql)).await?;
        self.until_ready().await
    }

    /// Send a startup packet, then authenticate as `user` with `password`
    /// (SCRAM-SHA-256, md5, cleartext or trust), up to ReadyForQuery.
    /// A refusal is returned as a [`PgError`] (use `downcast_ref`).
    pub async fn login(&mut self, params: &[(&str, &str)], password: &str) -> anyhow::Result<LoginInfo> {
        self.send(&fe::startup(params)).await?;
        let user = params.iter().find(|(k, _)| *k == "user").map(|(_, v)| *v).unwrap_or_default();
        self.authenticate(user, password).await
    }

    /// Answer authentication requests up to ReadyForQuery.
    pub async fn authenticate(&mut self, user: &str, password: &str) -> anyhow::Result<LoginInfo> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        use postgres_protocol::message::frontend;
        let mut info = LoginInfo::default();
        let mut scram: Option<ScramSha256> = None;
        loop {
            let m = self.recv().await?.context("connection closed during login")?;
            let mut out = bytes::BytesMut::new();
            match m.tag {
                b'R' => {
                    anyhow::ensure!(m.body.len() >= 4, "short authentication request");
                    let kind = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    let data = &m.body[4..];
                    match kind {
                        0 => continue,
                        3 => frontend::password_message(password.as_bytes(), &mut out)?,
                        5 => {
                            let salt: [u8; 4] = data.get(..4).context("short md5 salt")?.try_into()?;
                            let hash =
                                postgres_protocol::authentication::md5_hash(user.as_bytes(), password.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut out)?;
                        }
                        10 => {
                            let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unrequested());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().context("SASL continue before SASL start")?;
                            s.update(data)?;
                            frontend::sasl_response(s.message(), &mut out)?;
                        }
                        12 => {
                            scram.as_mut().context("SASL final before SASL start")?.finish(data)?;
                            continue;
                        }
                        k => anyhow::bail!("unsupported authentication request {k}"),
                    }
                    self.send(&out).await?;
                }
                b'E' => return Err(m.error().context("malformed ErrorResponse")?.into()),
                b'S' => {
                    let mut parts = m.body.split(|b| *b == 0);
                    let k = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    let v = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                    info.parameters.insert(k, v);
                }
                b'K' if m.body.len() == 8 => {
                    info.pid = i32::from_be_bytes([m.body[0], m.body[1], m.body[2], m.body[3]]);
                    info.key = i32::from_be_bytes([m.body[4], m.body[5], m.body[6], m.body[7]]);
                }
                b'Z' => return Ok(info),
                _ => {}
            }
        }
    }
}

/// Startup parameters for the app user on the `postgres` database.
pub fn app_startup() -> Vec<(&'static str, &'static str)> {
    vec![("user", APP_USER), ("database", "postgres")]
}

/// A user whose `pool_mode = "session"` overrides the node's default.
pub const SESSION_USER: &str = "sess";

impl TestBed {
    /// A bed with `extra_config`, plus [`SESSION_USER`] (trust, session
    /// pooling) in Meridian and PostgreSQL; returns the bed and a client
    /// config for that user.
    pub async fn with_session_user(extra_config: &str) -> anyhow::Result<(TestBed, tokio_postgres::Config)> {
        let bed = TestBed::start_with(BedSpec {
            extra_config: extra_config.into(),
            extra_users: format!(
                "[[user]]\nname = \"{SESSION_USER}\"\nauth = \"trust\"\nbackend_password = \"sess-pw\"\npool_mode = \"session\"\n"
            ),
            ..BedSpec::default()
        })
        .await?;
        bed.cluster.create_user(SESSION_USER, "sess-pw", false).await?;
        let mut config = bed.config();
        config.user(SESSION_USER);
        Ok((bed, config))
    }
}
