//! The first-keyword fast path: everything that is not DML is classified
//! from its leading words, without a full parse.
//!
//! ```text
//!   BEGIN / COMMIT / ROLLBACK / SAVEPOINT ...  -> Transaction
//!   SET / RESET / SHOW / DISCARD / LISTEN ...  -> Session
//!   CREATE / ALTER / DROP / TRUNCATE / GRANT   -> Ddl (every shard)
//!   VACUUM / ANALYZE / DO / CALL / ALTER SYSTEM -> Utility (default shard)
//!   NOTIFY / EXECUTE / LOCK / COPY ... FROM    -> Write
//!   COPY ... TO / DECLARE / TABLE              -> what their query is
//!   SELECT / WITH / VALUES / INSERT / UPDATE /
//!   DELETE / MERGE / EXPLAIN / (               -> None: sqlparser decides
//! ```

use super::names::{TableKind, classify, display};
use super::{Analysis, Class, Targeting, TxStatement};
use crate::lex::{Lexer, Token};
use crate::topology::Topology;

/// Classify `sql` from its leading words; `None` when it needs the parser.
pub(super) fn classify_statement(sql: &str, topo: &Topology) -> Option<Analysis> {
    let mut lx = Lexer::new(sql);
    let word = match lx.next_token() {
        None => return Some(unparsed("empty statement")),
        Some((_, Token::Word(w))) => w,
        Some((_, Token::Punct('('))) => return None,
        Some(_) => return Some(unparsed("does not start with a keyword")),
    };
    let mut buf = [0u8; 12];
    let kw = upper(word, &mut buf);
    let a = match kw {
        b"SELECT" | b"WITH" | b"VALUES" | b"INSERT" | b"UPDATE" | b"DELETE" | b"MERGE" | b"EXPLAIN" => return None,
        b"TABLE" => {
            // `TABLE t` is `SELECT * FROM t`.
            return Some(super::analyze(&format!("SELECT * FROM {}", &sql[lx.offset()..]), topo));
        }
        b"BEGIN" => begin(lx, "BEGIN"),
        b"START" => {
            if next_is(&mut lx, "TRANSACTION") {
                begin(lx, "START TRANSACTION")
            } else {
                unparsed("START without TRANSACTION")
            }
        }
        b"COMMIT" => {
            if next_is(&mut lx, "PREPARED") {
                tx(TxStatement::Other, false, "COMMIT PREPARED")
            } else {
                tx(TxStatement::Commit, true, "COMMIT")
            }
        }
        b"END" => tx(TxStatement::Commit, true, "COMMIT"),
        b"ROLLBACK" | b"ABORT" => rollback(lx),
        b"SAVEPOINT" => tx(TxStatement::Other, true, "SAVEPOINT"),
        b"RELEASE" => tx(TxStatement::Other, true, "RELEASE SAVEPOINT"),
        b"PREPARE" => {
            if next_is(&mut lx, "TRANSACTION") {
                tx(TxStatement::Other, false, "PREPARE TRANSACTION")
            } else {
                // The prepared statement lives on one server connection,
                // and EXECUTE goes to the primary: so does PREPARE.
                simple(Class::Session, false, "PREPARE")
            }
        }
        b"SET" => set(lx),
        b"RESET" => simple(Class::Session, true, "RESET"),
        b"SHOW" => simple(Class::Session, true, "SHOW"),
        b"DISCARD" => simple(Class::Session, true, "DISCARD"),
        b"DEALLOCATE" => simple(Class::Session, true, "DEALLOCATE"),
        b"UNLISTEN" => simple(Class::Session, true, "UNLISTEN"),
        // A standby refuses LISTEN.
        b"LISTEN" => simple(Class::Session, false, "LISTEN"),
        // Cursor statements follow the cursor's connection.
        b"FETCH" => simple(Class::Session, true, "FETCH"),
        b"MOVE" => simple(Class::Session, true, "MOVE"),
        b"CLOSE" => simple(Class::Session, true, "CLOSE"),
        b"NOTIFY" => simple(Class::Write, false, "NOTIFY"),
        b"EXECUTE" => simple(Class::Write, false, "EXECUTE of a prepared statement"),
        b"VACUUM" => simple(Class::Utility, false, "VACUUM"),
        b"ANALYZE" | b"ANALYSE" => simple(Class::Utility, false, "ANALYZE"),
        b"CHECKPOINT" => simple(Class::Utility, false, "CHECKPOINT"),
        b"DO" => simple(Class::Utility, false, "DO"),
        b"CALL" => simple(Class::Utility, false, "CALL"),
        b"CLUSTER" => simple(Class::Utility, false, "CLUSTER"),
        b"REINDEX" => simple(Class::Utility, false, "REINDEX"),
        b"REFRESH" => simple(Class::Utility, false, "REFRESH MATERIALIZED VIEW"),
        b"LOAD" => simple(Class::Utility, false, "LOAD"),
        b"ALTER" => {
            if next_is(&mut lx, "SYSTEM") {
                simple(Class::Utility, false, "ALTER SYSTEM")
            } else {
                simple(Class::Ddl, false, "ALTER")
            }
        }
        b"CREATE" => simple(Class::Ddl, false, "CREATE"),
        b"DROP" => simple(Class::Ddl, false, "DROP"),
        b"TRUNCATE" => simple(Class::Ddl, false, "TRUNCATE"),
        b"COMMENT" => simple(Class::Ddl, false, "COMMENT"),
        b"GRANT" => simple(Class::Ddl, false, "GRANT"),
        b"REVOKE" => simple(Class::Ddl, false, "REVOKE"),
        b"SECURITY" => simple(Class::Ddl, false, "SECURITY LABEL"),
        b"IMPORT" => simple(Class::Ddl, false, "IMPORT FOREIGN SCHEMA"),
        b"REASSIGN" => simple(Class::Ddl, false, "REASSIGN OWNED"),
        b"LOCK" => lock(lx, topo),
        b"COPY" => copy(sql, lx, topo),
        b"DECLARE" => declare(sql, lx, topo),
        _ => {
            let shown: String = word.chars().take(32).collect::<String>().to_uppercase();
            unparsed(&format!("unknown statement {shown}"))
        }
    };
    Some(a)
}

