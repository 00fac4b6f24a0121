//! Being written; placeholder.
fn main() {}
