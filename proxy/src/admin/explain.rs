//! `EXPLAIN ROUTE <sql>`: where a session of this node would send `<sql>`,
//! and why. The session is the plain one: default settings
//! (`read_your_writes`), it has never written, no `SET meridian.shard`,
//! outside a transaction block, simple query protocol. A
//! `/* meridian: shard=... */` comment in `<sql>` counts, as it would there.
//!
//! One row per statement, then, for a string of several statements, one
//! row for the string as a whole: a simple query goes to one place, the
//! most demanding of its statements' ([`router::route::decide_statements`]).

use router::analyze::Class;
use router::lex::{Lexer, Token};
use router::route::{Action, Consistency, Decision, NoParams, RouteError};
use router::topology::{NodeId, ShardId, Topology};

use super::views::{ResultSet, Snapshot, text};
use crate::session::route::pick_node;

const COLUMNS: &[&str] = &["statement", "class", "action", "shards", "role", "node", "region", "reason"];

pub(crate) fn explain(snap: &Snapshot<'_>, sql: &str) -> ResultSet {
    let t = &*snap.topology;
    let mut rs = ResultSet::new(COLUMNS);
    rs.tag = Some("EXPLAIN");
    let stmts = router::lex::split_statements(sql);
    if !crate::session::route::routing_needed(t) {
        // One shard without replicas: sessions send everything to its primary.
        let d = Decision {
            action: Action::Shard { shard: t.default_shard, replica_ok: false },
            reason: "one shard without replicas: no routing".into(),
            writes: false,
        };
        for s in &stmts {
            let a = snap.analyses.get(s, t);
            push(&mut rs, snap, s, Some(class(&a.class)), d.clone());
        }
        if stmts.is_empty() {
            push(&mut rs, snap, "", None, d);
        }
        return rs;
    }
    if let [stmt] = stmts.as_slice()
        && let Some(reason) = answered_locally(stmt)
    {
        let a = snap.analyses.get(stmt, t);
        rs.push(vec![text(stmt), text(class(&a.class)), text("local"), None, None, None, None, text(reason)]);
        return rs;
    }
    let hint = match router::route::comment_hint(sql) {
        None => Ok(None),
        Some(name) => t.shards.iter().position(|s| s.name == name).map(Some).ok_or_else(|| RouteError {
            code: router::route::INVALID_PARAMETER_VALUE,
            message: format!("shard hint: no shard named {name:?}"),
        }),
    };
    let mut analyses = Vec::new();
    for s in &stmts {
        let a = snap.analyses.get(s, t);
        let d = match &hint {
            Ok(h) => router::route::decide(&a, &NoParams, t, *h),
            Err(e) => Decision { reason: e.message.clone(), action: Action::Reject(e.clone()), writes: false },
        };
        push(&mut rs, snap, s, Some(class(&a.class)), d);
        analyses.push(a);
    }
    if stmts.len() != 1 {
        let label = if stmts.is_empty() { "" } else { "(whole query)" };
        let whole = match &hint {
            Ok(h) => {
                let refs: Vec<&router::analyze::Analysis> = analyses.iter().map(|a| &**a).collect();
                router::route::decide_statements(&refs, t, *h)
            }
            Err(e) => Decision { reason: e.message.clone(), action: Action::Reject(e.clone()), writes: false },
        };
        push(&mut rs, snap, label, None, whole);
    }
    rs
}

/// Statements a session answers itself (between transactions, alone in
/// their query), with why.
fn answered_locally(stmt: &str) -> Option<&'static str> {
    let toks: Vec<Token<'_>> = Lexer::new(stmt).take(5).collect();
    let mut i = 1;
    let verb = toks.first()?;
    if verb.is_keyword("SET") && toks.get(1).is_some_and(|t| t.is_keyword("SESSION")) {
        i = 2;
    }
    let setting = (verb.is_keyword("SET") || verb.is_keyword("SHOW") || verb.is_keyword("RESET"))
        && toks.get(i).is_some_and(|t| t.is_keyword("meridian"))
        && toks.get(i + 1) == Some(&Token::Punct('.'));
    if setting {
        return Some("meridian.* setting: answered by this node");
    }
    router::session::deferrable_begin(stmt)
        .map(|_| "BEGIN is held and sent with the transaction's first statement, which picks the shard")
}

