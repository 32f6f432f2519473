//! One Meridian node: the listener, the tasks it owns, the state its client
//! sessions share, reload and shutdown.
//!
//! Shutdown has two stages. [`NodeHandle::shutdown`] (SIGTERM) stops
//! accepting and ends idle client sessions with `57P01`; sessions in a
//! transaction finish it and then end. After `shutdown.grace`, or at once
//! with [`NodeHandle::kill`] (SIGINT), every session is cut.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::BytesMut;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use router::topology::Topology;
use tokio::sync::watch;

use crate::admin::RouteCounters;
use crate::auth::{MockSecret, Users};
use crate::cancel::CancelRegistry;
use crate::clients::Clients;
use crate::cluster::Cluster;
use crate::config::{Config, ConfigError, PoolConfig};
use crate::error::{Error, write_error};
use crate::handshake::Accepted;
use crate::health::{Health, Monitor, ProbeLogin};
use crate::local_socket::LocalListener;
use crate::pool::Pools;
use crate::session::route::AnalysisCache;
use crate::wire::messages::Severity;

/// How often pools are checked for idle, expired and missing connections.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(1);

/// State shared by every session of the node.
pub struct Shared {
    pub(crate) config: ArcSwap<Config>,
    pub(crate) pool_config: ArcSwap<PoolConfig>,
    pub(crate) users: ArcSwap<Users>,
    pub(crate) tls: ArcSwap<Option<TlsAcceptor>>,
    pub(crate) pools: Pools,
    pub(crate) cancels: Arc<CancelRegistry>,
    pub(crate) mock: MockSecret,
    /// Cancelled on SIGTERM: idle sessions end.
    pub(crate) drain: CancellationToken,
    /// Cancelled when the grace period is over: every session ends.
    pub(crate) hard: CancellationToken,
    next_client_id: AtomicU64,
    /// The latest topology; sessions read it at every routing decision and
    /// never wait on it.
    pub(crate) topology: watch::Sender<Arc<Topology>>,
    pub(crate) health: Arc<Health>,
    pub(crate) analyses: AnalysisCache,
    /// Every logged-in client, for the admin console.
    pub(crate) clients: Arc<Clients>,
    /// Routing counters, for the admin console's `SHOW STATS`.
    pub(crate) routes: RouteCounters,
    /// When the node was bound; its uptime in `SHOW STATS`.
    pub(crate) started: tokio::time::Instant,
    /// This node's Raft membership, when the config has `[cluster]`.
    pub(crate) cluster: Option<Arc<Cluster>>,
    /// What only `/metrics` needs (statement latency histograms).
    pub(crate) metrics: crate::metrics::Metrics,
    /// The file the node's configuration came from, for the admin
    /// console's `RELOAD`; unset when it was built in memory (tests, demo).
    pub(crate) config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// Where this node accepts PostgreSQL clients (the bound address, port
    /// 0 resolved): a drill's writer connects here, as applications do.
    pub(crate) client_addr: SocketAddr,
}

