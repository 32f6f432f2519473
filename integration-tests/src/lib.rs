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
}

impl Default for BedSpec {
    fn default() -> Self {
        BedSpec {
            cluster: ClusterSpec::default(),
            extra_config: String::new(),
            client_auth: "scram-sha-256",
            extra_users: String::new(),
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
        init_tracing();
        let cluster = PgCluster::start(spec.cluster.clone()).await.context("starting PostgreSQL")?;
        cluster.create_user(APP_USER, APP_PASSWORD, true).await?;
        let dir = tempfile::tempdir()?;
        let secret = match spec.client_auth {
            "trust" => String::new(),
            method => format!(
                "secret = \"{}\"\n",
                proxy::auth::make_secret(method.parse()?, APP_USER, APP_PASSWORD)
            ),
        };
        let users = format!(
            "[[user]]\nname = \"{APP_USER}\"\nauth = \"{}\"\n{secret}backend_password = \"{APP_PASSWORD}\"\nadmin = true\n\n{}",
            spec.client_auth, spec.extra_users
        );
        std::fs::write(dir.path().join("users.toml"), users)?;
        let config_text = format!(
            "[node]\nname = \"test\"\n\n[listen]\naddress = \"127.0.0.1:0\"\n\n[auth]\nusers_file = \"users.toml\"\n\n[backend]\naddress = \"{}\"\n\n{}",
            cluster.primary().addr(),
            spec.extra_config
        );
        std::fs::write(dir.path().join("meridian.toml"), &config_text)?;
        let config = Config::load(&dir.path().join("meridian.toml"))?;
        let node = proxy::Node::bind(config).await?;
        let addr = node.local_addr()?;
        let handle = node.handle();
        let serve = tokio::spawn(node.serve());
        Ok(TestBed { cluster, addr, node: handle, dir, serve: Some(serve) })
    }

    /// A tokio-postgres config for the app user through Meridian.
    pub fn config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user(APP_USER)
            .password(APP_PASSWORD)
            .dbname("postgres")
            .connect_timeout(Duration::from_secs(10));
        c
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
    if !bin.exists() {
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

/// Run a program to completion with a timeout, returning its output.
pub async fn run_tool(mut cmd: tokio::process::Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{cmd:?} timed out after {timeout:?}"))??;
    Ok(out)
}
