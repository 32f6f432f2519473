//! The `[cluster]` section: how this node takes part in the Raft group that
//! holds the topology (its member id, where its Raft endpoint listens, where
//! it keeps its log, who the initial members are, and the timings).
//!
//! With `[cluster]`, the `[topology]` (or `[backend]`) section is only the
//! seed of a new cluster: the first leader proposes it once, and from then
//! on the topology lives in Raft and changes through the admin console.
//! Without `[cluster]`, the node runs alone from its config file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse_duration};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) struct RawCluster {
    member_id: u64,
    /// Where this node's Raft HTTP endpoint listens.
    raft_listen: String,
    /// The URL the other members call; default `http://<raft_listen>`.
    raft_advertise: Option<String>,
    /// `host:port` clients and admins use to reach this node; default
    /// `listen.address`.
    client_advertise: Option<String>,
    data_dir: PathBuf,
    #[serde(default = "default_heartbeat")]
    heartbeat_interval: String,
    #[serde(default = "default_election_timeout")]
    election_timeout: String,
    #[serde(default = "default_write_lease")]
    write_lease: String,
    #[serde(default = "default_write_hold")]
    write_hold: String,
    #[serde(default = "default_failure_timeout")]
    failure_timeout: String,
    #[serde(default = "default_auto_failover")]
    auto_failover: bool,
    #[serde(default)]
    peer: Vec<RawPeer>,
    tls: Option<RawRaftTls>,
}

/// `[cluster.tls]`: mutual TLS between members (PEM files).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawRaftTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn default_heartbeat() -> String {
    "250ms".into()
}
fn default_election_timeout() -> String {
    "1s".into()
}
fn default_write_lease() -> String {
    "1s".into()
}
fn default_write_hold() -> String {
    "5s".into()
}
fn default_failure_timeout() -> String {
    "2s".into()
}
fn default_auto_failover() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
struct RawPeer {
    id: u64,
    name: String,
    region: String,
    raft_addr: String,
    client_addr: String,
}

/// Validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub member_id: u64,
    pub raft_listen: SocketAddr,
    pub raft_advertise: String,
    pub client_advertise: String,
    /// Where the Raft log and snapshots live (`raft.redb`).
    pub data_dir: PathBuf,
    pub heartbeat_interval: Duration,
    /// The shortest election timeout; the longest is twice it.
    pub election_timeout: Duration,
    pub write_lease: Duration,
    /// How long a write waits for this node's write lease (or for its shard
    /// to have a writable primary) before it is refused.
    pub write_hold: Duration,
    /// How long a majority of members must fail to reach a primary before
    /// the Raft leader fails it over.
    pub failure_timeout: Duration,
    /// Whether the Raft leader fails dead primaries over on its own.
    pub auto_failover: bool,
    /// The voters of a new cluster (this node among them). Used once, when
    /// the cluster is initialised; ignored after that.
    pub peers: Vec<PeerConfig>,
    /// `[cluster.tls]`: mutual TLS on the Raft endpoint (then every Raft
    /// address is `https://`).
    pub tls: Option<consensus::RaftTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub id: u64,
    pub name: String,
    pub region: String,
    pub raft_addr: String,
    pub client_addr: String,
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

