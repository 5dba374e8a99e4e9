//! Integration tests of conductor-workspace: one binary, a module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test binary: a failed unwrap is a failed test

mod archive;
mod confine;
mod dedup;
mod deep;
mod files;
mod gc;
mod git;
mod hostile;
mod quota;
mod restore;
mod roundtrip;
mod snapshot;
mod support;
