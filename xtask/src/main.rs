//! `cargo xtask`: project automation for hugeshare.
fn main() {
    println!("xtask: nothing yet");
}
