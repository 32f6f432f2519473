//! Where the demo's parts are: regions, which shard has which server in
//! which region, the simulated network between regions, and which shard
//! holds which owner.
//!
//! ```text
//!              us-east                eu-west                ap-south
//!   s1    s1-primary          s1-replica-eu-west     s1-replica-ap-south
//!   s2    s2-replica-us-east  s2-primary             s2-replica-ap-south
//!   node  meridian-1          meridian-2             meridian-3
//! ```
//!
//! Every region holds a server of each shard and a Meridian node; the three
//! nodes form one Raft group. Everything runs on 127.0.0.1; a region is
//! only a label plus the delay that the fault relays between a Meridian
//! node and a server (or another node) add ([`one_way_delay`]). Replication between
//! servers is not delayed. Pure data and functions: nothing here starts
//! anything.

use std::fmt;
use std::time::Duration;

use router::key::KeyValue;
use router::topology::ShardMap;

/// A simulated region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    UsEast,
    EuWest,
    ApSouth,
}

impl Region {
    /// Every region, in the order the demo lists them.
    pub const ALL: [Region; 3] = [Region::UsEast, Region::EuWest, Region::ApSouth];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::UsEast => "us-east",
            Region::EuWest => "eu-west",
            Region::ApSouth => "ap-south",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One Meridian node of the demo: its name, Raft member id and region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeridianPlace {
    /// `meridian-1`: the node name, also in demo.json (`id`).
    pub name: &'static str,
    /// Its Raft member id (`cluster.member_id`).
    pub member_id: u64,
    pub region: Region,
}

/// The Meridian nodes, one per region, in member-id order. The first is
/// [`super::NODE_ID`]; a connection to a relay from a process that is not
/// one of these nodes is delayed as if it came from the first.
pub static MERIDIAN_NODES: [MeridianPlace; 3] = [
    MeridianPlace { name: "meridian-1", member_id: 1, region: Region::UsEast },
    MeridianPlace { name: "meridian-2", member_id: 2, region: Region::EuWest },
    MeridianPlace { name: "meridian-3", member_id: 3, region: Region::ApSouth },
];

/// Simulated round-trip time between two regions: roughly what the public
/// cloud regions of these names see, scaled down to keep the demo brisk.
///
/// | | us-east | eu-west | ap-south |
/// |---|---|---|---|
/// | us-east | 1 ms | 40 ms | 150 ms |
/// | eu-west | 40 ms | 1 ms | 110 ms |
/// | ap-south | 150 ms | 110 ms | 1 ms |
pub fn round_trip(a: Region, b: Region) -> Duration {
    use Region::*;
    let ms = match (a, b) {
        _ if a == b => return Duration::from_millis(1),
        (UsEast, EuWest) | (EuWest, UsEast) => 40,
        (EuWest, ApSouth) | (ApSouth, EuWest) => 110,
        (UsEast, ApSouth) | (ApSouth, UsEast) => 150,
        _ => unreachable!("every pair of distinct regions is listed above"),
    };
    Duration::from_millis(ms)
}

/// The delay the relay between a Meridian node in `meridian` and a server
/// in `server` adds to each direction: half the round trip, since the relay
/// delays every chunk once on its way in and once on its way back.
pub fn one_way_delay(meridian: Region, server: Region) -> Duration {
    round_trip(meridian, server) / 2
}

/// One shard: its name and where its servers are.
#[derive(Debug, Clone, Copy)]
pub struct ShardLayout {
    pub name: &'static str,
    pub primary: Region,
    /// In the harness's order: `replicas[0]` is `<shard>-replica-1`.
    pub replicas: [Region; 2],
}

/// The shards, in hash order: PostgreSQL's partition hash of an owner_id
/// modulo `SHARDS.len()` is the index of the shard holding it (remainder 0
/// is `s1`), as in the generated `hash = ["s1", "s2"]`.
pub static SHARDS: [ShardLayout; 2] = [
    ShardLayout { name: "s1", primary: Region::UsEast, replicas: [Region::EuWest, Region::ApSouth] },
    ShardLayout { name: "s2", primary: Region::EuWest, replicas: [Region::UsEast, Region::ApSouth] },
];

/// A server's place in the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub shard: &'static str,
    /// What Meridian and demo.json call it: `s1-primary`,
    /// `s1-replica-eu-west`.
    pub name: String,
    pub primary: bool,
    pub region: Region,
}

