//! Named prepared statements under transaction pooling.
//!
//! A client's statement names mean nothing on a shared server connection,
//! so each distinct statement (query text plus parameter types) gets one
//! process-wide id and the server-side name `__meridian_<id>`. A client's
//! `Parse("s1", q)` records `s1 → id`; on the serving connection the
//! statement is prepared under its global name once, and later Parses,
//! Binds and Describes by any client that means the same statement reuse it.
//! A client's `Close` only forgets its own name: other clients may still
//! use the server-side statement.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;

/// One distinct statement.
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// The name it has on server connections.
    pub server_name: String,
    /// The Parse body after the statement name: query text, NUL, parameter types.
    pub parse_rest: Bytes,
    /// Whether the text may touch session state ([`router::may_affect_session`]),
    /// worked out once rather than at every Bind.
    pub may_affect_session: bool,
    /// What it may do to its transaction should the server die under it
    /// ([`super::lost::ends`]), worked out once too.
    pub(crate) ends: super::lost::Ends,
}

/// Process-wide table of distinct statements, so equal statements share an
/// id (and a server-side prepared statement) and different ones never do.
#[derive(Default)]
struct Interner {
    by_text: HashMap<Bytes, Arc<Statement>>,
    next_id: u64,
}

fn interner() -> &'static Mutex<Interner> {
    static INTERNER: OnceLock<Mutex<Interner>> = OnceLock::new();
    INTERNER.get_or_init(Mutex::default)
}

/// The shared statement for a Parse body (after the name).
pub fn intern(parse_rest: &[u8]) -> Arc<Statement> {
    let mut table = interner().lock();
    if let Some(s) = table.by_text.get(parse_rest) {
        return s.clone();
    }
    table.next_id += 1;
    let id = table.next_id;
    let rest = Bytes::copy_from_slice(parse_rest);
    let sql = rest.split(|b| *b == 0).next().unwrap_or_default();
    let stmt = Arc::new(Statement {
        id,
        server_name: format!("__meridian_{id}"),
        may_affect_session: router::may_affect_session(sql),
        ends: super::lost::ends(sql),
        parse_rest: rest.clone(),
    });
    table.by_text.insert(rest, stmt.clone());
    stmt
}

/// A client's own statement names.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: HashMap<Bytes, Arc<Statement>>,
}

impl ClientStatements {
    pub fn get(&self, name: &[u8]) -> Option<&Arc<Statement>> {
        self.by_name.get(name)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.by_name.contains_key(name)
    }

    pub fn insert(&mut self, name: &[u8], stmt: Arc<Statement>) {
        self.by_name.insert(Bytes::copy_from_slice(name), stmt);
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.by_name.remove(name);
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_statements_share_an_id() {
        let a = intern(b"select 1\0\0\0");
        let b = intern(b"select 1\0\0\0");
        let c = intern(b"select 2\0\0\0");
        let d = intern(b"select 1\0\0\x01\0\0\0\x17");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id, "parameter types are part of the statement");
        assert_eq!(a.server_name, format!("__meridian_{}", a.id));
    }
}
