//! Table-driven test of the routing layer: statements (with parameters,
//! hints and multi-statement strings) through `analyze` and `decide` to a
//! route on a two-shard topology. Which shard a key lives on is not
//! hard-coded: the expected shard comes from PostgreSQL's partition hash
//! (`hash_remainder`, checked against a real server in the
//! `hash_agreement` integration test).

use std::time::Duration;

use router::analyze::analyze;
use router::key::{KeyType, KeyValue};
use router::route::{Action, NoParams, Params, decide, decide_statements};
use router::topology::{Fallback, PgNode, ReplicaPolicy, Role, Shard, ShardMap, TableRule, Topology};

fn topology() -> Topology {
    let node = |name: &str, shard, role| PgNode {
        name: name.into(),
        address: format!("h:{}", 5432 + shard),
        region: "eu".into(),
        shard,
        role,
    };
    let rule = |table: &str, column: &str, key_type, map| TableRule {
        schema: None,
        table: table.into(),
        column: column.into(),
        key_type,
        map,
    };
    Topology {
        version: 1,
        regions: vec!["eu".into()],
        shards: vec![
            Shard { name: "s1".into(), primary: Some(0), replicas: vec![1], epoch: 1 },
            Shard { name: "s2".into(), primary: Some(2), replicas: vec![3], epoch: 1 },
        ],
        nodes: vec![
            node("s1p", 0, Role::Primary),
            node("s1r", 0, Role::Replica),
            node("s2p", 1, Role::Primary),
            node("s2r", 1, Role::Replica),
        ],
        tables: vec![
            rule("owners", "owner_id", KeyType::Int, ShardMap::Hash(vec![0, 1])),
            rule("pets", "owner_id", KeyType::Int, ShardMap::Hash(vec![0, 1])),
            rule("accounts", "email", KeyType::Text, ShardMap::Hash(vec![0, 1])),
            rule(
                "orders",
                "id",
                KeyType::Int,
                ShardMap::Range(vec![
                    router::topology::RangePart { from: None, to: Some(KeyValue::Int(1000)), shard: 0 },
                    router::topology::RangePart { from: Some(KeyValue::Int(1000)), to: None, shard: 1 },
                ]),
            ),
        ],
        default_shard: 0,
        replica_policy: ReplicaPolicy {
            max_lag_bytes: 1 << 20,
            max_lag: Duration::from_secs(5),
            fallback: Fallback::Primary,
        },
    }
}

fn shard_of_int(k: i64) -> usize {
    router::hash::hash_remainder(&KeyValue::Int(k), 2) as usize
}

fn shard_of_text(k: &str) -> usize {
    router::hash::hash_remainder(&KeyValue::Text(k.into()), 2) as usize
}

/// Two owner ids on different shards.
fn split_pair() -> (i64, i64) {
    let a = 1;
    let b = (2..).find(|k| shard_of_int(*k) != shard_of_int(a)).unwrap_or(2);
    (a, b)
}

#[derive(Debug, Clone, PartialEq)]
enum Want {
    /// One shard; `true` when a replica may serve it.
    Shard(usize, bool),
    Fanout(Vec<usize>),
    EveryPrimary,
    /// Refused with this SQLSTATE and a message containing the text.
    Reject(&'static str, &'static str),
}

fn got(a: &Action) -> Want {
    match a {
        Action::Shard { shard, replica_ok } => Want::Shard(*shard, *replica_ok),
        Action::Fanout { shards } => Want::Fanout(shards.clone()),
        Action::EveryPrimary => Want::EveryPrimary,
        Action::Reject(e) => Want::Reject(e.code, ""),
    }
}

fn matches(want: &Want, action: &Action) -> bool {
    match (want, action) {
        (Want::Reject(code, text), Action::Reject(e)) => e.code == *code && e.message.contains(text),
        _ => *want == got(action),
    }
}

/// Route a simple query the way a session does (a comment hint included).
fn route(sql: &str) -> Action {
    let t = topology();
    let stmts = router::lex::split_statements(sql);
    let analyses: Vec<_> = stmts.iter().map(|s| analyze(s, &t)).collect();
    let refs: Vec<_> = analyses.iter().collect();
    let hint = router::route::comment_hint(sql).and_then(|n| t.shards.iter().position(|s| s.name == n));
    decide_statements(&refs, &t, hint).action
}

struct Binds(Vec<(Option<Vec<u8>>, bool)>);

impl Params for Binds {
    fn get(&self, i: usize) -> Option<(Option<&[u8]>, bool)> {
        self.0.get(i).map(|(v, b)| (v.as_deref(), *b))
    }
}