impl Shared {
    pub(crate) fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Apply `new` as [`NodeHandle::reload`] does (the admin console's
    /// `RELOAD`); reload does not use the handle's stop token.
    pub(crate) fn reload(self: &Arc<Self>, new: Config) -> Result<(), ConfigError> {
        NodeHandle { shared: self.clone(), stop_accepting: CancellationToken::new() }.reload(new)
    }
}

/// A bound, not yet serving node.
pub struct Node {
    listener: TcpListener,
    /// `listen.unix_socket_dir`: the same clients, on a Unix-domain socket.
    local: Option<LocalListener>,
    /// `[http] listen`: `/metrics`, `/healthz`, `/readyz`.
    http: Option<TcpListener>,
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
    clients: Arc<Semaphore>,
}

/// Controls a running node from elsewhere (signal handlers, tests, the demo).
#[derive(Clone)]
pub struct NodeHandle {
    shared: Arc<Shared>,
    stop_accepting: CancellationToken,
}

impl Node {
    /// Load users and TLS material and bind the listener.
    pub async fn bind(config: Config) -> Result<Node, Error> {
        let users = Users::load(&config.users_file).map_err(ConfigError::from)?;
        let tls = crate::tls::acceptor(&config.tls)?;
        let named = |key: &str, e: std::io::Error| Error::Io(std::io::Error::new(e.kind(), format!("{key}: {e}")));
        let listener = TcpListener::bind(config.listen.address)
            .await
            .map_err(|e| named(&format!("listen.address {}", config.listen.address), e))?;
        let local = match &config.listen.unix_socket_dir {
            Some(dir) => Some(
                LocalListener::bind(dir, listener.local_addr()?.port())
                    .await
                    .map_err(|e| named("listen.unix_socket_dir", e))?,
            ),
            None => None,
        };
        let http = match config.http_listen {
            Some(addr) => Some(crate::http::bind(addr).await?),
            None => None,
        };
        let clients = Arc::new(Semaphore::new(config.listen.max_client_connections));
        let cluster = match &config.cluster {
            Some(c) => Some(Arc::new(Cluster::start(&config.node.name, &config.node.region, c, users.clone()).await?)),
            None => None,
        };
        // A cluster node routes only by the committed topology: until it
        // has learned one, clients are told to retry (57P03). Its config's
        // topology is only the seed a new cluster starts from.
        let initial = match &cluster {
            Some(_) => {
                Topology { version: 0, shards: vec![], nodes: vec![], tables: vec![], ..config.topology.clone() }
            }
            None => config.topology.clone(),
        };
        let (topology, _) = watch::channel(Arc::new(initial));
        let client_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            topology,
            health: Arc::new(Health::default()),
            analyses: AnalysisCache::default(),
            pool_config: ArcSwap::from_pointee(config.pool.clone()),
            config: ArcSwap::from_pointee(config),
            users: ArcSwap::from_pointee(users),
            tls: ArcSwap::from_pointee(tls),
            pools: Pools::default(),
            cancels: Arc::new(CancelRegistry::default()),
            mock: MockSecret::random(),
            drain: CancellationToken::new(),
            hard: CancellationToken::new(),
            next_client_id: AtomicU64::new(1),
            clients: Arc::new(Clients::default()),
            routes: RouteCounters::default(),
            started: tokio::time::Instant::now(),
            cluster,
            metrics: crate::metrics::Metrics::default(),
            config_path: std::sync::OnceLock::new(),
            client_addr,
        });
        Ok(Node { listener, local, http, shared, stop_accepting: CancellationToken::new(), clients })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Remember the file the configuration came from, so that the admin
    /// console's `RELOAD` can read it again. Only the first call counts.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        let _ = self.shared.config_path.set(path);
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served, with `[http]`.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn handle(&self) -> NodeHandle {
        NodeHandle { shared: self.shared.clone(), stop_accepting: self.stop_accepting.clone() }
    }

