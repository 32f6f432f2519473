//! Admin console statements: text in, [`Command`] out. Keywords are
//! case-insensitive; the caller has already split the query string into
//! statements (without their `;`). The statements that change the topology
//! are parsed in `super::change`.

use router::lex::{Lexer, Token};

use super::AdminError;
use super::change::{self, Action};

/// One admin statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Show(Topic),
    /// `SHOW DRILL <id>` (or `SHOW FAILOVER <id>`): one report of any
    /// kind, as a vertical list.
    ShowReport(u64),
    /// `EXPLAIN ROUTE <sql>`: the SQL whose route to show (it may hold
    /// several statements when it was given quoted).
    ExplainRoute(String),
    /// A change of the replicated topology, of the Raft membership, or
    /// `RELOAD`.
    Change(Action),
}

/// What `SHOW` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Topic {
    Shards,
    Nodes,
    Pools,
    Clients,
    Servers,
    Stats,
    Latency,
    Version,
    Config,
    Help,
    Cluster,
    Regions,
    Tables,
    Events,
    Audit,
    Users,
    Failovers,
    Drills,
}

impl Topic {
    const ALL: [(&'static str, Topic); 18] = [
        ("SHARDS", Topic::Shards),
        ("NODES", Topic::Nodes),
        ("POOLS", Topic::Pools),
        ("CLIENTS", Topic::Clients),
        ("SERVERS", Topic::Servers),
        ("STATS", Topic::Stats),
        ("LATENCY", Topic::Latency),
        ("VERSION", Topic::Version),
        ("CONFIG", Topic::Config),
        ("HELP", Topic::Help),
        ("CLUSTER", Topic::Cluster),
        ("REGIONS", Topic::Regions),
        ("TABLES", Topic::Tables),
        ("EVENTS", Topic::Events),
        ("AUDIT", Topic::Audit),
        ("USERS", Topic::Users),
        ("FAILOVERS", Topic::Failovers),
        ("DRILLS", Topic::Drills),
    ];

    fn parse(word: &str) -> Option<Topic> {
        Topic::ALL.iter().find(|(w, _)| w.eq_ignore_ascii_case(word)).map(|(_, t)| *t)
    }
}

/// Every command with a one-line description, for `SHOW HELP`.
pub(crate) const HELP: &[(&str, &str)] = &[
    ("SHOW CLUSTER", "Meridian nodes in the Raft group: voter, leader, this node's term, indexes and write lease"),
    ("SHOW REGIONS", "regions with their PostgreSQL nodes and primaries"),
    ("SHOW SHARDS", "shards: epoch, primary and replicas with their regions; in a cluster, fencing, pause and policy"),
    (
        "SHOW NODES",
        "PostgreSQL servers: role, region, probe state, WAL position, lag, RTT; in a cluster, state, ban, priority",
    ),
    ("SHOW TABLES", "sharded tables: key column, type, method and shard map"),
    (
        "SHOW USERS",
        "client users: how they log in, admin, pool mode, and whether the cluster or the users file has them",
    ),
    ("SHOW POOLS", "server connection pools: occupancy and counters"),
    ("SHOW CLIENTS", "client sessions: user, database, state, attached server"),
    ("SHOW SERVERS", "server connections per PostgreSQL server"),
    ("SHOW STATS", "routing and pool totals per server, and for this node"),
    ("SHOW LATENCY", "round-trip time from this node to each PostgreSQL server"),
    ("SHOW VERSION", "Meridian version, node name and region"),
    ("SHOW CONFIG", "key settings of this node (no secrets)"),
    ("SHOW EVENTS", "failovers, fences, node verdicts and drills recorded by the cluster"),
    ("SHOW AUDIT", "every topology change: version, time, who, from where, what"),
    ("SHOW FAILOVERS", "failover and switchover reports, newest first: outage (RTO), loss (RPO), targets, passed"),
    ("SHOW DRILLS", "drill reports, newest first: as SHOW FAILOVERS, with the region and the drill's writes"),
    ("SHOW DRILL <id> | SHOW FAILOVER <id>", "one report, field by field, then its phases with their times"),
    ("SHOW HELP", "this list (also HELP)"),
    ("EXPLAIN ROUTE <sql>", "where <sql> would go, and why; quote it ('...' or $$...$$) to explain several statements"),
    ("CREATE SHARD <name> [WITH (<option> = '<value>', ...)]", "a new shard without nodes"),
    (
        "ALTER SHARD <name> SET (<option> = '<value>', ...)",
        "change durability, max_lag_on_failover, rto_target, rpo_target",
    ),
    ("DROP SHARD <name>", "remove an empty shard"),
    ("SET DEFAULT SHARD <name>", "where unsharded tables live"),
    (
        "ADD NODE <name> '<host:port>' TO SHARD <shard> REGION '<region>' [AS PRIMARY | AS REPLICA] [PRIORITY n]",
        "a PostgreSQL server joins a shard",
    ),
    ("REMOVE NODE <name> | BAN NODE <name> | UNBAN NODE <name>", "take a node out, or out of routing and promotion"),
    ("ADD REGION '<region>' | REMOVE REGION '<region>'", "declare or forget a region"),
    (
        "SHARD TABLE [<schema>.]<table> BY <column> [TYPE int|text|uuid] [USING HASH|RANGE|LIST ...]",
        "route a table by its key",
    ),
    ("UNSHARD TABLE [<schema>.]<table>", "forget a table's sharding rule"),
    ("ADD MEMBER <id> '<raft url>' REGION '<region>' [NAME '<name>'] [CLIENT '<host:port>']", "a Meridian node joins"),
    ("REMOVE MEMBER <id>", "a Meridian node leaves the Raft group"),
    ("PAUSE [SHARD <shard>] | RESUME [SHARD <shard>]", "hold new transactions, everywhere or on one shard"),
    ("RELOAD", "reload this node's configuration file, as SIGHUP does"),
    ("SWITCHOVER SHARD <shard> [TO <node>]", "planned change of primary: writes are held, nothing is lost"),
    (
        "FAILOVER SHARD <shard> [TO <node>] [FORCE]",
        "replace the primary now; without FORCE, refused where the automatic failover would refuse",
    ),
    ("REJOIN NODE <node>", "a fenced former primary, rewound, follows the current primary ([[managed]] here)"),
    (
        "DRILL SWITCHOVER SHARD <shard> | DRILL FAILOVER SHARD <shard> | DRILL REGION '<region>' OUTAGE",
        "a real switchover or fault under a small write load, measured against the shard's targets",
    ),
];

/// The hint every syntax error carries.
pub(crate) const SEE_HELP: &str = "SHOW HELP lists the admin commands.";

/// Parse one admin statement.
pub(crate) fn parse(stmt: &str) -> Result<Command, AdminError> {
    let mut lexer = Lexer::new(stmt);
    let first = lexer.next_token().map(|(_, t)| t);
    let Some(Token::Word(verb)) = first else {
        return Err(AdminError::Unknown(abbreviate(stmt)));
    };
    if verb.eq_ignore_ascii_case("HELP") {
        return match lexer.next_token() {
            None => Ok(Command::Show(Topic::Help)),
            Some(_) => Err(AdminError::Syntax("HELP takes no arguments".into())),
        };
    }
    if verb.eq_ignore_ascii_case("SHOW") {
        let topic = match lexer.next_token() {
            Some((_, Token::Word(w))) => w,
            _ => return Err(AdminError::Syntax("SHOW needs what to show, such as SHOW SHARDS".into())),
        };
        if ["DRILL", "FAILOVER"].iter().any(|w| w.eq_ignore_ascii_case(topic)) {
            return show_report(&mut lexer, topic);
        }
        let Some(t) = Topic::parse(topic) else {
            return Err(AdminError::Unknown(format!("SHOW {}", topic.to_ascii_uppercase())));
        };
        if lexer.next_token().is_some() {
            return Err(AdminError::Syntax(format!("SHOW {} takes no arguments", topic.to_ascii_uppercase())));
        }
        return Ok(Command::Show(t));
    }
    if verb.eq_ignore_ascii_case("EXPLAIN") {
        match lexer.next_token() {
            Some((_, t)) if t.is_keyword("ROUTE") => {}
            Some((_, Token::Word(w))) => {
                return Err(AdminError::Unknown(format!("EXPLAIN {}", w.to_ascii_uppercase())));
            }
            _ => return Err(AdminError::Syntax("EXPLAIN ROUTE needs a statement: EXPLAIN ROUTE <sql>".into())),
        }
        let rest = stmt[lexer.offset()..].trim();
        if rest.is_empty() {
            return Err(AdminError::Syntax("EXPLAIN ROUTE needs a statement: EXPLAIN ROUTE <sql>".into()));
        }
        return Ok(Command::ExplainRoute(unquote(rest).unwrap_or_else(|| rest.to_owned())));
    }
    match change::parse(stmt, verb) {
        Some(action) => action.map(Command::Change),
        None => Err(AdminError::Unknown(verb.to_ascii_uppercase())),
    }
}

/// `SHOW DRILL <id>` / `SHOW FAILOVER <id>`, after the word `topic`.
fn show_report(lexer: &mut Lexer<'_>, topic: &str) -> Result<Command, AdminError> {
    let cmd = format!("SHOW {}", topic.to_ascii_uppercase());
    let id = match lexer.next_token() {
        Some((_, Token::Number(n))) => {
            n.parse().map_err(|_| AdminError::InvalidValue(format!("{cmd}: {n} is not a valid report id")))?
        }
        _ => return Err(AdminError::Syntax(format!("{cmd} needs a report id: {cmd} <id> (SHOW {topic}S lists them)"))),
    };
    if lexer.next_token().is_some() {
        return Err(AdminError::Syntax(format!("{cmd} takes one report id")));
    }
    Ok(Command::ShowReport(id))
}

/// The text of `sql` when it is exactly one string or dollar-quoted literal.
fn unquote(sql: &str) -> Option<String> {
    let mut lexer = Lexer::new(sql);
    let (_, tok) = lexer.next_token()?;
    if lexer.next_token().is_some() {
        return None;
    }
    match tok {
        Token::String(s) | Token::DollarString(s) => string_literal(s),
        _ => None,
    }
}

/// The text of a string token ('...', E'...') or dollar-quoted one, as the
/// lexer gave it (with its quotes); `None` when unterminated.
pub(crate) fn string_literal(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('$') {
        let tag_len = rest.find('$')? + 2;
        return (s.len() >= 2 * tag_len).then(|| s[tag_len..s.len() - tag_len].to_owned());
    }
    let escaped = s.starts_with(['E', 'e']);
    let inner = s.trim_start_matches(['E', 'e']).strip_prefix('\'')?.strip_suffix('\'')?;
    let mut text = inner.replace("''", "'");
    if escaped {
        text = text.replace("\\'", "'").replace("\\\\", "\\");
    }
    Some(text)
}

/// The start of an unrecognised statement, for its error message.
fn abbreviate(stmt: &str) -> String {
    const MAX: usize = 30;
    match stmt.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &stmt[..at]),
        None => stmt.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        assert_eq!(parse("show shards"), Ok(Command::Show(Topic::Shards)));
        assert_eq!(parse("SHOW Latency"), Ok(Command::Show(Topic::Latency)));
        assert_eq!(parse("help"), Ok(Command::Show(Topic::Help)));
        assert_eq!(parse("SHOW HELP"), Ok(Command::Show(Topic::Help)));
        assert_eq!(parse("  show\n  config "), Ok(Command::Show(Topic::Config)));
        assert_eq!(parse("/* x */ SHOW CLIENTS"), Ok(Command::Show(Topic::Clients)));
        assert_eq!(
            parse("explain route SELECT * FROM owners WHERE owner_id = 1"),
            Ok(Command::ExplainRoute("SELECT * FROM owners WHERE owner_id = 1".into()))
        );
        assert_eq!(
            parse("EXPLAIN ROUTE 'SELECT ''a''; SELECT 2'"),
            Ok(Command::ExplainRoute("SELECT 'a'; SELECT 2".into()))
        );
        assert_eq!(parse("EXPLAIN ROUTE $q$BEGIN; SELECT 1$q$"), Ok(Command::ExplainRoute("BEGIN; SELECT 1".into())));
        assert_eq!(parse("EXPLAIN ROUTE $$x$$"), Ok(Command::ExplainRoute("x".into())));
        assert_eq!(parse("EXPLAIN ROUTE 'a' || 'b'"), Ok(Command::ExplainRoute("'a' || 'b'".into())));
        assert_eq!(parse("show failovers"), Ok(Command::Show(Topic::Failovers)));
        assert_eq!(parse("SHOW DRILLS"), Ok(Command::Show(Topic::Drills)));
        assert_eq!(parse("SHOW DRILL 7"), Ok(Command::ShowReport(7)));
        assert_eq!(parse("show failover 0"), Ok(Command::ShowReport(0)));
    }

    #[test]
    fn report_ids() {
        assert!(matches!(parse("SHOW DRILL"), Err(AdminError::Syntax(m)) if m.contains("needs a report id")));
        assert!(matches!(parse("SHOW DRILL x"), Err(AdminError::Syntax(_))));
        assert!(matches!(parse("SHOW FAILOVER 1 2"), Err(AdminError::Syntax(m)) if m.contains("one report id")));
        assert!(matches!(parse("SHOW DRILL 1.5"), Err(AdminError::InvalidValue(_))));
        assert!(matches!(parse("SHOW DRILL 99999999999999999999"), Err(AdminError::InvalidValue(_))));
        assert!(matches!(parse("SHOW DRILLS 1"), Err(AdminError::Syntax(_))));
    }

    #[test]
    fn errors_name_the_command() {
        assert_eq!(parse("SHOW FOO"), Err(AdminError::Unknown("SHOW FOO".into())));
        assert_eq!(parse("select 1"), Err(AdminError::Unknown("SELECT".into())));
        assert_eq!(parse("EXPLAIN SELECT 1"), Err(AdminError::Unknown("EXPLAIN SELECT".into())));
        assert!(matches!(parse("EXPLAIN ROUTE"), Err(AdminError::Syntax(_))));
        assert!(matches!(parse("SHOW"), Err(AdminError::Syntax(_))));
        assert!(matches!(parse("SHOW SHARDS now"), Err(AdminError::Syntax(_))));
        assert!(matches!(parse("HELP me"), Err(AdminError::Syntax(_))));
        assert_eq!(parse("(1)"), Err(AdminError::Unknown("(1)".into())));
        let long = "x".repeat(100);
        assert_eq!(parse(&format!("'{long}'")), Err(AdminError::Unknown(format!("'{}...", &long[..29]))));
    }
}
