//! Consensus for Meridian: the Raft-replicated topology (regions, PostgreSQL
//! nodes, shards with fencing epochs, sharding rules, users, audit log)
//! behind `propose` / `read` / `subscribe`, with openraft types kept inside.
//!
//! Nothing is built here yet (issue 3). Today a node takes its single
//! backend from its configuration file.
