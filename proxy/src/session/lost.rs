//! What a client sees when its server connection dies under it (the
//! primary was killed, crashed or cut off), decided without I/O.
//!
//! A session that keeps nothing of its own on the server connection
//! (transaction pooling, not pinned) outlives the connection: the requests
//! in flight are answered by us, each with what is known of its
//! transaction, and the client can go on with new transactions (on the new
//! primary once a failover has published it). A server that ended the
//! connection with a FATAL of its own (`57P01` admin shutdown, an idle
//! timeout) is not this case: its error is relayed and the session ends.
//!
//! ```text
//!  in flight when the server died          the client gets            then
//!  ───────────────────────────────────     ─────────────────────      ──────────────
//!  nothing, idle in a transaction          40001 at its next request  aborted ('E')
//!  a statement inside a transaction block  40001                      aborted ('E')
//!  ROLLBACK                                ROLLBACK (it happened)     idle ('I')
//!  COMMIT (or END, PREPARE TRANSACTION)    08007                      idle ('I')
//!  an autocommit request that may write    08007                      idle ('I')
//!  an autocommit read, or BEGIN ...        40001                      idle ('I')
//!  an extended batch not yet synced        40001, skip to Sync        as above
//! ```
//!
//! "Certainly not committed" (40001, which drivers and applications retry)
//! holds for everything inside a transaction block that is not its
//! commit: PostgreSQL rolls back the transaction of a backend that dies.
//! "Unknown" (08007, never a success nor a failure) is a commit whose
//! answer never came: an explicit `COMMIT`, or a request outside a block
//! (its own implicit transaction, committed when it ends) that may have
//! written. A transaction that wrote nothing loses nothing: its commit in
//! flight is reported as 40001. Whether a request writes is the router's
//! conservative answer (`router::route::Decision::writes`); a session that
//! is not routed (a plain node with one primary) counts everything as a
//! write. A retried statement is never re-sent by us: the client decides.
//!
//! In an aborted transaction ([`Aborted`]) we play PostgreSQL with no
//! server: every statement fails with `25P02` until `ROLLBACK` (or
//! `COMMIT`, answered `ROLLBACK` as PostgreSQL does), extended-protocol
//! batches included. A `COMMIT` sent before the loss was reported gets the
//! 40001 instead, never a `ROLLBACK` that a driver could take for success.

use bytes::BytesMut;

use crate::error::{ServerGone, write_error};
use crate::wire::messages::{self, Severity};

/// How an unanswered request may end the transaction it runs in, read
/// from its text by a cheap scan that may say [`Ends::MayCommit`] of text
/// that does not commit (a word in a string), never the reverse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Ends {
    /// No transaction control the loss cares about.
    #[default]
    Nothing,
    /// Exactly one `ROLLBACK`/`ABORT`.
    Rollback,
    /// Starts with `BEGIN`/`START TRANSACTION` and holds no commit: it
    /// leaves a transaction block open, so nothing of it commits.
    Begins,
    /// May commit: a statement starting with `COMMIT`, `END` or `PREPARE`.
    MayCommit,
}

/// What `sql` (one simple query, or one extended statement) may do to its
/// transaction. One pass over the bytes; statements are told apart by `;`
/// (with a comment anywhere, every word counts as a statement's first).
pub(crate) fn ends(sql: &[u8]) -> Ends {
    let is = |w: &[u8], k: &[u8]| w.eq_ignore_ascii_case(k);
    let mut first: Option<&[u8]> = None;
    let mut statements = 0;
    for w in router::lex::statement_starts(sql) {
        if is(w, b"commit") || is(w, b"end") || is(w, b"prepare") {
            return Ends::MayCommit;
        }
        first.get_or_insert(w);
        statements += 1;
    }
    match first {
        Some(w) if is(w, b"begin") || is(w, b"start") => Ends::Begins,
        Some(w) if (is(w, b"rollback") || is(w, b"abort")) && statements == 1 => {
            match tx_end(&String::from_utf8_lossy(sql)) {
                Some(TxEnd::Rollback) => Ends::Rollback,
                _ => Ends::Nothing,
            }
        }
        _ => Ends::Nothing,
    }
}

