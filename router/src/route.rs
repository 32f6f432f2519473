//! From analyzed statements, bind parameters and a topology snapshot to a
//! decision: which shard (or shards), and whether a replica may answer.
//! Replica choice itself is [`crate::replica`]; the session applies the
//! decision.

use crate::analyze::{Analysis, Class, KeySource, Targeting};
use crate::key::{KeyValue, Literal};
use crate::topology::{ShardId, TableRule, Topology};

/// How fresh a session's reads must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// After a session's write, its reads see it (the default).
    #[default]
    ReadYourWrites,
    /// Any replica within the lag bound.
    Nearest,
    /// Always the primary.
    Primary,
}

impl Consistency {
    pub fn parse(s: &str) -> Option<Consistency> {
        match s.trim().to_ascii_lowercase().as_str() {
            "read_your_writes" => Some(Consistency::ReadYourWrites),
            "nearest" => Some(Consistency::Nearest),
            "primary" => Some(Consistency::Primary),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Consistency::ReadYourWrites => "read_your_writes",
            Consistency::Nearest => "nearest",
            Consistency::Primary => "primary",
        }
    }
}

/// A statement's route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Why, for EXPLAIN ROUTE and logs.
    pub reason: String,
    /// The statement may write (a write, a schema change, a utility, a read
    /// that calls a function not known to be read-safe, anything not
    /// understood): after it commits, read-your-writes must wait for it.
    pub writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// One shard; a replica may answer when `replica_ok`.
    Shard { shard: ShardId, replica_ok: bool },
    /// A read over these shards, merged (a keyless read of a sharded table).
    Fanout { shards: Vec<ShardId> },
    /// Every shard's primary (schema changes).
    EveryPrimary,
    /// Refused, with the error the client gets.
    Reject(RouteError),
}

/// A statement Meridian will not run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// SQLSTATE for the client.
    pub code: &'static str,
    pub message: String,
}

/// SQLSTATE 0A000: what Meridian cannot do across shards.
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
/// SQLSTATE 22023: a key that maps to no shard, a NULL key.
pub const INVALID_PARAMETER_VALUE: &str = "22023";

fn reject(code: &'static str, message: String) -> Decision {
    Decision { reason: message.clone(), action: Action::Reject(RouteError { code, message }), writes: false }
}

/// Bind parameters of an extended-protocol statement.
pub trait Params {
    /// Parameter `i` (zero-based): its bytes (`None` for NULL) and whether
    /// it is in binary format. `None` when there is no such parameter.
    fn get(&self, i: usize) -> Option<(Option<&[u8]>, bool)>;
}

/// No parameters (simple query, or Parse before Bind).
pub struct NoParams;

impl Params for NoParams {
    fn get(&self, _: usize) -> Option<(Option<&[u8]>, bool)> {
        None
    }
}

/// Decide one statement's route. `hint` is the session's or the comment's
/// shard hint; it overrides what keys would say.
pub fn decide(a: &Analysis, params: &dyn Params, topology: &Topology, hint: Option<ShardId>) -> Decision {
    let writes = match a.class {
        Class::Read => !a.replica_safe,
        Class::Write | Class::Ddl | Class::Utility | Class::Unparsed => true,
        Class::Transaction(_) | Class::Session => false,
    };
    let mut d = decide_inner(a, params, topology, hint);
    d.writes = writes;
    d
}

