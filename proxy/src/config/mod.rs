//! The node's configuration file (TOML): parsed into `RawConfig`, then
//! validated into [`Config`], which is all the rest of the code ever sees.
//! See docs/config.md for every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod cluster;
mod topology;
pub use cluster::{ClusterConfig, PeerConfig};
pub use topology::HealthConfig;
use topology::{RawHealth, RawTopology};

use crate::auth::PoolMode;

/// A broken rule in the configuration, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{key}: invalid duration {value:?} (use a number with a unit: ms, s, m, h)")]
    Duration { key: &'static str, value: String },
    #[error("{key}: invalid size {value:?} (use a number with a unit: B, kB, MB, GB)")]
    Size { key: &'static str, value: String },
    #[error("{key}: invalid address {value:?}: {reason}")]
    Address { key: &'static str, value: String, reason: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("tls.mode = {mode:?} needs tls.cert and tls.key")]
    TlsFilesMissing { mode: &'static str },
    #[error("tls: {0}")]
    Tls(String),
    #[error("users file: {0}")]
    Users(#[from] crate::auth::UsersError),
}

/// Default `listen.max_client_connections`: well above what a node serves
/// in practice, bounded so a connection flood cannot exhaust memory.
fn default_max_client_connections() -> usize {
    10_000
}
/// Default `listen.startup_timeout`: time from accept to a finished login.
fn default_startup_timeout() -> String {
    "10s".into()
}
/// Default `listen.idle_in_transaction_timeout`: off.
fn default_idle_in_transaction_timeout() -> String {
    "0s".into()
}
/// Default `listen.max_message_size`: larger than any statement an
/// application sends, far below PostgreSQL's 1 GB ceiling.
fn default_max_message_size() -> String {
    "256MB".into()
}
/// Default `pool.mode`: transaction pooling, which serves the most
/// clients per server connection.
fn default_pool_mode() -> PoolMode {
    PoolMode::Transaction
}
/// Default `pool.size`: server connections per (server, database, user).
fn default_pool_size() -> usize {
    20
}
/// Default `pool.checkout_timeout`: how long a client waits for a server
/// connection before it gets an error.
fn default_checkout_timeout() -> String {
    "5s".into()
}
/// Default `pool.queue_limit`: clients allowed to wait for one pool.
fn default_queue_limit() -> usize {
    10_000
}
/// Default `pool.idle_timeout`: idle server connections above `min_idle`
/// are closed after this.
fn default_idle_timeout() -> String {
    "10m".into()
}
/// Default `pool.max_lifetime`: server connections are replaced after this.
fn default_max_lifetime() -> String {
    "1h".into()
}
/// Default `pool.connect_timeout`: to open and log in a server connection.
fn default_connect_timeout() -> String {
    "5s".into()
}
/// Default `shutdown.grace`: how long SIGTERM waits for transactions.
fn default_grace() -> String {
    "30s".into()
}
/// Default `node.worker_threads` (`0` in the file): half the cores, at
/// least one. A proxy shares its host with clients or PostgreSQL more often
/// than not, and measured on 2 cores one thread (no cross-thread wake-ups)
/// gives more throughput per CPU than two (docs/benchmarks.md).
fn default_worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}
/// Default `node.busy_poll`: off. Polling before sleeping spends CPU to
/// save the wake-up of an idle CPU on every hand-over ([`crate::busy_poll`]).
fn default_busy_poll() -> String {
    "0".into()
}
/// Default `node.region`.
fn default_region() -> String {
    "local".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawConfig {
    node: RawNode,
    listen: RawListen,
    #[serde(default)]
    tls: RawTls,
    auth: RawAuth,
    #[serde(default)]
    pool: RawPool,
    backend: Option<RawBackend>,
    topology: Option<RawTopology>,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    shutdown: RawShutdown,
    cluster: Option<cluster::RawCluster>,
    http: Option<RawHttp>,
    #[serde(default)]
    managed: Vec<RawManaged>,
}

/// `[[managed]]`: a PostgreSQL server on this host that this node may
/// kill (drills), stop, start and rewind (`REJOIN NODE`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawManaged {
    node: String,
    data_dir: PathBuf,
    bin_dir: Option<PathBuf>,
}

/// `[http]`: the node's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawHttp {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawNode {
    name: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    worker_threads: usize,
    #[serde(default = "default_busy_poll")]
    busy_poll: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawListen {
    address: String,
    #[serde(default = "default_max_client_connections")]
    max_client_connections: usize,
    #[serde(default = "default_startup_timeout")]
    startup_timeout: String,
    #[serde(default = "default_idle_in_transaction_timeout")]
    idle_in_transaction_timeout: String,
    #[serde(default = "default_max_message_size")]
    max_message_size: String,
    unix_socket_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawTls {
    #[serde(default)]
    mode: TlsMode,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Whether clients may or must use TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// No TLS: SSLRequest is answered 'N'.
    #[default]
    Disable,
    /// TLS offered; plaintext accepted.
    Allow,
    /// TLS required; plaintext startups are refused.
    Require,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawAuth {
    users_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawPool {
    #[serde(default = "default_pool_mode")]
    mode: PoolMode,
    #[serde(default = "default_pool_size")]
    size: usize,
    #[serde(default)]
    min_idle: usize,
    #[serde(default = "default_checkout_timeout")]
    checkout_timeout: String,
    #[serde(default = "default_queue_limit")]
    queue_limit: usize,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    #[serde(default = "default_max_lifetime")]
    max_lifetime: String,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            mode: default_pool_mode(),
            size: default_pool_size(),
            min_idle: 0,
            checkout_timeout: default_checkout_timeout(),
            queue_limit: default_queue_limit(),
            idle_timeout: default_idle_timeout(),
            max_lifetime: default_max_lifetime(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawBackend {
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawShutdown {
    #[serde(default = "default_grace")]
    grace: String,
}

impl Default for RawShutdown {
    fn default() -> Self {
        RawShutdown { grace: default_grace() }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeConfig,
    pub listen: ListenConfig,
    pub tls: TlsConfig,
    pub users_file: PathBuf,
    pub pool: PoolConfig,
    /// Regions, shards, PostgreSQL nodes, sharding rules: from `[topology]`,
    /// or the one-shard topology of `[backend] address`. With `[cluster]`,
    /// only the seed of a new cluster (and possibly empty: a node that
    /// joins an existing cluster needs none).
    pub topology: router::topology::Topology,
    /// `[cluster]`: this node is a member of a Raft group that holds the
    /// topology.
    pub cluster: Option<ClusterConfig>,
    /// `[http] listen`: where `/metrics`, `/healthz` and `/readyz` are
    /// served; `None`: not served. Changes need a restart.
    pub http_listen: Option<SocketAddr>,
    pub health: HealthConfig,
    pub shutdown_grace: Duration,
    /// `[[managed]]`: the PostgreSQL servers on this host that this node
    /// may act on directly ([`Config::local_server`]). Reloaded with the
    /// rest: a reload replaces the list.
    pub managed: Vec<ManagedServer>,
}

/// One `[[managed]]` entry, validated: a PostgreSQL server on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedServer {
    /// The node's name in the topology.
    pub node: String,
    /// Its data directory (absolute).
    pub data_dir: PathBuf,
    /// Its binaries: as configured, or found when the file was loaded
    /// (`pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`).
    pub bin_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub region: String,
    /// Runtime threads serving clients; 1 means a single-threaded runtime.
    pub worker_threads: usize,
    /// How long a runtime thread out of work polls for events before it
    /// sleeps, at most ([`crate::busy_poll`]); zero: it sleeps at once.
    pub busy_poll: Duration,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Address for PostgreSQL clients; changes need a restart.
    pub address: SocketAddr,
    pub max_client_connections: usize,
    pub startup_timeout: Duration,
    /// `None` when off.
    pub idle_in_transaction_timeout: Option<Duration>,
    pub max_message_size: usize,
    /// Also accept clients on the Unix-domain socket
    /// `<dir>/.s.PGSQL.<port of address>`, as PostgreSQL does (`psql -h
    /// <dir> -p <port>`). Changes need a restart.
    pub unix_socket_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub mode: TlsMode,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// Pool settings; all of them can change on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub mode: PoolMode,
    pub size: usize,
    pub min_idle: usize,
    pub checkout_timeout: Duration,
    pub queue_limit: usize,
    pub idle_timeout: Duration,
    pub max_lifetime: Duration,
    pub connect_timeout: Duration,
}

impl Config {
    /// Read, parse and validate a config file. Relative paths in it are
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: path.into(), source },
            e => e,
        })
    }

    /// Parse and validate config text; `base` resolves relative paths.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: PathBuf::new(), source: Box::new(e) })?;
        raw.validate(base)
    }
}

impl Config {
    /// The `[[managed]]` server of topology node `node`, if this Meridian
    /// node manages it.
    pub fn local_server(&self, node: &str) -> Option<failover::local::LocalServer> {
        self.managed
            .iter()
            .find(|m| m.node == node)
            .map(|m| failover::local::LocalServer::new(&m.node, &m.data_dir, &m.bin_dir))
    }
}

/// Validates the `[[managed]]` entries. A missing `bin_dir` is looked up
/// once (`failover::local::find_bin_dir`, which runs `pg_config`).
fn validate_managed(raw: Vec<RawManaged>) -> Result<Vec<ManagedServer>, ConfigError> {
    let mut found: Option<PathBuf> = None;
    let mut managed: Vec<ManagedServer> = Vec::with_capacity(raw.len());
    for entry in raw {
        let node = entry.node.trim().to_owned();
        if node.is_empty() {
            return Err(ConfigError::Invalid { key: "managed.node", reason: "must not be empty".into() });
        }
        if managed.iter().any(|m| m.node == node) {
            return Err(ConfigError::Invalid {
                key: "managed.node",
                reason: format!("{node:?} is listed twice; one [[managed]] entry per server"),
            });
        }
        if !entry.data_dir.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "managed.data_dir",
                reason: format!("{} (node {node:?}) must be an absolute path", entry.data_dir.display()),
            });
        }
        let bin_dir = match entry.bin_dir {
            Some(dir) if dir.is_absolute() => dir,
            Some(dir) => {
                return Err(ConfigError::Invalid {
                    key: "managed.bin_dir",
                    reason: format!("{} (node {node:?}) must be an absolute path", dir.display()),
                });
            }
            None => match &found {
                Some(dir) => dir.clone(),
                None => {
                    let dir = failover::local::find_bin_dir().map_err(|e| ConfigError::Invalid {
                        key: "managed.bin_dir",
                        reason: format!("not given for node {node:?}, and {e}"),
                    })?;
                    found = Some(dir.clone());
                    dir
                }
            },
        };
        managed.push(ManagedServer { node, data_dir: entry.data_dir, bin_dir });
    }
    Ok(managed)
}

impl RawConfig {
    fn validate(self, base: &Path) -> Result<Config, ConfigError> {
        if self.node.name.trim().is_empty() {
            return Err(ConfigError::Invalid { key: "node.name", reason: "must not be empty".into() });
        }
        let busy_poll = parse_duration("node.busy_poll", &self.node.busy_poll)?;
        if busy_poll > crate::busy_poll::MAX_BUDGET {
            return Err(ConfigError::Invalid {
                key: "node.busy_poll",
                reason: format!(
                    "at most {}us (a longer poll no longer saves a wake-up; it only burns the CPU)",
                    crate::busy_poll::MAX_BUDGET.as_micros()
                ),
            });
        }
        let address = self.listen.address.parse::<SocketAddr>().map_err(|e| ConfigError::Address {
            key: "listen.address",
            value: self.listen.address.clone(),
            reason: e.to_string(),
        })?;
        if self.listen.max_client_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "listen.max_client_connections",
                reason: "must be at least 1".into(),
            });
        }
        let max_message_size = parse_size("listen.max_message_size", &self.listen.max_message_size)?;
        if max_message_size < 1024 {
            return Err(ConfigError::Invalid { key: "listen.max_message_size", reason: "must be at least 1kB".into() });
        }
        let idle_tx = parse_duration("listen.idle_in_transaction_timeout", &self.listen.idle_in_transaction_timeout)?;
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let unix_socket_dir = self.listen.unix_socket_dir.map(resolve);
        let tls = TlsConfig { mode: self.tls.mode, cert: self.tls.cert.map(resolve), key: self.tls.key.map(resolve) };
        if tls.mode != TlsMode::Disable && (tls.cert.is_none() || tls.key.is_none()) {
            return Err(ConfigError::TlsFilesMissing {
                mode: if tls.mode == TlsMode::Allow { "allow" } else { "require" },
            });
        }
        let pool = PoolConfig {
            mode: self.pool.mode,
            size: self.pool.size,
            min_idle: self.pool.min_idle,
            checkout_timeout: parse_duration("pool.checkout_timeout", &self.pool.checkout_timeout)?,
            queue_limit: self.pool.queue_limit,
            idle_timeout: parse_duration("pool.idle_timeout", &self.pool.idle_timeout)?,
            max_lifetime: parse_duration("pool.max_lifetime", &self.pool.max_lifetime)?,
            connect_timeout: parse_duration("pool.connect_timeout", &self.pool.connect_timeout)?,
        };
        if pool.size == 0 {
            return Err(ConfigError::Invalid { key: "pool.size", reason: "must be at least 1".into() });
        }
        if pool.min_idle > pool.size {
            return Err(ConfigError::Invalid {
                key: "pool.min_idle",
                reason: format!("{} is larger than pool.size ({})", pool.min_idle, pool.size),
            });
        }
        if pool.checkout_timeout.is_zero() || pool.connect_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "pool.checkout_timeout",
                reason: "checkout_timeout and connect_timeout must be above zero".into(),
            });
        }
        let topology = match (self.backend, self.topology) {
            (Some(b), None) => {
                if let Err(reason) = crate::backend::ServerAddr::parse(&b.address) {
                    return Err(ConfigError::Address { key: "backend.address", value: b.address, reason });
                }
                topology::single_primary(&b.address, &self.node.region)
            }
            (None, Some(t)) => t.validate()?,
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "backend",
                    reason: "give either [backend] (one primary) or [topology], not both".into(),
                });
            }
            (None, None) if self.cluster.is_some() => topology::empty(&self.node.region),
            (None, None) => {
                return Err(ConfigError::Invalid {
                    key: "backend",
                    reason: "missing: give [backend] address (one primary) or a [topology]".into(),
                });
            }
        };
        let health = self.health.validate()?;
        let managed = validate_managed(self.managed)?;
        let cluster = self.cluster.map(|c| c.validate(base, address)).transpose()?;
        let http_listen = match self.http {
            Some(h) => Some(h.listen.parse::<SocketAddr>().map_err(|e| ConfigError::Address {
                key: "http.listen",
                value: h.listen.clone(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(Config {
            cluster,
            http_listen,
            node: NodeConfig {
                name: self.node.name,
                region: self.node.region,
                worker_threads: match self.node.worker_threads {
                    0 => default_worker_threads(),
                    n => n,
                },
                busy_poll,
            },
            listen: ListenConfig {
                address,
                max_client_connections: self.listen.max_client_connections,
                startup_timeout: parse_duration("listen.startup_timeout", &self.listen.startup_timeout)?,
                idle_in_transaction_timeout: (!idle_tx.is_zero()).then_some(idle_tx),
                max_message_size,
                unix_socket_dir,
            },
            tls,
            users_file: resolve(self.auth.users_file),
            pool,
            topology,
            health,
            shutdown_grace: parse_duration("shutdown.grace", &self.shutdown.grace)?,
            managed,
        })
    }
}

/// Parse a duration such as `500ms`, `10s`, `5m`, `1h` (`0` alone is zero).
pub fn parse_duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let err = || ConfigError::Duration { key, value: value.to_owned() };
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    let split = v.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(err)?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit.trim() {
        "us" | "µs" => n / 1_000_000.0,
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(err());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parse a size such as `8kB`, `64MB`, `1GB` or a plain byte count.
pub fn parse_size(key: &'static str, value: &str) -> Result<usize, ConfigError> {
    let err = || ConfigError::Size { key, value: value.to_owned() };
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: usize = num.parse().map_err(|_| err())?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [node]
        name = "n1"
        [listen]
        address = "127.0.0.1:6432"
        [auth]
        users_file = "users.toml"
        [backend]
        address = "127.0.0.1:5432"
    "#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/meridian")).unwrap();
        assert_eq!(c.pool.size, 20);
        assert_eq!(c.pool.mode, PoolMode::Transaction);
        assert_eq!(c.users_file, PathBuf::from("/etc/meridian/users.toml"));
        assert_eq!(c.listen.idle_in_transaction_timeout, None);
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn unix_sockets_on_both_legs() {
        let text = MINIMAL
            .replace("127.0.0.1:5432", "/var/run/postgresql:5432")
            .replace("address = \"127.0.0.1:6432\"", "address = \"127.0.0.1:6432\"\nunix_socket_dir = \"run\"");
        let c = Config::parse(&text, Path::new("/etc/meridian")).unwrap();
        assert_eq!(c.listen.unix_socket_dir, Some(PathBuf::from("/etc/meridian/run")));
        assert_eq!(c.topology.nodes[0].address, "/var/run/postgresql:5432");
        let bad = MINIMAL.replace("127.0.0.1:5432", "/var/run/postgresql:pg");
        let e = Config::parse(&bad, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("backend.address") && e.contains("not a number"), "{e}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let text = MINIMAL.replace("[pool]", "") + "\n[pool]\nsise = 3\n";
        let e = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("sise"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let text = MINIMAL.to_owned() + "\n[pool]\ncheckout_timeout = \"5 parsecs\"\n";
        let e = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("pool.checkout_timeout"), "{e}");
        let text = MINIMAL.to_owned() + "\n[pool]\nsize = 2\nmin_idle = 3\n";
        let e = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("pool.min_idle"), "{e}");
        let text = MINIMAL.replace("127.0.0.1:6432", "nowhere");
        let e = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("listen.address"), "{e}");
        let text = MINIMAL.to_owned() + "\n[tls]\nmode = \"require\"\n";
        let e = Config::parse(&text, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("tls.cert"), "{e}");
    }

    #[test]
    fn managed_servers_are_validated() {
        let text = MINIMAL.to_owned()
            + "\n[[managed]]\nnode = \"pg-1\"\ndata_dir = \"/var/lib/postgresql/15/main\"\n\
               bin_dir = \"/usr/lib/postgresql/15/bin\"\n\
               [[managed]]\nnode = \"pg-2\"\ndata_dir = \"/srv/pg2\"\n";
        let c = Config::parse(&text, Path::new(".")).unwrap();
        assert_eq!(
            c.managed[0],
            ManagedServer {
                node: "pg-1".into(),
                data_dir: "/var/lib/postgresql/15/main".into(),
                bin_dir: "/usr/lib/postgresql/15/bin".into(),
            }
        );
        // Omitted: found on this host (PostgreSQL is installed wherever
        // the tests run).
        assert!(c.managed[1].bin_dir.join("pg_ctl").is_file(), "{:?}", c.managed[1]);
        let local = c.local_server("pg-1").unwrap();
        assert_eq!((local.node.as_str(), local.data_dir.as_path()), ("pg-1", Path::new("/var/lib/postgresql/15/main")));
        assert_eq!(local.bin_dir, Path::new("/usr/lib/postgresql/15/bin"));
        assert!(c.local_server("pg-3").is_none());
        assert!(Config::parse(MINIMAL, Path::new(".")).unwrap().managed.is_empty(), "optional");

        let entry = |body: &str| MINIMAL.to_owned() + "\n[[managed]]\n" + body;
        let e = Config::parse(&entry("node = \"a\"\ndata_dir = \"/d\"\nbindir = \"/b\"\n"), Path::new("."));
        assert!(e.unwrap_err().to_string().contains("bindir"));
        let e = Config::parse(&entry("node = \"a\"\ndata_dir = \"data\"\nbin_dir = \"/b\"\n"), Path::new("."));
        let e = e.unwrap_err().to_string();
        assert!(e.contains("managed.data_dir") && e.contains("absolute"), "{e}");
        let twice = entry("node = \"a\"\ndata_dir = \"/d1\"\nbin_dir = \"/b\"\n")
            + "[[managed]]\nnode = \"a\"\ndata_dir = \"/d2\"\nbin_dir = \"/b\"\n";
        let e = Config::parse(&twice, Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("managed.node") && e.contains("\"a\""), "{e}");
        let e = Config::parse(&entry("data_dir = \"/d\"\n"), Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("node"), "{e}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("k", "500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("k", "1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("k", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("k", "0").unwrap(), Duration::ZERO);
        assert!(parse_duration("k", "10").is_err());
        assert!(parse_duration("k", "s").is_err());
        assert_eq!(parse_size("k", "64MB").unwrap(), 64 << 20);
        assert_eq!(parse_size("k", "1024").unwrap(), 1024);
        assert!(parse_size("k", "1TB").is_err());
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../meridian.example.toml");
        Config::parse(text, Path::new(".")).unwrap();
    }

    /// The commented `[topology]` example, uncommented in place of `[backend]`.
    #[test]
    fn example_topology_parses() {
        let text = include_str!("../../../meridian.example.toml");
        let (head, tail) = text.split_once("[backend]").unwrap();
        let after_backend = tail.split_once("# Instead of [backend]").unwrap().1.split_once('\n').unwrap().1;
        let mut uncommented = String::from(head);
        for line in after_backend.lines() {
            let is_key = |l: &str| {
                l.split_once(" = ")
                    .is_some_and(|(k, _)| k.trim().chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            };
            match line.strip_prefix("# ") {
                Some(l) if l.starts_with('[') || is_key(l) => uncommented.push_str(l),
                _ => uncommented.push_str(line),
            }
            uncommented.push('\n');
        }
        let c = Config::parse(&uncommented, Path::new(".")).unwrap();
        assert_eq!(c.topology.shards.len(), 2);
        assert_eq!(c.topology.tables[0].table, "owners");
        assert_eq!(c.health.user.as_deref(), Some("app"));
    }
}
