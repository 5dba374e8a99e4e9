//! The resident executor: a per-user process that keeps the local executors warm for
//! `conductor exec`, so a one-shot command costs what its sandbox costs, not what starting the
//! executor machinery costs.
//!
//! A one-shot `conductor exec` in-process pays, on every run, for a tokio runtime, the
//! executor's set-up, a cold sandbox helper (exec and dynamic linking of a large binary), a
//! cgroup made in every v1 hierarchy and the migration into it (which can wait for an RCU grace
//! period), and the cgroup's removal. The resident keeps the namespace and host executors with
//! their warm pools (see `conductor_executors::warm`): each helper already sits in an empty
//! cgroup of its own, with its namespaces (and, as root, its root built); the execution's limits
//! are written when it is taken, so every run still starts in a fresh cgroup with its own limits
//! and counters, and nothing of the isolation changes.
//!
//! ```text
//! conductor exec ──connect──▶ <place>/exec-<build>.sock ──▶ resident (this user's, this build's)
//!   stdout, stderr ─SCM_RIGHTS─▶ output written straight to them
//!   SIGINT/SIGTERM ─cancel byte─▶ executor.cancel      ◀── reply: result, exit code
//! ```
//!
//! - **Start**: the first `conductor exec` that finds no socket runs in-process and starts the
//!   resident (`conductor __exec-resident`, its own session, output to
//!   `<place>/exec-<build>.log`); it takes `exec-<build>.lock` or exits (one per build). It
//!   leaves after `CONDUCTOR_RESIDENT_IDLE` seconds (default 300) without a connection,
//!   removing its socket first and serving what was already queued.
//! - **Who may talk to it**: the socket sits in a directory only its user may enter
//!   ([`place`]); the resident also checks each peer's uid (`SO_PEERCRED`).
//! - **What it trusts**: a request comes resolved from the client ([`wire::Request`]); the
//!   resident never reads its own environment for a request, and runs it with the same
//!   executors, checks and plan as in-process.
//! - `CONDUCTOR_RESIDENT=0` runs every `conductor exec` in-process; `CONDUCTOR_RESIDENT=wait`
//!   starts the resident and waits for it instead of running the first one in-process (tests,
//!   benches); `CONDUCTOR_RESIDENT_DIR` puts its directory elsewhere.

pub mod client;
mod daemon;
pub mod place;
pub mod wire;

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

pub use daemon::main;

/// The argument that runs the resident: `conductor __exec-resident`.
pub const RESIDENT_ARG: &str = "__exec-resident";

/// Starts this user's resident in the background (no wait: this run goes on in-process).
fn start(place: &place::Place) {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(place.log());
    let mut command = Command::new(exe);
    command
        .arg(RESIDENT_ARG)
        // Not the caller's directory: a resident must not keep a directory (or a mount) busy.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log.map(Stdio::from).unwrap_or_else(|_| Stdio::null()));
    // Its own session: no terminal's SIGINT or SIGHUP reaches it.
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent's.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    if let Err(e) = command.spawn() {
        tracing::debug!("starting the resident executor: {e}");
    }
}