fn decide_inner(a: &Analysis, params: &dyn Params, topology: &Topology, hint: Option<ShardId>) -> Decision {
    let default = hint.unwrap_or(topology.default_shard);
    let single = topology.shards.len() == 1;
    let one = |shard: ShardId, replica_ok: bool, reason: String| Decision {
        action: Action::Shard { shard, replica_ok },
        reason,
        writes: false,
    };
    match &a.class {
        Class::Ddl if single || hint.is_some() => return one(default, false, "schema change".into()),
        Class::Ddl => {
            return Decision {
                action: Action::EveryPrimary,
                reason: "schema change: every shard's primary".into(),
                writes: false,
            };
        }
        Class::Unparsed => return one(default, false, format!("not understood, primary: {}", a.reason)),
        Class::Utility | Class::Transaction(_) | Class::Session => return one(default, false, a.reason.clone()),
        Class::Read | Class::Write => {}
    }
    let write = a.class == Class::Write || !a.replica_safe;
    let replica_ok = a.replica_safe && a.class == Class::Read;
    if let Some(h) = hint {
        let why = format!("shard hint {}", topology.shards[h].name);
        return one(h, replica_ok, if replica_ok { why } else { format!("{why}; {}", a.reason) });
    }
    match &a.targeting {
        Targeting::Unsharded => one(default, replica_ok, a.reason.clone()),
        Targeting::Unsupported(what) => reject(FEATURE_NOT_SUPPORTED, format!("cross-shard statement: {what}")),
        Targeting::Keyed { rule, keys } => {
            let rule = &topology.tables[*rule];
            match shards_of(rule, keys, params, topology) {
                Err(e) => reject(INVALID_PARAMETER_VALUE, e),
                Ok(shards) if shards.len() == 1 => {
                    let why = format!("{}.{} key → {}", rule.table, rule.column, topology.shards[shards[0]].name);
                    one(shards[0], replica_ok, if replica_ok { why } else { format!("{why}; {}", a.reason) })
                }
                Ok(shards) if write => reject(
                    FEATURE_NOT_SUPPORTED,
                    format!(
                        "write to {} spans shards {}: send one statement per shard",
                        rule.table,
                        names(topology, &shards)
                    ),
                ),
                Ok(shards) => Decision {
                    reason: format!("{}.{} keys on shards {}", rule.table, rule.column, names(topology, &shards)),
                    action: Action::Fanout { shards },
                    writes: false,
                },
            }
        }
        Targeting::InsertRows { rule, rows } => {
            let rule = &topology.tables[*rule];
            match shards_of(rule, rows, params, topology) {
                Err(e) => reject(INVALID_PARAMETER_VALUE, e),
                Ok(shards) if shards.len() == 1 => {
                    one(shards[0], false, format!("INSERT into {} → {}", rule.table, topology.shards[shards[0]].name))
                }
                Ok(shards) => reject(
                    FEATURE_NOT_SUPPORTED,
                    format!(
                        "multi-row INSERT into {} spans shards {}: split it per shard",
                        rule.table,
                        names(topology, &shards)
                    ),
                ),
            }
        }
        Targeting::AllShards { rule } => {
            let rule = &topology.tables[*rule];
            if write {
                let what = if a.class == Class::Write { "write to" } else { "read with side effects of" };
                return reject(
                    FEATURE_NOT_SUPPORTED,
                    format!(
                        "{what} sharded table {} without its shard key {}: add WHERE {} = ..., or a shard hint",
                        rule.table, rule.column, rule.column
                    ),
                );
            }
            let shards = rule.map.shards();
            if shards.len() == 1 {
                return one(shards[0], replica_ok, format!("{} lives on one shard", rule.table));
            }
            Decision {
                reason: format!("no key for {}: every shard ({})", rule.table, names(topology, &shards)),
                action: Action::Fanout { shards },
                writes: false,
            }
        }
    }
}

/// Decide the statements of one simple query together. Transaction
/// control and session statements (`BEGIN`, `SET`, `COMMIT`) go wherever
/// the others go; a standby must be able to run them for a replica to be
/// chosen.
pub fn decide_statements(analyses: &[&Analysis], topology: &Topology, hint: Option<ShardId>) -> Decision {
    let follows = |a: &Analysis| matches!(a.class, Class::Transaction(_) | Class::Session);
    let leading: Vec<Decision> =
        analyses.iter().filter(|a| !follows(a)).map(|a| decide(a, &NoParams, topology, hint)).collect();
    if leading.is_empty() {
        let all = analyses.iter().map(|a| decide(a, &NoParams, topology, hint)).collect();
        return decide_all(all, topology);
    }
    let mut d = decide_all(leading, topology);
    let standby_ok = analyses.iter().filter(|a| follows(a)).all(|a| a.replica_safe);
    if let Action::Shard { replica_ok, .. } = &mut d.action {
        *replica_ok &= standby_ok;
    }
    d
}

