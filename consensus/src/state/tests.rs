//! Every change, applied and refused. `refused` also checks that a refused
//! command left the state exactly as it was.

use std::time::Duration;

use super::*;
use crate::types::Command;

fn cmd(change: Change) -> Command {
    Command { actor: "dba".into(), origin: "10.0.0.9:40000".into(), at: 1_000, change }
}

#[track_caller]
fn ok(state: &mut TopologyState, change: Change) -> Applied {
    match state.apply(&cmd(change.clone())) {
        Ok(applied) => applied,
        Err(e) => panic!("{change} refused: {e}"),
    }
}

#[track_caller]
fn changed(state: &mut TopologyState, change: Change) {
    let before = state.version;
    let applied = ok(state, change);
    assert!(applied.changed);
    assert_eq!(applied.version, before + 1);
}

#[track_caller]
fn unchanged(state: &mut TopologyState, change: Change) {
    let before = state.clone();
    let applied = ok(state, change);
    assert_eq!(applied, Applied { version: before.version, changed: false });
    assert_eq!(*state, before, "an unchanged command changed the state");
}

#[track_caller]
fn refused(state: &mut TopologyState, change: Change) -> CommandError {
    let before = state.clone();
    let err = state.apply(&cmd(change)).expect_err("the command was applied");
    assert_eq!(*state, before, "a refused command changed the state");
    err
}

fn create_shard(name: &str) -> Change {
    Change::CreateShard { name: name.into(), policy: ShardPolicy::default() }
}

fn add_node(name: &str, shard: &str, role: Role) -> Change {
    let port = 5432 + name.bytes().map(u16::from).sum::<u16>();
    Change::AddNode {
        name: name.into(),
        address: format!("127.0.0.1:{port}"),
        shard: shard.into(),
        region: "eu".into(),
        role,
        priority: 100,
    }
}

fn name(s: &str) -> String {
    s.to_owned()
}

/// Shards `s1` (primary pg1, replicas pg2, pg3) and `s2` (primary pg4,
/// replica pg5), each primary at epoch 1.
fn cluster() -> TopologyState {
    let mut state = TopologyState::default();
    for change in [
        create_shard("s1"),
        create_shard("s2"),
        add_node("pg1", "s1", Role::Primary),
        add_node("pg2", "s1", Role::Replica),
        add_node("pg3", "s1", Role::Replica),
        add_node("pg4", "s2", Role::Primary),
        add_node("pg5", "s2", Role::Replica),
    ] {
        changed(&mut state, change);
    }
    state
}

fn hash_table(table: &str, shards: &[&str]) -> Change {
    Change::ShardTable {
        schema: None,
        table: table.into(),
        column: "id".into(),
        key_type: KeyType::Int,
        map: ShardMap::Hash(shards.iter().map(|s| name(s)).collect()),
    }
}

fn table_with(map: ShardMap, key_type: KeyType) -> Change {
    Change::ShardTable { schema: Some("app".into()), table: "t".into(), column: "k".into(), key_type, map }
}

fn range(from: Option<i64>, to: Option<i64>, shard: &str) -> RangePart {
    RangePart { from: from.map(KeyValue::Int), to: to.map(KeyValue::Int), shard: shard.into() }
}

// ---- shards -------------------------------------------------------------

#[test]
fn first_shard_becomes_the_default() {
    let mut state = TopologyState::default();
    changed(&mut state, create_shard("s1"));
    changed(&mut state, create_shard("s2"));
    assert_eq!(state.default_shard.as_deref(), Some("s1"));
    let s1 = &state.shards["s1"];
    assert_eq!((s1.primary.as_deref(), s1.epoch, s1.fenced, s1.paused), (None, 0, false, false));
    assert_eq!(s1.policy, ShardPolicy::default());
}

#[test]
fn create_shard_refuses_a_taken_name() {
    let mut state = cluster();
    assert_eq!(refused(&mut state, create_shard("s1")), CommandError::ShardExists(name("s1")));
}

#[test]
fn names_are_checked() {
    let mut state = TopologyState::default();
    for (bad, reason) in [
        ("", "empty"),
        (" s1", "leading or trailing whitespace"),
        ("s1\n", "leading or trailing whitespace"),
        ("s\u{7}1", "control characters"),
        (&"x".repeat(64), "longer than 63 bytes"),
    ] {
        let err = refused(&mut state, create_shard(bad));
        assert_eq!(err, CommandError::InvalidName { kind: name("shard"), name: name(bad), reason: name(reason) });
    }
    changed(&mut state, create_shard(&"x".repeat(63)));
    changed(&mut state, create_shard("Ünïcode shard"));
}

#[test]
fn policies_that_cannot_hold_are_refused() {
    let mut state = TopologyState::default();
    let zero_rto = ShardPolicy { rto_target: Duration::ZERO, ..ShardPolicy::default() };
    let err = refused(&mut state, Change::CreateShard { name: name("s1"), policy: zero_rto });
    assert!(matches!(err, CommandError::InvalidPolicy { ref reason, .. } if reason.contains("rto_target")));

    let async_rpo0 = ShardPolicy { rpo_target: Duration::ZERO, ..ShardPolicy::default() };
    let err = refused(&mut state, Change::CreateShard { name: name("s1"), policy: async_rpo0 });
    assert_eq!(
        err,
        CommandError::InvalidPolicy { shard: name("s1"), reason: name("rpo_target 0 needs durability sync") }
    );

    let sync_rpo0 = ShardPolicy { durability: Durability::Sync, ..async_rpo0 };
    changed(&mut state, Change::CreateShard { name: name("s1"), policy: sync_rpo0 });
}

