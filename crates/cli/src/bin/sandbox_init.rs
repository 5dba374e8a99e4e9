//! `conductor-sandbox-init`: the sandbox helper of the host and namespace executors, alone (see
//! `conductor_sandbox::helper`): it starts in about half the time of the whole `conductor`, and a
//! helper is started for every execution. Not for people: it expects the executor's socket on
//! stdin. `--build-id` prints the id of the build it came from (see `build.rs`); the same id is
//! in its ELF section [`BUILD_ID_SECTION`](../helper/index.html), which `conductor` reads without
//! running it.

/// The build id in a section of its own (`.conductor_build_id`), read by `conductor` before it
/// uses this helper. Referenced from `main` so the linker keeps it.
#[link_section = ".conductor_build_id"]
#[used]
static BUILD_ID: [u8; 16] = id_bytes(env!("CONDUCTOR_BUILD_ID"));

/// The 16 hex digits of the build id as bytes (a longer id is a build error).
const fn id_bytes(id: &str) -> [u8; 16] {
    let bytes = id.as_bytes();
    assert!(bytes.len() == 16, "CONDUCTOR_BUILD_ID is 16 hex digits");
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

fn main() {
    if std::env::args_os().nth(1).as_deref() == Some(std::ffi::OsStr::new("--build-id")) {
        let id = std::hint::black_box(&BUILD_ID);
        println!("{}", String::from_utf8_lossy(id));
        return;
    }
    conductor_sandbox::helper::main()
}