/// Decide a multi-statement simple query: it goes as a whole to the most
/// demanding target, and must fit on one shard.
pub fn decide_all(decisions: Vec<Decision>, topology: &Topology) -> Decision {
    let mut it = decisions.into_iter();
    let Some(mut acc) = it.next() else {
        return Decision {
            action: Action::Shard { shard: topology.default_shard, replica_ok: true },
            reason: "empty query".into(),
            writes: false,
        };
    };
    for d in it {
        let Decision { action, reason, writes } = acc;
        let writes = writes || d.writes;
        acc = match (action, d.action) {
            (Action::Reject(e), _) | (_, Action::Reject(e)) => {
                return Decision { reason: e.message.clone(), action: Action::Reject(e), writes };
            }
            (Action::Shard { shard: a, replica_ok: ra }, Action::Shard { shard: b, replica_ok: rb }) if a == b => {
                Decision {
                    action: Action::Shard { shard: a, replica_ok: ra && rb },
                    reason: if ra && !rb { d.reason } else { reason },
                    writes,
                }
            }
            (Action::EveryPrimary, Action::EveryPrimary) => Decision { action: Action::EveryPrimary, reason, writes },
            _ => {
                return reject(
                    FEATURE_NOT_SUPPORTED,
                    "a multi-statement query must stay on one shard: send its statements separately".into(),
                );
            }
        };
    }
    acc
}

fn names(topology: &Topology, shards: &[ShardId]) -> String {
    shards.iter().map(|s| topology.shards[*s].name.as_str()).collect::<Vec<_>>().join(", ")
}

/// The distinct shards `keys` map to, sorted.
fn shards_of(
    rule: &TableRule,
    keys: &[KeySource],
    params: &dyn Params,
    topology: &Topology,
) -> Result<Vec<ShardId>, String> {
    let mut shards: Vec<ShardId> = Vec::new();
    let mut add = |key: KeyValue| -> Result<(), String> {
        let shard =
            rule.map.shard_for(&key).ok_or_else(|| format!("no shard for {}.{} = {key}", rule.table, rule.column))?;
        if !shards.contains(&shard) {
            shards.push(shard);
        }
        Ok(())
    };
    for k in keys {
        match k {
            KeySource::Literal(Literal::Null) => {
                return Err(format!("NULL shard key for {}.{}", rule.table, rule.column));
            }
            KeySource::Literal(lit) => add(KeyValue::from_literal(lit, rule.key_type).map_err(|e| e.to_string())?)?,
            KeySource::Param(i) => match params.get(*i) {
                // Parse time, or a Describe: no values yet; the default shard answers.
                None => return Ok(vec![topology.default_shard]),
                Some((None, _)) => return Err(format!("NULL shard key for {}.{}", rule.table, rule.column)),
                Some((Some(bytes), binary)) => {
                    add(KeyValue::from_param(bytes, binary, rule.key_type).map_err(|e| e.to_string())?)?
                }
            },
            KeySource::ParamArray(i) => match params.get(*i) {
                None => return Ok(vec![topology.default_shard]),
                Some((None, _)) => return Err(format!("NULL key array for {}.{}", rule.table, rule.column)),
                Some((Some(bytes), binary)) => {
                    for elem in crate::array::elements(bytes, binary).map_err(|e| format!("key array: {e}"))? {
                        match elem {
                            None => {}
                            Some(e) => {
                                add(KeyValue::from_param(&e, binary, rule.key_type).map_err(|e| e.to_string())?)?
                            }
                        }
                    }
                }
            },
        }
    }
    shards.sort_unstable();
    Ok(shards)
}

/// The shard named by a `/* meridian: shard=NAME */` comment, if any.
pub fn comment_hint(sql: &str) -> Option<&str> {
    let at = sql.find("meridian:")?;
    let before = &sql[..at];
    // Only inside a block comment.
    let open = before.rfind("/*")?;
    if before[open..].contains("*/") {
        return None;
    }
    let rest = sql[at + "meridian:".len()..].trim_start();
    let rest = rest.strip_prefix("shard")?.trim_start().strip_prefix('=')?.trim_start();
    let end = rest.find(|c: char| c.is_whitespace() || c == '*' || c == ',').unwrap_or(rest.len());
    let name = rest[..end].trim_matches(|c| c == '\'' || c == '"');
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_hints() {
        assert_eq!(comment_hint("/* meridian: shard=s2 */ SELECT 1"), Some("s2"));
        assert_eq!(comment_hint("SELECT 1 /*meridian:shard = 's1'*/"), Some("s1"));
        assert_eq!(comment_hint("SELECT 'meridian: shard=s1'"), None);
        assert_eq!(comment_hint("SELECT 1"), None);
        assert_eq!(comment_hint("/* meridian: shard= */ SELECT 1"), None);
    }
}
