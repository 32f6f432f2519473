//! Statement classification for Meridian. A pure library: SQL text in,
//! decisions out; no I/O, no async runtime, no knowledge of sockets or
//! consensus.
//!
//! Today it answers the questions a transaction-pooling proxy must ask of
//! every statement: where one statement of a simple-query string ends
//! ([`lex::split_statements`]) and what a statement does to session state
//! ([`session::session_effect`]: a `SET` to replay on another server
//! connection, or state such as `LISTEN` or a temporary table that pins the
//! client to its connection). Read/write splitting, shard-key extraction and
//! replica choice (DESIGN §4) will live here too; they are not built yet.

pub mod lex;
pub mod session;

pub use session::{
    PinReason, SessionEffect, TxControl, dropped_database, may_affect_session, session_effect, transaction_control,
};