    /// Serve clients until shut down; returns once every task has ended.
    pub async fn serve(mut self) {
        let tracker = TaskTracker::new();
        let shared = self.shared.clone();
        // Not on `tracker`: the endpoint answers `503 shutting down` while
        // the sessions drain, and stops once they have ended.
        let http_tasks = TaskTracker::new();
        let http_stop = CancellationToken::new();
        if let Some(listener) = self.http.take() {
            http_tasks.spawn(crate::http::serve(listener, shared.clone(), http_stop.clone()));
        }
        http_tasks.close();
        tracker.spawn(maintain_pools(shared.clone(), self.stop_accepting.clone()));
        let monitor = Monitor::new(shared.health.clone(), tracker.clone(), self.stop_accepting.clone());
        tracker.spawn(watch_topology(shared.clone(), monitor, self.stop_accepting.clone()));
        if let Some(cluster) = &shared.cluster {
            tracker.spawn(crate::cluster::publish(cluster.clone(), shared.clone(), self.stop_accepting.clone()));
            let seed = shared.config.load().topology.clone();
            tracker.spawn(crate::cluster::bootstrap(cluster.clone(), seed, self.stop_accepting.clone()));
            tracker.spawn(crate::control::run(
                cluster.clone(),
                shared.clone(),
                tracker.clone(),
                self.stop_accepting.clone(),
            ));
        }
        tracing::info!(
            address = %self.listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            socket = ?self.local.as_ref().map(LocalListener::path),
            "accepting clients"
        );
        loop {
            // cancel safety: accept() and cancelled() are cancel safe.
            let accepted = tokio::select! {
                r = self.listener.accept() => r.map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    (Accepted::Tcp(s), Some(peer))
                }),
                r = accept_local(self.local.as_ref()) => r.map(|s| (Accepted::Local(s), None)),
                _ = self.stop_accepting.cancelled() => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            match self.clients.clone().try_acquire_owned() {
                Ok(permit) => {
                    let peer = peer.map_or_else(|| "local socket".to_owned(), |p| p.to_string());
                    let span = tracing::info_span!(
                        "client",
                        %peer,
                        session_id = tracing::field::Empty,
                        user = tracing::field::Empty,
                        db = tracing::field::Empty,
                    );
                    let shared = shared.clone();
                    tracker.spawn(
                        async move {
                            crate::handshake::serve_client(stream, shared).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Err(_) => refuse(&stream, &Error::TooManyClients),
            }
        }
        drop(self.listener);
        drop(self.local);
        tracker.close();
        let grace = shared.config.load().shutdown_grace;
        tracing::info!(clients = tracker.len(), grace = ?grace, "stopped accepting; waiting for sessions");
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(clients = tracker.len(), "grace period over; closing remaining sessions");
            shared.hard.cancel();
            tracker.wait().await;
        }
        shared.pools.close_all();
        if let Some(cluster) = &shared.cluster {
            cluster.shutdown().await;
        }
        http_stop.cancel();
        http_tasks.wait().await;
        tracing::info!("node stopped");
    }
}

impl NodeHandle {
    /// Stop accepting; idle sessions end now, the rest after their
    /// transaction or when the grace period runs out.
    pub fn shutdown(&self) {
        self.stop_accepting.cancel();
        self.shared.drain.cancel();
    }

    /// Replicas of the current topology whose last probe found them up and
    /// in recovery.
    pub fn replicas_probed(&self) -> usize {
        let t = self.shared.topology.borrow().clone();
        t.nodes
            .iter()
            .filter(|n| n.role == router::topology::Role::Replica)
            .filter(|n| {
                let p = self.shared.health.status(&n.name, &n.address).probe.load_full();
                p.reachable && p.in_recovery
            })
            .count()
    }

    /// End every session now.
    pub fn kill(&self) {
        self.stop_accepting.cancel();
        self.shared.drain.cancel();
        self.shared.hard.cancel();
    }

