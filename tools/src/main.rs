//! ringport CLI.
fn main() {}