/// A statement that ends a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxEnd {
    Commit,
    Rollback,
}

/// Is `sql` exactly one `COMMIT`/`END` or `ROLLBACK`/`ABORT` (not `TO
/// SAVEPOINT`, not `PREPARED`, not `AND CHAIN`)?
pub(crate) fn tx_end(sql: &str) -> Option<TxEnd> {
    let stmts = router::lex::split_statements(sql);
    let [stmt] = stmts.as_slice() else { return None };
    if router::lex::Lexer::new(stmt).any(|t| t.is_keyword("CHAIN")) {
        return None;
    }
    match router::transaction_control(stmt)? {
        router::TxControl::Commit => Some(TxEnd::Commit),
        router::TxControl::Rollback => Some(TxEnd::Rollback),
        _ => None,
    }
}

/// What was in flight when the server connection died.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts<'a> {
    /// The last ReadyForQuery status (`T` once a held `BEGIN` went out).
    pub status: u8,
    /// The complete requests (a Query, or extended messages up to Sync)
    /// without their ReadyForQuery yet, in order.
    pub requests: &'a [Ends],
    /// Extended-protocol messages sent since the last Sync: what they may
    /// do to the transaction.
    pub open_batch: Option<Ends>,
    /// The transaction may have written (a primary, and the router said
    /// so or could not tell).
    pub may_write: bool,
}

/// The answer to one request in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// This error, then ReadyForQuery with this status.
    Error(ServerGone, u8),
    /// `ROLLBACK` and ReadyForQuery `I`: what the client asked for happened.
    Rollback,
}

/// What to tell the client now, and the state the session is left in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    pub answers: Vec<Answer>,
    /// The error for an open extended batch (its ReadyForQuery comes at
    /// the client's Sync: `after` skips to it).
    pub open_batch: Option<ServerGone>,
    pub after: Option<Aborted>,
}

/// The rule (see the module doc): state in flight → what the client sees.
pub(crate) fn decide(f: &Facts<'_>) -> Decision {
    let own_commit = if f.may_write { ServerGone::CommitUnknown } else { ServerGone::RolledBack };
    let mut in_block = matches!(f.status, b'T' | b'E');
    // The transaction already failed (on the server, or by our answer).
    let mut failed = f.status == b'E';
    let mut answers = Vec::with_capacity(f.requests.len());
    for &r in f.requests {
        let answer = match (in_block, r) {
            (_, Ends::Rollback) => Answer::Rollback,
            // Its own transaction: committed when it ended, if it did.
            (false, Ends::MayCommit | Ends::Nothing) => Answer::Error(own_commit, b'I'),
            // It leaves a block open: nothing of it commits.
            (false, Ends::Begins) => Answer::Error(ServerGone::RolledBack, b'I'),
            (true, Ends::MayCommit) if failed => Answer::Error(ServerGone::RolledBack, b'I'),
            (true, Ends::MayCommit) => Answer::Error(own_commit, b'I'),
            (true, _) if failed => Answer::Error(ServerGone::InFailedTransaction, b'E'),
            (true, _) => Answer::Error(ServerGone::RolledBack, b'E'),
        };
        (in_block, failed) = match answer {
            Answer::Error(_, b'E') => (true, true),
            _ => (false, false),
        };
        answers.push(answer);
    }
    let open = f.open_batch.map(|r| match (in_block, r) {
        (false, Ends::MayCommit) | (true, Ends::MayCommit) if !failed => (own_commit, false),
        // Not synced: an implicit transaction commits only at the Sync.
        (false, _) => (ServerGone::RolledBack, false),
        (true, Ends::MayCommit | Ends::Rollback) => (ServerGone::RolledBack, false),
        (true, _) if failed => (ServerGone::InFailedTransaction, true),
        (true, _) => (ServerGone::RolledBack, true),
    });
    let after = match open {
        Some((_, block)) => Some(Aborted { block, skipping: true, ..Aborted::default() }),
        None if in_block => {
            // Idle in the transaction: the client learns at its next request.
            let owed = (!failed).then_some(ServerGone::RolledBack);
            Some(Aborted { owed, block: true, ..Aborted::default() })
        }
        None => None,
    };
    Decision { answers, open_batch: open.map(|(gone, _)| gone), after }
}

