//! ringport-bench.
fn main() {}
