//! PostgreSQL's partition hash, so that a hash shard map agrees with
//! `PARTITION BY HASH` on every key.
