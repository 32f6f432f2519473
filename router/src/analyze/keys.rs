//! Shard-key values as written in a statement: constants and bind
//! parameters, seen through casts, parentheses and unary minus.

use std::fmt::Write as _;

use sqlparser::ast::{Expr, UnaryOperator, Value};

use super::KeySource;
use crate::key::Literal;

/// The key value `e` stands for, if it is a constant or a bind parameter.
pub(crate) fn key_source(e: &Expr) -> Option<KeySource> {
    match e {
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => key_source(inner),
        Expr::Value(v) => value_key(&v.value),
        Expr::TypedString(ts) => string_value(&ts.value.value).map(|s| KeySource::Literal(Literal::String(s))),
        Expr::UnaryOp { op: UnaryOperator::Minus, expr } => match key_source(expr)? {
            KeySource::Literal(Literal::Number(n)) => Some(KeySource::Literal(Literal::Number(negate(&n)))),
            _ => None,
        },
        Expr::UnaryOp { op: UnaryOperator::Plus, expr } => match key_source(expr)? {
            n @ KeySource::Literal(Literal::Number(_)) => Some(n),
            _ => None,
        },
        _ => None,
    }
}

/// The keys `e` stands for on the right of `key = ANY(e)`: an array bind
/// parameter, an `ARRAY[...]` of constants, or an array literal `'{1,2}'`.
pub(crate) fn array_keys(e: &Expr) -> Option<Vec<KeySource>> {
    match e {
        Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => array_keys(inner),
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(vec![KeySource::ParamArray(param_index(p)?)]),
            other => {
                let s = string_value(other)?;
                let items = parse_array_literal(&s)?;
                Some(items.into_iter().map(KeySource::Literal).collect())
            }
        },
        Expr::Array(a) if !a.elem.is_empty() => a.elem.iter().map(key_source).collect(),
        _ => None,
    }
}

fn value_key(v: &Value) -> Option<KeySource> {
    match v {
        Value::Number(n, _) => Some(KeySource::Literal(Literal::Number(n.clone()))),
        Value::Null => Some(KeySource::Literal(Literal::Null)),
        Value::Placeholder(p) => Some(KeySource::Param(param_index(p)?)),
        other => string_value(other).map(|s| KeySource::Literal(Literal::String(s))),
    }
}

/// The text of a string constant of any PostgreSQL form ('', E'', U&'',
/// N'', $$ $$), already unescaped by the parser.
fn string_value(v: &Value) -> Option<String> {
    match v {
        Value::SingleQuotedString(s)
        | Value::EscapedStringLiteral(s)
        | Value::UnicodeStringLiteral(s)
        | Value::NationalStringLiteral(s) => Some(s.clone()),
        Value::DollarQuotedString(d) => Some(d.value.clone()),
        _ => None,
    }
}

/// `$3` → 2.
pub(crate) fn param_index(p: &str) -> Option<usize> {
    let n: usize = p.strip_prefix('$')?.parse().ok()?;
    n.checked_sub(1)
}

fn negate(n: &str) -> String {
    match n.strip_prefix('-') {
        Some(pos) => pos.to_owned(),
        None => format!("-{n}"),
    }
}

