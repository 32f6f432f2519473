//! A client's session settings, kept so that any pooled server connection
//! can be made to look like the client's own.
//!
//! A setting is stored as the SQL that establishes it: startup parameters as
//! `SELECT pg_catalog.set_config(...)` (the value is parsed the way the
//! startup packet's would be), and the client's own `SET` statements
//! verbatim. A server connection records what it has applied
//! ([`crate::backend::ServerConn::applied`]); on checkout the difference is
//! sent as one simple query whose responses are swallowed.
//!
//! Changes count only once committed: a `SET` inside a transaction that
//! rolls back is forgotten, as PostgreSQL forgets it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use std::collections::VecDeque;

use router::{SessionEffect, TxControl};

use crate::backend::ServerState;

/// Settings that change who the session is, in the order they are set.
const IDENTITY: [&str; 2] = ["session_authorization", "role"];

/// Startup parameters that are not session settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// A change to session settings, applied when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Set { name: String, sql: String },
    Reset { name: String },
    ResetAll,
}

/// What one statement means for session settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    Change(Change),
    Tx(TxControl),
}

impl Effect {
    /// The effect of one statement.
    pub fn of(stmt: &str) -> Effect {
        match router::session_effect(stmt) {
            SessionEffect::Set { name, sql } => Effect::Change(Change::Set { name, sql: sql.to_owned() }),
            SessionEffect::Reset { name } => Effect::Change(Change::Reset { name }),
            SessionEffect::ResetAll | SessionEffect::DiscardAll => Effect::Change(Change::ResetAll),
            _ => router::transaction_control(stmt).map_or(Effect::None, Effect::Tx),
        }
    }

    /// The effects of a simple-query string, one per statement, in order
    /// (the order of its CommandCompletes).
    pub fn of_query(sql: &str) -> VecDeque<Effect> {
        router::lex::split_statements(sql).into_iter().map(Effect::of).collect()
    }
}

/// One entry of the open transaction's journal.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Journal {
    Change(Change),
    Savepoint(String),
}

/// Why startup parameters were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("invalid command-line argument for server process: {0}")]
    BadOption(String),
    #[error("replication connections are not supported")]
    Replication,
}

/// What the client expects its session to look like.
///
/// The session reports each completed statement's [`Effect`]
/// ([`ClientParams::on_complete`]), errors ([`ClientParams::on_error`]) and
/// ReadyForQuery ([`ClientParams::on_ready`]). Changes outside an explicit
/// transaction commit at the next ReadyForQuery unless an error came first
/// (a multi-statement query or a Sync batch is one implicit transaction);
/// changes inside one are journaled with its savepoints and commit with it.
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Settings from the startup packet: what RESET returns to.
    startup: BTreeMap<String, String>,
    /// The current committed settings.
    desired: BTreeMap<String, String>,
    /// Changes made outside an explicit transaction since the last ReadyForQuery.
    implicit: Vec<Change>,
    /// Changes and savepoints of the open explicit transaction.
    journal: Vec<Journal>,
    in_transaction: bool,
    failed: bool,
    /// `meridian.*` startup settings: Meridian's own, never sent to a server.
    pub meridian: Vec<(String, String)>,
    /// Process-unique stamp of `desired`, renewed whenever it changes (0:
    /// none yet). A connection stamped with it ([`ServerState::synced`])
    /// needs no comparison of the maps at checkout.
    generation: u64,
}