#[test]
fn alter_shard_changes_only_the_fields_given() {
    let mut state = cluster();
    let change = PolicyChange { rto_target: Some(Duration::from_secs(3)), ..PolicyChange::default() };
    changed(&mut state, Change::AlterShard { name: name("s1"), change });
    let policy = state.shards["s1"].policy;
    assert_eq!(policy.rto_target, Duration::from_secs(3));
    assert_eq!(policy.durability, Durability::Async);
    assert_eq!(policy.max_lag_on_failover, ShardPolicy::default().max_lag_on_failover);

    // The same again changes nothing and is not audited.
    let audited = state.audit.len();
    unchanged(&mut state, Change::AlterShard { name: name("s1"), change });
    assert_eq!(state.audit.len(), audited);
}

#[test]
fn alter_shard_checks_the_resulting_policy() {
    let mut state = cluster();
    let rpo0 = PolicyChange { rpo_target: Some(Duration::ZERO), ..PolicyChange::default() };
    assert!(matches!(
        refused(&mut state, Change::AlterShard { name: name("s1"), change: rpo0 }),
        CommandError::InvalidPolicy { .. }
    ));
    let sync_rpo0 = PolicyChange { durability: Some(Durability::Sync), ..rpo0 };
    changed(&mut state, Change::AlterShard { name: name("s1"), change: sync_rpo0 });
    // Back to async while the RPO target is still zero: refused.
    let to_async = PolicyChange { durability: Some(Durability::Async), ..PolicyChange::default() };
    assert!(matches!(
        refused(&mut state, Change::AlterShard { name: name("s1"), change: to_async }),
        CommandError::InvalidPolicy { .. }
    ));
    assert_eq!(
        refused(&mut state, Change::AlterShard { name: name("nope"), change: to_async }),
        CommandError::UnknownShard(name("nope"))
    );
}

#[test]
fn drop_shard_refuses_while_in_use() {
    let mut state = cluster();
    assert_eq!(refused(&mut state, Change::DropShard { name: name("nope") }), CommandError::UnknownShard(name("nope")));
    assert_eq!(
        refused(&mut state, Change::DropShard { name: name("s2") }),
        CommandError::ShardHasNodes { shard: name("s2"), node: name("pg4") }
    );

    changed(&mut state, create_shard("s3"));
    changed(&mut state, hash_table("orders", &["s2", "s3"]));
    assert_eq!(
        refused(&mut state, Change::DropShard { name: name("s3") }),
        CommandError::ShardHasTables { shard: name("s3"), table: name("orders") }
    );
    changed(&mut state, Change::UnshardTable { schema: None, table: name("orders") });
    changed(&mut state, Change::DropShard { name: name("s3") });
    assert!(!state.shards.contains_key("s3"));
}

#[test]
fn the_default_shard_goes_last() {
    let mut state = TopologyState::default();
    changed(&mut state, create_shard("s1"));
    changed(&mut state, create_shard("s2"));
    assert_eq!(refused(&mut state, Change::DropShard { name: name("s1") }), CommandError::ShardIsDefault(name("s1")));
    changed(&mut state, Change::DropShard { name: name("s2") });
    changed(&mut state, Change::DropShard { name: name("s1") });
    assert_eq!(state.default_shard, None);
    changed(&mut state, create_shard("s9"));
    assert_eq!(state.default_shard.as_deref(), Some("s9"));
}

#[test]
fn set_default_shard() {
    let mut state = cluster();
    unchanged(&mut state, Change::SetDefaultShard { name: name("s1") });
    changed(&mut state, Change::SetDefaultShard { name: name("s2") });
    assert_eq!(state.default_shard.as_deref(), Some("s2"));
    assert_eq!(
        refused(&mut state, Change::SetDefaultShard { name: name("s3") }),
        CommandError::UnknownShard(name("s3"))
    );
}

// ---- regions ------------------------------------------------------------

#[test]
fn regions_are_declared_by_nodes_or_explicitly() {
    let mut state = cluster();
    assert!(state.regions.contains("eu"));
    changed(&mut state, Change::AddRegion { name: name("ap") });
    unchanged(&mut state, Change::AddRegion { name: name("ap") });
    assert!(matches!(refused(&mut state, Change::AddRegion { name: name("") }), CommandError::InvalidName { .. }));
    assert_eq!(
        refused(&mut state, Change::RemoveRegion { name: name("eu") }),
        CommandError::RegionInUse { region: name("eu"), node: name("pg1") }
    );
    assert_eq!(
        refused(&mut state, Change::RemoveRegion { name: name("mars") }),
        CommandError::UnknownRegion(name("mars"))
    );
    changed(&mut state, Change::RemoveRegion { name: name("ap") });
    assert_eq!(state.regions.iter().collect::<Vec<_>>(), ["eu"]);
}

// ---- nodes --------------------------------------------------------------