fn class(c: &Class) -> &'static str {
    match c {
        Class::Read => "read",
        Class::Write => "write",
        Class::Ddl => "ddl",
        Class::Utility => "utility",
        Class::Transaction(_) => "transaction",
        Class::Session => "session",
        Class::Unparsed => "unparsed",
    }
}

/// One row for `stmt` routed by `d`.
fn push(rs: &mut ResultSet, snap: &Snapshot<'_>, stmt: &str, class: Option<&str>, d: Decision) {
    let t = &*snap.topology;
    let names = |shards: &[ShardId]| shards.iter().map(|s| t.shards[*s].name.as_str()).collect::<Vec<_>>().join(", ");
    // Per shard: (role, node, region) of the server it goes to.
    let servers = |picks: &[Option<NodeId>]| {
        let col = |f: &dyn Fn(NodeId) -> String| {
            text(picks.iter().map(|p| p.map(f).unwrap_or_else(|| "(none)".into())).collect::<Vec<_>>().join(", "))
        };
        (
            col(&|n| t.nodes[n].role.as_str().to_owned()),
            col(&|n| t.nodes[n].name.clone()),
            col(&|n| t.nodes[n].region.clone()),
        )
    };
    let (action, shards, (role, node, region), reason) = match d.action {
        Action::Shard { shard, replica_ok } => {
            let Some(primary) = t.shards[shard].primary else {
                rs.push(row(
                    stmt,
                    class,
                    "reject",
                    text(&t.shards[shard].name),
                    (None, None, None),
                    no_primary(t, shard),
                ));
                return;
            };
            let (node, why, err) =
                pick_node(snap.health, t, shard, replica_ok, Consistency::default(), None, d.reason.clone());
            let reason = if why == d.reason { why } else { format!("{}; {why}", d.reason) };
            if let Some(e) = err {
                let r = format!("{} ({})", e.message, e.code);
                rs.push(row(stmt, class, "reject", text(&t.shards[shard].name), servers(&[Some(primary)]), r));
                return;
            }
            ("shard", text(&t.shards[shard].name), servers(&[Some(node)]), reason)
        }
        Action::Fanout { shards } => {
            // A keyless read: replica-safe by construction (else it is
            // rejected), so each shard's part goes where such a read would.
            let mut picks = Vec::new();
            let mut whys = Vec::new();
            for &s in &shards {
                let p = t.shards[s].primary;
                let (node, why, err) = pick_node(snap.health, t, s, true, Consistency::default(), None, String::new());
                picks.push(p.map(|_| node));
                if let Some(e) = err {
                    whys.push(format!("{}: {} ({})", t.shards[s].name, e.message, e.code));
                } else if !why.is_empty() {
                    whys.push(format!("{}: {why}", t.shards[s].name));
                }
            }
            let reason = if whys.is_empty() { d.reason } else { format!("{}; {}", d.reason, whys.join("; ")) };
            ("fanout", text(names(&shards)), servers(&picks), reason)
        }
        Action::EveryPrimary => {
            let all: Vec<ShardId> = (0..t.shards.len()).collect();
            let picks: Vec<Option<NodeId>> = all.iter().map(|s| t.shards[*s].primary).collect();
            ("every primary", text(names(&all)), servers(&picks), d.reason)
        }
        Action::Reject(e) => ("reject", None, (None, None, None), format!("{} ({})", e.message, e.code)),
    };
    rs.push(row(stmt, class, action, shards, (role, node, region), reason));
}

type Server = (Option<String>, Option<String>, Option<String>);

fn row(
    stmt: &str,
    class: Option<&str>,
    action: &str,
    shards: Option<String>,
    s: Server,
    reason: String,
) -> Vec<Option<String>> {
    vec![text(stmt), class.map(str::to_owned), text(action), shards, s.0, s.1, s.2, text(reason)]
}

fn no_primary(t: &Topology, shard: ShardId) -> String {
    format!("shard {} has no primary", t.shards[shard].name)
}
