//! The simulated network between the Meridian node and the PostgreSQL
//! servers: a [`FaultRelay`] in front of each server that adds the delay
//! between the node's region and the server's ([`layout::one_way_delay`]).
//!
//! ```text
//!   meridian-1 (us-east) ──▶ relay 127.0.0.1:R ──(+delay each way)──▶ s2-primary 127.0.0.1:P (eu-west)
//! ```
//!
//! The node's `[[topology.node]]` addresses are the relays' (`R`); clients
//! that connect to a server's own port (`P`, demo.json `port`) bypass both
//! Meridian and the delay. The relays run as tasks of the demo process and
//! end with it: [`Network::shutdown`], or drop, resets their connections.

use std::time::Duration;

use anyhow::Context;
use harness::FaultRelay;

use super::cluster::Shards;
use super::layout::{self, Region};

/// One relay per server, in the order of [`Shards::servers`].
pub struct Network {
    links: Vec<Link>,
}

/// The path from the node to one server.
pub struct Link {
    /// The server's name (`s1-replica-eu-west`).
    pub server: String,
    pub relay: FaultRelay,
    /// Added to each direction.
    pub delay: Duration,
}

impl Network {
    /// Starts a relay in front of every server of `shards`, delayed as seen
    /// from a Meridian node in `meridian`.
    pub async fn start(shards: &Shards, meridian: Region) -> anyhow::Result<Network> {
        let mut links = Vec::new();
        for server in shards.servers() {
            let relay = FaultRelay::start(server.pg.addr())
                .await
                .with_context(|| format!("starting the relay in front of {}", server.place.name))?;
            let delay = layout::one_way_delay(meridian, server.place.region);
            relay.set_delay(delay);
            tracing::debug!(server = %server.place.name, relay = %relay.local_addr(), ?delay, "relay started");
            links.push(Link { server: server.place.name.clone(), relay, delay });
        }
        Ok(Network { links })
    }

    /// The path to the server called `name`.
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|link| link.server == name)
    }

    /// Stops every relay, resetting the connections through them.
    pub async fn shutdown(self) {
        for link in self.links {
            link.relay.shutdown().await;
        }
    }
}