/// The elements of a one-dimensional array literal (`{1,"a b",NULL}`), as
/// PostgreSQL's array input reads them. `None` for anything else (nested
/// arrays, bounds decorations, empty arrays, bad syntax): no key then.
pub(crate) fn parse_array_literal(s: &str) -> Option<Vec<Literal>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        let mut item = String::new();
        let mut quoted = false;
        if chars.next_if_eq(&'"').is_some() {
            quoted = true;
            loop {
                match chars.next()? {
                    '"' => break,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
        } else {
            while let Some(c) = chars.next_if(|c| *c != ',') {
                match c {
                    '{' | '}' | '"' => return None,
                    '\\' => item.push(chars.next()?),
                    c => item.push(c),
                }
            }
            item.truncate(item.trim_end().len());
            if item.is_empty() {
                return None;
            }
        }
        out.push(if !quoted && item.eq_ignore_ascii_case("null") { Literal::Null } else { Literal::String(item) });
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

/// `owner_id = 5`, `owner_id IN (1, 2)`, `owner_id = ANY($1)`, for reasons.
pub(crate) fn describe(column: &str, keys: &[KeySource]) -> String {
    let mut s = String::with_capacity(column.len() + 16);
    s.push_str(column);
    match keys {
        [KeySource::ParamArray(i)] => {
            let _ = write!(s, " = ANY(${})", i + 1);
        }
        [one] => {
            s.push_str(" = ");
            push_key(&mut s, one);
        }
        many => {
            s.push_str(" IN (");
            for (i, k) in many.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                push_key(&mut s, k);
            }
            s.push(')');
        }
    }
    s
}

fn push_key(s: &mut String, k: &KeySource) {
    let _ = match k {
        KeySource::Literal(Literal::Number(n)) => write!(s, "{n}"),
        KeySource::Literal(Literal::String(t)) => write!(s, "'{}'", t.replace('\'', "''")),
        KeySource::Literal(Literal::Null) => write!(s, "NULL"),
        KeySource::Param(i) => write!(s, "${}", i + 1),
        KeySource::ParamArray(i) => write!(s, "ANY(${})", i + 1),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn expr(sql: &str) -> Expr {
        Parser::new(&PostgreSqlDialect {}).try_with_sql(sql).unwrap().parse_expr().unwrap()
    }

    fn num(n: &str) -> KeySource {
        KeySource::Literal(Literal::Number(n.into()))
    }

    fn text(s: &str) -> KeySource {
        KeySource::Literal(Literal::String(s.into()))
    }

    #[test]
    fn constants() {
        let cases = [
            ("42", Some(num("42"))),
            ("-5", Some(num("-5"))),
            ("- -5", Some(num("5"))),
            ("+7", Some(num("7"))),
            ("(-5)::int8", Some(num("-5"))),
            ("-5::int8", Some(num("-5"))),
            ("1e3", Some(num("1e3"))),
            ("$1", Some(KeySource::Param(0))),
            ("$12::int8", Some(KeySource::Param(11))),
            ("CAST($2 AS bigint)", Some(KeySource::Param(1))),
            ("(($3))", Some(KeySource::Param(2))),
            ("'42'::text", Some(text("42"))),
            ("'it''s'", Some(text("it's"))),
            ("E'a\\nb'", Some(text("a\nb"))),
            ("$$x y$$", Some(text("x y"))),
            ("$tag$q$tag$", Some(text("q"))),
            ("text 'abc'", Some(text("abc"))),
            ("NULL", Some(KeySource::Literal(Literal::Null))),
            ("$0", None),
            ("-$1", None),
            ("-'5'", None),
            ("true", None),
            ("a", None),
            ("1 + 1", None),
            ("f(1)", None),
        ];
        for (sql, want) in cases {
            assert_eq!(key_source(&expr(sql)), want, "{sql}");
        }
    }

    #[test]
    fn arrays() {
        let cases = [
            ("$1", Some(vec![KeySource::ParamArray(0)])),
            ("$2::int8[]", Some(vec![KeySource::ParamArray(1)])),
            ("ARRAY[1, -2, $3]", Some(vec![num("1"), num("-2"), KeySource::Param(2)])),
            ("'{1,2}'", Some(vec![text("1"), text("2")])),
            ("'{1,2}'::int8[]", Some(vec![text("1"), text("2")])),
            ("ARRAY[]::int[]", None),
            ("ARRAY[a]", None),
            ("ARRAY[[1],[2]]", None),
        ];
        for (sql, want) in cases {
            assert_eq!(array_keys(&expr(sql)), want, "{sql}");
        }
    }

    #[test]
    fn array_literals() {
        let s = |v: &str| Literal::String(v.into());
        let cases = [
            ("{1,2}", Some(vec![s("1"), s("2")])),
            (" { 1 , 2 } ", Some(vec![s("1"), s("2")])),
            ("{\"a b\",\"c\\\"d\",NULL,\"NULL\"}", Some(vec![s("a b"), s("c\"d"), Literal::Null, s("NULL")])),
            ("{a\\,b}", Some(vec![s("a,b")])),
            ("{}", None),
            ("{{1},{2}}", None),
            ("{1,}", None),
            ("{\"a\"b}", None),
            ("[1:2]={1,2}", None),
            ("1,2", None),
        ];
        for (lit, want) in cases {
            assert_eq!(parse_array_literal(lit), want, "{lit}");
        }
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe("aid", &[num("4711")]), "aid = 4711");
        assert_eq!(describe("email", &[text("o'k")]), "email = 'o''k'");
        assert_eq!(describe("k", &[KeySource::Param(0), num("2")]), "k IN ($1, 2)");
        assert_eq!(describe("k", &[KeySource::ParamArray(1)]), "k = ANY($2)");
        assert_eq!(describe("k", &[KeySource::Literal(Literal::Null)]), "k = NULL");
    }
}
