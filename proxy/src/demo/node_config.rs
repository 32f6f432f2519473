//! The files the demo's Meridian nodes run from: `DIR/users.toml`, shared,
//! and for each node `DIR/nodes/<name>/meridian.toml`: its listeners, its
//! `[cluster]` (member id, Raft endpoint and data, the three peers) and
//! the same seed `[topology]` of both shards, whose node addresses are the
//! switches ([`Network`]), and a `[[managed]]` entry for every PostgreSQL
//! server (all on this host).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::cluster::Shards;
use super::layout::{MERIDIAN_NODES, MeridianPlace, Region, SHARDS};
use super::network::Network;
use super::sample::TABLES;
use super::{APP_PASSWORD, APP_USER, DATABASE};

/// A node's configuration file, in its directory.
pub const CONFIG_FILE: &str = "meridian.toml";
/// A node's log (its stdout and stderr), in its directory.
pub const NODE_LOG_FILE: &str = "meridian.log";
/// A node's Raft log and snapshots, in its directory.
pub const RAFT_DIR: &str = "raft";
/// The generated users file's name in the demo directory.
pub const USERS_FILE: &str = "users.toml";

/// How long sessions may finish their transaction on SIGTERM; well below
/// the 15 s `meridian demo stop` waits before SIGKILL.
const SHUTDOWN_GRACE: &str = "5s";

/// A probe logs in (about three round trips) and then queries (two) over a
/// link of up to 150 ms: the default 1 s is too tight for ap-south.
const PROBE_TIMEOUT: &str = "3s";

/// `DIR/nodes`: every node's directory.
pub fn nodes_dir(dir: &Path) -> PathBuf {
    dir.join("nodes")
}

/// `DIR/nodes/<name>`: a node's config, log and Raft data.
pub fn node_dir(dir: &Path, node: &MeridianPlace) -> PathBuf {
    nodes_dir(dir).join(node.name)
}

/// Where one node listens.
#[derive(Debug, Clone, Copy)]
pub struct NodePorts {
    /// Clients and the admin console.
    pub client: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub http: SocketAddr,
    /// The node's own Raft endpoint.
    pub raft_listen: SocketAddr,
    /// The switch in front of it: what the other members call.
    pub raft_switch: SocketAddr,
}

/// Writes `DIR/users.toml` (mode 0600): the app user, with a SCRAM secret
/// for clients, the password Meridian uses for PostgreSQL (and for health
/// probes), and the admin console.
pub fn write_users(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let secret = crate::auth::make_secret(crate::auth::SecretKind::ScramSha256, APP_USER, APP_PASSWORD);
    let path = dir.join(USERS_FILE);
    let text = format!(
        "# Written by `meridian demo`.\n\
         [[user]]\n\
         name = \"{APP_USER}\"\n\
         auth = \"scram-sha-256\"\n\
         secret = \"{secret}\"\n\
         backend_password = \"{APP_PASSWORD}\"\n\
         admin = true\n"
    );
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(path)
}

/// Writes `DIR/nodes/<name>/meridian.toml` for `MERIDIAN_NODES[index]`,
/// given every node's ports (in [`MERIDIAN_NODES`] order).
pub fn write_config(
    dir: &Path,
    index: usize,
    ports: &[NodePorts],
    shards: &Shards,
    network: &Network,
) -> anyhow::Result<PathBuf> {
    let node = &MERIDIAN_NODES[index];
    let node_dir = node_dir(dir, node);
    std::fs::create_dir_all(&node_dir).with_context(|| format!("creating {}", node_dir.display()))?;
    let path = node_dir.join(CONFIG_FILE);
    let text = render(dir, index, ports, shards, network)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The text of a node's meridian.toml.
fn render(dir: &Path, index: usize, ports: &[NodePorts], shards: &Shards, network: &Network) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let node = &MERIDIAN_NODES[index];
    let own = ports.get(index).context("no ports for the node")?;
    let mut out = format!(
        "# Written by `meridian demo`: {name}, one of {count} Meridian nodes (one per region) in one\n\
         # Raft group. The PostgreSQL and Raft addresses below are the demo's switches, which\n\
         # add the simulated latency; they live as long as the demo process.\n\n\
         [node]\nname = \"{name}\"\nregion = \"{region}\"\n\n\
         [listen]\naddress = \"{client}\"\n\n\
         [http]\nlisten = \"{http}\"\n\n\
         [auth]\nusers_file = \"{users}\"\n\n\
         [health]\nuser = \"{APP_USER}\"\ndatabase = \"{DATABASE}\"\nprobe_timeout = \"{PROBE_TIMEOUT}\"\n\n\
         [shutdown]\ngrace = \"{SHUTDOWN_GRACE}\"\n\n\
         # The Raft timings are the defaults, meant for members up to 150 ms apart:\n\
         # heartbeat_interval 250ms, election_timeout 1s (to 2s), write_lease 1s, write_hold 5s.\n\
         [cluster]\nmember_id = {id}\nraft_listen = \"{raft_listen}\"\nraft_advertise = \"http://{raft_switch}\"\n\
         client_advertise = \"{client}\"\ndata_dir = \"{data_dir}\"\n",
        name = node.name,
        count = MERIDIAN_NODES.len(),
        region = node.region,
        client = own.client,
        http = own.http,
        users = dir.join(USERS_FILE).display(),
        id = node.member_id,
        raft_listen = own.raft_listen,
        raft_switch = own.raft_switch,
        data_dir = node_dir(dir, node).join(RAFT_DIR).display(),
    );
    for (peer, peer_ports) in MERIDIAN_NODES.iter().zip(ports) {
        let _ = write!(
            out,
            "\n[[cluster.peer]]\nid = {}\nname = \"{}\"\nregion = \"{}\"\nraft_addr = \"http://{}\"\nclient_addr = \"{}\"\n",
            peer.member_id, peer.name, peer.region, peer_ports.raft_switch, peer_ports.client
        );
    }
    let _ = write!(
        out,
        "\n# The seed of the cluster's topology: the first leader proposes it once; after\n\
         # that every node routes by the topology committed in Raft.\n\
         [topology]\nregions = [{regions}]\n",
        regions = quoted(Region::ALL.iter().map(|r| r.as_str())),
    );
    for shard in &SHARDS {
        let _ = write!(out, "\n[[topology.shard]]\nname = \"{}\"\n", shard.name);
    }
    for server in shards.servers() {
        let switch =
            network.server(&server.place.name).with_context(|| format!("no switch for {}", server.place.name))?;
        let delays: Vec<String> = switch.links().iter().map(|l| format!("{} {:?}", l.from, l.delay)).collect();
        let _ = write!(
            out,
            "\n# a switch to the server at {real}; added each way from {delays}\n\
             [[topology.node]]\nname = \"{name}\"\naddress = \"{address}\"\nshard = \"{shard}\"\nregion = \"{region}\"\nrole = \"{role}\"\n",
            real = server.pg.addr(),
            delays = delays.join(", "),
            name = server.place.name,
            address = switch.local_addr(),
            shard = server.place.shard,
            region = server.place.region,
            role = if server.place.primary { "primary" } else { "replica" },
        );
    }
    out.push_str(&table_rules());
    out.push_str(&managed(shards));
    Ok(out)
}