#[test]
fn adding_the_first_primary_raises_the_epoch() {
    let mut state = TopologyState::default();
    changed(&mut state, create_shard("s1"));
    changed(&mut state, add_node("pg2", "s1", Role::Replica));
    assert_eq!(state.shards["s1"].epoch, 0);
    assert!(state.events.is_empty());

    changed(&mut state, add_node("pg1", "s1", Role::Primary));
    let s1 = &state.shards["s1"];
    assert_eq!((s1.primary.as_deref(), s1.epoch), (Some("pg1"), 1));
    assert_eq!(state.writable_primary("s1").map(|n| n.name.as_str()), Some("pg1"));
    let event = state.events.back().unwrap();
    assert_eq!(
        (event.kind, event.node.as_deref(), event.shard.as_deref()),
        (EventKind::Promotion, Some("pg1"), Some("s1"))
    );

    let node = &state.nodes["pg1"];
    assert_eq!((node.role, node.state, node.banned, node.priority), (Role::Primary, NodeState::Up, false, 100));
    assert_eq!(state.nodes_of("s1").map(|n| n.name.as_str()).collect::<Vec<_>>(), ["pg1", "pg2"]);
}

#[test]
fn add_node_refusals() {
    let mut state = cluster();
    assert_eq!(
        refused(&mut state, add_node("pg9", "s1", Role::Primary)),
        CommandError::ShardHasPrimary { shard: name("s1"), primary: name("pg1") }
    );
    assert_eq!(refused(&mut state, add_node("pg1", "s1", Role::Replica)), CommandError::NodeExists(name("pg1")));
    assert_eq!(refused(&mut state, add_node("pg9", "s7", Role::Replica)), CommandError::UnknownShard(name("s7")));

    let Change::AddNode { address: taken, .. } = add_node("pg1", "s1", Role::Replica) else { unreachable!() };
    let same_address = Change::AddNode {
        name: name("pg9"),
        address: taken,
        shard: name("s1"),
        region: name("eu"),
        role: Role::Replica,
        priority: 1,
    };
    assert_eq!(
        refused(&mut state, same_address),
        CommandError::AddressInUse { address: state.nodes["pg1"].address.clone(), node: name("pg1") }
    );

    for bad in ["db", ":5432", "db:", "db:0", "db:65536", "db:port", "my db:5432"] {
        let change = Change::AddNode {
            name: name("pg9"),
            address: name(bad),
            shard: name("s1"),
            region: name("eu"),
            role: Role::Replica,
            priority: 1,
        };
        assert_eq!(
            refused(&mut state, change),
            CommandError::InvalidAddress { node: name("pg9"), address: name(bad) },
            "{bad}"
        );
    }
}

#[test]
fn add_node_accepts_hostnames_and_ipv6_and_declares_its_region() {
    let mut state = cluster();
    for (node, address) in [("pg8", "db-8.internal:5432"), ("pg9", "[::1]:6543")] {
        changed(
            &mut state,
            Change::AddNode {
                name: name(node),
                address: name(address),
                shard: name("s2"),
                region: name("us-east"),
                role: Role::Replica,
                priority: 0,
            },
        );
    }
    assert!(state.regions.contains("us-east"));
}

#[test]
fn remove_node() {
    let mut state = cluster();
    assert_eq!(
        refused(&mut state, Change::RemoveNode { name: name("pg1") }),
        CommandError::NodeIsPrimary { node: name("pg1"), shard: name("s1") }
    );
    assert_eq!(refused(&mut state, Change::RemoveNode { name: name("pg0") }), CommandError::UnknownNode(name("pg0")));
    changed(&mut state, Change::RemoveNode { name: name("pg2") });
    assert!(!state.nodes.contains_key("pg2"));
}

#[test]
fn ban_and_unban_are_idempotent() {
    let mut state = cluster();
    changed(&mut state, Change::BanNode { name: name("pg2") });
    assert!(state.nodes["pg2"].banned);
    unchanged(&mut state, Change::BanNode { name: name("pg2") });
    changed(&mut state, Change::UnbanNode { name: name("pg2") });
    assert!(!state.nodes["pg2"].banned);
    unchanged(&mut state, Change::UnbanNode { name: name("pg2") });
    assert_eq!(refused(&mut state, Change::BanNode { name: name("pg0") }), CommandError::UnknownNode(name("pg0")));
}

#[test]
fn the_writable_primary_cannot_be_banned_but_a_fenced_one_can() {
    let mut state = cluster();
    assert_eq!(
        refused(&mut state, Change::BanNode { name: name("pg1") }),
        CommandError::NodeIsPrimary { node: name("pg1"), shard: name("s1") }
    );
    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    changed(&mut state, Change::BanNode { name: name("pg1") });
}

#[test]
fn health_verdicts() {
    let mut state = cluster();
    changed(&mut state, Change::MarkNodeDown { name: name("pg1") });
    assert_eq!(state.nodes["pg1"].state, NodeState::Down);
    assert_eq!(state.events.back().unwrap().kind, EventKind::NodeDown);
    unchanged(&mut state, Change::MarkNodeDown { name: name("pg1") });
    changed(&mut state, Change::MarkNodeUp { name: name("pg1") });
    assert_eq!(state.nodes["pg1"].state, NodeState::Up);
    assert_eq!(state.events.back().unwrap().kind, EventKind::NodeUp);
    unchanged(&mut state, Change::MarkNodeUp { name: name("pg1") });
    assert_eq!(refused(&mut state, Change::MarkNodeUp { name: name("pg0") }), CommandError::UnknownNode(name("pg0")));

    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    for change in [Change::MarkNodeUp { name: name("pg1") }, Change::MarkNodeDown { name: name("pg1") }] {
        assert_eq!(refused(&mut state, change), CommandError::NodeFenced(name("pg1")));
    }
}

