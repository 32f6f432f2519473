//! The simulated network between the regions: every path from a Meridian
//! node to a PostgreSQL server, and from a Meridian node to another's Raft
//! endpoint, goes through a [`FaultRelay`] of its own that adds the delay
//! between the two regions ([`layout::one_way_delay`]).
//!
//! The topology is replicated, so every node knows a server by the same
//! address. That address is a [`Switch`]: it finds out which Meridian node
//! opened the connection (the process owning the other end of the socket,
//! from `/proc`) and splices it to that node's relay, which delays it:
//!
//! ```text
//!                                          ┌─▶ relay of meridian-1 (+20 ms each way)  ─┐
//!   a Meridian node ──▶ switch 127.0.0.1:S ┼─▶ relay of meridian-2 (+0.5 ms each way) ─┼─▶ s2-primary (eu-west) 127.0.0.1:P
//!   (its process found through /proc)      └─▶ relay of meridian-3 (+55 ms each way)  ─┘
//! ```
//!
//! (Each switch holds one relay per Meridian node, in [`MERIDIAN_NODES`]
//! order.) A connection from any other process (psql, a test) is treated as
//! coming from the first node, `meridian-1`. The servers' own ports
//! (demo.json `port`) bypass all of this. Switches and relays are tasks of
//! the demo process and end with it: [`Network::shutdown`], or drop, resets
//! their connections.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use harness::FaultRelay;
use parking_lot::{Mutex, RwLock};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cluster::Shards;
use super::layout::{self, MERIDIAN_NODES, MeridianPlace, Region};

/// How long connecting to a relay may take (it is in this process).
const RELAY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Tells which Meridian node process opened a connection. Shared by every
/// switch.
#[derive(Default)]
struct Owners {
    /// The node processes' pids, in [`MERIDIAN_NODES`] order (`None` until
    /// started).
    pids: RwLock<Vec<Option<u32>>>,
    /// The last look at `/proc` (a few milliseconds each): a burst of new
    /// connections shares one.
    seen: Mutex<Seen>,
}

/// What `/proc` showed at one instant.
#[derive(Default)]
struct Seen {
    at: Option<Instant>,
    /// Every IPv4 TCP socket by (local, remote) address: its inode.
    sockets: HashMap<(SocketAddr, SocketAddr), u64>,
    /// Socket inodes held by a node process: the node's index.
    owners: HashMap<u64, usize>,
}

impl Owners {
    fn new() -> Owners {
        Owners { pids: RwLock::new(vec![None; MERIDIAN_NODES.len()]), seen: Mutex::default() }
    }

    /// The index of the node whose socket at `peer` is connected to
    /// `local`, for a connection accepted at `accepted`; `None` for any
    /// other process. Blocking: reads `/proc` unless the last look is
    /// younger than the connection (a look taken after the accept shows
    /// this very socket, so a reused port cannot mislead it).
    fn identify(&self, peer: SocketAddr, local: SocketAddr, accepted: Instant) -> Option<usize> {
        let mut seen = self.seen.lock();
        if seen.at.is_none_or(|at| at < accepted) {
            let pids = self.pids.read().clone();
            *seen = Seen::read(&pids);
        }
        let inode = seen.sockets.get(&(peer, local))?;
        seen.owners.get(inode).copied()
    }
}

impl Seen {
    /// Reads `/proc/net/tcp` and the node processes' descriptors. Linux
    /// only; what cannot be read is left out.
    fn read(pids: &[Option<u32>]) -> Seen {
        let at = Some(Instant::now());
        let mut sockets = HashMap::new();
        if let Ok(table) = std::fs::read_to_string("/proc/net/tcp") {
            for line in table.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(remote), Some(inode)) = (fields.get(1), fields.get(2), fields.get(9)) else {
                    continue;
                };
                if let (Some(local), Some(remote), Ok(inode)) =
                    (parse_proc_addr(local), parse_proc_addr(remote), inode.parse::<u64>())
                {
                    sockets.insert((local, remote), inode);
                }
            }
        }
        let mut owners = HashMap::new();
        for (index, pid) in pids.iter().enumerate() {
            let Some(pid) = pid else { continue };
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
            for fd in fds.filter_map(Result::ok) {
                let Ok(target) = std::fs::read_link(fd.path()) else { continue };
                let inode = target.to_str().and_then(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok());
                if let Some(inode) = inode {
                    owners.insert(inode, index);
                }
            }
        }
        Seen { at, sockets, owners }
    }
}

/// Every switch: one per PostgreSQL server (in the order of
/// [`Shards::servers`]) and one per Meridian node's Raft endpoint.
pub struct Network {
    owners: Arc<Owners>,
    servers: Vec<Switch>,
    raft: Vec<Switch>,
}

/// The address every Meridian node uses for one target, and a delaying
/// relay per node behind it.
pub struct Switch {
    /// The PostgreSQL server's name (`s1-replica-eu-west`), or the
    /// Meridian node's whose Raft endpoint this is.
    pub target: String,
    local_addr: SocketAddr,
    /// One per Meridian node, in [`MERIDIAN_NODES`] order.
    links: Vec<Link>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// The path from one Meridian node to one target.
pub struct Link {
    /// The Meridian node (`meridian-2`).
    pub from: &'static str,
    pub relay: FaultRelay,
    /// Added to each direction.
    pub delay: Duration,
}

impl Network {
    /// Starts a switch and its relays in front of every server of `shards`.
    pub async fn start(shards: &Shards) -> anyhow::Result<Network> {
        let owners = Arc::new(Owners::new());
        let mut servers = Vec::new();
        for server in shards.servers() {
            let switch = Switch::start(&server.place.name, server.place.region, server.pg.addr(), owners.clone())
                .await
                .with_context(|| format!("starting the relays in front of {}", server.place.name))?;
            servers.push(switch);
        }
        Ok(Network { owners, servers, raft: Vec::new() })
    }

