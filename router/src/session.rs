//! What a statement does to session state, as far as a transaction-pooling
//! proxy must know: which parameter it sets (so the setting can be replayed
//! on another server connection) and which state only lives on the server
//! connection that ran it (so the client must stay pinned to it).

use crate::lex::{Lexer, Token};

/// Why a client must keep its server connection for the rest of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinReason {
    /// `LISTEN`: notifications arrive on that connection only.
    Listen,
    /// A temporary table, view or sequence.
    TempObject,
    /// A session-level advisory lock (`pg_advisory_lock` and friends).
    AdvisoryLock,
    /// `DECLARE ... WITH HOLD`: the cursor outlives the transaction.
    HoldCursor,
    /// `PREPARE TRANSACTION`: two-phase commit state.
    PrepareTransaction,
    /// SQL-level `PREPARE name AS ...`.
    SqlPrepare,
    /// `set_config(...)`, or a `SET` inside a `DO` block: a session-level
    /// parameter we cannot see.
    SetConfig,
    /// `LOAD`: a library loaded into that backend.
    Load,
}

impl PinReason {
    /// A short name for logs and admin views.
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Listen => "listen",
            PinReason::TempObject => "temp_object",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::HoldCursor => "hold_cursor",
            PinReason::PrepareTransaction => "prepare_transaction",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::SetConfig => "set_config",
            PinReason::Load => "load",
        }
    }
}

