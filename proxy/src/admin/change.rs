//! The admin statements that change the replicated topology (DESIGN §6):
//! text in, [`Action`] out. Each one becomes one `consensus::Change`
//! proposed through Raft (or a membership change, or `RELOAD`); running it
//! is `super::AdminSession`'s business. `SWITCHOVER`, `FAILOVER`,
//! `REJOIN NODE` and `DRILL` become an [`Operation`] that the control
//! runtime (`crate::control::ops::execute`) carries out step by step.
//!
//! Identifiers fold to lower case unless double-quoted, as in PostgreSQL;
//! string literals ('...') are taken as written. Keywords are
//! case-insensitive. The grammar is in `docs/admin-sql.md`.

use std::time::Duration;

use consensus::state::{Durability, KeyType, KeyValue, PolicyChange, RangePart, Role, ShardMap, ShardPolicy};
use consensus::{Change, Member, MemberId};
use router::lex::{Lexer, Token};

use super::AdminError;
use super::command::string_literal;
use crate::control::ops::{Drill, Operation};

/// Priority of a node added without `PRIORITY`.
pub(crate) const DEFAULT_PRIORITY: u32 = 100;

/// What a change statement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Propose one change; `tag` is the CommandComplete tag (`CREATE SHARD`).
    /// A `ShardMap::Hash` with no shards means "every shard, in name
    /// order", filled in from the topology when the command runs.
    Propose { tag: &'static str, change: Change },
    /// `ADD MEMBER`: a Meridian node joins the Raft group.
    AddMember(Member),
    /// `REMOVE MEMBER`.
    RemoveMember(MemberId),
    /// `RELOAD`: what SIGHUP does.
    Reload,
    /// `SWITCHOVER`, `FAILOVER`, `REJOIN NODE`, `DRILL`: an operation of
    /// several steps, run by `crate::control::ops::execute`.
    Control(Operation),
}

impl Action {
    pub(crate) fn tag(&self) -> &'static str {
        match self {
            Action::Propose { tag, .. } => tag,
            Action::AddMember(_) => "ADD MEMBER",
            Action::RemoveMember(_) => "REMOVE MEMBER",
            Action::Reload => "RELOAD",
            Action::Control(op) => match op {
                Operation::Switchover { .. } => "SWITCHOVER",
                Operation::Failover { .. } => "FAILOVER",
                Operation::Rejoin { .. } => "REJOIN NODE",
                Operation::Drill(_) => "DRILL",
            },
        }
    }
}

/// Parse a change statement whose first word is `verb`; `None` when `verb`
/// starts no change statement.
pub(crate) fn parse(stmt: &str, verb: &str) -> Option<Result<Action, AdminError>> {
    let verb = verb.to_ascii_uppercase();
    let starts = [
        "CREATE",
        "DROP",
        "ALTER",
        "SET",
        "ADD",
        "REMOVE",
        "BAN",
        "UNBAN",
        "SHARD",
        "UNSHARD",
        "PAUSE",
        "RESUME",
        "RELOAD",
        "SWITCHOVER",
        "FAILOVER",
        "REJOIN",
        "DRILL",
    ];
    if !starts.contains(&verb.as_str()) {
        return None;
    }
    let mut p = Parser::new(stmt);
    p.next(); // the verb
    Some(p.statement(&verb))
}

/// A token cursor over one statement.
struct Parser<'a> {
    toks: Vec<Token<'a>>,
    pos: usize,
    /// The command so far, for error messages (`CREATE SHARD`).
    cmd: String,
}

impl<'a> Parser<'a> {
    fn new(stmt: &'a str) -> Parser<'a> {
        Parser { toks: Lexer::new(stmt).collect(), pos: 0, cmd: String::new() }
    }

    fn peek(&self) -> Option<Token<'a>> {
        self.toks.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.pos += 1;
        t
    }

    /// A syntax error: `what` was expected where the next token is.
    fn expected(&self, what: &str) -> AdminError {
        let found = match self.peek() {
            None => "end of statement".to_owned(),
            Some(t) => format!("\"{}\"", token_text(t)),
        };
        AdminError::Syntax(format!("{}: expected {what}, found {found}", self.cmd))
    }