impl Decision {
    /// The messages for the client now.
    pub(crate) fn write(&self, out: &mut BytesMut) {
        for a in &self.answers {
            match *a {
                Answer::Error(gone, status) => {
                    write_error(out, Severity::Error, &gone);
                    messages::ready_for_query(out, status);
                }
                Answer::Rollback => {
                    messages::command_complete(out, "ROLLBACK");
                    messages::ready_for_query(out, b'I');
                }
            }
        }
        if let Some(gone) = self.open_batch {
            write_error(out, Severity::Error, &gone);
        }
    }

    /// Did any request in flight have a commit whose outcome is unknown?
    pub(crate) fn commit_unknown(&self) -> bool {
        self.open_batch == Some(ServerGone::CommitUnknown)
            || self.answers.iter().any(|a| matches!(a, Answer::Error(ServerGone::CommitUnknown, _)))
    }
}

/// A transaction whose server died, played by us until the client ends
/// it: PostgreSQL's aborted transaction (`block`), or only the rest of an
/// extended batch up to its Sync.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Aborted {
    /// The error the client was not told yet (the server died while the
    /// client was idle in its transaction).
    owed: Option<ServerGone>,
    /// Inside a transaction block: ReadyForQuery says `E` until it ends;
    /// else the state ends at the next Sync.
    block: bool,
    /// After an error, extended-protocol messages are ignored up to Sync.
    skipping: bool,
    /// The transaction ended in this batch (an extended ROLLBACK).
    ended: bool,
    /// The unnamed statement (parsed in this state) ends the transaction.
    unnamed: Option<TxEnd>,
    /// The unnamed portal (bound in this state) ends the transaction.
    portal: Option<TxEnd>,
}

/// Which statement a Bind or Describe names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stmt {
    Unnamed,
    /// A client statement name, and whether its statement ends the
    /// transaction.
    Named(Option<TxEnd>),
}

/// A client message, as far as [`Aborted`] cares.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Msg<'a> {
    Query(&'a str),
    /// A Parse: does its statement end the transaction, is it unnamed.
    Parse(Option<TxEnd>, bool),
    Bind(Stmt),
    DescribeStatement(Stmt),
    DescribePortal,
    Execute,
    Close,
    Sync,
    /// Flush, and CopyData/CopyDone/CopyFail of a copy that died with
    /// the server: nothing to answer.
    Quiet,
    /// A FunctionCall or a message we do not know: answered like a query.
    Other,
}

/// ParameterDescription with no parameters, then NoData: a transaction
/// statement described.
const NO_PARAMS_NO_DATA: [u8; 12] = [b't', 0, 0, 0, 6, 0, 0, b'n', 0, 0, 0, 4];
const NO_DATA: [u8; 5] = [b'n', 0, 0, 0, 4];

impl Aborted {
    /// A request that was never sent is refused with `gone`: inside a
    /// transaction block (`block`) the transaction is aborted from then on,
    /// else only that request fails.
    pub(crate) fn refusing(gone: ServerGone, block: bool) -> Aborted {
        Aborted { owed: Some(gone), block, ..Aborted::default() }
    }

    /// The ReadyForQuery status the client is in.
    pub(crate) fn status(&self) -> u8 {
        if self.block { b'E' } else { b'I' }
    }

