//! `proc_info`: see [`hugeshare_examples::proc_info`].
fn main() {
    std::process::exit(hugeshare_examples::proc_info::main(
        std::env::args().skip(1).collect(),
    ));
}
