//! Where the parts of a SELECT are in the client's text, so that `shard_sql`
//! is the client's own text with a few splices (hidden columns appended to
//! the select list, the LIMIT tail replaced) rather than a re-printed AST.
//! sqlparser decides what the statement means; this module only finds byte
//! ranges, and the planner cross-checks the counts against the AST.

use std::ops::Range;

use crate::lex::{Lexer, Token};

/// One token with its byte range and paren/bracket depth (the depth outside
/// it, for the brackets themselves).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tok<'a> {
    pub start: usize,
    pub end: usize,
    pub tok: Token<'a>,
    pub depth: u32,
}

impl Tok<'_> {
    fn is(&self, kw: &str) -> bool {
        self.tok.is_keyword(kw)
    }
}

/// Tokens of `sql`, offsets relative to `sql`.
pub(crate) fn tokens(sql: &str) -> Vec<Tok<'_>> {
    let mut lexer = Lexer::new(sql);
    let mut out = Vec::new();
    let mut depth = 0u32;
    while let Some((start, tok)) = lexer.next_token() {
        if matches!(tok, Token::Punct(')' | ']')) {
            depth = depth.saturating_sub(1);
        }
        out.push(Tok { start, end: lexer.offset(), tok, depth });
        if matches!(tok, Token::Punct('(' | '[')) {
            depth += 1;
        }
    }
    out
}

/// The byte ranges of one SELECT's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// End of `SELECT [DISTINCT | ALL]`: where hidden columns go when the
    /// select list is empty.
    pub select_end: usize,
    /// `DISTINCT` or `ALL` follows `SELECT`.
    pub quantifier: bool,
    /// The select list ends at a top-level `FROM`.
    pub from: bool,
    /// Each select-list item, alias included.
    pub items: Vec<Range<usize>>,
    /// Each GROUP BY item.
    pub group_by: Vec<Range<usize>>,
    /// Each ORDER BY item, ASC/DESC/NULLS included.
    pub order_by: Vec<Range<usize>>,
    /// Start of the first top-level LIMIT, OFFSET or FETCH.
    pub tail: Option<usize>,
    /// End of the last token before any trailing `;`.
    pub end: usize,
}

/// Words that end a select list at depth 0 (all reserved in PG, so never an
/// identifier unless quoted, or an alias right after AS).
const SELECT_LIST_END: &[&str] = &[
    "from",
    "into",
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
];
const CLAUSE_START: &[&str] = &["where", "group", "having", "window", "order", "limit", "offset", "fetch", "for"];

pub(crate) fn scan(sql: &str) -> Option<Layout> {
    let mut toks = tokens(sql);
    while toks.last().is_some_and(|t| t.tok == Token::Semicolon) {
        toks.pop();
    }
    if toks.iter().any(|t| t.tok == Token::Semicolon) || !toks.first()?.is("select") {
        return None;
    }
    let end = toks.last()?.end;
    let mut i = 1;
    let quantifier = toks.get(i).is_some_and(|t| t.is("distinct") || t.is("all"));
    if quantifier {
        i += 1;
    }
    let select_end = toks[i - 1].end;
    let is_clause = |toks: &[Tok<'_>], j: usize, words: &[&str]| {
        let t = &toks[j];
        t.depth == 0 && words.iter().any(|w| t.is(w)) && !(j > 0 && toks[j - 1].is("as"))
    };
    let list_end = (i..toks.len()).find(|&j| is_clause(&toks, j, SELECT_LIST_END)).unwrap_or(toks.len());
    let items = split_commas(&toks[i..list_end]);
    let from = toks.get(list_end).is_some_and(|t| t.is("from"));

    let mut layout =
        Layout { select_end, quantifier, from, items, group_by: Vec::new(), order_by: Vec::new(), tail: None, end };
    let mut j = list_end;
    while j < toks.len() {
        if !is_clause(&toks, j, CLAUSE_START) {
            j += 1;
            continue;
        }
        let by = toks.get(j + 1).is_some_and(|t| t.is("by"));
        if (toks[j].is("limit") || toks[j].is("offset") || toks[j].is("fetch")) && layout.tail.is_none() {
            layout.tail = Some(toks[j].start);
        }
        if (toks[j].is("group") || toks[j].is("order")) && by {
            let from = j + 2;
            let to = (from..toks.len()).find(|&k| is_clause(&toks, k, CLAUSE_START)).unwrap_or(toks.len());
            let ranges = split_commas(&toks[from..to]);
            if toks[j].is("group") {
                layout.group_by = ranges;
            } else {
                layout.order_by = ranges;
            }
            j = to;
            continue;
        }
        j += 1;
    }
    Some(layout)
}