/// Source of [`ClientParams::generation`] stamps.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl ClientParams {
    /// Settings from a startup packet's parameters (including `options`).
    pub fn from_startup(params: &[(String, String)]) -> Result<ClientParams, ParamError> {
        let mut startup = BTreeMap::new();
        let mut meridian = Vec::new();
        for (k, v) in params {
            if k.to_ascii_lowercase().starts_with("meridian.") {
                meridian.push((k.to_ascii_lowercase(), v.clone()));
                continue;
            }
            if k == "replication" && v != "false" && v != "0" && v != "off" && v != "no" {
                return Err(ParamError::Replication);
            }
            if k == "options" {
                for (name, value) in parse_options(v)? {
                    if name.to_ascii_lowercase().starts_with("meridian.") {
                        meridian.push((name.to_ascii_lowercase(), value));
                        continue;
                    }
                    startup.insert(name.to_ascii_lowercase(), set_config_sql(&name, &value));
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("_pq_.") {
                startup.insert(k.to_ascii_lowercase(), set_config_sql(k, v));
            }
        }
        Ok(ClientParams {
            desired: startup.clone(),
            startup,
            meridian,
            generation: next_generation(),
            ..Default::default()
        })
    }

    /// A `BEGIN` answered by the proxy itself (sent on later).
    pub fn on_begin(&mut self) {
        self.in_transaction = true;
    }

    /// That held `BEGIN` ended by COMMIT/ROLLBACK before any statement ran.
    pub fn on_end_empty(&mut self) {
        self.in_transaction = false;
        self.journal.clear();
    }

    /// Must every statement's effect be reported? True while changes wait
    /// for their transaction's outcome, when transaction control matters.
    pub fn tracking(&self) -> bool {
        !self.journal.is_empty() || !self.implicit.is_empty()
    }

    /// A statement with `effect` completed with command tag `tag`.
    pub fn on_complete(&mut self, effect: Effect, tag: &[u8], server: &mut ServerState) {
        match effect {
            Effect::None => {}
            Effect::Change(c) if self.in_transaction => self.journal.push(Journal::Change(c)),
            Effect::Change(c) => self.implicit.push(c),
            Effect::Tx(TxControl::Begin) => {
                // BEGIN inside a multi-statement query takes the statements
                // before it into the explicit transaction.
                self.in_transaction = true;
                self.journal.extend(self.implicit.drain(..).map(Journal::Change));
            }
            Effect::Tx(TxControl::Commit) => {
                // COMMIT of a failed transaction answers ROLLBACK.
                if tag == b"COMMIT" {
                    self.commit_journal(server);
                }
                self.journal.clear();
                self.in_transaction = false;
            }
            Effect::Tx(TxControl::Rollback) => {
                self.journal.clear();
                self.in_transaction = false;
            }
            Effect::Tx(TxControl::Savepoint(name)) => self.journal.push(Journal::Savepoint(name)),
            Effect::Tx(TxControl::RollbackTo(name)) => {
                // Back to just after the savepoint, which stays; a savepoint
                // set before any change we journaled undoes them all.
                let keep = self.last_savepoint(&name).map_or(0, |i| i + 1);
                self.journal.truncate(keep);
            }
            Effect::Tx(TxControl::Release(name)) => {
                if let Some(i) = self.last_savepoint(&name) {
                    // Releasing a savepoint releases the ones after it; the
                    // changes become part of the enclosing level.
                    let tail = self.journal.split_off(i);
                    self.journal.extend(tail.into_iter().filter(|e| matches!(e, Journal::Change(_))));
                }
            }
        }
    }

    fn last_savepoint(&self, name: &str) -> Option<usize> {
        self.journal.iter().rposition(|e| matches!(e, Journal::Savepoint(n) if n == name))
    }

    fn commit_journal(&mut self, server: &mut ServerState) {
        for entry in std::mem::take(&mut self.journal) {
            if let Journal::Change(c) = entry {
                self.apply(c, server);
            }
        }
    }

    /// The server connection died: what was not committed is gone, and a
    /// commit whose outcome is unknown counts as not committed (its
    /// settings are not replayed; the client was told it may have failed).
    pub fn on_lost(&mut self) {
        self.implicit.clear();
        self.journal.clear();
        self.in_transaction = false;
        self.failed = false;
    }

    /// The server reported an error.
    pub fn on_error(&mut self) {
        self.failed = true;
    }

    /// ReadyForQuery arrived with `status`. Commits what committed; returns
    /// true when the settings changed.
    pub fn on_ready(&mut self, status: u8, server: &mut ServerState) -> bool {
        let failed = std::mem::take(&mut self.failed);
        let implicit = std::mem::take(&mut self.implicit);
        let mut changed = false;
        if !failed && !implicit.is_empty() {
            changed = true;
            for c in implicit {
                self.apply(c, server);
            }
        }
        if status == b'I' {
            if !self.journal.is_empty() {
                // The transaction ended by a statement we did not see (it
                // cannot happen while we track every statement); what ended
                // it is unknown, and a commit is the likelier.
                tracing::debug!("transaction with journaled settings ended unseen");
                changed = true;
                self.commit_journal(server);
            }
            self.in_transaction = false;
        } else {
            self.in_transaction = true;
        }
        changed
    }

    fn apply(&mut self, change: Change, server: &mut ServerState) {
        // Both maps change: neither stamp holds any more.
        self.generation = next_generation();
        server.synced = 0;
        // SET/RESET SESSION AUTHORIZATION also resets the role to NONE.
        if let Change::Set { name, .. } | Change::Reset { name } = &change
            && name == "session_authorization"
        {
            server.applied.remove("role");
            self.desired.remove("role");
        }
        match change {
            Change::Set { name, sql } => {
                // A reported parameter (DateStyle, TimeZone, ...) is stored as
                // the value the server reports: a SET may change only part of
                // it (SET datestyle TO ymd keeps the output style).
                let sql = server
                    .reported
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(&name))
                    .map_or(sql, |(k, v)| set_config_sql(k, v));
                server.applied.insert(name.clone(), sql.clone());
                self.desired.insert(name, sql);
            }
            Change::Reset { name } => {
                // The server went back to its own default; the client expects
                // its startup value, which the next sync re-applies.
                server.applied.remove(&name);
                match self.startup.get(&name) {
                    Some(v) => self.desired.insert(name, v.clone()),
                    None => self.desired.remove(&name),
                };
            }
            Change::ResetAll => {
                server.applied.clear();
                self.desired = self.startup.clone();
            }
        }
    }

    /// SQL that makes a connection with `applied` settings match this
    /// client, or `None` when it already does.
    ///
    /// Identity settings (`session_authorization`, `role`) go back to the
    /// login identity first and are set last: other settings may need the
    /// privileges the identity drops (`SET track_io_timing` before
    /// `SET SESSION AUTHORIZATION nonsuper` is valid, the reverse is not).
    pub fn sync_sql(&self, applied: &BTreeMap<String, String>) -> Option<String> {
        if *applied == self.desired {
            return None;
        }
        let mut sql = String::new();
        let mut line = |s: &str| {
            sql.push_str(s);
            sql.push_str(";\n");
        };
        let identity_changes = IDENTITY.iter().any(|k| applied.get(*k) != self.desired.get(*k));
        let reset_identity = identity_changes && IDENTITY.iter().any(|k| applied.contains_key(*k));
        if reset_identity {
            line("RESET SESSION AUTHORIZATION");
            line("RESET ROLE");
        }
        let is_identity = |k: &str| IDENTITY.contains(&k);
        for name in applied.keys().filter(|k| !is_identity(k) && !self.desired.contains_key(*k)) {
            line(&reset_sql(name));
        }
        for (name, set) in self.desired.iter().filter(|(k, _)| !is_identity(k)) {
            if applied.get(name) != Some(set) {
                line(set);
            }
        }
        for name in IDENTITY {
            if let Some(set) = self.desired.get(name)
                && (reset_identity || applied.get(name) != Some(set))
            {
                line(set);
            }
        }
        Some(sql)
    }

    /// The settings as applied after a successful sync.
    pub fn desired(&self) -> &BTreeMap<String, String> {
        &self.desired
    }

    /// Does `server` carry exactly these settings, by its stamp? `false`
    /// means "compare" ([`ClientParams::sync_sql`]), not "differs".
    pub fn synced_on(&self, server: &ServerState) -> bool {
        self.generation != 0 && server.synced == self.generation
    }

    /// `server` now carries exactly these settings.
    pub fn stamp(&self, server: &mut ServerState) {
        server.synced = self.generation;
    }
}

