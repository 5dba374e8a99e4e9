//! Linux sandbox primitives. Every kernel facility sits behind a seam that takes its root path
//! (or a syscall trait) as a parameter, so tests can run against tempdir fixtures.

pub mod bpf;
pub mod bridge;
pub mod cgroup;
pub mod command;
pub mod fds;
pub mod handover;
pub mod helper;
pub mod idmap;
pub mod mounts;
pub mod net;
pub mod report;
pub mod seccomp;
pub mod spec;

/// The hidden first argument that makes the `conductor` binary run as the sandbox helper
/// (`/proc/self/exe __sandbox-init`), before any async runtime exists.
pub const HELPER_ARG: &str = "__sandbox-init";

/// The helper's own binary, built beside `conductor` (the `conductor` package's second binary):
/// the helper alone, quicker to start.
pub const HELPER_BINARY: &str = "conductor-sandbox-init";