/// Split tokens at depth-0 commas into byte ranges (first token's start to
/// last token's end); nothing for no tokens.
fn split_commas(toks: &[Tok<'_>]) -> Vec<Range<usize>> {
    if toks.is_empty() {
        return Vec::new();
    }
    toks.split(|t| t.depth == 0 && t.tok == Token::Punct(','))
        .map(|part| match (part.first(), part.last()) {
            (Some(a), Some(b)) => a.start..b.end,
            // An empty item: the statement would not have parsed.
            _ => 0..0,
        })
        .collect()
}

/// Is `range` exactly `LIMIT ALL` (which sqlparser reads as no limit)?
pub(crate) fn is_limit_all(sql: &str, range: Range<usize>) -> bool {
    let toks = tokens(&sql[range]);
    toks.len() == 2 && toks[0].is("limit") && toks[1].is("all")
}

/// `range` without a trailing `[AS] alias`, when its last token is that
/// alias (`value` unquoted or quoted as sqlparser read it).
pub(crate) fn strip_alias(sql: &str, range: &Range<usize>, value: &str, quoted: bool) -> Option<Range<usize>> {
    let toks = tokens(&sql[range.clone()]);
    let (last, rest) = toks.split_last()?;
    let matches = match last.tok {
        Token::Word(w) => !quoted && w == value,
        Token::QuotedIdent(q) => quoted && q.replace("\"\"", "\"") == value,
        _ => false,
    };
    if !matches {
        return None;
    }
    let rest = match rest.split_last() {
        Some((as_kw, before)) if as_kw.is("as") => before,
        _ => rest,
    };
    let end = rest.last()?.end;
    Some(range.start..range.start + end)
}

/// `range` (an ORDER BY item) without trailing `ASC`/`DESC` and
/// `NULLS FIRST`/`NULLS LAST`.
pub(crate) fn strip_sort_options(sql: &str, range: &Range<usize>) -> Range<usize> {
    let toks = tokens(&sql[range.clone()]);
    let mut n = toks.len();
    if n >= 2 && (toks[n - 1].is("first") || toks[n - 1].is("last")) && toks[n - 2].is("nulls") {
        n -= 2;
    }
    if n >= 1 && (toks[n - 1].is("asc") || toks[n - 1].is("desc")) {
        n -= 1;
    }
    match toks.get(..n).and_then(<[Tok<'_>]>::last) {
        Some(t) => range.start..range.start + t.end,
        None => range.clone(),
    }
}

/// The argument text of a call spanning all of `range` (`avg(x + 1)` gives
/// the range of `x + 1`): the first `(` must be closed by the last token.
pub(crate) fn call_args(sql: &str, range: &Range<usize>) -> Option<Range<usize>> {
    let toks = tokens(&sql[range.clone()]);
    let open = toks.iter().position(|t| t.tok == Token::Punct('('))?;
    let last = toks.last()?;
    let closes_at_end = open + 1 < toks.len()
        && last.tok == Token::Punct(')')
        && toks[open].depth == last.depth
        && toks[open + 1..toks.len() - 1].iter().all(|t| t.depth > toks[open].depth);
    closes_at_end.then(|| range.start + toks[open].end..range.start + last.start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(sql: &'a str, ranges: &[Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &sql[r.clone()]).collect()
    }

    #[test]
    fn finds_clauses() {
        let sql = "SELECT DISTINCT a, f(b, c) AS \"from\", x AS limit FROM t WHERE (a, b) > (1, 2) \
                   GROUP BY a, f(b, c) ORDER BY 1 DESC NULLS LAST, g(x, y) LIMIT 5 OFFSET 2;";
        let l = scan(sql).unwrap();
        assert_eq!(&sql[..l.select_end], "SELECT DISTINCT");
        assert_eq!(texts(sql, &l.items), ["a", "f(b, c) AS \"from\"", "x AS limit"]);
        assert_eq!(texts(sql, &l.group_by), ["a", "f(b, c)"]);
        assert_eq!(texts(sql, &l.order_by), ["1 DESC NULLS LAST", "g(x, y)"]);
        assert_eq!(&sql[l.tail.unwrap()..l.end], "LIMIT 5 OFFSET 2");
    }

    #[test]
    fn comments_and_strings_hide_keywords() {
        let sql = "select 'from', /* from */ a -- from\nfrom t order by b";
        let l = scan(sql).unwrap();
        assert_eq!(texts(sql, &l.items), ["'from'", "a"]);
        assert_eq!(texts(sql, &l.order_by), ["b"]);
        assert_eq!(l.tail, None);
        assert_eq!(scan("select 1; select 2"), None);
        assert_eq!(scan("with x as (select 1) select * from x"), None);
    }

    #[test]
    fn strips() {
        let sql = "count(*) AS n";
        assert_eq!(strip_alias(sql, &(0..sql.len()), "n", false), Some(0..8));
        let sql = "sum(x) \"Total\"";
        assert_eq!(strip_alias(sql, &(0..sql.len()), "Total", true), Some(0..6));
        assert_eq!(strip_alias(sql, &(0..sql.len()), "total", false), None);
        let sql = "x COLLATE \"C\" DESC NULLS FIRST";
        assert_eq!(&sql[strip_sort_options(sql, &(0..sql.len()))], "x COLLATE \"C\"");
        let sql = "AVG ( t.x * (2 + y) )";
        assert_eq!(call_args(sql, &(0..sql.len())).map(|r| &sql[r]), Some(" t.x * (2 + y) "));
        let sql = "avg(x) + avg(y)";
        assert_eq!(call_args(sql, &(0..sql.len())), None);
    }
}