impl ShardLayout {
    /// The shard's servers: the primary, then the replicas in the
    /// harness's order (the order of `PgCluster::servers`).
    pub fn placements(&self) -> Vec<Placement> {
        let primary =
            Placement { shard: self.name, name: format!("{}-primary", self.name), primary: true, region: self.primary };
        let replicas = self.replicas.iter().map(|&region| Placement {
            shard: self.name,
            name: format!("{}-replica-{region}", self.name),
            primary: false,
            region,
        });
        std::iter::once(primary).chain(replicas).collect()
    }
}

/// How the sample tables are sharded: a hash over the shards in
/// [`SHARDS`] order, which is what the generated config says.
pub fn shard_map() -> ShardMap {
    ShardMap::Hash((0..SHARDS.len()).collect())
}

/// The shard holding `owner_id` (and so its pets and watch sessions), by
/// the router's own hash map, so the sample data sits where Meridian looks.
pub fn shard_of(owner_id: i64) -> &'static ShardLayout {
    let index = shard_map().shard_for(&KeyValue::Int(owner_id)).expect("a hash map over two shards names one");
    &SHARDS[index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_are_symmetric_and_local_is_fastest() {
        for a in Region::ALL {
            assert_eq!(round_trip(a, a), Duration::from_millis(1));
            for b in Region::ALL {
                assert_eq!(round_trip(a, b), round_trip(b, a));
                assert!(round_trip(a, b) >= round_trip(a, a));
                assert_eq!(one_way_delay(a, b) * 2, round_trip(a, b));
            }
        }
        assert_eq!(one_way_delay(Region::UsEast, Region::EuWest), Duration::from_millis(20));
        assert_eq!(one_way_delay(Region::UsEast, Region::ApSouth), Duration::from_millis(75));
        assert_eq!(one_way_delay(Region::UsEast, Region::UsEast), Duration::from_micros(500));
    }

    #[test]
    fn one_meridian_node_per_region_and_the_first_is_node_id() {
        assert_eq!(MERIDIAN_NODES[0].name, crate::demo::NODE_ID);
        for region in Region::ALL {
            assert_eq!(MERIDIAN_NODES.iter().filter(|n| n.region == region).count(), 1, "{region}");
        }
        for (i, node) in MERIDIAN_NODES.iter().enumerate() {
            assert_eq!(node.member_id, i as u64 + 1);
        }
    }

    #[test]
    fn every_region_has_a_server_of_every_shard() {
        for shard in &SHARDS {
            let placements = shard.placements();
            assert_eq!(placements.iter().filter(|p| p.primary).count(), 1);
            for region in Region::ALL {
                assert_eq!(placements.iter().filter(|p| p.region == region).count(), 1, "{} {region}", shard.name);
            }
        }
        let names: Vec<String> = SHARDS.iter().flat_map(ShardLayout::placements).map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "s1-primary",
                "s1-replica-eu-west",
                "s1-replica-ap-south",
                "s2-primary",
                "s2-replica-us-east",
                "s2-replica-ap-south"
            ]
        );
    }

    #[test]
    fn owners_follow_postgres_hash_remainders() {
        // Remainders of PostgreSQL's partition hash, modulus 2.
        for id in 1..=100 {
            let remainder = router::hash::hash_remainder(&KeyValue::Int(id), 2);
            assert_eq!(shard_of(id).name, SHARDS[remainder as usize].name, "owner {id}");
        }
        // Both shards get a fair part of the 100 sample owners.
        let on_s1 = (1..=100).filter(|id| shard_of(*id).name == "s1").count();
        assert!((30..=70).contains(&on_s1), "{on_s1} of 100 owners on s1");
    }
}
