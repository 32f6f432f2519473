//! Statement routing for Meridian. A pure library: SQL text and a topology
//! snapshot in, decisions out; no I/O, no async runtime, no knowledge of
//! sockets or consensus.
//!
//! - [`lex`]: a PostgreSQL lexer; where one statement of a string ends.
//! - [`session`]: what a statement does to session state (SET, pins).
//! - [`analyze`]: what a statement is (read, write, DDL...), whether a
//!   replica may run it, which shard keys it names.
//! - [`key`], [`hash`]: shard keys and PostgreSQL's partition hash.
//! - [`topology`]: regions, shards, nodes, sharding rules.
//! - [`fanout`]: how a keyless read over all shards is run and merged.
//! - [`route`]: analysis + parameters + topology → which shard(s), and
//!   whether a replica may answer; [`replica`]: which replica.

pub mod analyze;
pub mod array;
pub mod fanout;
pub mod hash;
pub mod key;
pub mod lex;
pub mod lsn;
pub mod replica;
pub mod route;
pub mod session;
pub mod shard_map;
pub mod topology;

pub use session::{
    PinReason, SessionEffect, TxControl, dropped_database, may_affect_session, session_effect, transaction_control,
};
