//! [`Config`]: what a member needs to start, and the Raft [`Timings`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::StartError;
use crate::types::Member;

/// How to start one member of the Raft group.
#[derive(Debug, Clone)]
pub struct Config {
    /// This member, as the others will know it. `member.raft_addr` is the
    /// URL the others call (`http://host:port`, `https://` with
    /// [`Config::tls`]); [`Config::listen`] is what
    /// this process binds, which may differ (`0.0.0.0:port`).
    pub member: Member,
    /// Where the Raft HTTP endpoint listens.
    pub listen: SocketAddr,
    /// Where the member keeps its Raft log and snapshots (`raft.redb`).
    pub data_dir: PathBuf,
    /// The voters of a new cluster, this member included. Used once: the
    /// member with the lowest id initialises the cluster if its log is
    /// empty; the others wait to be contacted. Ignored after a restart.
    pub initial_members: Vec<Member>,
    pub timings: Timings,
    /// Mutual TLS on the Raft endpoint, both ways; `None`: plain HTTP
    /// (keep the Raft port on a private network then). With TLS,
    /// `member.raft_addr` and every peer's must be `https://` URLs, and
    /// without it `http://` ones (checked at start for this member; a peer
    /// with the wrong scheme cannot be reached).
    pub tls: Option<RaftTls>,
}

/// The PEM files of mutual TLS on the Raft endpoint (see the `tls`
/// module): every member has the same `ca` and its own `cert` and `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTls {
    /// The CA certificate(s) that sign every member's certificate: a peer
    /// (client or server) is accepted only with a certificate they signed.
    pub ca: PathBuf,
    /// This member's certificate chain, presented as a server to the
    /// members calling it and as a client to the members it calls. It must
    /// name the host of `member.raft_addr` (a DNS name, or an IP address
    /// SAN), and allow both server and client authentication when it has
    /// an extended key usage.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
}

/// Raft timings. The defaults suit members a few hundred milliseconds of
/// round trip apart (one per region): the heartbeat interval must stay
/// above the worst round trip (it is also the deadline of each
/// AppendEntries call), and the election timeout several heartbeats above
/// it, so a slow link does not cause elections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How often the leader sends heartbeats; 250 ms.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time between these two
    /// starts an election; 1 s to 2 s.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// Deadline of one snapshot chunk sent to a follower; 10 s.
    pub install_snapshot_timeout: Duration,
    /// How long `propose` and `read_linearizable` wait for a leader and
    /// its answer (elections included); 5 s.
    pub forward_timeout: Duration,
    /// How long a member may go on routing writes after it last confirmed
    /// the committed topology with the Raft quorum; 1 s. See
    /// [`Lease`](crate::LeaseHandle).
    ///
    /// Must be longer than `heartbeat_interval` (checked at start): a
    /// confirmation costs a quorum round trip, and the lease is renewed
    /// every third of it. It does not have to be longer than the election
    /// timeout, but when it is shorter, every lease runs out while a new
    /// Raft leader is being elected (writes are held for that time), and
    /// when it is longer, a failover waits longer (it waits out one
    /// `write_lease` after fencing the shard).
    pub write_lease: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            heartbeat_interval: Duration::from_millis(250),
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            install_snapshot_timeout: Duration::from_secs(10),
            forward_timeout: Duration::from_secs(5),
            write_lease: Duration::from_secs(1),
        }
    }
}

impl Timings {
    /// openraft's configuration for these timings.
    pub(crate) fn raft_config(&self) -> Result<openraft::Config, StartError> {
        if self.write_lease <= self.heartbeat_interval {
            return Err(StartError::Timings(format!(
                "write_lease ({:?}) must be longer than heartbeat_interval ({:?})",
                self.write_lease, self.heartbeat_interval
            )));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "meridian".into(),
            heartbeat_interval: millis(self.heartbeat_interval),
            election_timeout_min: millis(self.election_timeout_min),
            election_timeout_max: millis(self.election_timeout_max),
            install_snapshot_timeout: millis(self.install_snapshot_timeout),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Timings(e.to_string()))
    }
}