/// `set_config` with a literal value, parsed like a startup parameter.
fn set_config_sql(name: &str, value: &str) -> String {
    format!("SELECT pg_catalog.set_config({}, {}, false)", literal(name), literal(value))
}

/// How to undo a setting that was applied with the SQL stored for `name`.
fn reset_sql(name: &str) -> String {
    match name {
        "session_authorization" => "RESET SESSION AUTHORIZATION".into(),
        "session_characteristics" => {
            "RESET default_transaction_isolation; RESET default_transaction_read_only; RESET default_transaction_deferrable"
                .into()
        }
        n => format!("RESET {}", ident(n)),
    }
}

/// A SQL string literal that means `s` whatever standard_conforming_strings is.
fn literal(s: &str) -> String {
    if s.contains('\\') {
        format!("E'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// A parameter name as SQL: dotted parts quoted as needed.
fn ident(name: &str) -> String {
    name.split('.')
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                part.to_owned()
            } else {
                format!("\"{}\"", part.replace('"', "\"\""))
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Parse the `options` startup parameter the way the backend does:
/// whitespace-separated words (backslash escapes the next character), each
/// `-c name=value`, `-cname=value` or `--name=value`.
fn parse_options(options: &str) -> Result<Vec<(String, String)>, ParamError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut chars = options.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                cur.push(n);
                in_word = true;
            }
        } else if c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push(cur);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next().ok_or_else(|| ParamError::BadOption(w.clone()))?
        } else if let Some(s) = w.strip_prefix("-c") {
            s.to_owned()
        } else if let Some(s) = w.strip_prefix("--") {
            s.to_owned()
        } else {
            return Err(ParamError::BadOption(w));
        };
        let (name, value) = setting.split_once('=').ok_or_else(|| ParamError::BadOption(setting.clone()))?;
        out.push((name.replace('-', "_"), value.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn startup_parameters_become_set_config() {
        let c = ClientParams::from_startup(&p(&[
            ("user", "u"),
            ("database", "d"),
            ("application_name", "it's"),
            ("DateStyle", "ISO, DMY"),
            ("options", "-c search_path=a,b --work-mem=64MB -cstatement_timeout=5s"),
        ]))
        .unwrap();
        let d = c.desired();
        assert_eq!(d["application_name"], "SELECT pg_catalog.set_config('application_name', 'it''s', false)");
        assert_eq!(d["datestyle"], "SELECT pg_catalog.set_config('DateStyle', 'ISO, DMY', false)");
        assert_eq!(d["search_path"], "SELECT pg_catalog.set_config('search_path', 'a,b', false)");
        assert_eq!(d["work_mem"], "SELECT pg_catalog.set_config('work_mem', '64MB', false)");
        assert_eq!(d["statement_timeout"], "SELECT pg_catalog.set_config('statement_timeout', '5s', false)");
        assert!(!d.contains_key("user"));
    }

    #[test]
    fn options_parsing() {
        assert_eq!(parse_options(r"-c a=x\ y").unwrap(), vec![("a".into(), "x y".into())]);
        assert!(parse_options("-c").is_err());
        assert!(parse_options("-x a=b").is_err());
        assert!(parse_options("-c noequals").is_err());
        assert!(ClientParams::from_startup(&p(&[("replication", "database")])).is_err());
        assert!(ClientParams::from_startup(&p(&[("replication", "false")])).is_ok());
    }

    #[test]
    fn sync_sql_resets_then_sets() {
        let c = ClientParams::from_startup(&p(&[("application_name", "a")])).unwrap();
        let mut applied = BTreeMap::new();
        assert_eq!(c.sync_sql(&applied).unwrap(), "SELECT pg_catalog.set_config('application_name', 'a', false);\n");
        applied.insert("work_mem".to_string(), "SET work_mem = 1".to_string());
        applied.insert("My.Guc".to_string(), "SET \"My\".\"Guc\" = 1".to_string());
        let sql = c.sync_sql(&applied).unwrap();
        assert!(sql.starts_with("RESET \"My\".\"Guc\";\nRESET work_mem;\nSELECT"), "{sql}");
        let applied = c.desired().clone();
        assert_eq!(c.sync_sql(&applied), None);
    }

    #[test]
    fn identity_is_reset_first_and_set_last() {
        let mut c = ClientParams::default();
        let mut server = ServerState::default();
        run(
            &mut c,
            &mut server,
            "SET track_io_timing = on; SET SESSION AUTHORIZATION nonsuper; SET ROLE r; SET work_mem = 1",
            None,
            b'I',
        );
        let applied = server.applied.clone();
        // Replayed on a fresh connection: identity last, session before role.
        let sql = c.sync_sql(&BTreeMap::new()).unwrap();
        let pos = |needle: &str| sql.find(needle).unwrap_or_else(|| panic!("{needle} in {sql}"));
        assert!(pos("track_io_timing") < pos("SESSION AUTHORIZATION nonsuper"), "{sql}");
        assert!(pos("work_mem") < pos("SESSION AUTHORIZATION nonsuper"), "{sql}");
        assert!(pos("SESSION AUTHORIZATION nonsuper") < pos("SET ROLE r"), "{sql}");
        // Another client lands on that connection: the identity is dropped
        // before anything else is reset.
        let other = ClientParams::default();
        let sql = other.sync_sql(&applied).unwrap();
        assert!(sql.starts_with("RESET SESSION AUTHORIZATION;\nRESET ROLE;\n"), "{sql}");
        assert!(sql.contains("RESET track_io_timing") && sql.contains("RESET work_mem"), "{sql}");
        assert!(!sql.contains("RESET session_authorization") && !sql.contains("RESET role"), "{sql}");
    }

    /// Feed a simple query through `c` as a server would answer it:
    /// statements complete in order, `fail_at` fails and skips the rest.
    fn run(c: &mut ClientParams, server: &mut ServerState, sql: &str, fail_at: Option<usize>, status: u8) {
        for (i, e) in Effect::of_query(sql).into_iter().enumerate() {
            if Some(i) == fail_at {
                c.on_error();
                break;
            }
            let tag: &[u8] = if e == Effect::Tx(TxControl::Commit) { b"COMMIT" } else { b"X" };
            c.on_complete(e, tag, server);
        }
        c.on_ready(status, server);
    }

    #[test]
    fn sets_count_only_when_committed() {
        let mut c = ClientParams::default();
        let mut server = ServerState::default();
        let wm = |c: &ClientParams| c.desired().get("work_mem").cloned();
        run(&mut c, &mut server, "SET work_mem = '1MB'", None, b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '1MB'"));
        assert_eq!(server.applied, *c.desired());
        // Rolled back, in separate queries and in one string.
        run(&mut c, &mut server, "BEGIN", None, b'T');
        run(&mut c, &mut server, "SET work_mem = '2MB'", None, b'T');
        run(&mut c, &mut server, "ROLLBACK", None, b'I');
        run(&mut c, &mut server, "BEGIN; SET work_mem = '2MB'; ROLLBACK; SELECT 1", None, b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '1MB'"));
        // Committed.
        run(&mut c, &mut server, "BEGIN; SET work_mem = '3MB'", None, b'T');
        run(&mut c, &mut server, "COMMIT", None, b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '3MB'"));
        // A failed statement in the same implicit transaction takes the SET with it.
        run(&mut c, &mut server, "SET work_mem = '4MB'; SELECT 1/0", Some(1), b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '3MB'"));
        // COMMIT of a failed transaction is a rollback.
        run(&mut c, &mut server, "BEGIN; SET work_mem = '5MB'", None, b'T');
        run(&mut c, &mut server, "SELECT 1/0", Some(0), b'E');
        c.on_complete(Effect::of("COMMIT"), b"ROLLBACK", &mut server);
        c.on_ready(b'I', &mut server);
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '3MB'"));
        // RESET ALL returns to the startup settings.
        run(&mut c, &mut server, "RESET ALL", None, b'I');
        assert!(c.desired().is_empty());
        assert!(server.applied.is_empty());
    }

    #[test]
    fn savepoints() {
        let mut c = ClientParams::default();
        let mut server = ServerState::default();
        let wm = |c: &ClientParams| c.desired().get("work_mem").cloned();
        run(&mut c, &mut server, "BEGIN", None, b'T');
        run(&mut c, &mut server, "SAVEPOINT a", None, b'T');
        run(&mut c, &mut server, "SET work_mem = '1MB'", None, b'T');
        run(&mut c, &mut server, "ROLLBACK TO SAVEPOINT a", None, b'T');
        run(&mut c, &mut server, "COMMIT", None, b'I');
        assert_eq!(wm(&c), None, "undone by ROLLBACK TO");
        // A savepoint we never saw (set before any change) undoes everything after it.
        run(&mut c, &mut server, "BEGIN", None, b'T');
        run(&mut c, &mut server, "SET work_mem = '2MB'; SAVEPOINT b; SET work_mem = '3MB'", None, b'T');
        run(&mut c, &mut server, "RELEASE SAVEPOINT b", None, b'T');
        run(&mut c, &mut server, "SAVEPOINT c; SET work_mem = '4MB'; ROLLBACK TO c", None, b'T');
        run(&mut c, &mut server, "COMMIT", None, b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '3MB'"));
        run(&mut c, &mut server, "BEGIN", None, b'T');
        run(&mut c, &mut server, "SET work_mem = '5MB'", None, b'T');
        run(&mut c, &mut server, "ROLLBACK TO never_seen", None, b'T');
        run(&mut c, &mut server, "COMMIT", None, b'I');
        assert_eq!(wm(&c).as_deref(), Some("SET work_mem = '3MB'"));
    }

    #[test]
    fn reported_parameters_are_stored_as_reported() {
        let mut c = ClientParams::default();
        let mut server = ServerState::default();
        run(&mut c, &mut server, "SET datestyle TO postgres", None, b'I');
        // The server reports the whole value after a partial SET.
        server.reported.insert("DateStyle".into(), "Postgres, YMD".into());
        run(&mut c, &mut server, "SET datestyle TO ymd", None, b'I');
        assert_eq!(c.desired()["datestyle"], "SELECT pg_catalog.set_config('DateStyle', 'Postgres, YMD', false)");
    }

    #[test]
    fn reset_returns_to_the_startup_value() {
        let mut c = ClientParams::from_startup(&p(&[("timezone", "UTC")])).unwrap();
        let mut server = ServerState { applied: c.desired().clone(), ..Default::default() };
        run(&mut c, &mut server, "SET TIME ZONE 'Europe/Paris'", None, b'I');
        run(&mut c, &mut server, "RESET timezone", None, b'I');
        assert_eq!(c.desired()["timezone"], "SELECT pg_catalog.set_config('timezone', 'UTC', false)");
        // The server reset to its own default; a sync puts the startup value back.
        assert!(c.sync_sql(&server.applied).unwrap().contains("'UTC'"));
    }
}
