//! A small SQL lexer: enough to split a simple-query string into statements
//! and read a statement's leading keywords without a full parse.
//!
//! It understands what can hide a `;` or a keyword: `--` and nested `/* */`
//! comments, '...' strings (also E'...' with backslash escapes), "quoted
//! identifiers" and $tag$ dollar quoting. Anything it does not recognise is a
//! one-character punctuation token, so it never fails.

/// One token of SQL text, borrowing from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// An unquoted word: keyword or identifier, as written.
    Word(&'a str),
    /// A "quoted identifier", without the quotes (doubled quotes left as is).
    QuotedIdent(&'a str),
    /// A string literal including its quotes (and an E/e prefix if any).
    String(&'a str),
    /// A $tag$...$tag$ literal including the delimiters.
    DollarString(&'a str),
    /// A number.
    Number(&'a str),
    /// `;`
    Semicolon,
    /// Any other character.
    Punct(char),
}

impl<'a> Token<'a> {
    /// Is this an unquoted word equal to `kw`, ignoring ASCII case?
    pub fn is_keyword(&self, kw: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(kw))
    }
}

/// Iterator over the tokens of `sql`, with the byte offset of each.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(src: &'a str) -> Self {
        Lexer { src, pos: 0 }
    }

    /// Byte offset of the next unread character.
    pub fn offset(&self) -> usize {
        self.pos
    }

    fn skip_trivia(&mut self) {
        let b = self.src.as_bytes();
        loop {
            while self.pos < b.len() && b[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if b[self.pos..].starts_with(b"--") {
                while self.pos < b.len() && b[self.pos] != b'\n' {
                    self.pos += 1;
                }
                continue;
            }
            if b[self.pos..].starts_with(b"/*") {
                let mut depth = 0usize;
                while self.pos < b.len() {
                    if b[self.pos..].starts_with(b"/*") {
                        depth += 1;
                        self.pos += 2;
                    } else if b[self.pos..].starts_with(b"*/") {
                        depth -= 1;
                        self.pos += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        self.pos += 1;
                    }
                }
                continue;
            }
            return;
        }
    }

    /// Next token and its start offset.
    pub fn next_token(&mut self) -> Option<(usize, Token<'a>)> {
        self.skip_trivia();
        let b = self.src.as_bytes();
        let start = self.pos;
        let c = *b.get(start)?;
        let tok = match c {
            b';' => {
                self.pos += 1;
                Token::Semicolon
            }
            b'\'' => {
                self.pos = quoted_end(b, start + 1, b'\'', false);
                Token::String(&self.src[start..self.pos])
            }
            b'e' | b'E' if b.get(start + 1) == Some(&b'\'') => {
                self.pos = quoted_end(b, start + 2, b'\'', true);
                Token::String(&self.src[start..self.pos])
            }
            b'"' => {
                self.pos = quoted_end(b, start + 1, b'"', false);
                let end = if self.pos > start + 1 && b[self.pos - 1] == b'"' { self.pos - 1 } else { self.pos };
                Token::QuotedIdent(&self.src[start + 1..end])
            }
            b'$' => match dollar_tag_len(&b[start..]) {
                Some(tag_len) => {
                    let tag = &b[start..start + tag_len];
                    let body = start + tag_len;
                    self.pos = find(b, body, tag).map_or(b.len(), |i| i + tag_len);
                    Token::DollarString(&self.src[start..self.pos])
                }
                None => {
                    // A positional parameter ($1) or a stray dollar.
                    self.pos += 1;
                    while self.pos < b.len() && b[self.pos].is_ascii_digit() {
                        self.pos += 1;
                    }
                    Token::Punct('$')
                }
            },
            c if c.is_ascii_digit() => {
                while self.pos < b.len() && (b[self.pos].is_ascii_alphanumeric() || b[self.pos] == b'.') {
                    self.pos += 1;
                }
                Token::Number(&self.src[start..self.pos])
            }
            c if is_ident_start(c) => {
                while self.pos < b.len() && is_ident_char(b[self.pos]) {
                    self.pos += 1;
                }
                Token::Word(&self.src[start..self.pos])
            }
            _ => {
                let ch = self.src[start..].chars().next().unwrap_or('?');
                self.pos += ch.len_utf8();
                Token::Punct(ch)
            }
        };
        Some((start, tok))
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;
    fn next(&mut self) -> Option<Token<'a>> {
        self.next_token().map(|(_, t)| t)
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// End offset (exclusive, after the closing quote) of a quoted run starting
/// at `from` (just after the opening quote). A doubled quote is an escaped
/// quote; with `backslash`, `\x` escapes too. Unterminated runs end at EOF.
fn quoted_end(b: &[u8], from: usize, q: u8, backslash: bool) -> usize {
    let mut i = from;
    while i < b.len() {
        if backslash && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    b.len()
}

/// Length of a `$tag$` opener at the start of `b`, if it is one.
fn dollar_tag_len(b: &[u8]) -> Option<usize> {
    let mut i = 1;
    if b.get(1).is_some_and(|c| c.is_ascii_digit()) {
        return None;
    }
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
        i += 1;
    }
    (b.get(i) == Some(&b'$')).then_some(i + 1)
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..].windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

/// Split a simple-query string into its statements (without the `;`),
/// skipping empty ones. Semicolons inside strings, comments and dollar
/// quotes do not split.
pub fn split_statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut lexer = Lexer::new(sql);
    let mut start = 0;
    let mut any = false;
    while let Some((off, tok)) = lexer.next_token() {
        if tok == Token::Semicolon {
            if any {
                out.push(sql[start..off].trim());
            }
            start = off + 1;
            any = false;
        } else {
            any = true;
        }
    }
    if any {
        out.push(sql[start..].trim());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_comments() {
        let cases: &[(&str, &[&str])] = &[
            ("select 1", &["select 1"]),
            ("select 1; select 2;", &["select 1", "select 2"]),
            (";;  ; ", &[]),
            ("select ';'; select 2", &["select ';'", "select 2"]),
            ("select E'\\';'; x", &["select E'\\';'", "x"]),
            ("select \"a;b\" from t; y", &["select \"a;b\" from t", "y"]),
            ("select 1 -- ; comment\n; y", &["select 1 -- ; comment", "y"]),
            ("select /* ; /* nested ; */ */ 1; y", &["select /* ; /* nested ; */ */ 1", "y"]),
            ("do $$ begin; end $$; y", &["do $$ begin; end $$", "y"]),
            ("do $fn$ a;$$;b $fn$; y", &["do $fn$ a;$$;b $fn$", "y"]),
            ("select $1; y", &["select $1", "y"]),
            ("select 'unterminated; x", &["select 'unterminated; x"]),
        ];
        for (sql, want) in cases {
            assert_eq!(split_statements(sql), *want, "{sql}");
        }
    }

    #[test]
    fn tokens() {
        let toks: Vec<_> = Lexer::new("SET search_path TO \"My\", public; -- x").collect();
        assert_eq!(
            toks,
            vec![
                Token::Word("SET"),
                Token::Word("search_path"),
                Token::Word("TO"),
                Token::QuotedIdent("My"),
                Token::Punct(','),
                Token::Word("public"),
                Token::Semicolon,
            ]
        );
    }
}

/// Bytes that make up a word in [`scan_words`]: ASCII letters, digits, `_`.
static WORD_BYTE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'_';
        b += 1;
    }
    t
};

/// Whether `sql` holds `--` or `/*` anywhere (in a string too).
fn has_comment(sql: &[u8]) -> bool {
    memchr::memchr2_iter(b'-', b'/', sql)
        .any(|i| matches!((sql[i], sql.get(i + 1)), (b'-', Some(b'-')) | (b'/', Some(b'*'))))
}

/// The words of `sql` (runs of ASCII letters, digits and `_`) in one pass
/// over the bytes, each with whether it may be the first word of a
/// statement: it opens the text or follows a `;`, or the text holds a
/// comment anywhere (which can hide where a statement starts, so then
/// every word may be first). Strings and quoted identifiers are not
/// skipped: the cheap pre-checks that use this treat a hit as "maybe".
///
/// These pre-checks run on every statement a client sends, so the scan is
/// a table lookup per byte and a vectorised search for comment openers.
pub fn scan_words(sql: &[u8]) -> ScanWords<'_> {
    ScanWords { sql, at: 0, at_start: true, comments: has_comment(sql) }
}

/// See [`scan_words`].
pub struct ScanWords<'a> {
    sql: &'a [u8],
    at: usize,
    at_start: bool,
    comments: bool,
}

