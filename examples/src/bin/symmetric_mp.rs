//! `symmetric_mp`: see [`hugeshare_examples::symmetric`].
fn main() {
    std::process::exit(hugeshare_examples::symmetric::main(
        std::env::args().skip(1).collect(),
    ));
}