    /// Answer one client message into `out`. `false` once this state is
    /// over: the client is idle, its next message goes to a server.
    pub(crate) fn on_message(&mut self, m: Msg<'_>, out: &mut BytesMut) -> bool {
        if self.skipping && !matches!(m, Msg::Sync) {
            return true;
        }
        match m {
            Msg::Query(sql) => {
                let end = if self.block { tx_end(sql) } else { None };
                match (end, self.owed.take()) {
                    (Some(TxEnd::Commit), Some(gone)) => write_error(out, Severity::Error, &gone),
                    (Some(_), _) => messages::command_complete(out, "ROLLBACK"),
                    (None, owed) => {
                        write_error(out, Severity::Error, &owed.unwrap_or(ServerGone::InFailedTransaction));
                        messages::ready_for_query(out, self.status());
                        // Outside a block the failed request was all.
                        return self.block;
                    }
                }
                messages::ready_for_query(out, b'I');
                return false;
            }
            Msg::Other => {
                self.fail(out);
                self.skipping = false;
                messages::ready_for_query(out, self.status());
            }
            Msg::Parse(Some(end), unnamed) if self.block => {
                if unnamed {
                    self.unnamed = Some(end);
                }
                messages::parse_complete(out);
            }
            Msg::Bind(stmt) if self.block && self.ends(stmt).is_some() => {
                self.portal = self.ends(stmt);
                messages::bind_complete(out);
            }
            Msg::DescribeStatement(stmt) if self.block && self.ends(stmt).is_some() => {
                out.extend_from_slice(&NO_PARAMS_NO_DATA);
            }
            Msg::DescribePortal if self.block && self.portal.is_some() => out.extend_from_slice(&NO_DATA),
            Msg::Execute if self.block && self.portal.is_some() => {
                self.ended = true;
                match (self.portal, self.owed.take()) {
                    (Some(TxEnd::Commit), Some(gone)) => {
                        write_error(out, Severity::Error, &gone);
                        self.skipping = true;
                    }
                    _ => messages::command_complete(out, "ROLLBACK"),
                }
            }
            Msg::Close => messages::close_complete(out),
            Msg::Sync => {
                self.skipping = false;
                self.portal = None;
                if self.ended {
                    self.block = false;
                }
                messages::ready_for_query(out, self.status());
                return self.block;
            }
            Msg::Quiet => {}
            Msg::Parse(..) | Msg::Bind(_) | Msg::DescribeStatement(_) | Msg::DescribePortal | Msg::Execute => {
                self.fail(out)
            }
        }
        true
    }

    fn ends(&self, stmt: Stmt) -> Option<TxEnd> {
        match stmt {
            Stmt::Unnamed => self.unnamed,
            Stmt::Named(end) => end,
        }
    }