#[test]
fn simple_queries_route_to_their_shard() {
    let (a, b) = split_pair();
    let sa = shard_of_int(a);
    let sb = shard_of_int(b);
    let ada = shard_of_text("ada@example.com");
    let both = vec![0, 1];
    let rows: Vec<(String, Want)> = vec![
        (format!("SELECT * FROM owners WHERE owner_id = {a}"), Want::Shard(sa, true)),
        (format!("SELECT * FROM owners WHERE owner_id = {b}"), Want::Shard(sb, true)),
        (format!("select name from OWNERS where OWNER_ID = '{a}'"), Want::Shard(sa, true)),
        (format!("SELECT * FROM owners WHERE (owner_id = {a}::bigint) AND name <> 'x'"), Want::Shard(sa, true)),
        (format!("SELECT * FROM owners WHERE owner_id = {a} FOR UPDATE"), Want::Shard(sa, false)),
        (format!("SELECT nextval('s') FROM owners WHERE owner_id = {a}"), Want::Shard(sa, false)),
        (format!("SELECT my_func(owner_id) FROM owners WHERE owner_id = {a}"), Want::Shard(sa, false)),
        (
            format!("SELECT inet_server_port(), pg_is_in_recovery() FROM owners WHERE owner_id = {a}"),
            Want::Shard(sa, true),
        ),
        (format!("SELECT * FROM owners WHERE owner_id IN ({a}, {b})"), Want::Fanout(both.clone())),
        (format!("SELECT * FROM owners WHERE owner_id IN ({a}, {a})"), Want::Shard(sa, true)),
        (
            format!("SELECT * FROM owners o JOIN pets p ON p.owner_id = o.owner_id WHERE o.owner_id = {b}"),
            Want::Shard(sb, true),
        ),
        ("SELECT count(*) FROM owners".into(), Want::Fanout(both.clone())),
        ("SELECT * FROM settings".into(), Want::Shard(0, true)),
        ("SELECT 1".into(), Want::Shard(0, true)),
        ("SELECT * FROM accounts WHERE email = 'ada@example.com'".into(), Want::Shard(ada, true)),
        ("SELECT * FROM orders WHERE id = 5".into(), Want::Shard(0, true)),
        ("SELECT * FROM orders WHERE id = 1000".into(), Want::Shard(1, true)),
        ("SELECT * FROM orders WHERE id = 999999".into(), Want::Shard(1, true)),
        // Writes.
        (format!("INSERT INTO owners (owner_id, name) VALUES ({a}, 'x')"), Want::Shard(sa, false)),
        (format!("INSERT INTO owners (name, owner_id) VALUES ('x', {b}) RETURNING *"), Want::Shard(sb, false)),
        (format!("INSERT INTO owners (owner_id, name) VALUES ({a}, 'x'), ({a}, 'y')"), Want::Shard(sa, false)),
        (
            format!("INSERT INTO owners (owner_id, name) VALUES ({a}, 'x'), ({b}, 'y')"),
            Want::Reject("0A000", "spans shards"),
        ),
        ("INSERT INTO owners (owner_id, name) VALUES (NULL, 'x')".into(), Want::Reject("22023", "NULL")),
        ("INSERT INTO owners VALUES (1, 'x')".into(), Want::Reject("0A000", "")),
        (format!("UPDATE owners SET name = 'z' WHERE owner_id = {b}"), Want::Shard(sb, false)),
        (format!("DELETE FROM pets WHERE owner_id = {a} AND name = 'rex'"), Want::Shard(sa, false)),
        ("UPDATE owners SET name = 'z'".into(), Want::Reject("0A000", "owner_id")),
        ("DELETE FROM pets".into(), Want::Reject("0A000", "owner_id")),
        (format!("UPDATE owners SET owner_id = 7 WHERE owner_id = {a}"), Want::Reject("0A000", "")),
        ("UPDATE settings SET v = 'x'".into(), Want::Shard(0, false)),
        (
            format!("WITH x AS (DELETE FROM owners WHERE owner_id = {a} RETURNING *) SELECT * FROM x"),
            Want::Shard(sa, false),
        ),
        // Schema changes and utility statements.
        ("CREATE TABLE t (x int)".into(), Want::EveryPrimary),
        ("ALTER TABLE owners ADD COLUMN age int".into(), Want::EveryPrimary),
        ("CREATE INDEX ON pets (name)".into(), Want::EveryPrimary),
        ("DROP TABLE IF EXISTS t".into(), Want::EveryPrimary),
        ("TRUNCATE owners".into(), Want::EveryPrimary),
        ("VACUUM owners".into(), Want::Shard(0, false)),
        ("DO $$BEGIN PERFORM 1; END$$".into(), Want::Shard(0, false)),
        ("this is not sql".into(), Want::Shard(0, false)),
        // Hints.
        ("/* meridian: shard=s2 */ SELECT * FROM settings".into(), Want::Shard(1, true)),
        ("/* meridian: shard=s2 */ UPDATE owners SET name = 'z'".into(), Want::Shard(1, false)),
        ("/* meridian: shard=s2 */ CREATE TABLE only_here (x int)".into(), Want::Shard(1, false)),
        // Multi-statement strings go as a whole.
        (format!("BEGIN; UPDATE owners SET name = 'a' WHERE owner_id = {b}; COMMIT"), Want::Shard(sb, false)),
        (format!("SET search_path = public; SELECT * FROM owners WHERE owner_id = {b}"), Want::Shard(sb, true)),
        (format!("SELECT 1; SELECT * FROM owners WHERE owner_id = {a}"), Want::Shard(sa, true)),
        (
            format!("SELECT * FROM owners WHERE owner_id = {a}; SELECT * FROM owners WHERE owner_id = {b}"),
            Want::Reject("0A000", "one shard"),
        ),
        (
            format!("SELECT * FROM owners WHERE owner_id = {a}; DELETE FROM owners WHERE owner_id = {a}"),
            Want::Shard(sa, false),
        ),
        ("LISTEN x; SELECT 1".into(), Want::Shard(0, false)),
        // Cross-shard shapes that cannot be merged are refused.
        ("SELECT * FROM owners o JOIN settings s ON s.k = o.name".into(), Want::Reject("0A000", "")),
        ("SELECT o.name, p.name FROM owners o JOIN pets p ON p.name = o.name".into(), Want::Reject("0A000", "")),
    ];
    let mut bad = 0;
    for (sql, want) in &rows {
        let action = route(sql);
        if !matches(want, &action) {
            bad += 1;
            eprintln!("{sql}\n  want {want:?}\n  got  {action:?}");
        }
    }
    assert_eq!(bad, 0, "{bad} of {} statements routed wrongly (see above)", rows.len());
}

