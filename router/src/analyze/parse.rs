//! Parsing one DML statement with sqlparser (PostgreSQL dialect).

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::Token as SqlToken;

use crate::lex::{Lexer, Token};

/// Parse exactly one statement. sqlparser does not know `FOR NO KEY
/// UPDATE` and `FOR KEY SHARE`; for routing they are `FOR UPDATE` and `FOR
/// SHARE`, so a statement using them is parsed again without the `NO KEY` /
/// `KEY` words (the text sent to the server is never changed).
pub(super) fn parse(sql: &str) -> Result<Statement, String> {
    match parse_one(sql) {
        Ok(s) => Ok(s),
        Err(e) => match weaker_locks_as_strong(sql) {
            Some(patched) => parse_one(&patched).map_err(|_| e),
            None => Err(e),
        },
    }
}

fn parse_one(sql: &str) -> Result<Statement, String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect).try_with_sql(sql).map_err(|e| parse_error(&e))?;
    // One statement, optionally followed by semicolons: parsed in place
    // rather than through `parse_statements` (a `Statement` is 3 KiB).
    if parser.peek_token_ref().token == SqlToken::EOF {
        return Err("empty statement".to_owned());
    }
    let stmt = parser.parse_statement().map_err(|e| parse_error(&e))?;
    let mut semicolon = false;
    while parser.consume_token(&SqlToken::SemiColon) {
        semicolon = true;
    }
    match &parser.peek_token_ref().token {
        SqlToken::EOF => Ok(stmt),
        _ if semicolon => Err("several statements".to_owned()),
        other => Err(format!("does not parse: expected end of statement, found: {other}")),
    }
}

fn parse_error(e: &ParserError) -> String {
    let msg = e.to_string();
    let msg = msg.strip_prefix("sql parser error: ").unwrap_or(&msg);
    let mut end = msg.len().min(100);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("does not parse: {}", &msg[..end])
}

/// `sql` with the `NO KEY` of `FOR NO KEY UPDATE` and the `KEY` of `FOR KEY
/// SHARE` blanked out, if it has any.
fn weaker_locks_as_strong(sql: &str) -> Option<String> {
    let toks: Vec<(usize, Token<'_>)> = std::iter::from_fn({
        let mut lx = Lexer::new(sql);
        move || lx.next_token()
    })
    .collect();
    let mut out: Option<Vec<u8>> = None;
    for i in 0..toks.len() {
        let is = |j: usize, k: &str| toks.get(i + j).is_some_and(|(_, t)| t.is_keyword(k));
        let blank = if is(0, "FOR") && is(1, "NO") && is(2, "KEY") && is(3, "UPDATE") {
            2
        } else if is(0, "FOR") && is(1, "KEY") && is(2, "SHARE") {
            1
        } else {
            continue;
        };
        let bytes = out.get_or_insert_with(|| sql.as_bytes().to_vec());
        for (at, t) in &toks[i + 1..i + 1 + blank] {
            if let Token::Word(word) = t {
                bytes[*at..*at + word.len()].fill(b' ');
            }
        }
    }
    // Only ASCII letters were replaced by spaces: still UTF-8.
    out.and_then(|b| String::from_utf8(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weaker_locks_are_blanked() {
        assert_eq!(
            weaker_locks_as_strong("SELECT 1 FROM t FOR NO KEY UPDATE").as_deref(),
            Some("SELECT 1 FROM t FOR        UPDATE")
        );
        assert_eq!(
            weaker_locks_as_strong("select 'for key share' from t for key share of t").as_deref(),
            Some("select 'for key share' from t for     share of t")
        );
        assert_eq!(weaker_locks_as_strong("TABLE t FOR KEY SHARE").as_deref(), Some("TABLE t FOR     SHARE"));
        assert_eq!(weaker_locks_as_strong("SELECT 'FOR NO KEY UPDATE'"), None);
    }

    #[test]
    fn parse_errors_are_short() {
        let e = parse("SELECT FROM WHERE (").unwrap_err();
        assert!(e.starts_with("does not parse: "), "{e}");
        assert!(e.len() < 120, "{e}");
        assert_eq!(parse("SELECT 1; SELECT 2").unwrap_err(), "several statements");
        assert_eq!(
            parse("SELECT 1 FROM t WHERE a = 1 b").unwrap_err(),
            "does not parse: expected end of statement, found: b"
        );
        assert!(parse("SELECT 1;").is_ok());
        assert!(parse("SELECT 1 ; ;").is_ok());
    }
}
