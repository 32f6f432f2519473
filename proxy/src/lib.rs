//! Meridian's node: the PostgreSQL wire front end, client authentication,
//! server connection pools and the relay between them, plus `meridian demo`.
//!
//! The data path, per client: [`handshake`] (TLS, startup, auth, first
//! checkout) hands a logged-in [`session`] the client socket; the session
//! frames messages itself ([`wire`]), forwards the original bytes to a
//! [`backend`] connection checked out of a [`pool`], and gives it back at
//! the end of each transaction. Routing across shards and replicas, the Raft
//! topology and failover arrive in later steps (see ARCHITECTURE.md); today
//! a node serves one configured PostgreSQL primary.
//!
//! This crate does not parse SQL beyond what pooling needs (the `router`
//! crate does that) and never logs statement text above `debug`, parameters
//! or secrets.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod busy_poll;
pub mod cancel;
pub mod civil_time;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod error;
mod handshake;
pub mod health;
pub mod http;
pub mod local_socket;
pub mod metrics;
pub mod node;
pub mod pool;
pub mod session;
pub mod signals;
pub mod tls;
pub mod unix_stream;
pub mod wire;

pub use config::Config;
pub use error::Error;
pub use node::{Node, NodeHandle};