#[test]
fn bind_parameters_in_text_and_binary_pick_the_shard() {
    let t = topology();
    let (a, b) = split_pair();
    let a_sel = analyze("SELECT * FROM owners WHERE owner_id = $1", &t);
    let cases: Vec<(Binds, Want)> = vec![
        (Binds(vec![(Some(a.to_be_bytes().to_vec()), true)]), Want::Shard(shard_of_int(a), true)),
        (Binds(vec![(Some(b.to_be_bytes().to_vec()), true)]), Want::Shard(shard_of_int(b), true)),
        (Binds(vec![(Some((b as i32).to_be_bytes().to_vec()), true)]), Want::Shard(shard_of_int(b), true)),
        (Binds(vec![(Some(b.to_string().into_bytes()), false)]), Want::Shard(shard_of_int(b), true)),
        (Binds(vec![(None, false)]), Want::Reject("22023", "NULL")),
        (Binds(vec![(Some(b"x".to_vec()), false)]), Want::Reject("22023", "")),
    ];
    for (params, want) in &cases {
        let d = decide(&a_sel, params, &t, None);
        assert!(matches(want, &d.action), "{:?}: want {want:?}, got {:?}", params.0, d.action);
    }
    // Without values yet (a Parse or Describe), the default shard answers.
    assert_eq!(got(&decide(&a_sel, &NoParams, &t, None).action), Want::Shard(0, true));
    // = ANY($1) with an int8[] in text and in binary.
    let any = analyze("SELECT * FROM owners WHERE owner_id = ANY($1)", &t);
    let text = Binds(vec![(Some(format!("{{{a},{b}}}").into_bytes()), false)]);
    assert_eq!(got(&decide(&any, &text, &t, None).action), Want::Fanout(vec![0, 1]));
    let mut bin = Vec::new();
    for v in [1i32, 0, 20, 1, 1] {
        bin.extend_from_slice(&v.to_be_bytes());
    }
    bin.extend_from_slice(&8i32.to_be_bytes());
    bin.extend_from_slice(&b.to_be_bytes());
    let binary = Binds(vec![(Some(bin), true)]);
    assert_eq!(got(&decide(&any, &binary, &t, None).action), Want::Shard(shard_of_int(b), true));
    // A write with a parameter key.
    let ins = analyze("INSERT INTO owners (owner_id, name) VALUES ($1, $2)", &t);
    let p = Binds(vec![(Some(b.to_be_bytes().to_vec()), true), (Some(b"n".to_vec()), false)]);
    let d = decide(&ins, &p, &t, None);
    assert_eq!(got(&d.action), Want::Shard(shard_of_int(b), false));
    assert!(d.writes);
    // Text keys in binary format.
    let acc = analyze("SELECT * FROM accounts WHERE email = $1", &t);
    let p = Binds(vec![(Some(b"ada@example.com".to_vec()), true)]);
    assert_eq!(got(&decide(&acc, &p, &t, None).action), Want::Shard(shard_of_text("ada@example.com"), true));
}

#[test]
fn decisions_say_whether_the_statement_may_write() {
    let t = topology();
    let writes = |sql: &str| decide(&analyze(sql, &t), &NoParams, &t, None).writes;
    assert!(!writes("SELECT * FROM settings"));
    assert!(!writes("SET x = 1"));
    assert!(!writes("BEGIN"));
    assert!(writes("CREATE TABLE t AS SELECT 1"));
    assert!(writes("SELECT lo_unlink(1)"));
    assert!(writes("UPDATE settings SET v = 'x'"));
    assert!(writes("VACUUM"));
    assert!(writes("not sql at all"));
}
