//! `conductor-sandbox-init`: the sandbox helper of the host and namespace executors, alone (see
//! `conductor_sandbox::helper`): it starts in about half the time of the whole `conductor`, and a
//! helper is started for every execution. Not for people: it expects the executor's socket on
//! stdin. `--build-id` prints the id of the build it came from (see `build.rs`).

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("--build-id")) {
        println!("{}", env!("CONDUCTOR_BUILD_ID"));
        return;
    }
    conductor_sandbox::helper::main()
}
