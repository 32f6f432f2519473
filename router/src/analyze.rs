//! What one SQL statement is, for routing: its class, whether a replica may
//! run it, and which shards it touches (DESIGN §4).
//!
//! ```text
//!   sql ──> fast (first keywords, crate::lex) ──> Transaction / Session /
//!    │                                            Ddl / Utility / ...
//!    └──> DML: walk (sqlparser, PostgreSqlDialect)
//!           ├─ class: Read, or Write (INSERT/UPDATE/DELETE/MERGE, FOR UPDATE,
//!           │         SELECT INTO, data-modifying WITH)
//!           ├─ replica_safe: a Read calling only allowlisted functions
//!           └─ targeting: shard keys from WHERE / VALUES (keys, names)
//! ```
//!
//! The submodules: `fast` (first-keyword path), `parse` (sqlparser),
//! `walk` (the walk over the tree; `walk::dml` for writes, `walk::target`
//! for the final targeting), `keys` (key constants), `names` (identifiers
//! and rules), `functions` (the read-safe allowlist).

mod fast;
mod functions;
mod keys;
mod names;
mod parse;
mod walk;

use crate::key::Literal;
use crate::topology::Topology;

/// What the router needs to know about one statement.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub class: Class,
    /// May run on a replica: reads only, no row locks, no writable CTE, no
    /// `SELECT INTO`, only functions known to be read-safe.
    pub replica_safe: bool,
    pub targeting: Targeting,
    /// Why, in a few words, for EXPLAIN ROUTE ("SELECT ... FOR UPDATE",
    /// "calls nextval()", "unknown function f()", "key owner_id = $1").
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Class {
    /// SELECT, VALUES, TABLE, and other statements that only read.
    Read,
    /// INSERT, UPDATE, DELETE, MERGE, COPY FROM, LOCK, and reads with side effects.
    Write,
    /// Schema changes (CREATE/ALTER/DROP TABLE, CREATE INDEX, TRUNCATE...):
    /// every shard's primary.
    Ddl,
    /// Other utility statements (VACUUM, ANALYZE, DO, CALL...): the default
    /// shard's primary.
    Utility,
    /// Transaction control.
    Transaction(TxStatement),
    /// SET, RESET, SHOW, DISCARD and the like: they follow the session.
    Session,
    /// The parser does not know it: the primary, never rewritten.
    Unparsed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatement {
    /// BEGIN / START TRANSACTION; `read_only` for `READ ONLY`.
    Begin {
        read_only: bool,
    },
    Commit,
    Rollback,
    /// SAVEPOINT, RELEASE, ROLLBACK TO, SET TRANSACTION, PREPARE TRANSACTION...
    Other,
}

/// Which shards a statement touches.
#[derive(Debug, Clone, PartialEq)]
pub enum Targeting {
    /// No sharded table: the default shard.
    Unsharded,
    /// A sharded table (`rule` indexes [`Topology::tables`]) constrained to
    /// these keys (`key = x`, `key IN (...)`, `key = ANY($1)` one key per
    /// element is not possible for an array parameter: see [`KeySource::ParamArray`]).
    Keyed { rule: usize, keys: Vec<KeySource> },
    /// `INSERT ... VALUES` into a sharded table: one key per row, in order.
    InsertRows { rule: usize, rows: Vec<KeySource> },
    /// A sharded table and no usable key: every shard.
    AllShards { rule: usize },
    /// A shape that cannot be answered correctly across shards; the text
    /// names what is unsupported.
    Unsupported(String),
}

/// Where a key value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Literal(Literal),
    /// Bind parameter, zero-based (`$1` is 0).
    Param(usize),
    /// An array bind parameter (`key = ANY($1)`), zero-based.
    ParamArray(usize),
}

/// Analyze one statement (no trailing `;` needed; several statements in
/// one string are the caller's to split, see [`crate::lex::split_statements`]).
///
/// Statements other than DML are classified from their first words
/// without a full parse; DML is parsed with sqlparser's PostgreSQL dialect.
/// A statement that does not parse is [`Class::Unparsed`]: the primary of
/// the default shard, never a replica.
///
/// A read that calls a function not known to be read-safe (`nextval()`, a
/// user function) stays [`Class::Read`] with `replica_safe` false: it goes
/// to a primary, and its targeting is still that of a read.
pub fn analyze(sql: &str, topology: &Topology) -> Analysis {
    match fast::classify_statement(sql, topology) {
        Some(a) => a,
        None => walk::analyze_dml(sql, topology),
    }
}

/// [`analyze`] for each statement of a split multi-statement string.
pub fn analyze_multi(stmts: &[&str], topology: &Topology) -> Vec<Analysis> {
    stmts.iter().map(|s| analyze(s, topology)).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::key::KeyType;
    use crate::topology::{Fallback, ReplicaPolicy, ShardMap, TableRule};

    /// owners, pets, watch_sessions by owner_id (int, hash over 2 shards),
    /// accounts by email (text), app.events by tenant_id.
    pub(crate) fn topology() -> Topology {
        let rule = |schema: Option<&str>, table: &str, column: &str, key_type| TableRule {
            schema: schema.map(str::to_owned),
            table: table.to_owned(),
            column: column.to_owned(),
            key_type,
            map: ShardMap::Hash(vec![0, 1]),
        };
        Topology {
            version: 1,
            regions: vec![],
            shards: vec![],
            nodes: vec![],
            tables: vec![
                rule(None, "owners", "owner_id", KeyType::Int),
                rule(None, "pets", "owner_id", KeyType::Int),
                rule(None, "watch_sessions", "owner_id", KeyType::Int),
                rule(None, "accounts", "email", KeyType::Text),
                rule(Some("app"), "events", "tenant_id", KeyType::Int),
            ],
            default_shard: 0,
            replica_policy: ReplicaPolicy {
                max_lag_bytes: 0,
                max_lag: std::time::Duration::ZERO,
                fallback: Fallback::Primary,
            },
        }
    }

    #[test]
    fn multi() {
        let t = topology();
        let got = analyze_multi(&["BEGIN", "SELECT 1", "COMMIT"], &t);
        let classes: Vec<_> = got.into_iter().map(|a| a.class).collect();
        assert_eq!(
            classes,
            [
                Class::Transaction(TxStatement::Begin { read_only: false }),
                Class::Read,
                Class::Transaction(TxStatement::Commit)
            ]
        );
    }
}