    /// Apply what can change live from a new configuration: users, pool
    /// settings, TLS material, timeouts. The listen address and connection
    /// limit need a restart; a change to them is logged and ignored.
    pub fn reload(&self, new: Config) -> Result<(), ConfigError> {
        let users = Users::load(&new.users_file)?;
        let tls = crate::tls::acceptor(&new.tls)?;
        let old = self.shared.config.load_full();
        if old.listen.address != new.listen.address
            || old.listen.unix_socket_dir != new.listen.unix_socket_dir
            || old.listen.max_client_connections != new.listen.max_client_connections
        {
            tracing::warn!(
                "listen.address, listen.unix_socket_dir and listen.max_client_connections change only on restart"
            );
        }
        let pool_config = Arc::new(new.pool.clone());
        for pool in self.shared.pools.all() {
            let password =
                users.get(&pool.key.user).and_then(|u| u.backend_password.as_ref()).map(|s| s.expose().to_owned());
            pool.reconfigure(pool_config.clone(), password);
        }
        self.shared.pool_config.store(pool_config);
        let users = match &self.shared.cluster {
            Some(cluster) => cluster.users(Some(users)),
            None => users,
        };
        self.shared.users.store(Arc::new(users));
        self.shared.tls.store(Arc::new(tls));
        let mut topology = new.topology.clone();
        if self.shared.cluster.is_some() {
            // The topology lives in Raft; only this node's replica policy
            // comes from its file.
            topology = Topology {
                replica_policy: new.topology.replica_policy.clone(),
                ..(**self.shared.topology.borrow()).clone()
            };
        }
        self.shared.topology.send_if_modified(|current| {
            topology.version = current.version;
            if **current == topology {
                return false;
            }
            topology.version = current.version + 1;
            *current = Arc::new(topology);
            true
        });
        self.shared.config.store(Arc::new(new));
        tracing::info!("configuration reloaded");
        Ok(())
    }
}

/// Tell a client we cannot take it, without waiting on it.
fn refuse(stream: &Accepted, err: &Error) {
    let mut buf = BytesMut::new();
    write_error(&mut buf, Severity::Fatal, err);
    let _ = match stream {
        Accepted::Tcp(s) => s.try_write(&buf),
        Accepted::Local(s) => s.try_write(&buf),
    };
}

/// The next client on the local socket; never, when there is none.
async fn accept_local(local: Option<&LocalListener>) -> std::io::Result<crate::unix_stream::UnixConn> {
    match local {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Keep a probe running for every PostgreSQL server of the latest
/// topology (and after a reload, of the new one).
async fn watch_topology(shared: Arc<Shared>, monitor: Monitor, stop: CancellationToken) {
    let mut rx = shared.topology.subscribe();
    loop {
        let topology = rx.borrow_and_update().clone();
        let config = shared.config.load_full();
        let login = config.health.user.as_ref().map(|user| ProbeLogin {
            user: user.clone(),
            password: shared
                .users
                .load()
                .get(user)
                .and_then(|u| u.backend_password.as_ref())
                .map(|s| s.expose().to_owned()),
            database: config.health.database.clone(),
        });
        monitor.reconcile(&topology, &config.health, login);
        // cancel safety: changed() and cancelled() are cancel safe.
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.cancelled() => return,
        }
    }
}

/// Close idle and expired server connections, open min_idle ones.
async fn maintain_pools(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
    loop {
        // cancel safety: tick() and cancelled() are cancel safe.
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        for pool in shared.pools.all() {
            let missing = pool.reap();
            if missing > 0 {
                pool.fill(missing).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's task is allocated at the size of its future's largest
    /// state, for as long as the client stays connected: 10,000 idle
    /// clients must fit in 200 MB (issue 1). The login and the admin
    /// console are boxed, and sessions run by reference, to keep it to
    /// what a session needs; this catches a change that inlines a large
    /// future again (it was 18.7 KiB, 221 MiB for 10,000 clients).
    #[tokio::test]
    async fn a_client_task_stays_small() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("users.toml"), "[[user]]\nname = \"app\"\nauth = \"trust\"\n").expect("users");
        let config = Config::parse(
            "[node]\nname = \"t\"\n[listen]\naddress = \"127.0.0.1:0\"\n[auth]\nusers_file = \"users.toml\"\n\
             [backend]\naddress = \"127.0.0.1:1\"\n",
            dir.path(),
        )
        .expect("config");
        let node = Node::bind(config).await.expect("bind");
        let stream = tokio::net::TcpStream::connect(node.local_addr().expect("addr")).await.expect("connect");
        let task = crate::handshake::serve_client(crate::handshake::Accepted::Tcp(stream), node.shared.clone());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 5 * 1024, "a client's task future is {size} bytes");
    }
}