/// `w` in upper case, in `buf`; words longer than any keyword come back
/// empty (and match nothing).
fn upper<'b>(w: &str, buf: &'b mut [u8; 12]) -> &'b [u8] {
    let b = w.as_bytes();
    if b.len() > buf.len() {
        return &[];
    }
    let out = &mut buf[..b.len()];
    out.copy_from_slice(b);
    out.make_ascii_uppercase();
    out
}

fn next_is(lx: &mut Lexer<'_>, kw: &str) -> bool {
    let mut peek = lx.clone();
    if peek.next().is_some_and(|t| t.is_keyword(kw)) {
        *lx = peek;
        true
    } else {
        false
    }
}

fn simple(class: Class, replica_safe: bool, reason: &str) -> Analysis {
    Analysis { class, replica_safe, targeting: Targeting::Unsharded, reason: reason.to_owned() }
}

fn tx(stmt: TxStatement, replica_safe: bool, reason: &str) -> Analysis {
    simple(Class::Transaction(stmt), replica_safe, reason)
}

pub(super) fn unparsed(reason: &str) -> Analysis {
    simple(Class::Unparsed, false, reason)
}

/// BEGIN / START TRANSACTION and their modes: the last of `READ ONLY` /
/// `READ WRITE` wins, as in PostgreSQL.
fn begin(lx: Lexer<'_>, what: &str) -> Analysis {
    let mut read_only = false;
    let mut after_read = false;
    for t in lx {
        if after_read {
            if t.is_keyword("ONLY") {
                read_only = true;
            } else if t.is_keyword("WRITE") {
                read_only = false;
            }
        }
        after_read = t.is_keyword("READ");
    }
    let reason = if read_only { format!("{what} READ ONLY") } else { what.to_owned() };
    Analysis {
        class: Class::Transaction(TxStatement::Begin { read_only }),
        replica_safe: true,
        targeting: Targeting::Unsharded,
        reason,
    }
}