impl<'a> ScanWords<'a> {
    /// The next word at or after `self.at`, noting a `;` on the way.
    fn word(&mut self) -> Option<&'a [u8]> {
        let sql = self.sql;
        let start = loop {
            let &b = sql.get(self.at)?;
            if WORD_BYTE[usize::from(b)] {
                break self.at;
            }
            self.at_start |= b == b';';
            self.at += 1;
        };
        self.at += sql[start..].iter().position(|&b| !WORD_BYTE[usize::from(b)]).unwrap_or(sql.len() - start);
        Some(&sql[start..self.at])
    }
}

impl<'a> Iterator for ScanWords<'a> {
    /// A word and whether it may start a statement.
    type Item = (&'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        let w = self.word()?;
        let first = std::mem::replace(&mut self.at_start, false) || self.comments;
        Some((w, first))
    }
}

/// The words of `sql` that may start a statement: exactly the words
/// [`scan_words`] marks first, found without visiting the others when the
/// text holds no comment (the first word, then the first after each `;`).
pub fn statement_starts(sql: &[u8]) -> StatementStarts<'_> {
    StatementStarts { words: scan_words(sql), started: false }
}

/// See [`statement_starts`].
pub struct StatementStarts<'a> {
    words: ScanWords<'a>,
    started: bool,
}