    /// Starts a switch in front of `node`'s Raft endpoint at `target`;
    /// returns its address (what the other members call).
    pub async fn add_raft(&mut self, node: &MeridianPlace, target: SocketAddr) -> anyhow::Result<SocketAddr> {
        let switch = Switch::start(node.name, node.region, target, self.owners.clone())
            .await
            .with_context(|| format!("starting the relays in front of {}'s Raft endpoint", node.name))?;
        let addr = switch.local_addr;
        self.raft.push(switch);
        Ok(addr)
    }

    /// Records that the node `MERIDIAN_NODES[index]` runs as `pid`, so its
    /// connections get its delays from now on.
    pub fn set_node_pid(&self, index: usize, pid: Option<u32>) {
        if let Some(slot) = self.owners.pids.write().get_mut(index) {
            *slot = pid;
        }
    }

    /// The switch in front of the server called `name`.
    pub fn server(&self, name: &str) -> Option<&Switch> {
        self.servers.iter().find(|s| s.target == name)
    }

    /// Stops every switch and relay, resetting the connections through them.
    pub async fn shutdown(self) {
        for switch in self.servers.into_iter().chain(self.raft) {
            switch.shutdown().await;
        }
    }
}

impl Switch {
    /// Listens on `127.0.0.1:0` and starts a relay to `target` for every
    /// Meridian node, delayed as seen from that node's region.
    async fn start(name: &str, region: Region, target: SocketAddr, owners: Arc<Owners>) -> anyhow::Result<Switch> {
        let mut links = Vec::new();
        for node in &MERIDIAN_NODES {
            let relay = FaultRelay::start(target).await?;
            let delay = layout::one_way_delay(node.region, region);
            relay.set_delay(delay);
            links.push(Link { from: node.name, relay, delay });
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.context("binding a switch")?;
        let local_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let relays: Vec<SocketAddr> = links.iter().map(|l| l.relay.local_addr()).collect();
        tasks.spawn(accept(listener, relays, owners, cancel.clone(), tasks.clone()));
        tracing::debug!(target = name, switch = %local_addr, "switch started");
        Ok(Switch { target: name.to_owned(), local_addr, links, cancel, tasks })
    }

    /// The address every Meridian node is given for the target.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The path from the Meridian node called `from`.
    pub fn link(&self, from: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.from == from)
    }

    /// Every path, in [`MERIDIAN_NODES`] order.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for link in std::mem::take(&mut self.links) {
            link.relay.shutdown().await;
        }
    }
}

impl Drop for Switch {
    /// Stops accepting and resets the spliced connections (the relays stop
    /// themselves when dropped).
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The switch's accept loop: each connection is spliced to the relay of
/// the node that opened it, until either side closes or `cancel`.
async fn accept(
    listener: TcpListener,
    relays: Vec<SocketAddr>,
    owners: Arc<Owners>,
    cancel: CancellationToken,
    tasks: TaskTracker,
) {
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(_) => return,
    };
    let relays = Arc::new(relays);
    loop {
        // cancel safety: accept() and cancelled() are cancel safe.
        let (client, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(switch = %local, error = %e, "switch accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let accepted = Instant::now();
        let (relays, owners, cancel) = (relays.clone(), owners.clone(), cancel.clone());
        tasks.spawn(async move {
            let found = tokio::task::spawn_blocking(move || owners.identify(peer, local, accepted)).await.ok().flatten();
            tracing::debug!(switch = %local, %peer, node = ?found, took = ?accepted.elapsed(), "switch identified a connection");
            let index = found.unwrap_or(0);
            let Some(&relay) = relays.get(index) else { return };
            // cancel safety: dropping the splice on shutdown resets both sides.
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = splice(client, relay) => {}
            }
        });
    }
}

/// Copies both ways between `client` and a new connection to `relay`.
async fn splice(mut client: TcpStream, relay: SocketAddr) -> std::io::Result<()> {
    let mut upstream = tokio::time::timeout(RELAY_CONNECT_TIMEOUT, TcpStream::connect(relay))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to a relay"))??;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await.map(|_| ())
}

/// `0100007F:1F90` (the address as the kernel's native-endian u32, the
/// port in host order) as a socket address.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::from((Ipv4Addr::from(ip.to_ne_bytes()), port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tcp_addresses() {
        if cfg!(target_endian = "little") {
            assert_eq!(parse_proc_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        }
        assert_eq!(parse_proc_addr("nonsense"), None);
    }

    /// The switch's way of telling who connected: this process owns the
    /// client end of a fresh connection, and nobody else does.
    #[tokio::test]
    async fn finds_the_process_that_opened_a_connection() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let local = listener.local_addr().unwrap();
        let _client = TcpStream::connect(local).await.unwrap();
        let (_server, peer) = listener.accept().await.unwrap();
        let me = std::process::id();
        let owners = Owners::new();
        *owners.pids.write() = vec![None, Some(me), None];
        assert_eq!(owners.identify(peer, local, Instant::now()), Some(1));
        // Answered from the same look at /proc.
        let at = owners.seen.lock().at;
        assert_eq!(owners.identify(peer, local, Instant::now() - Duration::from_secs(1)), Some(1));
        assert_eq!(owners.seen.lock().at, at);
        *owners.pids.write() = vec![Some(1), None, None];
        assert_eq!(owners.identify(peer, local, Instant::now()), None);
    }
}
