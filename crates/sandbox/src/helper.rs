//! The sandbox helper's entry point: a fresh, single-threaded copy of the binary that builds the
//! sandbox and execs the command.

/// Runs the helper. Never returns.
pub fn main() -> ! {
    eprintln!("conductor: the sandbox helper is not implemented yet");
    std::process::exit(125)
}
