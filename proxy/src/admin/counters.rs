//! Routing counters for `SHOW STATS`: how many requests the node's sessions
//! routed, by kind, and to which server. Sessions bump them where they act
//! on a routing plan; the admin console only reads them.
//!
//! A request routed to one server costs a read lock and an atomic add (a
//! write lock the first time a server is seen).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
use router::topology::{PgNode, Role};

/// Requests routed to one server, by the role it had then.
#[derive(Debug, Default)]
pub struct ServerRoutes {
    pub primary: AtomicU64,
    pub replica: AtomicU64,
}

/// Node-wide routing counters.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Requests sent to one shard's primary.
    pub primary: AtomicU64,
    /// Requests sent to one shard's replica.
    pub replica: AtomicU64,
    /// Keyless reads run on several shards and merged.
    pub fanout: AtomicU64,
    /// Schema changes run on every shard's primary.
    pub every_primary: AtomicU64,
    /// Requests refused by routing (cross-shard writes, bad hints...).
    pub rejected: AtomicU64,
    /// Per server, by node name.
    servers: RwLock<HashMap<String, Arc<ServerRoutes>>>,
}

impl RouteCounters {
    /// A request was routed to `node`; `rejected` when routing refused it
    /// (it is then answered with an error, not run).
    pub fn routed(&self, node: &PgNode, rejected: bool) {
        if rejected {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let server = self.server(&node.name);
        let (total, own) = match node.role {
            Role::Primary => (&self.primary, &server.primary),
            Role::Replica => (&self.replica, &server.replica),
        };
        total.fetch_add(1, Ordering::Relaxed);
        own.fetch_add(1, Ordering::Relaxed);
    }

    /// A keyless read was run over several shards.
    pub fn fanout(&self) {
        self.fanout.fetch_add(1, Ordering::Relaxed);
    }

    /// A schema change was run on every shard's primary.
    pub fn every_primary(&self) {
        self.every_primary.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters of server `name` (created on first use).
    pub fn server(&self, name: &str) -> Arc<ServerRoutes> {
        if let Some(s) = self.servers.read().get(name) {
            return s.clone();
        }
        self.servers.write().entry(name.to_owned()).or_default().clone()
    }

    /// The counters of server `name`, if anything was routed there.
    pub fn get(&self, name: &str) -> Option<Arc<ServerRoutes>> {
        self.servers.read().get(name).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, role: Role) -> PgNode {
        PgNode { name: name.into(), address: "h:1".into(), region: "r".into(), shard: 0, role }
    }

    #[test]
    fn counts_by_kind_and_server() {
        let c = RouteCounters::default();
        c.routed(&node("a", Role::Primary), false);
        c.routed(&node("b", Role::Replica), false);
        c.routed(&node("b", Role::Replica), false);
        c.routed(&node("a", Role::Primary), true);
        c.fanout();
        c.every_primary();
        assert_eq!(c.primary.load(Ordering::Relaxed), 1);
        assert_eq!(c.replica.load(Ordering::Relaxed), 2);
        assert_eq!(c.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(c.fanout.load(Ordering::Relaxed), 1);
        assert_eq!(c.every_primary.load(Ordering::Relaxed), 1);
        assert_eq!(c.get("b").map(|s| s.replica.load(Ordering::Relaxed)), Some(2));
        assert!(c.get("zzz").is_none());
    }
}
