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

/// The words of `sql` (runs of ASCII letters, digits and `_`) in one pass
/// over the bytes, each with whether it may be the first word of a
/// statement: it opens the text or follows a `;`, or the text holds a
/// comment anywhere (which can hide where a statement starts, so then
/// every word may be first). Strings and quoted identifiers are not
/// skipped: the cheap pre-checks that use this treat a hit as "maybe".
pub fn scan_words(sql: &[u8]) -> ScanWords<'_> {
    let comments = sql.windows(2).any(|w| w == b"--" || w == b"/*");
    ScanWords { sql, at: 0, at_start: true, comments }
}

/// See [`scan_words`].
pub struct ScanWords<'a> {
    sql: &'a [u8],
    at: usize,
    at_start: bool,
    comments: bool,
}

impl<'a> Iterator for ScanWords<'a> {
    /// A word and whether it may start a statement.
    type Item = (&'a [u8], bool);

    fn next(&mut self) -> Option<Self::Item> {
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let sql = self.sql;
        while self.at < sql.len() && !is_word(sql[self.at]) {
            self.at_start |= sql[self.at] == b';';
            self.at += 1;
        }
        if self.at >= sql.len() {
            return None;
        }
        let start = self.at;
        while self.at < sql.len() && is_word(sql[self.at]) {
            self.at += 1;
        }
        let first = std::mem::replace(&mut self.at_start, false) || self.comments;
        Some((&sql[start..self.at], first))
    }
}

#[cfg(test)]
mod scan_words_tests {
    use super::scan_words;

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
    }
}