/// `[[managed]]` for every PostgreSQL server of the demo: they all run on
/// this host, so every node may kill, stop, start and rewind them.
fn managed(shards: &Shards) -> String {
    let mut out = String::from(
        "\n# Every PostgreSQL server runs on this host: this node may kill, stop, start\n\
         # and rewind them (drills, REJOIN NODE).\n",
    );
    for server in shards.servers() {
        let data_dir = std::path::absolute(server.pg.data_dir()).unwrap_or_else(|_| server.pg.data_dir().to_path_buf());
        out.push_str(&format!(
            "\n[[managed]]\nnode = {}\ndata_dir = {}\nbin_dir = {}\n",
            toml_string(&server.place.name),
            toml_string(&data_dir.to_string_lossy()),
            toml_string(&shards.bin_dir().to_string_lossy()),
        ));
    }
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// `[[topology.table]]` for every sample table: hash of `owner_id` over
/// the shards in [`SHARDS`] order (remainder 0 is the first).
fn table_rules() -> String {
    let shards = quoted(SHARDS.iter().map(|s| s.name));
    TABLES
        .iter()
        .map(|table| {
            format!(
                "\n[[topology.table]]\nname = \"{table}\"\ncolumn = \"owner_id\"\ntype = \"int\"\nhash = [{shards}]\n"
            )
        })
        .collect()
}

/// `"a", "b"`.
fn quoted<'a>(items: impl Iterator<Item = &'a str>) -> String {
    items.map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::layout;
    use router::key::KeyValue;

    /// The generated sharding rules route every sample owner to the shard
    /// the sample data puts it on.
    #[test]
    fn table_rules_agree_with_the_sample_placement() {
        let text = format!(
            "[node]\nname = \"n\"\n[listen]\naddress = \"127.0.0.1:1\"\n[auth]\nusers_file = \"u\"\n[topology]\n{}\n\
             [[topology.node]]\nname = \"a\"\naddress = \"127.0.0.1:2\"\nshard = \"s1\"\nregion = \"us-east\"\nrole = \"primary\"\n\
             [[topology.node]]\nname = \"b\"\naddress = \"127.0.0.1:3\"\nshard = \"s2\"\nregion = \"eu-west\"\nrole = \"primary\"\n\
             {}",
            SHARDS.iter().map(|s| format!("[[topology.shard]]\nname = \"{}\"\n", s.name)).collect::<String>(),
            table_rules()
        );
        let config = crate::Config::parse(&text, Path::new(".")).unwrap();
        let topology = &config.topology;
        assert_eq!(topology.tables.len(), TABLES.len());
        for rule in &topology.tables {
            assert_eq!(rule.column, "owner_id");
            assert_eq!(rule.map, layout::shard_map(), "{}", rule.table);
            for id in 1..=crate::demo::sample::OWNERS {
                let shard = rule.map.shard_for(&KeyValue::Int(id)).unwrap();
                assert_eq!(topology.shards[shard].name, layout::shard_of(id).name, "{} owner {id}", rule.table);
            }
        }
    }
}