// ---- failover: fence, promote, rejoin ------------------------------------

#[test]
fn failover_fences_then_promotes_under_the_same_epoch() {
    let mut state = cluster();
    changed(&mut state, Change::MarkNodeDown { name: name("pg1") });

    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    let s1 = &state.shards["s1"];
    assert_eq!((s1.epoch, s1.fenced, s1.primary.as_deref()), (2, true, Some("pg1")));
    assert_eq!(state.nodes["pg1"].state, NodeState::Fenced);
    assert!(state.writable_primary("s1").is_none(), "a fenced shard takes no writes");
    assert_eq!(state.events.back().unwrap().kind, EventKind::Fence);

    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg2"), epoch: 2 });
    let s1 = &state.shards["s1"];
    assert_eq!((s1.epoch, s1.fenced, s1.primary.as_deref()), (2, false, Some("pg2")));
    assert_eq!(state.writable_primary("s1").map(|n| n.name.as_str()), Some("pg2"));
    let (old, new) = (&state.nodes["pg1"], &state.nodes["pg2"]);
    assert_eq!((old.role, old.state), (Role::Replica, NodeState::Fenced));
    assert_eq!((new.role, new.state), (Role::Primary, NodeState::Up));
    let event = state.events.back().unwrap();
    assert_eq!(event.kind, EventKind::Promotion);
    assert_eq!(event.summary, "pg2 is primary of shard s1 at epoch 2, replacing pg1");

    // The same decision committed again (a retried proposal) is a no-op.
    unchanged(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg2"), epoch: 2 });
    // Another node at the same epoch, now unfenced, is stale.
    assert_eq!(
        refused(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg3"), epoch: 2 }),
        CommandError::StaleEpoch { shard: name("s1"), epoch: 2, current: 2 }
    );
}

#[test]
fn switchover_raises_the_epoch_and_fences_the_old_primary() {
    let mut state = cluster();
    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg3"), epoch: 5 });
    assert_eq!(state.shards["s1"].epoch, 5);
    assert_eq!(state.nodes["pg1"].state, NodeState::Fenced);
    for epoch in [0, 4, 5] {
        assert_eq!(
            refused(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg2"), epoch }),
            CommandError::StaleEpoch { shard: name("s1"), epoch, current: 5 }
        );
    }
    // Re-asserting the current primary under a newer epoch is allowed.
    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg3"), epoch: 6 });
    assert_eq!(state.nodes["pg3"].state, NodeState::Up);
}

#[test]
fn set_primary_refusals() {
    let mut state = cluster();
    let set = |node: &str, epoch| Change::SetPrimary { shard: name("s1"), node: name(node), epoch };
    assert_eq!(
        refused(&mut state, Change::SetPrimary { shard: name("s7"), node: name("pg2"), epoch: 9 }),
        CommandError::UnknownShard(name("s7"))
    );
    assert_eq!(refused(&mut state, set("pg0", 9)), CommandError::UnknownNode(name("pg0")));
    assert_eq!(
        refused(&mut state, set("pg4", 9)),
        CommandError::NodeNotInShard { node: name("pg4"), shard: name("s1"), actual: name("s2") }
    );

    changed(&mut state, Change::BanNode { name: name("pg2") });
    assert_eq!(refused(&mut state, set("pg2", 9)), CommandError::NodeBanned(name("pg2")));

    changed(&mut state, Change::MarkNodeDown { name: name("pg3") });
    assert_eq!(refused(&mut state, set("pg3", 9)), CommandError::NodeDown(name("pg3")));

    // A node fenced by an earlier failover stays out until rejoined.
    changed(&mut state, Change::MarkNodeUp { name: name("pg3") });
    changed(&mut state, set("pg3", 2));
    assert_eq!(refused(&mut state, set("pg1", 3)), CommandError::NodeFenced(name("pg1")));
}

#[test]
fn a_fenced_primary_can_be_given_back_its_shard() {
    // The failover is called off: the fenced primary is confirmed under
    // the fence's epoch.
    let mut state = cluster();
    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg1"), epoch: 2 });
    let s1 = &state.shards["s1"];
    assert_eq!((s1.epoch, s1.fenced, s1.primary.as_deref()), (2, false, Some("pg1")));
    assert_eq!(state.nodes["pg1"].state, NodeState::Up);
}

#[test]
fn fence_shard_epochs() {
    let mut state = cluster();
    for epoch in [0, 1] {
        assert_eq!(
            refused(&mut state, Change::FenceShard { shard: name("s1"), epoch }),
            CommandError::StaleEpoch { shard: name("s1"), epoch, current: 1 }
        );
    }
    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    unchanged(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 3 });
    assert_eq!(state.shards["s1"].epoch, 3);
    assert_eq!(
        refused(&mut state, Change::FenceShard { shard: name("s7"), epoch: 9 }),
        CommandError::UnknownShard(name("s7"))
    );

    // A shard without a primary can be fenced too; its first primary then
    // takes the fence's epoch.
    changed(&mut state, create_shard("s3"));
    changed(&mut state, add_node("pg6", "s3", Role::Replica));
    changed(&mut state, Change::FenceShard { shard: name("s3"), epoch: 1 });
    changed(&mut state, Change::SetPrimary { shard: name("s3"), node: name("pg6"), epoch: 1 });
    assert_eq!(state.writable_primary("s3").map(|n| n.name.as_str()), Some("pg6"));
}

#[test]
fn rejoin_brings_a_fenced_replica_back() {
    let mut state = cluster();
    assert_eq!(refused(&mut state, Change::RejoinNode { name: name("pg2") }), CommandError::NodeNotFenced(name("pg2")));
    changed(&mut state, Change::FenceShard { shard: name("s1"), epoch: 2 });
    assert_eq!(
        refused(&mut state, Change::RejoinNode { name: name("pg1") }),
        CommandError::NodeIsPrimary { node: name("pg1"), shard: name("s1") }
    );
    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg2"), epoch: 2 });
    changed(&mut state, Change::RejoinNode { name: name("pg1") });
    let pg1 = &state.nodes["pg1"];
    assert_eq!((pg1.role, pg1.state), (Role::Replica, NodeState::Up));
    assert_eq!(state.events.back().unwrap().kind, EventKind::Rejoin);
    assert_eq!(refused(&mut state, Change::RejoinNode { name: name("pg0") }), CommandError::UnknownNode(name("pg0")));
}

#[test]
fn a_fenced_former_primary_can_be_removed() {
    let mut state = cluster();
    changed(&mut state, Change::SetPrimary { shard: name("s1"), node: name("pg2"), epoch: 2 });
    changed(&mut state, Change::RemoveNode { name: name("pg1") });
}

// ---- sharding rules -----------------------------------------------------

#[test]
fn shard_table_hash() {
    let mut state = cluster();
    changed(&mut state, hash_table("orders", &["s1", "s2"]));
    let rule = &state.tables["orders"];
    assert_eq!((rule.schema.as_deref(), rule.column.as_str(), rule.key_type), (None, "id", KeyType::Int));
    assert_eq!(refused(&mut state, hash_table("orders", &["s1"])), CommandError::TableAlreadySharded(name("orders")));
    assert_eq!(
        refused(&mut state, hash_table("items", &["s1", "s9"])),
        CommandError::InvalidShardMap { table: name("items"), reason: name("unknown shard s9") }
    );
    assert!(matches!(refused(&mut state, hash_table("items", &[])), CommandError::InvalidShardMap { .. }));
    assert!(matches!(refused(&mut state, hash_table("", &["s1"])), CommandError::InvalidName { .. }));
}

#[test]
fn schema_qualified_rules_are_kept_apart() {
    let mut state = cluster();
    changed(&mut state, table_with(ShardMap::Hash(vec![name("s1")]), KeyType::Int));
    assert!(state.tables.contains_key("app.t"));
    changed(&mut state, hash_table("t", &["s2"]));
    assert_eq!(
        refused(&mut state, Change::UnshardTable { schema: Some(name("other")), table: name("t") }),
        CommandError::UnknownTable(name("other.t"))
    );
    changed(&mut state, Change::UnshardTable { schema: Some(name("app")), table: name("t") });
    assert_eq!(state.tables.keys().collect::<Vec<_>>(), ["t"]);
}

#[test]
fn range_maps_must_not_overlap() {
    let mut state = cluster();
    let disjoint = ShardMap::Range(vec![
        range(Some(100), None, "s2"),
        range(None, Some(0), "s1"),
        range(Some(0), Some(100), "s1"),
    ]);
    changed(&mut state, table_with(disjoint, KeyType::Int));
    changed(&mut state, Change::UnshardTable { schema: Some(name("app")), table: name("t") });

    let bad = [
        (vec![], "a range map needs at least one range"),
        (vec![range(Some(0), Some(10), "s1"), range(Some(5), Some(20), "s2")], "ranges for shards s1 and s2 overlap"),
        (vec![range(None, Some(10), "s1"), range(None, Some(5), "s2")], "ranges for shards s1 and s2 overlap"),
        (vec![range(Some(0), None, "s1"), range(Some(50), None, "s2")], "ranges for shards s1 and s2 overlap"),
        (vec![range(Some(5), Some(5), "s1")], "range [Int(5), Int(5)) is empty"),
        (vec![range(Some(9), Some(5), "s1")], "range [Int(9), Int(5)) is empty"),
    ];
    for (parts, reason) in bad {
        assert_eq!(
            refused(&mut state, table_with(ShardMap::Range(parts), KeyType::Int)),
            CommandError::InvalidShardMap { table: name("app.t"), reason: name(reason) }
        );
    }
}

#[test]
fn map_values_must_have_the_key_type() {
    let mut state = cluster();
    let text_bound =
        ShardMap::Range(vec![RangePart { from: Some(KeyValue::Text(name("a"))), to: None, shard: name("s1") }]);
    assert!(matches!(
        refused(&mut state, table_with(text_bound.clone(), KeyType::Int)),
        CommandError::InvalidShardMap { ref reason, .. } if reason.contains("not of the key type int")
    ));
    changed(&mut state, table_with(text_bound, KeyType::Text));

    let uuid_list = ShardMap::List { values: vec![(KeyValue::Int(1), name("s1"))], default: None };
    assert!(matches!(
        refused(
            &mut state,
            Change::ShardTable {
                schema: None,
                table: name("u"),
                column: name("id"),
                key_type: KeyType::Uuid,
                map: uuid_list
            }
        ),
        CommandError::InvalidShardMap { .. }
    ));
}

#[test]
fn list_maps() {
    let mut state = cluster();
    let list =
        |values: Vec<(KeyValue, String)>, default: Option<&str>| ShardMap::List { values, default: default.map(name) };
    let dup = list(vec![(KeyValue::Text(name("fr")), name("s1")), (KeyValue::Text(name("fr")), name("s2"))], None);
    assert_eq!(
        refused(&mut state, table_with(dup, KeyType::Text)),
        CommandError::InvalidShardMap { table: name("app.t"), reason: name("value Text(\"fr\") is listed twice") }
    );
    assert!(matches!(
        refused(&mut state, table_with(list(vec![], None), KeyType::Text)),
        CommandError::InvalidShardMap { .. }
    ));
    assert_eq!(
        refused(&mut state, table_with(list(vec![], Some("s8")), KeyType::Text)),
        CommandError::InvalidShardMap { table: name("app.t"), reason: name("unknown shard s8") }
    );
    changed(&mut state, table_with(list(vec![], Some("s2")), KeyType::Text));
    assert_eq!(state.tables["app.t"].map.shards().into_iter().collect::<Vec<_>>(), ["s2"]);
}

// ---- pause, events, audit -------------------------------------------------

#[test]
fn pause_and_resume() {
    let mut state = cluster();
    changed(&mut state, Change::Pause { shard: Some(name("s1")) });
    assert!(state.is_paused("s1") && !state.is_paused("s2"));
    unchanged(&mut state, Change::Pause { shard: Some(name("s1")) });
    changed(&mut state, Change::Pause { shard: None });
    assert!(state.is_paused("s2"));
    unchanged(&mut state, Change::Pause { shard: None });
    changed(&mut state, Change::Resume { shard: None });
    assert!(state.is_paused("s1") && !state.is_paused("s2"));
    changed(&mut state, Change::Resume { shard: Some(name("s1")) });
    unchanged(&mut state, Change::Resume { shard: Some(name("s1")) });
    unchanged(&mut state, Change::Resume { shard: None });
    assert!(!state.is_paused("s1"));
    assert_eq!(refused(&mut state, Change::Pause { shard: Some(name("s9")) }), CommandError::UnknownShard(name("s9")));
}

fn append_event(summary: &str, phases: Vec<Phase>) -> Change {
    Change::AppendEvent { kind: EventKind::Drill, shard: Some(name("s1")), node: None, summary: name(summary), phases }
}

#[test]
fn append_event_is_recorded_but_not_audited() {
    let mut state = cluster();
    let audited = state.audit.len();
    let next_id = state.next_event_id;
    let phases = vec![Phase { name: name("fence"), at: 10 }, Phase { name: name("promote"), at: 10 }];
    changed(&mut state, append_event("drill switchover s1: rto 1.2s", phases.clone()));
    assert_eq!(state.audit.len(), audited);
    let event = state.events.back().unwrap();
    assert_eq!(event.id, next_id);
    assert_eq!((event.kind, event.at, event.actor.as_str()), (EventKind::Drill, 1_000, "dba"));
    assert_eq!(event.phases, phases);

    assert_eq!(
        refused(&mut state, append_event("  ", vec![])),
        CommandError::InvalidEvent(name("the summary is empty"))
    );
    let backwards = vec![Phase { name: name("b"), at: 20 }, Phase { name: name("a"), at: 10 }];
    assert_eq!(
        refused(&mut state, append_event("x", backwards)),
        CommandError::InvalidEvent(name("phases are not in time order"))
    );
}

#[test]
fn every_change_is_audited_with_who_where_and_when() {
    let mut state = TopologyState::default();
    let command = Command {
        actor: name("alice"),
        origin: name("192.0.2.4:5555"),
        at: 1_700_000_000_123,
        change: create_shard("s1"),
    };
    state.apply(&command).unwrap();
    let entry = state.audit.back().unwrap();
    assert_eq!(
        *entry,
        AuditEntry {
            version: 1,
            at: 1_700_000_000_123,
            actor: name("alice"),
            origin: name("192.0.2.4:5555"),
            change: create_shard("s1"),
        }
    );
    let state = cluster();
    assert_eq!(state.audit.len(), 7);
    assert!(state.audit.iter().map(|e| e.version).eq(1..=7));
}

#[test]
fn logs_are_bounded() {
    let mut state = TopologyState::default();
    changed(&mut state, create_shard("s1"));
    let pause = |paused| if paused { Change::Pause { shard: None } } else { Change::Resume { shard: None } };
    for i in 0..AUDIT_LOG_LIMIT + 10 {
        changed(&mut state, pause(i % 2 == 0));
    }
    assert_eq!(state.audit.len(), AUDIT_LOG_LIMIT);
    assert_eq!(state.audit.back().unwrap().version, state.version);
    assert_eq!(state.audit.front().unwrap().version, state.version - AUDIT_LOG_LIMIT as u64 + 1);

    for i in 0..EVENT_LOG_LIMIT + 5 {
        changed(&mut state, append_event(&format!("event {i}"), vec![]));
    }
    assert_eq!(state.events.len(), EVENT_LOG_LIMIT);
    assert_eq!(state.events.front().unwrap().id, 5);
    assert_eq!(state.events.back().unwrap().id, (EVENT_LOG_LIMIT + 4) as u64);
    assert_eq!(state.next_event_id, (EVENT_LOG_LIMIT + 5) as u64);
}

// ---- the state as a whole -------------------------------------------------

#[test]
fn refused_and_unchanged_commands_do_not_move_the_version() {
    let mut state = cluster();
    let version = state.version;
    refused(&mut state, create_shard("s1"));
    unchanged(&mut state, Change::UnbanNode { name: name("pg2") });
    assert_eq!(state.version, version);
}

#[test]
fn applying_the_same_commands_gives_the_same_state() {
    let script = || {
        let mut state = cluster();
        let _ = state.apply(&cmd(create_shard("s1")));
        let _ = state.apply(&cmd(Change::FenceShard { shard: name("s1"), epoch: 2 }));
        let _ = state.apply(&cmd(Change::SetPrimary { shard: name("s1"), node: name("pg3"), epoch: 2 }));
        let _ = state.apply(&cmd(hash_table("orders", &["s1", "s2"])));
        state
    };
    assert_eq!(script(), script());
}

#[test]
fn the_state_round_trips_through_json() {
    let mut state = cluster();
    changed(&mut state, hash_table("orders", &["s1", "s2"]));
    changed(
        &mut state,
        Change::ShardTable {
            schema: None,
            table: name("sessions"),
            column: name("id"),
            key_type: KeyType::Uuid,
            map: ShardMap::List { values: vec![(KeyValue::Uuid(u128::MAX), name("s2"))], default: Some(name("s1")) },
        },
    );
    changed(&mut state, Change::FenceShard { shard: name("s2"), epoch: 7 });
    changed(&mut state, append_event("failover", vec![Phase { name: name("fence"), at: 5 }]));
    let json = serde_json::to_string(&state).unwrap();
    assert_eq!(serde_json::from_str::<TopologyState>(&json).unwrap(), state);
}

// ---- bootstrap ----------------------------------------------------------

fn seed() -> Vec<Change> {
    vec![
        create_shard("s1"),
        create_shard("s2"),
        add_node("pg1", "s1", Role::Primary),
        add_node("pg2", "s1", Role::Replica),
        add_node("pg4", "s2", Role::Primary),
        hash_table("accounts", &["s1", "s2"]),
    ]
}

#[test]
fn bootstrap_applies_every_change_once() {
    let mut state = TopologyState::default();
    let applied = ok(&mut state, Change::Bootstrap { changes: seed() });
    assert_eq!(applied, Applied { version: seed().len() as u64 + 1, changed: true });
    assert_eq!(state.shards.len(), 2);
    assert_eq!(state.shards["s1"].primary.as_deref(), Some("pg1"));
    assert_eq!(state.shards["s1"].epoch, 1);
    assert!(state.tables.contains_key("accounts"));
    assert_eq!(state.default_shard.as_deref(), Some("s1"));
    // Each seeded change is audited, then the bootstrap itself.
    assert_eq!(state.audit.len(), seed().len() + 1);
    assert!(matches!(state.audit.back().map(|a| &a.change), Some(Change::Bootstrap { .. })));
    assert_eq!(state.version, seed().len() as u64 + 1);

    // A second bootstrap (another node's config) loses harmlessly.
    let err = refused(&mut state, Change::Bootstrap { changes: vec![create_shard("s9")] });
    assert!(matches!(err, CommandError::AlreadyBootstrapped { .. }), "{err}");
}

#[test]
fn bootstrap_is_all_or_nothing() {
    let mut state = TopologyState::default();
    let mut changes = seed();
    changes.push(add_node("pg9", "nowhere", Role::Replica));
    let err = refused(&mut state, Change::Bootstrap { changes });
    let CommandError::InvalidBootstrap { index, source, .. } = err else { panic!("{err}") };
    assert_eq!(index, seed().len());
    assert_eq!(*source, CommandError::UnknownShard("nowhere".into()));

    let nested = Change::Bootstrap { changes: vec![Change::Bootstrap { changes: vec![] }] };
    assert!(matches!(refused(&mut state, nested), CommandError::InvalidBootstrap { index: 0, .. }));
}

// ---- users --------------------------------------------------------------

fn user(name: &str, auth: UserAuth, secret: Option<&str>) -> UserRecord {
    UserRecord { name: name.into(), auth, secret: secret.map(str::to_owned), admin: false, pool_mode: None }
}

#[test]
fn users_are_put_replaced_and_dropped() {
    let mut state = TopologyState::default();
    let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
    changed(&mut state, Change::PutUser { user: user("app", UserAuth::ScramSha256, Some(scram)) });
    unchanged(&mut state, Change::PutUser { user: user("app", UserAuth::ScramSha256, Some(scram)) });
    let admin = UserRecord { admin: true, ..user("app", UserAuth::Trust, None) };
    changed(&mut state, Change::PutUser { user: admin.clone() });
    assert_eq!(state.users["app"], admin);
    changed(&mut state, Change::DropUser { name: name("app") });
    assert!(state.users.is_empty());
    assert_eq!(refused(&mut state, Change::DropUser { name: name("app") }), CommandError::UnknownUser(name("app")));
}

#[test]
fn user_secrets_must_fit_their_method_and_never_show() {
    let mut state = TopologyState::default();
    for bad in [
        user("u", UserAuth::Trust, Some("md5")),
        user("u", UserAuth::ScramSha256, None),
        user("u", UserAuth::ScramSha256, Some("hunter2")),
        user("u", UserAuth::Md5, Some("md5XYZ")),
        UserRecord { pool_mode: Some("statement".into()), ..user("u", UserAuth::Trust, None) },
    ] {
        assert!(matches!(refused(&mut state, Change::PutUser { user: bad }), CommandError::InvalidUser { .. }));
    }
    let secret = "md5".to_owned() + &"a1".repeat(16);
    let u = user("u", UserAuth::Md5, Some(&secret));
    changed(&mut state, Change::PutUser { user: u.clone() });
    let shown = format!("{} {:?} {:?}", Change::PutUser { user: u.clone() }, u, state.audit.back());
    assert!(!shown.contains(&secret[3..]), "{shown}");
}

// ---- reachability reports -------------------------------------------------

#[test]
fn reach_reports_are_kept_per_member_and_not_audited() {
    let mut state = cluster();
    let audited = state.audit.len();
    let report = |member, reachable| Change::ReportReach { member, node: name("pg1"), reachable };
    changed(&mut state, report(1, false));
    unchanged(&mut state, report(1, false));
    changed(&mut state, report(2, false));
    changed(&mut state, report(1, true));
    assert_eq!(state.reach["pg1"], [(1, true), (2, false)].into_iter().collect());
    assert_eq!(state.audit.len(), audited, "observations are not audited");
    assert_eq!(
        refused(&mut state, Change::ReportReach { member: 1, node: name("nope"), reachable: true }),
        CommandError::UnknownNode(name("nope"))
    );
    changed(&mut state, Change::RemoveNode { name: name("pg2") });
    changed(&mut state, Change::ReportReach { member: 1, node: name("pg3"), reachable: true });
    changed(&mut state, Change::RemoveNode { name: name("pg3") });
    assert!(!state.reach.contains_key("pg3"), "a removed node's reports go with it");
}

#[test]
fn a_report_is_recorded_with_its_id_version_and_event() {
    let mut state = TopologyState::default();
    let policy = ShardPolicy::default();
    let mut report = Report::new(ReportKind::Switchover, Some("s1"), Some(&policy));
    report.detail = "pg-1 → pg-2".into();
    report.phases = vec![Phase { name: "fence".into(), at: 10 }, Phase { name: "promote".into(), at: 20 }];
    let applied = state.apply(&cmd(Change::RecordReport { report: Box::new(report.clone()) })).unwrap();
    assert!(applied.changed);
    let stored = state.reports.back().unwrap();
    assert_eq!((stored.id, stored.version), (0, applied.version));
    assert_eq!(state.next_report_id, 1);
    assert_eq!(state.events.back().unwrap().kind, EventKind::Switchover);
    assert!(state.audit.is_empty(), "reports are not audited");

    report.phases.reverse();
    let before = state.clone();
    assert!(state.apply(&cmd(Change::RecordReport { report: Box::new(report) })).is_err());
    assert_eq!(state, before, "refused: all or nothing");
}

#[test]
fn reports_are_judged_against_their_targets() {
    let policy = ShardPolicy { rpo_target: Duration::ZERO, durability: Durability::Sync, ..ShardPolicy::default() };
    let mut r = Report::new(ReportKind::DrillFailover, Some("s1"), Some(&policy));
    assert_eq!(r.judge(), None, "nothing measured");
    r.rto_ms = Some(2_500);
    r.rpo_commits = Some(0);
    r.rpo_bytes = Some(120);
    assert_eq!(r.judge(), Some(true), "no acknowledged commit lost: bytes do not count");
    r.rpo_commits = Some(1);
    assert_eq!(r.judge(), Some(false), "RPO 0 target, one commit lost");
    r.rpo_commits = Some(0);
    r.rto_ms = Some(10_001);
    assert_eq!(r.judge(), Some(false), "over the RTO target");
    r.rto_ms = Some(1);
    r.outcome = Outcome::Stopped;
    assert_eq!(r.judge(), Some(false), "did not complete");

    let mut r = Report::new(ReportKind::Failover, Some("s1"), Some(&ShardPolicy::default()));
    r.rto_ms = Some(3_000);
    r.rpo_bytes = Some(4096);
    assert_eq!(r.judge(), None, "bytes lost, age unknown, target 10 s");
    r.rpo_ms = Some(200);
    assert_eq!(r.judge(), Some(true));
    r.rpo_bytes = Some(0);
    r.rpo_ms = None;
    assert_eq!(r.judge(), Some(true));
}

#[test]
fn an_outage_cuts_a_known_region_off_once_until_it_ends() {
    let mut state = TopologyState::default();
    state.apply(&cmd(Change::AddRegion { name: name("east") })).unwrap();
    let at = cmd(Change::EndOutage).at;
    assert!(state.apply(&cmd(Change::BeginOutage { region: name("mars"), until: at + 1000 })).is_err());
    assert!(
        state.apply(&cmd(Change::BeginOutage { region: name("east"), until: at })).is_err(),
        "ends after it begins"
    );
    state.apply(&cmd(Change::BeginOutage { region: name("east"), until: at + 1000 })).unwrap();
    assert_eq!(state.outage.as_ref().map(|o| o.region.as_str()), Some("east"));
    assert!(
        state.apply(&cmd(Change::BeginOutage { region: name("east"), until: at + 2000 })).is_err(),
        "one at a time"
    );
    assert!(state.apply(&cmd(Change::EndOutage)).unwrap().changed);
    assert!(state.outage.is_none());
    assert!(!state.apply(&cmd(Change::EndOutage)).unwrap().changed, "idempotent");
}
