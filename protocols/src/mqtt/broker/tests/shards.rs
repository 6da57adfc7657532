//! Several shards.
