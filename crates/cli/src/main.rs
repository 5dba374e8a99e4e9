//! The `conductor` binary.

fn main() {
    println!("conductor: not implemented yet");
}