fn rollback(mut lx: Lexer<'_>) -> Analysis {
    if next_is(&mut lx, "PREPARED") {
        return tx(TxStatement::Other, false, "ROLLBACK PREPARED");
    }
    let _ = next_is(&mut lx, "WORK") || next_is(&mut lx, "TRANSACTION");
    if next_is(&mut lx, "TO") {
        tx(TxStatement::Other, true, "ROLLBACK TO SAVEPOINT")
    } else {
        tx(TxStatement::Rollback, true, "ROLLBACK")
    }
}

fn set(mut lx: Lexer<'_>) -> Analysis {
    if next_is(&mut lx, "TRANSACTION") {
        // An imported snapshot must be read where it was exported (DESIGN §4).
        return if next_is(&mut lx, "SNAPSHOT") {
            tx(TxStatement::Other, false, "SET TRANSACTION SNAPSHOT")
        } else {
            tx(TxStatement::Other, true, "SET TRANSACTION")
        };
    }
    let local = next_is(&mut lx, "LOCAL");
    simple(Class::Session, true, if local { "SET LOCAL" } else { "SET" })
}

/// A table's schema (if named) and name, normalised.
type TableName = (Option<String>, String);

/// A possibly qualified table name from the token stream, and the token
/// after it.
fn read_table<'a>(lx: &mut Lexer<'a>) -> Option<(TableName, Option<Token<'a>>)> {
    let mut parts: Vec<String> = Vec::with_capacity(2);
    loop {
        let part = match lx.next()? {
            Token::Word(w) => w.to_ascii_lowercase(),
            Token::QuotedIdent(q) => q.replace("\"\"", "\""),
            _ => return None,
        };
        parts.push(part);
        match lx.next() {
            Some(Token::Punct('.')) => continue,
            after => {
                let table = parts.pop()?;
                return Some(((parts.pop(), table), after));
            }
        }
    }
}

fn targeting_of(topo: &Topology, schema: Option<&str>, table: &str) -> Targeting {
    match classify(topo, schema, table) {
        TableKind::Sharded(rule) => Targeting::AllShards { rule },
        TableKind::Catalog | TableKind::Plain => Targeting::Unsharded,
    }
}

/// `LOCK [TABLE] [ONLY] name [*] [, ...] [IN mode MODE] [NOWAIT]`: a write;
/// every shard when a sharded table is locked (so the route layer refuses it
/// as a keyless write).
fn lock(mut lx: Lexer<'_>, topo: &Topology) -> Analysis {
    let _ = next_is(&mut lx, "TABLE");
    let mut targeting = Targeting::Unsharded;
    loop {
        let _ = next_is(&mut lx, "ONLY");
        let Some(((schema, table), mut after)) = read_table(&mut lx) else { break };
        if targeting == Targeting::Unsharded {
            targeting = targeting_of(topo, schema.as_deref(), &table);
        }
        if after == Some(Token::Punct('*')) {
            after = lx.next();
        }
        if after != Some(Token::Punct(',')) {
            break;
        }
    }
    Analysis { class: Class::Write, replica_safe: false, targeting, reason: "LOCK".to_owned() }
}

