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

use router::SessionEffect;

/// Startup parameters that are not session settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

/// A change to session settings, applied when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Set { name: String, sql: String },
    Reset { name: String },
    ResetAll,
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
#[derive(Debug, Clone, Default)]
pub struct ClientParams {
    /// Settings from the startup packet: what RESET returns to.
    startup: BTreeMap<String, String>,
    /// The current settings.
    desired: BTreeMap<String, String>,
    /// Changes made by the statements in flight since the last ReadyForQuery.
    in_flight: Vec<Change>,
    /// Changes made inside the open transaction.
    in_transaction: Vec<Change>,
}

impl ClientParams {
    /// Settings from a startup packet's parameters (including `options`).
    pub fn from_startup(params: &[(String, String)]) -> Result<ClientParams, ParamError> {
        let mut startup = BTreeMap::new();
        for (k, v) in params {
            if k == "replication" && v != "false" && v != "0" && v != "off" && v != "no" {
                return Err(ParamError::Replication);
            }
            if k == "options" {
                for (name, value) in parse_options(v)? {
                    startup.insert(name.to_ascii_lowercase(), set_config_sql(&name, &value));
                }
            } else if !NOT_SETTINGS.contains(&k.as_str()) && !k.starts_with("_pq_.") {
                startup.insert(k.to_ascii_lowercase(), set_config_sql(k, v));
            }
        }
        Ok(ClientParams { desired: startup.clone(), startup, ..Default::default() })
    }

    /// Note a statement the client sent, to be judged at the next ReadyForQuery.
    pub fn observe(&mut self, effect: &SessionEffect<'_>) {
        let change = match effect {
            SessionEffect::Set { name, sql } => Change::Set { name: name.clone(), sql: (*sql).to_owned() },
            SessionEffect::Reset { name } => Change::Reset { name: name.clone() },
            SessionEffect::ResetAll | SessionEffect::DiscardAll => Change::ResetAll,
            _ => return,
        };
        self.in_flight.push(change);
    }

    /// Is anything waiting to be judged? (Cheap check for the hot path.)
    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty() || !self.in_transaction.is_empty()
    }

    /// ReadyForQuery arrived with `status`; `failed` says an error was seen
    /// since the last one and `rolled_back` that the last command completed
    /// was a ROLLBACK. Committed changes are applied to the client's
    /// settings and to `applied`, the serving connection's record.
    pub fn on_ready(&mut self, status: u8, failed: bool, rolled_back: bool, applied: &mut BTreeMap<String, String>) {
        let batch = std::mem::take(&mut self.in_flight);
        match status {
            b'T' if !failed => self.in_transaction.extend(batch),
            b'T' | b'E' => {}
            _ => {
                let tx = std::mem::take(&mut self.in_transaction);
                if failed {
                    return;
                }
                let committed = if rolled_back { batch } else { tx.into_iter().chain(batch).collect() };
                for change in committed {
                    self.apply(change, applied);
                }
            }
        }
    }

    fn apply(&mut self, change: Change, applied: &mut BTreeMap<String, String>) {
        match change {
            Change::Set { name, sql } => {
                applied.insert(name.clone(), sql.clone());
                self.desired.insert(name, sql);
            }
            Change::Reset { name } => {
                // The server went back to its own default; the client expects
                // its startup value, which the next sync re-applies.
                applied.remove(&name);
                match self.startup.get(&name) {
                    Some(v) => self.desired.insert(name, v.clone()),
                    None => self.desired.remove(&name),
                };
            }
            Change::ResetAll => {
                applied.clear();
                self.desired = self.startup.clone();
            }
        }
    }

    /// SQL that makes a connection with `applied` settings match this
    /// client, or `None` when it already does.
    pub fn sync_sql(&self, applied: &BTreeMap<String, String>) -> Option<String> {
        if *applied == self.desired {
            return None;
        }
        let mut sql = String::new();
        for name in applied.keys().filter(|k| !self.desired.contains_key(*k)) {
            sql.push_str(&reset_sql(name));
            sql.push_str(";\n");
        }
        for (name, set) in &self.desired {
            if applied.get(name) != Some(set) {
                sql.push_str(set);
                sql.push_str(";\n");
            }
        }
        Some(sql)
    }

    /// The settings as applied after a successful sync.
    pub fn desired(&self) -> &BTreeMap<String, String> {
        &self.desired
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
    fn sets_count_only_when_committed() {
        let set = |sql: &'static str| router::session_effect(sql);
        let mut c = ClientParams::default();
        let mut applied = BTreeMap::new();
        // Autocommit SET.
        c.observe(&set("SET work_mem = '1MB'"));
        c.on_ready(b'I', false, false, &mut applied);
        assert_eq!(c.desired()["work_mem"], "SET work_mem = '1MB'");
        assert_eq!(applied, *c.desired());
        // SET in a transaction that rolls back.
        c.observe(&set("SET work_mem = '2MB'"));
        c.on_ready(b'T', false, false, &mut applied);
        c.on_ready(b'I', false, true, &mut applied);
        assert_eq!(c.desired()["work_mem"], "SET work_mem = '1MB'");
        // ... and one that commits.
        c.observe(&set("SET work_mem = '3MB'"));
        c.on_ready(b'T', false, false, &mut applied);
        c.on_ready(b'I', false, false, &mut applied);
        assert_eq!(c.desired()["work_mem"], "SET work_mem = '3MB'");
        // A failed statement takes its SET with it.
        c.observe(&set("SET work_mem = '4MB'"));
        c.on_ready(b'I', true, false, &mut applied);
        assert_eq!(c.desired()["work_mem"], "SET work_mem = '3MB'");
        // RESET ALL returns to the startup settings.
        c.observe(&set("RESET ALL"));
        c.on_ready(b'I', false, false, &mut applied);
        assert!(c.desired().is_empty());
        assert!(applied.is_empty());
    }

    #[test]
    fn reset_returns_to_the_startup_value() {
        let mut c = ClientParams::from_startup(&p(&[("timezone", "UTC")])).unwrap();
        let mut applied = c.desired().clone();
        c.observe(&router::session_effect("SET TIME ZONE 'Europe/Paris'"));
        c.on_ready(b'I', false, false, &mut applied);
        c.observe(&router::session_effect("RESET timezone"));
        c.on_ready(b'I', false, false, &mut applied);
        assert_eq!(c.desired()["timezone"], "SELECT pg_catalog.set_config('timezone', 'UTC', false)");
        // The server reset to its own default; a sync puts the startup value back.
        assert!(c.sync_sql(&applied).unwrap().contains("'UTC'"));
    }
}
