//! Reads over every shard: the SQL each shard runs and how their rows merge.