impl<'a> Iterator for StatementStarts<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let s = &mut self.words;
        if s.comments {
            return s.word();
        }
        if std::mem::replace(&mut self.started, true) {
            s.at += memchr::memchr(b';', &s.sql[s.at..])? + 1;
        }
        s.word()
    }
}

#[cfg(test)]
mod scan_words_tests {
    use super::{scan_words, statement_starts};

    #[test]
    fn words_and_statement_starts() {
        let got: Vec<(&[u8], bool)> = scan_words(b"SET x = 1; update t set y=2").collect();
        let want: [(&[u8], bool); 8] = [
            (b"SET", true),
            (b"x", false),
            (b"1", false),
            (b"update", true),
            (b"t", false),
            (b"set", false),
            (b"y", false),
            (b"2", false),
        ];
        assert_eq!(got, want);
        assert!(scan_words(b"/* c */ select 1; x").all(|(_, first)| first), "a comment: every word may be first");
        assert_eq!(scan_words(b" ;; ").count(), 0);
        let starts: Vec<&[u8]> = statement_starts(b"; select 1;; begin ;commit").collect();
        assert_eq!(starts, [&b"select"[..], b"begin", b"commit"]);
        assert_eq!(statement_starts(b"select 1 -- x\n; y").count(), 4, "a comment: every word");
    }

    /// The plain definition: a byte at a time, comments looked for by pairs.
    fn reference(sql: &[u8]) -> Vec<(&[u8], bool)> {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let comments = sql.windows(2).any(|w| w == b"--" || w == b"/*");
        let (mut out, mut at, mut at_start) = (Vec::new(), 0, true);
        loop {
            while at < sql.len() && !is_word(sql[at]) {
                at_start |= sql[at] == b';';
                at += 1;
            }
            if at >= sql.len() {
                return out;
            }
            let start = at;
            while at < sql.len() && is_word(sql[at]) {
                at += 1;
            }
            out.push((&sql[start..at], std::mem::replace(&mut at_start, false) || comments));
        }
    }

    proptest::proptest! {
        #[test]
        fn scans_match_the_plain_definition(
            sql in proptest::collection::vec(proptest::sample::select(b"aZ_9 ;-/*\n\xc3'".to_vec()), 0..40)
        ) {
            let want = reference(&sql);
            proptest::prop_assert_eq!(scan_words(&sql).collect::<Vec<_>>(), want.clone());
            let firsts: Vec<&[u8]> = want.iter().filter(|(_, f)| *f).map(|(w, _)| *w).collect();
            proptest::prop_assert_eq!(statement_starts(&sql).collect::<Vec<_>>(), firsts);
        }
    }
}
