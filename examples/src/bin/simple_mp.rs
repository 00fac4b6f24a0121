//! `simple_mp`: see [`hugeshare_examples::simple`].
fn main() {
    std::process::exit(hugeshare_examples::simple::main(
        std::env::args().skip(1).collect(),
    ));
}
