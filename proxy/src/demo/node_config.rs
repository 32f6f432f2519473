//! The files the demo's Meridian node runs from: `DIR/users.toml` and
//! `DIR/meridian.toml`, with a `[topology]` of both shards whose node
//! addresses are the relays ([`Network`]).

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::cluster::Shards;
use super::layout::{Region, SHARDS};
use super::network::Network;
use super::sample::TABLES;
use super::{APP_PASSWORD, APP_USER, DATABASE, NODE_ID};

/// The generated node configuration's name in the demo directory.
pub const CONFIG_FILE: &str = "meridian.toml";
/// The generated users file's name in the demo directory.
pub const USERS_FILE: &str = "users.toml";

/// How long sessions may finish their transaction on SIGTERM; well below
/// the 15 s `meridian demo stop` waits before SIGKILL.
const SHUTDOWN_GRACE: &str = "5s";

/// A probe logs in (about three round trips) and then queries (two) over a
/// link of up to 150 ms: the default 1 s is too tight for ap-south.
const PROBE_TIMEOUT: &str = "3s";

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

/// Writes `DIR/meridian.toml` for a node listening on `127.0.0.1:port`.
pub fn write_config(
    dir: &Path,
    port: u16,
    region: Region,
    shards: &Shards,
    network: &Network,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(CONFIG_FILE);
    let text = render(&path, port, region, shards, network)?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The text of meridian.toml.
fn render(path: &Path, port: u16, region: Region, shards: &Shards, network: &Network) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    let mut out = format!(
        "# Written by `meridian demo`. `meridian serve --config {path}` runs the same node\n\
         # while the demo's relays run (the node addresses below are the relays).\n\n\
         [node]\nname = \"{NODE_ID}\"\nregion = \"{region}\"\n\n\
         [listen]\naddress = \"127.0.0.1:{port}\"\n\n\
         [auth]\nusers_file = \"{USERS_FILE}\"\n\n\
         [health]\nuser = \"{APP_USER}\"\ndatabase = \"{DATABASE}\"\nprobe_timeout = \"{PROBE_TIMEOUT}\"\n\n\
         [shutdown]\ngrace = \"{SHUTDOWN_GRACE}\"\n\n\
         [topology]\nregions = [{regions}]\n",
        path = path.display(),
        regions = quoted(Region::ALL.iter().map(|r| r.as_str())),
    );
    for shard in &SHARDS {
        let _ = write!(out, "\n[[topology.shard]]\nname = \"{}\"\n", shard.name);
    }
    for server in shards.servers() {
        let link = network.link(&server.place.name).with_context(|| format!("no relay for {}", server.place.name))?;
        let _ = write!(
            out,
            "\n# a relay to the server at {real}, adding {delay:?} each way\n\
             [[topology.node]]\nname = \"{name}\"\naddress = \"{relay}\"\nshard = \"{shard}\"\nregion = \"{region}\"\nrole = \"{role}\"\n",
            real = server.pg.addr(),
            delay = link.delay,
            name = server.place.name,
            relay = link.relay.local_addr(),
            shard = server.place.shard,
            region = server.place.region,
            role = if server.place.primary { "primary" } else { "replica" },
        );
    }
    out.push_str(&table_rules());
    Ok(out)
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