    /// Consume the keyword `kw` if it is next.
    fn keyword(&mut self, kw: &str) -> bool {
        if self.peek().is_some_and(|t| t.is_keyword(kw)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, kw: &str) -> Result<(), AdminError> {
        if self.keyword(kw) { Ok(()) } else { Err(self.expected(kw)) }
    }

    /// The next keyword among `kws`, consumed.
    fn one_of(&mut self, kws: &[&'static str]) -> Result<&'static str, AdminError> {
        match kws.iter().find(|kw| self.peek().is_some_and(|t| t.is_keyword(kw))) {
            Some(kw) => {
                self.pos += 1;
                Ok(kw)
            }
            None => Err(self.expected(&kws.join(" or "))),
        }
    }

    fn punct(&mut self, c: char) -> bool {
        if self.peek() == Some(Token::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), AdminError> {
        if self.punct(c) { Ok(()) } else { Err(self.expected(&format!("\"{c}\""))) }
    }

    /// An identifier: folded to lower case, or "quoted" as written.
    fn ident(&mut self, what: &str) -> Result<String, AdminError> {
        match self.peek() {
            Some(Token::Word(w)) => {
                self.pos += 1;
                Ok(w.to_ascii_lowercase())
            }
            Some(Token::QuotedIdent(q)) => {
                self.pos += 1;
                Ok(q.replace("\"\"", "\""))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// A string literal's text.
    fn string(&mut self, what: &str) -> Result<String, AdminError> {
        match self.peek().and_then(|t| match t {
            Token::String(s) | Token::DollarString(s) => string_literal(s),
            _ => None,
        }) {
            Some(s) => {
                self.pos += 1;
                Ok(s)
            }
            None => Err(self.expected(what)),
        }
    }

    /// A name given as an identifier or as a string (regions: `'eu-west'`).
    fn name(&mut self, what: &str) -> Result<String, AdminError> {
        match self.peek() {
            Some(Token::String(_) | Token::DollarString(_)) => self.string(what),
            _ => self.ident(what),
        }
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, AdminError> {
        match self.peek() {
            Some(Token::Number(n)) => match n.parse() {
                Ok(v) => {
                    self.pos += 1;
                    Ok(v)
                }
                Err(_) => Err(AdminError::InvalidValue(format!("{}: {n} is not a valid {what}", self.cmd))),
            },
            _ => Err(self.expected(what)),
        }
    }

    /// Nothing may follow.
    fn end(&self) -> Result<(), AdminError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.expected("end of statement")),
        }
    }

    fn statement(&mut self, verb: &str) -> Result<Action, AdminError> {
        self.cmd = verb.to_owned();
        let action = match verb {
            "RELOAD" => Action::Reload,
            "PAUSE" | "RESUME" => {
                let shard = if self.keyword("SHARD") {
                    self.cmd.push_str(" SHARD");
                    Some(self.ident("a shard name")?)
                } else {
                    None
                };
                let (tag, change) = match verb {
                    "PAUSE" => ("PAUSE", Change::Pause { shard }),
                    _ => ("RESUME", Change::Resume { shard }),
                };
                Action::Propose { tag, change }
            }
            "CREATE" if self.peek().is_some_and(|t| t.is_keyword("USER")) => {
                self.object(&["USER"])?;
                self.create_user()?
            }
            "DROP" if self.peek().is_some_and(|t| t.is_keyword("USER")) => {
                self.object(&["USER"])?;
                Action::Propose { tag: "DROP USER", change: Change::DropUser { name: self.ident("a user name")? } }
            }
            "CREATE" => {
                self.object(&["SHARD"])?;
                let name = self.ident("a shard name")?;
                let change = if self.keyword("WITH") { self.policy()? } else { PolicyChange::default() };
                Action::Propose {
                    tag: "CREATE SHARD",
                    change: Change::CreateShard { name, policy: change.applied_to(ShardPolicy::default()) },
                }
            }
            "DROP" => {
                self.object(&["SHARD"])?;
                Action::Propose { tag: "DROP SHARD", change: Change::DropShard { name: self.ident("a shard name")? } }
            }
            "ALTER" => {
                self.object(&["SHARD"])?;
                let name = self.ident("a shard name")?;
                self.expect_keyword("SET")?;
                let change = self.policy()?;
                Action::Propose { tag: "ALTER SHARD", change: Change::AlterShard { name, change } }
            }
            "SET" => {
                self.expect_keyword("DEFAULT")?;
                self.cmd.push_str(" DEFAULT");
                self.object(&["SHARD"])?;
                Action::Propose {
                    tag: "SET DEFAULT SHARD",
                    change: Change::SetDefaultShard { name: self.ident("a shard name")? },
                }
            }
            "ADD" => match self.object(&["NODE", "MEMBER", "REGION"])? {
                "NODE" => self.add_node()?,
                "MEMBER" => self.add_member()?,
                _ => Action::Propose {
                    tag: "ADD REGION",
                    change: Change::AddRegion { name: self.name("a region name")? },
                },
            },
            "REMOVE" => match self.object(&["NODE", "MEMBER", "REGION"])? {
                "NODE" => Action::Propose {
                    tag: "REMOVE NODE",
                    change: Change::RemoveNode { name: self.ident("a node name")? },
                },
                "MEMBER" => Action::RemoveMember(self.number("member id")?),
                _ => Action::Propose {
                    tag: "REMOVE REGION",
                    change: Change::RemoveRegion { name: self.name("a region name")? },
                },
            },
            "BAN" => {
                self.object(&["NODE"])?;
                Action::Propose { tag: "BAN NODE", change: Change::BanNode { name: self.ident("a node name")? } }
            }
            "UNBAN" => {
                self.object(&["NODE"])?;
                Action::Propose { tag: "UNBAN NODE", change: Change::UnbanNode { name: self.ident("a node name")? } }
            }
            "SHARD" => {
                self.object(&["TABLE"])?;
                self.shard_table()?
            }
            "UNSHARD" => {
                self.object(&["TABLE"])?;
                let (schema, table) = self.table_name()?;
                Action::Propose { tag: "UNSHARD TABLE", change: Change::UnshardTable { schema, table } }
            }
            "SWITCHOVER" | "FAILOVER" | "REJOIN" | "DRILL" => Action::Control(self.operation(verb)?),
            _ => return Err(AdminError::Unknown(verb.to_owned())),
        };
        self.end()?;
        Ok(action)
    }

    /// `SWITCHOVER SHARD s [TO n]`, `FAILOVER SHARD s [TO n] [FORCE]` (`TO`
    /// and `FORCE` in either order), `REJOIN NODE n`, `DRILL SWITCHOVER
    /// SHARD s`, `DRILL FAILOVER SHARD s`, `DRILL REGION r OUTAGE`.
    fn operation(&mut self, verb: &str) -> Result<Operation, AdminError> {
        Ok(match verb {
            "SWITCHOVER" => {
                self.object(&["SHARD"])?;
                let shard = self.ident("a shard name")?;
                let to = if self.keyword("TO") { Some(self.ident("the node to promote")?) } else { None };
                Operation::Switchover { shard, to }
            }
            "FAILOVER" => {
                self.object(&["SHARD"])?;
                let shard = self.ident("a shard name")?;
                let (mut to, mut force) = (None, false);
                loop {
                    if to.is_none() && self.keyword("TO") {
                        to = Some(self.ident("the node to promote")?);
                    } else if !force && self.keyword("FORCE") {
                        force = true;
                    } else {
                        break;
                    }
                }
                Operation::Failover { shard, to, force }
            }
            "REJOIN" => {
                self.object(&["NODE"])?;
                Operation::Rejoin { node: self.ident("a node name")? }
            }
            _ => match self.object(&["SWITCHOVER", "FAILOVER", "REGION"])? {
                "SWITCHOVER" => {
                    self.object(&["SHARD"])?;
                    Operation::Drill(Drill::Switchover { shard: self.ident("a shard name")? })
                }
                "FAILOVER" => {
                    self.object(&["SHARD"])?;
                    Operation::Drill(Drill::Failover { shard: self.ident("a shard name")? })
                }
                _ => {
                    let region = self.name("a region name")?;
                    self.expect_keyword("OUTAGE")?;
                    Operation::Drill(Drill::RegionOutage { region })
                }
            },
        })
    }

    /// `CREATE USER name { PASSWORD 'pw' [MD5] | TRUST } [ADMIN]
    /// [POOL_MODE session|transaction]`: create or replace. The password
    /// becomes a SCRAM-SHA-256 verifier (or an md5 hash) here, on this node;
    /// only that travels through Raft and into the audit log's change
    /// (which never shows it).
    fn create_user(&mut self) -> Result<Action, AdminError> {
        use consensus::state::{UserAuth, UserRecord};
        let name = self.ident("a user name")?;
        let (auth, secret) = if self.keyword("TRUST") {
            (UserAuth::Trust, None)
        } else {
            self.expect_keyword("PASSWORD")?;
            let password = self.string("a password ('...')")?;
            if password.is_empty() {
                return Err(AdminError::InvalidValue("CREATE USER: the password is empty".into()));
            }
            if self.keyword("MD5") {
                (UserAuth::Md5, Some(crate::auth::make_secret(crate::auth::SecretKind::Md5, &name, &password)))
            } else {
                let secret = crate::auth::make_secret(crate::auth::SecretKind::ScramSha256, &name, &password);
                (UserAuth::ScramSha256, Some(secret))
            }
        };
        let admin = self.keyword("ADMIN");
        let pool_mode = if self.keyword("POOL_MODE") {
            Some(self.one_of(&["SESSION", "TRANSACTION"])?.to_ascii_lowercase())
        } else {
            None
        };
        Ok(Action::Propose {
            tag: "CREATE USER",
            change: Change::PutUser { user: UserRecord { name, auth, secret, admin, pool_mode } },
        })
    }

    /// The object word after the verb (`SHARD` in `CREATE SHARD`), added to
    /// the command's name for messages.
    fn object(&mut self, kws: &[&'static str]) -> Result<&'static str, AdminError> {
        let kw = self.one_of(kws)?;
        self.cmd.push(' ');
        self.cmd.push_str(kw);
        Ok(kw)
    }

    /// `( key = value [, ...] )` of a shard's policy.
    fn policy(&mut self) -> Result<PolicyChange, AdminError> {
        self.expect_punct('(')?;
        let mut change = PolicyChange::default();
        loop {
            let key = self.ident("a shard option (durability, max_lag_on_failover, rto_target, rpo_target)")?;
            self.expect_punct('=')?;
            let value = self.option_value(&key)?;
            let invalid = |e: String| AdminError::InvalidValue(format!("{key}: {e}"));
            let given = match key.as_str() {
                "durability" => change
                    .durability
                    .replace(match value.to_ascii_lowercase().as_str() {
                        "sync" => Durability::Sync,
                        "async" => Durability::Async,
                        _ => return Err(invalid(format!("\"{value}\" is neither 'sync' nor 'async'"))),
                    })
                    .is_some(),
                "max_lag_on_failover" => {
                    let bytes = crate::config::parse_size("max_lag_on_failover", &value)
                        .map_err(|_| invalid(format!("\"{value}\" is not a size such as '16MB'")))?;
                    change.max_lag_on_failover.replace(bytes as u64).is_some()
                }
                "rto_target" | "rpo_target" => {
                    let d = duration(&value)
                        .ok_or_else(|| invalid(format!("\"{value}\" is not a duration such as '10s'")))?;
                    let slot = if key == "rto_target" { &mut change.rto_target } else { &mut change.rpo_target };
                    slot.replace(d).is_some()
                }
                _ => {
                    return Err(AdminError::InvalidValue(format!(
                        "unknown shard option \"{key}\" (expected durability, max_lag_on_failover, rto_target or rpo_target)"
                    )));
                }
            };
            if given {
                return Err(AdminError::InvalidValue(format!("shard option \"{key}\" is given twice")));
            }
            if !self.punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        Ok(change)
    }

    /// An option's value: a string, a number (`16MB`, `10s`) or a word.
    fn option_value(&mut self, key: &str) -> Result<String, AdminError> {
        match self.peek() {
            Some(Token::String(_) | Token::DollarString(_)) => self.string("a value"),
            Some(Token::Number(n) | Token::Word(n)) => {
                self.pos += 1;
                Ok(n.to_owned())
            }
            _ => Err(self.expected(&format!("a value for {key}"))),
        }
    }

    /// `ADD NODE name 'host:port' TO SHARD s REGION 'r' [AS PRIMARY | AS REPLICA] [PRIORITY n]`
    fn add_node(&mut self) -> Result<Action, AdminError> {
        let name = self.ident("a node name")?;
        let address = self.string("the node's address as a string, such as '10.0.0.5:5432'")?;
        self.expect_keyword("TO")?;
        self.expect_keyword("SHARD")?;
        let shard = self.ident("a shard name")?;
        self.expect_keyword("REGION")?;
        let region = self.name("a region name")?;
        let (mut role, mut priority) = (None, None);
        loop {
            if role.is_none() && self.keyword("AS") {
                role = Some(match self.one_of(&["PRIMARY", "REPLICA"])? {
                    "PRIMARY" => Role::Primary,
                    _ => Role::Replica,
                });
            } else if priority.is_none() && self.keyword("PRIORITY") {
                priority = Some(self.number("priority (0 to 4294967295)")?);
            } else {
                break;
            }
        }
        Ok(Action::Propose {
            tag: "ADD NODE",
            change: Change::AddNode {
                name,
                address,
                shard,
                region,
                role: role.unwrap_or(Role::Replica),
                priority: priority.unwrap_or(DEFAULT_PRIORITY),
            },
        })
    }

    /// `ADD MEMBER id 'http://host:port' REGION 'r' [NAME 'n'] [CLIENT 'host:port']`
    fn add_member(&mut self) -> Result<Action, AdminError> {
        let id: MemberId = self.number("member id")?;
        let raft_addr = self.string("the member's Raft address as a string, such as 'http://10.0.0.7:7000'")?;
        if !raft_addr.starts_with("http://") && !raft_addr.starts_with("https://") {
            return Err(AdminError::InvalidValue(format!(
                "ADD MEMBER: raft address \"{raft_addr}\" must look like 'http://host:port'"
            )));
        }
        self.expect_keyword("REGION")?;
        let region = self.name("a region name")?;
        let (mut name, mut client) = (None, None);
        loop {
            if name.is_none() && self.keyword("NAME") {
                name = Some(self.name("the member's name")?);
            } else if client.is_none() && self.keyword("CLIENT") {
                client = Some(self.string("the member's client address as a string, such as '10.0.0.7:6432'")?);
            } else {
                break;
            }
        }
        Ok(Action::AddMember(Member {
            id,
            name: name.unwrap_or_else(|| format!("member{id}")),
            region,
            raft_addr,
            client_addr: client.unwrap_or_default(),
        }))
    }

    /// `[schema.]table`
    fn table_name(&mut self) -> Result<(Option<String>, String), AdminError> {
        let first = self.ident("a table name")?;
        if self.punct('.') {
            Ok((Some(first), self.ident("a table name after the schema")?))
        } else {
            Ok((None, first))
        }
    }

    /// `SHARD TABLE [schema.]table BY column [TYPE t] [USING HASH [(...)] | RANGE (...) | LIST (...)]`
    fn shard_table(&mut self) -> Result<Action, AdminError> {
        let (schema, table) = self.table_name()?;
        self.expect_keyword("BY")?;
        let column = self.ident("the shard key column")?;
        let key_type = if self.keyword("TYPE") {
            let word = self.ident("a key type (int, text or uuid)")?;
            match word.as_str() {
                "int" | "integer" | "bigint" | "smallint" | "int2" | "int4" | "int8" => KeyType::Int,
                "text" | "varchar" => KeyType::Text,
                "uuid" => KeyType::Uuid,
                _ => return Err(AdminError::InvalidValue(format!("unknown key type \"{word}\" (int, text or uuid)"))),
            }
        } else {
            KeyType::Int
        };
        let map = if self.keyword("USING") {
            match self.one_of(&["HASH", "RANGE", "LIST"])? {
                "HASH" => {
                    if self.punct('(') {
                        let mut shards = vec![self.ident("a shard name")?];
                        while self.punct(',') {
                            shards.push(self.ident("a shard name")?);
                        }
                        self.expect_punct(')')?;
                        ShardMap::Hash(shards)
                    } else {
                        ShardMap::Hash(Vec::new())
                    }
                }
                "RANGE" => self.range(key_type)?,
                _ => self.list(key_type)?,
            }
        } else {
            ShardMap::Hash(Vec::new())
        };
        Ok(Action::Propose { tag: "SHARD TABLE", change: Change::ShardTable { schema, table, column, key_type, map } })
    }

    /// `(s1 TO 1000, s2 FROM 1000 TO 2000, s3 FROM 2000)`
    fn range(&mut self, key_type: KeyType) -> Result<ShardMap, AdminError> {
        self.expect_punct('(')?;
        let mut parts = Vec::new();
        loop {
            let shard = self.ident("a shard name")?;
            let from = if self.keyword("FROM") { Some(self.key_value(key_type)?) } else { None };
            let to = if self.keyword("TO") { Some(self.key_value(key_type)?) } else { None };
            parts.push(RangePart { from, to, shard });
            if !self.punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        Ok(ShardMap::Range(parts))
    }

    /// `(s1 VALUES ('eu', 'uk'), s2 VALUES ('us'), DEFAULT s3)`
    fn list(&mut self, key_type: KeyType) -> Result<ShardMap, AdminError> {
        self.expect_punct('(')?;
        let (mut values, mut default) = (Vec::new(), None);
        loop {
            if default.is_none() && self.keyword("DEFAULT") {
                default = Some(self.ident("the default shard's name")?);
            } else {
                let shard = self.ident("a shard name or DEFAULT")?;
                self.expect_keyword("VALUES")?;
                self.expect_punct('(')?;
                loop {
                    values.push((self.key_value(key_type)?, shard.clone()));
                    if !self.punct(',') {
                        break;
                    }
                }
                self.expect_punct(')')?;
            }
            if !self.punct(',') {
                break;
            }
        }
        self.expect_punct(')')?;
        Ok(ShardMap::List { values, default })
    }

    /// A key value of `key_type`: an integer literal for `int`, a string for
    /// `text` and `uuid`.
    fn key_value(&mut self, key_type: KeyType) -> Result<KeyValue, AdminError> {
        match key_type {
            KeyType::Int => {
                let negative = self.punct('-');
                let n: i64 = self.number("an integer key value")?;
                Ok(KeyValue::Int(if negative { -n } else { n }))
            }
            KeyType::Text => Ok(KeyValue::Text(self.string("a text key value as a string")?)),
            KeyType::Uuid => {
                let s = self.string("a uuid key value as a string")?;
                uuid(&s)
                    .map(KeyValue::Uuid)
                    .ok_or_else(|| AdminError::InvalidValue(format!("\"{s}\" is not a valid uuid")))
            }
        }
    }
}

/// How a token was written, for error messages.
fn token_text(t: Token<'_>) -> String {
    match t {
        Token::Word(s) | Token::String(s) | Token::DollarString(s) | Token::Number(s) => s.to_owned(),
        Token::QuotedIdent(s) => format!("\"{s}\""),
        Token::Semicolon => ";".to_owned(),
        Token::Punct(c) => c.to_string(),
    }
}

/// `10s`, `250ms`, `2m`, `0`.
fn duration(v: &str) -> Option<Duration> {
    crate::config::parse_duration("duration", v).ok()
}

/// A uuid in PostgreSQL's input forms: hex digits with optional hyphens,
/// optionally in braces.
fn uuid(s: &str) -> Option<u128> {
    let s = s.trim();
    let s = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or(s);
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::command::{Command, parse as parse_command};

    fn action(sql: &str) -> Action {
        match parse_command(sql) {
            Ok(Command::Change(a)) => a,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn change(sql: &str) -> Change {
        match action(sql) {
            Action::Propose { change, .. } => change,
            other => panic!("{sql}: {other:?}"),
        }
    }

    fn syntax(sql: &str) -> String {
        match parse_command(sql) {
            Err(AdminError::Syntax(m)) => m,
            other => panic!("{sql}: expected a syntax error, got {other:?}"),
        }
    }

    fn invalid(sql: &str) -> String {
        match parse_command(sql) {
            Err(AdminError::InvalidValue(m)) => m,
            other => panic!("{sql}: expected an invalid value, got {other:?}"),
        }
    }

    #[test]
    fn shards() {
        assert_eq!(
            action("create shard S1"),
            Action::Propose {
                tag: "CREATE SHARD",
                change: Change::CreateShard { name: "s1".into(), policy: ShardPolicy::default() }
            }
        );
        let Change::CreateShard { name, policy } = change(
            "CREATE SHARD \"Big\"\"One\" WITH (durability = 'sync', max_lag_on_failover = '1MB', rto_target = '5s', rpo_target = '0s')",
        ) else {
            panic!()
        };
        assert_eq!(name, "Big\"One");
        assert_eq!(
            policy,
            ShardPolicy {
                durability: Durability::Sync,
                max_lag_on_failover: 1 << 20,
                rto_target: Duration::from_secs(5),
                rpo_target: Duration::ZERO,
            }
        );
        // Unquoted values work too.
        let Change::CreateShard { policy, .. } = change("CREATE SHARD s WITH (Durability = SYNC, rto_target = 250ms)")
        else {
            panic!()
        };
        assert_eq!((policy.durability, policy.rto_target), (Durability::Sync, Duration::from_millis(250)));
        assert_eq!(change("DROP SHARD s1"), Change::DropShard { name: "s1".into() });
        assert_eq!(
            change("ALTER SHARD s1 SET (durability = 'async', max_lag_on_failover = 1024)"),
            Change::AlterShard {
                name: "s1".into(),
                change: PolicyChange {
                    durability: Some(Durability::Async),
                    max_lag_on_failover: Some(1024),
                    ..PolicyChange::default()
                }
            }
        );
        assert_eq!(
            action("set default shard S2"),
            Action::Propose { tag: "SET DEFAULT SHARD", change: Change::SetDefaultShard { name: "s2".into() } }
        );
    }

    #[test]
    fn nodes_and_regions() {
        assert_eq!(
            change("ADD NODE PG1 '10.0.0.1:5432' TO SHARD S1 REGION 'EU-West'"),
            Change::AddNode {
                name: "pg1".into(),
                address: "10.0.0.1:5432".into(),
                shard: "s1".into(),
                region: "EU-West".into(),
                role: Role::Replica,
                priority: DEFAULT_PRIORITY,
            }
        );
        let Change::AddNode { role, priority, region, .. } =
            change("add node pg2 '10.0.0.2:5432' to shard s1 region eu priority 7 as primary")
        else {
            panic!()
        };
        assert_eq!((role, priority, region.as_str()), (Role::Primary, 7, "eu"));
        let Change::AddNode { role, .. } = change("ADD NODE pg3 'h:1' TO SHARD s1 REGION 'eu' AS REPLICA PRIORITY 0")
        else {
            panic!()
        };
        assert_eq!(role, Role::Replica);
        assert_eq!(change("REMOVE NODE pg1"), Change::RemoveNode { name: "pg1".into() });
        assert_eq!(change("BAN NODE \"PG1\""), Change::BanNode { name: "PG1".into() });
        assert_eq!(change("UNBAN NODE pg1"), Change::UnbanNode { name: "pg1".into() });
        assert_eq!(change("ADD REGION 'ap'"), Change::AddRegion { name: "ap".into() });
        assert_eq!(change("REMOVE REGION ap"), Change::RemoveRegion { name: "ap".into() });
    }

    #[test]
    fn tables() {
        assert_eq!(
            action("SHARD TABLE Owners BY Owner_ID"),
            Action::Propose {
                tag: "SHARD TABLE",
                change: Change::ShardTable {
                    schema: None,
                    table: "owners".into(),
                    column: "owner_id".into(),
                    key_type: KeyType::Int,
                    map: ShardMap::Hash(Vec::new()),
                }
            }
        );
        let Change::ShardTable { schema, table, key_type, map, .. } =
            change("SHARD TABLE app.\"Users\" BY id TYPE uuid USING HASH (s2, S1)")
        else {
            panic!()
        };
        assert_eq!((schema.as_deref(), table.as_str(), key_type), (Some("app"), "Users", KeyType::Uuid));
        assert_eq!(map, ShardMap::Hash(vec!["s2".into(), "s1".into()]));
        let Change::ShardTable { map, .. } =
            change("SHARD TABLE t BY k USING RANGE (s1 TO -5, s2 FROM -5 TO 1000, s3 FROM 1000)")
        else {
            panic!()
        };
        assert_eq!(
            map,
            ShardMap::Range(vec![
                RangePart { from: None, to: Some(KeyValue::Int(-5)), shard: "s1".into() },
                RangePart { from: Some(KeyValue::Int(-5)), to: Some(KeyValue::Int(1000)), shard: "s2".into() },
                RangePart { from: Some(KeyValue::Int(1000)), to: None, shard: "s3".into() },
            ])
        );
        let Change::ShardTable { map, key_type, .. } = change(
            "SHARD TABLE t BY country TYPE text USING LIST (s1 VALUES ('eu', 'uk'), s2 VALUES ('us'), DEFAULT s3)",
        ) else {
            panic!()
        };
        assert_eq!(key_type, KeyType::Text);
        assert_eq!(
            map,
            ShardMap::List {
                values: vec![
                    (KeyValue::Text("eu".into()), "s1".into()),
                    (KeyValue::Text("uk".into()), "s1".into()),
                    (KeyValue::Text("us".into()), "s2".into()),
                ],
                default: Some("s3".into()),
            }
        );
        let Change::ShardTable { map, .. } =
            change("SHARD TABLE t BY u TYPE uuid USING LIST (s1 VALUES ('{00000000-0000-0000-0000-00000000000A}'))")
        else {
            panic!()
        };
        assert_eq!(map, ShardMap::List { values: vec![(KeyValue::Uuid(10), "s1".into())], default: None });
        assert_eq!(
            change("UNSHARD TABLE App.T"),
            Change::UnshardTable { schema: Some("app".into()), table: "t".into() }
        );
    }

    #[test]
    fn members_pause_reload() {
        assert_eq!(
            action("ADD MEMBER 4 'http://10.0.0.4:7000' REGION 'us' NAME 'm4' CLIENT '10.0.0.4:6432'"),
            Action::AddMember(Member {
                id: 4,
                name: "m4".into(),
                region: "us".into(),
                raft_addr: "http://10.0.0.4:7000".into(),
                client_addr: "10.0.0.4:6432".into(),
            })
        );
        let Action::AddMember(m) = action("add member 5 'http://h:1' region eu") else { panic!() };
        assert_eq!((m.name.as_str(), m.client_addr.as_str()), ("member5", ""));
        assert_eq!(action("REMOVE MEMBER 4"), Action::RemoveMember(4));
        assert_eq!(change("PAUSE"), Change::Pause { shard: None });
        assert_eq!(change("pause shard S1"), Change::Pause { shard: Some("s1".into()) });
        assert_eq!(change("RESUME"), Change::Resume { shard: None });
        assert_eq!(change("RESUME SHARD s1"), Change::Resume { shard: Some("s1".into()) });
        assert_eq!(action("reload"), Action::Reload);
        assert_eq!(action("RELOAD").tag(), "RELOAD");
    }

    #[test]
    fn operations() {
        let op = |sql: &str| match action(sql) {
            Action::Control(op) => op,
            other => panic!("{sql}: {other:?}"),
        };
        assert_eq!(op("switchover shard S1"), Operation::Switchover { shard: "s1".into(), to: None });
        assert_eq!(
            op("SWITCHOVER SHARD s1 TO \"PG-2\""),
            Operation::Switchover { shard: "s1".into(), to: Some("PG-2".into()) }
        );
        assert_eq!(op("FAILOVER SHARD s1"), Operation::Failover { shard: "s1".into(), to: None, force: false });
        assert_eq!(
            op("failover shard s1 to PG2 force"),
            Operation::Failover { shard: "s1".into(), to: Some("pg2".into()), force: true }
        );
        assert_eq!(
            op("FAILOVER SHARD s1 FORCE TO pg2"),
            Operation::Failover { shard: "s1".into(), to: Some("pg2".into()), force: true }
        );
        assert_eq!(op("FAILOVER SHARD s1 FORCE"), Operation::Failover { shard: "s1".into(), to: None, force: true });
        assert_eq!(op("REJOIN NODE Pg1"), Operation::Rejoin { node: "pg1".into() });
        assert_eq!(op("DRILL SWITCHOVER SHARD S1"), Operation::Drill(Drill::Switchover { shard: "s1".into() }));
        assert_eq!(op("drill failover shard s1"), Operation::Drill(Drill::Failover { shard: "s1".into() }));
        assert_eq!(
            op("DRILL REGION 'EU-West' OUTAGE"),
            Operation::Drill(Drill::RegionOutage { region: "EU-West".into() })
        );
        assert_eq!(op("drill region EU outage"), Operation::Drill(Drill::RegionOutage { region: "eu".into() }));
        // The CommandComplete tags.
        for (sql, tag) in [
            ("SWITCHOVER SHARD s", "SWITCHOVER"),
            ("FAILOVER SHARD s FORCE", "FAILOVER"),
            ("REJOIN NODE n", "REJOIN NODE"),
            ("DRILL FAILOVER SHARD s", "DRILL"),
            ("DRILL REGION r OUTAGE", "DRILL"),
        ] {
            assert_eq!(action(sql).tag(), tag, "{sql}");
        }
        assert_eq!(syntax("SWITCHOVER s1"), "SWITCHOVER: expected SHARD, found \"s1\"");
        assert_eq!(syntax("SWITCHOVER SHARD"), "SWITCHOVER SHARD: expected a shard name, found end of statement");
        assert!(syntax("SWITCHOVER SHARD s1 FORCE").contains("expected end of statement, found \"FORCE\""));
        assert!(syntax("SWITCHOVER SHARD s1 TO").contains("the node to promote"));
        assert!(syntax("FAILOVER SHARD s1 FORCE FORCE").contains("end of statement"));
        assert!(syntax("FAILOVER SHARD s1 TO a TO b").contains("end of statement"));
        assert!(syntax("REJOIN pg1").contains("expected NODE"));
        assert!(syntax("REJOIN NODE").contains("a node name"));
        assert!(syntax("DRILL SHARD s1").contains("SWITCHOVER or FAILOVER or REGION"));
        assert!(syntax("DRILL REGION 'eu'").contains("DRILL REGION: expected OUTAGE"));
        assert!(syntax("DRILL FAILOVER SHARD s1 FORCE").contains("end of statement"));
    }

    #[test]
    fn errors() {
        assert_eq!(syntax("CREATE SHARD"), "CREATE SHARD: expected a shard name, found end of statement");
        assert_eq!(syntax("CREATE TABLE x"), "CREATE: expected SHARD, found \"TABLE\"");
        assert_eq!(syntax("DROP SHARD s1 s2"), "DROP SHARD: expected end of statement, found \"s2\"");
        assert!(syntax("CREATE SHARD s WITH durability = 'sync'").contains("expected \"(\""));
        assert!(syntax("CREATE SHARD s WITH (durability 'sync')").contains("expected \"=\""));
        assert!(syntax("ALTER SHARD s (durability = 'sync')").contains("expected SET"));
        assert!(syntax("ADD NODE pg1 10.0.0.1 TO SHARD s1 REGION 'eu'").contains("address as a string"));
        assert!(syntax("ADD NODE pg1 'h:1' SHARD s1 REGION 'eu'").contains("expected TO"));
        assert!(syntax("ADD NODE pg1 'h:1' TO SHARD s1").contains("expected REGION"));
        assert!(syntax("ADD NODE pg1 'h:1' TO SHARD s1 REGION eu AS LEADER").contains("PRIMARY or REPLICA"));
        assert!(syntax("ADD THING x").contains("NODE or MEMBER or REGION"));
        assert!(syntax("SHARD TABLE t").contains("expected BY"));
        assert!(syntax("SHARD TABLE t BY k USING MODULO").contains("HASH or RANGE or LIST"));
        assert!(syntax("SHARD TABLE t BY k USING HASH ()").contains("a shard name"));
        assert!(syntax("SHARD TABLE t BY k USING RANGE (s1 TO 'x')").contains("an integer key value"));
        assert!(syntax("SHARD TABLE t BY k TYPE text USING LIST (s1 VALUES (1))").contains("a text key value"));
        assert!(syntax("PAUSE now").contains("end of statement"));
        assert!(syntax("REMOVE MEMBER x").contains("member id"));
        assert!(syntax("ADD MEMBER 2 'http://h:1'").contains("expected REGION"));
        assert!(syntax("SET search_path = x").contains("expected DEFAULT"));
        assert!(invalid("CREATE SHARD s WITH (durability = 'quorum')").contains("neither 'sync' nor 'async'"));
        assert!(invalid("CREATE SHARD s WITH (colour = 'blue')").contains("unknown shard option \"colour\""));
        assert!(invalid("CREATE SHARD s WITH (rto_target = '5 parsecs')").contains("not a duration"));
        assert!(invalid("CREATE SHARD s WITH (max_lag_on_failover = 'lots')").contains("not a size"));
        assert!(invalid("ALTER SHARD s SET (rto_target = 1s, rto_target = 2s)").contains("given twice"));
        assert!(invalid("SHARD TABLE t BY k TYPE float").contains("unknown key type"));
        assert!(invalid("SHARD TABLE t BY k TYPE uuid USING LIST (s1 VALUES ('nope'))").contains("not a valid uuid"));
        assert!(invalid("ADD NODE n 'h:1' TO SHARD s REGION r PRIORITY 99999999999").contains("priority"));
        assert!(invalid("ADD MEMBER 2 '10.0.0.1:7000' REGION eu").contains("http://host:port"));
    }
}