impl RawCluster {
    pub(super) fn validate(self, base: &Path, listen: SocketAddr) -> Result<ClusterConfig, ConfigError> {
        let raft_listen = self.raft_listen.parse::<SocketAddr>().map_err(|e| ConfigError::Address {
            key: "cluster.raft_listen",
            value: self.raft_listen.clone(),
            reason: e.to_string(),
        })?;
        let scheme = if self.tls.is_some() { "https://" } else { "http://" };
        let raft_advertise = self.raft_advertise.unwrap_or_else(|| format!("{scheme}{raft_listen}"));
        if !raft_advertise.starts_with(scheme) {
            return Err(ConfigError::Address {
                key: "cluster.raft_advertise",
                value: raft_advertise,
                reason: format!("expected {scheme}host:port (with [cluster.tls] the Raft port speaks TLS)"),
            });
        }
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let tls =
            self.tls.map(|t| consensus::RaftTls { ca: resolve(t.ca), cert: resolve(t.cert), key: resolve(t.key) });
        let data_dir = resolve(self.data_dir);
        let heartbeat_interval = parse_duration("cluster.heartbeat_interval", &self.heartbeat_interval)?;
        let election_timeout = parse_duration("cluster.election_timeout", &self.election_timeout)?;
        let write_lease = parse_duration("cluster.write_lease", &self.write_lease)?;
        let write_hold = parse_duration("cluster.write_hold", &self.write_hold)?;
        let failure_timeout = parse_duration("cluster.failure_timeout", &self.failure_timeout)?;
        if heartbeat_interval < Duration::from_millis(10) {
            return Err(invalid("cluster.heartbeat_interval", "must be at least 10ms"));
        }
        if election_timeout < heartbeat_interval * 3 {
            return Err(invalid("cluster.election_timeout", "must be at least three heartbeat intervals"));
        }
        if write_lease <= heartbeat_interval {
            return Err(invalid("cluster.write_lease", "must be longer than cluster.heartbeat_interval"));
        }
        let mut peers = Vec::new();
        for p in self.peer {
            if peers.iter().any(|q: &PeerConfig| q.id == p.id) {
                return Err(invalid("cluster.peer.id", format!("member {} is listed twice", p.id)));
            }
            if !p.raft_addr.starts_with(scheme) {
                return Err(ConfigError::Address {
                    key: "cluster.peer.raft_addr",
                    value: p.raft_addr,
                    reason: format!("expected {scheme}host:port"),
                });
            }
            peers.push(PeerConfig {
                id: p.id,
                name: p.name,
                region: p.region,
                raft_addr: p.raft_addr,
                client_addr: p.client_addr,
            });
        }
        if !peers.is_empty() && !peers.iter().any(|p| p.id == self.member_id) {
            return Err(invalid(
                "cluster.peer",
                format!("the peers must include this node (member_id = {})", self.member_id),
            ));
        }
        Ok(ClusterConfig {
            member_id: self.member_id,
            raft_listen,
            raft_advertise,
            client_advertise: self.client_advertise.unwrap_or_else(|| listen.to_string()),
            data_dir,
            heartbeat_interval,
            election_timeout,
            write_lease,
            write_hold,
            failure_timeout,
            auto_failover: self.auto_failover,
            peers,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = r#"
        [node]
        name = "m1"
        [listen]
        address = "127.0.0.1:6432"
        [auth]
        users_file = "users.toml"
        [cluster]
        member_id = 1
        raft_listen = "127.0.0.1:7001"
        data_dir = "raft"
    "#;

    fn parse(extra: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{extra}"), Path::new("/etc/meridian")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_joining_node_needs_no_topology_and_gets_defaults() {
        let c = parse("").unwrap().cluster.unwrap();
        assert_eq!(c.raft_advertise, "http://127.0.0.1:7001");
        assert_eq!(c.client_advertise, "127.0.0.1:6432");
        assert_eq!(c.data_dir, Path::new("/etc/meridian/raft"));
        assert_eq!(c.write_lease, std::time::Duration::from_secs(1));
        assert!(c.auto_failover && c.peers.is_empty() && c.tls.is_none());
    }

    #[test]
    fn bad_cluster_settings_name_their_key() {
        let peer = |id: u64, addr: &str| {
            format!(
                "[[cluster.peer]]\nid = {id}\nname = \"m{id}\"\nregion = \"r\"\nraft_addr = \"{addr}\"\nclient_addr = \"h:1\"\n"
            )
        };
        let e = parse(&peer(2, "http://10.0.0.2:7001")).unwrap_err();
        assert!(e.contains("cluster.peer") && e.contains("member_id = 1"), "{e}");
        let e = parse("write_lease = \"100ms\"\n").unwrap_err();
        assert!(e.contains("cluster.write_lease"), "{e}");
        let e = parse("election_timeout = \"300ms\"\n").unwrap_err();
        assert!(e.contains("cluster.election_timeout"), "{e}");
        // With [cluster.tls], every Raft address is https://.
        let tls = "[cluster.tls]\nca = \"ca.pem\"\ncert = \"m1.pem\"\nkey = \"m1.key\"\n";
        let e = parse(&format!("{}{tls}", peer(1, "http://127.0.0.1:7001"))).unwrap_err();
        assert!(e.contains("cluster.peer.raft_addr") && e.contains("https://"), "{e}");
        let c = parse(&format!("{}{tls}", peer(1, "https://127.0.0.1:7001"))).unwrap().cluster.unwrap();
        assert_eq!(c.raft_advertise, "https://127.0.0.1:7001");
        assert_eq!(c.tls.unwrap().ca, Path::new("/etc/meridian/ca.pem"));
    }
}
