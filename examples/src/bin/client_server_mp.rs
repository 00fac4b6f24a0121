//! `client_server_mp`: see [`hugeshare_examples::client_server`].
fn main() {
    std::process::exit(hugeshare_examples::client_server::main(
        std::env::args().skip(1).collect(),
    ));
}