/// `COPY (query) TO ...` is its query, read on the primary; `COPY t TO` a
/// read of `t`; `COPY t FROM` a write to `t` (every shard when sharded:
/// the rows are not split by key).
fn copy(sql: &str, mut lx: Lexer<'_>, topo: &Topology) -> Analysis {
    let mut peek = lx.clone();
    if peek.next() == Some(Token::Punct('(')) {
        let start = peek.offset();
        let Some(end) = closing_paren(&mut peek) else { return unparsed("COPY with an unbalanced query") };
        let inner = super::analyze(&sql[start..end], topo);
        if inner.class == Class::Unparsed {
            return inner;
        }
        let class = if inner.class == Class::Write { Class::Write } else { Class::Read };
        let reason = format!("COPY (query) TO; {}", inner.reason);
        return Analysis { class, replica_safe: false, targeting: inner.targeting, reason };
    }
    let _ = next_is(&mut lx, "BINARY");
    let Some(((schema, table), mut after)) = read_table(&mut lx) else { return unparsed("COPY without a table") };
    if after == Some(Token::Punct('(')) {
        if closing_paren(&mut lx).is_none() {
            return unparsed("COPY with an unbalanced column list");
        }
        after = lx.next();
    }
    let targeting = targeting_of(topo, schema.as_deref(), &table);
    let shown = display(schema.as_deref(), &table);
    match after {
        Some(t) if t.is_keyword("FROM") => {
            Analysis { class: Class::Write, replica_safe: false, targeting, reason: format!("COPY {shown} FROM") }
        }
        Some(t) if t.is_keyword("TO") => {
            Analysis { class: Class::Read, replica_safe: false, targeting, reason: format!("COPY {shown} TO") }
        }
        _ => unparsed("COPY without FROM or TO"),
    }
}

/// Offset of the `)` closing a `(` just read, leaving `lx` after it.
fn closing_paren(lx: &mut Lexer<'_>) -> Option<usize> {
    let mut depth = 1usize;
    while let Some((at, t)) = lx.next_token() {
        match t {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(at);
                }
            }
            _ => {}
        }
    }
    None
}

/// `DECLARE name ... CURSOR ... FOR query` is what its query is.
fn declare(sql: &str, mut lx: Lexer<'_>, topo: &Topology) -> Analysis {
    while let Some(t) = lx.next() {
        if t.is_keyword("FOR") {
            let inner = super::analyze(&sql[lx.offset()..], topo);
            if inner.class == Class::Unparsed {
                return inner;
            }
            return Analysis { reason: format!("DECLARE CURSOR; {}", inner.reason), ..inner };
        }
    }
    unparsed("DECLARE without FOR")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::tests::topology;

    #[test]
    fn keyword_helpers() {
        let mut buf = [0u8; 12];
        assert_eq!(upper("select", &mut buf), b"SELECT");
        assert_eq!(upper("a_very_long_identifier", &mut buf), b"");
        let mut lx = Lexer::new("transaction read only");
        assert!(next_is(&mut lx, "TRANSACTION"));
        assert!(!next_is(&mut lx, "ONLY"));
        assert!(next_is(&mut lx, "read"));
    }

    #[test]
    fn table_names() {
        let read = |s: &str| read_table(&mut Lexer::new(s)).map(|(n, t)| (n, t.is_some()));
        assert_eq!(read("Owners"), Some(((None, "owners".into()), false)));
        assert_eq!(read("app.events (a) FROM"), Some(((Some("app".into()), "events".into()), true)));
        assert_eq!(read("\"My\"\"T\" TO"), Some(((None, "My\"T".into()), true)));
        assert_eq!(read("db.app.events"), Some(((Some("app".into()), "events".into()), false)));
        assert_eq!(read("(select"), None);
    }

    #[test]
    fn parens() {
        let mut lx = Lexer::new("(a, (b), ')') x");
        assert_eq!(lx.next(), Some(Token::Punct('(')));
        assert_eq!(closing_paren(&mut lx), Some(12));
        assert_eq!(lx.next(), Some(Token::Word("x")));
        assert_eq!(closing_paren(&mut Lexer::new("(a")), None);
    }

    #[test]
    fn not_for_the_fast_path() {
        let t = topology();
        for sql in ["SELECT 1", "with x as (select 1) select 1", "(select 1)", "Explain select 1", "values (1)"] {
            assert_eq!(classify_statement(sql, &t), None, "{sql}");
        }
    }
}