    /// An error for this message (the one owed, else 25P02); the rest of
    /// the batch is skipped.
    fn fail(&mut self, out: &mut BytesMut) {
        let gone = self.owed.take().unwrap_or(ServerGone::InFailedTransaction);
        write_error(out, Severity::Error, &gone);
        self.skipping = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ServerGone::{CommitUnknown, InFailedTransaction, RolledBack};

    fn facts(status: u8, requests: &[Ends], open_batch: Option<Ends>, may_write: bool) -> Decision {
        decide(&Facts { status, requests, open_batch, may_write })
    }

    #[test]
    fn ends_of_text() {
        for (sql, want) in [
            ("COMMIT", Ends::MayCommit),
            ("  end transaction;", Ends::MayCommit),
            ("INSERT INTO t VALUES (1); COMMIT", Ends::MayCommit),
            ("PREPARE TRANSACTION 'x'", Ends::MayCommit),
            ("COMMIT PREPARED 'x'", Ends::MayCommit),
            ("BEGIN; INSERT INTO t VALUES (1); END", Ends::MayCommit),
            ("BEGIN; INSERT INTO t VALUES (1)", Ends::Begins),
            ("START TRANSACTION READ WRITE", Ends::Begins),
            ("ROLLBACK", Ends::Rollback),
            ("abort work;", Ends::Rollback),
            ("ROLLBACK TO SAVEPOINT a", Ends::Nothing),
            ("ROLLBACK AND CHAIN", Ends::Nothing),
            ("ROLLBACK PREPARED 'x'", Ends::Nothing),
            ("ROLLBACK; SELECT 1", Ends::Nothing),
            ("INSERT INTO t VALUES (1)", Ends::Nothing),
            ("SELECT CASE WHEN x THEN 1 END FROM t", Ends::Nothing),
            ("SELECT commit FROM t", Ends::Nothing),
            // Errs towards "may commit", never the other way.
            ("SELECT 'a; commit'", Ends::MayCommit),
            ("SELECT 1 /* */ commit", Ends::MayCommit),
            ("/* x */ COMMIT", Ends::MayCommit),
        ] {
            assert_eq!(ends(sql.as_bytes()), want, "{sql}");
        }
    }

    #[test]
    fn a_request_never_sent_fails_alone_outside_a_block() {
        let mut out = BytesMut::new();
        let mut a = Aborted::refusing(ServerGone::Unreachable, false);
        assert!(!a.on_message(Msg::Query("INSERT INTO t VALUES (1)"), &mut out), "only that request");
        assert!(out.windows(5).any(|w| w == b"40001"));
        assert_eq!(out.last(), Some(&b'I'));

        // Extended: the batch fails, the Sync ends the state.
        let mut out = BytesMut::new();
        let mut a = Aborted::refusing(ServerGone::Unreachable, false);
        assert!(a.on_message(Msg::Parse(None, true), &mut out));
        assert!(a.on_message(Msg::Bind(Stmt::Unnamed), &mut out));
        assert!(a.on_message(Msg::Execute, &mut out));
        assert!(!a.on_message(Msg::Sync, &mut out));
        assert_eq!(out.windows(5).filter(|w| *w == b"40001").count(), 1);

        // In a block (a held BEGIN answered by us): aborted until ROLLBACK.
        let mut out = BytesMut::new();
        let mut a = Aborted::refusing(ServerGone::Unreachable, true);
        assert!(a.on_message(Msg::Query("INSERT INTO t VALUES (1)"), &mut out));
        assert!(a.on_message(Msg::Query("SELECT 1"), &mut out));
        assert!(out.windows(5).any(|w| w == b"25P02"));
        assert!(!a.on_message(Msg::Query("ROLLBACK"), &mut out));
    }

    #[test]
    fn inside_a_block_nothing_commits_but_the_commit() {
        // Idle in a transaction: told at the next request.
        let d = facts(b'T', &[], None, true);
        assert!(d.answers.is_empty());
        assert_eq!(d.after, Some(Aborted { owed: Some(RolledBack), block: true, ..Aborted::default() }));
        // A statement in flight.
        let d = facts(b'T', &[Ends::Nothing], None, true);
        assert_eq!(d.answers, [Answer::Error(RolledBack, b'E')]);
        assert_eq!(d.after, Some(Aborted { block: true, ..Aborted::default() }));
        // Pipelined statements: the first is the transaction's error, then 25P02.
        let d = facts(b'T', &[Ends::Nothing, Ends::Nothing], None, true);
        assert_eq!(d.answers, [Answer::Error(RolledBack, b'E'), Answer::Error(InFailedTransaction, b'E')]);
        // COMMIT in flight: unknown; then idle.
        let d = facts(b'T', &[Ends::MayCommit], None, true);
        assert_eq!(d.answers, [Answer::Error(CommitUnknown, b'I')]);
        assert_eq!(d.after, None);
        assert!(d.commit_unknown());
        // ... of a transaction that wrote nothing: nothing to lose.
        assert_eq!(facts(b'T', &[Ends::MayCommit], None, false).answers, [Answer::Error(RolledBack, b'I')]);
        // ... of a transaction that had already failed: it rolled back.
        assert_eq!(facts(b'E', &[Ends::MayCommit], None, true).answers, [Answer::Error(RolledBack, b'I')]);
        // ROLLBACK in flight: done.
        let d = facts(b'T', &[Ends::Rollback], None, true);
        assert_eq!((d.answers.as_slice(), d.after), (&[Answer::Rollback][..], None));
        // Already failed on the server, idle: nothing more to tell.
        assert_eq!(facts(b'E', &[], None, true).after, Some(Aborted { block: true, ..Aborted::default() }));
        assert_eq!(facts(b'E', &[Ends::Nothing], None, true).answers, [Answer::Error(InFailedTransaction, b'E')]);
        // After a statement's error, a pipelined COMMIT is a rollback.
        assert_eq!(
            facts(b'T', &[Ends::Nothing, Ends::MayCommit], None, true).answers,
            [Answer::Error(RolledBack, b'E'), Answer::Error(RolledBack, b'I')]
        );
    }

    #[test]
    fn outside_a_block_a_write_is_its_own_commit() {
        let d = facts(b'I', &[Ends::Nothing], None, true);
        assert_eq!((d.answers.as_slice(), &d.after), (&[Answer::Error(CommitUnknown, b'I')][..], &None));
        assert!(d.commit_unknown());
        // A read: retry it.
        assert_eq!(facts(b'I', &[Ends::Nothing], None, false).answers, [Answer::Error(RolledBack, b'I')]);
        // BEGIN ...: leaves a block open, nothing commits.
        assert_eq!(facts(b'I', &[Ends::Begins], None, true).answers, [Answer::Error(RolledBack, b'I')]);
        // Several autocommit requests pipelined: each its own transaction.
        assert_eq!(
            facts(b'I', &[Ends::Nothing, Ends::MayCommit], None, true).answers,
            [Answer::Error(CommitUnknown, b'I'), Answer::Error(CommitUnknown, b'I')]
        );
        // A COMMIT after BEGIN in the same pipeline.
        assert_eq!(
            facts(b'I', &[Ends::Begins, Ends::Nothing, Ends::MayCommit], None, true).answers,
            [Answer::Error(RolledBack, b'I'), Answer::Error(CommitUnknown, b'I'), Answer::Error(CommitUnknown, b'I')]
        );
    }

    #[test]
    fn an_open_batch_commits_only_at_its_sync() {
        // Extended messages without Sync outside a block: not committed.
        let d = facts(b'I', &[], Some(Ends::Nothing), true);
        assert_eq!(d.open_batch, Some(RolledBack));
        assert_eq!(d.after, Some(Aborted { skipping: true, ..Aborted::default() }));
        // ... unless it ran a COMMIT itself.
        assert_eq!(facts(b'I', &[], Some(Ends::MayCommit), true).open_batch, Some(CommitUnknown));
        // Inside a block: aborted, answered at Sync with 'E'.
        let d = facts(b'T', &[], Some(Ends::Nothing), true);
        assert_eq!(d.open_batch, Some(RolledBack));
        assert_eq!(d.after, Some(Aborted { block: true, skipping: true, ..Aborted::default() }));
        assert_eq!(facts(b'T', &[], Some(Ends::MayCommit), true).open_batch, Some(CommitUnknown));
        assert_eq!(facts(b'T', &[], Some(Ends::MayCommit), false).open_batch, Some(RolledBack));
    }

    /// The messages `out` holds: (tag, SQLSTATE or command tag or status).
    fn seen(out: &BytesMut) -> Vec<(char, String)> {
        let mut v = Vec::new();
        let mut rest = &out[..];
        while rest.len() >= 5 {
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            let (tag, body) = (rest[0], &rest[5..1 + len]);
            let what = match tag {
                b'E' => {
                    let at = body.windows(2).position(|w| w[0] == 0 && w[1] == b'C').expect("a code") + 2;
                    String::from_utf8_lossy(&body[at..at + 5]).into_owned()
                }
                b'C' => String::from_utf8_lossy(&body[..body.len() - 1]).into_owned(),
                b'Z' => (body[0] as char).to_string(),
                _ => String::new(),
            };
            v.push((tag as char, what));
            rest = &rest[1 + len..];
        }
        v
    }

    fn pairs(v: &[(char, &str)]) -> Vec<(char, String)> {
        v.iter().map(|(c, s)| (*c, s.to_string())).collect()
    }

    #[test]
    fn the_aborted_transaction_is_played_until_rollback() {
        let mut a = facts(b'T', &[], None, true).after.expect("aborted");
        let mut out = BytesMut::new();
        assert!(a.on_message(Msg::Query("INSERT INTO t VALUES (1)"), &mut out));
        assert!(a.on_message(Msg::Query("SELECT 1"), &mut out));
        assert!(!a.on_message(Msg::Query("ROLLBACK"), &mut out));
        assert_eq!(
            seen(&out),
            pairs(&[('E', "40001"), ('Z', "E"), ('E', "25P02"), ('Z', "E"), ('C', "ROLLBACK"), ('Z', "I")])
        );
        // COMMIT once the loss was reported: ROLLBACK, as PostgreSQL says.
        let mut a = facts(b'T', &[Ends::Nothing], None, true).after.expect("aborted");
        let mut out = BytesMut::new();
        assert!(!a.on_message(Msg::Query("commit"), &mut out));
        assert_eq!(seen(&out), pairs(&[('C', "ROLLBACK"), ('Z', "I")]));
        // COMMIT before: the 40001, never a ROLLBACK a driver might take for success.
        let mut a = facts(b'T', &[], None, true).after.expect("aborted");
        let mut out = BytesMut::new();
        assert!(!a.on_message(Msg::Query("COMMIT"), &mut out));
        assert_eq!(seen(&out), pairs(&[('E', "40001"), ('Z', "I")]));
    }

    #[test]
    fn the_aborted_transaction_speaks_the_extended_protocol() {
        let mut a = facts(b'T', &[], None, true).after.expect("aborted");
        let mut out = BytesMut::new();
        // A statement: the owed error, the rest skipped up to Sync.
        for m in [Msg::Parse(None, true), Msg::Bind(Stmt::Unnamed), Msg::Execute] {
            assert!(a.on_message(m, &mut out));
        }
        assert!(a.on_message(Msg::Sync, &mut out));
        assert_eq!(seen(&out), pairs(&[('E', "40001"), ('Z', "E")]));
        // ROLLBACK with Parse/Bind/Describe/Execute/Sync (JDBC's way).
        out.clear();
        for m in [Msg::Parse(Some(TxEnd::Rollback), true), Msg::Bind(Stmt::Unnamed), Msg::DescribePortal, Msg::Execute]
        {
            assert!(a.on_message(m, &mut out));
        }
        assert!(!a.on_message(Msg::Sync, &mut out));
        assert_eq!(seen(&out), pairs(&[('1', ""), ('2', ""), ('n', ""), ('C', "ROLLBACK"), ('Z', "I")]));
        // A named COMMIT before the loss was reported: the error, then idle.
        let mut a = facts(b'T', &[], None, true).after.expect("aborted");
        let mut out = BytesMut::new();
        for m in [Msg::Bind(Stmt::Named(Some(TxEnd::Commit))), Msg::Execute, Msg::Close] {
            assert!(a.on_message(m, &mut out));
        }
        assert!(!a.on_message(Msg::Sync, &mut out));
        assert_eq!(seen(&out), pairs(&[('2', ""), ('E', "40001"), ('Z', "I")]));
    }

    #[test]
    fn an_open_batch_outside_a_block_ends_at_its_sync() {
        let d = facts(b'I', &[], Some(Ends::Nothing), true);
        let mut out = BytesMut::new();
        d.write(&mut out);
        let mut a = d.after.expect("skipping");
        assert!(a.on_message(Msg::Execute, &mut out));
        assert!(a.on_message(Msg::Quiet, &mut out));
        assert!(!a.on_message(Msg::Sync, &mut out));
        assert_eq!(seen(&out), pairs(&[('E', "40001"), ('Z', "I")]));
    }
}
