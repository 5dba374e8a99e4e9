//! The `conductor` binary.

use std::ffi::OsStr;

fn main() {
    // The sandbox helper must start before any thread or async runtime exists.
    if std::env::args_os().nth(1).as_deref() == Some(OsStr::new(conductor_sandbox::HELPER_ARG)) {
        conductor_sandbox::helper::main();
    }
    println!("conductor: not implemented yet");
}