/// The effect of one statement on session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEffect<'a> {
    /// Nothing the proxy needs to track.
    None,
    /// A session-level `SET` of parameter `name` (lower case); running `sql`
    /// again on another connection restores the setting.
    Set { name: String, sql: &'a str },
    /// `RESET name`.
    Reset { name: String },
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`: parameters reset and prepared statements dropped.
    DiscardAll,
    /// `DEALLOCATE ALL`: every prepared statement dropped.
    DeallocateAll,
    /// State that lives only on this server connection.
    Pin(PinReason),
}

/// Cheap pre-check, one pass over the bytes: can `sql` have any effect
/// [`session_effect`] would report? `false` is definite; `true` means "look
/// closer" (the word may sit in a string or be a column name).
pub fn may_affect_session(sql: &[u8]) -> bool {
    crate::lex::scan_words(sql).any(|(w, first)| word_may_affect_session(w, first))
}

/// One word of [`may_affect_session`]: keywords that matter only as a
/// statement's first word (`SET`, not `UPDATE t SET`), and words that
/// matter anywhere. Told apart by length first: this runs on every word
/// of every statement a client sends.
fn word_may_affect_session(w: &[u8], first: bool) -> bool {
    let is = |k: &[u8]| w.eq_ignore_ascii_case(k);
    let starts = |p: &[u8]| w.len() >= p.len() && w[..p.len()].eq_ignore_ascii_case(p);
    let first_keyword = first
        && match w.len() {
            2 => is(b"do"),
            3 => is(b"set"),
            4 => is(b"load"),
            5 => is(b"reset"),
            6 => is(b"listen"),
            7 => is(b"discard") || is(b"prepare") || is(b"declare"),
            10 => is(b"deallocate"),
            _ => false,
        };
    first_keyword
        || match w.len() {
            4 => is(b"temp"),
            7 => is(b"pg_temp"),
            9 => is(b"temporary"),
            10 => is(b"set_config"),
            16.. => starts(b"pg_advisory_lock") || starts(b"pg_try_advisory_lock"),
            _ => false,
        }
}

/// The database a `DROP DATABASE` statement drops, if it is one.
pub fn dropped_database(stmt: &str) -> Option<String> {
    let toks: Vec<Token<'_>> = Lexer::new(stmt).take(8).collect();
    let is = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_keyword(k));
    if !(is(0, "DROP") && is(1, "DATABASE")) {
        return None;
    }
    let at = if is(2, "IF") && is(3, "EXISTS") { 4 } else { 2 };
    match toks.get(at)? {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::QuotedIdent(w) => Some(w.replace("\"\"", "\"")),
        _ => None,
    }
}

/// Transaction control, as far as session settings care: a `SET` inside a
/// transaction counts only if the transaction (and every savepoint it sits
/// behind) commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxControl {
    Begin,
    Commit,
    Rollback,
    Savepoint(String),
    RollbackTo(String),
    Release(String),
}

/// Classify a transaction-control statement.
pub fn transaction_control(stmt: &str) -> Option<TxControl> {
    let toks: Vec<Token<'_>> = Lexer::new(stmt).take(6).collect();
    let first = match toks.first() {
        Some(Token::Word(w)) => w.to_ascii_uppercase(),
        _ => return None,
    };
    let is = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_keyword(k));
    // The savepoint name after optional noise words, starting at `i`.
    let name_from = |mut i: usize, noise: &[&str]| {
        while noise.iter().any(|n| is(i, n)) {
            i += 1;
        }
        param_name(toks.get(i..).unwrap_or_default())
    };
    match first.as_str() {
        "BEGIN" => Some(TxControl::Begin),
        "START" if is(1, "TRANSACTION") => Some(TxControl::Begin),
        "COMMIT" | "END" if !is(1, "PREPARED") => Some(TxControl::Commit),
        "ROLLBACK" | "ABORT" => {
            if is(1, "PREPARED") {
                return None;
            }
            let mut i = 1;
            if is(i, "WORK") || is(i, "TRANSACTION") {
                i += 1;
            }
            if is(i, "TO") {
                name_from(i + 1, &["SAVEPOINT"]).map(TxControl::RollbackTo)
            } else {
                Some(TxControl::Rollback)
            }
        }
        "SAVEPOINT" => name_from(1, &[]).map(TxControl::Savepoint),
        "RELEASE" => name_from(1, &["SAVEPOINT"]).map(TxControl::Release),
        _ => None,
    }
}

/// Classify one statement (no trailing `;`).
pub fn session_effect(stmt: &str) -> SessionEffect<'_> {
    let mut toks = Lexer::new(stmt).peekable();
    let Some(Token::Word(first)) = toks.next() else {
        return SessionEffect::None;
    };
    let kw = |t: Option<&Token<'_>>, k: &str| t.is_some_and(|t| t.is_keyword(k));
    match first.to_ascii_uppercase().as_str() {
        "SET" => parse_set(stmt, toks.collect()),
        "RESET" => parse_reset(toks.collect()),
        "DISCARD" if kw(toks.peek(), "ALL") => SessionEffect::DiscardAll,
        "DEALLOCATE" => {
            let rest: Vec<_> = toks.collect();
            let all = match rest.as_slice() {
                [t] => t.is_keyword("ALL"),
                [p, t] => p.is_keyword("PREPARE") && t.is_keyword("ALL"),
                _ => false,
            };
            if all { SessionEffect::DeallocateAll } else { SessionEffect::None }
        }
        "LISTEN" => SessionEffect::Pin(PinReason::Listen),
        "LOAD" => SessionEffect::Pin(PinReason::Load),
        "PREPARE" => {
            if kw(toks.peek(), "TRANSACTION") {
                SessionEffect::Pin(PinReason::PrepareTransaction)
            } else {
                SessionEffect::Pin(PinReason::SqlPrepare)
            }
        }
        "DECLARE" => {
            let mut prev_with = false;
            for t in toks {
                if prev_with && t.is_keyword("HOLD") {
                    return SessionEffect::Pin(PinReason::HoldCursor);
                }
                prev_with = t.is_keyword("WITH");
                if t.is_keyword("FOR") {
                    break;
                }
            }
            SessionEffect::None
        }
        "BEGIN" | "COMMIT" | "ROLLBACK" | "START" | "END" | "SAVEPOINT" | "RELEASE" | "ABORT" | "SHOW" | "UNLISTEN"
        | "NOTIFY" | "CHECKPOINT" | "VACUUM" | "ANALYZE" => SessionEffect::None,
        "DO" => {
            let body = toks.find_map(|t| match t {
                Token::DollarString(b) | Token::String(b) => Some(b),
                _ => None,
            });
            if body.is_some_and(block_sets_parameter) {
                SessionEffect::Pin(PinReason::SetConfig)
            } else {
                SessionEffect::None
            }
        }
        "CREATE" => scan_body(toks, true),
        _ => scan_body(toks, first_allows_temp(first)),
    }
}

/// Does a `DO` block's body run a session-level `SET` (not `SET LOCAL`,
/// not `UPDATE ... SET`)? Such a setting outlives the block on that server
/// connection, and the proxy cannot see its value: the client is pinned.
fn block_sets_parameter(body: &str) -> bool {
    // Strip the quoting ($tag$...$tag$ or '...'); the inside is PL/pgSQL.
    let inner = match body.strip_prefix('$').and_then(|b| b.find('$').map(|i| i + 2)) {
        Some(open) => body.get(open..body.len().saturating_sub(open)).unwrap_or(""),
        None => body.trim_start_matches(['E', 'e']).trim_matches('\''),
    };
    let toks: Vec<Token<'_>> = Lexer::new(inner).collect();
    toks.iter().enumerate().any(|(i, t)| {
        let after_boundary = i == 0
            || toks[i - 1] == Token::Semicolon
            || ["BEGIN", "THEN", "LOOP", "ELSE"].iter().any(|k| toks[i - 1].is_keyword(k));
        t.is_keyword("SET")
            && after_boundary
            && !toks.get(i + 1).is_some_and(|n| n.is_keyword("LOCAL") || n.is_keyword("TRANSACTION"))
    })
}

fn first_allows_temp(first: &str) -> bool {
    // `SELECT ... INTO TEMP t` and `WITH ... SELECT INTO TEMP`.
    first.eq_ignore_ascii_case("SELECT") || first.eq_ignore_ascii_case("WITH")
}

/// Look through a statement for calls and words that create session state.
fn scan_body<'a>(toks: impl Iterator<Item = Token<'a>>, temp_words: bool) -> SessionEffect<'a> {
    for t in toks {
        let Token::Word(w) = t else { continue };
        let lower_starts = |p: &str| w.len() >= p.len() && w[..p.len()].eq_ignore_ascii_case(p);
        if temp_words
            && (w.eq_ignore_ascii_case("TEMP")
                || w.eq_ignore_ascii_case("TEMPORARY")
                || w.eq_ignore_ascii_case("pg_temp"))
        {
            return SessionEffect::Pin(PinReason::TempObject);
        }
        if (lower_starts("pg_advisory_lock") || lower_starts("pg_try_advisory_lock"))
            && !w.to_ascii_lowercase().contains("xact")
        {
            return SessionEffect::Pin(PinReason::AdvisoryLock);
        }
        if w.eq_ignore_ascii_case("set_config") {
            return SessionEffect::Pin(PinReason::SetConfig);
        }
    }
    SessionEffect::None
}

fn parse_set<'a>(stmt: &'a str, toks: Vec<Token<'_>>) -> SessionEffect<'a> {
    let mut i = 0;
    if toks.first().is_some_and(|t| t.is_keyword("LOCAL")) {
        return SessionEffect::None;
    }
    if toks.first().is_some_and(|t| t.is_keyword("SESSION")) {
        // `SET SESSION name ...`, but `SET SESSION AUTHORIZATION` and
        // `SET SESSION CHARACTERISTICS` name the setting with SESSION itself.
        match toks.get(1) {
            Some(t) if t.is_keyword("AUTHORIZATION") => return set("session_authorization", stmt),
            Some(t) if t.is_keyword("CHARACTERISTICS") => return set("session_characteristics", stmt),
            _ => i = 1,
        }
    }
    let Some(t) = toks.get(i) else { return SessionEffect::None };
    let next_is = |k: &str| toks.get(i + 1).is_some_and(|t| t.is_keyword(k));
    if t.is_keyword("TRANSACTION") || t.is_keyword("CONSTRAINTS") {
        return SessionEffect::None;
    }
    if t.is_keyword("TIME") && next_is("ZONE") {
        return set("timezone", stmt);
    }
    if t.is_keyword("SCHEMA") {
        return set("search_path", stmt);
    }
    if t.is_keyword("NAMES") {
        return set("client_encoding", stmt);
    }
    if t.is_keyword("XML") && next_is("OPTION") {
        return set("xmloption", stmt);
    }
    if t.is_keyword("SESSION") && next_is("AUTHORIZATION") {
        return set("session_authorization", stmt);
    }
    match param_name(&toks[i..]) {
        Some(name) => SessionEffect::Set { name, sql: stmt },
        None => SessionEffect::None,
    }
}

fn set<'a>(name: &str, sql: &'a str) -> SessionEffect<'a> {
    SessionEffect::Set { name: name.to_owned(), sql }
}

/// A possibly dotted parameter name (`work_mem`, `myapp.tenant`), lower-cased
/// unless quoted.
fn param_name(toks: &[Token<'_>]) -> Option<String> {
    let mut name = String::new();
    let mut expect_part = true;
    for t in toks {
        match t {
            Token::Word(w) if expect_part => name.push_str(&w.to_ascii_lowercase()),
            Token::QuotedIdent(w) if expect_part => name.push_str(w),
            Token::Punct('.') if !expect_part => name.push('.'),
            _ => break,
        }
        expect_part = !expect_part;
    }
    (!name.is_empty()).then_some(name)
}

fn parse_reset(toks: Vec<Token<'_>>) -> SessionEffect<'static> {
    let Some(t) = toks.first() else { return SessionEffect::None };
    let next_is = |k: &str| toks.get(1).is_some_and(|t| t.is_keyword(k));
    if t.is_keyword("ALL") {
        return SessionEffect::ResetAll;
    }
    let name = if t.is_keyword("TIME") && next_is("ZONE") {
        "timezone".to_owned()
    } else if t.is_keyword("SESSION") && next_is("AUTHORIZATION") {
        "session_authorization".to_owned()
    } else {
        match param_name(&toks) {
            Some(n) => n,
            None => return SessionEffect::None,
        }
    };
    SessionEffect::Reset { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_of(sql: &str) -> Option<String> {
        match session_effect(sql) {
            SessionEffect::Set { name, sql: s } => {
                assert_eq!(s, sql);
                Some(name)
            }
            _ => None,
        }
    }

    #[test]
    fn sets() {
        let cases: &[(&str, Option<&str>)] = &[
            ("SET search_path TO a, b", Some("search_path")),
            ("set Search_Path = 'x'", Some("search_path")),
            ("SET SESSION work_mem = '64MB'", Some("work_mem")),
            ("SET LOCAL work_mem = '64MB'", None),
            ("SET TIME ZONE 'UTC'", Some("timezone")),
            ("SET SESSION TIME ZONE LOCAL", Some("timezone")),
            ("SET SCHEMA 'app'", Some("search_path")),
            ("SET NAMES 'UTF8'", Some("client_encoding")),
            ("SET ROLE admin", Some("role")),
            ("SET SESSION AUTHORIZATION bob", Some("session_authorization")),
            ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", Some("session_characteristics")),
            ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", None),
            ("SET CONSTRAINTS ALL DEFERRED", None),
            ("SET myapp.tenant = '42'", Some("myapp.tenant")),
            ("SET \"MyApp\".\"Tenant\" = 1", Some("MyApp.Tenant")),
            ("SET XML OPTION DOCUMENT", Some("xmloption")),
            ("/* hi */ SET DateStyle TO ISO, DMY", Some("datestyle")),
        ];
        for (sql, want) in cases {
            assert_eq!(set_of(sql).as_deref(), *want, "{sql}");
        }
    }

    #[test]
    fn resets_and_discards() {
        let r = |s: &str| SessionEffect::Reset { name: s.to_owned() };
        let cases = [
            ("RESET ALL", SessionEffect::ResetAll),
            ("reset work_mem", r("work_mem")),
            ("RESET TIME ZONE", r("timezone")),
            ("RESET SESSION AUTHORIZATION", r("session_authorization")),
            ("RESET ROLE", r("role")),
            ("DISCARD ALL", SessionEffect::DiscardAll),
            ("DISCARD PLANS", SessionEffect::None),
            ("DEALLOCATE ALL", SessionEffect::DeallocateAll),
            ("DEALLOCATE PREPARE ALL", SessionEffect::DeallocateAll),
            ("DEALLOCATE foo", SessionEffect::None),
        ];
        for (sql, want) in cases {
            assert_eq!(session_effect(sql), want, "{sql}");
        }
    }

    #[test]
    fn dropped_databases() {
        assert_eq!(dropped_database("DROP DATABASE regression"), Some("regression".into()));
        assert_eq!(dropped_database("drop database if exists \"Regression\""), Some("Regression".into()));
        assert_eq!(dropped_database("DROP DATABASE IF EXISTS x WITH (FORCE)"), Some("x".into()));
        assert_eq!(dropped_database("DROP TABLE database"), None);
        assert_eq!(dropped_database("SELECT 1"), None);
    }

    #[test]
    fn transaction_control_statements() {
        use TxControl::*;
        let cases = [
            ("BEGIN", Some(Begin)),
            ("begin isolation level serializable", Some(Begin)),
            ("START TRANSACTION READ ONLY", Some(Begin)),
            ("COMMIT", Some(Commit)),
            ("END", Some(Commit)),
            ("commit and chain", Some(Commit)),
            ("COMMIT PREPARED 'x'", None),
            ("ROLLBACK", Some(Rollback)),
            ("ABORT", Some(Rollback)),
            ("ROLLBACK PREPARED 'x'", None),
            ("ROLLBACK TO s1", Some(RollbackTo("s1".into()))),
            ("ROLLBACK WORK TO SAVEPOINT S1", Some(RollbackTo("s1".into()))),
            ("ROLLBACK TRANSACTION TO SAVEPOINT \"Sp\"", Some(RollbackTo("Sp".into()))),
            ("SAVEPOINT s1", Some(Savepoint("s1".into()))),
            ("RELEASE SAVEPOINT s1", Some(Release("s1".into()))),
            ("RELEASE s1", Some(Release("s1".into()))),
            ("SELECT 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(transaction_control(sql), want, "{sql}");
        }
    }

    #[test]
    fn prefilter_never_misses() {
        let all = [
            "SET a = 1",
            "reset all",
            "DISCARD ALL",
            "DEALLOCATE ALL",
            "LISTEN c",
            "LOAD 'x'",
            "CREATE TEMP TABLE t (a int)",
            "create temporary table t (a int)",
            "CREATE TABLE pg_temp.t (a int)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "PREPARE q AS SELECT 1",
            "SELECT set_config('a','b',false)",
            "SELECT pg_advisory_lock(1)",
            "SELECT PG_TRY_ADVISORY_LOCK_SHARED(1)",
            "/* lead */ SET a = 1",
            "-- lead\nRESET ALL",
            "SELECT 1; SET a = 1",
            "  set a = 1",
        ];
        for sql in all {
            let effects: Vec<_> = crate::lex::split_statements(sql).into_iter().map(session_effect).collect();
            assert!(effects.iter().any(|e| *e != SessionEffect::None), "{sql}");
            assert!(may_affect_session(sql.as_bytes()), "{sql}");
        }
        let none = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "BEGIN",
            "END",
            "INSERT INTO settings VALUES (1)",
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 2",
            "INSERT INTO t VALUES (1) ON CONFLICT (a) DO UPDATE SET b = 2",
        ];
        for sql in none {
            assert!(!may_affect_session(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn pins() {
        let p = SessionEffect::Pin;
        let cases = [
            ("LISTEN chan", p(PinReason::Listen)),
            ("CREATE TEMP TABLE t (a int)", p(PinReason::TempObject)),
            ("create temporary sequence s", p(PinReason::TempObject)),
            ("CREATE GLOBAL TEMPORARY TABLE t (a int)", p(PinReason::TempObject)),
            ("CREATE TABLE pg_temp.t (a int)", p(PinReason::TempObject)),
            ("SELECT * INTO TEMP t FROM x", p(PinReason::TempObject)),
            ("CREATE TABLE t (temp int)", p(PinReason::TempObject)),
            ("SELECT temp FROM weather", p(PinReason::TempObject)),
            ("SELECT pg_advisory_lock(1)", p(PinReason::AdvisoryLock)),
            ("select pg_try_advisory_lock_shared(1)", p(PinReason::AdvisoryLock)),
            ("select pg_advisory_xact_lock(1)", SessionEffect::None),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", p(PinReason::HoldCursor)),
            ("DECLARE c CURSOR FOR SELECT 1", SessionEffect::None),
            ("PREPARE TRANSACTION 'x'", p(PinReason::PrepareTransaction)),
            ("PREPARE q AS SELECT 1", p(PinReason::SqlPrepare)),
            ("SELECT set_config('a.b', 'c', false)", p(PinReason::SetConfig)),
            ("LOAD 'auto_explain'", p(PinReason::Load)),
            ("SELECT 'pg_advisory_lock(1)'", SessionEffect::None),
            ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", SessionEffect::None),
            ("BEGIN", SessionEffect::None),
            ("UPDATE t SET a = 1", SessionEffect::None),
        ];
        for (sql, want) in cases {
            assert_eq!(session_effect(sql), want, "{sql}");
        }
    }
}

/// A `BEGIN` / `START TRANSACTION` a proxy may answer itself and send on
/// later: only the standard forms, so that PostgreSQL cannot refuse it.
/// Returns whether the transaction is `READ ONLY`.
pub fn deferrable_begin(stmt: &str) -> Option<bool> {
    let toks: Vec<Token<'_>> = Lexer::new(stmt).take(24).collect();
    let is = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_keyword(k));
    let mut i = if is(0, "BEGIN") {
        if is(1, "WORK") || is(1, "TRANSACTION") { 2 } else { 1 }
    } else if is(0, "START") && is(1, "TRANSACTION") {
        2
    } else {
        return None;
    };
    let mut read_only = false;
    let mut first = true;
    while i < toks.len() {
        if !first && toks[i] == Token::Punct(',') {
            i += 1;
        }
        first = false;
        let two = |a: &str, b: &str| is(i, a) && is(i + 1, b);
        let step = if is(i, "ISOLATION") && is(i + 1, "LEVEL") {
            let at = i + 2;
            let level = |a: &str, b: &str| is(at, a) && is(at + 1, b);
            if is(at, "SERIALIZABLE") {
                3
            } else if level("REPEATABLE", "READ") || level("READ", "COMMITTED") || level("READ", "UNCOMMITTED") {
                4
            } else {
                return None;
            }
        } else if two("READ", "ONLY") {
            read_only = true;
            2
        } else if two("READ", "WRITE") {
            read_only = false;
            2
        } else if is(i, "DEFERRABLE") {
            1
        } else if two("NOT", "DEFERRABLE") {
            2
        } else {
            return None;
        };
        i += step;
    }
    Some(read_only)
}

#[cfg(test)]
mod do_block_tests {
    use super::*;

    #[test]
    fn a_do_block_that_sets_a_parameter_pins() {
        let pin = SessionEffect::Pin(PinReason::SetConfig);
        assert_eq!(session_effect("DO $$BEGIN SET enable_bitmapscan = 0; END$$"), pin);
        assert_eq!(session_effect("do $x$ begin if true then set work_mem = '1MB'; end if; end $x$"), pin);
        assert_eq!(session_effect("DO 'BEGIN SET search_path = x; END'"), pin);
        assert_eq!(session_effect("DO $$BEGIN SET LOCAL work_mem = '1MB'; END$$"), SessionEffect::None);
        assert_eq!(session_effect("DO $$BEGIN UPDATE t SET x = 1; END$$"), SessionEffect::None);
        assert_eq!(session_effect("DO $$BEGIN PERFORM 1; END$$"), SessionEffect::None);
        assert!(may_affect_session(b"DO $$BEGIN SET enable_bitmapscan = 0; END$$"));
    }
}

#[cfg(test)]
mod begin_tests {
    use super::deferrable_begin;

    #[test]
    fn standard_begins_are_deferrable() {
        assert_eq!(deferrable_begin("BEGIN"), Some(false));
        assert_eq!(deferrable_begin("begin work"), Some(false));
        assert_eq!(deferrable_begin("START TRANSACTION READ ONLY"), Some(true));
        assert_eq!(deferrable_begin("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY, DEFERRABLE"), Some(true));
        assert_eq!(deferrable_begin("BEGIN READ ONLY READ WRITE"), Some(false));
        assert_eq!(deferrable_begin("BEGIN ISOLATION LEVEL SNAPSHOT"), None);
        assert_eq!(deferrable_begin("BEGIN; SELECT 1"), None);
        assert_eq!(deferrable_begin("BEGIN TRANSACTION foo"), None);
        assert_eq!(deferrable_begin("START"), None);
        assert_eq!(deferrable_begin("COMMIT"), None);
    }
}

#[cfg(test)]
mod precheck_tests {
    use super::word_may_affect_session;

    /// The keyword lists the length-first match stands for.
    fn listed(w: &[u8], first: bool) -> bool {
        const FIRST: &[&[u8]] =
            &[b"set", b"reset", b"discard", b"deallocate", b"listen", b"load", b"prepare", b"declare", b"do"];
        const ANYWHERE: &[&[u8]] = &[b"temp", b"temporary", b"pg_temp", b"set_config"];
        let starts = |p: &[u8]| w.len() >= p.len() && w[..p.len()].eq_ignore_ascii_case(p);
        (first && FIRST.iter().any(|k| k.eq_ignore_ascii_case(w)))
            || ANYWHERE.iter().any(|k| k.eq_ignore_ascii_case(w))
            || starts(b"pg_advisory_lock")
            || starts(b"pg_try_advisory_lock")
    }

    proptest::proptest! {
        #[test]
        fn the_length_first_match_is_the_keyword_list(
            word in proptest::sample::select(vec![
                "set", "SET", "reset", "Discard", "deallocate", "listen", "load", "prepare", "declare", "do",
                "temp", "TEMPORARY", "pg_temp", "set_config", "pg_advisory_lock", "pg_advisory_lock_shared",
                "PG_TRY_ADVISORY_LOCK", "pg_try_advisory_lock_shared", "pg_advisory_xact_lock", "select",
                "sets", "tem", "temps", "pg_temps", "set_configs", "pg_advisory_loc", "d", "", "pgbench_accounts",
            ]),
            suffix in "[a-z_]{0,2}",
            first: bool,
        ) {
            for w in [word.to_owned(), format!("{word}{suffix}")] {
                proptest::prop_assert_eq!(word_may_affect_session(w.as_bytes(), first), listed(w.as_bytes(), first), "{}", w);
            }
        }
    }
}
